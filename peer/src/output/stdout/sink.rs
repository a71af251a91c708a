use std::io::Write;

use crate::output::{EncodedBatch, Sink, SinkFailure};

/// Writes each batch with one `write` where it fits, then flushes, so a reader sees whole lines.
#[derive(Debug, Default)]
pub struct StdoutSink {
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, batch: &EncodedBatch, from: usize) -> Result<(), SinkFailure> {
        self.buf.clear();
        for line in batch.lines_from(from) {
            self.buf.extend_from_slice(line);
            self.buf.push(b'\n');
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)
            .and_then(|()| out.flush())
            .map_err(|error| SinkFailure { written: 0, error })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().lock().flush()
    }
}
