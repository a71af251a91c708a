//! The peer's latency histogram between two scrapes, as percentiles (received→written from its buckets).

use anyhow::{Result, ensure};
use hdrhistogram::Histogram;

use super::daemons::Metrics;

const BUCKET: &str = "sluice_peer_output_latency_seconds_bucket";
/// Stands for the `+Inf` bucket, in µs.
const INF_US: u64 = 100_000_000;
/// The quantiles printed.
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

pub struct Percentiles {
    /// Upper bounds (µs) at [`QUANTILES`].
    values_us: [u64; 4],
    pub count: u64,
    pub mean_ms: f64,
}

impl Percentiles {
    pub fn show(&self, i: usize) -> String {
        match self.values_us[i] {
            v if v >= INF_US => ">5 s".to_owned(),
            v => format!("≤{}ms", v as f64 / 1000.0),
        }
    }
}

/// Cumulative bucket counts (upper bound in µs, count) of all outputs.
fn buckets(m: &Metrics) -> Vec<(u64, f64)> {
    let mut v: Vec<(u64, f64)> = m
        .samples(BUCKET)
        .filter_map(|(labels, n)| {
            let le = labels.split("le=\"").nth(1)?.split('"').next()?;
            let us = if le == "+Inf" {
                INF_US
            } else {
                (le.parse::<f64>().ok()? * 1e6).round() as u64
            };
            Some((us, n))
        })
        .collect();
    v.sort_by_key(|(us, _)| *us);
    v
}

pub fn between(before: &Metrics, after: &Metrics) -> Result<Percentiles> {
    let (b, a) = (buckets(before), buckets(after));
    ensure!(!a.is_empty(), "no {BUCKET} in the peer's metrics");
    let mut h = Histogram::<u64>::new_with_bounds(1, INF_US, 3)?;
    let mut below = 0.0;
    for (i, (us, cumulative)) in a.iter().enumerate() {
        let earlier = b.get(i).map_or(0.0, |(_, n)| *n);
        let delta = cumulative - earlier;
        h.record_n(*us, (delta - below).max(0.0) as u64)?;
        below = delta;
    }
    let name = "sluice_peer_output_latency_seconds";
    let sum = after.value(&format!("{name}_sum")) - before.value(&format!("{name}_sum"));
    let count = after.value(&format!("{name}_count")) - before.value(&format!("{name}_count"));
    Ok(Percentiles {
        values_us: QUANTILES.map(|q| {
            let v = h.value_at_quantile(q);
            // The bucket bound the value stands for (hdrhistogram rounds within 0.1%).
            a.iter()
                .map(|(us, _)| *us)
                .find(|&us| us >= h.lowest_equivalent(v))
                .unwrap_or(INF_US)
        }),
        count: count as u64,
        mean_ms: if count > 0.0 { sum / count * 1e3 } else { 0.0 },
    })
}
