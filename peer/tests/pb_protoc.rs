//! `format = "pb"` read back by a decoder we did not write: the real `sluice-peer` writes the
//! same flowgen traffic (every protocol, IPv4 and IPv6) to a JSON file and a `pb` file;
//! `protoc --decode` with `peer/proto/flow.proto` reads the `pb` file, and every record must
//! equal its JSON line field by field — same names, same values, nothing extra on either side.
//!
//! Needs `protoc` (Debian's protobuf-compiler, installed by `cargo xtask setup`): without it the
//! test fails when `CI=true` and prints a skip otherwise.
#![expect(clippy::unwrap_used, reason = "test helpers panic on failure")]

#[path = "data/oracle_support.rs"]
#[allow(dead_code, reason = "each oracle test uses part of the support module")]
mod oracle;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use sluice_peer::flowgen::Protocol;
use sluice_peer::output::{EncodedBatch, Format};
use sluice_peer::record::{FlowRecord, Layer, Mac, etype_name, proto_name};
use sluice_peer::testing::{Exporter, PeerProcess, read_jsonl};

const SLUICE_PEER: &str = env!("CARGO_BIN_EXE_sluice-peer");

/// Splits a stream of length-delimited messages (varint length, then the message) into the
/// frames (length included).
fn split_delimited(mut b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (mut len, mut shift, mut i) = (0usize, 0, 0);
        loop {
            let byte = b[i];
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        out.push(&b[..i + len]);
        b = &b[i + len..];
    }
    out
}

/// protoc's text format string escapes (C-style, octal for unprintable bytes).
fn unescape(s: &str) -> Vec<u8> {
    let s = s.strip_prefix('"').unwrap().strip_suffix('"').unwrap();
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        i += 2;
        match c {
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    if let Some(d @ b'0'..=b'7') = b.get(i) {
                        v = v * 8 + u32::from(d - b'0');
                        i += 1;
                    }
                }
                out.push(u8::try_from(v).unwrap());
            }
            b'x' => {
                let hex = std::str::from_utf8(&b[i..i + 2]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            other => out.push(other), // \" \' \\
        }
    }
    out
}

fn addr_text(bytes: &[u8]) -> String {
    if let Ok(a) = <[u8; 4]>::try_from(bytes) {
        IpAddr::V4(Ipv4Addr::from(a)).to_string()
    } else if let Ok(a) = <[u8; 16]>::try_from(bytes) {
        IpAddr::V6(Ipv6Addr::from(a)).to_string()
    } else {
        panic!("address of {} bytes", bytes.len())
    }
}

/// `protoc --decode` of every message in `pb` (wrapped as one repeated field, which is what
/// length-delimited messages each prefixed by the field's tag are), as name → text value.
fn protoc_decode(pb: &[u8], dir: &Path) -> Vec<BTreeMap<String, Vec<String>>> {
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    std::fs::write(
        dir.join("batch.proto"),
        "syntax = \"proto3\";\npackage sluicetest;\nimport \"flow.proto\";\n\
         message Batch { repeated flowpb.FlowMessage records = 1; }\n",
    )
    .unwrap();
    let mut wrapped = Vec::with_capacity(pb.len() * 2);
    for frame in split_delimited(pb) {
        // Field 1, wire type 2, then the frame: the message's varint length and bytes.
        wrapped.push(0x0a);
        wrapped.extend_from_slice(frame);
    }
    let out = Command::new("protoc")
        .arg(format!("-I{}", proto_dir.display()))
        .arg(format!("-I{}", dir.display()))
        .arg("--decode=sluicetest.Batch")
        .arg("batch.proto")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(&wrapped)?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut records = Vec::new();
    let mut current: Option<BTreeMap<String, Vec<String>>> = None;
    for line in text.lines() {
        match line.trim() {
            "records {" => current = Some(BTreeMap::new()),
            "}" => records.push(current.take().unwrap()),
            field => {
                let (k, v) = field.split_once(": ").unwrap();
                let values: &mut Vec<String> =
                    current.as_mut().unwrap().entry(k.into()).or_default();
                values.push(v.into());
                assert!(
                    values.len() == 1 || REPEATED.contains(&k),
                    "field {k} twice"
                );
            }
        }
    }
    assert!(current.is_none(), "unterminated record in:\n{text}");
    records
}

/// The repeated fields of `flow.proto` (JSON arrays).
const REPEATED: [&str; 8] = [
    "mpls_label",
    "mpls_ttl",
    "mpls_ip",
    "bgp_communities",
    "as_path",
    "layer_stack",
    "layer_size",
    "ipv6_routing_header_addresses",
];

/// A JSON array of strings.
fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// Asserts that one protoc-decoded record equals its JSON line, key by key.
fn assert_equal(i: usize, pb: &BTreeMap<String, Vec<String>>, json: &Value) {
    let json = json.as_object().unwrap();
    // Every field protoc printed is a JSON key (an unknown tag would print as a number).
    for k in pb.keys() {
        assert!(
            json.contains_key(k),
            "record {i}: protoc field {k} not in the JSON"
        );
    }
    let one = |k: &str| pb.get(k).map(|v| v[0].as_str());
    let num = |k: &str| -> u64 { one(k).map_or(0, |v| v.parse().unwrap()) };
    let all = |k: &str| pb.get(k).cloned().unwrap_or_default();
    for (k, want) in json {
        let ctx = format!("record {i}: {k}");
        match k.as_str() {
            "type" => assert_eq!(one(k), want.as_str(), "{ctx}"),
            "mpls_label" | "mpls_ttl" | "bgp_communities" | "as_path" | "layer_size" => {
                let got: Vec<u64> = all(k).iter().map(|v| v.parse().unwrap()).collect();
                let want: Vec<u64> = want
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                assert_eq!(got, want, "{ctx}");
            }
            // protoc names the enum values from flow.proto: they must be the JSON's names.
            "layer_stack" => assert_eq!(all(k), strings(want), "{ctx}"),
            "mpls_ip" | "ipv6_routing_header_addresses" => {
                let got: Vec<String> = all(k).iter().map(|v| addr_text(&unescape(v))).collect();
                assert_eq!(got, strings(want), "{ctx}");
            }
            "sampler_address" | "src_addr" | "dst_addr" | "next_hop" | "bgp_next_hop" => {
                let got = one(k).map(|v| addr_text(&unescape(v))).unwrap_or_default();
                assert_eq!(got, want.as_str().unwrap(), "{ctx}");
            }
            "etype" => {
                let v = num(k);
                let name = etype_name(u16::try_from(v).unwrap()).map_or(v.to_string(), Into::into);
                assert_eq!(name, want.as_str().unwrap(), "{ctx}");
            }
            "proto" => {
                let v = num(k);
                let name = proto_name(u8::try_from(v).unwrap()).map_or(v.to_string(), Into::into);
                assert_eq!(name, want.as_str().unwrap(), "{ctx}");
            }
            "src_mac" | "dst_mac" => {
                let b = num(k).to_be_bytes();
                let mac = b[2..]
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
                assert_eq!(mac, want.as_str().unwrap(), "{ctx}");
            }
            // The prefix length; the address part is the (masked) src/dst address, compared
            // above.
            "src_net" | "dst_net" => {
                let len = want.as_str().unwrap().rsplit_once('/').unwrap().1;
                assert_eq!(num(k).to_string(), len, "{ctx}");
            }
            _ => assert_eq!(Some(num(k)), want.as_u64(), "{ctx}"),
        }
    }
}

#[test]
fn protoc_reads_pb_output_like_the_json_output() {
    if !oracle::tools_available(&[("protoc", &["--version"])]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (json_path, pb_path) = (dir.path().join("flows.jsonl"), dir.path().join("flows.pb"));
    let config = dir.path().join("peer.toml");
    std::fs::write(
        &config,
        format!(
            "[[outputs]]\ntype = \"file\"\npath = \"{}\"\n\n\
             [[outputs]]\ntype = \"file\"\nformat = \"pb\"\npath = \"{}\"\n",
            json_path.display(),
            pb_path.display()
        ),
    )
    .unwrap();
    let peer = PeerProcess::start(
        SLUICE_PEER,
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
        ],
    );
    let mut exporters = Exporter::every_protocol(21);
    for e in &mut exporters {
        e.send(e.same_family(&peer.listen), 12, 5);
    }
    let expected: usize = exporters.iter().map(|e| e.sent.len()).sum();
    peer.wait_metric("sluice_peer_flows_total", expected as f64);
    let (status, log) = peer.stop();
    assert!(status.success(), "{log}");

    let json = read_jsonl(&json_path);
    let pb = std::fs::read(&pb_path).unwrap();
    assert_eq!(json.len(), expected);
    assert_eq!(split_delimited(&pb).len(), expected, "pb records");
    let decoded = protoc_decode(&pb, dir.path());
    assert_eq!(decoded.len(), expected, "records protoc decoded");
    // Each exporter's records are in the same order in both files (one shard decodes them and
    // feeds both outputs); across exporters the order may differ, as the shards take turns
    // at each output independently.
    let by_exporter = |exporter: Vec<String>| {
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, e) in exporter.into_iter().enumerate() {
            groups.entry(e).or_default().push(i);
        }
        groups
    };
    let pb_groups = by_exporter(
        decoded
            .iter()
            .map(|r| addr_text(&unescape(&r["sampler_address"][0])))
            .collect(),
    );
    let json_groups = by_exporter(
        json.iter()
            .map(|j| j["sampler_address"].as_str().unwrap().to_owned())
            .collect(),
    );
    assert_eq!(
        pb_groups.keys().collect::<Vec<_>>(),
        json_groups.keys().collect::<Vec<_>>(),
        "exporters"
    );
    for (exporter, pb_records) in &pb_groups {
        let json_records = &json_groups[exporter];
        assert_eq!(pb_records.len(), json_records.len(), "{exporter}'s records");
        for (&p, &j) in pb_records.iter().zip(json_records) {
            assert_equal(p, &decoded[p], &json[j]);
        }
    }
    // The comparison saw real values: IPv6 and IPv4 addresses, every protocol.
    let types: std::collections::BTreeSet<&str> = decoded
        .iter()
        .filter_map(|r| r.get("type").map(|v| v[0].as_str()))
        .collect();
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["IPFIX", "NETFLOW_V5", "NETFLOW_V9", "SFLOW_5"]
    );
    assert!(decoded.iter().any(|r| {
        r.get("src_addr")
            .is_some_and(|a| unescape(&a[0]).len() == 16)
    }));
}

/// Records with every field set, repeated fields included (the flowgen traffic above carries no
/// MPLS or SRv6), every layer kind listed, encoded by the peer's own batch encoder.
#[test]
fn protoc_reads_every_field_including_repeated_ones() {
    if !oracle::tools_available(&[("protoc", &["--version"])]) {
        return;
    }
    let a = |s: &str| -> IpAddr { s.parse().unwrap() };
    let full = |v6: bool| FlowRecord {
        flow_type: Protocol::Sflow5,
        time_received_ns: 1_800_000_000_123_456_789,
        sequence_num: 3,
        sampling_rate: 4,
        sampler_address: Some(a("198.18.1.10")),
        time_flow_start_ns: 1_800_000_000_000_000_000,
        time_flow_end_ns: 1_800_000_000_100_000_000,
        bytes: 1500,
        packets: 1,
        src_addr: Some(a(if v6 { "2001:db8::1" } else { "10.0.0.1" })),
        dst_addr: Some(a(if v6 { "2001:db8::2" } else { "10.0.0.2" })),
        etype: if v6 { 0x86dd } else { 0x0800 },
        proto: 47,
        src_port: 1,
        dst_port: 2,
        in_if: 5,
        out_if: 6,
        src_mac: Mac([0x02, 0, 0, 0, 0, 7]),
        dst_mac: Mac([0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54]),
        src_vlan: 9,
        dst_vlan: 10,
        vlan_id: 11,
        ip_tos: 12,
        forwarding_status: 13,
        ip_ttl: 14,
        ip_flags: 2,
        tcp_flags: 0x1ff,
        icmp_type: 16,
        icmp_code: 17,
        ipv6_flow_label: 0xfffff,
        fragment_id: 19,
        fragment_offset: 20,
        src_as: 4_200_000_000,
        dst_as: 22,
        next_hop: Some(a("10.255.0.1")),
        next_hop_as: 23,
        src_mask: if v6 { 64 } else { 24 },
        dst_mask: 16,
        bgp_next_hop: Some(a("2001:db8:ffff::1")),
        bgp_communities: [0xfde8_0001, 7].into_iter().collect(),
        as_path: [65001, 4_200_000_000].into_iter().collect(),
        mpls_label: [16, 0xf_ffff, 3].into_iter().collect(),
        mpls_ttl: [255, 1].into_iter().collect(),
        mpls_ip: [a("10.9.9.9"), a("2001:db8::9")].into_iter().collect(),
        observation_domain_id: 24,
        observation_point_id: 25,
        layer_stack: Layer::ALL.into_iter().collect(),
        layer_size: (0..Layer::ALL.len() as u16).map(|i| i * 300).collect(),
        ipv6_routing_header_addresses: [a("2001:db8::a"), a("2001:db8::b")].into_iter().collect(),
        ipv6_routing_header_seg_left: 26,
    };
    let records = [full(false), full(true), FlowRecord::default()];
    let mut batch = EncodedBatch::with_capacity(Format::Pb, records.len());
    for r in &records {
        batch.push_record(r);
    }
    let dir = tempfile::tempdir().unwrap();
    let decoded = protoc_decode(batch.text(0..batch.len()), dir.path());
    assert_eq!(decoded.len(), records.len());
    for (i, (p, r)) in decoded.iter().zip(&records).enumerate() {
        assert_equal(i, p, &serde_json::to_value(r).unwrap());
    }
    assert_eq!(decoded[0]["mpls_label"], ["16", "1048575", "3"]);
    assert_eq!(decoded[0]["layer_stack"][0], "Ethernet");
    assert_eq!(decoded[0]["layer_stack"][11], "IPv6HeaderFragment");
}
