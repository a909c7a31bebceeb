"""The web-vitals rules in Python: the same contract and the same results as
the Rust plugin (plugins/web-vitals), built into a component with
componentize-py. `weir plugin diff` checks that the two agree.

Everything is ASCII-exact on purpose: lower-casing, digit and letter tests and
white-space trimming follow the Rust plugin byte for byte (Python's own
`str.lower`, `str.isdigit` and `str.strip` know more of Unicode than Rust's
ASCII helpers, so they are not used).
"""

import math

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types as t

MAX_METRIC_MS = 600000.0
ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ASCII_LOWER = "abcdefghijklmnopqrstuvwxyz"
TO_LOWER = str.maketrans(ASCII_UPPER, ASCII_LOWER)
LETTERS = frozenset(ASCII_UPPER + ASCII_LOWER)
DIGITS = frozenset("0123456789")
HEX = frozenset("0123456789abcdefABCDEF")
HOST_CHARS = frozenset(ASCII_UPPER + ASCII_LOWER + "0123456789-._")
V6_CHARS = HEX | frozenset(":.")
# Rust's `str::trim`: Unicode White_Space
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + "\u2028\u2029\u202f\u205f\u3000"

INPUT = [
    ("event_id", t.FieldType.STRING),
    ("timestamp", t.FieldType.TIMESTAMP_MS),
    ("page_url", t.FieldType.STRING),
    ("tti_ms", t.FieldType.FLOAT64),
    ("ttar_ms", t.FieldType.FLOAT64),
    ("session_id", t.FieldType.STRING),
    ("user_agent", t.FieldType.STRING),
    ("country", t.FieldType.STRING),
]

OUTPUT = [
    t.Field("event_id", t.FieldType.STRING, False),
    t.Field("timestamp", t.FieldType.TIMESTAMP_MS, False),
    t.Field("event_date", t.FieldType.DATE, False),
    t.Field("page_url", t.FieldType.STRING, False),
    t.Field("page_group", t.FieldType.STRING, False),
    t.Field("tti_ms", t.FieldType.FLOAT64, True),
    t.Field("ttar_ms", t.FieldType.FLOAT64, True),
    t.Field("device_class", t.FieldType.STRING, False),
    t.Field("country", t.FieldType.STRING, True),
    t.Field("session_id", t.FieldType.STRING, True),
    t.Field("user_agent", t.FieldType.STRING, True),
]


# ---- the rules (pure functions, mirrored from plugins/web-vitals/src/rules.rs)

def scan_user_agent(lower):
    """(bot, tablet, mobile) of an ASCII-lower-cased user agent."""
    bot = "bot" in lower or "crawler" in lower or "spider" in lower or "headlesschrome" in lower
    tablet = "ipad" in lower or "tablet" in lower
    mobile = "mobi" in lower or "android" in lower or "iphone" in lower
    return bot, tablet, mobile


def split_host_port(authority):
    """(host, port or None), or None when invalid."""
    if authority.startswith("["):
        v6 = authority[1:]
        close = v6.find("]")
        if close < 0:
            return None
        inner = v6[:close]
        if not inner or any(c not in V6_CHARS for c in inner):
            return None
        after = v6[close + 1:]
        if after == "":
            port = ""
        elif after.startswith(":"):
            port = after[1:]
        else:
            return None
        host = authority[:close + 2]
    else:
        if ":" in authority:
            host, port = authority.rsplit(":", 1)
        else:
            host, port = authority, ""
        if not host or any(c not in HOST_CHARS for c in host) or all(c == "." for c in host):
            return None
    if port == "":
        return host, None
    if any(c not in DIGITS for c in port):
        return None
    value = int(port)
    if value > 65535:
        return None
    return host, value


def normalize_url(raw):
    """`scheme://host[:port]/path`, or None when not an absolute http(s) URL."""
    url = raw.strip(WHITE_SPACE)
    colon = url.find(":")
    if colon < 0:
        return None
    scheme, rest = url[:colon], url[colon:]
    if not rest.startswith("://"):
        return None
    rest = rest[3:]
    scheme = scheme.translate(TO_LOWER)
    if scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    else:
        return None
    end = len(rest)
    for i, c in enumerate(rest):
        if c in "/?#":
            end = i
            break
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = authority.rsplit("@", 1)[1]
    parsed = split_host_port(authority)
    if parsed is None:
        return None
    host, port = parsed
    out = scheme + "://" + host.translate(TO_LOWER)
    if port is not None and port != default_port:
        out += ":" + str(port)
    for i, c in enumerate(tail):
        if c in "?#":
            tail = tail[:i]
            break
    segments = [s for s in tail.split("/") if s]
    return out + ("".join("/" + s for s in segments) if segments else "/")


def is_id_segment(s):
    if s and all(c in DIGITS for c in s):
        return True
    return len(s) == 36 and all(
        (c == "-") if i in (8, 13, 18, 23) else (c in HEX) for i, c in enumerate(s)
    )


def page_group(url):
    start = url.find("://")
    start = 0 if start < 0 else start + 3
    slash = url.find("/", start)
    path_start = len(url) if slash < 0 else slash
    head, path = url[:path_start], url[path_start:]
    if path == "/":
        return head + "/"
    return head + "".join("/" + ("{id}" if is_id_segment(s) else s) for s in path.split("/")[1:])


def clean_metric(value):
    if value is None or not math.isfinite(value) or value < 0.0 or value > MAX_METRIC_MS:
        return None
    return value


def device_class(traits):
    if traits is None:
        return "unknown"
    _, tablet, mobile = traits
    return "tablet" if tablet else "mobile" if mobile else "desktop"


def country(raw):
    if len(raw) == 2 and raw[0] in LETTERS and raw[1] in LETTERS:
        return raw.upper()
    return None


# ---- columnar plumbing

def valid(validity, row):
    return validity is None or (validity[row >> 3] >> (row & 7)) & 1 == 1


def reader(column):
    """A function row -> value (None when null) for one input column."""
    values, validity = column.values, column.validity
    if isinstance(values, t.ColumnValues_String):
        offsets, data = values.value.offsets, values.value.data
        return lambda r: data[offsets[r]:offsets[r + 1]].decode("utf-8") if valid(validity, r) else None
    items = values.value
    return lambda r: items[r] if valid(validity, r) else None


class ColumnOut:
    """Builds one output column."""

    def __init__(self, kind):
        self.kind = kind
        self.bits = bytearray()
        self.nulls = 0
        self.n = 0
        self.values = []
        self.data = bytearray()
        self.offsets = [0]

    def push(self, value):
        if self.n & 7 == 0:
            self.bits.append(0)
        if value is None:
            self.nulls += 1
        else:
            self.bits[-1] |= 1 << (self.n & 7)
        self.n += 1
        if self.kind == t.FieldType.STRING:
            if value is not None:
                self.data += value.encode("utf-8")
            self.offsets.append(len(self.data))
        elif self.kind == t.FieldType.FLOAT64:
            self.values.append(0.0 if value is None else value)
        else:
            self.values.append(0 if value is None else value)

    def finish(self):
        validity = bytes(self.bits) if self.nulls else None
        if self.kind == t.FieldType.STRING:
            values = t.ColumnValues_String(t.StringColumn(self.offsets, bytes(self.data)))
        elif self.kind == t.FieldType.FLOAT64:
            values = t.ColumnValues_Float64(self.values)
        elif self.kind == t.FieldType.TIMESTAMP_MS:
            values = t.ColumnValues_TimestampMs(self.values)
        else:
            values = t.ColumnValues_Date(self.values)
        return t.Column(validity, values)


# Column positions of the input fields, set by `init`. Module state: the
# component's functions are called on fresh `Plugin` objects.
POSITIONS = None


class Plugin(exports.Plugin):
    def init(self, input, config):
        global POSITIONS
        if config:
            raise Err("unknown config key(s): " + ", ".join(k for k, _ in config))
        names = {f.name: (i, f.type) for i, f in enumerate(input)}
        positions = []
        for name, kind in INPUT:
            if name not in names:
                raise Err("the schema has no field `%s`" % name)
            index, found = names[name]
            if found != kind:
                raise Err("field `%s` has the wrong type" % name)
            positions.append(index)
        POSITIONS = positions
        return OUTPUT

    def process(self, input):
        if POSITIONS is None:
            raise Err("process called before init")
        get = [reader(input.columns[i]) for i in POSITIONS]
        event_id, timestamp, page_url, tti_ms, ttar_ms, session_id, user_agent, country_of = get
        out = [ColumnOut(f.type) for f in OUTPUT]
        exclusions, reasons, reason_ids = [], [], {}

        def exclude(row, verdict, reason):
            if reason not in reason_ids:
                reason_ids[reason] = len(reasons)
                reasons.append(reason)
            exclusions.append(t.Exclusion(row, verdict, reason_ids[reason]))

        for row in range(input.num_rows):
            eid, ts, url = event_id(row), timestamp(row), page_url(row)
            if eid is None or ts is None or url is None:
                exclude(row, t.Verdict.REJECT, "missing required field")
                continue
            ua = user_agent(row)
            if ua == "":
                ua = None
            traits = scan_user_agent(ua.translate(TO_LOWER)) if ua is not None else None
            if traits is not None and traits[0]:
                exclude(row, t.Verdict.DROP, "bot")
                continue
            normalized = normalize_url(url)
            if normalized is None:
                exclude(row, t.Verdict.REJECT, "invalid page_url")
                continue
            tti, ttar = clean_metric(tti_ms(row)), clean_metric(ttar_ms(row))
            if tti is None and ttar is None:
                exclude(row, t.Verdict.DROP, "no valid metrics")
                continue
            c = country_of(row)
            values = (
                eid, ts, ts // 86400000, normalized, page_group(normalized), tti, ttar,
                device_class(traits), country(c) if c is not None else None, session_id(row), ua,
            )
            for column, value in zip(out, values):
                column.push(value)
        kept = out[0].n
        return t.Output(t.Batch(kept, [c.finish() for c in out]), exclusions, reasons)
