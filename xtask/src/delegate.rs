//! `demo`, `lab` and `bench`: build a binary of the `sluice-lab` package and hand the terminal
//! over to it (as root, through sudo when needed), so Ctrl-C reaches it directly.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd;

const PKG: &str = "sluice-lab";

/// Where cargo puts release binaries: `$CARGO_TARGET_DIR` or the workspace's `target/`.
fn release_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::repo_root().join("target"))
        .join("release")
}

/// Builds `bin` (the equivalent of `cargo run --release -p sluice-lab --bin <bin>`) and replaces
/// this process with it; returns only on error.
pub fn exec_bin(bin: &str, args: &[String]) -> Result<()> {
    let mut build = cmd::cargo();
    // The demo and benches run the daemons and the generator next to themselves.
    build.args(["build", "--release", "-p", PKG, "--bin", bin]);
    build.args(["-p", "sluice-central", "-p", "sluice-peer", "--bins"]);
    cmd::run(&mut build).with_context(|| {
        format!("cannot build `{bin}` (package {PKG}, expected at lab/src/bin/{bin}.rs)")
    })?;
    let exe = release_dir().join(bin);
    let mut run = if cmd::is_root() {
        Command::new(&exe)
    } else if let Some(sudo) = cmd::find_executable("sudo") {
        println!("xtask: {bin} needs root (network namespaces, XDP): running it through sudo");
        let mut c = Command::new(sudo);
        c.arg("--preserve-env").arg(&exe);
        c
    } else {
        bail!(
            "{bin} needs root (network namespaces, XDP) and sudo is not installed; fix: run `cargo xtask` as root"
        );
    };
    run.args(args).current_dir(cmd::repo_root());
    let err = run.exec();
    Err(err).with_context(|| format!("cannot start `{}`", cmd::display(&run)))
}
