//! BPF_PROG_TEST_RUN fixture table (katran style): input frame → expected action, expected
//! output bytes and counter deltas, with maps provisioned through the real map writer
//! (`sluice_central::maps::Maps` via the controller's `DataPlane` trait) and the real Maglev
//! table builder. Runs in a private network namespace so `bpf_fib_lookup` sees a known
//! routing table and neighbour cache.

use std::net::{IpAddr, Ipv4Addr};

use aya::programs::{TestRun, TestRunOptions};
use sluice_central::controller::dataplane::DataPlane;
use sluice_common::{
    ExporterValue, POOL_TABLE_SIZE, Reason, event_kind, hash::table_slot, to_key_bytes,
};
use sluice_lab::fixture::*;
use sluice_lab::{netns::ifindex, packet::Frame, packet::arp_request, privileged, run};

struct Fixture {
    description: &'static str,
    input: Frame,
    action: u32,
    /// None: output must equal the input.
    output: Option<Vec<u8>>,
    counters: Vec<(Reason, u64)>,
}

impl Fixture {
    /// Passed up unchanged, one count of `reason`.
    fn pass(description: &'static str, input: Frame, reason: Reason) -> Self {
        Self {
            description,
            input,
            action: XDP_PASS,
            output: None,
            counters: vec![(reason, 1)],
        }
    }

    /// Rewritten for the peer at `to` (MAC `mac`) and redirected out of the egress veth.
    fn redirected(
        description: &'static str,
        input: Frame,
        to: IpAddr,
        mac: [u8; 6],
        egress: [u8; 6],
    ) -> Self {
        Self {
            description,
            output: Some(forwarded(&input, to, mac, egress, false)),
            input,
            action: XDP_REDIRECT,
            counters: vec![(Reason::Redirect, 1)],
        }
    }
}

#[test]
fn fixture_table() {
    if !privileged("fixture_table") {
        return;
    }
    let mut lab = XdpLab::new("table");
    let e = lab.egress_mac;
    let mut fixtures = Vec::new();

    let f = v4(PINNED4, 2055);
    fixtures.push(Fixture::redirected(
        "pinned IPv4 exporter → its peer, rewritten, redirected",
        f,
        PEER_A.into(),
        MAC_A,
        e,
    ));

    let f = Frame::udp(PINNED6.into(), LISTENER6.into(), 2055, 1400 - 62);
    fixtures.push(Fixture::redirected(
        "pinned IPv6 exporter → its peer, hop limit and UDP checksum updated",
        f,
        PEER_C6.into(),
        MAC_C6,
        e,
    ));

    let mut f = v4(PINNED4, 2055);
    f.vlans = vec![(0x8100, 100)];
    fixtures.push(Fixture::redirected(
        "802.1Q tag: parsed, stripped on the way to another interface",
        f,
        PEER_A.into(),
        MAC_A,
        e,
    ));

    let mut f = v4(PINNED4, 2055);
    f.vlans = vec![(0x88a8, 10), (0x8100, 200)];
    fixtures.push(Fixture::redirected(
        "QinQ (802.1ad + 802.1Q): both tags parsed and stripped",
        f,
        PEER_A.into(),
        MAC_A,
        e,
    ));

    let mut f = v4(PINNED4, 2055);
    f.ip_options = vec![0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00]; // router alert + NOPs (IHL 7)
    fixtures.push(Fixture::redirected(
        "IPv4 with options (IHL 7): UDP found after the options",
        f,
        PEER_A.into(),
        MAC_A,
        e,
    ));

    let mut f = v4(PINNED4, 2055);
    f.zero_udp_csum = true;
    fixtures.push(Fixture::redirected(
        "IPv4 UDP checksum 0 (none) stays 0",
        f,
        PEER_A.into(),
        MAC_A,
        e,
    ));

    let mut f = v4(PINNED4, 2055);
    f.proto = 6;
    fixtures.push(Fixture::pass(
        "TCP to the listener address → PASS",
        f,
        Reason::PassNotUdp,
    ));

    fixtures.push(Fixture::pass(
        "UDP to a port that is not a listener → PASS",
        v4(PINNED4, 22),
        Reason::PassNotListener,
    ));

    let mut f = v4(PINNED4, 2055);
    f.frag = 0x2000; // MF
    fixtures.push(Fixture::pass(
        "first IPv4 fragment → PASS (kernel reassembles, slow path forwards)",
        f,
        Reason::PassFragment,
    ));

    let mut f = v4(PINNED4, 2055);
    f.frag = 185; // offset only
    fixtures.push(Fixture::pass(
        "last IPv4 fragment → PASS",
        f,
        Reason::PassFragment,
    ));

    let mut f = Frame::udp(PINNED6.into(), LISTENER6.into(), 2055, 100);
    f.proto = 0; // hop-by-hop options header
    fixtures.push(Fixture::pass(
        "IPv6 with an extension header → PASS",
        f,
        Reason::PassIpv6ExtHeader,
    ));

    let mut f = v4(PINNED4, 2055);
    f.ttl = 1;
    fixtures.push(Fixture::pass(
        "TTL 1: forwarding would expire it → PASS to the local stack",
        f,
        Reason::PassTtlExpired,
    ));

    let mut f = Frame::udp(PINNED6.into(), LISTENER6.into(), 2055, 100);
    f.zero_udp_csum = true;
    fixtures.push(Fixture::pass(
        "IPv6 UDP checksum 0 (invalid on IPv6) → PASS",
        f,
        Reason::PassBadChecksum,
    ));

    fixtures.push(Fixture {
        description: "exporter in a pool whose peer's neighbour is unresolved → PASS",
        input: v4(Ipv4Addr::new(198, 18, 1, 50), 4739),
        action: XDP_PASS,
        output: None,
        counters: vec![
            (Reason::PassNoNeigh, 1),
            (Reason::HashPlaced, 1),
            (Reason::EventSent, 1),
        ],
    });

    fixtures.push(Fixture {
        description: "pool with no healthy peer → DROP, counted",
        input: v4(Ipv4Addr::new(198, 18, 1, 51), 6343),
        action: XDP_DROP,
        output: None,
        counters: vec![
            (Reason::DropNoHealthyPeer, 1),
            (Reason::HashPlaced, 1),
            (Reason::EventSent, 1),
        ],
    });

    let mut failures = Vec::new();
    for fx in &fixtures {
        let input = fx.input.build();
        let (action, out, counters) = lab.run(&input);
        let want_out = fx.output.clone().unwrap_or_else(|| input.clone());
        if action != fx.action || out != want_out || counters != fx.counters {
            failures.push(format!(
                "{}: action {action} (want {}), output {} (len {} vs {}), counters {counters:?} (want {:?})",
                fx.description,
                fx.action,
                if out == want_out { "ok" } else { "DIFFERS" },
                out.len(),
                want_out.len(),
                fx.counters
            ));
        }
    }
    // Every exporter seen on a listener is counted per exporter.
    let stats = lab.loaded.maps.exporter_stats().unwrap();
    let pinned = stats
        .iter()
        .find(|(a, _)| *a == IpAddr::from(PINNED4))
        .expect("stats for pinned exporter");
    // Six of the fixtures come from PINNED4 to a listener (fragments and non-listener traffic are
    // not exporter traffic); five of them were forwarded to peer a.
    assert!(
        pinned.1.packets == 6 && pinned.1.last_seen_ns > 0,
        "{pinned:?}"
    );
    assert_eq!(lab.loaded.maps.peer_stats(0).unwrap().packets, 5);
    assert!(
        failures.is_empty(),
        "fixtures failed:\n{}",
        failures.join("\n")
    );
}

/// The pool-0 peer the table gives an unpinned exporter, computed in user space.
fn pool0_choice(src: Ipv4Addr) -> u32 {
    pool0()[table_slot(&to_key_bytes(src.into()), POOL_TABLE_SIZE) as usize]
}

/// Runs `f` and asserts it was redirected, rewritten for pool-0 peer `peer` (0 = a, 1 = b).
fn expect_redirect_to(lab: &mut XdpLab, f: &Frame, peer: u32) -> Vec<(Reason, u64)> {
    let (addr, mac) = if peer == 0 {
        (PEER_A, MAC_A)
    } else {
        (PEER_B, MAC_B)
    };
    let (action, out, counters) = lab.run(&f.build());
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(out, forwarded(f, addr.into(), mac, lab.egress_mac, false));
    counters
}

#[test]
fn unknown_exporter_follows_the_pool_table_and_is_reported_once() {
    if !privileged("unknown_exporter") {
        return;
    }
    let mut lab = XdpLab::new("unknown");
    let src = Ipv4Addr::new(198, 18, 1, 77);
    let chosen = pool0_choice(src);
    let f = v4(src, 2055);
    let counters = expect_redirect_to(&mut lab, &f, chosen);
    assert_eq!(
        counters,
        vec![
            (Reason::Redirect, 1),
            (Reason::HashPlaced, 1),
            (Reason::EventSent, 1)
        ]
    );
    let events = lab.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].addr, to_key_bytes(src.into()));
    assert_eq!(
        (events[0].kind, events[0].pool_id, events[0].peer_id),
        (event_kind::NEW_EXPORTER, 0, chosen)
    );

    // The same exporter again within the event interval: forwarded, not reported again.
    let (action, _, counters) = lab.run(&f.build());
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(
        counters,
        vec![(Reason::Redirect, 1), (Reason::HashPlaced, 1)]
    );
    assert!(lab.events().is_empty());
}

#[test]
fn pinned_exporter_of_a_down_peer_falls_back_to_the_table() {
    if !privileged("peer_down") {
        return;
    }
    let mut lab = XdpLab::new("down");
    let src = Ipv4Addr::new(198, 18, 1, 20);
    lab.loaded
        .maps
        .set_exporter(
            src.into(),
            ExporterValue {
                peer_id: 4,
                pool_id: 0,
            },
        )
        .unwrap();
    let chosen = pool0_choice(src);
    let f = v4(src, 2055);
    let counters = expect_redirect_to(&mut lab, &f, chosen);
    assert_eq!(
        counters,
        vec![
            (Reason::Redirect, 1),
            (Reason::PeerDownFallback, 1),
            (Reason::EventSent, 1)
        ]
    );
    let events = lab.events();
    assert_eq!(
        (events[0].kind, events[0].peer_id),
        (event_kind::PEER_DOWN, chosen)
    );

    // Rewriting the EXPORTERS entry moves the exporter at once.
    let other = 1 - chosen;
    lab.loaded
        .maps
        .set_exporter(
            src.into(),
            ExporterValue {
                peer_id: other,
                pool_id: 0,
            },
        )
        .unwrap();
    expect_redirect_to(&mut lab, &f, other);
}

#[test]
fn truncated_frames_pass_at_every_header_boundary() {
    if !privileged("truncated") {
        return;
    }
    let mut lab = XdpLab::new("trunc");
    let mut tagged = v4(PINNED4, 2055);
    tagged.vlans = vec![(0x88a8, 10), (0x8100, 200)];
    let frames = [
        v4(PINNED4, 2055).build(),
        tagged.build(),
        Frame::udp(PINNED6.into(), LISTENER6.into(), 2055, 64).build(),
    ];
    for full in &frames {
        // The kernel's test-run needs at least an Ethernet header; cut everywhere after it,
        // through every VLAN, IP and UDP boundary.
        let headers_end = full.len() - if full[12] == 0x86 { 64 } else { 1400 - 42 };
        for len in 14..headers_end {
            let (action, out, counters) = lab.run(&full[..len]);
            assert_eq!(action, XDP_PASS, "cut at {len}");
            assert_eq!(out, &full[..len], "cut at {len}: modified");
            assert_eq!(counters, vec![(Reason::PassTruncated, 1)], "cut at {len}");
        }
    }
}

#[test]
fn non_ip_traffic_passes_untouched() {
    if !privileged("non_ip") {
        return;
    }
    let mut lab = XdpLab::new("arp");
    let arp = arp_request();
    let (action, out, counters) = lab.run(&arp);
    assert_eq!((action, out), (XDP_PASS, arp));
    assert_eq!(counters, vec![(Reason::PassNotIp, 1)]);
}

#[test]
fn same_interface_egress_uses_xdp_tx() {
    if !privileged("xdp_tx") {
        return;
    }
    let mut lab = XdpLab::new("tx");
    // Arrive on fx0 itself (the ctx's ingress ifindex) so the route leaves where it came in.
    let ifindex = ifindex("fx0");
    let mut f = v4(PINNED4, 2055);
    f.vlans = vec![(0x8100, 100)];
    let input = f.build();
    let mut ctx = [0u8; 24]; // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    ctx[4..8].copy_from_slice(&(input.len() as u32).to_ne_bytes()); // data_end
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; input.len() + 64];
    let before = lab.counters();
    let prog = lab.loaded.program().unwrap();
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(&input),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..Default::default()
        })
        .expect("test run with ingress ifindex");
    out.truncate(r.data_size_out as usize);
    let after = lab.counters();
    let moved: Vec<_> = Reason::ALL
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| a != b)
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(r.return_value, XDP_TX, "{moved:?}");
    assert_eq!(
        out,
        forwarded(&f, PEER_A.into(), MAC_A, lab.egress_mac, true),
        "VLAN tag kept for XDP_TX"
    );
}

#[test]
fn bpftool_prints_field_names_of_pinned_maps() {
    if !privileged("bpftool") {
        return;
    }
    let mut lab = XdpLab::new("bpftool");
    lab.run(&v4(PINNED4, 2055).build());
    let dir = lab.pins.path().display().to_string();
    for (map, fields) in [
        ("EXPORTERS", &["addr", "peer_id", "pool_id"][..]),
        ("PEERS", &["addr", "port", "family", "state", "pool_id"][..]),
        ("LISTENERS", &["addr", "port", "pool_id"][..]),
        (
            "EXPORTER_STATS",
            &["packets", "bytes", "last_seen_ns", "cpu"][..],
        ),
        ("SOURCE_GROUPS", &[][..]),
    ] {
        let out = run(&format!("bpftool map dump pinned {dir}/{map}"));
        for f in fields {
            assert!(
                out.contains(&format!("\"{f}\"")),
                "{map}: no field {f} in:\n{out}"
            );
        }
    }
}

#[test]
fn cached_next_hop_follows_a_neighbour_change_within_its_ttl() {
    if !privileged("nexthop_cache") {
        return;
    }
    let mut lab = XdpLab::new("nexthop");
    let f = v4(PINNED4, 2055);
    expect_redirect_to(&mut lab, &f, 0);
    // Peer a's MAC changes (a replaced NIC, a failed-over router): served from the cache for at
    // most NEXTHOP_TTL_NS, then the new one.
    run("ip neigh replace 198.18.2.2 lladdr 02:00:00:00:0a:0a dev fx0 nud permanent");
    std::thread::sleep(
        std::time::Duration::from_nanos(sluice_common::NEXTHOP_TTL_NS)
            + std::time::Duration::from_millis(50),
    );
    let (action, out, _) = lab.run(&f.build());
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(
        out,
        forwarded(
            &f,
            PEER_A.into(),
            [0x02, 0, 0, 0, 0x0a, 0x0a],
            lab.egress_mac,
            false
        )
    );
}

#[test]
fn datagrams_larger_than_the_egress_mtu_go_to_the_slow_path() {
    if !privileged("nexthop_mtu") {
        return;
    }
    let mut lab = XdpLab::new("mtu");
    run("ip link set fx0 mtu 1280");
    let (action, _, counters) = lab.run(&v4(PINNED4, 2055).build());
    assert_eq!(action, XDP_PASS, "1400-byte frame over a 1280-byte MTU");
    assert_eq!(counters, vec![(Reason::PassFibFailed, 1)]);
    let mut small = v4(PINNED4, 2055);
    small.payload.truncate(1000);
    expect_redirect_to(&mut lab, &small, 0);
}
