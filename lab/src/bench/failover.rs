//! Failover time on the namespace lab with default settings (peer timeout 3 s, heartbeats every
//! second): Central without static peers, two `sluice-peer`s registered over TLS, NetFlow v5
//! from six exporters. Each run SIGKILLs the peer holding the exporters and measures, per
//! exporter, the time from the signal to its first datagram on the survivor's link. The killed
//! peer then restarts and rejoins empty, so the next run kills the other one.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Result, bail};

use crate::lab::{
    Lab, peer_name,
    traffic::{Arrivals, Sender},
};

/// Runs measured.
pub const RUNS: usize = 10;
/// Exporters in the lab.
pub const EXPORTERS: usize = 6;
/// Datagrams per second from each exporter (the resolution of a measurement is 1 / RATE).
pub const RATE: u32 = 200;
/// The goal for the slowest exporter.
pub const GOAL: Duration = Duration::from_secs(3);

/// One run.
pub struct Run {
    /// The peer killed.
    pub victim: String,
    /// SIGKILL → first datagram at the survivor, for each of the victim's exporters.
    pub times: Vec<Duration>,
}

impl Run {
    /// The fastest exporter of the run.
    pub fn min(&self) -> Duration {
        self.times.iter().copied().min().unwrap_or_default()
    }

    /// The slowest exporter of the run.
    pub fn max(&self) -> Duration {
        self.times.iter().copied().max().unwrap_or_default()
    }
}

/// Builds the lab and makes [`RUNS`] runs, calling `each` after every one. Stops early (with an
/// error) when `stop` is set.
pub fn run(stop: &AtomicBool, mut each: impl FnMut(usize, &Run)) -> Result<Vec<Run>> {
    let lab = Lab::new("bf", 2, EXPORTERS);
    let (central, mut agents) = lab.start_control_plane(&[]);
    let arrivals = Arrivals::start(&lab);
    let _sender = Sender::start(&lab, &[RATE; EXPORTERS]);
    let mut runs = Vec::new();
    for n in 0..RUNS {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        let assigned = lab.wait_assigned(EXPORTERS, Duration::from_secs(5));
        let (victim, moved) = lab.busiest_peer(&assigned);
        // Kill at a different phase of the heartbeat and of Central's tick every run.
        std::thread::sleep(Duration::from_millis(1000 + 97 * n as u64));
        let times = arrivals.time_failover(
            || agents[victim].kill(),
            1 - victim,
            &moved,
            Duration::from_secs(15),
        );
        let Some(times) = times.into_iter().collect::<Option<Vec<_>>>() else {
            bail!(
                "run {n}: exporters of peer {} did not reach peer {} within 15 s\n{}",
                peer_name(victim),
                peer_name(1 - victim),
                central.log_text()
            );
        };
        let run = Run {
            victim: peer_name(victim),
            times,
        };
        each(n, &run);
        runs.push(run);
        agents[victim] = lab.start_peer_agent(victim);
        if let Err(e) = lab.wait_peers_online(Duration::from_secs(15)) {
            bail!("{e}\n{}", agents[victim].log_text());
        }
    }
    Ok(runs)
}

/// Median of a non-empty list.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

/// `sluice-bench failover`: runs and prints the figures.
pub fn bench(stop: &AtomicBool) -> Result<()> {
    println!(
        "sluice-bench failover: 2 sluice-peers registered with Central over TLS, {EXPORTERS} exporters at {RATE} datagrams/s each,"
    );
    println!(
        "default settings (peer timeout 3 s, heartbeats every second). Each run SIGKILLs the peer holding the exporters;"
    );
    println!(
        "time = SIGKILL → first datagram of each of its exporters on the survivor's link (resolution {} ms).\n",
        1000 / RATE
    );
    println!(
        "  {:>3} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "run", "killed", "moved", "first", "median", "last"
    );
    let runs = run(stop, |n, r| {
        println!(
            "  {:>3} {:>6} {:>9} {:>8.3}s {:>8.3}s {:>8.3}s",
            n + 1,
            r.victim,
            r.times.len(),
            r.min().as_secs_f64(),
            median(r.times.clone()).as_secs_f64(),
            r.max().as_secs_f64()
        );
    })?;
    let all: Vec<Duration> = runs.iter().flat_map(|r| r.times.iter().copied()).collect();
    let worst: Vec<Duration> = runs.iter().map(Run::max).collect();
    let max = worst.iter().copied().max().unwrap_or_default();
    println!(
        "\nOver {} runs ({} exporter moves): median {:.3} s, max {:.3} s; slowest exporter per run: median {:.3} s",
        runs.len(),
        all.len(),
        median(all.clone()).as_secs_f64(),
        max.as_secs_f64(),
        median(worst).as_secs_f64()
    );
    println!(
        "Goal ≤ {:.0} s: {}",
        GOAL.as_secs_f64(),
        if max <= GOAL {
            "met"
        } else if median(all) <= GOAL {
            "median met, max NOT met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
