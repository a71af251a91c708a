//! `type = "kafka"`: each record one Kafka message (`format = "pb"` by default: GoFlow2's
//! length-delimited `FlowMessage`), keyed by its exporter's address so an exporter's records
//! stay on one partition, in order. librdkafka (bundled, via `rdkafka`) with `acks=all` and the
//! idempotent producer by default.
//!
//! Accounting: the runner hands records to librdkafka (they leave the output's buffer and are
//! *in flight*); the delivery report of each counts it as sent (acknowledged by the broker) or
//! failed (librdkafka gave up after `message_timeout_ms`; logged). A full librdkafka queue
//! fails the write, so the runner keeps the rest in its buffer and retries with backoff; what
//! does not fit that buffer is overflow. sent + failed + overflow + in flight + buffered +
//! dropped at shutdown = records decoded.

mod config;
mod sink;

pub use config::{Acks, Compression, KafkaConfig, KafkaSasl, KafkaTls, Partitioner, SaslMechanism};
pub use sink::KafkaSink;
