//! The `sluicectl` binary against an in-process control API.

use std::path::Path;
use std::process::{Command, Output};

use sluice_central::auth::RateLimit;
use sluice_central::testing::Server;

/// Runs a server on a runtime of its own so the blocking `sluicectl` calls can run here.
struct Running {
    server: Option<Server>,
    runtime: tokio::runtime::Runtime,
}

impl Running {
    /// On the fake controller.
    fn start() -> Self {
        Self::start_with(false)
    }

    /// On the real controller over the in-memory data plane.
    fn start_live() -> Self {
        Self::start_with(true)
    }

    fn start_with(live: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("test setup");
        let server = runtime.block_on(Server::start_with(RateLimit::default(), live));
        Running {
            server: Some(server),
            runtime,
        }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("test setup")
    }

    fn token_file(&self) -> std::path::PathBuf {
        let path = self.server().dir.path().join("admin.token");
        std::fs::write(&path, format!("{}\n", self.server().admin_token)).expect("test setup");
        path
    }

    fn ctl(&self, token_file: &Path, args: &[&str]) -> Output {
        let server = self.server();
        Command::new(env!("CARGO_BIN_EXE_sluicectl"))
            .arg("--central")
            .arg(&server.url)
            .arg("--ca-cert")
            .arg(&server.cert)
            .arg("--token-file")
            .arg(token_file)
            .args(args)
            .env_remove("SLUICE_CENTRAL")
            .env_remove("SLUICE_FINGERPRINT")
            .output()
            .expect("test setup")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.stop());
        }
    }
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "sluicectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// Fails with exactly one line on stderr that contains `needle`.
fn one_error_line(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
}

#[test]
fn status_peers_and_pools_as_json_and_tables() {
    let run = Running::start();
    let token = run.token_file();

    let status: serde_json::Value =
        serde_json::from_str(&stdout(&run.ctl(&token, &["--json", "status"]))).unwrap();
    assert_eq!(status["fingerprint"], run.server().fingerprint.as_str());
    assert_eq!(status["balancer"]["rebalance_interval_s"], 90);

    let created = stdout(&run.ctl(&token, &["pools", "create", "edge", "--json"]));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["message"], "pool edge created");
    let pools: serde_json::Value =
        serde_json::from_str(&stdout(&run.ctl(&token, &["--json", "pools", "list"]))).unwrap();
    assert!(
        pools
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "edge")
    );

    let peers: serde_json::Value =
        serde_json::from_str(&stdout(&run.ctl(&token, &["--json", "peers", "list"]))).unwrap();
    assert_eq!(peers, serde_json::json!([]));
    let table = stdout(&run.ctl(&token, &["peers", "list"]));
    let header = table.lines().next().unwrap();
    for column in [
        "NAME",
        "ADDRESS",
        "LAST SEEN",
        "STATUS",
        "START TIME",
        "PROC MEM",
        "TOTAL DROPS",
    ] {
        assert!(header.contains(column), "{header}");
    }

    let table = stdout(&run.ctl(&token, &["exporters", "list"]));
    assert!(table.contains("198.18.0.10"), "{table}");
    let human = stdout(&run.ctl(&token, &["status"]));
    assert!(human.contains(&run.server().fingerprint), "{human}");
    assert!(human.contains("HAS NO HEALTHY PEER"), "{human}");
}

#[test]
fn failures_are_one_line_and_a_non_zero_exit() {
    let run = Running::start();
    let token = run.token_file();

    one_error_line(
        &run.ctl(&token, &["pools", "delete", "nope"]),
        "unknown pool nope",
    );
    one_error_line(
        &run.ctl(&token, &["peers", "drain", "ghost"]),
        "unknown peer ghost",
    );

    let bad = run.server().dir.path().join("bad.token");
    std::fs::write(&bad, "0123").unwrap();
    one_error_line(&run.ctl(&bad, &["status"]), "rejected the admin token");

    // Another certificate pinned.
    let wrong = Command::new(env!("CARGO_BIN_EXE_sluicectl"))
        .args(["--central", &run.server().url, "--fingerprint"])
        .arg(format!("sha256:{}", "00".repeat(32)))
        .arg("--token-file")
        .arg(&token)
        .arg("status")
        .output()
        .unwrap();
    one_error_line(&wrong, "certificate mismatch");

    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = Command::new(env!("CARGO_BIN_EXE_sluicectl"))
        .args(["--central", &url, "--ca-cert"])
        .arg(&run.server().cert)
        .arg("--token-file")
        .arg(&token)
        .arg("status")
        .output()
        .unwrap();
    one_error_line(&unreachable, "cannot reach Central");

    // No pin at all.
    let unpinned = Command::new(env!("CARGO_BIN_EXE_sluicectl"))
        .args(["--central", &run.server().url, "status"])
        .env_remove("SLUICE_CA_CERT")
        .env_remove("SLUICE_FINGERPRINT")
        .output()
        .unwrap();
    one_error_line(&unpinned, "--ca-cert");
}

#[test]
fn listeners_and_groups_steer_the_real_controller() {
    let run = Running::start_live();
    let token = run.token_file();
    let controller = run.server().live.clone().expect("live server");

    let added = stdout(&run.ctl(&token, &["listeners", "add", "198.18.0.1:4739", "default"]));
    assert!(added.contains("listener 198.18.0.1:4739"), "{added}");
    let listener = "198.18.0.1:4739".parse().unwrap();
    assert_eq!(
        controller.lock().unwrap().data_plane().listener(listener),
        Some(0)
    );
    let table = stdout(&run.ctl(&token, &["listeners", "list"]));
    assert_eq!(
        table.lines().collect::<Vec<_>>(),
        ["LISTENER         POOL", "198.18.0.1:4739  default"]
    );

    stdout(&run.ctl(&token, &["groups", "add", "10.20.7.1/16", "default"]));
    let groups: serde_json::Value =
        serde_json::from_str(&stdout(&run.ctl(&token, &["groups", "list", "--json"]))).unwrap();
    assert_eq!(
        groups,
        serde_json::json!([{ "cidr": "10.20.0.0/16", "pool": "default" }])
    );

    one_error_line(
        &run.ctl(&token, &["listeners", "add", "198.18.0.1", "default"]),
        "invalid value '198.18.0.1'",
    );
    one_error_line(
        &run.ctl(&token, &["groups", "add", "10.0.0.0/33", "default"]),
        "prefix length",
    );
    one_error_line(
        &run.ctl(&token, &["groups", "add", "10.0.0.0/8", "nope"]),
        "unknown pool \"nope\"",
    );
    one_error_line(
        &run.ctl(&token, &["listeners", "remove", "198.18.0.1:2055"]),
        "unknown listener 198.18.0.1:2055",
    );
}

#[test]
fn help_shows_a_working_example() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluicectl"))
        .arg("--help")
        .output()
        .unwrap();
    let help = stdout(&out);
    assert!(help.contains("sluicectl --central https://"), "{help}");
    for verb in [
        "status",
        "peers",
        "pools",
        "listeners",
        "groups",
        "exporters",
        "balancer",
        "token",
    ] {
        assert!(help.contains(verb), "{help}");
    }
}
