//! Incremental Internet checksum updates (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`), shared
//! by the XDP program and the tests that check it against a full recomputation.

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
