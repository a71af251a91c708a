//! A shutdown signal every thread can poll or sleep on, and the join that follows it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Cloneable; [`Shutdown::trigger`] wakes every [`Shutdown::sleep`].
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    flag: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        let _guard = self.0.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.0.flag.store(true, Ordering::Release);
        self.0.wake.notify_all();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.flag.load(Ordering::Acquire)
    }

    /// Sleeps up to `duration`; returns early (true) when shutdown is triggered.
    pub fn sleep(&self, duration: Duration) -> bool {
        let guard = self.0.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (_guard, _) = self
            .0
            .wake
            .wait_timeout_while(guard, duration, |()| !self.is_triggered())
            .unwrap_or_else(PoisonError::into_inner);
        self.is_triggered()
    }
}

/// Joins `threads`, logging (as `what`) those that panicked.
pub fn join_all(what: &str, threads: Vec<JoinHandle<()>>) {
    for t in threads {
        if t.join().is_err() {
            tracing::error!(thread = what, "thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn trigger_wakes_sleepers() {
        let s = Shutdown::new();
        assert!(!s.sleep(Duration::from_millis(1)));
        let t = s.clone();
        let start = Instant::now();
        let h = std::thread::spawn(move || t.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        s.trigger();
        assert!(h.join().unwrap());
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
