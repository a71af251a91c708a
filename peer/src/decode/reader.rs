//! Checked big-endian reads: every accessor returns `None` past the end, so no decoder can
//! panic on short input.

/// Big-endian unsigned integer of 1..=8 bytes (RFC 7011 §6.2 reduced-size encoding).
/// Longer slices keep their last 8 bytes.
#[inline(always)]
pub(crate) fn be_uint(b: &[u8]) -> u64 {
    match *b {
        [x] => u64::from(x),
        [x, y] => u64::from(u16::from_be_bytes([x, y])),
        [a, b, c, d] => u64::from(u32::from_be_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => {
            let mut v = 0u64;
            for &x in b.iter().rev().take(8).rev() {
                v = (v << 8) | u64::from(x);
            }
            v
        }
    }
}

#[inline]
pub(crate) fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

#[inline]
pub(crate) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

#[inline]
pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(s))
}

#[inline]
pub(crate) fn array_at<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

/// A forward cursor over a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let v = array_at::<N>(self.buf, self.pos)?;
        self.pos += N;
        Some(v)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        let v = u16_at(self.buf, self.pos)?;
        self.pos += 2;
        Some(v)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        let v = u32_at(self.buf, self.pos)?;
        self.pos += 4;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_checked() {
        let b = [1u8, 2, 3];
        assert_eq!(u16_at(&b, 1), Some(0x0203));
        assert_eq!(u16_at(&b, 2), None);
        assert_eq!(u32_at(&b, 0), None);
        assert_eq!(u16_at(&b, usize::MAX), None);
        assert_eq!(be_uint(&[1, 0]), 256);
        assert_eq!(be_uint(&[]), 0);
        assert_eq!(be_uint(&[1, 2, 3]), 0x010203);
        assert_eq!(be_uint(&[9, 1, 2, 3, 4, 5, 6, 7, 8]), 0x0102030405060708);
        let mut r = Reader::new(&b);
        assert_eq!(r.take(1), Some(&b[..1]));
        assert_eq!(r.take(3), None);
        assert_eq!(r.take(2), Some(&b[1..]));
        assert_eq!(r.remaining(), 0);
    }
}
