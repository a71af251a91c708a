//! sFlow v5 encoder: one flow sample per flow (sampled header: Ethernet, optional 802.1Q tag,
//! IPv4/IPv6, TCP/UDP/ICMP; extended switch, router and gateway records), and a counter sample
//! every `template_every` datagrams.

use std::net::IpAddr;

use super::config::EncoderConfig;
use super::wire::{ipv6, patch_u32, u8, u16, u32, u64, uptime_ms};
use crate::record::FlowRecord;

#[derive(Debug, Clone)]
pub struct SflowEncoder {
    cfg: EncoderConfig,
    datagrams: u32,
    samples: u32,
}

fn address(out: &mut Vec<u8>, a: Option<IpAddr>) {
    match a {
        Some(IpAddr::V6(_)) => {
            u32(out, 2);
            ipv6(out, a);
        }
        Some(IpAddr::V4(v4)) => {
            u32(out, 1);
            out.extend_from_slice(&v4.octets());
        }
        None => {
            u32(out, 1);
            u32(out, 0);
        }
    }
}

/// Start a length-prefixed element (sample or record) with `format`; returns the length offset.
fn begin(out: &mut Vec<u8>, format: u32) -> usize {
    u32(out, format);
    let at = out.len();
    u32(out, 0);
    at
}

fn end(out: &mut [u8], len_at: usize) {
    let len = out.len() - len_at - 4;
    patch_u32(out, len_at, len as u32);
}

/// The sampled packet's first bytes, rebuilt from the flow.
fn sampled_header(f: &FlowRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(&f.dst_mac.0);
    out.extend_from_slice(&f.src_mac.0);
    if f.vlan_id != 0 {
        u16(out, 0x8100);
        u16(out, f.vlan_id & 0x0fff);
    }
    let l4_len: u16 = match f.proto {
        6 => 20,
        17 => 8,
        _ => 8,
    };
    match (f.src_addr, f.dst_addr) {
        (Some(IpAddr::V6(s)), d) => {
            u16(out, 0x86dd);
            u32(
                out,
                6 << 28 | u32::from(f.ip_tos) << 20 | (f.ipv6_flow_label & 0x000f_ffff),
            );
            u16(out, l4_len);
            u8(out, f.proto);
            u8(out, f.ip_ttl);
            out.extend_from_slice(&s.octets());
            ipv6(out, d);
        }
        (s, d) => {
            u16(out, 0x0800);
            u8(out, 0x45);
            u8(out, f.ip_tos);
            u16(out, 20 + l4_len);
            u16(out, f.fragment_id as u16);
            u16(
                out,
                u16::from(f.ip_flags & 0x7) << 13 | (f.fragment_offset & 0x1fff),
            );
            u8(out, f.ip_ttl);
            u8(out, f.proto);
            u16(out, 0); // checksum
            super::wire::ipv4(out, s);
            super::wire::ipv4(out, d);
        }
    }
    match f.proto {
        6 => {
            u16(out, f.src_port);
            u16(out, f.dst_port);
            u64(out, 0); // seq, ack
            u8(out, 0x50 | ((f.tcp_flags >> 8) & 1) as u8);
            u8(out, f.tcp_flags as u8);
            u16(out, 0xffff); // window
            u32(out, 0); // checksum, urgent
        }
        1 | 58 => {
            u8(out, f.icmp_type);
            u8(out, f.icmp_code);
            u16(out, 0);
            u32(out, 0);
        }
        _ => {
            u16(out, f.src_port);
            u16(out, f.dst_port);
            u16(out, 8);
            u16(out, 0);
        }
    }
}

impl SflowEncoder {
    pub(crate) fn new(cfg: EncoderConfig) -> Self {
        SflowEncoder {
            cfg,
            datagrams: 0,
            samples: 0,
        }
    }

    fn flow_sample(&mut self, f: &FlowRecord, out: &mut Vec<u8>) {
        self.samples = self.samples.wrapping_add(1);
        let rate = self.cfg.sampling_rate;
        let sample = begin(out, 1);
        u32(out, self.samples);
        u32(out, f.in_if & 0x00ff_ffff); // source id: type 0 (ifIndex)
        u32(out, rate);
        u32(out, self.samples.wrapping_mul(rate.max(1))); // sample pool
        u32(out, 0); // drops
        u32(out, f.in_if & 0x3fff_ffff);
        u32(out, f.out_if & 0x3fff_ffff);
        u32(out, 4); // records

        let rec = begin(out, 1); // raw packet header
        u32(out, 1); // Ethernet
        u32(out, f.bytes as u32); // frame length
        u32(out, 4); // stripped (FCS)
        let len_at = out.len();
        u32(out, 0);
        let start = out.len();
        sampled_header(f, out);
        let header_len = out.len() - start;
        patch_u32(out, len_at, header_len as u32);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        end(out, rec);

        let rec = begin(out, 1001); // extended switch
        u32(out, u32::from(f.src_vlan));
        u32(out, 0);
        u32(out, u32::from(f.dst_vlan));
        u32(out, 0);
        end(out, rec);

        let rec = begin(out, 1002); // extended router
        address(out, f.next_hop);
        u32(out, u32::from(f.src_mask));
        u32(out, u32::from(f.dst_mask));
        end(out, rec);

        let rec = begin(out, 1003); // extended gateway
        address(out, f.bgp_next_hop);
        u32(out, f.dst_as); // this router's AS (ignored when a path is present)
        u32(out, f.src_as);
        u32(out, 0); // src peer AS
        u32(out, 1); // one segment
        u32(out, 2); // AS_SEQUENCE
        u32(out, 2);
        u32(out, f.next_hop_as);
        u32(out, f.dst_as);
        u32(out, 0); // communities
        u32(out, 0); // local pref
        end(out, rec);
        end(out, sample);
    }

    fn counter_sample(&self, out: &mut Vec<u8>) {
        let sample = begin(out, 2);
        u32(out, self.datagrams);
        u32(out, 1); // source: ifIndex 1
        u32(out, 1); // records
        let rec = begin(out, 1); // generic interface counters
        u32(out, 1); // ifIndex
        u32(out, 6); // ethernetCsmacd
        u64(out, 10_000_000_000);
        u32(out, 1); // full duplex
        u32(out, 3); // up/up
        out.extend_from_slice(&[0; 88 - 24]);
        end(out, rec);
        end(out, sample);
    }

    pub(crate) fn encode(&mut self, flows: &[FlowRecord], export_ns: u64, out: &mut Vec<u8>) {
        u32(out, 5);
        address(out, Some(self.cfg.agent_address));
        u32(out, self.cfg.observation_domain_id);
        u32(out, self.datagrams);
        u32(out, uptime_ms(self.cfg.boot_time_ns, export_ns));
        let counters = self.cfg.template_every > 0
            && self.datagrams % self.cfg.template_every == self.cfg.template_every - 1;
        u32(out, flows.len() as u32 + u32::from(counters));
        for f in flows {
            self.flow_sample(f, out);
        }
        if counters {
            self.counter_sample(out);
        }
        self.datagrams = self.datagrams.wrapping_add(1);
    }
}
