//! `cargo xtask`: developer and CI orchestration for Sluice. No product logic lives here.

mod cmd;
mod delegate;
mod fuzz;
mod imports;
mod package;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Sluice orchestration: setup, tests, demo, lab, benchmarks, soak runs",
    long_about = "Sluice orchestration. Every subcommand first runs the setup check, which installs \
                  whatever is missing (Debian packages, rust-src, bpf-linker, cargo-fuzz, cargo-deb, scapy, \
                  bpffs) and takes well under a second when nothing is."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing for building and testing (idempotent; run as root).
    Setup,
    /// Run the test tiers in order (lint, unit, xdp, netns, fuzz), stopping at the first failure.
    #[command(
        long_about = "Run the test tiers in order, stopping at the first failure, and print \
        a timing summary.\n\n\
        Tiers and the commands they run (integration test files are discovered by globbing \
        tests/tests/*.rs):\n  \
        lint:  cargo fmt --all --check\n         \
        cargo xtask imports   (each crate's file imports form a tree)\n         \
        cargo clippy --workspace --exclude sluice-central-ebpf --all-targets -- -D warnings\n         \
        cargo +nightly clippy -p sluice-central-ebpf --target bpfel-unknown-none -Z build-std=core -- -D warnings\n  \
        unit:  cargo test --workspace --exclude sluice-tests --exclude sluice-central-ebpf\n         \
        (sluice-lab's lib and bins included; sluice-tests holds only the tiers below)\n  \
        xdp:   cargo test -p sluice-tests --test xdp_*   (BPF_PROG_TEST_RUN fixtures, root)\n  \
        netns: cargo test -p sluice-tests --test <all other tests/tests/*.rs> -- --test-threads=1\n         \
        (netns_* end-to-end, control API; root)\n  \
        fuzz:  cargo +nightly fuzz run <target> -- -max_total_time=15 for each [[bin]] of \
        <crate>/fuzz/Cargo.toml, run from <crate>\n\n\
        With CI=true (or `cargo xtask ci`), SLUICE_REQUIRE_PRIVILEGED=1 is set so privileged \
        tests fail instead of skipping."
    )]
    Test {
        /// Run only this tier.
        #[arg(long, value_enum)]
        tier: Option<test::Tier>,
    },
    /// What CI runs (`.ci/run`): `CI=true cargo xtask test`.
    Ci,
    /// Check that each crate's files import one another as a tree (no circles); part of the
    /// lint tier.
    Imports,
    /// Run every fuzz target for a while.
    Fuzz {
        /// Minutes per target.
        #[arg(long, default_value_t = 5)]
        minutes: u64,
    },
    /// Benchmarks (figures only, never asserted): runs the sluice-bench binary as root.
    Bench {
        #[arg(value_enum)]
        what: Bench,
        /// Extra arguments for sluice-bench.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, start a namespace lab, send traffic, show who got what, tear down (root).
    Demo {
        /// Extra arguments for sluice-demo.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Create or remove the network-namespace lab (root).
    Lab {
        #[arg(value_enum)]
        verb: LabVerb,
        /// `up` a hot-standby pair of Centrals instead of one, to watch a takeover.
        #[arg(long)]
        ha: bool,
    },
    /// Long loaded runs that report what went wrong by itself (root; not part of `test`).
    Soak {
        #[arg(value_enum)]
        what: Soak,
        /// How long.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Build the Debian packages sluice-central (with sluicectl) and sluice-peer (cargo-deb).
    Package {
        /// Cargo profile of the packaged binaries.
        #[arg(long, default_value = "release")]
        profile: String,
        /// Package the binaries already built with that profile.
        #[arg(long)]
        no_build: bool,
        /// Directory for the .deb files (default: target/debian).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Bench {
    /// BPF_PROG_TEST_RUN ns/packet and the namespace lab's loss-free rate and CPU per packet.
    Xdp,
    /// Peer decode pipeline throughput.
    Decode,
    /// Failover timing.
    Failover,
    /// Hot-standby takeover (host death of the active Central) next to keepalived.
    Takeover,
}

#[derive(Clone, Copy, ValueEnum)]
enum Soak {
    /// The hot-standby pair under load with a 300 ms takeover timeout: spurious takeovers and
    /// datagrams lost.
    Ha,
}

#[derive(Clone, Copy, ValueEnum)]
enum LabVerb {
    Up,
    Down,
}

fn enum_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

fn ci_from_env() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn run(cli: Cli) -> Result<()> {
    setup::ensure()?;
    match cli.cmd {
        Cmd::Setup => {
            println!("xtask setup: everything is in place");
            Ok(())
        }
        Cmd::Test { tier } => test::run(tier, ci_from_env()),
        Cmd::Ci => test::run(None, true),
        Cmd::Imports => imports::check(&cmd::repo_root()),
        Cmd::Fuzz { minutes } => {
            let steps = test::fuzz_steps(&cmd::repo_root(), minutes * 60, ci_from_env())?;
            test::run_steps("fuzz", steps)
        }
        Cmd::Bench { what, args } => {
            let mut all = vec![enum_name(what)];
            all.extend(args);
            delegate::exec_bin("sluice-bench", &all)
        }
        Cmd::Demo { args } => delegate::exec_bin("sluice-demo", &args),
        Cmd::Lab { verb, ha } => {
            let mut args = vec![enum_name(verb)];
            if ha {
                args.push("--ha".into());
            }
            delegate::exec_bin("sluice-lab", &args)
        }
        Cmd::Soak {
            what: Soak::Ha,
            minutes,
        } => delegate::exec_bin(
            "sluice-bench",
            &["soak-ha".into(), format!("--minutes={minutes}")],
        ),
        Cmd::Package {
            profile,
            no_build,
            output,
        } => package::run(&profile, no_build, output),
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_subcommands() {
        let cli = Cli::try_parse_from(["xtask", "test", "--tier", "netns"]).unwrap();
        assert!(matches!(
            cli.cmd,
            Cmd::Test {
                tier: Some(test::Tier::Netns)
            }
        ));
        let cli = Cli::try_parse_from(["xtask", "bench", "decode", "--", "--quick"]).unwrap();
        let Cmd::Bench { what, args } = cli.cmd else {
            panic!("not bench")
        };
        assert_eq!(enum_name(what), "decode");
        assert_eq!(args, ["--quick"]);
        assert!(Cli::try_parse_from(["xtask", "lab", "sideways"]).is_err());
        let cli = Cli::try_parse_from(["xtask", "lab", "up", "--ha"]).unwrap();
        assert!(matches!(cli.cmd, Cmd::Lab { ha: true, .. }));
        let cli = Cli::try_parse_from(["xtask", "soak", "ha"]).unwrap();
        assert!(matches!(cli.cmd, Cmd::Soak { minutes: 10, .. }));
        let cli = Cli::try_parse_from(["xtask", "bench", "takeover"]).unwrap();
        assert!(matches!(
            cli.cmd,
            Cmd::Bench {
                what: Bench::Takeover,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["xtask", "test", "--tier", "everything"]).is_err());
    }
}
