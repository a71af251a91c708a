//! Admin API and `/metrics` over real TLS on loopback.

use std::time::Duration;

use sluice_central::auth::{RateLimit, TokenKind};
use sluice_central::cli::client::{AdminClient, CallError};
use sluice_central::testing::Server;
use sluice_common::protocol::{AdminReply, AdminRequest, ErrorCode, PeerStatus};

fn client(server: &Server, token: Option<&str>) -> AdminClient {
    AdminClient::new(&server.url, &server.pin(), token.map(String::from)).expect("test helper")
}

#[tokio::test]
async fn pools_create_assign_and_list() {
    let server = Server::start().await;
    let admin = client(&server, Some(&server.admin_token));
    // A peer to assign.
    server
        .control
        .state
        .lock()
        .unwrap()
        .pools
        .get_mut("default")
        .unwrap()
        .clear();
    sluice_central::api::ControlPlane::register_peer(
        server.control.as_ref(),
        &sluice_common::protocol::Register {
            token: String::new(),
            name: "peer-a".into(),
            uuid: uuid::Uuid::nil(),
            version: "0.1.0".into(),
            data_addr: "198.18.2.2".parse().unwrap(),
            ports: vec![2055],
            weight: 1,
            pool: None,
            epoch_seen: 0,
        },
        "127.0.0.1:1".parse().unwrap(),
    )
    .unwrap();

    let reply = admin
        .call(&AdminRequest::PoolsCreate {
            name: "edge".into(),
        })
        .await
        .unwrap();
    assert!(matches!(reply, AdminReply::Done(_)), "{reply:?}");
    let reply = admin
        .call(&AdminRequest::PoolsAssign {
            pool: "edge".into(),
            peer: "peer-a".into(),
            weight: Some(3),
        })
        .await
        .unwrap();
    assert!(matches!(reply, AdminReply::Done(_)));
    let AdminReply::Pools(pools) = admin.call(&AdminRequest::PoolsList).await.unwrap() else {
        panic!("not a pool list");
    };
    let edge = pools.iter().find(|p| p.name == "edge").unwrap();
    assert_eq!(edge.peers.len(), 1);
    assert_eq!(
        (edge.peers[0].peer.as_str(), edge.peers[0].weight),
        ("peer-a", 3)
    );

    // Unknown names are NotFound with the name in the message; duplicates conflict.
    let err = admin
        .call(&AdminRequest::PoolsAssign {
            pool: "nope".into(),
            peer: "peer-a".into(),
            weight: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Api { code: ErrorCode::NotFound, message } if message.contains("nope")),
        "{err}"
    );
    let err = admin
        .call(&AdminRequest::PoolsCreate {
            name: "edge".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CallError::Api {
            code: ErrorCode::Conflict,
            ..
        }
    ));

    admin
        .call(&AdminRequest::PeersDrain {
            name: "peer-a".into(),
        })
        .await
        .unwrap();
    let AdminReply::Peers(peers) = admin.call(&AdminRequest::PeersList).await.unwrap() else {
        panic!("not a peer list");
    };
    assert_eq!(peers[0].status, PeerStatus::Draining);

    let AdminReply::Status(status) = admin.call(&AdminRequest::Status).await.unwrap() else {
        panic!("not a status");
    };
    assert_eq!(status.fingerprint, server.fingerprint);
    server.stop().await;
}

#[tokio::test]
async fn admin_calls_need_the_admin_token() {
    let server = Server::start().await;
    for token in [None, Some("wrong"), Some(server.peer_token.as_str())] {
        let err = client(&server, token)
            .call(&AdminRequest::Status)
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Unauthorized(_)), "{err}");
    }
    assert_eq!(server.auth.failures(TokenKind::Admin), 3);
    server.stop().await;
}

#[tokio::test]
async fn repeated_failures_lock_the_source_out() {
    let server = Server::start_with(
        RateLimit {
            max_failures: 2,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
        },
        false,
    )
    .await;
    for _ in 0..2 {
        client(&server, Some("wrong"))
            .call(&AdminRequest::Status)
            .await
            .unwrap_err();
    }
    let err = client(&server, Some(&server.admin_token))
        .call(&AdminRequest::Status)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("too many failed attempts"),
        "{err}"
    );
    assert_eq!(server.auth.locked_out(), 1);
    server.stop().await;
}

#[tokio::test]
async fn token_generate_through_the_api_rotates_with_grace() {
    let server = Server::start().await;
    let admin = client(&server, Some(&server.admin_token));
    let AdminReply::Token(issued) = admin
        .call(&AdminRequest::TokenGenerate {
            admin: true,
            grace_s: Some(3600),
        })
        .await
        .unwrap()
    else {
        panic!("not a token");
    };
    assert_eq!(issued.token.len(), 64);
    assert!(issued.previous_expires_unix_s.is_some());
    // Old and new admin tokens both work during the grace period.
    admin.call(&AdminRequest::Status).await.unwrap();
    client(&server, Some(&issued.token))
        .call(&AdminRequest::Status)
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_without_a_token() {
    let server = Server::start().await;
    // One failed login so the counter shows.
    let _ = client(&server, Some("wrong"))
        .call(&AdminRequest::Status)
        .await;
    let text = client(&server, None).metrics().await.unwrap();
    for line in [
        "# TYPE sluice_xdp_packets_total counter",
        "sluice_xdp_packets_total{reason=\"tx\"} 12",
        "sluice_exporter_packets_per_second{exporter=\"198.18.0.10\",pool=\"default\",peer=\"peer-a\"} 1500",
        "sluice_rebalances_total 2",
        "sluice_failovers_total 1",
        "sluice_auth_failures_total{kind=\"admin\"} 1",
        "sluice_pool_healthy_peers{pool=\"default\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // Every sample line parses as `name{labels} number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit_once(' ').unwrap().1;
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    server.stop().await;
}

#[tokio::test]
async fn curl_style_requests_work() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start().await;
    let connector = sluice_common::client::Connector::new(&server.pin(), b"http/1.1").unwrap();
    let endpoint = sluice_common::client::Endpoint::parse(&server.url).unwrap();
    let body = r#"{"name":"from-curl"}"#;
    let mut stream = connector.connect(&endpoint).await.unwrap();
    let request = format!(
        "POST /api/v1/pools/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{body}",
        server.admin_token,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply).await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.contains("pool from-curl created"), "{reply}");
    assert!(
        server
            .control
            .state
            .lock()
            .unwrap()
            .pools
            .contains_key("from-curl")
    );
    server.stop().await;
}
