//! What every connection of the control API shares: [`ApiContext`] (identity, auth, the
//! controller, sessions, limits, counters) and its [`Limits`].

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::control::{ControlPlane, HaControl};
use super::page_sessions::PageSessions;
use super::sessions::Sessions;
use super::tls::{IdentityCell, TlsIdentity};
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
    pub(super) tls: Arc<IdentityCell>,
    pub(super) ha: Option<Arc<dyn HaControl>>,
    pub(super) auth: Arc<Authenticator>,
    pub(super) control: Arc<dyn ControlPlane>,
    pub(super) sessions: Sessions,
    pub(super) xdp_counters: Option<XdpCounters>,
    pub(super) limits: Limits,
    pub(super) started: Instant,
    pub(super) stats: ApiStats,
    pub(super) pages: PageSessions,
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
            pages: PageSessions::default(),
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
    pub(super) fn refusal(&self) -> Option<String> {
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
