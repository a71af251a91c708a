//! Outputs: where decoded records go.
//!
//! One folder per sink (`stdout/`, `file/`, `syslog/`), each with its `config.rs` (the
//! `[[outputs]]` table, `deny_unknown_fields`) and `sink.rs` (the [`Sink`]). Every output runs
//! in its own thread behind a bounded buffer ([`runner`]): shards never wait for an output, a
//! failing output retries with backoff from its buffer, and records that do not fit are counted
//! as overflow.

pub mod batch;
mod buffer;
mod config;
pub mod file;
pub mod format;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod runner;
mod sink;
pub mod stdout;
pub mod syslog;

pub use batch::{BatchPool, EncodedBatch};
pub use buffer::DEFAULT_BUFFER_RECORDS;
pub use config::{OutputConfig, OutputFlagError};
pub use format::{Encoding, Fields, Format};
pub use runner::{Fanout, OutputSet};
pub use sink::{Sink, SinkFailure};
