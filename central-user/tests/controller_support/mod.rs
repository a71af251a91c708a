//! A controller on the in-memory data plane, with a virtual clock and a traffic generator.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]
#![expect(
    clippy::unwrap_used,
    reason = "test harness: a failed call is a failed test"
)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sluice_central::controller::memory::Verdict;
use sluice_central::controller::{
    BalancerConfig, Controller, InstallRequest, MemoryDataPlane, SyncRequest,
};
use sluice_common::protocol::{PeerMetrics, Register};

pub const LISTENER: &str = "198.18.0.1:2055";

pub struct Lab {
    pub c: Controller<MemoryDataPlane>,
    pub t0: Instant,
    /// Virtual time since t0.
    pub now: Duration,
    /// Peers that keep heartbeating.
    pub alive: Vec<String>,
    /// Living peers that answer no sync or installation (a hung control path).
    pub silent: Vec<String>,
    /// Every installation Central asked for, in order.
    pub installs: Vec<InstallRequest>,
    /// Every sync Central asked for, in order.
    pub syncs: Vec<SyncRequest>,
}

pub fn exporter(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        198,
        18,
        10 + (i / 200) as u8,
        (i % 200) as u8 + 1,
    ))
}

pub fn registration(name: &str, octet: u8) -> Register {
    Register {
        token: String::new(),
        name: name.into(),
        uuid: uuid::Uuid::from_u128(u128::from(octet)),
        version: "0.1.0".into(),
        data_addr: IpAddr::V4(Ipv4Addr::new(198, 18, 2, octet)),
        ports: vec![2055],
        weight: 1,
        pool: None,
        epoch_seen: 0,
    }
}

impl Lab {
    pub fn new(balancer: BalancerConfig, peers: &[&str]) -> Self {
        let t0 = Instant::now();
        let (mut c, report) = Controller::new(MemoryDataPlane::new(), balancer, t0).unwrap();
        assert!(report.is_clean());
        c.set_listener(LISTENER.parse().unwrap(), "default")
            .unwrap();
        let mut lab = Self {
            c,
            t0,
            now: Duration::ZERO,
            alive: Vec::new(),
            silent: Vec::new(),
            installs: Vec::new(),
            syncs: Vec::new(),
        };
        for (i, name) in peers.iter().enumerate() {
            lab.c
                .register_peer(&registration(name, i as u8 + 2), t0)
                .unwrap();
            lab.alive.push((*name).into());
        }
        lab
    }

    pub fn at(&self) -> Instant {
        self.t0 + self.now
    }

    /// One datagram from `src`; events go to the controller like the ring buffer would.
    pub fn send(&mut self, src: IpAddr, len: u64) -> Verdict {
        let dst: SocketAddr = LISTENER.parse().unwrap();
        let now_ns = self.now.as_nanos() as u64;
        let (verdict, event) = self.c.data_plane_mut().deliver(src, dst, len, now_ns);
        if let Some(ev) = event {
            self.c.on_exporter_event(&ev, self.at()).unwrap();
        }
        verdict
    }

    /// Advances the clock by `secs` seconds in one-second steps: living peers heartbeat,
    /// exporters send `rates[i]` datagrams per second, and the controller ticks.
    pub fn run(&mut self, secs: u64, rates: &[(IpAddr, u64)]) {
        for _ in 0..secs {
            self.now += Duration::from_secs(1);
            for (src, n) in rates {
                for _ in 0..*n {
                    self.send(*src, 500);
                }
            }
            let now = self.at();
            for name in self.alive.clone() {
                self.c
                    .heartbeat(&name, PeerMetrics::default(), now)
                    .unwrap();
            }
            self.c.tick(now).unwrap();
            self.answer_peers();
        }
    }

    /// Living peers answer what Central asked of them (template syncs before a move, then
    /// installations), as real peers do within milliseconds; dead peers answer nothing.
    pub fn answer_peers(&mut self) {
        loop {
            let now = self.at();
            let syncs = self.c.take_sync_requests();
            let installs = self.c.take_install_requests();
            if syncs.is_empty() && installs.is_empty() {
                return;
            }
            let answers = |peer: &String| self.alive.contains(peer) && !self.silent.contains(peer);
            let synced: Vec<_> = syncs.iter().filter(|s| answers(&s.peer)).cloned().collect();
            let installed: Vec<_> = installs
                .iter()
                .filter(|i| answers(&i.peer))
                .cloned()
                .collect();
            for s in synced {
                self.c.templates_synced(&s.peer, s.request_id, now).unwrap();
            }
            for i in installed {
                self.c
                    .templates_installed(&i.peer, i.request_id, now)
                    .unwrap();
            }
            self.syncs.extend(syncs);
            self.installs.extend(installs);
        }
    }

    pub fn kill(&mut self, name: &str) {
        self.alive.retain(|n| n != name);
    }

    pub fn peer_id(&self, name: &str) -> u32 {
        self.c
            .peer_views(self.at(), std::time::SystemTime::now())
            .into_iter()
            .find(|p| p.name == name)
            .unwrap()
            .id
    }

    /// `EXPORTERS` grouped by peer id.
    /// (Living peers answer Central first.)
    pub fn by_peer(&mut self) -> BTreeMap<u32, Vec<IpAddr>> {
        self.answer_peers();
        let mut out: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
        for (addr, v) in
            sluice_central::controller::DataPlane::exporters(self.c.data_plane()).unwrap()
        {
            out.entry(v.peer_id).or_default().push(addr);
        }
        out
    }
}
