//! Sluice's lab, for the privileged integration tests (`tests/`, package `sluice-tests`) and
//! the tools `cargo xtask demo|lab|bench` run (bins `sluice-demo`, `sluice-lab`,
//! `sluice-bench`): the privilege gate, network-namespace guards, a pin-directory guard, an
//! independent packet builder used to state expected bytes (it shares no code with the XDP
//! program), BPF_PROG_TEST_RUN fixtures, the namespace labs and their traffic, and the
//! benchmarks.

pub mod bench;
pub mod fixture;
pub mod lab;
pub mod netns;
pub mod packet;

use std::path::{Path, PathBuf};

/// True when the test may run. Without root it prints why and returns false, unless
/// `SLUICE_REQUIRE_PRIVILEGED=1` (set by `cargo xtask test` in CI), where it panics: a skipped
/// privileged test must fail the CI run.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let required = std::env::var("SLUICE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !required,
        "{test}: needs root (CAP_BPF, CAP_NET_ADMIN) and SLUICE_REQUIRE_PRIVILEGED=1 forbids skipping"
    );
    eprintln!("SKIP {test}: needs root");
    false
}

/// A unique pin directory under bpffs, removed (links and map pins) on drop.
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// `/sys/fs/bpf/sluice-test-<pid>-<tag>`.
    pub fn new(tag: &str) -> Self {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/sluice-test-{}-{tag}",
            std::process::id()
        ));
        let _ = sluice_central::loader::detach(&dir, None, true);
        Self(dir)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = sluice_central::loader::detach(&self.0, None, true);
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Path of a workspace binary next to the running executable (`cargo xtask test` builds them
/// first; a plain `cargo test` needs `cargo build --bins` before).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Tests live in target/<profile>/deps, binaries (like the demo) in target/<profile>.
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{name} not built next to {}: run `cargo build --bins` (cargo xtask test does)",
                exe.display()
            )
        })
}

/// `SO_RCVBUFFORCE` (root): bursts in tests must not be lost to a default-sized buffer.
pub fn force_rcvbuf(sock: &impl std::os::fd::AsRawFd, bytes: i32) {
    // SAFETY: valid fd and a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}
