//! Datagrams grouped for one shard: what crosses from a receive thread to a decoder thread.

use std::net::IpAddr;

#[derive(Debug, Clone, Copy)]
struct Entry {
    exporter: IpAddr,
    received_ns: u64,
    end: usize,
}

/// Buffer a cleared batch keeps: what one hand-over of a receive thread (up to 4 `recvmmsg`
/// reads of 64 datagrams, gathered over `ingest.linger_us`) carries for a shard, at typical
/// datagram sizes. Smaller, and every larger batch would shrink here and grow again, on fresh
/// pages, in the receive thread.
pub const KEPT_BYTES: usize = 512 << 10;

/// Datagrams in one buffer. Batches are recycled (cleared, capacity kept) between the shards and
/// the receive threads, so the steady state allocates nothing.
#[derive(Debug, Default)]
pub struct DatagramBatch {
    data: Vec<u8>,
    entries: Vec<Entry>,
}

/// One datagram of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    pub exporter: IpAddr,
    pub received_ns: u64,
    pub data: &'a [u8],
}

impl DatagramBatch {
    pub fn push(&mut self, exporter: IpAddr, received_ns: u64, data: &[u8]) {
        self.data.extend_from_slice(data);
        self.entries.push(Entry {
            exporter,
            received_ns,
            end: self.data.len(),
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the batch for reuse, keeping at most [`KEPT_BYTES`] of buffer: a batch that grew
    /// while its shard was behind does not pin that memory in the recycling pool.
    pub fn clear(&mut self) {
        self.data.clear();
        self.data.shrink_to(KEPT_BYTES);
        self.entries.clear();
        self.entries.shrink_to(KEPT_BYTES / 512);
    }

    pub fn iter(&self) -> impl Iterator<Item = Datagram<'_>> {
        let starts = std::iter::once(0).chain(self.entries.iter().map(|e| e.end));
        self.entries.iter().zip(starts).map(|(e, start)| Datagram {
            exporter: e.exporter,
            received_ns: e.received_ns,
            data: &self.data[start..e.end],
        })
    }

    /// How many datagrams each exporter has in the batch (for drop accounting).
    pub fn per_exporter(&self) -> Vec<(IpAddr, u64)> {
        let mut counts: Vec<(IpAddr, u64)> = Vec::new();
        for e in &self.entries {
            match counts.iter_mut().find(|(a, _)| *a == e.exporter) {
                Some((_, n)) => *n += 1,
                None => counts.push((e.exporter, 1)),
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_iter_clear() {
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let mut batch = DatagramBatch::default();
        batch.push(a, 1, b"one");
        batch.push(b, 2, b"");
        batch.push(a, 3, b"three");
        let got: Vec<_> = batch
            .iter()
            .map(|d| (d.exporter, d.received_ns, d.data.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (a, 1, b"one".to_vec()),
                (b, 2, vec![]),
                (a, 3, b"three".to_vec())
            ]
        );
        assert_eq!(batch.per_exporter(), vec![(a, 2), (b, 1)]);
        batch.clear();
        assert!(batch.is_empty());
        for _ in 0..1000 {
            batch.push(a, 4, &[0; 1400]);
        }
        batch.clear();
        assert!(batch.data.capacity() <= KEPT_BYTES);
        assert_eq!(batch.iter().count(), 0);
    }
}
