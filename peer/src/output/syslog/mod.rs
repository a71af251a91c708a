//! `type = "syslog"`: one RFC 5424 message per record, over UDP (one datagram each) or TCP
//! (octet-counting framing, RFC 6587 §3.4.1).

mod config;
mod frame;
mod sink;

pub use config::{Protocol, SyslogConfig};
pub use frame::Header;
pub use sink::SyslogSink;
