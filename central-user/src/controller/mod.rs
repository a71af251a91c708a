//! Controller core: pools, peers, exporters, sampling, rebalancing and failover.
//!
//! Pure and synchronous: every method takes the current time as a parameter and talks to the
//! data plane only through [`DataPlane`], so tests drive it deterministically without BPF.

pub mod dataplane;
pub mod memory;

pub use dataplane::{DataPlane, DataPlaneError};
pub use memory::MemoryDataPlane;
