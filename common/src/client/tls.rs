//! TLS 1.3 client side of the control channel: certificate pinning and connecting.
//!
//! Central's certificate is usually self-signed, so clients pin it instead of trusting a public
//! CA: either by its SHA-256 fingerprint (`sha256:…`, printed by `sluice-central` on start and
//! shown by `sluicectl status`) or by a PEM file (`ca_cert`). A PEM file that contains Central's
//! own certificate pins it exactly; any other certificate in it is used as a CA, with the usual
//! host name check.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::sync::Arc;
use std::vec::Vec;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// `sha256:<hex>` of a DER certificate: the fingerprint Central prints and clients pin.
pub fn fingerprint(der: &[u8]) -> String {
    std::format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// `sha256:<hex>` of an access token: what Central stores, and what a peer shows so an operator
/// can check it has the right token without revealing it.
pub fn token_hash(token: &str) -> String {
    std::format!(
        "sha256:{}",
        hex::encode(Sha256::digest(token.trim().as_bytes()))
    )
}

/// The crypto provider of every control-channel endpoint (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a client recognises Central.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    /// `sha256:<64 hex digits>` of Central's certificate.
    Fingerprint(String),
    /// PEM file with Central's certificate or the CA that signed it.
    CaCert(PathBuf),
}

impl Pin {
    /// Parses a fingerprint as printed by Central (`sha256:` prefix optional, colons allowed).
    pub fn fingerprint(text: &str) -> Result<Self, TlsError> {
        let hex_digits: String = text
            .trim()
            .trim_start_matches("sha256:")
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        if hex_digits.len() != 64 || !hex_digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TlsError::BadFingerprint(text.into()));
        }
        Ok(Pin::Fingerprint(std::format!("sha256:{hex_digits}")))
    }
}

/// Errors setting up or making a TLS connection.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The fingerprint is not `sha256:` and 64 hex digits.
    #[error("bad certificate fingerprint {0:?}: expected sha256:<64 hex digits>")]
    BadFingerprint(String),
    /// The pinned certificate file cannot be used.
    #[error("cannot read pinned certificate {path}: {reason}")]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL is not `https://host:port` (or `host:port`).
    #[error("bad Central URL {0:?}: expected https://HOST:PORT")]
    BadUrl(String),
    /// TCP connect failed.
    #[error("cannot reach Central at {addr}: {source}")]
    Unreachable {
        /// host:port.
        addr: String,
        /// Cause.
        source: io::Error,
    },
    /// Central's certificate is not the pinned one.
    #[error("certificate mismatch at {addr}: {detail}")]
    CertificateMismatch {
        /// host:port.
        addr: String,
        /// What the verifier saw.
        detail: String,
    },
    /// Any other handshake failure.
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        /// host:port.
        addr: String,
        /// Cause.
        source: io::Error,
    },
}

/// Where Central is: `https://host:port`, `host:port` or `[v6]:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address literal (no brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Default control API port.
    pub const DEFAULT_PORT: u16 = 8443;

    /// Parses a Central URL.
    pub fn parse(url: &str) -> Result<Self, TlsError> {
        let bad = || TlsError::BadUrl(url.into());
        let rest = url.strip_prefix("https://").unwrap_or(url);
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => Self::DEFAULT_PORT,
        };
        Ok(Endpoint {
            host: host.into(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A TLS 1.3 connector that only accepts the pinned Central.
#[derive(Clone)]
pub struct Connector {
    connector: TlsConnector,
}

impl Connector {
    /// Builds a connector for `pin`, offering `alpn`.
    pub fn new(pin: &Pin, alpn: &[u8]) -> Result<Self, TlsError> {
        let provider = provider();
        let verifier = PinnedVerifier::new(pin, provider.clone())?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::CaCert {
                path: PathBuf::new(),
                reason: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = std::vec![alpn.to_vec()];
        Ok(Connector {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Connects to Central and completes the handshake.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<TlsStream<TcpStream>, TlsError> {
        let addr = endpoint.to_string();
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|source| TlsError::Unreachable {
                addr: addr.clone(),
                source,
            })?;
        // Best effort: small frames should not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(endpoint.host.clone())
            .map_err(|_| TlsError::BadUrl(endpoint.host.clone()))?;
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|source| classify(addr, source))
    }
}

fn classify(addr: String, source: io::Error) -> TlsError {
    match source
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(detail)) => TlsError::CertificateMismatch {
            addr,
            detail: detail.to_string(),
        },
        _ => TlsError::Handshake { addr, source },
    }
}

/// Why the presented certificate is not the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("Central presented {seen}, expected the pinned {expected}")]
struct PinMismatch {
    seen: String,
    expected: String,
}

enum Trust {
    Fingerprint(String),
    CaFile {
        exact: Vec<CertificateDer<'static>>,
        webpki: Arc<rustls::client::WebPkiServerVerifier>,
    },
}

struct PinnedVerifier {
    trust: Trust,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PinnedVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinnedVerifier")
    }
}

impl PinnedVerifier {
    fn new(pin: &Pin, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let algorithms = provider.signature_verification_algorithms;
        let trust = match pin {
            Pin::Fingerprint(fp) => Trust::Fingerprint(fp.clone()),
            Pin::CaCert(path) => {
                let exact = read_certs(path)?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in &exact {
                    roots.add(cert.clone()).map_err(|e| ca_error(path, e))?;
                }
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| ca_error(path, e))?;
                Trust::CaFile { exact, webpki }
            }
        };
        Ok(PinnedVerifier { trust, algorithms })
    }
}

fn ca_error(path: &Path, e: impl fmt::Display) -> TlsError {
    TlsError::CaCert {
        path: path.into(),
        reason: e.to_string(),
    }
}

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ca_error(path, e))?;
    if certs.is_empty() {
        return Err(ca_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn mismatch(seen: String, expected: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(PinMismatch { seen, expected }),
    )))
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            Trust::Fingerprint(expected) => {
                let seen = fingerprint(end_entity);
                if &seen == expected {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(mismatch(seen, expected.clone()))
                }
            }
            Trust::CaFile { exact, webpki } => {
                if exact.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
                    return Ok(ServerCertVerified::assertion());
                }
                webpki
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                    .map_err(|e| {
                        mismatch(
                            std::format!("certificate {} ({e})", fingerprint(end_entity)),
                            "certificate or a certificate signed by the CA file".to_string(),
                        )
                    })
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("https://198.18.0.1:8443").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("198.18.0.1", 8443));
        let e = Endpoint::parse("[::1]:9000").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        assert_eq!(e.to_string(), "[::1]:9000");
        let e = Endpoint::parse("https://central.example/").unwrap();
        assert_eq!(e.port, Endpoint::DEFAULT_PORT);
        assert!(Endpoint::parse("https://:80").is_err());
        assert!(Endpoint::parse("host:notaport").is_err());
    }

    #[test]
    fn fingerprints_parse_in_both_spellings() {
        let hex = "ab".repeat(32);
        let colons = hex
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        let expected = Pin::Fingerprint(std::format!("sha256:{hex}"));
        assert_eq!(Pin::fingerprint(&hex).unwrap(), expected);
        assert_eq!(Pin::fingerprint(&colons).unwrap(), expected);
        assert!(Pin::fingerprint("sha256:abc").is_err());
    }

    #[test]
    fn token_hash_ignores_surrounding_whitespace() {
        assert_eq!(token_hash("abc\n"), token_hash("abc"));
        assert!(token_hash("abc").starts_with("sha256:"));
    }
}
