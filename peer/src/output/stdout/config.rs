use serde::Deserialize;

use crate::output::buffer::DEFAULT_BUFFER_RECORDS;
use crate::output::format::{Fields, Format};

/// `[[outputs]] type = "stdout"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StdoutConfig {
    /// `json` (default) or `pb` (length-delimited protobuf).
    pub format: Format,
    /// JSON fields kept, in this order (GoFlow2's `formatter.fields`); all when absent.
    #[serde(default)]
    pub fields: Option<Fields>,
    /// Records buffered while stdout is slow (a pipe to a slow reader).
    pub buffer_records: usize,
}

impl Default for StdoutConfig {
    fn default() -> Self {
        StdoutConfig {
            format: Format::Json,
            fields: None,
            buffer_records: DEFAULT_BUFFER_RECORDS,
        }
    }
}
