use std::ffi::{CStr, CString, c_void};
use std::fmt::Write as _;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::bindings as rdsys;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext, PurgeConfig};

use super::config::KafkaConfig;
use crate::clock::now_ns;
use crate::metrics::{LatencyTally, LogLimiter, OutputStats};
use crate::output::batch::EncodedBatch;
use crate::output::sink::{Sink, SinkFailure};

/// How long the start-up check waits for the brokers' metadata.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a full librdkafka queue is polled before the write fails (and the runner retries
/// from its buffer with backoff).
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(100);
/// How long the delivery thread waits for an event before it looks at its stop flag.
const POLL_MS: i32 = 100;

/// Delivery reports: a record counts as sent when the broker acknowledged it, as failed when
/// librdkafka gave up on it, as dropped at shutdown when purged. The [`Poller`] counts them an
/// event (a produce response: often thousands of records) at a time; this per-record path
/// serves the reports librdkafka hands out while the producer is flushed or dropped.
pub struct Delivery {
    stats: Arc<OutputStats>,
    client_errors: LogLimiter,
    /// Client errors not logged since the last one that was.
    unlogged_errors: AtomicU64,
}

impl ClientContext for Delivery {
    /// librdkafka's client errors: an unreachable broker gives one per connection attempt,
    /// dozens a second, so they are logged at most once per period, with how many were not.
    fn error(&self, error: KafkaError, reason: &str) {
        if self.client_errors.allow() {
            let unlogged = self.unlogged_errors.swap(0, Relaxed);
            tracing::error!(
                output = %self.stats.name,
                %error,
                reason,
                unlogged_since_last = unlogged,
                "librdkafka client error"
            );
        } else {
            self.unlogged_errors.fetch_add(1, Relaxed);
        }
    }
}

impl ProducerContext for Delivery {
    /// When the record's datagram was received (ns since the epoch), for the latency histogram.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, received_ns: usize) {
        let mut tally = Tally::default();
        let error = match result {
            Ok(_) => RDKafkaErrorCode::NoError,
            Err((KafkaError::MessageProduction(code), _)) => *code,
            Err((error, _)) => {
                self.stats.rejected(1, error);
                return;
            }
        };
        tally.count(&self.stats, error, received_ns as u64, now_ns());
        tally.publish(&self.stats);
    }
}

/// Delivery reports gathered before they are added to the output's counters.
#[derive(Default)]
struct Tally {
    acknowledged: usize,
    purged: usize,
    latency: LatencyTally,
}

impl Tally {
    /// One record's report; `now_ns`: when it came. Rejections are counted (and logged) at once.
    fn count(
        &mut self,
        stats: &OutputStats,
        error: RDKafkaErrorCode,
        received_ns: u64,
        now_ns: u64,
    ) {
        match error {
            RDKafkaErrorCode::NoError => {
                self.acknowledged += 1;
                if received_ns > 0 {
                    self.latency.observe(now_ns.saturating_sub(received_ns));
                }
            }
            RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight => self.purged += 1,
            code => stats.rejected(1, &KafkaError::MessageProduction(code)),
        }
    }

    fn publish(&self, stats: &OutputStats) {
        if self.acknowledged > 0 {
            stats.acknowledged(self.acknowledged, &self.latency);
        }
        if self.purged > 0 {
            stats.purged(self.purged);
        }
    }
}

/// The thread serving the producer's events: delivery reports, counted a whole event at a
/// time (one clock reading, one update of the counters); librdkafka's log lines, statistics
/// and client errors, passed to the context as rdkafka's own poll loop would.
struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    fn start(producer: Arc<BaseProducer<Delivery>>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kafka-delivery".into())
            .spawn(move || {
                // SAFETY: the client lives as long as `producer`, which this thread holds; the
                // queue reference taken here is released below.
                let queue =
                    unsafe { rdsys::rd_kafka_queue_get_main(producer.client().native_ptr()) };
                let mut messages = Vec::new();
                while !stopped.load(Relaxed) {
                    // SAFETY: `queue` is a valid queue reference until destroyed below.
                    let event = unsafe { rdsys::rd_kafka_queue_poll(queue, POLL_MS) };
                    if let Some(event) = NonNull::new(event) {
                        serve(&producer, event, &mut messages);
                        // SAFETY: returned by rd_kafka_queue_poll, destroyed once, after use.
                        unsafe { rdsys::rd_kafka_event_destroy(event.as_ptr()) };
                    }
                }
                // SAFETY: taken above, released once.
                unsafe { rdsys::rd_kafka_queue_destroy(queue) };
            })?;
        Ok(Poller {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A syslog level, as librdkafka gives it, as rdkafka's enum.
fn log_level(level: i32) -> RDKafkaLogLevel {
    match level {
        0 => RDKafkaLogLevel::Emerg,
        1 => RDKafkaLogLevel::Alert,
        2 => RDKafkaLogLevel::Critical,
        3 => RDKafkaLogLevel::Error,
        4 => RDKafkaLogLevel::Warning,
        5 => RDKafkaLogLevel::Notice,
        6 => RDKafkaLogLevel::Info,
        _ => RDKafkaLogLevel::Debug,
    }
}

/// One event of the producer's queue.
fn serve(
    producer: &BaseProducer<Delivery>,
    event: NonNull<rdsys::rd_kafka_event_t>,
    messages: &mut Vec<*const rdsys::rd_kafka_message_t>,
) {
    let event = event.as_ptr();
    let stats = &producer.context().stats;
    // SAFETY: `event` is a live event; the message array is filled up to its length and the
    // messages it points to live as long as the event.
    unsafe {
        match rdsys::rd_kafka_event_type(event) {
            rdsys::RD_KAFKA_EVENT_DR => {
                let count = rdsys::rd_kafka_event_message_count(event);
                messages.clear();
                messages.reserve(count);
                let n = rdsys::rd_kafka_event_message_array(event, messages.as_mut_ptr(), count);
                messages.set_len(n.min(count));
                let now = now_ns();
                let mut tally = Tally::default();
                for &m in messages.iter() {
                    let error = RDKafkaErrorCode::from((*m).err);
                    tally.count(stats, error, (*m)._private as u64, now);
                }
                tally.publish(stats);
            }
            rdsys::RD_KAFKA_EVENT_LOG => {
                // librdkafka's log lines come as events on this queue (rdkafka sets
                // `log.queue`); the context hands them to `tracing` as rdkafka's loop would.
                let (mut facility, mut text, mut level) = (std::ptr::null(), std::ptr::null(), 0);
                if rdsys::rd_kafka_event_log(event, &mut facility, &mut text, &mut level) == 0 {
                    producer.context().log(
                        log_level(level),
                        CStr::from_ptr(facility).to_string_lossy().trim(),
                        CStr::from_ptr(text).to_string_lossy().trim(),
                    );
                }
            }
            rdsys::RD_KAFKA_EVENT_STATS => {
                let json = CStr::from_ptr(rdsys::rd_kafka_event_stats(event));
                producer.context().stats_raw(json.to_bytes());
            }
            rdsys::RD_KAFKA_EVENT_ERROR => {
                let error = KafkaError::Global(rdsys::rd_kafka_event_error(event).into());
                let reason = CStr::from_ptr(rdsys::rd_kafka_event_error_string(event));
                producer
                    .context()
                    .error(error, reason.to_string_lossy().trim());
            }
            other => tracing::debug!(event = other, "kafka: event ignored"),
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
    fn new(producer: &BaseProducer<Delivery>, topic: &str) -> std::io::Result<Self> {
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
    /// Declared first: stopped (and joined) before the producer is dropped.
    _poller: Poller,
    /// Declared before `producer` so that it is dropped first.
    topic_handle: TopicHandle,
    producer: Arc<BaseProducer<Delivery>>,
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
            client_errors: LogLimiter::default(),
            unlogged_errors: AtomicU64::new(0),
        };
        let producer = BaseProducer::from_config_and_context(&client, delivery)
            .map(Arc::new)
            .map_err(|e| std::io::Error::other(format!("kafka producer: {e}")))?;
        Ok(KafkaSink {
            _poller: Poller::start(producer.clone())?,
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
    fn delivery_reports_count_once_published_with_the_latency_of_known_receive_times() {
        let metrics = crate::metrics::Metrics::new();
        let stats = metrics.register_output("0-kafka".into(), 100);
        stats.handed_over(4);
        let mut tally = Tally::default();
        tally.count(&stats, RDKafkaErrorCode::NoError, 1_000_000, 4_000_000);
        tally.count(&stats, RDKafkaErrorCode::NoError, 0, 4_000_000);
        tally.count(&stats, RDKafkaErrorCode::PurgeQueue, 1_000_000, 4_000_000);
        tally.count(&stats, RDKafkaErrorCode::MessageSizeTooLarge, 1, 4_000_000);
        // A rejection counts at once; the rest when the event is done.
        assert_eq!(
            (stats.failed_records(), stats.sent(), stats.in_flight()),
            (1, 0, 3)
        );
        tally.publish(&stats);
        assert_eq!(
            (stats.sent(), stats.in_flight(), stats.abandoned_total()),
            (2, 0, 1)
        );
        let text = metrics.render();
        for line in [
            // Only the record whose receive time is known, 3 ms before its report.
            "sluice_peer_output_latency_seconds_count{output=\"0-kafka\"} 1\n",
            "sluice_peer_output_latency_seconds_bucket{output=\"0-kafka\",le=\"0.0025\"} 0\n",
            "sluice_peer_output_latency_seconds_bucket{output=\"0-kafka\",le=\"0.005\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
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
