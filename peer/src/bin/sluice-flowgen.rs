//! `sluice-flowgen`: send synthetic NetFlow v5/v9, IPFIX or sFlow v5 at a target rate from many
//! exporter addresses.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sluice_peer::flowgen::send::{SendConfig, parse_sources, run};
use sluice_peer::record::Protocol;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Proto {
    V5,
    V9,
    Ipfix,
    Sflow,
}

impl From<Proto> for Protocol {
    fn from(p: Proto) -> Self {
        match p {
            Proto::V5 => Protocol::NetflowV5,
            Proto::V9 => Protocol::NetflowV9,
            Proto::Ipfix => Protocol::Ipfix,
            Proto::Sflow => Protocol::Sflow5,
        }
    }
}

/// Send synthetic flow export datagrams (NetFlow v5/v9, IPFIX, sFlow v5) at a target rate
/// from many exporter source addresses, with templates, sequence numbers and sampling options.
#[derive(Debug, Parser)]
#[command(
    name = "sluice-flowgen",
    version,
    after_help = "Example (11 exporters, IPFIX, 2000 datagrams/s for 10 s, templates every 100):\n  \
        sluice-flowgen --dest 198.18.0.1:4739 --sources 198.18.1.10-198.18.1.20 \\\n    \
        --proto ipfix --rate 2000 --duration 10s --records-per-packet 30 --template-every 100\n\n\
        Quick local test:\n  sluice-flowgen --dest 127.0.0.1:2055 --proto v9 --count 100"
)]
struct Args {
    /// Collector to send to, HOST:PORT.
    #[arg(long)]
    dest: SocketAddr,
    /// Flow protocol.
    #[arg(long, value_enum, default_value = "ipfix")]
    proto: Proto,
    /// Exporter source addresses: A, A-B ranges, comma-separated; each must be configured on a
    /// local interface. Default: the unspecified address (one exporter).
    #[arg(long)]
    sources: Option<String>,
    /// Datagrams per second over all sources (0 = as fast as possible).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Stop after this many datagrams.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (e.g. 10s, 500ms, 2m, or a number of seconds).
    #[arg(long, value_parser = sluice_common::duration::parse)]
    duration: Option<Duration>,
    /// Flow records per datagram (NetFlow v5: at most 30).
    #[arg(long, default_value_t = 30)]
    records_per_packet: usize,
    /// NetFlow v9 / IPFIX: resend templates every N datagrams per exporter (sFlow: a counter
    /// sample every N).
    #[arg(long, default_value_t = 100)]
    template_every: u32,
    /// Sampling rate to announce (0 = unsampled).
    #[arg(long, default_value_t = 0)]
    sampling_rate: u32,
    /// IPFIX observation domain / v9 source id / sFlow sub-agent id.
    #[arg(long, default_value_t = 0)]
    domain: u32,
    /// Seed of the synthetic traffic (same seed, same flows).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let sources: Vec<IpAddr> = match args.sources.as_deref().map(parse_sources).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            eprintln!("sluice-flowgen: {e}");
            return ExitCode::from(2);
        }
    };
    if args.count.is_none() && args.duration.is_none() {
        eprintln!("sluice-flowgen: sending until interrupted (use --count or --duration to stop)");
    }
    let cfg = SendConfig {
        protocol: args.proto.into(),
        dest: args.dest,
        sources,
        rate_pps: args.rate,
        count: args.count,
        duration: args.duration,
        records_per_packet: args.records_per_packet.max(1),
        template_every: args.template_every,
        sampling_rate: args.sampling_rate,
        observation_domain_id: args.domain,
        seed: args.seed,
    };
    match run(&cfg, &AtomicBool::new(false)) {
        Ok(r) => {
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            println!(
                "sent {} datagrams ({} flows, {} bytes) in {:.3}s: {:.0} datagrams/s, {:.0} flows/s, {} send errors",
                r.datagrams,
                r.flows,
                r.bytes,
                secs,
                r.datagrams as f64 / secs,
                r.flows as f64 / secs,
                r.send_errors
            );
            if r.send_errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("sluice-flowgen: {e}");
            ExitCode::FAILURE
        }
    }
}
