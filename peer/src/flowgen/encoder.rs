//! [`Encoder`]: one exporter's encoder, whichever protocol it speaks.

use super::config::EncoderConfig;
use super::{netflow, netflow5, sflow};
use crate::record::{FlowRecord, Protocol};

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
