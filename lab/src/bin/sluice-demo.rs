//! `cargo xtask demo`: what only Sluice does, told as it happens, in about a minute.
//!
//! A lab of network namespaces — three NetFlow v9 exporters whose templates go out once, at
//! the start; Central with XDP on a veth; two `sluice-peer`s registered over TLS, writing JSON
//! records — goes through four acts: steady forwarding, `sluicectl exporters move` of an
//! exporter (its records keep decoding on the new peer), SIGKILL of a peer (its exporters on
//! the survivor about a second later), SIGKILL and restart of `sluice-central` (forwarding
//! never stops). A fifth act builds the hot-standby pair lab and kills the active Central's
//! host. It ends with records sent, decoded and lost in each act.
//!
//! Every figure is read from a counter: the exporters' send counts, the peers' JSON output and
//! `/metrics`, taps on the peers' links, and the XDP program's pinned counters. Everything is
//! torn down at the end, on Ctrl-C and on failure (the lab's guards).

use std::{
    collections::BTreeMap,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    process::Stdio,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use sluice_central::{controller::dataplane::DataPlane, maps::Maps};
use sluice_common::{
    Reason, from_key_bytes,
    protocol::{ExporterView, PeerStatus, PeerView},
};
use sluice_lab::{
    bin,
    lab::{
        LISTENER, Lab, LabProcess, PORT,
        agents::CONTROL_PORT,
        ha::{HaLab, metric},
        peer_name,
        traffic::{Arrivals, Payload, Sender},
    },
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Datagrams per second from each exporter.
const RATE: u32 = 100;
/// Flow records in each datagram of the lab's NetFlow v9 sender.
const RECORDS_PER_DATAGRAM: u64 = 10;
/// Where each peer serves `/metrics` (on its own address).
const METRICS_PORT: u16 = 9100;
/// The hot-standby pair's takeover timeout.
const TAKEOVER: Duration = Duration::from_millis(300);

/// Ctrl-C: the story stops and everything is removed.
struct Interrupted;

type Act<T = ()> = Result<T, Interrupted>;

/// Sleeps `d`, or less when interrupted.
fn nap(d: Duration) -> Act {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if STOP.load(Ordering::SeqCst) {
            return Err(Interrupted);
        }
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    if STOP.load(Ordering::SeqCst) {
        return Err(Interrupted);
    }
    Ok(())
}

/// One act's records, for the summary.
struct Event {
    what: String,
    sent: u64,
    decoded: u64,
    note: String,
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("sluice-demo: needs root (network namespaces, XDP); run `sudo cargo xtask demo`");
        std::process::exit(1);
    }
    // SAFETY: installing an async-signal-safe handler (it only stores to an atomic).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    // After Ctrl-C the daemons are gone too (the terminal signals the whole process group) and a
    // lab helper may give up on them: that is the interruption, not a failure worth a backtrace.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !STOP.load(Ordering::SeqCst) {
            default_hook(info);
        }
    }));
    let started = Instant::now();
    let mut events = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        single_central(&mut events)?;
        hot_standby(&mut events)
    }));
    match outcome {
        Ok(Ok(())) => summary(&events, started.elapsed()),
        Ok(Err(Interrupted)) => {
            println!("\nInterrupted: the lab is removed (namespaces, veths, pins, state).");
            std::process::exit(130);
        }
        Err(_) if STOP.load(Ordering::SeqCst) => {
            println!("\nInterrupted: the lab is removed (namespaces, veths, pins, state).");
            std::process::exit(130);
        }
        Err(_) => {
            eprintln!("sluice-demo failed (see above); the lab is removed.");
            std::process::exit(1);
        }
    }
}

/// A registered `sluice-peer` of the demo: JSON records to a file, `/metrics` on its address.
struct Peer {
    process: LabProcess,
    file: PathBuf,
    metrics: SocketAddr,
    alive: bool,
}

fn start_peer(lab: &Lab, i: usize) -> Peer {
    let (ns, addr) = &lab.peers[i];
    let name = peer_name(i);
    let [a, b, c, _] = addr.octets();
    let file = lab.state_dir.join(format!("flows-{name}.jsonl"));
    let metrics = SocketAddr::new((*addr).into(), METRICS_PORT);
    let config = lab.state_dir.join(format!("demo-peer-{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"name = "{name}"

[central]
url = "https://{central}:{CONTROL_PORT}"
token_file = "{token}"
ca_cert = "{cert}"

[ingest]
listen = ["{addr}:{PORT}"]

[pipeline]
shards = 1
# Decoder counters reach /metrics every 100 ms (default: every second).
expire_interval_ms = 100

[metrics]
listen = "{metrics}"

[[outputs]]
type = "file"
path = "{file}"
"#,
            central = Ipv4Addr::new(a, b, c, 1),
            token = lab.token_file(false).display(),
            cert = lab.ca_cert().display(),
            file = file.display(),
        ),
    )
    .expect("peer config");
    let mut cmd = ns.command(bin("sluice-peer").to_str().expect("utf-8 path"));
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Peer {
        process: LabProcess::spawn_logged(cmd, &format!("sluice-peer {name}"), None),
        file,
        metrics,
        alive: true,
    }
}

/// `GET /metrics` of a peer (in its namespace); `None` when it does not answer.
fn scrape(ns: &sluice_lab::netns::NetNs, addr: SocketAddr) -> Option<String> {
    ns.enter(|| {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text.split_once("\r\n\r\n")?.1.to_owned())
    })
}

/// What a peer's `/metrics` says.
#[derive(Clone, Copy, Default)]
struct PeerMetrics {
    decoded: u64,
    misses: u64,
    released: u64,
}

fn peer_metrics(lab: &Lab, peers: &[Peer], i: usize) -> Option<PeerMetrics> {
    if !peers[i].alive {
        return None;
    }
    let body = scrape(&lab.peers[i].0, peers[i].metrics)?;
    Some(PeerMetrics {
        decoded: metric(&body, "sluice_peer_decoded_records_total") as u64,
        misses: metric(&body, "sluice_peer_template_misses_total") as u64,
        released: metric(&body, "sluice_peer_held_released_total") as u64,
    })
}

/// Records each peer wrote to its JSON file, per exporter (`sampler_address`), read as the
/// files grow.
struct Tally {
    files: Vec<PathBuf>,
    offsets: Vec<u64>,
    counts: Vec<BTreeMap<Ipv4Addr, u64>>,
}

impl Tally {
    fn new(files: Vec<PathBuf>) -> Self {
        let n = files.len();
        Self {
            files,
            offsets: vec![0; n],
            counts: vec![BTreeMap::new(); n],
        }
    }

    fn update(&mut self) {
        for (i, path) in self.files.iter().enumerate() {
            let Ok(mut f) = std::fs::File::open(path) else {
                continue;
            };
            if f.seek(SeekFrom::Start(self.offsets[i])).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).is_err() {
                continue;
            }
            // Whole lines only: a line being written is counted next time.
            let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            for line in buf[..end].split(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(line);
                if let Some(addr) = line
                    .split("\"sampler_address\":\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .and_then(|s| s.parse().ok())
                {
                    *self.counts[i].entry(addr).or_insert(0) += 1;
                }
            }
            self.offsets[i] += end as u64 + 1;
        }
    }

    fn at(&self, peer: usize, exporter: Ipv4Addr) -> u64 {
        self.counts[peer].get(&exporter).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.counts.iter().flat_map(BTreeMap::values).sum()
    }
}

/// Records sent (all exporters) and decoded (all peers' files) at a point where nothing was in
/// flight.
#[derive(Clone, Copy, Default)]
struct Mark {
    sent: u64,
    decoded: u64,
}

/// The single-Central lab and its acts.
/// Dropped in field order: the exporters, the peers, Central, then the lab (the state dir
/// goes last, when nothing writes to it any more).
struct Stage {
    sender: Sender,
    peers: Vec<Peer>,
    central: LabProcess,
    tally: Tally,
    started: Instant,
    lab: Lab,
}

impl Stage {
    fn sent_records(&self) -> Vec<u64> {
        self.sender
            .sent()
            .iter()
            .map(|d| d * RECORDS_PER_DATAGRAM)
            .collect()
    }

    /// Pauses the exporters until what was in flight is decoded and written; the counts then.
    fn mark(&mut self) -> Mark {
        self.sender.pause(true);
        std::thread::sleep(Duration::from_millis(400));
        self.tally.update();
        let mark = Mark {
            sent: self.sent_records().iter().sum(),
            decoded: self.tally.total(),
        };
        self.sender.pause(false);
        mark
    }

    /// Each exporter's peer in the XDP program's pinned maps (readable with Central down too).
    fn assigned(&self) -> BTreeMap<Ipv4Addr, usize> {
        let Ok(maps) = Maps::open_pinned(self.lab.pins.path()) else {
            return BTreeMap::new();
        };
        maps.exporters()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(a, v)| {
                let IpAddr::V4(a) = a else { return None };
                let peer = maps.peer(v.peer_id).ok()?;
                let i = self
                    .lab
                    .peers
                    .iter()
                    .position(|(_, p)| IpAddr::V4(*p) == from_key_bytes(peer.addr))?;
                Some((a, i))
            })
            .collect()
    }

    /// The live table: per exporter its peer, records sent, records decoded at each peer.
    fn table(&mut self) {
        self.tally.update();
        let assigned = self.assigned();
        let sent = self.sent_records();
        println!(
            "   ┌ t={:>4.1} s ── exporter      peer   records sent   decoded at a   decoded at b",
            self.started.elapsed().as_secs_f64()
        );
        for (e, addr) in self.lab.exporter_addrs.iter().enumerate() {
            println!(
                "   │            {:<14} {:<6} {:>12}   {:>12}   {:>12}",
                addr.to_string(),
                assigned.get(addr).map_or("-".into(), |&p| peer_name(p)),
                sent[e],
                self.tally.at(0, *addr),
                self.tally.at(1, *addr)
            );
        }
        let health: Vec<String> = (0..self.peers.len())
            .map(|i| match peer_metrics(&self.lab, &self.peers, i) {
                Some(m) => format!(
                    "peer {} up: {} records decoded, {} template misses",
                    peer_name(i),
                    m.decoded,
                    m.misses
                ),
                None => format!("peer {} DOWN", peer_name(i)),
            })
            .collect();
        println!(
            "   └ /metrics: {}; XDP forwarded {} datagrams in the kernel",
            health.join("; "),
            xdp_forwarded(&self.lab)
        );
    }
}

/// Datagrams the lab's XDP program forwarded in the kernel so far (its pinned counters).
fn xdp_forwarded(lab: &Lab) -> u64 {
    let Ok(maps) = Maps::open_pinned(lab.pins.path()) else {
        return 0;
    };
    let c = maps.counters().unwrap_or_default();
    let get = |r: Reason| c.iter().find(|(x, _)| *x == r).map_or(0, |(_, v)| *v);
    get(Reason::Redirect) + get(Reason::Tx)
}

fn single_central(events: &mut Vec<Event>) -> Act {
    println!(
        "Sluice demo: Central steers each NetFlow exporter to one peer with XDP, in the kernel; the peers decode.\n\
         Building the lab in network namespaces: 3 exporters -> Central (XDP on ce0, listener {LISTENER}:{PORT}) -> 2 sluice-peers."
    );
    let lab = Lab::new("demo", 2, 3);
    lab.generate_tokens();
    let central = lab.start_central_without_peers(&[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.ca_cert().exists() {
        assert!(Instant::now() < deadline, "no control API certificate");
        nap(Duration::from_millis(20))?;
    }
    let peers: Vec<Peer> = (0..lab.peers.len()).map(|i| start_peer(&lab, i)).collect();
    if let Err(e) = lab.wait_peers_online(Duration::from_secs(15)) {
        panic!("{e}\n{}", central.log_text());
    }
    println!(
        "Central is up. Peers a ({}) and b ({}) registered over TLS and heartbeat every second; \
         each writes the records it decodes to a JSON file and serves /metrics.",
        lab.peers[0].1, lab.peers[1].1
    );
    let arrivals = Arrivals::start(&lab);
    let sockets = (0..lab.exporter_addrs.len())
        .map(|i| lab.exporter_socket(i))
        .collect();
    let sender = Sender::start_on(
        sockets,
        SocketAddr::new(LISTENER.into(), PORT),
        &[RATE; 3],
        Payload::V9TemplatesOnce,
    );
    let files = peers.iter().map(|p| p.file.clone()).collect();
    let mut stage = Stage {
        sender,
        peers,
        central,
        tally: Tally::new(files),
        started: Instant::now(),
        lab,
    };
    let lab = &stage.lab;
    let exporters = lab.exporter_addrs.clone();
    println!(
        "Exporters {}..{} send NetFlow v9, {RATE} datagrams/s each, {RECORDS_PER_DATAGRAM} flow records per datagram. \
         Their templates go out ONCE, in the first datagram: a peer without them cannot decode a thing.\n\
         (Between acts the exporters pause for 0.4 s so that sent and decoded can be counted exactly.)",
        exporters[0], exporters[2]
    );

    // Act 1.
    println!("\n== 1. Steady forwarding ==");
    println!(
        "Central places each new exporter on a peer; XDP forwards its datagrams there, unchanged, source address kept."
    );
    let assigned = lab.wait_assigned(3, Duration::from_secs(5));
    let start = Mark::default();
    for _ in 0..4 {
        nap(Duration::from_secs(2))?;
        stage.table();
    }
    let end = stage.mark();
    println!(
        "Every record sent so far was decoded: {} sent, {} decoded.",
        end.sent - start.sent,
        end.decoded - start.decoded
    );
    events.push(Event {
        what: "1. steady forwarding".into(),
        sent: end.sent - start.sent,
        decoded: end.decoded - start.decoded,
        note: String::new(),
    });

    // Act 2.
    let lab = &stage.lab;
    let moved = exporters[0];
    let from = assigned[0];
    let to = 1 - from;
    println!(
        "\n== 2. Moving exporter {moved} from peer {} to peer {} ==",
        peer_name(from),
        peer_name(to)
    );
    println!(
        "Its templates went to peer {} {:.0} s ago and will not be sent again. Any other distributor that \
         re-steers it leaves the new peer blind until the exporter re-sends them at its next template refresh. Sluice hands \
         the templates over first:",
        peer_name(from),
        stage.started.elapsed().as_secs_f64()
    );
    let before = end;
    let m0 = peer_metrics(lab, &stage.peers, to).unwrap_or_default();
    let at0 = stage.tally.at(to, moved);
    let logged = stage.peers[to].process.log_text().lines().count();
    println!(
        "   before: peer {}: {at0} records of {moved}, {} records decoded in all, {} template misses (its /metrics)",
        peer_name(to),
        m0.decoded,
        m0.misses
    );
    println!("   $ sluicectl exporters move {moved} {}", peer_name(to));
    let asked = Instant::now();
    lab.sluicectl::<serde_json::Value>(&["exporters", "move", &moved.to_string(), &peer_name(to)]);
    println!(
        "   Central installed the templates on peer {} and flipped the exporter in XDP ({} ms for the command).",
        peer_name(to),
        asked.elapsed().as_millis()
    );
    // The peer logs the installation just after acknowledging it.
    nap(Duration::from_millis(200))?;
    for line in stage.peers[to]
        .process
        .log_text()
        .lines()
        .skip(logged)
        .filter(|l| l.contains("templates installed from Central"))
    {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or("?")
                .to_owned()
        };
        println!(
            "   peer {}'s log: templates installed from Central: {} template(s) for {} exporter(s)",
            peer_name(to),
            field("templates="),
            field("exporters=")
        );
    }
    for _ in 0..5 {
        nap(Duration::from_secs(1))?;
        stage.tally.update();
        let m = peer_metrics(&stage.lab, &stage.peers, to).unwrap_or_default();
        println!(
            "   +{:.1} s: peer {}: {:>6} records of {moved} decoded (+{}); its /metrics, all exporters: {} records decoded (+{}), {} template misses",
            asked.elapsed().as_secs_f64(),
            peer_name(to),
            stage.tally.at(to, moved),
            stage.tally.at(to, moved) - at0,
            m.decoded,
            m.decoded.saturating_sub(m0.decoded),
            m.misses
        );
    }
    stage.table();
    let end = stage.mark();
    let m1 = peer_metrics(&stage.lab, &stage.peers, to).unwrap_or_default();
    println!(
        "The moved exporter's records keep decoding on peer {}: {} sent, {} decoded in this act, template misses {} -> {}.",
        peer_name(to),
        end.sent - before.sent,
        end.decoded - before.decoded,
        m0.misses,
        m1.misses
    );
    events.push(Event {
        what: format!("2. exporters move {moved} -> {}", peer_name(to)),
        sent: end.sent - before.sent,
        decoded: end.decoded - before.decoded,
        note: format!(
            "template misses on peer {}: {} -> {}",
            peer_name(to),
            m0.misses,
            m1.misses
        ),
    });

    // Act 3.
    let lab = &stage.lab;
    let assigned = lab.wait_assigned(3, Duration::from_secs(2));
    let (victim, victims) = lab.busiest_peer(&assigned);
    let survivor = 1 - victim;
    let list: Vec<String> = victims.iter().map(ToString::to_string).collect();
    println!(
        "\n== 3. SIGKILL of peer {} (it holds {}) ==",
        peer_name(victim),
        list.join(", ")
    );
    println!(
        "No goodbye, no drain: the process just dies. Central sees its TLS session break and moves its exporters."
    );
    let before = stage.mark();
    let s0 = peer_metrics(&stage.lab, &stage.peers, survivor).unwrap_or_default();
    let times = arrivals.time_failover(
        || {
            stage.peers[victim].process.kill();
        },
        survivor,
        &victims,
        Duration::from_secs(10),
    );
    stage.peers[victim].alive = false;
    for (e, t) in victims.iter().zip(&times) {
        match t {
            Some(t) => println!(
                "   {e}: first datagram on peer {}'s link {:.2} s after the SIGKILL (tap on its veth)",
                peer_name(survivor),
                t.as_secs_f64()
            ),
            None => println!("   {e}: not on peer {} within 10 s", peer_name(survivor)),
        }
    }
    let dead: u64 = arrivals.snapshot()[victim].values().map(|s| s.count).sum();
    println!(
        "   Meanwhile {dead} datagrams reached the dead peer's link, where nothing reads any more."
    );
    let view: Vec<PeerView> = stage.lab.peers_list();
    let status = |i: usize| {
        view.iter()
            .find(|p| p.name == peer_name(i))
            .map_or("?".into(), |p| {
                format!("{:?} with {} exporters", p.status, p.exporters)
            })
    };
    println!(
        "   Central: peer {} {}, peer {} {}.",
        peer_name(victim),
        status(victim),
        peer_name(survivor),
        status(survivor)
    );
    for _ in 0..2 {
        nap(Duration::from_millis(1500))?;
        stage.table();
    }
    let end = stage.mark();
    let s1 = peer_metrics(&stage.lab, &stage.peers, survivor).unwrap_or_default();
    let slowest = times.iter().flatten().max().copied().unwrap_or_default();
    println!(
        "Peer {} carries on with every exporter: {} records sent in this act, {} decoded, {} lost \
         (those sent in the {:.2} s before the move, to a process that no longer exists); \
         template misses on peer {}: {} -> {} (its /metrics).",
        peer_name(survivor),
        end.sent - before.sent,
        end.decoded - before.decoded,
        (end.sent - before.sent).saturating_sub(end.decoded - before.decoded),
        slowest.as_secs_f64(),
        peer_name(survivor),
        s0.misses,
        s1.misses
    );
    if s1.misses > s0.misses {
        println!(
            "   ({} data set(s) reached peer {} before Central's template hand-over for the failover; the peer holds such \
             data until its templates come: {} released so far, sluice_peer_held_released_total.)",
            s1.misses - s0.misses,
            peer_name(survivor),
            s1.released - s0.released
        );
    }
    events.push(Event {
        what: format!("3. SIGKILL of peer {}", peer_name(victim)),
        sent: end.sent - before.sent,
        decoded: end.decoded - before.decoded,
        note: format!(
            "exporters on peer {} after {:.2} s; {dead} datagrams reached the dead peer's link; template misses on {}: {} -> {}",
            peer_name(survivor),
            slowest.as_secs_f64(),
            peer_name(survivor),
            s0.misses,
            s1.misses
        ),
    });

    // Act 4.
    println!("\n== 4. SIGKILL of sluice-central, then a restart ==");
    println!(
        "The XDP program and its maps are pinned in the kernel: the data path does not need the daemon."
    );
    let names_before: BTreeMap<IpAddr, Option<String>> = stage.lab.assignments();
    let before = stage.mark();
    arrivals.take();
    let xdp0 = xdp_forwarded(&stage.lab);
    let watching = AtomicBool::new(true);
    let alive: Vec<usize> = (0..stage.peers.len())
        .filter(|&i| stage.peers[i].alive)
        .collect();
    let lab = &stage.lab;
    let (longest, ready, online, during, xdp_during, adopted) = std::thread::scope(
        |s| -> Act<_> {
            // Longest stretch without a datagram at any peer link, polled every 5 ms.
            let watch = s.spawn(|| {
                let (mut last_total, mut last_change, mut longest) =
                    (0u64, Instant::now(), Duration::ZERO);
                while watching.load(Ordering::SeqCst) && !STOP.load(Ordering::SeqCst) {
                    let total: u64 = Arrivals::totals(&arrivals.snapshot()).values().sum();
                    let now = Instant::now();
                    if total != last_total {
                        longest = longest.max(now - last_change);
                        last_total = total;
                        last_change = now;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                longest.max(last_change.elapsed())
            });
            // However this ends (an interruption, a panic), the watch stops and the scope can end.
            let _stop = StopWatch(&watching);
            let killed = Instant::now();
            stage.central.kill();
            println!("   $ kill -KILL <sluice-central>   … Central is gone.");
            for _ in 0..2 {
                nap(Duration::from_secs(1))?;
                let seen: u64 = Arrivals::totals(&arrivals.snapshot()).values().sum();
                println!(
                    "   +{:.1} s without Central: {seen} datagrams reached the peers (taps), XDP forwarded {} more (its counters).",
                    killed.elapsed().as_secs_f64(),
                    xdp_forwarded(lab) - xdp0
                );
            }
            println!("   $ sluice-central run …   (the same command, the same state and pins)");
            let restarted = lab.start_central_without_peers(&[]);
            let ready = killed.elapsed();
            let during: u64 = Arrivals::totals(&arrivals.snapshot()).values().sum();
            let xdp_during = xdp_forwarded(lab) - xdp0;
            let adopted = restarted.log_text().contains("adopted");
            stage.central = restarted;
            wait_online(lab, &alive, Duration::from_secs(10))?;
            let online = killed.elapsed();
            watching.store(false, Ordering::SeqCst);
            let longest = watch.join().expect("watch thread");
            Ok((longest, ready, online, during, xdp_during, adopted))
        },
    )?;
    println!(
        "   Central ready again {:.2} s after the SIGKILL{}; both peers reconnected after {:.2} s.",
        ready.as_secs_f64(),
        if adopted {
            " (it adopted the pinned XDP program and maps)"
        } else {
            ""
        },
        online.as_secs_f64()
    );
    println!(
        "   From the SIGKILL to the ready line {during} datagrams reached the peers; XDP forwarded {xdp_during}. \
         Longest pause between two datagrams at the peers: {} ms (exporters send one every {:.1} ms in all).",
        longest.as_millis(),
        1000.0 / f64::from(RATE * 3)
    );
    nap(Duration::from_secs(2))?;
    stage.table();
    let end = stage.mark();
    let names_after: BTreeMap<IpAddr, Option<String>> = stage.lab.assignments();
    println!(
        "Forwarding never stopped: {} records sent in this act, {} decoded, {} lost; assignments {}.",
        end.sent - before.sent,
        end.decoded - before.decoded,
        (end.sent - before.sent).saturating_sub(end.decoded - before.decoded),
        if names_after == names_before {
            "unchanged"
        } else {
            "CHANGED"
        }
    );
    events.push(Event {
        what: "4. SIGKILL + restart of Central".into(),
        sent: end.sent - before.sent,
        decoded: end.decoded - before.decoded,
        note: format!(
            "down {:.2} s; {during} datagrams arrived meanwhile; longest pause {} ms",
            ready.as_secs_f64(),
            longest.as_millis()
        ),
    });

    println!("\nRemoving the single-Central lab.");
    drop(arrivals);
    drop(stage);
    Ok(())
}

/// Waits until Central lists each of `peers` ONLINE (panics with the table after `timeout`).
fn wait_online(lab: &Lab, peers: &[usize], timeout: Duration) -> Act {
    let deadline = Instant::now() + timeout;
    loop {
        let view = lab.peers_list();
        let online = |i: &usize| {
            view.iter()
                .any(|p| p.name == peer_name(*i) && p.status == PeerStatus::Online)
        };
        if peers.iter().all(online) {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "peers not ONLINE after {timeout:?}: {view:?}"
        );
        nap(Duration::from_millis(50))?;
    }
}

/// Clears the flag on drop.
struct StopWatch<'a>(&'a AtomicBool);

impl Drop for StopWatch<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Records sent and datagrams arrived at a quiet point of the pair lab, and what the peers say.
struct PairMark {
    sent: u64,
    arrived: u64,
    decoded: u64,
    misses: u64,
}

fn pair_mark(lab: &HaLab, sender: &Sender, arrivals: &Arrivals) -> PairMark {
    sender.pause(true);
    // These peers publish their decoder counters every second.
    std::thread::sleep(Duration::from_millis(1200));
    let sent = sender.sent().iter().sum::<u64>() * RECORDS_PER_DATAGRAM;
    let arrived = Arrivals::totals(&arrivals.take()).values().sum();
    let per = |name: &str| {
        (0..lab.peers.len())
            .map(|i| lab.peer_metric(i, name) as u64)
            .sum::<u64>()
    };
    let decoded = per("sluice_peer_decoded_records_total");
    let misses = per("sluice_peer_template_misses_total");
    sender.pause(false);
    PairMark {
        sent,
        arrived,
        decoded,
        misses,
    }
}

fn hot_standby(events: &mut Vec<Event>) -> Act {
    println!("\n== 5. Hot standby: the active Central's host dies ==");
    println!(
        "A second lab: Centrals a (active) and b (hot standby) share the exporters' and the peers' segments \
         and a direct HA link, heartbeats every 100 ms, takeover after {} ms. Exporters send to a virtual IP.",
        TAKEOVER.as_millis()
    );
    let lab = HaLab::new("dh", 2, 3, TAKEOVER);
    let load = lab.start_loaded(RATE);
    let (sender, arrivals) = (&load.sender, &load.arrivals);
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let p = placed_on(&lab, 0);
        if p.values().filter(|p| p.is_some()).count() == 3 {
            break p;
        }
        assert!(Instant::now() < deadline, "exporters not placed: {p:?}");
        nap(Duration::from_millis(100))?;
    };
    let status = lab.ha_status(1).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "Pair up: a active, b {} (linked: {}, mirror synchronised: {}); peers registered through the virtual IP; \
         exporters NetFlow v9, templates once, {RATE} datagrams/s each.",
        status.role, status.link_up, status.mirror_synced
    );
    // Let the peers report their templates and the mirror carry them to b.
    nap(Duration::from_millis(1500))?;
    let (mac_a, mac_b) = (lab.forwarding_mac(0), lab.forwarding_mac(1));
    let start = pair_mark(&lab, sender, arrivals);
    nap(Duration::from_millis(300))?;
    let died = Instant::now();
    lab.set_links(0, false);
    println!("   Host death of a: every link of its namespace goes down at once.");
    let first = loop {
        if let Some(s) = arrivals.via().get(&mac_b) {
            break Some(s.first);
        }
        if died.elapsed() > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let Some(first) = first else {
        panic!(
            "b never forwarded after a's host death\n{}",
            load.b.log_text()
        );
    };
    let gap = arrivals
        .via()
        .get(&mac_a)
        .map(|s| first.saturating_duration_since(s.last));
    let after = first.duration_since(died);
    let role = lab
        .wait_ha(1, Duration::from_secs(2), |s| s.role == "active")
        .map_or("?".into(), |s| format!("{} (epoch {})", s.role, s.epoch));
    println!(
        "   b forwarded its first datagram {:.0} ms after a's links went down; b is now {role}.",
        after.as_secs_f64() * 1000.0
    );
    if let Some(gap) = gap {
        println!(
            "   Gap at the peers: last datagram via a -> first via b: {:.0} ms (taps, by source MAC).",
            gap.as_secs_f64() * 1000.0
        );
    }
    for _ in 0..3 {
        nap(Duration::from_secs(1))?;
        let via = arrivals.via();
        let by = |mac: &[u8; 6]| via.get(mac).map_or(0, |s| s.count);
        let decoded: Vec<String> = (0..lab.peers.len())
            .map(|i| {
                format!(
                    "peer {} {}",
                    peer_name(i),
                    lab.peer_metric(i, "sluice_peer_decoded_records_total") as u64
                )
            })
            .collect();
        println!(
            "   +{:.1} s: datagrams at the peers via Central a {}, via Central b {} (taps); records decoded: {} (/metrics, published each second)",
            died.elapsed().as_secs_f64(),
            by(&mac_a),
            by(&mac_b),
            decoded.join(", ")
        );
    }
    let end = pair_mark(&lab, sender, arrivals);
    let kept = placed_on(&lab, 1) == before;
    let sent = end.sent - start.sent;
    let decoded = end.decoded - start.decoded;
    println!(
        "   In this act: {sent} records sent, {} datagrams arrived at the peers, {decoded} records decoded \
         (the peers' /metrics), template misses {} -> {}; every exporter kept its peer: {}.",
        end.arrived,
        start.misses,
        end.misses,
        if kept { "yes" } else { "NO" }
    );
    events.push(Event {
        what: "5. host death of the active Central".into(),
        sent,
        decoded,
        note: format!(
            "b forwarded after {:.0} ms; gap {}; template misses {} -> {}",
            after.as_secs_f64() * 1000.0,
            gap.map_or("-".into(), |g| format!(
                "{:.0} ms",
                g.as_secs_f64() * 1000.0
            )),
            start.misses,
            end.misses
        ),
    });
    println!("\nRemoving the hot-standby lab.");
    drop(load);
    drop(lab);
    Ok(())
}

fn placed_on(lab: &HaLab, n: usize) -> BTreeMap<IpAddr, Option<String>> {
    lab.sluicectl::<Vec<ExporterView>>(n, &["exporters", "list"])
        .into_iter()
        .map(|e| (e.address, e.peer))
        .collect()
}

fn summary(events: &[Event], took: Duration) {
    println!(
        "\n== Summary (records: exporters' datagrams x {RECORDS_PER_DATAGRAM}; decoded: the peers' JSON output, \
         act 5 their /metrics) =="
    );
    println!(
        "   {:<38} {:>9} {:>9} {:>7}   ",
        "event", "sent", "decoded", "lost"
    );
    for e in events {
        println!(
            "   {:<38} {:>9} {:>9} {:>7}   {}",
            e.what,
            e.sent,
            e.decoded,
            e.sent.saturating_sub(e.decoded),
            e.note
        );
    }
    println!(
        "Ran {:.0} s. Everything is removed (namespaces, veths, pins, state). To try it by hand: \
         `cargo xtask lab up` (or `lab up --ha` for the hot-standby pair).",
        took.as_secs_f64()
    );
}
