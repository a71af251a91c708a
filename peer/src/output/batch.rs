//! Records encoded once (JSON, in the shard thread) and shared by every output.

use std::ops::Range;

/// JSON lines in one buffer: cheap to share (`Arc`) between outputs, no per-record allocation.
/// The buffer is the JSON-lines text itself (each line ends in `\n`), so file and stdout sinks
/// write it without copying; other sinks take the lines one by one and frame them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    text: Vec<u8>,
    /// End of each line, after its newline.
    ends: Vec<usize>,
    /// When the oldest datagram behind these records was received (ns since the epoch; 0 if
    /// unknown), for the latency histogram.
    received_ns: u64,
}

impl EncodedBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `lines` lines of `bytes` bytes in total.
    pub fn with_capacity(lines: usize, bytes: usize) -> Self {
        EncodedBatch {
            text: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(lines),
            received_ns: 0,
        }
    }

    /// Appends one line written by `encode` (which must not write a newline).
    pub fn push_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        encode(&mut self.text);
        self.text.push(b'\n');
        self.ends.push(self.text.len());
    }

    /// Appends an already-encoded line.
    pub fn push_line(&mut self, line: &[u8]) {
        self.push_with(|buf| buf.extend_from_slice(line));
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

    /// Lines `lines` as JSON-lines text, newlines included.
    pub fn text(&self, lines: Range<usize>) -> &[u8] {
        &self.text[self.start(lines.start)..self.start(lines.end)]
    }

    /// Byte length of lines `from..to`, newlines included.
    pub fn text_len(&self, from: usize, to: usize) -> usize {
        self.start(to) - self.start(from)
    }

    /// Lines from index `from` on, without their newline.
    pub fn lines_from(&self, from: usize) -> impl Iterator<Item = &[u8]> {
        (from..self.len()).map(|i| &self.text[self.start(i)..self.ends[i] - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_text() {
        let mut b = EncodedBatch::new();
        b.push_with(|buf| buf.extend_from_slice(b"{\"a\":1}"));
        b.push_line(b"{\"b\":2}");
        b.push_line(b"");
        assert_eq!(b.len(), 3);
        let lines: Vec<_> = b.lines_from(0).collect();
        assert_eq!(lines, [&b"{\"a\":1}"[..], &b"{\"b\":2}"[..], &b""[..]]);
        assert_eq!(b.lines_from(1).count(), 2);
        assert_eq!(b.lines_from(3).count(), 0);
        assert_eq!(b.text(0..3), b"{\"a\":1}\n{\"b\":2}\n\n");
        assert_eq!(b.text(1..2), b"{\"b\":2}\n");
        assert_eq!(b.text_len(1, 3), 9);
        assert!(b.text(3..3).is_empty());
    }
}
