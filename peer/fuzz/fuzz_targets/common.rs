//! Shared driver: force the version field to the target's protocol, then decode the input as
//! one datagram, twice (the second pass sees the templates the first one learned), and as two
//! datagrams split where the first byte says, so held data and its release are exercised.

use std::net::{IpAddr, Ipv4Addr};

use sluice_peer::decode::{DecoderConfig, ShardDecoder};

pub fn run(version: &[u8], data: &[u8]) {
    let mut datagram = data.to_vec();
    for (d, v) in datagram.iter_mut().zip(version) {
        *d = *v;
    }
    let exporter = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    for apply_sampling in [false, true] {
        let mut dec = ShardDecoder::new(DecoderConfig {
            apply_sampling,
            max_held_per_exporter: 4,
            ..DecoderConfig::default()
        });
        let mut out = Vec::new();
        let _ = dec.decode(exporter, 1, &datagram, &mut out);
        let _ = dec.decode(exporter, 2, &datagram, &mut out);
        let split = usize::from(data.first().copied().unwrap_or(0)).min(datagram.len());
        let (a, b) = datagram.split_at(split);
        let _ = dec.decode(exporter, 3, b, &mut out);
        let _ = dec.decode(exporter, 4, a, &mut out);
        let snaps = dec.export_templates(exporter);
        let mut other = ShardDecoder::new(DecoderConfig::default());
        let _ = other.import_templates(exporter, &snaps);
        let _ = other.decode(exporter, 5, &datagram, &mut out);
        dec.expire(u64::MAX);
        let mut json = Vec::new();
        for r in &out {
            r.write_json(&mut json, None);
        }
    }
}
