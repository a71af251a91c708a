//! `type = "file"`: JSON lines appended to a file, rotated by size and/or age.

mod config;
mod sink;

pub use config::FileConfig;
pub use sink::FileSink;
