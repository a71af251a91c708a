//! An in-memory model of the BPF maps behind [`DataPlane`], for tests and dry runs.
//!
//! It enforces what the kernel enforces (capacities, id ranges, table length) and can steer a
//! datagram the way the XDP program does ([`MemoryDataPlane::deliver`]): listener lookup,
//! exporter pin, source-group LPM, pool table, peer state, counters and new-exporter events.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use sluice_common::hash::table_slot;
use sluice_common::{
    ExporterEvent, ExporterStats, ExporterValue, MAX_EXPORTERS, MAX_LISTENERS, MAX_PEERS,
    MAX_POOLS, MAX_SOURCE_GROUPS, NO_PEER, POOL_TABLE_SIZE, PeerEntry, event_kind, names,
    peer_state, to_key_bytes,
};

use super::dataplane::{DataPlane, DataPlaneError};

/// What the modelled XDP program did with one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not listener traffic: passed to the kernel.
    Pass,
    /// Forwarded to this peer.
    Forward(u32),
    /// Listener traffic with no usable peer: dropped and counted.
    Drop,
}

/// The maps the controller writes and reads, held in ordered maps.
#[derive(Clone, Debug)]
pub struct MemoryDataPlane {
    listeners: BTreeMap<SocketAddr, u32>,
    /// (prefix length in the 128-bit mapped space, masked key) → pool.
    source_groups: BTreeMap<(u8, [u8; 16]), u32>,
    peers: Vec<PeerEntry>,
    pool_tables: Vec<Vec<u32>>,
    exporters: BTreeMap<IpAddr, ExporterValue>,
    stats: BTreeMap<IpAddr, ExporterStats>,
}

impl Default for MemoryDataPlane {
    fn default() -> Self {
        Self {
            listeners: BTreeMap::new(),
            source_groups: BTreeMap::new(),
            peers: vec![PeerEntry::default(); MAX_PEERS as usize],
            pool_tables: vec![vec![NO_PEER; POOL_TABLE_SIZE as usize]; MAX_POOLS as usize],
            exporters: BTreeMap::new(),
            stats: BTreeMap::new(),
        }
    }
}

fn check_id(map: &'static str, what: &str, id: u32, max: u32) -> Result<usize, DataPlaneError> {
    if id < max {
        Ok(id as usize)
    } else {
        Err(DataPlaneError::Invalid {
            map,
            what: format!("{what} {id} >= {max}"),
        })
    }
}

/// The LPM key of `net/prefix_len`: prefix length in the mapped 128-bit space, host bits zeroed.
fn lpm_key(net: IpAddr, prefix_len: u8) -> Result<(u8, [u8; 16]), DataPlaneError> {
    let (max, offset) = match net {
        IpAddr::V4(_) => (32, 96),
        IpAddr::V6(_) => (128, 0),
    };
    if prefix_len > max {
        return Err(DataPlaneError::Invalid {
            map: names::SOURCE_GROUPS,
            what: format!("prefix length {prefix_len} > {max} for {net}"),
        });
    }
    let len = prefix_len + offset;
    let bits = u128::from_be_bytes(to_key_bytes(net));
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    Ok((len, (bits & mask).to_be_bytes()))
}

fn insert_bounded<K: Ord, V>(
    map: &mut BTreeMap<K, V>,
    name: &'static str,
    capacity: u32,
    key: K,
    value: V,
) -> Result<(), DataPlaneError> {
    if !map.contains_key(&key) && map.len() >= capacity as usize {
        return Err(DataPlaneError::Full {
            map: name,
            capacity,
        });
    }
    map.insert(key, value);
    Ok(())
}

impl MemoryDataPlane {
    /// An empty data plane: no listener, every peer DOWN, every table slot [`NO_PEER`].
    pub fn new() -> Self {
        Self::default()
    }

    /// `PEERS[peer_id]`.
    pub fn peer(&self, peer_id: u32) -> Option<PeerEntry> {
        self.peers.get(peer_id as usize).copied()
    }

    /// `POOL_TABLES` of one pool.
    pub fn pool_table(&self, pool_id: u32) -> Option<&[u32]> {
        self.pool_tables.get(pool_id as usize).map(Vec::as_slice)
    }

    /// `LISTENERS` lookup.
    pub fn listener(&self, addr: SocketAddr) -> Option<u32> {
        self.listeners.get(&addr).copied()
    }

    /// `EXPORTERS` lookup.
    pub fn exporter(&self, addr: IpAddr) -> Option<ExporterValue> {
        self.exporters.get(&addr).copied()
    }

    /// Longest-prefix match in `SOURCE_GROUPS`.
    pub fn source_group(&self, src: IpAddr) -> Option<u32> {
        let full = u128::from_be_bytes(to_key_bytes(src));
        self.source_groups
            .iter()
            .rev()
            .find(|((len, key), _)| {
                let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                full & mask == u128::from_be_bytes(*key)
            })
            .map(|(_, pool)| *pool)
    }

    /// Steers one datagram of `len` bytes from `src` to listener `dst` like the XDP program,
    /// counting it; returns the verdict and the event the program would emit (without its
    /// per-exporter rate limit).
    pub fn deliver(
        &mut self,
        src: IpAddr,
        dst: SocketAddr,
        len: u64,
        now_ns: u64,
    ) -> (Verdict, Option<ExporterEvent>) {
        let Some(listener_pool) = self.listener(dst) else {
            return (Verdict::Pass, None);
        };
        let stats = self.stats.entry(src).or_default();
        stats.packets += 1;
        stats.bytes += len;
        stats.last_seen_ns = now_ns;
        let up = |entry: Option<PeerEntry>| entry.is_some_and(|e| e.state != peer_state::DOWN);
        let (pool_id, kind) = match self.exporter(src) {
            Some(v) if up(self.peer(v.peer_id)) => return (Verdict::Forward(v.peer_id), None),
            Some(v) => (v.pool_id, event_kind::PEER_DOWN),
            None => (
                self.source_group(src).unwrap_or(listener_pool),
                event_kind::NEW_EXPORTER,
            ),
        };
        let key = to_key_bytes(src);
        let peer_id = self
            .pool_table(pool_id)
            .and_then(|t| t.get(table_slot(&key, POOL_TABLE_SIZE) as usize).copied())
            .unwrap_or(NO_PEER);
        let event = ExporterEvent {
            addr: key,
            kind,
            pool_id,
            peer_id,
            _pad: 0,
        };
        let verdict = if up(self.peer(peer_id)) {
            Verdict::Forward(peer_id)
        } else {
            Verdict::Drop
        };
        (verdict, Some(event))
    }
}

impl DataPlane for MemoryDataPlane {
    fn set_listener(&mut self, addr: SocketAddr, pool_id: u32) -> Result<(), DataPlaneError> {
        check_id(names::LISTENERS, "pool id", pool_id, MAX_POOLS)?;
        insert_bounded(
            &mut self.listeners,
            names::LISTENERS,
            MAX_LISTENERS,
            addr,
            pool_id,
        )
    }

    fn remove_listener(&mut self, addr: SocketAddr) -> Result<(), DataPlaneError> {
        self.listeners.remove(&addr);
        Ok(())
    }

    fn set_source_group(
        &mut self,
        net: IpAddr,
        prefix_len: u8,
        pool_id: u32,
    ) -> Result<(), DataPlaneError> {
        check_id(names::SOURCE_GROUPS, "pool id", pool_id, MAX_POOLS)?;
        let key = lpm_key(net, prefix_len)?;
        insert_bounded(
            &mut self.source_groups,
            names::SOURCE_GROUPS,
            MAX_SOURCE_GROUPS,
            key,
            pool_id,
        )
    }

    fn remove_source_group(&mut self, net: IpAddr, prefix_len: u8) -> Result<(), DataPlaneError> {
        self.source_groups.remove(&lpm_key(net, prefix_len)?);
        Ok(())
    }

    fn set_peer(&mut self, peer_id: u32, entry: PeerEntry) -> Result<(), DataPlaneError> {
        let i = check_id(names::PEERS, "peer id", peer_id, MAX_PEERS)?;
        self.peers[i] = entry;
        Ok(())
    }

    fn set_pool_table(&mut self, pool_id: u32, table: &[u32]) -> Result<(), DataPlaneError> {
        let i = check_id(names::POOL_TABLES, "pool id", pool_id, MAX_POOLS)?;
        if table.len() != POOL_TABLE_SIZE as usize {
            return Err(DataPlaneError::Invalid {
                map: names::POOL_TABLES,
                what: format!("table of {} slots, expected {POOL_TABLE_SIZE}", table.len()),
            });
        }
        self.pool_tables[i] = table.to_vec();
        Ok(())
    }

    fn set_exporter(&mut self, addr: IpAddr, value: ExporterValue) -> Result<(), DataPlaneError> {
        check_id(names::EXPORTERS, "pool id", value.pool_id, MAX_POOLS)?;
        check_id(names::EXPORTERS, "peer id", value.peer_id, MAX_PEERS)?;
        insert_bounded(
            &mut self.exporters,
            names::EXPORTERS,
            MAX_EXPORTERS,
            addr,
            value,
        )
    }

    fn remove_exporter(&mut self, addr: IpAddr) -> Result<(), DataPlaneError> {
        self.exporters.remove(&addr);
        Ok(())
    }

    fn exporters(&self) -> Result<Vec<(IpAddr, ExporterValue)>, DataPlaneError> {
        Ok(self.exporters.iter().map(|(a, v)| (*a, *v)).collect())
    }

    fn exporter_stats(&self) -> Result<Vec<(IpAddr, ExporterStats)>, DataPlaneError> {
        Ok(self.stats.iter().map(|(a, s)| (*a, *s)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: u8) -> PeerEntry {
        PeerEntry {
            addr: to_key_bytes("198.18.2.2".parse().unwrap()),
            port: 2055,
            family: sluice_common::family::V4,
            state,
            pool_id: 0,
        }
    }

    #[test]
    fn steers_like_the_xdp_program() {
        let mut dp = MemoryDataPlane::new();
        let listener: SocketAddr = "198.18.0.1:2055".parse().unwrap();
        let src: IpAddr = "198.18.1.7".parse().unwrap();
        assert_eq!(dp.deliver(src, listener, 100, 1).0, Verdict::Pass);
        dp.set_listener(listener, 3).unwrap();
        // No peer in the pool table: dropped, reported as a new exporter of pool 3.
        let (v, ev) = dp.deliver(src, listener, 100, 2);
        assert_eq!(v, Verdict::Drop);
        assert_eq!(ev.unwrap().pool_id, 3);
        // A source group overrides the listener's pool; longest prefix wins.
        dp.set_source_group("198.18.0.0".parse().unwrap(), 15, 4)
            .unwrap();
        dp.set_source_group("198.18.1.0".parse().unwrap(), 24, 5)
            .unwrap();
        assert_eq!(dp.source_group(src), Some(5));
        dp.set_pool_table(5, &vec![9; POOL_TABLE_SIZE as usize])
            .unwrap();
        dp.set_peer(9, entry(peer_state::UP)).unwrap();
        let (v, ev) = dp.deliver(src, listener, 100, 3);
        assert_eq!(v, Verdict::Forward(9));
        assert_eq!(ev.unwrap().kind, event_kind::NEW_EXPORTER);
        // Pinned: no event; pinned to a DOWN peer: table fallback plus a PEER_DOWN event.
        dp.set_exporter(
            src,
            ExporterValue {
                peer_id: 9,
                pool_id: 5,
            },
        )
        .unwrap();
        assert_eq!(
            dp.deliver(src, listener, 100, 4),
            (Verdict::Forward(9), None)
        );
        dp.set_peer(9, entry(peer_state::DOWN)).unwrap();
        let (v, ev) = dp.deliver(src, listener, 100, 5);
        assert_eq!(v, Verdict::Drop);
        assert_eq!(ev.unwrap().kind, event_kind::PEER_DOWN);
        let stats = dp.exporter_stats().unwrap();
        assert_eq!(stats[0].1.packets, 4);
        assert_eq!(stats[0].1.bytes, 400);
    }

    #[test]
    fn enforces_kernel_limits() {
        let mut dp = MemoryDataPlane::new();
        assert!(dp.set_pool_table(0, &[1, 2, 3]).is_err());
        assert!(
            dp.set_pool_table(MAX_POOLS, &vec![0; POOL_TABLE_SIZE as usize])
                .is_err()
        );
        assert!(dp.set_peer(MAX_PEERS, PeerEntry::default()).is_err());
        assert!(
            dp.set_source_group("10.0.0.0".parse().unwrap(), 33, 0)
                .is_err()
        );
        let value = ExporterValue {
            peer_id: 0,
            pool_id: 0,
        };
        for i in 0..MAX_EXPORTERS {
            dp.set_exporter(IpAddr::from(std::net::Ipv4Addr::from(i)), value)
                .unwrap();
        }
        // Overwriting an existing key still works when full; a new key does not.
        dp.set_exporter(IpAddr::from(std::net::Ipv4Addr::from(0)), value)
            .unwrap();
        assert!(matches!(
            dp.set_exporter("::1".parse().unwrap(), value),
            Err(DataPlaneError::Full { .. })
        ));
    }
}
