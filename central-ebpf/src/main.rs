//! Sluice's XDP data plane: steers each flow exporter's datagrams to its assigned peer.
//!
//! Per packet: parse Ethernet (+ up to two VLAN tags), IPv4/IPv6, UDP; match `LISTENERS`;
//! find the exporter's peer (`EXPORTERS`, else the pool's consistent-hash table); rewrite the
//! destination with incremental checksum updates; `bpf_fib_lookup` for egress and MACs;
//! `XDP_TX` or a `DEVMAP` redirect. Everything else is `XDP_PASS`, counted by reason, so the
//! kernel (and the slow-path relay in `central-user`) sees it unchanged.
#![no_std]
#![no_main]

mod parse;
mod rt;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup as FibParams, xdp_action,
    },
    btf_maps::{
        Array, DevMapHash, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf,
        lpm_trie::Key,
    },
    helpers::{bpf_ktime_get_ns, generated::bpf_fib_lookup, generated::bpf_xdp_adjust_head},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use sluice_common::{
    AddrKey, EVENT_INTERVAL_NS, EVENTS_BYTES, ExporterEvent, ExporterStats, ExporterValue,
    ListenerKey, ListenerValue, MAX_DEVICES, MAX_EVENT_SEEN, MAX_EXPORTERS, MAX_LISTENERS,
    MAX_PEERS, MAX_POOLS, MAX_SOURCE_GROUPS, NEXTHOP_TTL_NS, NO_PEER, NextHop, POOL_TABLE_ENTRIES,
    POOL_TABLE_SIZE, PeerEntry, PeerStats, REASON_COUNT, Reason, Settings, SourceGroupValue,
    event_kind, family, hash::table_slot, peer_state, settings_flags,
};

use crate::parse::{Headers, L3};

// Capacities come from `sluice_common::maps` (its `layout()` is what user space checks pins
// against); the key and value types are the ones its size test covers.

#[btf_map]
static LISTENERS: HashMap<ListenerKey, ListenerValue, { MAX_LISTENERS as usize }> = HashMap::new();
#[btf_map]
static EXPORTERS: HashMap<AddrKey, ExporterValue, { MAX_EXPORTERS as usize }> = HashMap::new();
#[btf_map]
static SOURCE_GROUPS: LpmTrie<[u8; 16], SourceGroupValue, { MAX_SOURCE_GROUPS as usize }> =
    LpmTrie::new();
#[btf_map]
static POOL_TABLES: Array<u32, { POOL_TABLE_ENTRIES as usize }> = Array::new();
#[btf_map]
static PEERS: Array<PeerEntry, { MAX_PEERS as usize }> = Array::new();
#[btf_map]
static EXPORTER_STATS: LruPerCpuHashMap<AddrKey, ExporterStats, { MAX_EXPORTERS as usize }> =
    LruPerCpuHashMap::new();
#[btf_map]
static PEER_STATS: PerCpuArray<PeerStats, { MAX_PEERS as usize }> = PerCpuArray::new();
#[btf_map]
static COUNTERS: PerCpuArray<u64, { REASON_COUNT as usize }> = PerCpuArray::new();
#[btf_map]
static EVENTS: RingBuf<ExporterEvent, { EVENTS_BYTES as usize }> = RingBuf::new();
#[btf_map]
static EVENT_SEEN: LruHashMap<AddrKey, u64, { MAX_EVENT_SEEN as usize }> = LruHashMap::new();
#[btf_map]
static DEVMAP: DevMapHash<{ MAX_DEVICES as usize }> = DevMapHash::new();
#[btf_map]
static SETTINGS: Array<Settings, 1> = Array::new();
#[btf_map]
static NEXTHOPS: PerCpuArray<NextHop, { MAX_PEERS as usize }> = PerCpuArray::new();

#[xdp]
pub fn sluice_xdp(ctx: XdpContext) -> u32 {
    let (action, reason) = steer(&ctx);
    count(reason);
    action
}

#[inline(always)]
fn count(reason: Reason) {
    if let Some(c) = COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
}

const PASS: u32 = xdp_action::XDP_PASS;

#[inline(always)]
fn steer(ctx: &XdpContext) -> (u32, Reason) {
    let h = match parse::headers(ctx) {
        Ok(h) => h,
        Err(reason) => return (PASS, reason),
    };
    let Some(listener) = (unsafe {
        LISTENERS.get(ListenerKey {
            addr: h.dst,
            port: h.dport,
            _pad: [0; 2],
        })
    }) else {
        return (PASS, Reason::PassNotListener);
    };
    let listener_pool = listener.pool_id;
    let exporter = AddrKey { addr: h.src };
    let now = unsafe { bpf_ktime_get_ns() };
    record_exporter(&exporter, h.l3_len, now);

    if h.ttl <= 1 {
        return (PASS, Reason::PassTtlExpired);
    }
    let (peer_id, peer) = match choose_peer(&exporter, listener_pool, now) {
        Ok(p) => p,
        Err(reason) => return (xdp_action::XDP_DROP, reason),
    };
    let peer_is_v4 = peer.family == family::V4;
    if peer_is_v4 != matches!(h.l3, L3::V4) {
        return (PASS, Reason::PassFamilyMismatch);
    }
    if matches!(h.l3, L3::V6) && h.udp_csum == 0 {
        return (PASS, Reason::PassBadChecksum);
    }
    forward(ctx, &h, peer_id, peer, now)
}

/// Per-exporter per-CPU counters (LRU: a flood of spoofed sources cannot fill it for good).
#[inline(always)]
fn record_exporter(exporter: &AddrKey, len: u16, now: u64) {
    match EXPORTER_STATS.get_ptr_mut(exporter) {
        Some(s) => unsafe {
            (*s).packets += 1;
            (*s).bytes += u64::from(len);
            (*s).last_seen_ns = now;
        },
        None => {
            let _ = EXPORTER_STATS.insert(
                exporter,
                ExporterStats {
                    packets: 1,
                    bytes: u64::from(len),
                    last_seen_ns: now,
                },
                0,
            );
        }
    }
}

/// The exporter's peer: its `EXPORTERS` pin if that peer is usable, else its pool's table.
#[inline(always)]
fn choose_peer(
    exporter: &AddrKey,
    listener_pool: u32,
    now: u64,
) -> Result<(u32, &'static PeerEntry), Reason> {
    let (pool_id, kind) = match unsafe { EXPORTERS.get(exporter) } {
        Some(v) => {
            let pinned = *v;
            if let Some(peer) = PEERS.get(pinned.peer_id)
                && peer.state != peer_state::DOWN
            {
                return Ok((pinned.peer_id, peer));
            }
            count(Reason::PeerDownFallback);
            (pinned.pool_id, event_kind::PEER_DOWN)
        }
        None => {
            let key = Key::new(128, exporter.addr);
            let pool = SOURCE_GROUPS.get(&key).map_or(listener_pool, |g| g.pool_id);
            count(Reason::HashPlaced);
            (pool, event_kind::NEW_EXPORTER)
        }
    };
    let placed = table_peer(exporter, pool_id);
    report(
        exporter,
        kind,
        pool_id,
        placed.map_or(NO_PEER, |(id, _)| id),
        now,
    );
    placed
}

#[inline(always)]
fn table_peer(exporter: &AddrKey, pool_id: u32) -> Result<(u32, &'static PeerEntry), Reason> {
    if pool_id >= MAX_POOLS {
        return Err(Reason::PassNoPool);
    }
    let idx = pool_id * POOL_TABLE_SIZE + table_slot(&exporter.addr, POOL_TABLE_SIZE);
    let peer_id = *POOL_TABLES.get(idx).ok_or(Reason::PassNoPool)?;
    match PEERS.get(peer_id) {
        Some(peer) if peer.state == peer_state::UP => Ok((peer_id, peer)),
        _ => Err(Reason::DropNoHealthyPeer),
    }
}

/// Tells the controller about an exporter it should pin, at most once per interval each.
#[inline(always)]
fn report(exporter: &AddrKey, kind: u32, pool_id: u32, peer_id: u32, now: u64) {
    if let Some(last) = unsafe { EVENT_SEEN.get(exporter) }
        && now.wrapping_sub(*last) < EVENT_INTERVAL_NS
    {
        return;
    }
    let _ = EVENT_SEEN.insert(exporter, now, 0);
    let event = ExporterEvent {
        addr: exporter.addr,
        kind,
        pool_id,
        peer_id,
        _pad: 0,
    };
    match EVENTS.output(event, 0) {
        Ok(()) => count(Reason::EventSent),
        Err(_) => count(Reason::EventSuppressed),
    }
}

#[inline(always)]
fn forward(
    ctx: &XdpContext,
    h: &Headers,
    peer_id: u32,
    peer: &PeerEntry,
    now: u64,
) -> (u32, Reason) {
    let new_port = if peer.port == 0 { h.dport } else { peer.port };
    let ifindex = ctx.ingress_ifindex() as u32;

    // Route first, rewrite second: anything that cannot be forwarded goes up unmodified.
    let hop = match next_hop(ctx, h, peer_id, peer, new_port, ifindex, now) {
        Ok(hop) => hop,
        Err(reason) => return (PASS, reason),
    };
    if u32::from(h.l3_len) > hop.mtu {
        // The slow path fragments it.
        return (PASS, Reason::PassFibFailed);
    }
    let tx = hop.ifindex == ifindex;

    let decrement = SETTINGS
        .get(0)
        .is_some_and(|s| s.flags & settings_flags::DECREMENT_TTL != 0);
    if parse::rewrite(ctx, h, &peer.addr, new_port, decrement).is_err() {
        return (PASS, Reason::PassTruncated);
    }
    // Tags only make sense on the segment they came from: keep them for XDP_TX, strip them
    // when the packet leaves through another interface.
    let strip = if tx { 0 } else { u32::from(h.vlans) * 4 };
    if parse::set_macs(ctx, strip as usize, &hop.dmac, &hop.smac).is_err() {
        return (PASS, Reason::PassTruncated);
    }
    if strip != 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx.cast(), strip as i32) } != 0 {
        return (xdp_action::XDP_ABORTED, Reason::PassTruncated);
    }
    if let Some(s) = PEER_STATS.get_ptr_mut(peer_id) {
        unsafe {
            (*s).packets += 1;
            (*s).bytes += u64::from(h.l3_len);
        }
    }
    if tx {
        return (xdp_action::XDP_TX, Reason::Tx);
    }
    match DEVMAP.redirect(hop.ifindex, 0) {
        Ok(action) => (action, Reason::Redirect),
        Err(action) => (action, Reason::PassNoEgressDev),
    }
}

/// The route and neighbour towards `peer`: from this CPU's cache while fresh, else from
/// `bpf_fib_lookup` (cached on success). The lookup costs more than everything else on the
/// path (about 60 ns for IPv4, 100 ns for IPv6 on the reference VM).
#[inline(always)]
fn next_hop(
    ctx: &XdpContext,
    h: &Headers,
    peer_id: u32,
    peer: &PeerEntry,
    port: u16,
    ifindex: u32,
    now: u64,
) -> Result<NextHop, Reason> {
    let slot = NEXTHOPS.get_ptr_mut(peer_id).ok_or(Reason::PassFibFailed)?;
    // SAFETY: this CPU's slot; nothing else writes it while we run.
    let cached = unsafe { &mut *slot };
    if cached.expires_ns > now && cached.ingress == ifindex && cached.addr == peer.addr {
        return Ok(*cached);
    }
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.ifindex = ifindex;
    fib.l4_protocol = 17;
    fib.sport = h.sport.to_be();
    fib.dport = port.to_be();
    match h.l3 {
        L3::V4 => {
            fib.family = 2; // AF_INET
            fib.__bindgen_anon_3.ipv4_src =
                u32::from_ne_bytes([h.src[12], h.src[13], h.src[14], h.src[15]]);
            fib.__bindgen_anon_4.ipv4_dst =
                u32::from_ne_bytes([peer.addr[12], peer.addr[13], peer.addr[14], peer.addr[15]]);
        }
        L3::V6 => {
            fib.family = 10; // AF_INET6
            fib.__bindgen_anon_3.ipv6_src = words(&h.src);
            fib.__bindgen_anon_4.ipv6_dst = words(&peer.addr);
        }
    }
    // Ask with the largest length first: FRAG_NEEDED reports the egress MTU, which the fast
    // path then checks per packet; then ask again for the neighbour.
    fib.__bindgen_anon_1.tot_len = u16::MAX;
    let mut rc = fib_lookup(ctx, &mut fib);
    let mut mtu = u32::from(u16::MAX);
    if rc == i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED) {
        mtu = u32::from(unsafe { fib.__bindgen_anon_1.mtu_result });
        fib.__bindgen_anon_1.tot_len = 0;
        rc = fib_lookup(ctx, &mut fib);
    }
    if rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        return Err(Reason::PassNoNeigh);
    }
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return Err(Reason::PassFibFailed);
    }
    if fib.ifindex != ifindex && DEVMAP.get(fib.ifindex).is_none() {
        return Err(Reason::PassNoEgressDev);
    }
    *cached = NextHop {
        addr: peer.addr,
        ingress: ifindex,
        ifindex: fib.ifindex,
        mtu,
        dmac: fib.dmac,
        smac: fib.smac,
        expires_ns: now + NEXTHOP_TTL_NS,
    };
    Ok(*cached)
}

#[inline(always)]
fn fib_lookup(ctx: &XdpContext, fib: &mut FibParams) -> i64 {
    // SAFETY: `fib` is a valid, fully initialised parameter block of the size we pass.
    unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    }
}

#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}
