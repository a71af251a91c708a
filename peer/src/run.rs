//! Start-up wiring: binds the sockets and the metrics listener, then starts outputs, shards,
//! receive threads, the metrics endpoint and the heartbeat sampler, and stops them again front
//! to back. The stages themselves live in [`crate::ingest`], [`crate::pipeline`] and
//! [`crate::output`]; nothing there imports this module.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::ValidConfig;
use crate::ingest::{BindError, Ingest};
use crate::metrics::{self, Metrics};
use crate::output::OutputSet;
use crate::output::runner::OutputError;
use crate::pipeline::{Backpressure, Shards, TemplateControl};
use crate::shutdown::{Shutdown, join_all};

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

/// While a shard's queue is full, a receive thread keeps up to this many `recvmmsg` batches
/// worth of its datagrams pending before dropping them.
const HOLD_BATCHES: usize = 4;

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
    pub fn start(
        config: &ValidConfig,
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
        config: &ValidConfig,
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
            templates: shards.control().clone(),
            shutdown: shutdown.clone(),
            receivers,
            shards: shards.into_threads(),
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
