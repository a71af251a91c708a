use std::ffi::{CString, c_void};
use std::fmt::Write as _;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::bindings as rdsys;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer};

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

/// librdkafka's handle of the topic, for `rd_kafka_produce_batch`. rdkafka's `send` goes
/// through `rd_kafka_producev`, which copies the topic's name into a new C string and looks the
/// topic up again for every message, and reads the clock twice per message.
struct TopicHandle(NonNull<rdsys::rd_kafka_topic_t>);

// SAFETY: librdkafka topic handles may be used from any thread (they are reference-counted
// and locked inside librdkafka).
unsafe impl Send for TopicHandle {}

impl TopicHandle {
    fn new(producer: &ThreadedProducer<Delivery>, topic: &str) -> std::io::Result<Self> {
        let name = CString::new(topic)
            .map_err(|_| std::io::Error::other("kafka topic: contains a NUL byte"))?;
        // SAFETY: the client pointer is valid while the producer lives, and the sink drops
        // this handle before the producer (field order); a NULL configuration means the
        // topic defaults of the client's configuration.
        let rkt = unsafe {
            rdsys::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        NonNull::new(rkt).map(TopicHandle).ok_or_else(|| {
            std::io::Error::other(format!("kafka topic `{topic}`: librdkafka refused it"))
        })
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_topic_new and destroyed once, before the producer.
        unsafe { rdsys::rd_kafka_topic_destroy(self.0.as_ptr()) }
    }
}

/// Produces each record as one Kafka message keyed by its exporter's address.
pub struct KafkaSink {
    /// Declared before `producer` so that it is dropped first.
    topic_handle: TopicHandle,
    producer: ThreadedProducer<Delivery>,
    stats: Arc<OutputStats>,
    topic: String,
    brokers: String,
    drain_timeout: Duration,
    /// Key text of the records being produced, end to end; `key_spans[i]`: record `i`'s key
    /// in it (records of one datagram share their exporter, so the last one's text is reused).
    keys: String,
    key_spans: Vec<Option<(usize, usize)>>,
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
            topic_handle: TopicHandle::new(&producer, &config.topic)?,
            producer,
            stats,
            topic: config.topic.clone(),
            brokers: config.brokers.join(","),
            drain_timeout,
            keys: String::new(),
            key_spans: Vec::new(),
        })
    }

    /// Each record's key from `from` on: its exporter's address as text.
    fn fill_keys(&mut self, batch: &EncodedBatch, from: usize) {
        self.keys.clear();
        self.key_spans.clear();
        let mut last: Option<(std::net::IpAddr, (usize, usize))> = None;
        for i in from..batch.len() {
            let span = batch.exporter(i).map(|a| match last {
                Some((b, span)) if b == a => span,
                _ => {
                    let start = self.keys.len();
                    let _ = write!(self.keys, "{a}");
                    let span = (start, self.keys.len() - start);
                    last = Some((a, span));
                    span
                }
            });
            self.key_spans.push(span);
        }
    }

    /// Enqueues `messages` in librdkafka (which copies payloads and keys); afterwards each
    /// message's `err` says whether it was taken.
    fn produce(&self, messages: &mut [rdsys::rd_kafka_message_t]) {
        let count = i32::try_from(messages.len()).unwrap_or(i32::MAX);
        // SAFETY: the topic handle is live; every payload and key pointer points into the
        // batch or `self.keys`, both alive for the call, and RD_KAFKA_MSG_F_COPY makes
        // librdkafka copy them before it returns. At most `count` messages are read.
        unsafe {
            rdsys::rd_kafka_produce_batch(
                self.topic_handle.0.as_ptr(),
                RD_KAFKA_PARTITION_UA,
                rdsys::RD_KAFKA_MSG_F_COPY,
                messages.as_mut_ptr(),
                count,
            );
        }
    }
}

/// "Unassigned": the configured partitioner picks the partition from the key.
const RD_KAFKA_PARTITION_UA: i32 = -1;

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

    /// Enqueues the records in librdkafka in one call. A full queue is waited on (up to
    /// [`QUEUE_FULL_WAIT`], the poller serving delivery reports meanwhile) and the rest enqueued
    /// again; any other refusal of the remaining records fails the write, and the runner
    /// retries them from its buffer. A record refused on its own while later ones were taken
    /// (a message too large, say) cannot be retried in order: it is counted as failed and
    /// logged.
    fn write(&mut self, batch: &EncodedBatch, from: usize) -> Result<(), SinkFailure> {
        self.fill_keys(batch, from);
        let received_ns = batch.received_ns() as usize as *mut c_void;
        let mut messages: Vec<rdsys::rd_kafka_message_t> = batch
            .payloads_from(from)
            .zip(&self.key_spans)
            .map(|(payload, span)| {
                let (key, key_len) = match span {
                    Some((at, len)) => (self.keys[*at..].as_ptr() as *mut c_void, *len),
                    None => (std::ptr::null_mut(), 0),
                };
                rdsys::rd_kafka_message_t {
                    err: rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                    rkt: std::ptr::null_mut(),
                    partition: RD_KAFKA_PARTITION_UA,
                    payload: payload.as_ptr() as *mut c_void,
                    len: payload.len(),
                    key,
                    key_len,
                    offset: 0,
                    _private: received_ns,
                }
            })
            .collect();
        // Counted before the hand-over: delivery reports may come at once.
        self.stats.handed_over(messages.len());
        let mut at = 0;
        let mut waited = Duration::ZERO;
        while at < messages.len() {
            self.produce(&mut messages[at..]);
            let taken = |m: &rdsys::rd_kafka_message_t| {
                m.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            };
            // Records up to the last one taken are in librdkafka's hands (or failed alone).
            let Some(last) = messages[at..].iter().rposition(taken) else {
                let refused = &messages[at];
                let queue_full =
                    refused.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__QUEUE_FULL;
                if queue_full && waited < QUEUE_FULL_WAIT {
                    std::thread::sleep(Duration::from_millis(5));
                    waited += Duration::from_millis(5);
                    continue;
                }
                self.stats.taken_back(messages.len() - at);
                return Err(SinkFailure {
                    written: at,
                    error: std::io::Error::other(format!(
                        "kafka: {} ({} records awaiting acknowledgement)",
                        KafkaError::MessageProduction(refused.err.into()),
                        self.producer.in_flight_count()
                    )),
                });
            };
            for m in messages[at..at + last].iter().filter(|m| !taken(m)) {
                self.stats
                    .rejected(1, &KafkaError::MessageProduction(m.err.into()));
            }
            at += last + 1;
            waited = Duration::ZERO;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink whose brokers are never reached: librdkafka still enqueues (and refuses) records.
    fn sink(extra: &[(&str, &str)]) -> (KafkaSink, Arc<OutputStats>) {
        let mut config = KafkaConfig::to(vec!["127.0.0.1:9".into()], "flows".into());
        for (k, v) in extra {
            config.librdkafka.insert((*k).into(), (*v).into());
        }
        let stats = Arc::new(OutputStats::new("0-kafka".into(), 1000));
        let sink = KafkaSink::new(&config, stats.clone(), Duration::from_millis(10)).unwrap();
        (sink, stats)
    }

    fn lines(sizes: &[usize]) -> EncodedBatch {
        let mut b = EncodedBatch::new();
        for &n in sizes {
            b.push_line(&vec![b'x'; n]);
        }
        b
    }

    #[test]
    fn a_record_refused_alone_is_failed_and_counted_while_the_others_go() {
        // librdkafka refuses a message over message.max.bytes as it is produced.
        let (mut sink, stats) = sink(&[("message.max.bytes", "1000")]);
        sink.write(&lines(&[10, 5000, 10]), 0).unwrap();
        assert_eq!(stats.failed_records(), 1);
        // (librdkafka's own queue length also counts its events, such as the broker's
        // connection errors here, so it is not compared.)
        assert_eq!(stats.in_flight(), 2);
        // From an offset: only the records after it.
        sink.write(&lines(&[10, 5000, 10, 10]), 2).unwrap();
        assert_eq!((stats.failed_records(), stats.in_flight()), (1, 4));
    }

    #[test]
    fn a_full_queue_is_waited_on_then_fails_after_the_records_taken() {
        let (mut sink, stats) = sink(&[("queue.buffering.max.messages", "3")]);
        let started = std::time::Instant::now();
        let failure = sink.write(&lines(&[10; 5]), 0).unwrap_err();
        assert!(started.elapsed() >= QUEUE_FULL_WAIT);
        assert_eq!(failure.written, 3);
        assert!(
            failure.error.to_string().contains("Queue full"),
            "{}",
            failure.error
        );
        // The runner retries the rest later; what was taken stays in flight, nothing failed.
        assert_eq!((stats.in_flight(), stats.failed_records()), (3, 0));
        let failure = sink.write(&lines(&[10; 5]), 3).unwrap_err();
        assert_eq!((failure.written, stats.in_flight()), (0, 3));
    }
}
