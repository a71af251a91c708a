//! The control plane in the lab: access tokens, `sluice-peer`s that register with Central over
//! TLS (peer mode, a `[central]` section) and `sluicectl`. Central runs without static peers
//! ([`Lab::start_central_without_peers`]); peer `i` reaches its control API at the Central side
//! of its link, `198.18.(2+i).1`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant, SystemTime},
};

use serde::de::DeserializeOwned;
use sluice_central::{
    api::tls::CERT_FILE,
    auth::{TokenKind, token_generate},
};
use sluice_common::protocol::{ExporterView, PeerStatus, PeerView};

use super::{Lab, LabProcess, PORT, peer_name};
use crate::{bin, netns::NetNs};

/// Central's control API port (the default of `[control] listen`).
pub const CONTROL_PORT: u16 = 8443;

impl Lab {
    /// File holding the peer access token (`admin`: the `sluicectl` token).
    pub fn token_file(&self, admin: bool) -> PathBuf {
        self.state_dir
            .join(if admin { "admin.token" } else { "peer.token" })
    }

    /// Central's self-signed certificate (generated on its first start), pinned by the peers
    /// and `sluicectl`.
    pub fn ca_cert(&self) -> PathBuf {
        self.state_dir.join(CERT_FILE)
    }

    /// Issues a peer and an admin token into the state dir, as `sluice-central token generate
    /// [--admin]` does, and writes them to [`Lab::token_file`]. Call before Central starts.
    pub fn generate_tokens(&self) {
        std::fs::create_dir_all(&self.state_dir).expect("state dir");
        for admin in [false, true] {
            let kind = if admin {
                TokenKind::Admin
            } else {
                TokenKind::Peer
            };
            let issued =
                token_generate(&self.state_dir, kind, None, SystemTime::now()).expect("token");
            std::fs::write(self.token_file(admin), issued.token).expect("token file");
        }
    }

    /// Starts `sluice-peer` in peer `i`'s namespace as a Peer of this lab's Central: it receives
    /// on its address and the lab port, decodes without outputs, and registers over TLS with
    /// the peer token and Central's certificate pinned. Killed by its pid on drop.
    pub fn start_peer_agent(&self, i: usize) -> LabProcess {
        let (ns, addr) = &self.peers[i];
        let [a, b, c, _] = addr.octets();
        PeerAgent {
            ns,
            name: peer_name(i),
            addr: *addr,
            central: format!("https://{}:{CONTROL_PORT}", Ipv4Addr::new(a, b, c, 1)),
            dir: &self.state_dir,
            token_file: self.token_file(false),
            ca_cert: self.ca_cert(),
            metrics: None,
        }
        .spawn()
    }

    /// `sluicectl --json ARGS` in Central's namespace with the admin token, its output parsed.
    /// Panics with `sluicectl`'s error line when it fails.
    pub fn sluicectl<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        parse_json(
            args,
            sluicectl(&self.central, &self.ca_cert(), &self.token_file(true), args),
        )
    }

    /// Central's Connected Peers table.
    pub fn peers_list(&self) -> Vec<PeerView> {
        self.sluicectl(&["peers", "list"])
    }

    /// Each exporter Central knows and the peer it is assigned to.
    pub fn assignments(&self) -> BTreeMap<IpAddr, Option<String>> {
        self.sluicectl::<Vec<ExporterView>>(&["exporters", "list"])
            .into_iter()
            .map(|e| (e.address, e.peer))
            .collect()
    }

    /// Waits until Central lists every lab peer ONLINE; the error shows the table.
    pub fn wait_peers_online(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let peers = self.peers_list();
            let online = |i: usize| {
                peers
                    .iter()
                    .any(|p| p.name == peer_name(i) && p.status == PeerStatus::Online)
            };
            if (0..self.peers.len()).all(online) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("peers not ONLINE after {timeout:?}: {peers:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until Central has assigned each of the first `n` exporters to a lab peer;
    /// returns the peer index of each.
    pub fn wait_assigned(&self, n: usize, timeout: Duration) -> Vec<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let assigned = self.assignments();
            let peer_of = |e: &Ipv4Addr| {
                let name = assigned.get(&IpAddr::V4(*e))?.as_ref()?;
                (0..self.peers.len()).find(|&i| peer_name(i) == *name)
            };
            let found: Option<Vec<usize>> = self.exporter_addrs[..n].iter().map(peer_of).collect();
            if let Some(found) = found {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "exporters not assigned after {timeout:?}: {assigned:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Of the peers in `assigned` (peer index per exporter, as [`Lab::wait_assigned`] returns
    /// it): the one holding the most exporters (the first on a tie), and their addresses.
    pub fn busiest_peer(&self, assigned: &[usize]) -> (usize, Vec<Ipv4Addr>) {
        let held = |p: usize| assigned.iter().filter(|&&q| q == p).count();
        let busiest = (0..self.peers.len())
            .rev()
            .max_by_key(|&p| held(p))
            .unwrap_or(0);
        let exporters = assigned
            .iter()
            .zip(&self.exporter_addrs)
            .filter(|&(&p, _)| p == busiest)
            .map(|(_, a)| *a)
            .collect();
        (busiest, exporters)
    }

    /// Tokens, Central without static peers (with `extra` arguments) and a registered
    /// `sluice-peer` in every peer namespace, all ONLINE.
    pub fn start_control_plane(&self, extra: &[&str]) -> (LabProcess, Vec<LabProcess>) {
        self.generate_tokens();
        let central = self.start_central_without_peers(extra);
        // The control API writes its certificate after the data plane is ready.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ca_cert().exists() {
            assert!(
                Instant::now() < deadline,
                "no {} after 10 s:\n{}",
                self.ca_cert().display(),
                central.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let agents: Vec<LabProcess> = (0..self.peers.len())
            .map(|i| self.start_peer_agent(i))
            .collect();
        if let Err(e) = self.wait_peers_online(Duration::from_secs(15)) {
            let logs: Vec<String> = agents.iter().map(LabProcess::log_text).collect();
            panic!(
                "{e}\ncentral:\n{}\npeers:\n{}",
                central.log_text(),
                logs.join("\n")
            );
        }
        (central, agents)
    }
}

/// A `sluice-peer` in peer mode (a `[central]` section) in its own namespace.
pub struct PeerAgent<'a> {
    /// Its namespace (the data arrives on its address there).
    pub ns: &'a NetNs,
    /// Its name.
    pub name: String,
    /// The address it receives datagrams on, at the lab port.
    pub addr: Ipv4Addr,
    /// Central's control API URL.
    pub central: String,
    /// Where its config file goes.
    pub dir: &'a Path,
    /// The peer access token.
    pub token_file: PathBuf,
    /// Central's certificate, pinned.
    pub ca_cert: PathBuf,
    /// Where it serves `/metrics` (plain HTTP), if anywhere.
    pub metrics: Option<SocketAddr>,
}

impl PeerAgent<'_> {
    /// Writes its config and starts it: it decodes without outputs, one shard. Killed by its
    /// pid on drop.
    pub fn spawn(&self) -> LabProcess {
        let name = &self.name;
        let config = self.dir.join(format!("peer-{name}.toml"));
        let metrics = self
            .metrics
            .map(|m| format!("\n[metrics]\nlisten = \"{m}\"\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                r#"name = "{name}"
outputs = []

[central]
url = "{url}"
token_file = "{token}"
ca_cert = "{cert}"

[ingest]
listen = ["{addr}:{PORT}"]

[pipeline]
shards = 1
{metrics}"#,
                url = self.central,
                addr = self.addr,
                token = self.token_file.display(),
                cert = self.ca_cert.display(),
            ),
        )
        .expect("peer config");
        let mut cmd = self
            .ns
            .command(bin("sluice-peer").to_str().expect("utf-8 path"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        LabProcess::spawn_logged(cmd, &format!("sluice-peer {name}"), None)
    }
}

/// `sluicectl --json ARGS` in `ns` against the control API on its loopback, with `ca_cert`
/// pinned and the admin token in `token_file`: its stdout, or its error line.
pub fn sluicectl(
    ns: &NetNs,
    ca_cert: &Path,
    token_file: &Path,
    args: &[&str],
) -> Result<Vec<u8>, String> {
    let out = ns
        .command(bin("sluicectl").to_str().expect("utf-8 path"))
        .args([
            "--json",
            "--central",
            &format!("https://127.0.0.1:{CONTROL_PORT}"),
        ])
        .arg("--ca-cert")
        .arg(ca_cert)
        .arg("--token-file")
        .arg(token_file)
        .args(args)
        .output()
        .expect("spawn sluicectl");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// [`sluicectl`]'s output parsed; panics with its error line or the unparsable output.
pub fn parse_json<T: DeserializeOwned>(args: &[&str], out: Result<Vec<u8>, String>) -> T {
    let out = out.unwrap_or_else(|e| panic!("sluicectl {}: {e}", args.join(" ")));
    serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "sluicectl {}: {e}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out)
        )
    })
}
