//! Sampled packet header parsing for sFlow: Ethernet, 802.1Q / 802.1ad VLAN tags, IPv4, IPv6
//! (with extension headers), TCP, UDP, SCTP, ICMP and ICMPv6. Stops quietly wherever the
//! sampled bytes end: a header is a prefix of a packet, so a cut is normal, not an error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::reader::{array_at, u8_at, u16_at, u32_at};
use crate::record::FlowRecord;
use crate::record::Mac;

/// sFlow `header_protocol` values we parse.
pub(crate) const HEADER_ETHERNET: u32 = 1;
pub(crate) const HEADER_IPV4: u32 = 11;
pub(crate) const HEADER_IPV6: u32 = 12;

pub(crate) const ETYPE_IPV4: u16 = 0x0800;
pub(crate) const ETYPE_IPV6: u16 = 0x86dd;
const ETYPE_VLAN: u16 = 0x8100;
const ETYPE_QINQ: u16 = 0x88a8;
const ETYPE_MPLS: u16 = 0x8847;

/// Fill `r` from a sampled header of the given sFlow header protocol.
pub(crate) fn parse(header_protocol: u32, b: &[u8], r: &mut FlowRecord) {
    match header_protocol {
        HEADER_ETHERNET => ethernet(b, r),
        HEADER_IPV4 => {
            r.etype = ETYPE_IPV4;
            ipv4(b, r);
        }
        HEADER_IPV6 => {
            r.etype = ETYPE_IPV6;
            ipv6(b, r);
        }
        _ => {}
    }
}

fn ethernet(b: &[u8], r: &mut FlowRecord) {
    let (Some(dst), Some(src)) = (array_at::<6>(b, 0), array_at::<6>(b, 6)) else {
        return;
    };
    r.dst_mac = Mac(dst);
    r.src_mac = Mac(src);
    let mut off = 12;
    let Some(mut etype) = u16_at(b, off) else {
        return;
    };
    // Up to two tags (802.1ad outer + 802.1Q inner); the outermost VLAN is reported.
    for _ in 0..2 {
        if etype != ETYPE_VLAN && etype != ETYPE_QINQ {
            break;
        }
        let Some(tci) = u16_at(b, off + 2) else {
            return;
        };
        if r.vlan_id == 0 {
            r.vlan_id = tci & 0x0fff;
        }
        off += 4;
        let Some(next) = u16_at(b, off) else {
            return;
        };
        etype = next;
    }
    let mut l3 = b.get(off + 2..).unwrap_or_default();
    if etype == ETYPE_MPLS {
        let (inner, rest) = mpls(l3, r);
        etype = inner;
        l3 = rest;
    }
    r.etype = etype;
    match etype {
        ETYPE_IPV4 => ipv4(l3, r),
        ETYPE_IPV6 => ipv6(l3, r),
        _ => {}
    }
}

/// An MPLS label stack (as GoFlow2 reads it): labels and TTLs until the bottom of the stack
/// (or a reserved label, 0..=15); the payload's Ethernet type from its first nibble.
fn mpls<'a>(b: &'a [u8], r: &mut FlowRecord) -> (u16, &'a [u8]) {
    r.mpls_label.clear();
    r.mpls_ttl.clear();
    let mut off = 0;
    while let Some(entry) = u32_at(b, off) {
        off += 4;
        let label = entry >> 12;
        r.mpls_label.push(label);
        r.mpls_ttl.push(entry as u8);
        if entry & 0x100 != 0 || label <= 15 {
            break;
        }
    }
    let rest = b.get(off..).unwrap_or_default();
    let etype = match u8_at(rest, 0).map(|v| v >> 4) {
        Some(4) => ETYPE_IPV4,
        Some(6) => ETYPE_IPV6,
        _ => ETYPE_MPLS,
    };
    (etype, rest)
}

fn ipv4(b: &[u8], r: &mut FlowRecord) {
    let Some(vihl) = u8_at(b, 0) else { return };
    if vihl >> 4 != 4 {
        return;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let (Some(tos), Some(id), Some(frag), Some(ttl), Some(proto)) = (
        u8_at(b, 1),
        u16_at(b, 4),
        u16_at(b, 6),
        u8_at(b, 8),
        u8_at(b, 9),
    ) else {
        return;
    };
    let (Some(src), Some(dst)) = (array_at::<4>(b, 12), array_at::<4>(b, 16)) else {
        return;
    };
    r.ip_tos = tos;
    r.fragment_id = u32::from(id);
    r.ip_flags = (frag >> 13) as u8;
    r.fragment_offset = frag & 0x1fff;
    r.ip_ttl = ttl;
    r.proto = proto;
    r.src_addr = Some(IpAddr::V4(Ipv4Addr::from(src)));
    r.dst_addr = Some(IpAddr::V4(Ipv4Addr::from(dst)));
    if ihl >= 20 && r.fragment_offset == 0 {
        transport(proto, b.get(ihl..).unwrap_or_default(), r);
    }
}

fn ipv6(b: &[u8], r: &mut FlowRecord) {
    let Some(first) = u32_at(b, 0) else { return };
    if first >> 28 != 6 {
        return;
    }
    let (Some(next), Some(hop), Some(src), Some(dst)) = (
        u8_at(b, 6),
        u8_at(b, 7),
        array_at::<16>(b, 8),
        array_at::<16>(b, 24),
    ) else {
        return;
    };
    r.ip_tos = (first >> 20) as u8;
    r.ipv6_flow_label = first & 0x000f_ffff;
    r.ip_ttl = hop;
    r.src_addr = Some(IpAddr::V6(Ipv6Addr::from(src)));
    r.dst_addr = Some(IpAddr::V6(Ipv6Addr::from(dst)));
    let mut proto = next;
    let mut off = 40usize;
    // Walk a bounded number of extension headers.
    for _ in 0..8 {
        match proto {
            0 | 43 | 60 => {
                let (Some(n), Some(len)) = (u8_at(b, off), u8_at(b, off + 1)) else {
                    r.proto = proto;
                    return;
                };
                proto = n;
                off += (usize::from(len) + 1) * 8;
            }
            44 => {
                let (Some(n), Some(fo), Some(id)) =
                    (u8_at(b, off), u16_at(b, off + 2), u32_at(b, off + 4))
                else {
                    r.proto = proto;
                    return;
                };
                r.fragment_id = id;
                r.fragment_offset = fo >> 3;
                r.ip_flags = (fo & 1) as u8;
                proto = n;
                off += 8;
                if r.fragment_offset != 0 {
                    r.proto = proto;
                    return;
                }
            }
            51 => {
                let (Some(n), Some(len)) = (u8_at(b, off), u8_at(b, off + 1)) else {
                    r.proto = proto;
                    return;
                };
                proto = n;
                off += (usize::from(len) + 2) * 4;
            }
            _ => break,
        }
    }
    r.proto = proto;
    transport(proto, b.get(off..).unwrap_or_default(), r);
}

fn transport(proto: u8, b: &[u8], r: &mut FlowRecord) {
    match proto {
        6 | 17 | 132 | 136 => {
            if let (Some(s), Some(d)) = (u16_at(b, 0), u16_at(b, 2)) {
                r.src_port = s;
                r.dst_port = d;
            }
            // The flags byte only (CWR … FIN), as GoFlow2 reads it; the NS bit is historic
            // (RFC 8311).
            if proto == 6
                && let Some(flags) = u8_at(b, 13)
            {
                r.tcp_flags = u16::from(flags);
            }
        }
        1 | 58 => {
            if let (Some(t), Some(c)) = (u8_at(b, 0), u8_at(b, 1)) {
                r.icmp_type = t;
                r.icmp_code = c;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_vlan_ipv4_tcp() {
        #[rustfmt::skip]
        let frame = [
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, // dst MAC
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x02, // src MAC
            0x81, 0x00, 0x20, 0x64,             // 802.1Q, PCP 1, VLAN 100
            0x08, 0x00,                         // IPv4
            0x45, 0x10, 0x00, 0x28,             // v4 ihl 5, tos 0x10, len 40
            0x12, 0x34, 0x40, 0x00,             // id 0x1234, DF
            0x40, 0x06, 0x00, 0x00,             // ttl 64, TCP
            198, 51, 100, 1,                    // src
            203, 0, 113, 9,                     // dst
            0x01, 0xbb, 0xc3, 0x50,             // 443 -> 50000
            0, 0, 0, 1, 0, 0, 0, 0,             // seq, ack
            0x50, 0x12,                         // data offset, SYN+ACK
        ];
        let mut r = FlowRecord::default();
        parse(HEADER_ETHERNET, &frame, &mut r);
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
        // Every prefix parses without panicking.
        for n in 0..frame.len() {
            parse(HEADER_ETHERNET, &frame[..n], &mut FlowRecord::default());
        }
    }

    #[test]
    fn mpls_stack_then_ipv4_udp() {
        #[rustfmt::skip]
        let frame = [
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, 0x00, 0x00, 0x5e, 0x00, 0x53, 0x02,
            0x88, 0x47,             // MPLS unicast
            0x00, 0x01, 0x00, 0x3f, // label 16, TTL 63
            0x00, 0x01, 0x11, 0x3e, // label 17, bottom of stack, TTL 62
            0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0, 0,
            192, 0, 2, 1, 192, 0, 2, 2,
            0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0, 0,
        ];
        let mut r = FlowRecord::default();
        parse(HEADER_ETHERNET, &frame, &mut r);
        assert_eq!(r.mpls_label.as_slice(), [16, 17]);
        assert_eq!(r.mpls_ttl.as_slice(), [63, 62]);
        assert_eq!(r.etype, ETYPE_IPV4);
        assert_eq!(r.dst_addr, Some("192.0.2.2".parse().unwrap()));
        assert_eq!((r.proto, r.src_port, r.dst_port), (17, 12345, 53));
        for n in 0..frame.len() {
            parse(HEADER_ETHERNET, &frame[..n], &mut FlowRecord::default());
        }
    }

    #[test]
    fn ipv6_fragment_header_then_icmpv6() {
        let mut p = vec![0x60, 0x00, 0x00, 0x07, 0, 16, 44, 255];
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[58, 0, 0, 1, 0, 0, 0, 9]); // fragment header, more fragments
        p.extend_from_slice(&[128, 0, 0, 0]); // echo request
        let mut r = FlowRecord::default();
        parse(HEADER_IPV6, &p, &mut r);
        assert_eq!((r.proto, r.icmp_type, r.icmp_code), (58, 128, 0));
        assert_eq!((r.ipv6_flow_label, r.fragment_id, r.ip_flags), (7, 9, 1));
    }
}
