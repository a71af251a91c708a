//! Receive side of the pipeline: picks each datagram's shard and sends whole batches.

use std::net::IpAddr;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::batch::DatagramBatch;
use crate::metrics::{DropReason, Metrics};

/// The shard that owns `exporter`'s state: a stable (FNV-1a, fixed across runs, builds and
/// platforms) hash of the address bytes. IPv4-mapped IPv6 addresses count as IPv4.
pub fn shard_for(exporter: IpAddr, shards: usize) -> usize {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes: &[u8] = &match exporter.to_canonical() {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    let hash = bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME));
    // Fold the high bits in: FNV's low bits alone mix poorly for the last bytes.
    ((hash ^ (hash >> 32)) % shards.max(1) as u64) as usize
}

/// What to do when a shard's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Never block (receive threads): the batch stays pending, collecting more datagrams, until
    /// it holds `hold` datagrams; then it is dropped and counted. Holding lets a shard that is
    /// briefly behind catch up with fewer, larger batches instead of losing many small ones.
    Drop { hold: usize },
    /// Wait for room (replaying a corpus, where nothing may be lost).
    Block,
}

/// One per receive thread. [`Router::push`] adds a datagram to its shard's pending batch and
/// [`Router::flush`] sends the pending batches (call it after each `recvmmsg`).
pub struct Router {
    shards: Vec<Sender<DatagramBatch>>,
    pending: Vec<DatagramBatch>,
    pool: Receiver<DatagramBatch>,
    backpressure: Backpressure,
    metrics: Arc<Metrics>,
}

impl Router {
    pub fn new(
        shards: Vec<Sender<DatagramBatch>>,
        pool: Receiver<DatagramBatch>,
        backpressure: Backpressure,
        metrics: Arc<Metrics>,
    ) -> Self {
        let pending = shards.iter().map(|_| DatagramBatch::default()).collect();
        Router {
            shards,
            pending,
            pool,
            backpressure,
            metrics,
        }
    }

    pub fn push(&mut self, exporter: IpAddr, received_ns: u64, data: &[u8]) {
        let exporter = exporter.to_canonical();
        let shard = shard_for(exporter, self.pending.len());
        self.pending[shard].push(exporter, received_ns, data);
    }

    /// Hands what is still pending to the shards, waiting for room: the last step of a
    /// receive thread at shutdown (the shards run until every router is gone).
    pub fn finish(mut self) {
        self.backpressure = Backpressure::Block;
        self.flush();
    }

    /// Sends every non-empty pending batch (see [`Backpressure`] for a full queue).
    pub fn flush(&mut self) {
        for (tx, pending) in self.shards.iter().zip(self.pending.iter_mut()) {
            if pending.is_empty() {
                continue;
            }
            let batch = std::mem::take(pending);
            let rejected = match self.backpressure {
                Backpressure::Drop { hold } => match tx.try_send(batch) {
                    Ok(()) => None,
                    Err(TrySendError::Full(batch)) if batch.len() < hold => {
                        *pending = batch;
                        continue;
                    }
                    Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => {
                        Some(batch)
                    }
                },
                Backpressure::Block => tx.send(batch).err().map(|e| e.0),
            };
            *pending = match rejected {
                None => self.pool.try_recv().unwrap_or_default(),
                Some(mut batch) => {
                    for (exporter, n) in batch.per_exporter() {
                        self.metrics.dropped(DropReason::QueueFull, exporter, n);
                    }
                    batch.clear();
                    batch
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    proptest! {
        #[test]
        fn shard_choice_is_stable_and_in_range(raw in any::<u32>(), shards in 1usize..64) {
            let v4 = IpAddr::V4(Ipv4Addr::from(raw));
            let mapped = IpAddr::V6(Ipv4Addr::from(raw).to_ipv6_mapped());
            let s = shard_for(v4, shards);
            prop_assert!(s < shards);
            prop_assert_eq!(s, shard_for(v4, shards));
            prop_assert_eq!(s, shard_for(mapped, shards));
        }

        #[test]
        fn v6_shard_choice_is_stable(raw in any::<u128>(), shards in 1usize..64) {
            let a = IpAddr::V6(Ipv6Addr::from(raw));
            prop_assert_eq!(shard_for(a, shards), shard_for(a, shards));
            prop_assert!(shard_for(a, shards) < shards);
        }
    }

    #[test]
    fn shard_choice_is_fixed_across_builds() {
        // Pinned values: changing the hash moves exporters (and their templates) between shards
        // of running peers, so it must be a deliberate change.
        let got: Vec<usize> = ["198.18.0.1", "198.18.0.2", "10.0.0.1", "2001:db8::1"]
            .iter()
            .map(|a| shard_for(a.parse().unwrap(), 16))
            .collect();
        assert_eq!(got, [7, 14, 1, 3]);
    }

    #[test]
    fn shards_are_reasonably_balanced() {
        let mut counts = [0u32; 8];
        for i in 0..8000u32 {
            counts[shard_for(IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i)), 8)] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn full_queue_holds_then_drops_and_counts_per_exporter() {
        let metrics = Metrics::new();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (_pool_tx, pool_rx) = crossbeam_channel::bounded(1);
        let hold = Backpressure::Drop { hold: 3 };
        let mut router = Router::new(vec![tx], pool_rx, hold, metrics.clone());
        let a: IpAddr = "198.18.0.9".parse().unwrap();
        router.push(a, 0, b"x");
        router.flush();
        // The queue is full: held while smaller than 3 datagrams.
        router.push(a, 0, b"y");
        router.flush();
        router.push(a, 0, b"z");
        router.flush();
        assert_eq!(metrics.drops(DropReason::QueueFull), 0);
        // Room again: the held batch goes out whole.
        assert_eq!(rx.recv().unwrap().len(), 1);
        router.flush();
        assert_eq!(rx.recv().unwrap().len(), 2);
        // Full again and the pending batch reaches `hold`: dropped and counted.
        router.push(a, 0, b"1");
        router.flush();
        for d in [b"2", b"3", b"4"] {
            router.push(a, 0, d);
        }
        router.flush();
        assert_eq!(rx.len(), 1);
        assert_eq!(metrics.drops(DropReason::QueueFull), 3);
        assert!(
            metrics
                .render()
                .contains("exporter=\"198.18.0.9\",reason=\"queue_full\"} 3")
        );
    }
}
