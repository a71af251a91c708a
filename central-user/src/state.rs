//! Persistent state in the state dir: `state.json`, with the previous good copy kept as
//! `state.json.prev`.
//!
//! The file is one JSON document: `{"version": 1, "sha256": "<hex>", "body": {...}}`, where the
//! checksum covers the exact bytes of `body`. Writes are crash-safe (temporary file, fsync,
//! rename, fsync of the directory, see [`crate::atomic_file`]); before each write the current
//! file is verified and hard-linked to `state.json.prev`. A file that fails to parse or verify
//! is reported with its path and left alone, as is `state.json.prev`: nothing is ever
//! silently replaced.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::controller::ControllerState;

/// Version of the file layout this build reads and writes.
pub const STATE_VERSION: u32 = 1;
/// File name of the current state.
pub const STATE_FILE: &str = "state.json";
/// File name of the previous good state.
pub const PREV_FILE: &str = "state.json.prev";

/// Everything Central persists here (token hashes live in their own file, see `crate::auth`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Pools, peers, weights, pins, assignments, listeners, source groups, balancer settings.
    pub controller: ControllerState,
}

/// Loading or saving the state failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file does not parse or its checksum does not match.
    #[error(
        "state file {} is corrupt ({reason}); it was left as it is, the previous good copy is {}",
        path.display(),
        prev.display()
    )]
    Corrupt {
        /// The corrupt file.
        path: PathBuf,
        /// Where the previous good copy is (if it exists).
        prev: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Written by another version of Central.
    #[error("state file {} has version {found}; this build reads version {STATE_VERSION}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The state could not be serialised.
    #[error("encoding the state: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    version: u32,
    sha256: String,
    body: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeIn<'a> {
    version: u32,
    sha256: String,
    #[serde(borrow)]
    body: &'a RawValue,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The state files in one directory.
#[derive(Clone, Debug)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// The store in `dir` (created on the first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Path of `state.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Path of `state.json.prev`.
    pub fn prev_path(&self) -> PathBuf {
        self.dir.join(PREV_FILE)
    }

    /// Reads and verifies `state.json`; `None` when there is none yet (first start).
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => self.decode(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io {
                op: "reading",
                path,
                source,
            }),
        }
    }

    /// Writes `state` crash-safely. The current file, verified first, becomes
    /// `state.json.prev`; a corrupt current file stops the save with [`StateError::Corrupt`].
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let io_err = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { op, path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        let body = serde_json::to_string_pretty(state)?;
        let envelope = EnvelopeOut {
            version: STATE_VERSION,
            sha256: sha256_hex(body.as_bytes()),
            body: &RawValue::from_string(body)?,
        };
        let mut bytes = serde_json::to_vec_pretty(&envelope)?;
        bytes.push(b'\n');

        let path = self.path();
        match fs::read(&path) {
            Ok(current) => {
                self.decode(&path, &current)?;
                // Link, then rename over `.prev`: `.prev` is always a whole, good file.
                let link = self.dir.join(format!(".{PREV_FILE}.tmp"));
                match fs::remove_file(&link) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err("removing", &link)(e));
                    }
                    _ => {}
                }
                fs::hard_link(&path, &link).map_err(io_err("linking", &link))?;
                fs::rename(&link, self.prev_path()).map_err(io_err("renaming", &link))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("reading", &path)(e)),
        }
        crate::atomic_file::write(&path, &bytes, 0o600).map_err(io_err("writing", &path))
    }

    fn decode(&self, path: &Path, bytes: &[u8]) -> Result<State, StateError> {
        let corrupt = |reason: String| StateError::Corrupt {
            path: path.to_path_buf(),
            prev: self.prev_path(),
            reason,
        };
        let env: EnvelopeIn<'_> =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not a state file: {e}")))?;
        if env.version != STATE_VERSION {
            return Err(StateError::Version {
                path: path.to_path_buf(),
                found: env.version,
            });
        }
        let actual = sha256_hex(env.body.get().as_bytes());
        if actual != env.sha256 {
            return Err(corrupt(format!(
                "checksum mismatch: recorded {}, computed {actual}",
                env.sha256
            )));
        }
        serde_json::from_str(env.body.get()).map_err(|e| corrupt(format!("bad body: {e}")))
    }
}
