//! Counters, the Prometheus `/metrics` endpoint and the [`PeerMetrics`] heartbeat snapshot.
//!
//! Like vector's `internal_events`, each rare event (a full queue, an output failing, an
//! overflow) is one method that bumps its counter and logs, rate-limited, from one place. Hot
//! paths only add to atomics once per batch.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use sluice_common::protocol::PeerMetrics;

use sluice_common::prom::Exposition;

use crate::decode::DecodeStats;
use crate::pipeline::Shutdown;
use crate::record::Protocol;

/// Rate-limited logs repeat at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Distinct exporters with their own drop counters; the rest are summed under `other`.
const MAX_EXPORTER_LABELS: usize = 4096;
/// How often [`PeerMetrics`] is recomputed.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Lets a log line through at most once per [`LOG_EVERY`].
#[derive(Debug, Default)]
pub struct LogLimiter {
    next_ms: AtomicU64,
}

impl LogLimiter {
    pub fn allow(&self) -> bool {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64;
        let next = self.next_ms.load(Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(next, now + LOG_EVERY.as_millis() as u64, Relaxed, Relaxed)
                .is_ok()
    }
}

/// Why a datagram was dropped before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The shard's queue was full (decoding cannot keep up).
    QueueFull,
    /// Longer than `ingest.max_datagram_bytes`.
    Truncated,
}

impl DropReason {
    pub const ALL: [DropReason; 2] = [DropReason::QueueFull, DropReason::Truncated];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Truncated => "truncated",
        }
    }
}

/// One receive socket.
#[derive(Debug)]
pub struct SocketStats {
    pub local: SocketAddr,
    pub index: usize,
    /// The kernel's count of datagrams dropped on this socket (`SO_RXQ_OVFL`).
    pub kernel_drops: AtomicU64,
}

/// One output.
#[derive(Debug)]
pub struct OutputStats {
    pub name: String,
    pub capacity: usize,
    buffered: AtomicUsize,
    /// Handed to the destination, acknowledgement pending (Kafka).
    in_flight: AtomicUsize,
    sent: AtomicU64,
    overflow: AtomicU64,
    /// Records the destination rejected or that timed out unacknowledged (Kafka).
    failed_records: AtomicU64,
    errors: AtomicU64,
    dropped_at_shutdown: AtomicU64,
    up: AtomicBool,
    latency: Histogram,
    overflow_log: LogLimiter,
    error_log: LogLimiter,
}

impl OutputStats {
    pub fn new(name: String, capacity: usize) -> Self {
        OutputStats {
            name,
            capacity,
            buffered: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
            failed_records: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dropped_at_shutdown: AtomicU64::new(0),
            up: AtomicBool::new(true),
            latency: Histogram::default(),
            overflow_log: LogLimiter::default(),
            error_log: LogLimiter::default(),
        }
    }

    /// Takes room for up to `n` records in the buffer and returns how many fit; the rest are
    /// counted as overflow.
    pub fn reserve(&self, n: usize) -> usize {
        let mut buffered = self.buffered.load(Relaxed);
        let granted = loop {
            let granted = n.min(self.capacity.saturating_sub(buffered));
            if granted == 0 {
                break 0;
            }
            match self.buffered.compare_exchange_weak(
                buffered,
                buffered + granted,
                Relaxed,
                Relaxed,
            ) {
                Ok(_) => break granted,
                Err(now) => buffered = now,
            }
        };
        if granted < n {
            self.overflowed(n - granted);
        }
        granted
    }

    /// `n` records did not fit (or the output thread is gone): counted and logged, rate-limited.
    pub fn overflowed(&self, n: usize) {
        let total = self.overflow.fetch_add(n as u64, Relaxed) + n as u64;
        if self.overflow_log.allow() {
            tracing::warn!(
                output = %self.name,
                capacity = self.capacity,
                overflow_total = total,
                "output buffer full: records dropped (sluice_peer_output_overflow_records_total)"
            );
        }
    }

    /// `n` records left the buffer (written or given up on).
    pub fn release(&self, n: usize) {
        self.buffered.fetch_sub(n, Relaxed);
    }

    pub fn buffered(&self) -> usize {
        self.buffered.load(Relaxed)
    }

    pub fn overflow(&self) -> u64 {
        self.overflow.load(Relaxed)
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    pub fn written(&self, n: usize) {
        self.sent.fetch_add(n as u64, Relaxed);
    }

    /// A write failed; the runner will retry it.
    pub fn failed(&self, error: &std::io::Error, retry_in: Duration) {
        self.errors.fetch_add(1, Relaxed);
        if self.up.swap(false, Relaxed) || self.error_log.allow() {
            tracing::warn!(
                output = %self.name,
                %error,
                retry_in_ms = retry_in.as_millis() as u64,
                buffered = self.buffered(),
                "output failing; retrying from its buffer"
            );
        }
    }

    /// `records` were written `latency_ns` after their datagram was received.
    pub fn observe_latency(&self, latency_ns: u64, records: usize) {
        self.latency.observe(latency_ns, records as u64);
    }

    /// A write succeeded (logs once after failures).
    pub fn succeeded(&self) {
        if !self.up.swap(true, Relaxed) {
            tracing::info!(output = %self.name, buffered = self.buffered(), "output recovered");
        }
    }

    /// Shutdown gave up on `n` records of a failing output.
    pub fn abandoned(&self, n: usize) {
        let total = self.dropped_at_shutdown.fetch_add(n as u64, Relaxed) + n as u64;
        if self.error_log.allow() {
            tracing::error!(
                output = %self.name,
                total,
                "output still failing at shutdown; records dropped"
            );
        }
    }

    /// Records given up on at shutdown.
    pub fn abandoned_total(&self) -> u64 {
        self.dropped_at_shutdown.load(Relaxed)
    }

    /// The destination's start-up check failed (logged by the runner).
    pub fn mark_down(&self) {
        self.up.store(false, Relaxed);
    }

    /// `n` records were handed to a destination that acknowledges them (Kafka); counted
    /// before the hand-over, so an acknowledgement never precedes it.
    pub fn handed_over(&self, n: usize) {
        self.in_flight.fetch_add(n, Relaxed);
    }

    /// A hand-over counted with [`OutputStats::handed_over`] did not happen after all.
    pub fn taken_back(&self, n: usize) {
        self.in_flight.fetch_sub(n, Relaxed);
    }

    /// `n` records were acknowledged, `latency_ns` after their datagram was received.
    pub fn acknowledged(&self, n: usize, latency_ns: Option<u64>) {
        self.in_flight.fetch_sub(n, Relaxed);
        self.sent.fetch_add(n as u64, Relaxed);
        if let Some(l) = latency_ns {
            self.latency.observe(l, n as u64);
        }
        self.succeeded();
    }

    /// `n` in-flight records failed for good (rejected, or unacknowledged until the message
    /// timeout): counted and logged, rate-limited.
    pub fn rejected(&self, n: usize, error: &dyn std::fmt::Display) {
        self.in_flight.fetch_sub(n, Relaxed);
        let total = self.failed_records.fetch_add(n as u64, Relaxed) + n as u64;
        self.errors.fetch_add(1, Relaxed);
        if self.up.swap(false, Relaxed) || self.error_log.allow() {
            tracing::error!(
                output = %self.name,
                %error,
                failed_total = total,
                "records not delivered (sluice_peer_output_failed_records_total)"
            );
        }
    }

    /// `n` in-flight records were purged at shutdown (counted as dropped at shutdown).
    pub fn purged(&self, n: usize) {
        self.in_flight.fetch_sub(n, Relaxed);
        self.abandoned(n);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    pub fn failed_records(&self) -> u64 {
        self.failed_records.load(Relaxed)
    }
}

/// Everything the peer counts. Shared (`Arc`) by all threads.
#[derive(Debug)]
pub struct Metrics {
    started: SystemTime,
    /// Datagrams received.
    pub datagrams: AtomicU64,
    /// Bytes received (UDP payload).
    pub bytes: AtomicU64,
    /// `recvmmsg` failures other than timeouts.
    pub receive_errors: AtomicU64,
    /// Flow records produced by the decoders.
    pub records: AtomicU64,
    drop_totals: [AtomicU64; DropReason::ALL.len()],
    drops: Mutex<HashMap<(DropReason, Option<IpAddr>), u64>>,
    drop_log: LogLimiter,
    sockets: Mutex<Vec<Arc<SocketStats>>>,
    outputs: Mutex<Vec<Arc<OutputStats>>>,
    decoders: Mutex<Vec<DecodeStats>>,
    peer: Mutex<PeerMetrics>,
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

fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

    /// The latest heartbeat snapshot (the Connected Peers metrics), recomputed every second.
    pub fn peer_metrics(&self) -> PeerMetrics {
        *lock(&self.peer)
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

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut p = Exposition::default();
        let peer = self.peer_metrics();
        p.gauge(
            "sluice_peer_start_time_seconds",
            "Process start, Unix seconds.",
            peer.start_time_unix_s,
        );
        p.counter(
            "sluice_peer_input_datagrams_total",
            "UDP datagrams received.",
            self.datagrams.load(Relaxed),
        );
        p.counter(
            "sluice_peer_input_bytes_total",
            "UDP payload bytes received.",
            self.bytes.load(Relaxed),
        );
        p.gauge(
            "sluice_peer_input_datagrams_per_second",
            "Datagrams received per second.",
            peer.input_pps,
        );
        p.counter(
            "sluice_peer_receive_errors_total",
            "recvmmsg failures.",
            self.receive_errors.load(Relaxed),
        );
        p.counter(
            "sluice_peer_flows_total",
            "Flow records produced.",
            self.records.load(Relaxed),
        );
        p.gauge(
            "sluice_peer_flows_per_second",
            "Flow records produced per second.",
            peer.flows_per_s,
        );

        p.family(
            "sluice_peer_drops_total",
            "counter",
            "Datagrams dropped before decoding, by reason.",
        );
        for reason in DropReason::ALL {
            p.sample(
                "sluice_peer_drops_total",
                &[("reason", reason.as_str())],
                self.drops(reason),
            );
        }
        p.family(
            "sluice_peer_exporter_drops_total",
            "counter",
            "Datagrams dropped before decoding, by exporter and reason.",
        );
        let mut drops: Vec<_> = lock(&self.drops).iter().map(|(k, v)| (*k, *v)).collect();
        drops.sort();
        for ((reason, exporter), n) in drops {
            let exporter = exporter.map_or_else(|| "other".to_owned(), |e| e.to_string());
            p.sample(
                "sluice_peer_exporter_drops_total",
                &[("exporter", &exporter), ("reason", reason.as_str())],
                n,
            );
        }
        p.family(
            "sluice_peer_kernel_drops_total",
            "counter",
            "Datagrams the kernel dropped on a receive socket (SO_RXQ_OVFL).",
        );
        for s in lock(&self.sockets).iter() {
            p.sample(
                "sluice_peer_kernel_drops_total",
                &[
                    ("socket", &s.local.to_string()),
                    ("index", &s.index.to_string()),
                ],
                s.kernel_drops.load(Relaxed),
            );
        }
        p.counter(
            "sluice_peer_all_drops_total",
            "Everything dropped: kernel, queues, outputs.",
            self.total_drops(),
        );

        self.render_decoders(&mut p);
        self.render_outputs(&mut p);

        p.gauge(
            "sluice_peer_host_cpu_percent",
            "Host CPU load.",
            peer.cpu_load_pct,
        );
        p.gauge(
            "sluice_peer_host_memory_used_percent",
            "Host memory in use.",
            peer.mem_used_pct,
        );
        p.gauge(
            "sluice_peer_process_cpu_percent",
            "This process's CPU use (100 = one core).",
            peer.process_cpu_pct,
        );
        p.gauge(
            "sluice_peer_process_resident_memory_bytes",
            "This process's resident memory.",
            peer.process_mem_bytes,
        );
        p.into_string()
    }

    fn render_decoders(&self, p: &mut Exposition) {
        let d = self.decode_totals();
        p.gauge(
            "sluice_peer_shards",
            "Decoder shards.",
            lock(&self.decoders).len(),
        );
        for (name, help, per) in [
            (
                "sluice_peer_decoded_datagrams_total",
                "Datagrams decoded, by protocol.",
                &d.datagrams,
            ),
            (
                "sluice_peer_decoded_records_total",
                "Flow records decoded, by protocol.",
                &d.records,
            ),
        ] {
            p.family(name, "counter", help);
            for proto in PROTOCOLS {
                p.sample(name, &[("protocol", proto.as_str())], per.get(proto));
            }
        }
        let name = "sluice_peer_decode_errors_total";
        p.family(name, "counter", "Malformed datagrams, by kind.");
        for (kind, n) in [
            ("unknown_version", d.errors.unknown_version),
            ("truncated", d.errors.truncated),
            ("bad_length", d.errors.bad_length),
            ("bad_template", d.errors.bad_template),
        ] {
            p.sample(name, &[("kind", kind)], n);
        }
        p.counter(
            "sluice_peer_template_misses_total",
            "Data sets that arrived before their template.",
            d.template_misses,
        );
        p.counter(
            "sluice_peer_templates_received_total",
            "Template records received.",
            d.templates_received,
        );
        p.counter(
            "sluice_peer_templates_withdrawn_total",
            "Templates withdrawn.",
            d.templates_withdrawn,
        );
        p.counter(
            "sluice_peer_options_records_total",
            "Options data records decoded.",
            d.options_records,
        );
        p.counter(
            "sluice_peer_counter_samples_total",
            "sFlow counter samples.",
            d.counter_samples,
        );
        p.gauge(
            "sluice_peer_held_data_sets",
            "Data sets held waiting for their template.",
            d.held,
        );
        p.counter(
            "sluice_peer_held_released_total",
            "Held data sets decoded after their template arrived.",
            d.held_released,
        );
        p.counter(
            "sluice_peer_held_expired_total",
            "Held data sets dropped by the timeout.",
            d.held_expired,
        );
        p.counter(
            "sluice_peer_held_dropped_total",
            "Held data sets dropped by the per-exporter bound.",
            d.held_dropped,
        );
        p.counter(
            "sluice_peer_sequence_lost_total",
            "Loss seen in exporters' sequence numbers.",
            d.lost_total,
        );
        let name = "sluice_peer_exporter_sequence_lost_total";
        p.family(
            name,
            "counter",
            "Loss seen in sequence numbers, by exporter.",
        );
        let mut lost: Vec<_> = d.lost_per_exporter.into_iter().collect();
        lost.sort();
        for (exporter, n) in lost.into_iter().take(MAX_EXPORTER_LABELS) {
            p.sample(name, &[("exporter", &exporter.to_string())], n);
        }
    }

    fn render_outputs(&self, p: &mut Exposition) {
        let outputs = lock(&self.outputs).clone();
        type Field = fn(&OutputStats) -> u64;
        let families: [(&str, &str, &str, Field); 8] = [
            (
                "sluice_peer_output_buffered_records",
                "gauge",
                "Records waiting in the output's buffer.",
                |o| o.buffered() as u64,
            ),
            (
                "sluice_peer_output_in_flight_records",
                "gauge",
                "Records handed to the destination, acknowledgement pending (Kafka).",
                |o| o.in_flight() as u64,
            ),
            (
                "sluice_peer_output_failed_records_total",
                "counter",
                "Records the destination rejected or never acknowledged (Kafka), logged.",
                OutputStats::failed_records,
            ),
            (
                "sluice_peer_output_buffer_capacity_records",
                "gauge",
                "Output buffer size.",
                |o| o.capacity as u64,
            ),
            (
                "sluice_peer_output_sent_records_total",
                "counter",
                "Records written by the output (Kafka: acknowledged by the broker).",
                OutputStats::sent,
            ),
            (
                "sluice_peer_output_overflow_records_total",
                "counter",
                "Records dropped because the output's buffer was full.",
                OutputStats::overflow,
            ),
            (
                "sluice_peer_output_errors_total",
                "counter",
                "Failed writes (each retried).",
                |o| o.errors.load(Relaxed),
            ),
            (
                "sluice_peer_output_shutdown_dropped_records_total",
                "counter",
                "Records given up on at shutdown.",
                OutputStats::abandoned_total,
            ),
        ];
        for (name, kind, help, field) in families {
            p.family(name, kind, help);
            for o in &outputs {
                p.sample(name, &[("output", &o.name)], field(o));
            }
        }
        let name = "sluice_peer_output_up";
        p.family(name, "gauge", "1 when the output's last write succeeded.");
        for o in &outputs {
            p.sample(name, &[("output", &o.name)], u8::from(o.up.load(Relaxed)));
        }
        let name = "sluice_peer_output_latency_seconds";
        p.family(
            name,
            "histogram",
            "Datagram received to record written, per record.",
        );
        for o in &outputs {
            o.latency.render(p, name, &o.name);
        }
    }

    /// Recomputes [`PeerMetrics`] every second until shutdown.
    pub fn spawn_sampler(self: &Arc<Self>, shutdown: Shutdown) -> std::io::Result<JoinHandle<()>> {
        let metrics = self.clone();
        std::thread::Builder::new()
            .name("metrics-sampler".into())
            .spawn(move || {
                let mut sampler = Sampler::new(&metrics);
                while !shutdown.sleep(SAMPLE_EVERY) {
                    let snapshot = sampler.sample(&metrics);
                    *lock(&metrics.peer) = snapshot;
                }
            })
    }
}

const PROTOCOLS: [Protocol; 4] = [
    Protocol::NetflowV5,
    Protocol::NetflowV9,
    Protocol::Ipfix,
    Protocol::Sflow5,
];

fn add_protocol(t: &mut crate::decode::PerProtocol, p: Protocol, n: u64) {
    let c = match p {
        Protocol::NetflowV5 => &mut t.netflow_v5,
        Protocol::NetflowV9 => &mut t.netflow_v9,
        Protocol::Ipfix => &mut t.ipfix,
        Protocol::Sflow5 => &mut t.sflow_5,
    };
    *c += n;
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A Prometheus histogram of nanosecond observations, lock-free.
#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket (not cumulative), the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, ns: u64, weight: u64) {
        let seconds = ns as f64 / 1e9;
        let i = LATENCY_BUCKETS_S
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[i].fetch_add(weight, Relaxed);
        self.sum_ns.fetch_add(ns.saturating_mul(weight), Relaxed);
        self.count.fetch_add(weight, Relaxed);
    }

    fn render(&self, p: &mut Exposition, name: &str, output: &str) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n.load(Relaxed);
            let le = LATENCY_BUCKETS_S
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
            p.sample(&bucket, &[("output", output), ("le", &le)], cumulative);
        }
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        p.sample(&format!("{name}_sum"), &[("output", output)], sum);
        p.sample(
            &format!("{name}_count"),
            &[("output", output)],
            self.count.load(Relaxed),
        );
    }
}

/// Deltas between two samples of the counters and of `/proc`.
struct Sampler {
    at: Instant,
    datagrams: u64,
    records: u64,
    host: Option<CpuTimes>,
    process_ticks: Option<u64>,
    ticks_per_s: f64,
    page_size: u64,
}

impl Sampler {
    fn new(m: &Metrics) -> Self {
        // SAFETY: sysconf has no memory-safety preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Sampler {
            at: Instant::now(),
            datagrams: m.datagrams.load(Relaxed),
            records: m.records.load(Relaxed),
            host: read_proc("/proc/stat").as_deref().and_then(parse_cpu_times),
            process_ticks: read_proc("/proc/self/stat")
                .as_deref()
                .and_then(parse_process_ticks),
            ticks_per_s: if ticks > 0 { ticks as f64 } else { 100.0 },
            page_size: u64::try_from(page).unwrap_or(4096),
        }
    }

    fn sample(&mut self, m: &Metrics) -> PeerMetrics {
        let now = Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64().max(1e-3);
        self.at = now;
        let datagrams = m.datagrams.load(Relaxed);
        let records = m.records.load(Relaxed);
        let rate = |new: u64, old: u64| new.saturating_sub(old) as f64 / dt;
        let host = read_proc("/proc/stat").as_deref().and_then(parse_cpu_times);
        let process_ticks = read_proc("/proc/self/stat")
            .as_deref()
            .and_then(parse_process_ticks);
        let out = PeerMetrics {
            cpu_load_pct: match (self.host, host) {
                (Some(a), Some(b)) => b.busy_pct_since(a),
                _ => 0.0,
            },
            mem_used_pct: read_proc("/proc/meminfo")
                .as_deref()
                .and_then(parse_memory_used_pct)
                .unwrap_or(0.0),
            process_cpu_pct: match (self.process_ticks, process_ticks) {
                (Some(a), Some(b)) => b.saturating_sub(a) as f64 / self.ticks_per_s / dt * 100.0,
                _ => 0.0,
            },
            process_mem_bytes: read_proc("/proc/self/statm")
                .as_deref()
                .and_then(parse_statm_rss_pages)
                .map_or(0, |pages| pages * self.page_size),
            input_pps: rate(datagrams, self.datagrams),
            flows_per_s: rate(records, self.records),
            total_drops: m.total_drops(),
            start_time_unix_s: unix_s(m.started),
        };
        self.datagrams = datagrams;
        self.records = records;
        self.host = host;
        self.process_ticks = process_ticks;
        out
    }
}

fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuTimes {
    total: u64,
    idle: u64,
}

impl CpuTimes {
    fn busy_pct_since(self, earlier: CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        let idle = self.idle.saturating_sub(earlier.idle);
        if total == 0 {
            return 0.0;
        }
        (total.saturating_sub(idle)) as f64 * 100.0 / total as f64
    }
}

/// The aggregate `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal.
fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        total: v.iter().sum(),
        idle,
    })
}

/// utime + stime (clock ticks) from `/proc/self/stat`; the command name may contain spaces.
fn parse_process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is f[0]; utime and stime are fields 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn parse_memory_used_pct(meminfo: &str) -> Option<f64> {
    let field = |name: &str| -> Option<f64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    (total > 0.0).then(|| (total - available) * 100.0 / total)
}

fn parse_statm_rss_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// Serves `GET /metrics` on an already-bound listener until shutdown, one scrape at a time on a
/// current-thread runtime of its own (the decode path has none).
pub fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    const LIMITS: sluice_http::Limits = sluice_http::Limits {
        max_head: 8192,
        max_headers: 64,
        max_body: 4096,
        timeout: Duration::from_secs(2),
    };
    const POLL: Duration = Duration::from_millis(50);
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = {
        let _runtime = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            let errors = LogLimiter::default();
            runtime.block_on(async {
                while !shutdown.is_triggered() {
                    // Wakes every 50 ms to look at the shutdown flag.
                    let stream = match tokio::time::timeout(POLL, listener.accept()).await {
                        Err(_) => continue,
                        Ok(Ok((stream, _))) => stream,
                        Ok(Err(error)) => {
                            if errors.allow() {
                                tracing::warn!(%error, "metrics listener accept failed");
                            }
                            tokio::time::sleep(POLL).await;
                            continue;
                        }
                    };
                    // The request and the reply, 2 s each.
                    let scrape =
                        sluice_http::serve(stream, &LIMITS, |request| respond(request, &metrics));
                    match tokio::time::timeout(2 * LIMITS.timeout, scrape).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) if errors.allow() => {
                            tracing::debug!(%error, "metrics request failed");
                        }
                        Err(_) if errors.allow() => {
                            tracing::debug!("metrics request not complete in time");
                        }
                        _ => {}
                    }
                }
            });
        })
}

fn respond(
    request: Result<sluice_http::Request, sluice_http::RequestError>,
    metrics: &Metrics,
) -> sluice_http::Response {
    use sluice_http::{Method, StatusCode, response};
    match request {
        Ok(r) if r.method() == Method::GET && r.uri().path() == "/metrics" => response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        Ok(_) => response(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n"),
        Err(error) => response(StatusCode::BAD_REQUEST, "text/plain", format!("{error}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsers() {
        let stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n";
        let a = parse_cpu_times(stat).unwrap();
        assert_eq!(
            a,
            CpuTimes {
                total: 1000,
                idle: 800
            }
        );
        let b = CpuTimes {
            total: 1100,
            idle: 850,
        };
        assert!((b.busy_pct_since(a) - 50.0).abs() < 1e-9);
        let pstat = "1234 (sluice peer) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_process_ticks(pstat), Some(300));
        let meminfo = "MemTotal:       1000 kB\nMemFree:  100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_memory_used_pct(meminfo), Some(75.0));
        assert_eq!(parse_statm_rss_pages("5000 1200 300 1 0 900 0"), Some(1200));
    }

    #[test]
    fn live_sample_is_sane() {
        let m = Metrics::new();
        let mut s = Sampler::new(&m);
        m.datagrams.fetch_add(10, Relaxed);
        let p = s.sample(&m);
        assert!(p.process_mem_bytes > 0);
        assert!(p.input_pps > 0.0);
        assert!((0.0..=100.0).contains(&p.mem_used_pct));
        assert!(p.start_time_unix_s > 1_600_000_000);
    }

    #[test]
    fn render_has_drops_per_reason_and_exporter() {
        let m = Metrics::new();
        m.register_shards(2);
        m.dropped(DropReason::QueueFull, "198.18.0.7".parse().unwrap(), 3);
        let out = m.register_output("0-file".into(), 10);
        assert_eq!(out.reserve(8), 8);
        assert_eq!(out.reserve(5), 2);
        let text = m.render();
        assert!(
            text.contains("sluice_peer_drops_total{reason=\"queue_full\"} 3\n"),
            "{text}"
        );
        assert!(text.contains(
            "sluice_peer_exporter_drops_total{exporter=\"198.18.0.7\",reason=\"queue_full\"} 3\n"
        ));
        assert!(text.contains("sluice_peer_output_overflow_records_total{output=\"0-file\"} 3\n"));
        assert!(text.contains("sluice_peer_output_buffered_records{output=\"0-file\"} 10\n"));
        assert!(text.contains("sluice_peer_shards 2\n"));
        assert!(text.contains(
            "sluice_peer_output_latency_seconds_bucket{output=\"0-file\",le=\"+Inf\"} 0\n"
        ));
        assert_eq!(m.total_drops(), 6);
    }

    #[test]
    fn acknowledged_outputs_count_in_flight_sent_failed_and_purged() {
        let m = Metrics::new();
        let k = m.register_output("1-kafka".into(), 100);
        k.handed_over(10);
        k.acknowledged(6, Some(2_000_000));
        k.rejected(3, &"broker said no");
        assert_eq!((k.in_flight(), k.sent(), k.failed_records()), (1, 6, 3));
        k.purged(1);
        assert_eq!((k.in_flight(), k.abandoned_total()), (0, 1));
        // Failed and purged records are drops; acknowledged ones are not.
        assert_eq!(m.total_drops(), 4);
        let text = m.render();
        for line in [
            "sluice_peer_output_in_flight_records{output=\"1-kafka\"} 0\n",
            "sluice_peer_output_failed_records_total{output=\"1-kafka\"} 3\n",
            "sluice_peer_output_sent_records_total{output=\"1-kafka\"} 6\n",
            "sluice_peer_output_latency_seconds_count{output=\"1-kafka\"} 6\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn latency_histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(300_000, 2); // 0.3 ms
        h.observe(20_000_000, 1); // 20 ms
        h.observe(60_000_000_000, 1); // a minute
        let mut p = Exposition::default();
        h.render(&mut p, "l", "o");
        assert!(
            p.as_str()
                .contains("l_bucket{output=\"o\",le=\"0.0005\"} 2\n"),
            "{}",
            p.as_str()
        );
        assert!(
            p.as_str()
                .contains("l_bucket{output=\"o\",le=\"0.01\"} 2\n")
        );
        assert!(
            p.as_str()
                .contains("l_bucket{output=\"o\",le=\"0.025\"} 3\n")
        );
        assert!(p.as_str().contains("l_bucket{output=\"o\",le=\"5\"} 3\n"));
        assert!(
            p.as_str()
                .contains("l_bucket{output=\"o\",le=\"+Inf\"} 4\n")
        );
        assert!(p.as_str().contains("l_count{output=\"o\"} 4\n"));
    }
}
