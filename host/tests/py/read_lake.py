"""Independent reader for weir's tests: the kept events of a local lake, read
with pyarrow from the files its commit records name (not weir's code).

    read_lake.py LAKE_DIR PREFIX N

Checks that ids PREFIX0 .. PREFIX(N-1) are each present exactly once among
the committed data files and prints one JSON line:
{"rows", "distinct", "missing", "duplicated", "unexpected", "files", "uncommitted"}.
"uncommitted" counts Parquet files on disk that no commit record names.
"""

import glob
import json
import os
import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq


def main() -> None:
    lake, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    committed = set()
    for record in glob.glob(os.path.join(lake, "_commits", "**", "*.json"), recursive=True):
        with open(record) as f:
            for file in json.load(f)["files"]:
                if file["kind"] == "data":
                    committed.add(file["path"])
    on_disk = {
        os.path.relpath(p, lake)
        for p in glob.glob(os.path.join(lake, "data", "**", "*.parquet"), recursive=True)
    }
    ids = []
    for path in sorted(committed):
        ids.append(pq.read_table(os.path.join(lake, path), columns=["event_id"]).column(0))
    import pyarrow as pa

    column = pa.chunked_array([c for chunked in ids for c in chunked.chunks], type=pa.string())
    counts = pc.value_counts(column)
    values = counts.field("values").to_pylist()
    times = counts.field("counts").to_pylist()
    expected = {f"{prefix}{i}" for i in range(n)}
    seen = set(values)
    print(
        json.dumps(
            {
                "rows": len(column),
                "distinct": len(values),
                "missing": len(expected - seen),
                "duplicated": sum(1 for c in times if c > 1),
                "unexpected": len(seen - expected),
                "files": len(committed),
                "uncommitted": len(on_disk - committed),
            }
        )
    )


if __name__ == "__main__":
    main()
