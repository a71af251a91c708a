//! Records encoded once per encoding (format and JSON fields, in the shard thread) and shared
//! by every output of that encoding.

use std::net::IpAddr;
use std::ops::Range;

use std::sync::{Arc, Mutex, PoisonError};

use super::format::{Encoding, Format};
use crate::record::{Field, FlowRecord, MAX_JSON};

/// Encoded records in one buffer: cheap to share (`Arc`) between outputs, no per-record
/// allocation. The buffer is the output stream itself — JSON lines (each ending in `\n`) or
/// length-delimited protobuf messages — so file and stdout sinks write it without copying;
/// other sinks take the records one by one ([`EncodedBatch::payloads_from`]) and frame them.
/// A batch taken from a [`BatchPool`] gives its emptied buffers back when the last output drops
/// it.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    encoding: Encoding,
    buffers: Buffers,
    /// When the oldest datagram behind these records was received (ns since the epoch; 0 if
    /// unknown), for the latency histogram.
    received_ns: u64,
    /// Where the buffers go when the batch is dropped.
    home: Option<Arc<Spare>>,
}

#[derive(Debug, Default)]
struct Buffers {
    /// The stream is `text[..used]`. Past it, up to `text.len()`, the bytes are initialised
    /// (zeroed when the buffer first grew there, or left by earlier records), so the JSON writer
    /// writes each record in place: no per-record zeroing, no copy from a scratch buffer.
    text: Vec<u8>,
    used: usize,
    /// End of each record, after its newline (JSON).
    ends: Vec<usize>,
    /// Each record's exporter (`sampler_address`): the Kafka message key.
    exporters: Vec<Option<IpAddr>>,
}

impl Buffers {
    fn clear(&mut self) {
        self.used = 0;
        self.ends.clear();
        self.exporters.clear();
    }

    /// `n` initialised bytes right after the stream.
    fn room(&mut self, n: usize) -> &mut [u8] {
        let end = self.used + n;
        if self.text.len() < end {
            self.text.resize(end, 0);
        }
        &mut self.text[self.used..end]
    }

    /// Appends `bytes` to the stream.
    fn put(&mut self, bytes: &[u8]) {
        self.room(bytes.len()).copy_from_slice(bytes);
        self.used += bytes.len();
    }

    /// Appends `record` as one JSON line.
    fn put_json(&mut self, record: &FlowRecord, fields: Option<&[Field]>) {
        let room = self.room(MAX_JSON + 1);
        match record.write_json_into(&mut room[..MAX_JSON], fields) {
            Some(n) => {
                // n ≤ MAX_JSON, and the room has one byte more.
                room[n] = b'\n';
                self.used += n + 1;
            }
            None => {
                let mut line = Vec::new();
                record.write_json(&mut line, fields);
                line.push(b'\n');
                self.put(&line);
            }
        }
    }

    /// Appends `record` as one length-delimited message, written into the spare capacity by
    /// [`FlowRecord::write_pb`] (so the initialised bytes past the stream are given up).
    fn put_pb(&mut self, record: &FlowRecord) {
        self.text.truncate(self.used);
        record.write_pb(&mut self.text);
        self.used = self.text.len();
    }
}

/// Emptied buffers of dropped batches, for the shard that encoded them to fill again. The
/// output threads drop the batches; without the pool each batch's pages would go back to the
/// allocator there and be faulted in again (zeroed) by the shard for the next batch.
///
/// A stack: the buffers returned last are taken first, so the few in circulation at a time are
/// reused while their pages are still mapped and in cache, and the rest of the pool (there for
/// bursts) stays untouched. A queue would cycle through every pooled set, faulting all of them in.
#[derive(Debug, Clone)]
pub struct BatchPool {
    stack: Arc<Spare>,
}

#[derive(Debug)]
struct Spare {
    buffers: Mutex<Vec<Buffers>>,
    /// Sets kept at most (more are freed).
    max: usize,
}

impl Spare {
    fn put(&self, mut buffers: Buffers) {
        buffers.clear();
        let mut stack = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
        if stack.len() < self.max {
            stack.push(buffers);
        }
        // Otherwise enough buffers are in circulation: these are freed, after the lock is
        // released (the drop of the guard comes first).
    }

    fn take(&self) -> Option<Buffers> {
        self.buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }
}

impl BatchPool {
    /// A pool keeping up to `batches` sets of buffers (more are freed).
    pub fn new(batches: usize) -> Self {
        BatchPool {
            stack: Arc::new(Spare {
                buffers: Mutex::new(Vec::with_capacity(batches)),
                max: batches,
            }),
        }
    }

    /// An empty batch of `encoding` on a spare set of buffers (or new ones), with room for
    /// `records` records.
    pub fn take(&self, encoding: &Encoding, records: usize) -> EncodedBatch {
        let mut batch = EncodedBatch {
            encoding: encoding.clone(),
            buffers: self.stack.take().unwrap_or_default(),
            received_ns: 0,
            home: Some(self.stack.clone()),
        };
        batch.reserve(records);
        batch
    }

    #[cfg(test)]
    fn spare(&self) -> usize {
        self.stack
            .buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for EncodedBatch {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home.put(std::mem::take(&mut self.buffers));
        }
    }
}

impl EncodedBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `records` records of `encoding`.
    pub fn with_capacity(encoding: impl Into<Encoding>, records: usize) -> Self {
        let mut batch = EncodedBatch {
            encoding: encoding.into(),
            buffers: Buffers::default(),
            received_ns: 0,
            home: None,
        };
        batch.reserve(records);
        batch
    }

    /// Typical encoded sizes: JSON ~900 bytes (IPv4; IPv6 more), protobuf ~150.
    fn typical_size(format: Format) -> usize {
        match format {
            Format::Json => 1024,
            Format::Pb => 192,
        }
    }

    /// Room for `records` more records.
    fn reserve(&mut self, records: usize) {
        let b = &mut self.buffers;
        let want = b.used + records * Self::typical_size(self.encoding.format);
        b.text.reserve(want.saturating_sub(b.text.len()));
        b.ends.reserve(records);
        b.exporters.reserve(records);
    }

    pub fn format(&self) -> Format {
        self.encoding.format
    }

    pub fn encoding(&self) -> &Encoding {
        &self.encoding
    }

    /// Appends `record` in this batch's format.
    pub fn push_record(&mut self, record: &FlowRecord) {
        match self.encoding.format {
            Format::Json => self.buffers.put_json(record, self.encoding.fields()),
            Format::Pb => self.buffers.put_pb(record),
        }
        self.buffers.ends.push(self.buffers.used);
        self.buffers.exporters.push(record.sampler_address);
    }

    /// Appends an already-encoded JSON line (no exporter).
    pub fn push_line(&mut self, line: &[u8]) {
        self.buffers.put(line);
        self.buffers.put(b"\n");
        self.buffers.ends.push(self.buffers.used);
        self.buffers.exporters.push(None);
    }

    /// Record `i`'s exporter, the Kafka key.
    pub fn exporter(&self, i: usize) -> Option<IpAddr> {
        self.buffers.exporters.get(i).copied().flatten()
    }

    /// When the oldest datagram behind these records was received (0: unknown).
    pub fn received_ns(&self) -> u64 {
        self.received_ns
    }

    pub fn set_received_ns(&mut self, ns: u64) {
        self.received_ns = ns;
    }

    pub fn len(&self) -> usize {
        self.buffers.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buffers.ends.is_empty()
    }

    /// Where line `i` starts (`len()` gives the end of the text).
    fn start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            i => self.buffers.ends[i - 1],
        }
    }

    /// Records `lines` as the output stream: JSON-lines text with newlines, or
    /// length-delimited messages.
    pub fn text(&self, lines: Range<usize>) -> &[u8] {
        &self.buffers.text[self.start(lines.start)..self.start(lines.end)]
    }

    /// Byte length of records `from..to` in the stream (newlines included).
    pub fn text_len(&self, from: usize, to: usize) -> usize {
        self.start(to) - self.start(from)
    }

    /// Records from index `from` on as messages: a JSON object without its newline, or a
    /// protobuf message with its varint length (what GoFlow2 puts in one Kafka message).
    pub fn payloads_from(&self, from: usize) -> impl Iterator<Item = &[u8]> {
        let trim = usize::from(self.encoding.format == Format::Json);
        (from..self.len())
            .map(move |i| &self.buffers.text[self.start(i)..self.buffers.ends[i] - trim])
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
mod pool_tests {
    use super::*;

    #[test]
    fn the_last_drop_returns_emptied_buffers_with_their_capacity() {
        let pool = BatchPool::new(1);
        let mut a = pool.take(&Format::Pb.into(), 2);
        a.push_record(&FlowRecord::default());
        a.set_received_ns(7);
        let capacity = a.buffers.text.capacity();
        let shared = Arc::new(a);
        let other_output = shared.clone();
        drop(shared);
        // Still held by another output: nothing came back yet.
        assert_eq!(pool.spare(), 0);
        drop(other_output);
        let b = pool.take(&Format::Json.into(), 1);
        assert!(b.is_empty() && b.text(0..0).is_empty() && b.received_ns() == 0);
        assert_eq!(b.format(), Format::Json);
        assert!(b.buffers.text.capacity() >= capacity);
        assert_eq!(pool.spare(), 0);
        // Beyond the pool's size, dropped batches are freed, not kept.
        let (c, d) = (
            pool.take(&Format::Pb.into(), 1),
            pool.take(&Format::Pb.into(), 1),
        );
        drop((b, c, d));
        assert_eq!(pool.spare(), 1);
    }

    #[test]
    fn a_reused_buffer_holds_only_its_new_records_whatever_it_held_before() {
        let pool = BatchPool::new(1);
        let long = FlowRecord {
            src_addr: Some("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()),
            bytes: u64::MAX,
            ..FlowRecord::default()
        };
        let short = FlowRecord::default();
        let line = |r: &FlowRecord, fields: Option<&[Field]>| {
            let mut l = Vec::new();
            r.write_json(&mut l, fields);
            l.push(b'\n');
            l
        };
        let mut first = pool.take(&Format::Json.into(), 3);
        for _ in 0..3 {
            first.push_record(&long);
        }
        assert_eq!(first.text(0..3), line(&long, None).repeat(3));
        drop(first);
        // The long records' bytes are still in the buffer past the stream: never part of it.
        let mut json = pool.take(&Format::Json.into(), 1);
        json.push_record(&short);
        json.push_line(b"{}");
        json.push_record(&short);
        let want = [line(&short, None), b"{}\n".to_vec(), line(&short, None)].concat();
        assert_eq!(json.text(0..3), want);
        assert_eq!(json.text_len(0, 3), want.len());
        drop(json);
        // The same buffer as protobuf, then as JSON with a field list.
        let mut pb = pool.take(&Format::Pb.into(), 1);
        pb.push_record(&short);
        let mut message = Vec::new();
        short.write_pb(&mut message);
        assert_eq!(pb.text(0..1), message);
        drop(pb);
        let fields = [Field::Bytes, Field::SrcAddr];
        let names = vec!["bytes".to_owned(), "src_addr".to_owned()];
        let encoding = Encoding::new(Format::Json, Some(names.try_into().unwrap()));
        let mut picked = pool.take(&encoding, 1);
        picked.push_record(&long);
        assert_eq!(picked.text(0..1), line(&long, Some(&fields)));
    }

    #[test]
    fn the_buffers_returned_last_are_taken_first() {
        let pool = BatchPool::new(4);
        let (mut small, mut large) = (
            pool.take(&Format::Pb.into(), 1),
            pool.take(&Format::Pb.into(), 1),
        );
        small.push_record(&FlowRecord::default());
        large.reserve(10_000);
        let large_capacity = large.buffers.text.capacity();
        drop(small);
        drop(large);
        // The last one back (the large one) comes out first, with its pages still mapped.
        assert_eq!(
            pool.take(&Format::Pb.into(), 1).buffers.text.capacity(),
            large_capacity
        );
    }
}

#[cfg(test)]
mod format_tests {
    use prost::Message as _;

    use super::*;
    use crate::record::pb::FlowMessage;

    #[test]
    fn pb_payloads_are_whole_length_delimited_messages_with_their_exporter() {
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
        b.push_record(&a);
        b.push_record(&c);
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
        let mut b = EncodedBatch::with_capacity(Format::Json, 1);
        let r = FlowRecord::default();
        b.push_record(&r);
        let mut want = Vec::new();
        r.write_json(&mut want, None);
        assert_eq!(b.payloads_from(0).next(), Some(&want[..]));
        want.push(b'\n');
        assert_eq!(b.text(0..1), &want[..]);
    }
}
