//! `central.toml`: validated at start, errors name the key and the problem. Command-line flags
//! override the file (see `sluice-central run --help`).

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sluice_common::{MAX_LISTENERS, MAX_PEERS, MAX_POOLS, PIN_DIR};

use crate::{
    controller::{BalancerConfig, Cidr},
    loader::AttachMode,
};

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CentralConfig {
    /// `[data_plane]`.
    #[serde(default)]
    pub data_plane: DataPlaneConfig,
    /// `[[listeners]]`.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// `[[pools]]` (pools named by listeners, peers and source groups are created anyway).
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    /// `[[peers]]`: static peers, forwarded to without a control session.
    #[serde(default)]
    pub peers: Vec<StaticPeer>,
    /// `[[source_groups]]`.
    #[serde(default)]
    pub source_groups: Vec<SourceGroupConfig>,
    /// `[[pins]]`: exporters fixed to a peer.
    #[serde(default)]
    pub pins: Vec<PinConfig>,
    /// `[control]`.
    #[serde(default)]
    pub control: ControlConfig,
    /// `[balancer]`.
    #[serde(default)]
    pub balancer: BalancerConfig,
    /// `[state]`.
    #[serde(default)]
    pub state: StateConfig,
    /// `[ha]`: a hot-standby pair (absent: a single Central).
    #[serde(default)]
    pub ha: Option<HaConfig>,
}

/// `[ha]`: two Centrals, one active and one hot standby. Both nodes use the same file; only
/// `node` (or `--ha-node`) differs.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// This node's name, one of `nodes` (usually given by `--ha-node`).
    #[serde(default)]
    pub node: String,
    /// File holding the shared HA credential (the same secret on both nodes, at least 16
    /// bytes; `sluice-central token generate` output or `openssl rand -hex 32` will do).
    pub credential_file: PathBuf,
    /// The interface the virtual IPs live on (the exporters' segment), unless a VIP names
    /// its own.
    pub interface: String,
    /// Virtual IPs, `ADDRESS/PREFIX` or `ADDRESS/PREFIX@INTERFACE`: IPv4, and IPv6 where the
    /// operator has one; for example the exporters' VIP on `interface` and the peers' (the
    /// Central URL they use) on the peers' side.
    pub vips: Vec<String>,
    /// Heartbeat interval on the HA link.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// Silence on the HA link after which the standby checks whether the active is gone (and
    /// takes over when nobody answers for the virtual IP). Shorter is a faster takeover and
    /// more exposure to a loaded host's scheduling hiccups.
    #[serde(default = "default_takeover_ms")]
    pub takeover_timeout_ms: u64,
    /// A recovered node of higher priority takes the active role back (off: it becomes the
    /// standby and stays so).
    #[serde(default)]
    pub preempt: bool,
    /// `[[ha.nodes]]`: exactly two.
    pub nodes: Vec<HaNode>,
}

/// `[[ha.nodes]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HaNode {
    /// Name.
    pub name: String,
    /// Its own control API address (not a virtual IP): the HA link connects there.
    pub address: SocketAddr,
    /// Higher wins when both start together (1-254).
    #[serde(default = "default_priority")]
    pub priority: u8,
}

/// A parsed `ha.vips` entry (host bits kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipSpec {
    /// Address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Its interface, when not `ha.interface`.
    pub dev: Option<String>,
}

impl std::str::FromStr for VipSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (cidr, dev) = match s.split_once('@') {
            Some((c, d)) if valid_iface(d) => (c, Some(d.to_string())),
            Some((_, d)) => return Err(format!("{s:?}: {d:?} is not an interface name")),
            None => (s, None),
        };
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix == 0 || prefix > max {
            return Err(format!("{s:?}: prefix must be 1..={max}"));
        }
        if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
            return Err(format!("{s:?}: not a unicast address"));
        }
        Ok(VipSpec { addr, prefix, dev })
    }
}

fn valid_iface(name: &str) -> bool {
    !name.is_empty() && name.len() <= 15 && !name.contains('/') && !name.contains('@')
}

impl HaConfig {
    /// The parsed virtual IPs (validated: no error once `validate` passed).
    pub fn vip_specs(&self) -> Result<Vec<VipSpec>, ConfigError> {
        self.vips
            .iter()
            .enumerate()
            .map(|(i, v)| v.parse().map_err(|e| invalid(format!("ha.vips[{i}]"), e)))
            .collect()
    }

    /// This node and its partner.
    pub fn me_and_partner(&self) -> Result<(&HaNode, &HaNode), ConfigError> {
        let me = self
            .nodes
            .iter()
            .position(|n| n.name == self.node)
            .ok_or_else(|| {
                invalid(
                    "ha.node",
                    format!(
                        "{:?} is not one of ha.nodes ({}); set it or pass --ha-node",
                        self.node,
                        self.nodes
                            .iter()
                            .map(|n| n.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
        Ok((&self.nodes[me], &self.nodes[1 - me]))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes.len() != 2 {
            return Err(invalid(
                "ha.nodes",
                format!("exactly two nodes are needed, not {}", self.nodes.len()),
            ));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.name.is_empty() {
                return Err(invalid(format!("ha.nodes[{i}].name"), "must not be empty"));
            }
            if n.priority == 0 || n.priority == 255 {
                return Err(invalid(
                    format!("ha.nodes[{i}].priority"),
                    "must be 1..=254",
                ));
            }
            if n.address.ip().is_unspecified() || n.address.port() == 0 {
                return Err(invalid(
                    format!("ha.nodes[{i}].address"),
                    format!("{} is not an address the partner can connect to", n.address),
                ));
            }
        }
        if self.nodes[0].name == self.nodes[1].name {
            return Err(invalid("ha.nodes[1].name", "both nodes have the same name"));
        }
        if self.nodes[0].address == self.nodes[1].address {
            return Err(invalid(
                "ha.nodes[1].address",
                "both nodes have the same address",
            ));
        }
        // `node` may come from `--ha-node` after the file is read: checked again at start.
        if !self.node.is_empty() {
            self.me_and_partner()?;
        }
        if self.heartbeat_interval_ms < 10 {
            return Err(invalid("ha.heartbeat_interval_ms", "at least 10 ms"));
        }
        if self.takeover_timeout_ms < 3 * self.heartbeat_interval_ms {
            return Err(invalid(
                "ha.takeover_timeout_ms",
                format!(
                    "{} ms is less than three heartbeats ({} ms)",
                    self.takeover_timeout_ms,
                    3 * self.heartbeat_interval_ms
                ),
            ));
        }
        if self.vips.is_empty() {
            return Err(invalid("ha.vips", "at least one virtual IP is needed"));
        }
        self.vip_specs()?;
        if !valid_iface(&self.interface) {
            return Err(invalid(
                "ha.interface",
                format!("{:?} is not an interface name", self.interface),
            ));
        }
        if self.credential_file.as_os_str().is_empty() {
            return Err(invalid("ha.credential_file", "must name a file"));
        }
        Ok(())
    }
}

/// Default `ha.heartbeat_interval_ms`.
pub const DEFAULT_HA_HEARTBEAT_MS: u64 = 100;
/// Default `ha.takeover_timeout_ms`: conservative (ten heartbeats). 300 ms is tested and
/// measured (`cargo xtask bench takeover`); shorter timeouts react faster and are more exposed
/// to a loaded host's scheduling hiccups (the virtual-IP probe still prevents split brain).
pub const DEFAULT_HA_TAKEOVER_MS: u64 = 1000;

fn default_heartbeat_ms() -> u64 {
    DEFAULT_HA_HEARTBEAT_MS
}

fn default_takeover_ms() -> u64 {
    DEFAULT_HA_TAKEOVER_MS
}

fn default_priority() -> u8 {
    100
}

/// `[data_plane]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataPlaneConfig {
    /// Ingress interfaces the XDP program attaches to. Empty: no XDP, the slow-path relay
    /// forwards everything.
    pub interfaces: Vec<String>,
    /// `native`, `skb` or `auto` (native, else generic).
    pub xdp_mode: AttachMode,
    /// Decrement TTL / hop limit when forwarding (loop protection).
    pub decrement_ttl: bool,
    /// Run the slow-path relay for traffic XDP passes up.
    pub slow_path: bool,
    /// Where maps and links are pinned.
    pub pin_dir: PathBuf,
    /// Turn on IP forwarding on the ingress interfaces (`bpf_fib_lookup` requires it).
    pub enable_forwarding: bool,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            xdp_mode: AttachMode::Auto,
            decrement_ttl: true,
            slow_path: true,
            pin_dir: PathBuf::from(PIN_DIR),
            enable_forwarding: true,
        }
    }
}

/// `[[listeners]]`: an address and its ports.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address exporters send to (usually the Central's virtual IP).
    pub address: IpAddr,
    /// UDP ports.
    pub ports: Vec<u16>,
    /// Pool receiving these exporters (unless a source group says otherwise).
    #[serde(default = "default_pool")]
    pub pool: String,
}

/// `[[pools]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Name.
    pub name: String,
}

/// `[[peers]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticPeer {
    /// Unique name.
    pub name: String,
    /// Target `address` or `address:port` (no port: keep the datagram's port).
    pub address: String,
    /// Pool.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// Relative capacity.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// A static peer's `address` that is neither an address nor address:port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not ADDRESS or ADDRESS:PORT")]
pub struct BadPeerAddress(pub String);

impl StaticPeer {
    /// Parses `address` into an IP and optional port.
    pub fn target(&self) -> Result<(IpAddr, Option<u16>), BadPeerAddress> {
        if let Ok(sa) = self.address.parse::<SocketAddr>() {
            return Ok((sa.ip(), Some(sa.port())));
        }
        self.address
            .parse::<IpAddr>()
            .map(|ip| (ip, None))
            .map_err(|_| BadPeerAddress(self.address.clone()))
    }
}

/// `[[source_groups]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceGroupConfig {
    /// Exporter network.
    pub cidr: Cidr,
    /// Pool.
    pub pool: String,
}

/// `[[pins]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinConfig {
    /// Exporter address.
    pub exporter: IpAddr,
    /// Peer name.
    pub peer: String,
}

/// `[control]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// TLS control API address.
    pub listen: SocketAddr,
    /// Certificate (PEM); generated into the state dir when absent.
    pub cert: Option<PathBuf>,
    /// Private key (PEM).
    pub key: Option<PathBuf>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            cert: None,
            key: None,
        }
    }
}

/// `[state]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// State directory (state, tokens, certificate).
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/sluice"),
        }
    }
}

fn default_pool() -> String {
    "default".into()
}

fn default_weight() -> u32 {
    1
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax, unknown key or wrong type (the message names the key and line).
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("{key}: {problem}")]
    Invalid {
        /// Dotted key, e.g. `peers[1].address`.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl CentralConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every pool name the configuration mentions, in first-mention order, deduplicated.
    pub fn pool_names(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.pools
            .iter()
            .map(|p| &p.name)
            .chain(self.listeners.iter().map(|l| &l.pool))
            .chain(self.peers.iter().map(|p| &p.pool))
            .chain(self.source_groups.iter().map(|g| &g.pool))
            .filter(|n| seen.insert(n.to_string()))
            .cloned()
            .collect()
    }

    /// Every listener socket address.
    pub fn listener_addrs(&self) -> Vec<(SocketAddr, String)> {
        self.listeners
            .iter()
            .flat_map(|l| {
                l.ports
                    .iter()
                    .map(move |&p| (SocketAddr::new(l.address, p), l.pool.clone()))
            })
            .collect()
    }

    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.balancer
            .validate()
            .map_err(|p| invalid("balancer", p.to_string()))?;
        for (i, l) in self.listeners.iter().enumerate() {
            if l.ports.is_empty() {
                return Err(invalid(
                    format!("listeners[{i}].ports"),
                    "at least one port is required",
                ));
            }
            if let Some(p) = l.ports.iter().find(|&&p| p == 0) {
                return Err(invalid(
                    format!("listeners[{i}].ports"),
                    format!("port {p} is not a valid UDP port"),
                ));
            }
        }
        let listeners = self.listener_addrs();
        if listeners.len() > MAX_LISTENERS as usize {
            return Err(invalid(
                "listeners",
                format!(
                    "{} listener sockets, at most {MAX_LISTENERS}",
                    listeners.len()
                ),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return Err(invalid(
                    format!("peers[{i}].name"),
                    format!("{:?} is empty or used twice", p.name),
                ));
            }
            p.target()
                .map_err(|e| invalid(format!("peers[{i}].address"), e.to_string()))?;
            if p.weight == 0 {
                return Err(invalid(format!("peers[{i}].weight"), "must be at least 1"));
            }
        }
        if self.peers.len() > MAX_PEERS as usize {
            return Err(invalid("peers", format!("at most {MAX_PEERS} peers")));
        }
        if self.pool_names().len() > MAX_POOLS as usize {
            return Err(invalid("pools", format!("at most {MAX_POOLS} pools")));
        }
        for (i, pin) in self.pins.iter().enumerate() {
            if !names.contains(pin.peer.as_str()) {
                return Err(invalid(
                    format!("pins[{i}].peer"),
                    format!("no peer named {:?} in [[peers]]", pin.peer),
                ));
            }
        }
        if let Some(ha) = &self.ha {
            ha.validate()?;
        }
        for (i, name) in self.data_plane.interfaces.iter().enumerate() {
            if name.is_empty() || name.len() > 15 || name.contains('/') {
                return Err(invalid(
                    format!("data_plane.interfaces[{i}]"),
                    format!("{name:?} is not an interface name"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [data_plane]
        interfaces = ["eth0"]
        xdp_mode = "auto"
        [[listeners]]
        address = "198.18.0.1"
        ports = [2055, 4739]
        [[peers]]
        name = "a"
        address = "198.18.2.2:2055"
        [[peers]]
        name = "b"
        address = "198.18.2.3"
        weight = 2
        pool = "edge"
        [[source_groups]]
        cidr = "198.18.64.0/18"
        pool = "edge"
        [[pins]]
        exporter = "198.18.1.10"
        peer = "b"
        [balancer]
        rebalance_interval_s = 30
    "#;

    #[test]
    fn a_complete_file_parses() {
        let c = CentralConfig::parse(GOOD).unwrap();
        assert_eq!(c.listener_addrs().len(), 2);
        assert_eq!(
            c.pool_names(),
            vec!["default".to_string(), "edge".to_string()]
        );
        assert_eq!(
            c.peers[1].target().unwrap(),
            ("198.18.2.3".parse().unwrap(), None)
        );
        let mut bad = c.peers[1].clone();
        bad.address = "peer-b:4739".into();
        assert_eq!(
            bad.target().map_err(|e| e.to_string()),
            Err(r#""peer-b:4739" is not ADDRESS or ADDRESS:PORT"#.to_owned())
        );
        assert_eq!(c.balancer.rebalance_interval_s, 30);
        assert_eq!(
            c.balancer.distribution_margin_pct, 5.0,
            "defaults fill the rest"
        );
    }

    fn err(text: &str) -> String {
        CentralConfig::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        assert!(err("[data_plane]\ninterfacez = []").contains("unknown field `interfacez`"));
        assert!(err("[data_plane]\nxdp_mode = \"turbo\"").contains("xdp_mode"));
        assert!(
            err("[[listeners]]\naddress = \"198.18.0.1\"\nports = []")
                .starts_with("listeners[0].ports")
        );
        assert!(
            err("[[peers]]\nname = \"a\"\naddress = \"nowhere\"").starts_with("peers[0].address")
        );
        assert!(err("[[peers]]\nname = \"a\"\naddress = \"198.18.2.2\"\n[[peers]]\nname = \"a\"\naddress = \"198.18.2.3\"").starts_with("peers[1].name"));
        assert!(
            err("[[pins]]\nexporter = \"198.18.1.1\"\npeer = \"ghost\"")
                .starts_with("pins[0].peer")
        );
        assert!(
            err("[[source_groups]]\ncidr = \"198.18.0.0/40\"\npool = \"x\"")
                .contains("prefix length")
        );
        assert!(err("[balancer]\nrebalance_interval_s = 0").contains("rebalance_interval_s"));
        assert!(
            err("[[peers]]\nname = \"a\"\naddress = \"198.18.2.2\"\nweight = 0")
                .starts_with("peers[0].weight")
        );
    }

    const HA: &str = r#"
        [ha]
        node = "a"
        credential_file = "/etc/sluice/ha.key"
        interface = "eth0"
        vips = ["198.18.0.1/24", "fd00:5c::1/64"]
        takeover_timeout_ms = 300
        [[ha.nodes]]
        name = "a"
        address = "198.18.9.1:8443"
        priority = 200
        [[ha.nodes]]
        name = "b"
        address = "198.18.9.2:8443"
    "#;

    #[test]
    fn the_ha_section_parses_with_defaults() {
        let c = CentralConfig::parse(HA).unwrap();
        let ha = c.ha.unwrap();
        let (me, partner) = ha.me_and_partner().unwrap();
        assert_eq!((me.name.as_str(), me.priority), ("a", 200));
        assert_eq!((partner.name.as_str(), partner.priority), ("b", 100));
        assert_eq!(
            (ha.heartbeat_interval_ms, ha.takeover_timeout_ms),
            (100, 300)
        );
        assert!(!ha.preempt, "no preemption by default");
        let vips = ha.vip_specs().unwrap();
        assert_eq!(vips[1].addr, "fd00:5c::1".parse::<IpAddr>().unwrap());
        assert_eq!(vips[1].prefix, 64);
        assert_eq!(vips[1].dev, None);
        let c = CentralConfig::parse(&HA.replace("\"fd00:5c::1/64\"", "\"198.18.2.1/24@cp0\""))
            .unwrap();
        assert_eq!(
            c.ha.unwrap().vip_specs().unwrap()[1].dev.as_deref(),
            Some("cp0")
        );
    }

    #[test]
    fn ha_errors_name_the_key() {
        let with = |from: &str, to: &str| err(&HA.replace(from, to));
        assert!(with("node = \"a\"", "node = \"c\"").starts_with("ha.node"));
        assert!(with("\"198.18.0.1/24\"", "\"198.18.0.1/33\"").starts_with("ha.vips[0]"));
        assert!(with("\"198.18.0.1/24\"", "\"198.18.0.1\"").starts_with("ha.vips[0]"));
        assert!(with("\"198.18.0.1/24\"", "\"198.18.0.1/24@\"").starts_with("ha.vips[0]"));
        assert!(
            with("takeover_timeout_ms = 300", "takeover_timeout_ms = 200")
                .starts_with("ha.takeover_timeout_ms")
        );
        assert!(with("priority = 200", "priority = 0").starts_with("ha.nodes[0].priority"));
        assert!(with("198.18.9.2:8443", "198.18.9.1:8443").starts_with("ha.nodes[1].address"));
        assert!(with("name = \"b\"", "name = \"a\"").starts_with("ha.nodes[1].name"));
        assert!(with("interface = \"eth0\"", "interface = \"\"").starts_with("ha.interface"));
        assert!(with("node = \"a\"", "nod = \"a\"").contains("unknown field `nod`"));
        assert!(
            with("vips = [\"198.18.0.1/24\", \"fd00:5c::1/64\"]", "vips = []")
                .starts_with("ha.vips")
        );
    }
}
