//! The counters of one output: buffer room, sent, overflow, failures, latency.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use super::histogram::{Histogram, LatencyTally};
use super::log::LogLimiter;

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
    pub(super) errors: AtomicU64,
    dropped_at_shutdown: AtomicU64,
    pub(super) up: AtomicBool,
    pub(super) latency: Histogram,
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
        // A load first: the swap would take the cache line from the other threads every time.
        if !self.up.load(Relaxed) && !self.up.swap(true, Relaxed) {
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

    /// `n` records were acknowledged; `latency`: received → acknowledged of those whose
    /// receive time is known.
    pub fn acknowledged(&self, n: usize, latency: &LatencyTally) {
        self.in_flight.fetch_sub(n, Relaxed);
        self.sent.fetch_add(n as u64, Relaxed);
        if !latency.is_empty() {
            self.latency.add(latency);
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
