use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::config::error::{ConfigError, positive};
use crate::output::buffer::default_buffer_records;
use crate::output::format::{Fields, Format};

/// `compression`: librdkafka's `compression.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Lz4,
    Snappy,
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Snappy => "snappy",
            Compression::Zstd => "zstd",
        }
    }
}

/// `acks`: how many replicas acknowledge a record before it counts as sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acks {
    /// Every in-sync replica (`acks=all`); required by the idempotent producer.
    #[default]
    All,
    /// The partition leader only (`acks=1`).
    Leader,
}

/// `partitioner`: how the key (the exporter address) picks a partition; librdkafka's names.
/// Every keyed choice keeps one exporter on one partition, so its records stay in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    /// murmur2 of the key, as the Java client does (default): Java, Go (sarama with the
    /// murmur2 hasher) and librdkafka producers put the same exporter on the same partition.
    #[default]
    Murmur2Random,
    /// CRC32 of the key (librdkafka's own default).
    ConsistentRandom,
    /// FNV-1a of the key (sarama's default hasher).
    Fnv1aRandom,
    /// Random partition per record, ignoring the key (GoFlow2's default behaviour; spreads an
    /// exporter over all partitions and loses its order).
    Random,
}

impl Partitioner {
    fn as_str(self) -> &'static str {
        match self {
            Partitioner::Murmur2Random => "murmur2_random",
            Partitioner::ConsistentRandom => "consistent_random",
            Partitioner::Fnv1aRandom => "fnv1a_random",
            Partitioner::Random => "random",
        }
    }
}

/// `[outputs.tls]`: TLS to the brokers (`security.protocol = ssl`, or `sasl_ssl` with SASL).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTls {
    /// CA certificate(s) (PEM) the brokers' certificates are checked against; the system's when
    /// absent.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// SASL mechanisms librdkafka supports without Kerberos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `[outputs.sasl]`: SASL authentication (`sasl_plaintext`, or `sasl_ssl` with `[outputs.tls]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    /// File holding the password (its first line); the password is never in the config file.
    pub password_file: PathBuf,
}

/// `[[outputs]] type = "kafka"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `HOST:PORT` each.
    pub brokers: Vec<String>,
    /// Topic records are produced to. It must exist: Sluice does not create topics.
    pub topic: String,
    /// `pb` (default: GoFlow2's length-delimited `FlowMessage`, one per Kafka message) or `json`.
    #[serde(default = "default_format")]
    pub format: Format,
    /// JSON fields kept, in this order (GoFlow2's `formatter.fields`); all when absent.
    #[serde(default)]
    pub fields: Option<Fields>,
    /// How the key (the exporter's address as text) picks the partition.
    #[serde(default)]
    pub partitioner: Partitioner,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub acks: Acks,
    /// The idempotent producer: no duplicates or reordering from librdkafka's retries.
    #[serde(default = "default_true")]
    pub idempotence: bool,
    /// How long librdkafka keeps retrying a record before it counts as failed
    /// (`message.timeout.ms`; 0 = forever).
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u64,
    /// Records handed to librdkafka and not yet acknowledged, at most
    /// (`queue.buffering.max.messages`); past it records wait in `buffer_records`.
    #[serde(default = "default_in_flight_records")]
    pub max_in_flight_records: usize,
    #[serde(default)]
    pub tls: Option<KafkaTls>,
    #[serde(default)]
    pub sasl: Option<KafkaSasl>,
    /// Raw librdkafka properties, applied last (they win over the keys above), e.g.
    /// `librdkafka = { "linger.ms" = "20" }`. See librdkafka's CONFIGURATION.md.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
    /// Records buffered while the brokers are slow or unreachable and librdkafka's queue is full.
    #[serde(default = "default_buffer_records")]
    pub buffer_records: usize,
}

fn default_format() -> Format {
    Format::Pb
}

fn default_true() -> bool {
    true
}

fn default_message_timeout_ms() -> u64 {
    300_000
}

fn default_in_flight_records() -> usize {
    100_000
}

impl KafkaConfig {
    /// A Kafka output with the defaults, producing to `topic` on `brokers`.
    pub fn to(brokers: Vec<String>, topic: String) -> Self {
        KafkaConfig {
            brokers,
            topic,
            format: default_format(),
            fields: None,
            partitioner: Partitioner::default(),
            compression: Compression::default(),
            acks: Acks::default(),
            idempotence: true,
            message_timeout_ms: default_message_timeout_ms(),
            max_in_flight_records: default_in_flight_records(),
            tls: None,
            sasl: None,
            librdkafka: BTreeMap::new(),
            buffer_records: default_buffer_records(),
        }
    }

    pub(crate) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.brokers.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.brokers"),
                "needs at least one HOST:PORT",
            ));
        }
        for (i, b) in self.brokers.iter().enumerate() {
            let port_ok = b.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !port_ok {
                return Err(ConfigError::invalid(
                    format!("{key}.brokers[{i}]"),
                    format!("`{b}` is not HOST:PORT"),
                ));
            }
        }
        if self.topic.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.topic"),
                "must not be empty",
            ));
        }
        if self.idempotence && self.acks != Acks::All {
            return Err(ConfigError::invalid(
                format!("{key}.acks"),
                "the idempotent producer needs acks = \"all\" (or set idempotence = false)",
            ));
        }
        positive(
            &format!("{key}.max_in_flight_records"),
            self.max_in_flight_records,
            10_000_000,
        )?;
        if let Some(tls) = &self.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            return Err(ConfigError::invalid(
                format!("{key}.tls"),
                "`cert` and `key` go together (mutual TLS)",
            ));
        }
        if let Some(sasl) = &self.sasl
            && sasl.username.is_empty()
        {
            return Err(ConfigError::invalid(
                format!("{key}.sasl.username"),
                "must not be empty",
            ));
        }
        Ok(())
    }

    /// The librdkafka configuration: our defaults, TLS/SASL, then the raw settings.
    pub(crate) fn client_config(&self) -> std::io::Result<ClientConfig> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", "sluice-peer")
            .set(
                "acks",
                match self.acks {
                    Acks::All => "all",
                    Acks::Leader => "1",
                },
            )
            .set("enable.idempotence", self.idempotence.to_string())
            .set("compression.type", self.compression.as_str())
            .set("partitioner", self.partitioner.as_str())
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                self.max_in_flight_records.to_string(),
            );
        let protocol = match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if let Some(tls) = &self.tls {
            for (prop, path) in [
                ("ssl.ca.location", &tls.ca_cert),
                ("ssl.certificate.location", &tls.cert),
                ("ssl.key.location", &tls.key),
            ] {
                if let Some(p) = path {
                    c.set(prop, p.display().to_string());
                }
            }
        }
        if let Some(sasl) = &self.sasl {
            let text = std::fs::read_to_string(&sasl.password_file).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", sasl.password_file.display()),
                )
            })?;
            c.set("sasl.mechanisms", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", text.lines().next().unwrap_or_default());
        }
        for (k, v) in &self.librdkafka {
            c.set(k, v);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::OutputConfig;

    fn kafka(extra: &str) -> KafkaConfig {
        let text =
            format!("type = \"kafka\"\nbrokers = [\"127.0.0.1:9092\"]\ntopic = \"flows\"\n{extra}");
        match toml::from_str::<OutputConfig>(&text).unwrap() {
            OutputConfig::Kafka(k) => k,
            other => panic!("not kafka: {other:?}"),
        }
    }

    fn invalid(extra: &str) -> String {
        kafka(extra).validate("outputs[1]").unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_pb_acks_all_idempotent_keyed_murmur2() {
        let k = kafka("");
        k.validate("outputs[0]").unwrap();
        assert_eq!(
            k,
            KafkaConfig::to(vec!["127.0.0.1:9092".into()], "flows".into())
        );
        let c = k.client_config().unwrap();
        assert_eq!(k.format, Format::Pb);
        for (prop, want) in [
            ("bootstrap.servers", "127.0.0.1:9092"),
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("compression.type", "none"),
            ("partitioner", "murmur2_random"),
            ("security.protocol", "plaintext"),
            ("message.timeout.ms", "300000"),
            ("queue.buffering.max.messages", "100000"),
        ] {
            assert_eq!(c.get(prop), Some(want), "{prop}");
        }
    }

    #[test]
    fn tls_sasl_and_raw_settings_map_to_librdkafka() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let k = kafka(&format!(
            "compression = \"lz4\"\npartitioner = \"fnv1a_random\"\n\
             tls = {{ ca_cert = \"/etc/ca.pem\" }}\n\
             sasl = {{ mechanism = \"SCRAM-SHA-512\", username = \"sluice\", password_file = \"{}\" }}\n\
             librdkafka = {{ \"linger.ms\" = \"20\", \"compression.type\" = \"zstd\" }}\n",
            password.display()
        ));
        k.validate("outputs[0]").unwrap();
        let c = k.client_config().unwrap();
        for (prop, want) in [
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", "/etc/ca.pem"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "sluice"),
            ("sasl.password", "s3cret"),
            ("partitioner", "fnv1a_random"),
            ("linger.ms", "20"),
            // Raw settings win.
            ("compression.type", "zstd"),
        ] {
            assert_eq!(c.get(prop), Some(want), "{prop}");
        }
        assert!(c.get("ssl.certificate.location").is_none());
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(invalid("acks = \"leader\"").contains("`outputs[1].acks`"));
        assert!(
            kafka("acks = \"leader\"\nidempotence = false")
                .validate("o")
                .is_ok()
        );
        assert!(
            invalid("max_in_flight_records = 0").contains("`outputs[1].max_in_flight_records`")
        );
        assert!(invalid("tls = { cert = \"/c.pem\" }").contains("`outputs[1].tls`"));
        let mut k = kafka("");
        k.brokers = vec!["127.0.0.1:9092".into(), "nohost".into()];
        assert!(
            k.validate("o")
                .unwrap_err()
                .to_string()
                .contains("`o.brokers[1]`")
        );
        k.brokers.clear();
        assert!(
            k.validate("o")
                .unwrap_err()
                .to_string()
                .contains("`o.brokers`")
        );
        k = kafka("");
        k.topic.clear();
        assert!(
            k.validate("o")
                .unwrap_err()
                .to_string()
                .contains("`o.topic`")
        );
        for bad in [
            "compression = \"brotli\"",
            "partitioner = \"sticky\"",
            "sasl = { mechanism = \"GSSAPI\", username = \"u\", password_file = \"/p\" }",
            "format = \"avro\"",
            "acks = 2",
            "linger_ms = 5",
        ] {
            let text = format!("type = \"kafka\"\nbrokers = [\"b:1\"]\ntopic = \"t\"\n{bad}\n");
            assert!(toml::from_str::<OutputConfig>(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_password_file_is_an_error_naming_it() {
        let k = kafka(
            "sasl = { mechanism = \"PLAIN\", username = \"u\", password_file = \"/nonexistent/pw\" }",
        );
        let e = k.client_config().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/pw"), "{e}");
    }
}
