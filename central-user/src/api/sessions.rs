//! Registry of live peer sessions, so Central can reach a peer: the controller's template
//! installations ([`crate::controller::InstallRequest`]) go out through it. The peer's
//! acknowledgement comes back through [`super::ControlPlane::templates_installed`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_common::protocol::CentralMessage;
use tokio::sync::mpsc;

/// Messages queued per session; a peer that does not read them is "busy".
const SESSION_QUEUE: usize = 64;

/// Why a message could not be queued for a peer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer has no live session.
    #[error("peer {0} is not connected")]
    NotConnected(u32),
    /// The session's queue is full.
    #[error("peer {0} is not keeping up with its session queue")]
    Busy(u32),
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

    /// Ends every session (this Central just became the standby: peers reconnect to the
    /// virtual IP, which the new active holds). Ended this way, a session is not a lost peer.
    pub fn close_all(&self) -> usize {
        let mut inner = self.lock();
        let n = inner.by_peer.len();
        inner.by_peer.clear();
        n
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

    /// Queues a message for a peer without waiting.
    pub fn send(&self, peer_id: u32, msg: CentralMessage) -> Result<(), SendError> {
        let inner = self.lock();
        let session = inner
            .by_peer
            .get(&peer_id)
            .ok_or(SendError::NotConnected(peer_id))?;
        session.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Busy(peer_id),
            mpsc::error::TrySendError::Closed(_) => SendError::NotConnected(peer_id),
        })
    }
}
