//! End-to-end through network namespaces: exporters → Central (XDP on veth) → two peers with
//! UDP listeners, using the real `sluice-central` binary.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use sluice_central::{controller::dataplane::DataPlane, maps::Maps};
use sluice_common::{ExporterValue, from_key_bytes};
use sluice_lab::{
    lab::{LISTENER, Lab, PORT},
    privileged,
};

const TARGET: SocketAddr = SocketAddr::new(IpAddr::V4(LISTENER), PORT);

/// Drains a peer socket until `quiet` passes without data; returns (source, payload) pairs.
fn drain(sock: &UdpSocket, quiet: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            out.push((from, buf[..n].to_vec()));
            last = Instant::now();
        }
    }
    out
}

fn payload(exporter: usize, seq: usize, len: usize) -> Vec<u8> {
    let mut p = format!("exp{exporter}-seq{seq}-").into_bytes();
    p.resize(len, (exporter * 31 + seq) as u8);
    p
}

/// Peer index of each exporter according to the pinned maps.
fn assignments(lab: &Lab, maps: &Maps) -> Vec<usize> {
    let exporters: HashMap<IpAddr, ExporterValue> = maps.exporters().unwrap().into_iter().collect();
    lab.exporter_addrs
        .iter()
        .map(|a| {
            let v = exporters
                .get(&IpAddr::V4(*a))
                .unwrap_or_else(|| panic!("{a} not pinned"));
            let peer = maps.peer(v.peer_id).unwrap();
            let ip = from_key_bytes(peer.addr);
            lab.peers
                .iter()
                .position(|(_, p)| IpAddr::V4(*p) == ip)
                .expect("peer address")
        })
        .collect()
}

#[test]
fn exporters_reach_only_their_peer_with_source_preserved() {
    if !privileged("netns_forwarding") {
        return;
    }
    let lab = Lab::new("fw", 2, 3);
    let central = lab.start_central(&[]);
    let peers: Vec<UdpSocket> = (0..2).map(|i| lab.peer_socket(i)).collect();
    let exporters: Vec<UdpSocket> = (0..3).map(|i| lab.exporter_socket(i)).collect();

    // First datagram of each exporter: unknown → pool table → event → pinned by the controller.
    for (i, s) in exporters.iter().enumerate() {
        s.send_to(&payload(i, 0, 100), TARGET).unwrap();
    }
    thread::sleep(Duration::from_millis(500));
    for p in &peers {
        drain(p, Duration::from_millis(200));
    }
    let maps = Maps::open_pinned(lab.pins.path()).unwrap();
    let assigned = assignments(&lab, &maps);

    // 50 datagrams per exporter, each unique.
    for seq in 1..=50 {
        for (i, s) in exporters.iter().enumerate() {
            s.send_to(&payload(i, seq, 1200), TARGET).unwrap();
        }
    }
    let got: Vec<Vec<(SocketAddr, Vec<u8>)>> = peers
        .iter()
        .map(|p| drain(p, Duration::from_millis(500)))
        .collect();
    for (i, addr) in lab.exporter_addrs.iter().enumerate() {
        for (p, received) in got.iter().enumerate() {
            let mine: Vec<&Vec<u8>> = received
                .iter()
                .filter(|(from, _)| from.ip() == IpAddr::V4(*addr))
                .map(|(_, d)| d)
                .collect();
            if p == assigned[i] {
                let want: Vec<Vec<u8>> = (1..=50).map(|seq| payload(i, seq, 1200)).collect();
                assert_eq!(
                    mine.len(),
                    50,
                    "exporter {addr} → peer {p}: {} of 50\n{}",
                    mine.len(),
                    central.log_text()
                );
                for w in &want {
                    assert!(mine.contains(&w), "payload of {addr} altered or missing");
                }
            } else {
                assert!(
                    mine.is_empty(),
                    "exporter {addr} leaked {} datagrams to peer {p}",
                    mine.len()
                );
            }
        }
        // Source port preserved as well as the address.
        let port = exporters[i].local_addr().unwrap().port();
        assert!(
            got[assigned[i]]
                .iter()
                .filter(|(f, _)| f.ip() == IpAddr::V4(*addr))
                .all(|(f, _)| f.port() == port)
        );
    }

    // Rewriting one EXPORTERS entry moves that exporter.
    let mut maps = maps;
    let moved = lab.exporter_addrs[0];
    let to = 1 - assigned[0];
    let current: HashMap<IpAddr, ExporterValue> = maps.exporters().unwrap().into_iter().collect();
    let mut v = current[&IpAddr::V4(moved)];
    v.peer_id = (0..2)
        .find(|&id| from_key_bytes(maps.peer(id).unwrap().addr) == IpAddr::V4(lab.peers[to].1))
        .unwrap();
    maps.set_exporter(moved.into(), v).unwrap();
    for seq in 100..110 {
        exporters[0].send_to(&payload(0, seq, 500), TARGET).unwrap();
    }
    let got: Vec<usize> = peers
        .iter()
        .map(|p| {
            drain(p, Duration::from_millis(400))
                .iter()
                .filter(|(f, _)| f.ip() == IpAddr::V4(moved))
                .count()
        })
        .collect();
    assert_eq!(
        got[to], 10,
        "moved exporter's datagrams at the new peer: {got:?}"
    );
    assert_eq!(got[1 - to], 0, "nothing left at the old peer: {got:?}");
}

#[test]
fn fragmented_ipfix_takes_the_slow_path_to_the_right_peer() {
    if !privileged("netns_fragments") {
        return;
    }
    let lab = Lab::new("fr", 2, 1);
    let central = lab.start_central(&[]);
    let peers: Vec<UdpSocket> = (0..2).map(|i| lab.peer_socket(i)).collect();
    let exporter = lab.exporter_socket(0);
    exporter.send_to(&payload(0, 0, 100), TARGET).unwrap();
    thread::sleep(Duration::from_millis(500));
    for p in &peers {
        drain(p, Duration::from_millis(200));
    }
    let maps = Maps::open_pinned(lab.pins.path()).unwrap();
    let peer = assignments(&lab, &maps)[0];

    // A 3000-byte IPFIX message: version 10, length 3000, then filler.
    let mut ipfix = vec![0u8; 3000];
    ipfix[0..2].copy_from_slice(&10u16.to_be_bytes());
    ipfix[2..4].copy_from_slice(&3000u16.to_be_bytes());
    for (i, b) in ipfix.iter_mut().enumerate().skip(16) {
        *b = (i % 251) as u8;
    }
    let counters_before = maps.counters().unwrap();
    exporter.send_to(&ipfix, TARGET).unwrap();
    let got = drain(&peers[peer], Duration::from_millis(800));
    let other = drain(&peers[1 - peer], Duration::from_millis(100));
    assert_eq!(
        got.len(),
        1,
        "one reassembled datagram at the assigned peer\n{}",
        central.log_text()
    );
    assert_eq!(got[0].1, ipfix, "byte-identical");
    assert_eq!(
        got[0].0,
        SocketAddr::new(
            lab.exporter_addrs[0].into(),
            exporter.local_addr().unwrap().port()
        ),
        "source preserved"
    );
    assert!(other.is_empty());
    let frag = |c: &[(sluice_common::Reason, u64)]| {
        c.iter()
            .find(|(r, _)| *r == sluice_common::Reason::PassFragment)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    assert!(
        frag(&maps.counters().unwrap()) >= frag(&counters_before) + 3,
        "the fragments went through XDP_PASS"
    );
}

#[test]
fn restarting_central_mid_stream_loses_nothing() {
    if !privileged("netns_restart") {
        return;
    }
    let lab = Lab::new("rs", 2, 3);
    let mut central = lab.start_central(&[]);
    let peers: Vec<UdpSocket> = (0..2).map(|i| lab.peer_socket(i)).collect();
    for p in &peers {
        p.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    }
    let exporters: Vec<UdpSocket> = (0..3).map(|i| lab.exporter_socket(i)).collect();
    // Warm up: exporters pinned, neighbours resolved, so the steady state is pure XDP.
    for _ in 0..3 {
        for (i, s) in exporters.iter().enumerate() {
            s.send_to(&payload(i, 0, 64), TARGET).unwrap();
        }
        thread::sleep(Duration::from_millis(300));
    }
    for p in &peers {
        drain(p, Duration::from_millis(200));
    }
    let maps = Maps::open_pinned(lab.pins.path()).unwrap();
    let before = assignments(&lab, &maps);

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let receivers: Vec<_> = peers
        .into_iter()
        .map(|p| {
            let (stop, received) = (stop.clone(), received.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut idle_since = None::<Instant>;
                loop {
                    match p.recv_from(&mut buf) {
                        Ok(_) => {
                            received.fetch_add(1, Ordering::Relaxed);
                            idle_since = None;
                        }
                        Err(_) if stop.load(Ordering::Relaxed) => {
                            let t = *idle_since.get_or_insert_with(Instant::now);
                            if t.elapsed() > Duration::from_millis(500) {
                                break;
                            }
                        }
                        Err(_) => {}
                    }
                }
            })
        })
        .collect();
    // 1000 datagrams/s for 4 s; Central is SIGKILLed after 1 s and restarted.
    let sender = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut sent = 0u64;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(4) {
                for (i, s) in exporters.iter().enumerate() {
                    s.send_to(&payload(i, sent as usize, 300), TARGET).unwrap();
                    sent += 1;
                }
                thread::sleep(Duration::from_micros(3000));
            }
            stop.store(true, Ordering::Relaxed);
            sent
        })
    };
    thread::sleep(Duration::from_secs(1));
    central.kill();
    thread::sleep(Duration::from_millis(500));
    let central = lab.start_central(&[]);
    let sent = sender.join().unwrap();
    for r in receivers {
        r.join().unwrap();
    }
    let got = received.load(Ordering::Relaxed);
    assert_eq!(
        got,
        sent,
        "lost {} of {sent} datagrams across the restart\n{}",
        sent - got,
        central.log_text()
    );
    assert_eq!(
        assignments(&lab, &Maps::open_pinned(lab.pins.path()).unwrap()),
        before,
        "assignments unchanged"
    );
    assert!(
        central.log_text().contains("adopted"),
        "the restarted Central adopted the pinned link"
    );
}

#[test]
fn config_file_pins_and_source_groups_steer_exporters() {
    if !privileged("netns_config_file") {
        return;
    }
    let lab = Lab::new("cf", 2, 3);
    let (a, b) = (lab.peers[0].1, lab.peers[1].1);
    let (e0, e1, e2) = (
        lab.exporter_addrs[0],
        lab.exporter_addrs[1],
        lab.exporter_addrs[2],
    );
    // Peer a alone in pool "default", peer b alone in pool "edge"; e1 falls in the "edge"
    // source group; e0 is pinned to b although its pool would say a; e2 follows its pool.
    let config = format!(
        r#"
[data_plane]
interfaces = ["ce0"]
pin_dir = "{pins}"
[[listeners]]
address = "{LISTENER}"
ports = [{PORT}]
pool = "default"
[[peers]]
name = "a"
address = "{a}:{PORT}"
[[peers]]
name = "b"
address = "{b}:{PORT}"
pool = "edge"
[[source_groups]]
cidr = "{e1}/32"
pool = "edge"
[[pins]]
exporter = "{e0}"
peer = "b"
[state]
dir = "{state}"
"#,
        pins = lab.pins.path().display(),
        state = lab.state_dir.display(),
    );
    let path = std::env::temp_dir().join(format!("sluice-central-{}.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let mut cmd = lab.central_binary();
    cmd.args(["run", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let central = sluice_lab::lab::CentralProcess::spawn(cmd);
    let peers: Vec<UdpSocket> = (0..2).map(|i| lab.peer_socket(i)).collect();
    let exporters: Vec<UdpSocket> = (0..3).map(|i| lab.exporter_socket(i)).collect();
    for round in 0..5 {
        for (i, s) in exporters.iter().enumerate() {
            s.send_to(&payload(i, round, 200), TARGET).unwrap();
        }
        thread::sleep(Duration::from_millis(100));
    }
    let got: Vec<Vec<(SocketAddr, Vec<u8>)>> = peers
        .iter()
        .map(|p| drain(p, Duration::from_millis(500)))
        .collect();
    let count = |peer: usize, e: std::net::Ipv4Addr| {
        got[peer]
            .iter()
            .filter(|(f, _)| f.ip() == IpAddr::V4(e))
            .count()
    };
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        (count(0, e0), count(1, e0)),
        (0, 5),
        "pinned exporter goes to b\n{}",
        central.log_text()
    );
    assert_eq!(
        (count(0, e1), count(1, e1)),
        (0, 5),
        "source group sends e1 to pool edge (b)"
    );
    assert_eq!(
        (count(0, e2), count(1, e2)),
        (5, 0),
        "e2 follows the listener's pool (a)"
    );
}

#[test]
fn an_exporter_seen_only_through_the_slow_path_is_pinned_and_counted() {
    if !privileged("netns_slow_path_only") {
        return;
    }
    let lab = Lab::new("so", 2, 1);
    let central = lab.start_central(&[]);
    let peers: Vec<UdpSocket> = (0..2).map(|i| lab.peer_socket(i)).collect();
    let exporter = lab.exporter_socket(0);
    // Every datagram is larger than the MTU: XDP never sees a whole one.
    let big = payload(0, 1, 3000);
    for _ in 0..10 {
        exporter.send_to(&big, TARGET).unwrap();
        thread::sleep(Duration::from_millis(150));
    }
    let got: usize = peers
        .iter()
        .map(|p| drain(p, Duration::from_millis(300)).len())
        .sum();
    assert_eq!(got, 10, "all relayed\n{}", central.log_text());
    let maps = Maps::open_pinned(lab.pins.path()).unwrap();
    let addr = IpAddr::V4(lab.exporter_addrs[0]);
    assert!(
        maps.exporters().unwrap().iter().any(|(a, _)| *a == addr),
        "the controller pinned the exporter it heard of from the relay\n{}",
        central.log_text()
    );
    let stats = maps.exporter_stats().unwrap();
    let (_, s) = stats
        .iter()
        .find(|(a, _)| *a == addr)
        .expect("relay traffic counted");
    assert!(s.packets >= 9 && s.bytes >= 9 * 3000, "{s:?}");
}
