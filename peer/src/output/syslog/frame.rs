//! RFC 5424 message layout and RFC 6587 octet-counting framing (pure, no I/O).

use std::io::Write;
use std::time::SystemTime;

/// The fixed part of every message: `<PRI>1 ` … `HOSTNAME APP-NAME PROCID MSGID -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pri: u8,
    hostname: String,
    app_name: String,
    procid: u32,
}

/// MSGID of every record message.
const MSGID: &str = "flow";

impl Header {
    pub fn new(
        facility: u8,
        severity: u8,
        hostname: String,
        app_name: String,
        procid: u32,
    ) -> Self {
        Header {
            pri: facility * 8 + severity,
            hostname,
            app_name,
            procid,
        }
    }

    /// Everything before the message text, for one timestamp; reused for a whole batch.
    pub fn prefix(&self, now: SystemTime) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "<{}>1 {} {} {} {} {MSGID} - ",
            self.pri,
            // `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds, as RFC 5424 §6.2.3 allows).
            humantime::format_rfc3339_micros(now),
            self.hostname,
            self.app_name,
            self.procid
        );
        out
    }
}

/// Appends one message; with `octet_counting` it is preceded by its length and a space.
pub fn frame(out: &mut Vec<u8>, prefix: &[u8], msg: &[u8], octet_counting: bool) {
    if octet_counting {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{} ", prefix.len() + msg.len());
    }
    out.extend_from_slice(prefix);
    out.extend_from_slice(msg);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
    }

    #[test]
    fn timestamps() {
        let ts = |t| humantime::format_rfc3339_micros(t).to_string();
        assert_eq!(ts(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(ts(at(951_782_400 + 3661, 5)), "2000-02-29T01:01:01.000005Z");
        assert_eq!(
            ts(at(1_795_304_738, 123_456)),
            "2026-11-21T23:45:38.123456Z"
        );
    }

    #[test]
    fn rfc5424_message_and_octet_counting() {
        let header = Header::new(16, 6, "peer-a".into(), "sluice-peer".into(), 42);
        let prefix = header.prefix(at(0, 0));
        let mut udp = Vec::new();
        frame(&mut udp, &prefix, b"{\"bytes\":1}", false);
        let expected =
            "<134>1 1970-01-01T00:00:00.000000Z peer-a sluice-peer 42 flow - {\"bytes\":1}";
        assert_eq!(String::from_utf8(udp).unwrap(), expected);

        let mut tcp = Vec::new();
        frame(&mut tcp, &prefix, b"{\"bytes\":1}", true);
        frame(&mut tcp, &prefix, b"{}", true);
        let tcp = String::from_utf8(tcp).unwrap();
        let (len, rest) = tcp.split_once(' ').unwrap();
        let len: usize = len.parse().unwrap();
        assert_eq!(&rest[..len], expected);
        let (len2, rest2) = rest[len..].split_once(' ').unwrap();
        assert_eq!(rest2.len(), len2.parse::<usize>().unwrap());
        assert!(rest2.ends_with(" - {}"));
    }
}
