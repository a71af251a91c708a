//! softflowd, the real exporter of `oracle_softflowd` and `kafka_tansu`: the deterministic
//! traffic it reads from a pcap, what it exports of it, and the process itself. Needs the test
//! crate's `oracle` module.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::oracle::{ipv4_frame, tools_available};

/// Capture time of the first packet of [`traffic`], µs since the epoch.
pub const T0_US: u64 = 1_700_000_000_000_000;

/// What softflowd exports of [`traffic`] per `-v` version: (version, packets, IP bytes, flows).
/// v5 carries only the IPv4 part (TCP both ways, UDP, ICMP and the 60 DNS flows); v9 and IPFIX
/// add the IPv6 UDP and ICMPv6 flows.
pub const EXPORTS: [(&str, u64, u64, usize); 3] = [
    ("5", 68, 4168, 64),
    ("9", 70, 4288, 66),
    ("10", 70, 4288, 66),
];

/// Whether softflowd runs; without it the test fails when `CI=true` and prints a skip
/// otherwise.
pub fn softflowd_available() -> bool {
    tools_available(&[("softflowd", &["-h"])])
}

fn tcp(sport: u16, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.resize(20 + payload, 0x61);
    t
}

fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.resize(8 + payload, 0x62);
    u
}

fn icmp(kind: u8, code: u8) -> Vec<u8> {
    vec![kind, code, 0, 0, 0, 1, 0, 1, 0x63, 0x63, 0x63, 0x63]
}

fn ipv6_frame(src: Ipv6Addr, dst: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(l4);
    f
}

/// The traffic: (time µs, frame). IPv4 TCP both ways, UDP, ICMP; IPv6 UDP and ICMPv6.
pub fn traffic() -> Vec<(u64, Vec<u8>)> {
    let a = |d| Ipv4Addr::new(10, 0, 0, d);
    let v6 = |d: u16| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, d);
    vec![
        (T0_US, ipv4_frame(a(1), a(2), 6, 0, &tcp(1234, 80, 0x02, 0))),
        (
            T0_US + 100_000,
            ipv4_frame(a(2), a(1), 6, 0, &tcp(80, 1234, 0x12, 0)),
        ),
        (
            T0_US + 200_000,
            ipv4_frame(a(1), a(2), 6, 0, &tcp(1234, 80, 0x18, 300)),
        ),
        (
            T0_US + 300_000,
            ipv4_frame(a(2), a(1), 6, 0, &tcp(80, 1234, 0x18, 1200)),
        ),
        (
            T0_US + 2_000_000,
            ipv4_frame(a(1), a(2), 6, 0, &tcp(1234, 80, 0x11, 0)),
        ),
        (
            T0_US + 500_000,
            ipv4_frame(a(3), a(4), 17, 0xb8, &udp(5353, 53, 40)),
        ),
        (
            T0_US + 600_000,
            ipv4_frame(a(3), a(4), 17, 0xb8, &udp(5353, 53, 60)),
        ),
        (T0_US + 700_000, ipv4_frame(a(5), a(6), 1, 0, &icmp(8, 0))),
        (
            T0_US + 800_000,
            ipv6_frame(v6(1), v6(2), 17, &udp(5000, 53, 20)),
        ),
        (T0_US + 900_000, ipv6_frame(v6(3), v6(4), 58, &icmp(128, 0))),
    ]
    .into_iter()
    // 60 one-packet DNS flows, so every version needs several export datagrams (sequence
    // numbers then run across datagrams).
    .chain((0..60u16).map(|i| {
        (
            T0_US + 1_000_000 + u64::from(i) * 1000,
            ipv4_frame(a(7), a(8), 17, 0, &udp(20_000 + i, 53, 10)),
        )
    }))
    .collect::<std::collections::BTreeMap<_, _>>()
    .into_iter()
    .collect()
}

/// A softflowd that reads a pcap to its end and exports every flow of it; killed on drop.
pub struct Softflowd {
    child: Child,
    version: String,
}

impl Softflowd {
    /// `softflowd -r PCAP -n TO -v VERSION` in the foreground (`-d`), on the pcap's clock (`-a`,
    /// so times are reproducible). At the end of the pcap it expires every flow, exports it and
    /// exits. Reading a pcap it opens no control socket and writes no pid file (with `-c` it
    /// would stay up, serving the socket, after the pcap ended).
    pub fn start(pcap: &Path, to: SocketAddr, version: &str) -> Softflowd {
        let child = Command::new("softflowd")
            .arg("-r")
            .arg(pcap)
            .args(["-n", &to.to_string(), "-v", version, "-d", "-a"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn softflowd");
        Softflowd {
            child,
            version: version.to_owned(),
        }
    }

    /// Whether it has exited; panics (with its stderr) if it failed.
    pub fn exited(&mut self) -> bool {
        let Some(status) = self.child.try_wait().expect("softflowd status") else {
            return false;
        };
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("softflowd -v {} failed: {status}: {err}", self.version);
        }
        true
    }
}

impl Drop for Softflowd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
