//! Oracle: sFlow v5 datagrams (the annotated golden datagram with flow, counter and expanded
//! samples, and flowgen's encoder output over IPv4/IPv6 TCP/UDP/ICMP) are decoded by us and by
//! tshark's sFlow dissector; every flow sample and the fields both sides represent must match,
//! the sampled header's layer stack included.
//!
//! Needs tshark. Without it the test fails when `CI=true` and prints a skip message otherwise.

#[path = "data/oracle_support.rs"]
#[allow(dead_code, reason = "each oracle test uses part of the support module")]
mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use serde_json::Value;
use sluice_peer::flowgen::{Encoder, EncoderConfig, FlowSynth};
use sluice_peer::record::{FlowRecord, Protocol};
use support::{
    Scratch, decode_all, flatten, natural, num, read_pcap_udp, tools_available, udp_frame_to,
    write_pcap,
};

/// One flow sample as tshark shows it: sample fields, and each flow record's fields.
struct Sample {
    fields: BTreeMap<String, String>,
    records: BTreeMap<String, BTreeMap<String, String>>,
}

fn tshark_samples(pcap: &std::path::Path) -> Vec<(BTreeMap<String, String>, Vec<Sample>)> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap)
        .args(["-T", "json"])
        .output()
        .expect("run tshark");
    assert!(out.status.success(), "tshark failed");
    let v: Value = serde_json::from_slice(&out.stdout).expect("tshark JSON");
    v.as_array()
        .expect("frames")
        .iter()
        .map(|f| {
            let Value::Object(sflow) = &f["_source"]["layers"]["sflow"] else {
                panic!("tshark did not dissect a frame as sFlow");
            };
            let mut header = BTreeMap::new();
            let mut samples = Vec::new();
            let mut keys: Vec<&String> = sflow.keys().collect();
            keys.sort_by_key(|k| natural(k));
            for k in keys {
                match &sflow[k] {
                    Value::String(s) => {
                        header.insert(k.clone(), s.clone());
                    }
                    Value::Object(m) if k.contains("low sample") => {
                        let mut sample = Sample {
                            fields: BTreeMap::new(),
                            records: BTreeMap::new(),
                        };
                        for (rk, rv) in m {
                            match rv {
                                Value::String(s) => {
                                    sample.fields.insert(rk.clone(), s.clone());
                                }
                                Value::Object(_) if rk.ends_with("_tree") => {
                                    flatten(rv, &mut sample.fields)
                                }
                                Value::Object(_) => {
                                    let mut r = BTreeMap::new();
                                    flatten(rv, &mut r);
                                    sample.records.insert(rk.clone(), r);
                                }
                                _ => {}
                            }
                        }
                        samples.push(sample);
                    }
                    _ => {}
                }
            }
            (header, samples)
        })
        .collect()
}

fn compare(
    frame: usize,
    ours: &[FlowRecord],
    header: &BTreeMap<String, String>,
    samples: &[Sample],
) -> usize {
    assert_eq!(ours.len(), samples.len(), "frame {frame}: flow samples");
    let mut compared = 0;
    for (i, (r, s)) in ours.iter().zip(samples).enumerate() {
        let ctx = format!("frame {frame} sample {}", i + 1);
        let mut check = |what: &str, ours: u64, theirs: Option<&String>| {
            let theirs = theirs.unwrap_or_else(|| panic!("{ctx}: tshark has no {what}"));
            assert_eq!(ours, num(theirs), "{ctx}: {what}");
            compared += 1;
        };
        check(
            "sequence",
            u64::from(r.sequence_num),
            header.get("sflow_245.sequence_number"),
        );
        // The sub-agent id is not an observation domain: GoFlow2 leaves the field 0.
        assert!(
            header.contains_key("sflow_245.sub_agent_id"),
            "{ctx}: tshark has no sub-agent"
        );
        assert_eq!(r.observation_domain_id, 0, "{ctx}: observation domain");
        assert_eq!(
            r.sampler_address.map(|a| a.to_string()).as_ref(),
            header
                .get("sflow_245.agent")
                .or_else(|| header.get("sflow_245.agent.v6")),
            "{ctx}: agent"
        );
        let f = &s.fields;
        check(
            "sampling rate",
            r.sampling_rate,
            f.get("sflow.flow_sample.sampling_rate"),
        );
        check(
            "input",
            u64::from(r.in_if),
            f.get("sflow.flow_sample.input_interface")
                .or_else(|| f.get("sflow.flow_sample.input_interface_value")),
        );
        check(
            "output",
            u64::from(r.out_if),
            f.get("sflow.flow_sample.output_interface_value"),
        );
        check("packets", r.packets, Some(&"1".to_owned()));

        let h = &s.records["Raw packet header"];
        check(
            "frame length",
            r.bytes,
            h.get("sflow_245.header.frame_length"),
        );
        let ip = |a: Option<IpAddr>| a.map(|a| a.to_string());
        if let Some(mac) = h.get("eth.src") {
            assert_eq!(&r.src_mac.to_string(), mac, "{ctx}: eth.src");
            assert_eq!(
                Some(&r.dst_mac.to_string()),
                h.get("eth.dst"),
                "{ctx}: eth.dst"
            );
        }
        check(
            "vlan",
            u64::from(r.vlan_id),
            Some(h.get("vlan.id").unwrap_or(&"0".to_owned())),
        );
        if h.contains_key("ipv6.src") {
            assert_eq!(
                ip(r.src_addr).as_ref(),
                h.get("ipv6.src"),
                "{ctx}: ipv6.src"
            );
            assert_eq!(
                ip(r.dst_addr).as_ref(),
                h.get("ipv6.dst"),
                "{ctx}: ipv6.dst"
            );
            check("etype", u64::from(r.etype), Some(&"0x86dd".to_owned()));
            check("traffic class", u64::from(r.ip_tos), h.get("ipv6.tclass"));
            check(
                "flow label",
                u64::from(r.ipv6_flow_label),
                h.get("ipv6.flow"),
            );
            check("hop limit", u64::from(r.ip_ttl), h.get("ipv6.hlim"));
            check("next header", u64::from(r.proto), h.get("ipv6.nxt"));
        } else {
            assert_eq!(ip(r.src_addr).as_ref(), h.get("ip.src"), "{ctx}: ip.src");
            assert_eq!(ip(r.dst_addr).as_ref(), h.get("ip.dst"), "{ctx}: ip.dst");
            check("etype", u64::from(r.etype), Some(&"0x0800".to_owned()));
            check("tos", u64::from(r.ip_tos), h.get("ip.dsfield"));
            check("ttl", u64::from(r.ip_ttl), h.get("ip.ttl"));
            check("protocol", u64::from(r.proto), h.get("ip.proto"));
            check("id", u64::from(r.fragment_id), h.get("ip.id"));
            check("flags", u64::from(r.ip_flags), h.get("ip.flags"));
            check(
                "fragment offset",
                u64::from(r.fragment_offset),
                h.get("ip.frag_offset"),
            );
        }
        match r.proto {
            6 => {
                check("tcp src port", u64::from(r.src_port), h.get("tcp.srcport"));
                check("tcp dst port", u64::from(r.dst_port), h.get("tcp.dstport"));
                let flags = h.get("tcp.flags").map(|f| (num(f) & 0xff).to_string());
                check("tcp flags", u64::from(r.tcp_flags), flags.as_ref());
            }
            17 => {
                check("udp src port", u64::from(r.src_port), h.get("udp.srcport"));
                check("udp dst port", u64::from(r.dst_port), h.get("udp.dstport"));
            }
            1 => {
                check("icmp type", u64::from(r.icmp_type), h.get("icmp.type"));
                check("icmp code", u64::from(r.icmp_code), h.get("icmp.code"));
            }
            58 => {
                check("icmpv6 type", u64::from(r.icmp_type), h.get("icmpv6.type"));
                check("icmpv6 code", u64::from(r.icmp_code), h.get("icmpv6.code"));
            }
            p => panic!("{ctx}: unexpected protocol {p}"),
        }
        // The layer stack: the layers tshark's dissectors found in the sampled header, in
        // order, and the header lengths it reports.
        let names: Vec<&str> = r.layer_stack.as_slice().iter().map(|l| l.name()).collect();
        let want: Vec<&str> = [
            ("eth.src", "Ethernet"),
            ("vlan.id", "Dot1Q"),
            ("ip.src", "IPv4"),
            ("ipv6.src", "IPv6"),
            ("tcp.srcport", "TCP"),
            ("udp.srcport", "UDP"),
            ("icmp.type", "ICMP"),
            ("icmpv6.type", "ICMPv6"),
        ]
        .into_iter()
        .filter(|(key, _)| h.contains_key(*key))
        .map(|(_, name)| name)
        .collect();
        check("layers", names.len() as u64, Some(&want.len().to_string()));
        assert_eq!(names, want, "{ctx}: layer stack");
        let size_of = |name: &str| {
            names
                .iter()
                .position(|n| *n == name)
                .map(|i| u64::from(r.layer_size.as_slice()[i]))
        };
        for (name, key) in [("IPv4", "ip.hdr_len"), ("TCP", "tcp.hdr_len")] {
            if let Some(size) = size_of(name) {
                check(key, size, h.get(key));
            }
        }
        if let Some(size) = size_of("Ethernet") {
            assert_eq!(size, 14, "{ctx}: Ethernet header");
        }
        if let Some(size) = size_of("IPv6") {
            assert_eq!(size, 40, "{ctx}: IPv6 header");
        }
        if let Some(sw) = s.records.get("Extended switch data") {
            check(
                "src vlan",
                u64::from(r.src_vlan),
                sw.get("sflow_245.vlan.in"),
            );
            check(
                "dst vlan",
                u64::from(r.dst_vlan),
                sw.get("sflow_245.vlan.out"),
            );
        }
        if let Some(rt) = s.records.get("Extended router data") {
            assert_eq!(
                ip(r.next_hop).as_ref(),
                rt.get("sflow_245.nexthop")
                    .or_else(|| rt.get("sflow_245.nexthop.v6")),
                "{ctx}: next hop"
            );
            check(
                "src mask",
                u64::from(r.src_mask),
                rt.get("sflow_245.nexthop.src_mask"),
            );
            check(
                "dst mask",
                u64::from(r.dst_mask),
                rt.get("sflow_245.nexthop.dst_mask"),
            );
        }
        if let Some(gw) = s.records.get("Extended gateway data") {
            assert_eq!(
                ip(r.bgp_next_hop).as_ref(),
                gw.get("sflow_245.nexthop")
                    .or_else(|| gw.get("sflow_245.nexthop.v6")),
                "{ctx}: BGP next hop"
            );
            check("src AS", u64::from(r.src_as), gw.get("sflow_245.srcAS"));
            // The JSON keeps the last AS of the path, which is the destination AS.
            check("dst AS", u64::from(r.dst_as), gw.get("sflow_245.dstAS"));
        }
    }
    compared
}

#[test]
fn sflow_decodes_like_tshark() {
    if !tools_available(&[("tshark", &["--version"])]) {
        return;
    }
    let scratch = Scratch::new("oracle-sflow");
    let exporter = Ipv4Addr::new(198, 18, 1, 40);
    let mut datagrams = vec![include_bytes!("data/sflow_golden.bin").to_vec()];
    let now = 1_700_000_000_000_000_000;
    for (seed, agent) in [
        (1u64, IpAddr::V4(exporter)),
        (2, "2001:db8::40".parse().expect("v6")),
    ] {
        let mut enc = Encoder::new(
            Protocol::Sflow5,
            EncoderConfig {
                sampling_rate: 256,
                template_every: 3,
                observation_domain_id: seed as u32,
                agent_address: agent,
                boot_time_ns: now - 3_600_000_000_000,
            },
        );
        let mut synth = FlowSynth::new(seed, Protocol::Sflow5);
        for _ in 0..10 {
            let flows: Vec<FlowRecord> = (0..6).map(|_| synth.flow(now)).collect();
            let mut buf = Vec::new();
            enc.encode(&flows, now, &mut buf);
            datagrams.push(buf);
        }
    }
    let pcap = scratch.path("sflow.pcap");
    let frames: Vec<(u64, Vec<u8>)> = datagrams
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                1_700_000_000_000_000 + i as u64,
                udp_frame_to(exporter, 6343, d),
            )
        })
        .collect();
    write_pcap(&pcap, &frames);
    let ours = decode_all(&read_pcap_udp(&pcap));
    let theirs = tshark_samples(&pcap);
    assert_eq!(ours.len(), theirs.len());
    let mut compared = 0;
    let mut protos = std::collections::BTreeSet::new();
    for (i, (o, (header, samples))) in ours.iter().zip(&theirs).enumerate() {
        compared += compare(i + 1, o, header, samples);
        protos.extend(o.iter().map(|r| (r.etype, r.proto)));
    }
    assert_eq!(ours.iter().map(Vec::len).sum::<usize>(), 122);
    assert!(compared > 2000, "only {compared} values compared");
    // IPv4 and IPv6, TCP, UDP and ICMP were all exercised.
    assert!(protos.len() >= 5, "{protos:?}");
}
