//! The one duration grammar of every Sluice command line: `humantime`'s (`90s`, `30m`,
//! `1h 30m`, `2d`, `1w`, `250ms`), plus a bare number of seconds (`90`, `1.5`), which
//! `sluicectl`, `sluice-central token` and `sluice-flowgen` accepted before and scripts may
//! still pass.

use std::string::{String, ToString};
use std::time::Duration;

/// A duration that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    /// Not humantime's grammar.
    #[error("bad duration {text:?}: {source} (e.g. 90s, 30m, 1h, 2d, 250ms)")]
    Syntax {
        /// As given.
        text: String,
        /// What humantime found.
        source: humantime::DurationError,
    },
    /// A bare number of seconds that is negative or too large.
    #[error("bad duration {0:?}: out of range")]
    Range(String),
}

/// Parses `text` (see the module doc).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| DurationError::Range(text.to_string()));
    }
    humantime::parse_duration(text).map_err(|source| DurationError::Syntax {
        text: text.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_units_and_bare_seconds() {
        let s = Duration::from_secs;
        assert_eq!(parse("90").unwrap(), s(90));
        assert_eq!(parse("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("90s").unwrap(), s(90));
        assert_eq!(parse("30m").unwrap(), s(1800));
        assert_eq!(parse("1h").unwrap(), s(3600));
        assert_eq!(parse("2d").unwrap(), s(172_800));
        assert_eq!(parse("1w").unwrap(), s(604_800));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1h 30m").unwrap(), s(5400));
        assert!(parse("h").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("5 parsecs").is_err());
    }
}
