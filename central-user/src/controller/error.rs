//! Errors of controller operations (the API maps each variant to an error class).

use std::net::{IpAddr, SocketAddr};

use super::dataplane::DataPlaneError;
use super::model::Cidr;

/// A controller operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// No pool of that name.
    #[error("unknown pool {0:?}")]
    UnknownPool(String),
    /// No peer of that name.
    #[error("unknown peer {0:?}")]
    UnknownPeer(String),
    /// No exporter with that address.
    #[error("unknown exporter {0}")]
    UnknownExporter(IpAddr),
    /// No listener on that address and port.
    #[error("unknown listener {0}")]
    UnknownListener(SocketAddr),
    /// No source group with that network.
    #[error("unknown source group {0}")]
    UnknownSourceGroup(Cidr),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A field out of range or malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// The problem.
        reason: String,
    },
    /// Writing the maps failed.
    #[error("data plane: {0}")]
    DataPlane(#[from] DataPlaneError),
}
