//! The record as GoFlow2's `flowpb.FlowMessage` (protobuf), written length-delimited
//! (GoFlow2's `bin` format: varint length, then the message).
//!
//! [`FlowMessage`] is derived by hand (`prost::Message`) from `peer/proto/flow.proto` (no
//! `protoc` at build time): it is the schema in Rust, used to read messages back. Output goes
//! through [`FlowRecord::write_pb`], which writes the same bytes without building a message
//! (a unit test compares it with prost's encoding). `peer/tests/pb_protoc.rs` decodes our
//! output with `protoc --decode` and the `.proto`, field by field against the JSON of the same
//! records, so file, struct and encoder stay in sync.

use std::mem::MaybeUninit;
use std::net::IpAddr;

use super::{Blank, FlowRecord, Layer, Mac, Protocol, Stack};

/// `FlowMessage.FlowType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum FlowType {
    Flowunknown = 0,
    Sflow5 = 1,
    NetflowV5 = 2,
    NetflowV9 = 3,
    Ipfix = 4,
}

impl From<Protocol> for FlowType {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Sflow5 => FlowType::Sflow5,
            Protocol::NetflowV5 => FlowType::NetflowV5,
            Protocol::NetflowV9 => FlowType::NetflowV9,
            Protocol::Ipfix => FlowType::Ipfix,
        }
    }
}

/// `flowpb.FlowMessage`, the fields Sluice fills (tags as in `flow.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FlowMessage {
    #[prost(enumeration = "FlowType", tag = "1")]
    pub r#type: i32,
    #[prost(uint64, tag = "110")]
    pub time_received_ns: u64,
    #[prost(uint32, tag = "4")]
    pub sequence_num: u32,
    #[prost(uint64, tag = "3")]
    pub sampling_rate: u64,
    #[prost(bytes = "vec", tag = "11")]
    pub sampler_address: Vec<u8>,
    #[prost(uint64, tag = "111")]
    pub time_flow_start_ns: u64,
    #[prost(uint64, tag = "112")]
    pub time_flow_end_ns: u64,
    #[prost(uint64, tag = "9")]
    pub bytes: u64,
    #[prost(uint64, tag = "10")]
    pub packets: u64,
    #[prost(bytes = "vec", tag = "6")]
    pub src_addr: Vec<u8>,
    #[prost(bytes = "vec", tag = "7")]
    pub dst_addr: Vec<u8>,
    #[prost(uint32, tag = "30")]
    pub etype: u32,
    #[prost(uint32, tag = "20")]
    pub proto: u32,
    #[prost(uint32, tag = "21")]
    pub src_port: u32,
    #[prost(uint32, tag = "22")]
    pub dst_port: u32,
    #[prost(uint32, tag = "18")]
    pub in_if: u32,
    #[prost(uint32, tag = "19")]
    pub out_if: u32,
    #[prost(uint64, tag = "27")]
    pub src_mac: u64,
    #[prost(uint64, tag = "28")]
    pub dst_mac: u64,
    #[prost(uint32, tag = "33")]
    pub src_vlan: u32,
    #[prost(uint32, tag = "34")]
    pub dst_vlan: u32,
    #[prost(uint32, tag = "29")]
    pub vlan_id: u32,
    #[prost(uint32, tag = "23")]
    pub ip_tos: u32,
    #[prost(uint32, tag = "24")]
    pub forwarding_status: u32,
    #[prost(uint32, tag = "25")]
    pub ip_ttl: u32,
    #[prost(uint32, tag = "38")]
    pub ip_flags: u32,
    #[prost(uint32, tag = "26")]
    pub tcp_flags: u32,
    #[prost(uint32, tag = "31")]
    pub icmp_type: u32,
    #[prost(uint32, tag = "32")]
    pub icmp_code: u32,
    #[prost(uint32, tag = "37")]
    pub ipv6_flow_label: u32,
    #[prost(uint32, tag = "35")]
    pub fragment_id: u32,
    #[prost(uint32, tag = "36")]
    pub fragment_offset: u32,
    #[prost(uint32, tag = "14")]
    pub src_as: u32,
    #[prost(uint32, tag = "15")]
    pub dst_as: u32,
    #[prost(bytes = "vec", tag = "12")]
    pub next_hop: Vec<u8>,
    #[prost(uint32, tag = "13")]
    pub next_hop_as: u32,
    #[prost(uint32, tag = "16")]
    pub src_net: u32,
    #[prost(uint32, tag = "17")]
    pub dst_net: u32,
    #[prost(bytes = "vec", tag = "100")]
    pub bgp_next_hop: Vec<u8>,
    #[prost(uint32, repeated, tag = "101")]
    pub bgp_communities: Vec<u32>,
    #[prost(uint32, repeated, tag = "102")]
    pub as_path: Vec<u32>,
    #[prost(uint32, tag = "70")]
    pub observation_domain_id: u32,
    #[prost(uint32, tag = "71")]
    pub observation_point_id: u32,
    #[prost(uint32, repeated, tag = "80")]
    pub mpls_ttl: Vec<u32>,
    #[prost(uint32, repeated, tag = "81")]
    pub mpls_label: Vec<u32>,
    #[prost(bytes = "vec", repeated, tag = "82")]
    pub mpls_ip: Vec<Vec<u8>>,
    /// `repeated LayerStack`: enum values are varints on the wire, so `uint32` reads and
    /// writes the same bytes ([`Layer`] holds the values).
    #[prost(uint32, repeated, tag = "103")]
    pub layer_stack: Vec<u32>,
    #[prost(uint32, repeated, tag = "104")]
    pub layer_size: Vec<u32>,
    #[prost(bytes = "vec", repeated, tag = "105")]
    pub ipv6_routing_header_addresses: Vec<Vec<u8>>,
    #[prost(uint32, tag = "106")]
    pub ipv6_routing_header_seg_left: u32,
}

/// An address as GoFlow2 stores it: 4 or 16 bytes in network order, empty when absent.
fn put_addr(dst: &mut Vec<u8>, a: Option<IpAddr>) {
    dst.clear();
    match a {
        Some(IpAddr::V4(v4)) => dst.extend_from_slice(&v4.octets()),
        Some(IpAddr::V6(v6)) => dst.extend_from_slice(&v6.octets()),
        None => {}
    }
}

/// A repeated address field.
fn addrs(dst: &mut Vec<Vec<u8>>, src: &[IpAddr]) {
    dst.clear();
    for a in src {
        let mut b = Vec::new();
        put_addr(&mut b, Some(*a));
        dst.push(b);
    }
}

fn mac_u64(m: Mac) -> u64 {
    let [a, b, c, d, e, f] = m.0;
    u64::from_be_bytes([0, 0, a, b, c, d, e, f])
}

impl FlowMessage {
    /// Fills every field from `r`, reusing the address buffers (no allocation once warm).
    pub fn fill(&mut self, r: &FlowRecord) {
        self.r#type = FlowType::from(r.flow_type) as i32;
        self.time_received_ns = r.time_received_ns;
        self.sequence_num = r.sequence_num;
        self.sampling_rate = r.sampling_rate;
        put_addr(&mut self.sampler_address, r.sampler_address);
        self.time_flow_start_ns = r.time_flow_start_ns;
        self.time_flow_end_ns = r.time_flow_end_ns;
        self.bytes = r.bytes;
        self.packets = r.packets;
        put_addr(&mut self.src_addr, r.src_addr);
        put_addr(&mut self.dst_addr, r.dst_addr);
        self.etype = u32::from(r.etype);
        self.proto = u32::from(r.proto);
        self.src_port = u32::from(r.src_port);
        self.dst_port = u32::from(r.dst_port);
        self.in_if = r.in_if;
        self.out_if = r.out_if;
        self.src_mac = mac_u64(r.src_mac);
        self.dst_mac = mac_u64(r.dst_mac);
        self.src_vlan = u32::from(r.src_vlan);
        self.dst_vlan = u32::from(r.dst_vlan);
        self.vlan_id = u32::from(r.vlan_id);
        self.ip_tos = u32::from(r.ip_tos);
        self.forwarding_status = u32::from(r.forwarding_status);
        self.ip_ttl = u32::from(r.ip_ttl);
        self.ip_flags = u32::from(r.ip_flags);
        self.tcp_flags = u32::from(r.tcp_flags);
        self.icmp_type = u32::from(r.icmp_type);
        self.icmp_code = u32::from(r.icmp_code);
        self.ipv6_flow_label = r.ipv6_flow_label;
        self.fragment_id = r.fragment_id;
        self.fragment_offset = u32::from(r.fragment_offset);
        self.src_as = r.src_as;
        self.dst_as = r.dst_as;
        put_addr(&mut self.next_hop, r.next_hop);
        self.next_hop_as = r.next_hop_as;
        self.src_net = u32::from(r.src_mask);
        self.dst_net = u32::from(r.dst_mask);
        put_addr(&mut self.bgp_next_hop, r.bgp_next_hop);
        self.observation_domain_id = r.observation_domain_id;
        self.observation_point_id = r.observation_point_id;
        self.mpls_ttl.clear();
        self.mpls_ttl
            .extend(r.mpls_ttl.as_slice().iter().map(|&t| u32::from(t)));
        self.mpls_label.clear();
        self.mpls_label.extend_from_slice(r.mpls_label.as_slice());
        self.bgp_communities.clear();
        self.bgp_communities
            .extend_from_slice(r.bgp_communities.as_slice());
        self.as_path.clear();
        self.as_path.extend_from_slice(r.as_path.as_slice());
        addrs(&mut self.mpls_ip, r.mpls_ip.as_slice());
        self.layer_stack.clear();
        self.layer_stack
            .extend(r.layer_stack.as_slice().iter().map(|&l| l as u32));
        self.layer_size.clear();
        self.layer_size
            .extend(r.layer_size.as_slice().iter().map(|&s| u32::from(s)));
        addrs(
            &mut self.ipv6_routing_header_addresses,
            r.ipv6_routing_header_addresses.as_slice(),
        );
        self.ipv6_routing_header_seg_left = u32::from(r.ipv6_routing_header_seg_left);
    }
}

/// A `FlowMessage` that does not read back into a [`FlowRecord`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("type {0}")]
    Type(i32),
    #[error("address of {0} bytes")]
    Address(usize),
    #[error("{field}: more than {max} entries")]
    TooMany { field: &'static str, max: usize },
    #[error("{field}: {value} out of range")]
    OutOfRange { field: &'static str, value: u64 },
    #[error("{0}: empty address")]
    EmptyAddress(&'static str),
    #[error("layer_stack: unknown layer {0}")]
    Layer(u32),
}

fn addr_of(b: &[u8]) -> Result<Option<IpAddr>, MessageError> {
    match b.len() {
        0 => Ok(None),
        4 => Ok(<[u8; 4]>::try_from(b).ok().map(IpAddr::from)),
        16 => Ok(<[u8; 16]>::try_from(b).ok().map(IpAddr::from)),
        n => Err(MessageError::Address(n)),
    }
}

/// A repeated address field: every entry 4 or 16 bytes.
fn addr_list(field: &'static str, v: &[Vec<u8>]) -> Result<Vec<IpAddr>, MessageError> {
    v.iter()
        .map(|b| addr_of(b)?.ok_or(MessageError::EmptyAddress(field)))
        .collect()
}

fn stack<T: Blank, const N: usize>(
    field: &'static str,
    v: impl IntoIterator<Item = T>,
) -> Result<Stack<T, N>, MessageError> {
    let mut s = Stack::default();
    for x in v {
        if !s.push(x) {
            return Err(MessageError::TooMany { field, max: N });
        }
    }
    Ok(s)
}

fn narrow<T: TryFrom<u64>>(field: &'static str, v: impl Into<u64>) -> Result<T, MessageError> {
    let value = v.into();
    T::try_from(value).map_err(|_| MessageError::OutOfRange { field, value })
}

/// Reads a message back into a record (consumers of `format = "pb"`, tests); fails on values
/// a record cannot hold.
impl TryFrom<&FlowMessage> for FlowRecord {
    type Error = MessageError;

    fn try_from(m: &FlowMessage) -> Result<Self, MessageError> {
        let flow_type = match FlowType::try_from(m.r#type) {
            Ok(FlowType::Sflow5) => Protocol::Sflow5,
            Ok(FlowType::NetflowV5) => Protocol::NetflowV5,
            Ok(FlowType::NetflowV9) => Protocol::NetflowV9,
            Ok(FlowType::Ipfix) => Protocol::Ipfix,
            _ => return Err(MessageError::Type(m.r#type)),
        };
        let mac = |v: u64| {
            let [_, _, a, b, c, d, e, f] = v.to_be_bytes();
            Mac([a, b, c, d, e, f])
        };
        Ok(FlowRecord {
            flow_type,
            time_received_ns: m.time_received_ns,
            sequence_num: m.sequence_num,
            sampling_rate: m.sampling_rate,
            sampler_address: addr_of(&m.sampler_address)?,
            time_flow_start_ns: m.time_flow_start_ns,
            time_flow_end_ns: m.time_flow_end_ns,
            bytes: m.bytes,
            packets: m.packets,
            src_addr: addr_of(&m.src_addr)?,
            dst_addr: addr_of(&m.dst_addr)?,
            etype: narrow("etype", m.etype)?,
            proto: narrow("proto", m.proto)?,
            src_port: narrow("src_port", m.src_port)?,
            dst_port: narrow("dst_port", m.dst_port)?,
            in_if: m.in_if,
            out_if: m.out_if,
            src_mac: mac(m.src_mac),
            dst_mac: mac(m.dst_mac),
            src_vlan: narrow("src_vlan", m.src_vlan)?,
            dst_vlan: narrow("dst_vlan", m.dst_vlan)?,
            vlan_id: narrow("vlan_id", m.vlan_id)?,
            ip_tos: narrow("ip_tos", m.ip_tos)?,
            forwarding_status: narrow("forwarding_status", m.forwarding_status)?,
            ip_ttl: narrow("ip_ttl", m.ip_ttl)?,
            ip_flags: narrow("ip_flags", m.ip_flags)?,
            tcp_flags: narrow("tcp_flags", m.tcp_flags)?,
            icmp_type: narrow("icmp_type", m.icmp_type)?,
            icmp_code: narrow("icmp_code", m.icmp_code)?,
            ipv6_flow_label: m.ipv6_flow_label,
            fragment_id: m.fragment_id,
            fragment_offset: narrow("fragment_offset", m.fragment_offset)?,
            src_as: m.src_as,
            dst_as: m.dst_as,
            next_hop: addr_of(&m.next_hop)?,
            next_hop_as: m.next_hop_as,
            src_mask: narrow("src_net", m.src_net)?,
            dst_mask: narrow("dst_net", m.dst_net)?,
            bgp_next_hop: addr_of(&m.bgp_next_hop)?,
            observation_domain_id: m.observation_domain_id,
            observation_point_id: m.observation_point_id,
            bgp_communities: stack("bgp_communities", m.bgp_communities.iter().copied())?,
            as_path: stack("as_path", m.as_path.iter().copied())?,
            mpls_label: stack("mpls_label", m.mpls_label.iter().copied())?,
            mpls_ttl: stack(
                "mpls_ttl",
                m.mpls_ttl
                    .iter()
                    .map(|&t| narrow::<u8>("mpls_ttl", t))
                    .collect::<Result<Vec<_>, _>>()?,
            )?,
            mpls_ip: stack("mpls_ip", addr_list("mpls_ip", &m.mpls_ip)?)?,
            layer_stack: stack(
                "layer_stack",
                m.layer_stack
                    .iter()
                    .map(|&n| {
                        i32::try_from(n)
                            .ok()
                            .and_then(Layer::from_number)
                            .ok_or(MessageError::Layer(n))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            )?,
            layer_size: stack(
                "layer_size",
                m.layer_size
                    .iter()
                    .map(|&s| narrow::<u16>("layer_size", s))
                    .collect::<Result<Vec<_>, _>>()?,
            )?,
            ipv6_routing_header_addresses: stack(
                "ipv6_routing_header_addresses",
                addr_list(
                    "ipv6_routing_header_addresses",
                    &m.ipv6_routing_header_addresses,
                )?,
            )?,
            ipv6_routing_header_seg_left: narrow(
                "ipv6_routing_header_seg_left",
                m.ipv6_routing_header_seg_left,
            )?,
        })
    }
}

/// Room for the widest message body a record can make (every field at its widest, every
/// stack full: a unit test writes that record). Far above what real records use (~150 bytes).
const MAX_BODY: usize = 640;

/// Room for the length prefix: [`MAX_BODY`] is below 2^14, a varint of two bytes at most.
const MAX_HEAD: usize = 2;

/// Room after the body: a varint is stored as one 8-byte word (two for the widest), whatever
/// its length, so the last one may reach this far past the body's end.
const SLACK: usize = 16;

/// The low 56 bits of `v` as eight 7-bit groups, one per byte of a little-endian word, without
/// continuation bits.
#[inline(always)]
fn spread7(v: u64) -> u64 {
    (v & 0x7f)
        | (v & 0x7f << 7) << 1
        | (v & 0x7f << 14) << 2
        | (v & 0x7f << 21) << 3
        | (v & 0x7f << 28) << 4
        | (v & 0x7f << 35) << 5
        | (v & 0x7f << 42) << 6
        | (v & 0x7f << 49) << 7
}

/// The continuation bit of every byte of a word.
const CONTINUED: u64 = 0x8080_8080_8080_8080;

/// `v`'s varint (`v` below 2^56) in one little-endian word and its length: the groups, with the
/// continuation bit on each byte but the last. Bytes past the length are zero.
#[inline(always)]
fn varint_word(v: u64) -> (u64, usize) {
    let len = varint_len(v);
    let continued = (1u64 << (8 * (len - 1))) - 1;
    (spread7(v) | CONTINUED & continued, len)
}

/// Bytes in `v`'s varint (1 to 10).
#[inline(always)]
fn varint_len(v: u64) -> usize {
    (v | 1).ilog2() as usize / 7 + 1
}

/// A message being written into a window of a buffer's spare capacity; `n`: bytes written.
struct Wire<'a, const N: usize> {
    b: &'a mut [MaybeUninit<u8>; N],
    n: usize,
}

impl<const N: usize> Wire<'_, N> {
    #[inline(always)]
    fn byte(&mut self, v: u8) {
        self.b[self.n] = MaybeUninit::new(v);
        self.n += 1;
    }

    #[inline(always)]
    fn slice(&mut self, v: &[u8]) {
        for (d, &s) in self.b[self.n..self.n + v.len()].iter_mut().zip(v) {
            *d = MaybeUninit::new(s);
        }
        self.n += v.len();
    }

    /// Stores `bytes` (8) at the end, keeping `len` of them.
    #[inline(always)]
    fn word(&mut self, bytes: [u8; 8], len: usize) {
        let Some(d) = self.b[self.n..].first_chunk_mut::<8>() else {
            unreachable!("SLACK leaves a word of room past MAX_BODY")
        };
        *d = bytes.map(MaybeUninit::new);
        self.n += len;
    }

    /// A varint: one word store (two from 2^56 on, as nanosecond timestamps are), no loop.
    #[inline(always)]
    fn varint(&mut self, v: u64) {
        if v < 0x80 {
            self.byte(v as u8);
        } else if v < 1 << 56 {
            let (word, len) = varint_word(v);
            self.word(word.to_le_bytes(), len);
        } else {
            // Eight bytes of 7 bits, all continued, then the top 8 bits in one or two more.
            self.word((spread7(v) | CONTINUED).to_le_bytes(), 8);
            let (word, len) = varint_word(v >> 56);
            self.word(word.to_le_bytes(), len);
        }
    }

    /// A varint field (wire type 0), omitted when zero.
    #[inline(always)]
    fn uint(&mut self, tag: u32, v: u64) {
        if v != 0 {
            self.varint(u64::from(tag << 3));
            self.varint(v);
        }
    }

    /// An address as a bytes field (wire type 2), omitted when absent.
    #[inline(always)]
    fn addr(&mut self, tag: u32, a: Option<IpAddr>) {
        let key = u64::from(tag << 3 | 2);
        match a {
            Some(IpAddr::V4(v4)) => {
                self.varint(key);
                self.byte(4);
                self.slice(&v4.octets());
            }
            Some(IpAddr::V6(v6)) => {
                self.varint(key);
                self.byte(16);
                self.slice(&v6.octets());
            }
            None => {}
        }
    }

    /// A packed repeated varint field, omitted when empty.
    #[inline(always)]
    fn packed(&mut self, tag: u32, vs: impl Iterator<Item = u64> + Clone) {
        let len: usize = vs.clone().map(varint_len).sum();
        if len > 0 {
            self.varint(u64::from(tag << 3 | 2));
            self.varint(len as u64);
            for v in vs {
                self.varint(v);
            }
        }
    }
}

impl FlowRecord {
    /// Appends this record to `out` as GoFlow2's `bin` format: varint length, then the
    /// `FlowMessage`.
    ///
    /// No [`FlowMessage`] is built: the fields go straight to the wire, in field-number order
    /// and skipping zero values as proto3 does, which is byte for byte what prost's encoding of
    /// [`FlowMessage::fill`]'s message gives (a test holds it to that) at a fraction of the cost.
    /// They are written in place, into `out`'s spare capacity seen as a fixed-size window (no
    /// capacity check per byte, no copy afterwards), one byte in: room for the length, which
    /// takes one byte below 128 and two up to [`MAX_BODY`] (the body then moves up one).
    pub fn write_pb(&self, out: &mut Vec<u8>) {
        let r = self;
        let start = out.len();
        out.reserve(MAX_HEAD + MAX_BODY + SLACK);
        let Some(window) = out
            .spare_capacity_mut()
            .first_chunk_mut::<{ MAX_HEAD + MAX_BODY + SLACK }>()
        else {
            unreachable!("reserved above")
        };
        let mut w = Wire { b: window, n: 1 };
        w.uint(1, FlowType::from(r.flow_type) as u64);
        w.uint(3, r.sampling_rate);
        w.uint(4, u64::from(r.sequence_num));
        w.addr(6, r.src_addr);
        w.addr(7, r.dst_addr);
        w.uint(9, r.bytes);
        w.uint(10, r.packets);
        w.addr(11, r.sampler_address);
        w.addr(12, r.next_hop);
        w.uint(13, u64::from(r.next_hop_as));
        w.uint(14, u64::from(r.src_as));
        w.uint(15, u64::from(r.dst_as));
        w.uint(16, u64::from(r.src_mask));
        w.uint(17, u64::from(r.dst_mask));
        w.uint(18, u64::from(r.in_if));
        w.uint(19, u64::from(r.out_if));
        w.uint(20, u64::from(r.proto));
        w.uint(21, u64::from(r.src_port));
        w.uint(22, u64::from(r.dst_port));
        w.uint(23, u64::from(r.ip_tos));
        w.uint(24, u64::from(r.forwarding_status));
        w.uint(25, u64::from(r.ip_ttl));
        w.uint(26, u64::from(r.tcp_flags));
        w.uint(27, mac_u64(r.src_mac));
        w.uint(28, mac_u64(r.dst_mac));
        w.uint(29, u64::from(r.vlan_id));
        w.uint(30, u64::from(r.etype));
        w.uint(31, u64::from(r.icmp_type));
        w.uint(32, u64::from(r.icmp_code));
        w.uint(33, u64::from(r.src_vlan));
        w.uint(34, u64::from(r.dst_vlan));
        w.uint(35, u64::from(r.fragment_id));
        w.uint(36, u64::from(r.fragment_offset));
        w.uint(37, u64::from(r.ipv6_flow_label));
        w.uint(38, u64::from(r.ip_flags));
        w.uint(70, u64::from(r.observation_domain_id));
        w.uint(71, u64::from(r.observation_point_id));
        w.packed(80, r.mpls_ttl.as_slice().iter().map(|&t| u64::from(t)));
        w.packed(81, r.mpls_label.as_slice().iter().map(|&l| u64::from(l)));
        for a in r.mpls_ip.as_slice() {
            w.addr(82, Some(*a));
        }
        w.addr(100, r.bgp_next_hop);
        w.packed(
            101,
            r.bgp_communities.as_slice().iter().map(|&c| u64::from(c)),
        );
        w.packed(102, r.as_path.as_slice().iter().map(|&a| u64::from(a)));
        w.packed(103, r.layer_stack.as_slice().iter().map(|&l| l as u64));
        w.packed(104, r.layer_size.as_slice().iter().map(|&s| u64::from(s)));
        for a in r.ipv6_routing_header_addresses.as_slice() {
            w.addr(105, Some(*a));
        }
        w.uint(106, u64::from(r.ipv6_routing_header_seg_left));
        w.uint(110, r.time_received_ns);
        w.uint(111, r.time_flow_start_ns);
        w.uint(112, r.time_flow_end_ns);
        let n = w.n - 1;
        // The length, in one byte (the body is where it belongs) or two (it moves up one).
        let k = if n < 0x80 {
            window[0] = MaybeUninit::new(n as u8);
            1
        } else {
            window.copy_within(1..1 + n, 2);
            window[0] = MaybeUninit::new(n as u8 | 0x80);
            window[1] = MaybeUninit::new((n >> 7) as u8);
            2
        };
        // SAFETY: the `k + n` bytes after `start` are initialised: the length bytes just
        // written, then the body, written byte after byte from its first (moved up as a whole
        // when the length took two). They are within the capacity reserved above.
        unsafe { out.set_len(start + k + n) };
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn length_delimited_round_trip_keeps_every_field() {
        let r = FlowRecord {
            flow_type: Protocol::NetflowV9,
            src_addr: Some("2001:db8::1".parse().unwrap()),
            etype: 0x86dd,
            src_mask: 48,
            ..crate::record::tests::sample()
        };
        let mut out = Vec::new();
        r.write_pb(&mut out);
        FlowRecord::default().write_pb(&mut out);
        let mut buf = &out[..];
        let m = FlowMessage::decode_length_delimited(&mut buf).unwrap();
        assert_eq!(m.r#type, FlowType::NetflowV9 as i32);
        assert_eq!(m.sampler_address, [198, 18, 1, 10]);
        assert_eq!(m.src_addr.len(), 16);
        assert_eq!(m.src_mac, 0x0011_2233_44aa);
        assert_eq!((m.src_net, m.dst_net), (48, 16));
        assert_eq!((m.bytes, m.packets, m.etype), (1500, 3, 0x86dd));
        assert_eq!((m.src_vlan, m.dst_vlan, m.tcp_flags), (10, 20, 0x1b));
        // The second record reuses the buffers: its absent addresses are empty, not stale.
        let empty = FlowMessage::decode_length_delimited(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert!(empty.sampler_address.is_empty() && empty.src_addr.is_empty());
        assert_eq!(empty.r#type, FlowType::NetflowV5 as i32);
    }

    /// Every field set to a value of its own (so a swapped or missing field shows).
    fn distinct(v6: bool) -> FlowRecord {
        let a = |n: u8| -> Option<IpAddr> {
            Some(if v6 {
                IpAddr::from([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n])
            } else {
                IpAddr::from([10, 0, 0, n])
            })
        };
        FlowRecord {
            flow_type: Protocol::Ipfix,
            time_received_ns: 1 << 60,
            sequence_num: 3,
            sampling_rate: 4,
            sampler_address: a(5),
            time_flow_start_ns: 6 << 40,
            time_flow_end_ns: 7 << 40,
            bytes: 8,
            packets: 9,
            src_addr: a(10),
            dst_addr: a(11),
            etype: 12,
            proto: 13,
            src_port: 14,
            dst_port: 15,
            in_if: 16,
            out_if: 17,
            src_mac: Mac([0, 0, 0, 0, 0, 18]),
            dst_mac: Mac([0xff, 0, 0, 0, 0, 19]),
            src_vlan: 20,
            dst_vlan: 21,
            vlan_id: 22,
            ip_tos: 23,
            forwarding_status: 24,
            ip_ttl: 25,
            ip_flags: 26,
            tcp_flags: 27,
            icmp_type: 28,
            icmp_code: 29,
            ipv6_flow_label: 30,
            fragment_id: 31,
            fragment_offset: 32,
            src_as: 33,
            dst_as: 34,
            next_hop: a(35),
            next_hop_as: 36,
            src_mask: 37,
            dst_mask: 38,
            bgp_next_hop: a(39),
            observation_domain_id: 40,
            observation_point_id: 41,
            bgp_communities: [46, 0xffff_ffff].into_iter().collect(),
            as_path: [47, 48, 4_200_000_000].into_iter().collect(),
            mpls_label: [42, 0xf_ffff, 300].into_iter().collect(),
            mpls_ttl: [43, 255].into_iter().collect(),
            mpls_ip: [a(44).unwrap(), a(45).unwrap()].into_iter().collect(),
            layer_stack: [Layer::Ethernet, Layer::Mpls, Layer::Ipv6HeaderFragment]
                .into_iter()
                .collect(),
            layer_size: [14, 300, 8].into_iter().collect(),
            ipv6_routing_header_addresses: [IpAddr::from([
                0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 49,
            ])]
            .into_iter()
            .collect(),
            ipv6_routing_header_seg_left: 50,
        }
    }

    #[test]
    fn fast_encoder_writes_what_prost_writes() {
        let mut msg = FlowMessage::default();
        for r in [
            distinct(false),
            distinct(true),
            FlowRecord::default(),
            crate::record::tests::sample(),
        ] {
            let mut fast = Vec::new();
            r.write_pb(&mut fast);
            msg.fill(&r);
            assert_eq!(fast, msg.encode_length_delimited_to_vec(), "{r:?}");
        }
    }

    #[test]
    fn varints_of_every_length_match_prost() {
        let mut msg = FlowMessage::default();
        for shift in 0..64 {
            for v in [
                1u64 << shift,
                (1u64 << shift) - 1,
                (1u64 << shift) + 1,
                u64::MAX >> shift,
            ] {
                let r = FlowRecord {
                    bytes: v,
                    packets: v.rotate_left(7),
                    in_if: v as u32,
                    src_port: v as u16,
                    // Tag 110 has a two-byte key.
                    time_received_ns: v,
                    ..distinct(false)
                };
                let mut fast = Vec::new();
                r.write_pb(&mut fast);
                msg.fill(&r);
                assert_eq!(fast, msg.encode_length_delimited_to_vec(), "{v:#x}");
            }
        }
    }

    /// Every field at its widest and every stack full: the bound of [`MAX_BODY`].
    fn widest() -> FlowRecord {
        let v6 = Some(IpAddr::from([0xff; 16]));
        let mut r = FlowRecord {
            time_received_ns: u64::MAX,
            sequence_num: u32::MAX,
            sampling_rate: u64::MAX,
            sampler_address: v6,
            time_flow_start_ns: u64::MAX,
            time_flow_end_ns: u64::MAX,
            bytes: u64::MAX,
            packets: u64::MAX,
            src_addr: v6,
            dst_addr: v6,
            next_hop: v6,
            bgp_next_hop: v6,
            ..distinct(true)
        };
        while r.bgp_communities.push(u32::MAX) {}
        while r.as_path.push(u32::MAX) {}
        while r.mpls_label.push(u32::MAX) {}
        while r.mpls_ttl.push(u8::MAX) {}
        while r.mpls_ip.push(IpAddr::from([0xff; 16])) {}
        while r.layer_stack.push(Layer::Ipv6HeaderFragment) {}
        while r.layer_size.push(u16::MAX) {}
        while r
            .ipv6_routing_header_addresses
            .push(IpAddr::from([0xff; 16]))
        {}
        r.ipv6_routing_header_seg_left = u8::MAX;
        r
    }

    #[test]
    fn the_widest_record_fits_the_window_and_matches_prost() {
        let r = widest();
        let mut fast = Vec::new();
        r.write_pb(&mut fast);
        let mut msg = FlowMessage::default();
        msg.fill(&r);
        assert_eq!(fast, msg.encode_length_delimited_to_vec());
        let body = msg.encoded_len();
        assert!(body <= MAX_BODY, "{body} bytes");
        // Not wastefully large either.
        assert!(
            MAX_BODY < 2 * body,
            "{body} bytes for a {MAX_BODY}-byte body"
        );
    }

    #[test]
    fn messages_read_back_into_the_same_record() {
        let mut msg = FlowMessage::default();
        for r in [
            crate::record::tests::sample(),
            FlowRecord {
                flow_type: Protocol::Sflow5,
                src_addr: Some("2001:db8::1".parse().unwrap()),
                ..crate::record::tests::sample()
            },
        ] {
            msg.fill(&r);
            assert_eq!(FlowRecord::try_from(&msg), Ok(r));
        }
        msg.proto = 256;
        assert_eq!(
            FlowRecord::try_from(&msg).map_err(|e| e.to_string()),
            Err("proto: 256 out of range".to_owned())
        );
    }
}
