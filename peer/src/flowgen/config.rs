//! Encoder settings shared by all protocols.

use std::net::IpAddr;

/// Encoder settings shared by all protocols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Sampling rate announced (v5 header, v9/IPFIX options data, sFlow samples); 0 = none.
    pub sampling_rate: u32,
    /// v9/IPFIX: send templates and sampling options data in the first packet and then every
    /// this many packets (0 = only in the first). sFlow: a counter sample every this many.
    pub template_every: u32,
    /// IPFIX observation domain / v9 source id / sFlow sub-agent id / v5 engine id (low byte).
    pub observation_domain_id: u32,
    /// sFlow agent address (normally the exporter's own address).
    pub agent_address: IpAddr,
    /// The exporter's boot time, ns since the epoch (sysUptime base for v5/v9 and sFlow).
    pub boot_time_ns: u64,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            sampling_rate: 0,
            template_every: 100,
            observation_domain_id: 0,
            agent_address: IpAddr::from([0, 0, 0, 0]),
            boot_time_ns: 0,
        }
    }
}
