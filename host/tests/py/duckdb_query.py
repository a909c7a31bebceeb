"""Reference engine for weir's tests: SQL run by DuckDB over a Delta
table read with the `deltalake` Python package (neither is weir's code).

    duckdb_query.py TABLE_URL SQL

The table's rows are the relation `events`. Prints the result rows as one
JSON array of arrays (dates as ISO strings).
"""

import json
import os
import sys

import duckdb
from deltalake import DeltaTable


def main() -> None:
    events = DeltaTable(sys.argv[1]).to_pyarrow_table()  # noqa: F841 (DuckDB reads it by name)
    rows = duckdb.sql(sys.argv[2]).fetchall()
    plain = [[v.isoformat() if hasattr(v, "isoformat") else v for v in row] for row in rows]
    print(json.dumps(plain), flush=True)
    # the bindings' runtime can abort at interpreter exit; the answer is out
    os._exit(0)


if __name__ == "__main__":
    main()
