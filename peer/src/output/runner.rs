//! One thread per output behind a bounded buffer.
//!
//! Shards encode each batch once per encoding in use ([`Fanout::encodings`]) and call
//! [`Fanout::send`], which never blocks: it reserves room for the batch's records in
//! each output's buffer of that encoding (records that do not fit are counted as overflow; the newest ones of the
//! batch are kept) and queues a shared `Arc` with the number of lines to skip. The
//! output thread writes batches in order; a failed write is retried with exponential backoff
//! while new batches wait in the buffer. At shutdown (all shards gone) the thread drains its
//! buffer; a destination still failing after `drain_timeout` has its remaining records counted
//! and logged as dropped.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::batch::EncodedBatch;
use super::config::OutputConfig;
use super::format::Encoding;
use super::sink::Sink;
use crate::clock::now_ns;
use crate::metrics::{Metrics, OutputStats};
use crate::shutdown::Shutdown;

/// First retry delay after a failed write; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Batches an output queues at most (the channel preallocates its slots).
const MAX_QUEUED_BATCHES: usize = 1 << 16;
/// Idle outputs get a `tick` this often (time-based rotation).
const TICK: Duration = Duration::from_millis(500);

/// Why outputs could not start.
#[derive(Debug, thiserror::Error)]
#[error("output {name}")]
pub struct OutputError {
    pub name: String,
    pub source: std::io::Error,
}

/// A batch as one output sees it: its first `skip` lines did not fit the buffer.
struct Queued {
    batch: Arc<EncodedBatch>,
    skip: usize,
}

impl Queued {
    fn records(&self) -> usize {
        self.batch.len() - self.skip
    }
}

struct Route {
    encoding: Encoding,
    tx: Sender<Queued>,
    stats: Arc<OutputStats>,
}

/// The shards' side of all outputs; cheap to clone, one per shard.
#[derive(Clone)]
pub struct Fanout {
    routes: Arc<[Route]>,
}

impl Fanout {
    fn new(routes: Vec<Route>) -> Self {
        Fanout {
            routes: routes.into(),
        }
    }

    /// True when there are no outputs (records need not be encoded).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The encodings the outputs use, each once, in the outputs' order: encode every batch in
    /// each of them.
    pub fn encodings(&self) -> Vec<Encoding> {
        let mut encodings: Vec<Encoding> = Vec::new();
        for route in self.routes.iter() {
            if !encodings.contains(&route.encoding) {
                encodings.push(route.encoding.clone());
            }
        }
        encodings
    }

    /// Hands each of `batches` (one per encoding, see [`Fanout::encodings`]) to every output of
    /// its encoding without blocking.
    pub fn send_all(&self, batches: Vec<EncodedBatch>) {
        for batch in batches {
            self.send(batch);
        }
    }

    /// Hands `batch` to every output of its encoding without blocking.
    pub fn send(&self, batch: EncodedBatch) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        let batch = Arc::new(batch);
        for route in self
            .routes
            .iter()
            .filter(|r| &r.encoding == batch.encoding())
        {
            let granted = route.stats.reserve(n);
            if granted == 0 {
                continue;
            }
            let queued = Queued {
                batch: batch.clone(),
                skip: n - granted,
            };
            // The record reservation is the real bound. The channel holds `capacity` batches
            // (up to MAX_QUEUED_BATCHES), so it fills first only with very many tiny batches;
            // it is disconnected only if the output thread died. Either way: overflow.
            if let Err(TrySendError::Full(q) | TrySendError::Disconnected(q)) =
                route.tx.try_send(queued)
            {
                route.stats.release(q.records());
                route.stats.overflowed(q.records());
            }
        }
    }
}

/// Running outputs: the [`Fanout`] for the shards and the threads to join.
pub struct OutputSet {
    pub fanout: Fanout,
    pub threads: Vec<JoinHandle<()>>,
}

impl OutputSet {
    /// Builds every sink (a build error stops the start), runs its health check (a failure is
    /// logged; records are buffered until it recovers) and starts its thread.
    pub fn start(
        configs: &[OutputConfig],
        metrics: &Metrics,
        shutdown: &Shutdown,
        drain_timeout: Duration,
    ) -> Result<Self, OutputError> {
        let mut routes = Vec::with_capacity(configs.len());
        let mut threads = Vec::with_capacity(configs.len());
        for (i, config) in configs.iter().enumerate() {
            let name = format!("{i}-{}", config.kind());
            let err = |source| OutputError {
                name: name.clone(),
                source,
            };
            let capacity = config.buffer_records();
            let stats = metrics.register_output(name.clone(), capacity);
            let sink = config.build(&stats, drain_timeout).map_err(err)?;
            let (tx, rx) = crossbeam_channel::bounded(capacity.min(MAX_QUEUED_BATCHES));
            let worker = Worker {
                sink,
                rx,
                stats: stats.clone(),
                shutdown: shutdown.clone(),
                drain_timeout,
                give_up_at: None,
            };
            let thread = std::thread::Builder::new()
                .name(format!("output-{name}"))
                .spawn(move || worker.run())
                .map_err(err)?;
            threads.push(thread);
            routes.push(Route {
                encoding: config.encoding(),
                tx,
                stats,
            });
        }
        Ok(OutputSet {
            fanout: Fanout::new(routes),
            threads,
        })
    }
}

struct Worker {
    sink: Box<dyn Sink>,
    rx: Receiver<Queued>,
    stats: Arc<OutputStats>,
    shutdown: Shutdown,
    drain_timeout: Duration,
    /// Set once shutdown is seen: failing writes stop being retried after this.
    give_up_at: Option<Instant>,
}

impl Worker {
    fn run(mut self) {
        if let Err(error) = self.sink.healthcheck() {
            self.stats.mark_down();
            tracing::warn!(
                output = %self.stats.name,
                %error,
                "output health check failed; records are buffered and retried"
            );
        }
        loop {
            match self.rx.recv_timeout(TICK) {
                Ok(queued) => {
                    self.deliver(&queued.batch, queued.skip);
                    self.stats.release(queued.records());
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(error) = self.sink.tick() {
                        self.stats.failed(&error, TICK);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Err(error) = self.sink.flush() {
            tracing::error!(output = %self.stats.name, %error, "output flush at shutdown failed");
        }
        let abandoned = self.stats.abandoned_total();
        if abandoned > 0 {
            tracing::error!(
                output = %self.stats.name,
                records = abandoned,
                "output stopped with records it could not deliver"
            );
        }
    }

    /// Writes `batch` from line `skip` on, retrying failures with backoff, until written or
    /// given up at shutdown.
    fn deliver(&mut self, batch: &EncodedBatch, skip: usize) {
        let mut done = skip;
        let mut backoff = FIRST_BACKOFF;
        loop {
            // A sink that acknowledges counts sent records (and their latency) itself.
            let acknowledges = self.sink.acknowledges();
            match self.sink.write(batch, done) {
                Ok(()) => {
                    if !acknowledges {
                        if batch.received_ns() > 0 {
                            let latency = now_ns().saturating_sub(batch.received_ns());
                            self.stats.observe_latency(latency, batch.len() - skip);
                        }
                        self.stats.written(batch.len() - done);
                        self.stats.succeeded();
                    }
                    return;
                }
                Err(failure) => {
                    done += failure.written;
                    if !acknowledges {
                        self.stats.written(failure.written);
                    }
                    let Some(wait) = self.retry_wait(backoff) else {
                        self.stats.abandoned(batch.len() - done);
                        return;
                    };
                    self.stats.failed(&failure.error, wait);
                    // Before shutdown, a shutdown wakes us to start draining at once; after it,
                    // `Shutdown::sleep` no longer waits, so sleep plainly.
                    if self.shutdown.is_triggered() {
                        std::thread::sleep(wait);
                    } else {
                        self.shutdown.sleep(wait);
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// How long to wait before the next attempt; `None` once shutdown's drain time is over.
    fn retry_wait(&mut self, backoff: Duration) -> Option<Duration> {
        if !self.shutdown.is_triggered() {
            return Some(backoff);
        }
        let give_up_at = *self
            .give_up_at
            .get_or_insert_with(|| Instant::now() + self.drain_timeout);
        let left = give_up_at.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| backoff.min(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::format::Format;
    use std::sync::Mutex;

    /// Fails its first `failures` writes after writing one line each time, then succeeds.
    struct Flaky {
        failures: usize,
        lines: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl Sink for Flaky {
        fn write(
            &mut self,
            batch: &EncodedBatch,
            from: usize,
        ) -> Result<(), super::super::sink::SinkFailure> {
            let mut lines = self.lines.lock().unwrap();
            if self.failures > 0 {
                self.failures -= 1;
                if let Some(line) = batch.payloads_from(from).next() {
                    lines.push(line.to_vec());
                    return Err(super::super::sink::SinkFailure {
                        written: 1,
                        error: std::io::Error::other("down"),
                    });
                }
            }
            lines.extend(batch.payloads_from(from).map(<[u8]>::to_vec));
            Ok(())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn batch(range: std::ops::Range<usize>) -> EncodedBatch {
        let mut b = EncodedBatch::new();
        for i in range {
            b.push_line(i.to_string().as_bytes());
        }
        b
    }

    #[test]
    fn partial_failures_resume_without_loss_or_duplicates() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let metrics = Metrics::new();
        let stats = metrics.register_output("t".into(), 100);
        let (tx, rx) = crossbeam_channel::bounded(100);
        let worker = Worker {
            sink: Box::new(Flaky {
                failures: 3,
                lines: lines.clone(),
            }),
            rx,
            stats: stats.clone(),
            shutdown: Shutdown::new(),
            drain_timeout: Duration::from_secs(1),
            give_up_at: None,
        };
        let fanout = Fanout::new(vec![Route {
            encoding: Format::Json.into(),
            tx,
            stats: stats.clone(),
        }]);
        fanout.send(batch(0..5));
        fanout.send(batch(5..8));
        drop(fanout);
        worker.run();
        let got: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| String::from_utf8(l.clone()).unwrap())
            .collect();
        let want: Vec<String> = (0..8).map(|i| i.to_string()).collect();
        assert_eq!(got, want);
        assert_eq!(stats.sent(), 8);
        assert_eq!(stats.buffered(), 0);
    }

    /// Never succeeds.
    struct Down;

    impl Sink for Down {
        fn write(
            &mut self,
            _: &EncodedBatch,
            _: usize,
        ) -> Result<(), super::super::sink::SinkFailure> {
            Err(super::super::sink::SinkFailure {
                written: 0,
                error: std::io::Error::other("down"),
            })
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn shutdown_gives_up_on_a_dead_output_after_the_drain_timeout_and_counts() {
        let metrics = Metrics::new();
        let stats = metrics.register_output("t".into(), 100);
        let (tx, rx) = crossbeam_channel::bounded(100);
        let shutdown = Shutdown::new();
        let worker = Worker {
            sink: Box::new(Down),
            rx,
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            drain_timeout: Duration::from_millis(200),
            give_up_at: None,
        };
        let fanout = Fanout::new(vec![Route {
            encoding: Format::Json.into(),
            tx,
            stats: stats.clone(),
        }]);
        fanout.send(batch(0..5));
        fanout.send(batch(5..8));
        drop(fanout);
        shutdown.trigger();
        let started = Instant::now();
        worker.run();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert_eq!(stats.abandoned_total(), 8);
        assert_eq!(stats.buffered(), 0);
        assert_eq!(metrics.total_drops(), 8);
    }

    #[test]
    fn overflow_is_counted_not_blocking() {
        let metrics = Metrics::new();
        let stats = metrics.register_output("t".into(), 4);
        let (tx, rx) = crossbeam_channel::bounded(4);
        let fanout = Fanout::new(vec![Route {
            encoding: Format::Json.into(),
            tx,
            stats: stats.clone(),
        }]);
        fanout.send(batch(0..3));
        fanout.send(batch(3..6));
        fanout.send(batch(6..7));
        assert_eq!(stats.buffered(), 4);
        assert_eq!(stats.overflow(), 3);
        assert_eq!(rx.len(), 2);
    }
}
