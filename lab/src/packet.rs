//! An independent frame builder: Ethernet, VLAN tags, IPv4 (with options) or IPv6, UDP, with
//! checksums computed from scratch. Tests describe the expected output of the XDP program as a
//! second `Frame` and compare bytes.

use std::net::IpAddr;

/// One frame to build.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// VLAN tags, outermost first: (TPID, TCI).
    pub vlans: Vec<(u16, u16)>,
    /// Source address; the family decides IPv4 or IPv6.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 options (padded to 4 bytes).
    pub ip_options: Vec<u8>,
    /// IPv4 flags+fragment offset field.
    pub frag: u16,
    /// IP protocol / next header (17 = UDP).
    pub proto: u8,
    /// UDP source port.
    pub sport: u16,
    /// UDP destination port.
    pub dport: u16,
    /// Payload after the UDP header.
    pub payload: Vec<u8>,
    /// Send a zero UDP checksum (IPv4 "no checksum").
    pub zero_udp_csum: bool,
}

impl Frame {
    /// A NetFlow-ish UDP datagram from `src` to `dst:dport` with `len` payload bytes.
    pub fn udp(src: IpAddr, dst: IpAddr, dport: u16, len: usize) -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0, 0x01],
            src_mac: [0x02, 0, 0, 0, 0, 0x10],
            vlans: Vec::new(),
            src,
            dst,
            ttl: 64,
            ip_options: Vec::new(),
            frag: 0,
            proto: 17,
            sport: 50_000,
            dport,
            payload: (0..len).map(|i| (i * 7 + 3) as u8).collect(),
            zero_udp_csum: false,
        }
    }

    /// The bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for &(tpid, tci) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        let mut udp = Vec::new();
        udp.extend_from_slice(&self.sport.to_be_bytes());
        udp.extend_from_slice(&self.dport.to_be_bytes());
        udp.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&self.payload);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let mut opts = self.ip_options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(0);
                }
                let ihl = (20 + opts.len()) / 4;
                let total = (ihl * 4 + udp.len()) as u16;
                let mut ip = vec![0x40 | ihl as u8, 0];
                ip.extend_from_slice(&total.to_be_bytes());
                ip.extend_from_slice(&[0xbe, 0xef]);
                ip.extend_from_slice(&self.frag.to_be_bytes());
                ip.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                ip.extend_from_slice(&opts);
                let c = checksum(&[&ip]);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                if !self.zero_udp_csum {
                    let len = (udp.len() as u16).to_be_bytes();
                    let c = nonzero(checksum(&[&s.octets(), &d.octets(), &[0, 17], &len, &udp]));
                    udp[6..8].copy_from_slice(&c.to_be_bytes());
                }
                f.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let mut ip = vec![0x60, 0, 0, 0];
                ip.extend_from_slice(&(udp.len() as u16).to_be_bytes());
                ip.extend_from_slice(&[self.proto, self.ttl]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                if !self.zero_udp_csum {
                    let len = (udp.len() as u32).to_be_bytes();
                    let c = nonzero(checksum(&[
                        &s.octets(),
                        &d.octets(),
                        &len,
                        &[0, 0, 0, 17],
                        &udp,
                    ]));
                    udp[6..8].copy_from_slice(&c.to_be_bytes());
                }
                f.extend_from_slice(&ip);
            }
            _ => panic!("mixed address families"),
        }
        f.extend_from_slice(&udp);
        f
    }
}

fn nonzero(c: u16) -> u16 {
    if c == 0 { 0xffff } else { c }
}

/// RFC 1071 checksum over the concatenation of `parts`. The test oracle: written apart from
/// `sluice_common::csum` on purpose, so a bug there (which the XDP program and the relay
/// share) shows up as a mismatch here instead of agreeing with itself.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ARP request frame.
pub fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x10]);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x10, 198, 18, 1, 10]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[198, 18, 0, 1]);
    f
}
