//! Model-based property test: random operator, peer and traffic events against the controller
//! on the in-memory data plane; after every step the maps must agree with the controller and
//! with the rules of DESIGN.md §4.
#![expect(
    clippy::unwrap_used,
    reason = "the model's step and check helpers: a failed call is a failed test"
)]

mod controller_support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use controller_support::{Lab, exporter};
use proptest::prelude::*;
use sluice_central::controller::{BalancerConfig, Controller, DataPlane};
use sluice_common::protocol::{PeerMetrics, PeerStatus, Templates};
use sluice_common::{NO_PEER, peer_state};

const PEERS: [&str; 3] = ["a", "b", "c"];
const EXPORTERS: usize = 24;

#[derive(Clone, Debug)]
enum Op {
    Send { exporter: usize, packets: u64 },
    Advance { ms: u64 },
    Kill(usize),
    Revive(usize),
    Drain(usize),
    Undrain(usize),
    Pin(usize),
    Unpin(usize),
    Move { exporter: usize, peer: usize },
    Templates { exporter: usize, ack: bool },
    RunNow,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PEERS.len();
    let e = 0..EXPORTERS;
    prop_oneof![
        6 => (e.clone(), 1u64..20).prop_map(|(exporter, packets)| Op::Send { exporter, packets }),
        6 => (100u64..2500).prop_map(|ms| Op::Advance { ms }),
        2 => p.clone().prop_map(Op::Kill),
        2 => p.clone().prop_map(Op::Revive),
        1 => p.clone().prop_map(Op::Drain),
        1 => p.clone().prop_map(Op::Undrain),
        1 => e.clone().prop_map(Op::Pin),
        1 => e.clone().prop_map(Op::Unpin),
        1 => (e.clone(), p).prop_map(|(exporter, peer)| Op::Move { exporter, peer }),
        1 => (e, any::<bool>()).prop_map(|(exporter, ack)| Op::Templates { exporter, ack }),
        1 => Just(Op::RunNow),
        1 => Just(Op::Restart),
    ]
}

fn apply(lab: &mut Lab, op: &Op) {
    let now = lab.at();
    match *op {
        Op::Send {
            exporter: i,
            packets,
        } => {
            for _ in 0..packets {
                lab.send(exporter(i), 300);
            }
        }
        Op::Advance { ms } => {
            lab.now += Duration::from_millis(ms);
            let now = lab.at();
            for name in lab.alive.clone() {
                lab.c.heartbeat(&name, PeerMetrics::default(), now).unwrap();
            }
            lab.c.tick(now).unwrap();
        }
        Op::Kill(p) => lab.kill(PEERS[p]),
        Op::Revive(p) => {
            if !lab.alive.iter().any(|n| n == PEERS[p]) {
                lab.alive.push(PEERS[p].into());
            }
        }
        Op::Drain(p) => lab.c.drain(PEERS[p], now).unwrap(),
        Op::Undrain(p) => lab.c.undrain(PEERS[p], now).unwrap(),
        Op::Pin(i) => {
            let _ = lab.c.pin(exporter(i));
        }
        Op::Unpin(i) => {
            let _ = lab.c.unpin(exporter(i));
        }
        Op::Move { exporter: i, peer } => {
            // Refused for unknown exporters and ineligible peers; that is fine here.
            let _ = lab.c.move_exporter(exporter(i), PEERS[peer], now);
        }
        Op::Templates { exporter: i, ack } => {
            let t = Templates {
                exporter: exporter(i),
                observation_domain: 0,
                bytes: vec![i as u8],
            };
            lab.c.report_templates("a", t).unwrap();
            for req in lab.c.take_install_requests() {
                assert!(!req.templates.is_empty());
                if ack {
                    lab.c
                        .templates_installed(&req.peer, req.request_id, now)
                        .unwrap();
                }
            }
        }
        Op::RunNow => {
            lab.c.run_now(now).unwrap();
        }
        Op::Restart => {
            let before = lab.c.data_plane().exporters().unwrap();
            let snapshot = lab.c.snapshot();
            let dp = lab.c.data_plane().clone();
            let (c, report) = Controller::restore(dp, snapshot.clone(), now).unwrap();
            assert!(report.is_clean(), "{report:?}");
            assert_eq!(c.snapshot(), snapshot);
            assert_eq!(c.data_plane().exporters().unwrap(), before);
            lab.c = c;
        }
    }
}

fn check(lab: &Lab) {
    let views = lab.c.peer_views(lab.at(), SystemTime::now());
    let status: BTreeMap<u32, PeerStatus> = views.iter().map(|p| (p.id, p.status)).collect();
    let dp = lab.c.data_plane();
    // PEERS mirrors the derived status.
    for (&id, &st) in &status {
        let expected = match st {
            PeerStatus::Online => peer_state::UP,
            PeerStatus::Draining => peer_state::DRAINING,
            PeerStatus::Offline => peer_state::DOWN,
        };
        assert_eq!(dp.peer(id).unwrap().state, expected, "peer {id}");
    }
    // The table holds exactly the ONLINE peers, or only NO_PEER and a loud status.
    let online: Vec<u32> = status
        .iter()
        .filter(|(_, s)| **s == PeerStatus::Online)
        .map(|(id, _)| *id)
        .collect();
    let table = dp.pool_table(0).unwrap();
    if online.is_empty() {
        assert!(table.iter().all(|&p| p == NO_PEER));
        assert_eq!(
            lab.c.status().pools_without_healthy_peer,
            vec!["default".to_string()]
        );
    } else {
        assert!(table.iter().all(|p| online.contains(p)));
        for id in &online {
            assert!(table.contains(id));
        }
        assert!(lab.c.status().pools_without_healthy_peer.is_empty());
    }
    // EXPORTERS and the controller agree; nothing sits on a dead peer while a live one exists.
    let entries = dp.exporters().unwrap();
    assert_eq!(
        entries.len(),
        lab.c.exporter_views(lab.at(), SystemTime::now()).len()
    );
    for (addr, v) in entries {
        assert_eq!(lab.c.assignment(addr), Some((v.pool_id, v.peer_id)));
        if status[&v.peer_id] == PeerStatus::Offline {
            assert!(online.is_empty(), "{addr} left on dead peer {}", v.peer_id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn controller_keeps_the_maps_consistent(ops in prop::collection::vec(op(), 1..60)) {
        let mut lab = Lab::new(
            BalancerConfig { rebalance_interval_s: 30, ..BalancerConfig::default() },
            &PEERS,
        );
        for op in &ops {
            apply(&mut lab, op);
            check(&lab);
        }
    }
}
