//! Starting the decoder shards: one thread per shard and the bounded channels that feed them.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::batch::DatagramBatch;
use super::control::TemplateControl;
use super::router::{Backpressure, Router};
use super::shard::{POOLED_BATCHES, Shard};
use crate::config::PipelineConfig;
use crate::decode::{DecoderConfig, ShardDecoder};
use crate::metrics::Metrics;
use crate::output::{BatchPool, Fanout};

/// Template requests waiting per shard before callers get [`super::ControlError::Busy`].
const CONTROL_QUEUE: usize = 16;

/// Shard threads and the channels that feed them.
pub(crate) struct Shards {
    senders: Vec<Sender<DatagramBatch>>,
    /// Emptied batches on their way back to the routers.
    pool: Receiver<DatagramBatch>,
    threads: Vec<JoinHandle<()>>,
    control: TemplateControl,
}

impl Shards {
    /// Starts `config.shards` shard threads writing to `fanout`.
    pub fn start(
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
            let shard = Shard {
                index,
                decoder: ShardDecoder::new(decoder_config.clone()),
                rx,
                requests,
                recycle: recycle.clone(),
                fanout: fanout.clone(),
                metrics: metrics.clone(),
                expire_every: Duration::from_millis(config.expire_interval_ms),
                doorbell: doorbell.clone(),
                encodings: fanout.encodings(),
                batches: BatchPool::new(POOLED_BATCHES),
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

    /// A router feeding these shards (one per receive thread).
    pub fn router(&self, backpressure: Backpressure, metrics: &Arc<Metrics>) -> Router {
        Router::new(
            self.senders.clone(),
            self.pool.clone(),
            backpressure,
            metrics.clone(),
        )
    }

    /// Template export/import on these shards.
    pub fn control(&self) -> &TemplateControl {
        &self.control
    }

    /// Drops this side of the channels and hands back the shard threads: they drain their
    /// queues and stop once every router is gone too.
    pub fn into_threads(self) -> Vec<JoinHandle<()>> {
        self.threads
    }
}
