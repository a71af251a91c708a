//! Decode throughput in flows per CPU-second, per protocol. A measurement, not an assertion:
//! `cargo test -p sluice-peer --release --test decode_throughput -- --ignored --nocapture`
//! (`cargo xtask bench decode` reports the full comparison).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use sluice_peer::decode::{DecoderConfig, ShardDecoder};
use sluice_peer::flowgen::{Encoder, EncoderConfig, FlowSynth};
use sluice_peer::record::{FlowRecord, Protocol};

fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// 50 exporters × 200 datagrams of `per_packet` flows, templates every 100 datagrams.
fn corpus(p: Protocol, per_packet: usize) -> Vec<(IpAddr, Vec<u8>)> {
    let now = 1_700_000_000_000_000_000;
    let mut out = Vec::new();
    for e in 0..50u8 {
        let addr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, e));
        let mut enc = Encoder::new(
            p,
            EncoderConfig {
                sampling_rate: 100,
                template_every: 100,
                observation_domain_id: u32::from(e),
                agent_address: addr,
                boot_time_ns: now - 3_600_000_000_000,
            },
        );
        let mut synth = FlowSynth::new(u64::from(e), p);
        for _ in 0..200 {
            let flows: Vec<FlowRecord> = (0..per_packet).map(|_| synth.flow(now)).collect();
            let mut buf = Vec::new();
            enc.encode(&flows, now, &mut buf);
            out.push((addr, buf));
        }
    }
    out
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn decode_flows_per_cpu_second() {
    for (p, per_packet) in [
        (Protocol::NetflowV5, 30),
        (Protocol::NetflowV9, 30),
        (Protocol::Ipfix, 30),
        (Protocol::Sflow5, 8),
    ] {
        let corpus = corpus(p, per_packet);
        let bytes: usize = corpus.iter().map(|(_, d)| d.len()).sum();
        let mut dec = ShardDecoder::new(DecoderConfig::default());
        let mut out: Vec<FlowRecord> = Vec::with_capacity(64);
        let mut flows = 0u64;
        let start = cpu_time();
        let mut rounds = 0;
        while cpu_time() - start < Duration::from_secs(2) {
            for (addr, d) in &corpus {
                out.clear();
                let _ = dec.decode(*addr, 1, d, &mut out);
                flows += out.len() as u64;
            }
            rounds += 1;
        }
        let secs = (cpu_time() - start).as_secs_f64();
        println!(
            "{p:<10} {per_packet:>2} flows/datagram, {:>5} bytes/datagram: {:>6.2} M flows per CPU-second ({rounds} rounds)",
            bytes / corpus.len(),
            flows as f64 / secs / 1e6
        );
        assert_eq!(dec.stats().errors.total(), 0);
    }
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn json_records_per_cpu_second() {
    let corpus = corpus(Protocol::Ipfix, 30);
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let mut records = Vec::new();
    for (addr, d) in &corpus {
        let _ = dec.decode(*addr, 1, d, &mut records);
    }
    let mut line = Vec::with_capacity(1024);
    let mut n = 0u64;
    let mut bytes = 0usize;
    let start = cpu_time();
    while cpu_time() - start < Duration::from_secs(2) {
        for r in &records {
            line.clear();
            r.write_json(&mut line);
            bytes += line.len();
            n += 1;
        }
    }
    let secs = (cpu_time() - start).as_secs_f64();
    println!(
        "write_json: {:.2} M records per CPU-second, {} bytes per record",
        n as f64 / secs / 1e6,
        bytes as u64 / n
    );
}
