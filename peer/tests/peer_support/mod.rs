//! Shared by the end-to-end tests of the real `sluice-peer` binary (`e2e_peer`, `pb_protoc`,
//! `kafka_*`): the running peer with its log and metrics, flowgen exporters on loopback
//! addresses, and JSON helpers.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support module"
)]
// Helpers outside `#[test]` functions are test code too: a panic is the failure report.
#![expect(clippy::unwrap_used, reason = "test helpers panic on failure")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_peer::flowgen::{Encoder, EncoderConfig, FlowRecord, FlowSynth, Protocol};

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A running `sluice-peer`; killed on drop if the test did not stop it.
pub struct Peer {
    pub child: Child,
    pub listen: Vec<SocketAddr>,
    pub metrics: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    /// Starts `sluice-peer run ARGS --metrics 127.0.0.1:0` and waits for its ready line.
    pub fn start(args: &[&str]) -> Peer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-peer"))
            .arg("run")
            .args(args)
            .args(["--metrics", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice-peer");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(" ready ") {
                    let _ = ready_tx.send(line.clone());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let Ok(ready) = ready_rx.recv_timeout(TIMEOUT) else {
            let _ = child.kill();
            panic!("no ready line; log:\n{}", log.lock().unwrap().join("\n"));
        };
        let field = |name: &str| -> String {
            let start = ready.find(&format!("{name}=")).expect(name) + name.len() + 1;
            ready[start..].split(' ').next().unwrap().to_owned()
        };
        Peer {
            listen: field("listen")
                .split(',')
                .map(|a| a.parse().unwrap())
                .collect(),
            metrics: field("metrics").parse().unwrap(),
            child,
            log,
        }
    }

    pub fn metrics_text(&self) -> String {
        let mut stream = TcpStream::connect(self.metrics).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        text
    }

    /// The value of one sample, e.g. `sluice_peer_flows_total` or `name{label="x"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics_text();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
    }

    /// Polls until `sample` reaches `want`.
    pub fn wait_metric(&self, sample: &str, want: f64) {
        self.wait_for(&format!("{sample} >= {want}"), |p| p.metric(sample) >= want);
    }

    /// Polls `cond` until it holds.
    pub fn wait_for(&self, what: &str, cond: impl Fn(&Peer) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; metrics:\n{}\nlog:\n{}",
                self.metrics_text(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
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
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One exporter: a socket bound to its own loopback address and an encoder.
pub struct Exporter {
    pub socket: UdpSocket,
    pub encoder: Encoder,
    pub synth: FlowSynth,
    pub sent: Vec<FlowRecord>,
}

impl Exporter {
    pub fn new(addr: IpAddr, protocol: Protocol, seed: u64) -> Self {
        let cfg = EncoderConfig {
            agent_address: addr,
            template_every: 10,
            boot_time_ns: 1_700_000_000_000_000_000,
            ..EncoderConfig::default()
        };
        Exporter {
            socket: UdpSocket::bind(SocketAddr::new(addr, 0)).unwrap(),
            encoder: Encoder::new(protocol, cfg),
            synth: FlowSynth::new(seed, protocol),
            sent: Vec::new(),
        }
    }

    /// Sends `datagrams` datagrams of `flows` flows each to `to`.
    pub fn send(&mut self, to: SocketAddr, datagrams: usize, flows: usize) {
        let mut buf = Vec::new();
        let now = 1_800_000_000_000_000_000;
        for _ in 0..datagrams {
            let batch: Vec<FlowRecord> = (0..flows).map(|_| self.synth.flow(now)).collect();
            self.encoder.encode(&batch, now, &mut buf);
            self.socket.send_to(&buf, to).unwrap();
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

pub fn key_of_record(r: &FlowRecord) -> String {
    let v = serde_json::to_value(r).unwrap();
    key_of_json(&v)
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

pub fn multiset<'a>(keys: impl Iterator<Item = String> + 'a) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_default() += 1;
    }
    m
}

pub fn free_tcp_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
