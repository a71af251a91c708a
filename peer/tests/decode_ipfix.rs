//! IPFIX (RFC 7011) golden bytes: template with enterprise-specific and variable-length fields
//! and data in one message, options data (samplingPacketInterval/Space), data before its
//! template, withdrawal (one template and all), message length checks, truncations, lost
//! records.

#![expect(
    clippy::unwrap_used,
    reason = "fixture helpers parse constant, valid addresses"
)]

use std::net::IpAddr;

use sluice_peer::decode::{DecodeError, DecodeOutcome, DecoderConfig, ShardDecoder};
use sluice_peer::record::{FlowRecord, Protocol};

const RECEIVED_NS: u64 = 1_700_000_000_100_000_000;

/// Message: header (version 10, total length, export time 1700000000, `sequence`, domain 5)
/// followed by `sets`.
fn message(sequence: u32, sets: &[&[u8]]) -> Vec<u8> {
    let len: usize = 16 + sets.iter().map(|s| s.len()).sum::<usize>();
    let mut m = vec![0x00, 0x0a]; // version 10
    m.extend_from_slice(&(len as u16).to_be_bytes()); // message length
    m.extend_from_slice(&[0x65, 0x53, 0xf1, 0x00]); // export time 1700000000
    m.extend_from_slice(&sequence.to_be_bytes()); // sequence (data records before this one)
    m.extend_from_slice(&[0x00, 0x00, 0x00, 0x05]); // observation domain 5
    for s in sets {
        m.extend_from_slice(s);
    }
    m
}

#[rustfmt::skip]
const TEMPLATE_SET: [u8; 40] = [
    0x00, 0x02, 0x00, 0x28, // set id 2 (templates), length 40
    0x01, 0x00, 0x00, 0x07, // template 256, 7 fields
    0x00, 0x08, 0x00, 0x04, // sourceIPv4Address, 4
    0x00, 0x0c, 0x00, 0x04, // destinationIPv4Address, 4
    0x00, 0x04, 0x00, 0x01, // protocolIdentifier, 1
    0x00, 0x01, 0x00, 0x08, // octetDeltaCount, 8
    0x80, 0x64, 0x00, 0x02, // enterprise bit + element 100, 2 bytes ...
    0x00, 0x00, 0x72, 0x79, //   ... private enterprise number 29305 (skipped)
    0x00, 0x52, 0xff, 0xff, // interfaceName, variable length (skipped)
    0x00, 0x98, 0x00, 0x08, // flowStartMilliseconds, 8
];

#[rustfmt::skip]
const DATA_SET: [u8; 73] = [
    0x01, 0x00, 0x00, 0x49, // set 256, length 73
    // record 1 (32 bytes)
    10, 0, 0, 1,            // src
    10, 0, 0, 2,            // dst
    0x06,                   // TCP
    0, 0, 0, 0, 0, 0, 0x03, 0xe8, // 1000 octets
    0xab, 0xcd,             // enterprise field
    0x04, b'e', b't', b'h', b'0',  // interfaceName: short length form, 4 bytes
    0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x64, 0x18, // start 1699999999000 ms
    // record 2 (34 bytes)
    192, 0, 2, 1,
    192, 0, 2, 2,
    0x11,                   // UDP
    0, 0, 0, 0, 0, 0, 0x00, 0x40, // 64 octets
    0x00, 0x01,
    0xff, 0x00, 0x04, b'x', b'e', b'-', b'0', // interfaceName: long length form (255, u16)
    0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x66, 0x0c, // start 1699999999500 ms
    0x00, 0x00, 0x00,       // padding
];

#[rustfmt::skip]
const OPTIONS_TEMPLATE_SET: [u8; 24] = [
    0x00, 0x03, 0x00, 0x18, // set id 3 (options templates), length 24
    0x01, 0x90,             // template 400
    0x00, 0x03,             // 3 fields
    0x00, 0x01,             // 1 scope field
    0x00, 0x95, 0x00, 0x04, // scope: observationDomainId, 4
    0x01, 0x31, 0x00, 0x04, // samplingPacketInterval, 4
    0x01, 0x32, 0x00, 0x04, // samplingPacketSpace, 4
    0x00, 0x00,             // padding
];

#[rustfmt::skip]
const OPTIONS_DATA_SET: [u8; 16] = [
    0x01, 0x90, 0x00, 0x10, // set 400, length 16
    0x00, 0x00, 0x00, 0x05, // domain 5
    0x00, 0x00, 0x00, 0x01, // 1 packet selected ...
    0x00, 0x00, 0x00, 0x63, // ... then 99 skipped: 1 in 100
];

#[rustfmt::skip]
const WITHDRAW_256: [u8; 8] = [
    0x00, 0x02, 0x00, 0x08, // template set, length 8
    0x01, 0x00, 0x00, 0x00, // template 256, field count 0: withdrawal
];

#[rustfmt::skip]
const WITHDRAW_ALL_OPTIONS: [u8; 8] = [
    0x00, 0x03, 0x00, 0x08, // options template set, length 8
    0x00, 0x03, 0x00, 0x00, // template id 3, field count 0: withdraw all options templates
];

fn exporter() -> IpAddr {
    "2001:db8::10".parse().unwrap()
}

fn expected(sequence: u32, sampling_rate: u64) -> [FlowRecord; 2] {
    let base = FlowRecord {
        flow_type: Protocol::Ipfix,
        time_received_ns: RECEIVED_NS,
        sequence_num: sequence,
        sampling_rate,
        sampler_address: Some(exporter()),
        observation_domain_id: 5,
        etype: 0x0800,
        // No flowEnd field: the export time, as GoFlow2 does.
        time_flow_end_ns: 1_700_000_000_000_000_000,
        ..FlowRecord::default()
    };
    [
        FlowRecord {
            src_addr: Some("10.0.0.1".parse().unwrap()),
            dst_addr: Some("10.0.0.2".parse().unwrap()),
            proto: 6,
            bytes: 1000,
            time_flow_start_ns: 1_699_999_999_000_000_000,
            ..base
        },
        FlowRecord {
            src_addr: Some("192.0.2.1".parse().unwrap()),
            dst_addr: Some("192.0.2.2".parse().unwrap()),
            proto: 17,
            bytes: 64,
            time_flow_start_ns: 1_699_999_999_500_000_000,
            ..base
        },
    ]
}

fn decode(
    dec: &mut ShardDecoder,
    bytes: &[u8],
) -> (Result<DecodeOutcome, DecodeError>, Vec<FlowRecord>) {
    let mut out = Vec::new();
    let r = dec.decode(exporter(), RECEIVED_NS, bytes, &mut out);
    (r, out)
}

#[test]
fn enterprise_and_variable_length_fields_in_the_same_message() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let (r, out) = decode(&mut dec, &message(0, &[&TEMPLATE_SET, &DATA_SET]));
    assert_eq!(r.unwrap().records, 2);
    assert_eq!(out, expected(0, 0));
}

#[test]
fn options_data_packet_interval_and_space_give_the_rate() {
    let mut dec = ShardDecoder::new(DecoderConfig {
        apply_sampling: true,
        ..DecoderConfig::default()
    });
    let m = message(
        0,
        &[
            &OPTIONS_TEMPLATE_SET,
            &OPTIONS_DATA_SET,
            &TEMPLATE_SET,
            &DATA_SET,
        ],
    );
    let (r, out) = decode(&mut dec, &m);
    assert_eq!(r.unwrap().records, 2);
    let mut want = expected(0, 100);
    want[0].bytes = 100_000;
    want[1].bytes = 6_400;
    assert_eq!(out, want);
    assert_eq!(dec.stats().options_records, 1);
}

#[test]
fn unknown_template_is_held_and_released() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let (r, out) = decode(&mut dec, &message(0, &[&DATA_SET]));
    assert_eq!(r.unwrap().held_sets, 1);
    assert!(out.is_empty());
    let (r, out) = decode(&mut dec, &message(2, &[&TEMPLATE_SET]));
    assert_eq!(r.unwrap().released_records, 2);
    assert_eq!(out, expected(0, 0));
    let s = dec.stats();
    assert_eq!((s.template_misses, s.held, s.held_released), (1, 0, 1));
}

#[test]
fn withdrawal_removes_templates() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let m = message(
        0,
        &[&OPTIONS_TEMPLATE_SET, &OPTIONS_DATA_SET, &TEMPLATE_SET],
    );
    decode(&mut dec, &m).0.unwrap();
    assert_eq!(dec.export_templates(exporter()).len(), 3);

    // Withdraw template 256: its data is now held (a template miss), not decoded.
    let (r, out) = decode(&mut dec, &message(1, &[&WITHDRAW_256, &DATA_SET]));
    assert_eq!(r.unwrap().held_sets, 1);
    assert!(out.is_empty());
    assert_eq!(dec.stats().templates_withdrawn, 1);

    // Withdraw all options templates of the domain; the learned sampling rate stays.
    decode(&mut dec, &message(1, &[&WITHDRAW_ALL_OPTIONS]))
        .0
        .unwrap();
    assert_eq!(dec.stats().templates_withdrawn, 2);
    assert_eq!(dec.export_templates(exporter()).len(), 1);

    // Re-defining 256 releases the held data.
    let (r, out) = decode(&mut dec, &message(1, &[&TEMPLATE_SET]));
    assert_eq!(r.unwrap().released_records, 2);
    assert_eq!(out, expected(1, 100));
}

#[test]
fn message_length_is_checked() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let m = message(0, &[&TEMPLATE_SET, &DATA_SET]);
    // Longer than the datagram.
    assert!(matches!(
        decode(&mut dec, &m[..m.len() - 1]).0,
        Err(DecodeError::BadLength {
            what: "message",
            length: 129,
            ..
        })
    ));
    // Shorter than a header.
    let mut short = m.clone();
    short[3] = 8;
    assert!(matches!(
        decode(&mut dec, &short).0,
        Err(DecodeError::BadLength {
            what: "message",
            length: 8,
            ..
        })
    ));
    // Bytes after the message are not part of it.
    let mut trailing = m.clone();
    trailing.extend_from_slice(&[0xff; 9]);
    assert_eq!(decode(&mut dec, &trailing).0.unwrap().records, 2);
}

#[test]
fn truncations_and_bad_sets() {
    let m = message(0, &[&TEMPLATE_SET, &DATA_SET]);
    for cut in [1, 4, 15, 18, 20, 40, 58, 60, 100] {
        let mut dec = ShardDecoder::new(DecoderConfig::default());
        let mut t = m[..cut].to_vec();
        if cut >= 4 {
            // Keep the message length consistent so the cut is seen inside the sets.
            let len = (cut as u16).to_be_bytes();
            t[2] = len[0];
            t[3] = len[1];
        }
        let (r, _) = decode(&mut dec, &t);
        assert!(r.is_err(), "cut at {cut}: {r:?}");
    }
    // A record cut by a consistent set length: the first record survives.
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let mut cut_set = DATA_SET[..40].to_vec();
    cut_set[3] = 40;
    let (r, out) = decode(&mut dec, &message(0, &[&TEMPLATE_SET, &cut_set]));
    assert!(matches!(
        r,
        Err(DecodeError::ShortRecord {
            protocol: Protocol::Ipfix,
            domain: 5,
            template_id: 256,
            offset: 92
        })
    ));
    assert_eq!(out.len(), 1);
    // A template record cut inside its field list.
    let mut cut_tmpl = TEMPLATE_SET[..30].to_vec();
    cut_tmpl[3] = 30;
    assert!(matches!(
        decode(&mut dec, &message(0, &[&cut_tmpl])).0,
        Err(DecodeError::Truncated {
            what: "template field",
            ..
        })
    ));
    // An options template with no scope field.
    let mut no_scope = OPTIONS_TEMPLATE_SET;
    no_scope[9] = 0;
    assert!(matches!(
        decode(&mut dec, &message(0, &[&no_scope])).0,
        Err(DecodeError::BadTemplate {
            template_id: 400,
            domain: 5,
            ..
        })
    ));
}

#[test]
fn sequence_gaps_count_lost_records() {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    // 2 records at sequence 0, so 2 is next; 5 means 3 records were lost.
    decode(&mut dec, &message(0, &[&TEMPLATE_SET, &DATA_SET]))
        .0
        .unwrap();
    decode(&mut dec, &message(5, &[&DATA_SET])).0.unwrap();
    decode(&mut dec, &message(7, &[&DATA_SET])).0.unwrap();
    assert_eq!(dec.stats().lost_total, 3);
}

#[test]
fn sys_uptime_times_use_the_system_init_time_from_options_data() {
    #[rustfmt::skip]
    let options_template = [
        0x00, 0x03, 0x00, 0x12, // options template set, length 18
        0x01, 0x91, 0x00, 0x02, // template 401, 2 fields
        0x00, 0x01,             // 1 scope field
        0x00, 0x95, 0x00, 0x04, // scope: observationDomainId
        0x00, 0xa0, 0x00, 0x08, // systemInitTimeMilliseconds, 8
    ];
    #[rustfmt::skip]
    let options_data = [
        0x01, 0x91, 0x00, 0x10, // set 401, length 16
        0x00, 0x00, 0x00, 0x05, // domain 5
        0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x64, 0x18, // booted at 1699999999000 ms
    ];
    #[rustfmt::skip]
    let template = [
        0x00, 0x02, 0x00, 0x10, // template set, length 16
        0x01, 0x02, 0x00, 0x02, // template 258, 2 fields
        0x00, 0x16, 0x00, 0x04, // flowStartSysUpTime
        0x00, 0x15, 0x00, 0x04, // flowEndSysUpTime
    ];
    #[rustfmt::skip]
    let data = [
        0x01, 0x02, 0x00, 0x0c, // set 258, length 12
        0x00, 0x00, 0x01, 0xf4, // start 500 ms after init
        0x00, 0x00, 0x03, 0xe8, // end 1000 ms after init
    ];
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let m = message(0, &[&options_template, &options_data, &template, &data]);
    let (r, out) = decode(&mut dec, &m);
    assert_eq!(r.unwrap().records, 1);
    assert_eq!(out[0].time_flow_start_ns, 1_699_999_999_500_000_000);
    assert_eq!(out[0].time_flow_end_ns, 1_700_000_000_000_000_000);
    // The init time travels with the template snapshots.
    let snaps = dec.export_templates(exporter());
    let mut other = ShardDecoder::new(DecoderConfig::default());
    other.import_templates(exporter(), &snaps).unwrap();
    let (_, out2) = decode(&mut other, &message(1, &[&data]));
    assert_eq!(out2[0].time_flow_start_ns, 1_699_999_999_500_000_000);
}

#[test]
fn templates_per_exporter_are_bounded() {
    let mut dec = ShardDecoder::new(DecoderConfig {
        max_templates_per_exporter: 1,
        ..DecoderConfig::default()
    });
    decode(&mut dec, &message(0, &[&TEMPLATE_SET])).0.unwrap();
    // Re-defining the same template is fine; a second one is not.
    decode(&mut dec, &message(0, &[&TEMPLATE_SET])).0.unwrap();
    assert!(matches!(
        decode(&mut dec, &message(0, &[&OPTIONS_TEMPLATE_SET])).0,
        Err(DecodeError::BadTemplate {
            template_id: 400,
            ..
        })
    ));
    assert_eq!(dec.stats().errors.bad_template, 1);
}

#[test]
fn sequence_numbered_after_the_message_is_not_loss() {
    // softflowd numbers IPFIX messages after counting their own records: 2, 4, 6 for messages
    // of two records each. That is no loss; a real gap after it still counts.
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    decode(&mut dec, &message(2, &[&TEMPLATE_SET, &DATA_SET]))
        .0
        .unwrap();
    decode(&mut dec, &message(4, &[&DATA_SET])).0.unwrap();
    decode(&mut dec, &message(6, &[&DATA_SET])).0.unwrap();
    assert_eq!(dec.stats().lost_total, 0);
    decode(&mut dec, &message(12, &[&DATA_SET])).0.unwrap();
    assert_eq!(dec.stats().lost_total, 4);
}
