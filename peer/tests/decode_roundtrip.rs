//! Property tests: flowgen encoder → decoder round trip for every protocol, and arbitrary bytes
//! never panic the decoder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use sluice_peer::decode::{DecoderConfig, ShardDecoder};
use sluice_peer::flowgen::{Encoder, EncoderConfig, FlowSynth};
use sluice_peer::record::{FlowRecord, Layer, Mac, Protocol};

const BOOT_NS: u64 = 1_700_000_000_000_000_000;
const EXPORT_NS: u64 = BOOT_NS + 2 * 86_400_000_000_000;
const RECEIVED_NS: u64 = EXPORT_NS + 5_000_000;

fn exporter() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10))
}

fn addr(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

prop_compose! {
    /// Any flow; `project` then keeps what a protocol can carry.
    fn any_flow()(
        v6 in any::<bool>(),
        addrs in any::<[u128; 4]>(),
        proto in prop::sample::select(vec![6u8, 17, 1]),
        ports in any::<(u16, u16)>(),
        tcp_flags in any::<u16>(),
        icmp in any::<(u8, u8)>(),
        counters in any::<(u64, u64)>(),
        ifs in any::<(u32, u32)>(),
        ases in any::<(u32, u32, u32)>(),
        masks in (0u8..=32, 0u8..=32),
        tos_ttl in any::<(u8, u8)>(),
        vlans in any::<(u16, u16, u16)>(),
        macs in any::<([u8; 6], [u8; 6])>(),
        frag in any::<(u16, u8)>(),
        flow_label in any::<u32>(),
        // Flow times: whole milliseconds within a day before export.
        ago_ms in (0u64..86_400_000, 0u64..3_600_000),
    ) -> FlowRecord {
        let end_ms = EXPORT_NS / 1_000_000 - ago_ms.0;
        let proto = if v6 && proto == 1 { 58 } else { proto };
        FlowRecord {
            src_addr: Some(addr(v6, addrs[0])),
            dst_addr: Some(addr(v6, addrs[1])),
            next_hop: Some(addr(v6, addrs[2])),
            bgp_next_hop: Some(addr(v6, addrs[3])),
            etype: if v6 { 0x86dd } else { 0x0800 },
            proto,
            src_port: ports.0,
            dst_port: ports.1,
            tcp_flags,
            icmp_type: icmp.0,
            icmp_code: icmp.1,
            bytes: counters.0,
            packets: counters.1,
            in_if: ifs.0,
            out_if: ifs.1,
            src_as: ases.0,
            dst_as: ases.1,
            next_hop_as: ases.2,
            src_mask: masks.0,
            dst_mask: masks.1,
            ip_tos: tos_ttl.0,
            ip_ttl: tos_ttl.1,
            src_vlan: vlans.0,
            dst_vlan: vlans.1,
            vlan_id: vlans.2,
            src_mac: Mac(macs.0),
            dst_mac: Mac(macs.1),
            fragment_id: u32::from(frag.0),
            ip_flags: frag.1,
            ipv6_flow_label: flow_label,
            time_flow_end_ns: end_ms * 1_000_000,
            time_flow_start_ns: end_ms.saturating_sub(ago_ms.1) * 1_000_000,
            ..FlowRecord::default()
        }
    }
}

/// The part of `f` that protocol `p`'s encoder carries (header-derived fields left default).
fn project(p: Protocol, f: &FlowRecord) -> FlowRecord {
    let v4 = |a: Option<IpAddr>| match a {
        Some(IpAddr::V4(a)) => Some(IpAddr::V4(a)),
        _ => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
    };
    let v6 = matches!(f.src_addr, Some(IpAddr::V6(_)));
    let mut e = FlowRecord {
        src_addr: f.src_addr,
        dst_addr: f.dst_addr,
        next_hop: f.next_hop,
        etype: f.etype,
        proto: f.proto,
        src_port: f.src_port,
        dst_port: f.dst_port,
        tcp_flags: f.tcp_flags & 0xff,
        ip_tos: f.ip_tos,
        src_mask: f.src_mask,
        dst_mask: f.dst_mask,
        time_flow_start_ns: f.time_flow_start_ns,
        time_flow_end_ns: f.time_flow_end_ns,
        ..FlowRecord::default()
    };
    match p {
        Protocol::NetflowV5 => {
            e.src_addr = v4(f.src_addr);
            e.dst_addr = v4(f.dst_addr);
            e.next_hop = v4(f.next_hop);
            e.etype = 0x0800;
            e.in_if = f.in_if & 0xffff;
            e.out_if = f.out_if & 0xffff;
            e.packets = f.packets & 0xffff_ffff;
            e.bytes = f.bytes & 0xffff_ffff;
            e.src_as = f.src_as & 0xffff;
            e.dst_as = f.dst_as & 0xffff;
        }
        Protocol::NetflowV9 | Protocol::Ipfix => {
            let wide = p == Protocol::Ipfix;
            e.in_if = f.in_if;
            e.out_if = f.out_if;
            e.packets = if wide {
                f.packets
            } else {
                f.packets & 0xffff_ffff
            };
            e.bytes = if wide { f.bytes } else { f.bytes & 0xffff_ffff };
            e.src_as = f.src_as;
            e.dst_as = f.dst_as;
            if v6 {
                e.ipv6_flow_label = f.ipv6_flow_label & if wide { u32::MAX } else { 0xff_ffff };
            }
        }
        Protocol::Sflow5 => {
            let tcp = f.proto == 6;
            let icmp = f.proto == 1 || f.proto == 58;
            e.bytes = f.bytes & 0xffff_ffff;
            e.packets = 1;
            e.tcp_flags = if tcp { f.tcp_flags & 0xff } else { 0 };
            e.src_port = if icmp { 0 } else { f.src_port };
            e.dst_port = if icmp { 0 } else { f.dst_port };
            e.icmp_type = if icmp { f.icmp_type } else { 0 };
            e.icmp_code = if icmp { f.icmp_code } else { 0 };
            e.in_if = f.in_if & 0x3fff_ffff;
            e.out_if = f.out_if & 0x3fff_ffff;
            e.src_mac = f.src_mac;
            e.dst_mac = f.dst_mac;
            e.vlan_id = f.vlan_id & 0x0fff;
            e.src_vlan = f.src_vlan;
            e.dst_vlan = f.dst_vlan;
            e.ip_ttl = f.ip_ttl;
            // An unknown (0) source AS decodes as the router's AS, which the encoder sends as
            // the destination AS.
            e.src_as = if f.src_as == 0 { f.dst_as } else { f.src_as };
            e.dst_as = f.dst_as;
            e.next_hop_as = f.next_hop_as;
            // The encoder's AS path: the next-hop AS, then the destination AS.
            e.as_path = [f.next_hop_as, f.dst_as].into_iter().collect();
            e.bgp_next_hop = f.bgp_next_hop;
            if v6 {
                e.ipv6_flow_label = f.ipv6_flow_label & 0x000f_ffff;
            } else {
                e.fragment_id = f.fragment_id & 0xffff;
                e.ip_flags = f.ip_flags & 0x7;
            }
            e.time_flow_start_ns = RECEIVED_NS;
            e.time_flow_end_ns = RECEIVED_NS;
            // The encoder's sampled header: Ethernet, a tag when there is a VLAN, IP, then
            // a 20-byte TCP header or 8 bytes of UDP or ICMP.
            let mut layers = vec![(Layer::Ethernet, 14)];
            if e.vlan_id != 0 {
                layers.push((Layer::Dot1q, 4));
            }
            layers.push(if v6 {
                (Layer::Ipv6, 40)
            } else {
                (Layer::Ipv4, 20)
            });
            layers.push(match f.proto {
                6 => (Layer::Tcp, 20),
                17 => (Layer::Udp, 8),
                1 => (Layer::Icmp, 8),
                _ => (Layer::Icmpv6, 8),
            });
            e.layer_stack = layers.iter().map(|l| l.0).collect();
            e.layer_size = layers.iter().map(|l| l.1).collect();
        }
    }
    e
}

fn round_trip(p: Protocol, flows: &[FlowRecord], sampling_rate: u32, apply_sampling: bool) {
    let domain = 7;
    let mut enc = Encoder::new(
        p,
        EncoderConfig {
            sampling_rate,
            template_every: 3,
            observation_domain_id: domain,
            agent_address: exporter(),
            boot_time_ns: BOOT_NS,
        },
    );
    let mut dec = ShardDecoder::new(DecoderConfig {
        apply_sampling,
        ..DecoderConfig::default()
    });
    let mut buf = Vec::new();
    let mut seq_expected = 0u32;
    let max = enc.max_flows_per_datagram();
    for (i, chunk) in flows.chunks(max.min(8)).enumerate() {
        let projected: Vec<FlowRecord> = chunk.iter().map(|f| project(p, f)).collect();
        enc.encode(&projected, EXPORT_NS, &mut buf);
        let mut out = Vec::new();
        let outcome = dec
            .decode(exporter(), RECEIVED_NS, &buf, &mut out)
            .unwrap_or_else(|e| panic!("{p} datagram {i}: {e}"));
        assert_eq!(outcome.records, chunk.len());
        assert_eq!(out.len(), chunk.len(), "{p} datagram {i}");
        let rate = u64::from(if p == Protocol::NetflowV5 {
            sampling_rate.min(0x3fff)
        } else {
            sampling_rate
        });
        for (got, want) in out.iter().zip(&projected) {
            let mut want = *want;
            want.flow_type = p;
            want.time_received_ns = RECEIVED_NS;
            want.sampler_address = Some(exporter());
            want.sampling_rate = rate;
            want.sequence_num = match p {
                Protocol::NetflowV9 | Protocol::Sflow5 => i as u32,
                _ => seq_expected,
            };
            want.observation_domain_id = match p {
                Protocol::NetflowV5 | Protocol::Sflow5 => 0,
                _ => domain,
            };
            if apply_sampling && rate > 1 {
                want.bytes = want.bytes.saturating_mul(rate);
                want.packets = want.packets.saturating_mul(rate);
            }
            assert_eq!(*got, want, "{p} datagram {i}");
        }
        seq_expected = seq_expected.wrapping_add(match p {
            Protocol::NetflowV5 => chunk.len() as u32,
            // IPFIX counts options data records too (sent with the templates).
            Protocol::Ipfix if sampling_rate > 0 && i % 3 == 0 => chunk.len() as u32 + 1,
            _ => chunk.len() as u32,
        });
    }
    let stats = dec.stats();
    assert_eq!(stats.lost_total, 0, "{p}: {stats:?}");
    assert_eq!(stats.errors.total(), 0);
    assert_eq!(stats.records.get(p), flows.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn netflow_v5_round_trip(flows in prop::collection::vec(any_flow(), 1..70), rate in 0u32..20_000, apply in any::<bool>()) {
        round_trip(Protocol::NetflowV5, &flows, rate, apply);
    }

    #[test]
    fn netflow_v9_round_trip(flows in prop::collection::vec(any_flow(), 1..40), rate in 0u32..100_000, apply in any::<bool>()) {
        round_trip(Protocol::NetflowV9, &flows, rate, apply);
    }

    #[test]
    fn ipfix_round_trip(flows in prop::collection::vec(any_flow(), 1..40), rate in 0u32..100_000, apply in any::<bool>()) {
        round_trip(Protocol::Ipfix, &flows, rate, apply);
    }

    #[test]
    fn sflow_round_trip(flows in prop::collection::vec(any_flow(), 1..40), rate in 0u32..100_000, apply in any::<bool>()) {
        round_trip(Protocol::Sflow5, &flows, rate, apply);
    }

    #[test]
    fn fast_json_equals_serde_and_parses_back(f in any_flow(), etype in any::<u16>(), proto in any::<u8>()) {
        let r = FlowRecord { etype, proto, ..f };
        let mut fast = Vec::new();
        r.write_json(&mut fast, None);
        prop_assert_eq!(&fast, &serde_json::to_vec(&r).unwrap());
        let back: FlowRecord = serde_json::from_slice(&fast).unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600), version in prop::sample::select(vec![5u16, 9, 10, 0])) {
        let mut dec = ShardDecoder::new(DecoderConfig::default());
        let mut out = Vec::new();
        let _ = dec.decode(exporter(), 0, &data, &mut out);
        // Same bytes behind each valid version field, to get past the version dispatch.
        let mut d = version.to_be_bytes().to_vec();
        if version == 0 {
            d.extend_from_slice(&[0, 5]);
        }
        d.extend_from_slice(&data);
        let _ = dec.decode(exporter(), 0, &d, &mut out);
        dec.expire(u64::MAX);
    }

    #[test]
    fn mutated_valid_datagrams_never_panic(
        p in prop::sample::select(Protocol::ALL.to_vec()),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut enc = Encoder::new(p, EncoderConfig { sampling_rate: 100, ..EncoderConfig::default() });
        let mut synth = FlowSynth::new(3, p);
        let flows: Vec<FlowRecord> = (0..10).map(|_| synth.flow(EXPORT_NS)).collect();
        let mut buf = Vec::new();
        enc.encode(&flows, EXPORT_NS, &mut buf);
        for (at, v) in flips {
            let i = at.index(buf.len());
            buf[i] ^= v;
        }
        let len = cut.index(buf.len() + 1);
        let mut dec = ShardDecoder::new(DecoderConfig::default());
        let mut out = Vec::new();
        let _ = dec.decode(exporter(), 0, &buf[..len], &mut out);
        let _ = dec.decode(exporter(), 0, &buf, &mut out);
    }
}
