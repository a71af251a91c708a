//! Sampled packet header parsing (sFlow raw packet headers, IPFIX dataLinkFrameSection), as
//! GoFlow2's `producer/proto/producer_packet.go` does it: a walk over the layers (Ethernet,
//! 802.1Q / 802.1ad tags, MPLS, IPv4, IPv6 and its routing and fragment headers, GRE, TCP, UDP,
//! ICMP, ICMPv6; SCTP and UDP-Lite ports), listing each in `layer_stack` / `layer_size`.
//!
//! Tunnels: a layer that does not go deeper than the one before it (IP after IP or after GRE,
//! Ethernet after GRE) starts an inner packet. The record's fields describe the outer packet;
//! inner layers are only listed (GoFlow2's "encapsulated" layers). ICMP type and code come from
//! the ICMP layer wherever it is, as in GoFlow2.
//!
//! Stops quietly wherever the sampled bytes end: a header is a prefix of a packet, so a cut is
//! normal, not an error. A layer whose fixed header is cut is neither read nor listed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::reader::{array_at, u8_at, u16_at, u32_at};
use crate::record::Mac;
use crate::record::{FlowRecord, Layer};

/// sFlow `header_protocol` values we parse.
pub(crate) const HEADER_ETHERNET: u32 = 1;
pub(crate) const HEADER_IPV4: u32 = 11;
pub(crate) const HEADER_IPV6: u32 = 12;

pub(crate) const ETYPE_IPV4: u16 = 0x0800;
pub(crate) const ETYPE_IPV6: u16 = 0x86dd;
const ETYPE_VLAN: u16 = 0x8100;
const ETYPE_QINQ: u16 = 0x88a8;
const ETYPE_MPLS: u16 = 0x8847;
/// Transparent Ethernet Bridging (GRE, RFC 1701), and the value GoFlow2 also takes for it.
const ETYPE_TEB: u16 = 0x6558;
const ETYPE_TEB_GOFLOW2: u16 = 0x199e;

/// Fill `r` from a sampled header of the given sFlow header protocol.
pub(crate) fn parse(header_protocol: u32, b: &[u8], r: &mut FlowRecord) {
    let first = match header_protocol {
        HEADER_ETHERNET => Next::Ethernet,
        HEADER_IPV4 => {
            r.etype = ETYPE_IPV4;
            Next::Ipv4
        }
        HEADER_IPV6 => {
            r.etype = ETYPE_IPV6;
            Next::Ipv6
        }
        _ => return,
    };
    walk(first, b, r);
}

/// The header to read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Ethernet,
    Dot1q,
    Mpls,
    Ipv4,
    Ipv6,
    Routing,
    Fragment,
    /// IPv6 hop-by-hop or destination options: skipped, not listed (GoFlow2 stops there).
    Options,
    /// IPv6 authentication header: skipped, not listed (GoFlow2 stops there).
    Auth,
    Gre,
    Tcp,
    Udp,
    /// SCTP, UDP-Lite: ports only, not listed (GoFlow2 has no such layer).
    Ports,
    Icmp,
    Icmpv6,
    End,
}

impl Next {
    /// GoFlow2's layer index (how deep the layer sits: link 20, tags 25, IP 30, IPv6 extension
    /// headers 35, transport 40, ICMP 70) and whether the layer may repeat without starting
    /// an inner packet (its `EncapSkip`: tags, MPLS, fragment header).
    fn rank(self) -> (u8, bool) {
        match self {
            Next::Ethernet => (20, false),
            Next::Dot1q | Next::Mpls => (25, true),
            Next::Ipv4 | Next::Ipv6 => (30, false),
            Next::Routing => (35, false),
            Next::Fragment | Next::Options | Next::Auth => (35, true),
            Next::Gre | Next::Tcp | Next::Udp | Next::Ports => (40, false),
            Next::Icmp | Next::Icmpv6 | Next::End => (70, false),
        }
    }
}

/// The layer after an Ethernet type (Ethernet, 802.1Q, MPLS, GRE).
fn after_etype(etype: u16) -> Next {
    match etype {
        ETYPE_IPV4 => Next::Ipv4,
        ETYPE_IPV6 => Next::Ipv6,
        ETYPE_VLAN | ETYPE_QINQ => Next::Dot1q,
        ETYPE_MPLS => Next::Mpls,
        ETYPE_TEB | ETYPE_TEB_GOFLOW2 => Next::Ethernet,
        _ => Next::End,
    }
}

/// The layer after an IP protocol number (IPv4, IPv6 and its extension headers).
fn after_proto(proto: u8) -> Next {
    match proto {
        0 | 60 => Next::Options,
        1 => Next::Icmp,
        4 => Next::Ipv4,
        6 => Next::Tcp,
        17 => Next::Udp,
        41 => Next::Ipv6,
        43 => Next::Routing,
        44 => Next::Fragment,
        47 => Next::Gre,
        51 => Next::Auth,
        58 => Next::Icmpv6,
        132 | 136 => Next::Ports,
        _ => Next::End,
    }
}

/// One parsed layer: what it is (`None`: not listed), its length, and what follows.
type Step = (Option<Layer>, usize, Next);

/// Walks the layers from `next` on. `outer` is the index of the last layer that can start a
/// tunnel; a layer at or above it (below it, for the repeatable ones) is inner, and so is
/// everything after it (GoFlow2's `ParsePacket`).
fn walk(mut next: Next, b: &[u8], r: &mut FlowRecord) {
    let mut off = 0;
    let mut base = true;
    let mut outer = 0;
    while next != Next::End {
        let (rank, repeatable) = next.rank();
        if rank < outer || (!repeatable && rank == outer) {
            base = false;
        }
        let Some(rest) = b.get(off..) else { return };
        let Some((layer, size, after)) = step(next, rest, base, r) else {
            return;
        };
        if let Some(l) = layer
            && r.layer_stack.push(l)
        {
            r.layer_size.push(u16::try_from(size).unwrap_or(u16::MAX));
        }
        if !repeatable {
            outer = rank;
        }
        off += size;
        next = after;
    }
}

/// Parses one layer at the start of `b`; `None` when its fixed header is cut. `base`: the
/// layer belongs to the outer packet, so it fills the record's fields.
fn step(next: Next, b: &[u8], base: bool, r: &mut FlowRecord) -> Option<Step> {
    match next {
        Next::Ethernet => ethernet(b, base, r),
        Next::Dot1q => dot1q(b, base, r),
        Next::Mpls => mpls(b, base, r),
        Next::Ipv4 => ipv4(b, base, r),
        Next::Ipv6 => ipv6(b, base, r),
        Next::Routing => routing(b, base, r),
        Next::Fragment => fragment(b, base, r),
        Next::Options | Next::Auth => {
            let (n, len) = (u8_at(b, 0)?, usize::from(u8_at(b, 1)?));
            if base {
                r.proto = n;
            }
            let size = if next == Next::Auth {
                (len + 2) * 4
            } else {
                (len + 1) * 8
            };
            Some((None, size, after_proto(n)))
        }
        Next::Gre => gre(b),
        Next::Tcp => {
            let h = array_at::<20>(b, 0)?;
            if base {
                ports(&h, r);
                // The flags byte only (CWR … FIN), as GoFlow2 reads it; the NS bit is
                // historic (RFC 8311).
                r.tcp_flags = u16::from(h[13]);
            }
            Some((Some(Layer::Tcp), usize::from(h[12] >> 4) * 4, Next::End))
        }
        Next::Udp => {
            let h = array_at::<8>(b, 0)?;
            if base {
                ports(&h, r);
            }
            Some((Some(Layer::Udp), 8, Next::End))
        }
        Next::Ports => {
            let h = array_at::<4>(b, 0)?;
            if base {
                ports(&h, r);
            }
            Some((None, 4, Next::End))
        }
        Next::Icmp | Next::Icmpv6 => {
            let [t, c] = array_at::<2>(b, 0)?;
            r.icmp_type = t;
            r.icmp_code = c;
            let layer = if next == Next::Icmp {
                Layer::Icmp
            } else {
                Layer::Icmpv6
            };
            Some((Some(layer), 8, Next::End))
        }
        Next::End => None,
    }
}

fn ports<const N: usize>(h: &[u8; N], r: &mut FlowRecord) {
    if let (Some(s), Some(d)) = (u16_at(h, 0), u16_at(h, 2)) {
        r.src_port = s;
        r.dst_port = d;
    }
}

fn ethernet(b: &[u8], base: bool, r: &mut FlowRecord) -> Option<Step> {
    let (dst, src, etype) = (array_at::<6>(b, 0)?, array_at::<6>(b, 6)?, u16_at(b, 12)?);
    if base {
        r.dst_mac = Mac(dst);
        r.src_mac = Mac(src);
        r.etype = etype;
    }
    Some((Some(Layer::Ethernet), 14, after_etype(etype)))
}

/// An 802.1Q or 802.1ad tag (both listed as `Dot1Q`); the outermost VLAN is reported.
fn dot1q(b: &[u8], base: bool, r: &mut FlowRecord) -> Option<Step> {
    let (tci, etype) = (u16_at(b, 0)?, u16_at(b, 2)?);
    if base {
        if r.vlan_id == 0 {
            r.vlan_id = tci & 0x0fff;
        }
        r.etype = etype;
    }
    Some((Some(Layer::Dot1q), 4, after_etype(etype)))
}

/// An MPLS label stack (one layer, as GoFlow2 reads it): labels and TTLs until the bottom of
/// the stack (or a reserved label, 0..=15); the payload's Ethernet type from its first nibble.
fn mpls(b: &[u8], base: bool, r: &mut FlowRecord) -> Option<Step> {
    u32_at(b, 0)?;
    if base {
        r.mpls_label.clear();
        r.mpls_ttl.clear();
    }
    let mut off = 0;
    while let Some(entry) = u32_at(b, off) {
        off += 4;
        let label = entry >> 12;
        if base {
            r.mpls_label.push(label);
            r.mpls_ttl.push(entry as u8);
        }
        if entry & 0x100 != 0 || label <= 15 {
            break;
        }
    }
    let etype = match u8_at(b, off).map(|v| v >> 4) {
        Some(4) => ETYPE_IPV4,
        Some(6) => ETYPE_IPV6,
        _ => return Some((Some(Layer::Mpls), off, Next::End)),
    };
    if base {
        r.etype = etype;
    }
    Some((Some(Layer::Mpls), off, after_etype(etype)))
}

fn ipv4(b: &[u8], base: bool, r: &mut FlowRecord) -> Option<Step> {
    let h = array_at::<20>(b, 0)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return None;
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let proto = h[9];
    if base {
        r.ip_tos = h[1];
        r.fragment_id = u32::from(u16::from_be_bytes([h[4], h[5]]));
        r.ip_flags = (frag >> 13) as u8;
        r.fragment_offset = frag & 0x1fff;
        r.ip_ttl = h[8];
        r.proto = proto;
        r.src_addr = Some(IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])));
        r.dst_addr = Some(IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])));
    }
    // A later fragment carries no transport header.
    let after = if frag & 0x1fff == 0 {
        after_proto(proto)
    } else {
        Next::End
    };
    Some((Some(Layer::Ipv4), ihl, after))
}

fn ipv6(b: &[u8], base: bool, r: &mut FlowRecord) -> Option<Step> {
    let (first, next) = (u32_at(b, 0)?, u8_at(b, 6)?);
    let (hop, src, dst) = (u8_at(b, 7)?, array_at::<16>(b, 8)?, array_at::<16>(b, 24)?);
    if first >> 28 != 6 {
        return None;
    }
    if base {
        r.ip_tos = (first >> 20) as u8;
        r.ipv6_flow_label = first & 0x000f_ffff;
        r.ip_ttl = hop;
        r.proto = next;
        r.src_addr = Some(IpAddr::V6(Ipv6Addr::from(src)));
        r.dst_addr = Some(IpAddr::V6(Ipv6Addr::from(dst)));
    }
    Some((Some(Layer::Ipv6), 40, after_proto(next)))
}

/// A routing header; type 4 (segment routing, RFC 8754) lists its segments: entries 0 to
/// Last Entry, as far as the header and the sampled bytes go.
fn routing(b: &[u8], base: bool, r: &mut FlowRecord) -> Option<Step> {
    let [next, len, kind, seg_left, last_entry, ..] = array_at::<8>(b, 0)?;
    let size = 8 + usize::from(len) * 8;
    if base {
        r.proto = next;
        r.ipv6_routing_header_seg_left = seg_left;
        if kind == 4 {
            let mut off = 8;
            for _ in 0..=last_entry {
                let Some(seg) = array_at::<16>(b, off).filter(|_| off < size) else {
                    break;
                };
                if !r
                    .ipv6_routing_header_addresses
                    .push(IpAddr::V6(Ipv6Addr::from(seg)))
                {
                    break;
                }
                off += 16;
            }
        }
    }
    Some((Some(Layer::Ipv6HeaderRouting), size, after_proto(next)))
}

fn fragment(b: &[u8], base: bool, r: &mut FlowRecord) -> Option<Step> {
    let (next, fo, id) = (u8_at(b, 0)?, u16_at(b, 2)?, u32_at(b, 4)?);
    if base {
        r.proto = next;
        r.fragment_id = id;
        r.fragment_offset = fo >> 3;
        r.ip_flags = (fo & 1) as u8;
    }
    // A later fragment carries no transport header.
    let after = if fo >> 3 == 0 {
        after_proto(next)
    } else {
        Next::End
    };
    Some((Some(Layer::Ipv6HeaderFragment), 8, after))
}

/// GRE (RFC 2784/2890): the checksum, key and sequence number fields its flags announce
/// precede the payload (GoFlow2 reads 4 bytes whatever the flags say).
fn gre(b: &[u8]) -> Option<Step> {
    let (flags, etype) = (u16_at(b, 0)?, u16_at(b, 2)?);
    let optional = [0x8000, 0x2000, 0x1000]
        .into_iter()
        .filter(|bit| flags & bit != 0)
        .count();
    Some((Some(Layer::Gre), 4 + 4 * optional, after_etype(etype)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::LAYERS;

    const MAC_A: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x53, 0x01];
    const MAC_B: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x53, 0x02];

    fn eth(dst: [u8; 6], src: [u8; 6], etype: u16) -> Vec<u8> {
        [&dst[..], &src[..], &etype.to_be_bytes()].concat()
    }

    /// An IPv4 header without options, TTL 64, id 0x1234, DF.
    fn v4(proto: u8, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45, 0x10, 0, 0, 0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0];
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h
    }

    /// An IPv6 header, traffic class 0, flow label 7, hop limit 255, 2001:db8::`src`/`dst`.
    fn v6(next: u8, src: u8, dst: u8) -> Vec<u8> {
        let mut h = vec![0x60, 0x00, 0x00, 0x07, 0, 0, next, 255];
        h.extend_from_slice(&v6_addr(src).octets());
        h.extend_from_slice(&v6_addr(dst).octets());
        h
    }

    fn v6_addr(n: u8) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n))
    }

    fn tcp(src: u16, dst: u16, flags: u8) -> Vec<u8> {
        let mut h = [&src.to_be_bytes()[..], &dst.to_be_bytes()[..], &[0; 8]].concat();
        h.extend_from_slice(&[0x50, flags, 0, 0, 0, 0, 0, 0]);
        h
    }

    fn udp(src: u16, dst: u16) -> Vec<u8> {
        [
            &src.to_be_bytes()[..],
            &dst.to_be_bytes()[..],
            &[0, 8, 0, 0],
        ]
        .concat()
    }

    fn parsed(header_protocol: u32, frame: &[u8]) -> FlowRecord {
        let mut r = FlowRecord::default();
        parse(header_protocol, frame, &mut r);
        r
    }

    /// The record's layer stack as (name, size) pairs.
    fn layers(r: &FlowRecord) -> Vec<(&'static str, u16)> {
        let sizes = r.layer_size.as_slice();
        assert_eq!(r.layer_stack.as_slice().len(), sizes.len());
        r.layer_stack
            .as_slice()
            .iter()
            .zip(sizes)
            .map(|(l, &s)| (l.name(), s))
            .collect()
    }

    /// Every prefix of `frame` parses without panicking, into a prefix of the full layer
    /// stack (a layer whose fixed header is cut is not listed; a cut MPLS stack is listed with
    /// the entries given, as GoFlow2 does).
    fn every_prefix_stops_quietly(header_protocol: u32, frame: &[u8]) {
        let full = layers(&parsed(header_protocol, frame));
        for n in 0..frame.len() {
            let got = layers(&parsed(header_protocol, &frame[..n]));
            let Some(((name, size), whole)) = got.split_last() else {
                continue;
            };
            assert_eq!(whole, &full[..whole.len()], "prefix of {n} bytes");
            let (full_name, full_size) = full[whole.len()];
            assert!(
                *name == full_name && *size <= full_size,
                "prefix of {n} bytes: {got:?}"
            );
        }
    }

    #[test]
    fn ethernet_vlan_ipv4_tcp() {
        let frame = [
            eth(MAC_A, MAC_B, ETYPE_VLAN),
            vec![0x20, 0x64, 0x08, 0x00], // PCP 1, VLAN 100, IPv4
            v4(6, [198, 51, 100, 1], [203, 0, 113, 9]),
            tcp(443, 50000, 0x12),
        ]
        .concat();
        let r = parsed(HEADER_ETHERNET, &frame);
        assert_eq!(r.vlan_id, 100);
        assert_eq!(r.etype, ETYPE_IPV4);
        assert_eq!(r.src_mac.to_string(), "00:00:5e:00:53:02");
        assert_eq!(r.src_addr, Some("198.51.100.1".parse().unwrap()));
        assert_eq!(r.dst_addr, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(
            (r.proto, r.src_port, r.dst_port, r.tcp_flags),
            (6, 443, 50000, 0x12)
        );
        assert_eq!(
            (r.ip_tos, r.ip_ttl, r.ip_flags, r.fragment_id),
            (0x10, 64, 2, 0x1234)
        );
        assert_eq!(
            layers(&r),
            [("Ethernet", 14), ("Dot1Q", 4), ("IPv4", 20), ("TCP", 20)]
        );
        every_prefix_stops_quietly(HEADER_ETHERNET, &frame);
        // A cut TCP header is not read (GoFlow2 needs its 20 bytes too).
        let cut = parsed(HEADER_ETHERNET, &frame[..frame.len() - 1]);
        assert_eq!((cut.src_port, cut.tcp_flags), (0, 0));
        assert_eq!(cut.layer_stack.as_slice().len(), 3);
    }

    #[test]
    fn mpls_stack_then_ipv4_udp() {
        let frame = [
            eth(MAC_A, MAC_B, ETYPE_MPLS),
            vec![0x00, 0x01, 0x00, 0x3f], // label 16, TTL 63
            vec![0x00, 0x01, 0x11, 0x3e], // label 17, bottom of stack, TTL 62
            v4(17, [192, 0, 2, 1], [192, 0, 2, 2]),
            udp(12345, 53),
        ]
        .concat();
        let r = parsed(HEADER_ETHERNET, &frame);
        assert_eq!(r.mpls_label.as_slice(), [16, 17]);
        assert_eq!(r.mpls_ttl.as_slice(), [63, 62]);
        assert_eq!(r.etype, ETYPE_IPV4);
        assert_eq!(r.dst_addr, Some("192.0.2.2".parse().unwrap()));
        assert_eq!((r.proto, r.src_port, r.dst_port), (17, 12345, 53));
        assert_eq!(
            layers(&r),
            [("Ethernet", 14), ("MPLS", 8), ("IPv4", 20), ("UDP", 8)]
        );
        every_prefix_stops_quietly(HEADER_ETHERNET, &frame);
    }

    #[test]
    fn ipv6_fragment_header_then_icmpv6() {
        let p = [
            v6(44, 1, 2),
            vec![58, 0, 0, 1, 0, 0, 0, 9], // fragment header, offset 0, more fragments, id 9
            vec![128, 0, 0, 0],            // echo request
        ]
        .concat();
        let r = parsed(HEADER_IPV6, &p);
        assert_eq!((r.proto, r.icmp_type, r.icmp_code), (58, 128, 0));
        assert_eq!((r.ipv6_flow_label, r.fragment_id, r.ip_flags), (7, 9, 1));
        assert_eq!(
            layers(&r),
            [("IPv6", 40), ("IPv6HeaderFragment", 8), ("ICMPv6", 8)]
        );
        every_prefix_stops_quietly(HEADER_IPV6, &p);
        // A later fragment: no transport header follows.
        let mut later = p.clone();
        later[42..44].copy_from_slice(&[0x00, 0x08]); // offset 1 (8 bytes)
        let r = parsed(HEADER_IPV6, &later);
        assert_eq!((r.proto, r.fragment_offset, r.icmp_type), (58, 1, 0));
        assert_eq!(layers(&r), [("IPv6", 40), ("IPv6HeaderFragment", 8)]);
    }

    /// SRv6 (RFC 8754): an outer IPv6 header with a segment routing header over an inner IPv6
    /// packet. The segment list and segments left are read; the outer addresses win.
    #[test]
    fn srv6_segment_routing_header_over_ipv6() {
        let mut srh = vec![41, 6, 4, 1, 2, 0, 0, 0]; // next IPv6, 3 segments, seg left 1, last 2
        for n in [0xa, 0xb, 0xc] {
            srh.extend_from_slice(&v6_addr(n).octets());
        }
        let frame = [
            eth(MAC_A, MAC_B, ETYPE_IPV6),
            v6(43, 1, 0xb),
            srh,
            v6(6, 0x21, 0x22),
            tcp(1000, 2000, 0x02),
        ]
        .concat();
        let r = parsed(HEADER_ETHERNET, &frame);
        let segs: Vec<IpAddr> = [0xa, 0xb, 0xc].map(|n| IpAddr::V6(v6_addr(n))).into();
        assert_eq!(r.ipv6_routing_header_addresses.as_slice(), segs);
        assert_eq!(r.ipv6_routing_header_seg_left, 1);
        assert_eq!(r.src_addr, Some(IpAddr::V6(v6_addr(1))));
        assert_eq!(r.dst_addr, Some(IpAddr::V6(v6_addr(0xb))));
        // The routing header's next header; the inner TCP header is only listed.
        assert_eq!((r.proto, r.src_port, r.tcp_flags), (41, 0, 0));
        assert_eq!(
            layers(&r),
            [
                ("Ethernet", 14),
                ("IPv6", 40),
                ("IPv6HeaderRouting", 56),
                ("IPv6", 40),
                ("TCP", 20)
            ]
        );
        every_prefix_stops_quietly(HEADER_ETHERNET, &frame);
        // Cut inside the segment list: the whole segments given are kept.
        let cut = parsed(HEADER_ETHERNET, &frame[..14 + 40 + 8 + 16 + 8]);
        assert_eq!(cut.ipv6_routing_header_addresses.as_slice(), &segs[..1]);
        // Last Entry bounds the list too.
        let mut one = frame.clone();
        one[14 + 40 + 4] = 0;
        let r = parsed(HEADER_ETHERNET, &one);
        assert_eq!(r.ipv6_routing_header_addresses.as_slice(), &segs[..1]);
    }

    #[test]
    fn srv6_segment_list_past_the_cap_keeps_the_first() {
        let n = crate::record::SRV6_SEGMENTS as u8 + 2;
        let mut srh = vec![59, 2 * n, 4, n - 1, n - 1, 0, 0, 0]; // no next header
        for i in 0..n {
            srh.extend_from_slice(&v6_addr(i).octets());
        }
        let r = parsed(HEADER_IPV6, &[v6(43, 1, 2), srh].concat());
        let want: Vec<IpAddr> = (0..crate::record::SRV6_SEGMENTS as u8)
            .map(|i| IpAddr::V6(v6_addr(i)))
            .collect();
        assert_eq!(r.ipv6_routing_header_addresses.as_slice(), want);
        assert_eq!(
            layers(&r),
            [("IPv6", 40), ("IPv6HeaderRouting", 8 + 16 * u16::from(n))]
        );
    }

    /// GRE with a key over IPv4: the outer header fills the record, the inner one is listed.
    #[test]
    fn gre_tunnel_outer_addresses_win() {
        let frame = [
            eth(MAC_A, MAC_B, ETYPE_IPV4),
            v4(47, [198, 18, 0, 1], [198, 18, 0, 2]),
            vec![0x20, 0x00, 0x08, 0x00, 0, 0, 0, 42], // key present, IPv4, key 42
            v4(17, [10, 0, 0, 1], [10, 0, 0, 2]),
            udp(5000, 53),
        ]
        .concat();
        let r = parsed(HEADER_ETHERNET, &frame);
        assert_eq!(r.src_addr, Some("198.18.0.1".parse().unwrap()));
        assert_eq!(r.dst_addr, Some("198.18.0.2".parse().unwrap()));
        assert_eq!((r.proto, r.src_port, r.dst_port), (47, 0, 0));
        assert_eq!(
            layers(&r),
            [
                ("Ethernet", 14),
                ("IPv4", 20),
                ("GRE", 8),
                ("IPv4", 20),
                ("UDP", 8)
            ]
        );
        every_prefix_stops_quietly(HEADER_ETHERNET, &frame);
    }

    /// GRE bridging Ethernet (0x6558): the inner frame's MACs do not replace the outer ones;
    /// ICMP type and code come from the ICMP layer even inside the tunnel (as in GoFlow2).
    #[test]
    fn gre_ethernet_bridging_and_inner_icmp() {
        let frame = [
            eth(MAC_A, MAC_B, ETYPE_IPV4),
            v4(47, [198, 18, 0, 1], [198, 18, 0, 2]),
            vec![0x00, 0x00, 0x65, 0x58],
            eth([0x02; 6], [0x04; 6], ETYPE_IPV4),
            v4(1, [10, 0, 0, 1], [10, 0, 0, 2]),
            vec![8, 0, 0, 0, 0, 1, 0, 1], // echo request
        ]
        .concat();
        let r = parsed(HEADER_ETHERNET, &frame);
        assert_eq!((r.src_mac, r.dst_mac), (Mac(MAC_B), Mac(MAC_A)));
        assert_eq!(r.src_addr, Some("198.18.0.1".parse().unwrap()));
        assert_eq!((r.proto, r.icmp_type, r.icmp_code), (47, 8, 0));
        assert_eq!(
            layers(&r),
            [
                ("Ethernet", 14),
                ("IPv4", 20),
                ("GRE", 4),
                ("Ethernet", 14),
                ("IPv4", 20),
                ("ICMP", 8)
            ]
        );
    }

    #[test]
    fn ip_in_ip_is_a_tunnel() {
        let frame = [
            v4(4, [198, 18, 0, 1], [198, 18, 0, 2]),
            v4(6, [10, 0, 0, 1], [10, 0, 0, 2]),
            tcp(1, 2, 0x10),
        ]
        .concat();
        let r = parsed(HEADER_IPV4, &frame);
        assert_eq!(r.dst_addr, Some("198.18.0.2".parse().unwrap()));
        assert_eq!((r.proto, r.src_port, r.tcp_flags), (4, 0, 0));
        assert_eq!(layers(&r), [("IPv4", 20), ("IPv4", 20), ("TCP", 20)]);
    }

    /// MPLS over GRE (RFC 4023): the labels and the packet under them are inner. (GoFlow2
    /// compares MPLS with GRE only, and lets the inner IPv4 header replace the outer one.)
    #[test]
    fn mpls_over_gre_stays_inner() {
        let frame = [
            v4(47, [198, 18, 0, 1], [198, 18, 0, 2]),
            vec![0x00, 0x00, 0x88, 0x47],
            vec![0x00, 0x01, 0x01, 0x3f], // label 16, bottom
            v4(17, [10, 0, 0, 1], [10, 0, 0, 2]),
            udp(7, 9),
        ]
        .concat();
        let r = parsed(HEADER_IPV4, &frame);
        assert_eq!(r.src_addr, Some("198.18.0.1".parse().unwrap()));
        assert!(r.mpls_label.as_slice().is_empty());
        assert_eq!((r.proto, r.dst_port, r.etype), (47, 0, ETYPE_IPV4));
        assert_eq!(
            layers(&r),
            [
                ("IPv4", 20),
                ("GRE", 4),
                ("MPLS", 4),
                ("IPv4", 20),
                ("UDP", 8)
            ]
        );
    }

    /// More layers than a record lists: the first [`LAYERS`] are kept, parsing goes on.
    #[test]
    fn layers_past_the_cap_are_not_listed_but_parsed() {
        let mut frame = eth(MAC_A, MAC_B, ETYPE_VLAN);
        for vlan in 1..=20u16 {
            let next = if vlan == 20 { ETYPE_IPV4 } else { ETYPE_VLAN };
            frame.extend_from_slice(&vlan.to_be_bytes());
            frame.extend_from_slice(&next.to_be_bytes());
        }
        frame.extend_from_slice(&v4(17, [192, 0, 2, 1], [192, 0, 2, 2]));
        frame.extend_from_slice(&udp(1, 2));
        let r = parsed(HEADER_ETHERNET, &frame);
        let mut want = vec![("Ethernet", 14)];
        want.resize(LAYERS, ("Dot1Q", 4));
        assert_eq!(layers(&r), want);
        assert_eq!((r.vlan_id, r.etype, r.dst_port), (1, ETYPE_IPV4, 2));
    }

    /// Extension headers GoFlow2 has no layer for are skipped, not listed.
    #[test]
    fn ipv6_hop_by_hop_is_skipped() {
        let p = [
            v6(0, 1, 2),
            vec![17, 0, 1, 4, 0, 0, 0, 0], // hop-by-hop, PadN
            udp(546, 547),
        ]
        .concat();
        let r = parsed(HEADER_IPV6, &p);
        assert_eq!((r.proto, r.src_port, r.dst_port), (17, 546, 547));
        assert_eq!(layers(&r), [("IPv6", 40), ("UDP", 8)]);
    }
}
