//! sFlow v5 datagrams: flow samples and expanded flow samples become records (one per sample,
//! from the sampled header or the IPv4/IPv6 data records, plus the switch, router and gateway
//! extensions); counter samples are counted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::DecodeError;
use super::packet;
use super::reader::Reader;
use super::state::{Ctx, Exporter};
use super::stats::DecodeOutcome;
use crate::record::Mac;
use crate::record::{FlowRecord, Protocol};

const P: Protocol = Protocol::Sflow5;

fn truncated(what: &'static str, offset: usize) -> DecodeError {
    DecodeError::Truncated {
        protocol: P,
        what,
        offset,
    }
}

/// An sFlow address: type (1 = IPv4, 2 = IPv6) and the address. `None` for unknown types.
fn address(r: &mut Reader<'_>) -> Option<Option<IpAddr>> {
    match r.u32()? {
        1 => Some(Some(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)))),
        2 => Some(Some(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)))),
        _ => Some(None),
    }
}

pub(super) fn decode(
    ctx: &mut Ctx<'_>,
    state: &mut Exporter,
    d: &[u8],
    out: &mut Vec<FlowRecord>,
) -> Result<DecodeOutcome, DecodeError> {
    let mut r = Reader::new(d);
    let t = |what, r: &Reader<'_>| truncated(what, r.pos());
    let _version = r.u32().ok_or(t("header", &r))?;
    let agent = address(&mut r).ok_or(t("agent address", &r))?;
    let Some(agent) = agent else {
        return Err(DecodeError::BadLength {
            protocol: P,
            what: "agent address type",
            length: 0,
            offset: 4,
        });
    };
    let sub_agent = r.u32().ok_or(t("header", &r))?;
    let sequence = r.u32().ok_or(t("header", &r))?;
    let _uptime = r.u32().ok_or(t("header", &r))?;
    let samples = r.u32().ok_or(t("header", &r))?;

    let lost = state.track_sequence((P, sub_agent), sequence, Some(1));
    ctx.add_lost(lost);

    let base = FlowRecord {
        flow_type: P,
        time_received_ns: ctx.time_received_ns,
        sequence_num: sequence,
        sampler_address: Some(agent),
        time_flow_start_ns: ctx.time_received_ns,
        time_flow_end_ns: ctx.time_received_ns,
        // No observation domain: GoFlow2 leaves it 0 for sFlow. The sub-agent id only
        // separates sequence-number streams (loss counting above).
        ..FlowRecord::default()
    };
    let mut outcome = DecodeOutcome::default();
    for _ in 0..samples {
        let at = r.pos();
        let format = r.u32().ok_or(truncated("sample header", at))?;
        let len = r.u32().ok_or(truncated("sample header", at))?;
        let body =
            usize::try_from(len)
                .ok()
                .and_then(|l| r.take(l))
                .ok_or(DecodeError::BadLength {
                    protocol: P,
                    what: "sample",
                    length: len as usize,
                    offset: at,
                })?;
        let base_off = at + 8;
        match (format >> 12, format & 0xfff) {
            (0, 1) => flow_sample(ctx, &base, body, false, base_off, out)?,
            (0, 3) => flow_sample(ctx, &base, body, true, base_off, out)?,
            (0, 2) | (0, 4) => {
                outcome.counter_samples += 1;
                ctx.stats.counter_samples += 1;
            }
            _ => {} // vendor samples: skipped
        }
    }
    Ok(outcome)
}

fn flow_sample(
    ctx: &mut Ctx<'_>,
    base: &FlowRecord,
    body: &[u8],
    expanded: bool,
    base_off: usize,
    out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    let mut s = Reader::new(body);
    let t = |s: &Reader<'_>| truncated("flow sample", base_off + s.pos());
    let mut rec = *base;
    let _sample_seq = s.u32().ok_or(t(&s))?;
    if expanded {
        let _source_type = s.u32().ok_or(t(&s))?;
        let _source_index = s.u32().ok_or(t(&s))?;
    } else {
        let _source_id = s.u32().ok_or(t(&s))?;
    }
    rec.sampling_rate = u64::from(s.u32().ok_or(t(&s))?);
    let _sample_pool = s.u32().ok_or(t(&s))?;
    let _drops = s.u32().ok_or(t(&s))?;
    if expanded {
        let _in_format = s.u32().ok_or(t(&s))?;
        rec.in_if = s.u32().ok_or(t(&s))?;
        let _out_format = s.u32().ok_or(t(&s))?;
        rec.out_if = s.u32().ok_or(t(&s))?;
    } else {
        // Top two bits: format (0 = ifIndex, 1 = discarded, 2 = multiple interfaces).
        rec.in_if = s.u32().ok_or(t(&s))? & 0x3fff_ffff;
        rec.out_if = s.u32().ok_or(t(&s))? & 0x3fff_ffff;
    }
    let records = s.u32().ok_or(t(&s))?;
    rec.packets = 1;
    for _ in 0..records {
        let at = base_off + s.pos();
        let format = s.u32().ok_or(truncated("flow record", at))?;
        let len = s.u32().ok_or(truncated("flow record", at))?;
        let data =
            usize::try_from(len)
                .ok()
                .and_then(|l| s.take(l))
                .ok_or(DecodeError::BadLength {
                    protocol: P,
                    what: "flow record",
                    length: len as usize,
                    offset: at,
                })?;
        flow_record(format, data, &mut rec).ok_or(truncated("flow record", at + 8))?;
    }
    ctx.apply_sampling(&mut rec);
    out.push(rec);
    Ok(())
}

/// Apply one flow record to `rec`; `None` when it is shorter than its format requires.
fn flow_record(format: u32, data: &[u8], rec: &mut FlowRecord) -> Option<()> {
    let mut d = Reader::new(data);
    match format {
        // Raw packet header.
        1 => {
            let header_protocol = d.u32()?;
            let frame_length = d.u32()?;
            let _stripped = d.u32()?;
            let header_len = usize::try_from(d.u32()?).ok()?;
            let header = d.take(header_len)?;
            rec.bytes = u64::from(frame_length);
            packet::parse(header_protocol, header, rec);
        }
        // Ethernet frame data.
        2 => {
            let length = d.u32()?;
            let src = d.array::<8>()?;
            let dst = d.array::<8>()?;
            let etype = d.u32()?;
            if rec.bytes == 0 {
                rec.bytes = u64::from(length);
            }
            rec.src_mac = Mac(src.first_chunk::<6>().copied()?);
            rec.dst_mac = Mac(dst.first_chunk::<6>().copied()?);
            rec.etype = etype as u16;
        }
        // IPv4 data / IPv6 data.
        3 | 4 => {
            let length = d.u32()?;
            let proto = d.u32()?;
            let (src, dst) = if format == 3 {
                (
                    IpAddr::V4(Ipv4Addr::from(d.array::<4>()?)),
                    IpAddr::V4(Ipv4Addr::from(d.array::<4>()?)),
                )
            } else {
                (
                    IpAddr::V6(Ipv6Addr::from(d.array::<16>()?)),
                    IpAddr::V6(Ipv6Addr::from(d.array::<16>()?)),
                )
            };
            let src_port = d.u32()?;
            let dst_port = d.u32()?;
            let tcp_flags = d.u32()?;
            let tos = d.u32()?;
            if rec.src_addr.is_none() {
                rec.bytes = u64::from(length);
                rec.proto = proto as u8;
                rec.src_addr = Some(src);
                rec.dst_addr = Some(dst);
                rec.src_port = src_port as u16;
                rec.dst_port = dst_port as u16;
                rec.tcp_flags = tcp_flags as u16;
                rec.ip_tos = tos as u8;
                rec.etype = if format == 3 {
                    packet::ETYPE_IPV4
                } else {
                    packet::ETYPE_IPV6
                };
            }
        }
        // Extended switch.
        1001 => {
            rec.src_vlan = d.u32()? as u16;
            let _src_priority = d.u32()?;
            rec.dst_vlan = d.u32()? as u16;
        }
        // Extended router.
        1002 => {
            rec.next_hop = address(&mut d)?;
            rec.src_mask = d.u32()? as u8;
            rec.dst_mask = d.u32()? as u8;
        }
        // Extended gateway: BGP next hop, AS numbers and the destination AS path.
        1003 => {
            rec.bgp_next_hop = address(&mut d)?;
            let as_number = d.u32()?;
            let src_as = d.u32()?;
            let _src_peer_as = d.u32()?;
            // GoFlow2: an unknown (0) source AS is this router's own AS.
            rec.src_as = if src_as > 0 { src_as } else { as_number };
            rec.dst_as = as_number;
            let segments = d.u32()?;
            let mut first_hop = None;
            let mut last = None;
            rec.as_path.clear();
            for _ in 0..segments {
                let _seg_type = d.u32()?;
                let n = d.u32()?;
                for _ in 0..n {
                    let asn = d.u32()?;
                    first_hop.get_or_insert(asn);
                    last = Some(asn);
                    rec.as_path.push(asn);
                }
            }
            // Communities, then the local preference (an exporter that cuts the record short
            // keeps what came before).
            rec.bgp_communities.clear();
            for _ in 0..d.u32().unwrap_or(0) {
                let Some(c) = d.u32() else { break };
                rec.bgp_communities.push(c);
            }
            if let Some(last) = last {
                rec.dst_as = last;
            }
            if let Some(first) = first_hop {
                rec.next_hop_as = first;
            }
        }
        _ => {}
    }
    Some(())
}
