/* The web-vitals rules in C; see rules.h. */
#include "rules.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void buf_push(buf_t *b, const uint8_t *bytes, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) cap *= 2;
        b->ptr = realloc(b->ptr, cap);
        if (!b->ptr) abort();
        b->cap = cap;
    }
    memcpy(b->ptr + b->len, bytes, n);
    b->len += n;
}

void buf_free(buf_t *b) {
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

static bool starts(const uint8_t *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    return n >= k && memcmp(s, needle, k) == 0;
}

ua_traits_t scan_user_agent(const uint8_t *b, size_t n) {
    ua_traits_t t = {false, false, false};
    for (size_t i = 0; i < n; i++) {
        const uint8_t *rest = b + i;
        size_t left = n - i;
        switch (b[i]) {
        case 'b': t.bot |= starts(rest, left, "bot"); break;
        case 'c': t.bot |= starts(rest, left, "crawler"); break;
        case 's': t.bot |= starts(rest, left, "spider"); break;
        case 'h': t.bot |= starts(rest, left, "headlesschrome"); break;
        case 'i':
            t.tablet |= starts(rest, left, "ipad");
            t.mobile |= starts(rest, left, "iphone");
            break;
        case 't': t.tablet |= starts(rest, left, "tablet"); break;
        case 'm': t.mobile |= starts(rest, left, "mobi"); break;
        case 'a': t.mobile |= starts(rest, left, "android"); break;
        default: break;
        }
    }
    return t;
}

/* Unicode White_Space, as Rust's `str::trim` uses it. */
static bool is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

/* Decode the UTF-8 character at s[0..n) (valid UTF-8 assumed). */
static uint32_t decode(const uint8_t *s, size_t n, size_t *width) {
    uint8_t b = s[0];
    if (b < 0x80 || n < 2) { *width = 1; return b; }
    if ((b & 0xe0) == 0xc0) { *width = 2; return ((uint32_t)(b & 0x1f) << 6) | (s[1] & 0x3f); }
    if ((b & 0xf0) == 0xe0 && n >= 3) {
        *width = 3;
        return ((uint32_t)(b & 0x0f) << 12) | ((uint32_t)(s[1] & 0x3f) << 6) | (s[2] & 0x3f);
    }
    *width = n >= 4 ? 4 : n;
    return 0x10000; /* outside the BMP: never white space */
}

static void trim(const uint8_t **s, size_t *n) {
    while (*n > 0) {
        size_t w;
        uint32_t c = decode(*s, *n, &w);
        if (!is_white_space(c)) break;
        *s += w;
        *n -= w;
    }
    while (*n > 0) {
        size_t start = *n - 1;
        while (start > 0 && ((*s)[start] & 0xc0) == 0x80) start--;
        size_t w;
        uint32_t c = decode(*s + start, *n - start, &w);
        if (!is_white_space(c)) break;
        *n = start;
    }
}

static bool is_digit(uint8_t b) { return b >= '0' && b <= '9'; }
static bool is_alpha(uint8_t b) { return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z'); }
static bool is_hex(uint8_t b) { return is_digit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F'); }
static uint8_t lower(uint8_t b) { return (b >= 'A' && b <= 'Z') ? b + 32 : b; }

static bool eq_ignore_case(const uint8_t *s, size_t n, const char *word) {
    size_t k = strlen(word);
    if (n != k) return false;
    for (size_t i = 0; i < n; i++)
        if (lower(s[i]) != (uint8_t)word[i]) return false;
    return true;
}

/* host[:port] or [v6][:port]; *port = -1 when absent. */
static bool split_host_port(const uint8_t *a, size_t n, const uint8_t **host, size_t *host_len,
                            long *port) {
    const uint8_t *p;
    size_t plen;
    if (n > 0 && a[0] == '[') {
        const uint8_t *v6 = a + 1;
        size_t vn = n - 1, close = 0;
        while (close < vn && v6[close] != ']') close++;
        if (close == vn || close == 0) return false;
        for (size_t i = 0; i < close; i++)
            if (!(is_hex(v6[i]) || v6[i] == ':' || v6[i] == '.')) return false;
        const uint8_t *after = v6 + close + 1;
        size_t an = vn - close - 1;
        if (an == 0) {
            p = after;
            plen = 0;
        } else if (after[0] == ':') {
            p = after + 1;
            plen = an - 1;
        } else {
            return false;
        }
        *host = a;
        *host_len = close + 2;
    } else {
        size_t colon = n;
        for (size_t i = n; i > 0; i--)
            if (a[i - 1] == ':') { colon = i - 1; break; }
        *host = a;
        *host_len = colon;
        p = colon < n ? a + colon + 1 : a + n;
        plen = colon < n ? n - colon - 1 : 0;
        if (*host_len == 0) return false;
        bool all_dots = true;
        for (size_t i = 0; i < *host_len; i++) {
            uint8_t b = a[i];
            if (!(is_alpha(b) || is_digit(b) || b == '-' || b == '.' || b == '_')) return false;
            if (b != '.') all_dots = false;
        }
        if (all_dots) return false;
    }
    if (plen == 0) { *port = -1; return true; }
    long value = 0;
    for (size_t i = 0; i < plen; i++) {
        if (!is_digit(p[i])) return false;
        value = value * 10 + (p[i] - '0');
        if (value > 65535) return false;
    }
    *port = value;
    return true;
}

static bool is_id_segment(const uint8_t *s, size_t n) {
    if (n > 0) {
        bool digits = true;
        for (size_t i = 0; i < n; i++)
            if (!is_digit(s[i])) { digits = false; break; }
        if (digits) return true;
    }
    if (n != 36) return false;
    for (size_t i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i])) return false;
    }
    return true;
}

bool normalize(const uint8_t *raw, size_t n, buf_t *url, buf_t *group) {
    url->len = 0;
    group->len = 0;
    trim(&raw, &n);
    size_t colon = 0;
    while (colon < n && raw[colon] != ':') colon++;
    if (colon == n) return false;
    if (n - colon < 3 || memcmp(raw + colon, "://", 3) != 0) return false;
    const char *scheme;
    long default_port;
    if (eq_ignore_case(raw, colon, "http")) { scheme = "http"; default_port = 80; }
    else if (eq_ignore_case(raw, colon, "https")) { scheme = "https"; default_port = 443; }
    else return false;
    const uint8_t *rest = raw + colon + 3;
    size_t rn = n - colon - 3, end = 0;
    while (end < rn && rest[end] != '/' && rest[end] != '?' && rest[end] != '#') end++;
    const uint8_t *authority = rest, *tail = rest + end;
    size_t an = end, tn = rn - end;
    for (size_t i = an; i > 0; i--)
        if (authority[i - 1] == '@') { authority += i; an -= i; break; }
    const uint8_t *host;
    size_t host_len;
    long port;
    if (!split_host_port(authority, an, &host, &host_len, &port)) return false;
    buf_push(url, (const uint8_t *)scheme, strlen(scheme));
    buf_push(url, (const uint8_t *)"://", 3);
    for (size_t i = 0; i < host_len; i++) {
        uint8_t b = lower(host[i]);
        buf_push(url, &b, 1);
    }
    if (port >= 0 && port != default_port) {
        char digits[8];
        int k = 0;
        char tmp[8];
        long v = port;
        do { tmp[k++] = (char)('0' + v % 10); v /= 10; } while (v);
        digits[0] = ':';
        for (int i = 0; i < k; i++) digits[1 + i] = tmp[k - 1 - i];
        buf_push(url, (const uint8_t *)digits, (size_t)k + 1);
    }
    size_t path_len = 0;
    while (path_len < tn && tail[path_len] != '?' && tail[path_len] != '#') path_len++;
    buf_push(group, url->ptr, url->len);
    size_t path_start = url->len, start = 0;
    for (size_t i = 0; i <= path_len; i++) {
        if (i < path_len && tail[i] != '/') continue;
        if (i > start) {
            const uint8_t *segment = tail + start;
            size_t sn = i - start;
            buf_push(url, (const uint8_t *)"/", 1);
            buf_push(url, segment, sn);
            buf_push(group, (const uint8_t *)"/", 1);
            if (is_id_segment(segment, sn)) buf_push(group, (const uint8_t *)"{id}", 4);
            else buf_push(group, segment, sn);
        }
        start = i + 1;
    }
    if (url->len == path_start) {
        buf_push(url, (const uint8_t *)"/", 1);
        buf_push(group, (const uint8_t *)"/", 1);
    }
    return true;
}

bool clean_metric(double v) { return isfinite(v) && v >= 0.0 && v <= 600000.0; }

int32_t event_date(int64_t ms) {
    int64_t q = ms / 86400000;
    if (ms % 86400000 < 0) q -= 1;
    return (int32_t)q;
}

bool country(const uint8_t *raw, size_t n, uint8_t out[2]) {
    if (n != 2 || !is_alpha(raw[0]) || !is_alpha(raw[1])) return false;
    for (int i = 0; i < 2; i++) out[i] = (raw[i] >= 'a' && raw[i] <= 'z') ? raw[i] - 32 : raw[i];
    return true;
}
