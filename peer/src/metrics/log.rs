//! Rate limiting for the logs of rare events, so a flood of them costs one line per period.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Rate-limited logs repeat at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Lets a log line through at most once per [`LOG_EVERY`].
#[derive(Debug, Default)]
pub struct LogLimiter {
    next_ms: AtomicU64,
}

impl LogLimiter {
    pub fn allow(&self) -> bool {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64;
        let next = self.next_ms.load(Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(next, now + LOG_EVERY.as_millis() as u64, Relaxed, Relaxed)
                .is_ok()
    }
}
