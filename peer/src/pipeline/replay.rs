//! Runs the real pipeline (router, shards, outputs; no sockets) on an in-memory corpus:
//! the entry point for `cargo xtask bench decode` and for tests.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::router::Backpressure;
use super::shards::Shards;
use crate::clock::now_ns;
use crate::config::PipelineConfig;
use crate::decode::DecodeStats;
use crate::metrics::Metrics;
use crate::output::runner::OutputError;
use crate::output::{OutputConfig, OutputSet};
use crate::shutdown::{Shutdown, join_all};

/// Datagrams handed to the shards per batch, like one `recvmmsg` call.
const BATCH: usize = 64;

/// Why a replay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("cannot start a thread")]
    Spawn(#[from] std::io::Error),
}

/// What one replay did and what it cost.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    pub datagrams: u64,
    pub records: u64,
    /// Wall-clock time from the first datagram to the last output flushed.
    pub wall: Duration,
    /// CPU time of the whole process (all threads) over the same span.
    pub cpu: Duration,
    /// The decoders' counters summed over shards.
    pub decode: DecodeStats,
    /// Everything counted during the run (`render()` gives the Prometheus text, including the
    /// received-to-written latency histogram of each output).
    pub metrics: Arc<Metrics>,
}

/// Feeds `corpus` (exporter address, datagram) `repeat` times through shards and `outputs`
/// (none: records are decoded and counted but not encoded), waiting for room instead of
/// dropping, then shuts the pipeline down and reports.
pub fn replay(
    config: &PipelineConfig,
    outputs: &[OutputConfig],
    corpus: &[(IpAddr, Vec<u8>)],
    repeat: usize,
) -> Result<ReplayReport, ReplayError> {
    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    let drain = Duration::from_millis(config.drain_timeout_ms);
    let started = Instant::now();
    let cpu_before = process_cpu();
    let set = OutputSet::start(outputs, &metrics, &shutdown, drain)?;
    let shards = Shards::start(config, &set.fanout, &metrics)?;
    drop(set.fanout);
    let mut router = shards.router(Backpressure::Block, &metrics);
    for _ in 0..repeat {
        for chunk in corpus.chunks(BATCH) {
            let now = now_ns();
            for (exporter, datagram) in chunk {
                router.push(*exporter, now, datagram);
            }
            router.flush();
            metrics.datagrams.fetch_add(chunk.len() as u64, Relaxed);
        }
    }
    drop(router);
    join_all("shard", shards.into_threads());
    shutdown.trigger();
    join_all("output", set.threads);
    Ok(ReplayReport {
        datagrams: metrics.datagrams.load(Relaxed),
        records: metrics.records.load(Relaxed),
        wall: started.elapsed(),
        cpu: process_cpu().saturating_sub(cpu_before),
        decode: metrics.decode_totals(),
        metrics,
    })
}

/// User + system CPU time of this process.
fn process_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_counts_every_datagram_even_undecodable_ones() {
        let corpus: Vec<(IpAddr, Vec<u8>)> = (0..10u8)
            .map(|i| (IpAddr::from([198, 18, 0, i]), vec![0xff, 0xff, 0, 0]))
            .collect();
        let config = PipelineConfig {
            shards: 3,
            ..PipelineConfig::default()
        };
        let report = replay(&config, &[], &corpus, 5).unwrap();
        assert_eq!(report.datagrams, 50);
        assert_eq!(report.records, 0);
        assert_eq!(report.decode.errors.unknown_version, 50);
    }
}
