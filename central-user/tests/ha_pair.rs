//! A hot-standby pair in one process: two real `ha::Node`s, each behind its own control API on
//! loopback and its own tokio runtime (dropping a runtime is the host dying), with the real
//! controller over the in-memory data plane and a virtual IP modelled on a shared segment.
//! The HA link between them runs through TCP relays the test can cut. The netns tests
//! (`tests/tests/netns_ha.rs`) do the same with XDP, real addresses and datagrams.
#![expect(clippy::unwrap_used, reason = "test code")]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_central::api::{self, ApiContext, CertSource, HaControl, IdentityCell, LiveControl};
use sluice_central::api::{Sessions, TlsIdentity};
use sluice_central::auth::{Authenticator, RateLimit, TokenKind, token_generate};
use sluice_central::controller::{BalancerConfig, Controller, MemoryDataPlane};
use sluice_central::ha::link::Credential;
use sluice_central::ha::node::{self, Node, NodeConfig, VipControl};
use tokio::net::{TcpListener, TcpStream};

const HEARTBEAT: Duration = Duration::from_millis(50);
const TAKEOVER: Duration = Duration::from_millis(300);
const SECRET: &[u8] = b"0123456789abcdef-the-pair";

/// The exporters' segment: who holds the virtual IP, and which holders still answer.
#[derive(Default)]
struct Segment {
    holders: Mutex<Vec<String>>,
    dead: Mutex<Vec<String>>,
}

impl Segment {
    fn holders(&self) -> Vec<String> {
        self.holders.lock().unwrap().clone()
    }
}

struct FakeVip {
    me: String,
    segment: Arc<Segment>,
}

impl VipControl for FakeVip {
    fn claim(&self) -> Result<(), node::VipFailure> {
        let mut h = self.segment.holders.lock().unwrap();
        if !h.contains(&self.me) {
            h.push(self.me.clone());
        }
        Ok(())
    }

    fn announce(&self) -> Result<(), node::VipFailure> {
        Ok(())
    }

    fn release(&self) -> Result<(), node::VipFailure> {
        self.segment
            .holders
            .lock()
            .unwrap()
            .retain(|n| n != &self.me);
        Ok(())
    }

    fn held_elsewhere(&self, _wait: Duration) -> Result<bool, node::VipFailure> {
        let dead = self.segment.dead.lock().unwrap().clone();
        Ok(self
            .segment
            .holders()
            .iter()
            .any(|h| h != &self.me && !dead.contains(h)))
    }
}

/// A TCP relay for the HA link that the test can cut.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

async fn relay(to: SocketAddr) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let flag = flag.clone();
            tokio::spawn(async move {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut outbound) = TcpStream::connect(to).await else {
                    return;
                };
                let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                let watch = async {
                    while !flag.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                };
                tokio::select! {
                    _ = copy => {}
                    () = watch => {}
                }
            });
        }
    });
    Relay { addr, cut }
}

/// One Central of the pair on its own runtime.
struct Central {
    rt: Option<tokio::runtime::Runtime>,
    node: Arc<Node<MemoryDataPlane>>,
    controller: Arc<Mutex<Controller<MemoryDataPlane>>>,
}

impl Central {
    fn start(
        name: &str,
        priority: u8,
        dir: &Path,
        listener: std::net::TcpListener,
        partner: (&str, SocketAddr),
        secret: &[u8],
        segment: &Arc<Segment>,
    ) -> Central {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (controller, _) = Controller::new(
            MemoryDataPlane::new(),
            BalancerConfig::default(),
            Instant::now(),
        )
        .unwrap();
        let controller = Arc::new(Mutex::new(controller));
        let sessions = Sessions::default();
        let tls = TlsIdentity::load(&CertSource::StateDir {
            dir: dir.into(),
            extra_names: Vec::new(),
        })
        .unwrap();
        let identity = Arc::new(IdentityCell::new(tls.clone()));
        let cfg = NodeConfig {
            name: name.into(),
            priority,
            partner: partner.0.into(),
            partner_addr: partner.1,
            heartbeat: HEARTBEAT,
            takeover_timeout: TAKEOVER,
            preempt: false,
            vips: vec!["198.18.200.1/24".into()],
            interface: "fake0".into(),
            credential: Credential::from_bytes(secret),
            files: node::files(dir.into(), true),
        };
        let vip = Arc::new(FakeVip {
            me: name.into(),
            segment: segment.clone(),
        });
        let node = {
            let _guard = rt.enter();
            let node = Node::new(
                cfg,
                controller.clone(),
                sessions.clone(),
                identity.clone(),
                vip,
            )
            .unwrap();
            node.spawn();
            node
        };
        let auth = Arc::new(Authenticator::open(dir, RateLimit::default()).unwrap());
        let live = Arc::new(LiveControl::new(controller.clone(), sessions.clone()));
        let ctx = ApiContext::new(tls, auth, live, sessions).with_ha(node.clone(), identity);
        rt.spawn(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = TcpListener::from_std(listener).unwrap();
            api::serve(listener, Arc::new(ctx), std::future::pending()).await;
        });
        Central {
            rt: Some(rt),
            node,
            controller,
        }
    }

    fn role(&self) -> String {
        self.node.status().role
    }

    /// The host dies: every task of this Central stops at once.
    fn die(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        self.die();
    }
}

fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

struct Pair {
    a: Central,
    b: Central,
    to_a: Relay,
    to_b: Relay,
    segment: Arc<Segment>,
    dirs: (tempfile::TempDir, tempfile::TempDir),
    _relays: tokio::runtime::Runtime,
}

fn bind() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

impl Pair {
    fn start() -> Pair {
        let relays = tokio::runtime::Runtime::new().unwrap();
        let (la, lb) = (bind(), bind());
        let (to_a, to_b) = relays.block_on(async {
            (
                relay(la.local_addr().unwrap()).await,
                relay(lb.local_addr().unwrap()).await,
            )
        });
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let now = std::time::SystemTime::now();
        token_generate(dirs.0.path(), TokenKind::Peer, None, now).unwrap();
        let segment = Arc::new(Segment::default());
        let a = Central::start(
            "a",
            200,
            dirs.0.path(),
            la,
            ("b", to_b.addr),
            SECRET,
            &segment,
        );
        let b = Central::start(
            "b",
            100,
            dirs.1.path(),
            lb,
            ("a", to_a.addr),
            SECRET,
            &segment,
        );
        Pair {
            a,
            b,
            to_a,
            to_b,
            segment,
            dirs,
            _relays: relays,
        }
    }

    fn settled(&self) {
        wait_for("a active, b synced", 5, || {
            self.a.role() == "active"
                && self.b.role() == "standby"
                && self.b.node.status().mirror_synced
                && self.a.node.status().mirror_synced
        });
    }
}

#[test]
fn the_higher_priority_becomes_active_and_every_change_reaches_the_standby_at_once() {
    let p = Pair::start();
    p.settled();
    assert_eq!(p.segment.holders(), vec!["a".to_string()]);
    let (a, b) = (p.a.node.status(), p.b.node.status());
    assert_eq!(
        (a.epoch, b.epoch),
        (1, 1),
        "the standby follows the active's term"
    );
    assert!(a.link_up && b.link_up);
    assert!(p.b.node.refusal().is_some() && p.a.node.refusal().is_none());

    // Changes on the active appear on the standby's controller (and so its maps).
    let before = p.b.node.status().mirror_seq;
    {
        let mut c = p.a.controller.lock().unwrap();
        c.create_pool("edge").unwrap();
        c.set_listener("198.18.0.1:2055".parse().unwrap(), "edge")
            .unwrap();
    }
    let took = wait_for("the pool on the standby", 2, || {
        p.b.controller.lock().unwrap().snapshot() == p.a.controller.lock().unwrap().snapshot()
    });
    assert!(took < Duration::from_secs(1), "{took:?}");
    wait_for("the standby's sequence", 1, || {
        p.b.node.status().mirror_seq > before
    });
    assert_eq!(
        p.b.controller
            .lock()
            .unwrap()
            .data_plane()
            .listener("198.18.0.1:2055".parse().unwrap()),
        Some(1),
        "the standby's data plane follows"
    );
    // Token hashes and the API certificate went along.
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(
        read(p.dirs.1.path(), "tokens.json"),
        read(p.dirs.0.path(), "tokens.json")
    );
    assert_eq!(
        read(p.dirs.1.path(), "cert.pem"),
        read(p.dirs.0.path(), "cert.pem")
    );
    // The active measured the standby's application of each change.
    let lag = p.a.node.status().mirror_lag_ms.unwrap();
    assert!(lag < 100, "mirror lag {lag} ms");
}

#[test]
fn host_death_hands_the_role_and_the_state_to_the_standby() {
    let mut p = Pair::start();
    p.settled();
    p.a.controller.lock().unwrap().create_pool("kept").unwrap();
    wait_for("mirrored", 2, || {
        p.b.controller.lock().unwrap().snapshot() == p.a.controller.lock().unwrap().snapshot()
    });
    let state = p.a.controller.lock().unwrap().snapshot();
    p.segment.dead.lock().unwrap().push("a".into());
    p.a.die();
    let took = wait_for("b active", 3, || p.b.role() == "active");
    assert!(
        // The last heartbeat left up to one interval before the death.
        took + HEARTBEAT >= TAKEOVER && took < TAKEOVER + Duration::from_millis(500),
        "takeover after {took:?}"
    );
    let b = p.b.node.status();
    assert_eq!(b.epoch, 2);
    assert_eq!(b.takeovers, 1);
    assert!(b.last_change_reason.unwrap().contains("silent"));
    assert!(p.segment.holders().contains(&"b".to_string()));
    assert_eq!(p.b.controller.lock().unwrap().snapshot(), state);
}

#[test]
fn a_cut_ha_link_alone_never_makes_two_actives() {
    let p = Pair::start();
    p.settled();
    p.to_a.cut.store(true, Ordering::Relaxed);
    p.to_b.cut.store(true, Ordering::Relaxed);
    wait_for("the link down on b", 3, || !p.b.node.status().link_up);
    // Well past the takeover timeout: b heard nobody on the link, but a still answers for
    // the virtual IP on the segment, so b holds back every time.
    std::thread::sleep(TAKEOVER * 4);
    assert_eq!(
        (p.a.role().as_str(), p.b.role().as_str()),
        ("active", "standby")
    );
    assert_eq!(p.segment.holders(), vec!["a".to_string()]);
    assert!(p.b.node.status().takeovers_refused > 0);
    // The link comes back: b resynchronises from a snapshot.
    p.a.controller
        .lock()
        .unwrap()
        .create_pool("while-cut")
        .unwrap();
    p.to_a.cut.store(false, Ordering::Relaxed);
    p.to_b.cut.store(false, Ordering::Relaxed);
    wait_for("b resynchronised", 3, || {
        p.b.controller.lock().unwrap().snapshot() == p.a.controller.lock().unwrap().snapshot()
    });
    assert_eq!(p.b.node.status().takeovers, 0);
}

#[test]
fn switchover_and_a_returning_old_active_settle_without_flapping() {
    let mut p = Pair::start();
    p.settled();
    assert!(
        p.b.node.switchover().is_err(),
        "the standby cannot hand over"
    );
    p.a.node.switchover().unwrap();
    wait_for("b active, a standby", 3, || {
        p.b.role() == "active" && p.a.role() == "standby"
    });
    assert_eq!(p.segment.holders(), vec!["b".to_string()]);
    assert_eq!(p.b.node.status().epoch, 2);
    assert!(
        p.b.node
            .status()
            .last_change_reason
            .unwrap()
            .contains("switchover")
    );

    // b's host dies, a takes over; then b comes back (same state dir): it stays the standby.
    p.segment.dead.lock().unwrap().push("b".into());
    p.b.die();
    wait_for("a active again", 3, || p.a.role() == "active");
    assert_eq!(p.a.node.status().epoch, 3);
    p.segment.dead.lock().unwrap().clear();
    p.segment.holders.lock().unwrap().retain(|h| h != "b");
    // b restarts on another port: a keeps dialling b's old address in vain, and b's own link
    // to a is enough.
    let lb = bind();
    p.b = Central::start(
        "b",
        100,
        p.dirs.1.path(),
        lb,
        ("a", p.to_a.addr),
        SECRET,
        &p.segment,
    );
    wait_for("b back as the synced standby", 5, || {
        p.b.role() == "standby" && p.b.node.status().mirror_synced
    });
    let epoch = p.a.node.status().epoch;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            (p.a.role().as_str(), p.b.role().as_str()),
            ("active", "standby")
        );
    }
    assert_eq!(p.a.node.status().epoch, epoch, "no flapping");
    assert_eq!(p.b.node.status().epoch, epoch);
}

#[test]
fn a_wrong_credential_is_refused_and_counted() {
    let segment = Arc::new(Segment::default());
    let (la, lb) = (bind(), bind());
    let (addr_a, addr_b) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Central::start("a", 200, dirs.0.path(), la, ("b", addr_b), SECRET, &segment);
    let b = Central::start(
        "b",
        100,
        dirs.1.path(),
        lb,
        ("a", addr_a),
        b"another-secret-16b",
        &segment,
    );
    wait_for("refusals on both", 3, || {
        a.node.status().link_refused > 0 && b.node.status().link_refused > 0
    });
    assert!(!a.node.status().link_up && !b.node.status().link_up);
    assert!(
        b.node.status().partner_role.is_none(),
        "nothing from a refused link is believed"
    );
}

#[test]
fn a_peer_registered_under_a_newer_epoch_makes_the_active_step_down() {
    let p = Pair::start();
    p.settled();
    let epoch = p.a.node.status().epoch;
    assert!(!p.a.node.saw_epoch(epoch), "the same epoch is no news");
    assert!(p.a.node.saw_epoch(epoch + 5), "the session is refused");
    // a steps down at once, and takes the newer term: whoever takes over next is newer still.
    wait_for("a stepped down under the newer term", 2, || {
        p.a.node.status().epoch >= epoch + 5
    });
    wait_for("one active again", 3, || {
        [p.a.role(), p.b.role()]
            .iter()
            .filter(|r| *r == "active")
            .count()
            == 1
    });
    let active = if p.a.role() == "active" { &p.a } else { &p.b };
    assert!(active.node.status().epoch > epoch + 5);
}
