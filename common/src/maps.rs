//! Map names, capacities and layouts. The map layout *is* the contract between the XDP program
//! and the controller; see ARCHITECTURE.md for who writes and who reads each map.
//!
//! Addresses are always 16 bytes: IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so one map
//! serves both families and `bpftool` prints them as readable byte arrays.

/// Directory under bpffs where every map (and the XDP link) is pinned.
pub const PIN_DIR: &str = "/sys/fs/bpf/sluice";

/// Map names (the kernel keeps 15 characters; all of these fit).
pub mod names {
    /// Listener address+port → pool.
    pub const LISTENERS: &str = "LISTENERS";
    /// Exporter address → (peer, pool). Written by the controller.
    pub const EXPORTERS: &str = "EXPORTERS";
    /// CIDR → pool (LPM trie).
    pub const SOURCE_GROUPS: &str = "SOURCE_GROUPS";
    /// Flattened per-pool consistent-hash tables: `pool * POOL_TABLE_SIZE + slot` → peer id.
    pub const POOL_TABLES: &str = "POOL_TABLES";
    /// Peer id → forwarding target and state.
    pub const PEERS: &str = "PEERS";
    /// Per-exporter per-CPU packet/byte counters and last-seen time.
    pub const EXPORTER_STATS: &str = "EXPORTER_STATS";
    /// Per-peer per-CPU packet/byte counters.
    pub const PEER_STATS: &str = "PEER_STATS";
    /// Per-CPU counter per exit reason.
    pub const COUNTERS: &str = "COUNTERS";
    /// Ring buffer of [`super::ExporterEvent`]s.
    pub const EVENTS: &str = "EVENTS";
    /// Per-exporter time of the last event (rate limit).
    pub const EVENT_SEEN: &str = "EVENT_SEEN";
    /// Egress interfaces usable by `bpf_redirect_map`.
    pub const DEVMAP: &str = "DEVMAP";
    /// The single [`super::Settings`] entry.
    pub const SETTINGS: &str = "SETTINGS";
    /// Per-CPU cache of `bpf_fib_lookup` results by peer id ([`super::NextHop`]).
    pub const NEXTHOPS: &str = "NEXTHOPS";

    /// Every pinned map.
    pub const ALL: &[&str] = &[
        LISTENERS,
        EXPORTERS,
        SOURCE_GROUPS,
        POOL_TABLES,
        PEERS,
        EXPORTER_STATS,
        PEER_STATS,
        COUNTERS,
        EVENTS,
        EVENT_SEEN,
        DEVMAP,
        SETTINGS,
        NEXTHOPS,
    ];
}

/// Listener entries (address × port).
pub const MAX_LISTENERS: u32 = 1024;
/// Pinned exporters and per-exporter statistics.
pub const MAX_EXPORTERS: u32 = 65_536;
/// Source-group CIDRs.
pub const MAX_SOURCE_GROUPS: u32 = 4096;
/// Peers; peer ids are `0..MAX_PEERS`.
pub const MAX_PEERS: u32 = 256;
/// Pools; pool ids are `0..MAX_POOLS`.
pub const MAX_POOLS: u32 = 16;
/// Slots per pool table: a prime ≥ 100 × `MAX_PEERS` (Maglev needs M prime and ≫ N).
pub const POOL_TABLE_SIZE: u32 = 25_717;
/// Egress interfaces.
pub const MAX_DEVICES: u32 = 64;
/// Exporters whose last event time is remembered ([`names::EVENT_SEEN`], LRU).
pub const MAX_EVENT_SEEN: u32 = 16_384;
/// Slots of [`names::POOL_TABLES`]: every pool's table, flattened.
pub const POOL_TABLE_ENTRIES: u32 = MAX_POOLS * POOL_TABLE_SIZE;
/// Ring buffer bytes (power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// Peer id stored in a table slot when the pool has no healthy peer.
pub const NO_PEER: u32 = u32::MAX;
/// How long a cached route and neighbour ([`NextHop`]) is used before `bpf_fib_lookup` is asked
/// again: bounds how long a changed neighbour MAC or route goes unnoticed.
pub const NEXTHOP_TTL_NS: u64 = 250_000_000;
/// Minimum time between two events for the same exporter.
pub const EVENT_INTERVAL_NS: u64 = 1_000_000_000;

/// Address family tags used in [`PeerEntry::family`].
pub mod family {
    /// IPv4.
    pub const V4: u8 = 4;
    /// IPv6.
    pub const V6: u8 = 6;
}

/// Peer states in [`PeerEntry::state`].
pub mod peer_state {
    /// Unused slot or failed peer: never a forwarding target.
    pub const DOWN: u8 = 0;
    /// Healthy.
    pub const UP: u8 = 1;
    /// Still forwards the exporters pinned to it; the controller moves them away and keeps it
    /// out of the hash tables.
    pub const DRAINING: u8 = 2;
}

/// 16-byte address key ([`names::EXPORTERS`], [`names::EXPORTER_STATS`], [`names::EVENT_SEEN`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct AddrKey {
    /// IPv6, or IPv4-mapped IPv6.
    pub addr: [u8; 16],
}

/// Key of [`names::LISTENERS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ListenerKey {
    /// Destination address (IPv4-mapped for IPv4).
    pub addr: [u8; 16],
    /// Destination UDP port, host byte order.
    pub port: u16,
    /// Always zero.
    pub _pad: [u8; 2],
}

/// Value of [`names::LISTENERS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ListenerValue {
    /// Pool that receives this listener's exporters unless a source group says otherwise.
    pub pool_id: u32,
}

/// Value of [`names::EXPORTERS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExporterValue {
    /// Assigned peer.
    pub peer_id: u32,
    /// The exporter's pool: used to re-place it if its peer goes down.
    pub pool_id: u32,
}

/// Value of [`names::SOURCE_GROUPS`] (LPM key: prefix length + 16-byte address).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SourceGroupValue {
    /// Pool for exporters inside the CIDR.
    pub pool_id: u32,
}

/// Value of [`names::PEERS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PeerEntry {
    /// Target address (IPv4-mapped for IPv4).
    pub addr: [u8; 16],
    /// Target UDP port, host byte order; 0 keeps the original destination port.
    pub port: u16,
    /// [`family`] of `addr`.
    pub family: u8,
    /// [`peer_state`].
    pub state: u8,
    /// Pool the peer belongs to.
    pub pool_id: u32,
}

/// Value of [`names::EXPORTER_STATS`] (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExporterStats {
    /// Packets seen from this exporter on listener ports.
    pub packets: u64,
    /// Bytes of those packets (L3 length).
    pub bytes: u64,
    /// `bpf_ktime_get_ns` of the last packet (CLOCK_MONOTONIC).
    pub last_seen_ns: u64,
}

/// Value of [`names::PEER_STATS`] (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PeerStats {
    /// Packets forwarded to this peer.
    pub packets: u64,
    /// Bytes forwarded to this peer (L3 length).
    pub bytes: u64,
}

/// Event kinds in [`ExporterEvent::kind`].
pub mod event_kind {
    /// Exporter not in `EXPORTERS`; placed on `peer_id` by the pool table.
    pub const NEW_EXPORTER: u32 = 1;
    /// Pinned exporter whose peer is down; placed on `peer_id` by the pool table.
    pub const PEER_DOWN: u32 = 2;
}

/// Ring-buffer record written by the XDP program (rate-limited per exporter).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExporterEvent {
    /// Exporter address.
    pub addr: [u8; 16],
    /// [`event_kind`].
    pub kind: u32,
    /// Pool the exporter fell in.
    pub pool_id: u32,
    /// Peer the pool table chose ([`NO_PEER`] if none).
    pub peer_id: u32,
    /// Always zero.
    pub _pad: u32,
}

/// Value of [`names::NEXTHOPS`] (per CPU, by peer id): a `bpf_fib_lookup` result the XDP program
/// reuses for [`NEXTHOP_TTL_NS`]. Only successful lookups are cached (an unresolved neighbour
/// keeps going to the slow path until the kernel resolves it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    /// Peer address the entry was computed for (a changed `PEERS` entry misses).
    pub addr: [u8; 16],
    /// Ingress interface it was computed for.
    pub ingress: u32,
    /// Egress interface.
    pub ifindex: u32,
    /// Egress MTU (larger packets go to the slow path, which fragments).
    pub mtu: u32,
    /// Neighbour MAC.
    pub dmac: [u8; 6],
    /// Egress interface MAC.
    pub smac: [u8; 6],
    /// `bpf_ktime_get_ns` after which the entry is refreshed.
    pub expires_ns: u64,
}

/// Settings flags in [`Settings::flags`].
pub mod settings_flags {
    /// Decrement TTL / hop limit when forwarding (loop protection). On by default.
    pub const DECREMENT_TTL: u32 = 1;
}

/// Value of [`names::SETTINGS`] (array of one).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// [`settings_flags`].
    pub flags: u32,
    /// Always zero.
    pub _pad: u32,
}

/// Kernel map types of the maps below (the `bpf_map_type` values, so user space can compare
/// them with what the kernel reports for a pin).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_HASH`.
    Hash = 1,
    /// `BPF_MAP_TYPE_ARRAY`.
    Array = 2,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    PerCpuArray = 6,
    /// `BPF_MAP_TYPE_LRU_HASH`.
    LruHash = 9,
    /// `BPF_MAP_TYPE_LRU_PERCPU_HASH`.
    LruPerCpuHash = 10,
    /// `BPF_MAP_TYPE_LPM_TRIE`.
    LpmTrie = 11,
    /// `BPF_MAP_TYPE_DEVMAP_HASH`.
    DevMapHash = 25,
    /// `BPF_MAP_TYPE_RINGBUF`.
    RingBuf = 27,
}

/// One map of the contract as the kernel sees it: the XDP program declares it with these
/// capacities, user space refuses pins that differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    /// Name (and pin file name).
    pub name: &'static str,
    /// Map type.
    pub kind: MapKind,
    /// Key bytes (0 for the ring buffer).
    pub key_size: u32,
    /// Value bytes (0 for the ring buffer).
    pub value_size: u32,
    /// Entries (bytes for the ring buffer).
    pub max_entries: u32,
}

/// Key bytes of [`names::SOURCE_GROUPS`]: the LPM prefix length (`u32`) and a 16-byte address.
pub const LPM_KEY_SIZE: u32 = 4 + 16;
/// Value bytes of a [`names::DEVMAP`] entry (`struct bpf_devmap_val`: ifindex and program fd).
pub const DEVMAP_VALUE_SIZE: u32 = 8;

const fn map(
    name: &'static str,
    kind: MapKind,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> MapLayout {
    MapLayout {
        name,
        kind,
        key_size,
        value_size,
        max_entries,
    }
}

/// Every pinned map, in [`names::ALL`] order. Sizes are written out: changing a key or value
/// type without changing this table fails the size test (and so the build of the ABI).
const LAYOUT: [MapLayout; 13] = [
    map(names::LISTENERS, MapKind::Hash, 20, 4, MAX_LISTENERS),
    map(names::EXPORTERS, MapKind::Hash, 16, 8, MAX_EXPORTERS),
    map(
        names::SOURCE_GROUPS,
        MapKind::LpmTrie,
        LPM_KEY_SIZE,
        4,
        MAX_SOURCE_GROUPS,
    ),
    map(names::POOL_TABLES, MapKind::Array, 4, 4, POOL_TABLE_ENTRIES),
    map(names::PEERS, MapKind::Array, 4, 24, MAX_PEERS),
    map(
        names::EXPORTER_STATS,
        MapKind::LruPerCpuHash,
        16,
        24,
        MAX_EXPORTERS,
    ),
    map(names::PEER_STATS, MapKind::PerCpuArray, 4, 16, MAX_PEERS),
    map(
        names::COUNTERS,
        MapKind::PerCpuArray,
        4,
        8,
        crate::counters::REASON_COUNT,
    ),
    map(names::EVENTS, MapKind::RingBuf, 0, 0, EVENTS_BYTES),
    map(names::EVENT_SEEN, MapKind::LruHash, 16, 8, MAX_EVENT_SEEN),
    map(
        names::DEVMAP,
        MapKind::DevMapHash,
        4,
        DEVMAP_VALUE_SIZE,
        MAX_DEVICES,
    ),
    map(names::SETTINGS, MapKind::Array, 4, 8, 1),
    map(names::NEXTHOPS, MapKind::PerCpuArray, 4, 48, MAX_PEERS),
];

/// The layout of every pinned map (see [`MapLayout`]).
pub const fn layout() -> &'static [MapLayout] {
    &LAYOUT
}

const _: () = {
    assert!(core::mem::size_of::<AddrKey>() == 16);
    assert!(core::mem::size_of::<ListenerKey>() == 20);
    assert!(core::mem::size_of::<ListenerValue>() == 4);
    assert!(core::mem::size_of::<ExporterValue>() == 8);
    assert!(core::mem::size_of::<SourceGroupValue>() == 4);
    assert!(core::mem::size_of::<PeerEntry>() == 24);
    assert!(core::mem::size_of::<ExporterStats>() == 24);
    assert!(core::mem::size_of::<PeerStats>() == 16);
    assert!(core::mem::size_of::<ExporterEvent>() == 32);
    assert!(core::mem::size_of::<Settings>() == 8);
    assert!(core::mem::size_of::<NextHop>() == 48);
};

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are `#[repr(C)]`, contain only integers and byte arrays, and have
    // explicit padding fields, so every bit pattern is valid and there are no padding bytes.
    unsafe impl aya::Pod for AddrKey {}
    unsafe impl aya::Pod for ListenerKey {}
    unsafe impl aya::Pod for ListenerValue {}
    unsafe impl aya::Pod for ExporterValue {}
    unsafe impl aya::Pod for SourceGroupValue {}
    unsafe impl aya::Pod for PeerEntry {}
    unsafe impl aya::Pod for ExporterStats {}
    unsafe impl aya::Pod for PeerStats {}
    unsafe impl aya::Pod for ExporterEvent {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for NextHop {}
}

#[cfg(feature = "std")]
mod addr {
    use super::{AddrKey, ListenerKey};
    use std::net::{IpAddr, Ipv6Addr};

    /// 16-byte map form of an address (IPv4 becomes IPv4-mapped).
    pub fn to_key_bytes(ip: IpAddr) -> [u8; 16] {
        match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    /// Inverse of [`to_key_bytes`]: IPv4-mapped addresses come back as IPv4.
    pub fn from_key_bytes(b: [u8; 16]) -> IpAddr {
        let v6 = Ipv6Addr::from(b);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }

    impl From<IpAddr> for AddrKey {
        fn from(ip: IpAddr) -> Self {
            Self {
                addr: to_key_bytes(ip),
            }
        }
    }

    impl AddrKey {
        /// The address this key stands for.
        pub fn ip(&self) -> IpAddr {
            from_key_bytes(self.addr)
        }
    }

    impl ListenerKey {
        /// Key for a listener socket address.
        pub fn new(ip: IpAddr, port: u16) -> Self {
            Self {
                addr: to_key_bytes(ip),
                port,
                _pad: [0; 2],
            }
        }
    }
}

#[cfg(feature = "std")]
pub use addr::{from_key_bytes, to_key_bytes};

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    fn entry(name: &str) -> MapLayout {
        *layout()
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("{name} not in the layout"))
    }

    #[test]
    fn the_layout_names_every_pinned_map_in_order() {
        assert!(
            layout()
                .iter()
                .map(|l| l.name)
                .eq(names::ALL.iter().copied())
        );
    }

    #[test]
    fn the_layout_matches_the_key_and_value_types() {
        let sizes = |k: usize, v: usize| (k as u32, v as u32);
        let want = [
            (
                names::LISTENERS,
                sizes(size_of::<ListenerKey>(), size_of::<ListenerValue>()),
            ),
            (
                names::EXPORTERS,
                sizes(size_of::<AddrKey>(), size_of::<ExporterValue>()),
            ),
            (
                names::SOURCE_GROUPS,
                sizes(
                    size_of::<u32>() + size_of::<[u8; 16]>(),
                    size_of::<SourceGroupValue>(),
                ),
            ),
            (
                names::POOL_TABLES,
                sizes(size_of::<u32>(), size_of::<u32>()),
            ),
            (
                names::PEERS,
                sizes(size_of::<u32>(), size_of::<PeerEntry>()),
            ),
            (
                names::EXPORTER_STATS,
                sizes(size_of::<AddrKey>(), size_of::<ExporterStats>()),
            ),
            (
                names::PEER_STATS,
                sizes(size_of::<u32>(), size_of::<PeerStats>()),
            ),
            (names::COUNTERS, sizes(size_of::<u32>(), size_of::<u64>())),
            (names::EVENTS, (0, 0)),
            (
                names::EVENT_SEEN,
                sizes(size_of::<AddrKey>(), size_of::<u64>()),
            ),
            // `struct bpf_devmap_val`: a u32 ifindex and a u32 program fd.
            (names::DEVMAP, sizes(size_of::<u32>(), 2 * size_of::<u32>())),
            (
                names::SETTINGS,
                sizes(size_of::<u32>(), size_of::<Settings>()),
            ),
            (
                names::NEXTHOPS,
                sizes(size_of::<u32>(), size_of::<NextHop>()),
            ),
        ];
        assert_eq!(want.len(), layout().len());
        for (name, (key, value)) in want {
            let l = entry(name);
            assert_eq!((l.key_size, l.value_size), (key, value), "{name}");
        }
        // The ring buffer carries whole events.
        assert_eq!(EVENTS_BYTES as usize % size_of::<ExporterEvent>(), 0);
    }
}
