//! [`DecoderConfig`]: limits and options of a shard's decoder.

use serde::{Deserialize, Serialize};

/// Decoder settings. `Default` gives production values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecoderConfig {
    /// Multiply `bytes` and `packets` by the sampling rate (when one is known).
    pub apply_sampling: bool,
    /// At most this many data sets held (waiting for their template) per exporter; the oldest is
    /// dropped (counted in `held_dropped`) when a new one would exceed it.
    pub max_held_per_exporter: usize,
    /// At most this many bytes of held data sets per exporter.
    pub max_held_bytes_per_exporter: usize,
    /// Held data older than this is dropped by [`ShardDecoder::expire`] (counted in `held_expired`).
    pub held_timeout_ns: u64,
    /// At most this many templates per exporter (all domains); more are rejected as bad
    /// templates, so a broken or hostile exporter cannot grow memory without bound.
    pub max_templates_per_exporter: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            apply_sampling: false,
            max_held_per_exporter: 256,
            max_held_bytes_per_exporter: 1 << 20,
            held_timeout_ns: 60_000_000_000,
            max_templates_per_exporter: 4096,
        }
    }
}
