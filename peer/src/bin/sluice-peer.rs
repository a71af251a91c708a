//! `sluice-peer`: the flow collector (standalone, or a Peer of Central).

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use sluice_peer::central;
use sluice_peer::config::{CentralOverrides, Overrides, PeerConfig, ValidConfig};
use sluice_peer::metrics::Metrics;
use sluice_peer::output::OutputConfig;
use sluice_peer::run::Running;
use sluice_peer::shutdown::Shutdown;

const EXAMPLES: &str = "\
Examples:
  # Standalone, no file: default ports (2055, 4739, 6343, 9995), JSON lines on stdout
  sluice-peer run

  # Two listeners, records to a file, Prometheus metrics on 127.0.0.1:9108
  sluice-peer run --listen 0.0.0.0:2055 --listen [::]:4739 \\
      --output file:/var/log/flows.jsonl --metrics 127.0.0.1:9108

  # A config file, with flags overriding it
  sluice-peer run --config /etc/sluice/peer.toml --output syslog+tcp://127.0.0.1:514

  # To Kafka (GoFlow2's protobuf, keyed by exporter; the topic must exist) and a file
  sluice-peer run --listen 0.0.0.0:2055 --output kafka://127.0.0.1:9092/flows \\
      --output file:/var/log/flows.jsonl

  # Peer of Central (token from `sluice-central token generate`, fingerprint from its log)
  sluice-peer run --listen 198.18.2.2:2055 --central https://198.18.0.1:8443 \\
      --token-file /etc/sluice/token --fingerprint sha256:<64 hex digits>";

#[derive(Parser)]
#[command(name = "sluice-peer", version, about = "Sluice flow collector: NetFlow v5/v9, IPFIX and sFlow v5 in, JSON or protobuf records out", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive, decode and output flows until SIGINT/SIGTERM.
    #[command(after_help = EXAMPLES)]
    Run(RunArgs),
    /// Validate a config file (with the same flags as `run`) and exit.
    Check(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// peer.toml; without it (and without flags) the peer runs standalone with defaults.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// UDP address to receive on; repeatable; replaces `ingest.listen`/`ingest.ports`.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// stdout | file:PATH | syslog+udp://HOST:PORT | syslog+tcp://HOST:PORT |
    /// kafka://HOST:PORT[,HOST:PORT...]/TOPIC; repeatable; replaces `[[outputs]]`. `none`:
    /// decode and count only (benchmarks).
    #[arg(long, value_name = "OUTPUT")]
    output: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// Peer name (default: host name).
    #[arg(long)]
    name: Option<String>,
    /// Decoder shards (default: number of CPUs).
    #[arg(long)]
    shards: Option<usize>,
    /// SO_REUSEPORT sockets per listen address.
    #[arg(long, value_name = "N")]
    sockets_per_port: Option<usize>,
    /// Socket receive buffer in bytes.
    #[arg(long, value_name = "BYTES")]
    rcvbuf: Option<usize>,
    /// Multiply bytes and packets by the exporter's sampling rate.
    #[arg(long)]
    apply_sampling: bool,
    /// Peer mode: Central's control API; replaces `central.url`.
    #[arg(long, value_name = "https://HOST:PORT")]
    central: Option<String>,
    /// File holding Central's access token; replaces `central.token_file`.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Pin Central's certificate by fingerprint; replaces the file's pin.
    #[arg(long, value_name = "sha256:HEX", conflicts_with = "ca_cert")]
    fingerprint: Option<String>,
    /// Pin Central's certificate (PEM) or its CA; replaces the file's pin.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Address Central forwards datagrams to; replaces `central.data_address`.
    #[arg(long, value_name = "ADDR")]
    data_address: Option<IpAddr>,
}

impl RunArgs {
    /// `--output` values: none given keeps the file's outputs; `none` alone means no outputs.
    fn outputs(&self) -> anyhow::Result<Option<Vec<OutputConfig>>> {
        match self.output.as_slice() {
            [] => Ok(None),
            [only] if only == "none" => Ok(Some(Vec::new())),
            specs => specs
                .iter()
                .map(|s| {
                    s.parse::<OutputConfig>()
                        .map_err(|e| anyhow::anyhow!("--output {s}: {e}"))
                })
                .collect::<anyhow::Result<_>>()
                .map(Some),
        }
    }

    fn config(self) -> anyhow::Result<ValidConfig> {
        let mut config = match &self.config {
            Some(path) => PeerConfig::load(path)?,
            None => PeerConfig::default(),
        };
        let outputs = self.outputs()?;
        config.apply(Overrides {
            name: self.name,
            listen: self.listen,
            outputs,
            metrics: self.metrics,
            shards: self.shards,
            sockets_per_port: self.sockets_per_port,
            rcvbuf_bytes: self.rcvbuf,
            apply_sampling: self.apply_sampling,
            central: CentralOverrides {
                url: self.central,
                token_file: self.token_file,
                fingerprint: self.fingerprint,
                ca_cert: self.ca_cert,
                data_address: self.data_address,
            },
        });
        Ok(config.validate()?)
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli.command) {
        eprintln!("sluice-peer: {error:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check(args) => {
            let config = args.config()?;
            println!(
                "ok: {} listen address(es), {} output(s), {} shard(s)",
                config.ingest.listen_addresses().len(),
                config.effective_outputs().len(),
                config.pipeline.shards
            );
            if let Some(c) = &config.central {
                let credentials = central::Credentials::load(c)?;
                println!(
                    "peer of {}: access token hash {}",
                    c.url,
                    credentials.token_hash()
                );
            }
            Ok(())
        }
        Command::Run(args) => serve(args.config()?),
    }
}

fn serve(config: ValidConfig) -> anyhow::Result<()> {
    // Block the signals before any thread starts so every thread inherits the mask and only
    // the signal thread receives them.
    let signals = signals::block().context("blocking SIGINT/SIGTERM")?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // Token and pin are checked before anything starts: a bad one is one error at start.
    let central = config
        .central
        .as_ref()
        .map(central::Credentials::load)
        .transpose()?;
    let shutdown = Shutdown::new();
    signals::spawn_waiter(signals, shutdown.clone()).context("starting the signal thread")?;
    let running = Running::start(&config, Metrics::new(), shutdown.clone())?;
    let listen: Vec<String> = running
        .listen_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let outputs: Vec<&str> = config
        .effective_outputs()
        .iter()
        .map(OutputConfig::kind)
        .collect();
    tracing::info!(
        name = %config.name,
        listen = %listen.join(","),
        metrics = %running.metrics_addr().map_or_else(|| "off".to_owned(), |a| a.to_string()),
        outputs = %outputs.join(","),
        shards = config.pipeline.shards,
        "ready"
    );
    let peer_mode = central
        .map(|c| central::PeerMode::start(c, &config, &running, &shutdown))
        .transpose()?;
    running.wait();
    if let Some(peer_mode) = peer_mode {
        peer_mode.stop();
    }
    tracing::info!("stopped");
    Ok(())
}

mod signals {
    use std::io;

    use sluice_peer::shutdown::Shutdown;

    /// Blocks SIGINT and SIGTERM in the calling thread (and the threads it starts later).
    pub fn block() -> io::Result<libc::sigset_t> {
        // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only
        // reads it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            match libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
                0 => Ok(set),
                rc => Err(io::Error::from_raw_os_error(rc)),
            }
        }
    }

    /// The first signal starts a graceful shutdown; a second one exits at once.
    pub fn spawn_waiter(set: libc::sigset_t, shutdown: Shutdown) -> io::Result<()> {
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                loop {
                    let mut signal = 0;
                    // SAFETY: `set` is a valid, initialised signal set.
                    if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                        continue;
                    }
                    if shutdown.is_triggered() {
                        tracing::warn!(signal, "second signal: exiting without draining");
                        std::process::exit(130);
                    }
                    tracing::info!(signal, "shutdown requested");
                    shutdown.trigger();
                }
            })
            .map(drop)
    }
}
