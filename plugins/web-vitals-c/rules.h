/* The web-vitals rules in C, over UTF-8 byte strings: the same results as
 * the Rust plugin's rules (plugins/web-vitals/src/rules.rs), byte for byte.
 * Pure functions; output goes into a growable buffer the caller reuses. */
#ifndef WEB_VITALS_RULES_H
#define WEB_VITALS_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer (malloc'd). */
typedef struct {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} buf_t;

void buf_push(buf_t *b, const uint8_t *bytes, size_t n);
void buf_free(buf_t *b);

typedef struct {
    bool bot, tablet, mobile;
} ua_traits_t;

/* Scan an ASCII-lower-cased user agent. */
ua_traits_t scan_user_agent(const uint8_t *lower, size_t n);

/* Normalise `raw` into `url` (scheme://host[:port]/path) and its page group
 * into `group`; false when `raw` is not an absolute http(s) URL with a host. */
bool normalize(const uint8_t *raw, size_t n, buf_t *url, buf_t *group);

/* Whether a metric is kept: finite and within 0..=600000 ms. */
bool clean_metric(double value);

/* Days since the epoch of a millisecond timestamp (floor division). */
int32_t event_date(int64_t timestamp_ms);

/* Upper-cased country when `raw` is exactly two ASCII letters. */
bool country(const uint8_t *raw, size_t n, uint8_t out[2]);

#endif
