//! The [`Controller`] type: restore and reconcile on start, snapshots, pools, listeners,
//! source groups and the balancer settings, and keeping `PEERS` and the pool tables in line.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_common::protocol::PeerMetrics;
use sluice_common::{
    ExporterValue, MAX_LISTENERS, MAX_POOLS, MAX_SOURCE_GROUPS, NO_PEER, POOL_TABLE_SIZE,
    PeerEntry, family,
};
use tracing::{error, info, warn};

use super::dataplane::DataPlane;
use super::error::ControllerError;
use super::ledger::{Counters, Traffic};
use super::memory::MemoryDataPlane;
use super::model::{
    BalancerConfig, Cidr, ControllerState, ExporterState, ListenerState, PeerState, PoolState,
    SourceGroupState,
};
use crate::maglev::{self, Member};

/// Name of the pool created on a fresh start; peers that name no pool join it.
pub const DEFAULT_POOL: &str = "default";

pub(super) type Result<T> = std::result::Result<T, ControllerError>;

pub(super) struct Peer {
    /// `state.online` is the live flag: set by registrations and heartbeats, cleared by the
    /// timeout.
    pub(super) state: PeerState,
    /// Last registration or heartbeat.
    pub(super) last_seen: Option<Instant>,
    pub(super) metrics: Option<PeerMetrics>,
}

pub(super) struct Exporter {
    pub(super) state: ExporterState,
    /// Smoothed packets per second.
    pub(super) pps: f64,
    /// Smoothed bits per second.
    pub(super) bps: f64,
    pub(super) last_seen: Option<Instant>,
    pub(super) last_moved: Option<Instant>,
}

/// The members a pool table was last built from, to skip identical rebuilds.
type TableMembers = Vec<(u32, String, u32)>;

/// Differences found between the persisted state and the maps on restart (the state wins).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// In the state, missing from `EXPORTERS`: written back.
    pub restored: Vec<IpAddr>,
    /// In both, different: the map entry was overwritten with the state's.
    pub overwritten: Vec<IpAddr>,
    /// Only in the map, on a known peer of its pool: kept and added to the state.
    pub adopted: Vec<IpAddr>,
    /// Only in the map, on an unknown peer or pool: removed.
    pub removed: Vec<IpAddr>,
}

impl ReconcileReport {
    /// The maps matched the state exactly.
    pub fn is_clean(&self) -> bool {
        self.restored.is_empty()
            && self.overwritten.is_empty()
            && self.adopted.is_empty()
            && self.removed.is_empty()
    }
}

/// The controller: owns the model and keeps the data plane in line with it.
pub struct Controller<D: DataPlane> {
    pub(super) dp: D,
    pub(super) balancer: BalancerConfig,
    pub(super) pools: BTreeMap<u32, PoolState>,
    pub(super) peers: BTreeMap<u32, Peer>,
    pub(super) listeners: BTreeMap<SocketAddr, u32>,
    pub(super) source_groups: BTreeMap<Cidr, u32>,
    pub(super) exporters: BTreeMap<IpAddr, Exporter>,
    pub(super) tables: BTreeMap<u32, (TableMembers, Vec<u32>)>,
    pub(super) traffic: Traffic,
    pub(super) counters: Counters,
    pub(super) dirty: bool,
}

impl<D: DataPlane> Controller<D> {
    /// A fresh controller with the [`DEFAULT_POOL`]; stale `EXPORTERS` entries are removed.
    pub fn new(dp: D, balancer: BalancerConfig, now: Instant) -> Result<(Self, ReconcileReport)> {
        let state = ControllerState {
            balancer,
            pools: vec![PoolState {
                id: 0,
                name: DEFAULT_POOL.into(),
            }],
            ..ControllerState::default()
        };
        Self::restore(dp, state, now)
    }

    /// Rebuilds the controller from persisted state and reconciles the data plane with it:
    /// listeners, source groups, peers and pool tables are rewritten, and `EXPORTERS` is made
    /// to match the state (see [`ReconcileReport`]). No exporter is reshuffled; peers that were
    /// online get a full timeout to reconnect.
    pub fn restore(dp: D, state: ControllerState, now: Instant) -> Result<(Self, ReconcileReport)> {
        state
            .balancer
            .validate()
            .map_err(|e| ControllerError::Invalid {
                field: "balancer",
                reason: e.to_string(),
            })?;
        let mut c = Self {
            dp,
            balancer: state.balancer.clone(),
            pools: BTreeMap::new(),
            peers: BTreeMap::new(),
            listeners: BTreeMap::new(),
            source_groups: BTreeMap::new(),
            exporters: BTreeMap::new(),
            tables: BTreeMap::new(),
            traffic: Traffic::new(now),
            counters: Counters::default(),
            dirty: false,
        };
        let report = c.load(state, now)?;
        Ok((c, report))
    }

    /// Replaces the whole model with `state` (a hot standby following the active's mirror)
    /// and rewrites the data plane to match, listeners and source groups that are gone
    /// included. `state` is checked whole first: one that does not load leaves the controller
    /// and the data plane as they were.
    pub fn apply_mirror(
        &mut self,
        state: ControllerState,
        now: Instant,
    ) -> Result<ReconcileReport> {
        let (_, _) = Controller::restore(MemoryDataPlane::new(), state.clone(), now)?;
        let old_listeners: Vec<SocketAddr> = self.listeners.keys().copied().collect();
        let old_groups: Vec<Cidr> = self.source_groups.keys().copied().collect();
        self.balancer = state.balancer.clone();
        self.pools.clear();
        self.peers.clear();
        self.listeners.clear();
        self.source_groups.clear();
        self.exporters.clear();
        self.tables.clear();
        self.traffic.forget_moves();
        let report = self.load(state, now)?;
        for addr in old_listeners {
            if !self.listeners.contains_key(&addr) {
                self.dp.remove_listener(addr)?;
            }
        }
        for net in old_groups {
            if !self.source_groups.contains_key(&net) {
                self.dp.remove_source_group(net.addr(), net.prefix_len())?;
            }
        }
        self.dirty = true;
        Ok(report)
    }

    /// After a takeover: every peer the mirror says is online gets a full timeout (from `now`)
    /// to reconnect to this node before failover, and the rebalance interval starts over.
    pub fn grace_peers(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            if p.state.online {
                p.last_seen = Some(now);
            }
        }
        self.traffic.restart_interval(now);
    }

    pub(super) fn load(&mut self, state: ControllerState, now: Instant) -> Result<ReconcileReport> {
        let c = self;
        for p in state.pools {
            if p.id >= MAX_POOLS || c.pools.contains_key(&p.id) || c.pool_by_name(&p.name).is_ok() {
                return Err(invalid(
                    "pools",
                    format!("duplicate or out-of-range pool {p:?}"),
                ));
            }
            c.pools.insert(p.id, p);
        }
        for p in state.peers {
            if p.id >= sluice_common::MAX_PEERS
                || c.peers.contains_key(&p.id)
                || c.peer_by_name(&p.name).is_ok()
                || p.pool.is_some_and(|id| !c.pools.contains_key(&id))
            {
                return Err(invalid(
                    "peers",
                    format!("duplicate or dangling peer {p:?}"),
                ));
            }
            // Online peers get a full timeout to reconnect before failover.
            let last_seen = p.online.then_some(now);
            c.peers.insert(
                p.id,
                Peer {
                    state: p,
                    last_seen,
                    metrics: None,
                },
            );
        }
        for l in state.listeners {
            c.check_pool(l.pool, "listeners")?;
            c.listeners.insert(l.addr, l.pool);
        }
        for g in state.source_groups {
            c.check_pool(g.pool, "source_groups")?;
            c.source_groups.insert(g.net, g.pool);
        }
        for e in state.exporters {
            c.check_pool(e.pool, "exporters")?;
            if !c.peers.contains_key(&e.peer) {
                return Err(invalid(
                    "exporters",
                    format!("{} on unknown peer {}", e.addr, e.peer),
                ));
            }
            c.exporters.insert(e.addr, Exporter::new(e));
        }

        for (&addr, &pool) in &c.listeners {
            c.dp.set_listener(addr, pool)?;
        }
        for (net, &pool) in &c.source_groups {
            c.dp.set_source_group(net.addr(), net.prefix_len(), pool)?;
        }
        for id in 0..sluice_common::MAX_PEERS {
            c.write_peer(id)?;
        }
        let pool_ids: Vec<u32> = c.pools.keys().copied().collect();
        for id in pool_ids {
            c.sync_pool(id)?;
        }
        c.reconcile_exporters()
    }

    pub(super) fn reconcile_exporters(&mut self) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let mut in_map: BTreeMap<IpAddr, ExporterValue> =
            self.dp.exporters()?.into_iter().collect();
        let wanted: Vec<(IpAddr, ExporterValue)> = self
            .exporters
            .iter()
            .map(|(a, e)| (*a, e.value()))
            .collect();
        for (addr, value) in wanted {
            match in_map.remove(&addr) {
                Some(v) if v == value => continue,
                Some(_) => report.overwritten.push(addr),
                None => report.restored.push(addr),
            }
            self.dp.set_exporter(addr, value)?;
        }
        for (addr, v) in in_map {
            let known = self
                .peers
                .get(&v.peer_id)
                .is_some_and(|p| p.state.pool == Some(v.pool_id));
            if known {
                report.adopted.push(addr);
                self.exporters.insert(
                    addr,
                    Exporter::new(ExporterState {
                        addr,
                        pool: v.pool_id,
                        peer: v.peer_id,
                        pinned: false,
                    }),
                );
                self.dirty = true;
            } else {
                report.removed.push(addr);
                self.dp.remove_exporter(addr)?;
            }
        }
        if !report.is_clean() {
            warn!(
                restored = report.restored.len(),
                overwritten = report.overwritten.len(),
                adopted = report.adopted.len(),
                removed = report.removed.len(),
                "EXPORTERS differed from the saved state; the state wins"
            );
        }
        Ok(report)
    }

    /// The persistent part of the model, ordered, ready for `crate::state`.
    pub fn snapshot(&self) -> ControllerState {
        ControllerState {
            balancer: self.balancer.clone(),
            pools: self.pools.values().cloned().collect(),
            peers: self.peers.values().map(|p| p.state.clone()).collect(),
            listeners: self
                .listeners
                .iter()
                .map(|(&addr, &pool)| ListenerState { addr, pool })
                .collect(),
            source_groups: self
                .source_groups
                .iter()
                .map(|(&net, &pool)| SourceGroupState { net, pool })
                .collect(),
            exporters: self.exporters.values().map(|e| e.state.clone()).collect(),
        }
    }

    /// True once after any change that should be persisted.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The data plane (tests inspect the in-memory model through this).
    pub fn data_plane(&self) -> &D {
        &self.dp
    }

    /// Mutable access to the data plane (tests deliver datagrams through the model).
    pub fn data_plane_mut(&mut self) -> &mut D {
        &mut self.dp
    }

    // --- pools, listeners, source groups -----------------------------------------------------

    /// Creates an empty pool with the lowest free id.
    pub fn create_pool(&mut self, name: &str) -> Result<u32> {
        check_name("pool name", name)?;
        if self.pool_by_name(name).is_ok() {
            return Err(ControllerError::Conflict(format!(
                "pool {name:?} already exists"
            )));
        }
        let id = (0..MAX_POOLS)
            .find(|id| !self.pools.contains_key(id))
            .ok_or_else(|| {
                ControllerError::Conflict(format!("all {MAX_POOLS} pools are in use"))
            })?;
        self.pools.insert(
            id,
            PoolState {
                id,
                name: name.into(),
            },
        );
        self.sync_pool(id)?;
        self.dirty = true;
        info!(pool = name, id, "pool created");
        Ok(id)
    }

    /// Deletes a pool that has no peer, listener or source group.
    pub fn delete_pool(&mut self, name: &str) -> Result<()> {
        let id = self.pool_by_name(name)?;
        let users = [
            (
                "peers",
                self.peers
                    .values()
                    .filter(|p| p.state.pool == Some(id))
                    .count(),
            ),
            (
                "listeners",
                self.listeners.values().filter(|&&p| p == id).count(),
            ),
            (
                "source groups",
                self.source_groups.values().filter(|&&p| p == id).count(),
            ),
            (
                "exporters",
                self.exporters
                    .values()
                    .filter(|e| e.state.pool == id)
                    .count(),
            ),
        ];
        if let Some((what, n)) = users.iter().find(|(_, n)| *n > 0) {
            return Err(ControllerError::Conflict(format!(
                "pool {name:?} still has {n} {what}"
            )));
        }
        self.pools.remove(&id);
        self.tables.remove(&id);
        self.dp
            .set_pool_table(id, &vec![NO_PEER; POOL_TABLE_SIZE as usize])?;
        self.dirty = true;
        info!(pool = name, id, "pool deleted");
        Ok(())
    }

    /// Sends traffic for `addr` (address and UDP port) to `pool`: a new listener, or a new pool
    /// for new exporters of an existing one.
    pub fn set_listener(&mut self, addr: SocketAddr, pool: &str) -> Result<()> {
        let id = self.pool_by_name(pool)?;
        check_room(&self.listeners, &addr, "listeners", MAX_LISTENERS)?;
        self.dp.set_listener(addr, id)?;
        self.listeners.insert(addr, id);
        self.dirty = true;
        Ok(())
    }

    /// Stops handling traffic for `addr`.
    pub fn remove_listener(&mut self, addr: SocketAddr) -> Result<()> {
        if self.listeners.remove(&addr).is_none() {
            return Err(ControllerError::UnknownListener(addr));
        }
        self.dp.remove_listener(addr)?;
        self.dirty = true;
        Ok(())
    }

    /// Puts exporters inside `net` in `pool` (new exporters; pinned ones stay where they are).
    pub fn set_source_group(&mut self, net: Cidr, pool: &str) -> Result<()> {
        let id = self.pool_by_name(pool)?;
        check_room(
            &self.source_groups,
            &net,
            "source groups",
            MAX_SOURCE_GROUPS,
        )?;
        self.dp.set_source_group(net.addr(), net.prefix_len(), id)?;
        self.source_groups.insert(net, id);
        self.dirty = true;
        Ok(())
    }

    /// Removes a source group.
    pub fn remove_source_group(&mut self, net: Cidr) -> Result<()> {
        if self.source_groups.remove(&net).is_none() {
            return Err(ControllerError::UnknownSourceGroup(net));
        }
        self.dp.remove_source_group(net.addr(), net.prefix_len())?;
        self.dirty = true;
        Ok(())
    }

    /// Current rebalancer settings.
    pub fn balancer(&self) -> &BalancerConfig {
        &self.balancer
    }

    /// Replaces the rebalancer settings (validated first).
    pub fn set_balancer(&mut self, balancer: BalancerConfig) -> Result<()> {
        balancer
            .validate()
            .map_err(|e| invalid("balancer", e.to_string()))?;
        info!(?balancer, "balancer settings changed");
        self.balancer = balancer;
        self.dirty = true;
        Ok(())
    }

    // --- internal helpers --------------------------------------------------------------------

    pub(super) fn pool_by_name(&self, name: &str) -> Result<u32> {
        self.pools
            .values()
            .find(|p| p.name == name)
            .map(|p| p.id)
            .ok_or_else(|| ControllerError::UnknownPool(name.into()))
    }

    pub(super) fn peer_by_name(&self, name: &str) -> Result<u32> {
        self.peers
            .values()
            .find(|p| p.state.name == name)
            .map(|p| p.state.id)
            .ok_or_else(|| ControllerError::UnknownPeer(name.into()))
    }

    pub(super) fn check_pool(&self, id: u32, field: &'static str) -> Result<()> {
        if self.pools.contains_key(&id) {
            Ok(())
        } else {
            Err(invalid(field, format!("unknown pool id {id}")))
        }
    }

    pub(super) fn pool_name(&self, id: u32) -> String {
        self.pools
            .get(&id)
            .map_or_else(|| format!("#{id}"), |p| p.name.clone())
    }

    pub(super) fn peer_name(&self, id: u32) -> String {
        self.peers
            .get(&id)
            .map_or_else(|| format!("#{id}"), |p| p.state.name.clone())
    }

    /// Heartbeating, not draining, weighted and in a pool: may receive exporters.
    pub(super) fn eligible(&self, id: u32) -> bool {
        self.peers.get(&id).is_some_and(|p| {
            p.state.online && !p.state.draining && p.state.weight > 0 && p.state.pool.is_some()
        })
    }

    /// Online (UP or DRAINING in `PEERS`): the XDP program still forwards to it.
    pub(super) fn forwarding(&self, id: u32) -> bool {
        self.peers.get(&id).is_some_and(|p| p.state.online)
    }

    /// Writes `PEERS[id]` from the model: UP when eligible for new exporters, DRAINING when
    /// online but draining or unassigned (it still forwards what is pinned to it), DOWN when
    /// offline or unknown.
    pub(super) fn write_peer(&mut self, id: u32) -> Result<()> {
        let entry = match self.peers.get(&id) {
            Some(p) => {
                let state = match (p.state.online, p.state.draining, p.state.pool) {
                    (false, _, _) => sluice_common::peer_state::DOWN,
                    (true, false, Some(_)) => sluice_common::peer_state::UP,
                    (true, _, _) => sluice_common::peer_state::DRAINING,
                };
                PeerEntry {
                    addr: sluice_common::to_key_bytes(p.state.data_addr),
                    port: p.state.forward_port(),
                    family: match p.state.data_addr {
                        IpAddr::V4(_) => family::V4,
                        IpAddr::V6(_) => family::V6,
                    },
                    state,
                    pool_id: p.state.pool.unwrap_or(0),
                }
            }
            None => PeerEntry::default(),
        };
        self.dp.set_peer(id, entry)?;
        Ok(())
    }

    /// Rebuilds the pool's Maglev table from its eligible peers if they changed; a pool left
    /// without one gets a table full of [`NO_PEER`] (its new exporters are dropped and counted).
    pub(super) fn sync_pool(&mut self, pool: u32) -> Result<()> {
        let members: TableMembers = self
            .peers
            .values()
            .filter(|p| p.state.pool == Some(pool) && self.eligible(p.state.id))
            .map(|p| (p.state.id, p.state.name.clone(), p.state.weight))
            .collect();
        if self.tables.get(&pool).is_some_and(|(m, _)| *m == members) {
            return Ok(());
        }
        let had_healthy = self.tables.get(&pool).is_some_and(|(m, _)| !m.is_empty());
        let list: Vec<Member<'_>> = members
            .iter()
            .map(|(id, name, weight)| Member {
                id: *id,
                name,
                weight: *weight,
            })
            .collect();
        let table = maglev::build_table(&list, POOL_TABLE_SIZE);
        self.dp.set_pool_table(pool, &table)?;
        let name = self.pool_name(pool);
        if members.is_empty() {
            let peers = self
                .peers
                .values()
                .filter(|p| p.state.pool == Some(pool))
                .count();
            if had_healthy || peers > 0 {
                error!(pool = %name, peers, "pool has no healthy peer: its traffic is dropped");
            } else {
                warn!(pool = %name, "pool has no peer yet: its traffic is dropped");
            }
        } else {
            info!(pool = %name, peers = members.len(), "pool table rebuilt");
        }
        self.tables.insert(pool, (members, table));
        Ok(())
    }
}

impl Exporter {
    pub(super) fn new(state: ExporterState) -> Self {
        Self {
            state,
            pps: 0.0,
            bps: 0.0,
            last_seen: None,
            last_moved: None,
        }
    }

    pub(super) fn value(&self) -> ExporterValue {
        ExporterValue {
            peer_id: self.state.peer,
            pool_id: self.state.pool,
        }
    }
}

pub(super) fn invalid(field: &'static str, reason: String) -> ControllerError {
    ControllerError::Invalid { field, reason }
}

/// A new key fits in a map of `capacity` entries (an existing one is only updated).
pub(super) fn check_room<K: Ord, V>(
    map: &BTreeMap<K, V>,
    key: &K,
    what: &str,
    capacity: u32,
) -> Result<()> {
    if map.contains_key(key) || map.len() < capacity as usize {
        Ok(())
    } else {
        Err(ControllerError::Conflict(format!(
            "all {capacity} {what} are in use"
        )))
    }
}

pub(super) fn check_name(field: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{name:?}: use 1-64 of A-Z a-z 0-9 - _ ."),
        ))
    }
}

pub(super) fn elapsed(now: Instant, since: Instant) -> Duration {
    now.saturating_duration_since(since)
}
