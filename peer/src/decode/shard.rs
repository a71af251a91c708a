//! [`ShardDecoder`]: the template state of one shard's exporters, and the dispatch of each
//! datagram to its protocol's decoder.

use std::collections::HashMap;
use std::net::IpAddr;

use super::config::DecoderConfig;
use super::error::{DecodeError, ErrorKind};
use super::state::{Ctx, Exporter};
use super::stats::{DecodeOutcome, DecodeStats};
use super::template::{DomainOptions, Stamp, Template, TemplateKey, TemplateSnapshot};
use super::{netflow, netflow5, reader, sflow};
use crate::record::{FlowRecord, Protocol};

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
                        DomainOptions {
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
