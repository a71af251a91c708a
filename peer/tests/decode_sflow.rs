//! sFlow v5 golden bytes: a flow sample (Ethernet + 802.1Q + IPv4 + TCP sampled header,
//! extended switch), a counter sample and an expanded flow sample (IPv6 + UDP header);
//! truncations, bad lengths, sequence loss.

#![expect(
    clippy::unwrap_used,
    reason = "fixture helpers parse constant, valid addresses"
)]

use std::net::IpAddr;

use sluice_peer::decode::{DecodeError, DecodeOutcome, DecoderConfig, ShardDecoder};
use sluice_peer::record::{FlowRecord, Layer, Mac, Protocol};

const RECEIVED_NS: u64 = 1_700_000_000_000_000_000;

#[rustfmt::skip]
const DATAGRAM: [u8; 28 + 8 + 140 + 8 + 12 + 8 + 116] = [
    // --- datagram header (28 bytes) ---
    0x00, 0x00, 0x00, 0x05, // version 5
    0x00, 0x00, 0x00, 0x01, // agent address type IPv4
    198, 18, 1, 20,         // agent 198.18.1.20
    0x00, 0x00, 0x00, 0x03, // sub-agent id 3
    0x00, 0x00, 0x00, 0x2a, // datagram sequence 42
    0x00, 0x00, 0x03, 0xe8, // uptime 1000 ms
    0x00, 0x00, 0x00, 0x03, // 3 samples
    // --- sample 1: flow sample (format 0:1), length 140 ---
    0x00, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x8c,
    0x00, 0x00, 0x00, 0x01, // sample sequence 1
    0x00, 0x00, 0x00, 0x07, // source id: ifIndex 7
    0x00, 0x00, 0x02, 0x00, // sampling rate 512
    0x00, 0x00, 0x04, 0x00, // sample pool 1024
    0x00, 0x00, 0x00, 0x00, // drops
    0x00, 0x00, 0x00, 0x07, // input ifIndex 7
    0x00, 0x00, 0x00, 0x09, // output ifIndex 9
    0x00, 0x00, 0x00, 0x02, // 2 records
    //   record: raw packet header (0:1), length 76
    0x00, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x4c,
    0x00, 0x00, 0x00, 0x01, // header protocol: Ethernet
    0x00, 0x00, 0x05, 0xee, // frame length 1518
    0x00, 0x00, 0x00, 0x04, // stripped 4 (FCS)
    0x00, 0x00, 0x00, 0x3a, // header length 58
    0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, // dst MAC
    0x00, 0x00, 0x5e, 0x00, 0x53, 0x02, // src MAC
    0x81, 0x00, 0x20, 0x64, // 802.1Q, PCP 1, VLAN 100
    0x08, 0x00,             // IPv4
    0x45, 0x10, 0x05, 0xdc, // version 4, IHL 5, TOS 0x10, total length 1500
    0x12, 0x34, 0x40, 0x00, // id 0x1234, DF
    0x40, 0x06, 0x00, 0x00, // TTL 64, TCP, checksum
    198, 51, 100, 1,        // src
    203, 0, 113, 9,         // dst
    0x01, 0xbb, 0xc3, 0x50, // 443 -> 50000
    0, 0, 0, 0, 0, 0, 0, 0, // seq, ack
    0x50, 0x12, 0xff, 0xff, // data offset 5, SYN+ACK, window
    0x00, 0x00, 0x00, 0x00, // checksum, urgent
    0x00, 0x00,             // XDR padding to 4 bytes
    //   record: extended switch (0:1001), length 16
    0x00, 0x00, 0x03, 0xe9,
    0x00, 0x00, 0x00, 0x10,
    0x00, 0x00, 0x00, 0x64, // src VLAN 100
    0x00, 0x00, 0x00, 0x00, // src priority
    0x00, 0x00, 0x00, 0xc8, // dst VLAN 200
    0x00, 0x00, 0x00, 0x00, // dst priority
    // --- sample 2: counter sample (0:2), length 12, no records ---
    0x00, 0x00, 0x00, 0x02,
    0x00, 0x00, 0x00, 0x0c,
    0x00, 0x00, 0x00, 0x01, // sequence
    0x00, 0x00, 0x00, 0x07, // source
    0x00, 0x00, 0x00, 0x00, // 0 records
    // --- sample 3: expanded flow sample (0:3), length 116 ---
    0x00, 0x00, 0x00, 0x03,
    0x00, 0x00, 0x00, 0x74,
    0x00, 0x00, 0x00, 0x02, // sample sequence 2
    0x00, 0x00, 0x00, 0x00, // source id type
    0x00, 0x00, 0x00, 0x07, // source id index
    0x00, 0x00, 0x02, 0x00, // sampling rate 512
    0x00, 0x00, 0x08, 0x00, // sample pool
    0x00, 0x00, 0x00, 0x00, // drops
    0x00, 0x00, 0x00, 0x00, // input format
    0x00, 0x00, 0x00, 0x07, // input 7
    0x00, 0x00, 0x00, 0x00, // output format
    0x00, 0x00, 0x00, 0x09, // output 9
    0x00, 0x00, 0x00, 0x01, // 1 record
    //   record: raw packet header (0:1), length 64
    0x00, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x40,
    0x00, 0x00, 0x00, 0x0c, // header protocol: IPv6
    0x00, 0x00, 0x00, 0x64, // frame length 100
    0x00, 0x00, 0x00, 0x00, // stripped
    0x00, 0x00, 0x00, 0x30, // header length 48
    0x60, 0x00, 0x00, 0x05, // version 6, traffic class 0, flow label 5
    0x00, 0x08, 0x11, 0x40, // payload length 8, UDP, hop limit 64
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // 2001:db8::1
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // 2001:db8::2
    0x30, 0x39, 0x00, 0x35, // 12345 -> 53
    0x00, 0x08, 0x00, 0x00, // length, checksum
];

fn exporter() -> IpAddr {
    // The UDP source; records carry the agent address from the datagram.
    "198.18.1.99".parse().unwrap()
}

fn decode(
    dec: &mut ShardDecoder,
    bytes: &[u8],
) -> (Result<DecodeOutcome, DecodeError>, Vec<FlowRecord>) {
    let mut out = Vec::new();
    let r = dec.decode(exporter(), RECEIVED_NS, bytes, &mut out);
    (r, out)
}

fn expected() -> [FlowRecord; 2] {
    let base = FlowRecord {
        flow_type: Protocol::Sflow5,
        time_received_ns: RECEIVED_NS,
        sequence_num: 42,
        sampling_rate: 512,
        sampler_address: Some("198.18.1.20".parse().unwrap()),
        time_flow_start_ns: RECEIVED_NS,
        time_flow_end_ns: RECEIVED_NS,
        packets: 1,
        in_if: 7,
        out_if: 9,
        // The sub-agent id (3) is no observation domain: GoFlow2 leaves it 0.
        observation_domain_id: 0,
        ..FlowRecord::default()
    };
    [
        FlowRecord {
            bytes: 1518,
            src_addr: Some("198.51.100.1".parse().unwrap()),
            dst_addr: Some("203.0.113.9".parse().unwrap()),
            etype: 0x0800,
            proto: 6,
            src_port: 443,
            dst_port: 50000,
            src_mac: Mac([0x00, 0x00, 0x5e, 0x00, 0x53, 0x02]),
            dst_mac: Mac([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]),
            src_vlan: 100,
            dst_vlan: 200,
            vlan_id: 100,
            ip_tos: 0x10,
            ip_ttl: 64,
            ip_flags: 2,
            tcp_flags: 0x12,
            fragment_id: 0x1234,
            layer_stack: [Layer::Ethernet, Layer::Dot1q, Layer::Ipv4, Layer::Tcp]
                .into_iter()
                .collect(),
            layer_size: [14, 4, 20, 20].into_iter().collect(),
            ..base
        },
        FlowRecord {
            bytes: 100,
            src_addr: Some("2001:db8::1".parse().unwrap()),
            dst_addr: Some("2001:db8::2".parse().unwrap()),
            etype: 0x86dd,
            proto: 17,
            src_port: 12345,
            dst_port: 53,
            ip_ttl: 64,
            ipv6_flow_label: 5,
            // A raw IPv6 header (header protocol 12): the stack starts at IPv6.
            layer_stack: [Layer::Ipv6, Layer::Udp].into_iter().collect(),
            layer_size: [40, 8].into_iter().collect(),
            ..base
        },
    ]
}

#[test]
fn flow_counter_and_expanded_samples() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let (r, out) = decode(&mut dec, &DATAGRAM);
    let o = r.unwrap();
    assert_eq!((o.records, o.counter_samples), (2, 1));
    assert_eq!(out, expected());
    let s = dec.stats();
    assert_eq!(
        (s.datagrams.sflow_5, s.records.sflow_5, s.counter_samples),
        (1, 2, 1)
    );
}

#[test]
fn apply_sampling_multiplies_counters() {
    let mut dec = ShardDecoder::new(DecoderConfig {
        apply_sampling: true,
        ..DecoderConfig::default()
    });
    let (_, out) = decode(&mut dec, &DATAGRAM);
    assert_eq!((out[0].bytes, out[0].packets), (1518 * 512, 512));
}

#[test]
fn truncations_are_errors_and_keep_earlier_samples() {
    for cut in [3, 7, 11, 27, 30, 40, 100, 175, 190, DATAGRAM.len() - 1] {
        let mut dec = ShardDecoder::new(DecoderConfig::default());
        let (r, _) = decode(&mut dec, &DATAGRAM[..cut]);
        assert!(r.is_err(), "cut at {cut}");
        assert_eq!(dec.stats().errors.total(), 1);
    }
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    // Cut inside sample 3: sample 1 was decoded.
    let (r, out) = decode(&mut dec, &DATAGRAM[..DATAGRAM.len() - 1]);
    assert!(matches!(
        r,
        Err(DecodeError::BadLength {
            protocol: Protocol::Sflow5,
            what: "sample",
            length: 116,
            offset: 196
        })
    ));
    assert_eq!(out.len(), 1);
}

#[test]
fn bad_lengths_and_address_types() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    // A record length running past its sample.
    let mut d = DATAGRAM;
    d[75] = 0x90;
    assert!(matches!(
        decode(&mut dec, &d).0,
        Err(DecodeError::BadLength {
            what: "flow record",
            ..
        })
    ));
    // Unknown agent address type.
    let mut d = DATAGRAM;
    d[7] = 7;
    assert!(matches!(
        decode(&mut dec, &d).0,
        Err(DecodeError::BadLength {
            what: "agent address type",
            ..
        })
    ));
    // A sampled header length larger than its record.
    let mut d = DATAGRAM;
    d[91] = 0x60;
    assert!(matches!(
        decode(&mut dec, &d).0,
        Err(DecodeError::Truncated {
            what: "flow record",
            ..
        })
    ));
}

#[test]
fn vendor_samples_are_skipped() {
    let mut d = DATAGRAM.to_vec();
    d[27] = 4; // one more sample
    d.extend_from_slice(&[0x00, 0x00, 0x9c, 0x41, 0x00, 0x00, 0x00, 0x04, 1, 2, 3, 4]);
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    assert_eq!(decode(&mut dec, &d).0.unwrap().records, 2);
}

#[test]
fn sequence_gaps_count_lost_datagrams() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let mut d = DATAGRAM;
    for seq in [42, 43, 47, 48] {
        d[19] = seq;
        decode(&mut dec, &d).0.unwrap();
    }
    assert_eq!(dec.stats().lost_total, 3);
}
