//! Oracle: NetFlow v5, v9 (with options data) and IPFIX packets built by scapy's netflow layers
//! (`data/scapy_netflow.py`) are decoded by us and by tshark; every record and field must match.
//!
//! Needs python3 with scapy, and tshark. Without them the test fails when `CI=true` and prints
//! a skip message otherwise.

#[path = "data/oracle_support.rs"]
#[allow(dead_code, reason = "each oracle test uses part of the support module")]
mod support;

use std::path::Path;
use std::process::Command;

use support::{Scratch, assert_same, decode_all, read_pcap_udp, tools_available, tshark_frames};

#[test]
fn scapy_packets_decode_like_tshark() {
    if !tools_available(&[
        ("python3", &["-c", "import scapy.layers.netflow"]),
        ("tshark", &["--version"]),
    ]) {
        return;
    }
    let scratch = Scratch::new("oracle-scapy");
    let pcap = scratch.path("scapy.pcap");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/scapy_netflow.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&pcap)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "scapy_netflow.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let datagrams = read_pcap_udp(&pcap);
    assert_eq!(datagrams.len(), 4, "v5, v9, v9 IPv6, IPFIX");
    let ours = decode_all(&datagrams);
    assert_eq!(
        ours.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 2, 3],
        "records per datagram"
    );
    let theirs = tshark_frames(&pcap);
    let compared = assert_same(&ours, &theirs);
    // 11 records × (3 header facts + about 15 fields each).
    assert!(compared > 150, "only {compared} values compared");
    // Sampling from the v5 header and the v9 options data reached the records.
    assert_eq!(ours[0][0].sampling_rate, 64);
    assert_eq!(ours[1][0].sampling_rate, 100);
}
