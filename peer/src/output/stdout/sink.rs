use std::io::Write;

use crate::output::batch::EncodedBatch;
use crate::output::sink::{Sink, SinkFailure};

/// Writes each batch's encoded records with one `write` where it fits, then flushes, so a
/// reader sees whole records.
#[derive(Debug, Default)]
pub struct StdoutSink;

impl StdoutSink {
    pub fn new() -> Self {
        StdoutSink
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, batch: &EncodedBatch, from: usize) -> Result<(), SinkFailure> {
        let mut out = std::io::stdout().lock();
        out.write_all(batch.text(from..batch.len()))
            .and_then(|()| out.flush())
            .map_err(|error| SinkFailure { written: 0, error })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().lock().flush()
    }
}
