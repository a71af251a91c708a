//! The validation error every `peer.toml` section reports, and its shared checks. A leaf:
//! the output configs (`crate::output`) use it without importing the rest of `crate::config`.

use std::path::PathBuf;

/// A configuration problem, naming the key (`ingest.ports[1]`, `outputs[0].path`, …).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("`{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// `1..=max`, or an error naming `key`.
pub(crate) fn positive(key: &str, value: usize, max: usize) -> Result<(), ConfigError> {
    if (1..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("{value} is outside 1..={max}"),
        ))
    }
}
