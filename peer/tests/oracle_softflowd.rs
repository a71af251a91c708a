//! Oracle: softflowd (a real exporter) reads a deterministic traffic pcap and exports NetFlow
//! v5, v9 and IPFIX to a UDP socket of this test; we decode what it sent, tshark dissects the
//! same datagrams, and every record and field must match. The flows must also add up to the
//! traffic we wrote.
//!
//! Needs softflowd and tshark. Without them the test fails when `CI=true` and prints a skip
//! message otherwise.

#[path = "data/oracle_support.rs"]
#[allow(dead_code, reason = "each oracle test uses part of the support module")]
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_peer::record::FlowRecord;
use support::{
    Scratch, assert_same, decode_all, ipv4_frame, read_pcap_udp, tools_available, tshark_frames,
    udp_frame, write_pcap,
};

const T0_US: u64 = 1_700_000_000_000_000;

fn tcp(sport: u16, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.resize(20 + payload, 0x61);
    t
}

fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.resize(8 + payload, 0x62);
    u
}

fn icmp(kind: u8, code: u8) -> Vec<u8> {
    vec![kind, code, 0, 0, 0, 1, 0, 1, 0x63, 0x63, 0x63, 0x63]
}

fn ipv6_frame(src: Ipv6Addr, dst: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(l4);
    f
}

/// The traffic: (time µs, frame). IPv4 TCP both ways, UDP, ICMP; IPv6 UDP and ICMPv6.
fn traffic() -> Vec<(u64, Vec<u8>)> {
    let a = |d| Ipv4Addr::new(10, 0, 0, d);
    let v6 = |d: u16| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, d);
    vec![
        (T0_US, ipv4_frame(a(1), a(2), 6, 0, &tcp(1234, 80, 0x02, 0))),
        (
            T0_US + 100_000,
            ipv4_frame(a(2), a(1), 6, 0, &tcp(80, 1234, 0x12, 0)),
        ),
        (
            T0_US + 200_000,
            ipv4_frame(a(1), a(2), 6, 0, &tcp(1234, 80, 0x18, 300)),
        ),
        (
            T0_US + 300_000,
            ipv4_frame(a(2), a(1), 6, 0, &tcp(80, 1234, 0x18, 1200)),
        ),
        (
            T0_US + 2_000_000,
            ipv4_frame(a(1), a(2), 6, 0, &tcp(1234, 80, 0x11, 0)),
        ),
        (
            T0_US + 500_000,
            ipv4_frame(a(3), a(4), 17, 0xb8, &udp(5353, 53, 40)),
        ),
        (
            T0_US + 600_000,
            ipv4_frame(a(3), a(4), 17, 0xb8, &udp(5353, 53, 60)),
        ),
        (T0_US + 700_000, ipv4_frame(a(5), a(6), 1, 0, &icmp(8, 0))),
        (
            T0_US + 800_000,
            ipv6_frame(v6(1), v6(2), 17, &udp(5000, 53, 20)),
        ),
        (T0_US + 900_000, ipv6_frame(v6(3), v6(4), 58, &icmp(128, 0))),
    ]
    .into_iter()
    // 60 one-packet DNS flows, so every version needs several export datagrams (sequence
    // numbers then run across datagrams).
    .chain((0..60u16).map(|i| {
        (
            T0_US + 1_000_000 + u64::from(i) * 1000,
            ipv4_frame(a(7), a(8), 17, 0, &udp(20_000 + i, 53, 10)),
        )
    }))
    .collect::<std::collections::BTreeMap<_, _>>()
    .into_iter()
    .collect()
}

/// Run softflowd over the traffic pcap, exporting `version` to a local socket; return what it
/// sent, in order.
fn export(version: &str, traffic_pcap: &std::path::Path) -> Vec<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind collector socket");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let port = sock.local_addr().expect("local addr").port();
    // -d: stay in the foreground; -a: take the clock from the pcap, so times are reproducible.
    let mut child = Command::new("softflowd")
        .arg("-r")
        .arg(traffic_pcap)
        .args([
            "-n",
            &format!("127.0.0.1:{port}"),
            "-v",
            version,
            "-d",
            "-a",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn softflowd");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_535];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut exited = false;
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => got.push(buf[..n].to_vec()),
            Err(_) if exited => break,
            Err(_) => {}
        }
        if !exited && child.try_wait().expect("softflowd status").is_some() {
            exited = true;
        }
        assert!(
            Instant::now() < deadline,
            "softflowd -v {version} did not finish"
        );
    }
    let status = child.wait().expect("softflowd exit");
    assert!(status.success(), "softflowd -v {version} failed: {status}");
    got
}

fn totals(records: &[Vec<FlowRecord>]) -> (u64, u64, usize) {
    let all: Vec<&FlowRecord> = records.iter().flatten().collect();
    (
        all.iter().map(|r| r.packets).sum(),
        all.iter().map(|r| r.bytes).sum(),
        all.len(),
    )
}

#[test]
fn softflowd_exports_decode_like_tshark() {
    if !tools_available(&[("softflowd", &["-h"]), ("tshark", &["--version"])]) {
        return;
    }
    let scratch = Scratch::new("oracle-softflowd");
    let traffic_pcap = scratch.path("traffic.pcap");
    write_pcap(&traffic_pcap, &traffic());
    let exporter = Ipv4Addr::new(198, 18, 1, 30);
    // (packets, IP bytes, flows): v5 carries only the IPv4 part (TCP both ways, UDP, ICMP and
    // the 60 DNS flows); v9 and IPFIX add the IPv6 UDP and ICMPv6 flows.
    for (version, want_packets, want_bytes, want_flows) in [
        ("5", 68, 4168, 64),
        ("9", 70, 4288, 66),
        ("10", 70, 4288, 66),
    ] {
        let mut sent = export(version, &traffic_pcap);
        assert!(
            sent.len() >= 2,
            "softflowd -v {version} sent {} datagrams",
            sent.len()
        );
        if version == "9" {
            // softflowd puts the number of flowsets in the v9 header's count, which RFC 3954
            // defines as the number of records; tshark stops dissecting after `count` records
            // (we, like goflow2, decode every set present). Give tshark the whole packet.
            for d in &mut sent {
                d[2..4].copy_from_slice(&u16::MAX.to_be_bytes());
            }
        }
        let exported_pcap = scratch.path(&format!("export-v{version}.pcap"));
        let frames: Vec<(u64, Vec<u8>)> = sent
            .iter()
            .enumerate()
            .map(|(i, d)| (T0_US + i as u64, udp_frame(exporter, d)))
            .collect();
        write_pcap(&exported_pcap, &frames);
        let datagrams = read_pcap_udp(&exported_pcap);
        assert!(
            datagrams
                .iter()
                .all(|(src, _)| *src == IpAddr::V4(exporter))
        );
        let ours = decode_all(&datagrams);
        let theirs = tshark_frames(&exported_pcap);
        let compared = assert_same(&ours, &theirs);
        assert!(compared > 40, "v{version}: only {compared} values compared");
        assert_eq!(
            totals(&ours),
            (want_packets, want_bytes, want_flows),
            "v{version}: packets, bytes, flows"
        );
    }
}
