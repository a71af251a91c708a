//! `cargo xtask setup`: installs, idempotently and only when missing, everything the build and
//! the test tiers need. Every other subcommand runs it first, so it must be fast when there is
//! nothing to do.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cmd::{self, find_executable, is_root};

/// Debian packages needed besides the LLVM ones: network tooling for the lab and the netns
/// tests, flow exporters/collectors to compare against, and pip for scapy and chdb-core.
const TOOL_PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "ethtool",
    "iputils-ping",
    "tcpdump",
    "tshark",
    "softflowd",
    "pmacct",
    "nfdump",
    "tcpreplay",
    "python3-pip",
    // `cargo xtask bench takeover` puts keepalived's VRRP next to Sluice's hot standby.
    "keepalived",
    // The status page's browser test: headless Chromium driven over WebDriver.
    "chromium",
    "chromium-driver",
    // `protoc --decode` reads `format = "pb"` output back in peer/tests/pb_protoc.rs.
    "protobuf-compiler",
];

/// The toolchain that builds the eBPF crate (aya-build runs `rustup run nightly cargo build`),
/// whose LLVM bitcode bpf-linker must understand.
const EBPF_TOOLCHAIN: &str = "nightly";

/// rustup components per toolchain: rust-src for `-Z build-std=core`, clippy/rustfmt for the lint
/// tier (the host pass on the default toolchain, the eBPF pass on nightly).
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy"];
const DEFAULT_COMPONENTS: &[&str] = &["rustfmt", "clippy"];

const BPFFS: &str = "/sys/fs/bpf";

/// What `rustc -vV` tells us.
#[derive(Debug, PartialEq, Eq)]
pub struct RustcInfo {
    pub host: String,
    pub llvm_major: u32,
}

pub fn parse_rustc_vv(text: &str) -> Result<RustcInfo> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .with_context(|| format!("no `{name}` line in `rustc -vV` output"))
    };
    let host = field("host:")?.to_owned();
    let llvm = field("LLVM version:")?;
    let major = llvm.split('.').next().unwrap_or_default();
    let llvm_major = major
        .parse()
        .with_context(|| format!("cannot read the LLVM major version from `{llvm}`"))?;
    Ok(RustcInfo { host, llvm_major })
}

/// The LLVM/clang development packages bpf-linker is built against.
fn llvm_packages(llvm_major: u32) -> [String; 4] {
    [
        format!("llvm-{llvm_major}-dev"),
        format!("libpolly-{llvm_major}-dev"),
        format!("libclang-{llvm_major}-dev"),
        format!("clang-{llvm_major}"),
    ]
}

/// Every Debian package setup makes sure of, for a rustc built on LLVM `llvm_major`.
pub fn debian_packages(llvm_major: u32) -> Vec<String> {
    llvm_packages(llvm_major)
        .into_iter()
        // zstd/zlib: bpf-linker and librdkafka's codecs; OpenSSL and pkg-config: librdkafka's
        // TLS (the peer's Kafka output).
        .chain(["libzstd-dev", "zlib1g-dev", "libssl-dev", "pkg-config"].map(str::to_owned))
        .chain(TOOL_PACKAGES.iter().map(|p| (*p).to_owned()))
        .collect()
}

/// The `wanted` packages that `dpkg-query -W -f='${Package} ${Status}\n'` does not report as
/// installed (packages dpkg has never heard of are simply absent from its output).
pub fn missing_packages<'a>(wanted: &'a [String], dpkg_output: &str) -> Vec<&'a str> {
    let installed: HashSet<&str> = dpkg_output
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.trim() == "install ok installed")
        .map(|(name, _)| name)
        .collect();
    wanted
        .iter()
        .map(String::as_str)
        .filter(|p| !installed.contains(p))
        .collect()
}

/// The `wanted` components absent from `rustup component list --installed` (which prints
/// target-specific components with the host triple appended, e.g. `clippy-x86_64-...`).
pub fn missing_components<'a>(wanted: &[&'a str], installed: &str, host: &str) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|c| {
            let with_host = format!("{c}-{host}");
            !installed
                .lines()
                .any(|l| l.trim() == *c || l.trim() == with_host)
        })
        .collect()
}

/// Whether `/proc/mounts` text shows a bpf filesystem at `/sys/fs/bpf`.
pub fn bpffs_mounted(proc_mounts: &str) -> bool {
    proc_mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, mount_point, fs_type) = (f.next(), f.next(), f.next());
        mount_point == Some(BPFFS) && fs_type == Some("bpf")
    })
}

fn installed(item: &str) {
    println!("xtask setup: installed {item}");
}

/// One clear line for something that needs root to be installed.
fn need_root(what: &str, fix: &str) -> Result<()> {
    if is_root() {
        Ok(())
    } else {
        bail!("{what} missing and installing it needs root; fix: {fix}")
    }
}

pub fn ensure() -> Result<()> {
    let rustc = rustc_info()?;
    ensure_debian_packages(rustc.llvm_major)?;
    ensure_components(Some(EBPF_TOOLCHAIN), NIGHTLY_COMPONENTS, &rustc.host)?;
    ensure_components(None, DEFAULT_COMPONENTS, &rustc.host)?;
    ensure_bpf_linker(rustc.llvm_major)?;
    ensure_cargo_fuzz()?;
    ensure_cargo_deb()?;
    ensure_tansu()?;
    ensure_scapy()?;
    ensure_chdb()?;
    ensure_bpffs()
}

fn rustc_info() -> Result<RustcInfo> {
    let text = cmd::output(
        Command::new("rustc")
            .arg(format!("+{EBPF_TOOLCHAIN}"))
            .arg("-vV"),
    )
    .with_context(|| {
        format!(
            "the {EBPF_TOOLCHAIN} Rust toolchain is needed to build the eBPF crate; \
                 fix: rustup toolchain install {EBPF_TOOLCHAIN}"
        )
    })?;
    parse_rustc_vv(&text)
}

fn dpkg_missing(wanted: &[String]) -> Result<Vec<String>> {
    // dpkg-query exits 1 when some package is unknown; its stdout still lists the known ones.
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${Status}\n")
        .args(wanted)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("cannot run dpkg-query (setup supports Debian-based systems only)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(missing_packages(wanted, &text)
        .into_iter()
        .map(str::to_owned)
        .collect())
}

fn apt_get() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive");
    c
}

fn ensure_debian_packages(llvm_major: u32) -> Result<()> {
    let wanted = debian_packages(llvm_major);
    let missing = dpkg_missing(&wanted)?;
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    need_root(
        &format!("Debian packages [{list}]"),
        &format!("sudo apt-get install -y {list}  (or run `sudo -E cargo xtask setup`)"),
    )?;
    println!("xtask setup: installing Debian packages: {list}");
    if missing.iter().any(|p| p == "tshark") {
        // Otherwise wireshark-common asks whether non-root users may capture.
        let mut preseed = Command::new("debconf-set-selections");
        preseed.stdin(Stdio::piped());
        let mut child = preseed
            .spawn()
            .context("cannot run debconf-set-selections")?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(b"wireshark-common wireshark-common/install-setuid boolean false\n")
                .context("writing to debconf-set-selections")?;
        }
        let status = child.wait().context("waiting for debconf-set-selections")?;
        if !status.success() {
            bail!("debconf-set-selections failed ({status})");
        }
    }
    cmd::output(apt_get().args(["-qq", "update"]))?;
    let install = cmd::output(
        apt_get()
            .args(["-y", "-qq", "--no-install-recommends", "install"])
            .args(&missing),
    );
    if let Err(e) = install {
        let unavailable: Vec<&str> = missing
            .iter()
            .map(String::as_str)
            .filter(|p| {
                Command::new("apt-cache")
                    .args(["show", p])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map_or(true, |s| !s.success())
            })
            .collect();
        if unavailable.is_empty() {
            return Err(e.context(format!("apt-get could not install [{list}]")));
        }
        let llvm = llvm_packages(llvm_major);
        let llvm_note = if unavailable.iter().any(|p| llvm.iter().any(|l| l == p)) {
            format!(
                " (the LLVM ones must match LLVM {llvm_major} of `rustc +{EBPF_TOOLCHAIN}`: \
                 bpf-linker is built against them)"
            )
        } else {
            String::new()
        };
        bail!(
            "Debian packages [{}] are not available from the configured apt sources{llvm_note}; \
             fix: add an apt source that provides them, then rerun `cargo xtask setup`",
            unavailable.join(" ")
        );
    }
    let still = dpkg_missing(&wanted)?;
    for p in missing.iter().filter(|p| !still.contains(p)) {
        installed(&format!("{p} (apt)"));
    }
    if !still.is_empty() {
        bail!(
            "apt-get finished but [{}] are still not installed; fix: sudo apt-get install {}",
            still.join(" "),
            still.join(" ")
        );
    }
    Ok(())
}

fn rustup_installed_components(toolchain: Option<&str>) -> Result<String> {
    let mut c = Command::new("rustup");
    c.current_dir(cmd::repo_root());
    if let Some(t) = toolchain {
        c.arg(format!("+{t}"));
    }
    cmd::output(c.args(["component", "list", "--installed"]))
}

fn ensure_components(toolchain: Option<&str>, wanted: &[&str], host: &str) -> Result<()> {
    let listed = rustup_installed_components(toolchain)?;
    let missing = missing_components(wanted, &listed, host);
    add_components(toolchain, &missing)
}

fn add_components(toolchain: Option<&str>, missing: &[&str]) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    let mut c = Command::new("rustup");
    c.current_dir(cmd::repo_root())
        .args(["component", "add"])
        .args(missing);
    if let Some(t) = toolchain {
        c.args(["--toolchain", t]);
    }
    cmd::output(&mut c).with_context(|| {
        format!(
            "cannot add rustup components [{}]; fix: {}",
            missing.join(" "),
            cmd::display(&c)
        )
    })?;
    let which = toolchain.unwrap_or("default toolchain");
    for m in missing {
        installed(&format!("{m} ({which}, rustup)"));
    }
    Ok(())
}

fn ensure_bpf_linker(llvm_major: u32) -> Result<()> {
    if find_executable("bpf-linker").is_some() {
        return Ok(());
    }
    let llvm_bin = format!("/usr/lib/llvm-{llvm_major}/bin");
    if !Path::new(&llvm_bin).join("llvm-config").exists() {
        bail!(
            "bpf-linker needs LLVM {llvm_major} but {llvm_bin}/llvm-config is missing; \
             fix: apt-get install llvm-{llvm_major}-dev"
        );
    }
    println!("xtask setup: building bpf-linker against LLVM {llvm_major} (about a minute)");
    let feature = format!("llvm-{llvm_major}");
    let mut c = Command::new("cargo");
    c.env("PATH", cmd::path_with_first(Path::new(&llvm_bin))?)
        .args(["install", "--quiet", "bpf-linker", "--no-default-features"])
        .args(["--features", &feature]);
    cmd::run(&mut c).with_context(|| {
        format!(
            "cannot build bpf-linker; fix: PATH={llvm_bin}:$PATH cargo install bpf-linker \
             --no-default-features --features {feature}"
        )
    })?;
    installed(&format!("bpf-linker (cargo install, {feature})"));
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    if find_executable("cargo-fuzz").is_some() {
        return Ok(());
    }
    println!("xtask setup: building cargo-fuzz (a minute or two)");
    let mut c = Command::new("cargo");
    c.args(["install", "--quiet", "cargo-fuzz", "--locked"]);
    cmd::run(&mut c).context("cannot build cargo-fuzz; fix: cargo install cargo-fuzz --locked")?;
    installed("cargo-fuzz (cargo install)");
    Ok(())
}

/// `cargo xtask package` and the packaging tests build .deb files with cargo-deb.
fn ensure_cargo_deb() -> Result<()> {
    if find_executable("cargo-deb").is_some() {
        return Ok(());
    }
    println!("xtask setup: building cargo-deb (a minute or two)");
    let mut c = Command::new("cargo");
    c.args(["install", "--quiet", "cargo-deb", "--locked"]);
    cmd::run(&mut c).context("cannot build cargo-deb; fix: cargo install cargo-deb --locked")?;
    installed("cargo-deb (cargo install)");
    Ok(())
}

/// The Kafka-protocol broker the Kafka output's tests run (`peer/tests/kafka_tansu.rs`,
/// `peer/tests/clickhouse_kafka.rs`).
const TANSU_VERSION: &str = "0.6.0";

/// True when `tansu --version` printed the version the tests are written against.
pub fn tansu_is_wanted(version_output: &str) -> bool {
    version_output.split_whitespace().nth(1) == Some(TANSU_VERSION)
}

fn ensure_tansu() -> Result<()> {
    let present = find_executable("tansu");
    if let Some(path) = &present {
        let out = Command::new(path).arg("--version").output();
        if out.is_ok_and(|o| tansu_is_wanted(&String::from_utf8_lossy(&o.stdout))) {
            return Ok(());
        }
    }
    println!(
        "xtask setup: building tansu {TANSU_VERSION} (the Kafka tests' broker): about 11 minutes \
         on 2 cores and 1.7 GB of memory, once per machine"
    );
    // `dynostore` gives the in-memory storage engine the tests use; niced so the rest of the
    // machine stays usable during the long build.
    let mut c = Command::new("nice");
    c.args(["-n", "19", "cargo", "install", "--quiet", "tansu"])
        .args(["--version", TANSU_VERSION, "--locked"])
        .args(["--no-default-features", "--features", "dynostore"]);
    if present.is_some() {
        c.arg("--force");
    }
    cmd::run(&mut c).with_context(|| {
        format!(
            "cannot build tansu; fix: cargo install tansu --version {TANSU_VERSION} --locked \
             --no-default-features --features dynostore"
        )
    })?;
    installed(&format!("tansu {TANSU_VERSION} (cargo install)"));
    Ok(())
}

/// Whether `python3 -c CHECK` exits 0.
fn python_check(check: &str) -> Result<bool> {
    let status = Command::new("python3")
        .args(["-c", check])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run python3; fix: apt-get install python3")?;
    Ok(status.success())
}

/// `python3 -m pip install ARGS`, into the system python when it refuses by default.
fn pip_install(args: &[&str]) -> Result<()> {
    let pip = || {
        let mut c = Command::new("python3");
        c.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ]);
        c
    };
    let fix = format!("python3 -m pip install {}", args.join(" "));
    if let Err(first) = cmd::output(pip().args(args)) {
        // Debian's own python refuses pip installs into the system (PEP 668).
        if !format!("{first:#}").contains("externally-managed") {
            return Err(first.context(format!("pip install failed; fix: {fix}")));
        }
        cmd::output(pip().arg("--break-system-packages").args(args))
            .with_context(|| format!("pip install failed; fix: {fix} --break-system-packages"))?;
    }
    Ok(())
}

fn ensure_scapy() -> Result<()> {
    // find_spec instead of `import scapy`: importing scapy takes about a second.
    if python_check(
        "import importlib.util, sys; sys.exit(importlib.util.find_spec('scapy') is None)",
    )? {
        return Ok(());
    }
    pip_install(&["scapy"])?;
    installed("scapy (pip)");
    Ok(())
}

/// chDB's embedded ClickHouse, which runs the README's ClickHouse SQL in
/// `peer/tests/clickhouse_kafka.rs`.
const CHDB_CORE_VERSION: &str = "26.9.0";

/// The `chdb-core` wheel alone: its declared pandas and pyarrow only serve DataFrame results,
/// which the test does not use.
fn ensure_chdb() -> Result<()> {
    let check = format!(
        "import importlib.metadata as m, sys; \
         sys.exit(m.version('chdb-core') != '{CHDB_CORE_VERSION}')"
    );
    if python_check(&check)? {
        return Ok(());
    }
    println!(
        "xtask setup: installing chdb-core {CHDB_CORE_VERSION} (embedded ClickHouse 26.9 for the \
         ClickHouse test): a 181 MB download, about 560 MB installed, once per machine"
    );
    let spec = format!("chdb-core=={CHDB_CORE_VERSION}");
    pip_install(&["--no-deps", &spec])?;
    installed(&format!("chdb-core {CHDB_CORE_VERSION} (pip)"));
    Ok(())
}

fn ensure_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if bpffs_mounted(&mounts) {
        return Ok(());
    }
    if !is_root() {
        // Only root processes (the privileged tests, demo, lab) pin maps; they need it then.
        println!(
            "xtask setup: note: bpffs is not mounted at {BPFFS}; as root, setup mounts it \
             (or: sudo mount -t bpf bpf {BPFFS})"
        );
        return Ok(());
    }
    cmd::output(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
        .with_context(|| format!("cannot mount bpffs; fix: mount -t bpf bpf {BPFFS}"))?;
    println!("xtask setup: mounted bpffs at {BPFFS}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUSTC_VV: &str = "rustc 1.95.0 (59807616e 2026-04-14)\n\
        binary: rustc\n\
        commit-hash: 59807616e1fa2540724bfbac14d7976d7e4a3860\n\
        commit-date: 2026-04-14\n\
        host: x86_64-unknown-linux-gnu\n\
        release: 1.95.0\n\
        LLVM version: 22.1.2\n";

    #[test]
    fn reads_llvm_major_and_host_from_rustc() {
        assert_eq!(
            parse_rustc_vv(RUSTC_VV).unwrap(),
            RustcInfo {
                host: "x86_64-unknown-linux-gnu".into(),
                llvm_major: 22
            }
        );
        let newer = RUSTC_VV.replace("22.1.2", "23.0.0-rust-1.99.0-nightly");
        assert_eq!(parse_rustc_vv(&newer).unwrap().llvm_major, 23);
    }

    #[test]
    fn rejects_rustc_output_without_llvm() {
        assert!(parse_rustc_vv("rustc 1.0\nhost: x\n").is_err());
        assert!(parse_rustc_vv("host: x\nLLVM version: abc\n").is_err());
    }

    #[test]
    fn package_list_follows_llvm_major() {
        let pkgs = debian_packages(19);
        for p in [
            "llvm-19-dev",
            "libpolly-19-dev",
            "libclang-19-dev",
            "clang-19",
        ] {
            assert!(pkgs.iter().any(|x| x == p), "{p} missing from {pkgs:?}");
        }
        assert!(!pkgs.iter().any(|x| x.contains("22")));
        for p in [
            "libzstd-dev",
            "zlib1g-dev",
            "bpftool",
            "tshark",
            "pmacct",
            "python3-pip",
            "protobuf-compiler",
        ] {
            assert!(pkgs.iter().any(|x| x == p), "{p} missing from {pkgs:?}");
        }
    }

    #[test]
    fn tansu_version_check() {
        assert!(tansu_is_wanted("tansu 0.6.0\n"));
        assert!(!tansu_is_wanted("tansu 0.5.9\n"));
        assert!(!tansu_is_wanted(""));
    }

    #[test]
    fn computes_missing_packages_from_dpkg_query() {
        let wanted = debian_packages(22);
        let dpkg = "bpftool install ok installed\n\
                    clang-22 install ok installed\n\
                    tshark deinstall ok config-files\n\
                    ethtool unknown ok not-installed\n";
        let missing = missing_packages(&wanted, dpkg);
        assert!(!missing.contains(&"bpftool"));
        assert!(!missing.contains(&"clang-22"));
        assert!(missing.contains(&"tshark"));
        assert!(missing.contains(&"ethtool"));
        assert!(missing.contains(&"pmacct"), "unknown to dpkg means missing");
        assert_eq!(missing.len(), wanted.len() - 2);

        let all: String = wanted
            .iter()
            .map(|p| format!("{p} install ok installed\n"))
            .collect();
        assert!(missing_packages(&wanted, &all).is_empty());
    }

    #[test]
    fn computes_missing_components() {
        let host = "x86_64-unknown-linux-gnu";
        let listed = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\n\
                      rust-std-x86_64-unknown-linux-gnu\nrustc-x86_64-unknown-linux-gnu\n";
        assert_eq!(
            missing_components(&["rust-src", "clippy"], listed, host),
            ["rust-src"]
        );
        let with_src = format!("{listed}rust-src\n");
        assert!(missing_components(&["rust-src", "clippy"], &with_src, host).is_empty());
    }

    #[test]
    fn detects_bpffs_mount() {
        let without = "proc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\n";
        assert!(!bpffs_mounted(without));
        let with = format!("{without}bpf /sys/fs/bpf bpf rw,relatime 0 0\n");
        assert!(bpffs_mounted(&with));
        assert!(!bpffs_mounted("none /sys/fs/bpf tmpfs rw 0 0\n"));
    }
}
