//! Small helpers for running external commands and finding things on the machine.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The workspace root: `xtask/` sits directly under it.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `cargo` through the rustup proxy (so `+nightly` works), run from the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(repo_root());
    cmd
}

/// A shell-like rendering of a command for messages.
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

fn check_status(cmd: &Command, status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("`{}` failed ({status})", display(cmd))
    }
}

/// Runs a command with inherited stdio; an error if it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    check_status(cmd, status)
}

/// Runs a command quietly and returns its stdout; on failure the error carries its output.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            last_lines(&format!("{stdout}{stderr}"), 5)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` non-empty lines of some output, joined with " | " so an error stays on one line.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Test counts summed from libtest's `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl TestCounts {
    pub fn add(&mut self, other: TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

/// Parses `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
pub fn parse_test_result(line: &str) -> Option<TestCounts> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_, counts) = rest.split_once(". ")?;
    let mut result = TestCounts::default();
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => result.passed = n,
            "failed" => result.failed = n,
            "ignored" => result.ignored = n,
            _ => {}
        }
    }
    Some(result)
}

/// Runs a `cargo test`-like command, echoing its stdout line by line and summing the test counts
/// it reports. Returns the counts seen even when the command fails.
///
/// A process that a test leaked may keep the pipe open after cargo exits, so the output is read
/// on its own thread and abandoned shortly after the command itself has finished.
pub fn run_counting_tests(cmd: &mut Command) -> (TestCounts, Result<()>) {
    run_counting_tests_within(cmd, Duration::from_secs(5))
}

fn run_counting_tests_within(cmd: &mut Command, grace: Duration) -> (TestCounts, Result<()>) {
    let counts = Arc::new(Mutex::new(TestCounts::default()));
    let snapshot = |c: &Mutex<TestCounts>| c.lock().map(|g| *g).unwrap_or_default();
    let mut child = match cmd.stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => {
            return (
                TestCounts::default(),
                Err(e).with_context(|| format!("cannot start `{}`", display(cmd))),
            );
        }
    };
    let (done_tx, done_rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        let counts = Arc::clone(&counts);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                println!("{line}");
                if let (Some(c), Ok(mut total)) = (parse_test_result(&line), counts.lock()) {
                    total.add(c);
                }
            }
            let _ = done_tx.send(());
        });
    }
    let result = child
        .wait()
        .with_context(|| format!("waiting for `{}`", display(cmd)))
        .and_then(|status| check_status(cmd, status));
    if done_rx.recv_timeout(grace) == Err(RecvTimeoutError::Timeout) {
        println!(
            "xtask: warning: a process left behind by `{}` still holds its output open",
            display(cmd)
        );
    }
    (snapshot(&counts), result)
}

/// Effective uid from the text of `/proc/self/status`.
pub fn parse_euid(proc_status: &str) -> Option<u32> {
    proc_status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_euid(&s))
        == Some(0)
}

/// `$CARGO_HOME/bin`, defaulting to `~/.cargo/bin`.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    match std::env::var_os("CARGO_HOME") {
        Some(home) => Some(PathBuf::from(home).join("bin")),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo").join("bin")),
    }
}

/// An executable called `name` on `PATH` or in cargo's bin dir.
pub fn find_executable(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(cargo_bin_dir())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Prepends `dir` to the current `PATH`.
pub fn path_with_first(dir: &Path) -> Result<std::ffi::OsString> {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&current));
    std::env::join_paths(dirs).context("building PATH")
}

/// The file stems of the `*.rs` files directly in `dir`, sorted; empty if `dir` does not exist.
pub fn rust_file_stems(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut stems = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.is_file()
            && path.extension() == Some(OsStr::new("rs"))
            && let Some(stem) = path.file_stem().and_then(OsStr::to_str)
        {
            stems.push(stem.to_owned());
        }
    }
    stems.sort();
    Ok(stems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_summary() {
        let ok = "test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(
            parse_test_result(ok),
            Some(TestCounts {
                passed: 12,
                failed: 0,
                ignored: 3
            })
        );
        let failed = "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1.00s";
        assert_eq!(
            parse_test_result(failed),
            Some(TestCounts {
                passed: 1,
                failed: 2,
                ignored: 0
            })
        );
        assert_eq!(parse_test_result("test foo ... ok"), None);
    }

    #[test]
    fn counts_tests_from_a_command() {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "echo 'test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured'; \
             echo 'test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured'; exit 101",
        ]);
        let (counts, result) = run_counting_tests(&mut c);
        assert_eq!(
            counts,
            TestCounts {
                passed: 5,
                failed: 1,
                ignored: 1
            }
        );
        assert!(result.is_err());
    }

    #[test]
    fn leaked_process_holding_stdout_does_not_hang() {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "sleep 3 & echo 'test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured'",
        ]);
        let t0 = std::time::Instant::now();
        let (counts, result) = run_counting_tests_within(&mut c, Duration::from_millis(200));
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(result.is_ok());
        assert_eq!(counts.passed, 1);
    }

    #[test]
    fn parses_effective_uid() {
        let status = "Name:\tcat\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_euid(status), Some(0));
        assert_eq!(parse_euid("Name:\tcat\n"), None);
    }

    #[test]
    fn keeps_last_lines_on_one_line() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(last_lines("", 3), "");
    }
}
