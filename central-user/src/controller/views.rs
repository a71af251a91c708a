//! The API's views of the model: Connected Peers, pools, listeners, source groups, exporters,
//! plans and status.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sluice_common::protocol::{
    BalancerSettings, ExporterView, ListenerView, MoveView, OversizedView, PeerStatus, PeerView,
    PlanView, PoolHealth, PoolMember, PoolView, SourceGroupView,
};

use super::dataplane::DataPlane;
use super::engine::{Controller, Peer, elapsed};
use super::traffic::PoolPlan;
use crate::rebalancer::UnplaceableReason;

/// The controller's part of `sluicectl status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ControllerStatus {
    /// Known peers.
    pub peers: u64,
    /// Peers ONLINE (draining ones included).
    pub peers_online: u64,
    /// Known exporters.
    pub exporters: u64,
    /// Every pool's health.
    pub pools: Vec<PoolHealth>,
    /// Pools whose traffic is dropped because no peer can take it: say it loudly.
    pub pools_without_healthy_peer: Vec<String>,
    /// Rebalances that moved at least one exporter.
    pub rebalances: u64,
    /// Peers declared OFFLINE.
    pub failovers: u64,
    /// Exporter map entries flipped.
    pub moves: u64,
    /// Moves waiting for a peer to confirm templates.
    pub pending_installs: u64,
    /// Template reports that reached Central after their exporter had moved away from the
    /// reporting peer, forwarded to the exporter's peer.
    pub templates_forwarded: u64,
    /// Rebalancer settings.
    pub balancer: BalancerSettings,
}

/// `t` as milliseconds since the Unix epoch, given the same moment on both clocks.
fn unix_ms(now: Instant, wall: SystemTime, t: Instant) -> Option<u64> {
    let at = wall.checked_sub(elapsed(now, t))?;
    let ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis();
    u64::try_from(ms).ok()
}

fn status_of(p: &Peer) -> PeerStatus {
    match (p.state.online, p.state.draining) {
        (false, _) => PeerStatus::Offline,
        (true, true) => PeerStatus::Draining,
        (true, false) => PeerStatus::Online,
    }
}

fn count<I: Iterator>(it: I) -> u64 {
    u64::try_from(it.count()).unwrap_or(u64::MAX)
}

impl<D: DataPlane> Controller<D> {
    /// The Connected Peers table; `now` and `wall` are the same moment on both clocks.
    pub fn peer_views(&self, now: Instant, wall: SystemTime) -> Vec<PeerView> {
        let mut exporters: BTreeMap<u32, u64> = BTreeMap::new();
        for e in self.exporters.values() {
            *exporters.entry(e.state.peer).or_default() += 1;
        }
        self.peers
            .values()
            .map(|p| PeerView {
                id: p.state.id,
                name: p.state.name.clone(),
                uuid: p.state.uuid,
                version: p.state.version.clone(),
                data_addr: p.state.data_addr,
                ports: p.state.ports.clone(),
                pool: p.state.pool.map(|id| self.pool_name(id)),
                weight: p.state.weight,
                status: status_of(p),
                last_seen_unix_ms: p.last_seen.and_then(|t| unix_ms(now, wall, t)),
                exporters: exporters.get(&p.state.id).copied().unwrap_or(0),
                metrics: p.metrics,
            })
            .collect()
    }

    /// Every pool with its members.
    pub fn pool_views(&self) -> Vec<PoolView> {
        self.pools
            .values()
            .map(|pool| PoolView {
                name: pool.name.clone(),
                id: pool.id,
                peers: self
                    .peers
                    .values()
                    .filter(|p| p.state.pool == Some(pool.id))
                    .map(|p| PoolMember {
                        peer: p.state.name.clone(),
                        weight: p.state.weight,
                        status: status_of(p),
                    })
                    .collect(),
                exporters: count(self.exporters.values().filter(|e| e.state.pool == pool.id)),
            })
            .collect()
    }

    /// Every listener with its pool, by address.
    pub fn listener_views(&self) -> Vec<ListenerView> {
        self.listeners
            .iter()
            .map(|(&address, &pool)| ListenerView {
                address,
                pool: self.pool_name(pool),
            })
            .collect()
    }

    /// Every source group with its pool, by network.
    pub fn source_group_views(&self) -> Vec<SourceGroupView> {
        self.source_groups
            .iter()
            .map(|(&cidr, &pool)| SourceGroupView {
                cidr,
                pool: self.pool_name(pool),
            })
            .collect()
    }

    /// Every known exporter.
    pub fn exporter_views(&self, now: Instant, wall: SystemTime) -> Vec<ExporterView> {
        self.exporters
            .values()
            .map(|e| ExporterView {
                address: e.state.addr,
                pool: Some(self.pool_name(e.state.pool)),
                peer: Some(self.peer_name(e.state.peer)),
                pps: e.pps,
                bps: e.bps,
                pinned: e.state.pinned,
                last_seen_unix_ms: e.last_seen.and_then(|t| unix_ms(now, wall, t)),
            })
            .collect()
    }

    /// Where an exporter is assigned now: (pool id, peer id).
    pub fn assignment(&self, addr: IpAddr) -> Option<(u32, u32)> {
        self.exporters
            .get(&addr)
            .map(|e| (e.state.pool, e.state.peer))
    }

    /// The rebalancer settings as the API shows them.
    pub fn balancer_settings(&self) -> BalancerSettings {
        BalancerSettings {
            rebalance_interval_s: self.balancer.rebalance_interval_s,
            distribution_margin_pct: self.balancer.distribution_margin_pct,
            peer_timeout_ms: self.balancer.peer_timeout_ms,
        }
    }

    /// Plans with peer and pool names, for `sluicectl balancer plan|run`.
    pub fn plan_view(&self, plans: &[PoolPlan], applied: bool) -> PlanView {
        PlanView {
            moves: plans
                .iter()
                .flat_map(|p| {
                    p.plan.moves.iter().map(|m| MoveView {
                        exporter: m.exporter,
                        pool: p.pool.clone(),
                        from: self.peer_name(m.from),
                        to: self.peer_name(m.to),
                        pps: m.rate,
                    })
                })
                .collect(),
            too_large: plans
                .iter()
                .flat_map(|p| {
                    p.plan
                        .unplaceable
                        .iter()
                        .filter(|u| u.reason == UnplaceableReason::Elephant)
                        .map(|u| OversizedView {
                            exporter: u.exporter,
                            pool: p.pool.clone(),
                            pps: u.rate,
                        })
                })
                .collect(),
            applied,
        }
    }

    /// Health summary; `pools_without_healthy_peer` lists pools whose traffic is dropped.
    pub fn status(&self) -> ControllerStatus {
        let pools: Vec<PoolHealth> = self
            .pools
            .values()
            .map(|pool| {
                let members = self
                    .peers
                    .values()
                    .filter(|p| p.state.pool == Some(pool.id));
                PoolHealth {
                    name: pool.name.clone(),
                    healthy_peers: count(members.clone().filter(|p| self.eligible(p.state.id))),
                    peers: count(members),
                }
            })
            .collect();
        ControllerStatus {
            peers: count(self.peers.values()),
            peers_online: count(self.peers.values().filter(|p| p.state.online)),
            exporters: count(self.exporters.values()),
            pools_without_healthy_peer: pools
                .iter()
                .filter(|p| p.healthy_peers == 0)
                .map(|p| p.name.clone())
                .collect(),
            pools,
            rebalances: self.counters.rebalances,
            failovers: self.counters.failovers,
            moves: self.counters.moves,
            pending_installs: count(0..self.traffic.pending_installs()),
            templates_forwarded: self.counters.templates_forwarded,
            balancer: self.balancer_settings(),
        }
    }
}
