//! Central's TLS identity: a configured certificate, or a self-signed one generated into the
//! state dir on first start (`cert.pem`, `key.pem` with mode 0600) and reused afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use sluice_common::client::{fingerprint, provider, read_certs};
use sluice_common::protocol::{ALPN_HA, ALPN_HTTP, ALPN_PEER};
use tracing::info;

use crate::atomic_file;

/// Certificate file name in the state dir.
pub const CERT_FILE: &str = "cert.pem";
/// Private key file name in the state dir.
pub const KEY_FILE: &str = "key.pem";

/// Errors loading or creating the identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file cannot be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Only one of certificate and key exists in the state dir.
    #[error(
        "{present} exists but {missing} does not: restore it or remove both to generate a new certificate"
    )]
    HalfPair {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The certificate and key do not make a valid TLS configuration.
    #[error("invalid certificate or key: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where the certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// `cert.pem`/`key.pem` in this state dir, generated if absent. The extra names (DNS names or
    /// addresses) are added to `localhost`, `127.0.0.1`, `::1` and the host name when generating.
    StateDir {
        /// The state dir.
        dir: PathBuf,
        /// Extra subject alternative names.
        extra_names: Vec<String>,
    },
    /// Operator-provided PEM files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
}

/// Central's TLS server configuration and what clients pin.
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    /// TLS 1.3 only, ALPN for the peer channel and HTTP.
    pub config: Arc<ServerConfig>,
    /// `sha256:<hex>` of the leaf certificate.
    pub fingerprint: String,
    /// The certificate file (what peers use as `ca_cert`).
    pub cert_path: PathBuf,
}

/// The identity the API serves with, replaceable while it runs (a hot standby takes over the
/// active's certificate so peers' pins stay valid after a takeover).
#[derive(Debug)]
pub struct IdentityCell(std::sync::RwLock<TlsIdentity>);

impl IdentityCell {
    /// A cell holding `identity`.
    pub fn new(identity: TlsIdentity) -> Self {
        IdentityCell(std::sync::RwLock::new(identity))
    }

    /// The current identity.
    pub fn get(&self) -> TlsIdentity {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Serves new connections with `identity`.
    pub fn set(&self, identity: TlsIdentity) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = identity;
    }
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> IdentityError {
    IdentityError::File {
        path: path.into(),
        reason: e.to_string(),
    }
}

impl TlsIdentity {
    /// Loads (or first generates) the identity.
    pub fn load(source: &CertSource) -> Result<Self, IdentityError> {
        let (cert, key) = match source {
            CertSource::Files { cert, key } => (cert.clone(), key.clone()),
            CertSource::StateDir { dir, extra_names } => {
                let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
                match (cert.exists(), key.exists()) {
                    (true, true) => {}
                    (false, false) => generate(dir, &cert, &key, extra_names)?,
                    (true, false) => {
                        return Err(IdentityError::HalfPair {
                            present: cert,
                            missing: key,
                        });
                    }
                    (false, true) => {
                        return Err(IdentityError::HalfPair {
                            present: key,
                            missing: cert,
                        });
                    }
                }
                (cert, key)
            }
        };
        let chain = read_certs(&cert).map_err(|e| file_error(&cert, e))?;
        let private = PrivateKeyDer::from_pem_file(&key).map_err(|e| file_error(&key, e))?;
        let fingerprint = fingerprint(&chain[0]);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(chain, private)?;
        config.alpn_protocols = vec![ALPN_PEER.to_vec(), ALPN_HA.to_vec(), ALPN_HTTP.to_vec()];
        Ok(TlsIdentity {
            config: Arc::new(config),
            fingerprint,
            cert_path: cert,
        })
    }
}

fn generate(
    dir: &Path,
    cert: &Path,
    key: &Path,
    extra_names: &[String],
) -> Result<(), IdentityError> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(host.trim().into());
    }
    names.extend(extra_names.iter().cloned());
    names.retain(|n| !n.is_empty());
    names.sort();
    names.dedup();
    let mut params = rcgen::CertificateParams::new(names.clone())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sluice-central");
    let key_pair = rcgen::KeyPair::generate()?;
    let certificate = params.self_signed(&key_pair)?;
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    atomic_file::write(key, key_pair.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| file_error(key, e))?;
    atomic_file::write(cert, certificate.pem().as_bytes(), 0o644)
        .map_err(|e| file_error(cert, e))?;
    info!(cert = %cert.display(), names = ?names, "generated a self-signed control API certificate");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let source = CertSource::StateDir {
            dir: dir.path().into(),
            extra_names: vec!["198.18.0.1".into()],
        };
        let first = TlsIdentity::load(&source).unwrap();
        let second = TlsIdentity::load(&source).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        assert!(first.fingerprint.starts_with("sha256:"));
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        assert!(matches!(
            TlsIdentity::load(&source),
            Err(IdentityError::HalfPair { .. })
        ));
    }
}
