//! The collectors under test on loopback: `sluice-peer`, nfdump's `nfcapd` and pmacct's
//! `nfacctd`, each a child process stopped by its pid (and its children's); their CPU from
//! `/proc`; what they wrote.

use std::{
    io::{Read as _, Write as _},
    net::{TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    bench::cpu::{Sample, Threads, Writer, usage},
    lab::LabProcess,
};

/// A daemon started by the benchmark. Dropping it kills it and every process it started.
pub struct Daemon {
    process: LabProcess,
    name: &'static str,
    stop_signal: libc::c_int,
}

impl Daemon {
    /// Spawns `cmd` (stderr kept for errors); with `ready`, waits for a log line containing it.
    fn spawn(mut cmd: Command, name: &'static str, ready: Option<&str>) -> Self {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        Self {
            process: LabProcess::spawn_logged(cmd, name, ready),
            name,
            stop_signal: if name == "nfacctd" {
                libc::SIGINT
            } else {
                libc::SIGTERM
            },
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// An error unless it is still running.
    pub fn check(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.process.child.try_wait() {
            bail!("{} exited ({status}):\n{}", self.name, self.log());
        }
        Ok(())
    }

    /// Its shutdown signal (pmacct ignores SIGTERM: SIGINT), then up to 10 s for it to exit
    /// (collectors flush on the way out).
    pub fn stop(mut self) -> Result<()> {
        self.check()?;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.pid() as i32, self.stop_signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.process.child.try_wait()? {
                None => std::thread::sleep(Duration::from_millis(50)),
                Some(status) if status.success() || status.code().is_none() => return Ok(()),
                Some(status) => bail!("{} exited with {status}:\n{}", self.name, self.log()),
            }
        }
        bail!(
            "{} still running 10 s after its stop signal (killed)",
            self.name
        )
    }

    /// What it logged.
    pub fn log(&self) -> String {
        self.process.log_text()
    }

    /// CPU seconds of its process tree and of everything else (background), while `work` runs
    /// and until the tree has been idle (at most one clock tick per 100 ms) for 300 ms; and
    /// those of the tree's thread that wrote the most meanwhile.
    pub fn cpu_during<T>(&mut self, work: impl FnOnce() -> Result<T>) -> Result<(T, Cpu)> {
        let began = Instant::now();
        let start = Sample::take();
        let threads = Threads::take(&start.tree(self.pid()));
        let out = work()?;
        let mut last = Sample::take();
        let mut idle_since = Instant::now();
        while idle_since.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(100));
            let now = Sample::take();
            if usage(&last, &now, self.pid()).forwarder_process > 0.015 {
                idle_since = Instant::now();
            }
            last = now;
            if began.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        self.check()?;
        let writer = Threads::take(&last.tree(self.pid())).top_writer(&threads);
        let u = usage(&start, &last, self.pid());
        Ok((
            out,
            Cpu {
                process: u.forwarder_process,
                background: u.background,
                wall: u.wall,
                writer,
            },
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.process.child.try_wait() {
            let pid = self.pid();
            for p in Sample::take().tree(pid).into_iter().filter(|&p| p != pid) {
                // SAFETY: a process our child started (pmacct's plugins), by pid.
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
            self.process.kill();
        }
    }
}

/// CPU seconds over one measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// The daemon's processes.
    pub process: f64,
    /// Everything outside the benchmark and the daemon.
    pub background: f64,
    pub wall: f64,
    /// The daemon's thread that wrote the most (its output file's writer), if any wrote.
    pub writer: Option<Writer>,
}

/// A loopback port free for UDP at the time (also used for the peer's TCP metrics listener: a
/// clash there fails its start loudly).
pub fn free_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something listens on UDP `127.0.0.1:port` (from `/proc/net/udp`).
fn wait_udp(port: u16, daemon: &mut Daemon) -> Result<()> {
    let needle = format!("0100007F:{port:04X} ");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| t.contains(&needle)) {
            return Ok(());
        }
        daemon.check()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{} is not listening on 127.0.0.1:{port}", daemon.name)
}

/// `sluice-peer run` on `127.0.0.1:port` with metrics on `127.0.0.1:metrics`; `output` is a
/// `--output` value.
pub fn sluice_peer(port: u16, metrics: u16, output: &str) -> Result<Daemon> {
    sluice_peer_with(port, metrics, &["--output", output])
}

/// [`sluice_peer`] with other arguments (`--config FILE`) instead of `--output`.
pub fn sluice_peer_with(port: u16, metrics: u16, args: &[&str]) -> Result<Daemon> {
    let mut cmd = Command::new(crate::bin("sluice-peer"));
    cmd.args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        .env("RUST_LOG", "info");
    let mut d = Daemon::spawn(cmd, "sluice-peer", Some("ready"));
    wait_udp(port, &mut d)?;
    Ok(d)
}

/// `nfcapd` storing into `dir` (uncompressed, the default) with the largest socket buffer
/// `net.core.rmem_max` lets it have.
pub fn nfcapd(port: u16, dir: &Path) -> Result<Daemon> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Command::new("nfcapd");
    cmd.args(["-b", "127.0.0.1", "-p", &port.to_string(), "-B", "33554432"])
        .arg("-w")
        .arg(dir);
    let mut d = Daemon::spawn(cmd, "nfcapd", None);
    wait_udp(port, &mut d)?;
    Ok(d)
}

/// Flows stored in the nfcapd files under `dir` (`nfdump -I`, the files' own statistics).
pub fn nfdump_flows(dir: &Path) -> Result<u64> {
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(dir)
        .arg("-I")
        .output()
        .context("nfdump")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Flows:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| {
            format!(
                "no `Flows:` in nfdump -I output: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// `nfacctd` with the print plugin appending one JSON line per flow to `file` every second.
/// Aggregating on the exporter, addresses, ports, protocol, ToS and interfaces keeps the
/// corpus's flows apart (its synthetic flows are unique in those), so lines = flows.
pub fn nfacctd(port: u16, dir: &Path, file: &Path) -> Result<Daemon> {
    let conf = dir.join("nfacctd.conf");
    std::fs::write(
        &conf,
        format!(
            "daemonize: false\n\
             nfacctd_ip: 127.0.0.1\n\
             nfacctd_port: {port}\n\
             nfacctd_pipe_size: 33554432\n\
             plugin_buffer_size: 10240\n\
             plugin_pipe_size: 8388608\n\
             plugins: print[json]\n\
             aggregate[json]: peer_src_ip, src_host, dst_host, src_port, dst_port, proto, tos, in_iface, out_iface\n\
             print_output[json]: json\n\
             print_output_file[json]: {}\n\
             print_output_file_append[json]: true\n\
             print_refresh_time[json]: 1\n\
             print_cache_entries[json]: 65537\n",
            file.display()
        ),
    )?;
    let mut cmd = Command::new("nfacctd");
    cmd.arg("-f").arg(&conf);
    // Logged by the print plugin once it is ready for data.
    let mut d = Daemon::spawn(cmd, "nfacctd", Some("setting object handlers"));
    wait_udp(port, &mut d)?;
    Ok(d)
}

/// Lines in `path` (0 when it does not exist).
pub fn count_lines(path: &Path) -> Result<u64> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Ok(0);
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// Waits until `path`'s line count has not changed for `quiet` (at most 20 s); the count.
pub fn settled_lines(path: &Path, quiet: Duration) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = count_lines(path)?;
    let mut since = Instant::now();
    while since.elapsed() < quiet && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = count_lines(path)?;
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    Ok(last)
}

/// Empties `path` (collectors append to it).
pub fn truncate(path: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(0))
        .with_context(|| format!("truncate {}", path.display()))
}

/// `GET /metrics` from `127.0.0.1:port`.
pub fn scrape(port: u16) -> Result<Metrics> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect to /metrics")?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(Metrics(text))
}

/// A Prometheus text exposition.
pub struct Metrics(String);

impl Metrics {
    /// Sum of the samples of `name` (all label sets).
    pub fn value(&self, name: &str) -> f64 {
        self.samples(name).map(|(_, v)| v).sum()
    }

    /// (labels, value) of every sample of `name`.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.0.lines().filter_map(move |l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((labels, value.trim().parse().ok()?))
        })
    }
}

/// A temporary directory, removed on drop: in `/dev/shm` when there is one, so the JSON files
/// go to memory and the benchmark measures the collectors, not the (shared) disk.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Result<Self> {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("sluice-bench-decode-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
