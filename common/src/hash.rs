//! The exporter hash, shared so that user space can predict which consistent-hash slot the
//! XDP program picks for an address (`sluicectl exporters explain`, the slow-path relay).

/// Hashes a 16-byte exporter key (IPv4 addresses are IPv4-mapped) to 32 bits.
///
/// Four 32-bit words mixed with the murmur3 finaliser: cheap in BPF (no loops the verifier
/// has to unroll over bytes) and well spread for addresses that differ in one byte.
#[inline(always)]
pub fn exporter_hash(addr: &[u8; 16]) -> u32 {
    let mut h: u32 = 0x9747_b28c;
    let mut i = 0;
    while i < 4 {
        let w = u32::from_le_bytes([
            addr[i * 4],
            addr[i * 4 + 1],
            addr[i * 4 + 2],
            addr[i * 4 + 3],
        ]);
        h ^= fmix(w.wrapping_add(i as u32));
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
        i += 1;
    }
    fmix(h)
}

#[inline(always)]
const fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Slot of `addr` in a consistent-hash table of `size` entries.
#[inline(always)]
pub fn table_slot(addr: &[u8; 16], size: u32) -> u32 {
    exporter_hash(addr) % size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbouring_addresses_spread() {
        let size = crate::maps::POOL_TABLE_SIZE;
        let mut seen = [0u32; 16];
        for last in 0..=255u8 {
            let mut a = [0u8; 16];
            a[10] = 0xff;
            a[11] = 0xff;
            a[12] = 198;
            a[13] = 18;
            a[15] = last;
            seen[(table_slot(&a, size) % 16) as usize] += 1;
        }
        // 256 addresses over 16 buckets: 16 expected each; a poor hash piles them up.
        assert!(seen.iter().all(|&n| (4..=32).contains(&n)), "{seen:?}");
    }

    #[test]
    fn hash_values_are_pinned() {
        // Pool-table slots of unpinned exporters follow this hash; a Central and its XDP
        // program, or a restarted Central, must agree on it. A change here reshuffles every
        // exporter not yet pinned: make it deliberately, and update these values.
        let mut v4 = [0u8; 16];
        v4[10..].copy_from_slice(&[0xff, 0xff, 198, 18, 1, 10]);
        let v6 = [0x20, 0x01, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        assert_eq!(
            [
                exporter_hash(&[0; 16]),
                exporter_hash(&v4),
                exporter_hash(&v6)
            ],
            [624_595_803, 3_070_851_037, 430_924_663]
        );
    }
}
