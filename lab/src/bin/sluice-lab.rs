//! `cargo xtask lab up|down`: the demo's namespaces, kept up for exploring by hand. `up --ha`:
//! a hot-standby pair of Centrals instead of one, with the commands to watch a takeover.
//!
//! `up` builds the lab (three exporters sending NetFlow v9, Central with XDP, two registered
//! `sluice-peer`s), prints how to reach it with `sluicectl` and `bpftool`, and keeps it until
//! Ctrl-C, then removes everything. `down` removes what a crashed lab or test run left behind:
//! namespaces, pins and state dirs whose owning process is gone.

use std::{
    path::Path,
    process::Stdio,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use sluice_lab::{
    bin,
    lab::{
        LISTENER, Lab, LabProcess, PORT,
        agents::CONTROL_PORT,
        ha::{HaLab, NODES, PEER_VIP, VIP},
    },
    netns::NetNs,
    run,
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "sluice-lab: needs root (network namespaces, XDP); run `sudo cargo xtask lab up`"
        );
        std::process::exit(1);
    }
    let ha = std::env::args().skip(2).any(|a| a == "--ha");
    match std::env::args().nth(1).as_deref() {
        Some("up") if ha => up_ha(),
        Some("up") => up(),
        Some("down") => down(),
        _ => {
            eprintln!("usage: sluice-lab up [--ha] | down");
            std::process::exit(2);
        }
    }
}

fn on_ctrl_c() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// `sluice-flowgen` in `ns`: NetFlow v9 from `sources` to `dest` at 300 datagrams/s for a day.
fn flowgen(ns: &NetNs, dest: &str, sources: &str) -> LabProcess {
    let mut exporters = ns.command(bin("sluice-flowgen").to_str().expect("utf-8 path"));
    exporters
        .args(["--dest", dest, "--sources", sources])
        .args(["--proto", "v9", "--rate", "300", "--duration", "24h"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    LabProcess::spawn_logged(exporters, "sluice-flowgen", None)
}

fn up() {
    on_ctrl_c();
    let lab = Lab::new("lab", 2, 3);
    let (_central, _peers) = lab.start_control_plane(&[]);
    let sources = format!("{}-{}", lab.exporter_addrs[0], lab.exporter_addrs[2]);
    let _exporters = flowgen(&lab.exporters, &format!("{LISTENER}:{PORT}"), &sources);
    let ctl = format!(
        "nsenter --net=/run/netns/{} {} --central https://127.0.0.1:{CONTROL_PORT} --ca-cert {} --token-file {}",
        lab.central.name,
        bin("sluicectl").display(),
        lab.ca_cert().display(),
        lab.token_file(true).display()
    );
    println!(
        "Lab up: exporters {sources} send NetFlow v9 to {LISTENER}:{PORT}; Central steers them with XDP to peers a and b."
    );
    println!("Try, in another terminal:");
    println!("  {ctl} peers list");
    println!("  {ctl} exporters list");
    println!("  {ctl} exporters move {} b", lab.exporter_addrs[0]);
    println!(
        "  bpftool map dump pinned {}/EXPORTERS",
        lab.pins.path().display()
    );
    println!(
        "  ip netns exec {} tcpdump -ni pe0 udp port {PORT}",
        lab.peers[0].0.name
    );
    println!("Ctrl-C removes the lab.");
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("Removing the lab.");
}

/// The hot-standby variant: two Centrals `a` and `b` sharing the exporters' and the peers'
/// segments, a direct HA link, registered peers on the peers' virtual IP. Prints the commands
/// that kill a host, cut the link, switch over, and follows the roles until Ctrl-C.
fn up_ha() {
    on_ctrl_c();
    let takeover = Duration::from_millis(300);
    let lab = HaLab::new("lab", 2, 3, takeover);
    let (a, b) = lab.start_pair(&[]);
    let _peers = lab.start_peers(0);
    let sources = format!("{}-{}", lab.exporter_addrs[0], lab.exporter_addrs[2]);
    let _exporters = flowgen(&lab.exporters, &format!("{VIP}:{PORT}"), &sources);
    let ctl = |n: usize| {
        format!(
            "nsenter --net=/run/netns/{} {} --central https://127.0.0.1:{CONTROL_PORT} --ca-cert {} --token-file {}",
            lab.centrals[n].name,
            bin("sluicectl").display(),
            lab.ca_cert().display(),
            lab.token_file(true).display()
        )
    };
    let links = |n: usize, state: &str| {
        ["ex0", "pp0", "ha0"]
            .map(|l| format!("ip -n {} link set {l} {state}", lab.centrals[n].name))
            .join("; ")
    };
    println!(
        "HA lab up: exporters {sources} send NetFlow v9 to the virtual IP {VIP}:{PORT}; Central a is active, b its hot \
         standby (takeover timeout {} ms); peers a and b register at https://{PEER_VIP}:{CONTROL_PORT}.",
        takeover.as_millis()
    );
    println!(
        "Both Centrals run `sluice-central run --config {} --ha-node a|b`.",
        lab.config().display()
    );
    println!("\nLook (in another terminal):");
    println!("  {} ha status", ctl(0));
    println!("  {} ha status", ctl(1));
    println!(
        "  ip netns exec {} tcpdump -eni pe0 udp port {PORT}    # the source MAC says which Central forwards",
        lab.peers[0].0.name
    );
    println!(
        "\nHost death of a (every link of its namespace down), then its return as the standby:"
    );
    println!("  {}", links(0, "down"));
    println!("  {}", links(0, "up"));
    println!("Planned switchover (ask the active one):");
    println!("  {} ha switchover", ctl(1));
    println!(
        "Cut only the HA link (nothing is taken over: the active still answers for the virtual IP):"
    );
    println!("  ip -n {} link set ha0 down", lab.centrals[0].name);
    println!("\nRole changes are printed here as they happen. Ctrl-C removes the lab.");
    let mut roles: Vec<String> = vec![String::new(); 2];
    while !STOP.load(Ordering::SeqCst) {
        for n in 0..2 {
            let now = lab
                .ha_status(n)
                .map(|s| {
                    format!(
                        "{} (epoch {}, link {})",
                        s.role,
                        s.epoch,
                        if s.link_up { "up" } else { "down" }
                    )
                })
                .unwrap_or_else(|_| "unreachable".into());
            if now != roles[n] {
                println!("  node {}: {now}", NODES[n]);
                roles[n] = now;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop((a, b));
    println!("Removing the lab.");
}

/// Removes namespaces (`sl<pid>-…`), pin dirs (`sluice-test-<pid>-…`) and state dirs
/// (`sluice-lab-<pid>-…`) of processes that no longer run.
fn down() {
    let dead = |name: &str, prefix: &str| -> bool {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    let mut removed = 0;
    for ns in run("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        if dead(ns, "sl") {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
            removed += 1;
        }
    }
    for (dir, prefix) in [("/sys/fs/bpf", "sluice-test-"), ("/tmp", "sluice-lab-")] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead(&name, prefix) {
                if dir == "/sys/fs/bpf" {
                    let _ = sluice_central::loader::detach(&entry.path(), None, true);
                } else {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
                removed += 1;
            }
        }
    }
    println!("sluice-lab down: removed {removed} leftovers");
}
