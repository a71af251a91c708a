//! A running node of a hot-standby pair.
//!
//! - One task decides ([`super::role::decide`]) every half heartbeat and is the only one that
//!   changes the role: takeovers, stepping down, handovers.
//! - One task keeps a link to the partner open (client side); the partner's link to us
//!   arrives through the control API ([`crate::api::HaControl::serve_link`], server side).
//!   Both carry heartbeats both ways; the active sends its mirror on the links the standby
//!   opened, so there is one mirror stream.
//! - The active holds the virtual IPs and re-announces them every [`ANNOUNCE_EVERY`]; the
//!   standby mirrors and refuses peer sessions and changes (the API asks [`Node::refusal`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sluice_common::client::{ConnError, Connection};
use sluice_common::protocol::HaStatusView;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, error, info, warn};

use super::link::{self, Assembler, Beat, ChunkError, Credential, HaMessage, Side};
use super::mirror::{Files, Mirror, MirrorError};
use super::role::{self, Decision, Partner, Role};
use super::vip::{VipError, VipSet};
use crate::api::{ControlError, HaControl, HaStream, IdentityCell, Sessions, TlsIdentity};
use crate::atomic_file;
use crate::controller::{Controller, DataPlane};

/// Re-announcement period of the virtual IPs while active: one lost gratuitous ARP must not
/// strand the virtual IP.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);
/// Announcements right after a takeover, [`BURST_GAP`] apart.
const BURST: usize = 5;
const BURST_GAP: Duration = Duration::from_millis(50);
/// How often the client side retries the partner.
const RECONNECT: Duration = Duration::from_millis(50);
/// Epoch file in the state dir.
const EPOCH_FILE: &str = "ha.json";

/// What a node does with its virtual IPs (the real one is [`super::vip::VipSet`]).
pub trait VipControl: Send + Sync + 'static {
    /// Adds the virtual IPs here and announces them once.
    fn claim(&self) -> Result<(), VipFailure>;
    /// Announces them once more.
    fn announce(&self) -> Result<(), VipFailure>;
    /// Removes them here.
    fn release(&self) -> Result<(), VipFailure>;
    /// Whether another host answers for them within `wait` (the split-brain witness).
    fn held_elsewhere(&self, wait: Duration) -> Result<bool, VipFailure>;
}

/// What failed on the virtual IPs: one error per interface that failed, reported together.
#[derive(Debug, thiserror::Error)]
#[error("{}", join(.0))]
pub struct VipFailure(pub Vec<VipError>);

impl From<VipError> for VipFailure {
    fn from(e: VipError) -> Self {
        Self(vec![e])
    }
}

fn join(errors: &[VipError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why an HA link went down (logged with "ha: link down").
#[derive(Debug, thiserror::Error)]
enum LinkDown {
    /// Nothing heard from the partner for the takeover timeout.
    #[error("silent for {} ms", .0.as_millis())]
    Silent(Duration),
    /// The partner closed the link.
    #[error("closed")]
    Closed,
    /// The partner greeted twice.
    #[error("a second Hello")]
    SecondHello,
    /// Reading or writing the link.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// A malformed mirror chunk.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// The task applying a mirror failed.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// The virtual IPs of every interface (the exporters' side, and the peers' where they have
/// one): claimed, announced and released together; another holder of any of them counts.
impl VipControl for Vec<VipSet> {
    fn claim(&self) -> Result<(), VipFailure> {
        each(self, VipSet::claim)
    }

    fn announce(&self) -> Result<(), VipFailure> {
        each(self, VipSet::announce)
    }

    fn release(&self) -> Result<(), VipFailure> {
        each(self, VipSet::release)
    }

    fn held_elsewhere(&self, wait: Duration) -> Result<bool, VipFailure> {
        let share = wait / u32::try_from(self.len().max(1)).unwrap_or(1);
        for set in self {
            if set.held_elsewhere(share)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Runs `f` on every set, then reports the failures together (one interface failing must not
/// keep the others from being claimed or released).
fn each(sets: &[VipSet], f: impl Fn(&VipSet) -> Result<(), VipError>) -> Result<(), VipFailure> {
    let errors: Vec<VipError> = sets.iter().filter_map(|s| f(s).err()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(VipFailure(errors))
    }
}

/// A node's settings (from `[ha]`).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `ha.node`.
    pub name: String,
    /// Its priority.
    pub priority: u8,
    /// The partner's name.
    pub partner: String,
    /// The partner's control API address.
    pub partner_addr: SocketAddr,
    /// `ha.heartbeat_interval_ms`.
    pub heartbeat: Duration,
    /// `ha.takeover_timeout_ms`.
    pub takeover_timeout: Duration,
    /// `ha.preempt`.
    pub preempt: bool,
    /// `ha.vips` as written.
    pub vips: Vec<String>,
    /// `ha.interface`.
    pub interface: String,
    /// The shared secret.
    pub credential: Credential,
    /// Mirrored files.
    pub files: Files,
}

#[derive(Serialize, Deserialize)]
struct EpochFile {
    epoch: u64,
}

struct PartnerState {
    beat: Beat,
    heard: Instant,
}

struct Inner {
    role: Role,
    epoch: u64,
    partner: Option<PartnerState>,
    links: u32,
    /// Active: last sequence sent; standby: last applied.
    mirror_seq: u64,
    mirror_lag_ms: Option<u64>,
    synced: bool,
    takeovers: u64,
    refused: u64,
    link_refused: u64,
    last_change: Option<(u64, String)>,
    /// Switchover asked (`sluicectl`, or a preempting standby): the active's server-side link
    /// sends [`HaMessage::Handover`].
    handover_out: bool,
    /// The active handed over: take over at the next decision.
    handover_in: bool,
    /// Preemption: the client side asks the active once.
    request_handover: bool,
    /// A peer was registered under a newer epoch: step down at the next decision.
    newer_epoch: Option<u64>,
    last_refusal_log: Option<Instant>,
}

/// A running node.
pub struct Node<D: DataPlane> {
    cfg: NodeConfig,
    controller: Arc<Mutex<Controller<D>>>,
    sessions: Sessions,
    identity: Arc<IdentityCell>,
    vip: Arc<dyn VipControl>,
    active: AtomicBool,
    started: Instant,
    inner: Mutex<Inner>,
    connector: TlsConnector,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The epoch file is unreadable.
    #[error("ha: {path}: {reason}")]
    EpochFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// TLS client set-up failed.
    #[error("ha: {0}")]
    Tls(#[from] rustls::Error),
}

impl<D: DataPlane + Send + 'static> Node<D> {
    /// A standby node (every node starts as the standby; the rules decide from there).
    pub fn new(
        cfg: NodeConfig,
        controller: Arc<Mutex<Controller<D>>>,
        sessions: Sessions,
        identity: Arc<IdentityCell>,
        vip: Arc<dyn VipControl>,
    ) -> Result<Arc<Self>, NodeError> {
        let path = cfg.files.state_dir.join(EPOCH_FILE);
        let epoch = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<EpochFile>(&bytes)
                    .map_err(|e| NodeError::EpochFile {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?
                    .epoch
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(NodeError::EpochFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        // A node that restarts does not know whether it still holds the role: it starts as the
        // standby, without the virtual IPs a crashed run may have left on the interface.
        if let Err(e) = vip.release() {
            warn!(error = %e, "ha: could not remove leftover virtual IPs at start");
        }
        info!(node = %cfg.name, epoch, partner = %cfg.partner, partner_addr = %cfg.partner_addr, "ha: starting as the standby");
        Ok(Arc::new(Node {
            connector: TlsConnector::from(link::client_config()?),
            cfg,
            controller,
            sessions,
            identity,
            vip,
            active: AtomicBool::new(false),
            started: Instant::now(),
            inner: Mutex::new(Inner {
                role: Role::Standby,
                epoch,
                partner: None,
                links: 0,
                mirror_seq: 0,
                mirror_lag_ms: None,
                synced: false,
                takeovers: 0,
                refused: 0,
                link_refused: 0,
                last_change: None,
                handover_out: false,
                handover_in: false,
                request_handover: false,
                newer_epoch: None,
                last_refusal_log: None,
            }),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn controller(&self) -> MutexGuard<'_, Controller<D>> {
        self.controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This node holds the active role (the run loop does the controller's work only then).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Starts the decision and client tasks on the current tokio runtime.
    pub fn spawn(self: &Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move { node.decide_loop().await });
        let node = self.clone();
        tokio::spawn(async move { node.client_loop().await });
    }

    /// Gives up the role on a clean stop, so the standby takes over at once.
    pub fn stop(&self) {
        if self.is_active() {
            self.step_down("this node is shutting down".into());
        }
    }

    fn beat(&self) -> Beat {
        let inner = self.lock();
        Beat {
            role: inner.role,
            epoch: inner.epoch,
            priority: self.cfg.priority,
            synced: inner.synced,
            mirror_lag_ms: inner.mirror_lag_ms,
        }
    }

    fn view(&self) -> role::View {
        let inner = self.lock();
        role::View {
            role: inner.role,
            epoch: inner.epoch,
            priority: self.cfg.priority,
            name: self.cfg.name.clone(),
            partner: inner.partner.as_ref().map(|p| Partner {
                role: p.beat.role,
                epoch: p.beat.epoch,
                priority: p.beat.priority,
                name: self.cfg.partner.clone(),
                heard_ago: p.heard.elapsed(),
            }),
            uptime: self.started.elapsed(),
            takeover_timeout: self.cfg.takeover_timeout,
            preempt: self.cfg.preempt,
            synced: inner.synced,
        }
    }

    async fn decide_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_announce = Instant::now();
        loop {
            tick.tick().await;
            if std::mem::take(&mut self.lock().handover_in) {
                self.take_over("planned switchover: the active handed over".into())
                    .await;
                next_announce = Instant::now() + ANNOUNCE_EVERY;
                continue;
            }
            let newer = self.lock().newer_epoch.take();
            if let Some(epoch) = newer {
                {
                    let mut inner = self.lock();
                    inner.epoch = inner.epoch.max(epoch);
                }
                let node = self.clone();
                let reason = format!("a peer was registered under a newer epoch ({epoch})");
                let _ = tokio::task::spawn_blocking(move || node.step_down(reason)).await;
                continue;
            }
            match role::decide(&self.view()) {
                Decision::Stay => {}
                Decision::StepDown(reason) => {
                    let node = self.clone();
                    let _ = tokio::task::spawn_blocking(move || node.step_down(reason)).await;
                }
                Decision::ProbeThenTakeOver(reason) => {
                    if self.probe_clear().await {
                        self.take_over(reason).await;
                        next_announce = Instant::now() + ANNOUNCE_EVERY;
                    }
                }
                Decision::RequestHandover => self.lock().request_handover = true,
            }
            if self.is_active() && Instant::now() >= next_announce {
                next_announce = Instant::now() + ANNOUNCE_EVERY;
                let node = self.clone();
                let _ = tokio::task::spawn_blocking(move || node.reannounce()).await;
            }
        }
    }

    /// Nobody else answers for the virtual IPs: the evidence beyond the HA link.
    async fn probe_clear(self: &Arc<Self>) -> bool {
        let wait = (self.cfg.takeover_timeout / 4).min(Duration::from_millis(100));
        let vip = self.vip.clone();
        let probed = tokio::task::spawn_blocking(move || vip.held_elsewhere(wait)).await;
        match probed {
            Ok(Ok(false)) => true,
            Ok(Ok(true)) => {
                let mut inner = self.lock();
                inner.refused += 1;
                let quiet = inner
                    .last_refusal_log
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
                if !quiet {
                    inner.last_refusal_log = Some(Instant::now());
                    warn!(
                        node = %self.cfg.name,
                        partner = %self.cfg.partner,
                        refused_total = inner.refused,
                        "ha: the partner is silent on the HA link but another host still answers for the virtual IP: no takeover (split-brain guard)"
                    );
                }
                false
            }
            Ok(Err(e)) => {
                error!(error = %e, "ha: cannot probe the virtual IPs: no takeover without evidence");
                false
            }
            Err(e) => {
                error!(error = %e, "ha: probe task failed");
                false
            }
        }
    }

    fn persist_epoch(&self, epoch: u64) {
        let path = self.cfg.files.state_dir.join(EPOCH_FILE);
        let body = serde_json::to_vec(&EpochFile { epoch }).unwrap_or_default();
        if let Err(e) = atomic_file::write(&path, &body, 0o644) {
            error!(path = %path.display(), error = %e, "ha: epoch not saved");
        }
    }

    async fn take_over(self: &Arc<Self>, reason: String) {
        let epoch = {
            let inner = self.lock();
            if inner.role == Role::Active {
                return;
            }
            let partner_epoch = inner.partner.as_ref().map_or(0, |p| p.beat.epoch);
            inner.epoch.max(partner_epoch) + 1
        };
        // The new term is on disk before anything acts on it.
        self.persist_epoch(epoch);
        let node = self.clone();
        let claimed = tokio::task::spawn_blocking(move || node.vip.claim()).await;
        match claimed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "ha: virtual IPs not claimed"),
            Err(e) => error!(error = %e, "ha: claim task failed"),
        }
        {
            let mut inner = self.lock();
            inner.epoch = epoch;
            inner.role = Role::Active;
            inner.takeovers += 1;
            inner.mirror_seq = 0;
            inner.synced = false;
            inner.last_change = Some((unix_ms(), reason.clone()));
        }
        // Peers keep their exporters: each gets a full timeout to reconnect here.
        self.controller().grace_peers(Instant::now());
        self.active.store(true, Ordering::Relaxed);
        warn!(node = %self.cfg.name, epoch, %reason, "ha: role change standby -> ACTIVE");
        let node = self.clone();
        tokio::spawn(async move {
            for _ in 1..BURST {
                tokio::time::sleep(BURST_GAP).await;
                if !node.is_active() {
                    return;
                }
                let vip = node.vip.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || vip.announce()).await {
                    warn!(error = %e, "ha: announcement failed");
                }
            }
        });
    }

    fn step_down(&self, reason: String) {
        if self.lock().role == Role::Standby {
            return;
        }
        // Decisions stop first, then the virtual IPs go, then the role says so.
        self.active.store(false, Ordering::Relaxed);
        if let Err(e) = self.vip.release() {
            error!(error = %e, "ha: virtual IPs not released");
        }
        let epoch = {
            let mut inner = self.lock();
            inner.role = Role::Standby;
            inner.synced = false;
            inner.mirror_seq = 0;
            inner.last_change = Some((unix_ms(), reason.clone()));
            if let Some(p) = &inner.partner {
                inner.epoch = inner.epoch.max(p.beat.epoch);
            }
            inner.epoch
        };
        self.persist_epoch(epoch);
        let closed = self.sessions.close_all();
        warn!(node = %self.cfg.name, epoch, %reason, peer_sessions_closed = closed, "ha: role change active -> STANDBY");
    }

    /// The periodic announcement, unless another host answers for the virtual IP (then the
    /// link settles who holds it, by epoch, rather than two nodes announcing in turn).
    fn reannounce(&self) {
        match self.vip.held_elsewhere(Duration::from_millis(20)) {
            Ok(true) => {
                warn!(
                    "ha: another host answers for the virtual IP while this node is active; not announcing"
                );
            }
            Ok(false) => {
                if let Err(e) = self.vip.announce() {
                    warn!(error = %e, "ha: announcement failed");
                }
            }
            Err(e) => warn!(error = %e, "ha: cannot probe the virtual IPs"),
        }
    }

    // --- the link ---------------------------------------------------------------------------

    async fn client_loop(self: Arc<Self>) {
        let mut logged_down = false;
        loop {
            match self.connect().await {
                Ok(stream) => {
                    logged_down = false;
                    let ekm = link::keying_material(stream.get_ref().1);
                    self.run_link(stream, ekm, Side::Client).await;
                }
                Err(e) => {
                    if !logged_down {
                        warn!(partner = %self.cfg.partner_addr, error = %e, "ha: partner unreachable");
                        logged_down = true;
                    }
                }
            }
            tokio::time::sleep(RECONNECT).await;
        }
    }

    async fn connect(&self) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let limit = self.cfg.takeover_timeout;
        let tcp = tokio::time::timeout(limit, TcpStream::connect(self.cfg.partner_addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::IpAddress(self.cfg.partner_addr.ip().into());
        tokio::time::timeout(limit, self.connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))?
    }

    fn refused(&self, source: &str, why: &str) {
        let mut inner = self.lock();
        inner.link_refused += 1;
        warn!(%source, reason = why, refused_total = inner.link_refused, "ha: link refused");
    }

    /// Hello both ways, then heartbeats, mirrors and handovers until the link breaks.
    async fn run_link<S: AsyncRead + AsyncWrite + Unpin>(
        self: &Arc<Self>,
        stream: S,
        ekm: Result<Vec<u8>, rustls::Error>,
        side: Side,
    ) {
        let source = self.cfg.partner_addr.to_string();
        let Ok(ekm) = ekm else {
            self.refused(&source, "no keying material");
            return;
        };
        let mut conn = Connection::new(stream);
        let other = match side {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        };
        let hello = HaMessage::Hello {
            node: self.cfg.name.clone(),
            proof: self.cfg.credential.proof(side, &self.cfg.name, &ekm),
        };
        if side == Side::Client && conn.write(&hello).await.is_err() {
            return;
        }
        let limit = self.cfg.takeover_timeout.max(Duration::from_secs(1));
        match tokio::time::timeout(limit, conn.read::<HaMessage>()).await {
            Ok(Ok(Some(HaMessage::Hello { node, proof })))
                if node == self.cfg.partner
                    && self.cfg.credential.verify(other, &node, &ekm, &proof) => {}
            Ok(Ok(Some(HaMessage::Hello { node, .. }))) => {
                self.refused(
                    &source,
                    &format!("node {node:?}: wrong HA credential or not the configured partner"),
                );
                return;
            }
            Ok(Err(e)) => {
                self.refused(&source, &format!("bad first message: {e}"));
                return;
            }
            Ok(Ok(_)) => {
                self.refused(&source, "the first message must be Hello");
                return;
            }
            Err(_) => {
                self.refused(&source, "no Hello in time");
                return;
            }
        }
        if side == Side::Server && conn.write(&hello).await.is_err() {
            return;
        }
        self.lock().links += 1;
        info!(partner = %self.cfg.partner, side = ?side, "ha: link up");
        let result = self.link_loop(&mut conn, side).await;
        {
            let mut inner = self.lock();
            inner.links -= 1;
            if inner.role == Role::Active {
                // Until the standby confirms a mirror on a new link.
                inner.synced = false;
            }
        }
        info!(partner = %self.cfg.partner, side = ?side, reason = %result.err().map(|e| e.to_string()).unwrap_or_default(), "ha: link down");
    }

    async fn link_loop<S: AsyncRead + AsyncWrite + Unpin>(
        self: &Arc<Self>,
        conn: &mut Connection<S>,
        side: Side,
    ) -> Result<(), LinkDown> {
        let mut tick = tokio::time::interval(self.cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut assembler = Assembler::default();
        let mut last_hash: Option<[u8; 32]> = None;
        let mut seq = 0u64;
        let mut sent_at: BTreeMap<u64, Instant> = BTreeMap::new();
        let silence = self.cfg.takeover_timeout;
        // When the partner was last heard on this link. Checked on every tick: a read timeout
        // inside the select would start afresh at every tick and never expire.
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if heard.elapsed() > silence {
                        return Err(LinkDown::Silent(silence));
                    }
                    conn.write(&HaMessage::Beat(self.beat())).await?;
                    let (mirror_to_partner, handover, request) = {
                        let mut inner = self.lock();
                        let partner_standby = inner
                            .partner
                            .as_ref()
                            .is_some_and(|p| p.beat.role == Role::Standby);
                        let mirror = side == Side::Server && inner.role == Role::Active && partner_standby;
                        let handover = mirror && std::mem::take(&mut inner.handover_out);
                        let request = side == Side::Client && std::mem::take(&mut inner.request_handover);
                        (mirror, handover.then_some(inner.epoch), request)
                    };
                    if mirror_to_partner {
                        self.send_mirror(conn, &mut last_hash, &mut seq, &mut sent_at).await?;
                    }
                    if let Some(epoch) = handover {
                        info!(partner = %self.cfg.partner, epoch, "ha: handing over to the standby");
                        conn.write(&HaMessage::Handover { epoch }).await?;
                    }
                    if request {
                        info!(partner = %self.cfg.partner, "ha: preempting: asking the active to hand over");
                        conn.write(&HaMessage::RequestHandover).await?;
                    }
                }
                msg = conn.read::<HaMessage>() => {
                    heard = Instant::now();
                    match msg? {
                        None => return Err(LinkDown::Closed),
                        Some(m) => self.on_message(conn, m, &mut assembler, &mut sent_at).await?,
                    }
                }
            }
        }
    }

    async fn send_mirror<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut Connection<S>,
        last_hash: &mut Option<[u8; 32]>,
        seq: &mut u64,
        sent_at: &mut BTreeMap<u64, Instant>,
    ) -> Result<(), LinkDown> {
        let body = {
            let c = self.controller();
            Mirror::collect(&c, &self.cfg.files).and_then(|m| m.to_bytes())
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                error!(error = %e, "ha: mirror not collected");
                return Ok(());
            }
        };
        let hash: [u8; 32] = Sha256::digest(&body).into();
        if *last_hash == Some(hash) {
            return Ok(());
        }
        *seq += 1;
        let epoch = self.lock().epoch;
        for chunk in link::chunks(epoch, *seq, *seq == 1, &body) {
            conn.write(&chunk).await?;
        }
        *last_hash = Some(hash);
        sent_at.insert(*seq, Instant::now());
        while sent_at.len() > 64 {
            sent_at.pop_first();
        }
        self.lock().mirror_seq = *seq;
        debug!(seq = *seq, bytes = body.len(), "ha: mirror sent");
        Ok(())
    }

    async fn on_message<S: AsyncRead + AsyncWrite + Unpin>(
        self: &Arc<Self>,
        conn: &mut Connection<S>,
        msg: HaMessage,
        assembler: &mut Assembler,
        sent_at: &mut BTreeMap<u64, Instant>,
    ) -> Result<(), LinkDown> {
        match msg {
            HaMessage::Beat(beat) => {
                let mut inner = self.lock();
                if inner.role == Role::Standby && beat.role == Role::Active {
                    inner.mirror_lag_ms = beat.mirror_lag_ms;
                }
                if inner.role == Role::Standby {
                    // A standby follows the term it sees, so its next takeover is newer.
                    inner.epoch = inner.epoch.max(beat.epoch);
                }
                inner.partner = Some(PartnerState {
                    beat,
                    heard: Instant::now(),
                });
            }
            HaMessage::Chunk {
                epoch,
                seq,
                snapshot,
                index,
                total,
                data,
            } => {
                let Some(body) = assembler.push(seq, index, total, &data)? else {
                    return Ok(());
                };
                if self.is_active() {
                    return Ok(());
                }
                let node = self.clone();
                let applied = tokio::task::spawn_blocking(move || node.apply(&body)).await?;
                match applied {
                    Ok(()) => {
                        {
                            let mut inner = self.lock();
                            inner.mirror_seq = seq;
                            inner.synced = true;
                        }
                        debug!(seq, epoch, snapshot, "ha: mirror applied");
                        conn.write(&HaMessage::Applied { seq }).await?;
                    }
                    // Not applied: the state stays as it was; the link goes on (the next
                    // change sends the whole state again).
                    Err(e) => error!(seq, error = %e, "ha: mirror refused"),
                }
            }
            HaMessage::Applied { seq } => {
                if let Some(at) = sent_at.get(&seq) {
                    let lag = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
                    let mut inner = self.lock();
                    inner.mirror_lag_ms = Some(lag);
                    inner.synced = true;
                }
            }
            HaMessage::Handover { epoch } => {
                let mut inner = self.lock();
                if inner.role == Role::Standby && epoch >= inner.epoch {
                    inner.handover_in = true;
                }
            }
            HaMessage::RequestHandover => {
                let mut inner = self.lock();
                let partner_synced = inner.partner.as_ref().is_some_and(|p| p.beat.synced);
                if inner.role == Role::Active && partner_synced {
                    inner.handover_out = true;
                }
            }
            HaMessage::Hello { .. } => return Err(LinkDown::SecondHello),
        }
        Ok(())
    }

    fn apply(&self, body: &[u8]) -> Result<(), MirrorError> {
        let mirror = Mirror::from_bytes(body)?;
        let identity_changed = {
            let mut c = self.controller();
            mirror.apply(&mut c, &self.cfg.files, Instant::now())?
        };
        if identity_changed && let Some(dir) = &self.cfg.files.identity_dir {
            let source = crate::api::CertSource::StateDir {
                dir: dir.clone(),
                extra_names: Vec::new(),
            };
            match TlsIdentity::load(&source) {
                Ok(id) => {
                    info!(fingerprint = %id.fingerprint, "ha: serving the active's control API certificate");
                    self.identity.set(id);
                }
                Err(e) => error!(error = %e, "ha: mirrored certificate does not load"),
            }
        }
        Ok(())
    }

    fn view_status(&self) -> HaStatusView {
        let inner = self.lock();
        HaStatusView {
            node: self.cfg.name.clone(),
            role: inner.role.as_str().into(),
            epoch: inner.epoch,
            priority: self.cfg.priority,
            partner: self.cfg.partner.clone(),
            partner_address: self.cfg.partner_addr.to_string(),
            partner_role: inner
                .partner
                .as_ref()
                .map(|p| p.beat.role.as_str().to_string()),
            link_up: inner.links > 0,
            last_heartbeat_ms_ago: inner
                .partner
                .as_ref()
                .map(|p| u64::try_from(p.heard.elapsed().as_millis()).unwrap_or(u64::MAX)),
            mirror_seq: inner.mirror_seq,
            mirror_lag_ms: inner.mirror_lag_ms,
            mirror_synced: inner.synced,
            takeovers: inner.takeovers,
            last_change_unix_ms: inner.last_change.as_ref().map(|c| c.0),
            last_change_reason: inner.last_change.as_ref().map(|c| c.1.clone()),
            takeovers_refused: inner.refused,
            link_refused: inner.link_refused,
            vips: self.cfg.vips.clone(),
            interface: self.cfg.interface.clone(),
            heartbeat_interval_ms: u64::try_from(self.cfg.heartbeat.as_millis()).unwrap_or(0),
            takeover_timeout_ms: u64::try_from(self.cfg.takeover_timeout.as_millis()).unwrap_or(0),
            preempt: self.cfg.preempt,
        }
    }
}

impl<D: DataPlane + Send + 'static> HaControl for Node<D> {
    fn refusal(&self) -> Option<String> {
        (!self.is_active()).then(|| {
            format!(
                "this Central ({}) is the hot standby; the active one holds the virtual IP ({})",
                self.cfg.name,
                self.cfg.vips.join(", ")
            )
        })
    }

    fn saw_epoch(&self, epoch: u64) -> bool {
        let mut inner = self.lock();
        if epoch <= inner.epoch {
            return false;
        }
        if inner.role == Role::Active {
            inner.newer_epoch = Some(epoch);
        } else {
            inner.epoch = epoch;
        }
        true
    }

    fn status(&self) -> HaStatusView {
        self.view_status()
    }

    fn switchover(&self) -> Result<HaStatusView, ControlError> {
        {
            let mut inner = self.lock();
            if inner.role != Role::Active {
                return Err(ControlError::Conflict(format!(
                    "{} is the standby: ask the active node",
                    self.cfg.name
                )));
            }
            let ready = inner.links > 0
                && inner.synced
                && inner
                    .partner
                    .as_ref()
                    .is_some_and(|p| p.beat.role == Role::Standby);
            if !ready {
                return Err(ControlError::Conflict(format!(
                    "the standby {} is not linked and synchronised: no switchover",
                    self.cfg.partner
                )));
            }
            inner.handover_out = true;
        }
        info!(partner = %self.cfg.partner, "ha: switchover requested");
        Ok(self.view_status())
    }

    fn serve_link(
        self: Arc<Self>,
        stream: HaStream,
        // Any source may try: the credential proof decides (`run_link`), and a refusal is
        // counted and logged.
        _source: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let ekm = link::keying_material(stream.get_ref().1);
            self.run_link(stream, ekm, Side::Server).await;
        })
    }
}

/// The state dir, for [`Files`].
pub fn files(state_dir: PathBuf, generated_identity: bool) -> Files {
    Files {
        identity_dir: generated_identity.then(|| state_dir.clone()),
        state_dir,
    }
}
