//! `format = "json" | "pb"`: how an output encodes records.

use serde::Deserialize;

/// Record encoding of an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Format {
    /// GoFlow2's JSON, one object per line (a newline after each record).
    #[default]
    Json,
    /// GoFlow2's `bin` format: each record a `flowpb.FlowMessage` prefixed by its varint
    /// length (`peer/proto/flow.proto`).
    Pb,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Json, Format::Pb];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Pb => "pb",
        }
    }
}

/// A `format` value that is neither `json` nor `pb`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`format`: expected \"json\" or \"pb\", got {0:?}")]
pub struct UnknownFormat(pub String);

impl TryFrom<String> for Format {
    type Error = UnknownFormat;

    fn try_from(s: String) -> Result<Self, UnknownFormat> {
        match s.as_str() {
            "json" => Ok(Format::Json),
            "pb" => Ok(Format::Pb),
            _ => Err(UnknownFormat(s)),
        }
    }
}
