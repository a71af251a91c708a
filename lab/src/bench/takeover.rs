//! Takeover time of a hot-standby pair on the HA lab (`crate::lab::ha`), next to keepalived
//! moving the same virtual IP between the same two Centrals.
//!
//! Sluice: the pair with a 300 ms takeover timeout, two registered `sluice-peer`s, 20 NetFlow v9
//! exporters (templates only in their first datagram) at 1000 datagrams/s in all. Each run is
//! a host death of the active (every link of its namespace down), measured at the peers' links:
//! the gap from the last datagram through the old active to the first through the new one, the
//! datagrams lost, the exporters that reached another peer, the template misses. Then the old
//! active's links come back (it becomes the standby) and the next run kills the other node.
//!
//! keepalived: the same lab with both Centrals standalone (no `[ha]`, the same static peers, so
//! both forward the same way) and keepalived (VRRPv3) in each Central's namespace moving the
//! exporters' virtual IP, with `advert_int 1` and with the fastest interval it accepts. The same
//! host deaths, measured the same way. Figures only, never asserted.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::lab::{
    LabProcess, PORT,
    ha::{Death, HaLab, NODES, VIP},
    traffic::Arrivals,
};

/// Runs per setting.
pub const RUNS: usize = 10;
/// Exporters (× [`RATE`] = 1000 datagrams/s).
pub const EXPORTERS: usize = 20;
/// Datagrams per second from each exporter.
pub const RATE: u32 = 50;
/// `ha.takeover_timeout_ms` of the measured pair.
pub const TAKEOVER: Duration = Duration::from_millis(300);
/// keepalived's default advertisement interval.
pub const ADVERT_DEFAULT: &str = "1";
/// The fastest interval keepalived 2.2 accepts (VRRPv3 counts centiseconds; `keepalived
/// --config-test` refuses anything below 0.01 with "outside range [0.010000, 255.000000]").
pub const ADVERT_FASTEST: &str = "0.01";

/// One host death.
pub struct Sample {
    /// The node whose host died.
    pub victim: &'static str,
    /// What it did.
    pub death: Death,
    /// Template misses at the peers caused by the takeover.
    pub misses: f64,
}

/// The runs of one setting.
pub struct Series {
    /// What was measured.
    pub name: String,
    /// Its runs.
    pub samples: Vec<Sample>,
}

impl Series {
    fn gaps(&self) -> Vec<Duration> {
        self.samples.iter().filter_map(|s| s.death.gap).collect()
    }

    /// Median gap.
    pub fn median(&self) -> Duration {
        median(self.gaps())
    }

    /// Largest gap.
    pub fn max(&self) -> Duration {
        self.gaps().into_iter().max().unwrap_or_default()
    }

    /// Datagrams lost over all runs, and sent.
    pub fn lost(&self) -> (u64, u64) {
        self.samples
            .iter()
            .fold((0, 0), |(l, s), x| (l + x.death.lost, s + x.death.sent))
    }

    /// Exporters that reached another peer, over all runs.
    pub fn reassigned(&self) -> usize {
        self.samples.iter().map(|s| s.death.reassigned.len()).sum()
    }

    /// Template misses over all runs.
    pub fn misses(&self) -> f64 {
        self.samples.iter().map(|s| s.misses).sum()
    }
}

/// The median (the lower middle one of an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

fn check(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn print_sample(n: usize, s: &Sample) {
    println!(
        "  {:>3} {:>6} {:>10.3} {:>10} {:>7} {:>7} {:>11} {:>7}",
        n + 1,
        s.victim,
        s.death.forwarded_after.as_secs_f64(),
        s.death
            .gap
            .map_or("-".into(), |g| format!("{:.3}", g.as_secs_f64())),
        s.death.lost,
        s.death.sent,
        s.death.reassigned.len(),
        s.misses
    );
}

fn header() {
    println!(
        "  {:>3} {:>6} {:>10} {:>10} {:>7} {:>7} {:>11} {:>7}",
        "run", "killed", "forward s", "gap s", "lost", "sent", "reassigned", "misses"
    );
}

/// The Sluice pair: [`RUNS`] host deaths, alternating victims.
pub fn sluice(stop: &AtomicBool, runs: usize) -> Result<Series> {
    let lab = HaLab::new("bt", 2, EXPORTERS, TAKEOVER);
    let load = lab.start_loaded(RATE);
    let (sender, arrivals) = (&load.sender, &load.arrivals);
    std::thread::sleep(Duration::from_secs(3));
    let logs = || load.logs();
    header();
    let mut samples = Vec::new();
    let mut active = 0;
    for n in 0..runs {
        check(stop)?;
        let survivor = 1 - active;
        // The standby is linked and synchronised (after a return: the old active stepped down).
        lab.wait_ha(survivor, Duration::from_secs(10), |s| {
            s.role == "standby" && s.link_up && s.mirror_synced
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", logs()))?;
        // A different phase of the heartbeat every run.
        std::thread::sleep(Duration::from_millis(500 + 37 * n as u64));
        let misses = lab.template_misses();
        let death = lab
            .host_death(active, sender, arrivals, Duration::from_secs(2))
            .map_err(|e| anyhow::anyhow!("{e}\n{}", logs()))?;
        lab.wait_ha(survivor, Duration::from_secs(5), |s| s.role == "active")
            .map_err(|e| anyhow::anyhow!("{e}\n{}", logs()))?;
        let sample = Sample {
            victim: NODES[active],
            death,
            misses: lab.template_misses() - misses,
        };
        print_sample(n, &sample);
        samples.push(sample);
        lab.set_links(active, true);
        active = survivor;
    }
    Ok(Series {
        name: format!("sluice, takeover timeout {} ms", TAKEOVER.as_millis()),
        samples,
    })
}

/// keepalived in `ns` with `conf`, pid files in `dir`; stopped by its pid on drop.
fn keepalived(lab: &HaLab, n: usize, dir: &std::path::Path, conf: &str) -> LabProcess {
    let file = dir.join(format!("keepalived-{}.conf", NODES[n]));
    std::fs::write(&file, conf).expect("keepalived.conf");
    let mut cmd = lab.centrals[n].command("keepalived");
    cmd.args(["--dont-fork", "--no-syslog", "--log-console", "-f"])
        .arg(&file)
        .arg("-p")
        .arg(dir.join(format!("keepalived-{}.pid", NODES[n])))
        .arg("-r")
        .arg(dir.join(format!("vrrp-{}.pid", NODES[n])))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    LabProcess::spawn_logged(cmd, &format!("keepalived {}", NODES[n]), None)
}

/// VRRPv3 for the exporters' virtual IP on `ex0`, unicast between the two Centrals' own
/// addresses (no dependence on the bridge's multicast handling), `nopreempt` (as Sluice: a
/// returning node stays the backup).
fn keepalived_conf(n: usize, advert: &str) -> String {
    let (me, other) = (2 + n, 3 - n);
    format!(
        r#"global_defs {{
    vrrp_version 3
}}
vrrp_instance sluice {{
    state BACKUP
    nopreempt
    interface ex0
    virtual_router_id 51
    priority {prio}
    advert_int {advert}
    unicast_src_ip 198.18.0.{me}
    unicast_peer {{
        198.18.0.{other}
    }}
    virtual_ipaddress {{
        {VIP}/24 dev ex0
    }}
}}
"#,
        prio = if n == 0 { 200 } else { 100 },
    )
}

/// keepalived with `advert`: [`RUNS`] host deaths of the VRRP master.
pub fn keepalived_series(stop: &AtomicBool, runs: usize, advert: &str) -> Result<Series> {
    let lab = HaLab::new("bk", 2, EXPORTERS, TAKEOVER);
    // Both Centrals standalone, the same static peers: identical maps, so whichever holds the
    // virtual IP forwards each exporter to the same peer.
    let statics: Vec<String> = lab
        .peers
        .iter()
        .enumerate()
        .flat_map(|(i, (_, addr))| {
            [
                "--peer".to_string(),
                format!("{}={addr}:{PORT}", crate::lab::peer_name(i)),
            ]
        })
        .collect();
    let centrals: Vec<LabProcess> = (0..2)
        .map(|n| {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net=/run/netns/{}", lab.centrals[n].name))
                .arg(crate::bin("sluice-central"))
                .args(["run", "--iface", "ex0", "--xdp-mode", "skb", "--listen"])
                .arg(format!("{VIP}:{PORT}"))
                .arg("--state-dir")
                .arg(lab.state_dir(n))
                .arg("--pin-dir")
                .arg(lab.pins[n].path())
                .args(&statics)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            LabProcess::spawn_logged(
                cmd,
                &format!("sluice-central {}", NODES[n]),
                Some("sluice-central ready"),
            )
        })
        .collect();
    let dir: PathBuf = lab.dir.join("keepalived");
    std::fs::create_dir_all(&dir)?;
    let mut kas: Vec<LabProcess> = (0..2)
        .map(|n| keepalived(&lab, n, &dir, &keepalived_conf(n, advert)))
        .collect();
    let logs = || {
        format!(
            "keepalived a:\n{}\nkeepalived b:\n{}\ncentral a:\n{}",
            kas[0].log_text(),
            kas[1].log_text(),
            centrals[0].log_text()
        )
    };
    let master = |timeout: Duration| -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let holders: Vec<usize> = (0..2).filter(|&n| !lab.vips_held(n).is_empty()).collect();
            if let [n] = holders[..] {
                return Ok(n);
            }
            if Instant::now() > deadline {
                bail!(
                    "no single VRRP master after {timeout:?}: {holders:?}\n{}",
                    logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    master(Duration::from_secs(15))?;
    let peers: Vec<&_> = lab.peers.iter().map(|(ns, _)| ns).collect();
    let arrivals = Arrivals::start_on(&peers);
    let sender = lab.start_v9(RATE);
    std::thread::sleep(Duration::from_secs(2));
    header();
    let mut samples = Vec::new();
    for n in 0..runs {
        check(stop)?;
        let active = master(Duration::from_secs(10))?;
        std::thread::sleep(Duration::from_millis(500 + 37 * n as u64));
        let settle = Duration::from_secs(2).max(Duration::from_secs_f64(
            advert.parse::<f64>().unwrap_or(1.0) * 3.0,
        ));
        let death = lab
            .host_death(active, &sender, &arrivals, settle)
            .map_err(|e| anyhow::anyhow!("{e}\n{}", logs()))?;
        let sample = Sample {
            victim: NODES[active],
            death,
            misses: 0.0,
        };
        print_sample(n, &sample);
        samples.push(sample);
        lab.set_links(active, true);
        // The returning node hears the master's adverts and stays the backup (nopreempt).
        std::thread::sleep(Duration::from_secs(1));
    }
    // SIGTERM: keepalived removes its virtual IP and stops its VRRP child itself.
    for k in &mut kas {
        k.terminate();
    }
    Ok(Series {
        name: format!(
            "keepalived {} VRRPv3, advert_int {advert}",
            keepalived_version()
        ),
        samples,
    })
}

fn keepalived_version() -> String {
    Command::new("keepalived")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stderr).into_owned()
                + &String::from_utf8_lossy(&o.stdout);
            text.split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}

/// `cargo xtask bench takeover`.
pub fn bench(stop: &AtomicBool, runs: usize) -> Result<()> {
    println!(
        "sluice-bench takeover: HA lab, {EXPORTERS} NetFlow v9 exporters at {} datagrams/s in all \
         (templates only in their first datagram),",
        EXPORTERS as u32 * RATE
    );
    println!(
        "2 peers; each run takes every link of the active Central's namespace down (host death). \
         forward = links down → first datagram through the survivor; gap = last datagram through \
         the old active → first through the new one, at the peers' links (datagrams evenly spaced, \
         {} ms apart).\n",
        1000 / (EXPORTERS as u32 * RATE)
    );
    let mut series = Vec::new();
    println!("Sluice pair, takeover timeout {} ms:", TAKEOVER.as_millis());
    series.push(sluice(stop, runs)?);
    if Command::new("keepalived")
        .arg("--version")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        bail!("keepalived is not installed (cargo xtask setup installs it)");
    }
    for advert in [ADVERT_DEFAULT, ADVERT_FASTEST] {
        check(stop)?;
        println!("\nkeepalived, advert_int {advert}:");
        series.push(keepalived_series(stop, runs, advert)?);
    }
    let ours = series[0].median().as_secs_f64().max(1e-6);
    println!(
        "\n  {:<45} {:>9} {:>9} {:>13} {:>11} {:>7} {:>9}",
        "", "median s", "max s", "lost/sent", "reassigned", "misses", "× sluice"
    );
    for s in &series {
        let (lost, sent) = s.lost();
        println!(
            "  {:<45} {:>9.3} {:>9.3} {:>13} {:>11} {:>7} {:>9.1}",
            s.name,
            s.median().as_secs_f64(),
            s.max().as_secs_f64(),
            format!("{lost}/{sent}"),
            s.reassigned(),
            if s.name.starts_with("sluice") {
                format!("{}", s.misses())
            } else {
                "n/a".into()
            },
            s.median().as_secs_f64() / ours
        );
    }
    println!(
        "\nTargets (HA issue): Sluice median gap ≤ 0.5 s and max ≤ 1 s, zero reassignments, zero \
         template misses. keepalived moves only the address: its Centrals share no state (here \
         they have the same static peers, so the exporters land on the same peers anyway)."
    );
    Ok(())
}

/// `cargo xtask soak ha`: the loaded pair (300 ms takeover timeout, 1000 datagrams/s) for
/// `minutes`, sampled every second: takeovers on either node after the first are spurious.
pub fn soak(stop: &AtomicBool, minutes: u64) -> Result<()> {
    println!(
        "sluice-bench soak-ha: HA lab, takeover timeout {} ms, {EXPORTERS} NetFlow v9 exporters at \
         {} datagrams/s in all, 2 peers, for {minutes} min. Nothing is failed on purpose: every \
         takeover after the first is spurious.",
        TAKEOVER.as_millis(),
        EXPORTERS as u32 * RATE
    );
    let lab = HaLab::new("sk", 2, EXPORTERS, TAKEOVER);
    let load = lab.start_loaded(RATE);
    let (sender, arrivals) = (&load.sender, &load.arrivals);
    std::thread::sleep(Duration::from_secs(2));
    let first = HaLab::quiesce(sender, arrivals);
    let owners = first.owners();
    let misses = lab.template_misses();
    let counts = |n: usize| lab.ha_status(n).map(|s| (s.takeovers, s.takeovers_refused));
    let base = [
        counts(0).map_err(anyhow::Error::msg)?,
        counts(1).map_err(anyhow::Error::msg)?,
    ];
    let start = Instant::now();
    let end = start + Duration::from_secs(minutes * 60);
    let (mut lost, mut sent, mut strays, mut samples, mut errors) =
        (0u64, 0u64, 0usize, 0u64, 0u64);
    let mut last = first;
    let mut next_report = start + Duration::from_secs(60);
    let mut roles_changed = 0u64;
    let mut roles = ("active".to_string(), "standby".to_string());
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            println!(
                "interrupted after {:.1} min",
                start.elapsed().as_secs_f64() / 60.0
            );
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        match (lab.ha_status(0), lab.ha_status(1)) {
            (Ok(sa), Ok(sb)) => {
                samples += 1;
                if (sa.role.as_str(), sb.role.as_str()) != (roles.0.as_str(), roles.1.as_str()) {
                    roles_changed += 1;
                    println!(
                        "  {:>6.1} s: roles now a={} b={} (a: {:?}; b: {:?})",
                        start.elapsed().as_secs_f64(),
                        sa.role,
                        sb.role,
                        sa.last_change_reason,
                        sb.last_change_reason
                    );
                    roles = (sa.role, sb.role);
                }
            }
            _ => errors += 1,
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(60);
            let w = HaLab::quiesce(sender, arrivals);
            lost += w.lost_since(&last);
            sent += w.sent_since(&last);
            strays += w.strays(&owners).len();
            last = w;
            println!(
                "  {:>4.0} min: {lost} of {sent} datagrams lost so far, takeovers a={:?} b={:?}",
                start.elapsed().as_secs_f64() / 60.0,
                counts(0).map(|c| c.0),
                counts(1).map(|c| c.0)
            );
        }
    }
    let w = HaLab::quiesce(sender, arrivals);
    lost += w.lost_since(&last);
    sent += w.sent_since(&last);
    strays += w.strays(&owners).len();
    let now = [
        counts(0).map_err(anyhow::Error::msg)?,
        counts(1).map_err(anyhow::Error::msg)?,
    ];
    let spurious = (now[0].0 - base[0].0) + (now[1].0 - base[1].0);
    let refused = (now[0].1 - base[0].1) + (now[1].1 - base[1].1);
    println!(
        "\nsoak ha: {:.1} min, {samples} status samples ({errors} failed), role changes seen {roles_changed}; \
         spurious takeovers {spurious} (a {} → {}, b {} → {}); takeovers refused by the split-brain \
         guard {refused}; datagrams lost {lost} of {sent}; exporters seen off their peer {strays} (the lab does not \
         rebalance); \
         template misses {}",
        start.elapsed().as_secs_f64() / 60.0,
        base[0].0,
        now[0].0,
        base[1].0,
        now[1].0,
        lab.template_misses() - misses
    );
    if spurious > 0 {
        println!("{}", load.logs());
    }
    Ok(())
}
