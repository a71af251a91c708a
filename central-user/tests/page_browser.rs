//! The status page in a real browser: Debian's headless Chromium driven over WebDriver
//! (chromedriver), against the control API on loopback with a registered peer whose metrics
//! change and whose version string carries markup. Both come from `cargo xtask setup`; without
//! them this test fails rather than skips.
#![expect(clippy::unwrap_used, reason = "test code")]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_central::testing::Server;
use sluice_common::client::{Endpoint, PeerClient, PeerClientConfig, PeerHooks};
use sluice_common::protocol::{PeerMetrics, Templates};

const MARKUP: &str = "<img src=x onerror=alert(1)>";

/// A peer whose input rate grows by 100 pps at every heartbeat.
struct Growing(AtomicU64);

impl PeerHooks for Growing {
    fn metrics(&self) -> PeerMetrics {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        PeerMetrics {
            input_pps: 100.0 * (n + 1) as f64,
            flows_per_s: 10.0,
            start_time_unix_s: 1_795_219_200,
            ..PeerMetrics::default()
        }
    }

    fn install_templates(&self, _templates: Vec<Templates>) {}
}

/// A minimal WebDriver client (plain HTTP/1.1 on loopback to chromedriver).
struct Driver {
    port: u16,
    session: String,
    child: Child,
}

fn http(port: u16, method: &str, path: &str, body: &Value) -> Value {
    let body = body.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // chromedriver keeps the connection open: read the head, then exactly Content-Length.
    let mut reader = std::io::BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver, installed by `cargo xtask setup`)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap().keep();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let r = http(port, "POST", "/session", &caps);
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Driver {
            port,
            session,
            child,
        }
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )["value"]
            .clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", &json!({"url": url}));
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.call(
            "POST",
            "/elements",
            &json!({"using": "css selector", "value": css}),
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e.as_object()
                    .unwrap()
                    .values()
                    .next()
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    fn text(&self, css: &str) -> String {
        match self.find_all(css).first() {
            Some(id) => self
                .call("GET", &format!("/element/{id}/text"), &json!({}))
                .as_str()
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        }
    }

    fn sign_in(&self, token: &str) {
        let field = self.find_all("#token").pop().expect("the login form");
        self.call(
            "POST",
            &format!("/element/{field}/value"),
            &json!({"text": token}),
        );
        let button = self.find_all("#signin").pop().unwrap();
        self.call("POST", &format!("/element/{button}/click"), &json!({}));
    }

    fn wait(&self, what: &str, mut cond: impl FnMut(&Driver) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            &json!({}),
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sign_in_see_the_peers_and_watch_them_change_and_markup_stays_text() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(Server::start_live());
    let mut config = PeerClientConfig::new(
        Endpoint::parse(&server.url).unwrap(),
        server.pin(),
        server.peer_token.clone(),
        "peer-page".into(),
        "198.18.2.2".parse().unwrap(),
        vec![2055],
    );
    config.version = MARKUP.into();
    let (client, handle) = PeerClient::new(config, Arc::new(Growing(AtomicU64::new(0)))).unwrap();
    rt.spawn(client.run());

    let driver = Driver::start();
    let url = format!("https://127.0.0.1:{}/", server.addr.port());
    driver.go(&url);
    // A wrong token: the login page again, with its message, and no data.
    driver.sign_in("not-the-token");
    driver.wait("the refusal", |d| d.text("#error").contains("Wrong token"));
    assert!(
        driver.find_all("#peers").is_empty(),
        "no data without the token"
    );

    driver.sign_in(&server.admin_token);
    driver.wait("the peer in the Connected Peers table", |d| {
        d.text("#peers tbody").contains("peer-page")
    });
    let row = driver.text("#peers tbody tr");
    assert!(row.contains(MARKUP), "markup shown as text: {row}");
    assert!(
        driver.find_all("#peers img").is_empty(),
        "markup never becomes an element"
    );
    assert_eq!(
        driver.find_all("#peers thead th").len(),
        15,
        "14 columns and the chart"
    );
    assert_eq!(driver.find_all("#peers svg.spark").len(), 1);
    // The input rate grows with every heartbeat; the page follows by itself.
    let cell = |d: &Driver| d.text("#peers tbody tr td:nth-child(12)");
    let first = cell(&driver);
    driver.wait("a changed input rate", |d| {
        let now = cell(d);
        !now.is_empty() && now != first
    });
    handle.shutdown();
    drop(driver);
    rt.block_on(server.stop());
}
