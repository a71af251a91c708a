use std::path::PathBuf;

use serde::Deserialize;

use crate::config::error::{ConfigError, positive};
use crate::output::buffer::default_buffer_records;
use crate::output::format::{Fields, Format};

/// `[[outputs]] type = "file"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file records are appended to; rotated files get `.1`, `.2`, … (`.1` is the newest).
    pub path: PathBuf,
    /// `json` (default: JSON lines) or `pb` (length-delimited protobuf).
    #[serde(default)]
    pub format: Format,
    /// JSON fields kept, in this order (GoFlow2's `formatter.fields`); all when absent.
    #[serde(default)]
    pub fields: Option<Fields>,
    /// Rotate before the file would grow past this many bytes.
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
    /// Rotate a non-empty file this many seconds after it was opened.
    #[serde(default)]
    pub rotate_interval_s: Option<u64>,
    /// Rotated files kept; older ones are deleted.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Records buffered while the file cannot be written (disk full, permissions).
    #[serde(default = "default_buffer_records")]
    pub buffer_records: usize,
}

fn default_keep() -> usize {
    5
}

impl FileConfig {
    /// A file output with default rotation settings (none) at `path`.
    pub fn at(path: PathBuf) -> Self {
        FileConfig {
            path,
            format: Format::Json,
            fields: None,
            rotate_bytes: None,
            rotate_interval_s: None,
            keep: default_keep(),
            buffer_records: default_buffer_records(),
        }
    }

    pub(crate) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.path"),
                "must not be empty",
            ));
        }
        if self.path.file_name().is_none() {
            return Err(ConfigError::invalid(
                format!("{key}.path"),
                format!("`{}` does not name a file", self.path.display()),
            ));
        }
        if self.rotate_bytes == Some(0) {
            return Err(ConfigError::invalid(
                format!("{key}.rotate_bytes"),
                "must be at least 1 (leave it out to disable size rotation)",
            ));
        }
        if self.rotate_interval_s == Some(0) {
            return Err(ConfigError::invalid(
                format!("{key}.rotate_interval_s"),
                "must be at least 1 (leave it out to disable time rotation)",
            ));
        }
        positive(&format!("{key}.keep"), self.keep, 10_000)
    }
}
