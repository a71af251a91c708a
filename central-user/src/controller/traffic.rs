//! Traffic: the rate sampler, new-exporter events, exporter moves (templates first), template
//! bookkeeping, rebalancing and the periodic tick.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_common::hash::table_slot;
use sluice_common::protocol::Templates;
use sluice_common::{ExporterEvent, NO_PEER, POOL_TABLE_SIZE, event_kind, from_key_bytes};
use tracing::{debug, info, warn};

use super::dataplane::DataPlane;
use super::engine::{Controller, Exporter, Result, elapsed};
use super::error::ControllerError;
use super::ledger::{InstallRequest, Pending, Phase, SyncRequest};
use super::model::ExporterState;
use crate::rebalancer::{self, ExporterInput, Mode, PeerInput, Plan, UnplaceableReason};

/// Observation domains kept per exporter, and (exporter, domain) entries kept in all: a peer
/// cannot grow Central's memory without bound.
const MAX_DOMAINS_PER_EXPORTER: usize = 64;
const MAX_TEMPLATE_ENTRIES: usize = 4 * sluice_common::MAX_EXPORTERS as usize;
/// Reporting peers whose state is kept per (exporter, domain); the least recent goes first.
const MAX_REPORTERS_PER_DOMAIN: usize = 4;

/// Minimum time between two counter samples in [`Controller::tick`] (a second, less some slack
/// for a caller's timer jitter).
const SAMPLE_PERIOD: Duration = Duration::from_millis(950);

/// The rebalancer's plan for one pool.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolPlan {
    /// Pool id.
    pub pool_id: u32,
    /// Pool name.
    pub pool: String,
    /// The plan (peer ids; see [`Controller::plan_view`] for names).
    pub plan: Plan,
}

/// What one [`Controller::tick`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    /// Peers declared OFFLINE.
    pub offline: Vec<String>,
    /// Exporter map entries flipped.
    pub moved: usize,
    /// A rebalance ran.
    pub rebalanced: bool,
}

/// The template store as it is mirrored: per (exporter, observation domain), each recent
/// reporter's copy (peer id, bytes), least recent first.
pub type TemplateStore = Vec<((IpAddr, u32), Vec<(u32, Vec<u8>)>)>;

impl<D: DataPlane> Controller<D> {
    /// The periodic work: samples the counters (at most about once a second), fails over
    /// silent peers, flips moves whose template installation timed out, and rebalances when
    /// the interval has passed. Call it at least every second; calling it more often (say
    /// every 100 ms) makes failover detection finer without sampling more.
    pub fn tick(&mut self, now: Instant) -> Result<TickReport> {
        if self
            .traffic
            .last_sample
            .is_none_or(|t| elapsed(now, t) >= SAMPLE_PERIOD)
        {
            self.sample(now)?;
        }
        let moves_before = self.counters.moves;
        let offline = self.check_peers(now)?;
        self.expire_installs(now)?;
        let interval = Duration::from_secs(self.balancer.rebalance_interval_s);
        let rebalanced = elapsed(now, self.traffic.last_rebalance) >= interval;
        if rebalanced {
            self.run_now(now)?;
        }
        Ok(TickReport {
            offline,
            moved: usize::try_from(self.counters.moves - moves_before).unwrap_or(usize::MAX),
            rebalanced,
        })
    }

    /// Reads `EXPORTER_STATS` and updates each exporter's smoothed rates: an exponential
    /// moving average whose time constant is the rebalance interval. A counter that went
    /// backwards (map entry recreated) counts from zero.
    pub fn sample(&mut self, now: Instant) -> Result<()> {
        let stats = self.dp.exporter_stats()?;
        let dt = self
            .traffic
            .last_sample
            .map(|t| elapsed(now, t).as_secs_f64())
            .filter(|dt| *dt > 0.0);
        self.traffic.last_sample = Some(now);
        let mut rates: BTreeMap<IpAddr, (f64, f64, bool)> = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for (addr, s) in stats {
            counts.insert(addr, (s.packets, s.bytes));
            let prev = self.traffic.counts.get(&addr).copied();
            let Some(dt) = dt else { continue };
            let (packets, bytes) = match prev {
                Some((p, b)) if s.packets >= p && s.bytes >= b => (s.packets - p, s.bytes - b),
                _ => (s.packets, s.bytes),
            };
            rates.insert(
                addr,
                (packets as f64 / dt, 8.0 * bytes as f64 / dt, packets > 0),
            );
        }
        // Entries that left the stats map are forgotten.
        self.traffic.counts = counts;
        let Some(dt) = dt else { return Ok(()) };
        let tau = self.balancer.rebalance_interval_s as f64;
        let alpha = 1.0 - (-dt / tau).exp();
        for (addr, e) in &mut self.exporters {
            let (pps, bps, active) = rates.get(addr).copied().unwrap_or((0.0, 0.0, false));
            e.pps += alpha * (pps - e.pps);
            e.bps += alpha * (bps - e.bps);
            if active {
                e.last_seen = Some(now);
            }
        }
        Ok(())
    }

    /// Handles a ring-buffer event. A new exporter is pinned to the peer the pool table chose
    /// (or, if that peer is no longer eligible, to the one our current table names); a known
    /// exporter whose entry vanished is rewritten (the state wins), and one whose peer is down
    /// is pinned where the table sent it. Returns the exporter's peer, if it has one.
    pub fn on_exporter_event(&mut self, ev: &ExporterEvent, now: Instant) -> Result<Option<u32>> {
        let addr = from_key_bytes(ev.addr);
        let in_pool = |c: &Self, peer: u32, pool: u32| {
            c.eligible(peer)
                && c.peers
                    .get(&peer)
                    .is_some_and(|p| p.state.pool == Some(pool))
        };
        if let Some(e) = self.exporters.get(&addr) {
            let (cur, pool) = (e.state.peer, e.state.pool);
            if self.eligible(cur) {
                self.dp.set_exporter(addr, e.value())?;
                return Ok(Some(cur));
            }
            if in_pool(self, ev.peer_id, pool) {
                self.flip(addr, ev.peer_id, now, "peer down")?;
                return Ok(Some(ev.peer_id));
            }
            return Ok(None);
        }
        if ev.kind != event_kind::NEW_EXPORTER && ev.kind != event_kind::PEER_DOWN {
            warn!(kind = ev.kind, exporter = %addr, "unknown exporter event kind");
            return Ok(None);
        }
        let pool = ev.pool_id;
        if !self.pools.contains_key(&pool) {
            warn!(exporter = %addr, pool, "event for an unknown pool");
            return Ok(None);
        }
        let peer = if in_pool(self, ev.peer_id, pool) {
            Some(ev.peer_id)
        } else {
            self.tables
                .get(&pool)
                .and_then(|(_, t)| t.get(table_slot(&ev.addr, POOL_TABLE_SIZE) as usize))
                .copied()
                .filter(|&p| p != NO_PEER && in_pool(self, p, pool))
        };
        let Some(peer) = peer else {
            debug!(exporter = %addr, pool, "new exporter but its pool has no healthy peer");
            return Ok(None);
        };
        let mut e = Exporter::new(ExporterState {
            addr,
            pool,
            peer,
            pinned: false,
        });
        e.last_seen = Some(now);
        self.dp.set_exporter(addr, e.value())?;
        self.exporters.insert(addr, e);
        self.dirty = true;
        info!(exporter = %addr, pool = %self.pool_name(pool), peer = %self.peer_name(peer), "new exporter pinned");
        Ok(Some(peer))
    }

    // --- templates ---------------------------------------------------------------------------

    /// Stores the latest template state a peer reported for (exporter, observation domain).
    /// Exporters not pinned yet are accepted too (a peer may decode an exporter's first
    /// template before its ring-buffer event reaches the controller), within the limits of 64
    /// domains per exporter and 262 144 entries in all.
    ///
    /// A report from a peer that no longer has the exporter (it arrived after the move: the
    /// template reached the old peer just before the flip) is forwarded at once to the peer
    /// that has it now, and to the destination of a move in progress: no template or options
    /// record a peer received is lost to a move's timing.
    pub fn report_templates(&mut self, peer: &str, t: Templates) -> Result<()> {
        let reporter = self.peer_by_name(peer)?;
        let key = (t.exporter, t.observation_domain);
        if !self.traffic.templates.contains_key(&key) {
            let domains = self
                .traffic
                .templates
                .range((t.exporter, 0)..=(t.exporter, u32::MAX))
                .count();
            if domains >= MAX_DOMAINS_PER_EXPORTER
                || self.traffic.templates.len() >= MAX_TEMPLATE_ENTRIES
            {
                return Err(ControllerError::Invalid {
                    field: "templates",
                    reason: format!(
                        "no room for {} domain {} ({domains} domains kept for it)",
                        t.exporter, t.observation_domain
                    ),
                });
            }
        }
        let reports = self.traffic.templates.entry(key).or_default();
        reports.retain(|(id, _)| *id != reporter);
        if reports.len() >= MAX_REPORTERS_PER_DOMAIN {
            reports.remove(0);
        }
        reports.push((reporter, t.bytes.clone()));

        let current = self.exporters.get(&t.exporter).map(|e| e.state.peer);
        // A move still syncing sends everything stored at install time anyway.
        let moving_to = self
            .traffic
            .pending
            .get(&t.exporter)
            .filter(|p| matches!(p.phase, Phase::Installing { .. }))
            .map(|p| p.to);
        let mut targets: Vec<u32> = current.into_iter().chain(moving_to).collect();
        targets.dedup();
        for to in targets {
            if to != reporter && self.forwarding(to) {
                debug!(exporter = %t.exporter, domain = t.observation_domain, from = %peer, to = %self.peer_name(to), "late template report forwarded");
                self.counters.templates_forwarded += 1;
                self.queue_install(to, vec![t.clone()]);
            }
        }
        Ok(())
    }

    /// The whole template store (for the hot standby's mirror).
    pub fn template_store(&self) -> TemplateStore {
        self.traffic
            .templates
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Replaces the template store with the active's (on the hot standby), within the same
    /// limits as reports.
    pub fn set_template_store(&mut self, store: TemplateStore) {
        self.traffic.templates = store
            .into_iter()
            .take(MAX_TEMPLATE_ENTRIES)
            .map(|(k, mut v)| {
                v.truncate(MAX_REPORTERS_PER_DOMAIN);
                (k, v)
            })
            .collect();
    }

    /// The template state kept for an exporter: every recent reporter's copy of each
    /// observation domain (the installing peer keeps the newest of each entry).
    pub fn templates_for(&self, exporter: IpAddr) -> Vec<Templates> {
        self.traffic
            .templates
            .range((exporter, 0)..=(exporter, u32::MAX))
            .flat_map(|((addr, domain), reports)| {
                reports.iter().map(|(_, bytes)| Templates {
                    exporter: *addr,
                    observation_domain: *domain,
                    bytes: bytes.clone(),
                })
            })
            .collect()
    }

    /// Template installations to send to peers (the API server drains this after every call
    /// and sends each as `InstallTemplates`).
    pub fn take_install_requests(&mut self) -> Vec<InstallRequest> {
        std::mem::take(&mut self.traffic.outbox)
    }

    /// Sync requests to send to peers (the API server drains this with the installations and
    /// sends each as `SyncTemplates`).
    pub fn take_sync_requests(&mut self) -> Vec<SyncRequest> {
        std::mem::take(&mut self.traffic.syncs)
    }

    fn next_request_id(&mut self) -> u64 {
        let id = self.traffic.next_request;
        self.traffic.next_request += 1;
        id
    }

    fn queue_install(&mut self, to: u32, templates: Vec<Templates>) -> u64 {
        let request_id = self.next_request_id();
        self.traffic.outbox.push(InstallRequest {
            request_id,
            peer_id: to,
            peer: self.peer_name(to),
            templates,
        });
        request_id
    }

    /// The exporter's current peer answered a sync request: everything it had is stored, so
    /// the installation on the destination starts now. Returns how many moves went on.
    pub fn templates_synced(&mut self, peer: &str, request_id: u64, now: Instant) -> Result<usize> {
        let id = self.peer_by_name(peer)?;
        let ready: Vec<(IpAddr, u32)> = self
            .traffic
            .pending
            .iter()
            .filter(|(_, p)| {
                p.phase
                    == Phase::Syncing {
                        from: id,
                        request_id,
                    }
            })
            .map(|(a, p)| (*a, p.to))
            .collect();
        for (addr, to) in &ready {
            self.install_then_flip(*addr, *to, now, "templates synced")?;
        }
        Ok(ready.len())
    }

    /// A peer confirmed an installation: the moves waiting for it flip now. Returns how many.
    pub fn templates_installed(
        &mut self,
        peer: &str,
        request_id: u64,
        now: Instant,
    ) -> Result<usize> {
        let id = self.peer_by_name(peer)?;
        let ready: Vec<IpAddr> = self
            .traffic
            .pending
            .iter()
            .filter(|(_, p)| p.phase == Phase::Installing { request_id } && p.to == id)
            .map(|(a, _)| *a)
            .collect();
        for addr in &ready {
            self.traffic.pending.remove(addr);
            self.flip(*addr, id, now, "templates installed")?;
        }
        Ok(ready.len())
    }

    fn expire_installs(&mut self, now: Instant) -> Result<()> {
        let expired: Vec<(IpAddr, u32, Phase)> = self
            .traffic
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(a, p)| (*a, p.to, p.phase))
            .collect();
        for (addr, to, phase) in expired {
            self.traffic.pending.remove(&addr);
            if !self.eligible(to) {
                continue;
            }
            match phase {
                Phase::Syncing { from, .. } => {
                    warn!(exporter = %addr, peer = %self.peer_name(from), "current peer did not answer the template sync in time; installing what it reported");
                    self.install_then_flip(addr, to, now, "sync timeout")?;
                }
                Phase::Installing { .. } => {
                    warn!(exporter = %addr, peer = %self.peer_name(to), "template installation not confirmed in time; moving anyway");
                    self.flip(addr, to, now, "install timeout")?;
                }
            }
        }
        Ok(())
    }

    // --- moves -------------------------------------------------------------------------------

    /// Moves an exporter to a peer of its pool now (templates first) and pins it there.
    pub fn move_exporter(&mut self, addr: IpAddr, peer: &str, now: Instant) -> Result<()> {
        let to = self.peer_by_name(peer)?;
        let e = self
            .exporters
            .get(&addr)
            .ok_or(ControllerError::UnknownExporter(addr))?;
        let pool = e.state.pool;
        if self.peers.get(&to).and_then(|p| p.state.pool) != Some(pool) {
            return Err(ControllerError::Conflict(format!(
                "peer {peer:?} is not in pool {:?} of exporter {addr}",
                self.pool_name(pool)
            )));
        }
        if !self.eligible(to) {
            return Err(ControllerError::Conflict(format!(
                "peer {peer:?} cannot take exporters (offline, draining or weight 0)"
            )));
        }
        self.set_pinned(addr, true)?;
        self.start_move(addr, to, now, "manual")
    }

    /// Pins an exporter: the rebalancer leaves it where it is (failover and drain still move it).
    pub fn pin(&mut self, addr: IpAddr) -> Result<()> {
        self.set_pinned(addr, true)
    }

    /// Unpins an exporter.
    pub fn unpin(&mut self, addr: IpAddr) -> Result<()> {
        self.set_pinned(addr, false)
    }

    fn set_pinned(&mut self, addr: IpAddr, pinned: bool) -> Result<()> {
        let e = self
            .exporters
            .get_mut(&addr)
            .ok_or(ControllerError::UnknownExporter(addr))?;
        if e.state.pinned != pinned {
            e.state.pinned = pinned;
            self.dirty = true;
        }
        Ok(())
    }

    /// Starts moving `addr` to `to`, templates first. While its current peer still forwards
    /// (online, possibly draining), that peer is first asked for everything it has for the
    /// exporter ([`SyncRequest`]), which closes the window between a template's arrival and
    /// the peer's next report; then the state goes to `to`, and the map entry flips once `to`
    /// confirms it (each step bounded by the install timeout). A dead current peer forwards
    /// nothing, so then the entry flips at once, with what it reported sent along.
    fn start_move(&mut self, addr: IpAddr, to: u32, now: Instant, reason: &str) -> Result<()> {
        self.traffic.pending.remove(&addr);
        let current = self.exporters.get(&addr).map(|e| e.state.peer);
        if current == Some(to) {
            return Ok(());
        }
        match current.filter(|p| self.forwarding(*p)) {
            Some(from) => {
                let request_id = self.next_request_id();
                self.traffic.syncs.push(SyncRequest {
                    request_id,
                    peer_id: from,
                    peer: self.peer_name(from),
                    exporter: addr,
                });
                self.wait(addr, to, Phase::Syncing { from, request_id }, now);
                debug!(exporter = %addr, peer = %self.peer_name(to), request_id, reason, "move waits for the current peer's templates");
                Ok(())
            }
            None => {
                let templates = self.templates_for(addr);
                if !templates.is_empty() {
                    self.queue_install(to, templates);
                }
                self.flip(addr, to, now, reason)
            }
        }
    }

    /// Sends the exporter's template state to `to` and waits for its confirmation (or flips
    /// at once when there is none to send).
    fn install_then_flip(
        &mut self,
        addr: IpAddr,
        to: u32,
        now: Instant,
        reason: &str,
    ) -> Result<()> {
        let templates = self.templates_for(addr);
        if templates.is_empty() {
            return self.flip(addr, to, now, reason);
        }
        let request_id = self.queue_install(to, templates);
        self.wait(addr, to, Phase::Installing { request_id }, now);
        Ok(())
    }

    fn wait(&mut self, addr: IpAddr, to: u32, phase: Phase, now: Instant) {
        let deadline = now + Duration::from_millis(self.balancer.template_install_timeout_ms);
        self.traffic.pending.insert(
            addr,
            Pending {
                to,
                phase,
                deadline,
            },
        );
        if let Some(e) = self.exporters.get_mut(&addr) {
            e.last_moved = Some(now);
        }
    }

    /// Points the exporter's `EXPORTERS` entry at `to` (superseding any move still waiting).
    fn flip(&mut self, addr: IpAddr, to: u32, now: Instant, reason: &str) -> Result<()> {
        self.traffic.pending.remove(&addr);
        let e = self
            .exporters
            .get(&addr)
            .ok_or(ControllerError::UnknownExporter(addr))?;
        let from = e.state.peer;
        let mut value = e.value();
        value.peer_id = to;
        self.dp.set_exporter(addr, value)?;
        if let Some(e) = self.exporters.get_mut(&addr) {
            e.state.peer = to;
            e.last_moved = Some(now);
        }
        self.counters.moves += 1;
        self.dirty = true;
        info!(exporter = %addr, from = %self.peer_name(from), to = %self.peer_name(to), reason, "exporter moved");
        Ok(())
    }

    // --- rebalancing -------------------------------------------------------------------------

    /// The rebalancer's input for one pool: members, and exporters at their effective peer
    /// (the destination of a pending move).
    fn pool_input(&self, pool: u32, now: Instant) -> (Vec<PeerInput>, Vec<ExporterInput>) {
        let interval = Duration::from_secs(self.balancer.rebalance_interval_s);
        let peers = self
            .peers
            .values()
            .filter(|p| p.state.pool == Some(pool))
            .map(|p| PeerInput {
                id: p.state.id,
                weight: p.state.weight,
                healthy: p.state.online,
                draining: p.state.draining,
            })
            .collect();
        let exporters = self
            .exporters
            .values()
            .filter(|e| e.state.pool == pool)
            .map(|e| {
                let pending = self.traffic.pending.get(&e.state.addr);
                ExporterInput {
                    addr: e.state.addr,
                    peer: pending.map_or(e.state.peer, |p| p.to),
                    rate: e.pps,
                    pinned: e.state.pinned,
                    moved_recently: pending.is_some()
                        || e.last_moved.is_some_and(|t| elapsed(now, t) < interval),
                }
            })
            .collect();
        (peers, exporters)
    }

    fn plan_pool(&self, pool: u32, mode: Mode, now: Instant) -> Plan {
        let (peers, exporters) = self.pool_input(pool, now);
        rebalancer::plan(
            &rebalancer::Input {
                peers: &peers,
                exporters: &exporters,
                margin_pct: self.balancer.distribution_margin_pct,
            },
            mode,
        )
    }

    fn apply_plan(&mut self, plan: &Plan, now: Instant, reason: &str) -> Result<()> {
        for m in &plan.moves {
            self.start_move(m.exporter, m.to, now, reason)?;
        }
        Ok(())
    }

    /// Moves the exporters of the pool's ineligible peers away (failover, drain, unassign).
    pub(super) fn evacuate(&mut self, pool: u32, now: Instant, reason: &str) -> Result<()> {
        // Moves still waiting for templates: off if the destination just became ineligible,
        // immediate if the source stopped forwarding (its traffic is being lost meanwhile).
        let waiting: Vec<(IpAddr, u32)> = self
            .traffic
            .pending
            .iter()
            .map(|(a, p)| (*a, p.to))
            .collect();
        for (addr, to) in waiting {
            let source = self.exporters.get(&addr).map(|e| e.state.peer);
            if !self.eligible(to) {
                self.traffic.pending.remove(&addr);
            } else if source.is_some_and(|s| !self.forwarding(s)) {
                self.traffic.pending.remove(&addr);
                self.flip(addr, to, now, reason)?;
            }
        }
        let plan = self.plan_pool(pool, Mode::Evacuate, now);
        let stranded = plan
            .unplaceable
            .iter()
            .filter(|u| u.reason == UnplaceableReason::NoHealthyPeer)
            .count();
        if stranded > 0 {
            warn!(pool = %self.pool_name(pool), exporters = stranded, reason, "no healthy peer to move exporters to");
        }
        self.apply_plan(&plan, now, reason)
    }

    /// What a rebalance would do now, per pool, without doing it.
    pub fn plan(&self, now: Instant) -> Vec<PoolPlan> {
        self.pools
            .values()
            .map(|p| PoolPlan {
                pool_id: p.id,
                pool: p.name.clone(),
                plan: self.plan_pool(p.id, Mode::Rebalance, now),
            })
            .collect()
    }

    /// Rebalances every pool now and restarts the interval; returns the applied plans.
    pub fn run_now(&mut self, now: Instant) -> Result<Vec<PoolPlan>> {
        let plans = self.plan(now);
        self.traffic.last_rebalance = now;
        let mut moves = 0;
        for p in &plans {
            for u in &p.plan.unplaceable {
                warn!(pool = %p.pool, exporter = %u.exporter, pps = u.rate, reason = ?u.reason, "exporter cannot be placed within the margin");
            }
            moves += p.plan.moves.len();
            self.apply_plan(&p.plan, now, "rebalance")?;
        }
        if moves > 0 {
            self.counters.rebalances += 1;
            info!(moves, "rebalanced");
        }
        Ok(plans)
    }
}
