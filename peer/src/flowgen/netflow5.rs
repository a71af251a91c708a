//! NetFlow v5 encoder.

use super::config::EncoderConfig;
use super::wire::{ipv4, u8, u16, u32, uptime_ms};
use crate::record::FlowRecord;

pub(crate) const MAX_RECORDS: usize = 30;

#[derive(Debug, Clone)]
pub struct V5Encoder {
    cfg: EncoderConfig,
    flow_sequence: u32,
}

impl V5Encoder {
    pub(crate) fn new(cfg: EncoderConfig) -> Self {
        V5Encoder {
            cfg,
            flow_sequence: 0,
        }
    }

    pub(crate) fn encode(&mut self, flows: &[FlowRecord], export_ns: u64, out: &mut Vec<u8>) {
        // Millisecond export time, so flow times survive the uptime arithmetic exactly.
        let export_ns = export_ns / 1_000_000 * 1_000_000;
        let up = uptime_ms(self.cfg.boot_time_ns, export_ns);
        u16(out, 5);
        u16(out, flows.len() as u16);
        u32(out, up);
        u32(out, (export_ns / 1_000_000_000) as u32);
        u32(out, (export_ns % 1_000_000_000) as u32);
        u32(out, self.flow_sequence);
        u8(out, 0); // engine type
        u8(out, self.cfg.observation_domain_id as u8); // engine id
        let rate = self.cfg.sampling_rate.min(0x3fff) as u16;
        u16(out, if rate > 0 { 0x4000 | rate } else { 0 });
        for f in flows {
            ipv4(out, f.src_addr);
            ipv4(out, f.dst_addr);
            ipv4(out, f.next_hop);
            u16(out, f.in_if as u16);
            u16(out, f.out_if as u16);
            u32(out, f.packets as u32);
            u32(out, f.bytes as u32);
            u32(out, uptime_ms(self.cfg.boot_time_ns, f.time_flow_start_ns));
            u32(out, uptime_ms(self.cfg.boot_time_ns, f.time_flow_end_ns));
            u16(out, f.src_port);
            u16(out, f.dst_port);
            u8(out, 0);
            u8(out, f.tcp_flags as u8);
            u8(out, f.proto);
            u8(out, f.ip_tos);
            u16(out, f.src_as as u16);
            u16(out, f.dst_as as u16);
            u8(out, f.src_mask);
            u8(out, f.dst_mask);
            u16(out, 0);
        }
        self.flow_sequence = self.flow_sequence.wrapping_add(flows.len() as u32);
    }
}
