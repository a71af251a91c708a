//! `type = "file"`: records (JSON lines or length-delimited protobuf) appended to a file,
//! rotated by size and/or age; rotation falls between records.

mod config;
mod sink;

pub use config::FileConfig;
pub use sink::FileSink;
