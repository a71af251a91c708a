//! Batched receive with `recvmmsg(2)`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

/// Control-message room per datagram: one `SO_RXQ_OVFL` (a u32) needs `CMSG_SPACE(4)` = 24
/// bytes on 64-bit Linux; 64 leaves room for what the kernel may add.
const CONTROL_WORDS: usize = 8;

/// One received datagram.
#[derive(Debug)]
pub struct Received<'a> {
    /// Source address (IPv4-mapped IPv6 shown as IPv4); `None` for an unknown family.
    pub source: Option<IpAddr>,
    pub data: &'a [u8],
    /// Longer than the slot; `data` holds only its start.
    pub truncated: bool,
    /// The socket's drop counter (`SO_RXQ_OVFL`), stamped on datagrams queued after a drop.
    pub kernel_drops: Option<u32>,
}

/// Buffers for up to `n` datagrams per call. Holds raw pointers into itself, so it is built
/// and used on the receiving thread.
pub struct RecvBatch {
    slot: usize,
    data: Vec<u8>,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    control: Vec<[u64; CONTROL_WORDS]>,
    headers: Vec<libc::mmsghdr>,
    received: usize,
}

impl RecvBatch {
    pub fn new(n: usize, slot: usize) -> Self {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let (name, header) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        RecvBatch {
            slot,
            data: vec![0; n * slot],
            iov: vec![iov; n],
            names: vec![name; n],
            control: vec![[0; CONTROL_WORDS]; n],
            headers: vec![header; n],
            received: 0,
        }
    }

    /// Datagrams one call can return.
    pub fn capacity(&self) -> usize {
        self.headers.len()
    }

    /// Takes the queued datagrams, up to the batch size; with `wait`, first waits (up to the
    /// socket's receive timeout) for one. Returns how many arrived; nothing is `WouldBlock`.
    pub fn recv(&mut self, fd: RawFd, wait: bool) -> io::Result<usize> {
        self.received = 0;
        let n = self.headers.len();
        for i in 0..n {
            self.iov[i] = libc::iovec {
                iov_base: self.data[i * self.slot..].as_mut_ptr().cast(),
                iov_len: self.slot,
            };
            let h = &mut self.headers[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &raw mut self.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.control[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>() as _;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: every header points at buffers owned by `self` with the lengths given, and
        // they live (unmoved) for the duration of the call.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                n as libc::c_uint,
                if wait {
                    libc::MSG_WAITFORONE
                } else {
                    libc::MSG_DONTWAIT
                },
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = rc as usize;
        Ok(self.received)
    }

    /// The datagrams of the last [`RecvBatch::recv`].
    pub fn iter(&self) -> impl Iterator<Item = Received<'_>> {
        (0..self.received).map(move |i| {
            let h = &self.headers[i];
            let len = (h.msg_len as usize).min(self.slot);
            Received {
                source: source_ip(&self.names[i]),
                data: &self.data[i * self.slot..i * self.slot + len],
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                kernel_drops: rxq_ovfl(&h.msg_hdr),
            }
        })
    }
}

fn source_ip(ss: &libc::sockaddr_storage) -> Option<IpAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(std::ptr::from_ref(ss).cast::<libc::sockaddr_in>()) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(std::ptr::from_ref(ss).cast::<libc::sockaddr_in6>()) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)).to_canonical())
        }
        _ => None,
    }
}

/// The `SO_RXQ_OVFL` counter among the control messages, if present.
fn rxq_ovfl(msg: &libc::msghdr) -> Option<u32> {
    // SAFETY: `msg` was filled by recvmmsg; the CMSG macros stay within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL {
                return Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<u32>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn receives_a_batch_with_sources_and_truncation() {
        let group =
            super::super::socket::bind_group("127.0.0.1:0".parse().unwrap(), 1, 1 << 20).unwrap();
        let rx = &group[0];
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        tx.send_to(&[7u8; 600], rx.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new(8, 512);
        let mut got = Vec::new();
        while got.len() < 2 {
            batch.recv(rx.as_raw_fd(), true).unwrap();
            got.extend(batch.iter().map(|r| (r.source, r.data.len(), r.truncated)));
        }
        let localhost = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(got, [(localhost, 5, false), (localhost, 512, true)]);
    }

    #[test]
    fn kernel_drops_arrive_with_the_next_datagram() {
        // The smallest receive buffer the kernel allows holds a few datagrams at most.
        let group =
            super::super::socket::bind_group("127.0.0.1:0".parse().unwrap(), 1, 4096).unwrap();
        let rx = &group[0];
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            tx.send_to(&[1u8; 1000], rx.local_addr().unwrap()).unwrap();
        }
        let mut batch = RecvBatch::new(256, 2048);
        let queued = batch.recv(rx.as_raw_fd(), true).unwrap();
        assert!(queued < 200);
        // The count is stamped on datagrams queued after the drops.
        tx.send_to(b"after", rx.local_addr().unwrap()).unwrap();
        batch.recv(rx.as_raw_fd(), true).unwrap();
        let drops = batch.iter().find_map(|r| r.kernel_drops);
        assert_eq!(drops, Some(200 - queued as u32));
    }
}
