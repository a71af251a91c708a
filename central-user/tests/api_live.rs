//! The control API on the real controller (in-memory data plane): peers register through the
//! client library, the admin API drives pools, listeners and source groups, and a manual move
//! installs the exporter's templates on the new peer before the map entry flips.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_central::cli::client::{AdminClient, CallError};
use sluice_central::controller::{Controller, ListenerState, MemoryDataPlane, SourceGroupState};
use sluice_central::testing::{Server, eventually};
use sluice_common::client::{Endpoint, PeerClient, PeerClientConfig, PeerHandle, PeerHooks};
use sluice_common::protocol::{
    AdminReply, AdminRequest, Cidr, ErrorCode, ListenerView, PeerMetrics, PeerStatus,
    SourceGroupView, Templates,
};
use sluice_common::{ExporterEvent, event_kind};

#[derive(Default)]
struct Hooks {
    installed: Mutex<Vec<Templates>>,
}

impl PeerHooks for Hooks {
    fn metrics(&self) -> PeerMetrics {
        PeerMetrics {
            cpu_load_pct: 5.0,
            start_time_unix_s: 1_795_219_200,
            ..PeerMetrics::default()
        }
    }

    fn install_templates(&self, templates: Vec<Templates>) {
        self.installed.lock().expect("hook lock").extend(templates);
    }
}

fn peer(server: &Server, name: &str, addr: &str) -> (Arc<Hooks>, PeerHandle) {
    let hooks = Arc::new(Hooks::default());
    let config = PeerClientConfig::new(
        Endpoint::parse(&server.url).expect("url"),
        server.pin(),
        server.peer_token.clone(),
        name.into(),
        addr.parse().expect("address"),
        vec![2055],
    );
    let (client, handle) = PeerClient::new(config, hooks.clone()).expect("peer client");
    tokio::spawn(client.run());
    (hooks, handle)
}

fn mapped(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

async fn exporter_peer(admin: &AdminClient, addr: IpAddr) -> Option<String> {
    let AdminReply::Exporters(list) = admin
        .call(&AdminRequest::ExportersList)
        .await
        .expect("exporters list")
    else {
        panic!("not an exporter list");
    };
    list.into_iter().find(|x| x.address == addr)?.peer
}

#[tokio::test]
async fn peers_pools_and_a_template_first_move() {
    let server = Server::start_live().await;
    let controller = server.live.clone().unwrap();
    let admin =
        AdminClient::new(&server.url, &server.pin(), Some(server.admin_token.clone())).unwrap();
    let (_hooks_a, a) = peer(&server, "peer-a", "198.18.2.2");
    let (hooks_b, b) = peer(&server, "peer-b", "198.18.2.3");
    assert!(eventually(5, || a.is_connected() && b.is_connected()).await);

    // Connected Peers: both ONLINE in the default pool, metrics from the heartbeats.
    assert!(
        eventually(5, || {
            let c = controller.lock().unwrap();
            c.peer_views(std::time::Instant::now(), std::time::SystemTime::now())
                .iter()
                .all(|p| p.metrics.is_some())
        })
        .await
    );
    let AdminReply::Peers(peers) = admin.call(&AdminRequest::PeersList).await.unwrap() else {
        panic!("not a peer list");
    };
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().all(|p| p.status == PeerStatus::Online));
    assert!(peers.iter().all(|p| p.pool.as_deref() == Some("default")));
    let id_a = peers.iter().find(|p| p.name == "peer-a").unwrap().id;

    // An exporter the XDP program placed on peer-a, whose templates peer-a reported.
    let exporter: IpAddr = "198.18.0.10".parse().unwrap();
    controller
        .lock()
        .unwrap()
        .on_exporter_event(
            &ExporterEvent {
                addr: mapped(exporter),
                kind: event_kind::NEW_EXPORTER,
                pool_id: 0,
                peer_id: id_a,
                _pad: 0,
            },
            std::time::Instant::now(),
        )
        .unwrap();
    let templates = Templates {
        exporter,
        observation_domain: 1,
        bytes: vec![9; 40],
    };
    assert!(a.report_templates(templates.clone()));
    assert!(
        eventually(5, || !controller
            .lock()
            .unwrap()
            .templates_for(exporter)
            .is_empty())
        .await
    );

    // Move it: peer-b installs the templates, acknowledges, and only then the entry flips.
    admin
        .call(&AdminRequest::ExportersMove {
            addr: exporter,
            peer: "peer-b".into(),
        })
        .await
        .unwrap();
    assert!(eventually(5, || !hooks_b.installed.lock().unwrap().is_empty()).await);
    assert_eq!(*hooks_b.installed.lock().unwrap(), vec![templates]);
    let mut moved = false;
    for _ in 0..100 {
        if exporter_peer(&admin, exporter).await.as_deref() == Some("peer-b") {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(moved, "the exporter did not flip to peer-b");

    // Pools.
    admin
        .call(&AdminRequest::PoolsCreate {
            name: "edge".into(),
        })
        .await
        .unwrap();
    let err = admin
        .call(&AdminRequest::PoolsAssign {
            pool: "nope".into(),
            peer: "peer-a".into(),
            weight: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Api {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{err}"
    );
    let AdminReply::Balancer(settings) = admin
        .call(&AdminRequest::BalancerSet(
            sluice_common::protocol::BalancerPatch {
                distribution_margin_pct: Some(7.5),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
    else {
        panic!("not balancer settings");
    };
    assert_eq!(settings.distribution_margin_pct, 7.5);

    let AdminReply::Status(status) = admin.call(&AdminRequest::Status).await.unwrap() else {
        panic!("not a status");
    };
    assert_eq!(
        (status.peers, status.peers_online, status.exporters),
        (2, 2, 1)
    );
    assert_eq!(status.fingerprint, server.fingerprint);
    // The new pool has no peer: status says so.
    assert!(
        status
            .pools_without_healthy_peer()
            .any(|p| p.name == "edge")
    );

    let metrics = admin.metrics().await.unwrap();
    assert!(
        metrics
            .contains("sluice_peer_status{peer=\"peer-a\",pool=\"default\",status=\"ONLINE\"} 1"),
        "{metrics}"
    );

    a.shutdown();
    b.shutdown();
    server.stop().await;
}

async fn call_err(admin: &AdminClient, request: AdminRequest) -> (ErrorCode, String) {
    match admin.call(&request).await {
        Err(CallError::Api { code, message }) => (code, message),
        other => panic!("{request:?}: expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn listeners_and_source_groups_at_run_time() {
    let server = Server::start_live().await;
    let controller = server.live.clone().unwrap();
    let admin =
        AdminClient::new(&server.url, &server.pin(), Some(server.admin_token.clone())).unwrap();
    admin
        .call(&AdminRequest::PoolsCreate {
            name: "edge".into(),
        })
        .await
        .unwrap();
    let edge = controller.lock().unwrap().snapshot().pools[1].clone();
    assert_eq!(edge.name, "edge");

    let listener: SocketAddr = "198.18.0.1:4739".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:2055".parse().unwrap();
    let group: Cidr = "10.20.0.0/16".parse().unwrap();
    for request in [
        AdminRequest::ListenersAdd {
            addr: listener,
            pool: "edge".into(),
        },
        AdminRequest::ListenersAdd {
            addr: v6,
            pool: "default".into(),
        },
        AdminRequest::GroupsAdd {
            cidr: group,
            pool: "default".into(),
        },
    ] {
        let reply = admin.call(&request).await.unwrap();
        assert!(matches!(reply, AdminReply::Done(_)), "{reply:?}");
    }

    let AdminReply::Listeners(listeners) = admin.call(&AdminRequest::ListenersList).await.unwrap()
    else {
        panic!("not a listener list");
    };
    assert_eq!(
        listeners,
        [
            ListenerView {
                address: listener,
                pool: "edge".into()
            },
            ListenerView {
                address: v6,
                pool: "default".into()
            },
        ]
    );
    let AdminReply::Groups(groups) = admin.call(&AdminRequest::GroupsList).await.unwrap() else {
        panic!("not a source group list");
    };
    assert_eq!(
        groups,
        [SourceGroupView {
            cidr: group,
            pool: "default".into()
        }]
    );

    // The maps: a new exporter inside the group goes to its pool, any other to the listener's.
    {
        let mut c = controller.lock().unwrap();
        let dp = c.data_plane_mut();
        assert_eq!(dp.listener(listener), Some(edge.id));
        assert_eq!(dp.listener(v6), Some(0));
        assert_eq!(dp.source_group("10.20.3.4".parse().unwrap()), Some(0));
        let pool_of = |dp: &mut MemoryDataPlane, src: &str| {
            dp.deliver(src.parse().unwrap(), listener, 100, 1)
                .1
                .map(|e| e.pool_id)
        };
        assert_eq!(pool_of(dp, "10.20.3.4"), Some(0));
        assert_eq!(pool_of(dp, "198.51.100.7"), Some(edge.id));
    }

    // Persisted: in the snapshot, and back in fresh maps after a restore.
    let snapshot = controller.lock().unwrap().snapshot();
    assert_eq!(
        snapshot.listeners,
        [
            ListenerState {
                addr: listener,
                pool: edge.id
            },
            ListenerState { addr: v6, pool: 0 },
        ]
    );
    assert_eq!(
        snapshot.source_groups,
        [SourceGroupState {
            net: group,
            pool: 0
        }]
    );
    let (restored, _) =
        Controller::restore(MemoryDataPlane::new(), snapshot, Instant::now()).unwrap();
    assert_eq!(restored.data_plane().listener(listener), Some(edge.id));
    assert_eq!(
        restored
            .data_plane()
            .source_group("10.20.255.255".parse().unwrap()),
        Some(0)
    );

    // Unknown pools and entries are NotFound, naming them; a used pool cannot be deleted.
    let (code, message) = call_err(
        &admin,
        AdminRequest::ListenersAdd {
            addr: listener,
            pool: "nope".into(),
        },
    )
    .await;
    assert_eq!(code, ErrorCode::NotFound);
    assert!(message.contains("nope"), "{message}");
    let (code, _) = call_err(
        &admin,
        AdminRequest::GroupsAdd {
            cidr: group,
            pool: "nope".into(),
        },
    )
    .await;
    assert_eq!(code, ErrorCode::NotFound);
    assert_eq!(
        controller.lock().unwrap().data_plane().listener(listener),
        Some(edge.id)
    );
    let (code, message) = call_err(
        &admin,
        AdminRequest::GroupsRemove {
            cidr: "10.30.0.0/16".parse().unwrap(),
        },
    )
    .await;
    assert_eq!(code, ErrorCode::NotFound);
    assert!(message.contains("10.30.0.0/16"), "{message}");
    let (code, _) = call_err(
        &admin,
        AdminRequest::PoolsDelete {
            name: "edge".into(),
        },
    )
    .await;
    assert_eq!(code, ErrorCode::Conflict);

    // Moving a listener to another pool, then removing both.
    admin
        .call(&AdminRequest::ListenersAdd {
            addr: listener,
            pool: "default".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        controller.lock().unwrap().data_plane().listener(listener),
        Some(0)
    );
    admin
        .call(&AdminRequest::ListenersRemove { addr: listener })
        .await
        .unwrap();
    admin
        .call(&AdminRequest::GroupsRemove { cidr: group })
        .await
        .unwrap();
    {
        let c = controller.lock().unwrap();
        assert_eq!(c.data_plane().listener(listener), None);
        assert_eq!(
            c.data_plane().source_group("10.20.3.4".parse().unwrap()),
            None
        );
        let snapshot = c.snapshot();
        assert_eq!(snapshot.listeners, [ListenerState { addr: v6, pool: 0 }]);
        assert!(snapshot.source_groups.is_empty());
    }
    admin
        .call(&AdminRequest::PoolsDelete {
            name: "edge".into(),
        })
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_full_listener_map_is_a_conflict_not_a_failure() {
    let server = Server::start_live().await;
    let controller = server.live.clone().unwrap();
    let admin =
        AdminClient::new(&server.url, &server.pin(), Some(server.admin_token.clone())).unwrap();
    let port = |i: u32| SocketAddr::new("198.18.0.1".parse().unwrap(), 1000 + i as u16);
    {
        let mut c = controller.lock().unwrap();
        for i in 0..sluice_common::MAX_LISTENERS {
            c.set_listener(port(i), "default").unwrap();
        }
    }
    let (code, message) = call_err(
        &admin,
        AdminRequest::ListenersAdd {
            addr: port(sluice_common::MAX_LISTENERS),
            pool: "default".into(),
        },
    )
    .await;
    assert_eq!(code, ErrorCode::Conflict, "{message}");
    assert!(message.contains("listeners are in use"), "{message}");
    // An existing listener can still change pool.
    admin
        .call(&AdminRequest::ListenersAdd {
            addr: port(0),
            pool: "default".into(),
        })
        .await
        .unwrap();
    server.stop().await;
}
