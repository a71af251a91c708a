//! The heartbeat snapshot ([`PeerMetrics`]): rates and host load, recomputed every second.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_common::protocol::PeerMetrics;

use super::proc::{
    CpuTimes, parse_cpu_times, parse_memory_used_pct, parse_process_ticks, parse_statm_rss_pages,
    read_proc,
};
use super::registry::{Metrics, lock, unix_s};
use crate::shutdown::Shutdown;

/// How often [`PeerMetrics`] is recomputed.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

impl Metrics {
    /// The latest heartbeat snapshot (the Connected Peers metrics), recomputed every second.
    pub fn peer_metrics(&self) -> PeerMetrics {
        *lock(&self.peer)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
