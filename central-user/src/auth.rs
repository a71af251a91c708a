//! Access tokens: generation, rotation with a grace period, constant-time verification and a
//! per-source rate limit on failures.
//!
//! A token is 256 random bits in hex, shown once. Only its SHA-256 (`sha256:<hex>`, the "access
//! token hash") is stored, in `tokens.json` in the state dir, written atomically with a checksum.
//! Peers present a [`TokenKind::Peer`] token; `sluicectl` presents a [`TokenKind::Admin`] token.
//! The running server re-reads the file when it changes, so `sluice-central token rotate` in
//! another process takes effect at once.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_common::client::token_hash;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::atomic_file;

/// File name of the token store in the state dir.
pub const TOKENS_FILE: &str = "tokens.json";
const FORMAT_VERSION: u32 = 1;

/// Who a token admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Peers (the access token).
    Peer,
    /// `sluicectl` and the admin API.
    Admin,
}

impl TokenKind {
    /// `peer` or `admin`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenKind::Peer => "peer",
            TokenKind::Admin => "admin",
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the token store.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Reading or writing the store failed.
    #[error("token store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The store is not valid (bad JSON, wrong checksum, unknown version). It is left as is.
    #[error("token store {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The system random source failed.
    #[error("no randomness for a token: {0}")]
    Random(getrandom::Error),
}

/// Why an authentication failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No token presented.
    #[error("no token presented")]
    Missing,
    /// The token matches no valid token of its kind.
    #[error("invalid token")]
    Invalid,
    /// Too many failures from this source; try again later.
    #[error("too many failed attempts; retry in {retry_after_s} s")]
    RateLimited {
        /// Seconds until the source is admitted again.
        retry_after_s: u64,
    },
}

/// A token that was just generated (the only time it is visible).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token.
    pub token: String,
    /// `sha256:<hex>` of the token.
    pub hash: String,
    /// Its kind.
    pub kind: TokenKind,
    /// When the tokens it replaces stop working (`None`: they already did).
    pub previous_expires_unix_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredToken {
    kind: TokenKind,
    hash: String,
    created_unix_ms: u64,
    #[serde(default)]
    expires_unix_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct TokenFile {
    version: u32,
    tokens: Vec<StoredToken>,
    /// `sha256:<hex>` of the JSON of `tokens`.
    checksum: String,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn checksum(tokens: &[StoredToken]) -> Result<String, serde_json::Error> {
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(serde_json::to_vec(tokens)?))
    ))
}

fn load(path: &Path) -> Result<Vec<StoredToken>, AuthError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AuthError::Io {
                path: path.into(),
                source,
            });
        }
    };
    let corrupt = |reason: String| AuthError::Corrupt {
        path: path.into(),
        reason,
    };
    let file: TokenFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.version != FORMAT_VERSION {
        return Err(corrupt(format!("unknown version {}", file.version)));
    }
    if checksum(&file.tokens).map_err(|e| corrupt(e.to_string()))? != file.checksum {
        return Err(corrupt("checksum mismatch".into()));
    }
    Ok(file.tokens)
}

fn store(path: &Path, tokens: Vec<StoredToken>) -> Result<(), AuthError> {
    let io = |source| AuthError::Io {
        path: path.into(),
        source,
    };
    let file = TokenFile {
        version: FORMAT_VERSION,
        checksum: checksum(&tokens).map_err(|e| io(e.into()))?,
        tokens,
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| io(e.into()))?;
    atomic_file::write(path, &json, 0o600).map_err(io)
}

/// Generates a token of `kind` and stores its hash in `state_dir`.
///
/// Tokens of the same kind stop working at once (`grace: None`, `token generate`) or after
/// `grace` (`token rotate --grace`). Expired entries are pruned.
pub fn token_generate(
    state_dir: &Path,
    kind: TokenKind,
    grace: Option<Duration>,
    now: SystemTime,
) -> Result<IssuedToken, AuthError> {
    let path = state_dir.join(TOKENS_FILE);
    let mut tokens = load(&path)?;
    let now_ms = unix_ms(now);
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(AuthError::Random)?;
    let token = hex::encode(random);
    let hash = token_hash(&token);

    let expires = grace.map(|g| now_ms.saturating_add(g.as_millis() as u64));
    let mut previous_expires_unix_ms = None;
    tokens.retain_mut(|t| {
        if t.kind != kind {
            return t.expires_unix_ms.is_none_or(|e| e > now_ms);
        }
        let Some(new_expiry) = expires else {
            return false;
        };
        let expiry = t.expires_unix_ms.map_or(new_expiry, |e| e.min(new_expiry));
        t.expires_unix_ms = Some(expiry);
        previous_expires_unix_ms = previous_expires_unix_ms.max(Some(expiry));
        expiry > now_ms
    });
    tokens.push(StoredToken {
        kind,
        hash: hash.clone(),
        created_unix_ms: now_ms,
        expires_unix_ms: None,
    });
    std::fs::create_dir_all(state_dir).map_err(|source| AuthError::Io {
        path: state_dir.into(),
        source,
    })?;
    store(&path, tokens)?;
    info!(%kind, %hash, grace_ms = grace.map(|g| g.as_millis() as u64), "token generated");
    Ok(IssuedToken {
        token,
        hash,
        kind,
        previous_expires_unix_ms,
    })
}

/// When the failures of one source lock it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Failures allowed within `window`.
    pub max_failures: u32,
    /// Window over which failures are counted.
    pub window: Duration,
    /// How long a source that exceeded the limit is rejected without checking.
    pub lockout: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            max_failures: 5,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
        }
    }
}

/// Sources tracked at most; stale ones are forgotten first.
const MAX_SOURCES: usize = 16 * 1024;

struct Source {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

/// A stored token in the form the check uses.
struct Digest32 {
    kind: TokenKind,
    digest: [u8; 32],
    expires_unix_ms: Option<u64>,
}

struct Loaded {
    /// (modification time, length) of the file when loaded.
    stamp: Option<(SystemTime, u64)>,
    tokens: Vec<Digest32>,
}

/// Verifies tokens for the control API.
pub struct Authenticator {
    path: PathBuf,
    state_dir: PathBuf,
    loaded: Mutex<Loaded>,
    sources: Mutex<HashMap<IpAddr, Source>>,
    limit: RateLimit,
    failures: [AtomicU64; 2],
    locked_out: AtomicU64,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn parse_hashes(tokens: Vec<StoredToken>, path: &Path) -> Result<Vec<Digest32>, AuthError> {
    tokens
        .into_iter()
        .map(|t| {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(
                t.hash.strip_prefix("sha256:").unwrap_or(&t.hash),
                &mut digest,
            )
            .map_err(|e| AuthError::Corrupt {
                path: path.into(),
                reason: format!("bad hash {:?}: {e}", t.hash),
            })?;
            Ok(Digest32 {
                kind: t.kind,
                digest,
                expires_unix_ms: t.expires_unix_ms,
            })
        })
        .collect()
}

impl Authenticator {
    /// Opens the token store of `state_dir` (missing file: no token is valid yet).
    pub fn open(state_dir: &Path, limit: RateLimit) -> Result<Self, AuthError> {
        let path = state_dir.join(TOKENS_FILE);
        let stamp = stamp(&path);
        let tokens = parse_hashes(load(&path)?, &path)?;
        for kind in [TokenKind::Peer, TokenKind::Admin] {
            if !tokens.iter().any(|t| t.kind == kind) {
                warn!(%kind, path = %path.display(), "no {kind} token: run `sluice-central token generate{}`", if kind == TokenKind::Admin { " --admin" } else { "" });
            }
        }
        Ok(Authenticator {
            path,
            state_dir: state_dir.into(),
            loaded: Mutex::new(Loaded { stamp, tokens }),
            sources: Mutex::new(HashMap::new()),
            limit,
            failures: [AtomicU64::new(0), AtomicU64::new(0)],
            locked_out: AtomicU64::new(0),
        })
    }

    /// Generates a token (see [`token_generate`]) and uses the new store at once.
    pub fn issue(
        &self,
        kind: TokenKind,
        grace: Option<Duration>,
    ) -> Result<IssuedToken, AuthError> {
        let issued = token_generate(&self.state_dir, kind, grace, SystemTime::now())?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.stamp = None;
        Ok(issued)
    }

    /// Failed authentications of `kind` since start (lockout rejections included).
    pub fn failures(&self, kind: TokenKind) -> u64 {
        self.failures[kind as usize].load(Ordering::Relaxed)
    }

    /// Attempts rejected without checking because their source was locked out.
    pub fn locked_out(&self) -> u64 {
        self.locked_out.load(Ordering::Relaxed)
    }

    /// Checks `presented` against the valid tokens of `kind`; counts, logs and rate-limits
    /// failures per `source`.
    pub fn check(
        &self,
        kind: TokenKind,
        presented: Option<&str>,
        source: IpAddr,
    ) -> Result<(), AuthFailure> {
        let now = Instant::now();
        if let Some(retry) = self.lockout_remaining(source, now) {
            self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
            self.locked_out.fetch_add(1, Ordering::Relaxed);
            return Err(AuthFailure::RateLimited {
                retry_after_s: retry.as_secs().max(1),
            });
        }
        let result = match presented.map(str::trim).filter(|t| !t.is_empty()) {
            None => Err(AuthFailure::Missing),
            Some(token) if self.matches(kind, token) => Ok(()),
            Some(_) => Err(AuthFailure::Invalid),
        };
        match result {
            Ok(()) => self.forget(source),
            Err(reason) => {
                let total = self.failures[kind as usize].fetch_add(1, Ordering::Relaxed) + 1;
                let locked = self.record_failure(source, now);
                warn!(%source, %kind, %reason, failures_total = total, locked_out = locked, "authentication failed");
            }
        }
        result
    }

    fn matches(&self, kind: TokenKind, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now_ms = unix_ms(SystemTime::now());
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(&mut loaded);
        // Compare against every entry so timing reveals nothing about which one matched.
        let mut ok = subtle::Choice::from(0);
        for t in &loaded.tokens {
            let valid = t.kind == kind && t.expires_unix_ms.is_none_or(|e| now_ms < e);
            ok |= t.digest.ct_eq(&digest) & subtle::Choice::from(u8::from(valid));
        }
        ok.into()
    }

    fn refresh(&self, loaded: &mut Loaded) {
        let current = stamp(&self.path);
        if current.is_some() && current == loaded.stamp {
            return;
        }
        match load(&self.path).and_then(|t| parse_hashes(t, &self.path)) {
            Ok(tokens) => {
                info!(path = %self.path.display(), tokens = tokens.len(), "token store loaded");
                *loaded = Loaded {
                    stamp: current,
                    tokens,
                };
            }
            // Keep the tokens we had: a broken file must not lock everybody out.
            Err(error) => {
                warn!(%error, "token store not reloaded");
                loaded.stamp = current;
            }
        }
    }

    fn lockout_remaining(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let until = sources.get(&source)?.locked_until?;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    fn forget(&self, source: IpAddr) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.remove(&source);
    }

    /// Records a failure; returns whether the source is now locked out.
    fn record_failure(&self, source: IpAddr, now: Instant) -> bool {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.len() >= MAX_SOURCES {
            let horizon = self.limit.window.max(self.limit.lockout);
            sources.retain(|_, s| now.duration_since(s.window_start) < horizon);
        }
        let entry = sources.entry(source).or_insert(Source {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        if now.duration_since(entry.window_start) > self.limit.window {
            entry.window_start = now;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures >= self.limit.max_failures {
            entry.locked_until = Some(now + self.limit.lockout);
            entry.window_start = now;
            entry.failures = 0;
            warn!(%source, lockout_s = self.limit.lockout.as_secs(), "source locked out after repeated authentication failures");
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn generate_stores_only_the_hash_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let issued = token_generate(dir.path(), TokenKind::Peer, None, SystemTime::now()).unwrap();
        assert_eq!(issued.token.len(), 64);
        let stored = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!stored.contains(&issued.token));
        assert!(stored.contains(&issued.hash));
        let auth = Authenticator::open(dir.path(), RateLimit::default()).unwrap();
        assert_eq!(
            auth.check(TokenKind::Peer, Some(&issued.token), LOCAL),
            Ok(())
        );
        assert_eq!(
            auth.check(TokenKind::Admin, Some(&issued.token), LOCAL),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            auth.check(TokenKind::Peer, None, LOCAL),
            Err(AuthFailure::Missing)
        );
        assert_eq!(auth.failures(TokenKind::Peer), 1);
        assert_eq!(auth.failures(TokenKind::Admin), 1);
    }

    #[test]
    fn rotation_keeps_the_old_token_for_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::now();
        let old = token_generate(dir.path(), TokenKind::Peer, None, t0).unwrap();
        let auth = Authenticator::open(dir.path(), RateLimit::default()).unwrap();
        let new = auth
            .issue(TokenKind::Peer, Some(Duration::from_millis(300)))
            .unwrap();
        assert!(new.previous_expires_unix_ms.is_some());
        assert_eq!(auth.check(TokenKind::Peer, Some(&old.token), LOCAL), Ok(()));
        assert_eq!(auth.check(TokenKind::Peer, Some(&new.token), LOCAL), Ok(()));
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(
            auth.check(TokenKind::Peer, Some(&old.token), LOCAL),
            Err(AuthFailure::Invalid)
        );
        // A plain generate revokes at once.
        let newest = auth.issue(TokenKind::Peer, None).unwrap();
        assert_eq!(newest.previous_expires_unix_ms, None);
        assert_eq!(
            auth.check(TokenKind::Peer, Some(&new.token), LOCAL),
            Err(AuthFailure::Invalid)
        );
    }

    #[test]
    fn repeated_failures_lock_the_source_out() {
        let dir = tempfile::tempdir().unwrap();
        let good = token_generate(dir.path(), TokenKind::Admin, None, SystemTime::now()).unwrap();
        let limit = RateLimit {
            max_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_millis(300),
        };
        let auth = Authenticator::open(dir.path(), limit).unwrap();
        for _ in 0..3 {
            assert_eq!(
                auth.check(TokenKind::Admin, Some("nope"), LOCAL),
                Err(AuthFailure::Invalid)
            );
        }
        assert!(matches!(
            auth.check(TokenKind::Admin, Some(&good.token), LOCAL),
            Err(AuthFailure::RateLimited { .. })
        ));
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(
            auth.check(TokenKind::Admin, Some(&good.token), other),
            Ok(())
        );
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(
            auth.check(TokenKind::Admin, Some(&good.token), LOCAL),
            Ok(())
        );
        assert_eq!(auth.locked_out(), 1);
    }

    #[test]
    fn a_corrupt_store_is_reported_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        token_generate(dir.path(), TokenKind::Peer, None, SystemTime::now()).unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("peer", "admin");
        std::fs::write(&path, &text).unwrap();
        let err = Authenticator::open(dir.path(), RateLimit::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(token_generate(dir.path(), TokenKind::Peer, None, SystemTime::now()).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
