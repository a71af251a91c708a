//! End-to-end control plane through network namespaces: the real `sluice-central` (no static
//! peers) and real `sluice-peer`s that register over TLS and heartbeat, NetFlow v5 from the
//! exporter namespace, taps on the peers' links. Failover, rebalancing, and a Central restart.

use std::{
    thread,
    time::{Duration, Instant},
};

use sluice_common::protocol::{PeerStatus, StatusView};
use sluice_lab::{
    lab::{
        Lab, peer_name,
        traffic::{Arrivals, Seens, Sender},
    },
    privileged,
};

/// Central's default peer timeout.
const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// Each peer's share of the datagrams in `seen`.
fn shares(seen: &Seens) -> Vec<f64> {
    let per_peer: Vec<u64> = seen
        .iter()
        .map(|m| m.values().map(|s| s.count).sum())
        .collect();
    let total = per_peer.iter().sum::<u64>().max(1) as f64;
    per_peer.iter().map(|&n| n as f64 / total).collect()
}

#[test]
fn killing_a_peer_moves_its_exporters_to_the_survivor_within_the_timeout() {
    if !privileged("netns_control_failover") {
        return;
    }
    let lab = Lab::new("kf", 2, 6);
    let (central, mut agents) = lab.start_control_plane(&[]);
    let arrivals = Arrivals::start(&lab);
    let _sender = Sender::start(&lab, &[200; 6]);
    let assigned = lab.wait_assigned(6, Duration::from_secs(5));
    let (victim, moved) = lab.busiest_peer(&assigned);
    let survivor = 1 - victim;
    thread::sleep(Duration::from_millis(500));

    let times = arrivals.time_failover(
        || agents[victim].kill(),
        survivor,
        &moved,
        Duration::from_secs(10),
    );
    println!(
        "failover: SIGKILL of peer {} → first datagram at peer {}: {:?}",
        peer_name(victim),
        peer_name(survivor),
        times
    );
    let bound = PEER_TIMEOUT + Duration::from_secs(3);
    for (e, t) in moved.iter().zip(&times) {
        let t = t.unwrap_or_else(|| {
            panic!(
                "exporter {e} never reached peer {}\n{}",
                peer_name(survivor),
                central.log_text()
            )
        });
        assert!(
            t <= bound,
            "exporter {e} took {t:?} (> {bound:?}) to reach the survivor"
        );
    }

    // Central's view agrees: the victim is OFFLINE and the survivor has every exporter.
    let peers = lab.peers_list();
    let status = |i: usize| {
        peers
            .iter()
            .find(|p| p.name == peer_name(i))
            .map(|p| p.status)
    };
    assert_eq!(status(victim), Some(PeerStatus::Offline), "{peers:?}");
    assert_eq!(status(survivor), Some(PeerStatus::Online), "{peers:?}");
    assert_eq!(
        lab.wait_assigned(6, Duration::from_secs(1)),
        vec![survivor; 6]
    );
    // And so does the data path: after the move nothing goes to the dead peer's link.
    arrivals.take();
    thread::sleep(Duration::from_millis(500));
    let seen = arrivals.take();
    assert!(
        seen[victim].is_empty(),
        "still sent to the dead peer: {seen:?}"
    );
    assert_eq!(seen[survivor].len(), 6, "every exporter at the survivor");

    // The killed peer comes back and rejoins empty: nothing moves back until a rebalance.
    agents[victim] = lab.start_peer_agent(victim);
    lab.wait_peers_online(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", agents[victim].log_text()));
    let rejoined = lab.peers_list();
    let held = |i: usize| {
        rejoined
            .iter()
            .find(|p| p.name == peer_name(i))
            .map(|p| p.exporters)
    };
    assert_eq!((held(victim), held(survivor)), (Some(0), Some(6)));
    arrivals.take();
    thread::sleep(Duration::from_millis(500));
    let seen = arrivals.take();
    assert!(
        seen[victim].is_empty(),
        "rejoined peer got traffic: {seen:?}"
    );
}

#[test]
fn skewed_exporter_rates_converge_within_the_margin_after_one_interval() {
    if !privileged("netns_control_rebalance") {
        return;
    }
    const INTERVAL: Duration = Duration::from_secs(5);
    const MARGIN: f64 = 0.05;
    let lab = Lab::new("sk", 2, 6);
    let (central, _agents) = lab.start_control_plane(&[]);
    let arrivals = Arrivals::start(&lab);
    // Exporters 0–2 on peer a (600 pps), 3–5 on peer b (200 pps): a carries 75 %. The one
    // move that brings both peers within 50 ± 5 % is exporter 1 (200 pps) to b.
    let rates = [300, 200, 100, 100, 50, 50];
    let _sender = Sender::start(&lab, &rates);
    lab.wait_assigned(6, Duration::from_secs(5));
    for (i, e) in lab.exporter_addrs.iter().enumerate() {
        let e = e.to_string();
        let to = peer_name(usize::from(i >= 3));
        lab.sluicectl::<serde_json::Value>(&["exporters", "move", &e, &to]);
        lab.sluicectl::<serde_json::Value>(&["exporters", "unpin", &e]);
    }
    assert_eq!(
        lab.wait_assigned(6, Duration::from_secs(1)),
        [0, 0, 0, 1, 1, 1]
    );
    // Let those moves age past one (short) interval, so the rebalancer may move any exporter,
    // and measure the skew meanwhile.
    thread::sleep(INTERVAL - Duration::from_secs(2));
    arrivals.take();
    thread::sleep(Duration::from_secs(2));
    let before = shares(&arrivals.take());
    assert!(before[0] > 0.5 + MARGIN, "skewed to start with: {before:?}");

    let set = Instant::now();
    lab.sluicectl::<serde_json::Value>(&["balancer", "set", "--interval", "5s"]);
    let status = || lab.sluicectl::<StatusView>(&["status"]);
    while status().rebalances == 0 {
        assert!(
            set.elapsed() < INTERVAL + Duration::from_secs(2),
            "no rebalance within one interval of {INTERVAL:?}\n{}",
            central.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let rebalanced = set.elapsed();
    // Measure over more than an interval: the next rebalance must leave it alone.
    arrivals.take();
    thread::sleep(INTERVAL + Duration::from_secs(1));
    let after = shares(&arrivals.take());
    println!(
        "rebalance: shares {before:.3?} → {after:.3?}; rebalanced {rebalanced:?} after the interval was set to {INTERVAL:?}"
    );
    for (p, s) in after.iter().enumerate() {
        assert!(
            (s - 0.5).abs() <= MARGIN,
            "peer {} carries {:.1} % (share 50 ± {:.0} %)\n{}",
            peer_name(p),
            s * 100.0,
            MARGIN * 100.0,
            central.log_text()
        );
    }
    assert_eq!(status().rebalances, 1, "one rebalance, then stable");
    assert_eq!(
        lab.wait_assigned(6, Duration::from_secs(1)),
        [0, 1, 0, 1, 1, 1]
    );
}

#[test]
fn central_killed_and_restarted_keeps_forwarding_and_assignments() {
    if !privileged("netns_control_restart") {
        return;
    }
    let lab = Lab::new("cr", 2, 6);
    let (mut central, _agents) = lab.start_control_plane(&[]);
    let arrivals = Arrivals::start(&lab);
    let sender = Sender::start(&lab, &[100; 6]);
    let before = lab.wait_assigned(6, Duration::from_secs(5));
    let names_before = lab.assignments();
    thread::sleep(Duration::from_secs(1));

    let killed = Instant::now();
    central.kill();
    thread::sleep(Duration::from_millis(500));
    let central = lab.start_central_without_peers(&[]);
    let down = killed.elapsed();
    lab.wait_peers_online(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", central.log_text()));
    // Past the peer timeout: a Central that lost its peers or reshuffled would show it now.
    thread::sleep(PEER_TIMEOUT + Duration::from_secs(1));
    let names_after = lab.assignments();
    let sent = sender.stop();
    thread::sleep(Duration::from_millis(300));
    let seen = arrivals.take();

    assert_eq!(names_after, names_before, "assignments unchanged");
    let totals = Arrivals::totals(&seen);
    for (e, addr) in lab.exporter_addrs.iter().enumerate() {
        let got = totals.get(addr).copied().unwrap_or(0);
        assert_eq!(
            got,
            sent[e],
            "exporter {addr}: lost {} of {} datagrams across the restart\n{}",
            sent[e].saturating_sub(got),
            sent[e],
            central.log_text()
        );
        for (p, at) in seen.iter().enumerate() {
            assert!(
                p == before[e] || !at.contains_key(addr),
                "exporter {addr} reached peer {} besides its own",
                peer_name(p)
            );
        }
    }
    println!(
        "restart: Central down {down:.2?} (SIGKILL → ready); {} datagrams from 6 exporters, none lost, assignments unchanged",
        sent.iter().sum::<u64>()
    );
    assert!(
        central.log_text().contains("adopted"),
        "the restarted Central adopted the pinned link"
    );
}
