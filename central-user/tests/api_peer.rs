//! Peer channel over real TLS on loopback: registration, heartbeats, templates, authentication,
//! certificate pinning, and hostile input.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sluice_central::auth::{TokenKind, token_generate};
use sluice_central::testing::{Server, eventually};
use sluice_common::client::{
    Connection, Connector, Endpoint, PeerClient, PeerClientConfig, PeerHooks, Pin, TlsError,
};
use sluice_common::protocol::{
    ALPN_PEER, CentralMessage, ErrorCode, Heartbeat, MAX_FRAME, PeerMessage, PeerMetrics, Register,
    Registered, Templates,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

#[derive(Default)]
struct Hooks {
    installed: Mutex<Vec<Templates>>,
    registered: Mutex<Vec<Registered>>,
}

impl PeerHooks for Hooks {
    fn metrics(&self) -> PeerMetrics {
        PeerMetrics {
            cpu_load_pct: 12.5,
            mem_used_pct: 40.0,
            process_cpu_pct: 3.0,
            process_mem_bytes: 64 << 20,
            input_pps: 1000.0,
            flows_per_s: 30_000.0,
            total_drops: 7,
            start_time_unix_s: 1_795_219_200,
        }
    }

    fn install_templates(&self, templates: Vec<Templates>) {
        self.installed
            .lock()
            .expect("test helper")
            .extend(templates);
    }

    fn registered(&self, registered: &Registered) {
        self.registered
            .lock()
            .expect("test helper")
            .push(registered.clone());
    }
}

fn config(server: &Server, token: &str, name: &str) -> PeerClientConfig {
    let mut config = PeerClientConfig::new(
        Endpoint::parse(&server.url).expect("test helper"),
        server.pin(),
        token.into(),
        name.into(),
        "198.18.2.2".parse().expect("test helper"),
        vec![2055, 4739],
    );
    config.backoff_min = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(200);
    config
}

fn register_msg(token: &str) -> PeerMessage {
    PeerMessage::Register(Register {
        token: token.into(),
        name: "raw".into(),
        uuid: Uuid::new_v4(),
        version: "0.1.0".into(),
        data_addr: "198.18.2.9".parse().expect("test helper"),
        ports: vec![2055],
        weight: 1,
        pool: None,
        epoch_seen: 0,
    })
}

async fn raw_session(
    server: &Server,
) -> Connection<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector = Connector::new(&server.pin(), ALPN_PEER).expect("test helper");
    let stream = connector
        .connect(&Endpoint::parse(&server.url).expect("test helper"))
        .await
        .expect("test helper");
    Connection::new(stream)
}

/// The server's last word: an error of `code`, then the end of the connection.
async fn expect_refusal<S>(conn: &mut Connection<S>, code: ErrorCode)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match conn.read::<CentralMessage>().await.expect("test helper") {
        Some(CentralMessage::Error(e)) => assert_eq!(e.code, code, "{}", e.message),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(matches!(
        conn.read::<CentralMessage>().await,
        Ok(None) | Err(_)
    ));
}

async fn registers(server: &Server) {
    let mut conn = raw_session(server).await;
    conn.write(&register_msg(&server.peer_token))
        .await
        .expect("test helper");
    let reply = conn.read::<CentralMessage>().await.expect("test helper");
    assert!(
        matches!(reply, Some(CentralMessage::Registered(_))),
        "{reply:?}"
    );
}

#[tokio::test]
async fn peer_registers_heartbeats_and_installs_templates() {
    let server = Server::start().await;
    let hooks = Arc::new(Hooks::default());
    let (client, handle) =
        PeerClient::new(config(&server, &server.peer_token, "peer-a"), hooks.clone()).unwrap();
    let task = tokio::spawn(client.run());

    assert!(eventually(5, || server.control.state.lock().unwrap().heartbeats >= 2).await);
    assert!(handle.is_connected());
    let peer = server.control.state.lock().unwrap().peers["peer-a"].clone();
    assert_eq!(peer.metrics, Some(hooks.metrics()));
    assert_eq!(peer.ports, vec![2055, 4739]);
    let peer_id = hooks.registered.lock().unwrap()[0].peer_id;
    assert_eq!(peer_id, peer.id);

    // Peer → Central: learned templates.
    let learned = Templates {
        exporter: "198.18.0.10".parse().unwrap(),
        observation_domain: 3,
        bytes: vec![1, 2, 3],
    };
    assert!(handle.report_templates(learned.clone()));
    assert!(
        eventually(5, || !server
            .control
            .state
            .lock()
            .unwrap()
            .templates
            .is_empty())
        .await
    );
    assert_eq!(
        server.control.state.lock().unwrap().templates[0],
        (peer_id, learned.clone())
    );

    // Central → peer: install before a move; the acknowledgement reaches the controller.
    server
        .sessions
        .send(
            peer_id,
            CentralMessage::InstallTemplates {
                request_id: 7,
                templates: vec![learned.clone()],
            },
        )
        .unwrap();
    assert!(
        eventually(5, || !server
            .control
            .state
            .lock()
            .unwrap()
            .installed
            .is_empty())
        .await
    );
    assert_eq!(
        server.control.state.lock().unwrap().installed,
        vec![(peer_id, 7)]
    );
    assert_eq!(*hooks.installed.lock().unwrap(), vec![learned]);
    assert_eq!(server.sessions.connected().len(), 1);
    assert_eq!(
        server.sessions.send(
            peer_id + 1,
            CentralMessage::InstallTemplates {
                request_id: 8,
                templates: vec![]
            }
        ),
        Err(sluice_central::api::SendError::NotConnected(peer_id + 1))
    );

    handle.shutdown();
    task.await.unwrap();
    assert!(eventually(5, || server.sessions.connected().is_empty()).await);
    server.stop().await;
}

#[tokio::test]
async fn a_newer_session_replaces_the_old_one_and_the_client_reconnects() {
    let server = Server::start().await;
    let hooks = Arc::new(Hooks::default());
    let (client, handle) =
        PeerClient::new(config(&server, &server.peer_token, "peer-b"), hooks.clone()).unwrap();
    let task = tokio::spawn(client.run());
    assert!(eventually(5, || handle.is_connected()).await);

    // A replacement session (same peer, new connection) ends the old one; the client comes back.
    let mut conn = raw_session(&server).await;
    conn.write(&PeerMessage::Register(Register {
        name: "peer-b".into(),
        ..match register_msg(&server.peer_token) {
            PeerMessage::Register(r) => r,
            _ => unreachable!(),
        }
    }))
    .await
    .unwrap();
    assert!(matches!(
        conn.read::<CentralMessage>().await.unwrap(),
        Some(CentralMessage::Registered(_))
    ));
    drop(conn);
    assert!(eventually(5, || handle.sessions() >= 2 && handle.is_connected()).await);

    handle.shutdown();
    task.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_token_is_refused_and_counted() {
    let server = Server::start().await;
    for token in ["0".repeat(64), String::new()] {
        let mut conn = raw_session(&server).await;
        conn.write(&register_msg(&token)).await.unwrap();
        expect_refusal(&mut conn, ErrorCode::Unauthorized).await;
    }
    assert_eq!(server.auth.failures(TokenKind::Peer), 2);
    assert!(server.control.state.lock().unwrap().peers.is_empty());

    // The admin token is not a peer token.
    let mut conn = raw_session(&server).await;
    conn.write(&register_msg(&server.admin_token))
        .await
        .unwrap();
    expect_refusal(&mut conn, ErrorCode::Unauthorized).await;

    // The client library reports the refusal and keeps retrying with backoff.
    let (client, handle) =
        PeerClient::new(config(&server, "bad", "peer-x"), Arc::new(Hooks::default())).unwrap();
    let task = tokio::spawn(client.run());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!handle.is_connected());
    handle.shutdown();
    task.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn old_token_expires_after_the_rotation_grace() {
    let server = Server::start().await;
    let old = server.peer_token.clone();
    let new = token_generate(
        server.dir.path(),
        TokenKind::Peer,
        Some(Duration::from_millis(600)),
        SystemTime::now(),
    )
    .unwrap()
    .token;
    // Both work during the grace period (the server picks up the rotated file by itself).
    registers(&server).await;
    for token in [&old, &new] {
        let mut conn = raw_session(&server).await;
        conn.write(&register_msg(token)).await.unwrap();
        assert!(matches!(
            conn.read::<CentralMessage>().await.unwrap(),
            Some(CentralMessage::Registered(_))
        ));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut conn = raw_session(&server).await;
    conn.write(&register_msg(&old)).await.unwrap();
    expect_refusal(&mut conn, ErrorCode::Unauthorized).await;
    let mut conn = raw_session(&server).await;
    conn.write(&register_msg(&new)).await.unwrap();
    assert!(matches!(
        conn.read::<CentralMessage>().await.unwrap(),
        Some(CentralMessage::Registered(_))
    ));
    server.stop().await;
}

#[tokio::test]
async fn wrong_pinned_certificate_is_a_clear_error() {
    let server = Server::start().await;
    let endpoint = Endpoint::parse(&server.url).unwrap();

    let wrong_fp = Pin::fingerprint(&format!("sha256:{}", "ab".repeat(32))).unwrap();
    let err = Connector::new(&wrong_fp, ALPN_PEER)
        .unwrap()
        .connect(&endpoint)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::CertificateMismatch { .. }), "{err}");
    assert!(err.to_string().contains("certificate mismatch"), "{err}");

    // Another Central's certificate file.
    let other = tempfile::tempdir().unwrap();
    let other_cert =
        sluice_central::api::TlsIdentity::load(&sluice_central::api::CertSource::StateDir {
            dir: other.path().into(),
            extra_names: Vec::new(),
        })
        .unwrap()
        .cert_path;
    let err = Connector::new(&Pin::CaCert(other_cert), ALPN_PEER)
        .unwrap()
        .connect(&endpoint)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::CertificateMismatch { .. }), "{err}");

    // An unusable pin is refused when the client is built, not at the first connection.
    let mut bad = config(&server, &server.peer_token, "peer-z");
    bad.pin = Pin::CaCert(server.dir.path().join("missing.pem"));
    let err = PeerClient::new(bad, Arc::new(Hooks::default()))
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::CaCert { .. }), "{err}");

    // The right file works.
    Connector::new(&Pin::CaCert(server.cert.clone()), ALPN_PEER)
        .unwrap()
        .connect(&endpoint)
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_frames_close_the_connection_only() {
    let server = Server::start().await;
    let connector = Connector::new(&server.pin(), ALPN_PEER).unwrap();
    let endpoint = Endpoint::parse(&server.url).unwrap();

    // Garbage payload in a well-formed frame.
    let mut stream = connector.connect(&endpoint).await.unwrap();
    stream
        .write_all(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    expect_refusal(&mut Connection::new(stream), ErrorCode::BadRequest).await;

    // A header announcing more than the limit: refused before any payload is read.
    let mut stream = connector.connect(&endpoint).await.unwrap();
    stream
        .write_all(&((MAX_FRAME + 1) as u32).to_be_bytes())
        .await
        .unwrap();
    expect_refusal(&mut Connection::new(stream), ErrorCode::TooLarge).await;

    // Not a registration first.
    let mut conn = raw_session(&server).await;
    conn.write(&PeerMessage::Heartbeat(Heartbeat {
        metrics: PeerMetrics::default(),
    }))
    .await
    .unwrap();
    expect_refusal(&mut conn, ErrorCode::BadRequest).await;

    // Garbage after a good registration.
    let mut conn = raw_session(&server).await;
    conn.write(&register_msg(&server.peer_token)).await.unwrap();
    assert!(matches!(
        conn.read::<CentralMessage>().await.unwrap(),
        Some(CentralMessage::Registered(_))
    ));
    let mut stream = connector.connect(&endpoint).await.unwrap();
    stream.write_all(b"\0\0\0\x02\x07\x07").await.unwrap();
    expect_refusal(&mut Connection::new(stream), ErrorCode::BadRequest).await;

    // Garbage HTTP on the same listener.
    let mut http = Connector::new(&server.pin(), b"http/1.1")
        .unwrap()
        .connect(&endpoint)
        .await
        .unwrap();
    http.write_all(b"\x01\x02 nonsense\r\n\r\n").await.unwrap();
    let mut reply = String::new();
    let _ = http.read_to_string(&mut reply).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");

    // The server still serves the next client.
    registers(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_broken_session_is_reported_lost_but_a_replaced_one_is_not() {
    let server = Server::start().await;
    let mut first = raw_session(&server).await;
    first
        .write(&register_msg(&server.peer_token))
        .await
        .unwrap();
    assert!(matches!(
        first.read::<CentralMessage>().await.unwrap(),
        Some(CentralMessage::Registered(_))
    ));
    // The same peer registers again (a restart): the old session is replaced, not lost.
    let mut second = raw_session(&server).await;
    second
        .write(&register_msg(&server.peer_token))
        .await
        .unwrap();
    assert!(matches!(
        second.read::<CentralMessage>().await.unwrap(),
        Some(CentralMessage::Registered(_))
    ));
    expect_refusal(&mut first, ErrorCode::Conflict).await;
    assert!(
        server
            .control
            .state
            .lock()
            .unwrap()
            .sessions_lost
            .is_empty()
    );
    // The peer process dies: its connection breaks and Central hears of it at once.
    drop(second);
    assert!(
        eventually(5, || server
            .control
            .state
            .lock()
            .unwrap()
            .sessions_lost
            .len()
            == 1)
        .await
    );
    server.stop().await;
}
