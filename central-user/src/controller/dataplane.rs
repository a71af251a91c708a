//! The controller's only window on the XDP data plane.
//!
//! The controller never touches aya: it computes and then pushes results through [`DataPlane`].
//! `crate::maps` implements it on the pinned BPF maps; [`super::memory::MemoryDataPlane`] is a
//! faithful in-memory model of the same maps for tests and dry runs.
//!
//! Conventions shared by every implementation:
//! - IPv4 addresses are given as `IpAddr::V4`; the implementation stores them IPv4-mapped.
//! - `prefix_len` of a source group counts bits of the address's own family (0..=32 for IPv4,
//!   0..=128 for IPv6); host bits beyond the prefix are ignored.
//! - Pool tables have exactly [`sluice_common::POOL_TABLE_SIZE`] slots.
//! - Pool ids are `0..MAX_POOLS`, peer ids `0..MAX_PEERS`.

use std::net::{IpAddr, SocketAddr};

use sluice_common::{ExporterStats, ExporterValue, PeerEntry};

/// A data-plane operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// The map has no room for another entry.
    #[error("map {map} is full ({capacity} entries)")]
    Full {
        /// Map name (see `sluice_common::names`).
        map: &'static str,
        /// Its capacity.
        capacity: u32,
    },
    /// An id, prefix length or table length the map cannot hold.
    #[error("map {map}: {what}")]
    Invalid {
        /// Map name.
        map: &'static str,
        /// What was wrong, e.g. "pool id 17 >= 16".
        what: String,
    },
    /// The kernel (or the model) refused the operation.
    #[error("map {map}: {op} failed")]
    Map {
        /// Map name.
        map: &'static str,
        /// The operation, e.g. "insert", "remove", "iterate".
        op: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Typed writer and reader of the maps the controller owns.
///
/// Writes are idempotent (setting an entry to its current value is a no-op) and removing an
/// absent entry is not an error, so the controller can replay its state after a restart.
pub trait DataPlane: Send {
    /// `LISTENERS`: traffic to `addr` (address and UDP port) belongs to `pool_id`.
    fn set_listener(&mut self, addr: SocketAddr, pool_id: u32) -> Result<(), DataPlaneError>;
    /// Removes a listener; its traffic is passed to the kernel untouched again.
    fn remove_listener(&mut self, addr: SocketAddr) -> Result<(), DataPlaneError>;
    /// `SOURCE_GROUPS`: exporters inside `net/prefix_len` belong to `pool_id`.
    fn set_source_group(
        &mut self,
        net: IpAddr,
        prefix_len: u8,
        pool_id: u32,
    ) -> Result<(), DataPlaneError>;
    /// Removes a source group.
    fn remove_source_group(&mut self, net: IpAddr, prefix_len: u8) -> Result<(), DataPlaneError>;
    /// `PEERS`: forwarding target and state of `peer_id`.
    fn set_peer(&mut self, peer_id: u32, entry: PeerEntry) -> Result<(), DataPlaneError>;
    /// `POOL_TABLES`: the whole consistent-hash table of `pool_id` (`POOL_TABLE_SIZE` slots).
    fn set_pool_table(&mut self, pool_id: u32, table: &[u32]) -> Result<(), DataPlaneError>;
    /// `EXPORTERS`: pins `addr` to a peer.
    fn set_exporter(&mut self, addr: IpAddr, value: ExporterValue) -> Result<(), DataPlaneError>;
    /// Unpins `addr`; its next packet goes through the pool table again.
    fn remove_exporter(&mut self, addr: IpAddr) -> Result<(), DataPlaneError>;
    /// Every `EXPORTERS` entry.
    fn exporters(&self) -> Result<Vec<(IpAddr, ExporterValue)>, DataPlaneError>;
    /// Every `EXPORTER_STATS` entry, summed over CPUs (`last_seen_ns` is the maximum).
    fn exporter_stats(&self) -> Result<Vec<(IpAddr, ExporterStats)>, DataPlaneError>;
}
