"""Load the bundled Medical Costs data, split between the insurer and the hospital, into each
data party's own DuckDB file (the file its party.toml names under [database]).

    python load_data.py --party ac  --db ac/ac.duckdb
    python load_data.py --party emc --db emc/emc.duckdb

Each organisation runs this for its own file only; the split is the same one ``mpcsql demo``
uses (1,104 rows each, 870 people in both, synthetic ids).  Stop the party's server first: it
keeps its file open read-only.
"""

from __future__ import annotations

import argparse
import os

import duckdb

from engine.data.demo import split


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--party", choices=("ac", "emc"), required=True)
    ap.add_argument("--db", required=True, help="the party's DuckDB file")
    ap.add_argument("--table", help="table name (default: the party's name)")
    args = ap.parse_args(argv)
    ac, emc = split()
    frame = ac if args.party == "ac" else emc
    if args.party == "ac":
        frame = frame.drop(columns=["region"])  # text; expose numeric columns only
    table = args.table or args.party
    os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
    con = duckdb.connect(args.db)
    con.register("frame", frame)
    con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM frame')
    n = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    con.close()
    print(f"{args.db}: table {table} with {n} rows, columns {', '.join(frame.columns)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
