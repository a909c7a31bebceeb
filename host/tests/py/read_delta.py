"""Independent reader for weir's tests: the lake read with the `deltalake`
Python package (delta-rs's Python bindings), not with weir's code.

    read_delta.py LAKE_URL PREFIX N [KEY=VALUE ...]

LAKE_URL is the data table (a local directory or s3://bucket/prefix); the
dead-letter table is LAKE_URL/_dead_letters. KEY=VALUE pairs are storage
options (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Checks that ids
PREFIX0 .. PREFIX(N-1) are each present exactly once among the rows of the
latest table version and prints one JSON line:

{"rows", "distinct", "missing", "duplicated", "unexpected", "files",
 "orphans", "orphans_listed", "dead", "dead_distinct", "version"}

"orphans" counts Parquet files on disk (local lakes) that no table version
adds; "orphans_listed" counts those among DeltaTable.file_uris() (must be 0).
"""

import glob
import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable


def main() -> None:
    url, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    storage = dict(arg.split("=", 1) for arg in sys.argv[4:])
    table = DeltaTable(url, storage_options=storage or None)
    data = table.to_pyarrow_table(columns=["event_id"])
    column = data.column("event_id")
    counts = pc.value_counts(column)
    values = counts.field("values").to_pylist()
    times = counts.field("counts").to_pylist()
    expected = {f"{prefix}{i}" for i in range(n)}
    seen = set(values)
    files = set()
    for uri in table.file_uris():
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        files.add(os.path.relpath(path, url) if "://" not in url else path)
    orphans = set()
    if "://" not in url:
        on_disk = {
            os.path.relpath(p, url)
            for p in glob.glob(os.path.join(url, "*=*", "*.parquet"))
        }
        orphans = on_disk - files
    dead_url = url.rstrip("/") + "/_dead_letters"
    dead_rows, dead_distinct = 0, 0
    try:
        dead = DeltaTable(dead_url, storage_options=storage or None)
        letters = dead.to_pyarrow_table(columns=["topic", "partition", "offset"])
        dead_rows = letters.num_rows
        keys = {
            (t, p, o)
            for t, p, o in zip(
                letters.column("topic").to_pylist(),
                letters.column("partition").to_pylist(),
                letters.column("offset").to_pylist(),
            )
        }
        dead_distinct = len(keys)
    except Exception as e:  # no dead letters yet: no table
        if "no such" not in str(e).lower() and "not a delta table" not in str(e).lower() and "no files in log" not in str(e).lower():
            raise
    print(
        json.dumps(
            {
                "rows": len(column),
                "distinct": len(values),
                "missing": len(expected - seen),
                "duplicated": sum(1 for c in times if c > 1),
                "unexpected": len(seen - expected),
                "files": len(files),
                "orphans": len(orphans),
                "orphans_listed": len(orphans & files),
                "dead": dead_rows,
                "dead_distinct": dead_distinct,
                "version": table.version(),
            }
        )
    )


if __name__ == "__main__":
    main()
    # deltalake 1.6 sometimes aborts while its native threads are torn down
    # at interpreter exit ("terminate called without an active exception"),
    # after the answer is printed: leave without the teardown
    sys.stdout.flush()
    os._exit(0)
