//! The slow path: a user-space relay for listener traffic the XDP program passes up
//! (fragments, unresolved neighbours, TTL 1, family mismatch, or no XDP at all). It receives
//! the datagram on the listener socket (the kernel has reassembled fragments), asks the same
//! steering tables the kernel uses which peer owns the exporter, and re-sends the datagram
//! with the exporter's source address and port preserved through a header-included raw socket,
//! fragmenting it itself when it exceeds the path MTU (raw sockets with IP_HDRINCL refuse to).
//!
//! The relay is also the baseline the XDP path is measured against (`cargo xtask bench xdp`).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use sluice_common::csum::checksum;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Where the relay sends an exporter's datagrams (the peer's target address and port).
pub trait Resolve: Send {
    /// `None`: no healthy peer (the datagram is dropped and counted). `len` is the datagram's
    /// size, for the exporter's traffic counters.
    fn resolve(&mut self, exporter: IpAddr, listener: SocketAddr, len: usize)
    -> Option<SocketAddr>;
    /// Called when the socket has been quiet for a moment (flush what is pending).
    fn idle(&mut self);
}

/// Relay counters, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams received on listener sockets.
    pub received: AtomicU64,
    /// Datagrams sent to a peer.
    pub forwarded: AtomicU64,
    /// IP fragments sent (datagrams larger than the MTU).
    pub fragments: AtomicU64,
    /// Datagrams with no peer to go to.
    pub no_peer: AtomicU64,
    /// Send errors.
    pub send_errors: AtomicU64,
}

/// Relay errors.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Binding a listener socket.
    #[error("bind listener {addr}: {source}")]
    Bind {
        /// Listener address.
        addr: SocketAddr,
        /// Cause.
        source: io::Error,
    },
    /// Opening a raw socket (needs CAP_NET_RAW).
    #[error("open raw socket for {family}: {source} (the relay needs CAP_NET_RAW)")]
    Raw {
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// Cause.
        source: io::Error,
    },
}

/// Default MTU used when the route's MTU cannot be read.
const DEFAULT_MTU: usize = 1500;

/// Binds one UDP socket per listener. `IP_FREEBIND` lets Central start before a virtual IP is
/// assigned (the standby case).
pub fn bind_listeners(
    listeners: &[SocketAddr],
) -> Result<Vec<(SocketAddr, UdpSocket)>, RelayError> {
    listeners
        .iter()
        .map(|&addr| {
            let sock = bind_freebind(addr).map_err(|source| RelayError::Bind { addr, source })?;
            Ok((addr, sock))
        })
        .collect()
}

fn bind_freebind(addr: SocketAddr) -> io::Result<UdpSocket> {
    // socket2 opens it with SOCK_CLOEXEC.
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    sock.set_reuse_address(true)?;
    // IPPROTO_IP-level IP_FREEBIND, which Linux honours on IPv6 sockets too.
    sock.set_freebind_v4(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_recv_buffer_size(8 << 20)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Header-included raw sockets, one per family.
pub struct RawSender {
    v4: Socket,
    v6: Socket,
    ident: u32,
}

fn raw_socket(domain: Domain, family: &'static str) -> Result<Socket, RelayError> {
    // IPPROTO_RAW implies IP_HDRINCL (and IPV6_HDRINCL on Linux ≥ 4.5).
    Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
        .map_err(|source| RelayError::Raw { family, source })
}

impl RawSender {
    /// Opens both raw sockets.
    pub fn new() -> Result<Self, RelayError> {
        Ok(Self {
            v4: raw_socket(Domain::IPV4, "IPv4")?,
            v6: raw_socket(Domain::IPV6, "IPv6")?,
            ident: std::process::id(),
        })
    }

    /// Sends `payload` as UDP from `src` to `dst`, fragmenting to `mtu`. Returns the number of
    /// IP packets sent.
    pub fn send(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        mtu: usize,
    ) -> io::Result<usize> {
        self.ident = self.ident.wrapping_add(1);
        let packets = match (src, dst) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => ipv4_udp_packets(
                *s.ip(),
                s.port(),
                *d.ip(),
                d.port(),
                payload,
                mtu,
                self.ident as u16,
            ),
            (SocketAddr::V6(s), SocketAddr::V6(d)) => ipv6_udp_packets(
                *s.ip(),
                s.port(),
                *d.ip(),
                d.port(),
                payload,
                mtu,
                self.ident,
            ),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "exporter and peer are of different address families",
                ));
            }
        };
        let sock = if dst.is_ipv4() { &self.v4 } else { &self.v6 };
        // Raw IPv6 sockets want port 0 in the destination address.
        let to = SockAddr::from(SocketAddr::new(dst.ip(), 0));
        for p in &packets {
            sock.send_to(p, &to)?;
        }
        Ok(packets.len())
    }
}

fn udp_segment(sport: u16, dport: u16, payload: &[u8], pseudo: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let c = match checksum(&[pseudo, &udp]) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    udp
}

/// IPv4 packets (one, or fragments) carrying a UDP datagram. Pure; unit-tested.
pub fn ipv4_udp_packets(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload: &[u8],
    mtu: usize,
    ident: u16,
) -> Vec<Vec<u8>> {
    let udp_len = ((8 + payload.len()) as u16).to_be_bytes();
    let pseudo = [&src.octets()[..], &dst.octets()[..], &[0, 17], &udp_len[..]].concat();
    let udp = udp_segment(sport, dport, payload, &pseudo);
    // Fragment payloads are multiples of 8 bytes except the last.
    let max = (mtu.max(68) - 20) & !7;
    let chunks: Vec<&[u8]> = if udp.len() + 20 <= mtu {
        vec![&udp[..]]
    } else {
        udp.chunks(max).collect()
    };
    let mut offset = 0usize;
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mf = if i < last { 0x2000 } else { 0 };
            let frag = mf | ((offset / 8) as u16 & 0x1fff);
            offset += chunk.len();
            let total = (20 + chunk.len()) as u16;
            let mut ip = Vec::with_capacity(total as usize);
            ip.extend_from_slice(&[0x45, 0]);
            ip.extend_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&ident.to_be_bytes());
            ip.extend_from_slice(&frag.to_be_bytes());
            ip.extend_from_slice(&[64, 17, 0, 0]);
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&dst.octets());
            let c = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            ip.extend_from_slice(chunk);
            ip
        })
        .collect()
}

/// IPv6 packets (one, or fragments with a Fragment header) carrying a UDP datagram.
pub fn ipv6_udp_packets(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    payload: &[u8],
    mtu: usize,
    ident: u32,
) -> Vec<Vec<u8>> {
    let udp_len = ((8 + payload.len()) as u32).to_be_bytes();
    let pseudo = [
        &src.octets()[..],
        &dst.octets()[..],
        &udp_len[..],
        &[0, 0, 0, 17],
    ]
    .concat();
    let udp = udp_segment(sport, dport, payload, &pseudo);
    let header = |payload_len: usize, next: u8| {
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(payload_len as u16).to_be_bytes());
        ip.extend_from_slice(&[next, 64]);
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        ip
    };
    if udp.len() + 40 <= mtu {
        let mut p = header(udp.len(), 17);
        p.extend_from_slice(&udp);
        return vec![p];
    }
    let max = (mtu.max(1280) - 40 - 8) & !7;
    let chunks: Vec<&[u8]> = udp.chunks(max).collect();
    let last = chunks.len() - 1;
    let mut offset = 0usize;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut p = header(8 + chunk.len(), 44);
            let m = u16::from(i < last);
            let off = ((offset / 8) as u16) << 3 | m;
            offset += chunk.len();
            p.extend_from_slice(&[17, 0]);
            p.extend_from_slice(&off.to_be_bytes());
            p.extend_from_slice(&ident.to_be_bytes());
            p.extend_from_slice(chunk);
            p
        })
        .collect()
}

/// Path MTU towards `dst` as the kernel sees it (a connected UDP socket's `IP_MTU`).
pub fn path_mtu(dst: SocketAddr) -> usize {
    let probe = || -> io::Result<usize> {
        let bind: SocketAddr = if dst.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let s = UdpSocket::bind(bind)?;
        s.connect(dst)?;
        let (level, opt) = if dst.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_MTU)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU)
        };
        let mut mtu: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid out-pointers of the right size.
        let rc =
            unsafe { libc::getsockopt(s.as_raw_fd(), level, opt, (&raw mut mtu).cast(), &mut len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(mtu as usize)
    };
    probe().unwrap_or(DEFAULT_MTU)
}

/// Serves one listener socket until `stop` is set: receive, resolve, re-send.
pub fn serve(
    listener: SocketAddr,
    sock: UdpSocket,
    mut resolver: impl Resolve,
    stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
) -> Result<(), RelayError> {
    let mut sender = RawSender::new()?;
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 65_536];
    let mut mtus: std::collections::HashMap<SocketAddr, usize> = std::collections::HashMap::new();
    let mut logged_errors = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                resolver.idle();
                continue;
            }
            Err(e) => {
                tracing::warn!(%listener, error = %e, "relay receive failed");
                continue;
            }
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        let Some(peer) = resolver.resolve(from.ip(), listener, n) else {
            stats.no_peer.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mtu = *mtus.entry(peer).or_insert_with(|| path_mtu(peer));
        match sender.send(from, peer, &buf[..n], mtu) {
            Ok(k) => {
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
                if k > 1 {
                    stats.fragments.fetch_add(k as u64, Ordering::Relaxed);
                }
            }
            Err(e) => {
                let total = stats.send_errors.fetch_add(1, Ordering::Relaxed);
                // Log the first few and then every 1000th: never per packet.
                if total < 5 || total.is_multiple_of(1000) {
                    logged_errors += 1;
                    tracing::warn!(%listener, exporter = %from, %peer, error = %e, total = total + 1, logged = logged_errors, "relay send failed");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reassemble_v4(packets: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            assert_eq!(checksum(&[&p[..20]]), 0, "IPv4 header checksum");
            let frag = u16::from_be_bytes([p[6], p[7]]);
            assert_eq!(
                usize::from(frag & 0x1fff) * 8,
                out.len(),
                "offsets are contiguous"
            );
            out.extend_from_slice(&p[20..]);
        }
        out
    }

    #[test]
    fn small_ipv4_datagram_is_one_packet_with_valid_checksums() {
        let (s, d) = (Ipv4Addr::new(198, 18, 1, 10), Ipv4Addr::new(198, 18, 2, 2));
        let p = ipv4_udp_packets(s, 40000, d, 2055, b"hello", 1500, 7);
        assert_eq!(p.len(), 1);
        let udp = &p[0][20..];
        let len = (udp.len() as u16).to_be_bytes();
        assert_eq!(
            checksum(&[&s.octets(), &d.octets(), &[0, 17], &len, udp]),
            0
        );
        assert_eq!(&p[0][12..16], &s.octets(), "source preserved");
        assert_eq!(&udp[0..2], &40000u16.to_be_bytes());
    }

    #[test]
    fn large_ipv4_datagram_is_fragmented_within_the_mtu() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let (s, d) = (Ipv4Addr::new(198, 18, 1, 10), Ipv4Addr::new(198, 18, 2, 2));
        let p = ipv4_udp_packets(s, 1, d, 2, &payload, 1500, 9);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|f| f.len() <= 1500));
        assert!(
            p[..2]
                .iter()
                .all(|f| u16::from_be_bytes([f[6], f[7]]) & 0x2000 != 0),
            "MF on all but the last"
        );
        let udp = reassemble_v4(&p);
        assert_eq!(&udp[8..], &payload[..]);
        let len = (udp.len() as u16).to_be_bytes();
        assert_eq!(
            checksum(&[&s.octets(), &d.octets(), &[0, 17], &len, &udp]),
            0
        );
    }

    #[test]
    fn large_ipv6_datagram_gets_fragment_headers() {
        let payload = vec![0xab; 3000];
        let (s, d): (Ipv6Addr, Ipv6Addr) =
            ("2001:2::10".parse().unwrap(), "2001:2::2".parse().unwrap());
        let p = ipv6_udp_packets(s, 1, d, 2, &payload, 1500, 5);
        assert_eq!(p.len(), 3);
        let mut udp = Vec::new();
        for f in &p {
            assert!(f.len() <= 1500);
            assert_eq!(f[6], 44, "fragment header");
            let off = u16::from_be_bytes([f[42], f[43]]);
            assert_eq!(usize::from(off >> 3) * 8, udp.len());
            udp.extend_from_slice(&f[48..]);
        }
        assert_eq!(&udp[8..], &payload[..]);
        let len = (udp.len() as u32).to_be_bytes();
        assert_eq!(
            checksum(&[&s.octets(), &d.octets(), &len, &[0, 0, 0, 17], &udp]),
            0
        );
    }
}
