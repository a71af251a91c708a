//! How many records an output buffers unless `buffer_records` says otherwise.

/// Records an output buffers by default while its destination is slow or down.
pub const DEFAULT_BUFFER_RECORDS: usize = 100_000;

/// `buffer_records` when absent.
pub(crate) fn default_buffer_records() -> usize {
    DEFAULT_BUFFER_RECORDS
}
