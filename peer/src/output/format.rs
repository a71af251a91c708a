//! `format = "json" | "pb"` and `fields = [...]`: how an output encodes records.

use std::sync::Arc;

use serde::Deserialize;

use crate::record::{Field, FieldsError};

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

/// `fields = ["sampler_address", "src_addr", …]`: the JSON fields an output keeps, in their
/// order (GoFlow2's `formatter.fields`). Checked as it is read: names are GoFlow2's JSON keys,
/// none twice, at least one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Fields(Arc<[Field]>);

impl TryFrom<Vec<String>> for Fields {
    type Error = FieldsError;

    fn try_from(names: Vec<String>) -> Result<Self, FieldsError> {
        Field::parse_list(&names).map(|f| Fields(f.into()))
    }
}

/// How an output's records are encoded: shards encode each batch once per distinct encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Encoding {
    pub format: Format,
    /// JSON only: the fields kept (`None`: all of them).
    pub fields: Option<Fields>,
}

impl Encoding {
    pub fn new(format: Format, fields: Option<Fields>) -> Self {
        Encoding { format, fields }
    }

    /// The JSON fields written, in order (`None`: every field).
    pub fn fields(&self) -> Option<&[Field]> {
        self.fields.as_ref().map(|f| &*f.0)
    }
}

impl From<Format> for Encoding {
    fn from(format: Format) -> Self {
        Encoding {
            format,
            fields: None,
        }
    }
}
