//! [`ControlPlane`] on the real [`Controller`]: every call locks it, passes the clock, and then
//! sends the template installations the call queued to the peers' sessions.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use sluice_common::protocol::{
    BalancerPatch, BalancerSettings, CentralMessage, Cidr, ExporterView, HEARTBEAT_INTERVAL_MS,
    ListenerView, PeerMetrics, PeerView, PlanView, PoolView, Register, Registered, SourceGroupView,
    StatusView, Templates,
};
use tracing::warn;

use super::control::{ControlError, ControlPlane, SessionPeer};
use super::sessions::Sessions;
use crate::controller::{Controller, ControllerError, DataPlane};

impl From<ControllerError> for ControlError {
    fn from(e: ControllerError) -> Self {
        let message = e.to_string();
        match e {
            ControllerError::UnknownPool(_)
            | ControllerError::UnknownPeer(_)
            | ControllerError::UnknownExporter(_)
            | ControllerError::UnknownListener(_)
            | ControllerError::UnknownSourceGroup(_) => ControlError::NotFound(message),
            ControllerError::Conflict(_) => ControlError::Conflict(message),
            ControllerError::Invalid { .. } => ControlError::Invalid(message),
            ControllerError::DataPlane(_) => ControlError::Internal(message),
        }
    }
}

/// The controller shared by the API server and the daemon's loop.
pub struct LiveControl<D: DataPlane> {
    controller: Arc<Mutex<Controller<D>>>,
    sessions: Sessions,
}

impl<D: DataPlane + 'static> LiveControl<D> {
    /// Serves `controller`; installations go out through `sessions` (give the same registry to
    /// [`super::ApiContext::new`]).
    pub fn new(controller: Arc<Mutex<Controller<D>>>, sessions: Sessions) -> Self {
        LiveControl {
            controller,
            sessions,
        }
    }

    /// Runs `f` on the locked controller with the current time, then sends the template
    /// installations it queued. The daemon's loop uses this too (`tick`, ring-buffer events),
    /// so installations from failover and rebalancing go out at once.
    pub fn with<R>(
        &self,
        f: impl FnOnce(&mut Controller<D>, Instant) -> Result<R, ControllerError>,
    ) -> Result<R, ControlError> {
        let mut controller = self.controller.lock().unwrap_or_else(|p| p.into_inner());
        let result = f(&mut controller, Instant::now());
        for request in controller.take_sync_requests() {
            let msg = CentralMessage::SyncTemplates {
                request_id: request.request_id,
                exporter: request.exporter,
            };
            // The move goes on with what the peer reported when the sync times out.
            if let Err(error) = self.sessions.send(request.peer_id, msg) {
                warn!(peer = %request.peer, %error, "template sync request not sent");
            }
        }
        for request in controller.take_install_requests() {
            let msg = CentralMessage::InstallTemplates {
                request_id: request.request_id,
                templates: request.templates,
            };
            // The move still happens when the controller's install timeout passes.
            if let Err(error) = self.sessions.send(request.peer_id, msg) {
                warn!(peer = %request.peer, %error, "template installation not sent");
            }
        }
        Ok(result?)
    }
}

impl<D: DataPlane + 'static> ControlPlane for LiveControl<D> {
    fn register_peer(
        &self,
        register: &Register,
        _source: SocketAddr,
    ) -> Result<Registered, ControlError> {
        let registration = self.with(|c, now| c.register_peer(register, now))?;
        Ok(Registered {
            peer_id: registration.peer_id,
            pool: registration.pool.unwrap_or_default(),
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            central_version: env!("CARGO_PKG_VERSION").into(),
            epoch: 0,
        })
    }

    fn heartbeat(&self, peer: &SessionPeer, metrics: PeerMetrics) -> Result<(), ControlError> {
        self.with(|c, now| c.heartbeat(&peer.name, metrics, now))
    }

    fn session_lost(&self, peer: &SessionPeer) -> Result<(), ControlError> {
        self.with(|c, now| c.session_lost(&peer.name, now))
    }

    fn templates_learned(
        &self,
        peer: &SessionPeer,
        templates: Templates,
    ) -> Result<(), ControlError> {
        self.with(|c, _| c.report_templates(&peer.name, templates))
    }

    fn templates_installed(&self, peer: &SessionPeer, request_id: u64) -> Result<(), ControlError> {
        self.with(|c, now| c.templates_installed(&peer.name, request_id, now))
            .map(drop)
    }

    fn templates_synced(&self, peer: &SessionPeer, request_id: u64) -> Result<(), ControlError> {
        self.with(|c, now| c.templates_synced(&peer.name, request_id, now))
            .map(drop)
    }

    fn status(&self) -> Result<StatusView, ControlError> {
        let s = self.with(|c, _| Ok(c.status()))?;
        Ok(StatusView {
            version: env!("CARGO_PKG_VERSION").into(),
            fingerprint: String::new(),
            uptime_s: 0,
            peers: s.peers,
            peers_online: s.peers_online,
            exporters: s.exporters,
            pools: s.pools,
            rebalances: s.rebalances,
            failovers: s.failovers,
            auth_failures: 0,
            balancer: s.balancer,
            ha_role: None,
        })
    }

    fn peers(&self) -> Result<Vec<PeerView>, ControlError> {
        self.with(|c, now| Ok(c.peer_views(now, SystemTime::now())))
    }

    fn set_draining(&self, peer: &str, draining: bool) -> Result<(), ControlError> {
        self.with(|c, now| {
            if draining {
                c.drain(peer, now)
            } else {
                c.undrain(peer, now)
            }
        })
    }

    fn pools(&self) -> Result<Vec<PoolView>, ControlError> {
        self.with(|c, _| Ok(c.pool_views()))
    }

    fn create_pool(&self, name: &str) -> Result<(), ControlError> {
        self.with(|c, _| c.create_pool(name)).map(drop)
    }

    fn delete_pool(&self, name: &str) -> Result<(), ControlError> {
        self.with(|c, _| c.delete_pool(name))
    }

    fn assign(&self, pool: &str, peer: &str, weight: Option<u32>) -> Result<(), ControlError> {
        self.with(|c, now| c.assign_peer(pool, peer, weight, now))
    }

    fn unassign(&self, pool: &str, peer: &str) -> Result<(), ControlError> {
        self.with(|c, now| c.unassign_peer(pool, peer, now))
    }

    fn listeners(&self) -> Result<Vec<ListenerView>, ControlError> {
        self.with(|c, _| Ok(c.listener_views()))
    }

    fn set_listener(&self, addr: SocketAddr, pool: &str) -> Result<(), ControlError> {
        self.with(|c, _| c.set_listener(addr, pool))
    }

    fn remove_listener(&self, addr: SocketAddr) -> Result<(), ControlError> {
        self.with(|c, _| c.remove_listener(addr))
    }

    fn source_groups(&self) -> Result<Vec<SourceGroupView>, ControlError> {
        self.with(|c, _| Ok(c.source_group_views()))
    }

    fn set_source_group(&self, cidr: Cidr, pool: &str) -> Result<(), ControlError> {
        self.with(|c, _| c.set_source_group(cidr, pool))
    }

    fn remove_source_group(&self, cidr: Cidr) -> Result<(), ControlError> {
        self.with(|c, _| c.remove_source_group(cidr))
    }

    fn exporters(&self) -> Result<Vec<ExporterView>, ControlError> {
        self.with(|c, now| Ok(c.exporter_views(now, SystemTime::now())))
    }

    fn move_exporter(&self, addr: IpAddr, peer: &str) -> Result<(), ControlError> {
        self.with(|c, now| c.move_exporter(addr, peer, now))
    }

    fn set_pinned(&self, addr: IpAddr, pinned: bool) -> Result<(), ControlError> {
        self.with(|c, _| if pinned { c.pin(addr) } else { c.unpin(addr) })
    }

    fn balancer(&self) -> Result<BalancerSettings, ControlError> {
        self.with(|c, _| Ok(c.balancer_settings()))
    }

    fn set_balancer(&self, patch: BalancerPatch) -> Result<BalancerSettings, ControlError> {
        self.with(|c, _| {
            let mut config = c.balancer().clone();
            if let Some(v) = patch.rebalance_interval_s {
                config.rebalance_interval_s = v;
            }
            if let Some(v) = patch.distribution_margin_pct {
                config.distribution_margin_pct = v;
            }
            if let Some(v) = patch.peer_timeout_ms {
                config.peer_timeout_ms = v;
            }
            c.set_balancer(config)?;
            Ok(c.balancer_settings())
        })
    }

    fn rebalance(&self, apply: bool) -> Result<PlanView, ControlError> {
        self.with(|c, now| {
            if apply {
                let plans = c.run_now(now)?;
                Ok(c.plan_view(&plans, true))
            } else {
                Ok(c.plan_view(&c.plan(now), false))
            }
        })
    }
}
