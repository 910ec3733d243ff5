"""Print the queries party ac's server ran for an analyst: run time and SQL, one line each.

    python queries.py --server mpcsql://127.0.0.1:7460 --tls-dir STATE/parties \
        --analyst superset@ac

Reads ``Connection.queries()`` (the server's recent queries) with the analyst's own
certificate: what Superset actually sent, after the mpcsql dialect merged its wrapping.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os

import engine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--tls-dir", required=True, help="holds ca/ca.crt and analysts/")
    ap.add_argument("--analyst", default="superset@ac")
    args = ap.parse_args(argv)
    d = args.tls_dir
    tls = {"ca": os.path.join(d, "ca", "ca.crt"),
           "cert": os.path.join(d, "analysts", f"{args.analyst}.crt"),
           "key": os.path.join(d, "analysts", f"{args.analyst}.key")}
    with engine.connect(args.server, tls=tls) as con:
        for q in con.queries():
            if q["analyst"] != args.analyst:
                continue
            seconds = "-"
            if q.get("started") and q.get("finished"):
                run = (dt.datetime.fromisoformat(q["finished"])
                       - dt.datetime.fromisoformat(q["started"]))
                seconds = f"{run.total_seconds():.2f} s"
            print(f"{q['state']:<6} {seconds:>8}  {' '.join(q['sql'].split())}")
            if q.get("error"):
                print(f"{'':>17}{q['error']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
