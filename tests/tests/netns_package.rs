//! The Debian packages and their systemd units, tested from the built `.deb` files: contents
//! (`dpkg-deb`), the units (`systemd-analyze verify`), the packaged binaries run from a scratch
//! root (`dpkg -x`), and the unit's capability set proven enough — and every capability in it
//! needed — by running the packaged `sluice-central` in a namespace lab as a non-root user
//! holding exactly those capabilities (`setpriv`), forwarding from an exporter to a peer.
//!
//! The packages are built from the binaries the test tier already built (`cargo deb --no-build
//! --profile dev`, stripped by cargo-deb) into `target/<profile>/debian-test/`, and reused while
//! they are newer than the binaries and everything under `dist/`.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant, SystemTime},
};

use sluice_central::maps::Maps;
use sluice_common::Reason;
use sluice_lab::{
    lab::{LISTENER, Lab, LabProcess, PORT},
    privileged,
};

/// A uid/gid that no account uses: the service user of the capability test.
const SERVICE_UID: u32 = 59_999;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The directory the daemons were built into (`target/debug` under `cargo xtask test`).
fn profile_dir() -> PathBuf {
    sluice_lab::bin("sluice-central")
        .parent()
        .expect("profile dir")
        .to_path_buf()
}

/// Cargo's name for the profile of `profile_dir` (`debug` is the `dev` profile).
fn profile() -> String {
    match profile_dir().file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".into(),
        Some(other) => other.into(),
    }
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every input of a package: its binaries, the cargo-deb metadata and `dist/`.
fn inputs() -> Vec<PathBuf> {
    let ws = workspace();
    let mut v: Vec<PathBuf> = ["sluice-central", "sluicectl", "sluice-peer"]
        .iter()
        .map(|b| profile_dir().join(b))
        .collect();
    v.push(ws.join("central-user/Cargo.toml"));
    v.push(ws.join("peer/Cargo.toml"));
    let mut stack = vec![ws.join("dist")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("dist/") {
            let p = e.expect("dist entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                v.push(p);
            }
        }
    }
    v
}

struct Debs {
    central: PathBuf,
    peer: PathBuf,
}

/// The two packages, built once per test process (or reused when newer than their inputs).
fn debs() -> &'static Debs {
    static DEBS: OnceLock<Debs> = OnceLock::new();
    DEBS.get_or_init(|| {
        let out = profile_dir().join("debian-test");
        std::fs::create_dir_all(&out).expect("deb dir");
        let version = env!("CARGO_PKG_VERSION");
        let path = |pkg: &str| {
            let arch = run_ok(Command::new("dpkg").arg("--print-architecture"));
            out.join(format!("{pkg}_{version}-1_{}.deb", arch.trim()))
        };
        let newest_input = inputs().iter().map(|p| mtime(p)).max().expect("inputs");
        for pkg in ["sluice-central", "sluice-peer"] {
            let deb = path(pkg);
            if deb.exists() && mtime(&deb) > newest_input {
                eprintln!("reusing {}", deb.display());
                continue;
            }
            let t0 = Instant::now();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut c = Command::new(cargo);
            c.current_dir(workspace())
                .args(["deb", "-p", pkg, "--no-build", "--profile", &profile()])
                .arg("--output")
                .arg(&out);
            let printed = run_ok(&mut c);
            assert!(
                printed.trim_end().ends_with(&*deb.to_string_lossy()),
                "cargo deb printed {printed:?}, expected {}",
                deb.display()
            );
            eprintln!("built {} in {:?}", deb.display(), t0.elapsed());
        }
        Debs {
            central: path("sluice-central"),
            peer: path("sluice-peer"),
        }
    })
}

/// Runs a command; panics with its output unless it succeeds; returns stdout.
fn run_ok(c: &mut Command) -> String {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dpkg-deb -c`: the paths in the package, without the leading `.`.
fn contents(deb: &Path) -> Vec<(String, String)> {
    run_ok(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter_map(|l| {
            let mode = l.split_whitespace().next()?.to_owned();
            let path = l.split_whitespace().nth(5)?.trim_start_matches('.');
            Some((mode, path.to_owned()))
        })
        .collect()
}

/// One control file (`dpkg-deb -I DEB FILE`).
fn control_file(deb: &Path, name: &str) -> String {
    run_ok(Command::new("dpkg-deb").arg("-I").arg(deb).arg(name))
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("sluice-pkg-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Both packages unpacked (`dpkg -x`) into one scratch root, as `dpkg -i` would lay them out.
fn unpacked(tag: &str) -> Scratch {
    let root = Scratch::new(tag);
    for deb in [&debs().central, &debs().peer] {
        run_ok(Command::new("dpkg").arg("-x").arg(deb).arg(&root.0));
    }
    root
}

#[test]
fn packages_hold_binaries_units_users_and_conffiles_and_enable_nothing() {
    let central = contents(&debs().central);
    let peer = contents(&debs().peer);
    let has = |c: &[(String, String)], path: &str, mode: &str| {
        assert!(
            c.iter().any(|(m, p)| p == path && m == mode),
            "{path} ({mode}) missing from {c:#?}"
        );
    };
    for bin in ["/usr/bin/sluice-central", "/usr/bin/sluicectl"] {
        has(&central, bin, "-rwxr-xr-x");
    }
    has(&peer, "/usr/bin/sluice-peer", "-rwxr-xr-x");
    for (c, pkg, conf) in [
        (&central, "sluice-central", "central.toml"),
        (&peer, "sluice-peer", "peer.toml"),
    ] {
        has(c, &format!("/etc/sluice/{conf}"), "-rw-r--r--");
        has(
            c,
            &format!("/usr/lib/systemd/system/{pkg}.service"),
            "-rw-r--r--",
        );
        has(c, &format!("/usr/lib/sysusers.d/{pkg}.conf"), "-rw-r--r--");
        // Installed, not enabled: no symlink in a .wants directory.
        assert!(
            !c.iter().any(|(_, p)| p.starts_with("/etc/systemd")),
            "{pkg} ships enablement: {c:#?}"
        );
    }
    has(
        &central,
        "/usr/lib/tmpfiles.d/sluice-central.conf",
        "-rw-r--r--",
    );
    assert!(
        !peer.iter().any(|(_, p)| p.contains("flowgen")),
        "the lab's flow generator is not packaged"
    );

    for (deb, pkg, conf, user) in [
        (&debs().central, "sluice-central", "central.toml", "sluice"),
        (&debs().peer, "sluice-peer", "peer.toml", "sluice-peer"),
    ] {
        let control = control_file(deb, "control");
        assert!(control.contains(&format!("Package: {pkg}\n")), "{control}");
        assert!(
            control.contains("systemd | systemd-standalone-sysusers"),
            "{control}"
        );
        assert_eq!(
            control_file(deb, "conffiles").trim(),
            format!("/etc/sluice/{conf}"),
            "{pkg}: the example config is a conffile"
        );
        let postinst = control_file(deb, "postinst");
        assert!(
            postinst.contains(&format!(
                "systemd-sysusers ${{DPKG_ROOT:+--root=\"$DPKG_ROOT\"}} {pkg}.conf"
            )),
            "{pkg}: postinst creates the user:\n{postinst}"
        );
        // The not-enabled form: only an already installed and enabled unit gets its symlinks
        // refreshed; nothing is started (an upgrade restarts a running unit only).
        assert!(
            postinst.contains(&format!(
                "if deb-systemd-helper debian-installed {pkg}.service"
            )),
            "{pkg}: postinst would enable the unit:\n{postinst}"
        );
        assert!(
            !postinst.contains("deb-systemd-invoke start"),
            "{pkg}: postinst starts the unit:\n{postinst}"
        );
        let root = unpacked(&format!("ctl-{pkg}"));
        let sysusers =
            std::fs::read_to_string(root.0.join(format!("usr/lib/sysusers.d/{pkg}.conf")))
                .expect("sysusers");
        assert!(
            sysusers
                .lines()
                .any(|l| l.starts_with(&format!("u {user} "))),
            "{sysusers}"
        );
    }
    let root = unpacked("tmpfiles");
    let tmpfiles = std::fs::read_to_string(root.0.join("usr/lib/tmpfiles.d/sluice-central.conf"))
        .expect("tmpfiles");
    assert!(
        tmpfiles.contains("d /var/lib/sluice 0750 sluice sluice"),
        "{tmpfiles}"
    );
    for deb in [&debs().central, &debs().peer] {
        eprintln!(
            "{}: {:.1} MiB",
            deb.display(),
            std::fs::metadata(deb).expect("deb").len() as f64 / f64::from(1 << 20)
        );
    }
}

/// `systemd-analyze verify` of a unit: (success, everything it printed).
fn verify(unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .stdin(Stdio::null())
        .output()
        .expect("systemd-analyze (cargo xtask setup installs systemd)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The packaged unit with its `/usr/bin` and `/etc/sluice` paths moved under `root` (verify
/// checks that every Exec binary exists), written to `dir/NAME`.
fn relocated_unit(root: &Path, name: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root.join("usr/lib/systemd/system").join(name))
        .expect("packaged unit");
    let r = root.display();
    let text = text
        .replace("/usr/bin/sluice", &format!("{r}/usr/bin/sluice"))
        .replace("/etc/sluice/", &format!("{r}/etc/sluice/"));
    let path = dir.join(name);
    std::fs::write(&path, text).expect("unit copy");
    path
}

#[test]
fn packaged_units_pass_systemd_analyze_verify_and_a_broken_one_does_not() {
    let root = unpacked("verify");
    let units = Scratch::new("units");
    for name in ["sluice-central.service", "sluice-peer.service"] {
        let unit = relocated_unit(&root.0, name, &units.0);
        let (ok, said) = verify(&unit);
        assert!(ok, "systemd-analyze verify {name}:\n{said}");
        assert!(
            said.trim().is_empty(),
            "systemd-analyze verify {name} warns:\n{said}"
        );
    }
    // The same check catches a unit whose binary is not where it says, and unknown keys.
    let text = std::fs::read_to_string(units.0.join("sluice-peer.service")).expect("unit");
    let broken = units.0.join("broken.service");
    std::fs::write(
        &broken,
        text.replace(
            &format!("{}/usr/bin/sluice-peer run", root.0.display()),
            "/nonexistent/sluice-peer run",
        )
        .replace("[Service]\n", "[Service]\nProtectEverything=yes\n"),
    )
    .expect("broken unit");
    let (ok, said) = verify(&broken);
    assert!(!ok, "a unit with a missing binary verifies:\n{said}");
    assert!(said.contains("/nonexistent/sluice-peer"), "{said}");
    assert!(said.contains("Unknown key"), "{said}");
}

/// The capabilities of `AmbientCapabilities=` in the packaged unit, which must equal its
/// `CapabilityBoundingSet=`: the set this file proves.
fn unit_capabilities(root: &Path) -> Vec<String> {
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/sluice-central.service"))
        .expect("unit");
    let line = |key: &str| -> Vec<String> {
        let mut caps: Vec<String> = unit
            .lines()
            .filter_map(|l| l.strip_prefix(key))
            .flat_map(str::split_whitespace)
            .map(str::to_owned)
            .collect();
        caps.sort();
        caps
    };
    let ambient = line("AmbientCapabilities=");
    assert_eq!(ambient, line("CapabilityBoundingSet="), "{unit}");
    assert!(!ambient.is_empty(), "{unit}");
    ambient
}

/// Capability number (for `/proc/PID/status` masks).
fn cap_number(name: &str) -> u32 {
    match name {
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_IPC_LOCK" => 14,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("unexpected capability {other} in the unit: add it here"),
    }
}

/// `nsenter` into Central's namespace, then `setpriv` to the service uid/gid holding exactly
/// `caps` (inheritable, ambient and bounding; no supplementary groups), as systemd does with
/// `User=`, `AmbientCapabilities=` and `CapabilityBoundingSet=`.
fn as_service_user(lab: &Lab, caps: &[String], program: &Path) -> Command {
    let set: String = std::iter::once("-all".to_owned())
        .chain(
            caps.iter()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", lab.central.name))
        .arg("setpriv")
        .arg(format!("--reuid={SERVICE_UID}"))
        .arg(format!("--regid={SERVICE_UID}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg("--")
        .arg(program);
    c
}

/// The lab's Central config: XDP on `ce0`, one listener, the lab's peer as a static peer,
/// the lab's state and pin dirs, control API on loopback.
fn lab_config(lab: &Lab, dir: &Path) -> PathBuf {
    let path = dir.join("central.toml");
    std::fs::write(
        &path,
        format!(
            r#"[data_plane]
interfaces = ["ce0"]
pin_dir = "{pins}"

[[listeners]]
address = "{LISTENER}"
ports = [{PORT}]

[[peers]]
name = "a"
address = "{peer}:{PORT}"

[control]
listen = "127.0.0.1:8443"

[state]
dir = "{state}"
"#,
            pins = lab.pins.path().display(),
            peer = lab.peers[0].1,
            state = lab.state_dir.display(),
        ),
    )
    .expect("lab config");
    path
}

/// What the unit's `ExecStartPre=+` and `StateDirectory=` do: the pin and state dirs exist and
/// belong to the service user.
fn give_dirs_to_service_user(lab: &Lab) {
    for d in [lab.pins.path(), lab.state_dir.as_path()] {
        std::fs::create_dir_all(d).expect("dir");
        std::os::unix::fs::chown(d, Some(SERVICE_UID), Some(SERVICE_UID)).expect("chown");
    }
}

fn output_of(c: &mut Command) -> (bool, String, String) {
    let out = c.stdin(Stdio::null()).output().expect("spawn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn packaged_check_names_the_missing_interface_and_passes_a_lab_config() {
    if !privileged("netns_package_check") {
        return;
    }
    let root = unpacked("check");
    let central = root.0.join("usr/bin/sluice-central");
    let lab = Lab::new("pkc", 1, 1);
    let caps = unit_capabilities(&root.0);
    give_dirs_to_service_user(&lab);

    // The shipped example names eth0, which the lab's Central namespace does not have: the
    // unit's ExecStartPre fails with this line in the journal.
    let (ok, _, err) = output_of(
        as_service_user(&lab, &caps, &central)
            .arg("check")
            .arg("--config")
            .arg(root.0.join("etc/sluice/central.toml")),
    );
    assert!(!ok, "check passed the example in a namespace without eth0");
    assert_eq!(
        err.trim(),
        r#"sluice-central: data_plane.interfaces[0]: no interface named "eth0" on this host"#
    );

    let config = lab_config(&lab, &root.0);
    let (ok, out, err) = output_of(
        as_service_user(&lab, &caps, &central)
            .arg("check")
            .arg("--config")
            .arg(&config),
    );
    assert!(ok, "check of the lab config: {out}{err}");
    assert!(out.contains("interfaces present: ce0"), "{out}");
    assert!(out.trim_end().ends_with("configuration OK"), "{out}");

    // The peer's example is a working standalone config as shipped.
    let (ok, out, err) = output_of(
        Command::new(root.0.join("usr/bin/sluice-peer"))
            .arg("check")
            .arg("--config")
            .arg(root.0.join("etc/sluice/peer.toml")),
    );
    assert!(
        ok,
        "sluice-peer check of the packaged peer.toml: {out}{err}"
    );
    assert!(out.starts_with("ok: "), "{out}");
}

/// Starts the packaged Central with `caps` as the service user; the error (with its log) when
/// it exits before its ready line or has none within 30 s.
fn start_central(
    lab: &Lab,
    caps: &[String],
    central: &Path,
    config: &Path,
) -> Result<LabProcess, String> {
    let mut c = as_service_user(lab, caps, central);
    c.arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // LabProcess::spawn panics when the ready line does not come: a refusal is a value here.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| LabProcess::spawn(c))).map_err(
        |panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "sluice-central failed".into())
        },
    )
}

/// `CapEff`, `CapAmb`, `CapBnd` and the real/effective uid of a process.
fn proc_caps(pid: u32) -> (u64, u64, u64, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = |key: &str| {
        let v = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {status}"));
        u64::from_str_radix(v.trim(), 16).expect("hex mask")
    };
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid")
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    (hex("CapEff:"), hex("CapAmb:"), hex("CapBnd:"), uid)
}

#[test]
fn packaged_central_forwards_as_non_root_with_exactly_the_units_capabilities() {
    if !privileged("netns_package_caps") {
        return;
    }
    let root = unpacked("caps");
    let central = root.0.join("usr/bin/sluice-central");
    let caps = unit_capabilities(&root.0);
    let lab = Lab::new("pka", 1, 1);
    give_dirs_to_service_user(&lab);
    let config = lab_config(&lab, &root.0);

    // Each capability is needed: without it Central refuses to start, or a part of it fails
    // and says why.
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        match start_central(&lab, &fewer, &central, &config) {
            Ok(mut p) => {
                // Started: then a part of it must fail on its own (the slow-path relay opens
                // its raw sockets on its thread, after the ready line).
                std::thread::sleep(Duration::from_millis(1500));
                let log = p.log_text();
                p.kill();
                let error = log.lines().find(|l| l.contains("ERROR"));
                assert!(
                    error.is_some(),
                    "Central runs without {missing} and logs no error:\n{log}"
                );
                eprintln!(
                    "without {missing}: started, then: {}",
                    error.unwrap_or_default()
                );
            }
            Err(why) => {
                // The error line, and the verifier's reason when it refused the program.
                let said: Vec<&str> = why
                    .lines()
                    .filter(|l| l.starts_with("sluice-central: ") || l.contains("prohibited"))
                    .collect();
                eprintln!("without {missing}: refused: {}", said.join(" … "));
            }
        }
        // A refused start may leave pins behind: the next attempt starts clean.
        let _ = sluice_central::loader::detach(lab.pins.path(), None, true);
        give_dirs_to_service_user(&lab);
    }

    // With exactly the unit's set, as a non-root user: ready, and forwarding.
    let mut p = start_central(&lab, &caps, &central, &config).unwrap_or_else(|e| panic!("{e}"));
    let want: u64 = caps.iter().map(|c| 1u64 << cap_number(c)).sum();
    let (eff, amb, bnd, uid) = proc_caps(p.child.id());
    assert_eq!(
        uid,
        format!("{SERVICE_UID} {SERVICE_UID}"),
        "not the service user"
    );
    assert_eq!(eff, want, "effective capabilities {eff:#x}, want {want:#x}");
    assert_eq!(amb, want, "ambient capabilities {amb:#x}, want {want:#x}");
    assert_eq!(bnd, want, "bounding set {bnd:#x}, want {want:#x}");
    assert!(
        p.log_text().contains("XDP attached"),
        "XDP not attached:\n{}",
        p.log_text()
    );

    let peer = lab.peer_socket(0);
    let exporter = lab.exporter_socket(0);
    let target = SocketAddr::new(IpAddr::V4(LISTENER), PORT);
    // The first datagram makes Central pin the exporter.
    exporter.send_to(b"first", target).expect("send");
    std::thread::sleep(Duration::from_millis(500));
    let mut buf = [0u8; 2048];
    while peer.recv_from(&mut buf).is_ok() {}
    let maps = Maps::open_pinned(lab.pins.path()).expect("pinned maps");
    let forwarded = |m: &Maps| {
        m.counters()
            .expect("counters")
            .iter()
            .filter(|(r, _)| matches!(r, Reason::Tx | Reason::Redirect))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let before = forwarded(&maps);
    let n = 50;
    for seq in 0..n {
        exporter
            .send_to(format!("datagram {seq}").as_bytes(), target)
            .expect("send");
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < n && Instant::now() < deadline {
        if let Ok((len, from)) = peer.recv_from(&mut buf) {
            got.push((from, buf[..len].to_vec()));
        }
    }
    let source = exporter.local_addr().expect("exporter addr");
    assert_eq!(
        got.len(),
        n,
        "datagrams at the peer from the non-root Central\n{}",
        p.log_text()
    );
    assert!(
        got.iter().all(|(from, _)| *from == source),
        "exporter's source address and port preserved: {:?}",
        got.iter().map(|(f, _)| f).collect::<Vec<_>>()
    );
    let by_xdp = forwarded(&maps) - before;
    assert!(
        by_xdp >= n as u64,
        "{by_xdp} of {n} forwarded by XDP (the rest by the relay)"
    );
    let status = p.terminate();
    assert!(status.success(), "clean stop: {status}\n{}", p.log_text());
}

#[test]
fn packaged_sysusers_and_tmpfiles_make_the_users_and_the_state_dir() {
    if !privileged("netns_package_users") {
        return;
    }
    // What the postinst runs (`systemd-sysusers ${DPKG_ROOT:+--root=...} PKG.conf`), and what
    // systemd-tmpfiles does at boot, against the scratch root instead of this host.
    let root = unpacked("users");
    std::fs::create_dir_all(root.0.join("etc")).expect("etc");
    let root_arg = format!("--root={}", root.0.display());
    run_ok(Command::new("systemd-sysusers").args([
        &root_arg,
        "sluice-central.conf",
        "sluice-peer.conf",
    ]));
    let passwd = std::fs::read_to_string(root.0.join("etc/passwd")).expect("passwd");
    let uid_of = |user: &str| -> u32 {
        passwd
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{user}:x:")))
            .and_then(|rest| rest.split(':').next())
            .and_then(|uid| uid.parse().ok())
            .unwrap_or_else(|| panic!("no {user} in\n{passwd}"))
    };
    let (central, peer) = (uid_of("sluice"), uid_of("sluice-peer"));
    assert!(central < 1000 && peer < 1000, "system users: {passwd}");
    assert_ne!(central, peer, "each service its own user");
    assert!(
        passwd
            .lines()
            .all(|l| !l.starts_with("sluice") || l.ends_with(":/usr/sbin/nologin")),
        "no login shell: {passwd}"
    );
    run_ok(Command::new("systemd-tmpfiles").args([&root_arg, "--create", "sluice-central.conf"]));
    let state = std::fs::metadata(root.0.join("var/lib/sluice")).expect("state dir");
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    assert_eq!(state.uid(), central, "state dir owner");
    assert_eq!(state.permissions().mode() & 0o7777, 0o750);
}

/// `KEY=` values of a unit, in order.
fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn packaged_units_check_first_restart_on_failure_and_hold_least_privilege() {
    let root = unpacked("unit-text");
    let unit = |name: &str| {
        std::fs::read_to_string(root.0.join("usr/lib/systemd/system").join(name)).expect("unit")
    };
    let central = unit("sluice-central.service");
    let peer = unit("sluice-peer.service");
    let one = |text: &str, key: &str| -> String {
        let v = unit_values(text, key);
        assert_eq!(v.len(), 1, "{key}= {v:?}");
        v[0].clone()
    };
    for (text, user, bin, conf) in [
        (&central, "sluice", "sluice-central", "central.toml"),
        (&peer, "sluice-peer", "sluice-peer", "peer.toml"),
    ] {
        assert_eq!(one(text, "User"), user);
        assert_eq!(
            unit_values(text, "ExecStartPre").last().map(String::as_str),
            Some(&*format!(
                "/usr/bin/{bin} check --config /etc/sluice/{conf}"
            )),
            "the check runs last before the start"
        );
        assert_eq!(
            one(text, "ExecStart"),
            format!("/usr/bin/{bin} run --config /etc/sluice/{conf}")
        );
        for (k, v) in [
            ("Restart", "on-failure"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("SystemCallArchitectures", "native"),
            ("WantedBy", "multi-user.target"),
        ] {
            assert_eq!(one(text, k), v, "{bin}: {k}=");
        }
    }
    assert_eq!(one(&central, "SystemCallFilter"), "@system-service bpf");
    assert_eq!(
        one(&central, "RestrictAddressFamilies"),
        "AF_INET AF_INET6 AF_UNIX AF_NETLINK AF_PACKET"
    );
    assert_eq!(one(&central, "LimitMEMLOCK"), "infinity");
    assert_eq!(one(&central, "StateDirectory"), "sluice");
    assert_eq!(unit_values(&central, "ReadWritePaths"), ["/sys/fs/bpf"]);
    assert_eq!(one(&peer, "CapabilityBoundingSet"), "");
    assert_eq!(one(&peer, "AmbientCapabilities"), "");
    assert!(!peer.contains("bpf"), "the peer has no use for bpf(2)");
    assert_eq!(
        unit_values(&peer, "SystemCallFilter"),
        ["@system-service", "~@privileged"]
    );
    assert_eq!(one(&peer, "LogsDirectory"), "sluice");
}
