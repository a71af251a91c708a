//! The normalized flow record every decoder produces.
//!
//! JSON output follows GoFlow2's JSON format field for field (`type`, `time_received_ns`,
//! `sequence_num`, `sampling_rate`, `sampler_address`, …) so existing pipelines can consume it.
//! Values are rendered the way GoFlow2 renders them: addresses as IP text (`""` when absent),
//! MACs as `aa:bb:cc:dd:ee:ff`, `etype` and `proto` as names (`"IPv4"`, `"TCP"`; unnamed values as
//! their decimal number), `src_net`/`dst_net` as `prefix/len` built from the address and mask.
//!
//! [`FlowRecord::write_json`] is a hand-written writer that produces exactly what
//! `serde_json::to_vec` produces, without allocating per field. [`pb`] writes the same record
//! as GoFlow2's protobuf `FlowMessage`.

mod field;
pub mod pb;

pub use field::{Field, FieldsError};

use std::cell::RefCell;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Flow protocol of a datagram and of the records decoded from it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub enum Protocol {
    /// Cisco NetFlow version 5.
    #[default]
    #[serde(rename = "NETFLOW_V5")]
    NetflowV5,
    /// Cisco NetFlow version 9 (RFC 3954).
    #[serde(rename = "NETFLOW_V9")]
    NetflowV9,
    /// IPFIX (RFC 7011), "NetFlow v10".
    #[serde(rename = "IPFIX")]
    Ipfix,
    /// sFlow version 5.
    #[serde(rename = "SFLOW_5")]
    Sflow5,
}

impl Protocol {
    /// Every protocol, in counter order.
    pub const ALL: [Protocol; 4] = [
        Protocol::NetflowV5,
        Protocol::NetflowV9,
        Protocol::Ipfix,
        Protocol::Sflow5,
    ];

    /// The GoFlow2 `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::NetflowV5 => "NETFLOW_V5",
            Protocol::NetflowV9 => "NETFLOW_V9",
            Protocol::Ipfix => "IPFIX",
            Protocol::Sflow5 => "SFLOW_5",
        }
    }

    /// Dense index (0..4) for per-protocol counters.
    pub fn index(self) -> usize {
        match self {
            Protocol::NetflowV5 => 0,
            Protocol::NetflowV9 => 1,
            Protocol::Ipfix => 2,
            Protocol::Sflow5 => 3,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A 48-bit MAC address, rendered `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Text that is not a MAC address (`aa:bb:cc:dd:ee:ff`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad MAC {0:?}")]
pub struct BadMac(pub String);

impl std::str::FromStr for Mac {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMac(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

/// A GoFlow2 JSON record that does not read back into a [`FlowRecord`]; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Mac(#[from] BadMac),
    #[error("{field}: bad address {value:?}")]
    Address { field: &'static str, value: String },
    #[error("{field}: expected prefix/len, got {value:?}")]
    NoPrefix { field: &'static str, value: String },
    #[error("{field}: bad prefix length in {value:?}")]
    PrefixLength { field: &'static str, value: String },
    #[error("{field}: more than {max} entries")]
    TooMany { field: &'static str, max: usize },
    #[error("{field}: unknown {value:?}")]
    Unknown { field: &'static str, value: String },
}

/// A value a [`Stack`] slot holds before it is used.
pub trait Blank: Copy {
    const BLANK: Self;
}

impl Blank for u32 {
    const BLANK: Self = 0;
}

impl Blank for u8 {
    const BLANK: Self = 0;
}

impl Blank for u16 {
    const BLANK: Self = 0;
}

impl Blank for Layer {
    const BLANK: Self = Layer::Ethernet;
}

impl Blank for IpAddr {
    const BLANK: Self = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
}

/// Up to `N` values of one of GoFlow2's repeated fields (MPLS labels, AS path), kept inline so the
/// record stays `Copy`; values past `N` are not kept (README says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stack<T: Blank, const N: usize> {
    len: u8,
    items: [T; N],
}

impl<T: Blank, const N: usize> Default for Stack<T, N> {
    fn default() -> Self {
        Stack {
            len: 0,
            items: [T::BLANK; N],
        }
    }
}

impl<T: Blank, const N: usize> Stack<T, N> {
    pub fn as_slice(&self) -> &[T] {
        self.items.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// Appends `v`; false when full.
    pub fn push(&mut self, v: T) -> bool {
        match self.items.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = v;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Sets position `i`, growing with blanks up to it (GoFlow2's MPLS label 2 before label 1).
    pub fn set(&mut self, i: usize, v: T) {
        if let Some(slot) = self.items.get_mut(i) {
            *slot = v;
            self.len = self.len.max(i as u8 + 1);
        }
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

impl<T: Blank, const N: usize> FromIterator<T> for Stack<T, N> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut s = Stack::default();
        for v in iter {
            s.push(v);
        }
        s
    }
}

/// MPLS label stack entries a record keeps (NetFlow/IPFIX carry at most 3).
pub const MPLS_DEPTH: usize = 4;
/// MPLS top-label addresses a record keeps (IPFIX 47 and 140).
pub const MPLS_ADDRESSES: usize = 2;
/// AS path entries a record keeps (sFlow extended gateway), from the nearest AS on.
pub const AS_PATH_LEN: usize = 16;
/// BGP communities a record keeps (sFlow extended gateway).
pub const COMMUNITIES: usize = 8;
/// Layers of a sampled header a record lists (`layer_stack`, `layer_size`): the outermost
/// ones. Parsing goes on past them, so the record's other fields are unaffected.
pub const LAYERS: usize = 16;
/// SRv6 segment list entries a record keeps (`ipv6_routing_header_addresses`), in header order.
pub const SRV6_SEGMENTS: usize = 4;

/// A protocol layer of a sampled header: GoFlow2's `FlowMessage.LayerStack` (`flow.proto`),
/// the value is its enum number and the JSON name its enum name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Layer {
    Ethernet = 0,
    Ipv4 = 1,
    Ipv6 = 2,
    Tcp = 3,
    Udp = 4,
    Mpls = 5,
    Dot1q = 6,
    Icmp = 7,
    Icmpv6 = 8,
    Gre = 9,
    Ipv6HeaderRouting = 10,
    Ipv6HeaderFragment = 11,
}

impl Layer {
    pub const ALL: [Layer; 12] = [
        Layer::Ethernet,
        Layer::Ipv4,
        Layer::Ipv6,
        Layer::Tcp,
        Layer::Udp,
        Layer::Mpls,
        Layer::Dot1q,
        Layer::Icmp,
        Layer::Icmpv6,
        Layer::Gre,
        Layer::Ipv6HeaderRouting,
        Layer::Ipv6HeaderFragment,
    ];

    /// GoFlow2's enum name, which its JSON shows.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Ethernet => "Ethernet",
            Layer::Ipv4 => "IPv4",
            Layer::Ipv6 => "IPv6",
            Layer::Tcp => "TCP",
            Layer::Udp => "UDP",
            Layer::Mpls => "MPLS",
            Layer::Dot1q => "Dot1Q",
            Layer::Icmp => "ICMP",
            Layer::Icmpv6 => "ICMPv6",
            Layer::Gre => "GRE",
            Layer::Ipv6HeaderRouting => "IPv6HeaderRouting",
            Layer::Ipv6HeaderFragment => "IPv6HeaderFragment",
        }
    }

    /// The layer of an enum number (protobuf) or name (JSON).
    pub fn from_number(n: i32) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| *l as i32 == n)
    }

    pub fn from_name(s: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.name() == s)
    }
}

/// One normalized flow record. All fields are plain values (the record is `Copy`), so decoding
/// allocates nothing per record beyond the output vector's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "wire::FlowJson", try_from = "wire::FlowJson")]
pub struct FlowRecord {
    /// Protocol the record was decoded from (JSON `type`).
    pub flow_type: Protocol,
    /// When the collector received the datagram, ns since the Unix epoch.
    pub time_received_ns: u64,
    /// Sequence number from the export header (v5 flow sequence, v9 package sequence, IPFIX
    /// sequence, sFlow datagram sequence).
    pub sequence_num: u32,
    /// Sampling rate that applied to this record (0 when unknown).
    pub sampling_rate: u64,
    /// The exporter: the datagram's source address (sFlow: the agent address).
    pub sampler_address: Option<IpAddr>,
    /// Flow start, ns since the Unix epoch (0 when the exporter sent none).
    pub time_flow_start_ns: u64,
    /// Flow end, ns since the Unix epoch (0 when the exporter sent none).
    pub time_flow_end_ns: u64,
    /// Bytes (multiplied by the sampling rate when the decoder applies sampling).
    pub bytes: u64,
    /// Packets (multiplied by the sampling rate when the decoder applies sampling).
    pub packets: u64,
    pub src_addr: Option<IpAddr>,
    pub dst_addr: Option<IpAddr>,
    /// Ethernet type (0x0800 IPv4, 0x86dd IPv6).
    pub etype: u16,
    /// IP protocol number.
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub in_if: u32,
    pub out_if: u32,
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_vlan: u16,
    pub dst_vlan: u16,
    /// VLAN of the sampled frame (sFlow raw header), or dot1qVlanId.
    pub vlan_id: u16,
    pub ip_tos: u8,
    pub forwarding_status: u8,
    pub ip_ttl: u8,
    pub ip_flags: u8,
    pub tcp_flags: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub ipv6_flow_label: u32,
    pub fragment_id: u32,
    pub fragment_offset: u16,
    pub src_as: u32,
    pub dst_as: u32,
    pub next_hop: Option<IpAddr>,
    pub next_hop_as: u32,
    /// Source prefix length (JSON `src_net` = masked `src_addr` / this).
    pub src_mask: u8,
    /// Destination prefix length (JSON `dst_net`).
    pub dst_mask: u8,
    pub bgp_next_hop: Option<IpAddr>,
    /// BGP communities of the destination route (sFlow extended gateway).
    pub bgp_communities: Stack<u32, COMMUNITIES>,
    /// AS path to the destination, nearest AS first (sFlow extended gateway).
    pub as_path: Stack<u32, AS_PATH_LEN>,
    /// MPLS labels, top of the stack first (20-bit values).
    pub mpls_label: Stack<u32, MPLS_DEPTH>,
    /// MPLS TTLs of those labels (sFlow sampled headers only).
    pub mpls_ttl: Stack<u8, MPLS_DEPTH>,
    /// MPLS top-label IPv4/IPv6 addresses (IPFIX 47, 140).
    pub mpls_ip: Stack<IpAddr, MPLS_ADDRESSES>,
    /// IPFIX observation domain / NetFlow v9 source id / sFlow sub-agent id.
    pub observation_domain_id: u32,
    pub observation_point_id: u32,
    /// The sampled header's layers, outermost first (sFlow raw header, IPFIX
    /// dataLinkFrameSection), at most [`LAYERS`].
    pub layer_stack: Stack<Layer, LAYERS>,
    /// Each listed layer's header length in bytes (a whole MPLS label stack is one layer).
    pub layer_size: Stack<u16, LAYERS>,
    /// SRv6: the segment list of the outer IPv6 segment routing header (routing type 4),
    /// at most [`SRV6_SEGMENTS`].
    pub ipv6_routing_header_addresses: Stack<IpAddr, SRV6_SEGMENTS>,
    /// Segments left of the outer IPv6 routing header (any routing type).
    pub ipv6_routing_header_seg_left: u8,
}

/// GoFlow2's name for an Ethernet type; unnamed values render as their decimal number.
pub fn etype_name(etype: u16) -> Option<&'static str> {
    match etype {
        0x0800 => Some("IPv4"),
        0x0806 => Some("ARP"),
        0x86dd => Some("IPv6"),
        _ => None,
    }
}

/// GoFlow2's (IANA keyword) name for an IP protocol number.
pub fn proto_name(proto: u8) -> Option<&'static str> {
    Some(match proto {
        0 => "HOPOPT",
        1 => "ICMP",
        2 => "IGMP",
        4 => "IPv4",
        6 => "TCP",
        8 => "EGP",
        9 => "IGP",
        17 => "UDP",
        27 => "RDP",
        41 => "IPv6",
        43 => "IPv6-Route",
        44 => "IPv6-Frag",
        46 => "RSVP",
        47 => "GRE",
        50 => "ESP",
        51 => "AH",
        58 => "IPv6-ICMP",
        59 => "IPv6-NoNxt",
        60 => "IPv6-Opts",
        88 => "EIGRP",
        89 => "OSPF",
        94 => "IPIP",
        103 => "PIM",
        112 => "VRRP",
        115 => "L2TP",
        132 => "SCTP",
        136 => "UDPLite",
        137 => "MPLS-in-IP",
        _ => return None,
    })
}

fn etype_from_name(s: &str) -> Option<u16> {
    match s {
        "IPv4" => Some(0x0800),
        "ARP" => Some(0x0806),
        "IPv6" => Some(0x86dd),
        _ => s.parse().ok(),
    }
}

fn proto_from_name(s: &str) -> Option<u8> {
    (0..=255u8)
        .find(|p| proto_name(*p) == Some(s))
        .or_else(|| s.parse().ok())
}

fn masked_net(addr: Option<IpAddr>, mask: u8) -> (IpAddr, u8) {
    match addr {
        Some(IpAddr::V4(a)) => {
            let m = mask.min(32);
            let bits = if m == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(m))
            };
            (IpAddr::V4(Ipv4Addr::from(u32::from(a) & bits)), m)
        }
        Some(IpAddr::V6(a)) => {
            let m = mask.min(128);
            let bits = if m == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(m))
            };
            (IpAddr::V6(Ipv6Addr::from(u128::from(a) & bits)), m)
        }
        None => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    }
}

/// Writes JSON into a pre-sized slice: bounds-checked, but without the per-write capacity
/// checks and small `memcpy` calls of pushing onto a `Vec`. A write that does not fit sets
/// `overflow` (the caller then falls back to serde).
struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflow: bool,
}

const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Each byte value as decimal text: up to three digits, then the digit count.
const OCTET_TEXT: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut v = 0;
    while v < 256 {
        let (h, d, u) = ((v / 100) as u8, (v / 10 % 10) as u8, (v % 10) as u8);
        t[v] = match v {
            0..10 => [b'0' + u, 0, 0, 1],
            10..100 => [b'0' + d, b'0' + u, 0, 2],
            _ => [b'0' + h, b'0' + d, b'0' + u, 3],
        };
        v += 1;
    }
    t
};

impl Cursor<'_> {
    #[inline(always)]
    fn lit(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.pos..self.pos + b.len()) {
            Some(d) => {
                d.copy_from_slice(b);
                self.pos += b.len();
            }
            None => self.overflow = true,
        }
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        match self.buf.get_mut(self.pos) {
            Some(d) => {
                *d = b;
                self.pos += 1;
            }
            None => self.overflow = true,
        }
    }

    /// Decimal digits, written in place from the last digit, two at a time.
    #[inline]
    fn dec(&mut self, v: u64) {
        let digits = v.checked_ilog10().unwrap_or(0) as usize + 1;
        let Some(d) = self.buf.get_mut(self.pos..self.pos + digits) else {
            self.overflow = true;
            return;
        };
        let mut n = v;
        let mut i = digits;
        while i >= 2 {
            // `n % 100` < 100, so the index stays inside PAIRS.
            let pair = (n % 100) as usize * 2;
            n /= 100;
            i -= 2;
            if let (Some(dst), Some(src)) = (d.get_mut(i..i + 2), PAIRS.get(pair..pair + 2)) {
                dst.copy_from_slice(src);
            }
        }
        if i == 1
            && let Some(first) = d.first_mut()
        {
            // One digit left, so `n` < 10.
            *first = b'0' + n as u8;
        }
        self.pos += digits;
    }

    fn addr(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(v4) => {
                // The 15 bytes of the longest address, and one over: each octet is copied as
                // 4 bytes, of which its digits are kept.
                if let Some(room) = self.buf.get_mut(self.pos..self.pos + 16) {
                    let mut at = 0;
                    for (i, o) in v4.octets().into_iter().enumerate() {
                        let text = OCTET_TEXT[usize::from(o)];
                        if let Some(d) = room.get_mut(at..at + 4) {
                            d.copy_from_slice(&text);
                        }
                        at += usize::from(text[3]);
                        if i < 3
                            && let Some(d) = room.get_mut(at)
                        {
                            *d = b'.';
                            at += 1;
                        }
                    }
                    self.pos += at;
                    return;
                }
                let [a, b, c, d] = v4.octets();
                self.dec(u64::from(a));
                self.byte(b'.');
                self.dec(u64::from(b));
                self.byte(b'.');
                self.dec(u64::from(c));
                self.byte(b'.');
                self.dec(u64::from(d));
            }
            IpAddr::V6(v6) => self.addr6(v6),
        }
    }

    /// An IPv6 address as `std` writes it (RFC 5952: lowercase hex groups without leading
    /// zeros, the first longest run of two or more zero groups as `::`, IPv4-mapped addresses
    /// as `::ffff:a.b.c.d`), without going through `fmt`.
    fn addr6(&mut self, v6: Ipv6Addr) {
        if let Some(v4) = v6.to_ipv4_mapped() {
            self.lit(b"::ffff:");
            self.addr(IpAddr::V4(v4));
            return;
        }
        let groups = v6.segments();
        let (mut start, mut len, mut run_start, mut run_len) = (0, 0, 0, 0);
        for (i, &g) in groups.iter().enumerate() {
            if g == 0 {
                if run_len == 0 {
                    run_start = i;
                }
                run_len += 1;
                if run_len > len {
                    (start, len) = (run_start, run_len);
                }
            } else {
                run_len = 0;
            }
        }
        if len > 1 {
            self.hex_groups(groups.get(..start).unwrap_or_default());
            self.lit(b"::");
            self.hex_groups(groups.get(start + len..).unwrap_or_default());
        } else {
            self.hex_groups(&groups);
        }
    }

    /// `a:b:c`, each group in lowercase hex without leading zeros.
    fn hex_groups(&mut self, groups: &[u16]) {
        for (i, &g) in groups.iter().enumerate() {
            if i > 0 {
                self.byte(b':');
            }
            let digits = (16 - (g | 1).leading_zeros()).div_ceil(4);
            for d in (0..digits).rev() {
                if let Some(&c) = HEX.get(usize::from(g >> (4 * d) & 0xf)) {
                    self.byte(c);
                }
            }
        }
    }

    /// `,"key":` (or `{"key":` for the first field): keys are literals, so the copy length is
    /// known at compile time.
    #[inline(always)]
    fn key(&mut self, k: &[u8]) {
        self.lit(k);
    }

    #[inline(always)]
    fn num(&mut self, k: &[u8], v: u64) {
        self.key(k);
        self.dec(v);
    }

    #[inline(always)]
    fn str(&mut self, k: &[u8], v: &str) {
        self.key(k);
        self.byte(b'"');
        self.lit(v.as_bytes());
        self.byte(b'"');
    }

    #[inline(always)]
    fn ip(&mut self, k: &[u8], v: Option<IpAddr>) {
        self.key(k);
        self.byte(b'"');
        if let Some(a) = v {
            self.addr(a);
        }
        self.byte(b'"');
    }

    #[inline(always)]
    fn mac(&mut self, k: &[u8], m: Mac) {
        self.key(k);
        let mut t = *b"\"00:00:00:00:00:00\"";
        for (i, b) in m.0.into_iter().enumerate() {
            if let (Some(hi), Some(lo)) =
                (HEX.get(usize::from(b >> 4)), HEX.get(usize::from(b & 0x0f)))
                && let Some(dst) = t.get_mut(1 + i * 3..3 + i * 3)
            {
                dst.copy_from_slice(&[*hi, *lo]);
            }
        }
        self.lit(&t);
    }

    #[inline(always)]
    fn net(&mut self, k: &[u8], addr: Option<IpAddr>, mask: u8) {
        let (net, len) = masked_net(addr, mask);
        self.key(k);
        self.byte(b'"');
        self.addr(net);
        self.byte(b'/');
        self.dec(u64::from(len));
        self.byte(b'"');
    }

    /// `,"key":[1,2]`.
    fn nums(&mut self, k: &[u8], vs: impl Iterator<Item = u64>) {
        self.key(k);
        self.byte(b'[');
        for (i, v) in vs.enumerate() {
            if i > 0 {
                self.byte(b',');
            }
            self.dec(v);
        }
        self.byte(b']');
    }

    /// `,"key":["10.0.0.1"]`.
    fn ips(&mut self, k: &[u8], vs: &[IpAddr]) {
        self.key(k);
        self.byte(b'[');
        for (i, v) in vs.iter().enumerate() {
            if i > 0 {
                self.byte(b',');
            }
            self.byte(b'"');
            self.addr(*v);
            self.byte(b'"');
        }
        self.byte(b']');
    }

    /// `,"key":["a","b"]`.
    fn names<'n>(&mut self, k: &[u8], vs: impl Iterator<Item = &'n str>) {
        self.key(k);
        self.byte(b'[');
        for (i, v) in vs.enumerate() {
            if i > 0 {
                self.byte(b',');
            }
            self.byte(b'"');
            self.lit(v.as_bytes());
            self.byte(b'"');
        }
        self.byte(b']');
    }

    #[inline(always)]
    fn named(&mut self, k: &[u8], name: Option<&str>, v: u64) {
        match name {
            Some(n) => self.str(k, n),
            None => {
                self.key(k);
                self.byte(b'"');
                self.dec(v);
                self.byte(b'"');
            }
        }
    }
}

/// Room for the largest possible record (all addresses IPv6, all numbers at their maximum,
/// every list full): what [`FlowRecord::write_json_into`] needs to be sure a record fits.
pub const MAX_JSON: usize = 2560;

impl FlowRecord {
    /// Appends this record's `fields`, in their order (`None`: every field), as one JSON object
    /// (no trailing newline) to `out`. With every field, byte-for-byte what
    /// `serde_json::to_vec(self)` produces, several times faster.
    pub fn write_json(&self, out: &mut Vec<u8>, fields: Option<&[Field]>) {
        // The record is written into this thread's scratch buffer, zeroed once, then copied
        // out: growing `out` by the worst case for every record would zero 2.5 KiB per record
        // (and fault in fresh pages as it grows) to keep ~900 bytes.
        thread_local! {
            static SCRATCH: RefCell<Box<[u8; MAX_JSON]>> = RefCell::new(Box::new([0; MAX_JSON]));
        }
        let written = SCRATCH.with_borrow_mut(|scratch| {
            let n = self.write_json_into(&mut scratch[..], fields)?;
            out.extend_from_slice(scratch.get(..n).unwrap_or_default());
            Some(())
        });
        if written.is_none() {
            // Cannot happen with MAX_JSON sized for the worst case; stay correct anyway.
            self.write_json_serde(out, fields.unwrap_or(Field::ALL));
        }
    }

    /// [`FlowRecord::write_json`]'s object written at the start of `buf`, in place: the bytes
    /// written, or `None` if it did not fit (never with [`MAX_JSON`] bytes).
    pub fn write_json_into(&self, buf: &mut [u8], fields: Option<&[Field]>) -> Option<usize> {
        let mut c = Cursor {
            buf,
            pos: 0,
            overflow: false,
        };
        self.fill(&mut c, fields);
        (!c.overflow).then_some(c.pos)
    }

    /// [`FlowRecord::write_json`] through serde.
    fn write_json_serde(&self, out: &mut Vec<u8>, fields: &[Field]) {
        let Ok(serde_json::Value::Object(all)) = serde_json::to_value(self) else {
            return;
        };
        out.push(b'{');
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let value = all.get(field.name()).unwrap_or(&serde_json::Value::Null);
            let _ = serde_json::to_writer(&mut *out, field.name());
            out.push(b':');
            let _ = serde_json::to_writer(&mut *out, value);
        }
        out.push(b'}');
    }

    /// Writes `fields` in their order (`None`: every field): `{"a":…,"b":…}`.
    fn fill(&self, c: &mut Cursor<'_>, fields: Option<&[Field]>) {
        let start = c.pos;
        match fields {
            None => Field::each(|field| self.field(c, field)),
            Some(fields) => {
                for &field in fields {
                    self.field(c, field);
                }
            }
        }
        // Every key is written with a leading `,`: the first one becomes the `{`.
        match c.buf.get_mut(start) {
            Some(first) if c.pos > start => *first = b'{',
            _ => c.byte(b'{'),
        }
        c.byte(b'}');
    }

    /// `,"key":value` for one field.
    #[inline(always)]
    fn field(&self, c: &mut Cursor<'_>, field: Field) {
        match field {
            Field::Type => c.str(b",\"type\":", self.flow_type.as_str()),
            Field::TimeReceivedNs => c.num(b",\"time_received_ns\":", self.time_received_ns),
            Field::SequenceNum => c.num(b",\"sequence_num\":", u64::from(self.sequence_num)),
            Field::SamplingRate => c.num(b",\"sampling_rate\":", self.sampling_rate),
            Field::SamplerAddress => c.ip(b",\"sampler_address\":", self.sampler_address),
            Field::TimeFlowStartNs => c.num(b",\"time_flow_start_ns\":", self.time_flow_start_ns),
            Field::TimeFlowEndNs => c.num(b",\"time_flow_end_ns\":", self.time_flow_end_ns),
            Field::Bytes => c.num(b",\"bytes\":", self.bytes),
            Field::Packets => c.num(b",\"packets\":", self.packets),
            Field::SrcAddr => c.ip(b",\"src_addr\":", self.src_addr),
            Field::DstAddr => c.ip(b",\"dst_addr\":", self.dst_addr),
            Field::Etype => c.named(
                b",\"etype\":",
                etype_name(self.etype),
                u64::from(self.etype),
            ),
            Field::Proto => c.named(
                b",\"proto\":",
                proto_name(self.proto),
                u64::from(self.proto),
            ),
            Field::SrcPort => c.num(b",\"src_port\":", u64::from(self.src_port)),
            Field::DstPort => c.num(b",\"dst_port\":", u64::from(self.dst_port)),
            Field::InIf => c.num(b",\"in_if\":", u64::from(self.in_if)),
            Field::OutIf => c.num(b",\"out_if\":", u64::from(self.out_if)),
            Field::SrcMac => c.mac(b",\"src_mac\":", self.src_mac),
            Field::DstMac => c.mac(b",\"dst_mac\":", self.dst_mac),
            Field::SrcVlan => c.num(b",\"src_vlan\":", u64::from(self.src_vlan)),
            Field::DstVlan => c.num(b",\"dst_vlan\":", u64::from(self.dst_vlan)),
            Field::VlanId => c.num(b",\"vlan_id\":", u64::from(self.vlan_id)),
            Field::IpTos => c.num(b",\"ip_tos\":", u64::from(self.ip_tos)),
            Field::ForwardingStatus => c.num(
                b",\"forwarding_status\":",
                u64::from(self.forwarding_status),
            ),
            Field::IpTtl => c.num(b",\"ip_ttl\":", u64::from(self.ip_ttl)),
            Field::IpFlags => c.num(b",\"ip_flags\":", u64::from(self.ip_flags)),
            Field::TcpFlags => c.num(b",\"tcp_flags\":", u64::from(self.tcp_flags)),
            Field::IcmpType => c.num(b",\"icmp_type\":", u64::from(self.icmp_type)),
            Field::IcmpCode => c.num(b",\"icmp_code\":", u64::from(self.icmp_code)),
            Field::Ipv6FlowLabel => {
                c.num(b",\"ipv6_flow_label\":", u64::from(self.ipv6_flow_label))
            }
            Field::FragmentId => c.num(b",\"fragment_id\":", u64::from(self.fragment_id)),
            Field::FragmentOffset => {
                c.num(b",\"fragment_offset\":", u64::from(self.fragment_offset))
            }
            Field::SrcAs => c.num(b",\"src_as\":", u64::from(self.src_as)),
            Field::DstAs => c.num(b",\"dst_as\":", u64::from(self.dst_as)),
            Field::NextHop => c.ip(b",\"next_hop\":", self.next_hop),
            Field::NextHopAs => c.num(b",\"next_hop_as\":", u64::from(self.next_hop_as)),
            Field::SrcNet => c.net(b",\"src_net\":", self.src_addr, self.src_mask),
            Field::DstNet => c.net(b",\"dst_net\":", self.dst_addr, self.dst_mask),
            Field::BgpNextHop => c.ip(b",\"bgp_next_hop\":", self.bgp_next_hop),
            Field::BgpCommunities => c.nums(
                b",\"bgp_communities\":",
                self.bgp_communities
                    .as_slice()
                    .iter()
                    .map(|&v| u64::from(v)),
            ),
            Field::AsPath => c.nums(
                b",\"as_path\":",
                self.as_path.as_slice().iter().map(|&v| u64::from(v)),
            ),
            Field::MplsLabel => c.nums(
                b",\"mpls_label\":",
                self.mpls_label.as_slice().iter().map(|&v| u64::from(v)),
            ),
            Field::MplsTtl => c.nums(
                b",\"mpls_ttl\":",
                self.mpls_ttl.as_slice().iter().map(|&v| u64::from(v)),
            ),
            Field::MplsIp => c.ips(b",\"mpls_ip\":", self.mpls_ip.as_slice()),
            Field::ObservationDomainId => c.num(
                b",\"observation_domain_id\":",
                u64::from(self.observation_domain_id),
            ),
            Field::ObservationPointId => c.num(
                b",\"observation_point_id\":",
                u64::from(self.observation_point_id),
            ),
            Field::LayerStack => c.names(
                b",\"layer_stack\":",
                self.layer_stack.as_slice().iter().map(|l| l.name()),
            ),
            Field::LayerSize => c.nums(
                b",\"layer_size\":",
                self.layer_size.as_slice().iter().map(|&v| u64::from(v)),
            ),
            Field::Ipv6RoutingHeaderAddresses => c.ips(
                b",\"ipv6_routing_header_addresses\":",
                self.ipv6_routing_header_addresses.as_slice(),
            ),
            Field::Ipv6RoutingHeaderSegLeft => c.num(
                b",\"ipv6_routing_header_seg_left\":",
                u64::from(self.ipv6_routing_header_seg_left),
            ),
        }
    }
}

/// The serde shape of a record: GoFlow2's JSON object.
mod wire {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub struct FlowJson {
        #[serde(rename = "type")]
        pub flow_type: Protocol,
        pub time_received_ns: u64,
        pub sequence_num: u32,
        pub sampling_rate: u64,
        pub sampler_address: String,
        pub time_flow_start_ns: u64,
        pub time_flow_end_ns: u64,
        pub bytes: u64,
        pub packets: u64,
        pub src_addr: String,
        pub dst_addr: String,
        pub etype: String,
        pub proto: String,
        pub src_port: u16,
        pub dst_port: u16,
        pub in_if: u32,
        pub out_if: u32,
        pub src_mac: String,
        pub dst_mac: String,
        pub src_vlan: u16,
        pub dst_vlan: u16,
        pub vlan_id: u16,
        pub ip_tos: u8,
        pub forwarding_status: u8,
        pub ip_ttl: u8,
        pub ip_flags: u8,
        pub tcp_flags: u16,
        pub icmp_type: u8,
        pub icmp_code: u8,
        pub ipv6_flow_label: u32,
        pub fragment_id: u32,
        pub fragment_offset: u16,
        pub src_as: u32,
        pub dst_as: u32,
        pub next_hop: String,
        pub next_hop_as: u32,
        pub src_net: String,
        pub dst_net: String,
        pub bgp_next_hop: String,
        pub bgp_communities: Vec<u32>,
        pub as_path: Vec<u32>,
        pub mpls_label: Vec<u32>,
        pub mpls_ttl: Vec<u8>,
        pub mpls_ip: Vec<String>,
        pub observation_domain_id: u32,
        pub observation_point_id: u32,
        pub layer_stack: Vec<String>,
        pub layer_size: Vec<u16>,
        pub ipv6_routing_header_addresses: Vec<String>,
        pub ipv6_routing_header_seg_left: u8,
    }

    fn ip_text(a: Option<IpAddr>) -> String {
        a.map(|a| a.to_string()).unwrap_or_default()
    }

    fn net_text(a: Option<IpAddr>, mask: u8) -> String {
        let (net, len) = masked_net(a, mask);
        format!("{net}/{len}")
    }

    fn parse_ip(field: &'static str, s: &str) -> Result<Option<IpAddr>, RecordError> {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|_| RecordError::Address {
            field,
            value: s.to_owned(),
        })
    }

    fn parse_ips(field: &'static str, v: &[String]) -> Result<Vec<IpAddr>, RecordError> {
        v.iter()
            .map(|s| {
                s.parse().map_err(|_| RecordError::Address {
                    field,
                    value: s.clone(),
                })
            })
            .collect()
    }

    fn parse_mask(field: &'static str, s: &str) -> Result<u8, RecordError> {
        let value = || s.to_owned();
        let (_, len) = s.rsplit_once('/').ok_or_else(|| RecordError::NoPrefix {
            field,
            value: value(),
        })?;
        len.parse().map_err(|_| RecordError::PrefixLength {
            field,
            value: value(),
        })
    }

    fn stack<T: Blank, const N: usize>(
        field: &'static str,
        v: Vec<T>,
    ) -> Result<Stack<T, N>, RecordError> {
        if v.len() > N {
            return Err(RecordError::TooMany { field, max: N });
        }
        Ok(v.into_iter().collect())
    }

    impl From<FlowRecord> for FlowJson {
        fn from(r: FlowRecord) -> Self {
            FlowJson {
                flow_type: r.flow_type,
                time_received_ns: r.time_received_ns,
                sequence_num: r.sequence_num,
                sampling_rate: r.sampling_rate,
                sampler_address: ip_text(r.sampler_address),
                time_flow_start_ns: r.time_flow_start_ns,
                time_flow_end_ns: r.time_flow_end_ns,
                bytes: r.bytes,
                packets: r.packets,
                src_addr: ip_text(r.src_addr),
                dst_addr: ip_text(r.dst_addr),
                etype: etype_name(r.etype)
                    .map(str::to_owned)
                    .unwrap_or_else(|| r.etype.to_string()),
                proto: proto_name(r.proto)
                    .map(str::to_owned)
                    .unwrap_or_else(|| r.proto.to_string()),
                src_port: r.src_port,
                dst_port: r.dst_port,
                in_if: r.in_if,
                out_if: r.out_if,
                src_mac: r.src_mac.to_string(),
                dst_mac: r.dst_mac.to_string(),
                src_vlan: r.src_vlan,
                dst_vlan: r.dst_vlan,
                vlan_id: r.vlan_id,
                ip_tos: r.ip_tos,
                forwarding_status: r.forwarding_status,
                ip_ttl: r.ip_ttl,
                ip_flags: r.ip_flags,
                tcp_flags: r.tcp_flags,
                icmp_type: r.icmp_type,
                icmp_code: r.icmp_code,
                ipv6_flow_label: r.ipv6_flow_label,
                fragment_id: r.fragment_id,
                fragment_offset: r.fragment_offset,
                src_as: r.src_as,
                dst_as: r.dst_as,
                next_hop: ip_text(r.next_hop),
                next_hop_as: r.next_hop_as,
                src_net: net_text(r.src_addr, r.src_mask),
                dst_net: net_text(r.dst_addr, r.dst_mask),
                bgp_next_hop: ip_text(r.bgp_next_hop),
                bgp_communities: r.bgp_communities.as_slice().to_vec(),
                as_path: r.as_path.as_slice().to_vec(),
                mpls_label: r.mpls_label.as_slice().to_vec(),
                mpls_ttl: r.mpls_ttl.as_slice().to_vec(),
                mpls_ip: r.mpls_ip.as_slice().iter().map(IpAddr::to_string).collect(),
                observation_domain_id: r.observation_domain_id,
                observation_point_id: r.observation_point_id,
                layer_stack: r
                    .layer_stack
                    .as_slice()
                    .iter()
                    .map(|l| l.name().to_owned())
                    .collect(),
                layer_size: r.layer_size.as_slice().to_vec(),
                ipv6_routing_header_addresses: r
                    .ipv6_routing_header_addresses
                    .as_slice()
                    .iter()
                    .map(IpAddr::to_string)
                    .collect(),
                ipv6_routing_header_seg_left: r.ipv6_routing_header_seg_left,
            }
        }
    }

    impl TryFrom<FlowJson> for FlowRecord {
        type Error = RecordError;
        fn try_from(j: FlowJson) -> Result<Self, RecordError> {
            Ok(FlowRecord {
                flow_type: j.flow_type,
                time_received_ns: j.time_received_ns,
                sequence_num: j.sequence_num,
                sampling_rate: j.sampling_rate,
                sampler_address: parse_ip("sampler_address", &j.sampler_address)?,
                time_flow_start_ns: j.time_flow_start_ns,
                time_flow_end_ns: j.time_flow_end_ns,
                bytes: j.bytes,
                packets: j.packets,
                src_addr: parse_ip("src_addr", &j.src_addr)?,
                dst_addr: parse_ip("dst_addr", &j.dst_addr)?,
                etype: etype_from_name(&j.etype).ok_or_else(|| RecordError::Unknown {
                    field: "etype",
                    value: j.etype.clone(),
                })?,
                proto: proto_from_name(&j.proto).ok_or_else(|| RecordError::Unknown {
                    field: "proto",
                    value: j.proto.clone(),
                })?,
                src_port: j.src_port,
                dst_port: j.dst_port,
                in_if: j.in_if,
                out_if: j.out_if,
                src_mac: j.src_mac.parse()?,
                dst_mac: j.dst_mac.parse()?,
                src_vlan: j.src_vlan,
                dst_vlan: j.dst_vlan,
                vlan_id: j.vlan_id,
                ip_tos: j.ip_tos,
                forwarding_status: j.forwarding_status,
                ip_ttl: j.ip_ttl,
                ip_flags: j.ip_flags,
                tcp_flags: j.tcp_flags,
                icmp_type: j.icmp_type,
                icmp_code: j.icmp_code,
                ipv6_flow_label: j.ipv6_flow_label,
                fragment_id: j.fragment_id,
                fragment_offset: j.fragment_offset,
                src_as: j.src_as,
                dst_as: j.dst_as,
                next_hop: parse_ip("next_hop", &j.next_hop)?,
                next_hop_as: j.next_hop_as,
                src_mask: parse_mask("src_net", &j.src_net)?,
                dst_mask: parse_mask("dst_net", &j.dst_net)?,
                bgp_next_hop: parse_ip("bgp_next_hop", &j.bgp_next_hop)?,
                bgp_communities: stack("bgp_communities", j.bgp_communities)?,
                as_path: stack("as_path", j.as_path)?,
                mpls_label: stack("mpls_label", j.mpls_label)?,
                mpls_ttl: stack("mpls_ttl", j.mpls_ttl)?,
                mpls_ip: stack("mpls_ip", parse_ips("mpls_ip", &j.mpls_ip)?)?,
                observation_domain_id: j.observation_domain_id,
                observation_point_id: j.observation_point_id,
                layer_stack: stack(
                    "layer_stack",
                    j.layer_stack
                        .iter()
                        .map(|s| {
                            Layer::from_name(s).ok_or_else(|| RecordError::Unknown {
                                field: "layer_stack",
                                value: s.clone(),
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                )?,
                layer_size: stack("layer_size", j.layer_size)?,
                ipv6_routing_header_addresses: stack(
                    "ipv6_routing_header_addresses",
                    parse_ips(
                        "ipv6_routing_header_addresses",
                        &j.ipv6_routing_header_addresses,
                    )?,
                )?,
                ipv6_routing_header_seg_left: j.ipv6_routing_header_seg_left,
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record with most fields set (IPFIX, IPv4); other tests vary it.
    pub(crate) fn sample() -> FlowRecord {
        FlowRecord {
            flow_type: Protocol::Ipfix,
            time_received_ns: 1_700_000_000_123_456_789,
            sequence_num: 42,
            sampling_rate: 100,
            sampler_address: Some("198.18.1.10".parse().unwrap()),
            time_flow_start_ns: 1_700_000_000_000_000_000,
            time_flow_end_ns: 1_700_000_000_100_000_000,
            bytes: 1500,
            packets: 3,
            src_addr: Some("10.1.2.3".parse().unwrap()),
            dst_addr: Some("10.9.8.7".parse().unwrap()),
            etype: 0x0800,
            proto: 6,
            src_port: 443,
            dst_port: 51000,
            in_if: 1,
            out_if: 2,
            src_mac: Mac([0, 0x11, 0x22, 0x33, 0x44, 0xaa]),
            dst_mac: Mac([0xff; 6]),
            src_vlan: 10,
            dst_vlan: 20,
            vlan_id: 10,
            ip_tos: 0x10,
            forwarding_status: 64,
            ip_ttl: 63,
            ip_flags: 2,
            tcp_flags: 0x1b,
            icmp_type: 0,
            icmp_code: 0,
            ipv6_flow_label: 0,
            fragment_id: 7,
            fragment_offset: 0,
            src_as: 65001,
            dst_as: 65002,
            next_hop: Some("10.0.0.1".parse().unwrap()),
            next_hop_as: 0,
            src_mask: 24,
            dst_mask: 16,
            bgp_next_hop: None,
            bgp_communities: [0xfde8_0001].into_iter().collect(),
            as_path: [65001, 65002, 65003].into_iter().collect(),
            mpls_label: [16, 17].into_iter().collect(),
            mpls_ttl: Stack::default(),
            mpls_ip: ["10.0.0.9".parse().unwrap()].into_iter().collect(),
            observation_domain_id: 5,
            observation_point_id: 0,
            layer_stack: [
                Layer::Ethernet,
                Layer::Ipv6,
                Layer::Ipv6HeaderRouting,
                Layer::Tcp,
            ]
            .into_iter()
            .collect(),
            layer_size: [14, 40, 40, 20].into_iter().collect(),
            ipv6_routing_header_addresses: ["2001:db8::a".parse().unwrap()].into_iter().collect(),
            ipv6_routing_header_seg_left: 1,
        }
    }

    #[test]
    fn write_json_equals_serde() {
        let mut records = vec![sample(), FlowRecord::default()];
        let mut v6 = sample();
        v6.flow_type = Protocol::Sflow5;
        v6.src_addr = Some("2001:db8::1".parse().unwrap());
        v6.dst_addr = Some("2001:db8:1::ffff".parse().unwrap());
        v6.etype = 0x86dd;
        v6.proto = 253;
        v6.src_mask = 33;
        v6.dst_mask = 200;
        v6.time_received_ns = u64::MAX;
        records.push(v6);
        for r in records {
            let mut fast = Vec::new();
            r.write_json(&mut fast, None);
            let serde = serde_json::to_vec(&r).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(serde).unwrap()
            );
        }
    }

    #[test]
    fn selected_fields_are_written_in_their_order_as_serde_writes_them() {
        let r = sample();
        let all: serde_json::Map<_, _> =
            serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).expect("an object");
        let reversed: Vec<Field> = Field::ALL.iter().rev().copied().collect();
        let lists = Field::ALL.iter().map(std::slice::from_ref).chain([
            &reversed[..],
            &[Field::Bytes, Field::SrcAddr, Field::Type][..],
        ]);
        for fields in lists {
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            r.write_json(&mut fast, Some(fields));
            r.write_json_serde(&mut slow, fields);
            let text = String::from_utf8(fast).unwrap();
            assert_eq!(text, String::from_utf8(slow).unwrap());
            // Each key once, in the list's order, with the value of the full record.
            let mut rest = text.as_str();
            for f in fields {
                let key = format!("\"{}\":", f.name());
                let at = rest.find(&key).unwrap_or_else(|| panic!("{key} in {text}"));
                rest = &rest[at + key.len()..];
            }
            let picked: serde_json::Map<_, _> = serde_json::from_str(&text).unwrap();
            assert_eq!(picked.len(), fields.len(), "{text}");
            for (k, v) in &picked {
                assert_eq!(Some(v), all.get(k), "{k}");
            }
        }
    }

    #[test]
    fn every_ipv4_octet_is_written_as_std_writes_it() {
        // The text written into `buf`, and whether it overflowed.
        fn written(buf: &mut [u8], addr: Ipv4Addr) -> (String, bool) {
            let mut c = Cursor {
                buf,
                pos: 0,
                overflow: false,
            };
            c.addr(IpAddr::V4(addr));
            let (n, overflow) = (c.pos, c.overflow);
            (String::from_utf8_lossy(&buf[..n]).into_owned(), overflow)
        }
        for o in 0..=255u8 {
            for a in [
                [o, 0, 255, 9],
                [10, o, 99, 100],
                [255, 255, o, o],
                [1, 2, 3, o],
            ] {
                let addr = Ipv4Addr::from(a);
                assert_eq!(written(&mut [0; 64], addr), (addr.to_string(), false));
                // Near the end of the buffer, without room for the 16-byte copy.
                assert_eq!(written(&mut [0; 15], addr), (addr.to_string(), false));
            }
        }
    }

    #[test]
    fn ipv6_addresses_are_written_as_std_writes_them() {
        fn written(addr: Ipv6Addr) -> String {
            let mut buf = [0u8; 64];
            let mut c = Cursor {
                buf: &mut buf,
                pos: 0,
                overflow: false,
            };
            c.addr(IpAddr::V6(addr));
            let (n, overflow) = (c.pos, c.overflow);
            assert!(!overflow);
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
        // Every pattern of zero groups (where `::` goes is decided by them alone), with group
        // values of one to four hex digits; then the special forms.
        let values = [0x1, 0xab, 0xf00, 0xffff, 0x2001, 0x10];
        for zeros in 0..256u32 {
            for (k, _) in values.iter().enumerate() {
                let groups: [u16; 8] = std::array::from_fn(|i| {
                    if zeros >> i & 1 == 1 {
                        0
                    } else {
                        values[(i + k) % values.len()]
                    }
                });
                let addr = Ipv6Addr::from(groups);
                assert_eq!(written(addr), addr.to_string(), "{groups:x?}");
            }
        }
        for addr in [
            "::",
            "::1",
            "::ffff:198.18.0.1",
            "::ffff:0.0.0.0",
            "::198.18.0.1",
            "64:ff9b::c612:1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let addr: Ipv6Addr = addr.parse().unwrap();
            assert_eq!(written(addr), addr.to_string());
        }
    }

    #[test]
    fn worst_case_record_fits_and_matches_serde() {
        let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".parse().unwrap();
        let r = FlowRecord {
            flow_type: Protocol::NetflowV9,
            time_received_ns: u64::MAX,
            sequence_num: u32::MAX,
            sampling_rate: u64::MAX,
            sampler_address: Some(v6),
            time_flow_start_ns: u64::MAX,
            time_flow_end_ns: u64::MAX,
            bytes: u64::MAX,
            packets: u64::MAX,
            src_addr: Some(v6),
            dst_addr: Some(v6),
            etype: 0xffff,
            proto: 255,
            src_port: u16::MAX,
            dst_port: u16::MAX,
            in_if: u32::MAX,
            out_if: u32::MAX,
            src_mac: Mac([0xff; 6]),
            dst_mac: Mac([0xff; 6]),
            src_vlan: u16::MAX,
            dst_vlan: u16::MAX,
            vlan_id: u16::MAX,
            ip_tos: u8::MAX,
            forwarding_status: u8::MAX,
            ip_ttl: u8::MAX,
            ip_flags: u8::MAX,
            tcp_flags: u16::MAX,
            icmp_type: u8::MAX,
            icmp_code: u8::MAX,
            ipv6_flow_label: u32::MAX,
            fragment_id: u32::MAX,
            fragment_offset: u16::MAX,
            src_as: u32::MAX,
            dst_as: u32::MAX,
            next_hop: Some(v6),
            next_hop_as: u32::MAX,
            src_mask: 127,
            dst_mask: 127,
            bgp_next_hop: Some(v6),
            bgp_communities: [u32::MAX; COMMUNITIES].into_iter().collect(),
            as_path: [u32::MAX; AS_PATH_LEN].into_iter().collect(),
            mpls_label: [u32::MAX; MPLS_DEPTH].into_iter().collect(),
            mpls_ttl: [u8::MAX; MPLS_DEPTH].into_iter().collect(),
            mpls_ip: [v6; MPLS_ADDRESSES].into_iter().collect(),
            observation_domain_id: u32::MAX,
            observation_point_id: u32::MAX,
            layer_stack: [Layer::Ipv6HeaderFragment; LAYERS].into_iter().collect(),
            layer_size: [u16::MAX; LAYERS].into_iter().collect(),
            ipv6_routing_header_addresses: [v6; SRV6_SEGMENTS].into_iter().collect(),
            ipv6_routing_header_seg_left: u8::MAX,
        };
        let mut fast = b"prefix".to_vec();
        r.write_json(&mut fast, None);
        assert!(fast.len() < MAX_JSON);
        let mut want = b"prefix".to_vec();
        want.extend_from_slice(&serde_json::to_vec(&r).unwrap());
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            String::from_utf8(want).unwrap()
        );
    }

    #[test]
    fn layer_numbers_and_names_are_goflow2s() {
        for (i, l) in Layer::ALL.into_iter().enumerate() {
            assert_eq!(l as usize, i);
            assert_eq!(Layer::from_number(i as i32), Some(l));
            assert_eq!(Layer::from_name(l.name()), Some(l));
        }
        assert_eq!(Layer::from_number(12), None);
        assert_eq!(Layer::from_name("Dot1q"), None);
    }

    #[test]
    fn stacks_keep_n_and_set_grows_with_blanks() {
        let mut s: Stack<u32, 3> = Stack::default();
        s.set(1, 7);
        assert_eq!(s.as_slice(), [0, 7]);
        assert!(s.push(8));
        assert!(!s.push(9));
        assert_eq!(s.as_slice(), [0, 7, 8]);
        s.set(5, 1);
        assert_eq!(s.as_slice(), [0, 7, 8]);
        s.clear();
        assert!(s.as_slice().is_empty());
    }

    #[test]
    fn decimal_digits() {
        for v in [
            0,
            7,
            9,
            10,
            42,
            99,
            100,
            101,
            999,
            1000,
            65_535,
            1 << 40,
            u64::MAX,
        ] {
            let mut buf = [0u8; 20];
            let mut c = Cursor {
                buf: &mut buf,
                pos: 0,
                overflow: false,
            };
            c.dec(v);
            let n = c.pos;
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), v.to_string());
        }
    }

    #[test]
    fn json_uses_goflow2_names_and_round_trips() {
        let r = sample();
        let v: serde_json::Value = serde_json::to_value(r).unwrap();
        assert_eq!(v["type"], "IPFIX");
        assert_eq!(v["etype"], "IPv4");
        assert_eq!(v["proto"], "TCP");
        assert_eq!(v["src_mac"], "00:11:22:33:44:aa");
        assert_eq!(v["src_net"], "10.1.2.0/24");
        assert_eq!(v["dst_net"], "10.9.0.0/16");
        assert_eq!(v["bgp_next_hop"], "");
        assert_eq!(v["mpls_label"], serde_json::json!([16, 17]));
        assert_eq!(v["as_path"], serde_json::json!([65001, 65002, 65003]));
        assert_eq!(v["bgp_communities"], serde_json::json!([0xfde8_0001u32]));
        assert_eq!(v["mpls_ttl"], serde_json::json!([]));
        assert_eq!(v["mpls_ip"], serde_json::json!(["10.0.0.9"]));
        assert_eq!(v["sampler_address"], "198.18.1.10");
        // GoFlow2 renders the layer enum by name and SRv6 segments as addresses.
        assert_eq!(
            v["layer_stack"],
            serde_json::json!(["Ethernet", "IPv6", "IPv6HeaderRouting", "TCP"])
        );
        assert_eq!(v["layer_size"], serde_json::json!([14, 40, 40, 20]));
        assert_eq!(
            v["ipv6_routing_header_addresses"],
            serde_json::json!(["2001:db8::a"])
        );
        assert_eq!(v["ipv6_routing_header_seg_left"], 1);
        let back: FlowRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
