//! Part 5 of `cargo xtask bench decode`: the same traffic through `sluice-peer` with one output
//! at a time — a file in `json` (every field, and only the fields nfacctd prints) and in `pb`,
//! and Kafka (tansu on loopback, in-memory storage) in `pb` and `json` — flows per CPU-second
//! of the peer's process and received→written (Kafka: received→acknowledged) latency
//! percentiles. Each figure is the median of
//! [`REPEATS`] rounds over all outputs. For the file rows, the CPU of the peer's thread that
//! wrote the file, set against the budget per flow that the targets leave and against what
//! nfcapd's writer thread spent in part 2.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    corpus::Corpus,
    daemons::{self, Cpu, Metrics, TempDir, free_port},
    latency,
    median::{REPEATS, median},
    send::{INGEST_RATE, RUN, Sent, send},
};
use crate::lab::LabProcess;

/// One output's run.
pub struct OutputRow {
    pub name: &'static str,
    /// Datagrams per second it was fed.
    pub rate: u64,
    pub sent: Sent,
    /// Records the output counted as sent (Kafka: acknowledged by the broker).
    pub delivered: u64,
    /// Records that did not fit its buffer, or that Kafka did not acknowledge.
    pub lost: u64,
    pub cpu: Cpu,
    /// The broker's CPU seconds meanwhile (Kafka rows).
    pub broker_cpu: Option<f64>,
    pub latency: latency::Percentiles,
    /// (max − min) / median of flows per CPU-second over the rounds.
    pub spread: f64,
    /// Bytes the file output wrote (0 for Kafka).
    pub bytes: u64,
}

impl OutputRow {
    pub fn per_cpu_second(&self) -> f64 {
        self.delivered as f64 / self.cpu.process
    }

    /// CPU nanoseconds per flow of the thread that wrote the file (file rows).
    fn writer_ns_per_flow(&self) -> Option<f64> {
        let writer = self.cpu.writer.filter(|_| self.bytes > 0)?;
        Some(writer.cpu * 1e9 / self.delivered.max(1) as f64)
    }

    fn lossless(&self) -> bool {
        self.lost == 0
    }
}

/// A collector's figures that part 5's rows are compared with.
pub struct Baseline {
    pub per_cpu_second: f64,
    /// CPU nanoseconds per flow of its thread that wrote its files, and bytes it wrote per flow.
    pub writer: Option<(f64, f64)>,
}

impl Baseline {
    /// From a run's CPU and the flows it stored.
    pub fn writer(cpu: &Cpu, flows: u64) -> Option<(f64, f64)> {
        let flows = flows.max(1) as f64;
        cpu.writer
            .map(|w| (w.cpu * 1e9 / flows, w.bytes as f64 / flows))
    }
}

/// `tansu` from PATH, else where `cargo install` (and `cargo xtask setup`) put it.
fn tansu_bin() -> PathBuf {
    let installed = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|d| d.join("bin").join("tansu"))
        .filter(|p| p.exists());
    installed.unwrap_or_else(|| PathBuf::from("tansu"))
}

/// tansu on `127.0.0.1:port` with in-memory storage and a topic `flows` of 3 partitions.
fn tansu(port: u16) -> Result<LabProcess> {
    let bin = tansu_bin();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new(&bin);
    cmd.args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
    ])
    .args(["--storage-engine", "memory://tansu/"])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let process = LabProcess::spawn_logged(cmd, "tansu", None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("tansu ({}) is not listening on {url}", bin.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new(&bin)
        .args([
            "topic",
            "create",
            "flows",
            "--partitions",
            "3",
            "--broker",
            &url,
        ])
        .output()
        .context("tansu topic create")?;
    if !out.status.success() {
        bail!(
            "tansu topic create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(process)
}

/// Waits until the output's sent + failed + overflow stop changing (all delivered or lost).
fn settled(metrics: u16, before: &Metrics) -> Result<(Metrics, u64, u64)> {
    let out = |m: &Metrics| {
        let d = |n: &str| m.value(n) - before.value(n);
        (
            d("sluice_peer_output_sent_records_total") as u64,
            (d("sluice_peer_output_overflow_records_total")
                + d("sluice_peer_output_failed_records_total")) as u64,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (u64::MAX, u64::MAX);
    loop {
        let m = daemons::scrape(metrics)?;
        let now = out(&m);
        let waiting = m.value("sluice_peer_output_in_flight_records")
            + m.value("sluice_peer_output_buffered_records");
        if now == last && waiting == 0.0 || Instant::now() > deadline {
            return Ok((m, now.0, now.1));
        }
        last = now;
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Runs every output in turn on `corpus`, [`REPEATS`] rounds; each output's median round.
pub fn run(corpus: &Corpus, tmp: &TempDir, stop: &AtomicBool) -> Result<Vec<OutputRow>> {
    let file = tmp.0.join("outputs.out");
    let file_output = |format: &str| {
        format!(
            "[[outputs]]\ntype = \"file\"\nformat = \"{format}\"\npath = \"{}\"\n",
            file.display()
        )
    };
    // pb to a file is compared with nfcapd, so it gets part 2's rate. JSON and Kafka cost more
    // per record than two shared cores give at that rate (and Kafka's tansu runs on them too):
    // they get the rate they keep up with, so that their figures count records delivered rather
    // than lost.
    // Kafka pb also runs at KAFKA_HIGH_RATE: librdkafka's cost per message is fixed, but the
    // wake-ups of the peer's threads are spread over more records as the rate grows.
    let cases: [(&'static str, Option<&str>, u64); 6] = [
        ("file json", None, SLOW_RATE),
        (SUBSET, None, SLOW_RATE),
        ("file pb", None, INGEST_RATE),
        ("kafka pb", Some("pb"), SLOW_RATE),
        ("kafka pb", Some("pb"), KAFKA_HIGH_RATE),
        ("kafka json", Some("json"), SLOW_RATE),
    ];
    let mut runs: Vec<Vec<OutputRow>> = cases.iter().map(|_| Vec::new()).collect();
    for _ in 0..REPEATS {
        for ((name, kafka, rate), runs) in cases.iter().zip(&mut runs) {
            // A fresh broker per Kafka run: its in-memory topic would otherwise hold every
            // round's records.
            let broker = match kafka {
                Some(_) => {
                    let port = free_port()?;
                    Some((tansu(port)?, port))
                }
                None => None,
            };
            let config = match (kafka, &broker) {
                (Some(format), Some((_, port))) => format!(
                    "[[outputs]]\ntype = \"kafka\"\nbrokers = [\"127.0.0.1:{port}\"]\n\
                     topic = \"flows\"\nformat = \"{format}\"\n"
                ),
                _ if *name == SUBSET => {
                    format!("{}fields = {NFACCTD_FIELDS:?}\n", file_output("json"))
                }
                _ => file_output(if name.ends_with("pb") { "pb" } else { "json" }),
            };
            let broker_pid = broker.as_ref().map(|(b, _)| b.child.id());
            let output = Output {
                name,
                config: &config,
                rate: *rate,
                broker_pid,
            };
            let mut row = run_one(&output, corpus, tmp, stop)?;
            if kafka.is_none() {
                row.bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
                std::fs::remove_file(&file)?;
            }
            runs.push(row);
            drop(broker);
        }
    }
    runs.into_iter()
        .map(|r| {
            median(r, OutputRow::per_cpu_second)
                .map(|(row, spread)| OutputRow { spread, ..row })
                .context("no run")
        })
        .collect()
}

/// The row of JSON lines to a file with only the fields nfacctd's print plugin writes in part 3.
const SUBSET: &str = "json subset";

/// `fields = [...]` of that row: what part 3's nfacctd aggregates on, and its counters.
const NFACCTD_FIELDS: [&str; 11] = [
    "sampler_address",
    "src_addr",
    "dst_addr",
    "src_port",
    "dst_port",
    "proto",
    "ip_tos",
    "in_if",
    "out_if",
    "packets",
    "bytes",
];

/// Datagrams per second of the JSON and Kafka outputs.
const SLOW_RATE: u64 = 25_000;

/// The second rate of Kafka pb: the highest step it kept up with on 2 shared cores beside tansu
/// (at 50 000 its buffer overflows).
const KAFKA_HIGH_RATE: u64 = 40_000;

/// One output to measure.
struct Output<'a> {
    name: &'static str,
    /// The peer's configuration file.
    config: &'a str,
    /// Datagrams per second it is fed.
    rate: u64,
    /// The Kafka broker's, whose CPU is shown.
    broker_pid: Option<u32>,
}

/// One output's run: a peer with its config, fed at its rate until its output settled.
fn run_one(
    output: &Output,
    corpus: &Corpus,
    tmp: &TempDir,
    stop: &AtomicBool,
) -> Result<OutputRow> {
    let path = tmp.0.join("outputs.toml");
    std::fs::write(&path, output.config)?;
    let (port, metrics) = (free_port()?, free_port()?);
    let mut peer = daemons::sluice_peer_with(
        port,
        metrics,
        &["--config", path.to_str().context("temporary path")?],
    )?;
    let before = daemons::scrape(metrics)?;
    let broker_start = crate::bench::cpu::Sample::take();
    let ((sent, (after, delivered, lost)), cpu) = peer.cpu_during(|| {
        let sent = send(corpus, port, output.rate, output.rate * RUN.as_secs(), stop)?;
        Ok((sent, settled(metrics, &before)?))
    })?;
    let broker_cpu = output.broker_pid.map(|pid| {
        let end = crate::bench::cpu::Sample::take();
        crate::bench::cpu::usage(&broker_start, &end, pid).forwarder_process
    });
    peer.stop()?;
    Ok(OutputRow {
        name: output.name,
        rate: output.rate,
        sent,
        delivered,
        lost,
        cpu,
        broker_cpu,
        latency: latency::between(&before, &after)?,
        spread: 0.0,
        bytes: 0,
    })
}

/// Part 1's one-thread figures on the v9 and IPFIX corpora, flows per CPU-second: the decoder
/// and the two encoders.
pub struct Stages {
    pub decode: f64,
    pub pb: f64,
    pub json: f64,
}

/// Prints the rows next to the collectors' figures from parts 1–3 and the stages' from part 1.
pub fn print(
    rows: &[OutputRow],
    nfcapd: Option<Baseline>,
    nfacctd: Option<Baseline>,
    stages: Option<Stages>,
) {
    println!(
        "5. Output formats and Kafka: NetFlow v9 + IPFIX corpus for {} s at the datagrams/s shown (pb to a file at",
        RUN.as_secs()
    );
    println!(
        "  part 2's rate, the one nfcapd had; the others at rates they keep up with on 2 shared cores),"
    );
    println!(
        "  one output at a time; each figure the median of {REPEATS} rounds, ± = (max − min) / median over them."
    );
    println!(
        "  flows/CPU-s = records the output delivered (Kafka: acknowledged by tansu 0.6 on loopback, in-memory)"
    );
    println!(
        "  per CPU-second of the sluice-peer process (decode + encode + librdkafka); broker CPU shown apart."
    );
    println!(
        "  writer ns/flow (file rows): CPU of the peer's thread that wrote the file (most bytes in /proc/…/io),"
    );
    println!(
        "  almost all of it the kernel's: on a VM that hands freed memory back to its host, a page cache page"
    );
    println!("  new to the guest costs a host fault on its first write.");
    println!(
        "  Latency: received → written (Kafka: → acknowledged), bucket upper bounds from the peer's histogram.\n"
    );
    println!(
        "  {:<11} {:>8} {:>10} {:>10} {:>8} {:>12} {:>5} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8}",
        "output",
        "rate/s",
        "sent",
        "delivered",
        "lost",
        "Mflows/CPU-s",
        "±",
        "B/flow",
        "writer",
        "broker CPU",
        "p50",
        "p99",
        "p99.9"
    );
    for r in rows {
        println!(
            "  {:<11} {:>8} {:>10} {:>10} {:>8} {:>12.2} {:>4.0}% {:>9} {:>7} {:>10} {:>8} {:>8} {:>8}",
            r.name,
            r.rate,
            r.sent.flows,
            r.delivered,
            r.lost,
            r.per_cpu_second() / 1e6,
            100.0 * r.spread,
            if r.bytes > 0 {
                format!("{:.0}", bytes_per_flow(r))
            } else {
                "-".to_owned()
            },
            r.writer_ns_per_flow()
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
            r.broker_cpu
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.2} s")),
            r.latency.show(0),
            r.latency.show(2),
            r.latency.show(3),
        );
    }
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    let files: [_; 3] = [
        (
            find("file pb").zip(nfcapd.as_ref()),
            "target pb to a file ≥ 2× nfcapd's flows per CPU-second (v9/IPFIX mean of medians, part 2, same rate)"
                .to_owned(),
            2.0,
            "nfcapd",
            stages.as_ref().map(|s| (s.decode, s.pb)),
        ),
        (
            find("file json").zip(nfacctd.as_ref()),
            format!(
                "json to a file at {SLOW_RATE}/s vs nfacctd at its best loss-free step (part 3 compares both at one rate)"
            ),
            3.0,
            "nfacctd",
            stages.as_ref().map(|s| (s.decode, s.json)),
        ),
        (
            find(SUBSET).zip(nfacctd.as_ref()),
            format!(
                "json with nfacctd's {} fields (`fields = [...]`, the same content per line) vs nfacctd as above",
                NFACCTD_FIELDS.len()
            ),
            3.0,
            "nfacctd",
            None,
        ),
    ];
    for (found, heading, target, collector, stages) in files {
        if let Some((row, baseline)) = found {
            let ratio = row.per_cpu_second() / baseline.per_cpu_second;
            println!(
                "  {heading}: {ratio:.2}× ({})",
                if ratio >= target { "met" } else { "NOT met" }
            );
            budget(row, baseline, target, collector, stages);
        }
    }
    // Kafka's figure: its most efficient loss-free rate (each rate is shown above).
    let kafka = rows
        .iter()
        .filter(|r| r.name == "kafka pb" && r.lossless())
        .max_by(|a, b| a.per_cpu_second().total_cmp(&b.per_cpu_second()));
    match kafka {
        Some(k) => {
            let m = k.per_cpu_second() / 1e6;
            println!(
                "  target Kafka ≥ 1 M flows per CPU-second (best loss-free rate, {}/s): {m:.2} M ({}); p99 received → acknowledged {}",
                k.rate,
                if m >= 1.0 { "met" } else { "NOT met" },
                k.latency.show(2)
            );
        }
        None if rows.iter().any(|r| r.name == "kafka pb") => {
            println!(
                "  target Kafka ≥ 1 M flows per CPU-second: NOT met (every rate lost records)"
            );
        }
        None => {}
    }
    println!();
}

fn bytes_per_flow(row: &OutputRow) -> f64 {
    row.bytes as f64 / row.delivered.max(1) as f64
}

/// The CPU per flow that `target` × the collector's figure leaves, what the peer's file writer
/// took of it (and the collector's, where known), and with `stages` (part 1's decoder and
/// encoder, flows per CPU-second) what decoding, encoding and that write would give with
/// nothing else (no receive, no hand-over between threads).
fn budget(
    row: &OutputRow,
    baseline: &Baseline,
    target: f64,
    collector: &str,
    stages: Option<(f64, f64)>,
) {
    let Some(writer) = row.writer_ns_per_flow() else {
        return;
    };
    let budget = 1e9 / (target * baseline.per_cpu_second);
    let theirs = baseline.writer.map_or_else(String::new, |(ns, bytes)| {
        format!("; {collector}'s writer thread took {ns:.0} ns for its {bytes:.0} bytes")
    });
    println!(
        "    ({target}× {collector} is {budget:.0} ns of CPU per flow; the peer's writer thread took {writer:.0} ns of it \
         for {:.0} bytes per flow{theirs})",
        bytes_per_flow(row)
    );
    if let Some((decode, encode)) = stages {
        let bound = 1.0 / (1.0 / decode + 1.0 / encode + writer / 1e9);
        println!(
            "    (part 1's decoder and encoder, each alone on one thread, plus that write: {:.2}× {collector})",
            bound / baseline.per_cpu_second
        );
    }
}
