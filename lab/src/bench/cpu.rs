//! CPU time of the forwarding lab, from `/proc`.
//!
//! The machine is shared (other builds and tests run beside the benchmark), so non-idle time of
//! the whole machine would measure them too. Two views:
//! - [`Usage::lab`]: the CPU of the lab's tasks — this benchmark (sender, receivers, harness),
//!   the forwarder's process tree and the `ksoftirqd` threads (deferred network softirqs).
//!   Per-task times are the scheduler's precise runtime. This kernel has no IRQ time
//!   accounting, so softirq work (XDP, veth delivery, the UDP stack) is charged to whichever
//!   task it ran in: on veth that is the sending or receiving task, so it is inside the lab.
//! - [`Usage::machine`]: `/proc/stat` non-idle time of all cores (tick-sampled) minus the CPU of
//!   every process outside the lab; processes that exit within the window are covered through
//!   their reaper's `cutime`/`cstime`. A cross-check of `lab`, noisier when the machine is busy.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// A snapshot of `/proc/stat` and every process.
pub struct Sample {
    at: Instant,
    /// user + nice + system + irq + softirq + steal, all cores.
    nonidle: u64,
    softirq: u64,
    procs: HashMap<u32, Proc>,
}

struct Proc {
    ppid: u32,
    kernel_softirq_thread: bool,
    /// utime + stime + cutime + cstime.
    ticks: u64,
}

/// CPU seconds used between two samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Wall time between the samples.
    pub wall: f64,
    /// CPU of the lab's tasks (benchmark process, forwarder processes, ksoftirqd).
    pub lab: f64,
    /// Non-idle time of all cores minus every non-lab process.
    pub machine: f64,
    /// The benchmark process itself: sender and receiver threads, and the harness.
    pub bench: f64,
    /// The forwarder's processes (sluice-central, or nfacctd and its plugin process).
    pub forwarder_process: f64,
    /// Time in softirq on all cores (network receive processing, XDP included).
    pub softirq: f64,
    /// CPU of everything else on the machine (subtracted from `lab`).
    pub background: f64,
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

impl Sample {
    /// Reads `/proc`.
    pub fn take() -> Self {
        let at = Instant::now();
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let field = |i: usize| cpu.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal …
        let nonidle = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
        let mut procs = HashMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(p) = read_proc(pid) {
                procs.insert(pid, p);
            }
        }
        Self {
            at,
            nonidle,
            softirq: field(6),
            procs,
        }
    }

    /// `pid` and its descendants as of this sample.
    pub fn tree(&self, pid: u32) -> Vec<u32> {
        let mut tree = vec![pid];
        let mut i = 0;
        while let Some(&p) = tree.get(i) {
            tree.extend(
                self.procs
                    .iter()
                    .filter(|(_, c)| c.ppid == p)
                    .map(|(&child, _)| child),
            );
            i += 1;
        }
        tree
    }
}

/// `/proc/<pid>/stat`: ppid, comm and CPU ticks (own and reaped children's).
fn read_proc(pid: u32) -> Option<Proc> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: it ends at the last ')'.
    let (head, rest) = s.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some(Proc {
        ppid: n(1) as u32,
        kernel_softirq_thread: comm.starts_with("ksoftirqd/"),
        ticks: n(11) + n(12) + n(13) + n(14),
    })
}

/// CPU used between `start` and `end`; `forwarder` is the forwarder's process id.
pub fn usage(start: &Sample, end: &Sample, forwarder: u32) -> Usage {
    let hz = clock_ticks_per_second();
    let bench = std::process::id();
    let mut fwd_tree = start.tree(forwarder);
    fwd_tree.extend(end.tree(forwarder));
    let in_lab =
        |pid: u32, p: &Proc| pid == bench || p.kernel_softirq_thread || fwd_tree.contains(&pid);
    // A process present at both ends (and not a recycled pid) contributes its delta; a new one
    // all it has; one that vanished had its whole life folded into its reaper's cutime/cstime
    // (present at the end), so its CPU before the window comes off again.
    let mut background: i64 = 0;
    let mut lab_ticks: i64 = 0;
    let mut forwarder_ticks: i64 = 0;
    let mut bench_ticks: i64 = 0;
    for (pid, p) in &end.procs {
        let before = start
            .procs
            .get(pid)
            .filter(|b| b.ticks <= p.ticks)
            .map_or(0, |b| b.ticks);
        let delta = (p.ticks - before) as i64;
        if *pid == bench {
            bench_ticks += delta;
        } else if fwd_tree.contains(pid) {
            forwarder_ticks += delta;
        }
        if in_lab(*pid, p) {
            lab_ticks += delta;
        } else {
            background += delta;
        }
    }
    for (pid, p) in &start.procs {
        if !end.procs.contains_key(pid) && !in_lab(*pid, p) {
            background -= p.ticks as i64;
        }
    }
    let secs = |ticks: i64| ticks as f64 / hz;
    let nonidle = end.nonidle as i64 - start.nonidle as i64;
    Usage {
        wall: end.at.duration_since(start.at).as_secs_f64(),
        lab: secs(lab_ticks),
        machine: secs(nonidle - background),
        bench: secs(bench_ticks),
        forwarder_process: secs(forwarder_ticks),
        softirq: secs(end.softirq as i64 - start.softirq as i64),
        background: secs(background),
    }
}

/// Run time and bytes written of every thread of some processes, from
/// `/proc/<pid>/task/<tid>/schedstat` (nanoseconds) and `…/io` (`wchar`: bytes handed to
/// `write` and its kin, files and sockets alike).
pub struct Threads(HashMap<u32, ThreadTimes>);

#[derive(Clone, Copy, Default)]
struct ThreadTimes {
    cpu_ns: u64,
    wchar: u64,
}

/// The thread that wrote the most between two [`Threads`] samples.
#[derive(Clone, Copy, Debug)]
pub struct Writer {
    /// Its CPU seconds.
    pub cpu: f64,
    /// The bytes it wrote.
    pub bytes: u64,
}

impl Threads {
    /// The threads of `pids` as of now.
    pub fn take(pids: &[u32]) -> Self {
        let mut threads = HashMap::new();
        for pid in pids {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                let read = |file: &str| std::fs::read_to_string(task.path().join(file)).ok();
                let cpu_ns = read("schedstat")
                    .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()));
                let wchar = read("io").and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("wchar:"))
                        .and_then(|v| v.trim().parse().ok())
                });
                if let (Some(cpu_ns), Some(wchar)) = (cpu_ns, wchar) {
                    threads.insert(tid, ThreadTimes { cpu_ns, wchar });
                }
            }
        }
        Self(threads)
    }

    /// The thread that wrote the most bytes since `start`, if any wrote.
    pub fn top_writer(&self, start: &Threads) -> Option<Writer> {
        self.0
            .iter()
            .map(|(tid, end)| {
                let before = start.0.get(tid).copied().unwrap_or_default();
                Writer {
                    cpu: end.cpu_ns.saturating_sub(before.cpu_ns) as f64 / 1e9,
                    bytes: end.wchar.saturating_sub(before.wchar),
                }
            })
            .filter(|w| w.bytes > 0)
            .max_by_key(|w| w.bytes)
    }
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime writes into the zeroed timespec we own.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use std::{io::Write as _, sync::mpsc};

    use super::*;

    const WRITTEN: u64 = 16 << 20;

    #[test]
    fn the_top_writer_is_the_thread_that_wrote_most_with_its_own_cpu() {
        let pid = std::process::id();
        let path = std::env::temp_dir().join(format!("sluice-cpu-writer-{pid}"));
        let start = Threads::take(&[pid]);
        // A thread that only burns CPU, and one that writes: both still running when sampled
        // (a thread that exited is gone from /proc).
        let (done_tx, done_rx) = mpsc::channel();
        let (exit_tx, exit_rx) = mpsc::channel::<()>();
        let exit_rx = std::sync::Arc::new(std::sync::Mutex::new(exit_rx));
        let spinner = {
            let (done_tx, exit_rx) = (done_tx.clone(), exit_rx.clone());
            std::thread::spawn(move || {
                let began = thread_cpu();
                let mut x = 0u64;
                while thread_cpu() - began < Duration::from_millis(200) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
                }
                done_tx.send(thread_cpu()).unwrap();
                exit_rx.lock().unwrap().recv().ok();
            })
        };
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::File::create(&path).unwrap();
                let chunk = vec![b'x'; 64 * 1024];
                for _ in 0..WRITTEN / chunk.len() as u64 {
                    file.write_all(&chunk).unwrap();
                }
                done_tx.send(thread_cpu()).unwrap();
                exit_rx.lock().unwrap().recv().ok();
            })
        };
        let cpus: Vec<Duration> = (0..2).map(|_| done_rx.recv().unwrap()).collect();
        let end = Threads::take(&[pid]);
        drop(exit_tx);
        spinner.join().unwrap();
        writer.join().unwrap();
        std::fs::remove_file(&path).unwrap();

        let top = end.top_writer(&start).expect("a thread wrote");
        assert!(
            (WRITTEN..WRITTEN + (1 << 20)).contains(&top.bytes),
            "{top:?}"
        );
        // Its CPU is the writer's own (as the thread read it), not the spinner's 200 ms.
        let writer_cpu = cpus
            .iter()
            .map(|c| c.as_secs_f64())
            .find(|&c| (c - top.cpu).abs() < 0.02)
            .unwrap_or_else(|| panic!("{top:?} matches neither thread's CPU {cpus:?}"));
        assert!(writer_cpu < 0.19, "{top:?} is the spinner's");
    }
}
