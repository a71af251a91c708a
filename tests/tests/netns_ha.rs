//! A hot-standby pair of real `sluice-central`s in network namespaces (`sluice_tests::lab::ha`):
//! exporters and both Centrals on one bridge, both Centrals and the peers on another, the HA
//! link on a veth of its own. The six cases of the HA issue: mirroring of changes into the
//! standby's maps, host death under load, a cut HA link, the old active's return, a planned
//! switchover under load, and a wrong HA credential.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use sluice_central::maps::Maps;
use sluice_common::protocol::{ExporterView, PeerStatus, PeerView, TokenView};
use sluice_tests::{
    lab::{
        PORT,
        ha::{HaLab, PEER_VIP, VIP},
        peer_name,
        traffic::{Arrivals, Sender},
    },
    privileged,
};

/// The takeover timeout the pair runs with.
const TAKEOVER: Duration = Duration::from_millis(300);
/// The bound: the standby forwards within the takeover timeout plus this.
const SLACK: Duration = Duration::from_millis(500);

/// Exporter → (pool, peer, pinned), as node `n` lists them.
fn placements(lab: &HaLab, n: usize) -> BTreeMap<IpAddr, (Option<String>, Option<String>, bool)> {
    lab.sluicectl::<Vec<ExporterView>>(n, &["exporters", "list"])
        .into_iter()
        .map(|e| (e.address, (e.pool, e.peer, e.pinned)))
        .collect()
}

/// Peer → status, as node `n` lists them.
fn statuses(lab: &HaLab, n: usize) -> BTreeMap<String, PeerStatus> {
    lab.sluicectl::<Vec<PeerView>>(n, &["peers", "list"])
        .into_iter()
        .map(|p| (p.name, p.status))
        .collect()
}

/// What node `n`'s pinned maps make of each exporter: the peer, its entry and the pool.
fn in_maps(lab: &HaLab, n: usize) -> Vec<String> {
    let maps = Maps::open_pinned(lab.pins[n].path()).expect("pinned maps");
    let listener = SocketAddr::new(VIP.into(), PORT);
    lab.exporter_addrs
        .iter()
        .map(|e| {
            let r = maps.resolve((*e).into(), listener).expect("resolve");
            format!(
                "{e}: {:?}",
                r.map(|r| (r.peer_id, r.peer, r.pool_id, r.unpinned))
            )
        })
        .collect()
}

/// Waits (up to 1 s, the bound) until `check` holds; returns how long it took.
fn within_a_second(what: &str, mut check: impl FnMut() -> Result<(), String>) -> Duration {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return start.elapsed(),
            Err(e) if start.elapsed() > Duration::from_secs(1) => {
                panic!("{what}: not on the standby within 1 s: {e}")
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn same<T: PartialEq + std::fmt::Debug>(a: T, b: T) -> Result<(), String> {
    if a == b {
        Ok(())
    } else {
        Err(format!("active {a:?}, standby {b:?}"))
    }
}

#[test]
fn a_wrong_credential_is_refused_and_every_change_on_the_active_reaches_the_standby_and_its_maps() {
    if !privileged("netns_ha_mirror") {
        return;
    }
    let lab = HaLab::new("hm", 2, 4, TAKEOVER);
    // (6) Node b with another secret: the link is refused, counted, and b takes nothing over.
    let wrong = lab.credential(true);
    let wrong = wrong.to_str().expect("utf-8 path");
    let (a, mut b) = lab.start_pair(&["--ha-credential-file", wrong]);
    let start = Instant::now();
    while start.elapsed() < TAKEOVER * 5 {
        assert!(
            lab.vips_held(1).is_empty(),
            "b took a virtual IP without a link\n{}",
            b.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let status = lab.ha_status(0).expect("ha status on a");
    assert!(
        status.link_refused > 0 && !status.link_up && status.role == "active",
        "a refused b's link: {status:?}\n{}",
        a.log_text()
    );
    assert!(
        b.log_text().contains("ha: link refused"),
        "b refused a's link too:\n{}",
        b.log_text()
    );
    assert_eq!(
        lab.vips_held(0),
        [VIP, PEER_VIP],
        "a holds both virtual IPs"
    );
    println!(
        "wrong credential: refused {} times by a in {:?}, no link, no takeover by b",
        status.link_refused,
        start.elapsed()
    );
    b.terminate();

    // (1) b with the right secret: linked and synchronised; then changes on a.
    let b = lab.start_central(1, &[]);
    lab.wait_ha(1, Duration::from_secs(10), |s| {
        s.role == "standby" && s.link_up && s.mirror_synced
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log_text()));
    let _peers = lab.start_peers(0);
    let _sender = lab.start_v9(20);
    let deadline = Instant::now() + Duration::from_secs(10);
    while placements(&lab, 0)
        .values()
        .filter(|p| p.1.is_some())
        .count()
        < 4
    {
        assert!(Instant::now() < deadline, "exporters not placed by a");
        thread::sleep(Duration::from_millis(100));
    }
    within_a_second("the placements", || {
        same(placements(&lab, 0), placements(&lab, 1))
    });

    let mut took = Vec::new();
    let ctl = |args: &[&str]| lab.sluicectl::<serde_json::Value>(0, args);
    ctl(&["pools", "create", "blue"]);
    took.push((
        "pools create",
        within_a_second("pools create", || {
            same(
                lab.sluicectl::<serde_json::Value>(0, &["pools", "list"]),
                lab.sluicectl::<serde_json::Value>(1, &["pools", "list"]),
            )
        }),
    ));
    let (e0, e1) = (
        lab.exporter_addrs[0].to_string(),
        lab.exporter_addrs[1].to_string(),
    );
    ctl(&["exporters", "pin", &e0]);
    took.push((
        "exporters pin",
        within_a_second("exporters pin", || {
            same(placements(&lab, 0), placements(&lab, 1))
        }),
    ));
    let owner = placements(&lab, 0)[&IpAddr::from(lab.exporter_addrs[1])]
        .1
        .clone()
        .expect("placed");
    let other = if owner == "a" { "b" } else { "a" };
    ctl(&["exporters", "move", &e1, other]);
    took.push((
        "exporters move",
        within_a_second("exporters move", || {
            let p = placements(&lab, 1);
            if p[&IpAddr::from(lab.exporter_addrs[1])].1.as_deref() != Some(other) {
                return Err(format!("{e1} not on {other} yet: {p:?}"));
            }
            same(placements(&lab, 0), p)
        }),
    ));
    let token: TokenView = lab.sluicectl(0, &["token", "generate", "--grace", "10m"]);
    let tokens = lab.state_dir(1).join(sluice_central::auth::TOKENS_FILE);
    took.push((
        "token generate",
        within_a_second("token generate", || {
            let text = std::fs::read_to_string(&tokens).map_err(|e| e.to_string())?;
            if text.contains(&token.hash) {
                Ok(())
            } else {
                Err(format!("hash {} not in {}", token.hash, tokens.display()))
            }
        }),
    ));
    ctl(&["peers", "drain", "b"]);
    took.push((
        "peers drain",
        within_a_second("peers drain", || {
            let s = statuses(&lab, 1);
            if s.get("b") != Some(&PeerStatus::Draining) {
                return Err(format!("b not DRAINING: {s:?}"));
            }
            same(placements(&lab, 0), placements(&lab, 1))
        }),
    ));
    took.push((
        "maps",
        within_a_second("the pinned maps", || {
            same(in_maps(&lab, 0), in_maps(&lab, 1))
        }),
    ));
    println!("mirrored to the standby (and its maps) after: {took:?}");

    // The standby answers reads and refuses changes.
    let refused = lab
        .sluicectl_raw(1, &["pools", "create", "red"])
        .expect_err("the standby refuses changes");
    assert!(refused.contains("standby"), "{refused}");
    assert_eq!(lab.ha_status(1).expect("b").role, "standby");
    drop(a);
}

/// Pauses the sender until what was in flight has arrived; returns what was sent by each
/// exporter so far and what arrived since the last call.
fn quiesce(
    sender: &Sender,
    arrivals: &Arrivals,
) -> (Vec<u64>, BTreeMap<Ipv4Addr, u64>, Vec<Vec<Ipv4Addr>>) {
    sender.pause(true);
    thread::sleep(Duration::from_millis(100));
    let sent = sender.sent();
    let seen = arrivals.take();
    sender.pause(false);
    let at: Vec<Vec<Ipv4Addr>> = seen.iter().map(|m| m.keys().copied().collect()).collect();
    (sent, Arrivals::totals(&seen), at)
}

/// Datagrams sent between two [`quiesce`] calls that did not arrive.
fn lost(before: &[u64], after: &[u64], arrived: &BTreeMap<Ipv4Addr, u64>) -> u64 {
    let sent: u64 = after.iter().zip(before).map(|(a, b)| a - b).sum();
    sent.saturating_sub(arrived.values().sum())
}

/// Exporters that reached a peer other than their own (`owner`: peer index per exporter).
fn strays(lab: &HaLab, owner: &[usize], at: &[Vec<Ipv4Addr>]) -> Vec<String> {
    let mut out = Vec::new();
    for (p, seen) in at.iter().enumerate() {
        for e in seen {
            let i = lab
                .exporter_addrs
                .iter()
                .position(|a| a == e)
                .expect("lab exporter");
            if owner[i] != p {
                out.push(format!(
                    "{e} reached {} (its peer: {})",
                    peer_name(p),
                    peer_name(owner[i])
                ));
            }
        }
    }
    out
}

fn template_misses(lab: &HaLab) -> f64 {
    (0..lab.peers.len())
        .map(|i| lab.peer_metric(i, "sluice_peer_template_misses_total"))
        .sum()
}

#[test]
fn host_death_under_load_then_the_old_active_returns_as_standby_then_a_switchover_loses_nothing() {
    if !privileged("netns_ha_host_death") {
        return;
    }
    const EXPORTERS: usize = 20;
    let lab = HaLab::new("hd", 2, EXPORTERS, TAKEOVER);
    let (a, b) = lab.start_pair(&[]);
    let _peers = lab.start_peers(0);
    let peers: Vec<&_> = lab.peers.iter().map(|(ns, _)| ns).collect();
    let arrivals = Arrivals::start_on(&peers);
    // 20 exporters × 50/s: 1000 datagrams/s, NetFlow v9, templates only in the first.
    let sender = lab.start_v9(50);
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let p = placements(&lab, 0);
        if p.values().filter(|p| p.1.is_some()).count() == EXPORTERS {
            break p;
        }
        assert!(Instant::now() < deadline, "exporters not placed: {p:?}");
        thread::sleep(Duration::from_millis(100));
    };
    let owner: Vec<usize> = lab
        .exporter_addrs
        .iter()
        .map(|e| {
            let name = before[&IpAddr::from(*e)].1.clone().expect("placed");
            (0..lab.peers.len())
                .find(|&i| peer_name(i) == name)
                .expect("lab peer")
        })
        .collect();
    within_a_second("the placements", || {
        same(before.clone(), placements(&lab, 1))
    });
    // Let the peers report their templates and the mirror carry them.
    thread::sleep(Duration::from_millis(1500));
    let misses_before = template_misses(&lab);
    let (mac_a, mac_b) = (lab.forwarding_mac(0), lab.forwarding_mac(1));

    // (2) Host death of a.
    let (sent0, _, _) = quiesce(&sender, &arrivals);
    thread::sleep(Duration::from_millis(500));
    let died = Instant::now();
    lab.set_links(0, false);
    let first_via_b = loop {
        if let Some(s) = arrivals.via().get(&mac_b) {
            break s.first;
        }
        assert!(
            died.elapsed() < Duration::from_secs(10),
            "b never forwarded\n{}",
            b.log_text()
        );
        thread::sleep(Duration::from_millis(2));
    };
    let forwarding_after = first_via_b.duration_since(died);
    let via = arrivals.via();
    let gap = via
        .get(&mac_a)
        .map(|s| first_via_b.saturating_duration_since(s.last));
    let status_b = lab
        .wait_ha(1, Duration::from_secs(2), |s| s.role == "active")
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log_text()));
    thread::sleep(Duration::from_secs(2));
    let (sent1, arrived, at) = quiesce(&sender, &arrivals);
    let lost_death = lost(&sent0, &sent1, &arrived);
    let misses_after = template_misses(&lab);
    let after = placements(&lab, 1);
    let stray = strays(&lab, &owner, &at);
    println!(
        "host death: b forwarded {forwarding_after:?} after a's links went down (bound {:?}); \
         gap at the peers (last via a → first via b) {gap:?}; {lost_death} datagrams lost of {}; \
         template misses {misses_before} → {misses_after}; epoch {}",
        TAKEOVER + SLACK,
        sent1.iter().sum::<u64>() - sent0.iter().sum::<u64>(),
        status_b.epoch
    );
    assert!(
        forwarding_after <= TAKEOVER + SLACK,
        "b forwarded only {forwarding_after:?} after the host death\n{}",
        b.log_text()
    );
    assert!(stray.is_empty(), "exporters changed peers: {stray:?}");
    assert_eq!(
        after
            .iter()
            .map(|(k, v)| (*k, v.1.clone()))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|(k, v)| (*k, v.1.clone()))
            .collect::<Vec<_>>(),
        "every exporter kept its peer on the new active"
    );
    assert_eq!(
        misses_after, misses_before,
        "no template misses after the takeover"
    );
    assert!(
        statuses(&lab, 1).values().all(|s| *s == PeerStatus::Online),
        "the peers reconnected to b: {:?}",
        statuses(&lab, 1)
    );

    // (4) a's links come back: it becomes the standby, and stays so.
    lab.set_links(0, true);
    let back = Instant::now();
    lab.wait_ha(0, Duration::from_secs(5), |s| {
        s.role == "standby" && s.link_up && s.mirror_synced
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log_text()));
    let settled = back.elapsed();
    let takeovers = |n: usize| lab.ha_status(n).expect("ha status").takeovers;
    let (ta, tb) = (takeovers(0), takeovers(1));
    let watch = Instant::now();
    let mut samples = 0;
    while watch.elapsed() < Duration::from_secs(3) {
        let (sa, sb) = (lab.ha_status(0).expect("a"), lab.ha_status(1).expect("b"));
        assert_eq!(
            (sa.role.as_str(), sb.role.as_str()),
            ("standby", "active"),
            "flapping"
        );
        assert!(
            lab.vips_held(0).is_empty(),
            "the returned node holds a virtual IP"
        );
        assert_eq!(lab.vips_held(1), [VIP, PEER_VIP]);
        samples += 1;
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        (takeovers(0), takeovers(1)),
        (ta, tb),
        "no takeover after the return"
    );
    let (sent2, arrived, at) = quiesce(&sender, &arrivals);
    println!(
        "return: a standby and synchronised {settled:?} after its links came up; roles steady over \
         {samples} samples; {} datagrams lost meanwhile",
        lost(&sent1, &sent2, &arrived)
    );
    assert!(
        strays(&lab, &owner, &at).is_empty(),
        "exporters changed peers on the return"
    );

    // (5) Planned switchover back to a, under load: nothing lost.
    lab.wait_ha(1, Duration::from_secs(5), |s| s.link_up && s.mirror_synced)
        .unwrap_or_else(|e| panic!("{e}"));
    let asked = Instant::now();
    lab.sluicectl::<serde_json::Value>(1, &["ha", "switchover"]);
    lab.wait_ha(0, Duration::from_secs(3), |s| s.role == "active")
        .unwrap_or_else(|e| panic!("{e}\n{}", a.log_text()));
    lab.wait_ha(1, Duration::from_secs(3), |s| s.role == "standby")
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log_text()));
    let switched = asked.elapsed();
    thread::sleep(Duration::from_secs(1));
    let (sent3, arrived, at) = quiesce(&sender, &arrivals);
    let lost_switch = lost(&sent2, &sent3, &arrived);
    let misses_end = template_misses(&lab);
    println!(
        "switchover: roles swapped {switched:?} after `ha switchover`; {lost_switch} of {} datagrams \
         lost; template misses {misses_end}",
        sent3.iter().sum::<u64>() - sent2.iter().sum::<u64>()
    );
    assert_eq!(lost_switch, 0, "a planned switchover loses nothing");
    assert!(
        strays(&lab, &owner, &at).is_empty(),
        "exporters changed peers on the switchover"
    );
    assert_eq!(
        misses_end, misses_before,
        "no template misses after the switchover"
    );
    assert_eq!(lab.vips_held(0), [VIP, PEER_VIP]);
    assert!(lab.vips_held(1).is_empty());
}

#[test]
fn cutting_only_the_ha_link_takes_nothing_over_and_one_node_holds_the_virtual_ips() {
    if !privileged("netns_ha_cut_link") {
        return;
    }
    let lab = HaLab::new("hc", 2, 4, TAKEOVER);
    let (a, b) = lab.start_pair(&[]);
    let _peers = lab.start_peers(0);
    let _sender = lab.start_v9(50);
    lab.set_ha_link(false);
    let cut = Instant::now();
    let mut samples = 0;
    while cut.elapsed() < TAKEOVER * 10 {
        let (held_a, held_b) = (lab.vips_held(0), lab.vips_held(1));
        assert!(
            held_b.is_empty(),
            "b holds {held_b:?} (a holds {held_a:?}) with only the HA link cut\n{}",
            b.log_text()
        );
        assert_eq!(held_a, [VIP, PEER_VIP], "a keeps both virtual IPs");
        samples += 1;
        thread::sleep(Duration::from_millis(25));
    }
    let sb = lab.ha_status(1).expect("b");
    let sa = lab.ha_status(0).expect("a");
    println!(
        "cut HA link: {samples} samples over {:?}, one holder each time; b refused {} takeovers",
        cut.elapsed(),
        sb.takeovers_refused
    );
    assert_eq!((sa.role.as_str(), sb.role.as_str()), ("active", "standby"));
    assert!(!sb.link_up, "the link is cut: {sb:?}");
    assert_eq!(sb.takeovers, 0, "b took nothing over");
    assert!(
        sb.takeovers_refused > 0,
        "the split-brain guard refused: {sb:?}"
    );

    lab.set_ha_link(true);
    lab.wait_ha(1, Duration::from_secs(5), |s| s.link_up && s.mirror_synced)
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log_text()));
    let sb = lab.ha_status(1).expect("b");
    assert_eq!((sb.role.as_str(), sb.takeovers), ("standby", 0), "{sb:?}");
    assert_eq!(
        lab.ha_status(0).expect("a").role,
        "active",
        "{}",
        a.log_text()
    );
}
