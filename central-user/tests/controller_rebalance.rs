//! Sampling, rebalancing and template-first moves, on the in-memory data plane.

mod controller_support;

use std::time::{Duration, SystemTime};

use controller_support::{Lab, exporter};
use sluice_central::controller::BalancerConfig;
use sluice_common::protocol::Templates;

fn short_interval() -> BalancerConfig {
    BalancerConfig {
        rebalance_interval_s: 10,
        ..BalancerConfig::default()
    }
}

/// Load share per peer (percent of the pool's pps) from the exporter table.
fn shares(lab: &Lab) -> Vec<(String, f64)> {
    let ex = lab.c.exporter_views(lab.at(), SystemTime::now());
    let total: f64 = ex.iter().map(|e| e.pps).sum();
    let mut out: Vec<(String, f64)> = lab
        .c
        .peer_views(lab.at(), SystemTime::now())
        .into_iter()
        .map(|p| {
            let load: f64 = ex
                .iter()
                .filter(|e| e.peer.as_deref() == Some(p.name.as_str()))
                .map(|e| e.pps)
                .sum();
            (p.name, 100.0 * load / total)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn sampler_smooths_rates_and_marks_last_seen() {
    let mut lab = Lab::new(short_interval(), &["a"]);
    let rates = [(exporter(0), 20), (exporter(1), 5)];
    lab.run(40, &rates);
    let ex = lab.c.exporter_views(lab.at(), SystemTime::now());
    // Four time constants: within 2 % of the true rate.
    assert!((ex[0].pps - 20.0).abs() < 1.0, "{}", ex[0].pps);
    assert!((ex[1].pps - 5.0).abs() < 0.25, "{}", ex[1].pps);
    assert!((ex[0].bps - 20.0 * 500.0 * 8.0).abs() < 8000.0);
    assert!(ex[0].last_seen_unix_ms.is_some());
    // Silence decays the rate; last seen stays at the last datagram.
    // The wall clock advances with the virtual one.
    let wall = |lab: &Lab| SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + lab.now;
    let seen = lab.c.exporter_views(lab.at(), wall(&lab))[1].last_seen_unix_ms;
    lab.run(10, &[(exporter(0), 20)]);
    let ex = lab.c.exporter_views(lab.at(), wall(&lab));
    assert!(ex[1].pps < 2.5);
    assert_eq!(ex[1].last_seen_unix_ms, seen);
    assert_eq!(
        ex[0].last_seen_unix_ms,
        Some(1_700_000_000_000 + lab.now.as_millis() as u64)
    );
}

#[test]
fn skewed_rates_converge_within_the_margin_after_one_interval() {
    let mut lab = Lab::new(short_interval(), &["a", "b", "c"]);
    // Everything starts on a: the others are drained while the exporters appear.
    for name in ["b", "c"] {
        lab.c.drain(name, lab.at()).unwrap();
    }
    let rates: Vec<_> = (0..12).map(|i| (exporter(i), 1 + 3 * i as u64)).collect();
    lab.run(1, &rates);
    assert_eq!(lab.by_peer().len(), 1);
    for name in ["b", "c"] {
        lab.c.undrain(name, lab.at()).unwrap();
    }
    // Plan shows the work without doing it.
    lab.run(5, &rates);
    let plans = lab.c.plan(lab.at());
    assert!(!plans[0].plan.moves.is_empty());
    assert_eq!(lab.by_peer().len(), 1);
    let view = lab.c.plan_view(&plans, false);
    assert_eq!(view.moves.len(), plans[0].plan.moves.len());
    assert!(
        view.moves
            .iter()
            .all(|m| m.from == "a" && m.pool == "default")
    );
    // The interval passes: one rebalance brings every peer within 5 points of a third.
    lab.run(5, &rates);
    assert_eq!(lab.c.status().rebalances, 1);
    for (name, share) in shares(&lab) {
        assert!(share <= 100.0 / 3.0 + 5.0 + 0.5, "{name}: {share:.1} %");
    }
    // Steady rates: the next intervals move nothing.
    let moves = lab.c.status().moves;
    lab.run(25, &rates);
    assert_eq!(lab.c.status().moves, moves);
}

#[test]
fn pinned_exporters_stay_and_run_now_applies_at_once() {
    let mut lab = Lab::new(short_interval(), &["a", "b"]);
    lab.c.drain("b", lab.at()).unwrap();
    let rates: Vec<_> = (0..6).map(|i| (exporter(i), 10)).collect();
    lab.run(1, &rates);
    for i in 0..6 {
        lab.c.pin(exporter(i)).unwrap();
    }
    lab.c.unpin(exporter(5)).unwrap();
    lab.c.undrain("b", lab.at()).unwrap();
    lab.run(3, &rates);
    let plans = lab.c.run_now(lab.at()).unwrap();
    let moved: Vec<_> = plans[0].plan.moves.iter().map(|m| m.exporter).collect();
    assert_eq!(moved, vec![exporter(5)]);
    lab.answer_peers();
    let b = lab.peer_id("b");
    assert_eq!(lab.c.assignment(exporter(5)).unwrap().1, b);
    assert!(matches!(
        lab.c.pin("203.0.113.1".parse().unwrap()),
        Err(sluice_central::controller::ControllerError::UnknownExporter(_))
    ));
}

#[test]
fn moves_install_templates_before_flipping() {
    let mut lab = Lab::new(short_interval(), &["a", "b"]);
    lab.c.drain("b", lab.at()).unwrap();
    lab.run(1, &[(exporter(0), 1), (exporter(1), 1)]);
    lab.c.undrain("b", lab.at()).unwrap();
    let a = lab.peer_id("a");
    let b = lab.peer_id("b");
    let t = |domain| Templates {
        exporter: exporter(0),
        observation_domain: domain,
        bytes: vec![domain as u8; 8],
    };
    lab.c.report_templates("a", t(7)).unwrap();
    lab.c.report_templates("a", t(3)).unwrap();
    assert_eq!(lab.c.templates_for(exporter(0)), vec![t(3), t(7)]);
    // Templates of an exporter not pinned yet are kept; the domain limit holds.
    let early = "198.18.99.1".parse().unwrap();
    lab.c
        .report_templates(
            "b",
            Templates {
                exporter: early,
                ..t(1)
            },
        )
        .unwrap();
    assert_eq!(lab.c.templates_for(early).len(), 1);
    for domain in 2..=64 {
        lab.c
            .report_templates(
                "b",
                Templates {
                    exporter: early,
                    ..t(domain)
                },
            )
            .unwrap();
    }
    assert!(
        lab.c
            .report_templates(
                "b",
                Templates {
                    exporter: early,
                    ..t(99)
                }
            )
            .is_err()
    );
    assert!(lab.c.report_templates("nobody", t(1)).is_err());

    // Manual move: first the current peer reports everything it has (it may have received a
    // template since its last report), then the templates go to the destination, and the map
    // entry waits for its acknowledgement.
    lab.c.move_exporter(exporter(0), "b", lab.at()).unwrap();
    assert!(
        lab.c.take_install_requests().is_empty(),
        "nothing installed before the sync"
    );
    let syncs = lab.c.take_sync_requests();
    assert_eq!(syncs.len(), 1);
    assert_eq!(
        (syncs[0].peer.as_str(), syncs[0].exporter),
        ("a", exporter(0))
    );
    // What a learned just before the sync answer is part of the hand-over.
    lab.c.report_templates("a", t(9)).unwrap();
    assert!(
        lab.c.take_install_requests().is_empty(),
        "a still has the exporter"
    );
    assert_eq!(
        lab.c
            .templates_synced("b", syncs[0].request_id, lab.at())
            .unwrap(),
        0
    );
    assert_eq!(
        lab.c
            .templates_synced("a", syncs[0].request_id + 1, lab.at())
            .unwrap(),
        0
    );
    assert_eq!(
        lab.c
            .templates_synced("a", syncs[0].request_id, lab.at())
            .unwrap(),
        1
    );
    assert_eq!(lab.c.data_plane().exporter(exporter(0)).unwrap().peer_id, a);
    let reqs = lab.c.take_install_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!((reqs[0].peer_id, reqs[0].peer.as_str()), (b, "b"));
    assert_eq!(reqs[0].templates, vec![t(3), t(7), t(9)]);
    assert_eq!(lab.c.status().pending_installs, 1);
    // A wrong peer or id flips nothing.
    assert_eq!(
        lab.c
            .templates_installed("a", reqs[0].request_id, lab.at())
            .unwrap(),
        0
    );
    assert_eq!(
        lab.c
            .templates_installed("b", reqs[0].request_id + 1, lab.at())
            .unwrap(),
        0
    );
    assert_eq!(
        lab.c
            .templates_installed("b", reqs[0].request_id, lab.at())
            .unwrap(),
        1
    );
    assert_eq!(lab.c.data_plane().exporter(exporter(0)).unwrap().peer_id, b);
    assert!(lab.c.exporter_views(lab.at(), SystemTime::now())[0].pinned);

    // A report from a that arrives after the flip (a template in flight at the move) is
    // forwarded to b at once, and kept next to b's own reports: b merges by the exporter's
    // stamps when it installs, so Central keeps every recent reporter's copy.
    let late = Templates {
        bytes: vec![77; 4],
        ..t(7)
    };
    lab.c.report_templates("a", late.clone()).unwrap();
    let forwarded = lab.c.take_install_requests();
    assert_eq!(forwarded.len(), 1);
    assert_eq!(
        (forwarded[0].peer.as_str(), &forwarded[0].templates),
        ("b", &vec![late.clone()])
    );
    assert_eq!(lab.c.status().templates_forwarded, 1);
    let from_b = Templates {
        bytes: vec![78; 4],
        ..t(7)
    };
    lab.c.report_templates("b", from_b.clone()).unwrap();
    assert!(
        lab.c.take_install_requests().is_empty(),
        "b has the exporter: nothing to forward"
    );
    assert_eq!(
        lab.c.templates_for(exporter(0)),
        vec![t(3), late, from_b, t(9)]
    );

    // A peer that answers neither the sync nor the installation delays the move by at most
    // the install timeout (2 s) per step.
    lab.silent = vec!["a".into(), "b".into()];
    lab.c.move_exporter(exporter(0), "a", lab.at()).unwrap();
    lab.run(1, &[]);
    assert_eq!(lab.syncs.len(), 1);
    assert!(lab.installs.is_empty());
    lab.run(1, &[]);
    assert_eq!(
        lab.installs.len(),
        1,
        "sync timed out: installed with what b reported"
    );
    assert_eq!(lab.c.data_plane().exporter(exporter(0)).unwrap().peer_id, b);
    lab.run(2, &[]);
    assert_eq!(lab.c.data_plane().exporter(exporter(0)).unwrap().peer_id, a);
    lab.silent.clear();

    // An exporter without templates still waits for its current peer's sync (it may have
    // learned its first template a moment ago), and moves at once when there is none.
    let before = lab.c.assignment(exporter(1)).unwrap().1;
    let other = if before == a { "b" } else { "a" };
    lab.c.move_exporter(exporter(1), other, lab.at()).unwrap();
    assert_eq!(
        lab.c.data_plane().exporter(exporter(1)).unwrap().peer_id,
        before
    );
    lab.answer_peers();
    assert_ne!(
        lab.c.data_plane().exporter(exporter(1)).unwrap().peer_id,
        before
    );
    assert!(lab.c.take_install_requests().is_empty());
}

#[test]
fn failover_does_not_wait_for_templates_but_still_sends_them() {
    let mut lab = Lab::new(short_interval(), &["a", "b"]);
    lab.c.drain("b", lab.at()).unwrap();
    lab.run(1, &[(exporter(0), 1)]);
    lab.c.undrain("b", lab.at()).unwrap();
    lab.c
        .report_templates(
            "a",
            Templates {
                exporter: exporter(0),
                observation_domain: 0,
                bytes: vec![1, 2, 3],
            },
        )
        .unwrap();
    lab.kill("a");
    lab.now += Duration::from_secs(2);
    lab.run(1, &[]);
    let b = lab.peer_id("b");
    assert_eq!(lab.c.data_plane().exporter(exporter(0)).unwrap().peer_id, b);
    assert!(lab.syncs.is_empty(), "a dead peer is not asked");
    assert_eq!(lab.installs.len(), 1);
    assert_eq!(lab.installs[0].peer_id, b);
}

#[test]
fn balancer_settings_are_validated() {
    let mut lab = Lab::new(short_interval(), &["a"]);
    let bad = BalancerConfig {
        rebalance_interval_s: 0,
        ..BalancerConfig::default()
    };
    assert!(lab.c.set_balancer(bad).is_err());
    let good = BalancerConfig {
        distribution_margin_pct: 10.0,
        ..BalancerConfig::default()
    };
    lab.c.set_balancer(good).unwrap();
    assert_eq!(lab.c.balancer_settings().distribution_margin_pct, 10.0);
    assert!(lab.c.take_dirty());
}
