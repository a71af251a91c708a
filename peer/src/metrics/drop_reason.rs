//! Why datagrams are dropped before decoding (the `reason` label).

/// Why a datagram was dropped before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The shard's queue was full (decoding cannot keep up).
    QueueFull,
    /// Longer than `ingest.max_datagram_bytes`.
    Truncated,
}

impl DropReason {
    pub const ALL: [DropReason; 2] = [DropReason::QueueFull, DropReason::Truncated];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Truncated => "truncated",
        }
    }
}
