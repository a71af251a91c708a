//! Flow decoders: bytes in, [`FlowRecord`]s out. Pure: no I/O, no clocks, no panics on any input.
//!
//! One [`ShardDecoder`] per pipeline shard owns the template state of that shard's exporters, so
//! the hot path takes no locks. See `README.md` in this folder for what operators need to know
//! about templates, held data and sampling.
//!
//! # Layout
//! - `reader`: checked big-endian reads.
//! - `netflow5`: NetFlow v5 (fixed format).
//! - `template`: NetFlow v9 / IPFIX templates compiled into field programs, shared by both.
//! - `netflow`: NetFlow v9 and IPFIX messages (sets, templates, options, data, withdrawal).
//! - `sflow` and `packet`: sFlow v5 and the sampled-header parser (Ethernet → L4).

mod netflow;
mod netflow5;
mod packet;
mod reader;
mod sflow;
mod template;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::record::{FlowRecord, Protocol};
pub use template::{FieldSpec, Stamp};

use template::{Template, TemplateKey};

/// Decoder settings. `Default` gives production values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecoderConfig {
    /// Multiply `bytes` and `packets` by the sampling rate (when one is known).
    pub apply_sampling: bool,
    /// At most this many data sets held (waiting for their template) per exporter; the oldest is
    /// dropped (counted in `held_dropped`) when a new one would exceed it.
    pub max_held_per_exporter: usize,
    /// At most this many bytes of held data sets per exporter.
    pub max_held_bytes_per_exporter: usize,
    /// Held data older than this is dropped by [`ShardDecoder::expire`] (counted in `held_expired`).
    pub held_timeout_ns: u64,
    /// At most this many templates per exporter (all domains); more are rejected as bad
    /// templates, so a broken or hostile exporter cannot grow memory without bound.
    pub max_templates_per_exporter: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            apply_sampling: false,
            max_held_per_exporter: 256,
            max_held_bytes_per_exporter: 1 << 20,
            held_timeout_ns: 60_000_000_000,
            max_templates_per_exporter: 4096,
        }
    }
}

/// Which check a malformed datagram failed. One counter each in [`ErrorCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    UnknownVersion,
    Truncated,
    BadLength,
    BadTemplate,
}

/// A datagram (or part of one) that could not be decoded. Records decoded before the error are
/// still appended to the output; the error is counted in [`DecodeStats::errors`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Not NetFlow v5/v9, IPFIX or sFlow v5.
    #[error("unknown flow protocol version {version}")]
    UnknownVersion { version: u32 },
    /// The datagram ends inside a header, set or record.
    #[error("{protocol}: truncated {what} at byte {offset}")]
    Truncated {
        protocol: Protocol,
        what: &'static str,
        offset: usize,
    },
    /// A length field disagrees with the datagram.
    #[error("{protocol}: bad {what} length {length} at byte {offset}")]
    BadLength {
        protocol: Protocol,
        what: &'static str,
        length: usize,
        offset: usize,
    },
    /// A data record cut short inside its set (records before it were decoded).
    #[error(
        "{protocol} observation domain {domain} template {template_id}: data record cut short at byte {offset}"
    )]
    ShortRecord {
        protocol: Protocol,
        domain: u32,
        template_id: u16,
        offset: usize,
    },
    /// A template (or template snapshot) that cannot be used.
    #[error("{protocol} observation domain {domain} template {template_id}: {reason}")]
    BadTemplate {
        protocol: Protocol,
        domain: u32,
        template_id: u16,
        reason: &'static str,
    },
}

impl DecodeError {
    /// The counter this error increments.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DecodeError::UnknownVersion { .. } => ErrorKind::UnknownVersion,
            DecodeError::Truncated { .. } | DecodeError::ShortRecord { .. } => ErrorKind::Truncated,
            DecodeError::BadLength { .. } => ErrorKind::BadLength,
            DecodeError::BadTemplate { .. } => ErrorKind::BadTemplate,
        }
    }
}

/// What one call to [`ShardDecoder::decode`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeOutcome {
    pub protocol: Protocol,
    /// Records appended to `out` (including released held data).
    pub records: usize,
    /// Data sets of this datagram held because their template is not known yet.
    pub held_sets: usize,
    /// Records decoded from previously held data released by templates in this datagram.
    pub released_records: usize,
    /// sFlow counter samples (counted, no records).
    pub counter_samples: usize,
}

/// A counter per protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PerProtocol {
    pub netflow_v5: u64,
    pub netflow_v9: u64,
    pub ipfix: u64,
    pub sflow_5: u64,
}

impl PerProtocol {
    fn add(&mut self, p: Protocol, n: u64) {
        let c = match p {
            Protocol::NetflowV5 => &mut self.netflow_v5,
            Protocol::NetflowV9 => &mut self.netflow_v9,
            Protocol::Ipfix => &mut self.ipfix,
            Protocol::Sflow5 => &mut self.sflow_5,
        };
        *c = c.wrapping_add(n);
    }

    /// The counter for `p`.
    pub fn get(&self, p: Protocol) -> u64 {
        match p {
            Protocol::NetflowV5 => self.netflow_v5,
            Protocol::NetflowV9 => self.netflow_v9,
            Protocol::Ipfix => self.ipfix,
            Protocol::Sflow5 => self.sflow_5,
        }
    }
}

/// Error counters, one per [`ErrorKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ErrorCounts {
    pub unknown_version: u64,
    pub truncated: u64,
    pub bad_length: u64,
    pub bad_template: u64,
}

impl ErrorCounts {
    fn add(&mut self, k: ErrorKind) {
        let c = match k {
            ErrorKind::UnknownVersion => &mut self.unknown_version,
            ErrorKind::Truncated => &mut self.truncated,
            ErrorKind::BadLength => &mut self.bad_length,
            ErrorKind::BadTemplate => &mut self.bad_template,
        };
        *c += 1;
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.unknown_version + self.truncated + self.bad_length + self.bad_template
    }
}

/// Counters of one [`ShardDecoder`]. Monotonic except `held` (a gauge).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DecodeStats {
    /// Datagrams decoded (or attempted) per protocol.
    pub datagrams: PerProtocol,
    /// Flow records produced per protocol.
    pub records: PerProtocol,
    /// Malformed datagrams by kind.
    pub errors: ErrorCounts,
    /// Data sets whose template was unknown on arrival (each was held or dropped).
    pub template_misses: u64,
    /// Template and options template records received (including re-definitions).
    pub templates_received: u64,
    /// Templates withdrawn (IPFIX).
    pub templates_withdrawn: u64,
    /// Options data records (sampling information) decoded.
    pub options_records: u64,
    /// sFlow counter samples seen (they produce no flow records).
    pub counter_samples: u64,
    /// Data sets held right now, waiting for their template.
    pub held: u64,
    /// Held data sets later decoded because their template arrived.
    pub held_released: u64,
    /// Held data sets dropped by the timeout.
    pub held_expired: u64,
    /// Held data sets dropped because the per-exporter bound was reached.
    pub held_dropped: u64,
    /// Sum of `lost_per_exporter`.
    pub lost_total: u64,
    /// Per exporter, what sequence-number gaps say was lost: NetFlow v5 flows, NetFlow v9 export
    /// packets, IPFIX data records, sFlow datagrams.
    pub lost_per_exporter: HashMap<IpAddr, u64>,
}

/// Serializable template state for one (exporter, protocol, observation domain): what Central
/// hands to a peer before moving an exporter to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TemplateSnapshot {
    /// A data template (`scope_field_count == 0`) or options template.
    Template {
        protocol: Protocol,
        observation_domain_id: u32,
        template_id: u16,
        /// Options templates: how many leading fields are scope fields.
        scope_field_count: u16,
        /// True for options templates (v9 options templates may have scope fields only).
        options: bool,
        fields: Vec<FieldSpec>,
        /// The message that defined it; an import replaces only older state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
    },
    /// What options data said about the domain: the sampling rate (0 = none announced) and
    /// the IPFIX system init time that flowStart/EndSysUpTime are relative to.
    Sampling {
        protocol: Protocol,
        observation_domain_id: u32,
        sampling_rate: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system_init_ms: Option<u64>,
        /// The message whose options data last changed these values.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
    },
}

/// The protocol of a datagram, from its version field (without decoding it).
pub fn protocol_of(datagram: &[u8]) -> Option<Protocol> {
    match reader::u16_at(datagram, 0)? {
        5 => Some(Protocol::NetflowV5),
        9 => Some(Protocol::NetflowV9),
        10 => Some(Protocol::Ipfix),
        0 if reader::u32_at(datagram, 0) == Some(5) => Some(Protocol::Sflow5),
        _ => None,
    }
}

/// A data set waiting for its template.
#[derive(Debug, Clone)]
struct Held {
    key: TemplateKey,
    time_received_ns: u64,
    header: netflow::Header,
    body: Vec<u8>,
}

/// Per-exporter decoding state.
#[derive(Debug, Default)]
struct Exporter {
    templates: HashMap<TemplateKey, Template>,
    /// What options data said per (protocol, observation domain).
    domains: HashMap<(Protocol, u32), template::DomainOptions>,
    /// Last sequence number and unit count per (protocol, stream id).
    last_seq: HashMap<(Protocol, u32), (u32, u32)>,
    held: VecDeque<Held>,
    held_bytes: usize,
    /// Templates or sampling changed since [`ShardDecoder::take_changed_templates`] looked.
    templates_changed: bool,
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
    fn track_sequence(&mut self, stream: (Protocol, u32), seq: u32, count: Option<u32>) -> u64 {
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

/// Decoder for the exporters of one shard. See the module docs.
#[derive(Debug)]
pub struct ShardDecoder {
    cfg: DecoderConfig,
    exporters: HashMap<IpAddr, Exporter>,
    stats: DecodeStats,
}

impl ShardDecoder {
    pub fn new(cfg: DecoderConfig) -> Self {
        ShardDecoder {
            cfg,
            exporters: HashMap::new(),
            stats: DecodeStats::default(),
        }
    }

    /// The configuration this decoder runs with.
    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// Decode one datagram from `exporter`; appends records to `out` (including records of held
    /// data released by templates in this datagram). On error, records decoded before the bad
    /// part stay in `out`, and the error is counted.
    pub fn decode(
        &mut self,
        exporter: IpAddr,
        time_received_ns: u64,
        datagram: &[u8],
        out: &mut Vec<FlowRecord>,
    ) -> Result<DecodeOutcome, DecodeError> {
        let Some(protocol) = protocol_of(datagram) else {
            self.stats.errors.add(ErrorKind::UnknownVersion);
            let version = reader::u16_at(datagram, 0)
                .map(u32::from)
                .or_else(|| reader::u8_at(datagram, 0).map(u32::from))
                .unwrap_or(0);
            return Err(DecodeError::UnknownVersion { version });
        };
        self.stats.datagrams.add(protocol, 1);
        let before = out.len();
        let state = self.exporters.entry(exporter).or_default();
        let mut ctx = Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            exporter,
            time_received_ns,
        };
        let result = match protocol {
            Protocol::NetflowV5 => netflow5::decode(&mut ctx, state, datagram, out),
            Protocol::NetflowV9 | Protocol::Ipfix => {
                netflow::decode(&mut ctx, state, protocol, datagram, out)
            }
            Protocol::Sflow5 => sflow::decode(&mut ctx, state, datagram, out),
        };
        let produced = out.len().saturating_sub(before);
        self.stats.records.add(protocol, produced as u64);
        match result {
            Ok(mut o) => {
                o.protocol = protocol;
                o.records = produced;
                Ok(o)
            }
            Err(e) => {
                self.stats.errors.add(e.kind());
                Err(e)
            }
        }
    }

    /// Drop held data older than the timeout (counted in `held_expired`).
    pub fn expire(&mut self, now_ns: u64) {
        let timeout = self.cfg.held_timeout_ns;
        for st in self.exporters.values_mut() {
            while let Some(h) = st.held.front() {
                if now_ns.saturating_sub(h.time_received_ns) <= timeout {
                    break;
                }
                if let Some(h) = st.held.pop_front() {
                    st.held_bytes = st.held_bytes.saturating_sub(h.body.len());
                    self.stats.held_expired += 1;
                    self.stats.held = self.stats.held.saturating_sub(1);
                }
            }
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// Template and sampling state of `exporter`, for handing it to another decoder.
    pub fn export_templates(&self, exporter: IpAddr) -> Vec<TemplateSnapshot> {
        let Some(st) = self.exporters.get(&exporter) else {
            return Vec::new();
        };
        let mut snaps: Vec<TemplateSnapshot> = st
            .templates
            .iter()
            .map(|(key, t)| t.snapshot(*key))
            .collect();
        snaps.extend(st.domains.iter().map(|(&(protocol, domain), o)| {
            TemplateSnapshot::Sampling {
                protocol,
                observation_domain_id: domain,
                sampling_rate: o.sampling_rate,
                system_init_ms: o.system_init_ms,
                stamp: o.stamp,
            }
        }));
        snaps.sort_by_key(snapshot_order);
        snaps
    }

    /// Exporters whose templates or sampling rates changed (learned, re-defined with other
    /// fields, withdrawn) since the last call, each with its [`Self::export_templates`] state.
    /// Template refreshes that change nothing are not reported; imported templates neither.
    pub fn take_changed_templates(&mut self) -> Vec<(IpAddr, Vec<TemplateSnapshot>)> {
        let changed: Vec<IpAddr> = self
            .exporters
            .iter_mut()
            .filter_map(|(addr, st)| std::mem::take(&mut st.templates_changed).then_some(*addr))
            .collect();
        changed
            .into_iter()
            .map(|addr| (addr, self.export_templates(addr)))
            .collect()
    }

    /// Forget `exporter` (it moved to another peer): returns its template state as
    /// [`Self::export_templates`] would; its held data is dropped and counted in `held_expired`.
    pub fn remove_exporter(&mut self, exporter: IpAddr) -> Vec<TemplateSnapshot> {
        let snaps = self.export_templates(exporter);
        if let Some(st) = self.exporters.remove(&exporter) {
            let held = st.held.len() as u64;
            self.stats.held = self.stats.held.saturating_sub(held);
            self.stats.held_expired += held;
        }
        snaps
    }

    /// Install templates exported by another decoder for `exporter`. Each entry replaces this
    /// decoder's own only when it is newer ([`Stamp::replaces`]): state learned here from the
    /// wire after the exporter moved here is never overwritten by a late hand-over of what the
    /// previous peer saw before the move. Held data waiting for one of them is decoded by
    /// [`Self::release_held`] (or on the next datagram that defines a template), or expires.
    /// Returns how many entries were taken.
    pub fn import_templates(
        &mut self,
        exporter: IpAddr,
        snaps: &[TemplateSnapshot],
    ) -> Result<usize, DecodeError> {
        // Validate everything before changing any state.
        let mut compiled = Vec::with_capacity(snaps.len());
        for s in snaps {
            if let TemplateSnapshot::Template {
                protocol,
                observation_domain_id,
                template_id,
                scope_field_count,
                options,
                fields,
                stamp,
            } = s
            {
                let key = TemplateKey {
                    protocol: *protocol,
                    domain: *observation_domain_id,
                    template_id: *template_id,
                };
                compiled.push((
                    key,
                    Template::compile(key, fields.clone(), *scope_field_count, *options)?
                        .stamped(*stamp),
                ));
            }
        }
        let st = self.exporters.entry(exporter).or_default();
        let mut taken = 0;
        for (key, t) in compiled {
            if Stamp::replaces(t.stamp(), st.templates.get(&key).and_then(Template::stamp)) {
                st.templates.insert(key, t);
                taken += 1;
            }
        }
        for s in snaps {
            if let TemplateSnapshot::Sampling {
                protocol,
                observation_domain_id,
                sampling_rate,
                system_init_ms,
                stamp,
            } = s
            {
                let key = (*protocol, *observation_domain_id);
                if Stamp::replaces(*stamp, st.domains.get(&key).and_then(|d| d.stamp)) {
                    st.domains.insert(
                        key,
                        template::DomainOptions {
                            sampling_rate: *sampling_rate,
                            system_init_ms: *system_init_ms,
                            stamp: *stamp,
                        },
                    );
                    taken += 1;
                }
            }
        }
        Ok(taken)
    }

    /// Decodes the data sets `exporter` holds for templates it has now (call after
    /// [`Self::import_templates`]: a moved exporter's first datagrams may beat the template
    /// hand-over). Appends the records to `out` and returns how many.
    pub fn release_held(&mut self, exporter: IpAddr, out: &mut Vec<FlowRecord>) -> usize {
        let Some(state) = self.exporters.get_mut(&exporter) else {
            return 0;
        };
        if state.held.is_empty() {
            return 0;
        }
        let keys: Vec<TemplateKey> = state.templates.keys().copied().collect();
        let before = out.len();
        let mut ctx = Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            exporter,
            // Unused: every held set keeps its own receive time.
            time_received_ns: 0,
        };
        let released = netflow::release_held(&mut ctx, state, &keys, out);
        for r in &out[before..] {
            self.stats.records.add(r.flow_type, 1);
        }
        released
    }
}

fn snapshot_order(s: &TemplateSnapshot) -> (u8, Protocol, u32, u16) {
    match s {
        TemplateSnapshot::Template {
            protocol,
            observation_domain_id,
            template_id,
            ..
        } => (0, *protocol, *observation_domain_id, *template_id),
        TemplateSnapshot::Sampling {
            protocol,
            observation_domain_id,
            ..
        } => (1, *protocol, *observation_domain_id, 0),
    }
}

/// What every protocol decoder needs besides the exporter's state.
struct Ctx<'a> {
    cfg: &'a DecoderConfig,
    stats: &'a mut DecodeStats,
    exporter: IpAddr,
    time_received_ns: u64,
}

impl Ctx<'_> {
    fn add_lost(&mut self, lost: u64) {
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
    fn apply_sampling(&self, r: &mut FlowRecord) {
        if self.cfg.apply_sampling && r.sampling_rate > 1 {
            r.bytes = r.bytes.saturating_mul(r.sampling_rate);
            r.packets = r.packets.saturating_mul(r.sampling_rate);
        }
    }
}
