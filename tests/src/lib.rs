//! Support for Sluice's privileged integration tests: the privilege gate, network-namespace
//! guards, a pin-directory guard, and an independent packet builder used to state expected
//! bytes (it shares no code with the XDP program).

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
