//! `cargo xtask bench decode`: the peer's decoding cost and throughput next to nfdump's
//! `nfcapd` and pmacct's `nfacctd`, all on the same corpus (see [`corpus`]), from one run:
//! 1. in process: one `ShardDecoder` thread, and the pipeline (`sluice_peer::pipeline::replay`,
//!    no outputs), flows per CPU-second per protocol;
//! 2. over UDP on loopback: `sluice-peer --output none` and `nfcapd`, flows per CPU-second of
//!    their processes;
//! 3. over UDP with JSON written to a file: `sluice-peer` and `nfacctd` (print plugin) at rising
//!    rates: loss, CPU per flow, and the peer's received→written latency percentiles.
//! 5. one output at a time at one rate: a file in `json` and `pb`, Kafka (tansu on loopback) in
//!    `pb` and `json`: flows per CPU-second and latency, with the targets as ratios to parts 2–3.
//!
//! Everything runs on loopback; daemons are stopped by pid and the temporary directory removed.

mod corpus;
mod daemons;
mod latency;
mod median;
mod outputs;
mod send;

use std::{sync::atomic::AtomicBool, time::Duration};

use anyhow::{Context as _, Result};
use sluice_peer::{
    config::PipelineConfig,
    decode::{DecoderConfig, ShardDecoder},
    flowgen::Protocol,
    output::{BatchPool, Encoding, Format},
    pipeline::replay,
    record::{FlowRecord, pb::FlowMessage},
};

use crate::bench::cpu::thread_cpu;

use self::{
    corpus::{Corpus, EXPORTERS, RECORDS, TEMPLATE_EVERY},
    daemons::{Cpu, TempDir, free_port},
    median::{REPEATS, median},
    send::{INGEST_RATE, RUN, Sent, send},
};

/// Rates (datagrams/s) of the JSON steps of part 3 (nfacctd stops after its first loss).
const JSON_RATES: [u64; 8] = [
    2_500, 5_000, 10_000, 25_000, 35_000, 50_000, 100_000, 200_000,
];
/// Flows each in-process measurement decodes (about).
const IN_PROCESS_FLOWS: u64 = 6_000_000;

/// Runs the benchmark and prints its tables; `outputs_only`: part 5 alone.
pub fn run(outputs_only: bool, stop: &AtomicBool) -> Result<()> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "sluice-bench decode: {} CPUs, load average {} (other work on the machine shares them)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let tmp = TempDir::new()?;
    println!(
        "Temporary files (removed at the end): {}\n",
        tmp.0.display()
    );
    let mixed = Corpus::interleave(&[Protocol::NetflowV9, Protocol::Ipfix]);
    if outputs_only {
        let outputs = outputs::run(&mixed, &tmp, stop)?;
        outputs::print(&outputs, None, None, None);
        return Ok(());
    }
    let corpora: Vec<(Protocol, Corpus)> =
        Protocol::ALL.iter().map(|&p| (p, Corpus::new(p))).collect();
    print_corpora(&corpora);
    let mut rows = Vec::new();
    for (protocol, corpus) in &corpora {
        rows.push(decode_row(*protocol, corpus, &tmp, stop)?);
    }
    print_decode(&rows);
    let (peer, nfacctd) = json(&mixed, &tmp, stop)?;
    print_json(&mixed, &peer, &nfacctd);
    let outputs = outputs::run(&mixed, &tmp, stop)?;
    // The collectors' figures on the same traffic: nfcapd on v9 and IPFIX (mean), nfacctd at
    // its best loss-free JSON step.
    let nfcapd: Vec<&Ingest> = rows
        .iter()
        .filter(|r| matches!(r.protocol, Protocol::NetflowV9 | Protocol::Ipfix))
        .filter_map(|r| r.nfcapd.as_ref())
        .collect();
    let mean = |f: &dyn Fn(&Ingest) -> Option<f64>| {
        let v: Option<Vec<f64>> = nfcapd.iter().map(|i| f(i)).collect();
        v.filter(|v| !v.is_empty())
            .map(|v| v.iter().sum::<f64>() / v.len() as f64)
    };
    let nfcapd = mean(&|i| Some(i.per_cpu_second())).map(|per_cpu_second| outputs::Baseline {
        per_cpu_second,
        writer: mean(&|i| outputs::Baseline::writer(&i.cpu, i.flows).map(|w| w.0)).zip(mean(
            &|i| outputs::Baseline::writer(&i.cpu, i.flows).map(|w| w.1),
        )),
    });
    let nfacctd = nfacctd
        .iter()
        .filter(|s| s.lossless())
        .max_by_key(|s| s.rate)
        .map(|s| outputs::Baseline {
            per_cpu_second: 1e6 / s.cpu_us_per_flow(),
            // Its print plugin writes the file at each refresh, from its own process, partly
            // after the step's CPU window: its writer is not measured.
            writer: None,
        });
    outputs::print(&outputs, nfcapd, nfacctd, stages(&rows));
    Ok(())
}

/// Part 1's stages on the v9 and IPFIX corpora: each protocol's CPU per flow averaged, as part
/// 5's mixed corpus has them half and half.
fn stages(rows: &[DecodeRow]) -> Option<outputs::Stages> {
    let rows: Vec<_> = rows
        .iter()
        .filter(|r| matches!(r.protocol, Protocol::NetflowV9 | Protocol::Ipfix))
        .collect();
    let rate = |f: fn(&DecodeRow) -> f64| {
        let per_flow = rows.iter().map(|r| 1.0 / f(r)).sum::<f64>() / rows.len() as f64;
        1.0 / per_flow
    };
    (!rows.is_empty()).then(|| outputs::Stages {
        decode: rate(|r| r.decoder),
        pb: rate(|r| r.encode.0),
        json: rate(|r| r.encode.2),
    })
}

fn print_corpora(corpora: &[(Protocol, Corpus)]) {
    println!(
        "Corpus: sluice_peer::flowgen, {EXPORTERS} exporters per protocol (127.N.0.x), taking turns; \
         v5/v9/IPFIX {RECORDS} records per datagram,"
    );
    println!(
        "sFlow as many samples as fit in 1400 bytes; v9/IPFIX templates + sampling options, sFlow counter samples,"
    );
    println!(
        "in each exporter's first and every {TEMPLATE_EVERY}th datagram (also when the corpus is sent in a loop)."
    );
    println!(
        "  {:<11} {:>9} {:>11} {:>11}",
        "protocol", "datagrams", "flows/dgram", "bytes/dgram"
    );
    for (p, c) in corpora {
        println!(
            "  {:<11} {:>9} {:>11.1} {:>11.0}",
            p.as_str(),
            c.datagrams.len(),
            c.flows_per_datagram(),
            c.bytes_per_datagram()
        );
    }
    println!();
}

/// Flows per CPU-second of each way of decoding one protocol's corpus.
struct DecodeRow {
    protocol: Protocol,
    /// One `ShardDecoder` on one thread.
    decoder: f64,
    /// Encoding the decoded records on one thread, records per CPU-second: (Sluice's pb
    /// encoder, prost's encoding of the same `FlowMessage`, JSON lines).
    encode: (f64, f64, f64),
    /// The pipeline, in process.
    pipeline: f64,
    nfcapd: Option<Ingest>,
    peer: Ingest,
}

/// A collector fed over UDP: the median of [`REPEATS`] runs.
struct Ingest {
    sent: Sent,
    /// Flows it stored (nfcapd) or decoded (sluice-peer).
    flows: u64,
    cpu: Cpu,
    /// (max − min) / median of flows per CPU-second over the runs.
    spread: f64,
}

impl Ingest {
    fn median(runs: Vec<Ingest>) -> Option<Ingest> {
        median(runs, Ingest::per_cpu_second).map(|(i, spread)| Ingest { spread, ..i })
    }

    fn per_cpu_second(&self) -> f64 {
        self.flows as f64 / self.cpu.process
    }

    fn loss(&self) -> f64 {
        loss(self.sent.flows, self.flows)
    }
}

/// Fraction of `sent` flows not `counted`.
fn loss(sent: u64, counted: u64) -> f64 {
    sent.saturating_sub(counted) as f64 / sent.max(1) as f64
}

fn decode_row(
    protocol: Protocol,
    corpus: &Corpus,
    tmp: &TempDir,
    stop: &AtomicBool,
) -> Result<DecodeRow> {
    let repeat = IN_PROCESS_FLOWS.div_ceil(corpus.flows) as usize;
    let decoder = decoder_loop(corpus, repeat);
    let encode = encode_loop(corpus);
    let report = replay(&PipelineConfig::default(), &[], &corpus.datagrams, repeat)?;
    anyhow::ensure!(
        report.records == corpus.flows * repeat as u64,
        "{}: the pipeline decoded {} records of {}",
        protocol.as_str(),
        report.records,
        corpus.flows * repeat as u64
    );
    let pipeline = report.records as f64 / report.cpu.as_secs_f64();
    let count = INGEST_RATE * RUN.as_secs();
    // The two take turns, so that both see the same background load.
    let (mut nfcapd_runs, mut peer_runs) = (Vec::new(), Vec::new());
    for run in 0..REPEATS {
        // Debian's nfdump 1.7.1 has no sfcapd: nfcapd takes NetFlow and IPFIX only.
        if protocol != Protocol::Sflow5 {
            let dir = tmp.0.join(format!("nfcapd-{}-{run}", protocol.as_str()));
            let port = free_port()?;
            let mut d = daemons::nfcapd(port, &dir)?;
            let (sent, cpu) = d.cpu_during(|| send(corpus, port, INGEST_RATE, count, stop))?;
            d.stop()?;
            let flows = daemons::nfdump_flows(&dir)?;
            std::fs::remove_dir_all(&dir)?;
            nfcapd_runs.push(Ingest {
                sent,
                flows,
                cpu,
                spread: 0.0,
            });
        }
        let (port, metrics) = (free_port()?, free_port()?);
        let mut d = daemons::sluice_peer(port, metrics, "none")?;
        let (sent, cpu) = d.cpu_during(|| send(corpus, port, INGEST_RATE, count, stop))?;
        let flows = daemons::scrape(metrics)?.value("sluice_peer_flows_total") as u64;
        d.stop()?;
        peer_runs.push(Ingest {
            sent,
            flows,
            cpu,
            spread: 0.0,
        });
    }
    let nfcapd = Ingest::median(nfcapd_runs);
    let peer = Ingest::median(peer_runs).context("no peer run")?;
    Ok(DecodeRow {
        protocol,
        decoder,
        encode,
        pipeline,
        nfcapd,
        peer,
    })
}

/// Flows per thread-CPU-second of one `ShardDecoder` decoding `corpus` `repeat` times.
fn decoder_loop(corpus: &Corpus, repeat: usize) -> f64 {
    let mut decoder = ShardDecoder::new(DecoderConfig::default());
    let mut out = Vec::with_capacity(1024);
    let mut flows = 0u64;
    let start = thread_cpu();
    for _ in 0..repeat {
        for (exporter, datagram) in &corpus.datagrams {
            out.clear();
            let _ = decoder.decode(*exporter, 0, datagram, &mut out);
            flows += out.len() as u64;
        }
    }
    flows as f64 / (thread_cpu() - start).as_secs_f64()
}

/// Records of the first datagrams of `corpus`, encoded again and again as `pb` and as JSON
/// lines on this thread: records per thread-CPU-second of each encoder alone. JSON is encoded
/// as the shards do, into a pooled batch (written in place).
fn encode_loop(corpus: &Corpus) -> (f64, f64, f64) {
    const RECORDS: usize = 60_000;
    let mut decoder = ShardDecoder::new(DecoderConfig::default());
    let mut records = Vec::with_capacity(RECORDS + 64);
    for (exporter, datagram) in &corpus.datagrams {
        let _ = decoder.decode(*exporter, 1, datagram, &mut records);
        if records.len() >= RECORDS {
            break;
        }
    }
    let time = |encode: &mut dyn FnMut(&[FlowRecord])| {
        let rounds = (IN_PROCESS_FLOWS as usize / 2).div_ceil(records.len().max(1));
        let start = thread_cpu();
        for _ in 0..rounds {
            for chunk in records.chunks(1000) {
                encode(chunk);
            }
        }
        (rounds * records.len()) as f64 / (thread_cpu() - start).as_secs_f64()
    };
    let mut out = Vec::with_capacity(1 << 20);
    let pb_rate = time(&mut |chunk| {
        out.clear();
        for r in chunk {
            r.write_pb(&mut out);
        }
        std::hint::black_box(&out);
    });
    let mut message = FlowMessage::default();
    let prost_rate = time(&mut |chunk| {
        out.clear();
        for r in chunk {
            message.fill(r);
            let _ = prost::Message::encode_length_delimited(&message, &mut out);
        }
        std::hint::black_box(&out);
    });
    let (pool, json) = (BatchPool::new(1), Encoding::from(Format::Json));
    let json_rate = time(&mut |chunk| {
        let mut batch = pool.take(&json, chunk.len());
        for r in chunk {
            batch.push_record(r);
        }
        std::hint::black_box(&batch);
    });
    (pb_rate, prost_rate, json_rate)
}

fn millions(v: f64) -> String {
    format!("{:.2}", v / 1e6)
}

fn print_decode(rows: &[DecodeRow]) {
    println!("1-2. Decode: million flows per CPU-second");
    println!("  decoder   one ShardDecoder on one thread, in process (thread CPU time)");
    println!(
        "  pb enc, prost, json enc  encoding the decoded records alone on one thread (thread CPU time): Sluice's\n  \
         pb encoder, prost encoding the same FlowMessage (the baseline it replaces), JSON lines"
    );
    println!(
        "  pipeline  sluice_peer::pipeline::replay, default shards, no outputs, in process (process CPU)"
    );
    println!(
        "  nfcapd    Debian nfdump 1.7.1 over UDP at {INGEST_RATE} datagrams/s for {} s: flows stored (nfdump -I) / its CPU;",
        RUN.as_secs()
    );
    println!(
        "            median of {REPEATS} runs taken in turns with the peer's; ±: (max − min) / median over them"
    );
    println!("  peer      sluice-peer run --output none, same traffic: flows decoded / its CPU");
    println!(
        "  Sender: this process, sendmmsg on loopback from the exporters' 127/8 addresses. Kernel work up to the"
    );
    println!(
        "  socket queue runs in the sender and is charged to neither collector. loss = flows sent but not counted.\n"
    );
    println!(
        "  {:<11} {:>8} {:>7} {:>6} {:>8} {:>9} {:>21} {:>21} {:>6} {:>15} {:>11}",
        "protocol",
        "decoder",
        "pb enc",
        "prost",
        "json enc",
        "pipeline",
        "nfcapd (loss)",
        "peer (loss)",
        "bg",
        "pipeline/nfcapd",
        "peer/nfcapd"
    );
    let ingest = |i: &Ingest| {
        format!(
            "{} ±{:.0}% ({:.2}%)",
            millions(i.per_cpu_second()),
            100.0 * i.spread,
            100.0 * i.loss()
        )
    };
    let ratio = |a: f64, i: &Option<Ingest>| {
        i.as_ref().map_or_else(
            || "-".to_owned(),
            |n| format!("{:.2}×", a / n.per_cpu_second()),
        )
    };
    for r in rows {
        println!(
            "  {:<11} {:>8} {:>7} {:>6} {:>8} {:>9} {:>21} {:>21} {:>6.2} {:>15} {:>11}",
            r.protocol.as_str(),
            millions(r.decoder),
            millions(r.encode.0),
            millions(r.encode.1),
            millions(r.encode.2),
            millions(r.pipeline),
            r.nfcapd
                .as_ref()
                .map_or_else(|| "n/a (no sfcapd)".to_owned(), ingest),
            ingest(&r.peer),
            r.peer.cpu.background / r.peer.cpu.wall,
            ratio(r.pipeline, &r.nfcapd),
            ratio(r.peer.per_cpu_second(), &r.nfcapd),
        );
    }
    println!("  (bg: cores used by other work on the machine during the peer's run)");
    let verdict = |target: f64, pick: &dyn Fn(&DecodeRow, &Ingest) -> f64| {
        let ratios: Vec<(Protocol, f64)> = rows
            .iter()
            .filter_map(|r| r.nfcapd.as_ref().map(|n| (r.protocol, pick(r, n))))
            .collect();
        let worst = ratios.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min);
        format!(
            "worst {worst:.2}× ({})",
            if worst >= target { "met" } else { "NOT met" }
        )
    };
    println!(
        "  target in-process pipeline ≥ 2× nfcapd's flows per CPU-second: {}",
        verdict(2.0, &|r, n| r.pipeline / n.per_cpu_second())
    );
    println!(
        "  target ingest + decode (--output none) ≥ nfcapd: {}\n",
        verdict(1.0, &|r, n| r.peer.per_cpu_second() / n.per_cpu_second())
    );
}

/// One rate step with JSON output.
struct JsonStep {
    rate: u64,
    sent: Sent,
    /// Lines written.
    written: u64,
    cpu: Cpu,
    /// Received → written, from the peer's histogram (sluice-peer only).
    latency: Option<latency::Percentiles>,
    /// Where the peer lost what it lost (sluice-peer only).
    drops: Option<PeerDrops>,
}

/// The peer's own loss counters over one step.
struct PeerDrops {
    /// Datagrams the kernel dropped on its sockets (full receive buffers).
    kernel: u64,
    /// Datagrams dropped before decoding (full shard queues).
    queue: u64,
    /// Records that did not fit the output's buffer.
    overflow: u64,
}

impl JsonStep {
    fn lossless(&self) -> bool {
        self.written >= self.sent.flows
    }

    /// Fraction of the flows sent that were not written.
    fn loss(&self) -> f64 {
        loss(self.sent.flows, self.written)
    }

    fn cpu_us_per_flow(&self) -> f64 {
        self.cpu.process / self.written.max(1) as f64 * 1e6
    }
}

/// Both collectors run side by side (idle while the other is measured), taking turns at each
/// rate so that they see the same background load. nfacctd stops after its first step with
/// loss.
fn json(
    corpus: &Corpus,
    tmp: &TempDir,
    stop: &AtomicBool,
) -> Result<(Vec<JsonStep>, Vec<JsonStep>)> {
    let peer_file = tmp.0.join("sluice.jsonl");
    let (peer_port, metrics) = (free_port()?, free_port()?);
    let mut peer =
        daemons::sluice_peer(peer_port, metrics, &format!("file:{}", peer_file.display()))?;
    let nfacctd_file = tmp.0.join("nfacctd.json");
    let nfacctd_port = free_port()?;
    let mut nfacctd = daemons::nfacctd(nfacctd_port, &tmp.0, &nfacctd_file)?;
    let (mut peer_steps, mut nfacctd_steps) = (Vec::new(), Vec::new());
    for rate in JSON_RATES {
        let before = daemons::scrape(metrics)?;
        let (sent, cpu) =
            peer.cpu_during(|| send(corpus, peer_port, rate, rate * RUN.as_secs(), stop))?;
        let written = daemons::settled_lines(&peer_file, Duration::from_millis(300))?;
        let after = daemons::scrape(metrics)?;
        daemons::truncate(&peer_file)?;
        let delta = |name: &str| (after.value(name) - before.value(name)) as u64;
        peer_steps.push(JsonStep {
            rate,
            sent,
            written,
            cpu,
            latency: Some(latency::between(&before, &after)?),
            drops: Some(PeerDrops {
                kernel: delta("sluice_peer_kernel_drops_total"),
                queue: delta("sluice_peer_drops_total"),
                overflow: delta("sluice_peer_output_overflow_records_total"),
            }),
        });
        if nfacctd_steps
            .last()
            .is_some_and(|s: &JsonStep| !s.lossless())
        {
            continue;
        }
        // At most one pass over the corpus: its flows are unique, so none aggregate.
        let count = (rate * RUN.as_secs()).min(corpus.datagrams.len() as u64);
        let ((sent, written), cpu) = nfacctd.cpu_during(|| {
            let sent = send(corpus, nfacctd_port, rate, count, stop)?;
            // The print plugin writes every second: wait for two quiet refreshes.
            Ok((
                sent,
                daemons::settled_lines(&nfacctd_file, Duration::from_millis(2500))?,
            ))
        })?;
        daemons::truncate(&nfacctd_file)?;
        anyhow::ensure!(written > 0, "nfacctd wrote nothing:\n{}", nfacctd.log());
        nfacctd_steps.push(JsonStep {
            rate,
            sent,
            written,
            cpu,
            latency: None,
            drops: None,
        });
    }
    peer.stop()?;
    nfacctd.stop()?;
    Ok((peer_steps, nfacctd_steps))
}

fn print_json(corpus: &Corpus, peer: &[JsonStep], nfacctd: &[JsonStep]) {
    println!(
        "3-4. Ingest + decode + JSON lines to a file, NetFlow v9 + IPFIX corpus ({:.1} flows/datagram)",
        corpus.flows_per_datagram()
    );
    println!(
        "  sluice-peer --output file:…  vs  nfacctd 1.7.7 print plugin (print_output json, appended every second,"
    );
    println!(
        "  aggregated on exporter, addresses, ports, protocol, ToS, interfaces: one line per corpus flow)."
    );
    println!(
        "  {} s per rate; loss = flows sent − lines written; CPU = the collector's processes until they go quiet.",
        RUN.as_secs()
    );
    println!(
        "  The two take turns at each rate; nfacctd gets at most one pass over the corpus per step (its"
    );
    println!("  aggregation would merge repeats) and stops after its first step with loss.");
    println!(
        "  Latency: the peer's received→written histogram (Prometheus buckets, 0.5/1/2.5/5/10/25/50 ms …),"
    );
    println!("  loaded into an hdrhistogram per step: percentiles are bucket upper bounds (≤).\n");
    println!(
        "  {:<12} {:>8} {:>9} {:>10} {:>10} {:>8} {:>20} {:>8} {:>9} {:>5} {:>8} {:>8} {:>8} {:>8}",
        "collector",
        "target/s",
        "sent/s",
        "flows/s",
        "written",
        "loss",
        "kernel/queue/output",
        "µs/flow",
        "Mflows/s·",
        "bg",
        "p50",
        "p90",
        "p99",
        "p99.9"
    );
    for (name, steps) in [("sluice-peer", peer), ("nfacctd", nfacctd)] {
        for s in steps {
            let l = s.latency.as_ref();
            let pct = |i: usize| l.map_or_else(|| "-".to_owned(), |l| l.show(i));
            let drops = s.drops.as_ref().map_or_else(
                || "-".to_owned(),
                |d| format!("{}/{}/{}", d.kernel, d.queue, d.overflow),
            );
            println!(
                "  {:<12} {:>8} {:>9.0} {:>10.0} {:>10} {:>7.3}% {:>20} {:>8.3} {:>9.2} {:>5.2} {:>8} {:>8} {:>8} {:>8}",
                name,
                s.rate,
                s.sent.rate(),
                s.sent.flows as f64 / s.sent.secs,
                s.written,
                100.0 * s.loss(),
                drops,
                s.cpu_us_per_flow(),
                1.0 / s.cpu_us_per_flow(),
                s.cpu.background / s.cpu.wall,
                pct(0),
                pct(1),
                pct(2),
                pct(3),
            );
        }
    }
    println!(
        "  (Mflows/s· = million flows written per CPU-second; bg = cores used by other work meanwhile)\n"
    );
    let best = |steps: &[JsonStep]| {
        steps
            .iter()
            .filter(|s| s.lossless())
            .max_by_key(|s| s.rate)
            .map(|s| (s.rate, s.cpu_us_per_flow()))
    };
    let (p, n) = (best(peer), best(nfacctd));
    let show = |steps: &[JsonStep], b: Option<(u64, f64)>| {
        let Some((r, us)) = b else {
            return "none loss-free".to_owned();
        };
        let lossy_below = steps.iter().filter(|s| s.rate < r && !s.lossless()).count();
        format!(
            "loss-free up to {r} datagrams/s, {us:.3} µs CPU per flow there{}",
            if lossy_below > 0 {
                format!(" ({lossy_below} slower step(s) lost: compare bg)")
            } else {
                String::new()
            }
        )
    };
    println!("  sluice-peer: {}", show(peer, p));
    println!("  nfacctd:     {}", show(nfacctd, n));
    // Per-flow CPU falls as batches grow with the rate: compare at one rate, the highest both
    // ran without loss (else the lowest both ran).
    let both = |lossless: bool| {
        peer.iter()
            .filter(|s| s.lossless() || !lossless)
            .filter_map(|s| {
                let n = nfacctd
                    .iter()
                    .find(|n| n.rate == s.rate && (n.lossless() || !lossless))?;
                Some((s.rate, n.cpu_us_per_flow() / s.cpu_us_per_flow()))
            })
            .collect::<Vec<_>>()
    };
    let common = both(true).last().copied().or(both(false).first().copied());
    if let Some((rate, ratio)) = common {
        println!(
            "  target ≥ 3× nfacctd's flows per CPU-second, both at {rate} datagrams/s: {ratio:.2}× ({})",
            if ratio >= 3.0 { "met" } else { "NOT met" }
        );
    }
    if let (Some((pr, p)), Some((nr, n))) = (p, n) {
        println!(
            "  (each at its own best loss-free rate, sluice-peer {pr}/s vs nfacctd {nr}/s: {:.2}×)",
            n / p
        );
    }
    let at_target = peer.iter().find(|s| s.rate == 200_000);
    println!(
        "  target zero loss at 200 000 datagrams/s ({:.1} M flows/s), templates every {TEMPLATE_EVERY} datagrams: {}",
        200_000.0 * corpus.flows_per_datagram() / 1e6,
        at_target.map_or("not run".to_owned(), |s| if s.lossless() {
            "met".to_owned()
        } else {
            format!(
                "NOT met on this machine ({:.2}% lost; the sender shares the 2 cores)",
                100.0 * s.loss()
            )
        })
    );
    // Latency at the best loss-free rate (else the lowest rate).
    let shown = p.and_then(|(r, _)| peer.iter().find(|s| s.rate == r));
    if let Some(s) = shown.or(peer.first())
        && let Some(l) = &s.latency
    {
        println!(
            "  latency at {} datagrams/s (received → written, {} records): p50 {}  p90 {}  p99 {}  p99.9 {}  (mean {:.3} ms, exact)",
            s.rate,
            l.count,
            l.show(0),
            l.show(1),
            l.show(2),
            l.show(3),
            l.mean_ms
        );
    }
}
