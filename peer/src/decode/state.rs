//! Per-exporter decoding state and the context every protocol decoder gets.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use super::config::DecoderConfig;
use super::stats::DecodeStats;
use super::template::{DomainOptions, Stamp, Template, TemplateKey, TimeBase};
use crate::record::{FlowRecord, Protocol};

/// The export header facts that data records need, kept with held data.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub(super) protocol: Protocol,
    pub(super) sequence: u32,
    pub(super) domain: u32,
    pub(super) time: TimeBase,
    /// The export header's unix seconds, for stamping what this message taught us.
    pub(super) export_secs: u32,
}

impl Header {
    pub(super) fn stamp(&self) -> Stamp {
        Stamp {
            export_secs: self.export_secs,
            sequence: self.sequence,
        }
    }
}

/// A data set waiting for its template.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) key: TemplateKey,
    pub(super) time_received_ns: u64,
    pub(super) header: Header,
    pub(super) body: Vec<u8>,
}

/// Per-exporter decoding state.
#[derive(Debug, Default)]
pub(super) struct Exporter {
    pub(super) templates: HashMap<TemplateKey, Template>,
    /// What options data said per (protocol, observation domain).
    pub(super) domains: HashMap<(Protocol, u32), DomainOptions>,
    /// Last sequence number and unit count per (protocol, stream id).
    pub(super) last_seq: HashMap<(Protocol, u32), (u32, u32)>,
    pub(super) held: VecDeque<Held>,
    pub(super) held_bytes: usize,
    /// Templates or sampling changed since [`super::ShardDecoder::take_changed_templates`] looked.
    pub(super) templates_changed: bool,
}

impl Exporter {
    /// Records a datagram's sequence number and returns how many units were lost before it.
    /// `count` is how many units this datagram carries; `None` (unknown) resynchronises on the
    /// next one.
    ///
    /// The standard numbering gives the units sent *before* this datagram, so the next one is
    /// expected at `seq + count`. Some exporters (softflowd's IPFIX) number after counting their
    /// own units, so the next one arrives at `seq + its own count`: a datagram matching either
    /// convention loses nothing, and otherwise the smaller gap is counted. A jump of half the
    /// sequence space or more is a restart or reordering, which resynchronises without counting.
    pub(super) fn track_sequence(
        &mut self,
        stream: (Protocol, u32),
        seq: u32,
        count: Option<u32>,
    ) -> u64 {
        let lost = match self.last_seq.get(&stream) {
            Some(&(prev, prev_count)) => {
                let standard = Some(seq.wrapping_sub(prev.wrapping_add(prev_count)));
                let counted_first = count.map(|c| seq.wrapping_sub(prev.wrapping_add(c)));
                [standard, counted_first]
                    .into_iter()
                    .flatten()
                    .filter(|gap| *gap < 0x8000_0000)
                    .min()
                    .map_or(0, u64::from)
            }
            None => 0,
        };
        match count {
            Some(c) => {
                self.last_seq.insert(stream, (seq, c));
            }
            None => {
                self.last_seq.remove(&stream);
            }
        }
        lost
    }
}

/// What every protocol decoder needs besides the exporter's state.
pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a DecoderConfig,
    pub(super) stats: &'a mut DecodeStats,
    pub(super) exporter: IpAddr,
    pub(super) time_received_ns: u64,
}

impl Ctx<'_> {
    pub(super) fn add_lost(&mut self, lost: u64) {
        if lost > 0 {
            self.stats.lost_total += lost;
            *self
                .stats
                .lost_per_exporter
                .entry(self.exporter)
                .or_default() += lost;
        }
    }

    /// Multiply counters by the sampling rate when configured to.
    pub(super) fn apply_sampling(&self, r: &mut FlowRecord) {
        if self.cfg.apply_sampling && r.sampling_rate > 1 {
            r.bytes = r.bytes.saturating_mul(r.sampling_rate);
            r.packets = r.packets.saturating_mul(r.sampling_rate);
        }
    }
}
