//! The control API: one TLS 1.3 listener for peer sessions (ALPN `sluice-peer/1`, framed
//! bincode) and for `sluicectl`/`curl` (HTTP/1.1, JSON, `/metrics`).
//!
//! # Layout
//! - [`tls`]: the certificate (generated into the state dir on first start) and fingerprint.
//! - [`control`]: [`ControlPlane`], everything the server asks of the controller.
//! - `live`: [`LiveControl`], the [`ControlPlane`] of the real controller.
//! - [`sessions`]: live peer sessions, so the controller can install templates on a peer.
//! - `session`: one peer session (register, heartbeats, templates).
//! - `http`, `admin`, `metrics`, `page`: the admin API, Prometheus text and the status page
//!   (`response`: the HTTP response they share).
//!
//! [`serve`] takes an already-bound listener and a shutdown future (tests bind `127.0.0.1:0`).
//! On shutdown it stops accepting, tells every connection to finish, and waits for them a
//! bounded time.

mod admin;
pub mod control;
mod http;
mod live;
mod metrics;
mod page;
mod response;
mod session;
pub mod sessions;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_common::protocol::{ALPN_HA, ALPN_PEER};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use control::{ControlError, ControlPlane, HaControl, HaStream, SessionPeer};
pub use live::LiveControl;
pub use sessions::{SendError, Sessions};
pub use tls::{CertSource, IdentityCell, IdentityError, TlsIdentity};

use crate::auth::Authenticator;

/// The XDP exit-reason counters (`Reason::label()`, packets), read when `/metrics` is scraped.
pub type XdpCounters = Arc<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// Time and size limits of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// TLS handshake.
    pub handshake_timeout: Duration,
    /// From the handshake to the peer's `Register`, and for a whole HTTP request.
    pub request_timeout: Duration,
    /// A peer session with no frame for this long is closed.
    pub idle_timeout: Duration,
    /// Concurrent connections; more are closed at once.
    pub max_connections: usize,
    /// Graceful-shutdown wait for open connections.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

/// Counters of the API itself.
#[derive(Default)]
pub(crate) struct ApiStats {
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) sessions_started: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
}

/// Everything the server needs.
pub struct ApiContext {
    tls: Arc<IdentityCell>,
    ha: Option<Arc<dyn HaControl>>,
    auth: Arc<Authenticator>,
    control: Arc<dyn ControlPlane>,
    sessions: Sessions,
    xdp_counters: Option<XdpCounters>,
    limits: Limits,
    started: Instant,
    stats: ApiStats,
    pages: page::PageSessions,
}

impl ApiContext {
    /// A context with default limits and no XDP counters. `sessions` is the registry the
    /// controller side sends template installations through (see [`LiveControl`]).
    pub fn new(
        tls: TlsIdentity,
        auth: Arc<Authenticator>,
        control: Arc<dyn ControlPlane>,
        sessions: Sessions,
    ) -> Self {
        ApiContext {
            tls: Arc::new(IdentityCell::new(tls)),
            ha: None,
            auth,
            control,
            sessions,
            xdp_counters: None,
            limits: Limits::default(),
            started: Instant::now(),
            stats: ApiStats::default(),
            pages: page::PageSessions::default(),
        }
    }

    /// Exposes the XDP counters on `/metrics`.
    pub fn with_xdp_counters(mut self, counters: XdpCounters) -> Self {
        self.xdp_counters = Some(counters);
        self
    }

    /// Serves the hot-standby link and defers to `ha` for the role (refusing peer sessions
    /// and changes on the standby). `identity` replaces the server certificate holder, so the
    /// standby can take over the active's certificate when the mirror delivers it.
    pub fn with_ha(mut self, ha: Arc<dyn HaControl>, identity: Arc<IdentityCell>) -> Self {
        identity.set(self.tls.get());
        self.tls = identity;
        self.ha = Some(ha);
        self
    }

    /// Why this node refuses peer sessions and changes now (the standby of an HA pair).
    fn refusal(&self) -> Option<String> {
        self.ha.as_ref().and_then(|ha| ha.refusal())
    }

    /// Replaces the default limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// `sha256:<hex>` of the server certificate.
    pub fn fingerprint(&self) -> String {
        self.tls.get().fingerprint
    }
}

/// Serves the control API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ApiContext>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(ctx.limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let local = listener.local_addr().ok();
    info!(listen = ?local, fingerprint = %ctx.fingerprint(), "control API listening");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, source)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        ctx.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    // The identity as of now: a standby takes over the active's certificate.
                    let acceptor = TlsAcceptor::from(ctx.tls.get().config);
                    let (ctx, stop) = (ctx.clone(), stop_rx.clone());
                    tasks.spawn(async move {
                        connection(ctx, acceptor, tcp, source, stop).await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    stop_tx.send_replace(true);
    let drained = tokio::time::timeout(ctx.limits.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    info!("control API stopped");
}

async fn connection(
    ctx: Arc<ApiContext>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    source: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    // Best effort: small frames should not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let stream =
        match tokio::time::timeout(ctx.limits.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                ctx.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                debug!(%source, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                ctx.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                debug!(%source, "TLS handshake timed out");
                return;
            }
        };
    let alpn = stream.get_ref().1.alpn_protocol();
    if alpn == Some(ALPN_PEER) {
        session::run(&ctx, stream, source, stop).await;
    } else if alpn == Some(ALPN_HA) {
        match &ctx.ha {
            Some(ha) => ha.clone().serve_link(stream, source).await,
            None => debug!(%source, "HA link refused: this Central has no [ha] section"),
        }
    } else {
        http::serve(&ctx, stream, source).await;
    }
}
