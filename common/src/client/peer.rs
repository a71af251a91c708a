//! The peer side of the peer channel: register, heartbeat every second, report templates,
//! install the templates Central sends, reconnect with exponential backoff.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use sluice_common::client::{Endpoint, Pin, PeerClient, PeerClientConfig, PeerHooks};
//! # use sluice_common::protocol::{PeerMetrics, Templates};
//! struct Hooks;
//! impl PeerHooks for Hooks {
//!     fn metrics(&self) -> PeerMetrics { PeerMetrics::default() }
//!     fn install_templates(&self, _templates: Vec<Templates>) {}
//! }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = PeerClientConfig::new(
//!     Endpoint::parse("https://198.18.0.1:8443")?,
//!     Pin::CaCert("/etc/sluice/central.pem".into()),
//!     std::fs::read_to_string("/etc/sluice/token")?,
//!     "peer-a".into(),
//!     "198.18.2.2".parse()?,
//!     vec![2055, 4739, 6343],
//! );
//! let (client, handle) = PeerClient::new(config, Arc::new(Hooks))?;
//! let thread = std::thread::spawn(move || client.run_blocking());
//! // … handle.report_templates(…) from the decoders; on exit:
//! handle.shutdown();
//! thread.join().ok();
//! # Ok(()) }
//! ```

use std::net::IpAddr;
use std::string::{String, ToString};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use std::vec::Vec;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::{MissedTickBehavior, sleep, timeout};
use tracing::{info, warn};
use uuid::Uuid;

use super::conn::{ConnError, Connection};
use super::tls::{Connector, Endpoint, Pin, TlsError};
use crate::protocol::{
    ALPN_PEER, ApiErrorBody, CentralMessage, Heartbeat, PeerMessage, PeerMetrics, Register,
    Registered, Templates,
};

/// What the peer process provides to the client.
pub trait PeerHooks: Send + Sync + 'static {
    /// The metrics for the next heartbeat (called once a second; must be cheap).
    fn metrics(&self) -> PeerMetrics;
    /// Install template state before Central moves these exporters here. Called on the client's
    /// thread; Central is told they are installed when this returns, so hand them to the decoder
    /// shards and return without waiting on the data path.
    fn install_templates(&self, templates: Vec<Templates>);
    /// Central asks for the whole current template state of `exporter` before moving it away
    /// ([`CentralMessage::SyncTemplates`]). Return `true` when the peer will queue that state
    /// with [`PeerHandle::report_templates`] and then call [`PeerHandle::report_synced`] with
    /// `request_id` (from the thread that queues its other reports, so nothing older follows);
    /// `false` (the default) has the client answer at once, after the reports already queued.
    fn sync_templates(&self, _request_id: u64, _exporter: IpAddr) -> bool {
        false
    }
    /// A session was established.
    fn registered(&self, _registered: &Registered) {}
}

/// Connection settings and the registration a peer sends.
#[derive(Clone, Debug)]
pub struct PeerClientConfig {
    /// Central's control API.
    pub central: Endpoint,
    /// How Central's certificate is recognised.
    pub pin: Pin,
    /// Access token (surrounding whitespace is ignored).
    pub token: String,
    /// Unique peer name.
    pub name: String,
    /// Stable identity of this installation.
    pub uuid: Uuid,
    /// Software version reported to Central.
    pub version: String,
    /// Address Central forwards datagrams to.
    pub data_addr: IpAddr,
    /// Ingest ports.
    pub ports: Vec<u16>,
    /// Relative capacity.
    pub weight: u32,
    /// Pool to join.
    pub pool: Option<String>,
    /// First reconnection delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
    /// How long to wait for Central's answer to the registration.
    pub register_timeout: Duration,
}

impl PeerClientConfig {
    /// Settings with defaults: random uuid, this crate's version, weight 1, default pool,
    /// backoff 50 ms … 5 s.
    pub fn new(
        central: Endpoint,
        pin: Pin,
        token: String,
        name: String,
        data_addr: IpAddr,
        ports: Vec<u16>,
    ) -> Self {
        PeerClientConfig {
            central,
            pin,
            token: token.trim().to_string(),
            name,
            uuid: Uuid::new_v4(),
            version: env!("CARGO_PKG_VERSION").into(),
            data_addr,
            ports,
            weight: 1,
            pool: None,
            // Short: after a hot-standby takeover the new active is there at once.
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            register_timeout: Duration::from_secs(10),
        }
    }

    fn register(&self) -> Register {
        Register {
            token: self.token.clone(),
            name: self.name.clone(),
            uuid: self.uuid,
            version: self.version.clone(),
            data_addr: self.data_addr,
            ports: self.ports.clone(),
            weight: self.weight,
            pool: self.pool.clone(),
            epoch_seen: 0,
        }
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Connecting failed (unreachable, certificate mismatch, …).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The channel broke.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// Central refused or ended the session.
    #[error("Central refused the session: {} ({:?})", .0.message, .0.code)]
    Rejected(ApiErrorBody),
    /// Central did not answer the registration in time.
    #[error("no answer to the registration")]
    RegisterTimeout,
    /// Central sent something out of order.
    #[error("unexpected message from Central: {0}")]
    Unexpected(&'static str),
    /// Central closed the connection.
    #[error("Central closed the connection")]
    Closed,
}

const TEMPLATE_QUEUE: usize = 1024;

/// What the peer queues for Central, in order.
#[derive(Debug)]
enum Outgoing {
    Templates(Templates),
    Synced(u64),
}

struct Shared {
    /// The highest hot-standby epoch Central registered us under.
    epoch_seen: AtomicU64,
    connected: AtomicBool,
    dropped_templates: AtomicU64,
    sessions: AtomicU64,
}

/// Runs the peer channel until [`PeerHandle::shutdown`] (or the handle is dropped).
pub struct PeerClient {
    config: PeerClientConfig,
    connector: Connector,
    hooks: Arc<dyn PeerHooks>,
    templates: mpsc::Receiver<Outgoing>,
    stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
}

/// Talks to a running [`PeerClient`] from any thread.
pub struct PeerHandle {
    templates: mpsc::Sender<Outgoing>,
    stop: watch::Sender<bool>,
    shared: Arc<Shared>,
}

impl PeerHandle {
    /// Queues learned templates for Central. Never blocks: returns `false` (and counts) when the
    /// queue is full.
    pub fn report_templates(&self, templates: Templates) -> bool {
        let sent = self
            .templates
            .try_send(Outgoing::Templates(templates))
            .is_ok();
        if !sent {
            self.shared
                .dropped_templates
                .fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Answers [`PeerHooks::sync_templates`] once the exporter's state is queued. Never blocks:
    /// returns `false` when the queue is full (Central then moves after its timeout).
    pub fn report_synced(&self, request_id: u64) -> bool {
        self.templates
            .try_send(Outgoing::Synced(request_id))
            .is_ok()
    }

    /// A registered session is up.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Sessions established since start.
    pub fn sessions(&self) -> u64 {
        self.shared.sessions.load(Ordering::Relaxed)
    }

    /// Template reports dropped because the queue was full.
    pub fn dropped_templates(&self) -> u64 {
        self.shared.dropped_templates.load(Ordering::Relaxed)
    }

    /// Ends the session (cleanly) and [`PeerClient::run`].
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

enum Event {
    Tick,
    Central(Result<Option<CentralMessage>, ConnError>),
    Report(Outgoing),
    Stop,
}

impl PeerClient {
    /// A client and its handle. Fails at once if the pinned certificate file is unusable.
    pub fn new(
        config: PeerClientConfig,
        hooks: Arc<dyn PeerHooks>,
    ) -> Result<(Self, PeerHandle), TlsError> {
        let connector = Connector::new(&config.pin, ALPN_PEER)?;
        let (tx, rx) = mpsc::channel(TEMPLATE_QUEUE);
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            epoch_seen: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            dropped_templates: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
        });
        let client = PeerClient {
            config,
            connector,
            hooks,
            templates: rx,
            stop: stop_rx,
            shared: shared.clone(),
        };
        let handle = PeerHandle {
            templates: tx,
            stop: stop_tx,
            shared,
        };
        Ok((client, handle))
    }

    /// [`PeerClient::run`] on a current-thread runtime of its own, for a peer without tokio.
    pub fn run_blocking(self) -> std::io::Result<()> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(self.run());
        Ok(())
    }

    /// Connects, registers and heartbeats; reconnects with backoff until shut down.
    pub async fn run(mut self) {
        let mut delay = self.config.backoff_min;
        loop {
            let sessions_before = self.shared.sessions.load(Ordering::Relaxed);
            let result = self.session().await;
            self.shared.connected.store(false, Ordering::Relaxed);
            if self.shared.sessions.load(Ordering::Relaxed) > sessions_before {
                // The session had registered: start the backoff over.
                delay = self.config.backoff_min;
            }
            if let Err(error) = result {
                warn!(central = %self.config.central, %error, retry_in_ms = delay.as_millis() as u64, "peer channel down");
            }
            if self.stopping() {
                return;
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = sleep(jitter(delay)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            delay = (delay * 2).min(self.config.backoff_max);
        }
    }

    fn stopping(&self) -> bool {
        // A dropped handle also stops the client.
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    /// One session; `Ok` only on shutdown.
    async fn session(&mut self) -> Result<(), SessionError> {
        let stream = self.connector.connect(&self.config.central).await?;
        let mut conn = Connection::new(stream);
        let mut register = self.config.register();
        register.epoch_seen = self.shared.epoch_seen.load(Ordering::Relaxed);
        conn.write(&PeerMessage::Register(register)).await?;
        let registered = match timeout(self.config.register_timeout, conn.read()).await {
            Err(_) => return Err(SessionError::RegisterTimeout),
            Ok(msg) => match msg? {
                Some(CentralMessage::Registered(r)) => r,
                Some(CentralMessage::Error(e)) => return Err(SessionError::Rejected(e)),
                Some(
                    CentralMessage::InstallTemplates { .. } | CentralMessage::SyncTemplates { .. },
                ) => {
                    return Err(SessionError::Unexpected("templates before registration"));
                }
                None => return Err(SessionError::Closed),
            },
        };
        info!(peer_id = registered.peer_id, pool = %registered.pool, central = %self.config.central, "registered with Central");
        self.shared.connected.store(true, Ordering::Relaxed);
        self.shared.sessions.fetch_add(1, Ordering::Relaxed);
        self.shared
            .epoch_seen
            .fetch_max(registered.epoch, Ordering::Relaxed);
        self.hooks.registered(&registered);

        let period = Duration::from_millis(u64::from(registered.heartbeat_interval_ms.max(100)));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stop = self.stop.clone();
        loop {
            let event = tokio::select! {
                _ = ticker.tick() => Event::Tick,
                msg = conn.read::<CentralMessage>() => Event::Central(msg),
                Some(t) = self.templates.recv() => Event::Report(t),
                _ = stop.wait_for(|s| *s) => Event::Stop,
            };
            match event {
                Event::Tick => {
                    let metrics = self.hooks.metrics();
                    conn.write(&PeerMessage::Heartbeat(Heartbeat { metrics }))
                        .await?;
                }
                Event::Report(queued) => write_outgoing(&mut conn, queued).await?,
                Event::Central(msg) => match msg? {
                    Some(CentralMessage::InstallTemplates {
                        request_id,
                        templates,
                    }) => {
                        self.hooks.install_templates(templates);
                        conn.write(&PeerMessage::TemplatesInstalled { request_id })
                            .await?;
                    }
                    Some(CentralMessage::SyncTemplates {
                        request_id,
                        exporter,
                    }) => {
                        if !self.hooks.sync_templates(request_id, exporter) {
                            // Whatever was queued before goes first.
                            while let Ok(queued) = self.templates.try_recv() {
                                write_outgoing(&mut conn, queued).await?;
                            }
                            conn.write(&PeerMessage::TemplatesSynced { request_id })
                                .await?;
                        }
                    }
                    Some(CentralMessage::Error(e)) => return Err(SessionError::Rejected(e)),
                    Some(CentralMessage::Registered(_)) => {
                        return Err(SessionError::Unexpected("second registration answer"));
                    }
                    None => return Err(SessionError::Closed),
                },
                Event::Stop => {
                    // Best effort: Central learns the end from the closed connection anyway.
                    let _ = conn.shutdown().await;
                    return Ok(());
                }
            }
        }
    }
}

async fn write_outgoing<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    queued: Outgoing,
) -> Result<(), ConnError> {
    match queued {
        Outgoing::Templates(t) => conn.write(&PeerMessage::Templates(t)).await,
        Outgoing::Synced(request_id) => {
            conn.write(&PeerMessage::TemplatesSynced { request_id })
                .await
        }
    }
}

/// Up to +25 % so that peers restarted together do not reconnect in lockstep.
fn jitter(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    delay + delay.mul_f64(f64::from(nanos % 1000) / 4000.0)
}
