//! Fuzz target discovery: every crate directory of the workspace root with a
//! `fuzz/fuzz_targets/` folder, and in it the `[[bin]]` targets that `fuzz/Cargo.toml` declares
//! (as `cargo fuzz list` does; `fuzz_targets/` may also hold shared modules that are not targets).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

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

/// The `name`s of the `[[bin]]` sections of a cargo-fuzz manifest, in order.
pub fn parse_fuzz_bins(manifest: &str) -> Vec<String> {
    let mut in_bin = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            continue;
        }
        if !in_bin {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() == "name" {
            names.push(value.trim().trim_matches('"').to_owned());
        }
    }
    names
}

/// Finds the fuzz targets of every `<crate>/fuzz/` under `root`, sorted by crate then target.
pub fn discover(root: &Path) -> Result<Vec<FuzzTarget>> {
    let mut crate_dirs = Vec::new();
    for entry in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", root.display()))?
            .path();
        let hidden_or_build = path
            .file_name()
            .is_none_or(|n| n.to_string_lossy().starts_with('.') || n == "target");
        if !hidden_or_build && path.join("fuzz").join("fuzz_targets").is_dir() {
            crate_dirs.push(path);
        }
    }
    crate_dirs.sort();
    let mut targets = Vec::new();
    for crate_dir in crate_dirs {
        let manifest_path = crate_dir.join("fuzz").join("Cargo.toml");
        let manifest = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        let mut names = parse_fuzz_bins(&manifest);
        names.sort();
        targets.extend(names.into_iter().map(|name| FuzzTarget {
            crate_dir: crate_dir.clone(),
            name,
        }));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn touch(path: &Path) {
        write(path, "");
    }

    fn manifest(bins: &[&str]) -> String {
        let mut m = String::from(
            "[package]\nname = \"x-fuzz\"\n\n[dependencies]\nlibfuzzer-sys = \"0.4\"\n\n\
             [workspace]\nmembers = [\".\"]\n",
        );
        for b in bins {
            m.push_str(&format!(
                "\n[[bin]]\nname = \"{b}\"\npath = \"fuzz_targets/{b}.rs\"\ntest = false\n"
            ));
        }
        m
    }

    #[test]
    fn reads_bin_names_from_the_fuzz_manifest() {
        assert_eq!(
            parse_fuzz_bins(&manifest(&["v5", "ipfix"])),
            ["v5", "ipfix"]
        );
        assert!(parse_fuzz_bins(&manifest(&[])).is_empty());
    }

    #[test]
    fn discovers_targets_per_crate() {
        let root = scratch_dir("fuzz-discovery");
        write(
            &root.join("peer/fuzz/Cargo.toml"),
            &manifest(&["v9", "ipfix"]),
        );
        touch(&root.join("peer/fuzz/fuzz_targets/v9.rs"));
        touch(&root.join("peer/fuzz/fuzz_targets/ipfix.rs"));
        touch(&root.join("peer/fuzz/fuzz_targets/common.rs"));
        write(
            &root.join("common/fuzz/Cargo.toml"),
            &manifest(&["control_proto"]),
        );
        touch(&root.join("common/fuzz/fuzz_targets/control_proto.rs"));
        touch(&root.join("central-user/src/lib.rs"));
        write(&root.join("target/fuzz/Cargo.toml"), &manifest(&["stale"]));
        touch(&root.join("target/fuzz/fuzz_targets/stale.rs"));

        let found = discover(&root).unwrap();
        let labels: Vec<String> = found.iter().map(FuzzTarget::label).collect();
        assert_eq!(labels, ["common/control_proto", "peer/ipfix", "peer/v9"]);
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
