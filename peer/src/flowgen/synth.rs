//! Deterministic synthetic traffic: plausible flows from a seed (SplitMix64), no `rand` needed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::record::{FlowRecord, Mac, Protocol};

/// Produces flows for one exporter. The same seed gives the same flows.
#[derive(Debug, Clone)]
pub struct FlowSynth {
    state: u64,
    /// Fraction of IPv6 flows, in 1/256 (0 for NetFlow v5, which is IPv4-only).
    v6_per_256: u64,
    /// sFlow: every flow is one sampled packet.
    packet_samples: bool,
}

impl FlowSynth {
    /// A generator of flows `protocol` can carry: IPv4 only for NetFlow v5, one IPv6 flow in
    /// eight otherwise; for sFlow each flow is one sampled frame of 64 to 1518 bytes.
    pub fn new(seed: u64, protocol: Protocol) -> Self {
        FlowSynth {
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
            v6_per_256: if protocol == Protocol::NetflowV5 {
                0
            } else {
                32
            },
            packet_samples: protocol == Protocol::Sflow5,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// One flow that ended shortly before `now_ns` (times on whole milliseconds).
    pub fn flow(&mut self, now_ns: u64) -> FlowRecord {
        let v6 = self.below(256) < self.v6_per_256;
        let (src_addr, dst_addr, next_hop, etype, masks) = if v6 {
            let a = |s: &mut Self| {
                IpAddr::V6(Ipv6Addr::from(
                    0x2001_0db8_u128 << 96 | u128::from(s.next() & 0xffff_ffff_ffff),
                ))
            };
            (a(self), a(self), a(self), 0x86dd, (48, 64))
        } else {
            let a = |s: &mut Self| {
                IpAddr::V4(Ipv4Addr::from(
                    0x0a00_0000 | (s.next() as u32 & 0x00ff_ffff),
                ))
            };
            (a(self), a(self), a(self), 0x0800, (24, 16))
        };
        let proto = match self.below(100) {
            0..70 => 6,
            70..95 => 17,
            _ if v6 => 58,
            _ => 1,
        };
        let (src_port, dst_port, tcp_flags, icmp_type, icmp_code) = match proto {
            6 => (
                (1024 + self.below(64_000)) as u16,
                [443, 80, 22, 25, 8080][self.below(5) as usize],
                (self.below(64) as u16) | 0x10,
                0,
                0,
            ),
            17 => (
                (1024 + self.below(64_000)) as u16,
                [53, 123, 443, 4789][self.below(4) as usize],
                0,
                0,
                0,
            ),
            _ => (0, 0, 0, if v6 { 128 } else { 8 }, 0),
        };
        let (packets, bytes) = if self.packet_samples {
            (1, 64 + self.below(1455))
        } else {
            let packets = 1 + self.below(1000);
            (packets, packets * (40 + self.below(1400)))
        };
        let now_ms = now_ns / 1_000_000;
        let end_ms = now_ms.saturating_sub(self.below(1000));
        let start_ms = end_ms.saturating_sub(self.below(60_000));
        FlowRecord {
            time_flow_start_ns: start_ms * 1_000_000,
            time_flow_end_ns: end_ms * 1_000_000,
            bytes,
            packets,
            src_addr: Some(src_addr),
            dst_addr: Some(dst_addr),
            next_hop: Some(next_hop),
            etype,
            proto,
            src_port,
            dst_port,
            in_if: 1 + self.below(48) as u32,
            out_if: 1 + self.below(48) as u32,
            src_mac: Mac([0x02, 0, 0, 0, 0, self.below(256) as u8]),
            dst_mac: Mac([0x02, 0, 0, 0, 1, self.below(256) as u8]),
            tcp_flags,
            icmp_type,
            icmp_code,
            ip_tos: (self.below(4) as u8) << 5,
            ip_ttl: 64,
            src_as: 64_512 + self.below(100) as u32,
            dst_as: 64_512 + self.below(100) as u32,
            src_mask: masks.0,
            dst_mask: masks.1,
            ..FlowRecord::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_v5_is_ipv4() {
        let mut a = FlowSynth::new(7, Protocol::NetflowV5);
        let mut b = FlowSynth::new(7, Protocol::NetflowV5);
        for _ in 0..1000 {
            let f = a.flow(1_700_000_000_000_000_000);
            assert_eq!(f, b.flow(1_700_000_000_000_000_000));
            assert!(matches!(f.src_addr, Some(IpAddr::V4(_))));
            assert!(f.time_flow_start_ns <= f.time_flow_end_ns);
        }
    }
}
