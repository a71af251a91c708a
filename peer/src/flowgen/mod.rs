//! Flow generator: encoders for NetFlow v5, NetFlow v9, IPFIX and sFlow v5, a deterministic
//! synthetic traffic source, and a rate-paced UDP sender (used by the `sluice-flowgen` binary,
//! the demo, end-to-end tests and benchmarks).
//!
//! Encoders take [`FlowRecord`]s and write the fields their protocol can carry, so
//! `decode(encode(flows))` gives the flows back (the round-trip property tests rely on this):
//! times at millisecond precision, v5 IPv4 only with 16-bit interfaces and AS numbers, sFlow
//! one packet per sample with `bytes` as the frame length.

mod config;
mod encoder;
mod netflow;
mod netflow5;
pub mod send;
mod sflow;
mod synth;
mod wire;

pub use crate::record::{FlowRecord, Protocol};
pub use config::EncoderConfig;
pub use encoder::Encoder;
pub use synth::FlowSynth;
