// The web-vitals rules in JavaScript: the same contract and the same results
// as the Rust plugin (plugins/web-vitals), built into a component with
// componentize-js (`bash scripts/build-plugins.sh`). `weir plugin diff`
// checks that the two agree on every event.
//
// Everything is ASCII-exact on purpose, as in the Python plugin: lower-casing,
// digit and letter tests and white-space trimming follow the Rust plugin
// byte for byte (JavaScript's own `toLowerCase` and `trim` know more of
// Unicode than Rust's ASCII helpers, so they are not used).
//
// How the WIT types look from JavaScript (componentize-js 0.23):
// - records are objects with camelCase keys (`numRows`), enums are strings
//   (`"timestamp-ms"`, `"reject"`), variants are `{ tag, val }`;
// - `list<u8>` is a Uint8Array, `list<s64>` a BigInt64Array (values are
//   BigInt), `list<f64>` a Float64Array, `list<s32>` an Int32Array;
//   plain arrays are accepted on the way out;
// - `option<T>` is the value or `undefined`;
// - `result<T, string>`: return T, or throw the message *as a string*
//   (throwing an `Error` object traps, and its message is lost).

import { log } from "weir:preprocess/logging@0.1.0";

const MAX_METRIC_MS = 600000.0;
const DAY_MS = 86400000n;
// Rust's `str::trim`: Unicode White_Space (not \uFEFF, which JS trims)
const WHITE_SPACE = new Set(
  "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000",
);
const isDigit = (c) => c >= "0" && c <= "9";
const isLetter = (c) => (c >= "a" && c <= "z") || (c >= "A" && c <= "Z");
const isHex = (c) => isDigit(c) || (c >= "a" && c <= "f") || (c >= "A" && c <= "F");
const isHostChar = (c) => isLetter(c) || isDigit(c) || c === "-" || c === "." || c === "_";
const isV6Char = (c) => isHex(c) || c === ":" || c === ".";
const asciiLower = (s) => s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
const every = (s, test) => {
  for (const c of s) if (!test(c)) return false;
  return true;
};

const INPUT = [
  ["event_id", "string"],
  ["timestamp", "timestamp-ms"],
  ["page_url", "string"],
  ["tti_ms", "float64"],
  ["ttar_ms", "float64"],
  ["session_id", "string"],
  ["user_agent", "string"],
  ["country", "string"],
];

const OUTPUT = [
  { name: "event_id", type: "string", nullable: false },
  { name: "timestamp", type: "timestamp-ms", nullable: false },
  { name: "event_date", type: "date", nullable: false },
  { name: "page_url", type: "string", nullable: false },
  { name: "page_group", type: "string", nullable: false },
  { name: "tti_ms", type: "float64", nullable: true },
  { name: "ttar_ms", type: "float64", nullable: true },
  { name: "device_class", type: "string", nullable: false },
  { name: "country", type: "string", nullable: true },
  { name: "session_id", type: "string", nullable: true },
  { name: "user_agent", type: "string", nullable: true },
];

// ---- the rules (pure functions, mirrored from plugins/web-vitals/src/rules.rs)

function scanUserAgent(lower) {
  return {
    bot:
      lower.includes("bot") ||
      lower.includes("crawler") ||
      lower.includes("spider") ||
      lower.includes("headlesschrome"),
    tablet: lower.includes("ipad") || lower.includes("tablet"),
    mobile: lower.includes("mobi") || lower.includes("android") || lower.includes("iphone"),
  };
}

// [host, port or null], or null when invalid
function splitHostPort(authority) {
  let host;
  let port;
  if (authority.startsWith("[")) {
    const v6 = authority.slice(1);
    const close = v6.indexOf("]");
    if (close < 0) return null;
    const inner = v6.slice(0, close);
    if (inner === "" || !every(inner, isV6Char)) return null;
    const after = v6.slice(close + 1);
    if (after === "") port = "";
    else if (after.startsWith(":")) port = after.slice(1);
    else return null;
    host = authority.slice(0, close + 2);
  } else {
    const colon = authority.lastIndexOf(":");
    if (colon >= 0) {
      host = authority.slice(0, colon);
      port = authority.slice(colon + 1);
    } else {
      host = authority;
      port = "";
    }
    if (host === "" || !every(host, isHostChar) || every(host, (c) => c === ".")) return null;
  }
  if (port === "") return [host, null];
  if (!every(port, isDigit)) return null;
  const value = Number(port);
  if (value > 65535) return null;
  return [host, value];
}

function trimWhiteSpace(s) {
  const chars = Array.from(s);
  let start = 0;
  let end = chars.length;
  while (start < end && WHITE_SPACE.has(chars[start])) start++;
  while (end > start && WHITE_SPACE.has(chars[end - 1])) end--;
  return chars.slice(start, end).join("");
}

// `scheme://host[:port]/path`, or null when not an absolute http(s) URL
function normalizeUrl(raw) {
  const url = trimWhiteSpace(raw);
  const colon = url.indexOf(":");
  if (colon < 0) return null;
  let rest = url.slice(colon);
  if (!rest.startsWith("://")) return null;
  rest = rest.slice(3);
  const scheme = asciiLower(url.slice(0, colon));
  let defaultPort;
  if (scheme === "http") defaultPort = 80;
  else if (scheme === "https") defaultPort = 443;
  else return null;
  let end = rest.search(/[/?#]/);
  if (end < 0) end = rest.length;
  let authority = rest.slice(0, end);
  let tail = rest.slice(end);
  const at = authority.lastIndexOf("@");
  if (at >= 0) authority = authority.slice(at + 1);
  const parsed = splitHostPort(authority);
  if (parsed === null) return null;
  const [host, port] = parsed;
  let out = scheme + "://" + asciiLower(host);
  if (port !== null && port !== defaultPort) out += ":" + String(port);
  const cut = tail.search(/[?#]/);
  if (cut >= 0) tail = tail.slice(0, cut);
  const segments = tail.split("/").filter((s) => s !== "");
  return out + (segments.length ? segments.map((s) => "/" + s).join("") : "/");
}

function isIdSegment(s) {
  if (s !== "" && every(s, isDigit)) return true;
  if (s.length !== 36) return false;
  for (let i = 0; i < 36; i++) {
    const c = s[i];
    const dash = i === 8 || i === 13 || i === 18 || i === 23;
    if (dash ? c !== "-" : !isHex(c)) return false;
  }
  return true;
}

function pageGroup(url) {
  let start = url.indexOf("://");
  start = start < 0 ? 0 : start + 3;
  const slash = url.indexOf("/", start);
  const pathStart = slash < 0 ? url.length : slash;
  const head = url.slice(0, pathStart);
  const path = url.slice(pathStart);
  if (path === "/") return head + "/";
  return (
    head +
    path
      .split("/")
      .slice(1)
      .map((s) => "/" + (isIdSegment(s) ? "{id}" : s))
      .join("")
  );
}

function cleanMetric(value) {
  if (value === null || !Number.isFinite(value) || value < 0.0 || value > MAX_METRIC_MS) return null;
  return value;
}

function deviceClass(traits) {
  if (traits === null) return "unknown";
  return traits.tablet ? "tablet" : traits.mobile ? "mobile" : "desktop";
}

function country(raw) {
  if (raw.length === 2 && isLetter(raw[0]) && isLetter(raw[1])) {
    return raw.replace(/[a-z]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 32));
  }
  return null;
}

// floor(ms / day) of a BigInt, as a Number
function dayOf(ms) {
  let q = ms / DAY_MS;
  if (ms % DAY_MS < 0n) q -= 1n;
  return Number(q);
}

// ---- columnar plumbing

const decoder = new TextDecoder("utf-8");
const encoder = new TextEncoder();

const isValid = (validity, row) => validity === undefined || ((validity[row >> 3] >> (row & 7)) & 1) === 1;

// row -> value (null when null) for one input column
function reader(column) {
  const { validity, values } = column;
  if (values.tag === "string") {
    const { offsets, data } = values.val;
    return (r) => (isValid(validity, r) ? decoder.decode(data.subarray(offsets[r], offsets[r + 1])) : null);
  }
  const items = values.val;
  return (r) => (isValid(validity, r) ? items[r] : null);
}

class ColumnOut {
  constructor(type) {
    this.type = type;
    this.bits = [];
    this.nulls = 0;
    this.n = 0;
    this.values = [];
    this.chunks = [];
    this.length = 0;
    this.offsets = [0];
  }

  push(value) {
    if ((this.n & 7) === 0) this.bits.push(0);
    if (value === null) this.nulls++;
    else this.bits[this.bits.length - 1] |= 1 << (this.n & 7);
    this.n++;
    if (this.type === "string") {
      if (value !== null) {
        const bytes = encoder.encode(value);
        this.chunks.push(bytes);
        this.length += bytes.length;
      }
      this.offsets.push(this.length);
    } else if (this.type === "timestamp-ms") {
      this.values.push(value === null ? 0n : value);
    } else {
      this.values.push(value === null ? 0 : value);
    }
  }

  finish() {
    const validity = this.nulls ? new Uint8Array(this.bits) : undefined;
    switch (this.type) {
      case "string": {
        const data = new Uint8Array(this.length);
        let at = 0;
        for (const c of this.chunks) {
          data.set(c, at);
          at += c.length;
        }
        return { validity, values: { tag: "string", val: { offsets: new Int32Array(this.offsets), data } } };
      }
      case "float64":
        return { validity, values: { tag: "float64", val: new Float64Array(this.values) } };
      case "timestamp-ms":
        return { validity, values: { tag: "timestamp-ms", val: new BigInt64Array(this.values) } };
      default:
        return { validity, values: { tag: "date", val: new Int32Array(this.values) } };
    }
  }
}

// Column positions of the input fields, set by `init`.
let positions = null;

export const plugin = {
  init(input, config) {
    if (config.length) {
      throw "unknown config key(s): " + config.map(([k]) => k).join(", ");
    }
    const found = new Map(input.map((f, i) => [f.name, [i, f.type]]));
    const chosen = [];
    for (const [name, type] of INPUT) {
      const field = found.get(name);
      if (field === undefined) throw `the schema has no field \`${name}\``;
      if (field[1] !== type) throw `field \`${name}\` has the wrong type`;
      chosen.push(field[0]);
    }
    positions = chosen;
    log("debug", "web-vitals (JavaScript) initialised");
    return OUTPUT;
  },

  process(input) {
    if (positions === null) throw "process called before init";
    const [eventId, timestamp, pageUrl, ttiMs, ttarMs, sessionId, userAgent, countryOf] = positions.map((i) =>
      reader(input.columns[i]),
    );
    const out = OUTPUT.map((f) => new ColumnOut(f.type));
    const exclusions = [];
    const reasons = [];
    const reasonIds = new Map();
    const exclude = (row, verdict, reason) => {
      if (!reasonIds.has(reason)) {
        reasonIds.set(reason, reasons.length);
        reasons.push(reason);
      }
      exclusions.push({ row, verdict, reason: reasonIds.get(reason) });
    };
    for (let row = 0; row < input.numRows; row++) {
      const eid = eventId(row);
      const ts = timestamp(row);
      const url = pageUrl(row);
      if (eid === null || ts === null || url === null) {
        exclude(row, "reject", "missing required field");
        continue;
      }
      let ua = userAgent(row);
      if (ua === "") ua = null;
      const traits = ua === null ? null : scanUserAgent(asciiLower(ua));
      if (traits !== null && traits.bot) {
        exclude(row, "drop", "bot");
        continue;
      }
      const normalized = normalizeUrl(url);
      if (normalized === null) {
        exclude(row, "reject", "invalid page_url");
        continue;
      }
      const tti = cleanMetric(ttiMs(row));
      const ttar = cleanMetric(ttarMs(row));
      if (tti === null && ttar === null) {
        exclude(row, "drop", "no valid metrics");
        continue;
      }
      const c = countryOf(row);
      const values = [
        eid,
        ts,
        dayOf(ts),
        normalized,
        pageGroup(normalized),
        tti,
        ttar,
        deviceClass(traits),
        c === null ? null : country(c),
        sessionId(row),
        ua,
      ];
      for (let i = 0; i < out.length; i++) out[i].push(values[i]);
    }
    return {
      batch: { numRows: out[0].n, columns: out.map((c) => c.finish()) },
      exclusions,
      reasons,
    };
  },
};
