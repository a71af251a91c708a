//! Peer mode end to end: the real `sluice-peer` binary against an in-process Central (TLS
//! control API, real controller, in-memory data plane) on loopback.
// Helpers outside `#[test]` functions are test code too: a panic is the failure report.
#![expect(clippy::unwrap_used, reason = "test helpers panic on failure")]

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_central::auth::TokenKind;
use sluice_central::cli::client::AdminClient;
use sluice_central::testing::Server;
use sluice_common::client::token_hash;
use sluice_common::protocol::{AdminReply, AdminRequest, PeerStatus};
use sluice_common::{ExporterEvent, event_kind};
use sluice_peer::central::decode_snapshots;
use sluice_peer::decode::{DecoderConfig, ShardDecoder, TemplateSnapshot};
use sluice_peer::flowgen::{EncoderConfig, Protocol};
use sluice_peer::testing::{Exporter, PeerProcess, run_to_exit, wait_until};

const SLUICE_PEER: &str = env!("CARGO_BIN_EXE_sluice-peer");

/// An in-process Central (the TLS control API on the real controller over the in-memory data
/// plane) on its own runtime, so test bodies stay synchronous, and a scratch dir for peer files.
struct Central {
    rt: tokio::runtime::Runtime,
    server: Server,
    dir: tempfile::TempDir,
}

impl Central {
    fn start() -> Central {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt.block_on(Server::start_live());
        Central {
            rt,
            server,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes a token file holding `token` and a `peer.toml` for the peer `name` with a
    /// `[central]` section for this Central (plus `central_extra`) and `rest` at the top.
    fn peer_config_with(
        &self,
        name: &str,
        token: &str,
        central_extra: &str,
        rest: &str,
    ) -> PathBuf {
        let token_file = self.token_file(name, token);
        let path = self.dir.path().join(format!("{name}.toml"));
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
            url = self.server.url,
            token_file = token_file.display(),
            fingerprint = self.server.fingerprint,
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// [`peer_config_with`](Self::peer_config_with) the peer token and no outputs.
    fn peer_config(&self, name: &str) -> PathBuf {
        self.peer_config_with(name, &self.server.peer_token, "", "outputs = []")
    }

    /// `NAME.token` holding `token`.
    fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.token"));
        std::fs::write(&path, format!("{token}\n")).unwrap();
        path
    }

    /// `sluice-peer run` from flags alone, no outputs: the peer `name` on `listen`, of this
    /// Central with the peer token, its certificate pinned by `pin` (`--ca-cert` or
    /// `--fingerprint` and its value).
    fn start_peer_from_flags(&self, name: &str, listen: &str, pin: [&str; 2]) -> PeerProcess {
        let token_file = self.token_file(name, &self.server.peer_token);
        let token_file = token_file.to_str().unwrap();
        let flags = ["--name", name, "--listen", listen, "--output", "none"];
        let central = ["--central", &self.server.url, "--token-file", token_file];
        PeerProcess::start(SLUICE_PEER, &[&flags[..], &central, &pin].concat())
    }

    fn stop(self) {
        self.rt.block_on(self.server.stop());
    }
}

/// SIGTERM; the peer must exit cleanly.
fn stop_cleanly(peer: PeerProcess) {
    let (status, log) = peer.stop();
    assert!(status.success(), "{status}\n{log}");
}

/// `sluice-peer COMMAND --config CONFIG` to its exit: (status, stdout, stderr).
fn run_config(command: &str, config: &Path) -> (std::process::ExitStatus, String, String) {
    run_to_exit(
        SLUICE_PEER,
        &[command, "--config", config.to_str().unwrap()],
    )
}

#[test]
fn registers_and_heartbeats_the_connected_peers_metrics() {
    let central = Central::start();
    let server = &central.server;
    let config = central.peer_config_with(
        "peer-a",
        &server.peer_token,
        "data_address = \"198.18.2.2\"\nweight = 3",
        "outputs = []",
    );
    let mut peer = PeerProcess::start_config(SLUICE_PEER, &config);
    // The token's hash (never the token) is logged, as Central shows it.
    let line = peer.wait_log("peer mode: registering with Central");
    assert!(
        line.contains(&format!(
            "access_token_hash={}",
            token_hash(&server.peer_token)
        )),
        "{line}"
    );
    assert!(!peer.log().contains(&server.peer_token));
    peer.wait_log("registered with Central");

    let view = || server.peer_view("peer-a");
    wait_until(
        "peer-a ONLINE",
        || format!("{:?}\n{}", view(), peer.log()),
        || view().is_some_and(|p| p.status == PeerStatus::Online && p.metrics.is_some()),
    );
    let p = view().unwrap();
    assert_eq!(p.data_addr, "198.18.2.2".parse::<IpAddr>().unwrap());
    assert_eq!(p.ports, vec![peer.listen[0].port()]);
    assert_eq!(p.weight, 3);
    assert_eq!(p.pool.as_deref(), Some("default"));

    // Traffic for a few seconds: the heartbeats carry the input and processing rates.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (stop, to) = (stop.clone(), peer.listen[0]);
        std::thread::spawn(move || {
            let mut exporter = Exporter::with_config(
                "127.0.0.20".parse().unwrap(),
                Protocol::NetflowV9,
                8,
                EncoderConfig::default(),
            );
            while !stop.load(Ordering::Relaxed) {
                let (datagram, _) = exporter.datagram(10);
                exporter.send_datagram(&datagram, to);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    wait_until(
        "a heartbeat with input and flow rates",
        || format!("{:?}", view().and_then(|p| p.metrics)),
        || {
            view()
                .and_then(|p| p.metrics)
                .is_some_and(|m| m.input_pps > 0.0 && m.flows_per_s > 0.0)
        },
    );
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let m = view().unwrap().metrics.unwrap();
    assert!(m.process_mem_bytes > 0, "{m:?}");
    assert!((0.0..=100.0).contains(&m.mem_used_pct), "{m:?}");
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now_s - 120..=now_s).contains(&m.start_time_unix_s),
        "{m:?}"
    );

    stop_cleanly(peer);

    // Restarted, it is the same installation: it takes its registration back at once (Central
    // still counts it online and would refuse another installation under its name).
    let mut again = PeerProcess::start_config(SLUICE_PEER, &config);
    again.wait_log("registered with Central");
    let back = view().unwrap();
    assert_eq!((back.id, back.uuid), (p.id, p.uuid));
    stop_cleanly(again);
    central.stop();
}

/// The quick start: no file, flags only.
#[test]
fn flags_alone_make_a_peer_of_central() {
    let central = Central::start();
    let server = &central.server;
    let ca_cert = server.cert.to_str().unwrap();
    let mut peer = central.start_peer_from_flags("peer-f", "127.0.0.1:0", ["--ca-cert", ca_cert]);
    peer.wait_log("registered with Central");
    let view = || server.peer_view("peer-f");
    wait_until(
        "peer-f ONLINE",
        || peer.log(),
        || view().is_some_and(|p| p.status == PeerStatus::Online),
    );
    // The data address defaults to the listen address.
    assert_eq!(view().unwrap().data_addr, peer.listen[0].ip());
    stop_cleanly(peer);
    central.stop();
}

/// Listening on 0.0.0.0 names no address: the peer registers the one it reaches Central from.
#[test]
fn an_unspecified_listen_address_registers_the_route_to_central() {
    let central = Central::start();
    let server = &central.server;
    let port = std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut peer = central.start_peer_from_flags(
        "peer-r",
        &format!("0.0.0.0:{port}"),
        ["--fingerprint", &server.fingerprint],
    );
    let line = peer.wait_log("`central.data_address` not set");
    assert!(line.contains("data_address=127.0.0.1"), "{line}");
    peer.wait_log("registered with Central");
    let view = server.peer_view("peer-r").unwrap();
    assert_eq!(view.data_addr, "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(view.ports, vec![port]);
    stop_cleanly(peer);
    central.stop();
}

/// Central with two peers: A (no outputs) and B (records to a file).
struct Lab {
    central: Central,
    admin: AdminClient,
    a: PeerProcess,
    b: PeerProcess,
    flows: PathBuf,
}

impl Lab {
    fn start() -> Lab {
        let central = Central::start();
        let server = &central.server;
        let flows = central.dir.path().join("b.jsonl");
        let config_a = central.peer_config("peer-a");
        let file = format!(
            "[[outputs]]\ntype = \"file\"\npath = \"{}\"",
            flows.display()
        );
        let config_b = central.peer_config_with("peer-b", &server.peer_token, "", &file);
        let mut a = PeerProcess::start_config(SLUICE_PEER, &config_a);
        let mut b = PeerProcess::start_config(SLUICE_PEER, &config_b);
        a.wait_log("registered with Central");
        b.wait_log("registered with Central");
        let admin =
            AdminClient::new(&server.url, &server.pin(), Some(server.admin_token.clone())).unwrap();
        Lab {
            central,
            admin,
            a,
            b,
            flows,
        }
    }

    /// A v9 exporter sending templates (and sampling options) only in its first datagram.
    fn exporter(addr: &str) -> Exporter {
        Exporter::with_config(
            addr.parse().unwrap(),
            Protocol::NetflowV9,
            8,
            EncoderConfig {
                template_every: 0,
                observation_domain_id: 7,
                sampling_rate: 100,
                ..EncoderConfig::default()
            },
        )
    }

    /// What Central keeps for `exporter`.
    fn reported(&self, exporter: IpAddr) -> Vec<sluice_common::protocol::Templates> {
        let controller = self.central.server.live.as_ref().unwrap();
        controller.lock().unwrap().templates_for(exporter)
    }

    /// `first` reaches A, which reports its templates; the data plane pins the exporter on A.
    fn learn_on_a(&self, exporter: &Exporter, first: &[u8]) {
        let addr = exporter.addr();
        exporter.send_datagram(first, self.a.listen[0]);
        wait_until(
            "templates reported by peer-a",
            || self.a.log(),
            || !self.reported(addr).is_empty(),
        );
        let id_a = self.central.server.peer_view("peer-a").unwrap().id;
        let addr16 = match addr {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let event = ExporterEvent {
            addr: addr16,
            kind: event_kind::NEW_EXPORTER,
            pool_id: 0,
            peer_id: id_a,
            _pad: 0,
        };
        let controller = self.central.server.live.as_ref().unwrap();
        controller
            .lock()
            .unwrap()
            .on_exporter_event(&event, std::time::Instant::now())
            .unwrap();
    }

    /// The operator moves the exporter to B; returns once the map entry points at B.
    fn move_to_b(&self, addr: IpAddr) {
        let move_it = AdminRequest::ExportersMove {
            addr,
            peer: "peer-b".into(),
        };
        self.central.rt.block_on(self.admin.call(&move_it)).unwrap();
        let on_b = || {
            let list = self
                .central
                .rt
                .block_on(self.admin.call(&AdminRequest::ExportersList));
            let Ok(AdminReply::Exporters(list)) = list else {
                panic!("not an exporter list: {list:?}");
            };
            list.iter()
                .any(|x| x.address == addr && x.peer.as_deref() == Some("peer-b"))
        };
        wait_until("the exporter on peer-b", || self.b.log(), on_b);
    }

    /// Waits until B's decoder counters show `datagrams` v9 datagrams.
    fn b_decoded(&self, datagrams: f64) {
        wait_until(
            "peer-b's decoder counters",
            || self.b.log(),
            || {
                self.b
                    .metric("sluice_peer_decoded_datagrams_total{protocol=\"NETFLOW_V9\"}")
                    >= datagrams
            },
        );
    }

    /// Both peers exit cleanly, then Central stops.
    fn stop(self) {
        let Lab { central, a, b, .. } = self;
        stop_cleanly(a);
        stop_cleanly(b);
        central.stop();
    }

    fn b_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.flows)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Peer A learns an exporter's v9 templates and sampling options and reports them; Central
/// moves the exporter to peer B, which installs them before the flip, so the exporter's next
/// datagram (data only) decodes on B at once. Data that beats the hand-over (a failover flips
/// at once) is held and decoded as soon as the templates are installed.
#[test]
fn templates_learned_on_one_peer_make_the_first_datagram_decode_on_the_next() {
    let mut lab = Lab::start();
    let mut exporter = Lab::exporter("127.0.0.30");
    let addr = exporter.addr();
    let (first, _) = exporter.datagram(5);
    let (second, records) = exporter.datagram(8);
    // The second datagram alone cannot be decoded: it has no template.
    let mut fresh = ShardDecoder::new(DecoderConfig::default());
    let outcome = fresh.decode(addr, 1, &second, &mut Vec::new()).unwrap();
    assert_eq!(outcome.records, 0);
    assert!(outcome.held_sets > 0, "{outcome:?}");

    lab.learn_on_a(&exporter, &first);
    let reported = lab.reported(addr);
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].observation_domain, 7);
    let snaps = decode_snapshots(&reported[0].bytes).unwrap();
    assert!(
        snaps.iter().any(|s| matches!(
            s,
            TemplateSnapshot::Template {
                protocol: Protocol::NetflowV9,
                observation_domain_id: 7,
                options: false,
                ..
            }
        )),
        "{snaps:?}"
    );
    assert!(
        snaps.iter().any(|s| matches!(
            s,
            TemplateSnapshot::Sampling {
                observation_domain_id: 7,
                sampling_rate: 100,
                ..
            }
        )),
        "{snaps:?}"
    );

    lab.move_to_b(addr);
    let line = lab.b.wait_log("templates installed from Central");
    assert!(line.contains("failed=0"), "{line}");

    // The first datagram B ever sees from the exporter has no template, and decodes.
    exporter.send_datagram(&second, lab.b.listen[0]);
    lab.b_decoded(1.0);
    assert_eq!(
        lab.b.metric("sluice_peer_flows_total"),
        records.len() as f64
    );
    assert_eq!(lab.b.metric("sluice_peer_held_data_sets"), 0.0);
    assert_eq!(lab.b.metric("sluice_peer_template_misses_total"), 0.0);
    wait_until(
        "records in B's file",
        || lab.b.log(),
        || lab.b_records().len() == records.len(),
    );
    for v in lab.b_records() {
        assert_eq!(v["sampling_rate"], 100, "{v}");
        assert_eq!(v["sampler_address"], addr.to_string(), "{v}");
    }

    // Another exporter's data reaches B before its templates do: held, then released by the
    // installation.
    let mut early = Lab::exporter("127.0.0.31");
    let (first, _) = early.datagram(5);
    let (data, early_records) = early.datagram(6);
    lab.learn_on_a(&early, &first);
    early.send_datagram(&data, lab.b.listen[0]);
    lab.b_decoded(2.0);
    assert!(lab.b.metric("sluice_peer_held_data_sets") > 0.0);
    lab.move_to_b(early.addr());
    let total = (records.len() + early_records.len()) as f64;
    wait_until(
        "held data released by the installation",
        || lab.b.log(),
        || lab.b.metric("sluice_peer_flows_total") >= total,
    );
    wait_until(
        "decoder counters published",
        || lab.b.log(),
        || lab.b.metric("sluice_peer_held_data_sets") == 0.0,
    );
    let misses = lab.b.metric("sluice_peer_template_misses_total");
    assert!(misses > 0.0);
    assert_eq!(lab.b.metric("sluice_peer_held_released_total"), misses);
    assert_eq!(lab.b.metric("sluice_peer_flows_total"), total);

    lab.stop();
}

#[test]
fn a_wrong_token_is_retried_and_counted_by_central() {
    let central = Central::start();
    let server = &central.server;
    let config = central.peer_config_with("peer-x", "not-the-token", "", "outputs = []");
    let mut peer = PeerProcess::start_config(SLUICE_PEER, &config);
    let line = peer.wait_log("peer channel down");
    assert!(line.contains("Central refused the session"), "{line}");
    assert!(line.contains("Unauthorized"), "{line}");
    wait_until(
        "a second attempt",
        || peer.log(),
        || server.auth.failures(TokenKind::Peer) >= 2,
    );
    assert!(peer.is_running());
    assert!(server.peer_view("peer-x").is_none());
    stop_cleanly(peer);
    central.stop();
}

#[test]
fn an_unreachable_central_is_retried_while_the_peer_collects() {
    let central = Central::start();
    let server = &central.server;
    let config = central.peer_config("peer-u");
    // Nothing listens on the URL's port.
    let closed: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&server.url, &format!("https://{closed}"));
    std::fs::write(&config, text).unwrap();
    let mut peer = PeerProcess::start_config(SLUICE_PEER, &config);
    let line = peer.wait_log("peer channel down");
    assert!(line.contains("cannot reach Central"), "{line}");
    let mut exporter = Exporter::with_config(
        "127.0.0.40".parse().unwrap(),
        Protocol::NetflowV5,
        8,
        EncoderConfig::default(),
    );
    let (datagram, records) = exporter.datagram(3);
    exporter.send_datagram(&datagram, peer.listen[0]);
    wait_until(
        "standalone decoding goes on",
        || peer.log(),
        || peer.metric("sluice_peer_flows_total") >= records.len() as f64,
    );
    assert!(peer.is_running());
    stop_cleanly(peer);
    central.stop();
}

#[test]
fn check_shows_the_token_hash() {
    let central = Central::start();
    let server = &central.server;
    let config = central.peer_config("peer-t");
    // `check` verifies the token file and the pin, and shows the token's hash.
    let (status, stdout, stderr) = run_config("check", &config);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "access token hash {}",
            token_hash(&server.peer_token)
        )),
        "{stdout}"
    );
    central.stop();
}

/// Credentials `run` cannot use fail at start, in one `sluice-peer:` line naming the key and
/// the file: each case replaces the line of a working config that starts with its key.
#[test]
fn unusable_credentials_fail_at_start_naming_the_key_and_the_file() {
    let central = Central::start();
    let config = central.peer_config("peer-t");
    let original = std::fs::read_to_string(&config).unwrap();
    let file = |name: &str, text: Option<&str>| {
        let path = central.dir.path().join(name);
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        path.display().to_string()
    };
    let missing_token = file("missing.token", None);
    let empty_token = file("empty.token", Some("\n"));
    let bad_pem = file("central.pem", Some("not a certificate\n"));
    let missing_pem = file("missing.pem", None);
    // (case, key, replacement line, what the error names)
    let cases: [(&str, &str, String, &[&str]); 4] = [
        (
            "token file missing",
            "token_file",
            format!("token_file = \"{missing_token}\""),
            &["`central.token_file`", "missing.token"],
        ),
        (
            "token file empty",
            "token_file",
            format!("token_file = \"{empty_token}\""),
            &["`central.token_file`", "empty.token", "no access token"],
        ),
        (
            "CA certificate not PEM",
            "fingerprint",
            format!("ca_cert = \"{bad_pem}\""),
            &["central.pem"],
        ),
        (
            "CA certificate missing",
            "fingerprint",
            format!("ca_cert = \"{missing_pem}\""),
            &["missing.pem"],
        ),
    ];
    for (case, key, replacement, named) in cases {
        let line = original
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{case}: no {key} line in\n{original}"));
        std::fs::write(&config, original.replace(line, &replacement)).unwrap();
        let (status, _, stderr) = run_config("run", &config);
        assert_eq!(status.code(), Some(1), "{case}: {stderr}");
        for name in named {
            assert!(stderr.contains(name), "{case}: {name} not in {stderr}");
        }
        let errors = stderr.lines().filter(|l| l.contains("sluice-peer:"));
        assert_eq!(errors.count(), 1, "{case}: {stderr}");
    }
    central.stop();
}

/// Hand-built NetFlow v9 and IPFIX messages: the same template id with another layout per
/// source id / observation domain, which the flow generator cannot make.
mod wire {
    /// IPv4 src, IPv4 dst, IN_BYTES, IN_PKTS (4 bytes each).
    pub const BYTES_FIRST: [(u16, u16); 4] = [(8, 4), (12, 4), (1, 4), (2, 4)];
    /// The same fields with packets before bytes, and a source port.
    pub const PACKETS_FIRST: [(u16, u16); 5] = [(8, 4), (12, 4), (2, 4), (1, 4), (7, 2)];
    pub const TEMPLATE: u16 = 256;
    const OPTIONS: u16 = 257;
    pub const EXPORT_SECS: u32 = 1_800_000_000;

    fn set(id: u16, body: &[u8]) -> Vec<u8> {
        let mut s = id.to_be_bytes().to_vec();
        s.extend_from_slice(&(body.len() as u16 + 4).to_be_bytes());
        s.extend_from_slice(body);
        s
    }

    /// The template set (v9 id 0, IPFIX id 2) defining [`TEMPLATE`] as `fields`, then the
    /// options template [`OPTIONS`] and its data announcing `sampling` (field 34).
    pub fn templates(ipfix: bool, fields: &[(u16, u16)], sampling: u32) -> Vec<Vec<u8>> {
        let mut t = TEMPLATE.to_be_bytes().to_vec();
        t.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        for (id, len) in fields {
            t.extend_from_slice(&id.to_be_bytes());
            t.extend_from_slice(&len.to_be_bytes());
        }
        let mut o = OPTIONS.to_be_bytes().to_vec();
        let (template_set, options_set) = if ipfix {
            // Field count 2, scope count 1: observationDomainId (149), then samplingInterval.
            o.extend_from_slice(&[0, 2, 0, 1, 0, 149, 0, 4, 0, 34, 0, 4]);
            (2, 3)
        } else {
            // Scope length 4 (System, 1), option length 4 (SAMPLING_INTERVAL, 34).
            o.extend_from_slice(&[0, 4, 0, 4, 0, 1, 0, 4, 0, 34, 0, 4]);
            (0, 1)
        };
        let mut data = 7u32.to_be_bytes().to_vec();
        data.extend_from_slice(&sampling.to_be_bytes());
        vec![
            set(template_set, &t),
            set(options_set, &o),
            set(OPTIONS, &data),
        ]
    }

    /// One data set of [`TEMPLATE`] with a record per (bytes, packets), laid out as `fields`.
    pub fn data(fields: &[(u16, u16)], flows: &[(u32, u32)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, (bytes, packets)) in flows.iter().enumerate() {
            for (id, _) in fields {
                match id {
                    8 => body.extend_from_slice(&[198, 18, 7, i as u8]),
                    12 => body.extend_from_slice(&[198, 19, 7, 1]),
                    1 => body.extend_from_slice(&bytes.to_be_bytes()),
                    2 => body.extend_from_slice(&packets.to_be_bytes()),
                    7 => body.extend_from_slice(&4242u16.to_be_bytes()),
                    _ => unreachable!("field {id}"),
                }
            }
        }
        set(TEMPLATE, &body)
    }

    /// A whole message of `sets` for source id / observation domain `domain`.
    pub fn message(ipfix: bool, domain: u32, sequence: u32, sets: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = sets.concat();
        let mut m = Vec::new();
        if ipfix {
            m.extend_from_slice(&10u16.to_be_bytes());
            m.extend_from_slice(&(body.len() as u16 + 16).to_be_bytes());
            m.extend_from_slice(&EXPORT_SECS.to_be_bytes());
        } else {
            m.extend_from_slice(&9u16.to_be_bytes());
            m.extend_from_slice(&(sets.len() as u16).to_be_bytes());
            m.extend_from_slice(&600_000u32.to_be_bytes()); // sysUptime
            m.extend_from_slice(&EXPORT_SECS.to_be_bytes());
        }
        m.extend_from_slice(&sequence.to_be_bytes());
        m.extend_from_slice(&domain.to_be_bytes());
        m.extend_from_slice(&body);
        m
    }
}

/// The defect this guards against: a move handed the new peer only what the old peer had last
/// reported, so a template (or options record) that reached the old peer just before the move
/// was lost to every later record. Here the move happens exactly between the old peer decoding
/// a redefinition and Central hearing of it (Central's controller is held locked from before
/// the datagram is sent until the move has started), for two source ids / observation domains
/// that use one template id with different layouts: every record after the move decodes on
/// the new peer with the new layout and sampling rate, and nothing is missed or held.
fn a_template_received_just_before_a_move_goes_with_it(ipfix: bool) {
    use wire::{BYTES_FIRST, PACKETS_FIRST, data, message, templates};
    let lab = Lab::start();
    let protocol = if ipfix { "IPFIX" } else { "NETFLOW_V9" };
    let exporter = Lab::exporter(if ipfix { "127.0.0.41" } else { "127.0.0.40" });
    let addr = exporter.addr();
    // Domain 1 starts with bytes first (rate 10), domain 2 with packets first (rate 20).
    let first = [
        message(ipfix, 1, 1, &templates(ipfix, &BYTES_FIRST, 10)),
        message(ipfix, 2, 1, &templates(ipfix, &PACKETS_FIRST, 20)),
    ];
    exporter.send_datagram(&first[1], lab.a.listen[0]);
    lab.learn_on_a(&exporter, &first[0]);
    wait_until(
        "both domains reported by peer-a",
        || lab.a.log(),
        || lab.reported(addr).len() == 2,
    );

    // Domain 1 redefines the template (packets first now) with rate 1000; domain 2 announces
    // rate 2000. Central hears of neither before the move starts.
    let controller = lab.central.server.live.clone().unwrap();
    let received = |p: &PeerProcess| p.metric("sluice_peer_templates_received_total");
    let options = |p: &PeerProcess| p.metric("sluice_peer_options_records_total");
    let (templates_before, options_before) = (received(&lab.a), options(&lab.a));
    {
        let mut c = controller.lock().unwrap();
        exporter.send_datagram(
            &message(ipfix, 1, 2, &templates(ipfix, &PACKETS_FIRST, 1000)),
            lab.a.listen[0],
        );
        exporter.send_datagram(
            &message(ipfix, 2, 2, &templates(ipfix, &PACKETS_FIRST, 2000)),
            lab.a.listen[0],
        );
        wait_until(
            "peer-a decoded the new templates and options",
            || lab.a.log(),
            || {
                // A template and an options template in each.
                received(&lab.a) >= templates_before + 4.0
                    && options(&lab.a) >= options_before + 2.0
            },
        );
        c.move_exporter(addr, "peer-b", std::time::Instant::now())
            .unwrap();
    }
    lab.move_to_b(addr);

    // Data only, after the move: both layouts decode on B with the new rates.
    let flows = [(1000, 10), (2000, 20), (3000, 30)];
    let after = [
        message(ipfix, 1, 3, &[data(&PACKETS_FIRST, &flows)]),
        message(ipfix, 2, 3, &[data(&PACKETS_FIRST, &flows)]),
    ];
    for m in &after {
        exporter.send_datagram(m, lab.b.listen[0]);
    }
    let decoded = format!("sluice_peer_decoded_datagrams_total{{protocol=\"{protocol}\"}}");
    wait_until(
        "B decoded both",
        || lab.b.log(),
        || lab.b.metric(&decoded) >= 2.0,
    );
    assert_eq!(lab.b.metric("sluice_peer_template_misses_total"), 0.0);
    assert_eq!(lab.b.metric("sluice_peer_held_data_sets"), 0.0);
    wait_until(
        "records in B's file",
        || lab.b.log(),
        || lab.b_records().len() == 6,
    );
    let mut seen: Vec<(u64, u64, u64, u64)> = lab
        .b_records()
        .iter()
        .map(|v| {
            let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
            (
                n("observation_domain_id"),
                n("sampling_rate"),
                n("bytes"),
                n("packets"),
            )
        })
        .collect();
    seen.sort_unstable();
    // Sampling is reported, not applied (the default): bytes and packets are as sent.
    let expect: Vec<(u64, u64, u64, u64)> = [(1, 1000), (2, 2000)]
        .iter()
        .flat_map(|&(domain, rate)| {
            flows
                .iter()
                .map(move |&(b, p)| (domain, rate, u64::from(b), u64::from(p)))
        })
        .collect();
    assert_eq!(seen, expect);

    lab.stop();
}

#[test]
fn a_v9_template_received_just_before_a_move_goes_with_it() {
    a_template_received_just_before_a_move_goes_with_it(false);
}

#[test]
fn an_ipfix_template_received_just_before_a_move_goes_with_it() {
    a_template_received_just_before_a_move_goes_with_it(true);
}
