//! A hot-standby pair of Centrals in namespaces: both run the real `sluice-central run` with
//! the same `central.toml` (only `--ha-node` differs), XDP on their exporter-side interface;
//! real `sluice-peer`s register through the peers' virtual IP. Everything is removed on drop.
//!
//! ```text
//!                       [switch]
//!  [exp] xe0 ─── br0 (198.18.0.0/24, VIP .1) ─── ex0 [central a .2]  pp0 ─┐
//!                  └──────────────────────────── ex0 [central b .3]  pp0 ─┤
//!                                                                          br1 (198.18.2.0/24, VIP .1)
//!  [peer i] pe0 198.18.2.(10+i) ──────────────────────────────────────────┘
//!  [central a] ha0 198.18.1.1/30 ─── ha0 [central b] 198.18.1.2/30   (the HA link, alone)
//! ```
//!
//! "Host death" takes every link of a Central's namespace down: a killed process would leave
//! its pinned XDP program forwarding.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::de::DeserializeOwned;
use sluice_central::auth::{TokenKind, token_generate};
use sluice_common::protocol::{HaStatusView, PeerStatus, PeerView};

use super::{
    LabProcess, PORT,
    agents::{CONTROL_PORT, PeerAgent, parse_json, sluicectl},
    peer_name,
    traffic::{Arrivals, Payload, Sender},
};
use crate::{PinDir, netns::NetNs, run};

/// The exporters' virtual IP (Central's listener).
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The peers' virtual IP (their Central URL).
pub const PEER_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// The nodes' names, `a` (priority 200: active after a joint start) and `b`.
pub const NODES: [&str; 2] = ["a", "b"];
/// Port of each peer's `/metrics`.
pub const PEER_METRICS_PORT: u16 = 9100;
/// Heartbeat interval of the pair.
pub const HEARTBEAT_MS: u64 = 100;

/// The topology (see the module docs). Central `n` is node [`NODES`]`[n]`.
pub struct HaLab {
    /// Exporters (one veth, one address each).
    pub exporters: NetNs,
    /// The two Centrals' namespaces.
    pub centrals: Vec<NetNs>,
    /// Peer namespaces and their addresses.
    pub peers: Vec<(NetNs, Ipv4Addr)>,
    /// Exporter source addresses.
    pub exporter_addrs: Vec<Ipv4Addr>,
    /// Each Central's pin directory.
    pub pins: Vec<PinDir>,
    /// Config, credentials, tokens, state dirs (`node-a`, `node-b`).
    pub dir: PathBuf,
    /// `ha.takeover_timeout_ms`.
    pub takeover: Duration,
    /// The two bridges.
    pub switch: NetNs,
}

/// The interfaces of a Central's namespace.
const CENTRAL_LINKS: [&str; 3] = ["ex0", "pp0", "ha0"];

impl HaLab {
    /// Builds the namespaces and links, and writes the pair's `central.toml` with
    /// `takeover` as `ha.takeover_timeout_ms`.
    pub fn new(tag: &str, peers: usize, exporters: usize, takeover: Duration) -> Self {
        let switch = NetNs::new(&format!("{tag}sw"));
        // No STP, no forward delay: ports forward at once.
        switch.exec(
            "ip link add br0 type bridge stp_state 0 forward_delay 0 \
             && ip link add br1 type bridge stp_state 0 forward_delay 0 \
             && ip link set br0 up && ip link set br1 up",
        );
        let port = |ns: &NetNs, inner: &str, outer: &str, bridge: &str| {
            run(&format!(
                "ip link add {inner} netns {} type veth peer name {outer} netns {}",
                ns.name, switch.name
            ));
            switch.exec(&format!("ip link set {outer} master {bridge} up"));
        };
        let x = NetNs::new(&format!("{tag}x"));
        port(&x, "xe0", "sx", "br0");
        let exporter_addrs = super::exporters_on(&x, exporters);
        let centrals: Vec<NetNs> = NODES
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let c = NetNs::new(&format!("{tag}c{node}"));
                port(&c, "ex0", &format!("s{node}0"), "br0");
                port(&c, "pp0", &format!("s{node}1"), "br1");
                // The bridge floods unknown unicast to both Centrals, as a switch does (after a
                // host death it has forgotten the dead port's MACs). Checked by hand: the
                // standby's XDP program (skb mode) passes a flooded frame for the active's MAC
                // up, and the kernel drops it, so nothing is forwarded twice.
                let own = 2 + n as u8;
                c.exec(&format!(
                    "ip addr add 198.18.0.{own}/24 dev ex0 && ip addr add 198.18.2.{own}/24 dev pp0 \
                     && ip link set ex0 up && ip link set pp0 up"
                ));
                c
            })
            .collect();
        run(&format!(
            "ip link add ha0 netns {} type veth peer name ha0 netns {}",
            centrals[0].name, centrals[1].name
        ));
        for (n, c) in centrals.iter().enumerate() {
            c.exec(&format!(
                "ip addr add 198.18.1.{}/30 dev ha0 && ip link set ha0 up",
                n + 1
            ));
        }
        let ps = (0..peers)
            .map(|i| {
                let p = NetNs::new(&format!("{tag}p{i}"));
                port(&p, "pe0", &format!("sp{i}"), "br1");
                let addr = Ipv4Addr::new(198, 18, 2, 10 + i as u8);
                p.exec(&format!(
                    "ip addr add {addr}/24 dev pe0 && ip link set pe0 up"
                ));
                (p, addr)
            })
            .collect();
        let pins = NODES
            .iter()
            .map(|n| PinDir::new(&format!("ha-{tag}{n}")))
            .collect();
        let dir = std::env::temp_dir().join(format!("sluice-lab-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab dir");
        let lab = Self {
            exporters: x,
            centrals,
            peers: ps,
            exporter_addrs,
            pins,
            dir,
            takeover,
            switch,
        };
        lab.write_config();
        lab
    }

    /// The pair's shared `central.toml`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("central.toml")
    }

    /// The shared HA credential (`wrong`: another secret, for a node that must be refused).
    pub fn credential(&self, wrong: bool) -> PathBuf {
        self.dir.join(if wrong { "wrong-ha.key" } else { "ha.key" })
    }

    /// Node `n`'s state directory.
    pub fn state_dir(&self, n: usize) -> PathBuf {
        self.dir.join(format!("node-{}", NODES[n]))
    }

    fn write_config(&self) {
        std::fs::write(self.credential(false), "0123456789abcdef-sluice-ha-lab\n")
            .expect("credential");
        std::fs::write(self.credential(true), "fedcba9876543210-not-the-secret\n")
            .expect("credential");
        let config = format!(
            r#"[data_plane]
interfaces = ["ex0"]
xdp_mode = "skb"

[[listeners]]
address = "{VIP}"
ports = [{PORT}]
pool = "default"

[control]
listen = "0.0.0.0:{CONTROL_PORT}"

# No rebalancing within a run: an exporter that changes peers is then a takeover's doing.
[balancer]
rebalance_interval_s = 86400

[ha]
credential_file = "{cred}"
interface = "ex0"
vips = ["{VIP}/24", "{PEER_VIP}/24@pp0"]
heartbeat_interval_ms = {HEARTBEAT_MS}
takeover_timeout_ms = {takeover}

[[ha.nodes]]
name = "a"
address = "198.18.1.1:{CONTROL_PORT}"
priority = 200

[[ha.nodes]]
name = "b"
address = "198.18.1.2:{CONTROL_PORT}"
priority = 100
"#,
            cred = self.credential(false).display(),
            takeover = self.takeover.as_millis(),
        );
        std::fs::write(self.config(), config).expect("central.toml");
    }

    /// `sluice-central run --config central.toml --ha-node NODE` in node `n`'s namespace, with
    /// its own state and pin directories, and `extra` arguments.
    pub fn central_command(&self, n: usize, extra: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.centrals[n].name))
            .arg(crate::bin("sluice-central"))
            .arg("run")
            .arg("--config")
            .arg(self.config())
            .args(["--ha-node", NODES[n]])
            .arg("--state-dir")
            .arg(self.state_dir(n))
            .arg("--pin-dir")
            .arg(self.pins[n].path())
            .args(extra);
        cmd
    }

    /// Starts node `n` and waits for its ready line.
    pub fn start_central(&self, n: usize, extra: &[&str]) -> LabProcess {
        let mut cmd = self.central_command(n, extra);
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
        LabProcess::spawn_logged(
            cmd,
            &format!("sluice-central {}", NODES[n]),
            Some("sluice-central ready"),
        )
    }

    /// Token file (`admin`: for `sluicectl`).
    pub fn token_file(&self, admin: bool) -> PathBuf {
        self.dir
            .join(if admin { "admin.token" } else { "peer.token" })
    }

    /// The control API certificate node `a` generates on its first start; the pair shares it
    /// (mirrored), so peers and `sluicectl` pin it on both nodes.
    pub fn ca_cert(&self) -> PathBuf {
        self.state_dir(0).join(sluice_central::api::tls::CERT_FILE)
    }

    /// Issues the peer and admin tokens into node `a`'s state dir (it mirrors them to `b`).
    pub fn generate_tokens(&self) {
        let dir = self.state_dir(0);
        std::fs::create_dir_all(&dir).expect("state dir");
        for (admin, kind) in [(false, TokenKind::Peer), (true, TokenKind::Admin)] {
            let issued =
                token_generate(&dir, kind, None, std::time::SystemTime::now()).expect("token");
            std::fs::write(self.token_file(admin), issued.token).expect("token file");
        }
    }

    /// `sluicectl --json ARGS` on node `n` (its own control API, in its namespace).
    pub fn sluicectl_raw(&self, n: usize, args: &[&str]) -> Result<Vec<u8>, String> {
        sluicectl(
            &self.centrals[n],
            &self.ca_cert(),
            &self.token_file(true),
            args,
        )
    }

    /// [`HaLab::sluicectl_raw`], parsed; panics when it fails.
    pub fn sluicectl<T: DeserializeOwned>(&self, n: usize, args: &[&str]) -> T {
        parse_json(args, self.sluicectl_raw(n, args))
    }

    /// `sluicectl ha status` on node `n`, or why it failed.
    pub fn ha_status(&self, n: usize) -> Result<HaStatusView, String> {
        let out = self.sluicectl_raw(n, &["ha", "status"])?;
        serde_json::from_slice(&out).map_err(|e| e.to_string())
    }

    /// Waits until `ok` holds for node `n`'s HA status; the error shows the last status.
    pub fn wait_ha(
        &self,
        n: usize,
        timeout: Duration,
        ok: impl Fn(&HaStatusView) -> bool,
    ) -> Result<HaStatusView, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.ha_status(n);
            if let Ok(s) = &status
                && ok(s)
            {
                return Ok(s.clone());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {}: not as expected after {timeout:?}: {status:?}",
                    NODES[n]
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Tokens, node `a` (waited for until active), node `b` with `b_extra` arguments (waited
    /// for until it is the standby, linked and synchronised unless `b_extra` is not empty).
    pub fn start_pair(&self, b_extra: &[&str]) -> (LabProcess, LabProcess) {
        self.generate_tokens();
        let a = self.start_central(0, &[]);
        if let Err(e) = self.wait_ha(0, Duration::from_secs(10), |s| s.role == "active") {
            panic!("{e}\n{}", a.log_text());
        }
        let b = self.start_central(1, b_extra);
        if b_extra.is_empty()
            && let Err(e) = self.wait_ha(1, Duration::from_secs(10), |s| {
                s.role == "standby" && s.link_up && s.mirror_synced
            })
        {
            panic!("{e}\na:\n{}\nb:\n{}", a.log_text(), b.log_text());
        }
        (a, b)
    }

    /// Starts `sluice-peer` `i` registering at `https://PEER_VIP:8443`, `/metrics` on its
    /// address.
    pub fn start_peer(&self, i: usize) -> LabProcess {
        let (ns, addr) = &self.peers[i];
        PeerAgent {
            ns,
            name: peer_name(i),
            addr: *addr,
            central: format!("https://{PEER_VIP}:{CONTROL_PORT}"),
            dir: &self.dir,
            token_file: self.token_file(false),
            ca_cert: self.ca_cert(),
            metrics: Some(SocketAddr::new((*addr).into(), PEER_METRICS_PORT)),
        }
        .spawn()
    }

    /// Starts every peer and waits until node `n` lists them all ONLINE.
    pub fn start_peers(&self, n: usize) -> Vec<LabProcess> {
        let agents: Vec<LabProcess> = (0..self.peers.len()).map(|i| self.start_peer(i)).collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let peers: Vec<PeerView> = self.sluicectl(n, &["peers", "list"]);
            let online = |i: usize| {
                peers
                    .iter()
                    .any(|p| p.name == peer_name(i) && p.status == PeerStatus::Online)
            };
            if (0..self.peers.len()).all(online) {
                return agents;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = agents.iter().map(LabProcess::log_text).collect();
                panic!("peers not ONLINE: {peers:?}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One socket per exporter, bound to its address in the exporters' namespace.
    pub fn exporter_sockets(&self) -> Vec<UdpSocket> {
        self.exporters.enter(|| {
            self.exporter_addrs
                .iter()
                .map(|a| UdpSocket::bind(SocketAddr::new((*a).into(), 0)).expect("bind exporter"))
                .collect()
        })
    }

    /// NetFlow v9 (templates in each exporter's first datagram only) from every exporter to
    /// the exporters' virtual IP, `rate` datagrams/s each.
    pub fn start_v9(&self, rate: u32) -> Sender {
        Sender::start_on(
            self.exporter_sockets(),
            SocketAddr::new(VIP.into(), PORT),
            &vec![rate; self.exporter_addrs.len()],
            Payload::V9TemplatesOnce,
        )
    }

    /// The virtual IPs (of both) present in node `n`'s namespace (`ip -j addr`).
    pub fn vips_held(&self, n: usize) -> Vec<Ipv4Addr> {
        let out = self.centrals[n].exec("ip -j -4 addr show");
        let links: serde_json::Value = serde_json::from_str(&out).expect("ip -j addr");
        links
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["local"].as_str().and_then(|s| s.parse().ok()))
            .filter(|a| *a == VIP || *a == PEER_VIP)
            .collect()
    }

    /// Host death of node `n`: every link of its namespace down (`up`: back again).
    pub fn set_links(&self, n: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        let cmds: Vec<String> = CENTRAL_LINKS
            .iter()
            .map(|l| format!("ip link set {l} {state}"))
            .collect();
        self.centrals[n].exec(&cmds.join(" && "));
    }

    /// Cuts (or restores) the HA link alone: both Centrals stay on both segments.
    pub fn set_ha_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        self.centrals[0].exec(&format!("ip link set ha0 {state}"));
    }

    /// MAC of node `n`'s peer-side interface: the source MAC of what it forwards.
    pub fn forwarding_mac(&self, n: usize) -> [u8; 6] {
        self.centrals[n].enter(|| crate::netns::mac("pp0"))
    }

    /// Value of the metric line `name` (summed over its label sets) on peer `i`'s `/metrics`.
    pub fn peer_metric(&self, i: usize, name: &str) -> f64 {
        let (ns, addr) = &self.peers[i];
        let body = ns.enter(|| http_get(SocketAddr::new((*addr).into(), PEER_METRICS_PORT)));
        metric(&body, name)
    }
}

/// A pair under load ([`HaLab::start_loaded`]); dropped in this order (the load first).
pub struct Loaded {
    /// The exporters' NetFlow v9.
    pub sender: Sender,
    /// Taps on every peer link.
    pub arrivals: Arrivals,
    /// The `sluice-peer`s.
    pub peers: Vec<LabProcess>,
    /// Node `a` (active at the start).
    pub a: LabProcess,
    /// Node `b` (its standby).
    pub b: LabProcess,
}

impl Loaded {
    /// Both nodes' logs.
    pub fn logs(&self) -> String {
        format!("a:\n{}\nb:\n{}", self.a.log_text(), self.b.log_text())
    }
}

/// What arrived between two [`HaLab::quiesce`] calls.
pub struct Window {
    /// Datagrams sent by each exporter since the sender started.
    pub sent: Vec<u64>,
    /// Datagrams of each exporter that arrived at any peer in the window.
    pub arrived: BTreeMap<Ipv4Addr, u64>,
    /// Per peer: the exporters seen there in the window.
    pub at: Vec<Vec<Ipv4Addr>>,
}

impl Window {
    /// Datagrams sent between `before` and this window's end that did not arrive.
    pub fn lost_since(&self, before: &Window) -> u64 {
        self.sent_since(before)
            .saturating_sub(self.arrived.values().sum())
    }

    /// Datagrams sent between `before` and this window's end.
    pub fn sent_since(&self, before: &Window) -> u64 {
        self.sent.iter().sum::<u64>() - before.sent.iter().sum::<u64>()
    }

    /// Per exporter seen at exactly one peer: that peer.
    pub fn owners(&self) -> BTreeMap<Ipv4Addr, usize> {
        let mut count: BTreeMap<Ipv4Addr, Vec<usize>> = BTreeMap::new();
        for (p, seen) in self.at.iter().enumerate() {
            for e in seen {
                count.entry(*e).or_default().push(p);
            }
        }
        count
            .into_iter()
            .filter(|(_, ps)| ps.len() == 1)
            .map(|(e, ps)| (e, ps[0]))
            .collect()
    }

    /// Exporters that reached a peer other than their `owners` one in this window.
    pub fn strays(&self, owners: &BTreeMap<Ipv4Addr, usize>) -> Vec<String> {
        let mut out = Vec::new();
        for (p, seen) in self.at.iter().enumerate() {
            for e in seen {
                match owners.get(e) {
                    Some(&o) if o == p => {}
                    o => out.push(format!(
                        "{e} reached peer {} (its peer: {})",
                        peer_name(p),
                        o.map_or("none".into(), |&o| peer_name(o))
                    )),
                }
            }
        }
        out
    }
}

/// What a host death did to the traffic.
#[derive(Clone, Debug)]
pub struct Death {
    /// Links down → the first datagram the survivor forwarded.
    pub forwarded_after: Duration,
    /// The last datagram through the victim → the first through the survivor, at the peers.
    pub gap: Option<Duration>,
    /// Datagrams sent from just before the death to the end of the settling time.
    pub sent: u64,
    /// Of those, the ones that never arrived.
    pub lost: u64,
    /// Exporters that reached another peer than before the death.
    pub reassigned: Vec<String>,
}

impl HaLab {
    /// The pair ([`HaLab::start_pair`]), every peer registered with `a`, taps on the peer
    /// links, and NetFlow v9 from every exporter at `rate` datagrams/s each.
    pub fn start_loaded(&self, rate: u32) -> Loaded {
        let (a, b) = self.start_pair(&[]);
        let peers = self.start_peers(0);
        let links: Vec<&NetNs> = self.peers.iter().map(|(ns, _)| ns).collect();
        let arrivals = Arrivals::start_on(&links);
        Loaded {
            sender: self.start_v9(rate),
            arrivals,
            peers,
            a,
            b,
        }
    }

    /// Pauses `sender` until what was in flight has arrived; what was sent so far and what
    /// arrived since the last call (or since `arrivals` started).
    pub fn quiesce(sender: &Sender, arrivals: &Arrivals) -> Window {
        sender.pause(true);
        std::thread::sleep(Duration::from_millis(100));
        let sent = sender.sent();
        let seen = arrivals.take();
        sender.pause(false);
        Window {
            sent,
            arrived: Arrivals::totals(&seen),
            at: seen.iter().map(|m| m.keys().copied().collect()).collect(),
        }
    }

    /// Host death of node `victim` under `sender`'s load, watched by `arrivals` on every peer
    /// link: its links go down; measured until the other node forwards, then for `settle`.
    /// The victim's links stay down.
    pub fn host_death(
        &self,
        victim: usize,
        sender: &Sender,
        arrivals: &Arrivals,
        settle: Duration,
    ) -> Result<Death, String> {
        let (victim_mac, survivor_mac) =
            (self.forwarding_mac(victim), self.forwarding_mac(1 - victim));
        Self::quiesce(sender, arrivals);
        std::thread::sleep(Duration::from_millis(500));
        let start = Self::quiesce(sender, arrivals);
        let owners = start.owners();
        std::thread::sleep(Duration::from_millis(300));
        let died = Instant::now();
        self.set_links(victim, false);
        let first = loop {
            if let Some(s) = arrivals.via().get(&survivor_mac) {
                break s.first;
            }
            if died.elapsed() > Duration::from_secs(15) {
                return Err(format!(
                    "node {} never forwarded after node {}'s host death",
                    NODES[1 - victim],
                    NODES[victim]
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let gap = arrivals
            .via()
            .get(&victim_mac)
            .map(|s| first.saturating_duration_since(s.last));
        std::thread::sleep(settle);
        let end = Self::quiesce(sender, arrivals);
        Ok(Death {
            forwarded_after: first.duration_since(died),
            gap,
            sent: end.sent_since(&start),
            lost: end.lost_since(&start),
            reassigned: end.strays(&owners),
        })
    }

    /// `sluice_peer_template_misses_total` over every peer.
    pub fn template_misses(&self) -> f64 {
        (0..self.peers.len())
            .map(|i| self.peer_metric(i, "sluice_peer_template_misses_total"))
            .sum()
    }
}

impl Drop for HaLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /metrics` over plain HTTP/1.0: the body.
fn http_get(addr: SocketAddr) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(text)
}

/// The sum of every sample of `name` in a Prometheus text body.
pub fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let base = key.split('{').next()?;
            (base == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
