//! NetFlow v9 golden bytes: template and data in one packet, data before its template (held,
//! then released), options data with the sampling rate, truncations and bad lengths,
//! re-definition, sequence loss, and template export/import.

#![expect(
    clippy::unwrap_used,
    reason = "fixture helpers parse constant, valid addresses"
)]

use std::net::IpAddr;

use sluice_peer::decode::{
    DecodeError, DecodeOutcome, DecoderConfig, ShardDecoder, Stamp, TemplateSnapshot,
};
use sluice_peer::record::{FlowRecord, Protocol};

const RECEIVED_NS: u64 = 1_700_000_000_400_000_000;

/// Packet header: version 9, `count` records, sysUptime 300000 ms, unix_secs 1700000000,
/// the given package sequence, source id 33.
fn header(count: u16, sequence: u32) -> Vec<u8> {
    let mut h = vec![0x00, 0x09]; // version 9
    h.extend_from_slice(&count.to_be_bytes()); // record count
    h.extend_from_slice(&[0x00, 0x04, 0x93, 0xe0]); // sys_uptime 300000 ms
    h.extend_from_slice(&[0x65, 0x53, 0xf1, 0x00]); // unix_secs 1700000000
    h.extend_from_slice(&sequence.to_be_bytes()); // package sequence
    h.extend_from_slice(&[0x00, 0x00, 0x00, 0x21]); // source id 33
    h
}

fn packet(sequence: u32, count: u16, sets: &[&[u8]]) -> Vec<u8> {
    let mut p = header(count, sequence);
    for s in sets {
        p.extend_from_slice(s);
    }
    p
}

#[rustfmt::skip]
const TEMPLATE_SET: [u8; 44] = [
    0x00, 0x00, 0x00, 0x2c, // flowset id 0 (templates), length 44
    0x01, 0x04, 0x00, 0x09, // template 260, 9 fields
    0x00, 0x08, 0x00, 0x04, // IPV4_SRC_ADDR, 4
    0x00, 0x0c, 0x00, 0x04, // IPV4_DST_ADDR, 4
    0x00, 0x07, 0x00, 0x02, // L4_SRC_PORT, 2
    0x00, 0x0b, 0x00, 0x02, // L4_DST_PORT, 2
    0x00, 0x04, 0x00, 0x01, // PROTOCOL, 1
    0x00, 0x01, 0x00, 0x04, // IN_BYTES, 4
    0x00, 0x02, 0x00, 0x04, // IN_PKTS, 4
    0x00, 0x16, 0x00, 0x04, // FIRST_SWITCHED, 4
    0x00, 0x15, 0x00, 0x04, // LAST_SWITCHED, 4
];

#[rustfmt::skip]
const DATA_SET: [u8; 64] = [
    0x01, 0x04, 0x00, 0x40, // flowset id 260, length 64 (2 records of 29 bytes + 2 padding)
    10, 1, 1, 1,            // src
    10, 2, 2, 2,            // dst
    0x04, 0xd2,             // 1234
    0x00, 0x50,             // 80
    0x06,                   // TCP
    0x00, 0x00, 0x0f, 0xa0, // 4000 bytes
    0x00, 0x00, 0x00, 0x05, // 5 packets
    0x00, 0x04, 0x80, 0x58, // first 295000 (5 s before export)
    0x00, 0x04, 0x8f, 0xf8, // last 299000
    10, 1, 1, 3,
    10, 2, 2, 4,
    0x14, 0xe9,             // 5353
    0x00, 0x35,             // 53
    0x11,                   // UDP
    0x00, 0x00, 0x00, 0x78, // 120 bytes
    0x00, 0x00, 0x00, 0x02, // 2 packets
    0x00, 0x04, 0x8f, 0xf8, // first 299000
    0x00, 0x04, 0x93, 0xe0, // last 300000 (export time)
    0x00, 0x00,             // padding
];

#[rustfmt::skip]
const OPTIONS_TEMPLATE_SET: [u8; 24] = [
    0x00, 0x01, 0x00, 0x18, // flowset id 1 (options templates), length 24
    0x01, 0x2c,             // template 300
    0x00, 0x04,             // scope length 4 (one field)
    0x00, 0x08,             // options length 8 (two fields)
    0x00, 0x01, 0x00, 0x04, // scope: System, 4
    0x00, 0x22, 0x00, 0x04, // SAMPLING_INTERVAL, 4
    0x00, 0x23, 0x00, 0x01, // SAMPLING_ALGORITHM, 1
    0x00, 0x00,             // padding
];

#[rustfmt::skip]
const OPTIONS_DATA_SET: [u8; 16] = [
    0x01, 0x2c, 0x00, 0x10, // flowset 300, length 16
    0x00, 0x00, 0x00, 0x00, // scope: system 0
    0x00, 0x00, 0x03, 0xe8, // sampling interval 1000
    0x02,                   // random sampling
    0x00, 0x00, 0x00,       // padding
];

fn exporter() -> IpAddr {
    "198.18.1.11".parse().unwrap()
}

fn expected(sequence: u32, sampling_rate: u64, received: u64) -> [FlowRecord; 2] {
    let base = FlowRecord {
        flow_type: Protocol::NetflowV9,
        time_received_ns: received,
        sequence_num: sequence,
        sampling_rate,
        sampler_address: Some(exporter()),
        observation_domain_id: 33,
        etype: 0x0800,
        ..FlowRecord::default()
    };
    [
        FlowRecord {
            src_addr: Some("10.1.1.1".parse().unwrap()),
            dst_addr: Some("10.2.2.2".parse().unwrap()),
            src_port: 1234,
            dst_port: 80,
            proto: 6,
            bytes: 4000,
            packets: 5,
            time_flow_start_ns: 1_699_999_995_000_000_000,
            time_flow_end_ns: 1_699_999_999_000_000_000,
            ..base
        },
        FlowRecord {
            src_addr: Some("10.1.1.3".parse().unwrap()),
            dst_addr: Some("10.2.2.4".parse().unwrap()),
            src_port: 5353,
            dst_port: 53,
            proto: 17,
            bytes: 120,
            packets: 2,
            time_flow_start_ns: 1_699_999_999_000_000_000,
            time_flow_end_ns: 1_700_000_000_000_000_000,
            ..base
        },
    ]
}

fn decode(
    dec: &mut ShardDecoder,
    received: u64,
    bytes: &[u8],
) -> (Result<DecodeOutcome, DecodeError>, Vec<FlowRecord>) {
    let mut out = Vec::new();
    let r = dec.decode(exporter(), received, bytes, &mut out);
    (r, out)
}

#[test]
fn template_in_the_same_packet_as_data() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let p = packet(7, 3, &[&TEMPLATE_SET, &DATA_SET]);
    let (r, out) = decode(&mut dec, RECEIVED_NS, &p);
    let o = r.unwrap();
    assert_eq!((o.records, o.held_sets), (2, 0));
    assert_eq!(out, expected(7, 0, RECEIVED_NS));
    assert_eq!(dec.stats().templates_received, 1);
}

#[test]
fn options_data_gives_the_sampling_rate() {
    let mut dec = ShardDecoder::new(DecoderConfig {
        apply_sampling: true,
        ..DecoderConfig::default()
    });
    let p = packet(
        7,
        5,
        &[
            &OPTIONS_TEMPLATE_SET,
            &OPTIONS_DATA_SET,
            &TEMPLATE_SET,
            &DATA_SET,
        ],
    );
    let (r, out) = decode(&mut dec, RECEIVED_NS, &p);
    assert_eq!(r.unwrap().records, 2);
    let mut want = expected(7, 1000, RECEIVED_NS);
    for w in &mut want {
        w.bytes *= 1000;
        w.packets *= 1000;
    }
    assert_eq!(out, want);
    assert_eq!(dec.stats().options_records, 1);
}

#[test]
fn data_before_its_template_is_held_then_released() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let (r, out) = decode(&mut dec, RECEIVED_NS, &packet(7, 2, &[&DATA_SET]));
    let o = r.unwrap();
    assert_eq!((o.records, o.held_sets), (0, 1));
    assert!(out.is_empty());
    assert_eq!((dec.stats().template_misses, dec.stats().held), (1, 1));

    let later = RECEIVED_NS + 1_000_000_000;
    let (r, out) = decode(&mut dec, later, &packet(8, 1, &[&TEMPLATE_SET]));
    let o = r.unwrap();
    assert_eq!((o.records, o.released_records), (2, 2));
    // Released records keep the sequence and receive time of the datagram that carried them.
    assert_eq!(out, expected(7, 0, RECEIVED_NS));
    let s = dec.stats();
    assert_eq!((s.held, s.held_released, s.lost_total), (0, 1, 0));
}

#[test]
fn held_data_expires_and_is_bounded() {
    let mut dec = ShardDecoder::new(DecoderConfig {
        max_held_per_exporter: 2,
        held_timeout_ns: 5_000_000_000,
        ..DecoderConfig::default()
    });
    for seq in 0..3 {
        decode(&mut dec, RECEIVED_NS, &packet(seq, 2, &[&DATA_SET]))
            .0
            .unwrap();
    }
    assert_eq!((dec.stats().held, dec.stats().held_dropped), (2, 1));
    dec.expire(RECEIVED_NS + 4_000_000_000);
    assert_eq!(dec.stats().held, 2);
    dec.expire(RECEIVED_NS + 6_000_000_000);
    assert_eq!((dec.stats().held, dec.stats().held_expired), (0, 2));
    let (_, out) = decode(&mut dec, RECEIVED_NS, &packet(3, 1, &[&TEMPLATE_SET]));
    assert!(out.is_empty());
}

#[test]
fn truncated_and_bad_lengths() {
    let p = packet(7, 3, &[&TEMPLATE_SET, &DATA_SET]);
    for cut in [2, 10, 19, 24, 30, 63, 68, 70, p.len() - 3] {
        let mut dec = ShardDecoder::new(DecoderConfig::default());
        let (r, out) = decode(&mut dec, RECEIVED_NS, &p[..cut]);
        assert!(r.is_err(), "cut at {cut}");
        assert!(out.is_empty(), "cut at {cut}");
        assert_eq!(dec.stats().errors.total(), 1);
    }
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    assert!(matches!(
        decode(&mut dec, RECEIVED_NS, &p[..19]).0,
        Err(DecodeError::Truncated {
            protocol: Protocol::NetflowV9,
            what: "header",
            ..
        })
    ));
    // The data set is cut: the template before it was still learned.
    assert!(matches!(
        decode(&mut dec, RECEIVED_NS, &p[..100]).0,
        Err(DecodeError::BadLength {
            what: "set",
            length: 64,
            offset: 64,
            ..
        })
    ));
    assert_eq!(dec.stats().templates_received, 1);
    // A set length below 4.
    let mut bad = p.clone();
    bad[23] = 2;
    assert!(matches!(
        decode(&mut dec, RECEIVED_NS, &bad).0,
        Err(DecodeError::BadLength {
            what: "set",
            length: 2,
            offset: 20,
            ..
        })
    ));
    // A template id below 256.
    let mut bad_tmpl = TEMPLATE_SET;
    bad_tmpl[4] = 0x00; // template id 4
    assert!(matches!(
        decode(&mut dec, RECEIVED_NS, &packet(1, 1, &[&bad_tmpl])).0,
        Err(DecodeError::BadTemplate {
            template_id: 4,
            domain: 33,
            ..
        })
    ));
    // A record cut inside a data set whose length is consistent.
    let mut short = DATA_SET;
    short[3] = 0x30; // 48: one record (29) and 15 bytes of a second
    let (r, out) = decode(&mut dec, RECEIVED_NS, &packet(2, 2, &[&short[..48]]));
    assert!(matches!(
        r,
        Err(DecodeError::ShortRecord {
            protocol: Protocol::NetflowV9,
            domain: 33,
            template_id: 260,
            ..
        })
    ));
    assert_eq!(out.len(), 1);
}

#[test]
fn template_redefinition_replaces_the_old_one() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    decode(&mut dec, RECEIVED_NS, &packet(1, 1, &[&TEMPLATE_SET]))
        .0
        .unwrap();
    #[rustfmt::skip]
    let redefined = [
        0x00, 0x00, 0x00, 0x10, // templates, length 16
        0x01, 0x04, 0x00, 0x02, // template 260 again, now 2 fields
        0x00, 0x0c, 0x00, 0x04, // IPV4_DST_ADDR
        0x00, 0x01, 0x00, 0x04, // IN_BYTES
    ];
    #[rustfmt::skip]
    let data = [
        0x01, 0x04, 0x00, 0x0c, // flowset 260, length 12
        192, 0, 2, 99,          // dst
        0x00, 0x00, 0x00, 0x07, // 7 bytes
    ];
    let (r, out) = decode(&mut dec, RECEIVED_NS, &packet(2, 2, &[&redefined, &data]));
    assert_eq!(r.unwrap().records, 1);
    assert_eq!(out[0].dst_addr, Some("192.0.2.99".parse().unwrap()));
    assert_eq!((out[0].bytes, out[0].src_addr), (7, None));
}

#[test]
fn sequence_gaps_count_lost_packets() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    for seq in [7, 8, 11, 12] {
        decode(
            &mut dec,
            RECEIVED_NS,
            &packet(seq, 3, &[&TEMPLATE_SET, &DATA_SET]),
        )
        .0
        .unwrap();
    }
    assert_eq!(dec.stats().lost_total, 2);
    assert_eq!(dec.stats().lost_per_exporter[&exporter()], 2);
}

#[test]
fn templates_move_between_decoders() {
    let mut a = ShardDecoder::new(DecoderConfig::default());
    let p = packet(
        7,
        4,
        &[&OPTIONS_TEMPLATE_SET, &OPTIONS_DATA_SET, &TEMPLATE_SET],
    );
    decode(&mut a, RECEIVED_NS, &p).0.unwrap();
    let snaps = a.export_templates(exporter());
    assert_eq!(snaps.len(), 3);
    assert!(snaps.contains(&TemplateSnapshot::Sampling {
        protocol: Protocol::NetflowV9,
        observation_domain_id: 33,
        sampling_rate: 1000,
        system_init_ms: None,
        // The header of the message that carried the options data.
        stamp: Some(Stamp {
            export_secs: 1_700_000_000,
            sequence: 7
        }),
    }));
    // Snapshots survive JSON (what Central stores and sends).
    let json = serde_json::to_string(&snaps).unwrap();
    let back: Vec<TemplateSnapshot> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snaps);

    let mut b = ShardDecoder::new(DecoderConfig::default());
    b.import_templates(exporter(), &back).unwrap();
    assert_eq!(b.export_templates(exporter()), snaps);
    let (r, out) = decode(&mut b, RECEIVED_NS, &packet(8, 2, &[&DATA_SET]));
    assert_eq!(r.unwrap().records, 2);
    assert_eq!(out, expected(8, 1000, RECEIVED_NS));

    // Removing the exporter hands back the same state and forgets it.
    assert_eq!(b.remove_exporter(exporter()), snaps);
    assert!(b.export_templates(exporter()).is_empty());

    // A bad snapshot is rejected whole.
    let bad = vec![TemplateSnapshot::Template {
        protocol: Protocol::NetflowV9,
        observation_domain_id: 1,
        template_id: 12,
        scope_field_count: 0,
        options: false,
        fields: vec![],
        stamp: None,
    }];
    assert!(matches!(
        b.import_templates(exporter(), &bad),
        Err(DecodeError::BadTemplate {
            template_id: 12,
            ..
        })
    ));
}

#[test]
fn imported_templates_release_data_held_before_them() {
    let mut a = ShardDecoder::new(DecoderConfig::default());
    decode(&mut a, RECEIVED_NS, &packet(7, 1, &[&TEMPLATE_SET]))
        .0
        .unwrap();
    // The exporter moves: its next data reaches the new decoder before the templates do.
    let mut b = ShardDecoder::new(DecoderConfig::default());
    let (r, out) = decode(&mut b, RECEIVED_NS, &packet(8, 2, &[&DATA_SET]));
    assert_eq!((r.unwrap().held_sets, out.len()), (1, 0));
    b.import_templates(exporter(), &a.export_templates(exporter()))
        .unwrap();
    let mut out = Vec::new();
    assert_eq!(b.release_held(exporter(), &mut out), 2);
    assert_eq!(out, expected(8, 0, RECEIVED_NS));
    let s = b.stats();
    assert_eq!((s.held, s.held_released, s.records.netflow_v9), (0, 1, 2));
}

/// The fields of template 260 in [`TEMPLATE_SET`], with IN_BYTES and IN_PKTS swapped: another
/// layout under the same id.
#[rustfmt::skip]
const SWAPPED_TEMPLATE_SET: [u8; 44] = [
    0x00, 0x00, 0x00, 0x2c, 0x01, 0x04, 0x00, 0x09,
    0x00, 0x08, 0x00, 0x04, 0x00, 0x0c, 0x00, 0x04, 0x00, 0x07, 0x00, 0x02,
    0x00, 0x0b, 0x00, 0x02, 0x00, 0x04, 0x00, 0x01,
    0x00, 0x02, 0x00, 0x04, // IN_PKTS first
    0x00, 0x01, 0x00, 0x04, // then IN_BYTES
    0x00, 0x16, 0x00, 0x04, 0x00, 0x15, 0x00, 0x04,
];

fn template_fields(snaps: &[TemplateSnapshot]) -> Vec<u16> {
    snaps
        .iter()
        .find_map(|s| match s {
            TemplateSnapshot::Template { fields, .. } => {
                Some(fields.iter().map(|f| f.id).collect())
            }
            TemplateSnapshot::Sampling { .. } => None,
        })
        .unwrap()
}

#[test]
fn an_import_never_replaces_a_definition_learned_later_from_the_wire() {
    // Peer A learned the first layout at sequence 10; the exporter then moved to B and
    // redefined the template at sequence 20. A's late hand-over must not undo that.
    let mut a = ShardDecoder::new(DecoderConfig::default());
    decode(&mut a, RECEIVED_NS, &packet(10, 1, &[&TEMPLATE_SET]))
        .0
        .unwrap();
    let from_a = a.export_templates(exporter());
    let mut b = ShardDecoder::new(DecoderConfig::default());
    decode(
        &mut b,
        RECEIVED_NS,
        &packet(20, 1, &[&SWAPPED_TEMPLATE_SET]),
    )
    .0
    .unwrap();
    assert_eq!(b.import_templates(exporter(), &from_a).unwrap(), 0);
    assert_eq!(
        template_fields(&b.export_templates(exporter()))[5],
        2,
        "IN_PKTS stays first"
    );

    // The other way round, B's later definition replaces what A had.
    assert_eq!(
        a.import_templates(exporter(), &b.export_templates(exporter()))
            .unwrap(),
        1
    );
    assert_eq!(
        a.export_templates(exporter()),
        b.export_templates(exporter())
    );
    // And a stale copy (ancient state on a peer the exporter left long ago) is replaced by a
    // newer hand-over.
    let mut stale = ShardDecoder::new(DecoderConfig::default());
    decode(&mut stale, RECEIVED_NS, &packet(1, 1, &[&TEMPLATE_SET]))
        .0
        .unwrap();
    assert_eq!(
        stale
            .import_templates(exporter(), &b.export_templates(exporter()))
            .unwrap(),
        1
    );
    assert_eq!(template_fields(&stale.export_templates(exporter()))[5], 2);
}

#[test]
fn stamps_order_by_export_second_then_sequence_across_the_wrap() {
    let at = |export_secs, sequence| Stamp {
        export_secs,
        sequence,
    };
    assert!(at(10, 5).is_after(at(10, 4)));
    assert!(!at(10, 4).is_after(at(10, 4)), "a tie keeps what is there");
    assert!(at(10, 3).is_after(at(10, u32::MAX - 2)), "sequence wrapped");
    assert!(
        at(11, 0).is_after(at(10, 9)),
        "a later second wins over any sequence"
    );
    assert!(!at(9, 100).is_after(at(10, 1)));
    assert!(
        Stamp::replaces(None, Some(at(10, 1))),
        "unstamped imports (older peers) apply"
    );
    assert!(Stamp::replaces(Some(at(1, 1)), None));
    assert!(!Stamp::replaces(Some(at(10, 1)), Some(at(10, 1))));
}
