//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted.
//!
//! User space computes each pool's lookup table here; the XDP program only indexes it with
//! `exporter_hash(addr) % POOL_TABLE_SIZE`. Pure and deterministic: the same peers give the same
//! table on every Central, which is what lets a standby take over without reshuffling.

use sluice_common::NO_PEER;

/// One table member: peer id (the value stored in the table), a stable name (seeds the
/// permutation, so ids can be reused without moving slots), and a relative weight.
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    /// Peer id written into the slots this member owns.
    pub id: u32,
    /// Stable identity (the peer name).
    pub name: &'a str,
    /// Relative weight; 0 means the member owns no slot.
    pub weight: u32,
}

/// Builds a table of `size` slots (`size` must be prime and larger than the member count).
///
/// Members with weight 0 are ignored; with no usable member every slot is [`NO_PEER`].
/// Members are taken in name order, so the caller's ordering does not matter.
pub fn build_table(members: &[Member<'_>], size: u32) -> Vec<u32> {
    let m = size as usize;
    let mut members: Vec<Member<'_>> = members.iter().copied().filter(|p| p.weight > 0).collect();
    members.sort_by(|a, b| a.name.cmp(b.name).then(a.id.cmp(&b.id)));
    let mut table = vec![NO_PEER; m];
    if members.is_empty() || m == 0 {
        return table;
    }
    let max_w = members
        .iter()
        .map(|p| u64::from(p.weight))
        .max()
        .unwrap_or(1);
    let perms: Vec<(u64, u64)> = members
        .iter()
        .map(|p| {
            let offset = fnv1a(p.name.as_bytes(), 0xcbf2_9ce4_8422_2325) % size as u64;
            let skip = fnv1a(p.name.as_bytes(), 0x8422_2325_cbf2_9ce4) % (size as u64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; members.len()];
    let mut credit = vec![0u64; members.len()];
    let mut filled = 0usize;
    while filled < m {
        for (i, p) in members.iter().enumerate() {
            credit[i] += u64::from(p.weight);
            while credit[i] >= max_w {
                credit[i] -= max_w;
                let (offset, skip) = perms[i];
                // Next free slot in this member's preference order. Terminates because the
                // permutation visits every slot (skip and size are coprime: size is prime).
                let slot = loop {
                    let c = ((offset + next[i] * skip) % size as u64) as usize;
                    next[i] += 1;
                    if table[c] == NO_PEER {
                        break c;
                    }
                };
                table[slot] = p.id;
                filled += 1;
                if filled == m {
                    return table;
                }
            }
        }
    }
    table
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// True when `n` is prime (table sizes must be).
pub fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d: &u32| u64::from(*d) * u64::from(*d) <= u64::from(n))
            .all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_common::{MAX_PEERS, POOL_TABLE_SIZE};

    const _: () = assert!(POOL_TABLE_SIZE >= 100 * MAX_PEERS);

    fn members(names: &[String], weights: &[u32]) -> Vec<Member<'static>> {
        names
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(i, (n, &w))| Member {
                id: i as u32,
                name: Box::leak(n.clone().into_boxed_str()),
                weight: w,
            })
            .collect()
    }

    fn counts(table: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for &p in table {
            c[p as usize] += 1;
        }
        c
    }

    #[test]
    fn table_size_is_prime_and_large_enough() {
        assert!(is_prime(POOL_TABLE_SIZE));
        assert!(!is_prime(25_600));
    }

    #[test]
    fn empty_pool_has_no_peer() {
        assert!(build_table(&[], 101).iter().all(|&p| p == NO_PEER));
        let zero = [Member {
            id: 3,
            name: "a",
            weight: 0,
        }];
        assert!(build_table(&zero, 101).iter().all(|&p| p == NO_PEER));
    }

    #[test]
    fn input_order_does_not_matter() {
        let a = [
            Member {
                id: 0,
                name: "a",
                weight: 1,
            },
            Member {
                id: 1,
                name: "b",
                weight: 2,
            },
        ];
        let b = [a[1], a[0]];
        assert_eq!(build_table(&a, 1009), build_table(&b, 1009));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Every member's share of slots is within 1 % (absolute) of its weight share.
        #[test]
        fn balance_within_one_percent_of_weights(n in 1usize..24, weights in prop::collection::vec(1u32..5, 24)) {
            let names: Vec<String> = (0..n).map(|i| format!("peer-{i}")).collect();
            let ms = members(&names, &weights[..n]);
            let table = build_table(&ms, POOL_TABLE_SIZE);
            let total_w: u32 = weights[..n].iter().sum();
            for (i, c) in counts(&table, n).into_iter().enumerate() {
                let got = c as f64 / f64::from(POOL_TABLE_SIZE);
                let want = f64::from(weights[i]) / f64::from(total_w);
                prop_assert!((got - want).abs() < 0.01, "peer {i}: {got:.4} vs {want:.4}");
            }
        }

        /// Removing one peer moves its slots and only a small fraction of the others'.
        #[test]
        fn minimal_disruption_when_a_peer_leaves(n in 3usize..24, gone in 0usize..24) {
            let gone = gone % n;
            let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let ms = members(&names, &vec![1; n]);
            let before = build_table(&ms, POOL_TABLE_SIZE);
            let rest: Vec<Member<'_>> = ms.iter().copied().filter(|m| m.id != gone as u32).collect();
            let after = build_table(&rest, POOL_TABLE_SIZE);
            let mut disturbed = 0usize;
            let mut kept = 0usize;
            for (b, a) in before.iter().zip(&after) {
                prop_assert_ne!(*a, gone as u32);
                if *b != gone as u32 {
                    kept += 1;
                    if a != b { disturbed += 1; }
                }
            }
            // Ideal is 0; Maglev trades a little disruption for balance. The paper reports
            // a few percent; a modulo table would move about (n-1)/n of them.
            let frac = disturbed as f64 / kept as f64;
            prop_assert!(frac < 0.06, "{:.3} of surviving slots moved", frac);
        }
    }
}
