//! The Internet checksum: incremental updates (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`),
//! which the XDP program applies when it rewrites a packet, and the full RFC 1071 sum
//! ([`checksum`]) for packets user space builds whole (the slow-path relay). The tests keep
//! their own independent oracles.

/// One's-complement contribution of replacing the 16-bit word `old` with `new`.
#[inline(always)]
pub const fn diff16(old: u16, new: u16) -> u32 {
    (!old) as u32 + new as u32
}

/// Contribution of replacing a run of bytes (even length, big-endian words).
#[inline(always)]
pub fn diff_bytes<const N: usize>(old: &[u8; N], new: &[u8; N]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < N {
        sum += diff16(
            u16::from_be_bytes([old[i], old[i + 1]]),
            u16::from_be_bytes([new[i], new[i + 1]]),
        );
        i += 2;
    }
    sum
}

/// Folds a 32-bit one's-complement sum to 16 bits.
#[inline(always)]
pub const fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Applies accumulated [`diff16`]/[`diff_bytes`] contributions to a checksum field value.
#[inline(always)]
pub const fn apply(csum: u16, diff: u32) -> u16 {
    !fold((!csum) as u32 + diff)
}

/// Same as [`apply`] for a UDP checksum: zero means "no checksum" on IPv4, so a computed zero
/// is sent as `0xffff` (RFC 768).
#[inline(always)]
pub const fn apply_udp(csum: u16, diff: u32) -> u16 {
    match apply(csum, diff) {
        0 => 0xffff,
        c => c,
    }
}

/// RFC 1071 checksum over the concatenation of `parts` (a final odd byte is padded with zero).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    // A part of odd length leaves its last byte as the high half of the next word.
    let mut odd: Option<u8> = None;
    for &part in parts {
        let mut rest = part;
        if let (Some(hi), [lo, tail @ ..]) = (odd, rest) {
            sum += u64::from(u16::from_be_bytes([hi, *lo]));
            odd = None;
            rest = tail;
        }
        let mut words = rest.chunks_exact(2);
        for w in &mut words {
            sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            odd = Some(*last);
        }
    }
    if let Some(hi) = odd {
        sum += u64::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn rfc1071_example_and_odd_parts() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data]), !0xddf2);
        // Splitting at odd offsets does not change the sum.
        assert_eq!(checksum(&[&data[..3], &data[3..5], &data[5..]]), !0xddf2);
        // A final odd byte is the high half of a zero-padded word.
        assert_eq!(checksum(&[&[0x12]]), !0x1200);
    }
}
