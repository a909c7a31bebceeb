//! The web-vitals cleaning rules as plain functions over strings and numbers,
//! so each rule is testable alone and the plugin loop stays allocation-free
//! (every function writes into a buffer the caller reuses).

use weir_plugin_sdk::copy;

use crate::bytes::{self, Lanes, WIDTH};

/// Largest plausible TTI or TTAR, in milliseconds.
pub const MAX_METRIC_MS: f64 = 600_000.0;

/// Substrings (lower case) that mark a user agent as a bot.
pub const BOT_MARKERS: [&str; 4] = ["bot", "crawler", "spider", "headlesschrome"];

/// What the user agent says about the client, found in one pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserAgentTraits {
    /// contains a [`BOT_MARKERS`] entry.
    pub bot: bool,
    /// contains `ipad` or `tablet`.
    pub tablet: bool,
    /// contains `mobi`, `android` or `iphone`.
    pub mobile: bool,
}

/// Scan a user agent once, ignoring ASCII case, for every marker the rules
/// use (one pass instead of nine substring searches, and no lower-cased
/// copy: this is the plugin's hot loop).
///
/// 16 positions are tested at once ([`Lanes`]) for the first two letters of
/// a marker, and only those candidates are compared in full; the last,
/// partial window is padded with zeros, which start no marker.
///
/// Every marker is ASCII letters, and `byte | 0x20` equals a lower-case
/// letter exactly when `byte` is that letter in either case, so comparing
/// through it is an exact ASCII-case-insensitive match.
pub fn scan_user_agent(user_agent: &str) -> UserAgentTraits {
    let b = user_agent.as_bytes();
    let mut t = UserAgentTraits::default();
    let mut at = 0;
    while at < b.len() {
        let mut candidates = marker_candidates(&b[at..]);
        while candidates != 0 {
            check(&b[at + candidates.trailing_zeros() as usize..], &mut t);
            candidates &= candidates - 1;
        }
        at += WIDTH;
    }
    t
}

/// The first two letters (lower case) of every marker: a position can start
/// a marker only where its byte and the next one match a pair.
const MARKER_PAIRS: [[u8; 2]; 8] = [
    *b"bo", *b"cr", *b"sp", *b"he", *b"ip", *b"ta", *b"mo", *b"an",
];

/// A bit per position of `window`'s first 16 (fewer when it is shorter)
/// whose byte and the next one (ASCII case ignored) are the first two
/// letters of a marker.
#[inline(always)]
fn marker_candidates(window: &[u8]) -> u32 {
    let fold = Lanes::splat(0x20);
    // zeros past the end: `0 | 0x20` is a space, which starts no pair
    let first = Lanes::load_padded(window).or(fold);
    let second = Lanes::load_padded(&window[1..]).or(fold);
    let mut hits = first
        .eq(MARKER_PAIRS[0][0])
        .and(second.eq(MARKER_PAIRS[0][1]));
    for [a, b] in &MARKER_PAIRS[1..] {
        hits = hits.or(first.eq(*a).and(second.eq(*b)));
    }
    hits.bitmask()
}

/// Record the marker `rest` starts with, if any.
#[inline(always)]
fn check(rest: &[u8], t: &mut UserAgentTraits) {
    match rest[0] | 0x20 {
        b'b' => t.bot |= has(rest, b"bot"),
        b'c' => t.bot |= has(rest, b"crawler"),
        b's' => t.bot |= has(rest, b"spider"),
        b'h' => t.bot |= has(rest, b"headlesschrome"),
        b'i' => {
            t.tablet |= has(rest, b"ipad");
            t.mobile |= has(rest, b"iphone");
        }
        b't' => t.tablet |= has(rest, b"tablet"),
        b'm' => t.mobile |= has(rest, b"mobi"),
        b'a' => t.mobile |= has(rest, b"android"),
        _ => {}
    }
}

/// `rest` starts with `needle` (lower-case letters), ignoring ASCII case;
/// the second byte is compared first, which rejects most candidates
/// without a loop.
#[inline(always)]
fn has(rest: &[u8], needle: &[u8]) -> bool {
    rest.len() >= needle.len()
        && rest[1] | 0x20 == needle[1]
        && rest[..needle.len()]
            .iter()
            .zip(needle)
            .all(|(b, n)| b | 0x20 == *n)
}

/// Whether `user_agent` names a bot (ASCII case ignored).
pub fn is_bot(user_agent: &str) -> bool {
    scan_user_agent(user_agent).bot
}

/// Normalise `raw` into `out` as `scheme://host[:port]/path`. Returns false
/// (and leaves `out` unspecified) when `raw` is not an absolute `http` or
/// `https` URL with a host.
pub fn normalize_url(raw: &str, out: &mut String) -> bool {
    normalize(raw, out, None)
}

/// [`normalize_url`], and when `group` is given also its [`page_group`]
/// (the plugin's hot path).
///
/// The output is copied from `raw` in as few runs as possible: a copy of a
/// few bytes costs a call into the runtime as Wasm (`memory.copy`), so
/// `scheme://host` is one copy (lower-cased after), the path is copied
/// between the slashes it drops, and the group between its id segments.
pub fn normalize(raw: &str, out: &mut String, mut group: Option<&mut String>) -> bool {
    let url = trim(raw);
    if let Some(ok) = crate::url_map::normalize(url, out, group.as_deref_mut()) {
        return ok;
    }
    normalize_by_searches(url, out, group)
}

/// `raw` without leading and trailing whitespace: `raw` itself when it
/// starts and ends with a printable ASCII byte (no whitespace character,
/// ASCII or not, starts or ends with one), which saves the call to
/// `str::trim` per URL.
#[inline(always)]
fn trim(raw: &str) -> &str {
    let printable = |b: Option<&u8>| b.is_some_and(|b| (b'!'..=b'~').contains(b));
    let b = raw.as_bytes();
    if printable(b.first()) && printable(b.last()) {
        raw
    } else {
        raw.trim()
    }
}

/// [`normalize`] of a trimmed `url` by a search per part: the
/// implementation for what [`crate::url_map`] does not take (URLs longer
/// than it maps, bracketed hosts), and its reference in tests.
pub(crate) fn normalize_by_searches(
    url: &str,
    out: &mut String,
    group: Option<&mut String>,
) -> bool {
    out.clear();
    // the scheme ends at the first ':' (a later "://" cannot give http/https)
    let Some(colon) = bytes::find(url.as_bytes(), b':') else {
        return false;
    };
    let (scheme, rest) = (&url[..colon], &url[colon..]);
    let Some(rest) = rest.strip_prefix("://") else {
        return false;
    };
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        80
    } else if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        return false;
    };
    let authority_end = bytes::find3(rest.as_bytes(), b'/', b'?', b'#').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // user information is not part of the normalised URL
    let user_info = bytes::rfind(authority.as_bytes(), b'@');
    let authority = user_info.map_or(authority, |at| &authority[at + 1..]);
    let Some((host, port)) = split_host_port(authority) else {
        return false;
    };
    if user_info.is_none() {
        // `scheme://host` as written: the host starts the authority
        copy::push_str(out, &url[..colon + 3 + host.len()]);
    } else {
        copy::push_str(out, scheme);
        copy::push_str(out, "://");
        copy::push_str(out, host);
    }
    // the scheme is http or https in some case, "://" has no letters
    out.make_ascii_lowercase();
    if let Some(port) = port.filter(|p| *p != default_port) {
        push_port(out, port);
    }
    let path = &tail[..bytes::find2(tail.as_bytes(), b'?', b'#').unwrap_or(tail.len())];
    let path_start = out.len();
    push_without_empty_segments(path, out);
    if out.len() == path_start {
        out.push('/');
    }
    if let Some(group) = group {
        push_group(out, path_start, group);
    }
    true
}

/// A port: one or more ASCII digits whose value fits in 16 bits.
#[inline(always)]
pub(crate) fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() {
        return None;
    }
    let mut port: u32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        port = port * 10 + u32::from(d - b'0');
        if port > u32::from(u16::MAX) {
            return None;
        }
    }
    Some(port as u16)
}

/// Append `:port` (digits written into the buffer, without `fmt`).
pub(crate) fn push_port(out: &mut String, port: u16) {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut rest = port;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.push(':');
    for &digit in &digits[at..] {
        out.push(char::from(digit));
    }
}

/// Append `path` (empty or starting with '/') without its empty segments
/// (a '/' followed by another or ending the path), in runs between them.
fn push_without_empty_segments(path: &str, out: &mut String) {
    let b = path.as_bytes();
    let mut run = 0;
    let mut at = 0;
    while let Some(slash) = bytes::find(&b[at..], b'/').map(|i| at + i) {
        if b.get(slash + 1).is_none_or(|&next| next == b'/') {
            // '/' is ASCII, so these are character boundaries
            copy::push_str(out, &path[run..slash]);
            run = slash + 1;
        }
        at = slash + 1;
    }
    copy::push_str(out, &path[run..]);
}

/// Set `group` to `url` (normalised, its path from `path_start`) with every
/// id segment replaced by `{id}`, copying the runs between them.
fn push_group(url: &str, path_start: usize, group: &mut String) {
    group.clear();
    let b = url.as_bytes();
    let mut run = 0;
    let mut start = path_start + 1;
    loop {
        let end = bytes::find(&b[start..], b'/').map_or(b.len(), |i| start + i);
        if is_id_segment(&url[start..end]) {
            copy::push_str(group, &url[run..start]);
            copy::push_str(group, "{id}");
            run = end;
        }
        if end == b.len() {
            break;
        }
        start = end + 1;
    }
    copy::push_str(group, &url[run..]);
}

/// Split `host[:port]` (or `[v6]:port`), validating both. An empty port
/// (`host:`) means no port.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']')?;
        let inner = &v6[..close];
        if inner.is_empty()
            || !inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        let port = match &v6[close + 1..] {
            "" => "",
            p => p.strip_prefix(':')?,
        };
        (&authority[..close + 2], port)
    } else {
        let (host, port) = match bytes::rfind(authority.as_bytes(), b':') {
            Some(colon) => (&authority[..colon], &authority[colon + 1..]),
            None => (authority, ""),
        };
        if host.is_empty()
            || !bytes::all_host_chars(host.as_bytes())
            || host.bytes().all(|b| b == b'.')
        {
            return None;
        }
        (host, port)
    };
    if port.is_empty() {
        return Some((host, None));
    }
    Some((host, Some(parse_port(port.as_bytes())?)))
}

/// `page_group`: the normalised URL with every all-digit or UUID path
/// segment replaced by `{id}`. `url` must come from [`normalize_url`].
pub fn page_group(url: &str, out: &mut String) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => push_group(url, after_scheme + i, out),
        None => {
            out.clear();
            copy::push_str(out, url);
        }
    }
}

fn is_id_segment(s: &str) -> bool {
    if !s.is_empty() && bytes::all_digits(s.as_bytes()) {
        return true;
    }
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A metric value kept only when finite and within `0..=600000` ms.
pub fn clean_metric(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && (0.0..=MAX_METRIC_MS).contains(v))
}

/// Device class from the user agent (`None` = no user agent).
pub fn device_class(user_agent: Option<&str>) -> &'static str {
    device_class_of(user_agent.map(scan_user_agent))
}

/// Device class from already scanned traits (`None` = no user agent).
pub fn device_class_of(traits: Option<UserAgentTraits>) -> &'static str {
    match traits {
        None => "unknown",
        Some(t) if t.tablet => "tablet",
        Some(t) if t.mobile => "mobile",
        Some(_) => "desktop",
    }
}

/// A country code: two ASCII upper-case letters (made only by [`country`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// The code as text.
    #[inline(always)]
    pub fn as_str(&self) -> &str {
        // SAFETY: two ASCII letters, which `country`, the only constructor,
        // checks (`from_utf8` here was a call per row into the standard
        // library's byte-at-a-time check, as Wasm)
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// Country upper-cased when exactly two ASCII letters, otherwise `None`.
pub fn country(raw: &str) -> Option<CountryCode> {
    match raw.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Some(CountryCode([
            a.to_ascii_uppercase(),
            b.to_ascii_uppercase(),
        ])),
        _ => None,
    }
}

/// The UTC calendar date (days since the epoch) of a millisecond timestamp.
pub fn event_date(timestamp_ms: i64) -> i32 {
    timestamp_ms.div_euclid(86_400_000) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Option<String> {
        let mut out = String::new();
        normalize_url(raw, &mut out).then_some(out)
    }

    #[test]
    fn urls_normalise() {
        assert_eq!(
            norm(" HTTPS://Example.COM:443//a//b/?q=1#f ").as_deref(),
            Some("https://example.com/a/b")
        );
        assert_eq!(
            norm("http://example.com:80").as_deref(),
            Some("http://example.com/")
        );
        assert_eq!(
            norm("http://example.com:8080/x/").as_deref(),
            Some("http://example.com:8080/x")
        );
        assert_eq!(
            norm("https://example.com:80/").as_deref(),
            Some("https://example.com:80/")
        );
        assert_eq!(
            norm("http://u:p@example.com/a").as_deref(),
            Some("http://example.com/a")
        );
        assert_eq!(
            norm("http://[::1]:8080/a").as_deref(),
            Some("http://[::1]:8080/a")
        );
        assert_eq!(norm("ftp://example.com/"), None);
        assert_eq!(norm("/relative/path"), None);
        assert_eq!(norm("http:///nohost"), None);
        assert_eq!(norm("http://exa mple.com/"), None);
        assert_eq!(norm("http://example.com:99999/"), None);
        assert_eq!(norm("http://example.com:abc/"), None);
    }

    #[test]
    fn trimming_agrees_with_the_standard_trim() {
        for raw in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\ta\n",
            "\u{a0}a",
            "a\u{3000}",
            "é",
            "\u{7f}a",
            "~a!",
        ] {
            assert_eq!(trim(raw), raw.trim(), "{raw:?}");
        }
    }

    #[test]
    fn normalisation_is_idempotent() {
        for raw in [
            "HTTPS://Example.COM:443//a//b/?q=1",
            "http://x.org:8080",
            "http://[::1]:80/a/",
        ] {
            let once = norm(raw).unwrap();
            assert_eq!(norm(&once).unwrap(), once);
        }
    }

    #[test]
    fn one_pass_gives_the_same_url_and_group() {
        for raw in [
            "https://e.com/users/123//x/?q",
            "http://E.com:8080",
            "https://e.com/0b7e2c1a-7f3d-4c2e-9a1b-2c3d4e5f6a7b/",
        ] {
            let (mut url, mut group, mut expected) = (String::new(), String::new(), String::new());
            assert!(normalize(raw, &mut url, Some(&mut group)));
            page_group(&url, &mut expected);
            assert_eq!(group, expected, "{raw}");
            assert_eq!(norm(raw).unwrap(), url);
        }
    }

    #[test]
    fn groups_replace_ids() {
        let mut out = String::new();
        page_group(
            "https://e.com/users/123/orders/0b7e2c1a-7f3d-4c2e-9a1b-2c3d4e5f6a7b/x1",
            &mut out,
        );
        assert_eq!(out, "https://e.com/users/{id}/orders/{id}/x1");
        page_group("https://e.com/", &mut out);
        assert_eq!(out, "https://e.com/");
        page_group("https://e.com:8080/42", &mut out);
        assert_eq!(out, "https://e.com:8080/{id}");
    }

    #[test]
    fn markers_are_found_at_every_offset_and_in_either_case() {
        let markers = [
            ("bot", true, false, false),
            ("Crawler", true, false, false),
            ("SPIDER", true, false, false),
            ("HeadlessChrome", true, false, false),
            ("iPad", false, true, false),
            ("tablet", false, true, false),
            ("iPhone", false, false, true),
            ("Mobi", false, false, true),
            ("android", false, false, true),
        ];
        // fillers made of markers' first letters, so that candidates that
        // are not markers sit around every window boundary (the spaces keep
        // a filler from completing a marker)
        for filler in ["x", "mo", "Bo a", "ip he; sp"] {
            for (marker, bot, tablet, mobile) in markers {
                for offset in 0..40 {
                    let before: String = filler.chars().cycle().take(offset).collect();
                    let after: String = filler.chars().cycle().take(37 - offset % 37).collect();
                    let ua = format!("{before} {marker} {after}");
                    let t = scan_user_agent(&ua);
                    assert_eq!((t.bot, t.tablet, t.mobile), (bot, tablet, mobile), "{ua:?}");
                    // cut one letter short, the marker is gone
                    let cut = format!("{before} {}", &marker[..marker.len() - 1]);
                    assert_eq!(scan_user_agent(&cut), UserAgentTraits::default(), "{cut:?}");
                }
            }
        }
    }

    #[test]
    fn metrics_and_enrichment() {
        assert_eq!(clean_metric(Some(-1.0)), None);
        assert_eq!(clean_metric(Some(600_000.0)), Some(600_000.0));
        assert_eq!(clean_metric(Some(600_000.5)), None);
        assert_eq!(clean_metric(Some(f64::NAN)), None);
        assert_eq!(device_class(Some("mozilla (ipad; ...) mobile")), "tablet");
        assert_eq!(device_class(Some("android 14")), "mobile");
        assert_eq!(device_class(None), "unknown");
        assert!(is_bot("mozilla/5.0 (compatible; googlebot/2.1)"));
        assert!(!is_bot("mozilla/5.0 (x11; linux) firefox/133.0"));
        for ua in [
            "a crawler",
            "spider-man",
            "headlesschrome/120",
            "Googlebot",
            "HeadlessChrome",
        ] {
            assert!(is_bot(ua), "{ua}");
        }
        assert_eq!(device_class(Some("Mozilla (iPad; ...)")), "tablet");
        assert_eq!(device_class(Some("Linux; ANDROID 14")), "mobile");
        // `| 0x20` folds only letters onto letters: no false matches
        assert!(!is_bot("\u{2}OT b\u{f}t B@T"));
        assert_eq!(device_class(Some("MOBÍ")), "desktop");
        assert_eq!(country("de").as_ref().map(CountryCode::as_str), Some("DE"));
        assert_eq!(country("Zq").as_ref().map(CountryCode::as_str), Some("ZQ"));
        assert_eq!(country("d1"), None);
        assert_eq!(country("deu"), None);
        assert_eq!(event_date(-1), -1);
        assert_eq!(event_date(86_400_000), 1);
    }
}
