use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, SystemTime};

use super::config::{Protocol, SyslogConfig};
use super::frame::{Header, frame};
use crate::output::batch::EncodedBatch;
use crate::output::sink::{Sink, SinkFailure};

/// TCP writes are grouped into chunks of about this size; a failure loses no acknowledged chunk.
const TCP_CHUNK_BYTES: usize = 64 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum Transport {
    Udp(UdpSocket),
    /// Connected lazily and again after any error.
    Tcp(Option<TcpStream>),
}

/// Sends each record as one RFC 5424 message.
#[derive(Debug)]
pub struct SyslogSink {
    address: String,
    header: Header,
    transport: Transport,
    out: Vec<u8>,
}

impl SyslogSink {
    /// UDP resolves and connects now (an unresolvable address is a start error); TCP connects
    /// in the health check and whenever a write needs it.
    pub fn new(config: &SyslogConfig) -> io::Result<Self> {
        let hostname = config.hostname.clone().unwrap_or_else(local_hostname);
        let header = Header::new(
            config.facility,
            config.severity,
            hostname,
            config.app_name.clone(),
            std::process::id(),
        );
        let transport = match config.protocol {
            Protocol::Udp => Transport::Udp(udp_connect(&config.address)?),
            Protocol::Tcp => Transport::Tcp(None),
        };
        Ok(SyslogSink {
            address: config.address.clone(),
            header,
            transport,
            out: Vec::new(),
        })
    }

    fn tcp_stream(&mut self) -> io::Result<&mut TcpStream> {
        let Transport::Tcp(slot) = &mut self.transport else {
            return Err(io::Error::other("not a TCP output"));
        };
        if slot.as_ref().is_some_and(peer_closed) {
            *slot = None;
        }
        match slot {
            Some(stream) => Ok(stream),
            None => Ok(slot.insert(tcp_connect(&self.address)?)),
        }
    }

    fn write_tcp(
        &mut self,
        batch: &EncodedBatch,
        from: usize,
        written: &mut usize,
    ) -> io::Result<()> {
        let prefix = self.header.prefix(SystemTime::now());
        let mut lines = batch.payloads_from(from).peekable();
        while lines.peek().is_some() {
            self.out.clear();
            let mut pending = 0;
            while self.out.len() < TCP_CHUNK_BYTES {
                let Some(line) = lines.next() else { break };
                frame(&mut self.out, &prefix, line, true);
                pending += 1;
            }
            let out = std::mem::take(&mut self.out);
            let result = self.tcp_stream().and_then(|s| s.write_all(&out));
            self.out = out;
            if let Err(e) = result {
                self.transport = Transport::Tcp(None);
                return Err(e);
            }
            *written += pending;
        }
        Ok(())
    }

    fn write_udp(
        socket: &UdpSocket,
        out: &mut Vec<u8>,
        prefix: &[u8],
        batch: &EncodedBatch,
        from: usize,
        written: &mut usize,
    ) -> io::Result<()> {
        for line in batch.payloads_from(from) {
            out.clear();
            frame(out, prefix, line, false);
            socket.send(out)?;
            *written += 1;
        }
        Ok(())
    }
}

impl Sink for SyslogSink {
    fn healthcheck(&mut self) -> io::Result<()> {
        match self.transport {
            Transport::Udp(_) => Ok(()),
            Transport::Tcp(_) => self.tcp_stream().map(drop),
        }
    }

    fn write(&mut self, batch: &EncodedBatch, from: usize) -> Result<(), SinkFailure> {
        let mut written = 0;
        let result = match &self.transport {
            Transport::Udp(socket) => {
                let prefix = self.header.prefix(SystemTime::now());
                Self::write_udp(socket, &mut self.out, &prefix, batch, from, &mut written)
            }
            Transport::Tcp(_) => self.write_tcp(batch, from, &mut written),
        };
        result.map_err(|error| SinkFailure { written, error })
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.transport {
            Transport::Tcp(Some(stream)) => stream.flush(),
            _ => Ok(()),
        }
    }
}

fn resolve(address: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = address.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{address} resolves to no address"),
        ));
    }
    Ok(addrs)
}

fn udp_connect(address: &str) -> io::Result<UdpSocket> {
    let target = resolve(address)?[0];
    let local: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(target)?;
    Ok(socket)
}

fn tcp_connect(address: &str) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in resolve(address)? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
                stream.set_nodelay(true)?;
                tracing::info!(address, "syslog output connected");
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
}

/// True when the server has closed its end: a write would vanish into a dead connection.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let closed = match stream.peek(&mut byte) {
        // An orderly shutdown by the server.
        Ok(0) => true,
        // The server sent something; syslog servers normally do not, but the link is up.
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).is_err() || closed
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn batch(n: usize) -> EncodedBatch {
        let mut b = EncodedBatch::new();
        for i in 0..n {
            b.push_line(format!("{{\"i\":{i}}}").as_bytes());
        }
        b
    }

    #[test]
    fn udp_sends_one_message_per_record() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let config = SyslogConfig::to(Protocol::Udp, server.local_addr().unwrap().to_string());
        let mut sink = SyslogSink::new(&config).unwrap();
        sink.write(&batch(3), 1).unwrap();
        let mut buf = [0u8; 1024];
        for i in 1..3 {
            let n = server.recv(&mut buf).unwrap();
            let msg = std::str::from_utf8(&buf[..n]).unwrap();
            assert!(msg.starts_with("<134>1 "), "{msg}");
            assert!(msg.ends_with(&format!(
                " sluice-peer {} flow - {{\"i\":{i}}}",
                std::process::id()
            )));
        }
    }

    #[test]
    fn tcp_reconnects_after_the_server_was_down() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut sink = SyslogSink::new(&SyslogConfig::to(Protocol::Tcp, addr.to_string())).unwrap();
        assert!(sink.healthcheck().is_err());
        let failure = sink.write(&batch(2), 0).unwrap_err();
        assert_eq!(failure.written, 0);

        let listener = TcpListener::bind(addr).unwrap();
        sink.write(&batch(2), 0).unwrap();
        sink.flush().unwrap();
        drop(sink);
        let (mut conn, _) = listener.accept().unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        let (len, rest) = text.split_once(' ').unwrap();
        let len: usize = len.parse().unwrap();
        assert!(rest[..len].ends_with("{\"i\":0}"));
        assert!(rest[len..].ends_with("{\"i\":1}"));
    }
}
