//! Client side of the control channel (feature `client`): TLS with certificate pinning, the
//! framed peer-channel connection, and [`PeerClient`], which `sluice-peer` runs in peer mode.

mod conn;
mod peer;
mod tls;

pub use conn::{ConnError, Connection};
pub use peer::{PeerClient, PeerClientConfig, PeerHandle, PeerHooks, SessionError};
pub use tls::{Connector, Endpoint, Pin, TlsError, fingerprint, provider, read_certs, token_hash};
