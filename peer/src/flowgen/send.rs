//! Rate-paced sender: many exporters (one UDP socket bound to each source address), each with
//! its own encoder state, round-robin at a target packets/s.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::config::EncoderConfig;
use super::encoder::Encoder;
use super::synth::FlowSynth;
use crate::record::{FlowRecord, Protocol};

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendConfig {
    pub protocol: Protocol,
    pub dest: SocketAddr,
    /// Exporter addresses to send from (each must be configured on a local interface). Empty:
    /// one exporter on the unspecified address of `dest`'s family.
    pub sources: Vec<IpAddr>,
    /// Target datagrams per second over all sources; 0 sends as fast as possible.
    pub rate_pps: u64,
    /// Stop after this many datagrams.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    pub records_per_packet: usize,
    pub template_every: u32,
    pub sampling_rate: u32,
    pub observation_domain_id: u32,
    pub seed: u64,
}

/// What was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendReport {
    pub datagrams: u64,
    pub flows: u64,
    pub bytes: u64,
    /// Datagrams the kernel refused (counted, not retried).
    pub send_errors: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Error)]
pub enum FlowgenError {
    #[error("bad source {0:?}: expected an address, a range A-B or a comma-separated list")]
    BadSource(String),
    #[error("source range {0} is larger than 65536 addresses")]
    RangeTooLarge(String),
    #[error(
        "cannot bind a UDP socket to source {addr}: {source} (is the address configured on an interface?)"
    )]
    Bind { addr: IpAddr, source: io::Error },
}

/// Parse `198.18.1.10-198.18.1.20`, `198.18.1.10,198.18.1.11`, or a mix (IPv4 or IPv6).
pub fn parse_sources(spec: &str) -> Result<Vec<IpAddr>, FlowgenError> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || FlowgenError::BadSource(part.to_owned());
        match part.split_once('-') {
            None => out.push(part.parse().map_err(|_| bad())?),
            Some((a, b)) => {
                let a: IpAddr = a.trim().parse().map_err(|_| bad())?;
                let b: IpAddr = b.trim().parse().map_err(|_| bad())?;
                let (lo, hi, v6) = match (a, b) {
                    (IpAddr::V4(a), IpAddr::V4(b)) => {
                        (u128::from(u32::from(a)), u128::from(u32::from(b)), false)
                    }
                    (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), true),
                    _ => return Err(bad()),
                };
                if hi < lo {
                    return Err(bad());
                }
                if hi - lo >= 65_536 {
                    return Err(FlowgenError::RangeTooLarge(part.to_owned()));
                }
                for n in lo..=hi {
                    out.push(if v6 {
                        IpAddr::V6(Ipv6Addr::from(n))
                    } else {
                        IpAddr::V4(Ipv4Addr::from(n as u32))
                    });
                }
            }
        }
    }
    if out.is_empty() {
        return Err(FlowgenError::BadSource(spec.to_owned()));
    }
    Ok(out)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

struct Exporter {
    socket: UdpSocket,
    encoder: Encoder,
    synth: FlowSynth,
}

/// Bind one socket per source and build each exporter's encoder and traffic.
fn exporters(cfg: &SendConfig) -> Result<Vec<Exporter>, FlowgenError> {
    let sources = if cfg.sources.is_empty() {
        vec![match cfg.dest {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }]
    } else {
        cfg.sources.clone()
    };
    let boot = now_ns().saturating_sub(3_600_000_000_000);
    sources
        .iter()
        .enumerate()
        .map(|(i, &addr)| {
            let socket = UdpSocket::bind(SocketAddr::new(addr, 0))
                .map_err(|source| FlowgenError::Bind { addr, source })?;
            let agent = if addr.is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                addr
            };
            let encoder = Encoder::new(
                cfg.protocol,
                EncoderConfig {
                    sampling_rate: cfg.sampling_rate,
                    template_every: cfg.template_every,
                    observation_domain_id: cfg.observation_domain_id,
                    agent_address: agent,
                    boot_time_ns: boot,
                },
            );
            Ok(Exporter {
                socket,
                encoder,
                synth: FlowSynth::new(cfg.seed.wrapping_add(i as u64), cfg.protocol),
            })
        })
        .collect()
}

/// Send until `count`, `duration` or `stop` ends it.
pub fn run(cfg: &SendConfig, stop: &AtomicBool) -> Result<SendReport, FlowgenError> {
    let mut exporters = exporters(cfg)?;
    let mut report = SendReport::default();
    let mut flows: Vec<FlowRecord> = Vec::with_capacity(cfg.records_per_packet);
    let mut buf = Vec::with_capacity(65_536);
    let start = Instant::now();
    let interval_ns = if cfg.rate_pps > 0 {
        1_000_000_000 / cfg.rate_pps.max(1)
    } else {
        0
    };
    let mut n: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed)
            || cfg.count.is_some_and(|c| n >= c)
            || cfg.duration.is_some_and(|d| start.elapsed() >= d)
        {
            break;
        }
        if interval_ns > 0 {
            let due = Duration::from_nanos(n.saturating_mul(interval_ns));
            let elapsed = start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        let len = exporters.len().max(1);
        let Some(ex) = exporters.get_mut((n % len as u64) as usize) else {
            break;
        };
        let now = now_ns();
        flows.clear();
        let per_packet = cfg
            .records_per_packet
            .min(ex.encoder.max_flows_per_datagram());
        flows.extend((0..per_packet).map(|_| ex.synth.flow(now)));
        ex.encoder.encode(&flows, now, &mut buf);
        match ex.socket.send_to(&buf, cfg.dest) {
            Ok(sent) => {
                report.datagrams += 1;
                report.flows += flows.len() as u64;
                report.bytes += sent as u64;
            }
            Err(_) => report.send_errors += 1,
        }
        n += 1;
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_ranges_and_lists() {
        let v = parse_sources("198.18.1.10-198.18.1.12, 198.18.2.1").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[2], "198.18.1.12".parse::<IpAddr>().unwrap());
        assert_eq!(parse_sources("2001:db8::1-2001:db8::3").unwrap().len(), 3);
        assert!(parse_sources("198.18.1.12-198.18.1.10").is_err());
        assert!(parse_sources("198.18.1.1-2001:db8::1").is_err());
        assert!(parse_sources("nope").is_err());
        assert!(parse_sources("10.0.0.0-10.1.0.0").is_err());
    }

    #[test]
    fn sends_count_datagrams_to_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let cfg = SendConfig {
            protocol: Protocol::Ipfix,
            dest: rx.local_addr().unwrap(),
            sources: vec!["127.0.0.1".parse().unwrap()],
            rate_pps: 10_000,
            count: Some(5),
            duration: None,
            records_per_packet: 3,
            template_every: 2,
            sampling_rate: 10,
            observation_domain_id: 1,
            seed: 1,
        };
        let r = run(&cfg, &AtomicBool::new(false)).unwrap();
        assert_eq!((r.datagrams, r.flows, r.send_errors), (5, 15, 0));
        let mut buf = [0u8; 2048];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(crate::decode::protocol_of(&buf[..n]), Some(Protocol::Ipfix));
    }
}
