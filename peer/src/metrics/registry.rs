//! The counter registry: [`Metrics`], shared by every thread, with the sockets, outputs and
//! decoder shards registered at start.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_common::protocol::PeerMetrics;

use super::drop_reason::DropReason;
use super::log::LogLimiter;
use super::output::OutputStats;
use crate::decode::{DecodeStats, PerProtocol};
use crate::record::Protocol;

/// Distinct exporters with their own drop counters; the rest are summed under `other`.
pub(super) const MAX_EXPORTER_LABELS: usize = 4096;

/// One receive socket.
#[derive(Debug)]
pub struct SocketStats {
    pub local: SocketAddr,
    pub index: usize,
    /// The kernel's count of datagrams dropped on this socket (`SO_RXQ_OVFL`).
    pub kernel_drops: AtomicU64,
}

/// Everything the peer counts. Shared (`Arc`) by all threads.
#[derive(Debug)]
pub struct Metrics {
    pub(super) started: SystemTime,
    /// Datagrams received.
    pub datagrams: AtomicU64,
    /// Bytes received (UDP payload).
    pub bytes: AtomicU64,
    /// `recvmmsg` failures other than timeouts.
    pub receive_errors: AtomicU64,
    /// Flow records produced by the decoders.
    pub records: AtomicU64,
    drop_totals: [AtomicU64; DropReason::ALL.len()],
    pub(super) drops: Mutex<HashMap<(DropReason, Option<IpAddr>), u64>>,
    drop_log: LogLimiter,
    pub(super) sockets: Mutex<Vec<Arc<SocketStats>>>,
    pub(super) outputs: Mutex<Vec<Arc<OutputStats>>>,
    pub(super) decoders: Mutex<Vec<DecodeStats>>,
    pub(super) peer: Mutex<PeerMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        let started = SystemTime::now();
        Metrics {
            started,
            datagrams: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            receive_errors: AtomicU64::new(0),
            records: AtomicU64::new(0),
            drop_totals: Default::default(),
            drops: Mutex::default(),
            drop_log: LogLimiter::default(),
            sockets: Mutex::default(),
            outputs: Mutex::default(),
            decoders: Mutex::default(),
            // Heartbeats sent before the first sample carry the start time too.
            peer: Mutex::new(PeerMetrics {
                start_time_unix_s: unix_s(started),
                ..PeerMetrics::default()
            }),
        }
    }
}

pub(super) fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn register_socket(&self, local: SocketAddr, index: usize) -> Arc<SocketStats> {
        let s = Arc::new(SocketStats {
            local,
            index,
            kernel_drops: AtomicU64::new(0),
        });
        lock(&self.sockets).push(s.clone());
        s
    }

    pub fn register_output(&self, name: String, capacity: usize) -> Arc<OutputStats> {
        let s = Arc::new(OutputStats::new(name, capacity));
        lock(&self.outputs).push(s.clone());
        s
    }

    pub fn register_shards(&self, n: usize) {
        *lock(&self.decoders) = vec![DecodeStats::default(); n];
    }

    /// A shard publishes its decoder's counters (about once a second).
    pub fn publish_decoder(&self, shard: usize, stats: &DecodeStats) {
        if let Some(slot) = lock(&self.decoders).get_mut(shard) {
            slot.clone_from(stats);
        }
    }

    /// `n` datagrams from `exporter` were dropped before decoding.
    pub fn dropped(&self, reason: DropReason, exporter: IpAddr, n: u64) {
        let total = self.drop_totals[reason as usize].fetch_add(n, Relaxed) + n;
        {
            let mut drops = lock(&self.drops);
            let key = if drops.len() < MAX_EXPORTER_LABELS
                || drops.contains_key(&(reason, Some(exporter)))
            {
                (reason, Some(exporter))
            } else {
                (reason, None)
            };
            *drops.entry(key).or_default() += n;
        }
        if self.drop_log.allow() {
            tracing::warn!(
                reason = reason.as_str(),
                %exporter,
                total,
                "datagrams dropped before decoding (sluice_peer_drops_total)"
            );
        }
    }

    /// Datagrams dropped by the kernel on all receive sockets.
    pub fn kernel_drops(&self) -> u64 {
        lock(&self.sockets)
            .iter()
            .map(|s| s.kernel_drops.load(Relaxed))
            .sum()
    }

    /// Everything dropped anywhere: kernel, queues, output overflow and shutdown.
    pub fn total_drops(&self) -> u64 {
        let pipeline: u64 = DropReason::ALL.iter().map(|r| self.drops(*r)).sum();
        let outputs: u64 = lock(&self.outputs)
            .iter()
            .map(|o| o.overflow() + o.abandoned_total() + o.failed_records())
            .sum();
        self.kernel_drops() + pipeline + outputs
    }

    /// Drops before decoding for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drop_totals[reason as usize].load(Relaxed)
    }

    /// The decoders' counters summed over shards.
    pub fn decode_totals(&self) -> DecodeStats {
        let shards = lock(&self.decoders);
        let mut t = DecodeStats::default();
        for s in shards.iter() {
            for p in PROTOCOLS {
                add_protocol(&mut t.datagrams, p, s.datagrams.get(p));
                add_protocol(&mut t.records, p, s.records.get(p));
            }
            t.errors.unknown_version += s.errors.unknown_version;
            t.errors.truncated += s.errors.truncated;
            t.errors.bad_length += s.errors.bad_length;
            t.errors.bad_template += s.errors.bad_template;
            t.template_misses += s.template_misses;
            t.templates_received += s.templates_received;
            t.templates_withdrawn += s.templates_withdrawn;
            t.options_records += s.options_records;
            t.counter_samples += s.counter_samples;
            t.held += s.held;
            t.held_released += s.held_released;
            t.held_expired += s.held_expired;
            t.held_dropped += s.held_dropped;
            t.lost_total += s.lost_total;
            for (exporter, lost) in &s.lost_per_exporter {
                *t.lost_per_exporter.entry(*exporter).or_default() += lost;
            }
        }
        t
    }
}

pub(super) const PROTOCOLS: [Protocol; 4] = [
    Protocol::NetflowV5,
    Protocol::NetflowV9,
    Protocol::Ipfix,
    Protocol::Sflow5,
];

fn add_protocol(t: &mut PerProtocol, p: Protocol, n: u64) {
    let c = match p {
        Protocol::NetflowV5 => &mut t.netflow_v5,
        Protocol::NetflowV9 => &mut t.netflow_v9,
        Protocol::Ipfix => &mut t.ipfix,
        Protocol::Sflow5 => &mut t.sflow_5,
    };
    *c += n;
}
