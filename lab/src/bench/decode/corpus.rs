//! The benchmark's corpus: datagrams encoded by `sluice_peer::flowgen` from many exporters, in
//! the order they are sent (exporters take turns), each exporter's own datagrams in sequence
//! with templates (v9, IPFIX) or counter samples (sFlow) in its first and every 100th.

use std::net::{IpAddr, Ipv4Addr};

use sluice_peer::flowgen::{Encoder, EncoderConfig, FlowRecord, FlowSynth, Protocol};

/// Records per datagram for v5 (its maximum), v9 and IPFIX.
pub const RECORDS: usize = 30;
/// sFlow datagrams carry as many samples as fit in this many bytes.
const SFLOW_BYTES: usize = 1400;
/// Exporters per protocol.
pub const EXPORTERS: usize = 100;
/// Datagrams per exporter (a multiple of the template interval, so a corpus sent in a loop
/// keeps templates every 100 datagrams).
const PER_EXPORTER: usize = 200;
/// v9/IPFIX templates (sFlow: counter samples) every this many datagrams of an exporter.
pub const TEMPLATE_EVERY: u32 = 100;

/// Datagrams and what they carry.
pub struct Corpus {
    /// (exporter address, UDP payload), in sending order.
    pub datagrams: Vec<(IpAddr, Vec<u8>)>,
    /// Flow records in each datagram.
    pub flows_in: Vec<u32>,
    /// Flow records in all datagrams.
    pub flows: u64,
    /// UDP payload bytes of all datagrams.
    pub bytes: u64,
}

impl Corpus {
    /// [`EXPORTERS`] exporters of `protocol` at 127.N.0.x (N from the protocol; every
    /// 127/8 address is local, so the sender can use them as sources on loopback).
    pub fn new(protocol: Protocol) -> Self {
        Self::interleave(&[protocol])
    }

    /// Several protocols' exporters, taking turns.
    pub fn interleave(protocols: &[Protocol]) -> Self {
        const BOOT_NS: u64 = 1_763_700_000_000_000_000;
        const EXPORT_NS: u64 = BOOT_NS + 3_600_000_000_000;
        let mut exporters: Vec<(IpAddr, Encoder, FlowSynth, usize)> = Vec::new();
        for &p in protocols {
            let n = protocol_index(p);
            for i in 0..EXPORTERS {
                let addr = IpAddr::V4(Ipv4Addr::new(127, 1 + n as u8, 0, 1 + i as u8));
                let encoder = Encoder::new(
                    p,
                    EncoderConfig {
                        template_every: TEMPLATE_EVERY,
                        observation_domain_id: 1,
                        agent_address: addr,
                        boot_time_ns: BOOT_NS,
                        ..EncoderConfig::default()
                    },
                );
                let mut synth = FlowSynth::new((n * EXPORTERS + i) as u64, p);
                let records = match p {
                    Protocol::Sflow5 => fitting(&encoder, &mut synth, EXPORT_NS),
                    _ => RECORDS,
                };
                exporters.push((addr, encoder, synth, records));
            }
        }
        let mut corpus = Corpus {
            datagrams: Vec::with_capacity(exporters.len() * PER_EXPORTER),
            flows_in: Vec::with_capacity(exporters.len() * PER_EXPORTER),
            flows: 0,
            bytes: 0,
        };
        let mut flows: Vec<FlowRecord> = Vec::new();
        for k in 0..PER_EXPORTER {
            let now = EXPORT_NS + k as u64 * 1_000_000;
            for (addr, encoder, synth, records) in &mut exporters {
                flows.clear();
                flows.extend((0..*records).map(|_| synth.flow(now)));
                let mut datagram = Vec::new();
                encoder.encode(&flows, now, &mut datagram);
                corpus.flows += flows.len() as u64;
                corpus.flows_in.push(flows.len() as u32);
                corpus.bytes += datagram.len() as u64;
                corpus.datagrams.push((*addr, datagram));
            }
        }
        corpus
    }

    /// Flow records per datagram, on average.
    pub fn flows_per_datagram(&self) -> f64 {
        self.flows as f64 / self.datagrams.len() as f64
    }

    /// UDP payload bytes per datagram, on average.
    pub fn bytes_per_datagram(&self) -> f64 {
        self.bytes as f64 / self.datagrams.len() as f64
    }
}

fn protocol_index(p: Protocol) -> usize {
    Protocol::ALL.iter().position(|&q| q == p).unwrap_or(0)
}

/// How many of `synth`'s next flows one datagram of [`SFLOW_BYTES`] holds (tried on clones).
fn fitting(encoder: &Encoder, synth: &mut FlowSynth, now: u64) -> usize {
    let mut probe = synth.clone();
    let mut flows = Vec::new();
    let mut out = Vec::new();
    loop {
        flows.push(probe.flow(now));
        encoder.clone().encode(&flows, now, &mut out);
        if out.len() > SFLOW_BYTES || flows.len() > encoder.max_flows_per_datagram() {
            return (flows.len() - 1).max(1);
        }
    }
}
