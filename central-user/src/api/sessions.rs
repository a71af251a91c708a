//! Registry of live peer sessions, so the controller can reach a peer: install templates on it
//! (and wait for the acknowledgement) before moving exporters there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice_common::protocol::{CentralMessage, Templates};
use tokio::sync::{mpsc, oneshot};

/// Messages queued per session before [`Sessions::install_templates`] reports it busy.
pub(crate) const SESSION_QUEUE: usize = 64;

/// Why templates could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The peer has no live session.
    #[error("peer {0} is not connected")]
    NotConnected(u32),
    /// The session's queue is full.
    #[error("peer {0} is not keeping up")]
    Busy(u32),
    /// The session ended before the peer acknowledged.
    #[error("peer {0} disconnected before acknowledging the templates")]
    Disconnected(u32),
    /// No acknowledgement in time.
    #[error("peer {0} did not acknowledge the templates in time")]
    Timeout(u32),
}

struct Session {
    id: u64,
    source: SocketAddr,
    tx: mpsc::Sender<CentralMessage>,
}

#[derive(Default)]
struct Inner {
    by_peer: HashMap<u32, Session>,
    next_id: u64,
    /// Request id → (session id, waiter).
    pending: HashMap<u64, (u64, oneshot::Sender<()>)>,
}

/// Shared handle on the live sessions (cheap to clone).
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<Inner>>,
}

/// A session's registration; dropping it removes the session if it is still the current one.
pub(crate) struct Attached {
    sessions: Sessions,
    peer_id: u32,
    id: u64,
}

impl Attached {
    /// The peer this session belongs to.
    pub(crate) fn peer_id(&self) -> u32 {
        self.peer_id
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut inner = self.sessions.lock();
        if inner
            .by_peer
            .get(&self.peer_id)
            .is_some_and(|s| s.id == self.id)
        {
            inner.by_peer.remove(&self.peer_id);
        }
        // Waiters on this session learn at once that no acknowledgement will come.
        inner.pending.retain(|_, (session, _)| *session != self.id);
    }
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes this session the peer's current one. A previous session of the same peer loses its
    /// queue and ends.
    pub(crate) fn attach(
        &self,
        peer_id: u32,
        source: SocketAddr,
    ) -> (Attached, mpsc::Receiver<CentralMessage>) {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.by_peer.insert(peer_id, Session { id, source, tx });
        let attached = Attached {
            sessions: self.clone(),
            peer_id,
            id,
        };
        (attached, rx)
    }

    /// The peer acknowledged `request_id`.
    pub(crate) fn acknowledge(&self, request_id: u64) {
        if let Some((_, done)) = self.lock().pending.remove(&request_id) {
            // The waiter may have timed out already.
            let _ = done.send(());
        }
    }

    /// Peers with a live session, with the session's source address.
    pub fn connected(&self) -> Vec<(u32, SocketAddr)> {
        let mut peers: Vec<_> = self
            .lock()
            .by_peer
            .iter()
            .map(|(id, s)| (*id, s.source))
            .collect();
        peers.sort_unstable();
        peers
    }

    /// Sends templates to a peer and waits until it has installed them.
    pub async fn install_templates(
        &self,
        peer_id: u32,
        templates: Vec<Templates>,
        timeout: Duration,
    ) -> Result<(), InstallError> {
        let (done_tx, done_rx) = oneshot::channel();
        let (request_id, tx) = {
            let mut inner = self.lock();
            let (session, tx) = inner
                .by_peer
                .get(&peer_id)
                .map(|s| (s.id, s.tx.clone()))
                .ok_or(InstallError::NotConnected(peer_id))?;
            inner.next_id += 1;
            let request_id = inner.next_id;
            inner.pending.insert(request_id, (session, done_tx));
            (request_id, tx)
        };
        let result = match tx.try_send(CentralMessage::InstallTemplates {
            request_id,
            templates,
        }) {
            Err(mpsc::error::TrySendError::Full(_)) => Err(InstallError::Busy(peer_id)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(InstallError::Disconnected(peer_id)),
            Ok(()) => match tokio::time::timeout(timeout, done_rx).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(InstallError::Disconnected(peer_id)),
                Err(_) => Err(InstallError::Timeout(peer_id)),
            },
        };
        self.lock().pending.remove(&request_id);
        result
    }
}
