//! Records encoded once per format (in the shard thread) and shared by every output of that
//! format.

use std::net::IpAddr;
use std::ops::Range;

use super::format::Format;
use crate::record::FlowRecord;
use crate::record::pb::PbEncoder;

/// Encoded records in one buffer: cheap to share (`Arc`) between outputs, no per-record
/// allocation. The buffer is the output stream itself — JSON lines (each ending in `\n`) or
/// length-delimited protobuf messages — so file and stdout sinks write it without copying;
/// other sinks take the records one by one ([`EncodedBatch::payloads_from`]) and frame them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    format: Format,
    text: Vec<u8>,
    /// End of each record, after its newline (JSON).
    ends: Vec<usize>,
    /// Each record's exporter (`sampler_address`): the Kafka message key.
    exporters: Vec<Option<IpAddr>>,
    /// When the oldest datagram behind these records was received (ns since the epoch; 0 if
    /// unknown), for the latency histogram.
    received_ns: u64,
}

impl EncodedBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `records` records of `format`.
    pub fn with_capacity(format: Format, records: usize) -> Self {
        // Typical sizes: JSON ~900 bytes (IPv4; IPv6 more), protobuf ~150.
        let bytes = match format {
            Format::Json => 1024,
            Format::Pb => 192,
        };
        EncodedBatch {
            format,
            text: Vec::with_capacity(records * bytes),
            ends: Vec::with_capacity(records),
            exporters: Vec::with_capacity(records),
            received_ns: 0,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Appends `record` in this batch's format (`pb`: the shard's reusable encoder).
    pub fn push_record(&mut self, record: &FlowRecord, pb: &mut PbEncoder) {
        match self.format {
            Format::Json => {
                record.write_json(&mut self.text);
                self.text.push(b'\n');
            }
            Format::Pb => pb.write(record, &mut self.text),
        }
        self.ends.push(self.text.len());
        self.exporters.push(record.sampler_address);
    }

    /// Appends an already-encoded JSON line (no exporter).
    pub fn push_line(&mut self, line: &[u8]) {
        self.text.extend_from_slice(line);
        self.text.push(b'\n');
        self.ends.push(self.text.len());
        self.exporters.push(None);
    }

    /// Record `i`'s exporter, the Kafka key.
    pub fn exporter(&self, i: usize) -> Option<IpAddr> {
        self.exporters.get(i).copied().flatten()
    }

    /// When the oldest datagram behind these records was received (0: unknown).
    pub fn received_ns(&self) -> u64 {
        self.received_ns
    }

    pub fn set_received_ns(&mut self, ns: u64) {
        self.received_ns = ns;
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Where line `i` starts (`len()` gives the end of the text).
    fn start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            i => self.ends[i - 1],
        }
    }

    /// Records `lines` as the output stream: JSON-lines text with newlines, or
    /// length-delimited messages.
    pub fn text(&self, lines: Range<usize>) -> &[u8] {
        &self.text[self.start(lines.start)..self.start(lines.end)]
    }

    /// Byte length of records `from..to` in the stream (newlines included).
    pub fn text_len(&self, from: usize, to: usize) -> usize {
        self.start(to) - self.start(from)
    }

    /// Records from index `from` on as messages: a JSON object without its newline, or a
    /// protobuf message with its varint length (what GoFlow2 puts in one Kafka message).
    pub fn payloads_from(&self, from: usize) -> impl Iterator<Item = &[u8]> {
        let trim = usize::from(self.format == Format::Json);
        (from..self.len()).map(move |i| &self.text[self.start(i)..self.ends[i] - trim])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_text() {
        let mut b = EncodedBatch::new();
        b.push_line(b"{\"a\":1}");
        b.push_line(b"{\"b\":2}");
        b.push_line(b"");
        assert_eq!(b.len(), 3);
        let lines: Vec<_> = b.payloads_from(0).collect();
        assert_eq!(lines, [&b"{\"a\":1}"[..], &b"{\"b\":2}"[..], &b""[..]]);
        assert_eq!(b.payloads_from(1).count(), 2);
        assert_eq!(b.payloads_from(3).count(), 0);
        assert_eq!(b.text(0..3), b"{\"a\":1}\n{\"b\":2}\n\n");
        assert_eq!(b.text(1..2), b"{\"b\":2}\n");
        assert_eq!(b.text_len(1, 3), 9);
        assert!(b.text(3..3).is_empty());
    }
}

#[cfg(test)]
mod format_tests {
    use prost::Message as _;

    use super::*;
    use crate::record::pb::FlowMessage;

    #[test]
    fn pb_payloads_are_whole_length_delimited_messages_with_their_exporter() {
        let mut pb = PbEncoder::default();
        let mut b = EncodedBatch::with_capacity(Format::Pb, 2);
        let a = FlowRecord {
            sampler_address: Some("198.18.1.10".parse().unwrap()),
            bytes: 10,
            ..FlowRecord::default()
        };
        let c = FlowRecord {
            sampler_address: Some("198.18.1.11".parse().unwrap()),
            bytes: 300,
            ..FlowRecord::default()
        };
        b.push_record(&a, &mut pb);
        b.push_record(&c, &mut pb);
        let payloads: Vec<&[u8]> = b.payloads_from(0).collect();
        assert_eq!(payloads.len(), 2);
        assert_eq!(payloads.concat(), b.text(0..2));
        let mut second = payloads[1];
        let m = FlowMessage::decode_length_delimited(&mut second).unwrap();
        assert!(second.is_empty());
        assert_eq!(m.bytes, 300);
        assert_eq!(b.exporter(1), c.sampler_address);
        assert_eq!(b.exporter(2), None);
    }

    #[test]
    fn json_payloads_drop_the_newline_only() {
        let mut pb = PbEncoder::default();
        let mut b = EncodedBatch::with_capacity(Format::Json, 1);
        let r = FlowRecord::default();
        b.push_record(&r, &mut pb);
        let mut want = Vec::new();
        r.write_json(&mut want);
        assert_eq!(b.payloads_from(0).next(), Some(&want[..]));
        want.push(b'\n');
        assert_eq!(b.text(0..1), &want[..]);
    }
}
