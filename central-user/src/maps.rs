//! Typed access to the pinned BPF maps: the only module (with [`crate::loader`]) that touches
//! aya. Implements [`DataPlane`] for the controller, plus the readers the sampler, metrics and
//! tests use.

use std::{
    collections::HashMap as StdHashMap,
    net::{IpAddr, SocketAddr},
    path::Path,
};

use aya::maps::{
    Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap, lpm_trie::Key,
    xdp::DevMapHash,
};
use sluice_common::{
    AddrKey, ExporterStats, ExporterValue, ListenerKey, ListenerValue, MAX_POOLS, NO_PEER,
    POOL_TABLE_SIZE, PeerEntry, PeerStats, Reason, Settings, SourceGroupValue, event_kind,
    hash::table_slot, names, peer_state, to_key_bytes,
};

use crate::controller::dataplane::{DataPlane, DataPlaneError};

/// Every map the controller writes or reads (the ring buffer is handed out separately).
pub struct Maps {
    listeners: HashMap<MapData, ListenerKey, ListenerValue>,
    exporters: HashMap<MapData, AddrKey, ExporterValue>,
    source_groups: LpmTrie<MapData, [u8; 16], SourceGroupValue>,
    pool_tables: Array<MapData, u32>,
    peers: Array<MapData, PeerEntry>,
    exporter_stats: PerCpuHashMap<MapData, AddrKey, ExporterStats>,
    peer_stats: PerCpuArray<MapData, PeerStats>,
    counters: PerCpuArray<MapData, u64>,
    devmap: DevMapHash<MapData>,
    settings: Array<MapData, Settings>,
    /// Last table written per pool, so a rebuild only rewrites the slots that changed.
    written_tables: StdHashMap<u32, Vec<u32>>,
}

fn map_err<E: std::error::Error + Send + Sync + 'static>(
    map: &'static str,
    op: &'static str,
) -> impl FnOnce(E) -> DataPlaneError {
    move |e| DataPlaneError::Map {
        map,
        op,
        source: Box::new(e),
    }
}

fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    take: &mut dyn FnMut(&'static str) -> Result<Map, DataPlaneError>,
    name: &'static str,
) -> Result<T, DataPlaneError> {
    T::try_from(take(name)?).map_err(map_err::<aya::maps::MapError>(name, "open"))
}

impl Maps {
    /// Builds from a source of maps by name (a loaded object, or the pins).
    pub fn from_source(
        mut take: impl FnMut(&'static str) -> Result<Map, DataPlaneError>,
    ) -> Result<Self, DataPlaneError> {
        let t = &mut take;
        Ok(Self {
            listeners: typed(t, names::LISTENERS)?,
            exporters: typed(t, names::EXPORTERS)?,
            source_groups: typed(t, names::SOURCE_GROUPS)?,
            pool_tables: typed(t, names::POOL_TABLES)?,
            peers: typed(t, names::PEERS)?,
            exporter_stats: typed(t, names::EXPORTER_STATS)?,
            peer_stats: typed(t, names::PEER_STATS)?,
            counters: typed(t, names::COUNTERS)?,
            devmap: typed(t, names::DEVMAP)?,
            settings: typed(t, names::SETTINGS)?,
            written_tables: StdHashMap::new(),
        })
    }

    /// Opens the maps pinned under `dir` without loading a program (tools, tests, a restarting
    /// Central that only wants to read).
    pub fn open_pinned(dir: &Path) -> Result<Self, DataPlaneError> {
        Self::from_source(|name| open_pin(dir, name))
    }

    /// `SETTINGS[0]`.
    pub fn set_settings(&mut self, settings: Settings) -> Result<(), DataPlaneError> {
        self.settings
            .set(0, settings, 0)
            .map_err(map_err(names::SETTINGS, "set"))
    }

    /// Makes `ifindex` a redirect target (`DEVMAP`).
    pub fn add_egress(&mut self, ifindex: u32) -> Result<(), DataPlaneError> {
        self.devmap
            .insert(ifindex, ifindex, None, 0)
            .map_err(map_err(names::DEVMAP, "insert"))
    }

    /// Interfaces currently in `DEVMAP`.
    pub fn egress(&self) -> Result<Vec<u32>, DataPlaneError> {
        self.devmap
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(names::DEVMAP, "iterate"))
    }

    /// Removes `ifindex` from `DEVMAP` (absent is fine).
    pub fn remove_egress(&mut self, ifindex: u32) -> Result<(), DataPlaneError> {
        ignore_missing(self.devmap.remove(ifindex)).map_err(map_err(names::DEVMAP, "remove"))
    }

    /// `PEERS[peer_id]`.
    pub fn peer(&self, peer_id: u32) -> Result<PeerEntry, DataPlaneError> {
        self.peers
            .get(&peer_id, 0)
            .map_err(map_err(names::PEERS, "get"))
    }

    /// One slot of a pool's table.
    pub fn pool_slot(&self, pool_id: u32, slot: u32) -> Result<u32, DataPlaneError> {
        self.pool_tables
            .get(&(pool_id * POOL_TABLE_SIZE + slot), 0)
            .map_err(map_err(names::POOL_TABLES, "get"))
    }

    /// `COUNTERS` summed over CPUs, in [`Reason::ALL`] order.
    pub fn counters(&self) -> Result<Vec<(Reason, u64)>, DataPlaneError> {
        Reason::ALL
            .iter()
            .map(|&r| {
                let v = self
                    .counters
                    .get(&(r as u32), 0)
                    .map_err(map_err(names::COUNTERS, "get"))?;
                Ok((r, v.iter().sum()))
            })
            .collect()
    }

    /// `PEER_STATS[peer_id]` summed over CPUs.
    pub fn peer_stats(&self, peer_id: u32) -> Result<PeerStats, DataPlaneError> {
        let v = self
            .peer_stats
            .get(&peer_id, 0)
            .map_err(map_err(names::PEER_STATS, "get"))?;
        Ok(v.iter().fold(PeerStats::default(), |a, s| PeerStats {
            packets: a.packets + s.packets,
            bytes: a.bytes + s.bytes,
        }))
    }
}

impl Maps {
    /// The peer the XDP program would pick for `exporter` arriving on `listener`, by the same
    /// rules (pin if its peer is up, else source group or listener pool, then the pool table).
    /// The slow-path relay forwards by this; `None` when no healthy peer exists.
    pub fn resolve(
        &self,
        exporter: IpAddr,
        listener: SocketAddr,
    ) -> Result<Option<Resolved>, DataPlaneError> {
        let key = AddrKey::from(exporter);
        let (pool_id, kind) = match self.exporters.get(&key, 0) {
            Ok(v) => {
                let peer = self.peer(v.peer_id)?;
                if peer.state != peer_state::DOWN {
                    return Ok(Some(Resolved {
                        peer_id: v.peer_id,
                        peer,
                        pool_id: v.pool_id,
                        unpinned: None,
                    }));
                }
                (v.pool_id, event_kind::PEER_DOWN)
            }
            Err(aya::maps::MapError::KeyNotFound) => {
                let pool = match self.source_groups.get(&Key::new(128, key.addr), 0) {
                    Ok(g) => g.pool_id,
                    Err(aya::maps::MapError::KeyNotFound) => {
                        match self
                            .listeners
                            .get(&ListenerKey::new(listener.ip(), listener.port()), 0)
                        {
                            Ok(l) => l.pool_id,
                            Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
                            Err(e) => return Err(map_err(names::LISTENERS, "get")(e)),
                        }
                    }
                    Err(e) => return Err(map_err(names::SOURCE_GROUPS, "get")(e)),
                };
                (pool, event_kind::NEW_EXPORTER)
            }
            Err(e) => return Err(map_err(names::EXPORTERS, "get")(e)),
        };
        if pool_id >= MAX_POOLS {
            return Ok(None);
        }
        let peer_id = self.pool_slot(pool_id, table_slot(&key.addr, POOL_TABLE_SIZE))?;
        if peer_id == NO_PEER {
            return Ok(None);
        }
        let peer = self.peer(peer_id)?;
        Ok((peer.state == peer_state::UP).then_some(Resolved {
            peer_id,
            peer,
            pool_id,
            unpinned: Some(kind),
        }))
    }

    /// Adds traffic the slow path forwarded to an exporter's `EXPORTER_STATS` (on the first
    /// CPU's slot), so exporters whose datagrams are all fragments still have rates.
    pub fn add_exporter_stats(
        &mut self,
        addr: IpAddr,
        packets: u64,
        bytes: u64,
        last_seen_ns: u64,
    ) -> Result<(), DataPlaneError> {
        let key = AddrKey::from(addr);
        let mut values: Vec<ExporterStats> = match self.exporter_stats.get(&key, 0) {
            Ok(v) => v.iter().copied().collect(),
            Err(aya::maps::MapError::KeyNotFound) => {
                let cpus = aya::util::nr_cpus()
                    .map_err(|(_, e)| map_err(names::EXPORTER_STATS, "count CPUs")(e))?;
                vec![ExporterStats::default(); cpus]
            }
            Err(e) => return Err(map_err(names::EXPORTER_STATS, "get")(e)),
        };
        if let Some(first) = values.first_mut() {
            first.packets += packets;
            first.bytes += bytes;
            first.last_seen_ns = first.last_seen_ns.max(last_seen_ns);
        }
        let values = aya::maps::PerCpuValues::try_from(values)
            .map_err(map_err(names::EXPORTER_STATS, "values"))?;
        self.exporter_stats
            .insert(key, values, 0)
            .map_err(map_err(names::EXPORTER_STATS, "insert"))
    }
}

/// Where [`Maps::resolve`] sends an exporter.
#[derive(Clone, Copy, Debug)]
pub struct Resolved {
    /// Peer id.
    pub peer_id: u32,
    /// Its `PEERS` entry.
    pub peer: PeerEntry,
    /// The exporter's pool.
    pub pool_id: u32,
    /// `Some(event kind)` when the exporter is not pinned to a live peer and was placed by the
    /// pool table: the controller should hear of it, as from the XDP program's ring buffer.
    pub unpinned: Option<u32>,
}

/// Opens one pinned map by name.
pub fn open_pin(dir: &Path, name: &'static str) -> Result<Map, DataPlaneError> {
    let data = MapData::from_pin(dir.join(name)).map_err(map_err(name, "open pinned"))?;
    Map::from_map_data(data).map_err(map_err(name, "open pinned"))
}

fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        r => r,
    }
}

/// LPM key for a source group; IPv4 prefixes count from the IPv4-mapped offset.
fn lpm_key(net: IpAddr, prefix_len: u8) -> Result<Key<[u8; 16]>, DataPlaneError> {
    let (bits, max) = match net {
        IpAddr::V4(_) => (96 + u32::from(prefix_len), 32),
        IpAddr::V6(_) => (u32::from(prefix_len), 128),
    };
    if prefix_len > max {
        return Err(DataPlaneError::Invalid {
            map: names::SOURCE_GROUPS,
            what: format!("prefix length {prefix_len} > {max} for {net}"),
        });
    }
    Ok(Key::new(bits, to_key_bytes(net)))
}

fn check_pool(pool_id: u32) -> Result<(), DataPlaneError> {
    if pool_id >= MAX_POOLS {
        return Err(DataPlaneError::Invalid {
            map: names::POOL_TABLES,
            what: format!("pool id {pool_id} >= {MAX_POOLS}"),
        });
    }
    Ok(())
}

impl DataPlane for Maps {
    fn set_listener(&mut self, addr: SocketAddr, pool_id: u32) -> Result<(), DataPlaneError> {
        check_pool(pool_id)?;
        self.listeners
            .insert(
                ListenerKey::new(addr.ip(), addr.port()),
                ListenerValue { pool_id },
                0,
            )
            .map_err(map_err(names::LISTENERS, "insert"))
    }

    fn remove_listener(&mut self, addr: SocketAddr) -> Result<(), DataPlaneError> {
        ignore_missing(
            self.listeners
                .remove(&ListenerKey::new(addr.ip(), addr.port())),
        )
        .map_err(map_err(names::LISTENERS, "remove"))
    }

    fn set_source_group(
        &mut self,
        net: IpAddr,
        prefix_len: u8,
        pool_id: u32,
    ) -> Result<(), DataPlaneError> {
        check_pool(pool_id)?;
        self.source_groups
            .insert(&lpm_key(net, prefix_len)?, SourceGroupValue { pool_id }, 0)
            .map_err(map_err(names::SOURCE_GROUPS, "insert"))
    }

    fn remove_source_group(&mut self, net: IpAddr, prefix_len: u8) -> Result<(), DataPlaneError> {
        ignore_missing(self.source_groups.remove(&lpm_key(net, prefix_len)?))
            .map_err(map_err(names::SOURCE_GROUPS, "remove"))
    }

    fn set_peer(&mut self, peer_id: u32, entry: PeerEntry) -> Result<(), DataPlaneError> {
        self.peers
            .set(peer_id, entry, 0)
            .map_err(map_err(names::PEERS, "set"))
    }

    fn set_pool_table(&mut self, pool_id: u32, table: &[u32]) -> Result<(), DataPlaneError> {
        check_pool(pool_id)?;
        if table.len() != POOL_TABLE_SIZE as usize {
            return Err(DataPlaneError::Invalid {
                map: names::POOL_TABLES,
                what: format!(
                    "table has {} slots, expected {POOL_TABLE_SIZE}",
                    table.len()
                ),
            });
        }
        let base = pool_id * POOL_TABLE_SIZE;
        let previous = match self.written_tables.remove(&pool_id) {
            Some(t) => t,
            None => (0..POOL_TABLE_SIZE)
                .map(|i| self.pool_tables.get(&(base + i), 0))
                .collect::<Result<_, _>>()
                .map_err(map_err(names::POOL_TABLES, "get"))?,
        };
        for (i, (&new, &old)) in table.iter().zip(&previous).enumerate() {
            if new != old {
                self.pool_tables
                    .set(base + i as u32, new, 0)
                    .map_err(map_err(names::POOL_TABLES, "set"))?;
            }
        }
        self.written_tables.insert(pool_id, table.to_vec());
        Ok(())
    }

    fn set_exporter(&mut self, addr: IpAddr, value: ExporterValue) -> Result<(), DataPlaneError> {
        self.exporters
            .insert(AddrKey::from(addr), value, 0)
            .map_err(map_err(names::EXPORTERS, "insert"))
    }

    fn remove_exporter(&mut self, addr: IpAddr) -> Result<(), DataPlaneError> {
        ignore_missing(self.exporters.remove(&AddrKey::from(addr)))
            .map_err(map_err(names::EXPORTERS, "remove"))
    }

    fn exporters(&self) -> Result<Vec<(IpAddr, ExporterValue)>, DataPlaneError> {
        self.exporters
            .iter()
            .map(|r| r.map(|(k, v)| (k.ip(), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err(names::EXPORTERS, "iterate"))
    }

    fn exporter_stats(&self) -> Result<Vec<(IpAddr, ExporterStats)>, DataPlaneError> {
        self.exporter_stats
            .iter()
            .map(|r| {
                r.map(|(k, per_cpu)| {
                    let sum = per_cpu
                        .iter()
                        .fold(ExporterStats::default(), |a, s| ExporterStats {
                            packets: a.packets + s.packets,
                            bytes: a.bytes + s.bytes,
                            last_seen_ns: a.last_seen_ns.max(s.last_seen_ns),
                        });
                    (k.ip(), sum)
                })
            })
            .collect::<Result<_, _>>()
            .map_err(map_err(names::EXPORTER_STATS, "iterate"))
    }
}
