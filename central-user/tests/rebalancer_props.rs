//! Property tests of the rebalancer against a brute-force oracle.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use sluice_central::rebalancer::{
    ExporterInput, Input, Mode, PeerInput, Plan, UnplaceableReason, plan,
};

const MARGIN: f64 = 5.0;

fn addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 1, i as u8))
}

/// Per-peer capacity: (weighted share + margin) × total, as DESIGN.md §4 defines it.
fn caps(peers: &[PeerInput], total: f64, margin_pct: f64) -> Vec<Option<f64>> {
    let w: f64 = peers
        .iter()
        .filter(|p| p.eligible())
        .map(|p| f64::from(p.weight))
        .sum();
    peers
        .iter()
        .map(|p| {
            p.eligible()
                .then(|| (f64::from(p.weight) / w + margin_pct / 100.0) * total)
        })
        .collect()
}

fn within(peers: &[PeerInput], ex: &[ExporterInput], assign: &[u32], margin: f64) -> bool {
    let total: f64 = ex.iter().map(|e| e.rate).sum();
    let caps = caps(peers, total, margin);
    let eligible = |id: u32| peers.iter().any(|p| p.id == id && p.eligible());
    // Ineligible (or unknown) peers keep nothing; eligible ones stay within their capacity.
    assign.iter().all(|a| eligible(*a))
        && peers.iter().zip(&caps).all(|(p, cap)| {
            let load: f64 = ex
                .iter()
                .zip(assign)
                .filter(|(_, a)| **a == p.id)
                .map(|(e, _)| e.rate)
                .sum();
            cap.is_none_or(|c| load <= c + 1e-9 * total.max(1.0))
        })
}

/// Fewest moves over every assignment of movable exporters to eligible peers that puts every
/// peer within the margin; `None` when no assignment does.
fn brute_force(peers: &[PeerInput], ex: &[ExporterInput], margin: f64) -> Option<usize> {
    let eligible: Vec<u32> = peers
        .iter()
        .filter(|p| p.eligible())
        .map(|p| p.id)
        .collect();
    if eligible.is_empty() {
        return None;
    }
    let on_eligible = |e: &ExporterInput| eligible.contains(&e.peer);
    let choices: Vec<Vec<u32>> = ex
        .iter()
        .map(|e| {
            if on_eligible(e) && (e.pinned || e.moved_recently) {
                vec![e.peer]
            } else {
                eligible.clone()
            }
        })
        .collect();
    let mut best: Option<usize> = None;
    let mut idx = vec![0usize; ex.len()];
    loop {
        let assign: Vec<u32> = idx.iter().zip(&choices).map(|(i, c)| c[*i]).collect();
        if within(peers, ex, &assign, margin) {
            let moves = ex
                .iter()
                .zip(&assign)
                .filter(|(e, a)| e.peer != **a)
                .count();
            best = Some(best.map_or(moves, |b| b.min(moves)));
        }
        // Odometer over the choice vectors.
        let mut k = 0;
        loop {
            if k == idx.len() {
                return best;
            }
            idx[k] += 1;
            if idx[k] < choices[k].len() {
                break;
            }
            idx[k] = 0;
            k += 1;
        }
    }
}

fn apply(ex: &[ExporterInput], p: &Plan) -> Vec<ExporterInput> {
    ex.iter()
        .map(|e| {
            let mut e = *e;
            if let Some(m) = p.moves.iter().find(|m| m.exporter == e.addr) {
                assert_eq!(m.from, e.peer);
                e.peer = m.to;
            }
            e
        })
        .collect()
}

fn assignment(ex: &[ExporterInput]) -> Vec<u32> {
    ex.iter().map(|e| e.peer).collect()
}

prop_compose! {
    fn pool(max_peers: usize, max_exporters: usize, allow_unhealthy: bool)
        (n in 1..=max_peers, m in 0..=max_exporters)
        (peers in prop::collection::vec(
            (1u32..=4, prop::bool::weighted(if allow_unhealthy { 0.8 } else { 1.0 }),
             prop::bool::weighted(if allow_unhealthy { 0.15 } else { 0.0 })), n),
         exporters in prop::collection::vec(
            (0..n as u32, prop_oneof![4 => 0u32..100, 1 => 0u32..1000],
             prop::bool::weighted(0.15), prop::bool::weighted(0.15)), m))
        -> (Vec<PeerInput>, Vec<ExporterInput>)
    {
        let peers = peers.into_iter().enumerate().map(|(i, (weight, healthy, draining))| PeerInput {
            id: i as u32 * 3 + 1, weight, healthy, draining,
        }).collect::<Vec<_>>();
        let exporters = exporters.into_iter().enumerate().map(|(i, (p, rate, pinned, moved))| ExporterInput {
            addr: addr(i),
            peer: peers[p as usize].id,
            rate: f64::from(rate),
            pinned,
            moved_recently: moved,
        }).collect();
        (peers, exporters)
    }
}

fn run(peers: &[PeerInput], ex: &[ExporterInput]) -> Plan {
    plan(
        &Input {
            peers,
            exporters: ex,
            margin_pct: MARGIN,
        },
        Mode::Rebalance,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// Whenever some assignment is within the margin, the plan reaches one, with the fewest
    /// moves any such assignment needs.
    #[test]
    fn within_margin_with_fewest_moves((peers, ex) in pool(3, 6, true)) {
        let p = run(&peers, &ex);
        prop_assert!(p.minimal);
        let after = apply(&ex, &p);
        let claimed = within(&peers, &after, &assignment(&after), MARGIN);
        // Elephants' hosts are exempt from the plan's own verdict.
        if p.unplaceable.is_empty() {
            prop_assert_eq!(claimed, p.within_margin);
        }
        if let Some(fewest) = brute_force(&peers, &ex, MARGIN) {
            prop_assert!(claimed, "achievable but plan ends outside: {:?}", p);
            prop_assert!(p.unplaceable.is_empty());
            prop_assert_eq!(p.moves.len(), fewest, "plan {:?}", p);
        }
        // Never moves what it must not, never targets an ineligible peer.
        for m in &p.moves {
            let e = ex.iter().find(|e| e.addr == m.exporter).unwrap();
            let from_ok = peers.iter().any(|q| q.id == e.peer && q.eligible());
            prop_assert!(!(from_ok && (e.pinned || e.moved_recently)));
            prop_assert!(peers.iter().any(|q| q.id == m.to && q.eligible()));
        }
    }

    /// The same input in any order gives the same plan.
    #[test]
    fn deterministic_under_shuffle(
        (peers, ex) in pool(5, 12, true),
        seed in any::<u64>(),
    ) {
        let p = run(&peers, &ex);
        let mut rng = seed;
        let mut shuffle = |len: usize| -> Vec<usize> {
            let mut order: Vec<usize> = (0..len).collect();
            for i in (1..len).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (rng >> 33) as usize % (i + 1));
            }
            order
        };
        let peers2: Vec<PeerInput> = shuffle(peers.len()).into_iter().map(|i| peers[i]).collect();
        let ex2: Vec<ExporterInput> = shuffle(ex.len()).into_iter().map(|i| ex[i]).collect();
        prop_assert_eq!(&p, &run(&peers2, &ex2));
        prop_assert_eq!(&p, &run(&peers, &ex));
    }

    /// Repeated intervals with steady rates: after the first plan nothing moves again; elephants
    /// are reported every time and never move between eligible peers.
    #[test]
    fn steady_state_no_thrash((peers, ex) in pool(4, 10, true)) {
        let first = run(&peers, &ex);
        let mut now = apply(&ex, &first);
        for _ in 0..3 {
            // A new interval: nothing counts as recently moved.
            for e in &mut now {
                e.moved_recently = false;
            }
            let again = run(&peers, &now);
            let elephants_before: Vec<_> = first.unplaceable.iter()
                .filter(|u| u.reason == UnplaceableReason::Elephant).map(|u| u.exporter).collect();
            for m in &again.moves {
                prop_assert!(!elephants_before.contains(&m.exporter), "elephant moved: {:?}", again);
            }
            let elephants_again: Vec<_> = again.unplaceable.iter()
                .filter(|u| u.reason == UnplaceableReason::Elephant).map(|u| u.exporter).collect();
            prop_assert_eq!(&elephants_before, &elephants_again);
            if first.within_margin {
                prop_assert!(again.moves.is_empty(), "moved again: {:?}", again);
            }
            now = apply(&now, &again);
        }
    }

    /// Evacuation moves exactly the exporters of ineligible peers, and nothing else.
    #[test]
    fn evacuate_moves_only_stranded((peers, ex) in pool(4, 10, true)) {
        let p = plan(&Input { peers: &peers, exporters: &ex, margin_pct: MARGIN }, Mode::Evacuate);
        let eligible = |id: u32| peers.iter().any(|q| q.id == id && q.eligible());
        let stranded: Vec<IpAddr> = ex.iter().filter(|e| !eligible(e.peer)).map(|e| e.addr).collect();
        let mut moved: Vec<IpAddr> = p.moves.iter().map(|m| m.exporter).collect();
        moved.sort();
        if peers.iter().any(PeerInput::eligible) {
            prop_assert_eq!(moved, stranded);
        } else {
            prop_assert!(moved.is_empty());
            prop_assert_eq!(p.unplaceable.len(), stranded.len());
        }
    }
}

proptest! {
    // Each case runs the exact search to its budget (twice): fewer cases.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Larger pools (past the exact search's budget): when no exporter exceeds the margin's
    /// worth of the pool's rate, some peer always has room for any of them, so the plan always
    /// ends within the margin; and the next interval has nothing to do.
    #[test]
    fn small_exporters_always_fit(
        weights in prop::collection::vec(1u32..=4, 2..=8),
        rates in prop::collection::vec(1u32..=50, 40..=120),
        placement in any::<u64>(),
    ) {
        let peers: Vec<PeerInput> = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| PeerInput { id: i as u32, weight, healthy: true, draining: false })
            .collect();
        let total: u32 = rates.iter().sum();
        let ex: Vec<ExporterInput> = rates
            .iter()
            .enumerate()
            .filter(|(_, r)| f64::from(**r) <= MARGIN / 100.0 * f64::from(total))
            .map(|(i, &r)| ExporterInput {
                addr: IpAddr::V6(std::net::Ipv6Addr::from(i as u128)),
                // Skewed start: most exporters on the first peers.
                peer: ((placement >> (i % 60)) & 1) as u32 * (i as u32 % weights.len() as u32),
                rate: f64::from(r),
                pinned: false,
                moved_recently: false,
            })
            .collect();
        let total: f64 = ex.iter().map(|e| e.rate).sum();
        prop_assume!(ex.iter().all(|e| e.rate <= MARGIN / 100.0 * total));
        let p = run(&peers, &ex);
        let after = apply(&ex, &p);
        prop_assert!(p.within_margin, "{:?}", p.after);
        prop_assert!(within(&peers, &after, &assignment(&after), MARGIN));
        prop_assert!(run(&peers, &after).moves.is_empty());
    }
}

#[test]
fn elephant_is_reported_and_stays() {
    let peers = [
        PeerInput {
            id: 0,
            weight: 1,
            healthy: true,
            draining: false,
        },
        PeerInput {
            id: 1,
            weight: 1,
            healthy: true,
            draining: false,
        },
        PeerInput {
            id: 2,
            weight: 1,
            healthy: true,
            draining: false,
        },
    ];
    let mut ex = vec![ExporterInput {
        addr: addr(0),
        peer: 0,
        rate: 10_000.0,
        pinned: false,
        moved_recently: false,
    }];
    for i in 1..7 {
        ex.push(ExporterInput {
            addr: addr(i),
            peer: 0,
            rate: 100.0,
            pinned: false,
            moved_recently: false,
        });
    }
    let p = run(&peers, &ex);
    assert_eq!(p.unplaceable.len(), 1);
    assert_eq!(p.unplaceable[0].exporter, addr(0));
    assert_eq!(p.unplaceable[0].reason, UnplaceableReason::Elephant);
    // The small ones leave the elephant's peer; the elephant stays.
    assert!(p.moves.iter().all(|m| m.exporter != addr(0) && m.to != 0));
    assert!(p.within_margin);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["unplaceable"][0]["reason"], "elephant");
}

#[test]
fn skewed_pool_converges_with_few_moves() {
    let peers: Vec<PeerInput> = (0..2)
        .map(|id| PeerInput {
            id,
            weight: 1,
            healthy: true,
            draining: false,
        })
        .collect();
    let ex: Vec<ExporterInput> = (0..8)
        .map(|i| ExporterInput {
            addr: addr(i),
            peer: 0,
            rate: 100.0,
            pinned: false,
            moved_recently: false,
        })
        .collect();
    let p = run(&peers, &ex);
    assert!(p.within_margin);
    assert_eq!(p.moves.len(), 4);
    assert!(p.minimal);
    assert_eq!(p.after[0].load_pct, 50.0);
}

/// 32 peers, 20 000 exporters all on three of them: the greedy plan (a few hundred ms in a
/// debug build) lands within the margin.
#[test]
fn large_pool_falls_back_to_greedy_within_margin() {
    let peers: Vec<PeerInput> = (0..32)
        .map(|id| PeerInput {
            id,
            weight: 1 + id % 3,
            healthy: true,
            draining: false,
        })
        .collect();
    let ex: Vec<ExporterInput> = (0..20_000)
        .map(|i| ExporterInput {
            addr: IpAddr::V6(std::net::Ipv6Addr::from(i as u128)),
            peer: (i % 3) as u32,
            rate: f64::from((i * 7919 % 97) as u32 + 1),
            pinned: false,
            moved_recently: false,
        })
        .collect();
    let p = run(&peers, &ex);
    assert!(p.within_margin);
    assert!(!p.minimal);
    // Nothing left to do on the next interval.
    let again = run(&peers, &apply(&ex, &p));
    assert!(again.moves.is_empty());
}
