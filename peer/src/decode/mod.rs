//! Flow decoders: bytes in, [`FlowRecord`]s out. Pure: no I/O, no clocks, no panics on any input.
//!
//! One [`ShardDecoder`] per pipeline shard owns the template state of that shard's exporters, so
//! the hot path takes no locks. See `README.md` in this folder for what operators need to know
//! about templates, held data and sampling.
//!
//! # Layout
//! - `shard`: [`ShardDecoder`], dispatching each datagram to its protocol's decoder.
//! - `state`: per-exporter state (templates, held data, sequence numbers) and the decoders'
//!   context; `config`, `error`, `stats`: [`DecoderConfig`], [`DecodeError`], [`DecodeStats`].
//! - `reader`: checked big-endian reads; `time`: sysUptime stamps to Unix time.
//! - `netflow5`: NetFlow v5 (fixed format).
//! - `template`: NetFlow v9 / IPFIX templates compiled into field programs, shared by both,
//!   and their [`TemplateSnapshot`]s.
//! - `netflow`: NetFlow v9 and IPFIX messages (sets, templates, options, data, withdrawal).
//! - `sflow` and `packet`: sFlow v5 and the sampled-header parser (Ethernet → L4).

mod config;
mod error;
mod netflow;
mod netflow5;
mod packet;
mod reader;
mod sflow;
mod shard;
mod state;
mod stats;
mod template;
mod time;

pub use crate::record::{FlowRecord, Protocol};
pub use config::DecoderConfig;
pub use error::{DecodeError, ErrorKind};
pub use shard::{ShardDecoder, protocol_of};
pub use stats::{DecodeOutcome, DecodeStats, ErrorCounts, PerProtocol};
pub use template::{FieldSpec, Stamp, TemplateSnapshot};
