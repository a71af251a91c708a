//! What the active sends its standby, and how the standby applies it: the whole controller
//! model (pools, peers with their identities, weights, pins, assignments, listeners, source
//! groups, balancer settings), the template store, the token hashes (rotations and their
//! grace included) and the control API's certificate and key (so peers' pins stay valid after
//! a takeover). Every mirror is whole: applying one never depends on an earlier one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::api::tls::{CERT_FILE, KEY_FILE};
use crate::atomic_file;
use crate::auth::TOKENS_FILE;
use crate::controller::{Controller, ControllerError, ControllerState, DataPlane, TemplateStore};

/// The control API's certificate and key (PEM), when Central generated them in its state dir.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `cert.pem`.
    pub cert: String,
    /// `key.pem`.
    pub key: String,
}

/// One mirror.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mirror {
    /// The controller's model.
    pub controller: ControllerState,
    /// Templates and options data per (exporter, domain, reporting peer).
    pub templates: TemplateStore,
    /// `tokens.json` (hashes only), if there is one.
    pub tokens: Option<String>,
    /// The control API identity, if generated in the state dir.
    pub identity: Option<Identity>,
}

/// Where the mirrored files live on this node.
#[derive(Clone, Debug)]
pub struct Files {
    /// The state dir (`tokens.json`).
    pub state_dir: PathBuf,
    /// The dir of a generated identity (`cert.pem`, `key.pem`); `None` when the operator
    /// configured certificate files (then both nodes carry the same files themselves).
    pub identity_dir: Option<PathBuf>,
}

/// Why a mirror was not applied (the standby's state is then as it was).
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// Not a mirror.
    #[error("mirror does not parse: {0}")]
    Parse(#[from] serde_json::Error),
    /// The model does not load.
    #[error("mirror refused: {0}")]
    Controller(#[from] ControllerError),
    /// A file could not be read or written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn read_optional(path: &Path) -> Result<Option<String>, MirrorError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MirrorError::Io {
            op: "read",
            path: path.into(),
            source,
        }),
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), MirrorError> {
    if read_optional(path)?.as_deref() == Some(text) {
        return Ok(());
    }
    atomic_file::write(path, text.as_bytes(), mode).map_err(|source| MirrorError::Io {
        op: "write",
        path: path.into(),
        source,
    })
}

impl Mirror {
    /// The active's current state.
    pub fn collect<D: DataPlane>(c: &Controller<D>, files: &Files) -> Result<Self, MirrorError> {
        let identity = match &files.identity_dir {
            Some(dir) => match (
                read_optional(&dir.join(CERT_FILE))?,
                read_optional(&dir.join(KEY_FILE))?,
            ) {
                (Some(cert), Some(key)) => Some(Identity { cert, key }),
                _ => None,
            },
            None => None,
        };
        Ok(Mirror {
            controller: c.snapshot(),
            templates: c.template_store(),
            tokens: read_optional(&files.state_dir.join(TOKENS_FILE))?,
            identity,
        })
    }

    /// The JSON body sent on the link.
    pub fn to_bytes(&self) -> Result<Vec<u8>, MirrorError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Parses a body received on the link.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MirrorError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Applies the mirror on the standby: the model first (refused whole if it does not load),
    /// then the token hashes and the identity files. Returns whether the identity changed
    /// (the API must then load it).
    pub fn apply<D: DataPlane>(
        self,
        c: &mut Controller<D>,
        files: &Files,
        now: Instant,
    ) -> Result<bool, MirrorError> {
        c.apply_mirror(self.controller, now)?;
        c.set_template_store(self.templates);
        if let Some(tokens) = &self.tokens {
            write(&files.state_dir.join(TOKENS_FILE), tokens, 0o600)?;
        }
        let mut identity_changed = false;
        if let (Some(id), Some(dir)) = (&self.identity, &files.identity_dir) {
            let before = read_optional(&dir.join(CERT_FILE))?;
            // The key first: a certificate never stands beside another certificate's key for
            // longer than one write.
            write(&dir.join(KEY_FILE), &id.key, 0o600)?;
            write(&dir.join(CERT_FILE), &id.cert, 0o644)?;
            identity_changed = before.as_deref() != Some(id.cert.as_str());
        }
        Ok(identity_changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{BalancerConfig, MemoryDataPlane};
    use sluice_common::protocol::Templates;

    fn files(dir: &Path) -> Files {
        Files {
            state_dir: dir.into(),
            identity_dir: Some(dir.into()),
        }
    }

    #[test]
    fn a_mirror_carries_the_model_templates_tokens_and_identity() {
        let now = Instant::now();
        let (active_dir, standby_dir) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut a, _) =
            Controller::new(MemoryDataPlane::new(), BalancerConfig::default(), now).unwrap();
        a.create_pool("edge").unwrap();
        a.set_listener("198.18.0.1:2055".parse().unwrap(), "edge")
            .unwrap();
        let reg = sluice_common::protocol::Register {
            token: String::new(),
            name: "p".into(),
            uuid: uuid::Uuid::from_u128(7),
            version: "t".into(),
            data_addr: "198.18.2.2".parse().unwrap(),
            ports: vec![2055],
            weight: 1,
            pool: Some("edge".into()),
            epoch_seen: 0,
        };
        a.register_peer(&reg, now).unwrap();
        a.report_templates(
            "p",
            Templates {
                exporter: "198.18.0.10".parse().unwrap(),
                observation_domain: 3,
                bytes: b"[]".to_vec(),
            },
        )
        .unwrap();
        std::fs::write(active_dir.path().join(TOKENS_FILE), "{\"tokens\":[]}").unwrap();
        std::fs::write(active_dir.path().join(CERT_FILE), "CERT").unwrap();
        std::fs::write(active_dir.path().join(KEY_FILE), "KEY").unwrap();

        let m = Mirror::collect(&a, &files(active_dir.path())).unwrap();
        let bytes = m.to_bytes().unwrap();
        let (mut b, _) =
            Controller::new(MemoryDataPlane::new(), BalancerConfig::default(), now).unwrap();
        b.set_listener("198.18.0.9:2055".parse().unwrap(), "default")
            .unwrap();
        let changed = Mirror::from_bytes(&bytes)
            .unwrap()
            .apply(&mut b, &files(standby_dir.path()), now)
            .unwrap();
        assert!(changed);
        assert_eq!(b.snapshot(), a.snapshot());
        assert_eq!(b.template_store(), a.template_store());
        assert_eq!(
            b.data_plane().listener("198.18.0.9:2055".parse().unwrap()),
            None,
            "a listener the active does not have is gone from the standby's maps"
        );
        assert_eq!(
            b.data_plane().listener("198.18.0.1:2055".parse().unwrap()),
            Some(1)
        );
        let read = |f: &str| std::fs::read_to_string(standby_dir.path().join(f)).unwrap();
        assert_eq!(
            (read(TOKENS_FILE), read(CERT_FILE), read(KEY_FILE)),
            ("{\"tokens\":[]}".into(), "CERT".into(), "KEY".into())
        );
        // The same identity again is no change.
        let again = Mirror::from_bytes(&bytes)
            .unwrap()
            .apply(&mut b, &files(standby_dir.path()), now)
            .unwrap();
        assert!(!again);
    }

    #[test]
    fn a_bad_mirror_leaves_the_standby_as_it_was() {
        let now = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _) =
            Controller::new(MemoryDataPlane::new(), BalancerConfig::default(), now).unwrap();
        b.create_pool("kept").unwrap();
        let before = b.snapshot();
        assert!(Mirror::from_bytes(b"{\"controller\":").is_err());
        let mut m = Mirror::collect(&b, &files(dir.path())).unwrap();
        // Two pools with one id: does not load.
        m.controller.pools.push(m.controller.pools[0].clone());
        assert!(m.apply(&mut b, &files(dir.path()), now).is_err());
        assert_eq!(b.snapshot(), before);
    }
}
