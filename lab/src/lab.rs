//! A self-contained lab of network namespaces: exporters → Central (XDP on veth) → peers.
//! Used by the end-to-end tests, `cargo xtask demo` and `cargo xtask bench`. Everything is
//! removed on drop (namespaces take their veths with them).
//!
//! ```text
//!  [exp] xe0 198.18.0.10..  ──  ce0 198.18.0.1 [central] cp<i> 198.18.(2+i).1 ── pe0 198.18.(2+i).2 [peer i]
//! ```

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use crate::{PinDir, netns::NetNs, run};

pub mod agents;
pub mod ha;
pub mod traffic;

/// Listener port used by the lab.
pub const PORT: u16 = 2055;

/// The topology.
pub struct Lab {
    /// Namespace of the exporters (one veth, one address per exporter).
    pub exporters: NetNs,
    /// Central's namespace.
    pub central: NetNs,
    /// Peer namespaces and their addresses.
    pub peers: Vec<(NetNs, Ipv4Addr)>,
    /// Exporter source addresses.
    pub exporter_addrs: Vec<Ipv4Addr>,
    /// Pin directory for this lab's Central.
    pub pins: PinDir,
    /// State directory for this lab's Central.
    pub state_dir: PathBuf,
}

/// Central's listener address.
pub const LISTENER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

impl Lab {
    /// Builds the namespaces and links.
    pub fn new(tag: &str, peers: usize, exporters: usize) -> Self {
        let x = NetNs::new(&format!("{tag}x"));
        let c = NetNs::new(&format!("{tag}c"));
        run(&format!(
            "ip link add xe0 netns {} type veth peer name ce0 netns {}",
            x.name, c.name
        ));
        let exporter_addrs = exporters_on(&x, exporters);
        x.exec("ip route add default via 198.18.0.1");
        c.exec("ip addr add 198.18.0.1/24 dev ce0 && ip link set ce0 up");
        let mut ps = Vec::new();
        for i in 0..peers {
            let p = NetNs::new(&format!("{tag}p{i}"));
            let net = 2 + i as u8;
            run(&format!(
                "ip link add cp{i} netns {} type veth peer name pe0 netns {}",
                c.name, p.name
            ));
            c.exec(&format!(
                "ip addr add 198.18.{net}.1/24 dev cp{i} && ip link set cp{i} up"
            ));
            p.exec(&format!(
                "ip addr add 198.18.{net}.2/24 dev pe0 && ip link set pe0 up"
            ));
            // A native-mode XDP redirect into a veth is dropped unless the receiving end has
            // GRO on (or an XDP program of its own).
            p.exec("ethtool -K pe0 gro on >/dev/null");
            p.exec(&format!("ip route add default via 198.18.{net}.1"));
            ps.push((p, Ipv4Addr::new(198, 18, net, 2)));
        }
        let pins = PinDir::new(&format!("lab-{tag}"));
        let state_dir =
            std::env::temp_dir().join(format!("sluice-lab-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state_dir);
        Self {
            exporters: x,
            central: c,
            peers: ps,
            exporter_addrs,
            pins,
            state_dir,
        }
    }

    /// `sluice-central run` inside Central's namespace (net namespace only: bpffs stays the
    /// host's, so pins survive restarts), with the lab's listener and peers.
    pub fn central_command(&self, extra: &[&str]) -> Command {
        let mut cmd = self.central_command_without_peers(extra);
        for (i, (_, addr)) in self.peers.iter().enumerate() {
            cmd.args(["--peer", &format!("{}={addr}:{PORT}", peer_name(i))]);
        }
        cmd
    }

    /// [`Lab::central_command`] without static peers: peers register over the control API
    /// (see [`Lab::start_peer_agent`]).
    pub fn central_command_without_peers(&self, extra: &[&str]) -> Command {
        let mut cmd = self.central_binary();
        cmd.args([
            "run",
            "--iface",
            "ce0",
            "--listen",
            &format!("{LISTENER}:{PORT}"),
        ]);
        cmd.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--pin-dir")
            .arg(self.pins.path());
        cmd.args(extra);
        cmd
    }

    /// The bare `sluice-central` binary in Central's namespace (no arguments yet).
    pub fn central_binary(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.central.name))
            .arg(crate::bin("sluice-central"));
        cmd
    }

    /// Starts Central and waits for its ready line.
    pub fn start_central(&self, extra: &[&str]) -> CentralProcess {
        Self::spawn_central(self.central_command(extra))
    }

    /// Starts Central without static peers and waits for its ready line.
    pub fn start_central_without_peers(&self, extra: &[&str]) -> CentralProcess {
        Self::spawn_central(self.central_command_without_peers(extra))
    }

    fn spawn_central(mut cmd: Command) -> CentralProcess {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
        CentralProcess::spawn(cmd)
    }

    /// A UDP socket bound in peer `i`'s namespace on the lab port.
    pub fn peer_socket(&self, i: usize) -> UdpSocket {
        let (ns, addr) = &self.peers[i];
        ns.enter(|| {
            let s =
                UdpSocket::bind(SocketAddr::new((*addr).into(), PORT)).expect("bind peer socket");
            crate::force_rcvbuf(&s, 16 << 20);
            s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                .expect("timeout");
            s
        })
    }

    /// A UDP socket in the exporter namespace bound to exporter `i`'s address.
    pub fn exporter_socket(&self, i: usize) -> UdpSocket {
        let a = self.exporter_addrs[i];
        self.exporters
            .enter(|| UdpSocket::bind(SocketAddr::new(a.into(), 0)).expect("bind exporter socket"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// Gives `xe0` in `x` the addresses of `n` exporters, `198.18.0.10` on (a /24), and brings
/// it up with checksum offload off: partial checksums on the sending veth would be forwarded
/// as-is by a native-mode redirect (real NIC ingress always carries full checksums).
pub fn exporters_on(x: &NetNs, n: usize) -> Vec<Ipv4Addr> {
    let addrs: Vec<Ipv4Addr> = (0..n)
        .map(|i| Ipv4Addr::new(198, 18, 0, 10 + i as u8))
        .collect();
    for a in &addrs {
        x.exec(&format!("ip addr add {a}/24 dev xe0"));
    }
    x.exec("ip link set xe0 up && ethtool -K xe0 tx off >/dev/null");
    addrs
}

/// Name of peer `i` in the lab (`a`, `b`, …).
pub fn peer_name(i: usize) -> String {
    char::from(b'a' + i as u8).to_string()
}

/// A running lab daemon (`sluice-central`, `sluice-peer`), killed (by its pid) on drop.
pub struct LabProcess {
    /// The child.
    pub child: Child,
    /// Lines of stderr read so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The `sluice-central` a lab runs.
pub type CentralProcess = LabProcess;

impl LabProcess {
    /// Spawns `sluice-central` and waits up to 30 s for the ready line (panics with the log
    /// otherwise).
    pub fn spawn(cmd: Command) -> Self {
        Self::spawn_logged(cmd, "sluice-central", Some("sluice-central ready"))
    }

    /// Spawns `name` with stderr piped into the log; with `ready`, waits up to 30 s for a line
    /// containing it (panics with the log otherwise).
    pub fn spawn_logged(mut cmd: Command, name: &str, ready: Option<&str>) -> Self {
        use std::io::BufRead as _;
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = log.clone();
        let (marker, prefix) = (ready.map(str::to_owned), name.to_owned());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if marker.as_ref().is_some_and(|m| line.contains(m.as_str())) {
                    let _ = tx.send(());
                }
                if std::env::var_os("SLUICE_TEST_VERBOSE").is_some() {
                    eprintln!("{prefix}: {line}");
                }
                l.lock().map(|mut v| v.push(line)).ok();
            }
        });
        let mut p = Self { child, log };
        if ready.is_some() && rx.recv_timeout(std::time::Duration::from_secs(30)).is_err() {
            let status = p.child.try_wait().ok().flatten();
            panic!("{name} not ready (exit {status:?}):\n{}", p.log_text());
        }
        p
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait")
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
