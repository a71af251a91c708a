//! The exporters' side: one UDP socket sends the corpus to a loopback port with `sendmmsg`,
//! each datagram from its own exporter address (`IP_PKTINFO` source per message), paced.

use std::{
    mem::zeroed,
    net::{IpAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::corpus::Corpus;

/// Duration of each run of parts 2, 3 and 5.
pub const RUN: Duration = Duration::from_secs(2);

/// Datagrams per second of the over-UDP runs of parts 2 and 5: nfcapd and every output of the
/// peer are fed the same load, so that their flows per CPU-second compare (per-flow CPU falls
/// as batches grow with the rate).
pub const INGEST_RATE: u64 = 50_000;

/// Datagrams per `sendmmsg` call at most.
const BATCH: usize = 64;

/// A control message choosing the source address (`struct in_pktinfo` after its header).
#[repr(C)]
struct Pktinfo {
    header: libc::cmsghdr,
    info: libc::in_pktinfo,
}

/// What one send did.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub datagrams: u64,
    pub flows: u64,
    /// Seconds from the first to the last datagram.
    pub secs: f64,
}

impl Sent {
    /// Datagrams per second achieved.
    pub fn rate(&self) -> f64 {
        self.datagrams as f64 / self.secs
    }
}

/// Sends `count` datagrams of `corpus` (from its start, looping) to `127.0.0.1:port` at `rate`
/// datagrams per second.
pub fn send(corpus: &Corpus, port: u16, rate: u64, count: u64, stop: &AtomicBool) -> Result<Sent> {
    let sock = UdpSocket::bind("0.0.0.0:0").context("bind the sender")?;
    let dest = sockaddr(SocketAddrV4::new([127, 0, 0, 1].into(), port));
    let mut iovs: Vec<libc::iovec> = corpus
        .datagrams
        .iter()
        .map(|(_, d)| libc::iovec {
            // sendmmsg only reads the buffer.
            iov_base: d.as_ptr().cast_mut().cast(),
            iov_len: d.len(),
        })
        .collect();
    let mut controls: Vec<Pktinfo> = corpus
        .datagrams
        .iter()
        .map(|(exporter, _)| {
            let IpAddr::V4(a) = exporter else {
                unreachable!("the corpus's exporters are 127/8 addresses")
            };
            // SAFETY: plain data; all-zero is valid before the fields are set.
            let mut c: Pktinfo = unsafe { zeroed() };
            // SAFETY: CMSG_LEN only computes a length.
            c.header.cmsg_len =
                unsafe { libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) } as _;
            c.header.cmsg_level = libc::IPPROTO_IP;
            c.header.cmsg_type = libc::IP_PKTINFO;
            c.info.ipi_spec_dst.s_addr = u32::from(*a).to_be();
            c
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(&mut controls)
        .map(|(iov, control)| {
            // SAFETY: plain data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_name = (&raw const dest).cast_mut().cast();
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = (control as *mut Pktinfo).cast();
            m.msg_hdr.msg_controllen = size_of::<Pktinfo>() as _;
            m
        })
        .collect();
    let mut sent = Sent {
        datagrams: 0,
        flows: 0,
        secs: 0.0,
    };
    let mut at = 0usize;
    let start = Instant::now();
    while sent.datagrams < count {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let due = ((rate as f64 * start.elapsed().as_secs_f64()) as u64).min(count);
        let n = (due - sent.datagrams)
            .min(BATCH as u64)
            .min((msgs.len() - at) as u64) as usize;
        if n == 0 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        // SAFETY: msgs[at..at + n] point at live buffers, control messages and `dest`.
        let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs[at..].as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
                return Err(e).context("sendmmsg");
            }
            continue;
        }
        let r = r as usize;
        sent.datagrams += r as u64;
        sent.flows += corpus.flows_in[at..at + r]
            .iter()
            .map(|&f| u64::from(f))
            .sum::<u64>();
        at = (at + r) % msgs.len();
    }
    sent.secs = start.elapsed().as_secs_f64();
    Ok(sent)
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}
