//! Sluice Central: the XDP data plane's user-space half.
//!
//! # Layout
//! - [`maglev`]: pure weighted consistent-hash tables, one per pool.
pub mod controller;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod rebalancer;
