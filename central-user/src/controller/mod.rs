//! Controller core: pools, peers, exporters, sampling, rebalancing and failover.
//!
//! Pure and synchronous: every method takes the current time as a parameter and talks to the
//! data plane only through [`DataPlane`], so tests drive it deterministically without BPF.
//! The API server calls the admin and peer-session methods; the daemon's loop calls
//! [`Controller::tick`] every second and feeds it ring-buffer events
//! ([`Controller::on_exporter_event`]); whenever [`Controller::take_dirty`] says so it persists
//! [`Controller::snapshot`] through `crate::state`.
//!
//! - `engine`: the [`Controller`] type, restore and reconcile, pools, listeners, source groups,
//!   the balancer settings and the pool tables.
//! - `ledger`: moves waiting for templates, the template store, queued peer requests, counters.
//! - `peers`: registration, heartbeats, failover, drain, pool membership.
//! - `traffic`: the sampler, new-exporter events, moves (templates first), rebalancing, ticks.
//! - `views`: the API's tables and status.

pub mod dataplane;
mod engine;
mod error;
mod ledger;
pub mod memory;
mod model;
mod peers;
mod traffic;
mod views;

pub use dataplane::{DataPlane, DataPlaneError};
pub use engine::{Controller, DEFAULT_POOL, ReconcileReport};
pub use error::ControllerError;
pub use ledger::{InstallRequest, SyncRequest};
pub use memory::MemoryDataPlane;
pub use model::{
    BalancerConfig, BalancerError, Cidr, ControllerState, ExporterState, ListenerState, PeerState,
    PoolState, SourceGroupState,
};
pub use peers::Registration;
pub use traffic::{PoolPlan, TemplateStore, TickReport};
pub use views::ControllerStatus;
