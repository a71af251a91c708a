//! `cargo xtask lab up|down`: the demo's namespaces, kept up for exploring by hand.
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

use sluice_tests::{
    bin,
    lab::{LISTENER, Lab, LabProcess, PORT, agents::CONTROL_PORT},
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
    match std::env::args().nth(1).as_deref() {
        Some("up") => up(),
        Some("down") => down(),
        _ => {
            eprintln!("usage: sluice-lab up|down");
            std::process::exit(2);
        }
    }
}

fn up() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let lab = Lab::new("lab", 2, 3);
    let (_central, _peers) = lab.start_control_plane(&[]);
    let sources = format!("{}-{}", lab.exporter_addrs[0], lab.exporter_addrs[2]);
    let mut exporters = lab
        .exporters
        .command(bin("sluice-flowgen").to_str().expect("utf-8 path"));
    exporters
        .args([
            "--dest",
            &format!("{LISTENER}:{PORT}"),
            "--sources",
            &sources,
        ])
        .args(["--proto", "v9", "--rate", "300", "--duration", "24h"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let _exporters = LabProcess::spawn_logged(exporters, "sluice-flowgen", None);
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
