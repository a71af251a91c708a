use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};

use super::config::KafkaConfig;
use crate::clock::now_ns;
use crate::metrics::OutputStats;
use crate::output::batch::EncodedBatch;
use crate::output::sink::{Sink, SinkFailure};

/// How long the start-up check waits for the brokers' metadata.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a full librdkafka queue is polled before the write fails (and the runner retries
/// from its buffer with backoff).
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(100);

/// Delivery reports: a record counts as sent when the broker acknowledged it, as failed when
/// librdkafka gave up on it, as dropped at shutdown when purged.
pub struct Delivery {
    stats: Arc<OutputStats>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    /// When the record's datagram was received (ns since the epoch), for the latency histogram.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, received_ns: usize) {
        match result {
            Ok(_) => {
                let latency = now_ns().saturating_sub(received_ns as u64);
                self.stats
                    .acknowledged(1, (received_ns > 0).then_some(latency));
            }
            Err((
                KafkaError::MessageProduction(
                    RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight,
                ),
                _,
            )) => self.stats.purged(1),
            Err((error, _)) => self.stats.rejected(1, error),
        }
    }
}

/// Produces each record as one Kafka message keyed by its exporter's address.
pub struct KafkaSink {
    producer: ThreadedProducer<Delivery>,
    stats: Arc<OutputStats>,
    topic: String,
    brokers: String,
    drain_timeout: Duration,
    /// The last key's exporter and its text (records of one datagram share it).
    key_of: Option<std::net::IpAddr>,
    key: String,
}

impl KafkaSink {
    /// Creates the producer (an invalid librdkafka setting is an error here); reachability
    /// and the topic are checked by the health check.
    pub fn new(
        config: &KafkaConfig,
        stats: Arc<OutputStats>,
        drain_timeout: Duration,
    ) -> std::io::Result<Self> {
        let client = config.client_config()?;
        let delivery = Delivery {
            stats: stats.clone(),
        };
        let producer = ThreadedProducer::from_config_and_context(&client, delivery)
            .map_err(|e| std::io::Error::other(format!("kafka producer: {e}")))?;
        Ok(KafkaSink {
            producer,
            stats,
            topic: config.topic.clone(),
            brokers: config.brokers.join(","),
            drain_timeout,
            key_of: None,
            key: String::with_capacity(40),
        })
    }
}

impl Sink for KafkaSink {
    fn acknowledges(&self) -> bool {
        true
    }

    /// The brokers answer and know the topic.
    fn healthcheck(&mut self) -> std::io::Result<()> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), HEALTHCHECK_TIMEOUT)
            .map_err(|e| {
                std::io::Error::other(format!(
                    "cannot reach the Kafka brokers {}: {e}",
                    self.brokers
                ))
            })?;
        match metadata.topics().iter().find(|t| t.name() == self.topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
            Some(t) => Err(std::io::Error::other(format!(
                "topic `{}` is not usable on {} ({:?}); create it first, Sluice does not \
                 create topics",
                self.topic,
                self.brokers,
                t.error()
            ))),
            None => Err(std::io::Error::other(format!(
                "topic `{}` does not exist on {}; create it first, Sluice does not create topics",
                self.topic, self.brokers
            ))),
        }
    }

    fn write(&mut self, batch: &EncodedBatch, from: usize) -> Result<(), SinkFailure> {
        let received_ns = batch.received_ns() as usize;
        for (n, payload) in batch.payloads_from(from).enumerate() {
            let exporter = batch.exporter(from + n);
            if exporter != self.key_of {
                self.key.clear();
                if let Some(a) = exporter {
                    let _ = write!(self.key, "{a}");
                }
                self.key_of = exporter;
            }
            let key = exporter.map(|_| self.key.as_bytes());
            let mut record = BaseRecord::with_opaque_to(&self.topic, received_ns).payload(payload);
            if let Some(k) = key {
                record = record.key(k);
            }
            let mut waited = Duration::ZERO;
            // Counted before the hand-over: the delivery report may come at once.
            self.stats.handed_over(1);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if waited < QUEUE_FULL_WAIT =>
                    {
                        // The polling thread serves delivery reports meanwhile.
                        std::thread::sleep(Duration::from_millis(5));
                        waited += Duration::from_millis(5);
                        record = back;
                    }
                    Err((error, _)) => {
                        self.stats.taken_back(1);
                        return Err(SinkFailure {
                            written: n,
                            error: std::io::Error::other(format!(
                                "kafka: {error} ({} records awaiting acknowledgement)",
                                self.producer.in_flight_count()
                            )),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits up to the drain timeout for acknowledgements; what is still unacknowledged then
    /// is purged and counted as dropped at shutdown.
    fn flush(&mut self) -> std::io::Result<()> {
        let flushed = self.producer.flush(self.drain_timeout);
        if flushed.is_err() {
            self.producer
                .purge(PurgeConfig::default().queue().inflight());
            let _ = self.producer.flush(Duration::from_secs(1));
        }
        flushed.map_err(|e| std::io::Error::other(format!("kafka flush: {e}")))
    }
}
