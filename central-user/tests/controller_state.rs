//! Persistence: the state file, restart without reshuffling, reconciliation, corruption.

mod controller_support;

use std::fs;
use std::time::Duration;

use controller_support::{Lab, exporter};
use sluice_central::controller::{BalancerConfig, Controller, DataPlane, MemoryDataPlane};
use sluice_central::state::{State, StateError, StateStore};
use sluice_common::ExporterValue;

/// A running lab with traffic, failover and a pin behind it.
fn busy_lab() -> Lab {
    let mut lab = Lab::new(
        BalancerConfig {
            rebalance_interval_s: 10,
            ..BalancerConfig::default()
        },
        &["a", "b", "c"],
    );
    lab.c.create_pool("edge").expect("pool");
    lab.c
        .set_source_group("198.18.200.0/24".parse().expect("cidr"), "edge")
        .expect("source group");
    let rates: Vec<_> = (0..40).map(|i| (exporter(i), 1 + i as u64 % 7)).collect();
    lab.run(3, &rates);
    lab.c.pin(exporter(3)).expect("pin");
    lab.kill("c");
    lab.run(12, &rates);
    lab.c.drain("b", lab.at()).expect("drain");
    // The peers answer the drain's template syncs at once, as real ones do.
    lab.answer_peers();
    lab
}

fn state_of(lab: &Lab) -> State {
    State {
        controller: lab.c.snapshot(),
    }
}

#[test]
fn restart_from_state_keeps_assignments_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    assert!(store.load().unwrap().is_none());
    let lab = busy_lab();
    let before = lab.c.data_plane().exporters().unwrap();
    let state = state_of(&lab);
    store.save(&state).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded, state);

    // Same maps (pinned across the restart): nothing to reconcile, nothing moves.
    let now = lab.at() + Duration::from_secs(1);
    let (c, report) =
        Controller::restore(lab.c.data_plane().clone(), loaded.controller.clone(), now).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(c.data_plane().exporters().unwrap(), before);
    let bytes = |s: &State| serde_json::to_vec(s).unwrap();
    let again = State {
        controller: c.snapshot(),
    };
    assert_eq!(bytes(&again), bytes(&state));
    // Tables and peers are rebuilt identically too.
    for pool in 0..2 {
        assert_eq!(
            c.data_plane().pool_table(pool),
            lab.c.data_plane().pool_table(pool)
        );
    }
    for peer in 0..3 {
        assert_eq!(c.data_plane().peer(peer), lab.c.data_plane().peer(peer));
    }

    // Maps lost (e.g. bpffs unmounted): everything is written back from the state.
    let (c, report) = Controller::restore(MemoryDataPlane::new(), loaded.controller, now).unwrap();
    assert_eq!(report.restored.len(), before.len());
    assert_eq!(c.data_plane().exporters().unwrap(), before);
}

#[test]
fn restored_peers_get_a_full_timeout_and_nothing_moves() {
    let lab = busy_lab();
    let before = lab.c.data_plane().exporters().unwrap();
    let now = lab.at() + Duration::from_secs(60);
    let (mut c, _) =
        Controller::restore(lab.c.data_plane().clone(), lab.c.snapshot(), now).unwrap();
    // Ticks before the peers reconnect: no failover, no rebalance, no move.
    c.tick(now + Duration::from_millis(1500)).unwrap();
    assert_eq!(c.data_plane().exporters().unwrap(), before);
    assert_eq!(c.status().failovers, 0);
    assert!(c.plan(now).iter().all(|p| p.plan.moves.is_empty()));
}

#[test]
fn restart_reconciles_the_maps_with_the_state() {
    let lab = busy_lab();
    let snapshot = lab.c.snapshot();
    let mut dp = lab.c.data_plane().clone();
    let (a, b) = (exporter(0), exporter(1));
    let va = dp.exporter(a).unwrap();
    dp.remove_exporter(a).unwrap();
    let vb = dp.exporter(b).unwrap();
    dp.set_exporter(
        b,
        ExporterValue {
            peer_id: (vb.peer_id + 1) % 2,
            ..vb
        },
    )
    .unwrap();
    // Pinned by XDP's last run after the state was written: a known peer, kept.
    let late = "198.18.99.1".parse().unwrap();
    dp.set_exporter(
        late,
        ExporterValue {
            peer_id: 0,
            pool_id: 0,
        },
    )
    .unwrap();
    // On a peer the state never heard of: removed.
    let stray = "198.18.99.2".parse().unwrap();
    dp.set_exporter(
        stray,
        ExporterValue {
            peer_id: 77,
            pool_id: 0,
        },
    )
    .unwrap();

    let (mut c, report) = Controller::restore(dp, snapshot, lab.at()).unwrap();
    assert_eq!(report.restored, vec![a]);
    assert_eq!(report.overwritten, vec![b]);
    assert_eq!(report.adopted, vec![late]);
    assert_eq!(report.removed, vec![stray]);
    assert_eq!(c.data_plane().exporter(a), Some(va));
    assert_eq!(c.data_plane().exporter(b), Some(vb));
    assert_eq!(c.data_plane().exporter(stray), None);
    assert_eq!(c.assignment(late), Some((0, 0)));
    assert!(c.take_dirty());
}

#[test]
fn inconsistent_state_is_refused() {
    let lab = busy_lab();
    let mut s = lab.c.snapshot();
    s.exporters[0].peer = 200;
    let err = Controller::restore(MemoryDataPlane::new(), s, lab.at())
        .err()
        .unwrap();
    assert!(err.to_string().contains("unknown peer 200"), "{err}");
}

#[test]
fn previous_copy_is_kept_and_corruption_is_reported_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let mut lab = busy_lab();
    let first = state_of(&lab);
    store.save(&first).unwrap();
    assert!(!store.prev_path().exists());
    lab.c.unpin(exporter(3)).unwrap();
    let second = state_of(&lab);
    store.save(&second).unwrap();
    // The previous good copy is the first state, byte for byte.
    let prev = fs::read(store.prev_path()).unwrap();
    assert_eq!(StateStore::new(dir.path()).load().unwrap().unwrap(), second);
    let prev_dir = tempfile::tempdir().unwrap();
    fs::write(prev_dir.path().join("state.json"), &prev).unwrap();
    assert_eq!(
        StateStore::new(prev_dir.path()).load().unwrap().unwrap(),
        first
    );

    // One flipped byte inside the body: checksum mismatch, reported with the path.
    let mut bytes = fs::read(store.path()).unwrap();
    let at = bytes.windows(6).position(|w| w == b"pinned").unwrap();
    bytes[at] = b'P';
    fs::write(store.path(), &bytes).unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }));
    let msg = err.to_string();
    assert!(msg.contains(&store.path().display().to_string()), "{msg}");
    assert!(msg.contains("checksum"), "{msg}");
    // Saving over a corrupt file is refused: neither it nor `.prev` is touched.
    assert!(matches!(
        store.save(&second),
        Err(StateError::Corrupt { .. })
    ));
    assert_eq!(fs::read(store.path()).unwrap(), bytes);
    assert_eq!(fs::read(store.prev_path()).unwrap(), prev);

    // Truncated file: not JSON at all.
    fs::write(store.path(), &bytes[..bytes.len() / 2]).unwrap();
    let err = store.load().unwrap_err();
    assert!(
        err.to_string()
            .contains(&store.path().display().to_string())
    );
    assert_eq!(fs::read(store.prev_path()).unwrap(), prev);
}

#[test]
fn other_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    store.save(&State::default()).unwrap();
    let text = fs::read_to_string(store.path()).unwrap();
    fs::write(
        store.path(),
        text.replacen("\"version\": 1", "\"version\": 2", 1),
    )
    .unwrap();
    assert!(matches!(
        store.load(),
        Err(StateError::Version { found: 2, .. })
    ));
}
