//! The XDP program loaded into a private network namespace with a known routing table and
//! neighbour cache, maps provisioned through the real map writer and Maglev builder. Shared by
//! the BPF_PROG_TEST_RUN fixture tests and `cargo xtask bench xdp`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aya::programs::{TestRun, TestRunOptions};
use sluice_central::{
    controller::dataplane::DataPlane,
    loader::{self, AttachMode, LoadOptions, Loaded},
    maglev::{Member, build_table},
};
use sluice_common::{
    ExporterEvent, ExporterValue, POOL_TABLE_SIZE, PeerEntry, Reason, family, peer_state,
    to_key_bytes,
};

use crate::{
    PinDir,
    netns::{ifindex, mac, unshare_thread},
    packet::Frame,
    run,
};

pub const XDP_PASS: u32 = 2;
pub const XDP_DROP: u32 = 1;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub const LISTENER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const LISTENER6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
pub const PINNED4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
pub const PINNED6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x10);
pub const PEER_A: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
pub const PEER_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 3);
pub const PEER_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 99);
pub const PEER_C6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 2);
pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x03];
pub const MAC_C6: [u8; 6] = [0x02, 0, 0, 0, 0x06, 0x02];
pub const PEER_PORT: u16 = 9995;

/// Peer ids: 0 = a, 1 = b (pool 0, IPv4), 2 = c6 (pool 1, IPv6), 3 = unresolved neighbour
/// (pool 2), 4 = down (pool 0).
pub struct XdpLab {
    /// The loaded program and maps.
    pub loaded: Loaded,
    /// MAC of the egress veth (`fx0`).
    pub egress_mac: [u8; 6],
    /// Pin directory (removed on drop).
    pub pins: PinDir,
}

/// A `PEERS` entry.
pub fn peer(addr: IpAddr, state: u8, pool_id: u32) -> PeerEntry {
    let family = if addr.is_ipv4() {
        family::V4
    } else {
        family::V6
    };
    PeerEntry {
        addr: to_key_bytes(addr),
        port: PEER_PORT,
        family,
        state,
        pool_id,
    }
}

impl XdpLab {
    /// Moves the calling thread into a fresh namespace and provisions everything.
    pub fn new(tag: &str) -> Self {
        unshare_thread();
        run("ip link add fx0 type veth peer name fx1 && ip link set fx0 up && ip link set fx1 up");
        run("ip addr add 198.18.2.1/24 dev fx0 && ip -6 addr add 2001:2:0:2::1/64 dev fx0 nodad");
        run("ip neigh add 198.18.2.2 lladdr 02:00:00:00:02:02 dev fx0 nud permanent");
        run("ip neigh add 198.18.2.3 lladdr 02:00:00:00:02:03 dev fx0 nud permanent");
        run("ip -6 neigh add 2001:2:0:2::2 lladdr 02:00:00:00:06:02 dev fx0 nud permanent");
        // bpf_fib_lookup refuses to forward unless the ingress device forwards.
        run(
            "sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv4.conf.lo.forwarding=1 net.ipv6.conf.all.forwarding=1",
        );
        let pins = PinDir::new(tag);
        let mut loaded = loader::load(&LoadOptions {
            pin_dir: pins.path().to_owned(),
            interfaces: Vec::new(),
            mode: AttachMode::Auto,
            decrement_ttl: true,
        })
        .expect("load XDP program");
        let ifindex = ifindex("fx0");
        let egress_mac = mac("fx0");
        let m = &mut loaded.maps;
        m.add_egress(ifindex).unwrap();
        m.set_listener(SocketAddr::new(LISTENER4.into(), 2055), 0)
            .unwrap();
        m.set_listener(SocketAddr::new(LISTENER6.into(), 2055), 1)
            .unwrap();
        m.set_listener(SocketAddr::new(LISTENER4.into(), 4739), 2)
            .unwrap();
        m.set_listener(SocketAddr::new(LISTENER4.into(), 6343), 3)
            .unwrap();
        m.set_peer(0, peer(PEER_A.into(), peer_state::UP, 0))
            .unwrap();
        m.set_peer(1, peer(PEER_B.into(), peer_state::UP, 0))
            .unwrap();
        m.set_peer(2, peer(PEER_C6.into(), peer_state::UP, 1))
            .unwrap();
        m.set_peer(3, peer(PEER_UNRESOLVED.into(), peer_state::UP, 2))
            .unwrap();
        m.set_peer(4, peer(PEER_A.into(), peer_state::DOWN, 0))
            .unwrap();
        m.set_pool_table(0, &pool0()).unwrap();
        m.set_pool_table(
            1,
            &build_table(
                &[Member {
                    id: 2,
                    name: "c6",
                    weight: 1,
                }],
                POOL_TABLE_SIZE,
            ),
        )
        .unwrap();
        m.set_pool_table(
            2,
            &build_table(
                &[Member {
                    id: 3,
                    name: "far",
                    weight: 1,
                }],
                POOL_TABLE_SIZE,
            ),
        )
        .unwrap();
        // Pool 3: no healthy peer.
        m.set_pool_table(3, &build_table(&[], POOL_TABLE_SIZE))
            .unwrap();
        m.set_exporter(
            PINNED4.into(),
            ExporterValue {
                peer_id: 0,
                pool_id: 0,
            },
        )
        .unwrap();
        m.set_exporter(
            PINNED6.into(),
            ExporterValue {
                peer_id: 2,
                pool_id: 1,
            },
        )
        .unwrap();
        Self {
            loaded,
            egress_mac,
            pins,
        }
    }

    /// `COUNTERS` summed over CPUs, in slot order.
    pub fn counters(&self) -> Vec<u64> {
        self.loaded
            .maps
            .counters()
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Runs one frame; returns (action, output bytes, counter deltas as (reason, delta)).
    /// Runs one frame once.
    pub fn run(&mut self, input: &[u8]) -> (u32, Vec<u8>, Vec<(Reason, u64)>) {
        let before = self.counters();
        let mut out = vec![0u8; input.len() + 256];
        let prog = self.loaded.program().unwrap();
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        let after = self.counters();
        let deltas = Reason::ALL
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| a != b)
            .map(|(&r, (b, a))| (r, a - b))
            .collect();
        (r.return_value, out, deltas)
    }

    /// Drains the event ring.
    pub fn events(&mut self) -> Vec<ExporterEvent> {
        let mut v = Vec::new();
        while let Some(item) = self.loaded.events.next() {
            assert_eq!(item.len(), size_of::<ExporterEvent>());
            // SAFETY: the kernel wrote exactly one ExporterEvent (checked length; Pod layout).
            v.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ExporterEvent>()) });
        }
        v
    }
}

/// Pool 0's table (peers a and b).
pub fn pool0() -> Vec<u32> {
    build_table(
        &[
            Member {
                id: 0,
                name: "a",
                weight: 1,
            },
            Member {
                id: 1,
                name: "b",
                weight: 1,
            },
        ],
        POOL_TABLE_SIZE,
    )
}

/// What the program should emit for `input` forwarded to `to` (a peer with MAC `mac`).
pub fn forwarded(
    input: &Frame,
    to: IpAddr,
    mac: [u8; 6],
    egress_mac: [u8; 6],
    keep_vlans: bool,
) -> Vec<u8> {
    let mut f = input.clone();
    f.dst = to;
    f.dport = PEER_PORT;
    f.ttl -= 1;
    f.dst_mac = mac;
    f.src_mac = egress_mac;
    if !keep_vlans {
        f.vlans.clear();
    }
    f.build()
}

/// A 1400-byte frame from `src` to the IPv4 listener.
pub fn v4(src: Ipv4Addr, dport: u16) -> Frame {
    Frame::udp(src.into(), LISTENER4.into(), dport, 1400 - 42)
}
