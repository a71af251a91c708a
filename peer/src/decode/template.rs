//! NetFlow v9 / IPFIX templates, compiled once into a field program that data records run
//! through. Shared by both protocols: v9 is IPFIX without enterprise bits, variable-length fields
//! or withdrawal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::error::DecodeError;
use super::packet;
use super::reader::{be_uint, u8_at, u16_at};
use super::time::uptime_to_ns;
use crate::record::{FlowRecord, Protocol};

/// IPFIX field length meaning "variable length, prefixed in the record" (RFC 7011 §7).
pub(crate) const VARLEN: u16 = 0xffff;

/// Templates are keyed per (exporter, protocol, observation domain / source id, template id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TemplateKey {
    pub(crate) protocol: Protocol,
    pub(crate) domain: u32,
    pub(crate) template_id: u16,
}

/// When, in the exporter's own terms, a template or an options value last changed: the export
/// header's unix seconds and sequence number of the message that carried the change.
///
/// Peers compare stamps to merge template state handed over through Central: what one peer
/// learned from the wire after an exporter moved to it is newer than anything the previous peer
/// received before the move, whatever order the hand-over messages arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Export time (unix seconds) of the message.
    pub export_secs: u32,
    /// Its sequence number (per source id / observation domain).
    pub sequence: u32,
}

impl Stamp {
    /// `self` is strictly later than `other`: a later export second, or within one second a
    /// later sequence number (serial-number arithmetic, so a wrap at 2^32 still counts as later).
    pub fn is_after(self, other: Stamp) -> bool {
        match self.export_secs.cmp(&other.export_secs) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => {
                let diff = self.sequence.wrapping_sub(other.sequence);
                diff != 0 && diff < 1 << 31
            }
        }
    }

    /// Whether state stamped `incoming` may replace state stamped `existing`: an unstamped
    /// import (an older peer) always may, and stamped state replaces only older state.
    pub fn replaces(incoming: Option<Stamp>, existing: Option<Stamp>) -> bool {
        match (incoming, existing) {
            (None, _) | (Some(_), None) => true,
            (Some(new), Some(old)) => new.is_after(old),
        }
    }
}

/// One field of a template as sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldSpec {
    /// Information element id (without the enterprise bit).
    pub id: u16,
    /// Length in bytes; 65535 means variable length (IPFIX).
    pub length: u16,
    /// Private enterprise number of enterprise-specific fields (skipped when decoding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise: Option<u32>,
}

/// Where a field's value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Skip,
    Bytes,
    Packets,
    Proto,
    Tos,
    TcpFlags,
    SrcPort,
    DstPort,
    SrcAddr,
    DstAddr,
    SrcMask,
    DstMask,
    InIf,
    OutIf,
    NextHop,
    BgpNextHop,
    SrcAs,
    DstAs,
    NextHopAs,
    EndUptime,
    StartUptime,
    SrcMac,
    DstMac,
    SrcVlan,
    DstVlan,
    VlanId,
    IpVersion,
    Etype,
    FlowLabel,
    IcmpTypeCode,
    IcmpType,
    IcmpCode,
    SamplingInterval,
    PacketInterval,
    PacketSpace,
    ForwardingStatus,
    Ttl,
    FragFlags,
    FragId,
    FragOffset,
    StartSec,
    EndSec,
    StartMs,
    EndMs,
    StartNtp,
    EndNtp,
    StartDeltaUs,
    EndDeltaUs,
    SysInitMs,
    ObsPointId,
    /// mplsTopLabelStackSection (70) and sections 2, 3 (71, 72): label = value >> 4.
    MplsLabel(u8),
    /// mplsTopLabelIPv4Address (47), mplsTopLabelIPv6Address (140).
    MplsIp,
    /// dataLinkFrameSize (312): one sampled frame of this many bytes (RFC 7133).
    FrameSize,
    /// dataLinkFrameSection (315): the start of one sampled frame, parsed like an sFlow header.
    FrameSection,
}

/// The IANA IPFIX information element (NetFlow v9 field type) → record field mapping: the
/// element GoFlow2's producer (`producer_nf.go`) maps lands in the same field; the additions
/// (85/86, 192, 243, 256, 21/22 in IPFIX, 150–159 in v9) are listed in README under
/// "Differences from GoFlow2".
fn target_of(f: &FieldSpec) -> Target {
    if f.enterprise.is_some() {
        return Target::Skip;
    }
    let len = f.length;
    let t = match f.id {
        1 | 23 | 85 => Target::Bytes,
        2 | 24 | 86 => Target::Packets,
        4 => Target::Proto,
        5 => Target::Tos,
        6 => Target::TcpFlags,
        7 => Target::SrcPort,
        8 | 27 => Target::SrcAddr,
        9 | 29 => Target::SrcMask,
        10 => Target::InIf,
        11 => Target::DstPort,
        12 | 28 => Target::DstAddr,
        13 | 30 => Target::DstMask,
        14 => Target::OutIf,
        15 | 62 => Target::NextHop,
        16 => Target::SrcAs,
        17 => Target::DstAs,
        18 | 63 => Target::BgpNextHop,
        21 => Target::EndUptime,
        22 => Target::StartUptime,
        31 => Target::FlowLabel,
        32 | 139 => Target::IcmpTypeCode,
        34 | 50 => Target::SamplingInterval,
        305 => Target::PacketInterval,
        306 => Target::PacketSpace,
        54 => Target::FragId,
        56 | 81 => Target::SrcMac,
        57 | 80 => Target::DstMac,
        58 => Target::SrcVlan,
        59 => Target::DstVlan,
        60 => Target::IpVersion,
        88 => Target::FragOffset,
        89 => Target::ForwardingStatus,
        128 => Target::NextHopAs,
        138 => Target::ObsPointId,
        150 => Target::StartSec,
        151 => Target::EndSec,
        152 => Target::StartMs,
        153 => Target::EndMs,
        154 | 156 => Target::StartNtp,
        155 | 157 => Target::EndNtp,
        158 => Target::StartDeltaUs,
        159 => Target::EndDeltaUs,
        160 => Target::SysInitMs,
        176 | 178 => Target::IcmpType,
        177 | 179 => Target::IcmpCode,
        52 | 192 => Target::Ttl,
        197 => Target::FragFlags,
        243 => Target::VlanId,
        256 => Target::Etype,
        70 => Target::MplsLabel(0),
        71 => Target::MplsLabel(1),
        72 => Target::MplsLabel(2),
        47 | 140 => Target::MplsIp,
        312 => Target::FrameSize,
        315 => Target::FrameSection,
        _ => Target::Skip,
    };
    // A field whose length does not fit its meaning is kept in the template (so offsets stay
    // right) but not decoded.
    let fits = match t {
        Target::SrcAddr
        | Target::DstAddr
        | Target::NextHop
        | Target::BgpNextHop
        | Target::MplsIp => len == 4 || len == 16,
        Target::SrcMac | Target::DstMac => len == 6,
        Target::StartNtp | Target::EndNtp => len == 8,
        // Any length, variable-length included: a frame prefix.
        Target::FrameSection => len > 0,
        // Variable length (65535) fits no number.
        _ => (1..=8).contains(&len),
    };
    if fits { t } else { Target::Skip }
}

#[derive(Debug, Clone, Copy)]
struct Op {
    /// Offset in the record (meaningful for fixed-length templates only).
    offset: u16,
    len: u16,
    target: Target,
}

/// A compiled template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    fields: Vec<FieldSpec>,
    scope_field_count: u16,
    options: bool,
    ops: Vec<Op>,
    /// Record length when no field is variable-length.
    fixed_len: Option<usize>,
    /// Shortest possible record (variable-length fields count one byte).
    min_len: usize,
    /// The message that defined it (or the imported definition's stamp).
    stamp: Option<Stamp>,
}

/// What options data told us about an observation domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DomainOptions {
    /// Sampling rate (0 = none announced).
    pub(crate) sampling_rate: u64,
    /// IPFIX systemInitTimeMilliseconds: the base of flowStart/EndSysUpTime (fields 22/21).
    pub(crate) system_init_ms: Option<u64>,
    /// The message whose options data last changed these values.
    pub(crate) stamp: Option<Stamp>,
}

impl DomainOptions {
    /// The same values, whatever their stamps.
    pub(crate) fn same_values(&self, other: &DomainOptions) -> bool {
        self.sampling_rate == other.sampling_rate && self.system_init_ms == other.system_init_ms
    }
}

/// Export-header facts that data records are interpreted against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeBase {
    pub(crate) export_ns: u64,
    /// NetFlow v9 only: the exporter's sysUptime (ms) at export.
    pub(crate) sys_uptime_ms: Option<u32>,
    /// IPFIX: systemInitTimeMilliseconds from the domain's options data.
    pub(crate) system_init_ms: Option<u64>,
}

/// Per-record values that need finishing once all fields are read.
#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    start_uptime: Option<u32>,
    end_uptime: Option<u32>,
    start_delta_us: Option<u64>,
    end_delta_us: Option<u64>,
    sys_init_ms: Option<u64>,
    sampling: Option<u64>,
    packet_interval: Option<u64>,
    packet_space: Option<u64>,
}

impl Pending {
    fn sampling_rate(&self) -> Option<u64> {
        match (self.packet_interval, self.packet_space) {
            (Some(i), Some(s)) if i > 0 => Some(i.saturating_add(s) / i),
            (Some(i), None) => Some(i),
            _ => self.sampling,
        }
    }
}

/// Why a data set stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShortRecord {
    pub(crate) offset: usize,
}

fn ntp_to_ns(v: u64) -> u64 {
    // NTP timestamp: seconds since 1900 in the high half, binary fraction in the low half.
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let secs = (v >> 32).saturating_sub(NTP_UNIX_OFFSET);
    let frac = ((v & 0xffff_ffff) * 1_000_000_000) >> 32;
    secs.saturating_mul(1_000_000_000).saturating_add(frac)
}

#[inline(always)]
fn ip_of(v: &[u8]) -> Option<IpAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(v) {
        Some(IpAddr::V4(Ipv4Addr::from(a)))
    } else {
        <[u8; 16]>::try_from(v)
            .ok()
            .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
    }
}

/// GoFlow2's rule for address fields: the first one seen sets the address, a later one
/// replaces it unless it is all zeros (a template with both IPv4 and IPv6 fields fills the
/// unused family with zeros); the address's family sets the Ethernet type.
#[inline(always)]
fn set_addr(slot: &mut Option<IpAddr>, etype: &mut u16, v: &[u8]) {
    if slot.is_some() && v.iter().all(|&b| b == 0) {
        return;
    }
    *slot = ip_of(v);
    *etype = if v.len() == 16 {
        packet::ETYPE_IPV6
    } else {
        packet::ETYPE_IPV4
    };
}

fn mac_of(v: &[u8]) -> crate::record::Mac {
    crate::record::Mac(<[u8; 6]>::try_from(v).unwrap_or_default())
}

#[inline(always)]
fn apply(target: Target, v: &[u8], r: &mut FlowRecord, p: &mut Pending) {
    // Narrowing casts below keep the low bits of reduced-size or oversized values, the way
    // every collector does.
    let n = || be_uint(v);
    match target {
        Target::Skip => {}
        Target::Bytes => r.bytes = n(),
        Target::Packets => r.packets = n(),
        Target::Proto => r.proto = n() as u8,
        Target::Tos => r.ip_tos = n() as u8,
        Target::TcpFlags => r.tcp_flags = n() as u16,
        Target::SrcPort => r.src_port = n() as u16,
        Target::DstPort => r.dst_port = n() as u16,
        Target::SrcAddr => set_addr(&mut r.src_addr, &mut r.etype, v),
        Target::DstAddr => set_addr(&mut r.dst_addr, &mut r.etype, v),
        Target::SrcMask => r.src_mask = n() as u8,
        Target::DstMask => r.dst_mask = n() as u8,
        Target::InIf => r.in_if = n() as u32,
        Target::OutIf => r.out_if = n() as u32,
        Target::NextHop => r.next_hop = ip_of(v),
        Target::BgpNextHop => r.bgp_next_hop = ip_of(v),
        Target::SrcAs => r.src_as = n() as u32,
        Target::DstAs => r.dst_as = n() as u32,
        Target::NextHopAs => r.next_hop_as = n() as u32,
        Target::EndUptime => p.end_uptime = Some(n() as u32),
        Target::StartUptime => p.start_uptime = Some(n() as u32),
        Target::SrcMac => r.src_mac = mac_of(v),
        Target::DstMac => r.dst_mac = mac_of(v),
        // GoFlow2 reports SRC_VLAN as `vlan_id` too.
        Target::SrcVlan => {
            r.src_vlan = n() as u16;
            r.vlan_id = r.src_vlan;
        }
        Target::DstVlan => r.dst_vlan = n() as u16,
        Target::VlanId => r.vlan_id = n() as u16,
        Target::IpVersion => {
            r.etype = match n() {
                4 => 0x0800,
                6 => 0x86dd,
                _ => r.etype,
            }
        }
        Target::Etype => r.etype = n() as u16,
        Target::FlowLabel => r.ipv6_flow_label = n() as u32,
        Target::IcmpTypeCode => {
            let tc = n();
            r.icmp_type = (tc >> 8) as u8;
            r.icmp_code = tc as u8;
        }
        Target::IcmpType => r.icmp_type = n() as u8,
        Target::IcmpCode => r.icmp_code = n() as u8,
        Target::SamplingInterval => p.sampling = Some(n()),
        Target::PacketInterval => p.packet_interval = Some(n()),
        Target::PacketSpace => p.packet_space = Some(n()),
        Target::ForwardingStatus => r.forwarding_status = n() as u8,
        Target::Ttl => r.ip_ttl = n() as u8,
        // fragmentFlags carries the IPv4 flags in its top three bits (RFC 7012 §5.4.7);
        // `ip_flags` holds them as the header's 3-bit field, as sFlow headers give them.
        Target::FragFlags => r.ip_flags = (n() >> 5) as u8,
        Target::FragId => r.fragment_id = n() as u32,
        Target::FragOffset => r.fragment_offset = n() as u16,
        Target::StartSec => r.time_flow_start_ns = n().saturating_mul(1_000_000_000),
        Target::EndSec => r.time_flow_end_ns = n().saturating_mul(1_000_000_000),
        Target::StartMs => r.time_flow_start_ns = n().saturating_mul(1_000_000),
        Target::EndMs => r.time_flow_end_ns = n().saturating_mul(1_000_000),
        Target::StartNtp => r.time_flow_start_ns = ntp_to_ns(n()),
        Target::EndNtp => r.time_flow_end_ns = ntp_to_ns(n()),
        Target::StartDeltaUs => p.start_delta_us = Some(n()),
        Target::EndDeltaUs => p.end_delta_us = Some(n()),
        Target::SysInitMs => p.sys_init_ms = Some(n()),
        Target::ObsPointId => r.observation_point_id = n() as u32,
        Target::MplsLabel(i) => r.mpls_label.set(usize::from(i), (n() >> 4) as u32),
        Target::MplsIp => {
            if let Some(a) = ip_of(v) {
                r.mpls_ip.push(a);
            }
        }
        Target::FrameSize => {
            r.bytes = n();
            r.packets = 1;
        }
        Target::FrameSection => {
            packet::parse(packet::HEADER_ETHERNET, v, r);
            r.packets = 1;
            if r.bytes == 0 {
                r.bytes = v.len() as u64;
            }
        }
    }
}

#[inline(always)]
fn finish(r: &mut FlowRecord, p: &Pending, tb: &TimeBase) {
    let relative = |stamp: u32| match (tb.sys_uptime_ms, p.sys_init_ms.or(tb.system_init_ms)) {
        (_, Some(init_ms)) => Some(
            init_ms
                .saturating_add(u64::from(stamp))
                .saturating_mul(1_000_000),
        ),
        (Some(up), None) => Some(uptime_to_ns(tb.export_ns, up, stamp)),
        (None, None) => None,
    };
    if let Some(t) = p.start_uptime.and_then(relative) {
        r.time_flow_start_ns = t;
    }
    if let Some(t) = p.end_uptime.and_then(relative) {
        r.time_flow_end_ns = t;
    }
    if let Some(d) = p.start_delta_us {
        r.time_flow_start_ns = tb.export_ns.saturating_sub(d.saturating_mul(1000));
    }
    if let Some(d) = p.end_delta_us {
        r.time_flow_end_ns = tb.export_ns.saturating_sub(d.saturating_mul(1000));
    }
    if let Some(rate) = p.sampling_rate() {
        r.sampling_rate = rate;
    }
}

impl Template {
    /// Compile a template; `scope_field_count` leading fields of an options template are scope.
    pub(crate) fn compile(
        key: TemplateKey,
        fields: Vec<FieldSpec>,
        scope_field_count: u16,
        options: bool,
    ) -> Result<Template, DecodeError> {
        let bad = |reason| DecodeError::BadTemplate {
            protocol: key.protocol,
            domain: key.domain,
            template_id: key.template_id,
            reason,
        };
        if key.template_id < 256 {
            return Err(bad("template id below 256"));
        }
        if usize::from(scope_field_count) > fields.len() {
            return Err(bad("more scope fields than fields"));
        }
        if key.protocol != Protocol::Ipfix
            && fields
                .iter()
                .any(|f| f.length == VARLEN || f.enterprise.is_some())
        {
            return Err(bad("variable-length or enterprise field outside IPFIX"));
        }
        let mut ops = Vec::with_capacity(fields.len());
        let mut min_len = 0usize;
        let mut variable = false;
        for (i, f) in fields.iter().enumerate() {
            let is_scope = i < usize::from(scope_field_count);
            let target = if is_scope { Target::Skip } else { target_of(f) };
            if f.length == VARLEN {
                variable = true;
                min_len += 1;
            } else {
                min_len += usize::from(f.length);
            }
            ops.push(Op {
                offset: 0,
                len: f.length,
                target,
            });
        }
        if min_len == 0 {
            return Err(bad("records of zero length"));
        }
        // Merge runs of skipped fixed-length fields so the record loop does less work.
        let mut merged: Vec<Op> = Vec::with_capacity(ops.len());
        for op in ops {
            match merged.last_mut() {
                Some(last)
                    if last.target == Target::Skip
                        && op.target == Target::Skip
                        && last.len != VARLEN
                        && op.len != VARLEN
                        && u32::from(last.len) + u32::from(op.len) < u32::from(VARLEN) =>
                {
                    last.len += op.len;
                }
                _ => merged.push(op),
            }
        }
        let mut offset = 0u16;
        for op in &mut merged {
            op.offset = offset;
            offset = offset.wrapping_add(op.len);
        }
        Ok(Template {
            fields,
            scope_field_count,
            options,
            ops: merged,
            fixed_len: (!variable).then_some(min_len),
            min_len,
            stamp: None,
        })
    }

    /// The template with the stamp of the message that defined it.
    pub(crate) fn stamped(mut self, stamp: Option<Stamp>) -> Template {
        self.stamp = stamp;
        self
    }

    pub(crate) fn stamp(&self) -> Option<Stamp> {
        self.stamp
    }

    /// Same fields, scope and kind (a refresh), whatever the stamps.
    pub(crate) fn same_definition(&self, other: &Template) -> bool {
        self.fields == other.fields
            && self.scope_field_count == other.scope_field_count
            && self.options == other.options
    }

    pub(crate) fn is_options(&self) -> bool {
        self.options
    }

    pub(crate) fn snapshot(&self, key: TemplateKey) -> TemplateSnapshot {
        TemplateSnapshot::Template {
            protocol: key.protocol,
            observation_domain_id: key.domain,
            template_id: key.template_id,
            scope_field_count: self.scope_field_count,
            options: self.options,
            fields: self.fields.clone(),
            stamp: self.stamp,
        }
    }

    /// Run one record starting at `body[off..]`; returns the offset after it, or `None` when
    /// the record does not fit.
    #[inline]
    fn run(&self, body: &[u8], off: usize, r: &mut FlowRecord, p: &mut Pending) -> Option<usize> {
        let mut pos = off;
        for op in &self.ops {
            let len = if op.len == VARLEN {
                let first = u8_at(body, pos)?;
                pos += 1;
                if first == 255 {
                    let l = u16_at(body, pos)?;
                    pos += 2;
                    usize::from(l)
                } else {
                    usize::from(first)
                }
            } else {
                usize::from(op.len)
            };
            let end = pos.checked_add(len)?;
            let v = body.get(pos..end)?;
            apply(op.target, v, r, p);
            pos = end;
        }
        Some(pos)
    }

    /// Decode the data records of a data set body, appending to `out` copies of `base` with the
    /// record's fields filled in. Zero padding at the end of the set is ignored; any other
    /// leftover (a record cut short by the set's end) is an error, records before it are kept.
    pub(crate) fn decode_data(
        &self,
        body: &[u8],
        base: &FlowRecord,
        tb: &TimeBase,
        out: &mut Vec<FlowRecord>,
    ) -> Result<usize, ShortRecord> {
        if let Some(len) = self.fixed_len {
            return self.decode_fixed(body, len, base, tb, out);
        }
        let mut off = 0usize;
        let mut n = 0usize;
        while body.len().saturating_sub(off) >= self.min_len {
            out.push(*base);
            let Some(r) = out.last_mut() else { break };
            let mut p = Pending::default();
            match self.run(body, off, r, &mut p) {
                Some(next) => {
                    finish(r, &p, tb);
                    n += 1;
                    off = next;
                }
                None => {
                    out.pop();
                    break;
                }
            }
        }
        padding_or_short(body, off).map(|()| n)
    }

    /// The hot path: fixed-length records at precomputed offsets, decoded in place.
    #[inline]
    fn decode_fixed(
        &self,
        body: &[u8],
        len: usize,
        base: &FlowRecord,
        tb: &TimeBase,
        out: &mut Vec<FlowRecord>,
    ) -> Result<usize, ShortRecord> {
        let chunks = body.chunks_exact(len);
        let rest = chunks.remainder();
        out.reserve(body.len() / len);
        let mut n = 0;
        for rec in chunks {
            out.push(*base);
            let Some(r) = out.last_mut() else { break };
            let mut p = Pending::default();
            for op in &self.ops {
                let start = usize::from(op.offset);
                if let Some(v) = rec.get(start..start + usize::from(op.len)) {
                    apply(op.target, v, r, &mut p);
                }
            }
            finish(r, &p, tb);
            n += 1;
        }
        padding_or_short(body, body.len() - rest.len()).map(|()| n)
    }

    /// Decode the options data records of a set body; returns how many records were read and
    /// what they said about the observation domain (the last value of each wins).
    pub(crate) fn decode_options(
        &self,
        body: &[u8],
    ) -> Result<(usize, DomainOptions), ShortRecord> {
        let mut off = 0usize;
        let mut n = 0usize;
        let mut learned = DomainOptions::default();
        while body.len().saturating_sub(off) >= self.min_len {
            let mut r = FlowRecord::default();
            let mut p = Pending::default();
            match self.run(body, off, &mut r, &mut p) {
                Some(next) => {
                    if let Some(rate) = p.sampling_rate() {
                        learned.sampling_rate = rate;
                    }
                    learned.system_init_ms = p.sys_init_ms.or(learned.system_init_ms);
                    n += 1;
                    off = next;
                }
                None => break,
            }
        }
        padding_or_short(body, off).map(|()| (n, learned))
    }
}

/// Leftover bytes that are all zero are padding (RFC 7011 §3.3.1); anything else is a cut-off
/// record.
fn padding_or_short(body: &[u8], off: usize) -> Result<(), ShortRecord> {
    match body.get(off..) {
        Some(rest) if rest.iter().all(|&b| b == 0) => Ok(()),
        _ => Err(ShortRecord { offset: off }),
    }
}

/// Serializable template state for one (exporter, protocol, observation domain): what Central
/// hands to a peer before moving an exporter to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TemplateSnapshot {
    /// A data template (`scope_field_count == 0`) or options template.
    Template {
        protocol: Protocol,
        observation_domain_id: u32,
        template_id: u16,
        /// Options templates: how many leading fields are scope fields.
        scope_field_count: u16,
        /// True for options templates (v9 options templates may have scope fields only).
        options: bool,
        fields: Vec<FieldSpec>,
        /// The message that defined it; an import replaces only older state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
    },
    /// What options data said about the domain: the sampling rate (0 = none announced) and
    /// the IPFIX system init time that flowStart/EndSysUpTime are relative to.
    Sampling {
        protocol: Protocol,
        observation_domain_id: u32,
        sampling_rate: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system_init_ms: Option<u64>,
        /// The message whose options data last changed these values.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TemplateKey {
        TemplateKey {
            protocol: Protocol::Ipfix,
            domain: 1,
            template_id: 256,
        }
    }

    fn f(id: u16, length: u16) -> FieldSpec {
        FieldSpec {
            id,
            length,
            enterprise: None,
        }
    }

    #[test]
    fn rejects_unusable_templates() {
        let mut k = key();
        assert!(Template::compile(k, vec![f(1, 0)], 0, false).is_err());
        assert!(Template::compile(k, vec![f(1, 4)], 2, true).is_err());
        k.template_id = 255;
        assert!(Template::compile(k, vec![f(1, 4)], 0, false).is_err());
        k.template_id = 300;
        k.protocol = Protocol::NetflowV9;
        assert!(Template::compile(k, vec![f(1, VARLEN)], 0, false).is_err());
    }

    #[test]
    fn skipped_runs_are_merged_and_varlen_parsed() {
        let t = Template::compile(
            key(),
            vec![
                f(1, 4),
                f(1000, 2),
                f(1001, 3),
                f(2, 4),
                f(82, VARLEN),
                f(4, 1),
            ],
            0,
            false,
        )
        .unwrap();
        assert_eq!(t.ops.len(), 5);
        assert_eq!(t.fixed_len, None);
        let body = [
            0, 0, 1, 0, // bytes 256
            9, 9, 9, 9, 9, // skipped
            0, 0, 0, 2, // packets 2
            255, 0, 3, b'e', b't', b'h', // varlen, long form, 3 bytes
            17,   // proto
            0, 0, // padding
        ];
        let tb = TimeBase {
            export_ns: 0,
            sys_uptime_ms: None,
            system_init_ms: None,
        };
        let mut out = Vec::new();
        assert_eq!(
            t.decode_data(&body, &FlowRecord::default(), &tb, &mut out),
            Ok(1)
        );
        assert_eq!((out[0].bytes, out[0].packets, out[0].proto), (256, 2, 17));
        // Non-zero trailing bytes are a short record.
        let mut bad = body[..19].to_vec();
        bad.extend_from_slice(&[0, 0, 1, 0, 9, 9, 9, 9, 9, 0, 0, 0, 2, 200, 1, 2]);
        assert!(
            t.decode_data(&bad, &FlowRecord::default(), &tb, &mut out)
                .is_err()
        );
    }

    #[test]
    fn ntp_conversion() {
        let v = (2_208_988_800u64 + 10) << 32 | 0x8000_0000;
        assert_eq!(ntp_to_ns(v), 10_500_000_000);
    }
}
