//! UDP ingest: `SO_REUSEPORT` socket groups, one receive thread per socket, batched
//! `recvmmsg`, handing datagrams to the pipeline's [`Router`] without ever blocking on decoding.

mod recv;
mod socket;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;
use std::time::Duration;

pub use recv::{Received, RecvBatch};
pub use socket::bind_group;

use crate::clock::now_ns;
use crate::config::IngestConfig;
use crate::metrics::{DropReason, LogLimiter, Metrics, SocketStats};
use crate::pipeline::Router;
use crate::shutdown::Shutdown;

/// Binding failed; names the address.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Bound sockets, not yet receiving.
pub struct Ingest {
    sockets: Vec<(UdpSocket, Arc<SocketStats>)>,
    local: Vec<SocketAddr>,
    batch_size: usize,
    slot: usize,
    linger: Duration,
}

impl Ingest {
    /// Binds every configured address (`sockets_per_port` sockets each).
    pub fn bind(config: &IngestConfig, metrics: &Metrics) -> Result<Self, BindError> {
        let mut sockets = Vec::new();
        let mut local = Vec::new();
        for addr in config.listen_addresses() {
            let group = match bind_group(addr, config.sockets_per_port, config.rcvbuf_bytes) {
                Ok(group) => group,
                // The default `[::]` listeners on a host without IPv6: IPv4 still works.
                Err(e) if is_missing_ipv6(addr, &e) && config.listen.is_empty() => {
                    tracing::warn!(%addr, error = %e, "IPv6 unavailable; not listening on it");
                    continue;
                }
                Err(source) => return Err(BindError { addr, source }),
            };
            for (index, socket) in group.into_iter().enumerate() {
                let bound = socket
                    .local_addr()
                    .map_err(|source| BindError { addr, source })?;
                if index == 0 {
                    local.push(bound);
                }
                sockets.push((socket, metrics.register_socket(bound, index)));
            }
        }
        Ok(Ingest {
            sockets,
            local,
            batch_size: config.batch_size,
            slot: config.max_datagram_bytes,
            linger: Duration::from_micros(config.linger_us),
        })
    }

    /// The bound addresses (ports resolved), one per configured address.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// Starts one receive thread per socket; `router` makes each thread's router.
    pub fn start(
        self,
        mut router: impl FnMut() -> Router,
        metrics: &Arc<Metrics>,
        shutdown: &Shutdown,
    ) -> std::io::Result<Vec<JoinHandle<()>>> {
        let mut threads = Vec::with_capacity(self.sockets.len());
        for (socket, stats) in self.sockets {
            let receiver = Receiver {
                socket,
                stats,
                router: router(),
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
                linger: self.linger,
            };
            let (batch_size, slot) = (self.batch_size, self.slot);
            let name = format!(
                "recv-{}-{}",
                receiver.stats.local.port(),
                receiver.stats.index
            );
            threads.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || receiver.run(RecvBatch::new(batch_size, slot)))?,
            );
        }
        Ok(threads)
    }
}

fn is_missing_ipv6(addr: SocketAddr, error: &std::io::Error) -> bool {
    addr.is_ipv6()
        && addr.ip().is_unspecified()
        && matches!(
            error.raw_os_error(),
            Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
        )
}

/// Reads (of up to `batch_size` datagrams) gathered into one hand-over at most.
const MAX_READS_PER_FLUSH: usize = 4;

struct Receiver {
    socket: UdpSocket,
    stats: Arc<SocketStats>,
    router: Router,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    linger: Duration,
}

impl Receiver {
    fn run(mut self, mut batch: RecvBatch) {
        let fd = self.socket.as_raw_fd();
        let errors = LogLimiter::default();
        while !self.shutdown.is_triggered() {
            match batch.recv(fd, true) {
                Ok(n) => {
                    self.handle(&batch);
                    self.gather(fd, &mut batch, n);
                    self.router.flush();
                }
                Err(error) => {
                    use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
                    // Batches held for a busy shard go out even when no traffic arrives.
                    self.router.flush();
                    if !matches!(error.kind(), WouldBlock | TimedOut | Interrupted) {
                        self.metrics.receive_errors.fetch_add(1, Relaxed);
                        if errors.allow() {
                            tracing::warn!(socket = %self.stats.local, %error, "receive failed");
                        }
                        self.shutdown.sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        // What the kernel already queued is decoded too: read until the socket is empty.
        while batch.recv(fd, false).is_ok_and(|n| n > 0) {
            self.handle(&batch);
        }
        self.router.finish();
    }

    /// After a read, collects more datagrams before the batches are handed over: when the
    /// socket ran dry, waits `ingest.linger_us` once, then reads on while reads come back full.
    /// Each hand-over may wake a shard thread (costly, especially on VMs); at moderate rates this
    /// turns one hand-over per datagram into one per linger period.
    fn gather(&mut self, fd: std::os::fd::RawFd, batch: &mut RecvBatch, mut n: usize) {
        let mut lingered = false;
        for _ in 1..MAX_READS_PER_FLUSH {
            if n < batch.capacity() {
                if lingered || self.linger.is_zero() {
                    return;
                }
                std::thread::sleep(self.linger);
                lingered = true;
            }
            match batch.recv(fd, false) {
                Ok(m) if m > 0 => {
                    self.handle(batch);
                    n = m;
                }
                _ => return,
            }
        }
    }

    /// Routes and counts the datagrams of one read (sent on the next flush).
    fn handle(&mut self, batch: &RecvBatch) {
        let now = now_ns();
        let (mut datagrams, mut bytes) = (0u64, 0u64);
        for r in batch.iter() {
            if let Some(drops) = r.kernel_drops {
                self.stats.kernel_drops.fetch_max(u64::from(drops), Relaxed);
            }
            // recvmmsg on an AF_INET/AF_INET6 socket always fills in the source.
            let Some(source) = r.source else { continue };
            datagrams += 1;
            bytes += r.data.len() as u64;
            if r.truncated {
                self.metrics.dropped(DropReason::Truncated, source, 1);
                continue;
            }
            self.router.push(source, now, r.data);
        }
        self.metrics.datagrams.fetch_add(datagrams, Relaxed);
        self.metrics.bytes.fetch_add(bytes, Relaxed);
    }
}
