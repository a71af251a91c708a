//! The received-to-written latency histogram of each output.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sluice_common::prom::Exposition;

/// Upper bounds (nanoseconds) of the latency histogram's buckets; exposed in seconds.
const LATENCY_BUCKETS_NS: [u64; 12] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// The bucket of an observation of `ns` (the last one is `+Inf`).
fn bucket(ns: u64) -> usize {
    LATENCY_BUCKETS_NS
        .iter()
        .position(|le| ns <= *le)
        .unwrap_or(LATENCY_BUCKETS_NS.len())
}

/// A Prometheus histogram of nanosecond observations, lock-free.
#[derive(Debug, Default)]
pub(super) struct Histogram {
    /// Per bucket (not cumulative), the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// Observations gathered by one thread, added to a [`Histogram`] at once: a delivery report of
/// thousands of records costs a few atomic additions instead of three per record.
#[derive(Debug, Default)]
pub struct LatencyTally {
    buckets: [u64; LATENCY_BUCKETS_NS.len() + 1],
    sum_ns: u64,
    count: u64,
}

impl LatencyTally {
    pub fn observe(&mut self, ns: u64) {
        self.buckets[bucket(ns)] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl Histogram {
    pub(super) fn observe(&self, ns: u64, weight: u64) {
        self.buckets[bucket(ns)].fetch_add(weight, Relaxed);
        self.sum_ns.fetch_add(ns.saturating_mul(weight), Relaxed);
        self.count.fetch_add(weight, Relaxed);
    }

    pub(super) fn add(&self, tally: &LatencyTally) {
        for (b, n) in self.buckets.iter().zip(tally.buckets) {
            if n > 0 {
                b.fetch_add(n, Relaxed);
            }
        }
        self.sum_ns.fetch_add(tally.sum_ns, Relaxed);
        self.count.fetch_add(tally.count, Relaxed);
    }

    pub(super) fn render(&self, p: &mut Exposition, name: &str, output: &str) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n.load(Relaxed);
            let le = LATENCY_BUCKETS_NS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |&ns| (ns as f64 / 1e9).to_string());
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

    #[test]
    fn a_tally_adds_what_its_observations_would() {
        let (one_by_one, at_once) = (Histogram::default(), Histogram::default());
        let mut tally = LatencyTally::default();
        assert!(tally.is_empty());
        for ns in [300_000, 500_000, 500_001, 20_000_000, 60_000_000_000] {
            one_by_one.observe(ns, 1);
            tally.observe(ns);
        }
        at_once.add(&tally);
        let text = |h: &Histogram| {
            let mut p = Exposition::default();
            h.render(&mut p, "l", "o");
            p.as_str().to_owned()
        };
        assert_eq!(text(&one_by_one), text(&at_once));
        // 500 µs is inside the first bucket, one ns more is not.
        assert!(text(&at_once).contains("l_bucket{output=\"o\",le=\"0.0005\"} 2\n"));
        assert!(text(&at_once).contains("l_count{output=\"o\"} 5\n"));
    }
}
