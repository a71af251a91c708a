//! Incremental checksum updates agree with an independent full recomputation.

use proptest::prelude::*;
use sluice_common::csum::{apply, apply_udp, diff_bytes, diff16};

/// Plain RFC 1071 checksum over `data` (odd length padded with zero), written independently of
/// the helpers under test.
fn full_checksum(chunks: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for c in chunks {
        bytes.extend_from_slice(c);
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u64 = 0;
    for w in bytes.chunks(2) {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4_header(src: [u8; 4], dst: [u8; 4], ttl: u8, extra: &[u8]) -> Vec<u8> {
    let ihl = (20 + extra.len()) / 4;
    let mut h = vec![0x40 | ihl as u8, 0, 0, 100, 0x12, 0x34, 0, 0, ttl, 17, 0, 0];
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(extra);
    let c = full_checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// UDP checksum of `udp` (its checksum field ignored) under a pseudo-header.
fn udp_checksum(pseudo: &[u8], udp: &[u8]) -> u16 {
    let mut u = udp.to_vec();
    u[6] = 0;
    u[7] = 0;
    match full_checksum(&[pseudo, &u]) {
        0 => 0xffff,
        c => c,
    }
}

fn udp_v4_checksum(src: [u8; 4], dst: [u8; 4], udp: &[u8]) -> u16 {
    let len = (udp.len() as u16).to_be_bytes();
    udp_checksum(&[&src[..], &dst[..], &[0, 17], &len[..]].concat(), udp)
}

fn udp_v6_checksum(src: [u8; 16], dst: [u8; 16], udp: &[u8]) -> u16 {
    let len = (udp.len() as u32).to_be_bytes();
    udp_checksum(
        &[&src[..], &dst[..], &len[..], &[0, 0, 0, 17]].concat(),
        udp,
    )
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

proptest! {
    #[test]
    fn ipv4_header_dst_and_ttl_rewrite(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new_dst in any::<[u8; 4]>(),
                                       ttl in 2u8.., opts in prop::collection::vec(any::<u8>(), 0..=10)) {
        let extra: Vec<u8> = opts.iter().copied().chain(std::iter::repeat(0)).take(opts.len().div_ceil(4) * 4).collect();
        let before = ipv4_header(src, dst, ttl, &extra);
        let csum = u16::from_be_bytes([before[10], before[11]]);
        let diff = diff_bytes(&dst, &new_dst) + diff16(u16::from_be_bytes([ttl, 17]), u16::from_be_bytes([ttl - 1, 17]));
        let incremental = apply(csum, diff);
        let expected = ipv4_header(src, new_dst, ttl - 1, &extra);
        prop_assert_eq!(incremental.to_be_bytes(), [expected[10], expected[11]]);
    }

    #[test]
    fn udp_v4_dst_and_port_rewrite(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new_dst in any::<[u8; 4]>(),
                                   sport in any::<u16>(), dport in any::<u16>(), new_port in any::<u16>(),
                                   payload in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut before = udp(sport, dport, &payload);
        let c = udp_v4_checksum(src, dst, &before);
        before[6..8].copy_from_slice(&c.to_be_bytes());
        let diff = diff_bytes(&dst, &new_dst) + diff16(dport, new_port);
        let incremental = apply_udp(c, diff);
        let after = udp(sport, new_port, &payload);
        prop_assert_eq!(incremental, udp_v4_checksum(src, new_dst, &after));
    }

    #[test]
    fn udp_v6_dst_and_port_rewrite(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), new_dst in any::<[u8; 16]>(),
                                   dport in any::<u16>(), new_port in any::<u16>(),
                                   payload in prop::collection::vec(any::<u8>(), 0..64)) {
        let before = udp(4739, dport, &payload);
        let c = udp_v6_checksum(src, dst, &before);
        let diff = diff_bytes(&dst, &new_dst) + diff16(dport, new_port);
        let after = udp(4739, new_port, &payload);
        prop_assert_eq!(apply_udp(c, diff), udp_v6_checksum(src, new_dst, &after));
    }
}

#[test]
fn result_zero_is_sent_as_all_ones() {
    // A checksum that becomes 0 after the update must be transmitted as 0xffff on UDP.
    assert_eq!(apply_udp(0xffff, diff16(0, 0)), 0xffff);
}
