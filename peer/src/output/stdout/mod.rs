//! `type = "stdout"`: records on standard output, JSON lines or length-delimited protobuf
//! (logs go to standard error).

mod config;
mod sink;

pub use config::StdoutConfig;
pub use sink::StdoutSink;
