//! Counters, the Prometheus `/metrics` endpoint and the [`PeerMetrics`] heartbeat snapshot.
//!
//! Like vector's `internal_events`, each rare event (a full queue, an output failing, an
//! overflow) is one method that bumps its counter and logs, rate-limited, from one place. Hot
//! paths only add to atomics once per batch.
//!
//! # Layout
//! - `log`: [`LogLimiter`], rate limiting for those logs.
//! - `drop_reason`: [`DropReason`], why datagrams are dropped before decoding.
//! - `registry`: [`Metrics`], the counters every thread shares, and [`SocketStats`].
//! - `output`: [`OutputStats`], one output's counters.
//! - `histogram`: the received-to-written latency histogram.
//! - `proc` and `heartbeat`: `/proc` parsers and the [`PeerMetrics`] sampler.
//! - `render`: the Prometheus text exposition.
//! - `http`: [`serve`], the `/metrics` endpoint.

mod drop_reason;
mod heartbeat;
mod histogram;
mod http;
mod log;
mod output;
mod proc;
mod registry;
mod render;

pub use sluice_common::protocol::PeerMetrics;

pub use drop_reason::DropReason;
pub use histogram::LatencyTally;
pub use http::serve;
pub use log::LogLimiter;
pub use output::OutputStats;
pub use registry::{Metrics, SocketStats};
