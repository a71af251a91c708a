//! The destination side of an output, run by [`super::runner`] on the output's thread.

use super::batch::EncodedBatch;

/// A sink failed after writing `written` lines of the batch; the runner retries the rest.
#[derive(Debug)]
pub struct SinkFailure {
    pub written: usize,
    pub error: std::io::Error,
}

/// The destination side of an output; runs on the output's own thread.
pub trait Sink: Send {
    /// True when the destination acknowledges records itself (Kafka delivery reports): a
    /// successful [`Sink::write`] then only hands records over, and the sink counts them as
    /// sent or failed when their acknowledgement arrives.
    fn acknowledges(&self) -> bool {
        false
    }
    /// Checked once at start; a failure is logged and records are buffered until it recovers.
    fn healthcheck(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    /// Writes the lines of `batch` from index `from` on.
    fn write(&mut self, batch: &EncodedBatch, from: usize) -> Result<(), SinkFailure>;
    /// Called when the output has been idle for a while (time-based rotation, keep-alives).
    fn tick(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    /// Called once at shutdown after the last batch.
    fn flush(&mut self) -> std::io::Result<()>;
}
