//! `sluicectl`: the operator's client of Central's control API.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use sluice_central::cli::client::AdminClient;
use sluice_central::cli::render;
use sluice_common::client::Pin;
use sluice_common::duration::parse as parse_duration;
use sluice_common::protocol::{AdminRequest, BalancerPatch, Cidr};

const EXAMPLES: &str = "\
Examples:
  # on Central: sluice-central token generate --admin | head -1 > admin.token
  sluicectl --central https://198.18.0.1:8443 --ca-cert /var/lib/sluice/cert.pem \\
            --token-file admin.token peers list
  export SLUICE_CENTRAL=https://198.18.0.1:8443 SLUICE_CA_CERT=/var/lib/sluice/cert.pem \\
         SLUICE_TOKEN_FILE=admin.token
  sluicectl pools create edge && sluicectl pools assign edge peer-a --weight 2
  sluicectl listeners add 198.18.0.1:4739 edge && sluicectl groups add 10.20.0.0/16 edge
  sluicectl --json exporters list | jq '.[] | select(.pps > 1000)'";

/// Operate a Sluice Central: peers, pools, listeners, source groups, exporters, the rebalancer,
/// tokens.
#[derive(Parser, Debug)]
#[command(name = "sluicectl", version, after_help = EXAMPLES)]
struct Cli {
    /// Central's control API.
    #[arg(
        long,
        global = true,
        env = "SLUICE_CENTRAL",
        default_value = "https://127.0.0.1:8443"
    )]
    central: String,
    /// File holding the admin token (`sluice-central token generate --admin`).
    #[arg(long, global = true, env = "SLUICE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Central's certificate (or its CA), e.g. the state dir's cert.pem.
    #[arg(
        long,
        global = true,
        env = "SLUICE_CA_CERT",
        conflicts_with = "fingerprint"
    )]
    ca_cert: Option<PathBuf>,
    /// Central's certificate fingerprint, `sha256:…` as printed by `sluice-central`.
    #[arg(long, global = true, env = "SLUICE_FINGERPRINT")]
    fingerprint: Option<String>,
    /// Machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Central's health: peers, pools (loudly: pools without a healthy peer), fingerprint.
    Status,
    /// The Connected Peers table; drain and undrain.
    #[command(subcommand)]
    Peers(PeersCmd),
    /// Pools of peers.
    #[command(subcommand)]
    Pools(PoolsCmd),
    /// Listeners: the addresses and UDP ports Central steers, each to a pool.
    ///
    /// A listener's pool applies to new exporters; placed ones keep their peer until moved.
    #[command(subcommand)]
    Listeners(ListenersCmd),
    /// Source groups: exporter networks whose new exporters join a pool, whatever the listener.
    ///
    /// The longest prefix wins over the listener's pool; exporters already placed keep their
    /// peer until moved.
    #[command(subcommand)]
    Groups(GroupsCmd),
    /// Exporters and their placement.
    #[command(subcommand)]
    Exporters(ExportersCmd),
    /// The rebalancer.
    #[command(subcommand)]
    Balancer(BalancerCmd),
    /// Tokens (generated on Central, shown once).
    #[command(subcommand)]
    Token(TokenCmd),
    /// The hot-standby pair (`[ha]`): ask either node.
    #[command(subcommand)]
    Ha(HaCmd),
}

#[derive(Subcommand, Debug)]
enum HaCmd {
    /// Role, epoch, partner, link state, last heartbeat, mirror lag, last takeover and why.
    Status,
    /// Hand the active role to the standby (planned maintenance, nothing lost); ask the active.
    Switchover,
}

#[derive(Subcommand, Debug)]
enum PeersCmd {
    /// Name, address, version, last seen, pool, status, start time, CPU, memory, rates, drops.
    List,
    /// Move the peer's exporters away and keep new ones off it (DRAINING).
    Drain { name: String },
    /// Let the peer take exporters again.
    Undrain { name: String },
}

#[derive(Subcommand, Debug)]
enum PoolsCmd {
    /// Pools, members, health.
    List,
    /// Create an empty pool.
    Create { name: String },
    /// Delete an empty pool.
    Delete { name: String },
    /// Put a peer in a pool.
    Assign {
        pool: String,
        peer: String,
        /// Relative capacity within the pool.
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Take a peer out of a pool.
    Unassign { pool: String, peer: String },
}

#[derive(Subcommand, Debug)]
enum ListenersCmd {
    /// Address, port and pool of every listener.
    List,
    /// Steer datagrams sent to ADDR:PORT (`[2001:db8::1]:2055` for IPv6) to POOL, or move the
    /// listener to POOL.
    Add {
        #[arg(value_name = "ADDR:PORT")]
        addr: SocketAddr,
        pool: String,
    },
    /// Stop steering datagrams sent to ADDR:PORT.
    Remove {
        #[arg(value_name = "ADDR:PORT")]
        addr: SocketAddr,
    },
}

#[derive(Subcommand, Debug)]
enum GroupsCmd {
    /// Network and pool of every source group.
    List,
    /// New exporters inside CIDR (`10.20.0.0/16`, `2001:db8::/32`) join POOL.
    Add { cidr: Cidr, pool: String },
    /// Remove the source group CIDR.
    Remove { cidr: Cidr },
}

#[derive(Subcommand, Debug)]
enum ExportersCmd {
    /// Address, pool, peer, pps, bps, pinned, last seen.
    List,
    /// Move an exporter to a peer now (templates first) and pin it there.
    Move { addr: IpAddr, peer: String },
    /// Keep an exporter where it is.
    Pin { addr: IpAddr },
    /// Let the rebalancer move the exporter again.
    Unpin { addr: IpAddr },
}

#[derive(Subcommand, Debug)]
enum BalancerCmd {
    /// Current settings.
    Show,
    /// Change settings.
    Set {
        /// Time between rebalances: 90s, 5m (or seconds).
        #[arg(long, value_parser = parse_duration)]
        interval: Option<Duration>,
        /// Distribution margin, percentage points.
        #[arg(long)]
        margin: Option<f64>,
        /// Heartbeat silence before a peer is OFFLINE, milliseconds.
        #[arg(long)]
        peer_timeout_ms: Option<u64>,
    },
    /// What a rebalance would do now.
    Plan,
    /// Rebalance now.
    Run,
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Generate a token (printed once); the previous one stops working at once, or after --grace.
    Generate {
        /// Admin token instead of the peers' access token.
        #[arg(long)]
        admin: bool,
        /// Keep the previous token valid this long: 30m, 1h (or seconds).
        #[arg(long, value_parser = parse_duration)]
        grace: Option<Duration>,
    },
}

impl Command {
    fn request(self) -> AdminRequest {
        match self {
            Command::Status => AdminRequest::Status,
            Command::Peers(PeersCmd::List) => AdminRequest::PeersList,
            Command::Peers(PeersCmd::Drain { name }) => AdminRequest::PeersDrain { name },
            Command::Peers(PeersCmd::Undrain { name }) => AdminRequest::PeersUndrain { name },
            Command::Pools(PoolsCmd::List) => AdminRequest::PoolsList,
            Command::Pools(PoolsCmd::Create { name }) => AdminRequest::PoolsCreate { name },
            Command::Pools(PoolsCmd::Delete { name }) => AdminRequest::PoolsDelete { name },
            Command::Pools(PoolsCmd::Assign { pool, peer, weight }) => {
                AdminRequest::PoolsAssign { pool, peer, weight }
            }
            Command::Pools(PoolsCmd::Unassign { pool, peer }) => {
                AdminRequest::PoolsUnassign { pool, peer }
            }
            Command::Listeners(ListenersCmd::List) => AdminRequest::ListenersList,
            Command::Listeners(ListenersCmd::Add { addr, pool }) => {
                AdminRequest::ListenersAdd { addr, pool }
            }
            Command::Listeners(ListenersCmd::Remove { addr }) => {
                AdminRequest::ListenersRemove { addr }
            }
            Command::Groups(GroupsCmd::List) => AdminRequest::GroupsList,
            Command::Groups(GroupsCmd::Add { cidr, pool }) => {
                AdminRequest::GroupsAdd { cidr, pool }
            }
            Command::Groups(GroupsCmd::Remove { cidr }) => AdminRequest::GroupsRemove { cidr },
            Command::Exporters(ExportersCmd::List) => AdminRequest::ExportersList,
            Command::Exporters(ExportersCmd::Move { addr, peer }) => {
                AdminRequest::ExportersMove { addr, peer }
            }
            Command::Exporters(ExportersCmd::Pin { addr }) => AdminRequest::ExportersPin { addr },
            Command::Exporters(ExportersCmd::Unpin { addr }) => {
                AdminRequest::ExportersUnpin { addr }
            }
            Command::Balancer(BalancerCmd::Show) => AdminRequest::BalancerShow,
            Command::Balancer(BalancerCmd::Set {
                interval,
                margin,
                peer_timeout_ms,
            }) => AdminRequest::BalancerSet(BalancerPatch {
                rebalance_interval_s: interval.map(|d| d.as_secs()),
                distribution_margin_pct: margin,
                peer_timeout_ms,
            }),
            Command::Balancer(BalancerCmd::Plan) => AdminRequest::BalancerPlan,
            Command::Balancer(BalancerCmd::Run) => AdminRequest::BalancerRun,
            Command::Token(TokenCmd::Generate { admin, grace }) => AdminRequest::TokenGenerate {
                admin,
                grace_s: grace.map(|d| d.as_secs()),
            },
            Command::Ha(HaCmd::Status) => AdminRequest::HaStatus,
            Command::Ha(HaCmd::Switchover) => AdminRequest::HaSwitchover,
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<String> {
    let pin = match (&cli.ca_cert, &cli.fingerprint) {
        (Some(path), _) => Pin::CaCert(path.clone()),
        (None, Some(fp)) => Pin::fingerprint(fp)?,
        (None, None) => anyhow::bail!(
            "no pinned certificate: pass --ca-cert FILE (Central's cert.pem) or --fingerprint sha256:…"
        ),
    };
    let token = match &cli.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read token file {}", path.display()))?,
        ),
        None => std::env::var("SLUICE_ADMIN_TOKEN").ok(),
    };
    let client = AdminClient::new(&cli.central, &pin, token)?;
    let reply = client.call(&cli.command.request()).await?;
    Ok(if cli.json {
        render::json(&reply)?
    } else {
        render::human(&reply)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A malformed value (address, CIDR, duration, number) is one line like every other
        // failure; other usage errors keep clap's full text. Exit code 2 as clap's.
        Err(e) if e.kind() == ErrorKind::ValueValidation => {
            eprintln!("{}", e.to_string().lines().next().unwrap_or_default());
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line: the chain joined, no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
