//! The data path: ingest → [`Router`] → shards ([`ShardDecoder`] per thread) → outputs.
//!
//! Threads and queues (all bounded):
//! - one receive thread per socket batches datagrams per shard and `try_send`s each batch; a
//!   full shard queue drops the batch and counts it per exporter (`queue_full`);
//! - one thread per shard decodes, encodes JSON once and hands the batch to every output
//!   through [`Fanout`] (never blocking: an output without room counts overflow);
//! - one thread per output writes, retrying failures from its buffer.
//!
//! Shutdown runs front to back: receive threads stop and drop their senders, shards drain
//! their queues and drop theirs, outputs drain their buffers and flush.
//!
//! [`ShardDecoder`]: crate::decode::ShardDecoder

mod batch;
mod control;
mod replay;
mod router;
mod shard;
mod shutdown;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

pub use batch::{Datagram, DatagramBatch};
pub use control::{ControlError, ShardRequest, TemplateControl};
pub use replay::{ReplayReport, replay};
pub use router::{Backpressure, Router, shard_for};
pub use shutdown::Shutdown;

use crate::config::{PeerConfig, PipelineConfig};
use crate::decode::{DecoderConfig, ShardDecoder};
use crate::ingest::{BindError, Ingest};
use crate::metrics::{self, Metrics};
use crate::output::runner::OutputError;
use crate::output::{Fanout, OutputSet};
use crate::record::pb::PbEncoder;

/// Why the peer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start a thread")]
    Spawn(#[from] std::io::Error),
}

/// Nanoseconds since the Unix epoch (the records' time base).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// While a shard's queue is full, a receive thread keeps up to this many `recvmmsg` batches
/// worth of its datagrams pending before dropping them.
const HOLD_BATCHES: usize = 4;

/// Template requests waiting per shard before callers get [`ControlError::Busy`].
const CONTROL_QUEUE: usize = 16;

/// Shard threads and the channels that feed them.
struct Shards {
    senders: Vec<Sender<DatagramBatch>>,
    /// Emptied batches on their way back to the routers.
    pool: Receiver<DatagramBatch>,
    threads: Vec<JoinHandle<()>>,
    control: TemplateControl,
}

impl Shards {
    fn start(
        config: &PipelineConfig,
        fanout: &Fanout,
        metrics: &Arc<Metrics>,
    ) -> std::io::Result<Self> {
        metrics.register_shards(config.shards);
        let (recycle, pool) = crossbeam_channel::bounded(config.shards * config.queue_depth);
        let decoder_config = DecoderConfig {
            apply_sampling: config.apply_sampling,
            ..DecoderConfig::default()
        };
        let mut senders = Vec::with_capacity(config.shards);
        let mut threads = Vec::with_capacity(config.shards);
        let mut control = Vec::with_capacity(config.shards);
        let (doorbell, changes) = crossbeam_channel::bounded(1);
        for index in 0..config.shards {
            let (tx, rx) = crossbeam_channel::bounded(config.queue_depth);
            let (request_tx, requests) = crossbeam_channel::bounded(CONTROL_QUEUE);
            control.push(request_tx);
            let shard = shard::Shard {
                index,
                decoder: ShardDecoder::new(decoder_config.clone()),
                rx,
                requests,
                recycle: recycle.clone(),
                fanout: fanout.clone(),
                metrics: metrics.clone(),
                expire_every: Duration::from_millis(config.expire_interval_ms),
                doorbell: doorbell.clone(),
                formats: fanout.formats(),
                pb: PbEncoder::default(),
            };
            senders.push(tx);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("shard-{index}"))
                    .spawn(move || shard.run())?,
            );
        }
        Ok(Shards {
            senders,
            pool,
            threads,
            control: TemplateControl::new(control, changes),
        })
    }

    fn router(&self, backpressure: Backpressure, metrics: &Arc<Metrics>) -> Router {
        Router::new(
            self.senders.clone(),
            self.pool.clone(),
            backpressure,
            metrics.clone(),
        )
    }
}

/// A running peer (standalone data path plus metrics).
pub struct Running {
    listen: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    templates: TemplateControl,
    shutdown: Shutdown,
    receivers: Vec<JoinHandle<()>>,
    shards: Vec<JoinHandle<()>>,
    outputs: Vec<JoinHandle<()>>,
    services: Vec<JoinHandle<()>>,
}

impl Running {
    /// Binds everything first (so a bad address fails before any thread starts), then starts
    /// outputs, shards, receive threads, the metrics endpoint and the heartbeat sampler.
    /// `config` must be validated.
    pub fn start(
        config: &PeerConfig,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> Result<Self, StartError> {
        let ingest = Ingest::bind(&config.ingest, &metrics)?;
        let metrics_listener = config
            .metrics
            .listen
            .map(|addr| {
                TcpListener::bind(addr).map_err(|source| StartError::Metrics { addr, source })
            })
            .transpose()?;
        let started = Self::spawn(config, ingest, metrics_listener, metrics, &shutdown);
        if started.is_err() {
            // Threads that did start stop again.
            shutdown.trigger();
        }
        started
    }

    fn spawn(
        config: &PeerConfig,
        ingest: Ingest,
        metrics_listener: Option<TcpListener>,
        metrics: Arc<Metrics>,
        shutdown: &Shutdown,
    ) -> Result<Self, StartError> {
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        let drain = Duration::from_millis(config.pipeline.drain_timeout_ms);
        let outputs = OutputSet::start(&config.effective_outputs(), &metrics, shutdown, drain)?;
        let shards = Shards::start(&config.pipeline, &outputs.fanout, &metrics)?;
        drop(outputs.fanout);
        let listen = ingest.local_addrs().to_vec();
        let receivers = ingest.start(
            || {
                let hold = HOLD_BATCHES * config.ingest.batch_size;
                shards.router(Backpressure::Drop { hold }, &metrics)
            },
            &metrics,
            shutdown,
        )?;

        let mut services = vec![metrics.spawn_sampler(shutdown.clone())?];
        if let Some(listener) = metrics_listener {
            services.push(metrics::serve(listener, metrics.clone(), shutdown.clone())?);
        }
        Ok(Running {
            listen,
            metrics_addr,
            metrics,
            templates: shards.control,
            shutdown: shutdown.clone(),
            receivers,
            shards: shards.threads,
            outputs: outputs.threads,
            services,
        })
    }

    /// Bound UDP addresses (ephemeral ports resolved).
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Where `/metrics` is served, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Template export/import for Central's zero-loss exporter moves.
    pub fn templates(&self) -> &TemplateControl {
        &self.templates
    }

    /// Blocks until shutdown is triggered, then stops ingest, drains the shards and flushes the
    /// outputs, in that order.
    pub fn wait(self) {
        while !self.shutdown.sleep(Duration::from_secs(3600)) {}
        tracing::info!("shutting down: stopping ingest");
        join_all("receive", self.receivers);
        tracing::info!("draining decoder shards");
        join_all("shard", self.shards);
        tracing::info!("flushing outputs");
        join_all("output", self.outputs);
        join_all("service", self.services);
    }
}

fn join_all(what: &str, threads: Vec<JoinHandle<()>>) {
    for t in threads {
        if t.join().is_err() {
            tracing::error!(thread = what, "thread panicked");
        }
    }
}
