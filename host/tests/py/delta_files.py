"""Independent reader for weir's tests: the active files of a Delta table
(path, partition values, rows) from its log, read with the `deltalake`
Python package (not weir's code).

    delta_files.py TABLE_URL

Prints one JSON line: {"version", "files": [{"path", "partition", "rows"}]},
"partition" being the first partition column's value.
"""

import json
import os
import sys

import pyarrow as pa
from deltalake import DeltaTable


def main() -> None:
    table = DeltaTable(sys.argv[1])
    columns = table.metadata().partition_columns
    actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
    files = []
    for i, path in enumerate(actions["path"]):
        partition = None
        if columns:
            value = actions.get(f"partition.{columns[0]}", [None] * len(actions["path"]))[i]
            partition = value.isoformat() if hasattr(value, "isoformat") else value
        files.append({"path": path, "partition": partition, "rows": actions["num_records"][i]})
    print(json.dumps({"version": table.version(), "files": files}), flush=True)
    # the bindings' runtime can abort at interpreter exit; the answer is out
    os._exit(0)


if __name__ == "__main__":
    main()
