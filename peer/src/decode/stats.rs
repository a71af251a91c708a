//! What decoding did: per-call [`DecodeOutcome`] and the running [`DecodeStats`].

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use super::error::ErrorKind;
use crate::record::Protocol;

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
    pub(super) fn add(&mut self, p: Protocol, n: u64) {
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
    pub(super) fn add(&mut self, k: ErrorKind) {
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
