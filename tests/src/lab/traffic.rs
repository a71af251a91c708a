//! Traffic through the lab: a paced NetFlow v5 sender with a rate per exporter, and taps on
//! the peers' links recording which exporter's datagrams reach which peer, and when.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{LISTENER, Lab, PORT};
use crate::{
    force_rcvbuf,
    netns::{NetNs, ifindex},
};

/// A NetFlow v5 datagram with one flow record; `sequence` is its flow sequence number.
fn netflow_v5(sequence: u32, uptime: Duration) -> Vec<u8> {
    let ms = uptime.as_millis() as u32;
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut d = Vec::with_capacity(24 + 48);
    // Header: version, count, sys_uptime, unix_secs, unix_nsecs, flow_sequence, engine type
    // and id, sampling interval.
    d.extend(5u16.to_be_bytes());
    d.extend(1u16.to_be_bytes());
    d.extend(ms.to_be_bytes());
    d.extend((unix.as_secs() as u32).to_be_bytes());
    d.extend(unix.subsec_nanos().to_be_bytes());
    d.extend(sequence.to_be_bytes());
    d.extend([0u8; 4]);
    // Record: src, dst, next hop, input/output ifindex, packets, octets, first, last, ports,
    // pad, TCP flags, protocol, ToS, AS numbers, masks, pad.
    d.extend([10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
    d.extend(1u32.to_be_bytes());
    d.extend(100u32.to_be_bytes());
    d.extend(ms.to_be_bytes());
    d.extend(ms.to_be_bytes());
    d.extend(40_000u16.to_be_bytes());
    d.extend(53u16.to_be_bytes());
    d.extend([0, 0, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    d
}

/// NetFlow v5 from the lab's exporters to Central's listener, exporter `i` at `rates[i]`
/// datagrams per second, on a thread of its own until stopped (or dropped).
pub struct Sender {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<u64>>>,
}

impl Sender {
    /// Starts sending from exporters `0..rates.len()` (every rate above zero).
    pub fn start(lab: &Lab, rates: &[u32]) -> Self {
        assert!(rates.iter().all(|&r| r > 0), "rates must be positive");
        let sockets: Vec<UdpSocket> = (0..rates.len()).map(|i| lab.exporter_socket(i)).collect();
        let periods: Vec<Duration> = rates
            .iter()
            .map(|&r| Duration::from_secs_f64(1.0 / f64::from(r)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let target = SocketAddr::new(LISTENER.into(), PORT);
            let start = Instant::now();
            let mut due = vec![start; sockets.len()];
            let mut sent = vec![0u64; sockets.len()];
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                for (i, s) in sockets.iter().enumerate() {
                    while due[i] <= now {
                        s.send_to(&netflow_v5(sent[i] as u32, start.elapsed()), target)
                            .expect("send");
                        sent[i] += 1;
                        due[i] += periods[i];
                    }
                }
                let next = due.iter().min().copied().unwrap_or(now);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            sent
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; returns the datagrams sent by each exporter.
    pub fn stop(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("sender thread")
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An `AF_PACKET` socket on a peer's `pe0`: it sees every datagram Central forwards to the
/// peer, whether a process receives it or not (a killed peer's link still counts).
struct Tap(OwnedFd);

impl Tap {
    fn open(ns: &NetNs) -> Self {
        ns.enter(|| {
            let proto = (libc::ETH_P_IP as u16).to_be();
            // SAFETY: plain socket(2) call.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                    i32::from(proto),
                )
            };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a fresh descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto;
            addr.sll_ifindex = ifindex("pe0") as i32;
            // SAFETY: valid fd, address and length.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "bind tap: {}", std::io::Error::last_os_error());
            force_rcvbuf(&fd, 16 << 20);
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: valid fd and a live timeval.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const timeout).cast(),
                    size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
            Tap(fd)
        })
    }

    /// Source address of the next UDP datagram to the lab port arriving on the link; `None`
    /// after 100 ms without any packet.
    fn next(&self) -> Option<Ipv4Addr> {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: as above.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: valid fd, buffer and address storage of the given sizes.
            let n = unsafe {
                libc::recvfrom(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut from).cast(),
                    &raw mut len,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                return None;
            };
            let p = &buf[..n];
            if from.sll_pkttype == libc::PACKET_OUTGOING
                || p.len() < 20
                || p[0] >> 4 != 4
                || p[9] != libc::IPPROTO_UDP as u8
                || u16::from_be_bytes([p[6], p[7]]) & 0x1fff != 0
            {
                continue;
            }
            let udp = usize::from(p[0] & 0xf) * 4;
            if p.len() >= udp + 4 && u16::from_be_bytes([p[udp + 2], p[udp + 3]]) == PORT {
                return Some(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
            }
        }
    }
}

/// Datagrams one peer received from one exporter.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    /// How many.
    pub count: u64,
    /// When the first arrived.
    pub first: Instant,
}

/// Per peer, per exporter: what was seen.
pub type Seens = Vec<BTreeMap<Ipv4Addr, Seen>>;

/// Records, per peer and exporter, the datagrams Central forwards into each peer's namespace
/// (a tap on each `pe0`, one thread each) until dropped.
pub struct Arrivals {
    seen: Arc<Mutex<Seens>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Arrivals {
    /// Starts watching every peer link of the lab.
    pub fn start(lab: &Lab) -> Self {
        let seen = Arc::new(Mutex::new(vec![BTreeMap::new(); lab.peers.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = lab
            .peers
            .iter()
            .enumerate()
            .map(|(i, (ns, _))| {
                let tap = Tap::open(ns);
                let (seen, stop) = (seen.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Some(src) = tap.next() else { continue };
                        let now = Instant::now();
                        let mut g = seen.lock().expect("arrivals");
                        g[i].entry(src)
                            .or_insert(Seen {
                                count: 0,
                                first: now,
                            })
                            .count += 1;
                    }
                })
            })
            .collect();
        Self {
            seen,
            stop,
            threads,
        }
    }

    /// What was seen since the start or the last [`Arrivals::take`].
    pub fn snapshot(&self) -> Seens {
        self.seen.lock().expect("arrivals").clone()
    }

    /// What was seen since the start or the last `take`; starts afresh.
    pub fn take(&self) -> Seens {
        let mut g = self.seen.lock().expect("arrivals");
        let fresh = vec![BTreeMap::new(); g.len()];
        std::mem::replace(&mut *g, fresh)
    }

    /// Datagrams of each exporter over all peers in `seen`.
    pub fn totals(seen: &Seens) -> BTreeMap<Ipv4Addr, u64> {
        let mut t = BTreeMap::new();
        for (addr, s) in seen.iter().flatten() {
            *t.entry(*addr).or_insert(0) += s.count;
        }
        t
    }

    /// Runs `kill` and measures, for each of `exporters`, the time from just before `kill` to
    /// the first of its datagrams at peer `to`. Gives up after `limit`, returning what it has
    /// (`None` for exporters not seen at `to`).
    pub fn time_failover(
        &self,
        kill: impl FnOnce(),
        to: usize,
        exporters: &[Ipv4Addr],
        limit: Duration,
    ) -> Vec<Option<Duration>> {
        self.take();
        let start = Instant::now();
        kill();
        loop {
            let seen = self.snapshot();
            let times: Vec<Option<Duration>> = exporters
                .iter()
                .map(|e| seen[to].get(e).map(|s| s.first.duration_since(start)))
                .collect();
            if times.iter().all(Option::is_some) || start.elapsed() > limit {
                return times;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
