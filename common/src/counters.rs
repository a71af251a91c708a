//! Global counters, one slot per exit reason of the XDP program (`COUNTERS`, per-CPU array).

macro_rules! reasons {
    ($( $(#[doc = $doc:literal])* $name:ident = $idx:literal, $label:literal; )*) => {
        /// Why the XDP program let a packet go the way it did. The discriminant is the slot in
        /// `COUNTERS`; the label is the Prometheus `reason` label.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $( $(#[doc = $doc])* $name = $idx, )*
        }

        impl Reason {
            /// Every reason, in slot order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// Stable metric label.
            pub const fn label(self) -> &'static str {
                match self { $(Reason::$name => $label,)* }
            }
        }
    };
}

reasons! {
    /// Not IPv4/IPv6 (ARP, LLDP, …) after up to two VLAN tags.
    PassNotIp = 0, "pass_not_ip";
    /// IP but not UDP.
    PassNotUdp = 1, "pass_not_udp";
    /// UDP to an address/port that is not a listener.
    PassNotListener = 2, "pass_not_listener";
    /// A header ended before the packet did (at any boundary).
    PassTruncated = 3, "pass_truncated";
    /// IPv4 fragment or IPv6 fragment header: the kernel reassembles, the slow path forwards.
    PassFragment = 4, "pass_fragment";
    /// IPv6 with extension headers: slow path.
    PassIpv6ExtHeader = 5, "pass_ipv6_ext_header";
    /// TTL/hop limit would reach zero if forwarded; the local stack receives it (slow path).
    PassTtlExpired = 6, "pass_ttl_expired";
    /// Egress neighbour unresolved: the slow path sends it and the kernel resolves it.
    PassNoNeigh = 7, "pass_no_neigh";
    /// `bpf_fib_lookup` found no usable route (unreachable, forwarding disabled, MTU).
    PassFibFailed = 8, "pass_fib_failed";
    /// The exporter and the peer are of different address families: slow path.
    PassFamilyMismatch = 9, "pass_family_mismatch";
    /// The egress interface is not in `DEVMAP`.
    PassNoEgressDev = 10, "pass_no_egress_dev";
    /// IPv6 UDP with checksum zero (invalid on IPv6): left to the kernel.
    PassBadChecksum = 11, "pass_bad_checksum";
    /// Forwarded back out of the ingress interface (`XDP_TX`).
    Tx = 12, "tx";
    /// Forwarded to another interface through `DEVMAP`.
    Redirect = 13, "redirect";
    /// The exporter's pool has no healthy peer: dropped.
    DropNoHealthyPeer = 14, "drop_no_healthy_peer";
    /// Exporter not in `EXPORTERS`: placed by the pool's consistent-hash table.
    HashPlaced = 15, "hash_placed";
    /// Pinned exporter whose peer is down: re-placed by the pool's hash table.
    PeerDownFallback = 16, "peer_down_fallback";
    /// An event was written to the `EVENTS` ring buffer.
    EventSent = 17, "event_sent";
    /// An event was suppressed by the rate limit or a full ring buffer.
    EventSuppressed = 18, "event_suppressed";
    /// Listener traffic whose pool id has no table (configuration race).
    PassNoPool = 19, "pass_no_pool";
}

/// Number of slots in `COUNTERS`.
pub const REASON_COUNT: u32 = 20;

const _: () = assert!(Reason::ALL.len() == REASON_COUNT as usize);
