//! Peer sessions and membership: registration, heartbeats, failover, drain, pools.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_common::MAX_PEERS;
use sluice_common::protocol::{PeerMetrics, Register};
use tracing::{error, info};

use super::dataplane::DataPlane;
use super::engine::{Controller, DEFAULT_POOL, Peer, Result, check_name, elapsed, invalid};
use super::error::ControllerError;
use super::model::PeerState;

/// Largest accepted peer weight.
const MAX_WEIGHT: u32 = 1_000_000;

/// Outcome of a registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Registration {
    /// Slot in `PEERS`.
    pub peer_id: u32,
    /// The peer's pool, if it has one.
    pub pool: Option<String>,
}

fn check_weight(weight: u32) -> Result<()> {
    if weight <= MAX_WEIGHT {
        Ok(())
    } else {
        Err(invalid("weight", format!("{weight} > {MAX_WEIGHT}")))
    }
}

/// How long a peer whose session ended may take to come back before it fails over.
pub const SESSION_LOSS_GRACE: Duration = Duration::from_secs(1);

impl<D: DataPlane> Controller<D> {
    /// Registers (or re-registers) a peer; it is ONLINE from now on. A new peer joins the pool
    /// it names (or [`DEFAULT_POOL`]) with the weight it announces; a known peer keeps the pool
    /// and weight the operator gave it. A returning peer rejoins empty: the next rebalance
    /// gives it exporters (only exporters stranded on dead peers, in a pool that had no
    /// healthy peer left, come to it at once). The token is checked by the caller, never here.
    pub fn register_peer(&mut self, reg: &Register, now: Instant) -> Result<Registration> {
        check_name("peer name", &reg.name)?;
        check_weight(reg.weight)?;
        let id = match self.peer_by_name(&reg.name) {
            Ok(id) => {
                let p = &self.peers[&id];
                if p.state.uuid != reg.uuid && p.state.online {
                    return Err(ControllerError::Conflict(format!(
                        "peer name {:?} is in use by the online installation {}",
                        reg.name, p.state.uuid
                    )));
                }
                id
            }
            Err(_) => {
                let pool = match &reg.pool {
                    Some(name) => Some(self.pool_by_name(name)?),
                    None => self.pool_by_name(DEFAULT_POOL).ok(),
                };
                let id = (0..MAX_PEERS)
                    .find(|id| !self.peers.contains_key(id))
                    .ok_or_else(|| {
                        ControllerError::Conflict(format!("all {MAX_PEERS} peer slots are in use"))
                    })?;
                let state = PeerState {
                    id,
                    name: reg.name.clone(),
                    uuid: reg.uuid,
                    version: reg.version.clone(),
                    data_addr: reg.data_addr,
                    ports: reg.ports.clone(),
                    weight: reg.weight,
                    pool,
                    draining: false,
                    online: false,
                };
                self.peers.insert(
                    id,
                    Peer {
                        state,
                        last_seen: None,
                        metrics: None,
                    },
                );
                id
            }
        };
        let Some(p) = self.peers.get_mut(&id) else {
            return Err(ControllerError::UnknownPeer(reg.name.clone()));
        };
        p.state.uuid = reg.uuid;
        p.state.version.clone_from(&reg.version);
        p.state.data_addr = reg.data_addr;
        p.state.ports.clone_from(&reg.ports);
        p.state.online = true;
        p.last_seen = Some(now);
        let pool = p.state.pool;
        self.dirty = true;
        self.write_peer(id)?;
        if let Some(pool) = pool {
            self.sync_pool(pool)?;
            self.evacuate(pool, now, "peer online")?;
        }
        let pool = pool.map(|id| self.pool_name(id));
        info!(peer = %reg.name, id, pool = ?pool, addr = %reg.data_addr, version = %reg.version, "peer registered");
        Ok(Registration { peer_id: id, pool })
    }

    /// Records a heartbeat. A peer that was OFFLINE comes back ONLINE, empty (as in
    /// [`Controller::register_peer`]).
    pub fn heartbeat(&mut self, peer: &str, metrics: PeerMetrics, now: Instant) -> Result<()> {
        let id = self.peer_by_name(peer)?;
        let Some(p) = self.peers.get_mut(&id) else {
            return Err(ControllerError::UnknownPeer(peer.into()));
        };
        p.metrics = Some(metrics);
        p.last_seen = Some(now);
        if !p.state.online {
            p.state.online = true;
            let pool = p.state.pool;
            self.dirty = true;
            info!(peer, id, "peer back ONLINE; it rejoins empty");
            self.write_peer(id)?;
            if let Some(pool) = pool {
                self.sync_pool(pool)?;
                self.evacuate(pool, now, "peer online")?;
            }
        }
        Ok(())
    }

    /// The peer's control session ended (its process died, or it closed the connection): it
    /// goes OFFLINE [`SESSION_LOSS_GRACE`] from now unless it registers or heartbeats again
    /// before, instead of a whole `peer_timeout_ms` after its last heartbeat. A network
    /// partition that leaves the session hanging still waits for the timeout.
    pub fn session_lost(&mut self, peer: &str, now: Instant) -> Result<()> {
        let id = self.peer_by_name(peer)?;
        let timeout = Duration::from_millis(self.balancer.peer_timeout_ms);
        let deadline = timeout.saturating_sub(SESSION_LOSS_GRACE);
        if let Some(p) = self.peers.get_mut(&id)
            && p.state.online
            && let Some(earlier) = now.checked_sub(deadline)
        {
            p.last_seen = Some(p.last_seen.map_or(earlier, |t| t.min(earlier)));
            info!(
                peer,
                id,
                grace_ms = SESSION_LOSS_GRACE.as_millis() as u64,
                "peer session lost; failing over unless it returns"
            );
        }
        Ok(())
    }

    /// Declares OFFLINE every online peer silent for `peer_timeout_ms`: its `PEERS` entry goes
    /// DOWN, its pool table is rebuilt without it and its exporters move at once to the pool's
    /// eligible peers (least loaded by weight first). Returns the names of those peers.
    pub fn check_peers(&mut self, now: Instant) -> Result<Vec<String>> {
        let timeout = Duration::from_millis(self.balancer.peer_timeout_ms);
        let dead: Vec<u32> = self
            .peers
            .values()
            .filter(|p| p.state.online && p.last_seen.is_none_or(|t| elapsed(now, t) >= timeout))
            .map(|p| p.state.id)
            .collect();
        // Every dead peer is marked first, so that none of them receives another's exporters.
        let mut names = Vec::with_capacity(dead.len());
        let mut pools = BTreeSet::new();
        for &id in &dead {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            p.state.online = false;
            let (name, pool) = (p.state.name.clone(), p.state.pool);
            let exporters = self
                .exporters
                .values()
                .filter(|e| e.state.peer == id)
                .count();
            error!(peer = %name, id, exporters, timeout_ms = self.balancer.peer_timeout_ms, "peer OFFLINE: no heartbeat within the timeout; failing over");
            self.counters.failovers += 1;
            self.dirty = true;
            self.write_peer(id)?;
            pools.extend(pool);
            names.push(name);
        }
        for pool in pools {
            self.sync_pool(pool)?;
            self.evacuate(pool, now, "failover")?;
        }
        Ok(names)
    }

    /// Marks a peer DRAINING: out of its pool's table, its exporters moved away gracefully
    /// (templates first); it keeps forwarding what is still pinned to it meanwhile.
    pub fn drain(&mut self, peer: &str, now: Instant) -> Result<()> {
        self.set_draining(peer, true, now)
    }

    /// Ends a drain: the peer is eligible again (the next rebalance gives it exporters).
    pub fn undrain(&mut self, peer: &str, now: Instant) -> Result<()> {
        self.set_draining(peer, false, now)
    }

    fn set_draining(&mut self, peer: &str, draining: bool, now: Instant) -> Result<()> {
        let id = self.peer_by_name(peer)?;
        let Some(p) = self.peers.get_mut(&id) else {
            return Err(ControllerError::UnknownPeer(peer.into()));
        };
        p.state.draining = draining;
        let pool = p.state.pool;
        self.dirty = true;
        info!(peer, draining, "peer drain state changed");
        self.write_peer(id)?;
        if let Some(pool) = pool {
            self.sync_pool(pool)?;
            self.evacuate(pool, now, "drain")?;
        }
        Ok(())
    }

    /// Puts a peer in a pool (moving it out of its previous one, whose exporters on it move
    /// away), optionally with a new weight.
    pub fn assign_peer(
        &mut self,
        pool: &str,
        peer: &str,
        weight: Option<u32>,
        now: Instant,
    ) -> Result<()> {
        let pool_id = self.pool_by_name(pool)?;
        let id = self.peer_by_name(peer)?;
        if let Some(w) = weight {
            check_weight(w)?;
        }
        let Some(p) = self.peers.get_mut(&id) else {
            return Err(ControllerError::UnknownPeer(peer.into()));
        };
        let old = p.state.pool.replace(pool_id);
        if let Some(w) = weight {
            p.state.weight = w;
        }
        self.dirty = true;
        info!(peer, pool, weight = ?weight, "peer assigned");
        self.write_peer(id)?;
        if let Some(old) = old.filter(|&o| o != pool_id) {
            self.sync_pool(old)?;
            self.evacuate(old, now, "pool change")?;
        }
        self.sync_pool(pool_id)?;
        // A weight of 0 strands the peer's exporters like a drain.
        self.evacuate(pool_id, now, "weight change")?;
        Ok(())
    }

    /// Takes a peer out of its pool; its exporters move to the pool's other peers.
    pub fn unassign_peer(&mut self, pool: &str, peer: &str, now: Instant) -> Result<()> {
        let pool_id = self.pool_by_name(pool)?;
        let id = self.peer_by_name(peer)?;
        let Some(p) = self.peers.get_mut(&id) else {
            return Err(ControllerError::UnknownPeer(peer.into()));
        };
        if p.state.pool != Some(pool_id) {
            return Err(ControllerError::Conflict(format!(
                "peer {peer:?} is not in pool {pool:?}"
            )));
        }
        p.state.pool = None;
        self.dirty = true;
        info!(peer, pool, "peer unassigned");
        self.write_peer(id)?;
        self.sync_pool(pool_id)?;
        self.evacuate(pool_id, now, "unassign")?;
        Ok(())
    }
}
