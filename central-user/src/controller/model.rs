//! The controller's persistent model: what `state.json` holds, and the settings it runs with.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
pub use sluice_common::protocol::Cidr;
use uuid::Uuid;

/// Rebalancer and failover settings (`[balancer]` in central.toml, `sluicectl balancer set`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalancerConfig {
    /// Seconds between rebalances; rates are smoothed over the same time constant.
    pub rebalance_interval_s: u64,
    /// Allowed excess of a peer's load over its weighted share, percentage points.
    pub distribution_margin_pct: f64,
    /// Heartbeat silence after which a peer is OFFLINE and its exporters move.
    pub peer_timeout_ms: u64,
    /// How long a move waits for the new peer to confirm the exporter's templates before the
    /// map entry flips anyway.
    pub template_install_timeout_ms: u64,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            rebalance_interval_s: 90,
            distribution_margin_pct: 5.0,
            peer_timeout_ms: 3000,
            template_install_timeout_ms: 2000,
        }
    }
}

/// A [`BalancerConfig`] field out of range; the message names the key and the problem.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BalancerError {
    /// `rebalance_interval_s` is zero.
    #[error("rebalance_interval_s: must be at least 1")]
    ZeroInterval,
    /// `distribution_margin_pct` outside 0..=100.
    #[error("distribution_margin_pct: {0} is not within 0..=100")]
    Margin(f64),
    /// `peer_timeout_ms` below 100.
    #[error("peer_timeout_ms: {0} is below 100 ms (heartbeats come every second)")]
    PeerTimeout(u64),
}

impl BalancerConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), BalancerError> {
        if self.rebalance_interval_s == 0 {
            return Err(BalancerError::ZeroInterval);
        }
        if !(0.0..=100.0).contains(&self.distribution_margin_pct) {
            return Err(BalancerError::Margin(self.distribution_margin_pct));
        }
        if self.peer_timeout_ms < 100 {
            return Err(BalancerError::PeerTimeout(self.peer_timeout_ms));
        }
        Ok(())
    }
}

/// A pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolState {
    /// Id in the maps, `0..MAX_POOLS`.
    pub id: u32,
    /// Unique name.
    pub name: String,
}

/// A peer as registered and configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerState {
    /// Slot in `PEERS`, stable for the name.
    pub id: u32,
    /// Unique name.
    pub name: String,
    /// Installation id.
    pub uuid: Uuid,
    /// Software version at the last registration.
    pub version: String,
    /// Forwarding target address.
    pub data_addr: IpAddr,
    /// Ingest ports.
    pub ports: Vec<u16>,
    /// Relative capacity in its pool.
    pub weight: u32,
    /// Pool id, if assigned.
    pub pool: Option<u32>,
    /// Kept out of the hash tables, exporters moved away.
    pub draining: bool,
    /// Was heartbeating when the state was written (restored peers get a fresh timeout).
    pub online: bool,
}

impl PeerState {
    /// Port written into `PEERS`: the single ingest port, or 0 (keep the datagram's
    /// destination port) when the peer listens on several.
    pub fn forward_port(&self) -> u16 {
        match self.ports.as_slice() {
            [port] => *port,
            _ => 0,
        }
    }
}

/// A listener address and port and its pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerState {
    /// Address and UDP port flow datagrams are sent to.
    pub addr: SocketAddr,
    /// Pool id.
    pub pool: u32,
}

/// A source group: exporters inside the network belong to the pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceGroupState {
    /// Exporter network.
    pub net: Cidr,
    /// Pool id.
    pub pool: u32,
}

/// An exporter's assignment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterState {
    /// Exporter address.
    pub addr: IpAddr,
    /// Pool id.
    pub pool: u32,
    /// Assigned peer id.
    pub peer: u32,
    /// Pinned by an operator: the rebalancer leaves it alone.
    pub pinned: bool,
}

/// Everything the controller persists, ordered (pools, peers by id; the rest by address) so
/// the same state always serialises to the same bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerState {
    /// Rebalancer settings.
    pub balancer: BalancerConfig,
    /// Pools.
    pub pools: Vec<PoolState>,
    /// Peers.
    pub peers: Vec<PeerState>,
    /// Listeners.
    pub listeners: Vec<ListenerState>,
    /// Source groups.
    pub source_groups: Vec<SourceGroupState>,
    /// Exporter assignments.
    pub exporters: Vec<ExporterState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balancer_defaults_and_validation() {
        let b = BalancerConfig::default();
        assert!(b.validate().is_ok());
        let bad = BalancerConfig {
            distribution_margin_pct: 150.0,
            ..b
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .starts_with("distribution_margin_pct")
        );
        let parsed: BalancerConfig = toml::from_str("rebalance_interval_s = 10").unwrap();
        assert_eq!(parsed.rebalance_interval_s, 10);
        assert_eq!(parsed.peer_timeout_ms, 3000);
        assert!(toml::from_str::<BalancerConfig>("typo = 1").is_err());
    }
}
