//! Byte searches for the rules' hot paths, 16 bytes at a time.
//!
//! [`Lanes`] is 16 bytes in a SIMD register where the target has one that
//! every build may use (x86-64's SSE2, Wasm's `simd128` when the build
//! enables it, as this repository's does), and a plain array elsewhere; the
//! searches are written once over it.
//!
//! Why not `iter().position(..)`: as Wasm, a byte loop pays a deadline check
//! per iteration, and the standard library's own searches (`memchr` under
//! `str::split`, `from_utf8`) come precompiled without `simd128`. A search
//! over 16 lanes runs a sixteenth of the iterations. The searches are kept
//! out of line so that each loop runs in a small function with one index,
//! rather than inlined into a large one where every derived index of the
//! loop competes for registers.

/// 16 bytes, compared lane by lane. A comparison gives `0xff` in the lanes
/// where it holds and 0 elsewhere.
#[derive(Clone, Copy)]
pub(crate) struct Lanes(imp::V);

/// How many bytes [`Lanes`] holds.
pub(crate) const WIDTH: usize = 16;

impl Lanes {
    /// The first [`WIDTH`] bytes of `bytes` (panics when it is shorter).
    #[inline(always)]
    pub(crate) fn load(bytes: &[u8]) -> Lanes {
        let bytes: &[u8; WIDTH] = bytes[..WIDTH].try_into().expect("16 bytes");
        Lanes(imp::load(bytes))
    }

    /// `bytes` (at most [`WIDTH`]) followed by zeros. (The copy is the
    /// SDK's short one: as Wasm, a copy of a length known only at run time
    /// is a call out of the plugin's code, paid on every search's last,
    /// partial block.)
    #[inline(always)]
    fn load_partial(bytes: &[u8]) -> Lanes {
        let mut padded = [0u8; WIDTH];
        weir_plugin_sdk::copy::copy_short(&mut padded[..bytes.len()], bytes);
        Lanes(imp::load(&padded))
    }

    /// The first [`WIDTH`] bytes of `bytes`, or all of them followed by
    /// zeros when it is shorter.
    #[inline(always)]
    pub(crate) fn load_padded(bytes: &[u8]) -> Lanes {
        if bytes.len() >= WIDTH {
            Lanes::load(bytes)
        } else {
            Lanes::load_partial(bytes)
        }
    }

    /// `byte` in every lane.
    #[inline(always)]
    pub(crate) fn splat(byte: u8) -> Lanes {
        Lanes(imp::splat(byte))
    }

    /// Lanes equal to `byte`.
    #[inline(always)]
    pub(crate) fn eq(self, byte: u8) -> Lanes {
        Lanes(imp::eq(self.0, imp::splat(byte)))
    }

    /// Lanes within `lo..=hi` (unsigned).
    #[inline(always)]
    pub(crate) fn in_range(self, lo: u8, hi: u8) -> Lanes {
        Lanes(imp::in_range(self.0, lo, hi))
    }

    /// Both.
    #[inline(always)]
    pub(crate) fn and(self, other: Lanes) -> Lanes {
        Lanes(imp::and(self.0, other.0))
    }

    /// Either.
    #[inline(always)]
    pub(crate) fn or(self, other: Lanes) -> Lanes {
        Lanes(imp::or(self.0, other.0))
    }

    /// Lanes not set.
    #[inline(always)]
    pub(crate) fn not(self) -> Lanes {
        Lanes(imp::xor(self.0, imp::splat(0xff)))
    }

    /// Bit `i` set when lane `i` is set (the high bit of each lane).
    #[inline(always)]
    pub(crate) fn bitmask(self) -> u32 {
        imp::bitmask(self.0)
    }
}

/// Index of the first byte of `hay` whose lane `hit` sets.
#[inline(always)]
fn find_by(hay: &[u8], hit: impl Fn(Lanes) -> Lanes) -> Option<usize> {
    let mut at = 0;
    loop {
        let rest = &hay[at..];
        // the padding's lanes may be hits (`not`): only the bytes count
        let found = hit(Lanes::load_padded(rest)).bitmask() & ((1 << rest.len().min(WIDTH)) - 1);
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize);
        }
        if rest.len() <= WIDTH {
            return None;
        }
        at += WIDTH;
    }
}

/// Index of the first byte of `hay` equal to `byte`.
#[inline(never)]
pub(crate) fn find(hay: &[u8], byte: u8) -> Option<usize> {
    find_by(hay, |l| l.eq(byte))
}

/// Index of the first byte of `hay` equal to `a` or `b`.
#[inline(never)]
pub(crate) fn find2(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    find_by(hay, |l| l.eq(a).or(l.eq(b)))
}

/// Index of the first byte of `hay` equal to `a`, `b` or `c`.
#[inline(never)]
pub(crate) fn find3(hay: &[u8], a: u8, b: u8, c: u8) -> Option<usize> {
    find_by(hay, |l| l.eq(a).or(l.eq(b)).or(l.eq(c)))
}

/// Index of the last byte of `hay` equal to `byte`.
#[inline(never)]
pub(crate) fn rfind(hay: &[u8], byte: u8) -> Option<usize> {
    let mut end = hay.len();
    while end > 0 {
        let start = end.saturating_sub(WIDTH);
        let found =
            Lanes::load_padded(&hay[start..end]).eq(byte).bitmask() & ((1 << (end - start)) - 1);
        if found != 0 {
            return Some(start + (31 - found.leading_zeros()) as usize);
        }
        end = start;
    }
    None
}

/// Whether every byte of `hay` is an ASCII letter or digit, `-`, `.` or `_`
/// (the characters of a host name).
#[inline(never)]
pub(crate) fn all_host_chars(hay: &[u8]) -> bool {
    find_by(hay, |l| {
        let letter = l.or(Lanes::splat(0x20)).in_range(b'a', b'z');
        let digit = l.in_range(b'0', b'9');
        letter
            .or(digit)
            .or(l.eq(b'-'))
            .or(l.eq(b'.'))
            .or(l.eq(b'_'))
            .not()
    })
    .is_none()
}

/// Whether every byte of `hay` is an ASCII digit.
#[inline(never)]
pub(crate) fn all_digits(hay: &[u8]) -> bool {
    find_by(hay, |l| l.in_range(b'0', b'9').not()).is_none()
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    pub(super) type V = __m128i;

    // SAFETY (every function here): SSE2 is part of every x86-64 target,
    // and `load` reads exactly the 16 bytes its argument holds.
    #[inline(always)]
    pub(super) fn load(bytes: &[u8; 16]) -> V {
        unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
    }
    #[inline(always)]
    pub(super) fn splat(byte: u8) -> V {
        unsafe { _mm_set1_epi8(byte as i8) }
    }
    #[inline(always)]
    pub(super) fn eq(a: V, b: V) -> V {
        unsafe { _mm_cmpeq_epi8(a, b) }
    }
    #[inline(always)]
    pub(super) fn in_range(a: V, lo: u8, hi: u8) -> V {
        // a - lo <= hi - lo, unsigned, as min(a - lo, hi - lo) == a - lo
        unsafe {
            let shifted = _mm_sub_epi8(a, _mm_set1_epi8(lo as i8));
            let span = _mm_set1_epi8(hi.wrapping_sub(lo) as i8);
            _mm_cmpeq_epi8(_mm_min_epu8(shifted, span), shifted)
        }
    }
    #[inline(always)]
    pub(super) fn and(a: V, b: V) -> V {
        unsafe { _mm_and_si128(a, b) }
    }
    #[inline(always)]
    pub(super) fn or(a: V, b: V) -> V {
        unsafe { _mm_or_si128(a, b) }
    }
    #[inline(always)]
    pub(super) fn xor(a: V, b: V) -> V {
        unsafe { _mm_xor_si128(a, b) }
    }
    #[inline(always)]
    pub(super) fn bitmask(a: V) -> u32 {
        unsafe { _mm_movemask_epi8(a) as u32 }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod imp {
    use std::arch::wasm32::*;

    pub(super) type V = v128;

    // SAFETY (every function here): this module is compiled only when the
    // build enables `simd128`, and `load` reads exactly the 16 bytes its
    // argument holds (Wasm loads need no alignment).
    #[inline(always)]
    pub(super) fn load(bytes: &[u8; 16]) -> V {
        unsafe { v128_load(bytes.as_ptr().cast()) }
    }
    #[inline(always)]
    pub(super) fn splat(byte: u8) -> V {
        u8x16_splat(byte)
    }
    #[inline(always)]
    pub(super) fn eq(a: V, b: V) -> V {
        u8x16_eq(a, b)
    }
    #[inline(always)]
    pub(super) fn in_range(a: V, lo: u8, hi: u8) -> V {
        u8x16_le(
            u8x16_sub(a, u8x16_splat(lo)),
            u8x16_splat(hi.wrapping_sub(lo)),
        )
    }
    #[inline(always)]
    pub(super) fn and(a: V, b: V) -> V {
        v128_and(a, b)
    }
    #[inline(always)]
    pub(super) fn or(a: V, b: V) -> V {
        v128_or(a, b)
    }
    #[inline(always)]
    pub(super) fn xor(a: V, b: V) -> V {
        v128_xor(a, b)
    }
    #[inline(always)]
    pub(super) fn bitmask(a: V) -> u32 {
        u32::from(u8x16_bitmask(a))
    }
}

/// Elsewhere: the same operations over a plain array.
#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
mod imp {
    pub(super) type V = [u8; 16];

    #[inline(always)]
    fn map(a: V, b: V, f: impl Fn(u8, u8) -> u8) -> V {
        std::array::from_fn(|i| f(a[i], b[i]))
    }
    #[inline(always)]
    pub(super) fn load(bytes: &[u8; 16]) -> V {
        *bytes
    }
    #[inline(always)]
    pub(super) fn splat(byte: u8) -> V {
        [byte; 16]
    }
    #[inline(always)]
    pub(super) fn eq(a: V, b: V) -> V {
        map(a, b, |x, y| if x == y { 0xff } else { 0 })
    }
    #[inline(always)]
    pub(super) fn in_range(a: V, lo: u8, hi: u8) -> V {
        a.map(|x| if (lo..=hi).contains(&x) { 0xff } else { 0 })
    }
    #[inline(always)]
    pub(super) fn and(a: V, b: V) -> V {
        map(a, b, |x, y| x & y)
    }
    #[inline(always)]
    pub(super) fn or(a: V, b: V) -> V {
        map(a, b, |x, y| x | y)
    }
    #[inline(always)]
    pub(super) fn xor(a: V, b: V) -> V {
        map(a, b, |x, y| x ^ y)
    }
    #[inline(always)]
    pub(super) fn bitmask(a: V) -> u32 {
        a.iter()
            .enumerate()
            .fold(0, |m, (i, x)| m | (u32::from(x >> 7) << i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length up to three windows, the needle at every position:
    /// the lane searches agree with the plain ones.
    #[test]
    fn searches_agree_with_plain_iteration() {
        let alphabet = b"aZ09-._/:?#@ \x80\xff~+";
        let bytes: Vec<u8> = (0..50).map(|i| alphabet[i % alphabet.len()]).collect();
        for len in 0..bytes.len() {
            for start in 0..len.min(20) {
                let hay = &bytes[start..len];
                for b in [b'/', b':', b'@', b'~', 0x80] {
                    assert_eq!(find(hay, b), hay.iter().position(|&x| x == b), "{hay:?}");
                    assert_eq!(rfind(hay, b), hay.iter().rposition(|&x| x == b), "{hay:?}");
                }
                assert_eq!(
                    find2(hay, b'?', b'#'),
                    hay.iter().position(|&x| x == b'?' || x == b'#')
                );
                assert_eq!(
                    find3(hay, b'/', b'?', b'#'),
                    hay.iter().position(|&x| matches!(x, b'/' | b'?' | b'#'))
                );
                let host = |x: u8| x.is_ascii_alphanumeric() || matches!(x, b'-' | b'.' | b'_');
                assert_eq!(all_host_chars(hay), hay.iter().all(|&x| host(x)), "{hay:?}");
                assert_eq!(
                    all_digits(hay),
                    hay.iter().all(u8::is_ascii_digit),
                    "{hay:?}"
                );
            }
        }
        // every byte value, at a lane of its own
        for b in 0..=255u8 {
            let mut hay = [b'a'; 20];
            hay[17] = b;
            let host = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
            assert_eq!(all_host_chars(&hay), host, "{b}");
            assert_eq!(all_digits(&hay[17..18]), b.is_ascii_digit(), "{b}");
            assert_eq!(find(&hay, b), hay.iter().position(|&x| x == b));
        }
    }
}
