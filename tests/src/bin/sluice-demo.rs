//! `cargo xtask demo`: a self-contained lab — three NetFlow v9 exporters, Central with XDP on
//! a veth, two `sluice-peer`s — runs for a while and prints which peer received what from which
//! exporter. Everything is torn down at the end and on Ctrl-C.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    net::IpAddr,
    process::{Child, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use sluice_central::{controller::dataplane::DataPlane, maps::Maps};
use sluice_common::{Reason, from_key_bytes};
use sluice_tests::{
    bin,
    lab::{LISTENER, Lab, PORT, peer_name},
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // Our own children only, by pid.
        // SAFETY: signalling a child we spawned.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    println!(
        "Building the lab: 3 exporters -> Central (XDP on ce0) -> 2 peers, in network namespaces…"
    );
    let lab = Lab::new("demo", 2, 3);
    let central = lab.start_central(&[]);
    println!("Central is up: XDP attached to ce0, listening on {LISTENER}:{PORT}.");

    let out_dir = lab.state_dir.join("flows");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let mut peers = Vec::new();
    for (i, (ns, addr)) in lab.peers.iter().enumerate() {
        let file = out_dir.join(format!("peer-{}.jsonl", peer_name(i)));
        let child = ns
            .command(bin("sluice-peer").to_str().expect("utf-8 path"))
            .args([
                "run",
                "--name",
                &peer_name(i),
                "--listen",
                &format!("{addr}:{PORT}"),
                "--shards",
                "1",
            ])
            .arg("--output")
            .arg(format!("file:{}", file.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sluice-peer");
        peers.push((Proc(child), file));
        println!(
            "Peer {} is up on {addr}:{PORT}, writing JSON records to {}",
            peer_name(i),
            peers[i].1.display()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let sources = format!("{}-{}", lab.exporter_addrs[0], lab.exporter_addrs[2]);
    let exporter = lab
        .exporters
        .command(bin("sluice-flowgen").to_str().expect("utf-8 path"))
        .args([
            "--dest",
            &format!("{LISTENER}:{PORT}"),
            "--sources",
            &sources,
            "--proto",
            "v9",
        ])
        .args([
            "--rate",
            "300",
            "--records-per-packet",
            "20",
            "--duration",
            &format!("{seconds}s"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sluice-flowgen");
    let mut exporter = Proc(exporter);
    println!(
        "Exporters {sources} send NetFlow v9 (templates, 20 flows per datagram) at 300 datagrams/s for {seconds} s.\n"
    );

    let maps = Maps::open_pinned(lab.pins.path()).expect("pinned maps");
    let start = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(2));
        let done = matches!(exporter.0.try_wait(), Ok(Some(_)));
        if done {
            std::thread::sleep(Duration::from_secs(1));
        }
        report(&lab, &maps, &peers, start.elapsed());
        if done {
            break;
        }
    }
    if STOP.load(Ordering::SeqCst) {
        println!("\nInterrupted: tearing down.");
    }
    drop(exporter);
    drop(peers);
    drop(central);
    drop(lab);
    println!("Lab removed (namespaces, veths, pins, state).");
}

/// Records per (peer, exporter) from the peers' JSON output, plus Central's view.
fn report(lab: &Lab, maps: &Maps, peers: &[(Proc, std::path::PathBuf)], elapsed: Duration) {
    println!(
        "── after {:>4.1} s ─────────────────────────────────────────────",
        elapsed.as_secs_f64()
    );
    let assignment: BTreeMap<IpAddr, String> = maps
        .exporters()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(a, v)| {
            let peer = maps.peer(v.peer_id).ok()?;
            let i = lab
                .peers
                .iter()
                .position(|(_, p)| IpAddr::V4(*p) == from_key_bytes(peer.addr))?;
            Some((a, peer_name(i)))
        })
        .collect();
    println!(
        "{:<14} {:<10} {:>12} {:>12}",
        "exporter", "assigned", "records@a", "records@b"
    );
    let counts: Vec<BTreeMap<String, u64>> =
        peers.iter().map(|(_, f)| records_by_exporter(f)).collect();
    for a in &lab.exporter_addrs {
        let ip = IpAddr::V4(*a);
        let at = |i: usize| counts[i].get(&a.to_string()).copied().unwrap_or(0);
        println!(
            "{:<14} {:<10} {:>12} {:>12}",
            a,
            assignment.get(&ip).map_or("-", String::as_str),
            at(0),
            at(1)
        );
    }
    let c = maps.counters().unwrap_or_default();
    let get = |r: Reason| c.iter().find(|(x, _)| *x == r).map_or(0, |(_, v)| *v);
    println!(
        "XDP: {} datagrams redirected in the kernel, {} passed up to the slow path (neighbour not yet resolved), {} placed by the pool table before the controller pinned their exporter\n",
        get(Reason::Redirect) + get(Reason::Tx),
        get(Reason::PassNoNeigh),
        get(Reason::HashPlaced)
    );
}

fn records_by_exporter(file: &std::path::Path) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let Ok(f) = std::fs::File::open(file) else {
        return m;
    };
    for line in BufReader::new(f).lines().map_while(Result::ok) {
        if let Some(addr) = line
            .split("\"sampler_address\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        {
            *m.entry(addr.to_owned()).or_insert(0) += 1;
        }
    }
    m
}
