//! Test support for the real `sluice-peer` binary, behind the `testing` feature (the package's
//! own tests enable it through a dev-dependency on itself; nothing else should).
//!
//! - [`PeerProcess`]: starts `sluice-peer run` with arguments or a config, waits for its ready
//!   line, captures its log, scrapes `/metrics` into values ([`Metrics`]) and stops it by pid
//!   (SIGTERM in [`PeerProcess::stop`], SIGKILL on drop).
//! - [`Exporter`]: a flowgen encoder on its own loopback address.
//! - JSON helpers to compare what exporters sent with what an output wrote.
//!
//! The binary's path comes from the test, as `env!("CARGO_BIN_EXE_sluice-peer")`: cargo sets it
//! only while compiling the package's integration tests.
//!
//! Everything here panics on failure, with the peer's log: a panic is the test's report.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::flowgen::{Encoder, EncoderConfig, FlowRecord, FlowSynth, Protocol};

/// How long any wait of this module lasts before it fails the test.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `cond` every 50 ms until it holds; panics with `what` and `context()` after
/// [`TIMEOUT`].
pub fn wait_until(what: &str, context: impl Fn() -> String, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `BIN ARGS` to its exit (`RUST_LOG=info`): (status, stdout, stderr).
pub fn run_to_exit(bin: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `sluice-peer`, killed on drop if the test did not [`stop`](Self::stop) it.
pub struct PeerProcess {
    child: Child,
    /// The listen addresses of the ready line, in order.
    pub listen: Vec<SocketAddr>,
    /// Where `/metrics` is served.
    pub metrics: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl PeerProcess {
    /// `BIN run ARGS --metrics 127.0.0.1:0` (`RUST_LOG=info`), once it logged its ready line.
    pub fn start(bin: &str, args: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .arg("run")
            .args(args)
            .args(["--metrics", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        let mut peer = PeerProcess {
            child,
            listen: Vec::new(),
            metrics: SocketAddr::from(([0, 0, 0, 0], 0)),
            log,
            reader: Some(reader),
        };
        let ready = peer.wait_log(" ready ");
        let field = |name: &str| -> &str {
            let start = ready
                .find(&format!("{name}="))
                .unwrap_or_else(|| panic!("no {name}= in the ready line: {ready}"))
                + name.len()
                + 1;
            ready[start..].split(' ').next().unwrap_or_default()
        };
        let addr = |text: &str| -> SocketAddr {
            text.parse()
                .unwrap_or_else(|e| panic!("{text:?} in the ready line: {e}"))
        };
        peer.listen = field("listen").split(',').map(addr).collect();
        peer.metrics = addr(field("metrics"));
        peer
    }

    /// [`start`](Self::start) with `--config CONFIG`.
    pub fn start_config(bin: &str, config: &Path) -> Self {
        Self::start(bin, &["--config", config.to_str().expect("UTF-8 path")])
    }

    /// Everything logged so far, one line each.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// The first log line containing `needle`, once there is one; panics if the peer exits first.
    pub fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let found = self
                .log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            if let Some(status) = self.try_wait() {
                self.drain_log();
                panic!(
                    "exited ({status}) before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// One `GET /metrics`.
    pub fn scrape(&self) -> Metrics {
        let mut stream = TcpStream::connect(self.metrics)
            .unwrap_or_else(|e| panic!("connect to /metrics at {}: {e}", self.metrics));
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("send the /metrics request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the /metrics response");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        Metrics::parse(response)
    }

    /// The value of one sample of `/metrics`, e.g. `sluice_peer_flows_total` or
    /// `name{label="x"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        self.scrape().value(sample)
    }

    /// Polls until `sample` reaches `want`.
    pub fn wait_metric(&self, sample: &str, want: f64) {
        self.wait_for(&format!("{sample} >= {want}"), |p| p.metric(sample) >= want);
    }

    /// Polls `cond` until it holds; the failure shows the metrics and the log.
    pub fn wait_for(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        wait_until(
            what,
            || format!("metrics:\n{}\nlog:\n{}", self.scrape().text, self.log()),
            || cond(self),
        );
    }

    /// SIGTERM, then waits for the exit: (status, the whole log).
    pub fn stop(mut self) -> (ExitStatus, String) {
        let pid = i32::try_from(self.child.id()).expect("pid fits in pid_t");
        // SAFETY: signalling our own child process, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                self.drain_log();
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for sluice-peer")
    }

    /// After the exit: waits until the log reader has read stderr to its end.
    fn drain_log(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader does not panic");
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One scrape of `/metrics`: the response and each sample's value.
pub struct Metrics {
    /// The whole response, headers included.
    pub text: String,
    samples: BTreeMap<String, f64>,
}

impl Metrics {
    /// Reads the samples (`name{labels} value` lines) of an HTTP response carrying a
    /// Prometheus text exposition.
    pub fn parse(response: String) -> Self {
        let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let samples = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (sample, value) = l.rsplit_once(' ')?;
                Some((sample.to_owned(), value.parse().ok()?))
            })
            .collect();
        Metrics {
            text: response,
            samples,
        }
    }

    /// The value of `sample` (`name` or `name{label="x"}`, labels as the peer orders them).
    pub fn value(&self, sample: &str) -> f64 {
        *self
            .samples
            .get(sample)
            .unwrap_or_else(|| panic!("no sample {sample} in\n{}", self.text))
    }
}

/// One exporter: a socket bound to its own address and a flowgen encoder.
pub struct Exporter {
    pub socket: UdpSocket,
    pub encoder: Encoder,
    synth: FlowSynth,
    /// Every flow [`send`](Self::send) sent.
    pub sent: Vec<FlowRecord>,
}

impl Exporter {
    /// Templates every 10 datagrams, a fixed boot time, flows from `seed`.
    pub fn new(addr: IpAddr, protocol: Protocol, seed: u64) -> Self {
        let cfg = EncoderConfig {
            agent_address: addr,
            template_every: 10,
            boot_time_ns: 1_700_000_000_000_000_000,
            ..EncoderConfig::default()
        };
        Self::with_config(addr, protocol, seed, cfg)
    }

    pub fn with_config(addr: IpAddr, protocol: Protocol, seed: u64, cfg: EncoderConfig) -> Self {
        Exporter {
            socket: UdpSocket::bind(SocketAddr::new(addr, 0))
                .unwrap_or_else(|e| panic!("bind an exporter to {addr}: {e}")),
            encoder: Encoder::new(protocol, cfg),
            synth: FlowSynth::new(seed, protocol),
            sent: Vec::new(),
        }
    }

    /// One exporter of each protocol on 127.0.0.2 to 127.0.0.5 and an IPFIX one on `::1`;
    /// seeds from `seed` up.
    pub fn every_protocol(seed: u64) -> Vec<Self> {
        [
            ("127.0.0.2", Protocol::NetflowV5),
            ("127.0.0.3", Protocol::NetflowV9),
            ("127.0.0.4", Protocol::Ipfix),
            ("127.0.0.5", Protocol::Sflow5),
            ("::1", Protocol::Ipfix),
        ]
        .into_iter()
        .zip(seed..)
        .map(|((addr, protocol), seed)| {
            Self::new(addr.parse().expect("an address"), protocol, seed)
        })
        .collect()
    }

    pub fn addr(&self) -> IpAddr {
        self.socket.local_addr().expect("a bound socket").ip()
    }

    /// The first of `addrs` in this exporter's address family.
    pub fn same_family(&self, addrs: &[SocketAddr]) -> SocketAddr {
        let v6 = self.addr().is_ipv6();
        *addrs
            .iter()
            .find(|a| a.is_ipv6() == v6)
            .unwrap_or_else(|| panic!("none of {addrs:?} reachable from {}", self.addr()))
    }

    /// The next datagram with `flows` flows (templates included when the encoder says so).
    pub fn datagram(&mut self, flows: usize) -> (Vec<u8>, Vec<FlowRecord>) {
        let now = 1_800_000_000_000_000_000;
        let batch: Vec<FlowRecord> = (0..flows).map(|_| self.synth.flow(now)).collect();
        let mut buf = Vec::new();
        self.encoder.encode(&batch, now, &mut buf);
        (buf, batch)
    }

    pub fn send_datagram(&self, datagram: &[u8], to: SocketAddr) {
        self.socket
            .send_to(datagram, to)
            .unwrap_or_else(|e| panic!("send to {to}: {e}"));
    }

    /// Sends `datagrams` datagrams of `flows` flows each to `to`, keeping the flows in
    /// [`sent`](Self::sent).
    pub fn send(&mut self, to: SocketAddr, datagrams: usize, flows: usize) {
        for _ in 0..datagrams {
            let (datagram, batch) = self.datagram(flows);
            self.send_datagram(&datagram, to);
            self.sent.extend(batch);
            // Stay far below the receive buffer even on a loaded machine.
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// The fields every protocol carries unchanged, as they appear in the JSON.
pub fn key_of_json(v: &Value) -> String {
    format!(
        "{} {} {} {} {} {}",
        v["src_addr"], v["dst_addr"], v["src_port"], v["dst_port"], v["proto"], v["packets"]
    )
}

/// [`key_of_json`] of a record's JSON.
pub fn key_of_record(r: &FlowRecord) -> String {
    key_of_json(&serde_json::to_value(r).expect("a record serializes"))
}

/// The records of a JSON-lines file.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// How often each key occurs.
pub fn multiset(keys: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_default() += 1;
    }
    m
}

/// A loopback TCP address nothing listens on (now).
pub fn free_tcp_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}
