//! A hot-standby pair of real `sluice-central`s in network namespaces (`sluice_lab::lab::ha`):
//! exporters and both Centrals on one bridge, both Centrals and the peers on another, the HA
//! link on a veth of its own. The six cases of the HA issue: mirroring of changes into the
//! standby's maps, host death under load, a cut HA link, the old active's return, a planned
//! switchover under load, and a wrong HA credential.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use sluice_central::maps::Maps;
use sluice_common::protocol::{ExporterView, PeerStatus, PeerView, TokenView};
use sluice_lab::{
    lab::{
        PORT,
        ha::{HaLab, PEER_VIP, VIP},
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

#[test]
fn host_death_under_load_then_the_old_active_returns_as_standby_then_a_switchover_loses_nothing() {
    if !privileged("netns_ha_host_death") {
        return;
    }
    const EXPORTERS: usize = 20;
    let lab = HaLab::new("hd", 2, EXPORTERS, TAKEOVER);
    // 20 exporters × 50/s: 1000 datagrams/s, NetFlow v9, templates only in the first.
    let load = lab.start_loaded(50);
    let (a, b, sender, arrivals) = (&load.a, &load.b, &load.sender, &load.arrivals);
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let p = placements(&lab, 0);
        if p.values().filter(|p| p.1.is_some()).count() == EXPORTERS {
            break p;
        }
        assert!(Instant::now() < deadline, "exporters not placed: {p:?}");
        thread::sleep(Duration::from_millis(100));
    };
    let peer_of = |p: &BTreeMap<IpAddr, (Option<String>, Option<String>, bool)>| {
        p.iter().map(|(k, v)| (*k, v.1.clone())).collect::<Vec<_>>()
    };
    within_a_second("the placements", || {
        same(before.clone(), placements(&lab, 1))
    });
    // Let the peers report their templates and the mirror carry them.
    thread::sleep(Duration::from_millis(1500));
    let misses_before = lab.template_misses();

    // (2) Host death of a.
    let death = lab
        .host_death(0, sender, arrivals, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log_text()));
    let status_b = lab
        .wait_ha(1, Duration::from_secs(2), |s| s.role == "active")
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log_text()));
    let misses_after = lab.template_misses();
    println!(
        "host death: b forwarded {:?} after a's links went down (bound {:?}); gap at the peers \
         (last via a → first via b) {:?}; {} datagrams lost of {}; template misses {misses_before} \
         → {misses_after}; epoch {}",
        death.forwarded_after,
        TAKEOVER + SLACK,
        death.gap,
        death.lost,
        death.sent,
        status_b.epoch
    );
    assert!(
        death.forwarded_after <= TAKEOVER + SLACK,
        "b forwarded only {:?} after the host death\n{}",
        death.forwarded_after,
        b.log_text()
    );
    assert!(
        death.reassigned.is_empty(),
        "exporters changed peers: {:?}",
        death.reassigned
    );
    assert_eq!(
        peer_of(&placements(&lab, 1)),
        peer_of(&before),
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
    let start = HaLab::quiesce(sender, arrivals);
    let owners = start.owners();
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
    let returned = HaLab::quiesce(sender, arrivals);
    println!(
        "return: a standby and synchronised {settled:?} after its links came up; roles steady \
         over {samples} samples; {} of {} datagrams lost meanwhile",
        returned.lost_since(&start),
        returned.sent_since(&start)
    );
    assert!(
        returned.strays(&owners).is_empty(),
        "exporters changed peers on the return: {:?}",
        returned.strays(&owners)
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
    let end = HaLab::quiesce(sender, arrivals);
    let (lost, strays) = (end.lost_since(&returned), end.strays(&owners));
    let misses_end = lab.template_misses();
    println!(
        "switchover: roles swapped {switched:?} after `ha switchover`; {lost} of {} datagrams \
         lost; template misses {misses_end}",
        end.sent_since(&returned)
    );
    assert_eq!(lost, 0, "a planned switchover loses nothing");
    assert!(
        strays.is_empty(),
        "exporters changed peers on the switchover: {strays:?}"
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
