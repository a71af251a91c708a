//! Traffic through the lab: a paced NetFlow v5 sender with a rate per exporter, and taps on
//! the peers' links recording which exporter's datagrams reach which peer, and when.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sluice_peer::flowgen::{Encoder, EncoderConfig, FlowSynth, Protocol};

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

/// What a [`Sender`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// NetFlow v5, one record a datagram.
    V5,
    /// NetFlow v9 from `sluice-flowgen`'s encoder, ten records a datagram, with the templates
    /// (and sampling options) in each exporter's first datagram only: a peer that lost them
    /// counts template misses from then on.
    V9TemplatesOnce,
}

/// Builds each exporter's datagrams.
enum Encoders {
    V5,
    V9(Vec<(Encoder, FlowSynth)>),
}

impl Encoders {
    fn new(payload: Payload, sources: &[Ipv4Addr]) -> Self {
        match payload {
            Payload::V5 => Encoders::V5,
            Payload::V9TemplatesOnce => {
                let boot = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .saturating_sub(Duration::from_secs(3600));
                Encoders::V9(
                    sources
                        .iter()
                        .enumerate()
                        .map(|(i, a)| {
                            let cfg = EncoderConfig {
                                template_every: 0,
                                agent_address: (*a).into(),
                                boot_time_ns: boot.as_nanos() as u64,
                                ..EncoderConfig::default()
                            };
                            (
                                Encoder::new(Protocol::NetflowV9, cfg),
                                FlowSynth::new(i as u64 + 1, Protocol::NetflowV9),
                            )
                        })
                        .collect(),
                )
            }
        }
    }

    fn datagram(&mut self, i: usize, sequence: u64, uptime: Duration, out: &mut Vec<u8>) {
        match self {
            Encoders::V5 => *out = netflow_v5(sequence as u32, uptime),
            Encoders::V9(e) => {
                let (encoder, synth) = &mut e[i];
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64;
                let flows: Vec<_> = (0..10).map(|_| synth.flow(now)).collect();
                encoder.encode(&flows, now, out);
            }
        }
    }
}

/// Flow datagrams from the lab's exporters to Central's listener, exporter `i` at `rates[i]`
/// datagrams per second, on a thread of its own until stopped (or dropped).
pub struct Sender {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    sent: Arc<Vec<AtomicU64>>,
    thread: Option<JoinHandle<Vec<u64>>>,
}

impl Sender {
    /// Starts sending NetFlow v5 from exporters `0..rates.len()` (every rate above zero).
    pub fn start(lab: &Lab, rates: &[u32]) -> Self {
        let sockets: Vec<UdpSocket> = (0..rates.len()).map(|i| lab.exporter_socket(i)).collect();
        Self::start_on(
            sockets,
            SocketAddr::new(LISTENER.into(), PORT),
            rates,
            Payload::V5,
        )
    }

    /// Starts sending `payload` to `target` from each of `sockets` (bound to the exporters'
    /// addresses), the socket `i` at `rates[i]` datagrams per second.
    pub fn start_on(
        sockets: Vec<UdpSocket>,
        target: SocketAddr,
        rates: &[u32],
        payload: Payload,
    ) -> Self {
        assert!(rates.iter().all(|&r| r > 0), "rates must be positive");
        assert_eq!(sockets.len(), rates.len(), "one rate per socket");
        let sources: Vec<Ipv4Addr> = sockets
            .iter()
            .map(|s| match s.local_addr().expect("bound").ip() {
                std::net::IpAddr::V4(a) => a,
                std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            })
            .collect();
        let mut encoders = Encoders::new(payload, &sources);
        let periods: Vec<Duration> = rates
            .iter()
            .map(|&r| Duration::from_secs_f64(1.0 / f64::from(r)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let counts: Arc<Vec<AtomicU64>> =
            Arc::new(rates.iter().map(|_| AtomicU64::new(0)).collect());
        let (flag, pause, shared) = (stop.clone(), paused.clone(), counts.clone());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            // Exporters start at evenly spread phases: the datagrams of all of them are evenly
            // spaced rather than bursts of one from each.
            let n = sockets.len().max(1) as f64;
            let mut due: Vec<Instant> = periods
                .iter()
                .enumerate()
                .map(|(i, p)| start + p.mul_f64(i as f64 / n))
                .collect();
            let mut sent = vec![0u64; sockets.len()];
            let mut buf = Vec::with_capacity(2048);
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                if pause.load(Ordering::SeqCst) {
                    // Paused: what falls due meanwhile is not sent; afterwards every exporter
                    // goes on at its own phase (no burst to catch up).
                    while pause.load(Ordering::SeqCst) && !flag.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let paused = now.elapsed();
                    due.iter_mut().for_each(|d| *d += paused);
                    continue;
                }
                for (i, s) in sockets.iter().enumerate() {
                    while due[i] <= now {
                        encoders.datagram(i, sent[i], start.elapsed(), &mut buf);
                        // Counted as sent whatever the kernel says: a datagram the exporter's
                        // host could not deliver (an unresolved neighbour) is lost all the same.
                        let _ = s.send_to(&buf, target);
                        sent[i] += 1;
                        shared[i].store(sent[i], Ordering::SeqCst);
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
            paused,
            sent: counts,
            thread: Some(thread),
        }
    }

    /// Datagrams sent so far by each exporter.
    pub fn sent(&self) -> Vec<u64> {
        self.sent.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    }

    /// Pauses (or resumes) sending: with the sender paused and what was in flight arrived,
    /// what was sent and what arrived can be compared exactly.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        // Let a datagram being sent right now leave before the caller counts.
        std::thread::sleep(Duration::from_millis(5));
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

    /// Source address of the next UDP datagram to the lab port arriving on the link for this
    /// host, and the source MAC of its frame (the Central that forwarded it); `None` after
    /// 100 ms without any packet.
    fn next(&self) -> Option<(Ipv4Addr, [u8; 6])> {
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
            // Frames for another host (a bridge flooding an unknown unicast) are not ours.
            if from.sll_pkttype == libc::PACKET_OUTGOING
                || from.sll_pkttype == libc::PACKET_OTHERHOST
                || p.len() < 20
                || p[0] >> 4 != 4
                || p[9] != libc::IPPROTO_UDP as u8
                || u16::from_be_bytes([p[6], p[7]]) & 0x1fff != 0
            {
                continue;
            }
            let udp = usize::from(p[0] & 0xf) * 4;
            if p.len() >= udp + 4 && u16::from_be_bytes([p[udp + 2], p[udp + 3]]) == PORT {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&from.sll_addr[..6]);
                return Some((Ipv4Addr::new(p[12], p[13], p[14], p[15]), mac));
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
    /// When the last arrived.
    pub last: Instant,
}

/// Per peer, per exporter: what was seen.
pub type Seens = Vec<BTreeMap<Ipv4Addr, Seen>>;

/// Per source MAC (the Central that forwarded them): the datagrams seen on all peer links.
pub type Via = BTreeMap<[u8; 6], Seen>;

fn count(seen: &mut Seen, now: Instant) {
    seen.count += 1;
    seen.last = now;
}

fn fresh(now: Instant) -> Seen {
    Seen {
        count: 0,
        first: now,
        last: now,
    }
}

/// Records, per peer and exporter, the datagrams Central forwards into each peer's namespace
/// (a tap on each `pe0`, one thread each) until dropped.
pub struct Arrivals {
    seen: Arc<Mutex<(Seens, Via)>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Arrivals {
    /// Starts watching every peer link of the lab.
    pub fn start(lab: &Lab) -> Self {
        let peers: Vec<&NetNs> = lab.peers.iter().map(|(ns, _)| ns).collect();
        Self::start_on(&peers)
    }

    /// Starts watching `pe0` in each of `peers`.
    pub fn start_on(peers: &[&NetNs]) -> Self {
        let seen = Arc::new(Mutex::new((vec![BTreeMap::new(); peers.len()], Via::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = peers
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let tap = Tap::open(ns);
                let (seen, stop) = (seen.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Some((src, mac)) = tap.next() else {
                            continue;
                        };
                        let now = Instant::now();
                        let mut g = seen.lock().expect("arrivals");
                        count(g.0[i].entry(src).or_insert_with(|| fresh(now)), now);
                        count(g.1.entry(mac).or_insert_with(|| fresh(now)), now);
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
        self.seen.lock().expect("arrivals").0.clone()
    }

    /// Per forwarding Central (source MAC): what was seen since the start or the last `take`.
    pub fn via(&self) -> Via {
        self.seen.lock().expect("arrivals").1.clone()
    }

    /// What was seen since the start or the last `take`; starts afresh.
    pub fn take(&self) -> Seens {
        let mut g = self.seen.lock().expect("arrivals");
        let fresh = vec![BTreeMap::new(); g.0.len()];
        g.1.clear();
        std::mem::replace(&mut g.0, fresh)
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
