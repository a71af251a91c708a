//! `peer.toml`: parsing, command-line overrides and validation.
//!
//! Every section has defaults, so an empty file (or no file at all) is a working standalone
//! collector: ingest on the default ports, decode, print JSON lines on stdout.
//! [`PeerConfig::validate`] runs once at start and names the offending key in its error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub mod error;

use serde::Deserialize;
use sluice_common::client::Pin;

pub use error::ConfigError;

use crate::output::OutputConfig;
use error::positive;

/// Ports a standalone peer listens on when none are configured: NetFlow (2055), IPFIX (4739),
/// sFlow (6343) and the other common NetFlow port (9995).
pub const DEFAULT_PORTS: [u16; 4] = [2055, 4739, 6343, 9995];

/// The whole `peer.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Name shown by Central and in logs; defaults to the host name.
    #[serde(default = "default_name")]
    pub name: String,
    /// Present in peer mode, absent in standalone mode.
    #[serde(default)]
    pub central: Option<CentralConfig>,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Where records go: absent means stdout; `outputs = []` means none (records are decoded
    /// and counted only, e.g. for benchmarks).
    #[serde(default)]
    pub outputs: Option<Vec<OutputConfig>>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            name: default_name(),
            central: None,
            ingest: IngestConfig::default(),
            pipeline: PipelineConfig::default(),
            metrics: MetricsConfig::default(),
            outputs: None,
        }
    }
}

/// A [`PeerConfig`] that passed [`PeerConfig::validate`] (nothing else makes one), read-only.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig(PeerConfig);

impl std::ops::Deref for ValidConfig {
    type Target = PeerConfig;

    fn deref(&self) -> &PeerConfig {
        &self.0
    }
}

/// `[central]`: how to reach Central and what to register as (see [`crate::central`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralConfig {
    /// `https://host:port` of Central's control API.
    pub url: String,
    /// File holding the access token printed by `sluice-central token generate`.
    pub token_file: PathBuf,
    /// Central's certificate (PEM) to pin, or the CA that signed it. One of `ca_cert` and
    /// `fingerprint` is required.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// `sha256:<hex>` fingerprint of Central's certificate to pin (as `sluice-central` prints
    /// it and `sluicectl status` shows it), instead of `ca_cert`.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Address Central forwards flow datagrams to. Default: the first listen address that is
    /// not unspecified, else the address this host reaches Central from.
    #[serde(default)]
    pub data_address: Option<IpAddr>,
    /// Relative capacity announced on first registration (Central keeps the operator's
    /// weight afterwards).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Pool to join on first registration; default: Central's default pool.
    #[serde(default)]
    pub pool: Option<String>,
}

/// Largest weight Central accepts.
const MAX_WEIGHT: usize = 1_000_000;

fn default_weight() -> u32 {
    1
}

/// `[ingest]`: UDP sockets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Ports bound on every address of `addresses` (ignored when `listen` is set).
    pub ports: Vec<u16>,
    /// Addresses the `ports` are bound on; IPv6 sockets are v6-only.
    pub addresses: Vec<IpAddr>,
    /// Explicit `ADDR:PORT` list; replaces `ports` × `addresses` when not empty.
    pub listen: Vec<SocketAddr>,
    /// `SO_REUSEPORT` sockets (one receive thread each) per listen address.
    pub sockets_per_port: usize,
    /// Receive buffer per socket, in bytes.
    pub rcvbuf_bytes: usize,
    /// Datagrams fetched per `recvmmsg` call.
    pub batch_size: usize,
    /// Largest datagram accepted; longer ones are dropped and counted as `truncated`.
    pub max_datagram_bytes: usize,
    /// After the socket runs dry, wait this long for more datagrams before handing them to the
    /// shards (fewer, larger batches: less CPU per flow, this much more latency); 0 disables.
    /// 5 ms: each hand-over can wake a shard and an output thread, which costs tens of µs on a
    /// VM; 1 ms cost 15–35 % more CPU per flow at 5 000–50 000 datagrams/s.
    pub linger_us: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            ports: DEFAULT_PORTS.to_vec(),
            addresses: vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
            listen: Vec::new(),
            sockets_per_port: 2,
            rcvbuf_bytes: 32 << 20,
            batch_size: 64,
            max_datagram_bytes: 9216,
            linger_us: 5000,
        }
    }
}

impl IngestConfig {
    /// The socket addresses to bind, in order, without duplicates.
    pub fn listen_addresses(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = if self.listen.is_empty() {
            self.addresses
                .iter()
                .flat_map(|ip| self.ports.iter().map(|port| SocketAddr::new(*ip, *port)))
                .collect()
        } else {
            self.listen.clone()
        };
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| seen.insert(*a));
        out
    }
}

/// `[pipeline]`: decoder shards.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Decoder threads; exporters are spread over them by a hash of their address.
    pub shards: usize,
    /// Batches each shard's queue holds before receivers drop (and count) new ones.
    pub queue_depth: usize,
    /// Multiply bytes and packets by the exporter's sampling rate.
    pub apply_sampling: bool,
    /// How often shards expire held data and idle templates, in milliseconds.
    pub expire_interval_ms: u64,
    /// How long shutdown waits for failing outputs to drain, in milliseconds.
    pub drain_timeout_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue_depth: 128,
            apply_sampling: false,
            expire_interval_ms: 1000,
            drain_timeout_ms: 5000,
        }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `ADDR:PORT` serving `/metrics`; off when absent.
    pub listen: Option<SocketAddr>,
}

/// Command-line values that override the file (see `sluice-peer run --help`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub name: Option<String>,
    pub listen: Vec<SocketAddr>,
    pub outputs: Option<Vec<OutputConfig>>,
    pub metrics: Option<SocketAddr>,
    pub shards: Option<usize>,
    pub sockets_per_port: Option<usize>,
    pub rcvbuf_bytes: Option<usize>,
    pub apply_sampling: bool,
    pub central: CentralOverrides,
}

/// Peer-mode flags; any of them creates or amends `[central]`.
#[derive(Debug, Clone, Default)]
pub struct CentralOverrides {
    pub url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub fingerprint: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub data_address: Option<IpAddr>,
}

impl PeerConfig {
    /// Parses TOML text; `origin` names the source in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_path_buf(),
            source,
        })
    }

    /// Reads and parses a file (not yet validated).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Applies command-line flags: lists given on the command line replace the file's lists.
    pub fn apply(&mut self, o: Overrides) {
        if let Some(name) = o.name {
            self.name = name;
        }
        if !o.listen.is_empty() {
            self.ingest.listen = o.listen;
        }
        if o.outputs.is_some() {
            self.outputs = o.outputs;
        }
        if o.metrics.is_some() {
            self.metrics.listen = o.metrics;
        }
        if let Some(n) = o.shards {
            self.pipeline.shards = n;
        }
        if let Some(n) = o.sockets_per_port {
            self.ingest.sockets_per_port = n;
        }
        if let Some(n) = o.rcvbuf_bytes {
            self.ingest.rcvbuf_bytes = n;
        }
        self.pipeline.apply_sampling |= o.apply_sampling;
        self.apply_central(o.central);
    }

    fn apply_central(&mut self, o: CentralOverrides) {
        if o.url.is_none()
            && o.token_file.is_none()
            && o.fingerprint.is_none()
            && o.ca_cert.is_none()
            && o.data_address.is_none()
        {
            return;
        }
        let c = self.central.get_or_insert_with(|| CentralConfig {
            url: String::new(),
            token_file: PathBuf::new(),
            ca_cert: None,
            fingerprint: None,
            data_address: None,
            weight: default_weight(),
            pool: None,
        });
        if let Some(url) = o.url {
            c.url = url;
        }
        if let Some(path) = o.token_file {
            c.token_file = path;
        }
        // A pin on the command line replaces the file's pin.
        if o.fingerprint.is_some() || o.ca_cert.is_some() {
            c.fingerprint = o.fingerprint;
            c.ca_cert = o.ca_cert;
        }
        if o.data_address.is_some() {
            c.data_address = o.data_address;
        }
    }

    /// The outputs to run: the configured ones, or stdout when the key is absent.
    pub fn effective_outputs(&self) -> Vec<OutputConfig> {
        self.outputs
            .clone()
            .unwrap_or_else(|| vec![OutputConfig::default()])
    }

    /// Checks every value; the error names the first bad key. Only this makes a
    /// [`ValidConfig`], the configuration [`crate::run::Running::start`] takes.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid("name", "must not be empty"));
        }
        if let Some(central) = &self.central {
            central.validate()?;
        }
        self.ingest.validate()?;
        self.pipeline.validate()?;
        for (i, output) in self.outputs.iter().flatten().enumerate() {
            output.validate(&format!("outputs[{i}]"))?;
        }
        Ok(ValidConfig(self.clone()))
    }
}

impl CentralConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.url.is_empty() {
            return Err(ConfigError::invalid(
                "central.url",
                "missing: set it in [central] or pass --central",
            ));
        }
        let Some(rest) = self.url.strip_prefix("https://") else {
            return Err(ConfigError::invalid(
                "central.url",
                format!("`{}` must start with https://", self.url),
            ));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(ConfigError::invalid(
                "central.url",
                format!(
                    "`{}` must name a host and port, e.g. https://198.18.0.1:8443",
                    self.url
                ),
            ));
        }
        if self.token_file.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "central.token_file",
                "missing: set it in [central] or pass --token-file",
            ));
        }
        match (&self.ca_cert, &self.fingerprint) {
            (None, None) => {
                return Err(ConfigError::invalid(
                    "central.ca_cert",
                    "missing: pin Central's certificate with `ca_cert` (PEM file) or `fingerprint` \
                     (sha256:...), or pass --ca-cert or --fingerprint",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "central.fingerprint",
                    "set either `ca_cert` or `fingerprint`, not both",
                ));
            }
            (Some(path), None) if path.as_os_str().is_empty() => {
                return Err(ConfigError::invalid("central.ca_cert", "must not be empty"));
            }
            (None, Some(fp)) => {
                Pin::fingerprint(fp)
                    .map_err(|e| ConfigError::invalid("central.fingerprint", e.to_string()))?;
            }
            _ => {}
        }
        if let Some(addr) = self.data_address
            && (addr.is_unspecified() || addr.is_multicast())
        {
            return Err(ConfigError::invalid(
                "central.data_address",
                format!(
                    "{addr} cannot receive forwarded datagrams: give a unicast address of this host"
                ),
            ));
        }
        positive("central.weight", self.weight as usize, MAX_WEIGHT)?;
        if self.pool.as_ref().is_some_and(|p| p.trim().is_empty()) {
            return Err(ConfigError::invalid("central.pool", "must not be empty"));
        }
        Ok(())
    }
}

impl IngestConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            if self.ports.is_empty() {
                return Err(ConfigError::invalid(
                    "ingest.ports",
                    "no ports and no `ingest.listen` addresses: nothing to receive on",
                ));
            }
            if let Some(i) = self.ports.iter().position(|p| *p == 0) {
                return Err(ConfigError::invalid(
                    format!("ingest.ports[{i}]"),
                    "port 0 is not a port (use `listen = [\"127.0.0.1:0\"]` for an ephemeral one)",
                ));
            }
            if self.addresses.is_empty() {
                return Err(ConfigError::invalid(
                    "ingest.addresses",
                    "must not be empty",
                ));
            }
        }
        positive("ingest.sockets_per_port", self.sockets_per_port, 1024)?;
        positive("ingest.batch_size", self.batch_size, 1024)?;
        if !(4096..=2 << 30).contains(&self.rcvbuf_bytes) {
            return Err(ConfigError::invalid(
                "ingest.rcvbuf_bytes",
                format!("{} is outside 4096..=2147483648", self.rcvbuf_bytes),
            ));
        }
        if self.linger_us > 100_000 {
            return Err(ConfigError::invalid(
                "ingest.linger_us",
                format!("{} is above 100000 (100 ms)", self.linger_us),
            ));
        }
        if !(512..=65535).contains(&self.max_datagram_bytes) {
            return Err(ConfigError::invalid(
                "ingest.max_datagram_bytes",
                format!("{} is outside 512..=65535", self.max_datagram_bytes),
            ));
        }
        Ok(())
    }
}

impl PipelineConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        positive("pipeline.shards", self.shards, 1024)?;
        positive("pipeline.queue_depth", self.queue_depth, 1 << 20)?;
        if self.expire_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "pipeline.expire_interval_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

fn default_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice-peer".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Format;

    fn parse(text: &str) -> Result<PeerConfig, ConfigError> {
        let cfg = PeerConfig::from_toml(text, Path::new("peer.toml"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The error with its sources, as `sluice-peer` prints it.
    fn err(text: &str) -> String {
        let e = parse(text).expect_err("config should be rejected");
        let mut out = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            out = format!("{out}: {s}");
            source = s.source();
        }
        out
    }

    #[test]
    fn empty_file_is_standalone_defaults() {
        let cfg = parse("").unwrap();
        assert!(cfg.central.is_none());
        assert_eq!(cfg.ingest.ports, DEFAULT_PORTS);
        assert_eq!(cfg.ingest.rcvbuf_bytes, 32 << 20);
        assert_eq!(cfg.ingest.listen_addresses().len(), 8);
        assert_eq!(cfg.effective_outputs(), vec![OutputConfig::default()]);
        assert!(
            parse("outputs = []")
                .unwrap()
                .effective_outputs()
                .is_empty()
        );
    }

    #[test]
    fn design_example_parses() {
        let cfg = parse(
            r#"
            name = "peer-a"
            [central]
            url = "https://198.18.0.1:8443"
            token_file = "/etc/sluice/token"
            ca_cert = "/etc/sluice/central.pem"
            [ingest]
            ports = [2055, 4739, 6343]
            [[outputs]]
            type = "file"
            path = "/var/log/sluice/flows.jsonl"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.name, "peer-a");
        assert_eq!(cfg.ingest.ports, [2055, 4739, 6343]);
        assert_eq!(cfg.effective_outputs().len(), 1);
        assert_eq!(cfg.effective_outputs()[0].format(), Format::Json);
    }

    #[test]
    fn output_formats() {
        let cfg = parse(
            "[[outputs]]\ntype = \"file\"\npath = \"/x.pb\"\nformat = \"pb\"\n\
             [[outputs]]\ntype = \"stdout\"\nformat = \"json\"",
        )
        .unwrap();
        let formats: Vec<Format> = cfg.effective_outputs().iter().map(|o| o.format()).collect();
        assert_eq!(formats, [Format::Pb, Format::Json]);
    }

    #[test]
    fn output_fields_pick_json_fields_and_share_one_encoding() {
        let cfg = parse(
            "[[outputs]]\ntype = \"file\"\npath = \"/a\"\nfields = [\"bytes\", \"src_addr\"]\n\
             [[outputs]]\ntype = \"stdout\"\nfields = [\"bytes\", \"src_addr\"]\n\
             [[outputs]]\ntype = \"file\"\npath = \"/b\"",
        )
        .unwrap();
        let encodings: Vec<_> = cfg
            .effective_outputs()
            .iter()
            .map(|o| o.encoding())
            .collect();
        assert_eq!(
            encodings[0].fields(),
            Some(&[crate::record::Field::Bytes, crate::record::Field::SrcAddr][..])
        );
        assert_eq!(encodings[0], encodings[1]);
        assert_eq!(encodings[2].fields(), None);
        assert_ne!(encodings[0], encodings[2]);

        let unknown = err("[[outputs]]\ntype = \"file\"\npath = \"/x\"\nfields = [\"srcaddr\"]");
        assert!(unknown.contains("unknown field \"srcaddr\""), "{unknown}");
        assert!(unknown.contains("src_addr"), "{unknown}");
        let twice = err("[[outputs]]\ntype = \"stdout\"\nfields = [\"bytes\", \"bytes\"]");
        assert!(twice.contains("\"bytes\" is listed twice"), "{twice}");
        let pb = err(
            "[[outputs]]\ntype = \"file\"\npath = \"/x\"\nformat = \"pb\"\nfields = [\"bytes\"]",
        );
        assert!(pb.contains("`outputs[0].fields`"), "{pb}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        assert!(err("nmae = \"x\"").contains("nmae"));
        assert!(err("[ingest]\nport = [1]").contains("port"));
        assert!(err("[[outputs]]\ntype = \"file\"\npath = \"/x\"\nrotate = 1").contains("rotate"));
        assert!(err("[[outputs]]\ntype = \"kafkaa\"").contains("kafkaa"));
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(err("[ingest]\nports = [2055, 0]").contains("`ingest.ports[1]`"));
        assert!(err("[ingest]\nports = []").contains("`ingest.ports`"));
        assert!(err("[pipeline]\nshards = 0").contains("`pipeline.shards`"));
        assert!(err("[ingest]\nlinger_us = 1000000").contains("`ingest.linger_us`"));
        assert!(err("[ingest]\nrcvbuf_bytes = 10").contains("`ingest.rcvbuf_bytes`"));
        assert!(
            err("[central]\nurl = \"http://c:8443\"\ntoken_file = \"/t\"").contains("central.url")
        );
        assert!(
            err("[central]\nurl = \"https://c\"\ntoken_file = \"/t\"").contains("host and port")
        );
        assert!(
            err("[[outputs]]\ntype = \"file\"\npath = \"/x\"\nkeep = 0\nrotate_bytes = 0")
                .contains("`outputs[0].rotate_bytes`")
        );
        assert!(
            err("[[outputs]]\ntype = \"syslog\"\naddress = \"nohost\"")
                .contains("`outputs[0].address`")
        );
        let bad_format = err("[[outputs]]\ntype = \"file\"\npath = \"/x\"\nformat = \"xml\"");
        assert!(
            bad_format.contains("`format`") && bad_format.contains("\"pb\""),
            "{bad_format}"
        );
        // syslog carries JSON only: no `format` key.
        assert!(
            err("[[outputs]]\ntype = \"syslog\"\naddress = \"h:514\"\nformat = \"pb\"")
                .contains("format")
        );
    }

    #[test]
    fn flags_override_the_file() {
        let mut cfg =
            parse("[ingest]\nlisten = [\"127.0.0.1:1\"]\n[[outputs]]\ntype = \"stdout\"").unwrap();
        cfg.apply(Overrides {
            listen: vec!["[::1]:4739".parse().unwrap()],
            outputs: Some(vec!["file:/tmp/f.jsonl".parse().unwrap()]),
            shards: Some(3),
            ..Overrides::default()
        });
        cfg.validate().unwrap();
        assert_eq!(
            cfg.ingest.listen_addresses(),
            vec!["[::1]:4739".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(cfg.pipeline.shards, 3);
        assert!(matches!(cfg.effective_outputs()[0], OutputConfig::File(_)));
    }
}
