//! tansu, the Kafka-protocol broker of the Kafka tests (`kafka_tansu`, `clickhouse_kafka`):
//! installed by `cargo xtask setup`, started on loopback with in-memory storage by each test and
//! killed when it ends. Needs the test crate's `oracle` module.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::oracle;
use sluice_peer::testing::{TIMEOUT, free_tcp_port};

/// `tansu` from PATH, else where `cargo install` put it (`$CARGO_HOME/bin`, `~/.cargo/bin`).
fn tansu() -> String {
    let installed = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|d| d.join("bin").join("tansu"))
        .filter(|p| p.exists());
    let on_path = Command::new("tansu").arg("--version").output().is_ok();
    match installed {
        Some(p) if !on_path => p.display().to_string(),
        _ => "tansu".to_owned(),
    }
}

/// Whether tansu runs; without it the test fails when `CI=true` and prints a skip otherwise.
pub fn tansu_available() -> bool {
    oracle::tools_available(&[(&tansu(), &["--version"])])
}

/// A tansu broker on `127.0.0.1:port`, advertising `advertised` (a proxy in front of it, or
/// itself); killed on drop.
pub struct Tansu {
    child: Child,
    pub addr: SocketAddr,
}

impl Tansu {
    pub fn start(advertised: Option<SocketAddr>) -> Tansu {
        let addr = free_tcp_port();
        let advertised = advertised.unwrap_or(addr);
        let child = Command::new(tansu())
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{addr}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{advertised}"))
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + TIMEOUT;
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu { child, addr }
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu())
            .args(["topic", "create", name])
            .arg("--broker")
            .arg(format!("tcp://{}", self.addr))
            .arg("--partitions")
            .arg(partitions.to_string())
            .output()
            .expect("run tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
