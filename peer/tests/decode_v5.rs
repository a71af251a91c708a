//! NetFlow v5 golden bytes: good datagram (full record asserted), truncations, bad lengths,
//! sequence loss, sampling.

#![expect(
    clippy::unwrap_used,
    reason = "fixture helpers parse constant, valid addresses"
)]

use std::net::IpAddr;

use sluice_peer::decode::{DecodeError, DecoderConfig, ShardDecoder};
use sluice_peer::record::{FlowRecord, Protocol};

const EXPORTER: &str = "198.18.1.10";
const RECEIVED_NS: u64 = 1_700_000_000_250_000_000;

#[rustfmt::skip]
const V5: [u8; 24 + 2 * 48] = [
    // --- header (24 bytes) ---
    0x00, 0x05,             // version 5
    0x00, 0x02,             // count 2
    0x00, 0x04, 0x93, 0xe0, // sys_uptime 300000 ms
    0x65, 0x53, 0xf1, 0x00, // unix_secs 1700000000
    0x00, 0x00, 0x00, 0x00, // unix_nsecs 0
    0x00, 0x00, 0x00, 0x64, // flow_sequence 100
    0x01,                   // engine_type 1
    0x02,                   // engine_id 2
    0x40, 0x64,             // sampling: mode 1, interval 100
    // --- record 1 (48 bytes): TCP 10.0.0.1:443 -> 10.0.0.2:51000 ---
    10, 0, 0, 1,            // srcaddr
    10, 0, 0, 2,            // dstaddr
    10, 0, 0, 254,          // nexthop
    0x00, 0x03,             // input ifIndex 3
    0x00, 0x04,             // output ifIndex 4
    0x00, 0x00, 0x00, 0x0a, // dPkts 10
    0x00, 0x00, 0x05, 0xdc, // dOctets 1500
    0x00, 0x04, 0x6c, 0xd0, // first 290000 (10 s before export)
    0x00, 0x04, 0x8f, 0xf8, // last 299000 (1 s before export)
    0x01, 0xbb,             // srcport 443
    0xc7, 0x38,             // dstport 51000
    0x00,                   // pad1
    0x1b,                   // tcp_flags FIN SYN PSH ACK
    0x06,                   // prot TCP
    0x20,                   // tos
    0xfd, 0xe9,             // src_as 65001
    0xfd, 0xea,             // dst_as 65002
    24,                     // src_mask
    16,                     // dst_mask
    0x00, 0x00,             // pad2
    // --- record 2 (48 bytes): UDP 192.0.2.1:53 -> 198.51.100.7:33000 ---
    192, 0, 2, 1,
    198, 51, 100, 7,
    0, 0, 0, 0,
    0x00, 0x05,
    0x00, 0x06,
    0x00, 0x00, 0x00, 0x01, // 1 packet
    0x00, 0x00, 0x00, 0x4c, // 76 bytes
    0x00, 0x04, 0x91, 0xec, // first 299500
    0x00, 0x04, 0x93, 0xdf, // last 299999
    0x00, 0x35,             // 53
    0x80, 0xe8,             // 33000
    0x00, 0x00, 0x11, 0x00, // pad, flags 0, UDP, tos 0
    0x00, 0x00, 0x00, 0x00, // AS 0, 0
    0, 0, 0x00, 0x00,
];

fn exporter() -> IpAddr {
    EXPORTER.parse().unwrap()
}

fn decode_one(
    dec: &mut ShardDecoder,
    bytes: &[u8],
) -> (Result<usize, DecodeError>, Vec<FlowRecord>) {
    let mut out = Vec::new();
    let r = dec.decode(exporter(), RECEIVED_NS, bytes, &mut out);
    (r.map(|o| o.records), out)
}

fn expected_first() -> FlowRecord {
    FlowRecord {
        flow_type: Protocol::NetflowV5,
        time_received_ns: RECEIVED_NS,
        sequence_num: 100,
        sampling_rate: 100,
        sampler_address: Some(exporter()),
        time_flow_start_ns: 1_699_999_990_000_000_000,
        time_flow_end_ns: 1_699_999_999_000_000_000,
        bytes: 1500,
        packets: 10,
        src_addr: Some("10.0.0.1".parse().unwrap()),
        dst_addr: Some("10.0.0.2".parse().unwrap()),
        etype: 0x0800,
        proto: 6,
        src_port: 443,
        dst_port: 51000,
        in_if: 3,
        out_if: 4,
        ip_tos: 0x20,
        tcp_flags: 0x1b,
        src_as: 65001,
        dst_as: 65002,
        next_hop: Some("10.0.0.254".parse().unwrap()),
        src_mask: 24,
        dst_mask: 16,
        ..FlowRecord::default()
    }
}

#[test]
fn good_datagram_full_records() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let (r, out) = decode_one(&mut dec, &V5);
    assert_eq!(r, Ok(2));
    assert_eq!(out[0], expected_first());
    assert_eq!(
        out[1],
        FlowRecord {
            time_flow_start_ns: 1_699_999_999_500_000_000,
            time_flow_end_ns: 1_699_999_999_999_000_000,
            bytes: 76,
            packets: 1,
            src_addr: Some("192.0.2.1".parse().unwrap()),
            dst_addr: Some("198.51.100.7".parse().unwrap()),
            proto: 17,
            src_port: 53,
            dst_port: 33000,
            in_if: 5,
            out_if: 6,
            ip_tos: 0,
            tcp_flags: 0,
            src_as: 0,
            dst_as: 0,
            next_hop: Some("0.0.0.0".parse().unwrap()),
            src_mask: 0,
            dst_mask: 0,
            ..expected_first()
        }
    );
    let s = dec.stats();
    assert_eq!((s.datagrams.netflow_v5, s.records.netflow_v5), (1, 2));
    assert_eq!(s.errors.total(), 0);
}

#[test]
fn apply_sampling_multiplies_counters() {
    let mut dec = ShardDecoder::new(DecoderConfig {
        apply_sampling: true,
        ..DecoderConfig::default()
    });
    let (_, out) = decode_one(&mut dec, &V5);
    assert_eq!((out[0].bytes, out[0].packets), (150_000, 1000));
}

#[test]
fn truncated_at_every_point_is_an_error_not_a_panic() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    for cut in [0, 1, 2, 3, 10, 23, 24, 30, 71, 72, 100, V5.len() - 1] {
        let (r, out) = decode_one(&mut dec, &V5[..cut]);
        assert!(r.is_err(), "cut at {cut} decoded {out:?}");
        assert!(out.is_empty());
    }
    assert!(matches!(
        decode_one(&mut dec, &V5[..10]).0,
        Err(DecodeError::Truncated {
            protocol: Protocol::NetflowV5,
            offset: 8,
            ..
        })
    ));
    assert!(matches!(
        decode_one(&mut dec, &V5[..100]).0,
        Err(DecodeError::BadLength {
            what: "record count",
            ..
        })
    ));
    assert_eq!(dec.stats().errors.total(), 14);
}

#[test]
fn bad_counts() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    for count in [0u8, 3, 31] {
        let mut d = V5;
        d[3] = count;
        let (r, _) = decode_one(&mut dec, &d);
        assert!(
            matches!(r, Err(DecodeError::BadLength { length, .. }) if length == usize::from(count)),
            "count {count}: {r:?}"
        );
    }
    assert_eq!(dec.stats().errors.bad_length, 3);
}

#[test]
fn sequence_gap_counts_lost_flows() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    decode_one(&mut dec, &V5).0.unwrap();
    // Next expected sequence is 102; send 110 (8 flows lost), then 112 (none lost).
    let mut d = V5;
    d[19] = 110;
    decode_one(&mut dec, &d).0.unwrap();
    d[19] = 112;
    decode_one(&mut dec, &d).0.unwrap();
    // A restart (sequence going back) resynchronises without counting.
    d[19] = 0;
    decode_one(&mut dec, &d).0.unwrap();
    let s = dec.stats();
    assert_eq!(s.lost_total, 8);
    assert_eq!(s.lost_per_exporter.get(&exporter()), Some(&8));
}

#[test]
fn json_matches_goflow2_names() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let (_, out) = decode_one(&mut dec, &V5);
    let mut line = Vec::new();
    out[0].write_json(&mut line, None);
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["type"], "NETFLOW_V5");
    assert_eq!(v["sampler_address"], EXPORTER);
    assert_eq!(v["src_net"], "10.0.0.0/24");
    assert_eq!(v["dst_net"], "10.0.0.0/16");
    assert_eq!(v["proto"], "TCP");
    assert_eq!(v["etype"], "IPv4");
    assert_eq!(v["time_flow_start_ns"], 1_699_999_990_000_000_000u64);
}
