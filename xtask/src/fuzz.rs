//! Fuzz target discovery: every `<crate>/fuzz/fuzz_targets/<target>.rs` in the workspace root.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd;

#[derive(Debug, PartialEq, Eq)]
pub struct FuzzTarget {
    /// The crate directory that contains `fuzz/` (where `cargo fuzz` must run).
    pub crate_dir: PathBuf,
    pub name: String,
}

impl FuzzTarget {
    /// `cargo +nightly fuzz run <target> -- -max_total_time=<seconds>` from the crate directory.
    pub fn command(&self, seconds: u64) -> Command {
        let mut c = Command::new("cargo");
        c.current_dir(&self.crate_dir)
            .args(["+nightly", "fuzz", "run", &self.name, "--"])
            .arg(format!("-max_total_time={seconds}"));
        c
    }

    /// `crate/target`, for step names.
    pub fn label(&self) -> String {
        let krate = self
            .crate_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{krate}/{}", self.name)
    }
}

/// Finds `*/fuzz/fuzz_targets/*.rs` under `root`, sorted by crate then target.
pub fn discover(root: &Path) -> Result<Vec<FuzzTarget>> {
    let mut crate_dirs = Vec::new();
    for entry in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", root.display()))?
            .path();
        let hidden_or_build = path
            .file_name()
            .is_none_or(|n| n.to_string_lossy().starts_with('.') || n == "target");
        if path.is_dir() && !hidden_or_build {
            crate_dirs.push(path);
        }
    }
    crate_dirs.sort();
    let mut targets = Vec::new();
    for crate_dir in crate_dirs {
        for name in cmd::rust_file_stems(&crate_dir.join("fuzz").join("fuzz_targets"))? {
            targets.push(FuzzTarget {
                crate_dir: crate_dir.clone(),
                name,
            });
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }

    #[test]
    fn discovers_targets_per_crate() {
        let root = scratch_dir("fuzz-discovery");
        touch(&root.join("peer/fuzz/fuzz_targets/netflow_v9.rs"));
        touch(&root.join("peer/fuzz/fuzz_targets/ipfix.rs"));
        touch(&root.join("peer/fuzz/fuzz_targets/README.md"));
        touch(&root.join("central-user/fuzz/fuzz_targets/control_proto.rs"));
        touch(&root.join("common/src/lib.rs"));
        touch(&root.join("target/fuzz/fuzz_targets/stale.rs"));
        touch(&root.join(".hidden/fuzz/fuzz_targets/x.rs"));
        touch(&root.join("peer/fuzz/fuzz_targets/nested/deep.rs"));

        let found = discover(&root).unwrap();
        let labels: Vec<String> = found.iter().map(FuzzTarget::label).collect();
        assert_eq!(
            labels,
            [
                "central-user/control_proto",
                "peer/ipfix",
                "peer/netflow_v9"
            ]
        );
        assert_eq!(found[1].crate_dir, root.join("peer"));

        let c = found[1].command(15);
        assert_eq!(c.get_current_dir(), Some(root.join("peer").as_path()));
        assert_eq!(
            cmd::display(&c),
            "cargo +nightly fuzz run ipfix -- -max_total_time=15"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_fuzz_dirs_means_no_targets() {
        let root = scratch_dir("fuzz-none");
        touch(&root.join("peer/src/lib.rs"));
        assert!(discover(&root).unwrap().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
