//! Test support for Central's control API, behind the `testing` feature (this package's
//! tests and the peer's enable it through dev-dependencies; nothing else should): a small
//! in-memory controller behind [`ControlPlane`] ([`FakeControl`]) and a control API [`Server`]
//! on 127.0.0.1:0 with a fresh state dir, on the fake or on the real controller over the
//! in-memory data plane.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::api::{
    self, ApiContext, CertSource, ControlError, ControlPlane, Limits, LiveControl, SessionPeer,
    Sessions, TlsIdentity,
};
use crate::auth::{Authenticator, RateLimit, TokenKind, token_generate};
use crate::controller::{BalancerConfig, Controller, MemoryDataPlane};
use sluice_common::client::Pin;
use sluice_common::protocol::{
    BalancerPatch, BalancerSettings, Cidr, ExporterView, ListenerView, PeerMetrics, PeerStatus,
    PeerView, PlanView, PoolHealth, PoolMember, PoolView, Register, Registered, SourceGroupView,
    StatusView, Templates,
};
use tokio::sync::oneshot;

#[derive(Default)]
pub struct State {
    pub peers: BTreeMap<String, PeerView>,
    pub pools: BTreeMap<String, Vec<String>>,
    pub listeners: BTreeMap<SocketAddr, String>,
    pub groups: BTreeMap<Cidr, String>,
    pub heartbeats: u64,
    pub templates: Vec<(u32, Templates)>,
    pub installed: Vec<(u32, u64)>,
    pub synced: Vec<(u32, u64)>,
    pub sessions_lost: Vec<u32>,
}

/// Just enough controller to answer every call.
pub struct FakeControl {
    pub state: Mutex<State>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("test setup")
        .as_millis() as u64
}

impl FakeControl {
    pub fn new() -> Arc<Self> {
        let mut state = State::default();
        state.pools.insert("default".into(), Vec::new());
        Arc::new(FakeControl {
            state: Mutex::new(state),
        })
    }

    fn peer_mut<'a>(state: &'a mut State, name: &str) -> Result<&'a mut PeerView, ControlError> {
        state
            .peers
            .get_mut(name)
            .ok_or_else(|| ControlError::NotFound(format!("unknown peer {name}")))
    }

    fn pool_members<'a>(
        state: &'a mut State,
        pool: &str,
    ) -> Result<&'a mut Vec<String>, ControlError> {
        state
            .pools
            .get_mut(pool)
            .ok_or_else(|| ControlError::NotFound(format!("unknown pool {pool}")))
    }
}

impl ControlPlane for FakeControl {
    fn register_peer(
        &self,
        peer: &Register,
        _source: SocketAddr,
    ) -> Result<Registered, ControlError> {
        let mut s = self.state.lock().expect("test setup");
        let pool = peer.pool.clone().unwrap_or_else(|| "default".into());
        let next_id = s.peers.len() as u32;
        let id = s.peers.get(&peer.name).map_or(next_id, |p| p.id);
        Self::pool_members(&mut s, &pool)?.push(peer.name.clone());
        s.peers.insert(
            peer.name.clone(),
            PeerView {
                id,
                name: peer.name.clone(),
                uuid: peer.uuid,
                version: peer.version.clone(),
                data_addr: peer.data_addr,
                ports: peer.ports.clone(),
                pool: Some(pool.clone()),
                weight: peer.weight,
                status: PeerStatus::Online,
                last_seen_unix_ms: Some(now_ms()),
                exporters: 0,
                metrics: None,
            },
        );
        Ok(Registered {
            epoch: 0,
            peer_id: id,
            pool,
            heartbeat_interval_ms: 100,
            central_version: "test".into(),
        })
    }

    fn heartbeat(&self, peer: &SessionPeer, metrics: PeerMetrics) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        s.heartbeats += 1;
        let peer = Self::peer_mut(&mut s, &peer.name)?;
        peer.metrics = Some(metrics);
        peer.last_seen_unix_ms = Some(now_ms());
        Ok(())
    }

    fn templates_learned(
        &self,
        peer: &SessionPeer,
        templates: Templates,
    ) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        s.templates.push((peer.id, templates));
        Ok(())
    }

    fn templates_installed(&self, peer: &SessionPeer, request_id: u64) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        s.installed.push((peer.id, request_id));
        Ok(())
    }

    fn templates_synced(&self, peer: &SessionPeer, request_id: u64) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        s.synced.push((peer.id, request_id));
        Ok(())
    }

    fn session_lost(&self, peer: &SessionPeer) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        s.sessions_lost.push(peer.id);
        Ok(())
    }

    fn status(&self) -> Result<StatusView, ControlError> {
        let s = self.state.lock().expect("test setup");
        Ok(StatusView {
            version: "test".into(),
            fingerprint: String::new(),
            uptime_s: 0,
            peers: s.peers.len() as u64,
            peers_online: s.peers.len() as u64,
            exporters: 1,
            pools: s
                .pools
                .iter()
                .map(|(name, members)| PoolHealth {
                    name: name.clone(),
                    healthy_peers: members.len() as u64,
                    peers: members.len() as u64,
                })
                .collect(),
            rebalances: 2,
            failovers: 1,
            auth_failures: 0,
            balancer: self.balancer()?,
            ha_role: None,
        })
    }

    fn peers(&self) -> Result<Vec<PeerView>, ControlError> {
        Ok(self
            .state
            .lock()
            .expect("test setup")
            .peers
            .values()
            .cloned()
            .collect())
    }

    fn set_draining(&self, peer: &str, draining: bool) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        Self::peer_mut(&mut s, peer)?.status = if draining {
            PeerStatus::Draining
        } else {
            PeerStatus::Online
        };
        Ok(())
    }

    fn pools(&self) -> Result<Vec<PoolView>, ControlError> {
        let s = self.state.lock().expect("test setup");
        Ok(s.pools
            .iter()
            .enumerate()
            .map(|(id, (name, members))| PoolView {
                name: name.clone(),
                id: id as u32,
                peers: members
                    .iter()
                    .map(|m| PoolMember {
                        peer: m.clone(),
                        weight: s.peers[m].weight,
                        status: s.peers[m].status,
                    })
                    .collect(),
                exporters: 0,
            })
            .collect())
    }

    fn create_pool(&self, name: &str) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        if s.pools.contains_key(name) {
            return Err(ControlError::Conflict(format!("pool {name} exists")));
        }
        s.pools.insert(name.into(), Vec::new());
        Ok(())
    }

    fn delete_pool(&self, name: &str) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        Self::pool_members(&mut s, name)?;
        s.pools.remove(name);
        Ok(())
    }

    fn assign(&self, pool: &str, peer: &str, weight: Option<u32>) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        let view = Self::peer_mut(&mut s, peer)?;
        if let Some(w) = weight {
            view.weight = w;
        }
        view.pool = Some(pool.into());
        for members in s.pools.values_mut() {
            members.retain(|m| m != peer);
        }
        Self::pool_members(&mut s, pool)?.push(peer.into());
        Ok(())
    }

    fn unassign(&self, pool: &str, peer: &str) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        Self::peer_mut(&mut s, peer)?.pool = None;
        Self::pool_members(&mut s, pool)?.retain(|m| m != peer);
        Ok(())
    }

    fn listeners(&self) -> Result<Vec<ListenerView>, ControlError> {
        let s = self.state.lock().expect("test setup");
        Ok(s.listeners
            .iter()
            .map(|(&address, pool)| ListenerView {
                address,
                pool: pool.clone(),
            })
            .collect())
    }

    fn set_listener(&self, addr: SocketAddr, pool: &str) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        Self::pool_members(&mut s, pool)?;
        s.listeners.insert(addr, pool.into());
        Ok(())
    }

    fn remove_listener(&self, addr: SocketAddr) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        s.listeners
            .remove(&addr)
            .map(drop)
            .ok_or_else(|| ControlError::NotFound(format!("unknown listener {addr}")))
    }

    fn source_groups(&self) -> Result<Vec<SourceGroupView>, ControlError> {
        let s = self.state.lock().expect("test setup");
        Ok(s.groups
            .iter()
            .map(|(&cidr, pool)| SourceGroupView {
                cidr,
                pool: pool.clone(),
            })
            .collect())
    }

    fn set_source_group(&self, cidr: Cidr, pool: &str) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        Self::pool_members(&mut s, pool)?;
        s.groups.insert(cidr, pool.into());
        Ok(())
    }

    fn remove_source_group(&self, cidr: Cidr) -> Result<(), ControlError> {
        let mut s = self.state.lock().expect("test setup");
        s.groups
            .remove(&cidr)
            .map(drop)
            .ok_or_else(|| ControlError::NotFound(format!("unknown source group {cidr}")))
    }

    fn exporters(&self) -> Result<Vec<ExporterView>, ControlError> {
        Ok(vec![ExporterView {
            address: "198.18.0.10".parse().expect("test setup"),
            pool: Some("default".into()),
            peer: Some("peer-a".into()),
            pps: 1500.0,
            bps: 12e6,
            pinned: false,
            last_seen_unix_ms: Some(now_ms()),
        }])
    }

    fn move_exporter(&self, _addr: IpAddr, peer: &str) -> Result<(), ControlError> {
        Self::peer_mut(&mut self.state.lock().expect("test setup"), peer).map(drop)
    }

    fn set_pinned(&self, _addr: IpAddr, _pinned: bool) -> Result<(), ControlError> {
        Ok(())
    }

    fn balancer(&self) -> Result<BalancerSettings, ControlError> {
        Ok(BalancerSettings {
            rebalance_interval_s: 90,
            distribution_margin_pct: 5.0,
            peer_timeout_ms: 3000,
        })
    }

    fn set_balancer(&self, patch: BalancerPatch) -> Result<BalancerSettings, ControlError> {
        let mut b = self.balancer()?;
        b.rebalance_interval_s = patch.rebalance_interval_s.unwrap_or(b.rebalance_interval_s);
        Ok(b)
    }

    fn rebalance(&self, apply: bool) -> Result<PlanView, ControlError> {
        Ok(PlanView {
            moves: Vec::new(),
            too_large: Vec::new(),
            applied: apply,
        })
    }
}

/// A running control API.
pub struct Server {
    pub addr: SocketAddr,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub fingerprint: String,
    pub cert: std::path::PathBuf,
    pub peer_token: String,
    pub admin_token: String,
    pub control: Arc<FakeControl>,
    /// The real controller, when started with [`Server::start_live`].
    pub live: Option<Arc<Mutex<Controller<MemoryDataPlane>>>>,
    pub auth: Arc<Authenticator>,
    pub sessions: Sessions,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts a server on the current runtime.
    pub async fn start() -> Self {
        Self::start_with(RateLimit::default(), false).await
    }

    /// A server on the real controller over the in-memory data plane.
    pub async fn start_live() -> Self {
        Self::start_with(RateLimit::default(), true).await
    }

    pub async fn start_with(limit: RateLimit, live: bool) -> Self {
        let dir = tempfile::tempdir().expect("test setup");
        let now = SystemTime::now();
        let peer_token = token_generate(dir.path(), TokenKind::Peer, None, now)
            .expect("test setup")
            .token;
        let admin_token = token_generate(dir.path(), TokenKind::Admin, None, now)
            .expect("test setup")
            .token;
        let tls = TlsIdentity::load(&CertSource::StateDir {
            dir: dir.path().into(),
            extra_names: Vec::new(),
        })
        .expect("test setup");
        let (fingerprint, cert) = (tls.fingerprint.clone(), tls.cert_path.clone());
        let auth = Arc::new(Authenticator::open(dir.path(), limit).expect("test setup"));
        let control = FakeControl::new();
        let sessions = Sessions::default();
        let (backend, live): (Arc<dyn ControlPlane>, _) = if live {
            let (controller, _) = Controller::new(
                MemoryDataPlane::new(),
                BalancerConfig::default(),
                Instant::now(),
            )
            .expect("test setup");
            let controller = Arc::new(Mutex::new(controller));
            let backend = LiveControl::new(controller.clone(), sessions.clone());
            (Arc::new(backend), Some(controller))
        } else {
            (control.clone(), None)
        };
        let limits = Limits {
            request_timeout: Duration::from_secs(2),
            ..Limits::default()
        };
        let ctx = ApiContext::new(tls, auth.clone(), backend, sessions.clone())
            .with_limits(limits)
            .with_xdp_counters(Arc::new(|| {
                sluice_common::Reason::ALL
                    .iter()
                    .map(|r| (r.label(), *r as u64))
                    .collect()
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup");
        let addr = listener.local_addr().expect("test setup");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(api::serve(listener, Arc::new(ctx), async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            url: format!("https://{addr}"),
            dir,
            fingerprint,
            cert,
            peer_token,
            admin_token,
            control,
            live,
            auth,
            sessions,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The live controller's view of the peer `name`, if it registered.
    pub fn peer_view(&self, name: &str) -> Option<PeerView> {
        let controller = self.live.as_ref().expect("a server on the live controller");
        let c = controller.lock().expect("test setup");
        c.peer_views(Instant::now(), SystemTime::now())
            .into_iter()
            .find(|p| p.name == name)
    }

    pub fn pin(&self) -> Pin {
        Pin::fingerprint(&self.fingerprint).expect("test setup")
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("test setup");
        }
    }
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}
