//! Records encoded once (JSON, in the shard thread) and shared by every output.

/// A batch of JSON lines in one buffer: cheap to share (`Arc`) between outputs, no per-record
/// allocation. Lines carry no trailing newline; each sink adds its own framing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl EncodedBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `lines` lines of `bytes` bytes in total.
    pub fn with_capacity(lines: usize, bytes: usize) -> Self {
        EncodedBatch {
            buf: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(lines),
        }
    }

    /// Appends one line written by `encode` (which must not write a newline).
    pub fn push_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        encode(&mut self.buf);
        self.ends.push(self.buf.len());
    }

    /// Appends an already-encoded line.
    pub fn push_line(&mut self, line: &[u8]) {
        self.push_with(|buf| buf.extend_from_slice(line));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of all lines, framing excluded.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Lines from index `from` on.
    pub fn lines_from(&self, from: usize) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .skip(from)
            .map(|(s, e)| &self.buf[s..e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let mut b = EncodedBatch::new();
        b.push_with(|buf| buf.extend_from_slice(b"{\"a\":1}"));
        b.push_line(b"{\"b\":2}");
        assert_eq!(b.len(), 2);
        let lines: Vec<_> = b.lines_from(0).collect();
        assert_eq!(lines, [&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
        assert_eq!(b.lines_from(1).count(), 1);
        assert_eq!(b.lines_from(2).count(), 0);
    }
}
