//! The web-vitals cleaning rules as plain functions over strings and numbers,
//! so each rule is testable alone and the plugin loop stays allocation-free
//! (every function writes into a buffer the caller reuses).

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
/// Every marker is ASCII letters, and `byte | 0x20` equals a lower-case
/// letter exactly when `byte` is that letter in either case, so comparing
/// through it is an exact ASCII-case-insensitive match.
pub fn scan_user_agent(user_agent: &str) -> UserAgentTraits {
    let b = user_agent.as_bytes();
    let mut t = UserAgentTraits::default();
    for i in 0..b.len() {
        // most bytes start no marker: one table load skips them (a `match`
        // on the byte is a jump table per byte, slow as Wasm)
        let first = MARKER_START[b[i] as usize];
        if first == 0 {
            continue;
        }
        let rest = &b[i..];
        match first {
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
    t
}

/// Per byte: the lower-case first letter of a marker it starts (either
/// case), or 0.
static MARKER_START: [u8; 256] = {
    let mut table = [0u8; 256];
    let letters = *b"bcshitma";
    let mut i = 0;
    while i < letters.len() {
        let l = letters[i];
        table[l as usize] = l;
        table[l.to_ascii_uppercase() as usize] = l;
        i += 1;
    }
    table
};

/// `rest` starts with `needle` (lower-case letters, the first one matched
/// by the caller), ignoring ASCII case; the second byte is compared first,
/// which rejects most candidates without a loop.
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

/// [`normalize_url`], and when `group` is given also its [`page_group`],
/// in the same pass over the path (the plugin's hot path).
pub fn normalize(raw: &str, out: &mut String, mut group: Option<&mut String>) -> bool {
    out.clear();
    let url = raw.trim();
    // the scheme ends at the first ':' (a later "://" cannot give http/https)
    let Some(colon) = url.bytes().position(|b| b == b':') else {
        return false;
    };
    let (scheme, rest) = (&url[..colon], &url[colon..]);
    let Some(rest) = rest.strip_prefix("://") else {
        return false;
    };
    let (scheme, default_port) = if scheme.eq_ignore_ascii_case("http") {
        ("http", 80)
    } else if scheme.eq_ignore_ascii_case("https") {
        ("https", 443)
    } else {
        return false;
    };
    let authority_end = rest
        .bytes()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // user information is not part of the normalised URL
    // (short strings: a plain reverse scan, not core's memrchr)
    let authority = match authority.bytes().rposition(|b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let (host, port) = match split_host_port(authority) {
        Some(hp) => hp,
        None => return false,
    };
    out.push_str(scheme);
    out.push_str("://");
    let host_start = out.len();
    out.push_str(host);
    out[host_start..].make_ascii_lowercase();
    if let Some(port) = port.filter(|p| *p != default_port) {
        out.push(':');
        out.push_str(&port.to_string());
    }
    let path = &tail[..tail
        .bytes()
        .position(|b| b == b'?' || b == b'#')
        .unwrap_or(tail.len())];
    if let Some(g) = group.as_deref_mut() {
        g.clear();
        g.push_str(out);
    }
    let path_start = out.len();
    let bytes = path.as_bytes();
    let mut start = 0;
    for i in 0..=bytes.len() {
        if i < bytes.len() && bytes[i] != b'/' {
            continue;
        }
        if i > start {
            // '/' is ASCII, so these are character boundaries
            let segment = &path[start..i];
            out.push('/');
            out.push_str(segment);
            if let Some(g) = group.as_deref_mut() {
                g.push('/');
                g.push_str(if is_id_segment(segment) {
                    "{id}"
                } else {
                    segment
                });
            }
        }
        start = i + 1;
    }
    if out.len() == path_start {
        out.push('/');
        if let Some(g) = group {
            g.push('/');
        }
    }
    true
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
        let (host, port) = match authority.bytes().rposition(|b| b == b':') {
            Some(colon) => (&authority[..colon], &authority[colon + 1..]),
            None => (authority, ""),
        };
        let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_';
        if host.is_empty() || !host.bytes().all(valid) || host.bytes().all(|b| b == b'.') {
            return None;
        }
        (host, port)
    };
    if port.is_empty() {
        return Some((host, None));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((host, Some(port.parse().ok()?)))
}

/// `page_group`: the normalised URL with every all-digit or UUID path
/// segment replaced by `{id}`. `url` must come from [`normalize_url`].
pub fn page_group(url: &str, out: &mut String) {
    out.clear();
    let path_start = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[path_start..]
        .find('/')
        .map_or(url.len(), |i| path_start + i);
    out.push_str(&url[..path_start]);
    let path = &url[path_start..];
    if path == "/" {
        out.push('/');
        return;
    }
    for segment in path.split('/').skip(1) {
        out.push('/');
        if is_id_segment(segment) {
            out.push_str("{id}");
        } else {
            out.push_str(segment);
        }
    }
}

fn is_id_segment(s: &str) -> bool {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
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

/// Country upper-cased when exactly two ASCII letters, otherwise `None`.
pub fn country(raw: &str) -> Option<[u8; 2]> {
    match raw.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
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
        assert_eq!(country("de"), Some(*b"DE"));
        assert_eq!(country("deu"), None);
        assert_eq!(event_date(-1), -1);
        assert_eq!(event_date(86_400_000), 1);
    }
}
