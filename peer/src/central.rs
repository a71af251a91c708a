//! Peer mode: with a `[central]` section the peer registers with Central over the control
//! channel ([`sluice_common::client::PeerClient`]), heartbeats every second with the Connected
//! Peers metrics, reports the templates its decoders learn, and installs the templates Central
//! hands it before an exporter moves here.
//!
//! - [`Credentials::load`] runs before the data path starts: an unreadable token file or an
//!   unusable pin is one clear error at start.
//! - [`PeerMode::start`] runs the client on a thread of its own (it reconnects with backoff
//!   for as long as the peer runs) and a template reporter that asks the decoder shards once a
//!   second which exporters' templates changed.
//!
//! Template state travels as [`Templates`] per (exporter, observation domain); its opaque
//! bytes are the JSON array of that domain's [`TemplateSnapshot`]s (NetFlow v9 and IPFIX
//! templates, options templates and sampling rates).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use sluice_common::client::{
    Connector, Endpoint, PeerClient, PeerClientConfig, PeerHandle, PeerHooks, Pin, TlsError,
    token_hash,
};
use sluice_common::protocol::{ALPN_PEER, PeerMetrics, Registered, Templates};
use uuid::Uuid;

use crate::config::{CentralConfig, ValidConfig};
use crate::decode::TemplateSnapshot;
use crate::metrics::{LogLimiter, Metrics};
use crate::pipeline::{ControlError, TemplateControl};
use crate::run::Running;
use crate::shutdown::Shutdown;

/// How often the shards are asked for changed templates when no shard rang the doorbell
/// ([`TemplateControl::changes`]); a change is normally reported within milliseconds.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Shortest time between two doorbell-driven reports: an exporter that sends templates in every
/// datagram must not turn every batch into a request to all shards.
const REPORT_COALESCE: Duration = Duration::from_millis(5);
/// Sync requests from Central waiting for the reporter.
const SYNC_QUEUE: usize = 1024;
/// How long an installation retries a shard whose request queue is full.
const INSTALL_RETRIES: usize = 100;
const INSTALL_RETRY_DELAY: Duration = Duration::from_millis(10);

/// Why peer mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    #[error("`central.token_file`: cannot read the access token from {path}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`central.token_file`: {path} holds no access token")]
    EmptyToken { path: PathBuf },
    #[error("`central`: {0}")]
    Tls(#[from] TlsError),
    #[error("`central`: set `ca_cert` or `fingerprint` to pin Central's certificate")]
    NoPin,
    #[error(
        "`central.data_address` is not set, no listen address is a specific address, and the \
         address this host reaches Central from is unknown ({reason}): set `central.data_address`"
    )]
    NoDataAddress { reason: String },
    #[error("cannot start the Central client thread")]
    Spawn(#[from] std::io::Error),
}

/// What identifies this peer to Central, checked before the data path starts.
pub struct Credentials {
    endpoint: Endpoint,
    pin: Pin,
    token: String,
    config: CentralConfig,
}

impl std::fmt::Debug for Credentials {
    // The token never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("endpoint", &self.endpoint)
            .field("pin", &self.pin)
            .field("token_hash", &self.token_hash())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads the token and checks the pin (a `ca_cert` file must hold a usable certificate).
    /// `config` must be validated.
    pub fn load(config: &CentralConfig) -> Result<Self, CentralError> {
        let endpoint = Endpoint::parse(&config.url)?;
        let pin = match (&config.ca_cert, &config.fingerprint) {
            (_, Some(fingerprint)) => Pin::fingerprint(fingerprint)?,
            (Some(path), None) => Pin::CaCert(path.clone()),
            (None, None) => return Err(CentralError::NoPin),
        };
        // The client checks the pin again when it starts; this makes a bad file fail first.
        Connector::new(&pin, ALPN_PEER)?;
        let token =
            std::fs::read_to_string(&config.token_file).map_err(|source| CentralError::Token {
                path: config.token_file.clone(),
                source,
            })?;
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err(CentralError::EmptyToken {
                path: config.token_file.clone(),
            });
        }
        Ok(Credentials {
            endpoint,
            pin,
            token,
            config: config.clone(),
        })
    }

    /// `sha256:<hex>` of the token, as Central shows it: safe to log.
    pub fn token_hash(&self) -> String {
        token_hash(&self.token)
    }
}

/// A running peer-mode session; stops with the pipeline's [`Shutdown`].
pub struct PeerMode {
    handle: Arc<PeerHandle>,
    threads: Vec<JoinHandle<()>>,
}

impl PeerMode {
    /// Starts the control-channel client and the template reporter for a running pipeline.
    pub fn start(
        credentials: Credentials,
        config: &ValidConfig,
        running: &Running,
        shutdown: &Shutdown,
    ) -> Result<Self, CentralError> {
        let central = &credentials.config;
        let listen = running.listen_addrs();
        let data_addr = match central.data_address {
            Some(addr) => addr,
            None => default_data_address(listen, &credentials.endpoint)?,
        };
        let mut ports: Vec<u16> = listen.iter().map(SocketAddr::port).collect();
        ports.sort_unstable();
        ports.dedup();
        let uuid = installation_id(&config.name);
        tracing::info!(
            central = %credentials.endpoint,
            %uuid,
            access_token_hash = %credentials.token_hash(),
            pin = %match &credentials.pin {
                Pin::Fingerprint(f) => f.clone(),
                Pin::CaCert(path) => path.display().to_string(),
            },
            data_address = %data_addr,
            ports = ?ports,
            pool = central.pool.as_deref().unwrap_or("(Central's default)"),
            weight = central.weight,
            "peer mode: registering with Central"
        );

        let mut client_config = PeerClientConfig::new(
            credentials.endpoint.clone(),
            credentials.pin.clone(),
            credentials.token.clone(),
            config.name.clone(),
            data_addr,
            ports,
        );
        client_config.uuid = uuid;
        client_config.weight = central.weight;
        client_config.pool.clone_from(&central.pool);

        let resend = Arc::new(AtomicBool::new(false));
        let (syncs, sync_requests) = crossbeam_channel::bounded(SYNC_QUEUE);
        let hooks = Arc::new(Hooks {
            metrics: running.metrics().clone(),
            templates: running.templates().clone(),
            resend: resend.clone(),
            syncs,
            installs: AtomicU64::new(0),
            install_log: LogLimiter::default(),
            install_errors: LogLimiter::default(),
        });
        let (client, handle) = PeerClient::new(client_config, hooks)?;
        let handle = Arc::new(handle);
        let client_thread = std::thread::Builder::new()
            .name("central-client".into())
            .spawn(move || {
                if let Err(error) = client.run_blocking() {
                    tracing::error!(%error, "Central client stopped: cannot start its runtime");
                }
            })?;
        let reporter = Reporter {
            control: running.templates().clone(),
            handle: handle.clone(),
            resend,
            syncs: sync_requests,
            reported: BTreeMap::new(),
            unsent: BTreeMap::new(),
            errors: LogLimiter::default(),
        };
        let shutdown = shutdown.clone();
        let reporter_thread = std::thread::Builder::new()
            .name("central-templates".into())
            .spawn(move || reporter.run(&shutdown));
        let reporter_thread = match reporter_thread {
            Ok(t) => t,
            Err(e) => {
                handle.shutdown();
                return Err(e.into());
            }
        };
        Ok(PeerMode {
            handle,
            threads: vec![client_thread, reporter_thread],
        })
    }

    /// Ends the session and waits for the client (call after the pipeline has stopped).
    pub fn stop(self) {
        self.handle.shutdown();
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("Central client thread panicked");
            }
        }
    }
}

/// The first listen address that names one address, else the local address of the route to
/// Central.
fn default_data_address(listen: &[SocketAddr], central: &Endpoint) -> Result<IpAddr, CentralError> {
    if let Some(addr) = listen
        .iter()
        .map(SocketAddr::ip)
        .find(|ip| !ip.is_unspecified())
    {
        return Ok(addr);
    }
    let no = |reason: String| CentralError::NoDataAddress { reason };
    let target = (central.host.as_str(), central.port)
        .to_socket_addrs()
        .map_err(|e| no(format!("cannot resolve {}: {e}", central.host)))?
        .next()
        .ok_or_else(|| no(format!("{} has no address", central.host)))?;
    let local: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // Connecting a UDP socket sends nothing; it only picks the route and source address.
    let socket = UdpSocket::bind(local).map_err(|e| no(e.to_string()))?;
    socket.connect(target).map_err(|e| no(e.to_string()))?;
    let addr = socket.local_addr().map_err(|e| no(e.to_string()))?.ip();
    tracing::info!(data_address = %addr, "`central.data_address` not set: using the address this host reaches Central from");
    Ok(addr)
}

/// This installation's id: the same for the same peer name on the same host, so a restarted
/// peer takes its registration back at once (Central refuses another installation under the
/// name of an online peer until it times out).
fn installation_id(name: &str) -> Uuid {
    let host = [
        "/etc/machine-id",
        "/var/lib/dbus/machine-id",
        "/proc/sys/kernel/hostname",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .map(|id| id.trim().to_owned())
    .find(|id| !id.is_empty())
    .unwrap_or_default();
    let digest = Sha256::new()
        .chain_update(b"sluice-peer\0")
        .chain_update(host)
        .chain_update(b"\0")
        .chain_update(name)
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// What the client asks of the peer.
struct Hooks {
    metrics: Arc<Metrics>,
    templates: TemplateControl,
    /// Set on every registration: Central may have lost what it was told before.
    resend: Arc<AtomicBool>,
    /// Central's sync requests, answered by the reporter (the one thread that queues reports).
    syncs: crossbeam_channel::Sender<(u64, IpAddr)>,
    installs: AtomicU64,
    install_log: LogLimiter,
    install_errors: LogLimiter,
}

impl PeerHooks for Hooks {
    fn metrics(&self) -> PeerMetrics {
        self.metrics.peer_metrics()
    }

    fn install_templates(&self, templates: Vec<Templates>) {
        let mut per_exporter: BTreeMap<IpAddr, Vec<TemplateSnapshot>> = BTreeMap::new();
        let mut failed = 0usize;
        for t in templates {
            match decode_snapshots(&t.bytes) {
                Ok(snaps) => per_exporter.entry(t.exporter).or_default().extend(snaps),
                Err(error) => {
                    failed += 1;
                    if self.install_errors.allow() {
                        tracing::warn!(exporter = %t.exporter, domain = t.observation_domain, %error, "unreadable templates from Central; skipped");
                    }
                }
            }
        }
        let exporters = per_exporter.len();
        let mut installed = 0usize;
        for (exporter, snaps) in per_exporter {
            let count = snaps.len();
            // The client acknowledges when this returns, and only then does Central flip the
            // exporter here: wait for the shard to have them.
            match import(&self.templates, exporter, snaps) {
                Ok(()) => installed += count,
                Err(error) => {
                    failed += 1;
                    if self.install_errors.allow() {
                        tracing::warn!(%exporter, %error, "cannot install templates from Central");
                    }
                }
            }
        }
        // One line per installation would be one per moved exporter in a failover.
        let installs_total = self.installs.fetch_add(1, Ordering::Relaxed) + 1;
        if self.install_log.allow() {
            tracing::info!(
                exporters,
                templates = installed,
                failed,
                installs_total,
                "templates installed from Central"
            );
        } else {
            tracing::debug!(
                exporters,
                templates = installed,
                failed,
                "templates installed from Central"
            );
        }
    }

    fn sync_templates(&self, request_id: u64, exporter: IpAddr) -> bool {
        // A full queue: the client answers at once with what is queued; Central has the rest
        // from the periodic reports, and late reports are forwarded after the move.
        self.syncs.try_send((request_id, exporter)).is_ok()
    }

    fn registered(&self, _registered: &Registered) {
        self.resend.store(true, Ordering::Relaxed);
    }
}

/// Imports into the exporter's shard, retrying while its request queue is full.
fn import(
    control: &TemplateControl,
    exporter: IpAddr,
    snaps: Vec<TemplateSnapshot>,
) -> Result<(), ControlError> {
    for _ in 0..INSTALL_RETRIES {
        match control.import(exporter, snaps.clone()) {
            Err(ControlError::Busy) => std::thread::sleep(INSTALL_RETRY_DELAY),
            other => return other,
        }
    }
    Err(ControlError::Busy)
}

/// The opaque bytes of one [`Templates`].
fn encode_snapshots(snaps: &[TemplateSnapshot]) -> Vec<u8> {
    // Serializing plain data to JSON cannot fail.
    serde_json::to_vec(snaps).unwrap_or_default()
}

/// Reads the opaque bytes of one [`Templates`].
pub fn decode_snapshots(bytes: &[u8]) -> Result<Vec<TemplateSnapshot>, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Template state per (exporter, observation domain), one [`Templates`] each.
pub fn to_templates(exporter: IpAddr, snaps: Vec<TemplateSnapshot>) -> Vec<Templates> {
    let mut domains: BTreeMap<u32, Vec<TemplateSnapshot>> = BTreeMap::new();
    for s in snaps {
        domains.entry(domain_of(&s)).or_default().push(s);
    }
    domains
        .into_iter()
        .map(|(observation_domain, snaps)| Templates {
            exporter,
            observation_domain,
            bytes: encode_snapshots(&snaps),
        })
        .collect()
}

fn domain_of(s: &TemplateSnapshot) -> u32 {
    match s {
        TemplateSnapshot::Template {
            observation_domain_id,
            ..
        }
        | TemplateSnapshot::Sampling {
            observation_domain_id,
            ..
        } => *observation_domain_id,
    }
}

type Key = (IpAddr, u32);

/// Reports changed template state to Central as soon as a shard learns it (at least once a
/// second), never from the data path, and answers Central's sync requests in the same order.
struct Reporter {
    control: TemplateControl,
    handle: Arc<PeerHandle>,
    resend: Arc<AtomicBool>,
    syncs: crossbeam_channel::Receiver<(u64, IpAddr)>,
    /// What Central was last given (queued to the client) per (exporter, domain).
    reported: BTreeMap<Key, Vec<u8>>,
    /// Changes the client's queue had no room for yet.
    unsent: BTreeMap<Key, Vec<u8>>,
    errors: LogLimiter,
}

impl Reporter {
    fn run(mut self, shutdown: &Shutdown) {
        let changes = self.control.changes().clone();
        let syncs = self.syncs.clone();
        while !shutdown.is_triggered() {
            crossbeam_channel::select! {
                recv(syncs) -> request => {
                    self.tick();
                    if let Ok((request_id, exporter)) = request {
                        self.sync(request_id, exporter);
                    }
                }
                recv(changes) -> _ => {
                    self.tick();
                    if shutdown.sleep(REPORT_COALESCE) {
                        break;
                    }
                }
                default(REPORT_EVERY) => self.tick(),
            }
        }
        self.handle.shutdown();
    }

    /// Queues the whole current state of `exporter` (changed or not) and then the answer to
    /// Central's sync request, unless the client's queue had no room for all of it.
    fn sync(&mut self, request_id: u64, exporter: IpAddr) {
        let snaps = match self.control.export(exporter) {
            Ok(snaps) => snaps,
            Err(error) => {
                if self.errors.allow() {
                    tracing::warn!(%exporter, %error, "cannot collect templates for Central's sync request");
                }
                return;
            }
        };
        let current = to_templates(exporter, snaps.clone());
        self.update(exporter, snaps);
        for t in current {
            self.unsent
                .insert((t.exporter, t.observation_domain), t.bytes);
        }
        self.flush();
        let complete = self
            .unsent
            .range((exporter, 0)..=(exporter, u32::MAX))
            .next()
            .is_none();
        if !(complete && self.handle.report_synced(request_id)) && self.errors.allow() {
            tracing::warn!(%exporter, "the Central client's queue is full: sync request left to Central's timeout");
        }
    }

    fn tick(&mut self) {
        if self.resend.swap(false, Ordering::Relaxed) {
            for (key, bytes) in std::mem::take(&mut self.reported) {
                self.unsent.entry(key).or_insert(bytes);
            }
        }
        match self.control.changed() {
            Ok(changed) => {
                for (exporter, snaps) in changed {
                    self.update(exporter, snaps);
                }
            }
            Err(error) => {
                if self.errors.allow() {
                    tracing::warn!(%error, "cannot collect changed templates from the decoders");
                }
            }
        }
        self.flush();
    }

    /// Queues the domains of `exporter` whose state differs from what Central has; a domain
    /// whose templates are all gone is reported empty.
    fn update(&mut self, exporter: IpAddr, snaps: Vec<TemplateSnapshot>) {
        let mut current: BTreeMap<Key, Vec<u8>> = to_templates(exporter, snaps)
            .into_iter()
            .map(|t| ((t.exporter, t.observation_domain), t.bytes))
            .collect();
        let range = (exporter, 0)..=(exporter, u32::MAX);
        let known: Vec<Key> = self
            .reported
            .range(range.clone())
            .chain(self.unsent.range(range))
            .map(|(k, _)| *k)
            .collect();
        for key in known {
            current.entry(key).or_insert_with(|| encode_snapshots(&[]));
        }
        for (key, bytes) in current {
            if self.reported.get(&key) == Some(&bytes) {
                self.unsent.remove(&key);
            } else {
                self.unsent.insert(key, bytes);
            }
        }
    }

    fn flush(&mut self) {
        while let Some(((exporter, observation_domain), bytes)) = self.unsent.pop_first() {
            let templates = Templates {
                exporter,
                observation_domain,
                bytes: bytes.clone(),
            };
            if !self.handle.report_templates(templates) {
                // The client's queue is full (Central slow or away): next tick.
                self.unsent.insert((exporter, observation_domain), bytes);
                break;
            }
            self.reported.insert((exporter, observation_domain), bytes);
        }
    }
}
