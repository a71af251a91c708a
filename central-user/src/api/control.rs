//! What the API server needs from the controller.
//!
//! The server never holds controller state: every call goes through [`ControlPlane`], which the
//! controller implements (each method reads the clock itself and returns quickly). Errors are
//! [`ControlError`]s, which map onto [`ErrorCode`]s for the admin API and the peer channel.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use sluice_common::protocol::{
    ApiErrorBody, BalancerPatch, BalancerSettings, Cidr, ErrorCode, ExporterView, HaStatusView,
    ListenerView, PeerMetrics, PeerView, PlanView, PoolView, Register, Registered, SourceGroupView,
    StatusView, Templates,
};

/// A connection of the hot-standby link (ALPN `sluice-ha/1`) after the TLS handshake.
pub type HaStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// What the API server needs from the hot-standby node (`crate::ha`), when `[ha]` is set.
pub trait HaControl: Send + Sync + 'static {
    /// `Some(reason)` while this node must refuse peer sessions and changes (it is the
    /// standby: the active Central holds the virtual IP and makes every decision).
    fn refusal(&self) -> Option<String>;
    /// A peer says it was registered under hot-standby epoch `epoch`. Returns `true` when
    /// that is newer than this node's own (another node is the active now): the session is
    /// refused, and an active node steps down.
    fn saw_epoch(&self, epoch: u64) -> bool;
    /// `sluicectl ha status`.
    fn status(&self) -> HaStatusView;
    /// `sluicectl ha switchover`: hand the active role to the standby.
    fn switchover(&self) -> Result<HaStatusView, ControlError>;
    /// Serves one link connection from the partner.
    fn serve_link(
        self: Arc<Self>,
        stream: HaStream,
        source: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A controller operation that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Unknown peer, pool, exporter, listener or source group (the message names it).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The controller failed (a map write, the state store, …).
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    /// The API error class.
    pub const fn code(&self) -> ErrorCode {
        match self {
            ControlError::NotFound(_) => ErrorCode::NotFound,
            ControlError::Conflict(_) => ErrorCode::Conflict,
            ControlError::Invalid(_) => ErrorCode::BadRequest,
            ControlError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<ControlError> for ApiErrorBody {
    fn from(e: ControlError) -> Self {
        ApiErrorBody {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// The peer a session belongs to (set at registration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPeer {
    /// Slot in `PEERS`.
    pub id: u32,
    /// Peer name.
    pub name: String,
}

/// The controller as the API server sees it.
pub trait ControlPlane: Send + Sync + 'static {
    /// Adds or refreshes a peer (its `PEERS` entry included) and returns its id and pool.
    /// A registration counts as the first heartbeat. The token is already checked.
    fn register_peer(
        &self,
        register: &Register,
        source: SocketAddr,
    ) -> Result<Registered, ControlError>;
    /// Records a heartbeat.
    fn heartbeat(&self, peer: &SessionPeer, metrics: PeerMetrics) -> Result<(), ControlError>;
    /// Keeps the latest templates of an exporter and observation domain.
    fn templates_learned(
        &self,
        peer: &SessionPeer,
        templates: Templates,
    ) -> Result<(), ControlError>;
    /// The peer installed the templates of `InstallTemplates { request_id }`.
    fn templates_installed(&self, peer: &SessionPeer, request_id: u64) -> Result<(), ControlError>;
    /// The peer reported everything it had for the exporter of `SyncTemplates { request_id }`.
    fn templates_synced(&self, peer: &SessionPeer, request_id: u64) -> Result<(), ControlError>;
    /// The peer's session ended (closed or broken, not replaced by a newer one): unless it
    /// registers again within the grace period, it fails over without waiting for the whole
    /// heartbeat timeout.
    fn session_lost(&self, peer: &SessionPeer) -> Result<(), ControlError>;

    /// Health summary. The API fills in `fingerprint` and `auth_failures`.
    fn status(&self) -> Result<StatusView, ControlError>;
    /// The Connected Peers table.
    fn peers(&self) -> Result<Vec<PeerView>, ControlError>;
    /// Drains (`true`) or undrains a peer.
    fn set_draining(&self, peer: &str, draining: bool) -> Result<(), ControlError>;
    /// Every pool.
    fn pools(&self) -> Result<Vec<PoolView>, ControlError>;
    /// Creates an empty pool.
    fn create_pool(&self, name: &str) -> Result<(), ControlError>;
    /// Deletes an empty pool.
    fn delete_pool(&self, name: &str) -> Result<(), ControlError>;
    /// Puts a peer in a pool, optionally with a new weight.
    fn assign(&self, pool: &str, peer: &str, weight: Option<u32>) -> Result<(), ControlError>;
    /// Takes a peer out of a pool.
    fn unassign(&self, pool: &str, peer: &str) -> Result<(), ControlError>;
    /// Every listener.
    fn listeners(&self) -> Result<Vec<ListenerView>, ControlError>;
    /// Adds a listener, or gives an existing one another pool (for new exporters).
    fn set_listener(&self, addr: SocketAddr, pool: &str) -> Result<(), ControlError>;
    /// Removes a listener.
    fn remove_listener(&self, addr: SocketAddr) -> Result<(), ControlError>;
    /// Every source group.
    fn source_groups(&self) -> Result<Vec<SourceGroupView>, ControlError>;
    /// Adds a source group, or gives an existing one another pool (for new exporters).
    fn set_source_group(&self, cidr: Cidr, pool: &str) -> Result<(), ControlError>;
    /// Removes a source group.
    fn remove_source_group(&self, cidr: Cidr) -> Result<(), ControlError>;
    /// Every exporter.
    fn exporters(&self) -> Result<Vec<ExporterView>, ControlError>;
    /// Moves an exporter to a peer and pins it there.
    fn move_exporter(&self, addr: IpAddr, peer: &str) -> Result<(), ControlError>;
    /// Pins or unpins an exporter.
    fn set_pinned(&self, addr: IpAddr, pinned: bool) -> Result<(), ControlError>;
    /// Rebalancer settings.
    fn balancer(&self) -> Result<BalancerSettings, ControlError>;
    /// Changes rebalancer settings; returns the new ones.
    fn set_balancer(&self, patch: BalancerPatch) -> Result<BalancerSettings, ControlError>;
    /// Computes a rebalance plan, and carries it out if `apply`.
    fn rebalance(&self, apply: bool) -> Result<PlanView, ControlError>;
}
