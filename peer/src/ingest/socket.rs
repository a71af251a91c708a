//! Receive sockets: `SO_REUSEPORT` groups, receive buffer sizing, `SO_RXQ_OVFL`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// How long a receive call waits before the thread checks for shutdown.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// `count` sockets sharing `addr` through `SO_REUSEPORT` (the kernel spreads exporters over
/// them). Port 0 binds an ephemeral port for the first socket and the rest join it.
pub fn bind_group(addr: SocketAddr, count: usize, rcvbuf: usize) -> io::Result<Vec<UdpSocket>> {
    if addr.port() != 0 {
        ensure_unused(addr)?;
    }
    let mut sockets = Vec::with_capacity(count);
    let mut target = addr;
    for i in 0..count {
        let socket = open(target, rcvbuf, i == 0)?;
        if i == 0 {
            target = socket.local_addr()?;
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Another process's `SO_REUSEPORT` group on the same port would silently share the traffic
/// with ours; a plain bind (which such a group refuses) finds it first.
fn ensure_unused(addr: SocketAddr) -> io::Result<()> {
    match new_socket(addr)?.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "address already in use by another socket (is another collector running?)",
        )),
        other => other,
    }
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

fn open(addr: SocketAddr, rcvbuf: usize, report: bool) -> io::Result<UdpSocket> {
    let socket = new_socket(addr)?;
    socket.set_reuse_port(true)?;
    let actual = set_receive_buffer(&socket, rcvbuf)?;
    if report && actual < rcvbuf {
        tracing::warn!(
            %addr,
            requested = rcvbuf,
            granted = actual,
            "kernel capped the receive buffer; bursts may be dropped. Grant CAP_NET_ADMIN \
             (SO_RCVBUFFORCE) or raise net.core.rmem_max"
        );
    }
    set_int(&socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)?;
    socket.set_read_timeout(Some(POLL_INTERVAL))?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// `SO_RCVBUFFORCE` when privileged (ignores `net.core.rmem_max`), else `SO_RCVBUF`; returns
/// the size the kernel granted. The kernel doubles the value set (bookkeeping overhead, see
/// socket(7)) and reports the doubled value, so half is asked for.
fn set_receive_buffer(socket: &Socket, bytes: usize) -> io::Result<usize> {
    let value = i32::try_from(bytes / 2).unwrap_or(i32::MAX);
    if set_int(socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value).is_err() {
        socket.set_recv_buffer_size(bytes / 2)?;
    }
    socket.recv_buffer_size()
}

fn set_int(socket: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: the option value is a valid c_int for the length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_taken_by_another_group_is_refused() {
        let first = bind_group("127.0.0.1:0".parse().unwrap(), 2, 1 << 20).unwrap();
        let taken = first[0].local_addr().unwrap();
        let err = bind_group(taken, 2, 1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(first);
        assert_eq!(bind_group(taken, 2, 1 << 20).unwrap().len(), 2);
    }

    #[test]
    fn group_shares_one_ephemeral_port() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3, 1 << 20).unwrap();
        let port = group[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(group.iter().all(|s| s.local_addr().unwrap().port() == port));
    }
}
