//! The kernel's own accounting of BPF program run time (`kernel.bpf_stats_enabled`): the one
//! direct measure of what the XDP program costs on the lab, where its work is otherwise charged
//! to whichever task the softirq interrupted.

use std::time::Duration;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns run-time accounting on; restores the previous setting on drop.
pub struct Enabled(String);

impl Enabled {
    /// Enables the statistics (root).
    pub fn new() -> std::io::Result<Self> {
        let previous = std::fs::read_to_string(SYSCTL)?;
        std::fs::write(SYSCTL, "1")?;
        Ok(Self(previous.trim().to_owned()))
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.0);
    }
}

/// Total run time and run count of every loaded program called `name`.
pub fn program_totals(name: &str) -> (Duration, u64) {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| p.name_as_str() == Some(name))
        .fold((Duration::ZERO, 0), |(t, n), p| {
            (t + p.run_time(), n + p.run_count())
        })
}
