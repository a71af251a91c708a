//! Pins every NetFlow v9 / IPFIX information element and sFlow record that GoFlow2's producer
//! (`producer/proto/producer_nf.go`, `producer_sf.go`) maps to the record field and value
//! GoFlow2 gives it, plus Sluice's listed additions (README, "Differences from GoFlow2").
//!
//! Each case is one data record of a one-template message holding only the element(s) under
//! test; the expected record is the base record (header-derived fields, export time as flow
//! times) with the case's fields set.

#![expect(
    clippy::unwrap_used,
    reason = "fixture helpers parse constant, valid addresses"
)]

use std::net::IpAddr;

use sluice_peer::decode::{DecoderConfig, ShardDecoder};
use sluice_peer::record::{FlowRecord, Layer, Mac, Protocol};

const EXPORT_S: u32 = 1_700_000_000;
const EXPORT_NS: u64 = EXPORT_S as u64 * 1_000_000_000;
const RECEIVED_NS: u64 = EXPORT_NS + 100_000_000;
const DOMAIN: u32 = 9;
const SEQUENCE: u32 = 77;
/// NetFlow v9 sysUptime at export (ms).
const UPTIME_MS: u32 = 600_000;

fn exporter() -> IpAddr {
    "198.18.1.10".parse().unwrap()
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// A field for a template: element id and its value (its length is the value's length, or
/// variable length when `varlen`).
struct Field<'a> {
    id: u16,
    value: &'a [u8],
    varlen: bool,
}

fn f(id: u16, value: &[u8]) -> Field<'_> {
    Field {
        id,
        value,
        varlen: false,
    }
}

/// One message (v9 or IPFIX) with a template of `fields` and one data record.
fn message(p: Protocol, fields: &[Field<'_>]) -> Vec<u8> {
    let ipfix = p == Protocol::Ipfix;
    let mut tpl = Vec::new();
    tpl.extend_from_slice(&256u16.to_be_bytes());
    tpl.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    let mut rec = Vec::new();
    for fl in fields {
        tpl.extend_from_slice(&fl.id.to_be_bytes());
        if fl.varlen {
            tpl.extend_from_slice(&0xffffu16.to_be_bytes());
            rec.push(fl.value.len() as u8);
        } else {
            tpl.extend_from_slice(&(fl.value.len() as u16).to_be_bytes());
        }
        rec.extend_from_slice(fl.value);
    }
    let set = |id: u16, body: &[u8]| {
        let mut s = id.to_be_bytes().to_vec();
        s.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
        s.extend_from_slice(body);
        s
    };
    let sets = [set(if ipfix { 2 } else { 0 }, &tpl), set(256, &rec)].concat();
    let mut m = Vec::new();
    if ipfix {
        m.extend_from_slice(&10u16.to_be_bytes());
        m.extend_from_slice(&((16 + sets.len()) as u16).to_be_bytes());
        m.extend_from_slice(&EXPORT_S.to_be_bytes());
    } else {
        m.extend_from_slice(&9u16.to_be_bytes());
        m.extend_from_slice(&2u16.to_be_bytes()); // template + data record
        m.extend_from_slice(&UPTIME_MS.to_be_bytes());
        m.extend_from_slice(&EXPORT_S.to_be_bytes());
    }
    m.extend_from_slice(&SEQUENCE.to_be_bytes());
    m.extend_from_slice(&DOMAIN.to_be_bytes());
    m.extend_from_slice(&sets);
    m
}

fn decode_one(p: Protocol, fields: &[Field<'_>]) -> FlowRecord {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let mut out = Vec::new();
    dec.decode(exporter(), RECEIVED_NS, &message(p, fields), &mut out)
        .unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(out.len(), 1, "{p}: one record");
    out[0]
}

/// What every record of these messages carries before its own fields.
fn base(p: Protocol) -> FlowRecord {
    FlowRecord {
        flow_type: p,
        time_received_ns: RECEIVED_NS,
        sequence_num: SEQUENCE,
        sampler_address: Some(exporter()),
        observation_domain_id: DOMAIN,
        // GoFlow2: flow times default to the export time.
        time_flow_start_ns: EXPORT_NS,
        time_flow_end_ns: EXPORT_NS,
        ..FlowRecord::default()
    }
}

/// Assert that `fields` decode, in both v9 and IPFIX, to the base record changed by `want`.
fn case(fields: &[Field<'_>], want: impl Fn(&mut FlowRecord)) {
    for p in [Protocol::NetflowV9, Protocol::Ipfix] {
        let mut expected = base(p);
        want(&mut expected);
        let ids: Vec<u16> = fields.iter().map(|f| f.id).collect();
        assert_eq!(decode_one(p, fields), expected, "{p}, elements {ids:?}");
    }
}

#[test]
fn counters_in_and_out() {
    let v = 1234u32.to_be_bytes();
    case(&[f(1, &v)], |r| r.bytes = 1234);
    case(&[f(23, &v)], |r| r.bytes = 1234); // OUT_BYTES
    case(&[f(85, &v)], |r| r.bytes = 1234); // octetTotalCount (Sluice addition)
    case(&[f(2, &v)], |r| r.packets = 1234);
    case(&[f(24, &v)], |r| r.packets = 1234); // OUT_PKTS
    case(&[f(86, &v)], |r| r.packets = 1234); // packetTotalCount (Sluice addition)
    // 1 then 23 in one record: the last one wins, as in GoFlow2.
    case(&[f(1, &v), f(23, &7u64.to_be_bytes())], |r| r.bytes = 7);
}

#[test]
fn layer_3_and_4() {
    case(&[f(4, &[17])], |r| r.proto = 17);
    case(&[f(5, &[0xb8])], |r| r.ip_tos = 0xb8);
    case(&[f(6, &[0x12])], |r| r.tcp_flags = 0x12);
    case(&[f(7, &443u16.to_be_bytes())], |r| r.src_port = 443);
    case(&[f(11, &53u16.to_be_bytes())], |r| r.dst_port = 53);
    case(&[f(10, &3u32.to_be_bytes())], |r| r.in_if = 3);
    case(&[f(14, &4u16.to_be_bytes())], |r| r.out_if = 4);
    case(&[f(9, &[24])], |r| r.src_mask = 24);
    case(&[f(13, &[16])], |r| r.dst_mask = 16);
    case(&[f(29, &[48])], |r| r.src_mask = 48);
    case(&[f(30, &[64])], |r| r.dst_mask = 64);
    case(&[f(16, &65001u32.to_be_bytes())], |r| r.src_as = 65001);
    case(&[f(17, &65002u16.to_be_bytes())], |r| r.dst_as = 65002);
    case(&[f(128, &65003u32.to_be_bytes())], |r| {
        r.next_hop_as = 65003
    });
    case(&[f(89, &[0x40])], |r| r.forwarding_status = 0x40);
    case(&[f(138, &5u32.to_be_bytes())], |r| {
        r.observation_point_id = 5
    });
    case(&[f(31, &[0x0a, 0xbc, 0xde])], |r| {
        r.ipv6_flow_label = 0x0abcde
    });
    case(&[f(52, &[63])], |r| r.ip_ttl = 63); // MIN_TTL
    case(&[f(192, &[62])], |r| r.ip_ttl = 62); // ipTTL (Sluice addition)
    case(&[f(54, &0x1234u16.to_be_bytes())], |r| {
        r.fragment_id = 0x1234
    });
    case(&[f(88, &100u16.to_be_bytes())], |r| r.fragment_offset = 100);
    // fragmentFlags: DF is 0x40 on the wire, 2 in the header's 3-bit flags field.
    case(&[f(197, &[0x40])], |r| r.ip_flags = 2);
    case(&[f(197, &[0x20])], |r| r.ip_flags = 1);
}

#[test]
fn icmp() {
    case(&[f(32, &0x0301u16.to_be_bytes())], |r| {
        (r.icmp_type, r.icmp_code) = (3, 1);
    });
    case(&[f(139, &0x8100u16.to_be_bytes())], |r| {
        (r.icmp_type, r.icmp_code) = (129, 0);
    });
    case(&[f(176, &[8])], |r| r.icmp_type = 8);
    case(&[f(177, &[2])], |r| r.icmp_code = 2);
    case(&[f(178, &[128])], |r| r.icmp_type = 128);
    case(&[f(179, &[4])], |r| r.icmp_code = 4);
}

#[test]
fn addresses_and_their_ethernet_type() {
    let v4 = [10, 0, 0, 1];
    let v6: [u8; 16] = "2001:db8::1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let zero6 = [0u8; 16];
    case(&[f(8, &v4)], |r| {
        (r.src_addr, r.etype) = (ip("10.0.0.1"), 0x0800);
    });
    case(&[f(12, &v4)], |r| {
        (r.dst_addr, r.etype) = (ip("10.0.0.1"), 0x0800);
    });
    case(&[f(27, &v6)], |r| {
        (r.src_addr, r.etype) = (ip("2001:db8::1"), 0x86dd);
    });
    case(&[f(28, &v6)], |r| {
        (r.dst_addr, r.etype) = (ip("2001:db8::1"), 0x86dd);
    });
    // Both families in one template, the unused one zero: the zero address does not replace.
    case(&[f(8, &v4), f(27, &zero6)], |r| {
        (r.src_addr, r.etype) = (ip("10.0.0.1"), 0x0800);
    });
    case(&[f(28, &zero6), f(12, &v4)], |r| {
        (r.dst_addr, r.etype) = (ip("10.0.0.1"), 0x0800);
    });
    // IP_PROTOCOL_VERSION alone gives the Ethernet type.
    case(&[f(60, &[6])], |r| r.etype = 0x86dd);
    case(&[f(60, &[4])], |r| r.etype = 0x0800);
    case(&[f(15, &v4)], |r| r.next_hop = ip("10.0.0.1"));
    case(&[f(62, &v6)], |r| r.next_hop = ip("2001:db8::1"));
    case(&[f(18, &v4)], |r| r.bgp_next_hop = ip("10.0.0.1"));
    case(&[f(63, &v6)], |r| r.bgp_next_hop = ip("2001:db8::1"));
}

#[test]
fn layer_2() {
    let m = [0x02, 0, 0, 0, 0, 0x0a];
    case(&[f(56, &m)], |r| r.src_mac = Mac(m)); // IN_SRC_MAC
    case(&[f(81, &m)], |r| r.src_mac = Mac(m)); // OUT_SRC_MAC
    case(&[f(80, &m)], |r| r.dst_mac = Mac(m)); // IN_DST_MAC
    case(&[f(57, &m)], |r| r.dst_mac = Mac(m)); // OUT_DST_MAC
    // SRC_VLAN is `vlan_id` as well as `src_vlan` (GoFlow2).
    case(&[f(58, &100u16.to_be_bytes())], |r| {
        (r.src_vlan, r.vlan_id) = (100, 100);
    });
    case(&[f(59, &200u16.to_be_bytes())], |r| r.dst_vlan = 200);
    case(&[f(243, &300u16.to_be_bytes())], |r| r.vlan_id = 300); // dot1qVlanId (addition)
}

#[test]
fn mpls() {
    // A label stack section: 20-bit label, 3 EXP bits, bottom-of-stack bit.
    let top = [0x00, 0x01, 0x01]; // label 16, bottom of stack
    let third = [0xff, 0xff, 0xf0]; // label 0xfffff
    case(&[f(70, &top)], |r| {
        r.mpls_label = [16].into_iter().collect()
    });
    // Label 3 alone: labels 1 and 2 are 0 (GoFlow2 grows the list).
    case(&[f(72, &third)], |r| {
        r.mpls_label = [0, 0, 0xf_ffff].into_iter().collect();
    });
    case(&[f(70, &top), f(71, &[0x00, 0x02, 0x00])], |r| {
        r.mpls_label = [16, 32].into_iter().collect();
    });
    let v6: [u8; 16] = "2001:db8::1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    case(&[f(47, &[10, 0, 0, 1]), f(140, &v6)], |r| {
        r.mpls_ip = [ip("10.0.0.1").unwrap(), ip("2001:db8::1").unwrap()]
            .into_iter()
            .collect();
    });
}

#[test]
fn absolute_and_relative_times() {
    let ms = 1_699_999_990_000u64;
    case(&[f(150, &(EXPORT_S - 10).to_be_bytes())], |r| {
        r.time_flow_start_ns = EXPORT_NS - 10_000_000_000;
    });
    case(&[f(151, &(EXPORT_S - 1).to_be_bytes())], |r| {
        r.time_flow_end_ns = EXPORT_NS - 1_000_000_000;
    });
    case(&[f(152, &ms.to_be_bytes())], |r| {
        r.time_flow_start_ns = ms * 1_000_000;
    });
    case(&[f(153, &ms.to_be_bytes())], |r| {
        r.time_flow_end_ns = ms * 1_000_000;
    });
    // NTP: seconds since 1900, then a binary fraction (0x8000_0000 = half a second).
    let ntp = (u64::from(EXPORT_S) + 2_208_988_800) << 32 | 0x8000_0000;
    case(&[f(154, &ntp.to_be_bytes())], |r| {
        r.time_flow_start_ns = EXPORT_NS + 500_000_000;
    });
    case(&[f(157, &ntp.to_be_bytes())], |r| {
        r.time_flow_end_ns = EXPORT_NS + 500_000_000;
    });
    case(&[f(158, &2_000_000u32.to_be_bytes())], |r| {
        r.time_flow_start_ns = EXPORT_NS - 2_000_000_000;
    });
    case(&[f(159, &1_000u32.to_be_bytes())], |r| {
        r.time_flow_end_ns = EXPORT_NS - 1_000_000;
    });
    // v9 FIRST/LAST_SWITCHED: sysUptime-relative, wrapping at 2^32 ms.
    let mut expected = base(Protocol::NetflowV9);
    expected.time_flow_start_ns = EXPORT_NS - 60_000_000_000;
    expected.time_flow_end_ns = EXPORT_NS - 1_000_000_000;
    let got = decode_one(
        Protocol::NetflowV9,
        &[
            f(22, &(UPTIME_MS - 60_000).to_be_bytes()),
            f(21, &(UPTIME_MS - 1_000).to_be_bytes()),
        ],
    );
    assert_eq!(got, expected);
}

#[test]
fn sampled_frames_rfc_7133() {
    case(&[f(312, &1500u16.to_be_bytes())], |r| {
        (r.bytes, r.packets) = (1500, 1);
    });
    #[rustfmt::skip]
    let frame = [
        0x02, 0, 0, 0, 0, 0x01, // dst MAC
        0x02, 0, 0, 0, 0, 0x02, // src MAC
        0x08, 0x00,             // IPv4
        0x45, 0x00, 0x00, 0x1c, 0x00, 0x07, 0x00, 0x00, 0x40, 0x11, 0, 0,
        192, 0, 2, 1, 192, 0, 2, 2,
        0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0, 0, // UDP 12345 -> 53
    ];
    // dataLinkFrameSection is variable length, so IPFIX only.
    let got = decode_one(
        Protocol::Ipfix,
        &[Field {
            id: 315,
            value: &frame,
            varlen: true,
        }],
    );
    let mut want = base(Protocol::Ipfix);
    want.dst_mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
    want.src_mac = Mac([0x02, 0, 0, 0, 0, 0x02]);
    want.etype = 0x0800;
    want.src_addr = ip("192.0.2.1");
    want.dst_addr = ip("192.0.2.2");
    want.proto = 17;
    want.ip_ttl = 64;
    want.fragment_id = 7;
    want.src_port = 12345;
    want.dst_port = 53;
    want.packets = 1;
    want.bytes = frame.len() as u64;
    // GoFlow2 parses the section like an sFlow header, layers included.
    want.layer_stack = [Layer::Ethernet, Layer::Ipv4, Layer::Udp]
        .into_iter()
        .collect();
    want.layer_size = [14, 20, 8].into_iter().collect();
    assert_eq!(got, want);
}

#[test]
fn per_record_sampling_interval() {
    // Sluice addition: a samplingInterval in the data record itself applies to that record.
    case(&[f(34, &100u32.to_be_bytes())], |r| r.sampling_rate = 100);
}

/// An sFlow v5 datagram (agent 198.18.1.20, sub-agent 3) with one flow sample of `records`
/// (each `(format, body)`).
fn sflow(records: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let w = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_be_bytes());
    let mut sample = Vec::new();
    for x in [1, 7, 256, 256, 0, 7, 9, records.len() as u32] {
        w(&mut sample, x); // seq, source id, rate, pool, drops, in, out, record count
    }
    for (format, body) in records {
        w(&mut sample, *format);
        w(&mut sample, body.len() as u32);
        sample.extend_from_slice(body);
    }
    let mut d = Vec::new();
    for x in [5, 1] {
        w(&mut d, x);
    }
    d.extend_from_slice(&[198, 18, 1, 20]);
    for x in [3, SEQUENCE, 1000, 1, 1, sample.len() as u32] {
        w(&mut d, x); // sub-agent, sequence, uptime, samples, sample format 0:1, length
    }
    d.extend_from_slice(&sample);
    d
}

fn words(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

fn decode_sflow(d: &[u8]) -> FlowRecord {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let mut out = Vec::new();
    dec.decode(exporter(), RECEIVED_NS, d, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    out[0]
}

fn sflow_base() -> FlowRecord {
    FlowRecord {
        flow_type: Protocol::Sflow5,
        time_received_ns: RECEIVED_NS,
        time_flow_start_ns: RECEIVED_NS,
        time_flow_end_ns: RECEIVED_NS,
        sequence_num: SEQUENCE,
        sampling_rate: 256,
        sampler_address: ip("198.18.1.20"),
        in_if: 7,
        out_if: 9,
        packets: 1,
        // No observation domain for sFlow (GoFlow2 leaves it 0), whatever the sub-agent id.
        observation_domain_id: 0,
        ..FlowRecord::default()
    }
}

#[test]
fn sflow_gateway_as_numbers() {
    // Extended gateway: next hop 10.0.0.9, router AS 65000, src AS 0 (unknown), src peer AS,
    // one AS_SEQUENCE segment [65010, 65020], two communities, local pref.
    let gateway = |src_as: u32| {
        words(&[
            1,
            0x0a00_0009,
            65000,
            src_as,
            0,
            1,
            2,
            2,
            65010,
            65020,
            2,
            0xfde8_0001,
            0xfde8_0002,
            100,
        ])
    };
    let mut want = sflow_base();
    want.bgp_next_hop = ip("10.0.0.9");
    want.dst_as = 65020; // last AS of the path
    want.next_hop_as = 65010; // first AS of the path
    want.as_path = [65010, 65020].into_iter().collect();
    want.bgp_communities = [0xfde8_0001, 0xfde8_0002].into_iter().collect();
    want.src_as = 65000; // unknown source AS: the router's own
    assert_eq!(decode_sflow(&sflow(&[(1003, gateway(0))])), want);
    want.src_as = 65030;
    assert_eq!(decode_sflow(&sflow(&[(1003, gateway(65030))])), want);
    // No path: the destination AS is the router's AS.
    let mut want = sflow_base();
    want.bgp_next_hop = ip("10.0.0.9");
    (want.src_as, want.dst_as) = (65030, 65000);
    let no_path = words(&[1, 0x0a00_0009, 65000, 65030, 0, 0, 0, 100]);
    assert_eq!(decode_sflow(&sflow(&[(1003, no_path)])), want);
}

#[test]
fn sflow_switch_router_and_header() {
    let mut header = words(&[1, 60, 4]); // Ethernet, frame length 60, 4 stripped
    #[rustfmt::skip]
    let frame = [
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02,
        0x81, 0x00, 0xe0, 0x0a,  // 802.1Q, PCP 7, VLAN 10: the VLAN only, never the PCP bits
        0x08, 0x00,
        0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0, 0,
        10, 1, 1, 1, 10, 2, 2, 2,
        0x01, 0xbb, 0xc3, 0x50, 0, 0, 0, 0, 0, 0, 0, 0,
        0x51, 0x12,              // data offset 5, NS bit set, SYN+ACK
        0, 0, 0, 0, 0, 0,
    ];
    header.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    header.extend_from_slice(&frame);
    let switch = words(&[100, 0, 200, 0]);
    let router = words(&[1, 0x0a00_0001, 24, 16]);
    let got = decode_sflow(&sflow(&[
        (1, header),
        (1001, switch.clone()),
        (1002, router.clone()),
    ]));
    let mut want = sflow_base();
    want.bytes = 60;
    want.dst_mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
    want.src_mac = Mac([0x02, 0, 0, 0, 0, 0x02]);
    want.vlan_id = 10;
    want.etype = 0x0800;
    want.src_addr = ip("10.1.1.1");
    want.dst_addr = ip("10.2.2.2");
    want.proto = 6;
    want.ip_ttl = 64;
    want.ip_flags = 2;
    want.fragment_id = 1;
    want.src_port = 443;
    want.dst_port = 50000;
    want.tcp_flags = 0x12; // the flags byte, as GoFlow2 reads it
    want.src_vlan = 100;
    want.dst_vlan = 200;
    want.next_hop = ip("10.0.0.1");
    want.src_mask = 24;
    want.dst_mask = 16;
    want.layer_stack = [Layer::Ethernet, Layer::Dot1q, Layer::Ipv4, Layer::Tcp]
        .into_iter()
        .collect();
    want.layer_size = [14, 4, 20, 20].into_iter().collect();
    assert_eq!(got, want);
    // GoFlow2 reads a TCP header only when its 20 bytes are there: cut by 2, the ports and
    // flags stay unset and the layer is not listed.
    let mut cut = words(&[1, 60, 4]);
    cut.extend_from_slice(&(frame.len() as u32 - 2).to_be_bytes());
    cut.extend_from_slice(&frame[..frame.len() - 2]);
    cut.extend_from_slice(&[0, 0]); // XDR padding
    let got = decode_sflow(&sflow(&[(1, cut), (1001, switch), (1002, router)]));
    (want.src_port, want.dst_port, want.tcp_flags) = (0, 0, 0);
    want.layer_stack = [Layer::Ethernet, Layer::Dot1q, Layer::Ipv4]
        .into_iter()
        .collect();
    want.layer_size = [14, 4, 20].into_iter().collect();
    assert_eq!(got, want);
}
