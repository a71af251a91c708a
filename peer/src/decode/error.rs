//! [`DecodeError`]: why a datagram (or part of one) could not be decoded.

use thiserror::Error;

use crate::record::Protocol;

/// Which check a malformed datagram failed. One counter each in [`ErrorCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    UnknownVersion,
    Truncated,
    BadLength,
    BadTemplate,
}

/// A datagram (or part of one) that could not be decoded. Records decoded before the error are
/// still appended to the output; the error is counted in [`DecodeStats::errors`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Not NetFlow v5/v9, IPFIX or sFlow v5.
    #[error("unknown flow protocol version {version}")]
    UnknownVersion { version: u32 },
    /// The datagram ends inside a header, set or record.
    #[error("{protocol}: truncated {what} at byte {offset}")]
    Truncated {
        protocol: Protocol,
        what: &'static str,
        offset: usize,
    },
    /// A length field disagrees with the datagram.
    #[error("{protocol}: bad {what} length {length} at byte {offset}")]
    BadLength {
        protocol: Protocol,
        what: &'static str,
        length: usize,
        offset: usize,
    },
    /// A data record cut short inside its set (records before it were decoded).
    #[error(
        "{protocol} observation domain {domain} template {template_id}: data record cut short at byte {offset}"
    )]
    ShortRecord {
        protocol: Protocol,
        domain: u32,
        template_id: u16,
        offset: usize,
    },
    /// A template (or template snapshot) that cannot be used.
    #[error("{protocol} observation domain {domain} template {template_id}: {reason}")]
    BadTemplate {
        protocol: Protocol,
        domain: u32,
        template_id: u16,
        reason: &'static str,
    },
}

impl DecodeError {
    /// The counter this error increments.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DecodeError::UnknownVersion { .. } => ErrorKind::UnknownVersion,
            DecodeError::Truncated { .. } | DecodeError::ShortRecord { .. } => ErrorKind::Truncated,
            DecodeError::BadLength { .. } => ErrorKind::BadLength,
            DecodeError::BadTemplate { .. } => ErrorKind::BadTemplate,
        }
    }
}
