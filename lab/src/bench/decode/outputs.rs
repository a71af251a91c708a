//! Part 5 of `cargo xtask bench decode`: the same traffic through `sluice-peer` with one output
//! at a time — a file in `json` and in `pb`, and Kafka (tansu on loopback, in-memory storage) in
//! `pb` and `json` — flows per CPU-second of the peer's process and received→written
//! (Kafka: received→acknowledged) latency percentiles. Each figure is the median of
//! [`REPEATS`] rounds over all outputs. For the file rows, the same number of bytes written by
//! this thread alone gives the kernel's share: the ceiling of flows per CPU-second for a
//! collector that wrote those bytes and did nothing else.

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
use crate::bench::cpu::thread_cpu;
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
    /// This thread's CPU seconds to write `bytes` to a new file on the same filesystem in
    /// [`WRITE_CHUNK`] writes (file rows).
    pub write_only_cpu: Option<f64>,
}

impl OutputRow {
    pub fn per_cpu_second(&self) -> f64 {
        self.delivered as f64 / self.cpu.process
    }

    /// Flows per CPU-second if writing the file's bytes were all the collector did.
    fn write_only_per_cpu_second(&self) -> Option<f64> {
        self.write_only_cpu.map(|cpu| self.delivered as f64 / cpu)
    }

    fn lossless(&self) -> bool {
        self.lost == 0
    }
}

/// Size of each write of [`write_only_cpu`] (the peer writes a batch of records at a time:
/// 10–500 KiB at these rates).
const WRITE_CHUNK: usize = 64 * 1024;

/// This thread's CPU seconds to write `bytes` bytes to a new file at `path` in
/// [`WRITE_CHUNK`] writes; the file is removed afterwards.
fn write_only_cpu(path: &Path, bytes: u64) -> Result<f64> {
    use std::io::Write as _;
    let chunk = vec![b'x'; WRITE_CHUNK];
    let mut file = std::fs::File::create(path).context("write-only baseline file")?;
    let start = thread_cpu();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(WRITE_CHUNK as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    let cpu = (thread_cpu() - start).as_secs_f64();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(cpu)
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
    let cases: [(&'static str, Option<&str>, u64); 5] = [
        ("file json", None, SLOW_RATE),
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
                row.write_only_cpu =
                    Some(write_only_cpu(&tmp.0.join("write-only.out"), row.bytes)?);
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
        write_only_cpu: None,
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
    nfcapd: Option<f64>,
    nfacctd: Option<f64>,
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
        "  write only (file rows): the same bytes written by one thread in {} KiB writes, nothing else: the",
        WRITE_CHUNK / 1024
    );
    println!(
        "  kernel's share, and the ceiling of flows per CPU-second for a collector writing that file."
    );
    println!(
        "  Latency: received → written (Kafka: → acknowledged), bucket upper bounds from the peer's histogram.\n"
    );
    println!(
        "  {:<11} {:>8} {:>10} {:>10} {:>8} {:>12} {:>5} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "output",
        "rate/s",
        "sent",
        "delivered",
        "lost",
        "Mflows/CPU-s",
        "±",
        "write only",
        "broker CPU",
        "p50",
        "p99",
        "p99.9"
    );
    for r in rows {
        println!(
            "  {:<11} {:>8} {:>10} {:>10} {:>8} {:>12.2} {:>4.0}% {:>10} {:>10} {:>8} {:>8} {:>8}",
            r.name,
            r.rate,
            r.sent.flows,
            r.delivered,
            r.lost,
            r.per_cpu_second() / 1e6,
            100.0 * r.spread,
            r.write_only_per_cpu_second()
                .map_or_else(|| "-".to_owned(), |v| format!("{:.2}", v / 1e6)),
            r.broker_cpu
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.2} s")),
            r.latency.show(0),
            r.latency.show(2),
            r.latency.show(3),
        );
    }
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    let verdict = |ratio: f64, target: f64| {
        format!(
            "{ratio:.2}× ({})",
            if ratio >= target { "met" } else { "NOT met" }
        )
    };
    if let (Some(pb), Some(n)) = (find("file pb"), nfcapd) {
        println!(
            "  target pb to a file ≥ 2× nfcapd's flows per CPU-second (v9/IPFIX mean of medians, part 2, same rate): {}",
            verdict(pb.per_cpu_second() / n, 2.0)
        );
        ceiling(pb, n, "nfcapd", stages.as_ref().map(|s| (s.decode, s.pb)));
    }
    if let (Some(json), Some(n)) = (find("file json"), nfacctd) {
        println!(
            "  json to a file at {SLOW_RATE}/s vs nfacctd at its best loss-free step (part 3 compares both at one rate): {}",
            verdict(json.per_cpu_second() / n, 3.0)
        );
        ceiling(
            json,
            n,
            "nfacctd",
            stages.as_ref().map(|s| (s.decode, s.json)),
        );
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

/// What writing a file row's bytes alone would give against the collector's `baseline`, and
/// with `stages` (part 1's decoder and encoder, flows per CPU-second) what decoding, encoding
/// and writing would, with nothing else (no receive, no hand-over between threads).
fn ceiling(row: &OutputRow, baseline: f64, collector: &str, stages: Option<(f64, f64)>) {
    let Some(write) = row.write_only_per_cpu_second() else {
        return;
    };
    println!(
        "    (writing its {:.0} bytes per flow and nothing else: {:.2}× {collector})",
        row.bytes as f64 / row.delivered.max(1) as f64,
        write / baseline
    );
    if let Some((decode, encode)) = stages {
        let bound = 1.0 / (1.0 / decode + 1.0 / encode + 1.0 / write);
        println!(
            "    (part 1's decoder and encoder, then that write, each alone on one thread: {:.2}× {collector})",
            bound / baseline
        );
    }
}
