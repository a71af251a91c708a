//! Template hand-over: Central asks the shard that owns an exporter for its templates, or
//! installs templates there before moving the exporter to this peer. Requests travel on a small
//! per-shard channel, so decoders stay single-owner and lock-free.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::router::shard_for;
use crate::decode::{DecodeError, TemplateSnapshot};

/// How long a caller waits for the shard's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests a shard thread serves between batches.
#[derive(Debug)]
pub enum ShardRequest {
    Export {
        exporter: IpAddr,
        reply: Sender<Vec<TemplateSnapshot>>,
    },
    Import {
        exporter: IpAddr,
        templates: Vec<TemplateSnapshot>,
        reply: Sender<Result<(), DecodeError>>,
    },
    /// [`crate::decode::ShardDecoder::take_changed_templates`].
    Changed {
        reply: Sender<Vec<(IpAddr, Vec<TemplateSnapshot>)>>,
    },
}

/// Why a template request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("templates rejected")]
    Rejected(#[from] DecodeError),
    #[error("the pipeline is shutting down")]
    Stopped,
    #[error("the shard is busy; try again")]
    Busy,
    #[error("no answer from the shard within {0:?}")]
    Timeout(Duration),
}

/// Cloneable handle to every shard's request channel.
#[derive(Debug, Clone)]
pub struct TemplateControl {
    shards: Vec<Sender<ShardRequest>>,
    changes: Receiver<()>,
}

impl TemplateControl {
    pub(super) fn new(shards: Vec<Sender<ShardRequest>>, changes: Receiver<()>) -> Self {
        TemplateControl { shards, changes }
    }

    /// Ready after a shard decoded templates or options data (changed or refreshed) since the
    /// last receive: the moment to call [`Self::changed`].
    pub fn changes(&self) -> &Receiver<()> {
        &self.changes
    }

    /// The templates and sampling state the peer has learned from `exporter`.
    pub fn export(&self, exporter: IpAddr) -> Result<Vec<TemplateSnapshot>, ControlError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.ask(exporter, ShardRequest::Export { exporter, reply })?;
        answer
            .recv_timeout(REPLY_TIMEOUT)
            .map_err(|_| ControlError::Timeout(REPLY_TIMEOUT))
    }

    /// Installs templates learned elsewhere for `exporter` (all or nothing).
    pub fn import(
        &self,
        exporter: IpAddr,
        templates: Vec<TemplateSnapshot>,
    ) -> Result<(), ControlError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.ask(
            exporter,
            ShardRequest::Import {
                exporter,
                templates,
                reply,
            },
        )?;
        Ok(answer
            .recv_timeout(REPLY_TIMEOUT)
            .map_err(|_| ControlError::Timeout(REPLY_TIMEOUT))??)
    }

    /// The template state of every exporter whose templates or sampling changed since the
    /// last call, from all shards. A shard whose request queue is full keeps its changes for
    /// the next call.
    pub fn changed(&self) -> Result<Vec<(IpAddr, Vec<TemplateSnapshot>)>, ControlError> {
        let (reply, answers) = crossbeam_channel::bounded(self.shards.len());
        let mut asked = 0;
        for shard in &self.shards {
            match shard.try_send(ShardRequest::Changed {
                reply: reply.clone(),
            }) {
                Ok(()) => asked += 1,
                Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => return Err(ControlError::Stopped),
            }
        }
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut changed = Vec::new();
        for _ in 0..asked {
            let answer = answers
                .recv_deadline(deadline)
                .map_err(|_| ControlError::Timeout(REPLY_TIMEOUT))?;
            changed.extend(answer);
        }
        Ok(changed)
    }

    fn ask(&self, exporter: IpAddr, request: ShardRequest) -> Result<(), ControlError> {
        let exporter = exporter.to_canonical();
        let shard = &self.shards[shard_for(exporter, self.shards.len())];
        shard.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => ControlError::Busy,
            TrySendError::Disconnected(_) => ControlError::Stopped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::router::Backpressure;
    use super::super::shards::Shards;
    use crate::config::PipelineConfig;
    use crate::flowgen::{Encoder, EncoderConfig, FlowSynth, Protocol};
    use crate::metrics::Metrics;
    use crate::output::OutputSet;
    use crate::shutdown::Shutdown;
    use std::net::IpAddr;
    use std::time::Duration;

    #[test]
    fn templates_learned_by_one_exporter_can_be_moved_to_another() {
        let metrics = Metrics::new();
        let set = OutputSet::start(&[], &metrics, &Shutdown::new(), Duration::ZERO).unwrap();
        let config = PipelineConfig {
            shards: 4,
            ..PipelineConfig::default()
        };
        let shards = Shards::start(&config, &set.fanout, &metrics).unwrap();
        let mut router = shards.router(Backpressure::Block, &metrics);
        let (a, b): (IpAddr, IpAddr) =
            ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        let mut encoder = Encoder::new(Protocol::Ipfix, EncoderConfig::default());
        let flows = vec![FlowSynth::new(1, Protocol::Ipfix).flow(1_000_000_000)];
        let mut datagram = Vec::new();
        encoder.encode(&flows, 1_000_000_000, &mut datagram);
        router.push(a, 1, &datagram);
        router.flush();

        let control = shards.control().clone();
        let mut learned = Vec::new();
        for _ in 0..100 {
            learned = control.export(a).unwrap();
            if !learned.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!learned.is_empty(), "no templates learned");
        assert!(control.export(b).unwrap().is_empty());
        control.import(b, learned.clone()).unwrap();
        assert_eq!(control.export(b).unwrap(), learned);
    }
}
