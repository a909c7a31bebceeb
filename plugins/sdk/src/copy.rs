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
//! builds itself, and [`copy_short`] for a short copy into a buffer of its
//! own.

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

/// Copy `src` (at most 128 bytes) over `dst` (as long), as at most two
/// copies of a constant length: what [`extend`] does, for a buffer of a
/// plugin's own (the last, partial block of a search, say). Natively it is
/// `copy_from_slice`.
#[inline(always)]
pub fn copy_short(dst: &mut [u8], src: &[u8]) {
    assert!(
        dst.len() == src.len() && src.len() <= SHORT,
        "copy_short copies at most {SHORT} bytes between slices of one length"
    );
    #[cfg(target_arch = "wasm32")]
    // SAFETY: both slices are `src.len()` long, and a shared and a unique
    // borrow cannot overlap.
    unsafe {
        short(src.as_ptr(), dst.as_mut_ptr(), src.len());
    }
    #[cfg(not(target_arch = "wasm32"))]
    dst.copy_from_slice(src);
}

/// Append `src` (at most [`SHORT`] bytes) with [`short`].
/// (Natively only the tests call it.)
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
#[inline(always)]
fn extend_short(dst: &mut Vec<u8>, src: &[u8]) {
    let n = src.len();
    assert!(n <= SHORT, "extend_short takes at most {SHORT} bytes");
    dst.reserve(n);
    let at = dst.len();
    // SAFETY: `reserve` made room for `n` bytes after `at`, and `short`
    // writes every one of them before `set_len`; `src` is a shared borrow,
    // so it cannot overlap `dst`'s spare room.
    unsafe {
        short(src.as_ptr(), dst.as_mut_ptr().add(at), n);
        dst.set_len(at + n);
    }
}

/// Copy `n` bytes (at most [`SHORT`]) from `s` to `d` as at most two
/// copies of a constant length, overlapping where `n` is not a power of
/// two; each writes `d[k..k + N]` from `s[k..k + N]` with `k + N <= n`, so
/// every byte is written (twice where the copies overlap, with the same
/// value).
///
/// # Safety
/// `s` must be valid for reads and `d` for writes of `n` bytes, and the
/// two must not overlap.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
#[inline(always)]
unsafe fn short(s: *const u8, d: *mut u8, n: usize) {
    // SAFETY: the caller's promise; each arm stays within `n` bytes.
    unsafe {
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
                    // the Wasm build's paths, whatever this build's target
                    let mut short = vec![b'#'; prefix];
                    extend_short(&mut short, &text.as_bytes()[..n]);
                    assert_eq!(short, bytes, "{n} bytes");
                    let mut over = vec![b'#'; n];
                    // SAFETY: both are `n` bytes long, in two allocations.
                    unsafe { super::short(text.as_ptr(), over.as_mut_ptr(), n) };
                    assert_eq!(over, &text.as_bytes()[..n], "{n} bytes");
                    copy_short(&mut over, &text.as_bytes()[..n]);
                    assert_eq!(over, &text.as_bytes()[..n], "{n} bytes");
                }
                let mut s = "é".repeat(prefix);
                push_str(&mut s, &text[..n]);
                assert_eq!(s, format!("{}{}", "é".repeat(prefix), &text[..n]));
            }
        }
    }
}
