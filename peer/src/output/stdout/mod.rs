//! `type = "stdout"`: JSON lines on standard output (logs go to standard error).

mod config;
mod sink;

pub use config::StdoutConfig;
pub use sink::StdoutSink;
