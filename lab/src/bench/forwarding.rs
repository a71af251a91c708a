//! Forwarding on the namespace lab (exporters → Central → two peers) with three forwarders in
//! Central's namespace: Sluice with XDP, Sluice's slow-path relay alone, and pmacct's `nfacctd`
//! tee plugin. A sender in the exporter namespace steps its rate up; receivers in the peer
//! namespaces count what arrives.

use std::{
    mem::zeroed,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use sluice_central::loader;

use crate::{
    bench::{
        bpf_stats,
        cpu::{Sample, Usage, usage},
        netflow::{V9Datagrams, v9_datagrams},
    },
    lab::{CentralProcess, LISTENER, Lab, PORT},
};

/// Paced rates (datagrams/s), then as fast as the sender goes (`None`).
pub const RATES: [Option<u64>; 8] = [
    Some(20_000),
    Some(50_000),
    Some(100_000),
    Some(150_000),
    Some(200_000),
    Some(300_000),
    Some(400_000),
    None,
];
/// Sending time per step.
pub const STEP: Duration = Duration::from_secs(2);
/// Loss at which the paced steps stop.
pub const GIVE_UP_LOSS: f64 = 0.01;
/// UDP payload of a 1400-byte frame (Ethernet 14, IPv4 20, UDP 8).
pub const DATAGRAM_LEN: usize = 1400 - 42;

/// The forwarders compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarder {
    /// `sluice-central run --iface ce0`: XDP forwards, the relay handles what it passes up.
    Xdp,
    /// `sluice-central run` without `--iface`: no XDP; the relay forwards everything.
    Relay,
    /// `nfacctd` tee plugin, balancing by a CRC32 hash of the exporter address.
    Nfacctd,
}

impl Forwarder {
    /// In the order they run.
    pub const ALL: [Forwarder; 3] = [Forwarder::Xdp, Forwarder::Relay, Forwarder::Nfacctd];

    /// Table label.
    pub fn label(self) -> &'static str {
        match self {
            Forwarder::Xdp => "sluice XDP",
            Forwarder::Relay => "sluice relay",
            Forwarder::Nfacctd => "nfacctd tee",
        }
    }

    /// Datagrams the forwarder may hold back until more traffic arrives: nfacctd's core process
    /// queues datagrams in a 10 KB plugin buffer (7 of ours) and passes it to the tee plugin
    /// only when full, so a step's last few arrive with the next step's traffic.
    fn held_back(self) -> u64 {
        match self {
            Forwarder::Xdp | Forwarder::Relay => 0,
            Forwarder::Nfacctd => 8,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Forwarder::Xdp => "bx",
            Forwarder::Relay => "br",
            Forwarder::Nfacctd => "bn",
        }
    }
}

/// One rate step.
pub struct Step {
    /// Paced rate, or None when unpaced.
    pub target: Option<u64>,
    /// Datagrams the sender handed to the kernel.
    pub sent: u64,
    /// Datagrams the receivers got (late ones of the step before included).
    pub delivered: u64,
    /// [`Forwarder::held_back`].
    pub held_back: u64,
    /// Sending time.
    pub secs: f64,
    /// CPU from the start of sending until the receivers went quiet.
    pub usage: Usage,
    /// The XDP program's own run time and runs in the step (kernel bpf_stats; XDP only).
    pub xdp_program: Option<(Duration, u64)>,
}

impl Step {
    /// Datagrams/s the sender achieved.
    pub fn sent_rate(&self) -> f64 {
        self.sent as f64 / self.secs
    }

    /// Datagrams/s delivered.
    pub fn delivered_rate(&self) -> f64 {
        self.delivered as f64 / self.secs
    }

    /// Nothing lost: at most the forwarder's held-back datagrams missing.
    pub fn lossless(&self) -> bool {
        self.delivered + self.held_back >= self.sent
    }

    /// False when the step was unpaced or the sender fell 5% or more short of the paced rate:
    /// the sender's ceiling.
    pub fn paced(&self) -> bool {
        self.target
            .is_some_and(|t| self.sent_rate() >= 0.95 * t as f64)
    }

    /// Fraction of the sent datagrams that did not arrive.
    pub fn loss(&self) -> f64 {
        self.sent.saturating_sub(self.delivered) as f64 / self.sent.max(1) as f64
    }
}

/// Runs `forwarder` through [`RATES`] on a lab of its own, calling `progress` after each step.
/// A paced step losing [`GIVE_UP_LOSS`] or more, or one the sender could not keep up with, ends
/// the paced steps (the unpaced one still runs).
pub fn run(
    forwarder: Forwarder,
    stop: &AtomicBool,
    mut progress: impl FnMut(&Step),
) -> Result<Vec<Step>> {
    let lab = Lab::new(forwarder.tag(), 2, 3);
    let receivers = Receivers::start(&lab);
    let mut process = ForwarderProcess::start(&lab, forwarder)?;
    let sender = Sender::new(&lab);
    if let Err(e) = sender.warm_up(&receivers, stop) {
        bail!(
            "{}: {e:#}; the forwarder is {}",
            forwarder.label(),
            process.status()
        );
    }
    // Program run-time accounting costs a clock read per run: on only for the XDP forwarder.
    let _stats = match forwarder {
        Forwarder::Xdp => Some(bpf_stats::Enabled::new()?),
        _ => None,
    };
    let program =
        || (forwarder == Forwarder::Xdp).then(|| bpf_stats::program_totals(loader::PROGRAM));
    let mut steps = Vec::new();
    let mut paced_done = false;
    for target in RATES {
        if target.is_some() && paced_done {
            continue;
        }
        let delivered_before = receivers.total();
        let program_before = program();
        let start = Sample::take();
        let (sent, secs) = sender.send(target, STEP, stop)?;
        let delivered = receivers.settle() - delivered_before;
        let end = Sample::take();
        let step = Step {
            target,
            sent,
            delivered,
            held_back: forwarder.held_back(),
            secs,
            usage: usage(&start, &end, process.pid()),
            xdp_program: program()
                .zip(program_before)
                .map(|((t1, n1), (t0, n0))| (t1 - t0, n1 - n0)),
        };
        progress(&step);
        paced_done = target.is_some() && (step.loss() >= GIVE_UP_LOSS || !step.paced());
        steps.push(step);
    }
    if let Ok(Some(_)) = process.child().try_wait() {
        bail!(
            "{} died during the run: {}",
            forwarder.label(),
            process.status()
        );
    }
    Ok(steps)
}

/// A forwarder's process, stopped by its pid (and its children's) on drop.
enum ForwarderProcess {
    Central(CentralProcess),
    Nfacctd(Daemon),
}

impl ForwarderProcess {
    fn start(lab: &Lab, forwarder: Forwarder) -> Result<Self> {
        Ok(match forwarder {
            Forwarder::Xdp => Self::Central(lab.start_central(&[])),
            Forwarder::Relay => {
                let mut cmd = without_xdp(&lab.central_command(&[]));
                cmd.stderr(Stdio::piped()).stdout(Stdio::null());
                Self::Central(CentralProcess::spawn(cmd))
            }
            Forwarder::Nfacctd => Self::Nfacctd(start_nfacctd(lab)?),
        })
    }

    fn child(&mut self) -> &mut Child {
        match self {
            Self::Central(c) => &mut c.child,
            Self::Nfacctd(d) => &mut d.child,
        }
    }

    fn pid(&mut self) -> u32 {
        self.child().id()
    }

    /// What the forwarder logged, and whether it is still running.
    fn status(&mut self) -> String {
        let state = match self.child().try_wait() {
            Ok(Some(status)) => format!("exited ({status})"),
            _ => "running".to_owned(),
        };
        let log = match self {
            Self::Central(c) => c.log_text(),
            Self::Nfacctd(d) => std::fs::read_to_string(&d.log).unwrap_or_default(),
        };
        format!("{state}; its log:\n{log}")
    }
}

/// `cmd` without its `--iface NAME` arguments: sluice-central then attaches no XDP and its
/// slow-path relay forwards all listener traffic.
fn without_xdp(cmd: &Command) -> Command {
    let mut out = Command::new(cmd.get_program());
    let mut args = cmd.get_args();
    while let Some(a) = args.next() {
        if a == "--iface" {
            args.next();
        } else {
            out.arg(a);
        }
    }
    out
}

/// A child process stopped on drop: SIGTERM, then SIGKILL to it and the children it had.
struct Daemon {
    child: Child,
    /// Its stderr.
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id();
        let tree = Sample::take().tree(pid);
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in tree.into_iter().filter(|&p| p != pid) {
            // SAFETY: a process our child started (plugin processes), by pid.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    }
}

/// nfacctd in Central's namespace on the lab's listener, replicating (tee plugin, not
/// transparent: Debian's 1.7.7 fails in transparent mode) to both peers, balanced by
/// `hash-crc32` of the exporter address (`hash-agent` fails in 1.7.7). Its socket buffer and
/// plugin pipe get the 8 MB the relay asks for its listener socket; the plugin buffer is the
/// one pmacct's QUICKSTART gives for a replicator.
fn start_nfacctd(lab: &Lab) -> Result<Daemon> {
    let dir = &lab.state_dir;
    std::fs::create_dir_all(dir)?;
    let receivers: Vec<String> = lab
        .peers
        .iter()
        .map(|(_, addr)| format!("{addr}:{PORT}"))
        .collect();
    let list = dir.join("tee_receivers.lst");
    std::fs::write(
        &list,
        format!("id=1\tip={}\tbalance-alg=hash-crc32\n", receivers.join(",")),
    )?;
    let conf = dir.join("nfacctd.conf");
    std::fs::write(
        &conf,
        format!(
            "daemonize: false\n\
             nfacctd_ip: {LISTENER}\n\
             nfacctd_port: {PORT}\n\
             plugins: tee[a]\n\
             tee_receivers[a]: {}\n\
             tee_transparent[a]: false\n\
             plugin_buffer_size: 10240\n\
             plugin_pipe_size: 8388608\n\
             nfacctd_pipe_size: 8388608\n",
            list.display()
        ),
    )?;
    let log = dir.join("nfacctd.log");
    let child = lab
        .central
        .command("nfacctd")
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("spawn nfacctd")?;
    Ok(Daemon { child, log })
}

/// True when `nfacctd` can be run.
pub fn nfacctd_installed() -> bool {
    Command::new("nfacctd")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Receiver threads, one per peer namespace, counting datagrams.
struct Receivers {
    counts: Vec<Arc<AtomicU64>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Receivers {
    fn start(lab: &Lab) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut counts = Vec::new();
        let mut threads = Vec::new();
        for i in 0..lab.peers.len() {
            // 16 MB SO_RCVBUFFORCE, 200 ms receive timeout.
            let sock = lab.peer_socket(i);
            let count = Arc::new(AtomicU64::new(0));
            let (c, s) = (count.clone(), stop.clone());
            threads.push(std::thread::spawn(move || receive(&sock, &c, &s)));
            counts.push(count);
        }
        Self {
            counts,
            stop,
            threads,
        }
    }

    fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Waits until nothing has arrived for 200 ms (at most 3 s); the total then.
    fn settle(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut last = self.total();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.total();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `recvmmsg` in batches until `stop` (the socket's timeout bounds each wait).
fn receive(sock: &UdpSocket, count: &AtomicU64, stop: &AtomicBool) {
    const BATCH: usize = 64;
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `msgs` describes BATCH live buffers for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// The exporters: one socket per exporter address, `sendmmsg` batches of one exporter's
/// 1358-byte NetFlow v9 data datagram to the listener, exporters in turn.
struct Sender {
    socks: Vec<UdpSocket>,
    datagrams: Vec<V9Datagrams>,
}

impl Sender {
    const BATCH: usize = 32;

    fn new(lab: &Lab) -> Self {
        let socks: Vec<UdpSocket> = (0..lab.exporter_addrs.len())
            .map(|i| lab.exporter_socket(i))
            .collect();
        let datagrams = (0..socks.len())
            .map(|i| v9_datagrams(i as u32 + 1, DATAGRAM_LEN))
            .collect();
        Self { socks, datagrams }
    }

    fn listener() -> SocketAddr {
        SocketAddr::new(LISTENER.into(), PORT)
    }

    /// Templates from every exporter, then 5 000/s for 0.4 s, until a round arrives complete
    /// (XDP: neighbours resolved; nfacctd: listening). At most 20 rounds.
    fn warm_up(&self, receivers: &Receivers, stop: &AtomicBool) -> Result<()> {
        for _ in 0..20 {
            for (s, d) in self.socks.iter().zip(&self.datagrams) {
                s.send_to(&d.templates, Self::listener())?;
            }
            let before = receivers.total();
            let (sent, _) = self.send(Some(5_000), Duration::from_millis(400), stop)?;
            if receivers.settle() - before >= sent + self.socks.len() as u64 {
                return Ok(());
            }
        }
        bail!("the forwarder still loses datagrams at 5 000/s after 20 warm-up rounds")
    }

    /// Sends for `duration` at `rate` (None: as fast as possible). Returns datagrams sent and
    /// the seconds it took.
    fn send(&self, rate: Option<u64>, duration: Duration, stop: &AtomicBool) -> Result<(u64, f64)> {
        let (name, name_len) = sockaddr_in(Self::listener());
        let mut iovs: Vec<libc::iovec> = self
            .datagrams
            .iter()
            .map(|d| libc::iovec {
                // sendmmsg only reads the buffer.
                iov_base: d.data.as_ptr().cast_mut().cast(),
                iov_len: d.data.len(),
            })
            .collect();
        let mut batches: Vec<Vec<libc::mmsghdr>> = iovs
            .iter_mut()
            .map(|iov| {
                (0..Self::BATCH)
                    .map(|_| {
                        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
                        let mut m: libc::mmsghdr = unsafe { zeroed() };
                        m.msg_hdr.msg_name = (&raw const name).cast_mut().cast();
                        m.msg_hdr.msg_namelen = name_len;
                        m.msg_hdr.msg_iov = iov;
                        m.msg_hdr.msg_iovlen = 1;
                        m
                    })
                    .collect()
            })
            .collect();
        let start = Instant::now();
        let mut sent = 0u64;
        let mut turn = 0usize;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= duration {
                break;
            }
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let n = match rate {
                None => Self::BATCH,
                Some(r) => {
                    let due = (r as f64 * elapsed.as_secs_f64()) as u64;
                    let n = due.saturating_sub(sent).min(Self::BATCH as u64) as usize;
                    if n == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    n
                }
            };
            let i = turn % self.socks.len();
            turn += 1;
            // SAFETY: `batches[i]` holds BATCH headers pointing at live buffers and `name`.
            let r = unsafe {
                libc::sendmmsg(
                    self.socks[i].as_raw_fd(),
                    batches[i].as_mut_ptr(),
                    n as u32,
                    0,
                )
            };
            if r > 0 {
                sent += r as u64;
            } else {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ENOBUFS) && e.raw_os_error() != Some(libc::EAGAIN)
                {
                    return Err(e).context("sendmmsg");
                }
            }
        }
        Ok((sent, start.elapsed().as_secs_f64()))
    }
}

fn sockaddr_in(addr: SocketAddr) -> (libc::sockaddr_in, libc::socklen_t) {
    let SocketAddr::V4(a) = addr else {
        unreachable!("the lab is IPv4")
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    (sin, size_of::<libc::sockaddr_in>() as libc::socklen_t)
}
