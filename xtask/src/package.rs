//! `cargo xtask package`: Debian packages of `sluice-central` (with `sluicectl`) and
//! `sluice-peer`, built with cargo-deb from the `[package.metadata.deb]` sections of
//! `central-user/Cargo.toml` and `peer/Cargo.toml` and the files under `dist/`.
//!
//! The binaries are built once for both packages (`cargo build --release -p sluice-central
//! -p sluice-peer`), then each package is assembled with `cargo deb --no-build`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd;

/// The cargo packages that become Debian packages of the same name.
pub const PACKAGES: [&str; 2] = ["sluice-central", "sluice-peer"];

/// `$CARGO_TARGET_DIR` or the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::repo_root().join("target"))
}

/// `cargo build` of both packages' binaries with `profile`.
pub fn build_command(profile: &str) -> Command {
    let mut c = cmd::cargo();
    c.args(["build", "--profile", profile, "--bins"]);
    for p in PACKAGES {
        c.args(["-p", p]);
    }
    c
}

/// `cargo deb` of one package from already built binaries of `profile`, into `out`.
pub fn deb_command(package: &str, profile: &str, out: &Path) -> Command {
    let mut c = cmd::cargo();
    c.args([
        "deb",
        "-p",
        package,
        "--no-build",
        "--profile",
        profile,
        "--output",
    ])
    .arg(out);
    c
}

/// The `.deb` path cargo-deb printed (its last line of output that ends in `.deb`).
pub fn deb_path_from_output(stdout: &str) -> Option<PathBuf> {
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
}

/// Builds (unless `no_build`) and packages; prints each package's path and size.
pub fn run(profile: &str, no_build: bool, out: Option<PathBuf>) -> Result<()> {
    if cmd::find_executable("cargo-deb").is_none() {
        bail!("cargo-deb is missing; fix: cargo xtask setup (or cargo install cargo-deb --locked)");
    }
    if !no_build {
        cmd::run(&mut build_command(profile)).context("building the binaries to package")?;
    }
    let out = out.unwrap_or_else(|| target_dir().join("debian"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut built = Vec::new();
    for p in PACKAGES {
        let text = cmd::output(&mut deb_command(p, profile, &out))
            .with_context(|| format!("packaging {p}"))?;
        let deb = deb_path_from_output(&text)
            .with_context(|| format!("cargo deb -p {p} printed no .deb path: {text}"))?;
        let size = std::fs::metadata(&deb)
            .with_context(|| format!("{} missing after cargo deb", deb.display()))?
            .len();
        built.push((deb, size));
    }
    println!("xtask package: built (install with `apt install ./FILE`; units are not enabled):");
    for (deb, size) in built {
        println!(
            "  {}  ({:.1} MiB)",
            deb.display(),
            size as f64 / f64::from(1 << 20)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_build_once_and_package_without_building() {
        assert_eq!(
            cmd::display(&build_command("release")),
            "cargo build --profile release --bins -p sluice-central -p sluice-peer"
        );
        assert_eq!(
            cmd::display(&deb_command("sluice-peer", "release", Path::new("/o"))),
            "cargo deb -p sluice-peer --no-build --profile release --output /o"
        );
    }

    #[test]
    fn finds_the_deb_cargo_deb_printed() {
        let out = "warning: something\n/w/target/debian/sluice-peer_0.1.0-1_amd64.deb\n";
        assert_eq!(
            deb_path_from_output(out),
            Some(PathBuf::from(
                "/w/target/debian/sluice-peer_0.1.0-1_amd64.deb"
            ))
        );
        assert_eq!(deb_path_from_output("nothing here\n"), None);
    }
}
