//! Oracle: softflowd (a real exporter) reads a deterministic traffic pcap and exports NetFlow
//! v5, v9 and IPFIX to a UDP socket of this test; we decode what it sent, tshark dissects the
//! same datagrams, and every record and field must match. The flows must also add up to the
//! traffic we wrote.
//!
//! Needs softflowd and tshark. Without them the test fails when `CI=true` and prints a skip
//! message otherwise.

#[path = "data/oracle_support.rs"]
#[allow(dead_code, reason = "each oracle test uses part of the support module")]
mod oracle;
#[path = "data/softflowd_support.rs"]
mod softflowd;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use oracle::{
    Scratch, assert_same, decode_all, read_pcap_udp, tools_available, tshark_frames, udp_frame,
    write_pcap,
};
use sluice_peer::record::FlowRecord;
use softflowd::{EXPORTS, Softflowd, T0_US, traffic};

/// Run softflowd over the traffic pcap, exporting `version` to a local socket; return what it
/// sent, in order.
fn export(version: &str, traffic_pcap: &Path) -> Vec<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind collector socket");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut softflowd = Softflowd::start(
        traffic_pcap,
        sock.local_addr().expect("local addr"),
        version,
    );
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
        exited = exited || softflowd.exited();
        assert!(
            Instant::now() < deadline,
            "softflowd -v {version} did not finish"
        );
    }
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
    if !softflowd::softflowd_available() || !tools_available(&[("tshark", &["--version"])]) {
        return;
    }
    let scratch = Scratch::new("oracle-softflowd");
    let traffic_pcap = scratch.path("traffic.pcap");
    write_pcap(&traffic_pcap, &traffic());
    let exporter = Ipv4Addr::new(198, 18, 1, 30);
    for (version, want_packets, want_bytes, want_flows) in EXPORTS {
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
