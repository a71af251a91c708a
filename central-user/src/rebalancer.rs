//! The rebalancer: a pure function from a pool's membership, exporter rates and assignments to
//! the fewest exporter moves that bring every peer within the distribution margin.
//!
//! Each eligible peer (healthy, not draining, weight > 0) has a weighted share
//! `weight / Σ weights of eligible peers` and a capacity of `(share + margin) × pool rate`.
//! Exporters on ineligible peers must move (failover, drain); exporters that are pinned or were
//! moved in the current interval stay. An exporter larger than every capacity (an *elephant*)
//! can never fit: it is reported, stays where it is, and its peer is exempt from the margin and
//! receives nothing else, so repeated runs never push it back and forth.
//!
//! The search is exact — iterative deepening over the number of moves, so the first level with
//! a solution is minimal — within a node budget; past the budget the greedy plan (largest fit
//! from the most overloaded peer) is used and the plan says it is not proven minimal.
//! Everything is ordered (peers by id, exporters by address): the same input in any order gives
//! the same plan.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Serialize;

/// Nodes the exact search may visit before it falls back to the greedy plan.
const SEARCH_BUDGET: u64 = 200_000;

/// One peer of the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInput {
    /// Peer id.
    pub id: u32,
    /// Relative capacity.
    pub weight: u32,
    /// Heartbeats arrive (not OFFLINE).
    pub healthy: bool,
    /// Being drained: receives nothing, its exporters move away.
    pub draining: bool,
}

impl PeerInput {
    /// Can receive exporters.
    pub fn eligible(&self) -> bool {
        self.healthy && !self.draining && self.weight > 0
    }
}

/// One exporter of the pool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExporterInput {
    /// Exporter address (unique within the input).
    pub addr: IpAddr,
    /// Peer it is assigned to now (an id absent from the peers counts as ineligible).
    pub peer: u32,
    /// Smoothed packet rate; negative or non-finite counts as 0.
    pub rate: f64,
    /// Pinned by the operator: only failover and drain move it.
    pub pinned: bool,
    /// Already moved in the current interval: only failover and drain move it again.
    pub moved_recently: bool,
}

/// What the rebalancer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Evacuate ineligible peers and restore the margin.
    Rebalance,
    /// Only evacuate ineligible peers, each exporter to the least loaded (weighted) peer
    /// (failover and drain: fast, no other exporter moves).
    Evacuate,
}

/// The rebalancer's input for one pool.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// Pool members.
    pub peers: &'a [PeerInput],
    /// Exporters of the pool.
    pub exporters: &'a [ExporterInput],
    /// Allowed excess over the weighted share, percentage points.
    pub margin_pct: f64,
}

/// One exporter move.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Move {
    /// Exporter address.
    pub exporter: IpAddr,
    /// Peer it leaves (possibly absent or dead).
    pub from: u32,
    /// Peer it goes to.
    pub to: u32,
    /// Its smoothed packet rate.
    pub rate: f64,
}

/// Why an exporter cannot be placed within the margin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnplaceableReason {
    /// Larger than every peer's share plus the margin.
    Elephant,
    /// The pool has no eligible peer.
    NoHealthyPeer,
}

/// An exporter the plan could not place within the margin.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Unplaceable {
    /// Exporter address.
    pub exporter: IpAddr,
    /// Where it stays (after the plan).
    pub peer: u32,
    /// Its smoothed packet rate.
    pub rate: f64,
    /// Why.
    pub reason: UnplaceableReason,
}

/// A peer's load before or after the plan.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PeerLoad {
    /// Peer id.
    pub peer: u32,
    /// Packets per second of its exporters.
    pub rate: f64,
    /// Its part of the pool's rate, percent.
    pub load_pct: f64,
    /// Its weighted share, percent (0 when ineligible).
    pub share_pct: f64,
}

/// The rebalancer's answer for one pool.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// Moves, in the order to apply them.
    pub moves: Vec<Move>,
    /// Exporters that stay outside the margin.
    pub unplaceable: Vec<Unplaceable>,
    /// Loads now, by peer id.
    pub before: Vec<PeerLoad>,
    /// Loads once the moves are applied, by peer id.
    pub after: Vec<PeerLoad>,
    /// Every eligible peer (except elephants' hosts) ends within the margin.
    pub within_margin: bool,
    /// The number of moves is proven minimal (the exact search finished).
    pub minimal: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Stays: pinned, moved recently, or an elephant on an eligible peer.
    Fixed,
    /// May move.
    Optional,
    /// Must move: its peer is ineligible.
    Forced,
}

struct Pool {
    ids: Vec<u32>,
    weights: Vec<u32>,
    eligible: Vec<bool>,
    share: Vec<f64>,
    cap: Vec<f64>,
    /// Hosts an elephant: exempt from the margin and closed to moves.
    exempt: Vec<bool>,
    total: f64,
    eps: f64,
}

impl Pool {
    fn open(&self, p: usize) -> bool {
        self.eligible[p] && !self.exempt[p]
    }

    fn feasible(&self, load: &[f64]) -> bool {
        (0..load.len()).all(|p| !self.open(p) || load[p] <= self.cap[p] + self.eps)
    }

    fn fits(&self, load: &[f64], p: usize, rate: f64) -> bool {
        self.open(p) && load[p] + rate <= self.cap[p] + self.eps
    }

    fn score(&self, load: &[f64]) -> f64 {
        if self.total <= 0.0 {
            return 0.0;
        }
        (0..load.len())
            .filter(|&p| self.eligible[p])
            .map(|p| (load[p] / self.total - self.share[p]).powi(2))
            .sum()
    }

    /// Eligible peer minimising the weighted load after adding `rate`, then the weighted
    /// exporter count (so exporters without traffic yet still spread); open peers first.
    fn least_loaded(&self, load: &[f64], count: &[usize], rate: f64) -> Option<usize> {
        let key = |p: usize| {
            let w = f64::from(self.weights[p]);
            ((load[p] + rate) / w, (count[p] + 1) as f64 / w)
        };
        let best = |open: bool| {
            (0..load.len())
                .filter(|&p| self.eligible[p] && (!open || !self.exempt[p]))
                .min_by(|&a, &b| {
                    let (ka, kb) = (key(a), key(b));
                    ka.0.total_cmp(&kb.0)
                        .then(ka.1.total_cmp(&kb.1))
                        .then(a.cmp(&b))
                })
        };
        best(true).or_else(|| best(false))
    }

    fn loads(&self, load: &[f64]) -> Vec<PeerLoad> {
        (0..load.len())
            .map(|p| PeerLoad {
                peer: self.ids[p],
                rate: load[p],
                load_pct: if self.total > 0.0 {
                    100.0 * load[p] / self.total
                } else {
                    0.0
                },
                share_pct: 100.0 * self.share[p],
            })
            .collect()
    }
}

struct Item {
    addr: IpAddr,
    from_id: u32,
    /// Index of its peer, `None` if the id is not a member.
    src: Option<usize>,
    rate: f64,
    kind: Kind,
}

/// Plans the moves for one pool.
pub fn plan(input: &Input<'_>, mode: Mode) -> Plan {
    let mut peers = input.peers.to_vec();
    peers.sort_by_key(|p| p.id);
    peers.dedup_by_key(|p| p.id);
    let rate_of = |r: f64| if r.is_finite() && r > 0.0 { r } else { 0.0 };
    let mut exporters = input.exporters.to_vec();
    exporters.sort_by(|a, b| {
        a.addr
            .cmp(&b.addr)
            .then(a.peer.cmp(&b.peer))
            .then(rate_of(a.rate).total_cmp(&rate_of(b.rate)))
    });

    let eligible: Vec<bool> = peers.iter().map(PeerInput::eligible).collect();
    let total_weight: f64 = peers
        .iter()
        .filter(|p| p.eligible())
        .map(|p| f64::from(p.weight))
        .sum();
    let total: f64 = exporters.iter().map(|e| rate_of(e.rate)).sum();
    let margin = input.margin_pct.max(0.0) / 100.0;
    let share: Vec<f64> = peers
        .iter()
        .map(|p| {
            if p.eligible() {
                f64::from(p.weight) / total_weight
            } else {
                0.0
            }
        })
        .collect();
    let cap = share.iter().map(|s| (s + margin) * total).collect();
    let mut pool = Pool {
        ids: peers.iter().map(|p| p.id).collect(),
        weights: peers.iter().map(|p| p.weight).collect(),
        eligible,
        share,
        cap,
        exempt: vec![false; peers.len()],
        total,
        eps: 1e-9 * total.max(1.0),
    };
    let max_cap = (0..peers.len())
        .filter(|&p| pool.eligible[p])
        .map(|p| pool.cap[p])
        .fold(f64::NEG_INFINITY, f64::max);
    let is_elephant = |rate: f64| rate > max_cap + pool.eps;

    let items: Vec<Item> = exporters
        .iter()
        .map(|e| {
            let src = peers.binary_search_by_key(&e.peer, |p| p.id).ok();
            let rate = rate_of(e.rate);
            let kind = match src {
                Some(p) if pool.eligible[p] => {
                    if e.pinned || e.moved_recently || is_elephant(rate) {
                        Kind::Fixed
                    } else {
                        Kind::Optional
                    }
                }
                _ => Kind::Forced,
            };
            Item {
                addr: e.addr,
                from_id: e.peer,
                src,
                rate,
                kind,
            }
        })
        .collect();

    let mut load = vec![0.0; peers.len()];
    for it in &items {
        if let Some(p) = it.src {
            load[p] += it.rate;
        }
    }
    let before = pool.loads(&load);
    let mut unplaceable = Vec::new();

    if !pool.eligible.iter().any(|&e| e) {
        unplaceable.extend(items.iter().filter(|it| it.kind == Kind::Forced).map(|it| {
            Unplaceable {
                exporter: it.addr,
                peer: it.from_id,
                rate: it.rate,
                reason: UnplaceableReason::NoHealthyPeer,
            }
        }));
        let within_margin = unplaceable.is_empty();
        return Plan {
            moves: Vec::new(),
            unplaceable,
            after: before.clone(),
            before,
            within_margin,
            minimal: true,
        };
    }

    // Elephants: those on eligible peers stay and close their host; forced ones go (largest
    // first) to the least loaded peer, which they close in turn.
    let mut dest: Vec<Option<usize>> = items.iter().map(|it| it.src).collect();
    for it in items
        .iter()
        .filter(|it| it.kind == Kind::Fixed && is_elephant(it.rate))
    {
        if let Some(p) = it.src {
            pool.exempt[p] = true;
        }
    }
    let mut forced_elephants: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].kind == Kind::Forced && is_elephant(items[i].rate))
        .collect();
    forced_elephants.sort_by(|&a, &b| items[b].rate.total_cmp(&items[a].rate).then(a.cmp(&b)));
    let mut count = counts(peers.len(), &dest);
    for &i in &forced_elephants {
        if let Some(p) = pool.least_loaded(&load, &count, items[i].rate) {
            load[p] += items[i].rate;
            count[p] += 1;
            dest[i] = Some(p);
            pool.exempt[p] = true;
        }
    }
    for (i, it) in items.iter().enumerate() {
        if is_elephant(it.rate)
            && it.kind != Kind::Optional
            && let Some(p) = dest[i]
        {
            unplaceable.push(Unplaceable {
                exporter: it.addr,
                peer: pool.ids[p],
                rate: it.rate,
                reason: UnplaceableReason::Elephant,
            });
        }
    }
    // Remove the remaining forced exporters from their (ineligible) peers' load.
    let forced: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].kind == Kind::Forced && !is_elephant(items[i].rate))
        .collect();
    for &i in &forced {
        if let Some(p) = items[i].src {
            load[p] -= items[i].rate;
        }
    }

    let (greedy_dest, greedy_load) = greedy(&pool, &items, &forced, &dest, &load, mode);
    let mut minimal = true;
    let (dest, load) = if mode == Mode::Evacuate {
        (greedy_dest, greedy_load)
    } else {
        let greedy_moves = count_moves(&items, &greedy_dest);
        let bound = if pool.feasible(&greedy_load) {
            greedy_moves
        } else {
            usize::MAX
        };
        match exact(&pool, &items, &forced, &dest, &load, bound) {
            Search::Found(d, l) => (d, l),
            Search::None => (greedy_dest, greedy_load),
            Search::OverBudget => {
                minimal = false;
                (greedy_dest, greedy_load)
            }
        }
    };

    let mut moves: Vec<Move> = items
        .iter()
        .zip(&dest)
        .filter(|(it, d)| **d != it.src)
        .filter_map(|(it, d)| {
            d.map(|p| Move {
                exporter: it.addr,
                from: it.from_id,
                to: pool.ids[p],
                rate: it.rate,
            })
        })
        .collect();
    // Largest first: the biggest relief lands first if applying is interrupted.
    moves.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(a.exporter.cmp(&b.exporter)));
    Plan {
        moves,
        unplaceable,
        before,
        after: pool.loads(&load),
        within_margin: pool.feasible(&load),
        minimal,
    }
}

/// Exporters per peer index (those still to be placed sit on ineligible peers, which the
/// placement never looks at).
fn counts(peers: usize, dest: &[Option<usize>]) -> Vec<usize> {
    let mut count = vec![0; peers];
    for p in dest.iter().flatten() {
        count[*p] += 1;
    }
    count
}

fn count_moves(items: &[Item], dest: &[Option<usize>]) -> usize {
    items
        .iter()
        .zip(dest)
        .filter(|(it, d)| **d != it.src)
        .count()
}

/// Forced exporters largest first to the least loaded peer, then (in [`Mode::Rebalance`]) moves
/// off the most overloaded peer: the smallest exporter that alone clears its excess, else the
/// largest that fits somewhere, to the peer with the most headroom. Every move lands within the
/// destination's capacity, so the total excess strictly falls and the loop cannot cycle.
/// O(moves × peers + exporters × log exporters).
fn greedy(
    pool: &Pool,
    items: &[Item],
    forced: &[usize],
    dest: &[Option<usize>],
    load: &[f64],
    mode: Mode,
) -> (Vec<Option<usize>>, Vec<f64>) {
    let mut dest = dest.to_vec();
    let mut load = load.to_vec();
    let mut count = counts(load.len(), &dest);
    let mut order = forced.to_vec();
    order.sort_by(|&a, &b| items[b].rate.total_cmp(&items[a].rate).then(a.cmp(&b)));
    for i in order {
        dest[i] = pool.least_loaded(&load, &count, items[i].rate);
        if let Some(p) = dest[i] {
            load[p] += items[i].rate;
            count[p] += 1;
        }
    }
    if mode == Mode::Evacuate {
        return (dest, load);
    }
    // Movable exporters per peer, ordered by rate (rates are finite and ≥ 0, so their bit
    // patterns sort like the numbers). Each moves at most once.
    let mut movable: Vec<BTreeSet<(u64, usize)>> = vec![BTreeSet::new(); load.len()];
    for (i, it) in items.iter().enumerate() {
        if let (Kind::Optional, Some(p)) = (it.kind, dest[i]) {
            movable[p].insert((it.rate.to_bits(), i));
        }
    }
    let mut stuck = vec![false; load.len()];
    loop {
        let excess = |p: usize| load[p] - pool.cap[p];
        let Some(src) = (0..load.len())
            .filter(|&p| pool.open(p) && !stuck[p] && excess(p) > pool.eps)
            .max_by(|&a, &b| excess(a).total_cmp(&excess(b)).then(b.cmp(&a)))
        else {
            break;
        };
        let need = excess(src);
        // The open peer with the most room takes whatever fits anywhere.
        let room = |p: usize| pool.cap[p] - load[p];
        let Some(to) = (0..load.len())
            .filter(|&p| p != src && pool.open(p))
            .max_by(|&a, &b| room(a).total_cmp(&room(b)).then(b.cmp(&a)))
        else {
            break;
        };
        let fits = (room(to) + pool.eps).max(0.0).to_bits();
        let clears = (need - pool.eps).max(0.0).to_bits();
        let clearing = (clears <= fits)
            .then(|| movable[src].range((clears, 0)..=(fits, usize::MAX)).next())
            .flatten();
        let pick = clearing
            .or_else(|| movable[src].range(..=(fits, usize::MAX)).next_back())
            .copied();
        match pick {
            Some(key @ (_, i)) => {
                movable[src].remove(&key);
                load[src] -= items[i].rate;
                load[to] += items[i].rate;
                dest[i] = Some(to);
            }
            None => stuck[src] = true,
        }
    }
    (dest, load)
}

enum Search {
    Found(Vec<Option<usize>>, Vec<f64>),
    /// Proven: no plan with fewer moves than the bound.
    None,
    OverBudget,
}

struct Exact<'a> {
    pool: &'a Pool,
    items: &'a [Item],
    nodes: u64,
    best: Option<(f64, Vec<Option<usize>>, Vec<f64>)>,
}

/// Iterative deepening over the number of moves, below `bound`: for each size, every set of
/// optional exporters (with all forced ones) and every placement of them; the first size with a
/// feasible placement is minimal, and among its placements the most even one (then the first in
/// order) wins.
fn exact(
    pool: &Pool,
    items: &[Item],
    forced: &[usize],
    dest: &[Option<usize>],
    load: &[f64],
    bound: usize,
) -> Search {
    let optional: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].kind == Kind::Optional)
        .collect();
    let mut search = Exact {
        pool,
        items,
        nodes: 0,
        best: None,
    };
    let last = bound.min(forced.len() + optional.len() + 1);
    for k in forced.len()..last {
        let extra = k - forced.len();
        let mut chosen = Vec::with_capacity(k);
        let mut dest = dest.to_vec();
        let mut load = load.to_vec();
        if !search.choose(
            &optional,
            0,
            extra,
            forced,
            &mut chosen,
            &mut dest,
            &mut load,
        ) {
            return Search::OverBudget;
        }
        if let Some((_, d, l)) = search.best.take() {
            return Search::Found(d, l);
        }
    }
    Search::None
}

impl Exact<'_> {
    fn tick(&mut self) -> bool {
        self.nodes += 1;
        self.nodes <= SEARCH_BUDGET
    }

    /// Picks `left` more optional exporters from `optional[from..]`; false when over budget.
    #[expect(
        clippy::too_many_arguments,
        reason = "recursive search state, kept on the stack"
    )]
    fn choose(
        &mut self,
        optional: &[usize],
        from: usize,
        left: usize,
        forced: &[usize],
        chosen: &mut Vec<usize>,
        dest: &mut [Option<usize>],
        load: &mut [f64],
    ) -> bool {
        if !self.tick() {
            return false;
        }
        if left == 0 {
            let mut movers: Vec<usize> = forced.iter().chain(chosen.iter()).copied().collect();
            // Largest first prunes earlier.
            movers.sort_by(|&a, &b| {
                self.items[b]
                    .rate
                    .total_cmp(&self.items[a].rate)
                    .then(a.cmp(&b))
            });
            for &i in chosen.iter() {
                if let Some(p) = self.items[i].src {
                    load[p] -= self.items[i].rate;
                }
            }
            let ok = self.place(&movers, 0, dest, load);
            for &i in chosen.iter() {
                if let Some(p) = self.items[i].src {
                    load[p] += self.items[i].rate;
                }
            }
            return ok;
        }
        for j in from..optional.len() {
            if optional.len() - j < left {
                break;
            }
            chosen.push(optional[j]);
            let ok = self.choose(optional, j + 1, left - 1, forced, chosen, dest, load);
            chosen.pop();
            if !ok {
                return false;
            }
        }
        true
    }

    /// Places `movers[at..]` on open peers other than their own; false when over budget.
    fn place(
        &mut self,
        movers: &[usize],
        at: usize,
        dest: &mut [Option<usize>],
        load: &mut [f64],
    ) -> bool {
        if !self.tick() {
            return false;
        }
        let Some(&i) = movers.get(at) else {
            if self.pool.feasible(load) {
                let score = self.pool.score(load);
                if self.best.as_ref().is_none_or(|(s, _, _)| score < *s) {
                    self.best = Some((score, dest.to_vec(), load.to_vec()));
                }
            }
            return true;
        };
        let (rate, src) = (self.items[i].rate, self.items[i].src);
        for p in 0..load.len() {
            if Some(p) == src || !self.pool.fits(load, p, rate) {
                continue;
            }
            load[p] += rate;
            dest[i] = Some(p);
            let ok = self.place(movers, at + 1, dest, load);
            load[p] -= rate;
            dest[i] = src;
            if !ok {
                return false;
            }
        }
        true
    }
}
