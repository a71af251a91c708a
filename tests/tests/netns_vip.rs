//! Virtual IPs on a real L2 segment: three namespaces (`a`, `b`, an observer `obs`) joined by
//! veth pairs to a bridge in a fourth namespace (the "switch"). Exercises
//! `sluice_central::ha::vip` as an active/standby pair would: claim, announce, take over,
//! release, and the split-brain witness.

use std::time::{Duration, Instant};

use sluice_central::ha::vip::{Vip, VipError, VipSet};
use sluice_lab::{
    netns::{self, NetNs},
    privileged, run,
};

/// The interface of `a`, `b` and `obs` on the segment.
const IFACE: &str = "vip0";
const VIP4: &str = "198.18.200.1";
const VIP6: &str = "fd00:5c:1::1";
/// How long the witness listens in these tests.
const WAIT: Duration = Duration::from_millis(500);

fn vips() -> Vec<Vip> {
    vec![vip4(), vip6()]
}

fn vip4() -> Vip {
    Vip {
        addr: VIP4.parse().unwrap(),
        prefix: 24,
    }
}

fn vip6() -> Vip {
    Vip {
        addr: VIP6.parse().unwrap(),
        prefix: 64,
    }
}

/// The segment. Dropping it deletes the namespaces, which takes every veth and the bridge
/// with them (also when a test panics half-way through building it: each `NetNs` built so
/// far is dropped).
struct Segment {
    a: NetNs,
    b: NetNs,
    obs: NetNs,
    _switch: NetNs,
}

impl Segment {
    fn new(tag: &str) -> Self {
        let switch = NetNs::new(&format!("{tag}sw"));
        // No STP and no forward delay: ports forward at once. No multicast snooping: without
        // an MLD querier on the segment the bridge would flood anyway, but say so rather
        // than depend on it (a real switch learns the solicited-node groups from MLD).
        switch.exec(
            "ip link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0 \
             && ip link set br0 up",
        );
        let host = |name: &str, last: u8| {
            let ns = NetNs::new(&format!("{tag}{name}"));
            run(&format!(
                "ip link add {IFACE} netns {} type veth peer name p{name} netns {}",
                ns.name, switch.name
            ));
            switch.exec(&format!("ip link set p{name} master br0 up"));
            // Each host's own addresses; IPv6 without DAD so it is usable at once (it is
            // also the neighbour solicitations' source while the link-local is tentative).
            ns.exec(&format!(
                "ip addr add 198.18.200.{last}/24 dev {IFACE} \
                 && ip addr add fd00:5c:1::{last}/64 dev {IFACE} nodad \
                 && ip link set {IFACE} up"
            ));
            ns
        };
        let a = host("a", 11);
        let b = host("b", 12);
        let obs = host("obs", 3);
        Self {
            a,
            b,
            obs,
            _switch: switch,
        }
    }
}

/// The set for `vips` on [`IFACE`] in `ns` (it must then be used inside `ns`).
fn set_in(ns: &NetNs, vips: Vec<Vip>) -> VipSet {
    ns.enter(|| VipSet::new(IFACE, vips)).unwrap()
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// `(lladdr, states)` of `addr` in `ns`'s neighbour table, if there is an entry.
fn neigh(ns: &NetNs, addr: &str) -> Option<(String, Vec<String>)> {
    let out = ns.exec(&format!("ip -j neigh show {addr} dev {IFACE}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let e = v.as_array()?.first()?;
    let lladdr = e.get("lladdr")?.as_str()?.to_owned();
    let states = e
        .get("state")?
        .as_array()?
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    Some((lladdr, states))
}

/// Addresses on [`IFACE`] in `ns`, as `addr/prefix`.
fn addresses(ns: &NetNs) -> Vec<String> {
    let out = ns.exec(&format!("ip -j addr show dev {IFACE}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// Makes `obs` resolve both VIPs by pinging them.
fn resolve_from_obs(s: &Segment) {
    s.obs.exec(&format!("ping -c 1 -W 2 {VIP4} >/dev/null"));
    s.obs.exec(&format!("ping -6 -c 1 -W 2 {VIP6} >/dev/null"));
}

fn held_elsewhere_timed(ns: &NetNs, set: &VipSet) -> (bool, Duration) {
    ns.enter(|| {
        let t = Instant::now();
        let r = set.held_elsewhere(WAIT).unwrap();
        (r, t.elapsed())
    })
}

#[test]
fn claim_puts_the_vips_on_the_interface_and_the_witness_sees_the_holder() {
    if !privileged("netns_vip") {
        return;
    }
    let s = Segment::new("vc");
    let a = set_in(&s.a, vips());
    let b = set_in(&s.b, vips());
    // The MAC read with SIOCGIFHWADDR is the one `ip` shows.
    assert_eq!(a.mac(), s.a.enter(|| netns::mac(IFACE)));
    assert_eq!(a.ifindex(), s.a.enter(|| netns::ifindex(IFACE)));

    s.a.enter(|| a.claim()).unwrap();
    s.a.enter(|| a.claim()).expect("claiming twice is fine");
    let on_a = addresses(&s.a);
    for want in [format!("{VIP4}/24"), format!("{VIP6}/64")] {
        assert!(on_a.contains(&want), "{want} not on a: {on_a:?}");
    }
    assert!(s.a.enter(|| a.held_here()).unwrap());
    assert!(!s.b.enter(|| b.held_here()).unwrap());

    resolve_from_obs(&s);
    for vip in [VIP4, VIP6] {
        let (lladdr, _) =
            neigh(&s.obs, vip).unwrap_or_else(|| panic!("obs has no entry for {vip}"));
        assert_eq!(lladdr, fmt_mac(a.mac()), "obs resolves {vip} to a");
    }

    // Asked from b: a answers. Each family on its own too.
    let (elsewhere, took) = held_elsewhere_timed(&s.b, &b);
    assert!(elsewhere, "b must see a holding the VIPs");
    assert!(took < WAIT, "an answer ends the wait early ({took:?})");
    for only in [vip4(), vip6()] {
        let one = set_in(&s.b, vec![only]);
        assert!(
            s.b.enter(|| one.held_elsewhere(WAIT)).unwrap(),
            "b must see a holding {only}"
        );
    }
    // Asked on a, the holder: nobody else answers, and our own frames do not count.
    let (elsewhere, took) = held_elsewhere_timed(&s.a, &a);
    assert!(!elsewhere, "a holds the VIPs itself");
    assert!(
        took >= WAIT && took < WAIT + Duration::from_millis(300),
        "{took:?}"
    );
}

#[test]
fn takeover_announcement_moves_the_observers_neighbour_entries() {
    if !privileged("netns_vip") {
        return;
    }
    let s = Segment::new("vt");
    let a = set_in(&s.a, vips());
    let b = set_in(&s.b, vips());
    s.a.enter(|| a.claim()).unwrap();
    resolve_from_obs(&s);
    for vip in [VIP4, VIP6] {
        let (lladdr, states) = neigh(&s.obs, vip).unwrap();
        assert_eq!(lladdr, fmt_mac(a.mac()), "{vip}");
        assert_eq!(states, ["REACHABLE"], "{vip}");
    }

    s.a.enter(|| a.release()).unwrap();
    s.b.enter(|| b.claim()).unwrap();

    // obs sends nothing; only b's announcement can change its entries. No sysctl is needed:
    // Linux updates an *existing* entry from a gratuitous ARP (request, or reply whose target
    // MAC is the sender's) and from an NA with the Override flag, whatever `arp_accept` says
    // (that only governs creating entries), just as the hosts and switches keepalived relies
    // on do. The new state is STALE (broadcast ARP / unsolicited NA do not confirm
    // reachability), which also shows obs did not resolve the VIP again: that would leave it
    // REACHABLE. Wait a little for the frames to cross the bridge.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let now: Vec<_> = [VIP4, VIP6].map(|v| neigh(&s.obs, v).unwrap()).to_vec();
        if now.iter().all(|(l, _)| *l == fmt_mac(b.mac())) {
            for (vip, (_, states)) in [VIP4, VIP6].iter().zip(&now) {
                assert_eq!(states, &["STALE"], "{vip}: updated by the announcement");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "obs still has {now:?}, want b's MAC {}",
            fmt_mac(b.mac())
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Traffic now reaches b.
    resolve_from_obs(&s);
    assert!(s.b.enter(|| b.held_here()).unwrap());
    assert!(!s.a.enter(|| a.held_here()).unwrap());
    assert!(s.a.enter(|| a.held_elsewhere(WAIT)).unwrap());
}

#[test]
fn nobody_holds_the_vips_after_release_and_the_witness_returns_in_time() {
    if !privileged("netns_vip") {
        return;
    }
    let s = Segment::new("vr");
    let a = set_in(&s.a, vips());
    let b = set_in(&s.b, vips());
    s.b.enter(|| b.claim()).unwrap();
    s.b.enter(|| b.release()).unwrap();
    s.b.enter(|| b.release()).expect("releasing twice is fine");
    s.a.enter(|| a.release())
        .expect("releasing what was never claimed is fine");
    let on_b = addresses(&s.b);
    assert!(
        !on_b
            .iter()
            .any(|x| x.starts_with(&format!("{VIP4}/")) || x.starts_with(&format!("{VIP6}/"))),
        "{on_b:?}"
    );
    assert!(!s.b.enter(|| b.held_here()).unwrap());
    for (ns, set, who) in [(&s.a, &a, "a"), (&s.b, &b, "b")] {
        let (elsewhere, took) = held_elsewhere_timed(ns, set);
        assert!(!elsewhere, "{who}: nobody holds the VIPs");
        assert!(
            took >= WAIT && took < WAIT + Duration::from_millis(300),
            "{who}: the witness must return within its wait ({took:?})"
        );
    }
    // A zero wait sends the probes and returns at once.
    let t = Instant::now();
    assert!(!s.a.enter(|| a.held_elsewhere(Duration::ZERO)).unwrap());
    assert!(t.elapsed() < Duration::from_millis(100));
}

#[test]
fn a_missing_interface_is_a_clear_error_naming_it() {
    if !privileged("netns_vip") {
        return;
    }
    let s = Segment::new("vn");
    let err =
        s.a.enter(|| VipSet::new("vipnope0", vips()))
            .expect_err("no such interface");
    assert!(matches!(err, VipError::NoInterface { .. }), "{err:?}");
    assert!(err.to_string().contains("\"vipnope0\""), "{err}");

    // An interface that disappears after the set was made: the error names the command.
    let a = set_in(&s.a, vips());
    s.a.exec(&format!("ip link del {IFACE}"));
    let err = s.a.enter(|| a.claim()).expect_err("interface gone");
    assert!(err.to_string().contains(IFACE), "{err}");
}
