use serde::Deserialize;

use crate::config::error::{ConfigError, positive};
use crate::output::buffer::default_buffer_records;
use crate::output::format::Fields;

/// Transport to the syslog server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Udp,
    Tcp,
}

/// `[[outputs]] type = "syslog"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `HOST:PORT` of the syslog server.
    pub address: String,
    /// `udp` (default) or `tcp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Syslog facility number, 0..=23 (default 16, local0).
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// Syslog severity number, 0..=7 (default 6, informational).
    #[serde(default = "default_severity")]
    pub severity: u8,
    /// APP-NAME field.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// HOSTNAME field; the host name when absent.
    #[serde(default)]
    pub hostname: Option<String>,
    /// JSON fields kept in each message, in this order (GoFlow2's `formatter.fields`); all when
    /// absent.
    #[serde(default)]
    pub fields: Option<Fields>,
    /// Records buffered while the server is slow or unreachable.
    #[serde(default = "default_buffer_records")]
    pub buffer_records: usize,
}

fn default_facility() -> u8 {
    16
}

fn default_severity() -> u8 {
    6
}

fn default_app_name() -> String {
    "sluice-peer".to_owned()
}

impl SyslogConfig {
    /// A syslog output with default fields sending to `address`.
    pub fn to(protocol: Protocol, address: String) -> Self {
        SyslogConfig {
            address,
            protocol,
            facility: default_facility(),
            severity: default_severity(),
            app_name: default_app_name(),
            hostname: None,
            fields: None,
            buffer_records: default_buffer_records(),
        }
    }

    pub(crate) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let port_ok = self.address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(ConfigError::invalid(
                format!("{key}.address"),
                format!("`{}` is not HOST:PORT", self.address),
            ));
        }
        if self.facility > 23 {
            return Err(ConfigError::invalid(
                format!("{key}.facility"),
                format!("{} is outside 0..=23", self.facility),
            ));
        }
        if self.severity > 7 {
            return Err(ConfigError::invalid(
                format!("{key}.severity"),
                format!("{} is outside 0..=7", self.severity),
            ));
        }
        header_field(&format!("{key}.app_name"), &self.app_name, 48)?;
        if let Some(h) = &self.hostname {
            header_field(&format!("{key}.hostname"), h, 255)?;
        }
        Ok(())
    }
}

/// RFC 5424 header fields are 1..=max printable US-ASCII characters without spaces.
fn header_field(key: &str, value: &str, max: usize) -> Result<(), ConfigError> {
    positive(key, value.len(), max)?;
    if value.bytes().all(|b| (33..=126).contains(&b)) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("`{value}` must be printable ASCII without spaces"),
        ))
    }
}
