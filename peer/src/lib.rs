//! Sluice peer: UDP flow ingest, sharded decoding and outputs.
//!
//! # Layout
//! - [`config`]: `peer.toml` and command-line overrides, validated at start.
//! - [`central`]: peer mode: registration, heartbeats and template hand-over with Central.
//! - [`ingest`]: `SO_REUSEPORT` UDP sockets, batched `recvmmsg`, kernel drop counters.
//! - [`run`]: start-up wiring: binds, starts the stages below and stops them in order.
//! - [`pipeline`]: routing datagrams to decoder shards by exporter, shard threads, and
//!   [`pipeline::replay`] (the pipeline on an in-memory corpus, for benchmarks).
//! - [`decode`]: pure decoders (NetFlow v5/v9, IPFIX, sFlow v5) into [`record::FlowRecord`].
//! - [`record`]: the normalized flow record, its GoFlow2-compatible JSON and protobuf
//!   ([`record::pb`], `peer/proto/flow.proto`).
//! - [`output`]: sinks (`stdout`, `file`, `syslog`), each on its own thread behind a buffer.
//! - [`metrics`]: counters, Prometheus `/metrics`, the heartbeat's [`metrics::PeerMetrics`].
//! - [`shutdown`], [`clock`]: leaves every stage uses: the shutdown signal, the records' clock.
//! - [`flowgen`]: flow generator encoders for tests, the lab and benchmarks.

pub mod central;
pub mod clock;
pub mod config;
pub mod decode;
pub mod flowgen;
pub mod ingest;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod record;
pub mod run;
pub mod shutdown;
#[cfg(feature = "testing")]
pub mod testing;
