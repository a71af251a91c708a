//! The received-to-written latency histogram of each output.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sluice_common::prom::Exposition;

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A Prometheus histogram of nanosecond observations, lock-free.
#[derive(Debug, Default)]
pub(super) struct Histogram {
    /// Per bucket (not cumulative), the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub(super) fn observe(&self, ns: u64, weight: u64) {
        let seconds = ns as f64 / 1e9;
        let i = LATENCY_BUCKETS_S
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[i].fetch_add(weight, Relaxed);
        self.sum_ns.fetch_add(ns.saturating_mul(weight), Relaxed);
        self.count.fetch_add(weight, Relaxed);
    }

    pub(super) fn render(&self, p: &mut Exposition, name: &str, output: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
