//! `sluice-central`: the XDP data plane, controller and control API.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use sluice_central::{
    cli::token::TokenCommand,
    config::{
        CentralConfig, DEFAULT_HA_HEARTBEAT_MS, DEFAULT_HA_TAKEOVER_MS, HaConfig, HaNode,
        ListenerConfig, StaticPeer,
    },
    loader::{self, AttachMode},
    run,
};

const EXAMPLE: &str = "\
Example (no file needed):
  sluice-central run --iface eth0 --listen 198.18.0.1:2055 \\
      --peer a=198.18.2.2:2055 --peer b=198.18.2.3:2055

With a file (flags override it):
  sluice-central run --config /etc/sluice/central.toml

A hot-standby pair (the same file on both nodes, only the node differs):
  sluice-central run --config /etc/sluice/central.toml --ha-node a";

#[derive(Parser)]
#[command(name = "sluice-central", version, about = "Steers flow exporters to peers in XDP", after_help = EXAMPLE)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach XDP, run the controller, the slow-path relay and the control API.
    #[command(after_help = EXAMPLE)]
    Run(Box<RunArgs>),
    /// Check the configuration against this host without touching the data plane: the file,
    /// interface names, the state dir and its state file, certificates, the HA credential.
    /// Exits non-zero with the first problem (systemd runs it as ExecStartPre).
    Check(Box<RunArgs>),
    /// Detach XDP (remove the pinned links); with --purge also remove the pinned maps.
    Detach {
        /// Only this interface.
        #[arg(long)]
        iface: Option<String>,
        /// Remove the map pins too (the next start begins with empty maps and re-applies the state).
        #[arg(long)]
        purge: bool,
        /// Pin directory.
        #[arg(long, default_value = sluice_common::PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Peer and admin access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        /// State directory where token hashes are kept (before or after the subcommand).
        #[arg(long, default_value = "/var/lib/sluice", global = true)]
        state_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// central.toml.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Ingress interface for XDP (repeatable; replaces data_plane.interfaces).
    #[arg(long = "iface")]
    ifaces: Vec<String>,
    /// Listener ADDR:PORT, pool "default" (repeatable; replaces [[listeners]]).
    #[arg(long = "listen")]
    listens: Vec<SocketAddr>,
    /// Static peer NAME=ADDR[:PORT] in pool "default" (repeatable; replaces [[peers]]).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum)]
    xdp_mode: Option<AttachMode>,
    /// Do not run the slow-path relay.
    #[arg(long)]
    no_slow_path: bool,
    /// State directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Pin directory.
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// Control API address.
    #[arg(long)]
    control_listen: Option<SocketAddr>,
    /// Hot standby: this node's name (ha.node).
    #[arg(long)]
    ha_node: Option<String>,
    /// Hot standby: a node NAME=ADDR:PORT[@PRIORITY], its own control API address (twice;
    /// replaces [[ha.nodes]]).
    #[arg(long = "ha-member")]
    ha_members: Vec<String>,
    /// Hot standby: virtual IP ADDRESS/PREFIX (repeatable; replaces ha.vips).
    #[arg(long = "ha-vip")]
    ha_vips: Vec<String>,
    /// Hot standby: the interface the virtual IPs live on (ha.interface).
    #[arg(long)]
    ha_interface: Option<String>,
    /// Hot standby: the shared credential file (ha.credential_file).
    #[arg(long)]
    ha_credential_file: Option<PathBuf>,
    /// Hot standby: heartbeat interval in ms (ha.heartbeat_interval_ms).
    #[arg(long)]
    ha_heartbeat_ms: Option<u64>,
    /// Hot standby: takeover timeout in ms (ha.takeover_timeout_ms).
    #[arg(long)]
    ha_takeover_ms: Option<u64>,
    /// Hot standby: a recovered node of higher priority takes the role back (ha.preempt).
    #[arg(long)]
    ha_preempt: bool,
}

/// `NAME=ADDR:PORT[@PRIORITY]`.
fn ha_member(text: &str) -> Result<HaNode> {
    let (name, rest) = text
        .split_once('=')
        .with_context(|| format!("--ha-member {text:?}: expected NAME=ADDR:PORT[@PRIORITY]"))?;
    let (addr, priority) = match rest.split_once('@') {
        Some((a, p)) => (
            a,
            p.parse()
                .with_context(|| format!("--ha-member {text:?}: priority {p:?}"))?,
        ),
        None => (rest, 100),
    };
    Ok(HaNode {
        name: name.into(),
        address: addr
            .parse()
            .with_context(|| format!("--ha-member {text:?}: address {addr:?}"))?,
        priority,
    })
}

impl RunArgs {
    fn config(&self) -> Result<CentralConfig> {
        let mut cfg = match &self.config {
            Some(path) => CentralConfig::load(path)?,
            None => CentralConfig::default(),
        };
        if !self.ifaces.is_empty() {
            cfg.data_plane.interfaces.clone_from(&self.ifaces);
        }
        if !self.listens.is_empty() {
            cfg.listeners = self
                .listens
                .iter()
                .map(|a| ListenerConfig {
                    address: a.ip(),
                    ports: vec![a.port()],
                    pool: "default".into(),
                })
                .collect();
        }
        if !self.peers.is_empty() {
            cfg.peers = self
                .peers
                .iter()
                .map(|p| {
                    let (name, address) = p
                        .split_once('=')
                        .with_context(|| format!("--peer {p:?}: expected NAME=ADDR[:PORT]"))?;
                    Ok(StaticPeer {
                        name: name.into(),
                        address: address.into(),
                        pool: "default".into(),
                        weight: 1,
                    })
                })
                .collect::<Result<_>>()?;
        }
        if let Some(m) = self.xdp_mode {
            cfg.data_plane.xdp_mode = m;
        }
        if self.no_slow_path {
            cfg.data_plane.slow_path = false;
        }
        if let Some(d) = &self.state_dir {
            cfg.state.dir.clone_from(d);
        }
        if let Some(d) = &self.pin_dir {
            cfg.data_plane.pin_dir.clone_from(d);
        }
        if let Some(a) = self.control_listen {
            cfg.control.listen = a;
        }
        self.ha(&mut cfg)?;
        cfg.validate()?;
        if let Some(ha) = &cfg.ha {
            ha.me_and_partner()?;
        }
        Ok(cfg)
    }
}

impl RunArgs {
    fn ha(&self, cfg: &mut CentralConfig) -> Result<()> {
        let any = self.ha_node.is_some()
            || !self.ha_members.is_empty()
            || !self.ha_vips.is_empty()
            || self.ha_interface.is_some()
            || self.ha_credential_file.is_some()
            || self.ha_heartbeat_ms.is_some()
            || self.ha_takeover_ms.is_some()
            || self.ha_preempt;
        if !any {
            return Ok(());
        }
        let ha = cfg.ha.get_or_insert_with(|| HaConfig {
            node: String::new(),
            credential_file: PathBuf::new(),
            interface: String::new(),
            vips: Vec::new(),
            heartbeat_interval_ms: DEFAULT_HA_HEARTBEAT_MS,
            takeover_timeout_ms: DEFAULT_HA_TAKEOVER_MS,
            preempt: false,
            nodes: Vec::new(),
        });
        if let Some(n) = &self.ha_node {
            ha.node.clone_from(n);
        }
        if !self.ha_members.is_empty() {
            ha.nodes = self
                .ha_members
                .iter()
                .map(|m| ha_member(m))
                .collect::<Result<_>>()?;
        }
        if !self.ha_vips.is_empty() {
            ha.vips.clone_from(&self.ha_vips);
        }
        if let Some(i) = &self.ha_interface {
            ha.interface.clone_from(i);
        }
        if let Some(f) = &self.ha_credential_file {
            ha.credential_file.clone_from(f);
        }
        if let Some(ms) = self.ha_heartbeat_ms {
            ha.heartbeat_interval_ms = ms;
        }
        if let Some(ms) = self.ha_takeover_ms {
            ha.takeover_timeout_ms = ms;
        }
        if self.ha_preempt {
            ha.preempt = true;
        }
        Ok(())
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = real_main() {
        eprintln!("sluice-central: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            let cfg = args.config()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let ran: Result<(), run::RunError> = rt.block_on(async move {
                let running = run::start(&cfg)?;
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let served = {
                    let api = run::serve_api(&cfg, &running, async {
                        let _ = rx.await;
                    });
                    tokio::pin!(api);
                    tokio::select! {
                        r = &mut api => r,
                        () = shutdown_signal() => {
                            tracing::info!("shutting down");
                            let _ = tx.send(());
                            api.await
                        }
                    }
                };
                let stopped = running.stop();
                served.and(stopped)
            });
            Ok(ran?)
        }
        Command::Check(args) => {
            let cfg = args.config()?;
            for line in sluice_central::check::check(&cfg)? {
                println!("ok: {line}");
            }
            println!("configuration OK");
            Ok(())
        }
        Command::Detach {
            iface,
            purge,
            pin_dir,
        } => {
            let removed = loader::detach(&pin_dir, iface.as_deref(), purge)?;
            println!(
                "removed {} pins from {}: {}",
                removed.len(),
                pin_dir.display(),
                removed.join(" ")
            );
            Ok(())
        }
        Command::Token { command, state_dir } => {
            println!("{}", sluice_central::cli::token::run(&state_dir, &command)?);
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
