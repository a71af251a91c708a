//! The `sluice-central` binary's own subcommands that need no privileges: `token` (global flags
//! in either position) and `check`.
#![expect(clippy::unwrap_used, reason = "test code")]

use std::process::Command;

fn central(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-central"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn the_state_dir_flag_works_before_and_after_the_token_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["token", "generate", "--state-dir", d],
        vec!["token", "--state-dir", d, "generate", "--admin"],
    ] {
        let (ok, out, err) = central(&args);
        assert!(ok, "{args:?}: {err}");
        assert_eq!(out.lines().next().unwrap().len(), 64, "{out}");
    }
    let tokens = std::fs::read_to_string(dir.path().join("tokens.json")).unwrap();
    assert!(
        tokens.contains("\"peer\"") && tokens.contains("\"admin\""),
        "{tokens}"
    );
}

#[test]
fn check_passes_a_good_file_and_names_the_problem_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("central.toml");
    let write = |iface: &str| {
        std::fs::write(
            &path,
            format!(
                "[data_plane]\ninterfaces = [\"{iface}\"]\n[[listeners]]\naddress = \"198.18.0.1\"\nports = [2055]\n[state]\ndir = \"{}\"\n",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
    };
    write("lo");
    let p = path.to_str().unwrap();
    let (ok, out, err) = central(&["check", "--config", p]);
    assert!(ok, "{err}");
    assert!(out.ends_with("configuration OK\n"), "{out}");
    write("nosuch0");
    let (ok, _, err) = central(&["check", "--config", p]);
    assert!(!ok);
    assert!(
        err.contains("data_plane.interfaces[0]: no interface named \"nosuch0\""),
        "{err}"
    );
    std::fs::write(&path, "[data_plane]\ninterfacez = []\n").unwrap();
    let (ok, _, err) = central(&["check", "--config", p]);
    assert!(!ok && err.contains("unknown field `interfacez`"), "{err}");
}
