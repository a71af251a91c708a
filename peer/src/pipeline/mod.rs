//! The data path: ingest → [`Router`] → shards ([`ShardDecoder`] per thread) → outputs.
//!
//! Threads and queues (all bounded):
//! - one receive thread per socket batches datagrams per shard and `try_send`s each batch; a
//!   full shard queue drops the batch and counts it per exporter (`queue_full`);
//! - one thread per shard decodes, encodes JSON once and hands the batch to every output
//!   through [`Fanout`] (never blocking: an output without room counts overflow);
//! - one thread per output writes, retrying failures from its buffer.
//!
//! `Shards::start` starts the shard threads; `crate::run` wires the stages together, and
//! shutdown runs front to back there: receive threads stop and drop their senders, shards
//! drain their queues and drop theirs, outputs drain their buffers and flush.
//!
//! [`ShardDecoder`]: crate::decode::ShardDecoder
//! [`Fanout`]: crate::output::Fanout

mod batch;
mod control;
mod replay;
mod router;
mod shard;
mod shards;

pub use batch::{Datagram, DatagramBatch};
pub use control::{ControlError, ShardRequest, TemplateControl};
pub use replay::{ReplayError, ReplayReport, replay};
pub use router::{Backpressure, Router, shard_for};
pub(crate) use shards::Shards;
