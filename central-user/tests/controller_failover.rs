//! Failover, rejoin, drain and pools without a healthy peer, on the in-memory data plane.

mod controller_support;

use std::time::{Duration, SystemTime};

use controller_support::{Lab, exporter};
use sluice_central::controller::memory::Verdict;
use sluice_central::controller::{BalancerConfig, DataPlane};
use sluice_common::protocol::{PeerMetrics, PeerStatus};
use sluice_common::{NO_PEER, event_kind, peer_state};

fn lab(peers: &[&str]) -> Lab {
    Lab::new(BalancerConfig::default(), peers)
}

fn status_of(lab: &Lab, name: &str) -> PeerStatus {
    lab.c
        .peer_views(lab.at(), SystemTime::now())
        .into_iter()
        .find(|p| p.name == name)
        .expect("known peer")
        .status
}

#[test]
fn new_exporters_are_pinned_where_the_table_sent_them() {
    let mut lab = lab(&["a", "b", "c"]);
    for i in 0..60 {
        let Verdict::Forward(peer) = lab.send(exporter(i), 100) else {
            panic!("not forwarded");
        };
        assert_eq!(lab.c.assignment(exporter(i)), Some((0, peer)));
        assert_eq!(
            lab.c.data_plane().exporter(exporter(i)).unwrap().peer_id,
            peer
        );
    }
    // Every peer got some; a second datagram follows the pin and raises no event.
    assert_eq!(lab.by_peer().len(), 3);
    let ev = lab.c.data_plane_mut().deliver(
        exporter(0),
        controller_support::LISTENER.parse().unwrap(),
        1,
        1,
    );
    assert!(ev.1.is_none());
    assert!(lab.c.take_dirty());
}

#[test]
fn failover_reassigns_within_one_tick_after_the_timeout() {
    let mut lab = lab(&["a", "b", "c"]);
    for i in 0..60 {
        lab.send(exporter(i), 100);
    }
    let c_id = lab.peer_id("c");
    let on_c = lab.by_peer()[&c_id].clone();
    assert!(!on_c.is_empty());
    lab.kill("c");
    // Registered at t0; silent since. Still ONLINE one tick before the timeout.
    lab.run(2, &[]);
    assert_eq!(status_of(&lab, "c"), PeerStatus::Online);
    let report = {
        lab.now = Duration::from_millis(3000);
        for n in ["a", "b"] {
            lab.c
                .heartbeat(n, PeerMetrics::default(), lab.at())
                .unwrap();
        }
        lab.c.tick(lab.at()).unwrap()
    };
    assert_eq!(report.offline, vec!["c".to_string()]);
    assert_eq!(report.moved, on_c.len());
    assert_eq!(status_of(&lab, "c"), PeerStatus::Offline);
    assert_eq!(
        lab.c.data_plane().peer(c_id).unwrap().state,
        peer_state::DOWN
    );
    assert!(!lab.by_peer().contains_key(&c_id));
    // Least loaded first: the survivors share c's exporters evenly.
    let per_peer: Vec<usize> = lab.by_peer().values().map(Vec::len).collect();
    assert!(
        per_peer.iter().max().unwrap() - per_peer.iter().min().unwrap() <= 1,
        "{per_peer:?}"
    );
    for addr in &on_c {
        assert!(matches!(lab.send(*addr, 100), Verdict::Forward(p) if p != c_id));
    }
    assert!(
        lab.c
            .data_plane()
            .pool_table(0)
            .unwrap()
            .iter()
            .all(|&p| p != c_id)
    );
    assert_eq!(lab.c.status().failovers, 1);
}

#[test]
fn recovered_peer_rejoins_empty_and_the_next_rebalance_uses_it() {
    let mut lab = Lab::new(
        BalancerConfig {
            rebalance_interval_s: 10,
            ..BalancerConfig::default()
        },
        &["a", "b"],
    );
    let rates: Vec<_> = (0..20).map(|i| (exporter(i), 10)).collect();
    lab.kill("b");
    lab.run(4, &rates);
    let b = lab.peer_id("b");
    assert_eq!(status_of(&lab, "b"), PeerStatus::Offline);
    assert!(!lab.by_peer().contains_key(&b));
    // b comes back: ONLINE, UP, in the table again, and empty.
    lab.alive.push("b".into());
    lab.run(1, &rates);
    assert_eq!(status_of(&lab, "b"), PeerStatus::Online);
    assert_eq!(lab.c.data_plane().peer(b).unwrap().state, peer_state::UP);
    assert!(lab.c.data_plane().pool_table(0).unwrap().contains(&b));
    assert!(!lab.by_peer().contains_key(&b));
    // The next rebalance (interval 10 s, counted from start) moves the fewest exporters that
    // bring both within 5 points of 50 %: 9 of 20 equal ones.
    lab.run(6, &rates);
    assert_eq!(lab.by_peer()[&b].len(), 9);
    assert_eq!(lab.c.status().rebalances, 1);
}

#[test]
fn drain_moves_exporters_away_and_undrain_restores() {
    let mut lab = lab(&["a", "b", "c"]);
    for i in 0..30 {
        lab.send(exporter(i), 100);
    }
    let b = lab.peer_id("b");
    lab.c.drain("b", lab.at()).unwrap();
    assert_eq!(status_of(&lab, "b"), PeerStatus::Draining);
    assert!(!lab.by_peer().contains_key(&b));
    assert_eq!(
        lab.c.data_plane().peer(b).unwrap().state,
        peer_state::DRAINING
    );
    assert!(!lab.c.data_plane().pool_table(0).unwrap().contains(&b));
    // Heartbeats do not end a drain; undrain does.
    lab.run(2, &[]);
    assert_eq!(status_of(&lab, "b"), PeerStatus::Draining);
    lab.c.undrain("b", lab.at()).unwrap();
    assert_eq!(status_of(&lab, "b"), PeerStatus::Online);
    assert_eq!(lab.c.data_plane().peer(b).unwrap().state, peer_state::UP);
    assert!(lab.c.data_plane().pool_table(0).unwrap().contains(&b));
}

#[test]
fn pool_without_healthy_peer_fills_its_table_with_no_peer_and_says_so() {
    let mut lab = lab(&["a"]);
    assert!(lab.c.status().pools_without_healthy_peer.is_empty());
    lab.send(exporter(0), 100);
    lab.kill("a");
    lab.run(3, &[]);
    assert!(
        lab.c
            .data_plane()
            .pool_table(0)
            .unwrap()
            .iter()
            .all(|&p| p == NO_PEER)
    );
    let status = lab.c.status();
    assert_eq!(
        status.pools_without_healthy_peer,
        vec!["default".to_string()]
    );
    assert_eq!(status.pools[0].healthy_peers, 0);
    // New exporters are dropped (XDP counts them) and not pinned anywhere.
    assert_eq!(lab.send(exporter(1), 100), Verdict::Drop);
    assert_eq!(lab.c.assignment(exporter(1)), None);
    // The stranded exporter stays on its (down) peer until someone can take it.
    let a = lab.peer_id("a");
    assert_eq!(lab.c.assignment(exporter(0)), Some((0, a)));
    // An empty new pool is flagged too.
    lab.c.create_pool("spare").unwrap();
    assert!(
        lab.c
            .status()
            .pools_without_healthy_peer
            .contains(&"spare".to_string())
    );
}

#[test]
fn peer_down_event_repins_where_the_table_sent_the_exporter() {
    let mut lab = lab(&["a", "b"]);
    lab.send(exporter(0), 100);
    let (_, first) = lab.c.assignment(exporter(0)).unwrap();
    // The XDP program saw the pinned peer down before the controller did.
    let entry = lab.c.data_plane().peer(first).unwrap();
    lab.c
        .data_plane_mut()
        .set_peer(
            first,
            sluice_common::PeerEntry {
                state: peer_state::DOWN,
                ..entry
            },
        )
        .unwrap();
    let dst = controller_support::LISTENER.parse().unwrap();
    let (_, ev) = lab.c.data_plane_mut().deliver(exporter(0), dst, 1, 1);
    let ev = ev.unwrap();
    assert_eq!(ev.kind, event_kind::PEER_DOWN);
    // The controller still thinks `first` is healthy: the state wins, the entry is rewritten.
    assert_eq!(lab.c.on_exporter_event(&ev, lab.at()).unwrap(), Some(first));
}

#[test]
fn pools_listeners_and_membership() {
    let mut lab = lab(&["a", "b"]);
    let id = lab.c.create_pool("edge").unwrap();
    assert_eq!(id, 1);
    assert!(lab.c.create_pool("edge").is_err());
    lab.c
        .set_listener("198.18.0.1:4739".parse().unwrap(), "edge")
        .unwrap();
    assert_eq!(
        lab.c
            .data_plane()
            .listener("198.18.0.1:4739".parse().unwrap()),
        Some(1)
    );
    lab.c
        .set_source_group("198.18.64.0/18".parse().unwrap(), "edge")
        .unwrap();
    assert_eq!(
        lab.c
            .data_plane()
            .source_group("198.18.64.9".parse().unwrap()),
        Some(1)
    );
    // A pool in use cannot go.
    assert!(lab.c.delete_pool("edge").is_err());
    // Moving b to edge: its exporters in default move to a, edge's table gets b.
    for i in 0..20 {
        lab.send(exporter(i), 100);
    }
    let b = lab.peer_id("b");
    lab.c.assign_peer("edge", "b", Some(3), lab.at()).unwrap();
    assert!(!lab.by_peer().contains_key(&b));
    assert!(
        lab.c
            .data_plane()
            .pool_table(1)
            .unwrap()
            .iter()
            .all(|&p| p == b)
    );
    assert!(!lab.c.data_plane().pool_table(0).unwrap().contains(&b));
    let edge = lab
        .c
        .pool_views()
        .into_iter()
        .find(|p| p.name == "edge")
        .unwrap();
    assert_eq!(edge.peers[0].weight, 3);
    // Unassign, drop the listener and source group: now it can be deleted.
    lab.c.unassign_peer("edge", "b", lab.at()).unwrap();
    lab.c
        .remove_listener("198.18.0.1:4739".parse().unwrap())
        .unwrap();
    lab.c
        .remove_source_group("198.18.64.0/18".parse().unwrap())
        .unwrap();
    lab.c.delete_pool("edge").unwrap();
    assert!(matches!(
        lab.c.assign_peer("edge", "b", None, lab.at()),
        Err(sluice_central::controller::ControllerError::UnknownPool(_))
    ));
    assert!(DataPlane::exporters(lab.c.data_plane()).unwrap().len() == 20);
}

#[test]
fn name_clash_with_an_online_peer_is_refused() {
    let mut lab = lab(&["a"]);
    let mut other = controller_support::registration("a", 99);
    assert!(lab.c.register_peer(&other, lab.at()).is_err());
    // Once the first installation is gone, the name may be taken over.
    lab.kill("a");
    lab.run(3, &[]);
    other.data_addr = "198.18.2.99".parse().unwrap();
    lab.c.register_peer(&other, lab.at()).unwrap();
    assert_eq!(status_of(&lab, "a"), PeerStatus::Online);
}

#[test]
fn frequent_ticks_detect_failure_within_a_tenth_of_a_second() {
    let mut lab = lab(&["a", "b"]);
    for i in 0..10 {
        lab.send(exporter(i), 100);
    }
    lab.kill("b");
    let b = lab.peer_id("b");
    // Tick every 100 ms; b registered at t0 and never heartbeat again.
    let mut offline_at = None;
    for step in 1..=40u64 {
        lab.now = Duration::from_millis(100 * step);
        lab.c
            .heartbeat("a", PeerMetrics::default(), lab.at())
            .unwrap();
        if !lab.c.tick(lab.at()).unwrap().offline.is_empty() {
            offline_at = Some(lab.now);
            break;
        }
    }
    assert_eq!(offline_at, Some(Duration::from_millis(3000)));
    assert!(!lab.by_peer().contains_key(&b));
}

#[test]
fn exporters_stranded_on_dead_peers_go_to_the_first_peer_back() {
    let mut lab = lab(&["a", "b"]);
    for i in 0..10 {
        lab.send(exporter(i), 100);
    }
    lab.kill("a");
    lab.kill("b");
    lab.run(4, &[]);
    assert_eq!(lab.c.status().pools_without_healthy_peer.len(), 1);
    assert_eq!(lab.by_peer().len(), 2);
    lab.alive.push("b".into());
    lab.run(1, &[]);
    let b = lab.peer_id("b");
    assert_eq!(lab.by_peer().keys().copied().collect::<Vec<_>>(), vec![b]);
}

#[test]
fn failover_fills_survivors_by_weight() {
    let mut lab = lab(&["a", "b", "c"]);
    lab.c
        .assign_peer("default", "b", Some(3), lab.at())
        .unwrap();
    // Everything starts on c: a and b are drained while the exporters appear.
    lab.c.drain("a", lab.at()).unwrap();
    lab.c.drain("b", lab.at()).unwrap();
    let rates: Vec<_> = (0..40).map(|i| (exporter(i), 10)).collect();
    lab.run(1, &rates);
    lab.c.undrain("a", lab.at()).unwrap();
    lab.c.undrain("b", lab.at()).unwrap();
    lab.run(1, &rates);
    let c = lab.peer_id("c");
    assert_eq!(lab.by_peer()[&c].len(), 40);
    lab.kill("c");
    lab.run(3, &rates);
    let (a, b) = (lab.peer_id("a"), lab.peer_id("b"));
    let on = lab.by_peer();
    assert_eq!((on[&a].len(), on[&b].len()), (10, 30));
}

fn tick_at(lab: &mut Lab, ms: u64, alive: &[&str]) -> Vec<String> {
    lab.now = Duration::from_millis(ms);
    for n in alive {
        lab.c
            .heartbeat(n, PeerMetrics::default(), lab.at())
            .expect("heartbeat");
    }
    lab.c.tick(lab.at()).expect("tick").offline
}

#[test]
fn a_lost_session_fails_over_after_the_grace_not_the_whole_timeout() {
    let mut lab = lab(&["a", "b"]);
    for i in 0..20 {
        lab.send(exporter(i), 100);
    }
    lab.kill("b");
    assert!(tick_at(&mut lab, 500, &["a", "b"]).is_empty());
    // b's process dies at 0.6 s: its TLS session breaks at once.
    lab.now = Duration::from_millis(600);
    lab.c.session_lost("b", lab.at()).unwrap();
    assert!(
        tick_at(&mut lab, 1500, &["a"]).is_empty(),
        "still within the 1 s grace"
    );
    assert_eq!(
        tick_at(&mut lab, 1600, &["a"]),
        vec!["b".to_string()],
        "1 s after the loss, not 3 s after the last heartbeat"
    );
    assert_eq!(status_of(&lab, "b"), PeerStatus::Offline);
}

#[test]
fn a_peer_that_reconnects_within_the_grace_keeps_its_exporters() {
    let mut lab = lab(&["a", "b"]);
    for i in 0..20 {
        lab.send(exporter(i), 100);
    }
    let before = lab.by_peer();
    lab.now = Duration::from_millis(600);
    lab.c.session_lost("b", lab.at()).unwrap();
    // b restarts and heartbeats again half a second later.
    assert!(tick_at(&mut lab, 1100, &["a", "b"]).is_empty());
    assert!(tick_at(&mut lab, 3000, &["a", "b"]).is_empty());
    assert_eq!(status_of(&lab, "b"), PeerStatus::Online);
    assert_eq!(lab.by_peer(), before, "nothing moved");
}
