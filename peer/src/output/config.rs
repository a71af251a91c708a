//! `[[outputs]]` entries and `--output` values: which sink, its settings and its checks.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::format::{Encoding, Fields, Format};
#[cfg(feature = "kafka")]
use super::kafka;
use super::sink::Sink;
use super::{file, stdout, syslog};
use crate::config::error::{ConfigError, positive};
use crate::metrics::OutputStats;

/// One `[[outputs]]` entry, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OutputConfig {
    Stdout(stdout::StdoutConfig),
    File(file::FileConfig),
    Syslog(syslog::SyslogConfig),
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaConfig),
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig::Stdout(stdout::StdoutConfig::default())
    }
}

impl OutputConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            OutputConfig::Stdout(_) => "stdout",
            OutputConfig::File(_) => "file",
            OutputConfig::Syslog(_) => "syslog",
            #[cfg(feature = "kafka")]
            OutputConfig::Kafka(_) => "kafka",
        }
    }

    /// How this output encodes records (syslog carries JSON).
    pub fn format(&self) -> Format {
        match self {
            OutputConfig::Stdout(c) => c.format,
            OutputConfig::File(c) => c.format,
            OutputConfig::Syslog(_) => Format::Json,
            #[cfg(feature = "kafka")]
            OutputConfig::Kafka(c) => c.format,
        }
    }

    /// The JSON fields this output keeps (`None`: all).
    fn fields(&self) -> Option<&Fields> {
        match self {
            OutputConfig::Stdout(c) => c.fields.as_ref(),
            OutputConfig::File(c) => c.fields.as_ref(),
            OutputConfig::Syslog(c) => c.fields.as_ref(),
            #[cfg(feature = "kafka")]
            OutputConfig::Kafka(c) => c.fields.as_ref(),
        }
    }

    /// Its format with its fields: outputs of one encoding share the encoded records.
    pub fn encoding(&self) -> Encoding {
        Encoding::new(self.format(), self.fields().cloned())
    }

    /// Records buffered while the destination is slow or down.
    pub fn buffer_records(&self) -> usize {
        match self {
            OutputConfig::Stdout(c) => c.buffer_records,
            OutputConfig::File(c) => c.buffer_records,
            OutputConfig::Syslog(c) => c.buffer_records,
            #[cfg(feature = "kafka")]
            OutputConfig::Kafka(c) => c.buffer_records,
        }
    }

    /// Checks the values; `key` is this output's position, e.g. `outputs[2]`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        positive(
            &format!("{key}.buffer_records"),
            self.buffer_records(),
            1 << 26,
        )?;
        if self.format() == Format::Pb && self.fields().is_some() {
            return Err(ConfigError::invalid(
                format!("{key}.fields"),
                "selects JSON fields; `format = \"pb\"` writes every field of GoFlow2's FlowMessage \
                 (leave `fields` out, or use `format = \"json\"`)",
            ));
        }
        match self {
            OutputConfig::Stdout(_) => Ok(()),
            OutputConfig::File(c) => c.validate(key),
            OutputConfig::Syslog(c) => c.validate(key),
            #[cfg(feature = "kafka")]
            OutputConfig::Kafka(c) => c.validate(key),
        }
    }

    /// Builds the sink (opening files, resolving addresses, creating the Kafka producer);
    /// errors here stop the start. Reachability is the sink's [`Sink::healthcheck`], run on the
    /// output's thread. `stats` and `drain_timeout` serve sinks that acknowledge (Kafka).
    #[cfg_attr(
        not(feature = "kafka"),
        expect(unused_variables, reason = "only the kafka output uses them")
    )]
    pub fn build(
        &self,
        stats: &Arc<OutputStats>,
        drain_timeout: Duration,
    ) -> std::io::Result<Box<dyn Sink>> {
        Ok(match self {
            OutputConfig::Stdout(_) => Box::new(stdout::StdoutSink::new()),
            // Opens (creating) the file; a missing directory or no permission is an error.
            OutputConfig::File(c) => Box::new(file::FileSink::open(c.clone())?),
            // UDP resolves and connects now; TCP connects in the health check and on demand.
            OutputConfig::Syslog(c) => Box::new(syslog::SyslogSink::new(c)?),
            #[cfg(feature = "kafka")]
            OutputConfig::Kafka(c) => {
                Box::new(kafka::KafkaSink::new(c, stats.clone(), drain_timeout)?)
            }
        })
    }
}

/// An `--output` value that names no output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputFlagError {
    #[error("`file:` needs a path, e.g. file:/var/log/flows.jsonl")]
    FileWithoutPath,
    #[cfg(feature = "kafka")]
    #[error("`{0}`: expected kafka://HOST:PORT[,HOST:PORT...]/TOPIC")]
    Kafka(String),
    #[error(
        "unknown output `{0}`: expected stdout, file:PATH, syslog+udp://HOST:PORT, \
         syslog+tcp://HOST:PORT or kafka://HOST:PORT/TOPIC"
    )]
    Unknown(String),
}

/// Parses `--output` values: `stdout`, `file:PATH`, `syslog+udp://HOST:PORT`,
/// `syslog+tcp://HOST:PORT`, `kafka://HOST:PORT[,HOST:PORT...]/TOPIC` (format `pb`).
impl FromStr for OutputConfig {
    type Err = OutputFlagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "stdout" {
            return Ok(OutputConfig::default());
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(OutputFlagError::FileWithoutPath);
            }
            return Ok(OutputConfig::File(file::FileConfig::at(path.into())));
        }
        let syslog = |protocol, address: &str| {
            Ok(OutputConfig::Syslog(syslog::SyslogConfig::to(
                protocol,
                address.to_owned(),
            )))
        };
        if let Some(address) = s.strip_prefix("syslog+udp://") {
            return syslog(syslog::Protocol::Udp, address);
        }
        if let Some(address) = s.strip_prefix("syslog+tcp://") {
            return syslog(syslog::Protocol::Tcp, address);
        }
        #[cfg(feature = "kafka")]
        if let Some(rest) = s.strip_prefix("kafka://") {
            let Some((brokers, topic)) = rest
                .split_once('/')
                .filter(|(b, t)| !b.is_empty() && !t.is_empty())
            else {
                return Err(OutputFlagError::Kafka(s.to_owned()));
            };
            let brokers = brokers.split(',').map(str::to_owned).collect();
            return Ok(OutputConfig::Kafka(kafka::KafkaConfig::to(
                brokers,
                topic.to_owned(),
            )));
        }
        Err(OutputFlagError::Unknown(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_flags_parse() {
        assert_eq!(
            "stdout".parse::<OutputConfig>().unwrap(),
            OutputConfig::default()
        );
        let OutputConfig::File(f) = "file:/var/log/flows.jsonl".parse().unwrap() else {
            panic!("not a file output")
        };
        assert_eq!(f.path.to_str(), Some("/var/log/flows.jsonl"));
        let OutputConfig::Syslog(s) = "syslog+tcp://127.0.0.1:514".parse().unwrap() else {
            panic!("not a syslog output")
        };
        assert_eq!(s.protocol, syslog::Protocol::Tcp);
        assert_eq!(s.address, "127.0.0.1:514");
        assert!("kafka://x".parse::<OutputConfig>().is_err());
        assert!("kafka:///flows".parse::<OutputConfig>().is_err());
        assert!("file:".parse::<OutputConfig>().is_err());
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_output_flag_parses() {
        let OutputConfig::Kafka(k) = "kafka://127.0.0.1:9092,[::1]:9093/flows".parse().unwrap()
        else {
            panic!("not a kafka output")
        };
        assert_eq!(k.brokers, ["127.0.0.1:9092", "[::1]:9093"]);
        assert_eq!((k.topic.as_str(), k.format), ("flows", Format::Pb));
    }
}
