//! NetFlow v9 datagrams of an exact size, encoded by `sluice_peer::flowgen` (the encoder the
//! peers' decoder is tested against), so the benchmarks carry realistic bytes.

use sluice_peer::flowgen::{Encoder, EncoderConfig, FlowRecord, FlowSynth, Protocol};

/// One exporter's datagrams.
pub struct V9Datagrams {
    /// The first datagram: templates and options data, no flow records.
    pub templates: Vec<u8>,
    /// A data-only datagram of exactly the requested length.
    pub data: Vec<u8>,
    /// Flow records in `data`.
    pub records: usize,
}

/// Header (20 bytes) then the data set's id (2) and length (2).
const SET_LEN_AT: usize = 22;

/// Datagrams of exporter `source_id` (the v9 source id). `data` holds as many IPv4 flow records
/// as fit in `len` bytes; its data set is then zero-padded to `len` (RFC 3954 allows padding
/// inside a set; it is shorter than one record, so decoders skip it).
pub fn v9_datagrams(source_id: u32, len: usize) -> V9Datagrams {
    const BOOT_NS: u64 = 1_763_700_000_000_000_000;
    const EXPORT_NS: u64 = BOOT_NS + 3_600_000_000_000;
    let mut encoder = Encoder::new(
        Protocol::NetflowV9,
        EncoderConfig {
            template_every: 0,
            observation_domain_id: source_id,
            boot_time_ns: BOOT_NS,
            ..EncoderConfig::default()
        },
    );
    let mut templates = Vec::new();
    encoder.encode(&[], EXPORT_NS, &mut templates);
    let mut synth = FlowSynth::new(u64::from(source_id), Protocol::NetflowV9);
    let mut flows: Vec<FlowRecord> = Vec::new();
    let mut data = Vec::new();
    loop {
        let flow = std::iter::repeat_with(|| synth.flow(EXPORT_NS - 1_000_000_000))
            .find(|f| f.src_addr.is_some_and(|a| a.is_ipv4()))
            .expect("the synthesiser yields IPv4 flows");
        flows.push(flow);
        let mut attempt = Vec::new();
        // A clone: the real encoder's sequence number stays at the first data datagram.
        encoder.clone().encode(&flows, EXPORT_NS, &mut attempt);
        if attempt.len() > len {
            flows.pop();
            break;
        }
        data = attempt;
    }
    assert!(!flows.is_empty(), "{len} bytes cannot hold one flow record");
    let set_len = u16::from_be_bytes([data[SET_LEN_AT], data[SET_LEN_AT + 1]]);
    assert_eq!(
        usize::from(set_len),
        data.len() - 20,
        "one data set after the header"
    );
    let padded = usize::from(set_len) + len - data.len();
    data.resize(len, 0);
    data[SET_LEN_AT..SET_LEN_AT + 2].copy_from_slice(&(padded as u16).to_be_bytes());
    V9Datagrams {
        templates,
        data,
        records: flows.len(),
    }
}

#[cfg(test)]
mod tests {
    use sluice_peer::decode::{DecoderConfig, ShardDecoder};

    use super::*;

    #[test]
    fn padded_data_decodes_to_its_records_for_every_length_used() {
        for len in [1338, 1354, 1358] {
            let d = v9_datagrams(7, len);
            assert_eq!(d.data.len(), len);
            let mut decoder = ShardDecoder::new(DecoderConfig::default());
            let exporter = [198, 18, 0, 10].into();
            let mut out = Vec::new();
            decoder
                .decode(exporter, 0, &d.templates, &mut out)
                .expect("templates");
            out.clear();
            let outcome = decoder
                .decode(exporter, 0, &d.data, &mut out)
                .expect("data");
            assert_eq!((outcome.records, out.len()), (d.records, d.records));
            assert!(d.records > 20, "{len}: only {} records", d.records);
        }
    }
}
