//! The controller's bookkeeping beside the model: moves waiting for templates, the template
//! store, the requests queued for peers, the sampler's last counts ([`Traffic`]) and the event
//! counters ([`Counters`]). Plain data; the `traffic` and `views` methods of the controller
//! work on it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use sluice_common::protocol::Templates;

/// Templates Central asks a peer to install before an exporter moves to it.
#[derive(Clone, Debug, PartialEq)]
pub struct InstallRequest {
    /// Echoed by the peer's acknowledgement ([`Controller::templates_installed`](super::Controller::templates_installed)).
    pub request_id: u64,
    /// Destination peer id.
    pub peer_id: u32,
    /// Destination peer name.
    pub peer: String,
    /// The exporter's template state, one entry per observation domain.
    pub templates: Vec<Templates>,
}

/// Central asks an exporter's current peer for its whole template state before moving the
/// exporter away; the answer ([`Controller::templates_synced`](super::Controller::templates_synced)) starts the installation.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncRequest {
    /// Echoed by the peer's answer.
    pub request_id: u64,
    /// The exporter's current peer id.
    pub peer_id: u32,
    /// Its name.
    pub peer: String,
    /// The exporter about to move.
    pub exporter: IpAddr,
}

/// A move waiting for template state: first from the current peer, then installed on `to`.
pub(super) struct Pending {
    pub(super) to: u32,
    pub(super) phase: Phase,
    pub(super) deadline: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the current peer `from` to report all it has (answer to `request_id`).
    Syncing { from: u32, request_id: u64 },
    /// Waiting for `to` to confirm the installation `request_id`.
    Installing { request_id: u64 },
}

/// The latest state each peer reported for one (exporter, observation domain), most recent
/// reporter last. Peers merge these by the exporter's own stamps when they install them, so
/// Central keeps every recent reporter's copy rather than guessing which one is newer.
pub(super) type Reports = Vec<(u32, Vec<u8>)>;

/// Sampler, template and move bookkeeping.
pub(super) struct Traffic {
    pub(super) templates: BTreeMap<(IpAddr, u32), Reports>,
    pub(super) pending: BTreeMap<IpAddr, Pending>,
    pub(super) outbox: Vec<InstallRequest>,
    pub(super) syncs: Vec<SyncRequest>,
    pub(super) next_request: u64,
    pub(super) last_sample: Option<Instant>,
    pub(super) counts: BTreeMap<IpAddr, (u64, u64)>,
    pub(super) last_rebalance: Instant,
}

impl Traffic {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            templates: BTreeMap::new(),
            pending: BTreeMap::new(),
            outbox: Vec::new(),
            syncs: Vec::new(),
            next_request: 1,
            last_sample: None,
            counts: BTreeMap::new(),
            last_rebalance: now,
        }
    }

    pub(super) fn pending_installs(&self) -> usize {
        self.pending.len()
    }

    /// Drops moves in progress and queued requests (the model is being replaced); the
    /// template store stays.
    pub(super) fn forget_moves(&mut self) {
        self.pending.clear();
        self.outbox.clear();
        self.syncs.clear();
    }

    pub(super) fn restart_interval(&mut self, now: Instant) {
        self.last_rebalance = now;
    }
}

/// Event counters since start.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counters {
    pub(super) rebalances: u64,
    pub(super) failovers: u64,
    pub(super) moves: u64,
    pub(super) templates_forwarded: u64,
}
