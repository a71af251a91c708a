//! Shared by the `central_*` tests: an in-process Central control API (the real controller on
//! the in-memory data plane, from `sluice-central`'s own API test support) and the real
//! `sluice-peer` binary in peer mode.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support module"
)]
// Helpers outside `#[test]` functions are test code too: a panic is the failure report.
#![expect(clippy::unwrap_used, reason = "test helpers panic on failure")]

#[path = "../../../central-user/tests/api_support/mod.rs"]
pub mod api_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use api_support::Server;
use sluice_common::protocol::PeerView;
use sluice_peer::flowgen::{Encoder, EncoderConfig, FlowRecord, FlowSynth, Protocol};

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A multi-threaded runtime for the Central under test; the test body stays synchronous.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Central's view of the peer `name`, if it registered.
pub fn peer_view(server: &Server, name: &str) -> Option<PeerView> {
    let controller = server.live.as_ref().expect("a live server");
    let c = controller.lock().unwrap();
    c.peer_views(Instant::now(), SystemTime::now())
        .into_iter()
        .find(|p| p.name == name)
}

/// Polls `cond` every 50 ms until it holds; panics with `what` (and `context()`) otherwise.
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

/// Writes a token file and a `peer.toml` with a `[central]` section for `server`.
pub fn peer_config(
    dir: &Path,
    name: &str,
    server: &Server,
    token: &str,
    central_extra: &str,
    rest: &str,
) -> PathBuf {
    let token_file = dir.join(format!("{name}.token"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n\
         {rest}\n\
         [central]\n\
         url = \"{url}\"\n\
         token_file = \"{token_file}\"\n\
         fingerprint = \"{fingerprint}\"\n\
         {central_extra}\n\
         [ingest]\n\
         listen = [\"127.0.0.1:0\"]\n\
         [pipeline]\n\
         shards = 2\n",
        url = server.url,
        token_file = token_file.display(),
        fingerprint = server.fingerprint,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `sluice-peer`; killed on drop if the test did not stop it.
pub struct PeerProcess {
    child: Child,
    pub listen: SocketAddr,
    pub metrics: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl PeerProcess {
    /// `sluice-peer run --config CONFIG --metrics 127.0.0.1:0`, once it logged `ready`.
    pub fn start(config: &Path) -> PeerProcess {
        Self::start_with_args(&["--config", config.to_str().unwrap()])
    }

    /// `sluice-peer run ARGS --metrics 127.0.0.1:0`, once it logged `ready`.
    pub fn start_with_args(args: &[&str]) -> PeerProcess {
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
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut peer = PeerProcess {
            child,
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            metrics: SocketAddr::from(([0, 0, 0, 0], 0)),
            log,
        };
        let ready = peer.wait_log(" ready ");
        let field = |name: &str| -> SocketAddr {
            let start = ready.find(&format!("{name}=")).expect(name) + name.len() + 1;
            ready[start..]
                .split([' ', ','])
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        peer.listen = field("listen");
        peer.metrics = field("metrics");
        peer
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The first log line containing `needle`, once there is one.
    pub fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
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

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The value of one sample of `/metrics`, e.g. `sluice_peer_flows_total`.
    pub fn metric(&self, sample: &str) -> f64 {
        let mut stream = TcpStream::connect(self.metrics).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
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

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `sluice-peer COMMAND --config CONFIG` to its exit: (status, stdout, stderr).
pub fn run_to_exit(command: &str, config: &Path) -> (ExitStatus, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-peer"))
        .args([command, "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .output()
        .expect("run sluice-peer");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One exporter on its own loopback address.
pub struct Exporter {
    pub socket: UdpSocket,
    encoder: Encoder,
    synth: FlowSynth,
}

impl Exporter {
    pub fn new(addr: IpAddr, protocol: Protocol, cfg: EncoderConfig) -> Self {
        Exporter {
            socket: UdpSocket::bind(SocketAddr::new(addr, 0)).unwrap(),
            encoder: Encoder::new(protocol, cfg),
            synth: FlowSynth::new(u64::from(addr.is_ipv4()) + 7, protocol),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.socket.local_addr().unwrap().ip()
    }

    /// The next datagram with `flows` flows (templates included when the encoder says so).
    pub fn datagram(&mut self, flows: usize) -> (Vec<u8>, Vec<FlowRecord>) {
        let now = 1_800_000_000_000_000_000;
        let batch: Vec<FlowRecord> = (0..flows).map(|_| self.synth.flow(now)).collect();
        let mut buf = Vec::new();
        self.encoder.encode(&batch, now, &mut buf);
        (buf, batch)
    }

    pub fn send(&self, datagram: &[u8], to: SocketAddr) {
        self.socket.send_to(datagram, to).unwrap();
    }
}
