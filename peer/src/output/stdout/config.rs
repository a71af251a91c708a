use serde::Deserialize;

use super::StdoutSink;
use crate::output::DEFAULT_BUFFER_RECORDS;

/// `[[outputs]] type = "stdout"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StdoutConfig {
    /// Records buffered while stdout is slow (a pipe to a slow reader).
    pub buffer_records: usize,
}

impl Default for StdoutConfig {
    fn default() -> Self {
        StdoutConfig {
            buffer_records: DEFAULT_BUFFER_RECORDS,
        }
    }
}

impl StdoutConfig {
    pub fn build(&self) -> StdoutSink {
        StdoutSink::new()
    }
}
