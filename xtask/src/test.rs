//! `cargo xtask test`: every test tier in order, stopping at the first failure, with a timing
//! summary. Also the step runner that `cargo xtask fuzz` uses.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::ValueEnum;

use crate::cmd::{self, TestCounts};
use crate::fuzz;

/// Seconds each fuzz target runs in the test suite's smoke run.
const FUZZ_SMOKE_SECONDS: u64 = 15;

/// The package holding the privileged integration tests (`tests/tests/*.rs`; its lab is
/// `sluice-lab`, in `lab/`).
const TESTS_PKG: &str = "sluice-tests";
/// The eBPF crate only builds for the bpf target.
const EBPF_PKG: &str = "sluice-central-ebpf";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tier {
    /// cargo fmt --all --check; cargo xtask imports; clippy on the host crates; clippy on the eBPF crate for bpfel
    Lint,
    /// cargo test --workspace --exclude sluice-tests --exclude sluice-central-ebpf (the lab,
    /// `sluice-lab`, included)
    Unit,
    /// cargo test -p sluice-tests --test xdp_* (BPF_PROG_TEST_RUN fixtures; root)
    Xdp,
    /// cargo test -p sluice-tests --test <every other tests/tests/*.rs> -- --test-threads=1
    /// (network-namespace end-to-end and control API tests; root)
    Netns,
    /// cargo +nightly fuzz run <target> -- -max_total_time=15 for every [[bin]] of */fuzz/Cargo.toml
    Fuzz,
}

const ALL_TIERS: [Tier; 5] = [Tier::Lint, Tier::Unit, Tier::Xdp, Tier::Netns, Tier::Fuzz];

/// One thing to run, or a reason it is skipped.
pub struct Step {
    name: String,
    action: Action,
}

enum Action {
    Run { cmd: Command, counts_tests: bool },
    Skip(String),
}

impl Step {
    pub fn run(name: impl Into<String>, cmd: Command) -> Self {
        Step {
            name: name.into(),
            action: Action::Run {
                cmd,
                counts_tests: false,
            },
        }
    }

    fn tests(name: &str, cmd: Command) -> Self {
        Step {
            name: name.into(),
            action: Action::Run {
                cmd,
                counts_tests: true,
            },
        }
    }

    pub fn skip(name: impl Into<String>, why: impl Into<String>) -> Self {
        Step {
            name: name.into(),
            action: Action::Skip(why.into()),
        }
    }
}

/// Splits the stems of `tests/tests/*.rs` into the xdp tier's (`xdp_*`) and the netns tier's
/// (everything else: `netns_*`, control API, ...).
pub fn split_test_files(stems: &[String]) -> (Vec<&str>, Vec<&str>) {
    stems
        .iter()
        .map(String::as_str)
        .partition(|s| s.starts_with("xdp_"))
}

/// Environment for every command of a CI run: privileged tests fail instead of skipping.
fn ci_env(cmd: &mut Command, ci: bool) {
    if ci {
        cmd.env("CI", "true").env("SLUICE_REQUIRE_PRIVILEGED", "1");
    }
}

fn skip_ebpf(mut c: Command) -> Command {
    c.env("AYA_BUILD_SKIP", "1");
    c
}

fn cargo_in(ci: bool, args: &[&str]) -> Command {
    let mut c = cmd::cargo();
    c.args(args);
    ci_env(&mut c, ci);
    c
}

fn test_files_cmd(ci: bool, files: &[&str], serial: bool) -> Command {
    let mut c = cargo_in(ci, &["test", "-p", TESTS_PKG]);
    for f in files {
        c.args(["--test", f]);
    }
    if serial {
        c.args(["--", "--test-threads=1"]);
    }
    c
}

pub fn fuzz_steps(root: &Path, seconds: u64, ci: bool) -> Result<Vec<Step>> {
    let targets = fuzz::discover(root)?;
    if targets.is_empty() {
        return Ok(vec![Step::skip(
            "fuzz",
            "no */fuzz/Cargo.toml with [[bin]] targets next to fuzz_targets/",
        )]);
    }
    Ok(targets
        .iter()
        .map(|t| {
            let mut c = t.command(seconds);
            ci_env(&mut c, ci);
            Step::run(format!("fuzz {}", t.label()), c)
        })
        .collect())
}

/// This same xtask, checking the crates' import graphs.
fn imports_cmd() -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap_or_else(|_| "cargo-xtask".into()));
    c.arg("imports");
    c
}

fn tier_steps(tier: Tier, root: &Path, ci: bool) -> Result<Vec<Step>> {
    let test_files = cmd::rust_file_stems(&root.join("tests").join("tests"))?;
    let (xdp, netns) = split_test_files(&test_files);
    Ok(match tier {
        Tier::Lint => vec![
            Step::run("fmt", cargo_in(ci, &["fmt", "--all", "--check"])),
            Step::run("imports", imports_cmd()),
            Step::run(
                "clippy host",
                // Lints never run the XDP object: skip building it (aya-build's switch) instead
                // of compiling the eBPF crate once more for clippy's build directory.
                skip_ebpf(cargo_in(
                    ci,
                    &[
                        "clippy",
                        "--workspace",
                        "--exclude",
                        EBPF_PKG,
                        "--all-targets",
                        "--",
                        "-D",
                        "warnings",
                    ],
                )),
            ),
            Step::run(
                "clippy eBPF",
                cargo_in(
                    ci,
                    &[
                        "+nightly",
                        "clippy",
                        "-p",
                        EBPF_PKG,
                        "--target",
                        "bpfel-unknown-none",
                        "-Z",
                        "build-std=core",
                        "--",
                        "-D",
                        "warnings",
                    ],
                ),
            ),
        ],
        Tier::Unit => vec![Step::tests(
            "unit",
            cargo_in(
                ci,
                &[
                    "test",
                    "--workspace",
                    "--exclude",
                    TESTS_PKG,
                    "--exclude",
                    EBPF_PKG,
                ],
            ),
        )],
        Tier::Xdp if xdp.is_empty() => vec![Step::skip("xdp", "no tests/tests/xdp_*.rs")],
        Tier::Xdp => vec![Step::tests("xdp", test_files_cmd(ci, &xdp, false))],
        Tier::Netns if netns.is_empty() => {
            vec![Step::skip("netns", "no tests/tests/*.rs besides xdp_*")]
        }
        Tier::Netns => vec![
            // The end-to-end tests run the real daemons (sluice-central, sluice-peer,
            // sluice-flowgen) from the target directory.
            Step::run(
                "build daemons",
                cargo_in(
                    ci,
                    &[
                        "build",
                        "--bins",
                        "-p",
                        "sluice-central",
                        "-p",
                        "sluice-peer",
                    ],
                ),
            ),
            Step::tests("netns", test_files_cmd(ci, &netns, true)),
        ],
        Tier::Fuzz => fuzz_steps(root, FUZZ_SMOKE_SECONDS, ci)?,
    })
}

pub fn run(tier: Option<Tier>, ci: bool) -> Result<()> {
    let root = cmd::repo_root();
    let tiers = tier.map_or(ALL_TIERS.to_vec(), |t| vec![t]);
    if ci {
        println!(
            "xtask test: CI mode (SLUICE_REQUIRE_PRIVILEGED=1: privileged tests fail instead of skipping)"
        );
    }
    let mut steps = Vec::new();
    for t in tiers {
        steps.extend(tier_steps(t, &root, ci)?);
    }
    run_steps("test", steps)
}

enum Outcome {
    Passed(Duration),
    Failed(Duration),
    Skipped(String),
    NotRun,
}

/// Runs `steps` in order, stopping at the first failure, then prints a timing summary and, when
/// any step ran tests, one `tests: N passed, N failed, N skipped` line.
pub fn run_steps(what: &str, steps: Vec<Step>) -> Result<()> {
    let started = Instant::now();
    let mut results: Vec<(String, Outcome)> = Vec::new();
    let mut failure = None;
    let mut counts = TestCounts::default();
    let mut counted = false;
    for Step { name, action } in steps {
        if failure.is_some() {
            results.push((name, Outcome::NotRun));
            continue;
        }
        let (mut cmd, counts_tests) = match action {
            Action::Skip(why) => {
                println!("xtask {what}: skipping {name}: {why}");
                results.push((name, Outcome::Skipped(why)));
                continue;
            }
            Action::Run { cmd, counts_tests } => (cmd, counts_tests),
        };
        println!("\nxtask {what}: ==> {name}: {}", cmd::display(&cmd));
        let t0 = Instant::now();
        let result = if counts_tests {
            counted = true;
            let (c, r) = cmd::run_counting_tests(&mut cmd);
            counts.add(c);
            r
        } else {
            cmd::run(&mut cmd)
        };
        let took = t0.elapsed();
        match result {
            Ok(()) => results.push((name, Outcome::Passed(took))),
            Err(e) => {
                failure = Some(format!("{name}: {e:#}"));
                results.push((name, Outcome::Failed(took)));
            }
        }
    }

    let width = results.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    println!("\nxtask {what}: summary");
    for (name, outcome) in &results {
        let line = match outcome {
            Outcome::Passed(d) => format!("ok       {:>7.1}s", d.as_secs_f64()),
            Outcome::Failed(d) => format!("FAILED   {:>7.1}s", d.as_secs_f64()),
            Outcome::Skipped(why) => format!("skipped  ({why})"),
            Outcome::NotRun => "not run".to_owned(),
        };
        println!("  {name:<width$}  {line}");
    }
    let total = started.elapsed().as_secs_f64();
    match &failure {
        Some(f) => println!("xtask {what}: FAILED after {total:.1}s at {f}"),
        None => {
            let skipped = results
                .iter()
                .filter(|(_, o)| matches!(o, Outcome::Skipped(_)))
                .count();
            let passed = results.len() - skipped;
            println!("xtask {what}: ok in {total:.1}s (steps: {passed} passed, {skipped} skipped)");
        }
    }
    if counted {
        println!(
            "tests: {} passed, {} failed, {} skipped",
            counts.passed, counts.failed, counts.ignored
        );
    }
    match failure {
        Some(f) => bail!("{what} failed at {f}"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_xdp_from_other_integration_tests() {
        let stems: Vec<String> = ["netns_e2e", "xdp_fixtures", "control_api", "xdp_btf"]
            .map(String::from)
            .to_vec();
        let (xdp, other) = split_test_files(&stems);
        assert_eq!(xdp, ["xdp_fixtures", "xdp_btf"]);
        assert_eq!(other, ["netns_e2e", "control_api"]);
    }

    #[test]
    fn test_file_commands_follow_the_tier_convention() {
        let xdp = test_files_cmd(false, &["xdp_a", "xdp_b"], false);
        assert_eq!(
            cmd::display(&xdp),
            "cargo test -p sluice-tests --test xdp_a --test xdp_b"
        );
        let netns = test_files_cmd(true, &["netns_e2e"], true);
        assert_eq!(
            cmd::display(&netns),
            "cargo test -p sluice-tests --test netns_e2e -- --test-threads=1"
        );
        let env: Vec<_> = netns.get_envs().collect();
        assert!(env.contains(&(
            std::ffi::OsStr::new("SLUICE_REQUIRE_PRIVILEGED"),
            Some(std::ffi::OsStr::new("1"))
        )));
    }

    #[test]
    fn failing_step_stops_the_run() {
        let steps = vec![
            Step::run("first", Command::new("true")),
            Step::run("second", Command::new("false")),
            Step::run("third", Command::new("this-command-must-not-run")),
        ];
        let err = run_steps("selftest", steps).unwrap_err();
        assert!(format!("{err:#}").contains("second"), "{err:#}");
        let ok = vec![
            Step::run("only", Command::new("true")),
            Step::skip("none", "nothing"),
        ];
        assert!(run_steps("selftest", ok).is_ok());
    }
}
