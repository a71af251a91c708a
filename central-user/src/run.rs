//! `sluice-central run`: wires the data plane, the controller, the slow-path relay and the
//! periodic work together, and shuts them down cleanly. The XDP program stays attached when the
//! process exits (pinned link): a restart replaces it atomically and forwarding never stops.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sluice_common::{
    ExporterEvent, event_kind,
    protocol::{PeerMetrics, Register},
    to_key_bytes,
};

use crate::{
    api::{
        self, ApiContext, CertSource, IdentityCell, IdentityError, LiveControl, Sessions,
        TlsIdentity,
    },
    auth::{AuthError, Authenticator, RateLimit},
    config::{CentralConfig, ConfigError, HaConfig},
    controller::{Controller, ControllerError, DataPlaneError},
    ha::{
        link::{Credential, CredentialError},
        node::{self as ha_node, Node, NodeConfig, NodeError},
        vip::{VipError, VipSet},
    },
    loader::{self, LoadError, LoadOptions},
    maps::Maps,
    relay::{self, RelayStats, Resolve},
    state::{State, StateError, StateStore},
};

/// Why Central could not start, serve or stop, or why `check` says it would not. The messages are what `sluice-central` prints
/// (with the cause after a colon).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Loading or attaching the XDP program.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Opening or writing the maps.
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
    /// Restoring the controller or applying the static configuration.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// Reading the state file.
    #[error(transparent)]
    State(#[from] StateError),
    /// The control API's certificate.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The token store.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// `[ha]` as written.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HA credential file.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The hot-standby node.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Starting a thread or reading a socket address.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Writing the state file.
    #[error("write state to {}", path.display())]
    SaveState {
        /// The state file.
        path: std::path::PathBuf,
        /// Cause.
        source: StateError,
    },
    /// A file or directory Central needs could not be written.
    #[error("{what}")]
    File {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// `control.cert` / `control.key` do not load.
    #[error("control.cert / control.key")]
    Certificate(#[source] IdentityError),
    /// A virtual IP set.
    #[error("ha.vips on {dev}")]
    Vips {
        /// The interface.
        dev: String,
        /// Cause.
        source: VipError,
    },
    /// A configuration value that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// Slow-path relays that could not be started (one message per listener).
    #[error("slow-path relay: {}", .0.join("; "))]
    Relay(Vec<String>),
}

type Result<T, E = RunError> = std::result::Result<T, E>;

/// The controller as the run loop and the API share it.
pub type SharedController = Arc<Mutex<Controller<Maps>>>;

/// Everything `run` started, for the caller to stop.
pub struct Running {
    /// The controller.
    pub controller: SharedController,
    /// The controller as the API serves it (sends template installations to peer sessions).
    pub live: Arc<LiveControl<Maps>>,
    /// Live peer sessions (shared by the API and `live`).
    pub sessions: Sessions,
    /// Relay counters.
    pub relay_stats: Arc<RelayStats>,
    /// Maps opened from the pins, for readers outside the controller (metrics, explain).
    pub pin_dir: std::path::PathBuf,
    /// The hot-standby node, with `[ha]`.
    pub ha: Option<Arc<Node<Maps>>>,
    /// The control API's identity (replaced by the active's on a standby).
    pub identity: Arc<IdentityCell>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    store: StateStore,
}

impl Running {
    /// Stops the relay and the periodic work, and writes the state one last time.
    pub fn stop(self) -> Result<()> {
        if let Some(ha) = &self.ha {
            ha.stop();
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        save(&self.controller, &self.store, true)?;
        tracing::info!("stopped; XDP stays attached (`sluice-central detach` removes it)");
        Ok(())
    }
}

fn lock(c: &SharedController) -> std::sync::MutexGuard<'_, Controller<Maps>> {
    // A panic while holding the lock leaves consistent-enough data (every write goes to the
    // maps first); keep serving rather than cascade the panic.
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn save(c: &SharedController, store: &StateStore, force: bool) -> Result<()> {
    let snapshot = {
        let mut g = lock(c);
        if !g.take_dirty() && !force {
            return Ok(());
        }
        g.snapshot()
    };
    store
        .save(&State {
            controller: snapshot,
        })
        .map_err(|source| RunError::SaveState {
            path: store.path().to_owned(),
            source,
        })
}

/// Loads and attaches the data plane, restores or creates the controller, applies the static
/// configuration and starts the relay and the periodic work.
pub fn start(cfg: &CentralConfig) -> Result<Running> {
    let dp = &cfg.data_plane;
    if dp.enable_forwarding {
        for iface in &dp.interfaces {
            enable_forwarding(iface)?;
        }
    }
    let loaded = loader::load(&LoadOptions {
        pin_dir: dp.pin_dir.clone(),
        interfaces: dp.interfaces.clone(),
        mode: dp.xdp_mode,
        decrement_ttl: dp.decrement_ttl,
    })?;
    let loader::LoadedParts {
        mut maps,
        events,
        attachments,
    } = loaded.into_parts();
    refresh_egress(&mut maps)?;

    std::fs::create_dir_all(&cfg.state.dir).map_err(|source| RunError::File {
        what: format!("create state dir {}", cfg.state.dir.display()),
        source,
    })?;
    let store = StateStore::new(&cfg.state.dir);
    let now = Instant::now();
    let (mut controller, report) = match store.load()? {
        Some(State {
            controller: state, ..
        }) => Controller::restore(maps, state, now)?,
        None => Controller::new(maps, cfg.balancer.clone(), now)?,
    };
    if !report.is_clean() {
        tracing::warn!(
            ?report,
            "data plane differed from the saved state; the state was re-applied"
        );
    }
    let statics = apply_static(&mut controller, cfg, now)?;
    let controller = Arc::new(Mutex::new(controller));
    save(&controller, &store, true)?;
    let sessions = Sessions::default();
    let live = Arc::new(LiveControl::new(controller.clone(), sessions.clone()));
    let source = cert_source(cfg)?;
    let identity = Arc::new(IdentityCell::new(TlsIdentity::load(&source)?));
    let ha = match &cfg.ha {
        Some(ha) => {
            let generated = matches!(source, CertSource::StateDir { .. });
            let node = start_ha(ha, cfg, generated, &controller, &sessions, &identity)?;
            node.spawn();
            Some(node)
        }
        None => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let relay_stats = Arc::new(RelayStats::default());
    let mut threads = Vec::new();
    let mut relays = Relays::new(dp.slow_path, &dp.pin_dir, relay_stats.clone());
    // Listeners from the file and those added at run time (in the saved state) alike; a
    // listener that cannot be bound at start is a configuration error.
    relays.sync(&listener_set(&controller))?;
    {
        let (c, l, stop, store, node) = (
            controller.clone(),
            live.clone(),
            stop.clone(),
            StateStore::new(&cfg.state.dir),
            ha.clone(),
        );
        let gates = Gates { stop, ha: node };
        threads.push(
            std::thread::Builder::new()
                .name("controller".into())
                .spawn(move || {
                    periodic(&c, &l, events, &statics, &store, &mut relays, &gates);
                    relays.stop_all();
                })?,
        );
    }
    let modes: Vec<String> = attachments
        .iter()
        .map(|a| format!("{}:{}", a.iface, a.mode))
        .collect();
    tracing::info!(xdp = ?modes, listeners = cfg.listener_addrs().len(), slow_path = dp.slow_path, "sluice-central ready");
    Ok(Running {
        controller,
        live,
        sessions,
        relay_stats,
        pin_dir: dp.pin_dir.clone(),
        ha,
        identity,
        stop,
        threads,
        store,
    })
}

/// The hot-standby node of `[ha]` (it starts as the standby).
fn start_ha(
    ha: &HaConfig,
    cfg: &CentralConfig,
    generated_identity: bool,
    controller: &SharedController,
    sessions: &Sessions,
    identity: &Arc<IdentityCell>,
) -> Result<Arc<Node<Maps>>> {
    let (me, partner) = ha.me_and_partner()?;
    let credential = Credential::load(&ha.credential_file)?;
    let mut by_dev: std::collections::BTreeMap<String, Vec<crate::ha::vip::Vip>> =
        Default::default();
    for v in ha.vip_specs()? {
        by_dev
            .entry(v.dev.unwrap_or_else(|| ha.interface.clone()))
            .or_default()
            .push(crate::ha::vip::Vip {
                addr: v.addr,
                prefix: v.prefix,
            });
    }
    let sets = by_dev
        .into_iter()
        .map(|(dev, vips)| VipSet::new(&dev, vips).map_err(|source| RunError::Vips { dev, source }))
        .collect::<Result<Vec<_>>>()?;
    let node_cfg = NodeConfig {
        name: me.name.clone(),
        priority: me.priority,
        partner: partner.name.clone(),
        partner_addr: partner.address,
        heartbeat: Duration::from_millis(ha.heartbeat_interval_ms),
        takeover_timeout: Duration::from_millis(ha.takeover_timeout_ms),
        preempt: ha.preempt,
        vips: ha.vips.clone(),
        interface: ha.interface.clone(),
        credential,
        files: ha_node::files(cfg.state.dir.clone(), generated_identity),
    };
    Ok(Node::new(
        node_cfg,
        controller.clone(),
        sessions.clone(),
        identity.clone(),
        Arc::new(sets),
    )?)
}

/// Where the control API's certificate comes from.
fn cert_source(cfg: &CentralConfig) -> Result<CertSource> {
    Ok(match (&cfg.control.cert, &cfg.control.key) {
        (Some(cert), Some(key)) => CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (None, None) => {
            let ip = cfg.control.listen.ip();
            let extra_names = if ip.is_unspecified() {
                Vec::new()
            } else {
                vec![ip.to_string()]
            };
            CertSource::StateDir {
                dir: cfg.state.dir.clone(),
                extra_names,
            }
        }
        _ => {
            return Err(RunError::Invalid(
                "control: set both cert and key, or neither".into(),
            ));
        }
    })
}

/// When the periodic work stops, and whether it makes the controller's decisions (not on a
/// hot standby).
struct Gates {
    stop: Arc<AtomicBool>,
    ha: Option<Arc<Node<Maps>>>,
}

/// Every 100 ms: feed ring-buffer events and tick the controller (it samples counters once a
/// second; ticking often detects a silent peer within 100 ms of its timeout). Static peers are
/// heartbeated on each tick; the state is saved at most once a second when it changed.
/// Work goes through `live` so template installations queued by failover or a rebalance reach
/// the peers at once.
fn periodic(
    c: &SharedController,
    live: &LiveControl<Maps>,
    mut events: aya::maps::RingBuf<aya::maps::MapData>,
    statics: &[String],
    store: &StateStore,
    relays: &mut Relays,
    gates: &Gates,
) {
    let duties = || gates.ha.as_ref().is_none_or(|n| n.is_active());
    let mut next_tick = Instant::now();
    let mut next_save = Instant::now();
    let mut next_egress = Instant::now() + Duration::from_secs(5);
    while !gates.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut pending = Vec::new();
        pending.extend(relays.events.try_iter());
        while let Some(item) = events.next() {
            if item.len() == size_of::<ExporterEvent>() {
                // SAFETY: the XDP program writes whole `ExporterEvent`s (length checked).
                pending.push(unsafe {
                    std::ptr::read_unaligned(item.as_ptr().cast::<ExporterEvent>())
                });
            }
        }
        if !duties() {
            // The hot standby decides nothing: the active's mirror drives its maps.
            pending.clear();
        }
        let tick = now >= next_tick && duties();
        let egress = now >= next_egress;
        if tick {
            next_tick = now + Duration::from_millis(100);
        }
        if egress {
            next_egress = now + Duration::from_secs(5);
        }
        if !pending.is_empty() || tick || egress {
            let result = live.with(|g, now| {
                for ev in &pending {
                    if let Err(e) = g.on_exporter_event(ev, now) {
                        tracing::warn!(error = %e, "exporter event not applied");
                    }
                }
                if egress && let Err(e) = refresh_egress(g.data_plane_mut()) {
                    tracing::warn!(error = %e, "egress refresh failed");
                }
                if !tick {
                    return Ok(None);
                }
                for name in statics {
                    let _ = g.heartbeat(name, static_metrics(), now);
                }
                g.tick(now).map(Some)
            });
            match result {
                Ok(Some(r)) if !r.offline.is_empty() || r.moved > 0 => {
                    tracing::info!(offline = ?r.offline, moved = r.moved, rebalanced = r.rebalanced, "controller tick");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "controller tick failed"),
            }
        }
        if egress && let Err(e) = relays.sync(&listener_set(c)) {
            tracing::warn!(error = %e, "slow-path relay for a new listener not started; retrying");
        }
        if now >= next_save {
            next_save = now + Duration::from_secs(1);
            if let Err(e) = save(c, store, false) {
                tracing::error!(error = %e, "state not saved");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Serves the TLS control API (peer sessions, `sluicectl`, `/metrics`) until `shutdown`.
pub async fn serve_api(
    cfg: &CentralConfig,
    running: &Running,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let tls = running.identity.get();
    tracing::info!(fingerprint = %tls.fingerprint, cert = %tls.cert_path.display(), "control API certificate");
    let auth = Arc::new(Authenticator::open(&cfg.state.dir, RateLimit::default())?);
    let maps = Mutex::new(Maps::open_pinned(&running.pin_dir)?);
    let counters: api::XdpCounters = Arc::new(move || {
        let maps = maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        maps.counters()
            .map(|v| v.into_iter().map(|(r, n)| (r.label(), n)).collect())
            .unwrap_or_default()
    });
    let mut ctx = ApiContext::new(tls, auth, running.live.clone(), running.sessions.clone())
        .with_xdp_counters(counters);
    if let Some(ha) = &running.ha {
        ctx = ctx.with_ha(ha.clone(), running.identity.clone());
    }
    let listener = tokio::net::TcpListener::bind(cfg.control.listen)
        .await
        .map_err(|source| RunError::File {
            what: format!("control.listen: bind {}", cfg.control.listen),
            source,
        })?;
    tracing::info!(listen = %listener.local_addr()?, "control API ready");
    api::serve(listener, Arc::new(ctx), shutdown).await;
    Ok(())
}

/// Static peers have no agent: Central vouches for them.
fn static_metrics() -> PeerMetrics {
    PeerMetrics::default()
}

/// Pools, listeners, source groups, static peers and pins from the file (idempotent).
/// Returns the names of the static peers.
fn apply_static(
    c: &mut Controller<Maps>,
    cfg: &CentralConfig,
    now: Instant,
) -> Result<Vec<String>> {
    let existing: BTreeSet<String> = c.pool_views().into_iter().map(|p| p.name).collect();
    for name in cfg.pool_names() {
        if !existing.contains(&name) {
            c.create_pool(&name)?;
        }
    }
    for (addr, pool) in cfg.listener_addrs() {
        c.set_listener(addr, &pool)?;
    }
    for g in &cfg.source_groups {
        c.set_source_group(g.cidr, &g.pool)?;
    }
    let mut names = Vec::new();
    for p in &cfg.peers {
        let (ip, port) = p.target().map_err(|e| RunError::Invalid(e.to_string()))?;
        let reg = Register {
            token: String::new(),
            name: p.name.clone(),
            uuid: uuid::Uuid::from_u128(u128::from_be_bytes(to_key_bytes(ip)) ^ name_hash(&p.name)),
            version: format!("static ({})", env!("CARGO_PKG_VERSION")),
            data_addr: ip,
            ports: port.into_iter().collect(),
            weight: p.weight,
            pool: Some(p.pool.clone()),
            epoch_seen: 0,
        };
        let r = c.register_peer(&reg, now)?;
        if r.pool.as_deref() != Some(p.pool.as_str()) {
            // A known peer keeps the pool the operator gave it at run time; the file only
            // seeds new peers. Say so instead of silently differing.
            tracing::warn!(peer = %p.name, file = %p.pool, current = ?r.pool, "static peer kept its current pool");
        }
        names.push(p.name.clone());
    }
    for pin in &cfg.pins {
        pin_exporter(c, pin.exporter, &pin.peer, now)?;
    }
    Ok(names)
}

fn pin_exporter(c: &mut Controller<Maps>, addr: IpAddr, peer: &str, now: Instant) -> Result<()> {
    match c.move_exporter(addr, peer, now) {
        Ok(()) => return Ok(()),
        Err(ControllerError::UnknownExporter(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // Not seen yet: introduce it as the data plane would, placed on the pinned peer.
    let (peer_id, pool_id) = c
        .peer_views(now, std::time::SystemTime::now())
        .into_iter()
        .find(|v| v.name == peer)
        .and_then(|v| {
            Some((
                v.id,
                c.pool_views()
                    .into_iter()
                    .find(|p| Some(&p.name) == v.pool.as_ref())?
                    .id,
            ))
        })
        .ok_or_else(|| RunError::Invalid(format!("pin {addr}: peer {peer:?} has no pool")))?;
    let ev = ExporterEvent {
        addr: to_key_bytes(addr),
        kind: event_kind::NEW_EXPORTER,
        pool_id,
        peer_id,
        _pad: 0,
    };
    c.on_exporter_event(&ev, now)?;
    c.move_exporter(addr, peer, now)?;
    Ok(())
}

fn name_hash(name: &str) -> u128 {
    name.bytes()
        .fold(0x6c62_272e_07bb_0142_62b8_2175_6295_c58du128, |h, b| {
            (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
        })
}

/// Listener addresses the controller knows (file and run time).
fn listener_set(c: &SharedController) -> BTreeSet<SocketAddr> {
    // The listener view, not a snapshot: a snapshot copies every exporter.
    lock(c)
        .listener_views()
        .into_iter()
        .map(|l| l.address)
        .collect()
}

/// The slow-path relay: one thread per listener, following the controller's listeners (checked
/// every 5 s, so a listener added with `sluicectl` gets its relay socket too).
struct Relays {
    enabled: bool,
    /// Exporter events from the relay threads, for the controller (like the XDP ring buffer's).
    events: std::sync::mpsc::Receiver<ExporterEvent>,
    events_tx: std::sync::mpsc::Sender<ExporterEvent>,
    pin_dir: std::path::PathBuf,
    stats: Arc<RelayStats>,
    running: std::collections::BTreeMap<SocketAddr, (Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Relays {
    fn new(enabled: bool, pin_dir: &std::path::Path, stats: Arc<RelayStats>) -> Self {
        let (events_tx, events) = std::sync::mpsc::channel();
        Self {
            enabled,
            events,
            events_tx,
            pin_dir: pin_dir.to_owned(),
            stats,
            running: Default::default(),
        }
    }

    fn sync(&mut self, wanted: &BTreeSet<SocketAddr>) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let gone: Vec<SocketAddr> = self
            .running
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some((stop, thread)) = self.running.remove(&addr) {
                stop.store(true, Ordering::Relaxed);
                let _ = thread.join();
                tracing::info!(%addr, "slow-path relay stopped (listener removed)");
            }
        }
        let new: Vec<SocketAddr> = wanted
            .iter()
            .filter(|a| !self.running.contains_key(a))
            .copied()
            .collect();
        let mut failed = Vec::new();
        for addr in new {
            // One address at a time: a port taken by another process must not keep the other
            // listeners of the same round from getting their relay.
            let sock = match relay::bind_listeners(&[addr]) {
                Ok(mut bound) => match bound.pop() {
                    Some((_, sock)) => sock,
                    None => continue,
                },
                Err(e) => {
                    failed.push(e.to_string());
                    continue;
                }
            };
            let resolver =
                MapResolver::new(Maps::open_pinned(&self.pin_dir)?, self.events_tx.clone());
            let stop = Arc::new(AtomicBool::new(false));
            let (stats, flag) = (self.stats.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("relay {addr}"))
                .spawn(move || {
                    if let Err(e) = relay::serve(addr, sock, resolver, stats, flag) {
                        tracing::error!(%addr, error = %e, "slow-path relay stopped");
                    }
                })?;
            self.running.insert(addr, (stop, thread));
        }
        if !failed.is_empty() {
            return Err(RunError::Relay(failed));
        }
        Ok(())
    }

    fn stop_all(self) {
        for (stop, _) in self.running.values() {
            stop.store(true, Ordering::Relaxed);
        }
        for (_, (_, thread)) in self.running {
            let _ = thread.join();
        }
    }
}

/// The relay resolves through the pinned maps, exactly as the kernel does, and also does the
/// kernel's bookkeeping for what it forwards: exporters whose datagrams only ever take the slow
/// path (all fragments, say) get traffic counters and reach the controller to be pinned.
struct MapResolver {
    maps: Maps,
    events: std::sync::mpsc::Sender<ExporterEvent>,
    /// Packets, bytes since the last flush, per exporter.
    pending: std::collections::HashMap<IpAddr, (u64, u64)>,
    /// Last event per exporter (one a second at most, like the XDP program).
    reported: std::collections::HashMap<IpAddr, Instant>,
    last_flush: Instant,
}

impl MapResolver {
    fn new(maps: Maps, events: std::sync::mpsc::Sender<ExporterEvent>) -> Self {
        Self {
            maps,
            events,
            pending: Default::default(),
            reported: Default::default(),
            last_flush: Instant::now(),
        }
    }

    fn flush(&mut self) {
        self.last_flush = Instant::now();
        let now_ns = monotonic_ns();
        for (addr, (packets, bytes)) in self.pending.drain() {
            if let Err(e) = self.maps.add_exporter_stats(addr, packets, bytes, now_ns) {
                tracing::debug!(%addr, error = %e, "relay traffic not counted");
            }
        }
        self.reported
            .retain(|_, t| t.elapsed() < Duration::from_secs(1));
    }
}

impl Resolve for MapResolver {
    fn resolve(
        &mut self,
        exporter: IpAddr,
        listener: SocketAddr,
        len: usize,
    ) -> Option<SocketAddr> {
        let counts = self.pending.entry(exporter).or_default();
        counts.0 += 1;
        counts.1 += len as u64;
        if self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.flush();
        }
        let r = self.maps.resolve(exporter, listener).ok().flatten()?;
        if let Some(kind) = r.unpinned
            && !self.reported.contains_key(&exporter)
        {
            self.reported.insert(exporter, Instant::now());
            let ev = ExporterEvent {
                addr: to_key_bytes(exporter),
                kind,
                pool_id: r.pool_id,
                peer_id: r.peer_id,
                _pad: 0,
            };
            let _ = self.events.send(ev);
        }
        let ip = sluice_common::from_key_bytes(r.peer.addr);
        let port = if r.peer.port == 0 {
            listener.port()
        } else {
            r.peer.port
        };
        Some(SocketAddr::new(ip, port))
    }

    fn idle(&mut self) {
        if !self.pending.is_empty() {
            self.flush();
        }
    }
}

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Every interface except loopback becomes a redirect target.
fn refresh_egress(maps: &mut Maps) -> Result<()> {
    let current: BTreeSet<u32> = maps.egress()?.into_iter().collect();
    let wanted: BTreeSet<u32> = interfaces()
        .into_iter()
        .filter(|(_, name)| name != "lo")
        .map(|(i, _)| i)
        .collect();
    for &i in wanted.difference(&current) {
        maps.add_egress(i)?;
    }
    for &i in current.difference(&wanted) {
        maps.remove_egress(i)?;
    }
    Ok(())
}

fn interfaces() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns a NULL-terminated array we free below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            out.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// `bpf_fib_lookup` returns "forwarding disabled" unless the ingress interface forwards.
fn enable_forwarding(iface: &str) -> Result<()> {
    if !interfaces().iter().any(|(_, n)| n == iface) {
        return Err(RunError::Invalid(format!(
            "data_plane.interfaces: no interface named {iface:?}"
        )));
    }
    for fam in ["ipv4", "ipv6"] {
        let path = format!("/proc/sys/net/{fam}/conf/{iface}/forwarding");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        std::fs::write(&path, "1").map_err(|source| RunError::File {
            what: format!("enable forwarding: write {path}"),
            source,
        })?;
        tracing::info!(
            iface,
            family = fam,
            "enabled forwarding on the ingress interface (data_plane.enable_forwarding)"
        );
    }
    Ok(())
}
