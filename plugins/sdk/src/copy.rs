//! Appending short strings without a call out of the plugin's code.
//!
//! As Wasm, a copy whose length is known only at run time is a
//! `memory.copy` instruction, and wasmtime runs it as a call from the
//! guest's code into the runtime: a fixed cost per copy that dominates a
//! copy of a few dozen bytes. A plugin that appends a handful of strings
//! per row pays it several times per row. wasmtime compiles a copy of a
//! constant length up to 128 bytes inline, so [`extend`] and [`push_str`]
//! copy up to 128 bytes as two overlapping copies of a constant length
//! (and longer strings as one `memory.copy`, where its cost is amortised).
//! Natively they are `extend_from_slice` and `push_str`.
//!
//! The SDK's own [`OutputBuilder::push`](crate::OutputBuilder::push) of a
//! string goes through [`extend`]; use [`push_str`] for the strings a plugin
//! builds itself.

/// Append `src` to `dst`.
#[inline(always)]
pub fn extend(dst: &mut Vec<u8>, src: &[u8]) {
    #[cfg(target_arch = "wasm32")]
    if src.len() <= SHORT {
        extend_short(dst, src);
        return;
    }
    dst.extend_from_slice(src);
}

/// Append `src` to `dst`.
#[inline(always)]
pub fn push_str(dst: &mut String, src: &str) {
    #[cfg(target_arch = "wasm32")]
    if src.len() <= SHORT {
        // SAFETY: the bytes appended are the whole of a `str`, so `dst`
        // stays UTF-8.
        extend_short(unsafe { dst.as_mut_vec() }, src.as_bytes());
        return;
    }
    dst.push_str(src);
}

/// The longest copy made inline (wasmtime's limit for an inline copy).
const SHORT: usize = 128;

/// Append `src` (at most [`SHORT`] bytes) as at most two copies of a
/// constant length, overlapping where `src` is not a power of two long.
/// (Natively only the tests call it.)
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
#[inline(always)]
fn extend_short(dst: &mut Vec<u8>, src: &[u8]) {
    let n = src.len();
    assert!(n <= SHORT, "extend_short takes at most {SHORT} bytes");
    dst.reserve(n);
    let at = dst.len();
    let s = src.as_ptr();
    // SAFETY: `reserve` made room for `n` bytes after `at`. Each copy below
    // reads `src[k..k + N]` and writes the room's `[k..k + N]` with
    // `k + N <= n`, so every byte of the room is written (twice where the
    // copies overlap, with the same value) before `set_len`; `src` is a
    // shared borrow, so it cannot overlap `dst`'s spare room.
    unsafe {
        let d = dst.as_mut_ptr().add(at);
        match n {
            0 => {}
            1..=3 => {
                *d = *s;
                *d.add(n / 2) = *s.add(n / 2);
                *d.add(n - 1) = *s.add(n - 1);
            }
            4..=7 => pair::<4>(s, d, n),
            8..=15 => pair::<8>(s, d, n),
            16..=31 => pair::<16>(s, d, n),
            32..=63 => pair::<32>(s, d, n),
            _ => pair::<64>(s, d, n),
        }
        dst.set_len(at + n);
    }
}

/// Copy `n` bytes (`N <= n <= 2 * N`) from `s` to `d` as the first `N` and
/// the last `N`.
///
/// # Safety
/// `s` must be valid for reads and `d` for writes of `n` bytes, and the
/// two must not overlap.
#[inline(always)]
unsafe fn pair<const N: usize>(s: *const u8, d: *mut u8, n: usize) {
    // SAFETY: the caller's promise, with `N <= n`.
    unsafe {
        std::ptr::copy_nonoverlapping(s, d, N);
        std::ptr::copy_nonoverlapping(s.add(n - N), d.add(n - N), N);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_appends_exactly_its_bytes() {
        let text: String = (0..300)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        for prefix in [0, 1, 7] {
            for n in 0..=300 {
                let mut bytes = vec![b'#'; prefix];
                extend(&mut bytes, &text.as_bytes()[..n]);
                assert_eq!(&bytes[prefix..], &text.as_bytes()[..n], "{n} bytes");
                if n <= SHORT {
                    // the Wasm build's path, whatever this build's target
                    let mut short = vec![b'#'; prefix];
                    extend_short(&mut short, &text.as_bytes()[..n]);
                    assert_eq!(short, bytes, "{n} bytes");
                }
                let mut s = "é".repeat(prefix);
                push_str(&mut s, &text[..n]);
                assert_eq!(s, format!("{}{}", "é".repeat(prefix), &text[..n]));
            }
        }
    }
}
