//! Virtual IP addresses on one interface: claim them, announce them to the segment, release
//! them, and ask the segment whether anybody else holds them (the split-brain witness).
//!
//! # Design
//! - **Addresses are added and removed by running `ip` (iproute2)**, not over netlink from
//!   here. No netlink crate is in the dependency tree: `rtnetlink` brings an async stack
//!   (`netlink-proto`, `futures`) and `netlink-packet-route` alone is a large crate to build on
//!   our two cores, for a handful of calls per failover, never on the data path. `ip address
//!   replace` is idempotent by itself, `ip -json` is a stable machine-readable view, and every
//!   failure is reported with the command line and what `ip` printed
//!   ([`VipError::IpCommand`]). `ip` must be on `PATH` (Central already needs root).
//! - **ARP goes through an `AF_PACKET` socket** bound to the interface: the complete Ethernet
//!   frame is built here (`arp_frame`), padded to the 60-byte Ethernet minimum.
//! - **Neighbour discovery goes through a raw ICMPv6 socket** bound to the interface: the kernel
//!   adds the IPv6 header and always computes the ICMPv6 checksum on raw ICMPv6 sockets
//!   (RFC 3542 §3.1), so the builders leave it zero; the hop limit is set to 255 by socket
//!   option (receivers drop ND messages with any other hop limit, RFC 4861 §7.1).
//! - Sockets are non-blocking and every wait is a bounded `poll`: nothing here can hang.
//!
//! # What the segment sees
//! - [`VipSet::announce`] sends, per IPv4 VIP, a gratuitous ARP request (sender = target =
//!   VIP, target MAC zero, RFC 5227 §2.3) and a gratuitous ARP reply (target MAC = our MAC:
//!   Linux treats a reply as gratuitous only then), both to broadcast; per IPv6 VIP an
//!   unsolicited neighbour advertisement to ff02::1 with the Override flag and the target
//!   link-layer address option. Linux updates an *existing* neighbour entry from either
//!   (tested in `tests/tests/netns_vip.rs`; without the Override flag it keeps the old MAC),
//!   whatever `arp_accept` says: `arp_accept` / `accept_untracked_na` only decide whether a
//!   host *without* an entry creates one, and one without an entry resolves the VIP afresh
//!   the next time it sends to it. The entry becomes STALE, so the host confirms it with a
//!   unicast probe at its next use. Switches learn our MAC on the new port from the
//!   broadcast frames' source address.
//! - [`VipSet::held_elsewhere`] sends ARP *probes* (sender address 0.0.0.0, RFC 5227 §2.1.1)
//!   and neighbour solicitations to the solicited-node group. A probe with a zero sender
//!   address changes nobody's ARP cache; a solicitation teaches only the VIP's holder our
//!   source address (the kernel picks it, preferring the link-local address for this
//!   link-scope destination). Answers from a MAC other than ours mean another host holds
//!   the VIP. Answers are taken at face value: a forged one keeps a standby from taking
//!   over, the safe direction for a split-brain witness.
//!
//! # Operating notes
//! - The IPv6 witness needs a usable (not tentative) address on the interface as the
//!   solicitation's source; right after the link comes up its link-local address is
//!   tentative for about a second and [`VipSet::held_elsewhere`] fails with
//!   `EADDRNOTAVAIL` (a [`VipError::Socket`]).
//! - A host with several interfaces on one segment answers ARP for the VIP on all of them
//!   unless `net.ipv4.conf.all.arp_ignore=1` (Linux default 0).
//! - An IPv4 VIP is added as a secondary address when the interface already has one in the
//!   same subnet; otherwise it becomes the primary and the source of locally originated
//!   traffic into that subnet; a `/32` VIP next to the interface's own address is never
//!   picked as that source.

use std::{
    io::{self, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::Deserialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tracing::{debug, info};

/// A MAC address.
pub type Mac = [u8; 6];

/// One virtual address and the prefix length it is added with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vip {
    /// The address exporters send to.
    pub addr: IpAddr,
    /// Prefix length on the interface (`/32` or `/128` keeps the VIP out of the routing of
    /// the interface's own subnet).
    pub prefix: u8,
}

impl std::fmt::Display for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Everything that can go wrong with virtual addresses.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// The interface does not exist (in this network namespace).
    #[error("interface {interface:?} does not exist")]
    NoInterface {
        /// The name asked for.
        interface: String,
    },
    /// ARP and neighbour discovery are only implemented for Ethernet.
    #[error("interface {interface:?} is not an Ethernet interface (ARP hardware type {hw_type})")]
    NotEthernet {
        /// The interface.
        interface: String,
        /// Its `ARPHRD_*` type.
        hw_type: u16,
    },
    /// No virtual addresses were given.
    #[error("no virtual IPs given for interface {interface:?}")]
    NoVips {
        /// The interface.
        interface: String,
    },
    /// A virtual address that cannot be one.
    #[error("invalid virtual IP {vip}: {reason}")]
    InvalidVip {
        /// The address.
        vip: Vip,
        /// Why.
        reason: &'static str,
    },
    /// `ip` could not be started.
    #[error("running `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The error.
        source: io::Error,
    },
    /// `ip` failed.
    #[error("`{command}` failed: {stderr}")]
    IpCommand {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `ip -json` printed something else than expected.
    #[error("`{command}` printed unexpected output: {source}")]
    Parse {
        /// The command line.
        command: String,
        /// The error.
        source: serde_json::Error,
    },
    /// A socket operation failed.
    #[error("{what} on interface {interface:?}: {source}")]
    Socket {
        /// The operation.
        what: &'static str,
        /// The interface.
        interface: String,
        /// The error.
        source: io::Error,
    },
}

/// The virtual addresses one node claims on one interface.
///
/// The interface index and MAC are read once by [`VipSet::new`]; if the interface is
/// recreated, build a new set. All calls act in the calling thread's network namespace.
#[derive(Clone, Debug)]
pub struct VipSet {
    interface: String,
    ifindex: u32,
    mac: Mac,
    vips: Vec<Vip>,
}

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const ARP_HTYPE_ETHER: u16 = 1;
const ARPOP_REQUEST: u16 = 1;
const ARPOP_REPLY: u16 = 2;
/// Ethernet minimum frame length without the FCS.
const ETH_ZLEN: usize = 60;
const BROADCAST: Mac = [0xff; 6];
const ZERO_MAC: Mac = [0; 6];

const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_OPT_SOURCE_LINKADDR: u8 = 1;
const ND_OPT_TARGET_LINKADDR: u8 = 2;
const NA_FLAG_OVERRIDE: u8 = 0x20;
/// `ICMP6_FILTER` from `<netinet/icmp6.h>` (not in `libc`).
const ICMP6_FILTER: libc::c_int = 1;
/// Hop limit of every ND message (RFC 4861 §7.1).
const ND_HOP_LIMIT: u32 = 255;

/// Probe rounds [`VipSet::held_elsewhere`] spreads over its wait (a lost probe or answer
/// must not make a standby take over).
const PROBE_ROUNDS: u32 = 3;

impl VipSet {
    /// Checks that `interface` exists and is Ethernet, reads its index and MAC, and checks the
    /// addresses (unicast, prefix in range).
    pub fn new(interface: &str, vips: Vec<Vip>) -> Result<Self, VipError> {
        let no_interface = || VipError::NoInterface {
            interface: interface.to_owned(),
        };
        let name = std::ffi::CString::new(interface).map_err(|_| no_interface())?;
        // SAFETY: a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if interface.is_empty() || ifindex == 0 {
            return Err(no_interface());
        }
        let mac = hardware_address(interface)?;
        if vips.is_empty() {
            return Err(VipError::NoVips {
                interface: interface.to_owned(),
            });
        }
        for vip in &vips {
            check_vip(vip)?;
        }
        Ok(Self {
            interface: interface.to_owned(),
            ifindex,
            mac,
            vips,
        })
    }

    /// The interface name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface's MAC address (what the announcements advertise).
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The virtual addresses.
    pub fn vips(&self) -> &[Vip] {
        &self.vips
    }

    /// Adds every VIP to the interface (`ip address replace`: adding one that is there already
    /// is fine; IPv6 with `nodad`, so it is usable at once instead of tentative for a second),
    /// then sends one [`VipSet::announce`] round.
    pub fn claim(&self) -> Result<(), VipError> {
        for vip in &self.vips {
            let addr = vip.to_string();
            let mut args = vec!["address", "replace", &addr, "dev", &self.interface];
            if vip.addr.is_ipv6() {
                args.push("nodad");
            }
            ip(&args)?;
        }
        info!(interface = %self.interface, vips = %self.list(), "claimed virtual IPs");
        self.announce()
    }

    /// Sends one round of announcements (see the module doc): for each IPv4 VIP a gratuitous
    /// ARP request and reply, for each IPv6 VIP an unsolicited neighbour advertisement. The
    /// caller repeats it (a few rounds after a takeover, as keepalived does). Every message is
    /// tried; the first failure is returned.
    pub fn announce(&self) -> Result<(), VipError> {
        let mut first_error = None;
        if self.v4().next().is_some() {
            let sock = self.packet_socket()?;
            for addr in self.v4() {
                for op in [ARPOP_REQUEST, ARPOP_REPLY] {
                    let frame = gratuitous_arp(op, self.mac, addr);
                    if let Err(e) = sock.send(&frame) {
                        first_error.get_or_insert(self.socket_error("sending gratuitous ARP", e));
                    }
                }
            }
        }
        if self.v6().next().is_some() {
            let sock = self.icmpv6_socket(None)?;
            let all_nodes = SockAddr::from(SocketAddrV6::new(
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                0,
                0,
                self.ifindex,
            ));
            for addr in self.v6() {
                let msg = neighbour_advertisement(addr, self.mac);
                if let Err(e) = sock.send_to(&msg, &all_nodes) {
                    first_error.get_or_insert(
                        self.socket_error("sending unsolicited neighbour advertisement", e),
                    );
                }
            }
        }
        debug!(interface = %self.interface, vips = %self.list(), "announced virtual IPs");
        first_error.map_or(Ok(()), Err)
    }

    /// Removes every VIP from the interface (whatever prefix it carries there). One that is
    /// not there is fine.
    pub fn release(&self) -> Result<(), VipError> {
        let present = self.addresses()?;
        for vip in &self.vips {
            let Some(found) = present.iter().find(|a| a.local == vip.addr) else {
                continue;
            };
            let addr = format!("{}/{}", found.local, found.prefixlen);
            if let Err(e) = ip(&["address", "del", &addr, "dev", &self.interface]) {
                // Gone in the meantime (another release): that is what we wanted.
                if self.addresses()?.iter().any(|a| a.local == vip.addr) {
                    return Err(e);
                }
            }
        }
        info!(interface = %self.interface, vips = %self.list(), "released virtual IPs");
        Ok(())
    }

    /// Whether every VIP is on the interface and usable (an IPv6 address that is still
    /// tentative or failed duplicate address detection does not count). The prefix is not
    /// compared: traffic to the address is what matters.
    pub fn held_here(&self) -> Result<bool, VipError> {
        let present = self.addresses()?;
        Ok(self.vips.iter().all(|vip| {
            present
                .iter()
                .any(|a| a.local == vip.addr && !a.tentative && !a.dadfailed)
        }))
    }

    /// Asks the segment whether another host holds any of the VIPs: an ARP probe for each IPv4
    /// VIP and a neighbour solicitation (to its solicited-node group) for each IPv6 VIP, in
    /// three rounds spread over `wait`. True as soon as a MAC that is not ours
    /// answers for a VIP (an ARP packet whose sender address is the VIP, or a neighbour
    /// advertisement for it); false when `wait` passes in silence. Returns within `wait` (plus
    /// the time to send).
    ///
    /// IPv6 needs a usable address on the interface as the solicitation's source (normally
    /// its link-local address); without one the send fails with `EADDRNOTAVAIL`.
    pub fn held_elsewhere(&self, wait: Duration) -> Result<bool, VipError> {
        let v4: Vec<Ipv4Addr> = self.v4().collect();
        let v6: Vec<Ipv6Addr> = self.v6().collect();
        // Open the receiving sockets before the first probe leaves.
        let arp = if v4.is_empty() {
            None
        } else {
            Some(self.packet_socket()?)
        };
        let nd = if v6.is_empty() {
            None
        } else {
            Some(self.icmpv6_socket(Some(ND_NEIGHBOR_ADVERT))?)
        };
        let start = Instant::now();
        let mut buf = [0u8; 1500];
        for round in 0..PROBE_ROUNDS {
            if let Some(sock) = &arp {
                for &addr in &v4 {
                    sock.send(&arp_probe(self.mac, addr))
                        .map_err(|e| self.socket_error("sending ARP probe", e))?;
                }
            }
            if let Some(sock) = &nd {
                for &addr in &v6 {
                    let dst =
                        SockAddr::from(SocketAddrV6::new(solicited_node(addr), 0, 0, self.ifindex));
                    sock.send_to(&neighbour_solicitation(addr, self.mac), &dst)
                        .map_err(|e| self.socket_error("sending neighbour solicitation", e))?;
                }
            }
            let round_end = start + wait * (round + 1) / PROBE_ROUNDS;
            while let Some(timeout) = round_end.checked_duration_since(Instant::now()) {
                if timeout.is_zero() {
                    break;
                }
                let readable = self.poll(&[arp.as_ref(), nd.as_ref()], timeout)?;
                if readable[0]
                    && let Some(sock) = &arp
                {
                    while let Some(n) = self.recv(sock, &mut buf)? {
                        if let Some((sha, spa)) = arp_sender(&buf[..n])
                            && sha != self.mac
                            && v4.contains(&spa)
                        {
                            debug!(interface = %self.interface, vip = %spa, mac = %fmt_mac(sha),
                                "virtual IP answered by another host");
                            return Ok(true);
                        }
                    }
                }
                if readable[1]
                    && let Some(sock) = &nd
                {
                    while let Some(n) = self.recv(sock, &mut buf)? {
                        if let Some((target, lladdr)) = advertised_target(&buf[..n])
                            && lladdr != Some(self.mac)
                            && v6.contains(&target)
                        {
                            // Without the option we cannot see the MAC, but with multicast
                            // loopback off an advertisement we receive came from the wire.
                            debug!(interface = %self.interface, vip = %target,
                                mac = %lladdr.map_or("(not given)".to_owned(), fmt_mac),
                                "virtual IP answered by another host");
                            return Ok(true);
                        }
                    }
                }
            }
        }
        Ok(false)
    }

    fn v4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.vips.iter().filter_map(|v| match v.addr {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    }

    fn v6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.vips.iter().filter_map(|v| match v.addr {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        })
    }

    fn list(&self) -> String {
        let v: Vec<String> = self.vips.iter().map(Vip::to_string).collect();
        v.join(",")
    }

    fn socket_error(&self, what: &'static str, source: io::Error) -> VipError {
        VipError::Socket {
            what,
            interface: self.interface.clone(),
            source,
        }
    }

    /// The interface's addresses, from `ip -json address show dev <interface>`.
    fn addresses(&self) -> Result<Vec<AddrInfo>, VipError> {
        let args = ["-json", "address", "show", "dev", &self.interface];
        let out = ip(&args)?;
        parse_addresses(&out).map_err(|source| VipError::Parse {
            command: command_line(&args),
            source,
        })
    }

    /// A non-blocking `AF_PACKET` socket for ARP frames, bound to the interface.
    fn packet_socket(&self) -> Result<Socket, VipError> {
        let err = |e| self.socket_error("opening an ARP socket", e);
        let proto = ETH_P_ARP.to_be();
        let sock = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(proto))),
        )
        .map_err(err)?;
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = self.ifindex as i32;
        // SAFETY: a valid fd and a live sockaddr_ll of the given length.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(err(io::Error::last_os_error()));
        }
        sock.set_nonblocking(true).map_err(err)?;
        Ok(sock)
    }

    /// A non-blocking raw ICMPv6 socket bound to the interface, sending with hop limit 255
    /// and without looping our own multicast back; it receives only `pass` (or nothing).
    fn icmpv6_socket(&self, pass: Option<u8>) -> Result<Socket, VipError> {
        let err = |e| self.socket_error("opening an ICMPv6 socket", e);
        let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).map_err(err)?;
        sock.bind_device(Some(self.interface.as_bytes()))
            .map_err(err)?;
        sock.set_multicast_if_v6(self.ifindex).map_err(err)?;
        sock.set_multicast_hops_v6(ND_HOP_LIMIT).map_err(err)?;
        sock.set_unicast_hops_v6(ND_HOP_LIMIT).map_err(err)?;
        sock.set_multicast_loop_v6(false).map_err(err)?;
        // Linux's filter: a set bit blocks that type.
        let mut filter = [u32::MAX; 8];
        if let Some(t) = pass {
            filter[usize::from(t >> 5)] &= !(1u32 << (t & 31));
        }
        // SAFETY: a valid fd and a live 32-byte icmp6_filter.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_ICMPV6,
                ICMP6_FILTER,
                (&raw const filter).cast(),
                size_of_val(&filter) as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(err(io::Error::last_os_error()));
        }
        sock.set_nonblocking(true).map_err(err)?;
        Ok(sock)
    }

    /// Waits up to `timeout` until one of `socks` is readable; which ones are.
    fn poll(&self, socks: &[Option<&Socket>; 2], timeout: Duration) -> Result<[bool; 2], VipError> {
        let mut fds = socks.map(|s| libc::pollfd {
            fd: s.map_or(-1, AsRawFd::as_raw_fd),
            events: libc::POLLIN,
            revents: 0,
        });
        // Round up so a sub-millisecond remainder does not spin.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: a live array of two pollfds (negative fds are ignored).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok([false; 2]);
            }
            return Err(self.socket_error("waiting for answers", e));
        }
        Ok(fds.map(|p| p.revents != 0))
    }

    /// One datagram, or None when nothing is queued.
    fn recv(&self, sock: &Socket, buf: &mut [u8]) -> Result<Option<usize>, VipError> {
        loop {
            match (&*sock).read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.socket_error("receiving answers", e)),
            }
        }
    }
}

fn check_vip(vip: &Vip) -> Result<(), VipError> {
    let invalid = |reason| VipError::InvalidVip { vip: *vip, reason };
    let (max, unicast) = match vip.addr {
        IpAddr::V4(a) => (
            32,
            !(a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback()),
        ),
        IpAddr::V6(a) => (
            128,
            !(a.is_unspecified() || a.is_multicast() || a.is_loopback()),
        ),
    };
    if vip.prefix > max {
        return Err(invalid("prefix length out of range"));
    }
    if !unicast {
        return Err(invalid("not a unicast address"));
    }
    Ok(())
}

/// The MAC of `interface` (`SIOCGIFHWADDR`); it must be Ethernet.
fn hardware_address(interface: &str) -> Result<Mac, VipError> {
    let err = |source| VipError::Socket {
        what: "reading the MAC address",
        interface: interface.to_owned(),
        source,
    };
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(err)?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if interface.len() >= req.ifr_name.len() {
        return Err(VipError::NoInterface {
            interface: interface.to_owned(),
        });
    }
    for (d, s) in req.ifr_name.iter_mut().zip(interface.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: a valid fd and a live ifreq with a NUL-terminated name.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut req) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENODEV) {
            return Err(VipError::NoInterface {
                interface: interface.to_owned(),
            });
        }
        return Err(err(e));
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != libc::ARPHRD_ETHER {
        return Err(VipError::NotEthernet {
            interface: interface.to_owned(),
            hw_type: hw.sa_family,
        });
    }
    let mut mac = ZERO_MAC;
    for (m, b) in mac.iter_mut().zip(hw.sa_data) {
        *m = b as u8;
    }
    Ok(mac)
}

fn command_line(args: &[&str]) -> String {
    format!("ip {}", args.join(" "))
}

/// Runs `ip args…`; its stdout, or an error with the command line and its stderr.
fn ip(args: &[&str]) -> Result<String, VipError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| VipError::Spawn {
            command: command_line(args),
            source,
        })?;
    if !out.status.success() {
        return Err(VipError::IpCommand {
            command: command_line(args),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Deserialize)]
struct Link {
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

/// One entry of `addr_info` in `ip -json address show`.
#[derive(Debug, Deserialize, PartialEq)]
struct AddrInfo {
    local: IpAddr,
    prefixlen: u8,
    #[serde(default)]
    tentative: bool,
    #[serde(default)]
    dadfailed: bool,
}

fn parse_addresses(json: &str) -> Result<Vec<AddrInfo>, serde_json::Error> {
    let links: Vec<Link> = serde_json::from_str(json)?;
    Ok(links.into_iter().flat_map(|l| l.addr_info).collect())
}

fn fmt_mac(m: Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// An Ethernet frame carrying an Ethernet/IPv4 ARP packet, zero-padded to 60 bytes.
fn arp_frame(
    eth_dst: Mac,
    op: u16,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> [u8; ETH_ZLEN] {
    let mut f = [0u8; ETH_ZLEN];
    f[0..6].copy_from_slice(&eth_dst);
    f[6..12].copy_from_slice(&sha);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&ARP_HTYPE_ETHER.to_be_bytes());
    f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(&sha);
    f[28..32].copy_from_slice(&spa.octets());
    f[32..38].copy_from_slice(&tha);
    f[38..42].copy_from_slice(&tpa.octets());
    f
}

/// A gratuitous ARP to broadcast: sender and target address both `addr`; the request's target
/// MAC is zero (RFC 5227 §2.3), the reply's is our own (Linux's test for a gratuitous reply).
fn gratuitous_arp(op: u16, mac: Mac, addr: Ipv4Addr) -> [u8; ETH_ZLEN] {
    let tha = if op == ARPOP_REPLY { mac } else { ZERO_MAC };
    arp_frame(BROADCAST, op, mac, addr, tha, addr)
}

/// An ARP probe (RFC 5227 §2.1.1): a broadcast request for `target` with sender address
/// 0.0.0.0, so no receiver learns anything from it; the holder replies to our MAC.
fn arp_probe(mac: Mac, target: Ipv4Addr) -> [u8; ETH_ZLEN] {
    arp_frame(
        BROADCAST,
        ARPOP_REQUEST,
        mac,
        Ipv4Addr::UNSPECIFIED,
        ZERO_MAC,
        target,
    )
}

/// Sender MAC and address of an Ethernet/IPv4 ARP frame (request or reply).
fn arp_sender(frame: &[u8]) -> Option<(Mac, Ipv4Addr)> {
    let f = frame.get(..42)?;
    let be16 = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
    if be16(12) != ETH_P_ARP
        || be16(14) != ARP_HTYPE_ETHER
        || be16(16) != ETH_P_IP
        || f[18] != 6
        || f[19] != 4
        || !matches!(be16(20), ARPOP_REQUEST | ARPOP_REPLY)
    {
        return None;
    }
    let sha: Mac = f[22..28].try_into().ok()?;
    let spa: [u8; 4] = f[28..32].try_into().ok()?;
    Some((sha, Ipv4Addr::from(spa)))
}

/// An ND message: type, code 0, checksum 0 (the kernel fills it), the 4-byte flags/reserved
/// field, the target, and one link-layer address option.
fn nd_message(kind: u8, flags: u8, target: Ipv6Addr, option: u8, mac: Mac) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = kind;
    m[4] = flags;
    m[8..24].copy_from_slice(&target.octets());
    m[24] = option;
    m[25] = 1; // option length in units of 8 bytes
    m[26..32].copy_from_slice(&mac);
    m
}

/// An unsolicited neighbour advertisement (RFC 4861 §7.2.6): Override set, Solicited and
/// Router clear, with the target link-layer address option.
fn neighbour_advertisement(target: Ipv6Addr, mac: Mac) -> [u8; 32] {
    nd_message(
        ND_NEIGHBOR_ADVERT,
        NA_FLAG_OVERRIDE,
        target,
        ND_OPT_TARGET_LINKADDR,
        mac,
    )
}

/// A neighbour solicitation for `target` with the source link-layer address option (Linux
/// does not answer a multicast solicitation without it).
fn neighbour_solicitation(target: Ipv6Addr, mac: Mac) -> [u8; 32] {
    nd_message(ND_NEIGHBOR_SOLICIT, 0, target, ND_OPT_SOURCE_LINKADDR, mac)
}

/// ff02::1:ffXX:XXXX, the solicited-node multicast group of `addr` (RFC 4291 §2.7.1).
fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// Target and target link-layer address (if given) of a neighbour advertisement.
fn advertised_target(msg: &[u8]) -> Option<(Ipv6Addr, Option<Mac>)> {
    if msg.len() < 24 || msg[0] != ND_NEIGHBOR_ADVERT || msg[1] != 0 {
        return None;
    }
    let target: [u8; 16] = msg[8..24].try_into().ok()?;
    let mut lladdr = None;
    let mut opts = &msg[24..];
    while opts.len() >= 2 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            return None; // malformed: RFC 4861 §4.6 says discard
        }
        if opts[0] == ND_OPT_TARGET_LINKADDR && len == 8 {
            lladdr = opts[2..8].try_into().ok();
        }
        opts = &opts[len..];
    }
    Some((Ipv6Addr::from(target), lladdr))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0x5c, 0x00, 0x00, 0x00, 0x0a];
    const V4: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
    const V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5c, 1, 0, 0, 0, 0, 1);

    const PAD: [u8; 18] = [0; 18];

    fn padded(head: &[u8; 42]) -> Vec<u8> {
        let mut v = head.to_vec();
        v.extend_from_slice(&PAD);
        v
    }

    #[test]
    fn gratuitous_arp_request_bytes() {
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
            0x02, 0x5c, 0x00, 0x00, 0x00, 0x0a, // Ethernet source: our MAC
            0x08, 0x06,                         // EtherType: ARP
            0x00, 0x01,                         // hardware type: Ethernet
            0x08, 0x00,                         // protocol type: IPv4
            0x06, 0x04,                         // hardware / protocol address lengths
            0x00, 0x01,                         // operation: request
            0x02, 0x5c, 0x00, 0x00, 0x00, 0x0a, // sender MAC: ours
            198, 18, 200, 1,                    // sender address: the VIP
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC: zero (RFC 5227 §2.3)
            198, 18, 200, 1,                    // target address: the VIP
        ];
        assert_eq!(
            gratuitous_arp(ARPOP_REQUEST, MAC, V4).to_vec(),
            padded(&want)
        );
    }

    #[test]
    fn gratuitous_arp_reply_bytes() {
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
            0x02, 0x5c, 0x00, 0x00, 0x00, 0x0a, // Ethernet source: our MAC
            0x08, 0x06,                         // EtherType: ARP
            0x00, 0x01,                         // hardware type: Ethernet
            0x08, 0x00,                         // protocol type: IPv4
            0x06, 0x04,                         // hardware / protocol address lengths
            0x00, 0x02,                         // operation: reply
            0x02, 0x5c, 0x00, 0x00, 0x00, 0x0a, // sender MAC: ours
            198, 18, 200, 1,                    // sender address: the VIP
            0x02, 0x5c, 0x00, 0x00, 0x00, 0x0a, // target MAC: ours again (gratuitous reply)
            198, 18, 200, 1,                    // target address: the VIP
        ];
        assert_eq!(gratuitous_arp(ARPOP_REPLY, MAC, V4).to_vec(), padded(&want));
    }

    #[test]
    fn arp_probe_bytes() {
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
            0x02, 0x5c, 0x00, 0x00, 0x00, 0x0a, // Ethernet source: our MAC
            0x08, 0x06,                         // EtherType: ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet / IPv4, lengths 6 and 4
            0x00, 0x01,                         // operation: request
            0x02, 0x5c, 0x00, 0x00, 0x00, 0x0a, // sender MAC: ours
            0, 0, 0, 0,                         // sender address: 0.0.0.0 (a probe)
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC: unknown
            198, 18, 200, 1,                    // target address: the VIP
        ];
        assert_eq!(arp_probe(MAC, V4).to_vec(), padded(&want));
    }

    #[test]
    fn arp_sender_reads_requests_and_replies_and_rejects_the_rest() {
        let other: Mac = [0x02, 0, 0, 0, 0, 0x0b];
        let reply = arp_frame(MAC, ARPOP_REPLY, other, V4, MAC, Ipv4Addr::UNSPECIFIED);
        assert_eq!(arp_sender(&reply), Some((other, V4)));
        assert_eq!(arp_sender(&reply[..42]), Some((other, V4)));
        assert_eq!(arp_sender(&reply[..41]), None);
        let mut wrong = reply;
        wrong[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(arp_sender(&wrong), None);
        let mut op = reply;
        op[21] = 3; // RARP request
        assert_eq!(arp_sender(&op), None);
    }

    #[test]
    fn unsolicited_neighbour_advertisement_bytes() {
        #[rustfmt::skip]
        let want: [u8; 32] = [
            136,                                // type: neighbour advertisement
            0,                                  // code
            0x00, 0x00,                         // checksum: filled by the kernel
            0x20, 0x00, 0x00, 0x00,             // flags: R=0 S=0 O=1, reserved
            0xfd, 0x00, 0x00, 0x5c, 0x00, 0x01, 0x00, 0x00, // target: fd00:5c:1::1
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
            2,                                  // option: target link-layer address
            1,                                  // option length: 1 × 8 bytes
            0x02, 0x5c, 0x00, 0x00, 0x00, 0x0a, // our MAC
        ];
        assert_eq!(neighbour_advertisement(V6, MAC), want);
    }

    #[test]
    fn neighbour_solicitation_bytes_and_group() {
        #[rustfmt::skip]
        let want: [u8; 32] = [
            135,                                // type: neighbour solicitation
            0,                                  // code
            0x00, 0x00,                         // checksum: filled by the kernel
            0x00, 0x00, 0x00, 0x00,             // reserved
            0xfd, 0x00, 0x00, 0x5c, 0x00, 0x01, 0x00, 0x00, // target: fd00:5c:1::1
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
            1,                                  // option: source link-layer address
            1,                                  // option length: 1 × 8 bytes
            0x02, 0x5c, 0x00, 0x00, 0x00, 0x0a, // our MAC
        ];
        assert_eq!(neighbour_solicitation(V6, MAC), want);
        let addr: Ipv6Addr = "fd00:5c:1::12:3456".parse().unwrap();
        assert_eq!(
            solicited_node(addr),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn advertised_target_reads_the_option_and_rejects_malformed() {
        let na = neighbour_advertisement(V6, MAC);
        assert_eq!(advertised_target(&na), Some((V6, Some(MAC))));
        assert_eq!(advertised_target(&na[..24]), Some((V6, None)));
        let mut zero_len = na;
        zero_len[25] = 0;
        assert_eq!(advertised_target(&zero_len), None);
        assert_eq!(advertised_target(&neighbour_solicitation(V6, MAC)), None);
        let mut source_only = na;
        source_only[24] = ND_OPT_SOURCE_LINKADDR;
        assert_eq!(advertised_target(&source_only), Some((V6, None)));
    }

    #[test]
    fn ip_json_addresses_parse() {
        let json = r#"[{"ifindex":3,"ifname":"d0","addr_info":[
            {"family":"inet","local":"198.18.200.1","prefixlen":24,"scope":"global"},
            {"family":"inet6","local":"fd00:5c:1::2","prefixlen":64,"nodad":true},
            {"family":"inet6","local":"fe80::1","prefixlen":64,"tentative":true}]}]"#;
        let got = parse_addresses(json).unwrap();
        assert_eq!(
            got,
            [
                AddrInfo {
                    local: IpAddr::V4(V4),
                    prefixlen: 24,
                    tentative: false,
                    dadfailed: false
                },
                AddrInfo {
                    local: "fd00:5c:1::2".parse().unwrap(),
                    prefixlen: 64,
                    tentative: false,
                    dadfailed: false
                },
                AddrInfo {
                    local: "fe80::1".parse().unwrap(),
                    prefixlen: 64,
                    tentative: true,
                    dadfailed: false
                },
            ]
        );
        assert_eq!(parse_addresses("[]").unwrap(), []);
        assert!(parse_addresses("[{\"addr_info\":[{\"local\":\"x\"}]}]").is_err());
    }

    #[test]
    fn bad_vips_are_rejected() {
        let bad = [
            (
                Vip {
                    addr: IpAddr::V4(V4),
                    prefix: 33,
                },
                "prefix",
            ),
            (
                Vip {
                    addr: IpAddr::V6(V6),
                    prefix: 129,
                },
                "prefix",
            ),
            (
                Vip {
                    addr: "224.0.0.1".parse().unwrap(),
                    prefix: 32,
                },
                "unicast",
            ),
            (
                Vip {
                    addr: "::".parse().unwrap(),
                    prefix: 128,
                },
                "unicast",
            ),
        ];
        for (vip, why) in bad {
            let e = check_vip(&vip).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(&vip.to_string()), "{e}");
        }
        assert!(
            check_vip(&Vip {
                addr: IpAddr::V4(V4),
                prefix: 24
            })
            .is_ok()
        );
    }

    #[test]
    fn a_missing_interface_is_named() {
        let e = VipSet::new(
            "nosuchif0",
            vec![Vip {
                addr: IpAddr::V4(V4),
                prefix: 24,
            }],
        )
        .unwrap_err();
        assert!(matches!(e, VipError::NoInterface { .. }), "{e:?}");
        assert!(e.to_string().contains("nosuchif0"), "{e}");
        let e = VipSet::new("", vec![]).unwrap_err();
        assert!(matches!(e, VipError::NoInterface { .. }), "{e:?}");
    }
}
