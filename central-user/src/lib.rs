//! Sluice Central: the XDP data plane's user-space half.
//!
//! # Layout
//! - [`maglev`]: pure weighted consistent-hash tables, one per pool.
//! - [`rebalancer`]: pure planner of the fewest exporter moves that restore the margin.
//! - [`controller`]: pools, peers, exporters, sampling, failover and moves, behind the
//!   [`controller::DataPlane`] trait (with an in-memory model for tests); [`state`]: the
//!   checksummed state file.
//! - [`api`]: the TLS control API (peer sessions, admin API, `/metrics`); [`auth`]: tokens.
//! - [`ha`]: the hot-standby pair (roles, the HA link, the mirror, virtual IPs).
pub mod api;
pub mod atomic_file;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod controller;
pub mod ha;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod rebalancer;
pub mod relay;
pub mod run;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;
