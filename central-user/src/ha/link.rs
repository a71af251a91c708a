//! The HA link: messages between the two Centrals of a pair, their framing, and how each end
//! proves it holds the HA credential.
//!
//! The link runs over the control API's TLS listener with its own ALPN (`sluice-ha/1`). Each
//! end sends [`HaMessage::Hello`] first, carrying an HMAC-SHA256, keyed with the shared
//! credential, over this TLS session's exported keying material (RFC 8446 §7.5) and the
//! sender's side. The proof is bound to the session: a relay in the middle, or an end without
//! the credential, cannot produce it, so both ends are authenticated whatever certificate they
//! present. Frames are the control protocol's (4-byte length, bincode, at most 1 MiB); a mirror
//! body larger than a frame travels in chunks and is applied only once it is whole.

use std::path::Path;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::role::Role;

/// Bytes of exported keying material the proof covers.
const EKM_LEN: usize = 32;
const EKM_LABEL: &[u8] = b"EXPORTER-sluice-ha";
/// Mirror bytes per chunk (well below the 1 MiB frame limit).
pub const CHUNK: usize = 512 * 1024;
/// A whole mirror may not exceed this (the standby refuses larger ones).
pub const MAX_MIRROR: usize = 256 * 1024 * 1024;

/// One message on the HA link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HaMessage {
    /// First message of each end.
    Hello {
        /// The sender's `ha.node`.
        node: String,
        /// [`proof`] of the sender's side.
        proof: Vec<u8>,
    },
    /// Every heartbeat interval, both ways.
    Beat(Beat),
    /// Part `index` of `total` of mirror `seq` (JSON of `mirror::Mirror`), active → standby.
    Chunk {
        /// The sender's epoch.
        epoch: u64,
        /// Mirror sequence number (per link, from 1).
        seq: u64,
        /// The first mirror of this link (a full snapshot; every mirror is whole state).
        snapshot: bool,
        /// Chunk index.
        index: u32,
        /// Chunk count.
        total: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The standby applied mirror `seq`.
    Applied {
        /// Its sequence number.
        seq: u64,
    },
    /// Active → standby: take over now (`sluicectl ha switchover`, or a preempting standby).
    Handover {
        /// The active's epoch.
        epoch: u64,
    },
    /// Standby → active: a preempting standby asks for [`HaMessage::Handover`].
    RequestHandover,
}

/// A heartbeat: who the sender is now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// Role.
    pub role: Role,
    /// Epoch.
    pub epoch: u64,
    /// Priority.
    pub priority: u8,
    /// Standby: has applied a full snapshot.
    pub synced: bool,
    /// Active: milliseconds from sending the last mirror to the standby's acknowledgement.
    pub mirror_lag_ms: Option<u64>,
}

/// Which end of a TLS connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Connected out.
    Client,
    /// Accepted.
    Server,
}

/// The HA credential.
#[derive(Clone)]
pub struct Credential(Vec<u8>);

impl std::fmt::Debug for Credential {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
}

/// Why the credential cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Unreadable file.
    #[error("ha.credential_file: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Too short to be a secret.
    #[error("ha.credential_file: {path} holds {len} bytes; at least 16 are needed")]
    Short {
        /// The file.
        path: String,
        /// Its length without surrounding whitespace.
        len: usize,
    },
}

impl Credential {
    /// Reads the file (surrounding whitespace is ignored).
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let text = std::fs::read(path).map_err(|source| CredentialError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let trimmed = text.trim_ascii().to_vec();
        if trimmed.len() < 16 {
            return Err(CredentialError::Short {
                path: path.display().to_string(),
                len: trimmed.len(),
            });
        }
        Ok(Credential(trimmed))
    }

    /// A credential from bytes (tests).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Credential(bytes.to_vec())
    }

    fn mac(&self, side: Side, node: &str, ekm: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"sluice-ha/1\0");
        mac.update(match side {
            Side::Client => b"client\0",
            Side::Server => b"server\0",
        });
        mac.update(node.as_bytes());
        mac.update(b"\0");
        mac.update(ekm);
        mac
    }

    /// The proof `side` sends, naming itself `node`, on the session with keying material `ekm`.
    pub fn proof(&self, side: Side, node: &str, ekm: &[u8]) -> Vec<u8> {
        self.mac(side, node, ekm).finalize().into_bytes().to_vec()
    }

    /// Checks the other end's proof in constant time.
    pub fn verify(&self, side: Side, node: &str, ekm: &[u8], proof: &[u8]) -> bool {
        self.mac(side, node, ekm).verify_slice(proof).is_ok()
    }
}

/// This TLS session's keying material for the proof (either end computes the same bytes).
pub fn keying_material<D>(conn: &rustls::ConnectionCommon<D>) -> Result<Vec<u8>, rustls::Error> {
    conn.export_keying_material(vec![0u8; EKM_LEN], EKM_LABEL, None)
}

/// The client configuration of the link: any server certificate is accepted at the TLS layer
/// (the handshake signature is still checked), because the ends authenticate each other with
/// [`Credential::proof`] over the session's keying material instead of a certificate pin: the
/// pair shares one secret rather than exchanging certificates that are generated on first start.
pub fn client_config() -> Result<std::sync::Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = sluice_common::client::provider();
    let verifier = ProofVerified {
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![sluice_common::protocol::ALPN_HA.to_vec()];
    Ok(std::sync::Arc::new(config))
}

/// See [`client_config`].
#[derive(Debug)]
struct ProofVerified {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for ProofVerified {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Splits a mirror body into [`HaMessage::Chunk`]s.
pub fn chunks(epoch: u64, seq: u64, snapshot: bool, body: &[u8]) -> Vec<HaMessage> {
    let parts: Vec<&[u8]> = if body.is_empty() {
        vec![&[][..]]
    } else {
        body.chunks(CHUNK).collect()
    };
    let total = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, data)| HaMessage::Chunk {
            epoch,
            seq,
            snapshot,
            index: u32::try_from(i).unwrap_or(u32::MAX),
            total,
            data: data.to_vec(),
        })
        .collect()
}

/// Why chunks do not make a mirror.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Out of order, a sequence change mid-way, or an impossible count.
    #[error("mirror chunk {index}/{total} of seq {seq} out of order")]
    OutOfOrder {
        /// Sequence number.
        seq: u64,
        /// Index received.
        index: u32,
        /// Count announced.
        total: u32,
    },
    /// Too large.
    #[error("mirror larger than {MAX_MIRROR} bytes")]
    TooLarge,
}

/// Reassembles chunks; a mirror is handed out only when whole, so a link that breaks
/// mid-mirror leaves the standby's state as it was.
#[derive(Debug, Default)]
pub struct Assembler {
    seq: u64,
    next: u32,
    buf: Vec<u8>,
}

impl Assembler {
    /// Takes one chunk; returns the whole body after the last one.
    pub fn push(
        &mut self,
        seq: u64,
        index: u32,
        total: u32,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, ChunkError> {
        let bad = ChunkError::OutOfOrder { seq, index, total };
        if total == 0 || index >= total {
            return Err(bad);
        }
        if index == 0 {
            self.seq = seq;
            self.next = 0;
            self.buf.clear();
        }
        if seq != self.seq || index != self.next {
            return Err(bad);
        }
        if self.buf.len() + data.len() > MAX_MIRROR {
            return Err(ChunkError::TooLarge);
        }
        self.buf.extend_from_slice(data);
        self.next += 1;
        if self.next == total {
            self.next = 0;
            return Ok(Some(std::mem::take(&mut self.buf)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_are_bound_to_the_side_the_node_and_the_session() {
        let c = Credential::from_bytes(b"0123456789abcdef");
        let ekm = [7u8; 32];
        let p = c.proof(Side::Client, "a", &ekm);
        assert!(c.verify(Side::Client, "a", &ekm, &p));
        assert!(!c.verify(Side::Server, "a", &ekm, &p), "a reflected proof");
        assert!(!c.verify(Side::Client, "b", &ekm, &p), "another name");
        assert!(
            !c.verify(Side::Client, "a", &[8u8; 32], &p),
            "another session"
        );
        let other = Credential::from_bytes(b"0123456789abcdeX");
        assert!(
            !other.verify(Side::Client, "a", &ekm, &p),
            "another credential"
        );
        assert!(!c.verify(Side::Client, "a", &ekm, &p[..31]), "truncated");
    }

    #[test]
    fn short_or_missing_credentials_are_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha.key");
        std::fs::write(&path, "short\n").unwrap();
        let e = Credential::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with("ha.credential_file") && e.contains("5 bytes"),
            "{e}"
        );
        let e = Credential::load(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ha.credential_file: cannot read"), "{e}");
        std::fs::write(&path, "  0123456789abcdef0123\n").unwrap();
        assert!(Credential::load(&path).is_ok());
    }

    #[test]
    fn mirrors_are_reassembled_only_when_whole_and_in_order() {
        let body: Vec<u8> = (0..(CHUNK * 2 + 10)).map(|i| i as u8).collect();
        let parts = chunks(3, 9, true, &body);
        assert_eq!(parts.len(), 3);
        let mut a = Assembler::default();
        let mut out = None;
        for p in &parts {
            let HaMessage::Chunk {
                seq,
                index,
                total,
                data,
                ..
            } = p
            else {
                unreachable!()
            };
            assert!(out.is_none());
            out = a.push(*seq, *index, *total, data).unwrap();
        }
        assert_eq!(out.unwrap(), body);

        // A stream that breaks after the first chunk hands nothing out; the next mirror starts
        // clean; a skipped chunk is an error, never a wrong mirror.
        let mut a = Assembler::default();
        assert_eq!(a.push(1, 0, 3, b"x").unwrap(), None);
        assert_eq!(a.push(2, 0, 1, b"y").unwrap(), Some(b"y".to_vec()));
        assert!(a.push(3, 1, 3, b"z").is_err());
        assert!(a.push(4, 0, 0, b"z").is_err());
        assert!(a.push(4, 5, 3, b"z").is_err());
        // An empty mirror is one empty chunk.
        assert_eq!(chunks(1, 1, false, b"").len(), 1);
    }

    #[test]
    fn messages_survive_the_frame_codec_and_garbage_is_an_error() {
        use sluice_common::protocol::{FRAME_HEADER, check_frame, decode_payload, encode_frame};
        let msg = HaMessage::Beat(Beat {
            role: Role::Active,
            epoch: 4,
            priority: 200,
            synced: true,
            mirror_lag_ms: Some(3),
        });
        let mut buf = Vec::new();
        encode_frame(&msg, &mut buf).unwrap();
        let len = check_frame(&buf).unwrap();
        assert_eq!(len, buf.len());
        let back: HaMessage = decode_payload(&buf[FRAME_HEADER..len]).unwrap();
        assert_eq!(back, msg);
        assert!(decode_payload::<HaMessage>(&[0xff, 0xff, 0xff]).is_err());
        assert!(
            check_frame(&buf[..5]).is_err(),
            "a truncated frame is not whole"
        );
        // Every chunk of the largest mirror chunk fits a frame.
        let mut big = Vec::new();
        encode_frame(&chunks(1, 1, true, &vec![0u8; CHUNK])[0], &mut big).unwrap();
    }
}
