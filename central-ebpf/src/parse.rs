//! Bounds-checked header parsing and in-place rewriting.

use aya_ebpf::programs::XdpContext;
use sluice_common::{
    Reason,
    csum::{apply, apply_udp, diff_bytes, diff16},
};

/// Network layer of a parsed packet.
#[derive(Clone, Copy)]
pub enum L3 {
    V4,
    V6,
}

/// What the steering decision needs from a listener-bound UDP packet.
pub struct Headers {
    pub l3: L3,
    /// VLAN tags in front of the IP header (0..=2).
    pub vlans: u8,
    pub l3_off: usize,
    pub l4_off: usize,
    /// Source and destination, IPv4-mapped for IPv4.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    /// IP total length (IPv6: header + payload).
    pub l3_len: u16,
    pub udp_csum: u16,
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const IPV6_FRAGMENT: u8 = 44;
/// Hop-by-hop, routing, destination options, AH, ESP, mobility, HIP, shim6.
const IPV6_EXT: [u8; 8] = [0, 43, 60, 51, 50, 135, 139, 140];

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Result<*mut T, Reason> {
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return Err(Reason::PassTruncated);
    }
    Ok((start + off) as *mut T)
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Parses up to UDP. `Err` carries the reason the packet is not ours to steer.
#[inline(always)]
pub fn headers(ctx: &XdpContext) -> Result<Headers, Reason> {
    // SAFETY (all derefs below): bounds checked by `ptr_at`.
    let eth = unsafe { &*ptr_at::<[u8; 14]>(ctx, 0)? };
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut off = 14usize;
    let mut vlans = 0u8;
    for _ in 0..2 {
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            let tag = unsafe { &*ptr_at::<[u8; 4]>(ctx, off)? };
            ethertype = be16([tag[2], tag[3]]);
            off += 4;
            vlans += 1;
        }
    }
    let (l3, src, dst, ttl, l3_len, l4_off) = match ethertype {
        ETH_P_IP => {
            let ip = unsafe { &*ptr_at::<[u8; 20]>(ctx, off)? };
            if ip[0] >> 4 != 4 {
                return Err(Reason::PassNotIp);
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ihl < 20 {
                return Err(Reason::PassTruncated);
            }
            if ip[9] != IPPROTO_UDP {
                return Err(Reason::PassNotUdp);
            }
            if be16([ip[6], ip[7]]) & 0x3fff != 0 {
                return Err(Reason::PassFragment);
            }
            let src = mapped([ip[12], ip[13], ip[14], ip[15]]);
            let dst = mapped([ip[16], ip[17], ip[18], ip[19]]);
            (L3::V4, src, dst, ip[8], be16([ip[2], ip[3]]), off + ihl)
        }
        ETH_P_IPV6 => {
            let ip = unsafe { &*ptr_at::<[u8; 40]>(ctx, off)? };
            if ip[0] >> 4 != 6 {
                return Err(Reason::PassNotIp);
            }
            match ip[6] {
                IPPROTO_UDP => {}
                IPV6_FRAGMENT => return Err(Reason::PassFragment),
                nh if IPV6_EXT.contains(&nh) => return Err(Reason::PassIpv6ExtHeader),
                _ => return Err(Reason::PassNotUdp),
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            dst.copy_from_slice(&ip[24..40]);
            let len = be16([ip[4], ip[5]]).saturating_add(40);
            (L3::V6, src, dst, ip[7], len, off + 40)
        }
        _ => return Err(Reason::PassNotIp),
    };
    let udp = unsafe { &*ptr_at::<[u8; 8]>(ctx, l4_off)? };
    Ok(Headers {
        l3,
        vlans,
        l3_off: off,
        l4_off,
        src,
        dst,
        sport: be16([udp[0], udp[1]]),
        dport: be16([udp[2], udp[3]]),
        ttl,
        l3_len,
        udp_csum: be16([udp[6], udp[7]]),
    })
}

/// Rewrites destination address and port, decrements TTL/hop limit, and updates the IPv4
/// header and UDP checksums incrementally.
#[inline(always)]
pub fn rewrite(
    ctx: &XdpContext,
    h: &Headers,
    new_addr: &[u8; 16],
    new_port: u16,
    decrement_ttl: bool,
) -> Result<(), Reason> {
    let new_ttl = if decrement_ttl { h.ttl - 1 } else { h.ttl };
    // SAFETY: bounds checked by `ptr_at`; the packet is only reachable through `ctx` here.
    let udp = unsafe { &mut *ptr_at::<[u8; 8]>(ctx, h.l4_off)? };
    let port_diff = diff16(h.dport, new_port);
    match h.l3 {
        L3::V4 => {
            // SAFETY: as above.
            let ip = unsafe { &mut *ptr_at::<[u8; 20]>(ctx, h.l3_off)? };
            let old = [h.dst[12], h.dst[13], h.dst[14], h.dst[15]];
            let new = [new_addr[12], new_addr[13], new_addr[14], new_addr[15]];
            let addr_diff = diff_bytes(&old, &new);
            let proto = ip[9];
            let ttl_diff = diff16(be16([h.ttl, proto]), be16([new_ttl, proto]));
            let csum = apply(be16([ip[10], ip[11]]), addr_diff + ttl_diff);
            ip[8] = new_ttl;
            ip[10..12].copy_from_slice(&csum.to_be_bytes());
            ip[16..20].copy_from_slice(&new);
            // Zero means "no checksum" on IPv4: keep it that way.
            if h.udp_csum != 0 {
                let c = apply_udp(h.udp_csum, addr_diff + port_diff);
                udp[6..8].copy_from_slice(&c.to_be_bytes());
            }
        }
        L3::V6 => {
            // SAFETY: as above.
            let ip = unsafe { &mut *ptr_at::<[u8; 40]>(ctx, h.l3_off)? };
            let c = apply_udp(h.udp_csum, diff_bytes(&h.dst, new_addr) + port_diff);
            ip[7] = new_ttl;
            ip[24..40].copy_from_slice(new_addr);
            udp[6..8].copy_from_slice(&c.to_be_bytes());
        }
    }
    udp[2..4].copy_from_slice(&new_port.to_be_bytes());
    Ok(())
}

/// Writes the Ethernet addresses of the frame that will start at `off` (after stripping).
#[inline(always)]
pub fn set_macs(ctx: &XdpContext, off: usize, dst: &[u8; 6], src: &[u8; 6]) -> Result<(), Reason> {
    // SAFETY: bounds checked by `ptr_at`.
    let macs = unsafe { &mut *ptr_at::<[u8; 12]>(ctx, off & 0xff)? };
    macs[0..6].copy_from_slice(dst);
    macs[6..12].copy_from_slice(src);
    Ok(())
}
