"""Independent reader for weir's tests: one Delta table's schema and the
non-null count of each column, read with the `deltalake` Python package
(delta-rs's Python bindings), not with weir's code. Reads the whole table:
for small tables.

    delta_columns.py TABLE_URL

Prints one JSON line: {"version", "rows", "schema": [[name, type, nullable]],
"non_null": {name: count}, "partition_columns": [...]}.
"""

import json
import os
import sys

from deltalake import DeltaTable


def main() -> None:
    table = DeltaTable(sys.argv[1])
    data = table.to_pyarrow_table()
    schema = [
        [f.name, str(f.type), f.nullable] for f in table.schema().to_arrow()
    ]
    non_null = {
        name: len(data) - data.column(name).null_count for name in data.column_names
    }
    print(
        json.dumps(
            {
                "version": table.version(),
                "rows": len(data),
                "schema": schema,
                "non_null": non_null,
                "partition_columns": table.metadata().partition_columns,
            }
        ),
        flush=True,
    )
    # the bindings' runtime can abort at interpreter exit; the answer is out
    os._exit(0)


if __name__ == "__main__":
    main()
