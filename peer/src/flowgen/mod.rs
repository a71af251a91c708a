//! Flow generator: encoders for NetFlow v5, NetFlow v9, IPFIX and sFlow v5, a deterministic
//! synthetic traffic source, and a rate-paced UDP sender (used by the `sluice-flowgen` binary,
//! the demo, end-to-end tests and benchmarks).
//!
//! Encoders take [`FlowRecord`]s and write the fields their protocol can carry, so
//! `decode(encode(flows))` gives the flows back (the round-trip property tests rely on this):
//! times at millisecond precision, v5 IPv4 only with 16-bit interfaces and AS numbers, sFlow
//! one packet per sample with `bytes` as the frame length.

mod netflow;
mod netflow5;
pub mod send;
mod sflow;
mod synth;

use std::net::IpAddr;

pub use crate::record::{FlowRecord, Protocol};
pub use synth::FlowSynth;

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

/// A stateful encoder for one exporter (it keeps sequence numbers and template timing).
#[derive(Debug, Clone)]
pub enum Encoder {
    NetflowV5(netflow5::V5Encoder),
    /// NetFlow v9 or IPFIX.
    Template(netflow::TemplateEncoder),
    Sflow(sflow::SflowEncoder),
}

impl Encoder {
    pub fn new(protocol: Protocol, cfg: EncoderConfig) -> Self {
        match protocol {
            Protocol::NetflowV5 => Encoder::NetflowV5(netflow5::V5Encoder::new(cfg)),
            Protocol::NetflowV9 | Protocol::Ipfix => {
                Encoder::Template(netflow::TemplateEncoder::new(protocol, cfg))
            }
            Protocol::Sflow5 => Encoder::Sflow(sflow::SflowEncoder::new(cfg)),
        }
    }

    pub fn protocol(&self) -> Protocol {
        match self {
            Encoder::NetflowV5(_) => Protocol::NetflowV5,
            Encoder::Template(e) => e.protocol(),
            Encoder::Sflow(_) => Protocol::Sflow5,
        }
    }

    /// Most flows one datagram can carry (v5: 30).
    pub fn max_flows_per_datagram(&self) -> usize {
        match self {
            Encoder::NetflowV5(_) => netflow5::MAX_RECORDS,
            _ => usize::from(u16::MAX),
        }
    }

    /// Encode one datagram carrying `flows` (at most [`Self::max_flows_per_datagram`]; extra
    /// flows are not encoded) exported at `export_ns`, replacing the contents of `out`.
    pub fn encode(&mut self, flows: &[FlowRecord], export_ns: u64, out: &mut Vec<u8>) {
        out.clear();
        let flows = flows
            .get(..flows.len().min(self.max_flows_per_datagram()))
            .unwrap_or(flows);
        match self {
            Encoder::NetflowV5(e) => e.encode(flows, export_ns, out),
            Encoder::Template(e) => e.encode(flows, export_ns, out),
            Encoder::Sflow(e) => e.encode(flows, export_ns, out),
        }
    }
}

/// Byte-writing helpers shared by the encoders.
pub(crate) mod wire {
    use std::net::IpAddr;

    pub(crate) fn u8(out: &mut Vec<u8>, v: u8) {
        out.push(v);
    }
    pub(crate) fn u16(out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u32(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(out: &mut Vec<u8>, v: u64) {
        out.extend_from_slice(&v.to_be_bytes());
    }
    /// IPv4 address bytes; IPv6 addresses (and none) write 0.0.0.0.
    pub(crate) fn ipv4(out: &mut Vec<u8>, a: Option<IpAddr>) {
        match a {
            Some(IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
            _ => out.extend_from_slice(&[0; 4]),
        }
    }
    /// IPv6 address bytes; IPv4 addresses are written IPv4-mapped, none as `::`.
    pub(crate) fn ipv6(out: &mut Vec<u8>, a: Option<IpAddr>) {
        match a {
            Some(IpAddr::V6(a)) => out.extend_from_slice(&a.octets()),
            Some(IpAddr::V4(a)) => out.extend_from_slice(&a.to_ipv6_mapped().octets()),
            None => out.extend_from_slice(&[0; 16]),
        }
    }
    /// Overwrite a big-endian u16 written earlier (no-op if `at` is out of range).
    pub(crate) fn patch_u16(out: &mut [u8], at: usize, v: u16) {
        if let Some(s) = out.get_mut(at..at + 2) {
            s.copy_from_slice(&v.to_be_bytes());
        }
    }
    pub(crate) fn patch_u32(out: &mut [u8], at: usize, v: u32) {
        if let Some(s) = out.get_mut(at..at + 4) {
            s.copy_from_slice(&v.to_be_bytes());
        }
    }
    /// Milliseconds of sysUptime at `t_ns` for an exporter booted at `boot_ns` (wraps like a
    /// real 32-bit uptime counter).
    pub(crate) fn uptime_ms(boot_ns: u64, t_ns: u64) -> u32 {
        (t_ns.wrapping_sub(boot_ns) / 1_000_000) as u32
    }
}
