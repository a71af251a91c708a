//! NetFlow v9 and IPFIX encoder: one data template for IPv4 flows (id 256), one for IPv6 (257),
//! an options template (258) announcing the sampling rate; templates and options data go in the
//! first packet and then every `template_every` packets.

use std::net::IpAddr;

use super::config::EncoderConfig;
use super::wire::{ipv4, ipv6, patch_u16, u8, u16, u32, u64, uptime_ms};
use crate::record::{FlowRecord, Protocol};

const TEMPLATE_V4: u16 = 256;
const TEMPLATE_V6: u16 = 257;
const TEMPLATE_OPTIONS: u16 = 258;

#[derive(Debug, Clone)]
pub struct TemplateEncoder {
    protocol: Protocol,
    cfg: EncoderConfig,
    packets: u64,
    /// IPFIX: data records sent so far; v9: packets sent so far.
    sequence: u32,
}

fn ipfix(p: Protocol) -> bool {
    p == Protocol::Ipfix
}

/// Data template fields (IE id, length) for one address family.
fn data_fields(protocol: Protocol, v6: bool) -> Vec<(u16, u16)> {
    let counter_len = if ipfix(protocol) { 8 } else { 4 };
    let mut f = if v6 {
        vec![(27, 16), (28, 16), (62, 16)]
    } else {
        vec![(8, 4), (12, 4), (15, 4)]
    };
    f.extend_from_slice(&[
        (7, 2),
        (11, 2),
        (4, 1),
        (5, 1),
        (6, 1),
        (10, 4),
        (14, 4),
        (2, counter_len),
        (1, counter_len),
        (16, 4),
        (17, 4),
    ]);
    f.extend_from_slice(if v6 {
        &[(29, 1), (30, 1)]
    } else {
        &[(9, 1), (13, 1)]
    });
    if v6 {
        f.push((31, if ipfix(protocol) { 4 } else { 3 }));
    }
    if ipfix(protocol) {
        f.extend_from_slice(&[(152, 8), (153, 8)]);
    } else {
        f.extend_from_slice(&[(22, 4), (21, 4)]);
    }
    f
}

impl TemplateEncoder {
    pub(crate) fn new(protocol: Protocol, cfg: EncoderConfig) -> Self {
        TemplateEncoder {
            protocol,
            cfg,
            packets: 0,
            sequence: 0,
        }
    }

    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn set_ids(&self) -> (u16, u16) {
        if ipfix(self.protocol) { (2, 3) } else { (0, 1) }
    }

    /// Start a set; returns the offset of its length field.
    fn begin_set(out: &mut Vec<u8>, id: u16) -> usize {
        u16(out, id);
        let at = out.len();
        u16(out, 0);
        at
    }

    /// Finish a set: pad (v9) and write its length.
    fn end_set(&self, out: &mut Vec<u8>, len_at: usize) {
        if !ipfix(self.protocol) {
            while !(out.len() - (len_at - 2)).is_multiple_of(4) {
                out.push(0);
            }
        }
        let len = out.len() - (len_at - 2);
        patch_u16(out, len_at, len as u16);
    }

    /// Templates, options template and options data. Returns the number of v9 records written
    /// and the number of (options) data records.
    fn write_templates(&self, out: &mut Vec<u8>) -> (u16, u32) {
        let (tmpl_set, opts_set) = self.set_ids();
        let at = Self::begin_set(out, tmpl_set);
        for (id, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
            let fields = data_fields(self.protocol, v6);
            u16(out, id);
            u16(out, fields.len() as u16);
            for (ie, len) in fields {
                u16(out, ie);
                u16(out, len);
            }
        }
        self.end_set(out, at);
        if self.cfg.sampling_rate == 0 {
            return (2, 0);
        }
        let at = Self::begin_set(out, opts_set);
        u16(out, TEMPLATE_OPTIONS);
        if ipfix(self.protocol) {
            u16(out, 3); // fields
            u16(out, 1); // scope fields
            for (ie, len) in [(149, 4), (305, 4), (306, 4)] {
                u16(out, ie);
                u16(out, len);
            }
        } else {
            u16(out, 4); // scope length: System
            u16(out, 8); // options length: SAMPLING_INTERVAL, SAMPLING_ALGORITHM
            for (ie, len) in [(1, 4), (34, 4), (35, 1)] {
                u16(out, ie);
                u16(out, len);
            }
        }
        self.end_set(out, at);
        let at = Self::begin_set(out, TEMPLATE_OPTIONS);
        u32(out, self.cfg.observation_domain_id);
        if ipfix(self.protocol) {
            u32(out, 1); // samplingPacketInterval: one packet selected ...
            u32(out, self.cfg.sampling_rate - 1); // ... then this many skipped
        } else {
            u32(out, self.cfg.sampling_rate);
            u8(out, 1); // deterministic
        }
        self.end_set(out, at);
        (4, 1)
    }

    fn write_record(&self, out: &mut Vec<u8>, f: &FlowRecord) {
        let v6 = matches!(f.src_addr, Some(IpAddr::V6(_)));
        if v6 {
            ipv6(out, f.src_addr);
            ipv6(out, f.dst_addr);
            ipv6(out, f.next_hop);
        } else {
            ipv4(out, f.src_addr);
            ipv4(out, f.dst_addr);
            ipv4(out, f.next_hop);
        }
        u16(out, f.src_port);
        u16(out, f.dst_port);
        u8(out, f.proto);
        u8(out, f.ip_tos);
        u8(out, f.tcp_flags as u8);
        u32(out, f.in_if);
        u32(out, f.out_if);
        if ipfix(self.protocol) {
            u64(out, f.packets);
            u64(out, f.bytes);
        } else {
            u32(out, f.packets as u32);
            u32(out, f.bytes as u32);
        }
        u32(out, f.src_as);
        u32(out, f.dst_as);
        u8(out, f.src_mask);
        u8(out, f.dst_mask);
        if v6 {
            if ipfix(self.protocol) {
                u32(out, f.ipv6_flow_label);
            } else {
                out.extend_from_slice(&f.ipv6_flow_label.to_be_bytes()[1..]);
            }
        }
        if ipfix(self.protocol) {
            u64(out, f.time_flow_start_ns / 1_000_000);
            u64(out, f.time_flow_end_ns / 1_000_000);
        } else {
            u32(out, uptime_ms(self.cfg.boot_time_ns, f.time_flow_start_ns));
            u32(out, uptime_ms(self.cfg.boot_time_ns, f.time_flow_end_ns));
        }
    }

    pub(crate) fn encode(&mut self, flows: &[FlowRecord], export_ns: u64, out: &mut Vec<u8>) {
        let export_s = export_ns / 1_000_000_000;
        let export_s_ns = export_s * 1_000_000_000;
        let ipfix = ipfix(self.protocol);
        // Header; counts and lengths are patched at the end.
        if ipfix {
            u16(out, 10);
            u16(out, 0); // message length
            u32(out, export_s as u32);
            u32(out, self.sequence);
            u32(out, self.cfg.observation_domain_id);
        } else {
            u16(out, 9);
            u16(out, 0); // record count
            u32(out, uptime_ms(self.cfg.boot_time_ns, export_s_ns));
            u32(out, export_s as u32);
            u32(out, self.sequence);
            u32(out, self.cfg.observation_domain_id);
        }
        let due = self.packets == 0
            || (self.cfg.template_every > 0
                && self
                    .packets
                    .is_multiple_of(u64::from(self.cfg.template_every)));
        let (mut v9_records, mut data_records) = if due {
            self.write_templates(out)
        } else {
            (0, 0)
        };
        // One data set per run of same-family flows, keeping the flows' order.
        let mut i = 0;
        while let Some(first) = flows.get(i) {
            let v6 = matches!(first.src_addr, Some(IpAddr::V6(_)));
            let at = Self::begin_set(out, if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 });
            while let Some(f) = flows.get(i) {
                if matches!(f.src_addr, Some(IpAddr::V6(_))) != v6 {
                    break;
                }
                self.write_record(out, f);
                i += 1;
                v9_records += 1;
                data_records += 1;
            }
            self.end_set(out, at);
        }
        if ipfix {
            let len = out.len() as u16;
            patch_u16(out, 2, len);
            self.sequence = self.sequence.wrapping_add(data_records);
        } else {
            patch_u16(out, 2, v9_records);
            self.sequence = self.sequence.wrapping_add(1);
        }
        self.packets += 1;
    }
}
