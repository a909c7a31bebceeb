//! URL normalisation from one pass over the URL's bytes (the hot path for
//! URLs of up to 128 bytes, nearly all of them).
//!
//! [`ByteMap`] loads a URL 16 bytes at a time, once, and keeps a bit
//! mask per class of byte the rules look for (`:`, `/`, `?` or `#`, `@`,
//! `.`, `-`, bytes that are not host characters, not digits, not hex
//! digits). Every search of [`crate::rules::normalize`] is then a mask and a
//! `trailing_zeros`, instead of a call to a search function each (about
//! fifteen per URL, each with its own loop and partial last block: as Wasm,
//! those fixed costs were most of the time spent on a URL).
//!
//! [`normalize`] answers exactly as the searching implementation in
//! [`crate::rules`] does (a test holds them to each other), and gives up
//! (`None`) on what it does not handle: URLs longer than 128 bytes and
//! bracketed (IPv6) hosts, which the searching implementation takes. The
//! group is built in the same walk over the path's segments.

use std::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, Not, Shl, Shr, Sub};

use weir_plugin_sdk::copy;

use crate::bytes::{Lanes, WIDTH};
use crate::rules;

/// The longest string a [`ByteMap`] describes.
pub(crate) const MAX: usize = 128;

/// A bit per byte: `u64` for strings of up to 64 bytes (most URLs), `u128`
/// up to [`MAX`] (as Wasm, an operation on `u128` is several on `u64`, so
/// the narrower one is used wherever it fits).
pub(crate) trait Mask:
    Copy
    + Default
    + Eq
    + From<u32>
    + BitAnd<Output = Self>
    + BitOr<Output = Self>
    + BitAndAssign
    + BitOrAssign
    + Not<Output = Self>
    + Shl<usize, Output = Self>
    + Shr<usize, Output = Self>
    + Sub<Output = Self>
{
    /// Bits (and bytes) it describes.
    const BITS: usize;
    /// No bits.
    const ZERO: Self;
    /// Bit 0.
    const ONE: Self;
    /// The index of the lowest set bit (`BITS` when none is).
    fn lowest(self) -> usize;
    /// Clear bits above the highest set one (`BITS` when none is).
    fn leading(self) -> usize;
}

macro_rules! mask {
    ($($ty:ty),*) => {$(
        impl Mask for $ty {
            const BITS: usize = <$ty>::BITS as usize;
            const ZERO: Self = 0;
            const ONE: Self = 1;
            #[inline(always)]
            fn lowest(self) -> usize {
                self.trailing_zeros() as usize
            }
            #[inline(always)]
            fn leading(self) -> usize {
                self.leading_zeros() as usize
            }
        }
    )*};
}
mask!(u64, u128);

/// Bit `i` of each mask describes byte `i` of a string of at most
/// `M::BITS` bytes; bits at and past its length are clear.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ByteMap<M> {
    colon: M,
    slash: M,
    /// `?` or `#`: where the path ends.
    query: M,
    at: M,
    dot: M,
    dash: M,
    /// not an ASCII letter or digit, `-`, `.` or `_`.
    not_host: M,
    not_digit: M,
    not_hex: M,
}

impl<M: Mask> ByteMap<M> {
    /// The map of `bytes` (at most `M::BITS` long): copied once into a
    /// zero-padded buffer, then fixed windows (no partial loads, no loop).
    #[inline(never)]
    pub(crate) fn new(bytes: &[u8]) -> ByteMap<M> {
        let mut padded = [0u8; MAX];
        copy::copy_short(&mut padded[..bytes.len()], bytes);
        let mut map = ByteMap::default();
        map.add::<0>(&padded);
        map.add::<16>(&padded);
        map.add::<32>(&padded);
        map.add::<48>(&padded);
        if M::BITS > 64 {
            map.add::<64>(&padded);
            map.add::<80>(&padded);
            map.add::<96>(&padded);
            map.add::<112>(&padded);
        }
        // the padding is in the `not_*` masks: clear it
        let inside = below::<M>(bytes.len());
        map.not_host &= inside;
        map.not_digit &= inside;
        map.not_hex &= inside;
        map
    }

    /// The bits of the window of `padded` that starts at `AT`.
    #[inline(always)]
    fn add<const AT: usize>(&mut self, padded: &[u8; MAX]) {
        let lanes = Lanes::load(&padded[AT..AT + WIDTH]);
        let folded = lanes.or(Lanes::splat(0x20));
        let digit = lanes.in_range(b'0', b'9');
        let dash = lanes.eq(b'-');
        let dot = lanes.eq(b'.');
        let host = folded
            .in_range(b'a', b'z')
            .or(digit)
            .or(dash)
            .or(dot)
            .or(lanes.eq(b'_'));
        let hex = digit.or(folded.in_range(b'a', b'f'));
        // `AT` is below `M::BITS` wherever this runs (see `new`)
        let put = |mask: &mut M, lanes: Lanes| *mask |= M::from(lanes.bitmask()) << (AT % M::BITS);
        put(&mut self.colon, lanes.eq(b':'));
        put(&mut self.slash, lanes.eq(b'/'));
        put(&mut self.query, lanes.eq(b'?').or(lanes.eq(b'#')));
        put(&mut self.at, lanes.eq(b'@'));
        put(&mut self.dot, dot);
        put(&mut self.dash, dash);
        put(&mut self.not_host, host.not());
        put(&mut self.not_digit, digit.not());
        put(&mut self.not_hex, hex.not());
    }
}

/// Bits `i..` (none when `i` is `M::BITS` or more).
#[inline(always)]
fn from<M: Mask>(i: usize) -> M {
    if i >= M::BITS { M::ZERO } else { !M::ZERO << i }
}

/// Bits `0..i` (all when `i` is `M::BITS` or more).
#[inline(always)]
fn below<M: Mask>(i: usize) -> M {
    !from::<M>(i)
}

/// Bits `start..end`.
#[inline(always)]
fn span<M: Mask>(start: usize, end: usize) -> M {
    from::<M>(start) & below::<M>(end)
}

/// The lowest set bit of `mask`, if any.
#[inline(always)]
fn first<M: Mask>(mask: M) -> Option<usize> {
    (mask != M::ZERO).then(|| mask.lowest())
}

/// The highest set bit of a non-zero `mask`.
#[inline(always)]
fn last<M: Mask>(mask: M) -> usize {
    M::BITS - 1 - mask.leading()
}

/// [`crate::rules::normalize`] of an already trimmed `url`, or `None` when
/// the URL needs the searching implementation (longer than [`MAX`], or a
/// bracketed host).
pub(crate) fn normalize(url: &str, out: &mut String, group: Option<&mut String>) -> Option<bool> {
    match url.len() {
        0..=64 => normalize_with::<u64>(url, out, group),
        65..=MAX => normalize_with::<u128>(url, out, group),
        _ => None,
    }
}

/// [`normalize`] with masks of `M` (`url` at most `M::BITS` long).
fn normalize_with<M: Mask>(
    url: &str,
    out: &mut String,
    group: Option<&mut String>,
) -> Option<bool> {
    let u = url.as_bytes();
    out.clear();
    let m = ByteMap::<M>::new(u);
    // the scheme ends at the first ':', which "//" must follow
    let Some(colon) = first(m.colon) else {
        return Some(false);
    };
    if u.get(colon + 1..colon + 3) != Some(b"//") {
        return Some(false);
    }
    let scheme = &url[..colon];
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        80
    } else if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        return Some(false);
    };
    let authority = colon + 3;
    let authority_end = first((m.slash | m.query) & from(authority)).unwrap_or(u.len());
    // user information (up to the last '@') is not part of the result
    let user_info = m.at & span::<M>(authority, authority_end);
    let host = if user_info == M::ZERO {
        authority
    } else {
        last(user_info) + 1
    };
    if u.get(host) == Some(&b'[') && host < authority_end {
        return None;
    }
    let port_colon = m.colon & span::<M>(host, authority_end);
    let host_end = if port_colon == M::ZERO {
        authority_end
    } else {
        last(port_colon)
    };
    let host_bits = span::<M>(host, host_end);
    if host_bits == M::ZERO || m.not_host & host_bits != M::ZERO || m.dot & host_bits == host_bits {
        return Some(false);
    }
    let port = if port_colon == M::ZERO || host_end + 1 == authority_end {
        None
    } else {
        let Some(port) = rules::parse_port(&u[host_end + 1..authority_end]) else {
            return Some(false);
        };
        Some(port)
    };
    if user_info == M::ZERO {
        // `scheme://host` as written: the host starts the authority
        copy::push_str(out, &url[..host_end]);
    } else {
        copy::push_str(out, scheme);
        copy::push_str(out, "://");
        copy::push_str(out, &url[host..host_end]);
    }
    out.make_ascii_lowercase();
    if let Some(port) = port.filter(|p| *p != default_port) {
        rules::push_port(out, port);
    }
    // the path, without its empty segments: a '/' followed by another or
    // ending the path is dropped; the runs between them are copied
    let path_end = first(m.query & from(authority_end)).unwrap_or(u.len());
    let path_start = out.len();
    let slashes = m.slash & span::<M>(authority_end, path_end);
    if path_end > authority_end {
        let mut dropped = slashes & ((m.slash >> 1) | (M::ONE << (path_end - 1)));
        let mut run = authority_end;
        while dropped != M::ZERO {
            let slash = dropped.lowest();
            copy::push_str(out, &url[run..slash]);
            run = slash + 1;
            dropped &= dropped - M::ONE;
        }
        copy::push_str(out, &url[run..path_end]);
    }
    if out.len() == path_start {
        out.push('/');
    }
    if let Some(group) = group {
        group.clear();
        copy::push_str(group, &out[..path_start]);
        push_group(url, &m, slashes, path_end, group);
    }
    Some(true)
}

/// Dashes of a UUID segment, from its first byte.
const UUID_DASHES: u32 = 1 << 8 | 1 << 13 | 1 << 18 | 1 << 23;

/// Append the group's path: the segments of `url`'s path (its `slashes`,
/// the path ending at `path_end`) that are not empty, each all-digit or
/// UUID one as `{id}` (the normalised path's segments are exactly these);
/// `/` when there are none.
fn push_group<M: Mask>(url: &str, m: &ByteMap<M>, slashes: M, path_end: usize, group: &mut String) {
    let before = group.len();
    let mut rest = slashes;
    while rest != M::ZERO {
        let slash = rest.lowest();
        rest &= rest - M::ONE;
        let end = first(rest).unwrap_or(path_end);
        let start = slash + 1;
        if end == start {
            continue;
        }
        let bits = span::<M>(start, end);
        let id = m.not_digit & bits == M::ZERO
            || (end - start == 36 && {
                let dashes = M::from(UUID_DASHES) << start;
                m.dash & bits == dashes && m.not_hex & bits & !dashes == M::ZERO
            });
        if id {
            copy::push_str(group, "/{id}");
        } else {
            // the segment with the '/' before it
            copy::push_str(group, &url[slash..end]);
        }
    }
    if group.len() == before {
        group.push('/');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::normalize_by_searches;

    /// Both implementations on `url`: the same answer, URL and group
    /// (when the map takes it). Returns whether the map took it.
    fn agree(url: &str) -> bool {
        let (mut out, mut group) = (String::new(), String::new());
        let Some(ok) = normalize(url, &mut out, Some(&mut group)) else {
            return false;
        };
        let (mut want, mut want_group) = (String::new(), String::new());
        let want_ok = normalize_by_searches(url, &mut want, Some(&mut want_group));
        assert_eq!(ok, want_ok, "{url:?}");
        if ok {
            assert_eq!((&out, &group), (&want, &want_group), "{url:?}");
            // and without a group
            let mut alone = String::new();
            assert_eq!(normalize(url, &mut alone, None), Some(true), "{url:?}");
            assert_eq!(alone, want, "{url:?}");
        }
        true
    }

    #[test]
    fn the_map_answers_as_the_searches_do_on_every_combination_of_url_parts() {
        let uuid = "0b7e2c1a-7f3d-4c2e-9a1b-2c3d4e5f6a7b";
        let schemes = ["http", "HTTPS", "Http", "ftp", "", "h:ttp"];
        let separators = ["://", ":/", "//", ":", ":///"];
        let users = ["", "u@", "u:p@", "@", "a@b@", "x/y@"];
        let hosts = [
            "example.com",
            "E.Com",
            "...",
            ".",
            "",
            "a_b-c.d",
            "ex ample",
            "[::1]",
            "1.2.3.4",
            "h\u{e9}",
        ];
        let ports = [
            "", ":", ":80", ":443", ":8080", ":99999", ":0080", ":abc", ":65535", ":65536", ":1:2",
        ];
        let paths = [
            String::new(),
            "/".into(),
            "//".into(),
            "/a//b/".into(),
            "/users/123/orders".into(),
            format!("/x/{uuid}"),
            format!("/{uuid}/"),
            format!("/{}", uuid.replace('-', "0")),
            format!("/{}", uuid.replacen('a', "g", 1)),
            format!("/{}", uuid.to_uppercase()),
            "/0/a1/1a//".into(),
        ];
        let tails = ["", "?q=1", "#f", "?a/b#c", "/?x", "@#:"];
        let (mut mapped, mut all) = (0, 0);
        for scheme in schemes {
            for sep in separators {
                for user in users {
                    for host in hosts {
                        for port in ports {
                            for path in &paths {
                                for tail in tails {
                                    let url =
                                        format!("{scheme}{sep}{user}{host}{port}{path}{tail}");
                                    all += 1;
                                    mapped += usize::from(agree(&url));
                                }
                            }
                        }
                    }
                }
            }
        }
        // most URLs are short enough for the map
        assert!(mapped * 2 > all, "{mapped} of {all}");
    }

    #[test]
    fn the_map_answers_as_the_searches_do_on_random_urls_of_every_length() {
        let alphabet = b"aZ09-._/:?#@[]fF";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        for round in 0..200_000 {
            let len = next() % (MAX + 8);
            let mut url = String::from(["http://", "https://", "HTTP://", ""][round % 4]);
            for _ in 0..len {
                url.push(alphabet[next() % alphabet.len()] as char);
            }
            agree(&url);
        }
    }

    #[test]
    fn longer_urls_and_bracketed_hosts_go_to_the_searches() {
        let mut out = String::new();
        let long = format!("https://example.com/{}", "a".repeat(MAX - 19));
        assert_eq!(normalize(&long, &mut out, None), None);
        assert_eq!(normalize("http://[::1]:8080/a", &mut out, None), None);
        // a URL that fits, normalised to one that does not ('/' appended)
        let grows = format!("http://{}:8080", "e".repeat(MAX - 12));
        assert_eq!(grows.len(), MAX);
        assert!(agree(&grows));
        assert!(agree(&grows[..MAX - 1]));
    }
}
