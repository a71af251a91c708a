//! NetFlow v5: a 24-byte header and up to 30 fixed 48-byte records.

use std::net::{IpAddr, Ipv4Addr};

use super::error::DecodeError;
use super::reader::{array_at, u8_at, u16_at, u32_at};
use super::state::{Ctx, Exporter};
use super::stats::DecodeOutcome;
use super::time::uptime_to_ns;
use crate::record::{FlowRecord, Protocol};

pub(crate) const HEADER_LEN: usize = 24;
pub(crate) const RECORD_LEN: usize = 48;

pub(super) fn decode(
    ctx: &mut Ctx<'_>,
    state: &mut Exporter,
    d: &[u8],
    out: &mut Vec<FlowRecord>,
) -> Result<DecodeOutcome, DecodeError> {
    let truncated = |offset| DecodeError::Truncated {
        protocol: Protocol::NetflowV5,
        what: "header",
        offset,
    };
    let count = u16_at(d, 2).ok_or(truncated(2))?;
    let sys_uptime = u32_at(d, 4).ok_or(truncated(4))?;
    let unix_secs = u32_at(d, 8).ok_or(truncated(8))?;
    let unix_nsecs = u32_at(d, 12).ok_or(truncated(12))?;
    let flow_sequence = u32_at(d, 16).ok_or(truncated(16))?;
    let engine_type = u8_at(d, 20).ok_or(truncated(20))?;
    let engine_id = u8_at(d, 21).ok_or(truncated(21))?;
    let sampling = u16_at(d, 22).ok_or(truncated(22))?;
    let need = HEADER_LEN + usize::from(count) * RECORD_LEN;
    if count == 0 || count > 30 || d.len() < need {
        return Err(DecodeError::BadLength {
            protocol: Protocol::NetflowV5,
            what: "record count",
            length: usize::from(count),
            offset: 2,
        });
    }
    let lost = state.track_sequence(
        (
            Protocol::NetflowV5,
            u32::from(engine_type) << 8 | u32::from(engine_id),
        ),
        flow_sequence,
        Some(u32::from(count)),
    );
    ctx.add_lost(lost);

    let export_ns = u64::from(unix_secs) * 1_000_000_000 + u64::from(unix_nsecs);
    let sampling_rate = u64::from(sampling & 0x3fff);
    out.reserve(usize::from(count));
    for i in 0..usize::from(count) {
        let Some(rec) = d.get(HEADER_LEN + i * RECORD_LEN..HEADER_LEN + (i + 1) * RECORD_LEN)
        else {
            break;
        };
        let v4 = |off| IpAddr::V4(Ipv4Addr::from(array_at::<4>(rec, off).unwrap_or_default()));
        let u16f = |off| u16_at(rec, off).unwrap_or_default();
        let u32f = |off| u32_at(rec, off).unwrap_or_default();
        let u8f = |off| u8_at(rec, off).unwrap_or_default();
        let mut r = FlowRecord {
            flow_type: Protocol::NetflowV5,
            time_received_ns: ctx.time_received_ns,
            sequence_num: flow_sequence,
            sampling_rate,
            sampler_address: Some(ctx.exporter),
            src_addr: Some(v4(0)),
            dst_addr: Some(v4(4)),
            next_hop: Some(v4(8)),
            in_if: u32::from(u16f(12)),
            out_if: u32::from(u16f(14)),
            packets: u64::from(u32f(16)),
            bytes: u64::from(u32f(20)),
            time_flow_start_ns: uptime_to_ns(export_ns, sys_uptime, u32f(24)),
            time_flow_end_ns: uptime_to_ns(export_ns, sys_uptime, u32f(28)),
            src_port: u16f(32),
            dst_port: u16f(34),
            tcp_flags: u16::from(u8f(37)),
            proto: u8f(38),
            ip_tos: u8f(39),
            src_as: u32::from(u16f(40)),
            dst_as: u32::from(u16f(42)),
            src_mask: u8f(44),
            dst_mask: u8f(45),
            etype: 0x0800,
            ..FlowRecord::default()
        };
        ctx.apply_sampling(&mut r);
        out.push(r);
    }
    Ok(DecodeOutcome::default())
}
