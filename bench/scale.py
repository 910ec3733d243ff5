"""Scaling benchmark of the masked join: 10^5 .. 10^8 rows per party, memory and time per phase.

Generates two tables per row count with DuckDB straight into Parquet files (no pandas copy of
the rows in this process): ``ac(id, y, a1..aA)`` and ``emc(id, e1..eE)``, full overlap, ids a
scrambled bijection of 0..n-1 (each table in its own order), values uniform.  Registers them
through the public API (three party processes), runs one query with ``SET join_protocol =
'masked'`` and the same query in plain DuckDB on the same files, and prints per row count:
seconds per phase (the critical path as the coordinator ``ac`` saw it), peak resident memory
per party (the party server, which reads the table, and its session process), CPU seconds per
party (session process), and DuckDB's seconds.  Usage::

    python -m bench.scale [--rows 1e5,1e6,1e7,1e8] [--query sum|lasso|group|minmax|median]
                          [--features 2+2] [--workdir DIR] [--timeout 3600] [--json PATH]
                          [--spill-rows N] [--spill-dir DIR] [--load api|direct]

``--spill-rows N`` makes every party keep the masked join's per-row state on disk for tables of
more than N rows (MPCSQL_SPILL_ROWS; default: the parties' own threshold, 2^23 rows), under
``--spill-dir`` (MPCSQL_SPILL_DIR).  ``--load direct`` (the default from 2*10^7 rows on: a
table's Parquet file can exceed the 2 GiB a registration message may carry) writes each party's
DuckDB file from the Parquet file with the party's own storage code before its server starts,
instead of registering through the API; the server's peak then covers only the query.

``sum``: ``COUNT(*)`` and ``SUM``/``AVG`` of every column; ``lasso``: LASSO of y on every
feature; ``group``: ``GROUP BY`` a 10-value column of ac with 5 aggregates; ``minmax``: the same
groups with MIN of an ac column, MAX of an emc column and COUNT(*); ``median``: COUNT(*),
MEDIAN of an ac column and QUANTILE_CONT(0.9) of an emc column over the whole join.  The
server's peak is measured from its ``VmHWM``, reset (``/proc/PID/clear_refs``) after
registration, so it covers the query's preparation (reading and checking the table) and not
the registration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

if __package__ in (None, ""):  # python bench/scale.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import duckdb  # noqa: E402

import engine  # noqa: E402
from bench.common import PARTIES, machine_note, markdown, ordered_phases  # noqa: E402

#: Odd multipliers: i -> i * A mod 2^40 scrambles the ids, j -> j * B mod n reorders emc.
_A, _B = 0x9E3779B97F, 1_000_003


def _ints(spec: str) -> list[int]:
    return [int(float(s)) for s in spec.split(",") if s]


def _features(spec: str) -> tuple[int, int]:
    a, sep, e = spec.partition("+")
    if not sep:
        raise argparse.ArgumentTypeError("--features expects AC+EMC, e.g. 2+2")
    return int(a), int(e)


def make_tables(workdir: str, n: int, d_ac: int, d_emc: int, seed: int = 0) -> dict[str, str]:
    """Write ac.parquet and emc.parquet with n rows each (full overlap); their paths."""
    con = duckdb.connect()
    con.execute(f"SELECT setseed({0.5 / (seed + 1)})")
    def ident(v: str) -> str:  # a bijection on [0, 2^40); HUGEINT: i * _A overflows BIGINT
        return f"(((CAST({v} AS HUGEINT) * {_A}) % 1099511627776) + 1000000000)"

    a_cols = ", ".join(f"round((random() * 2 - 1) * 1000, 3) AS a{j + 1}" for j in range(d_ac))
    e_cols = ", ".join(f"round((random() * 2 - 1) * 100, 3) AS e{j + 1}" for j in range(d_emc))
    group = ", CAST(floor(random() * 10) AS INTEGER) AS g"
    paths = {"ac": os.path.join(workdir, f"ac_{n}.parquet"),
             "emc": os.path.join(workdir, f"emc_{n}.parquet")}
    y = "round(random() * 10000, 2) AS y"
    con.execute(f"COPY (SELECT CAST({ident('i')} AS BIGINT) AS id, {y}{', ' if a_cols else ''}"
                f"{a_cols}{group} FROM range({n}) t(i)) TO '{paths['ac']}' (FORMAT parquet)")
    emc_i = f"((CAST(j AS HUGEINT) * {_B}) % {n})"
    con.execute(f"COPY (SELECT CAST({ident(emc_i)} AS BIGINT) AS id"
                f"{', ' if e_cols else ''}{e_cols} FROM range({n}) t(j)) TO '{paths['emc']}' "
                "(FORMAT parquet)")
    con.close()
    return paths


def query_sql(query: str, d_ac: int, d_emc: int) -> str:
    cols = ([f"ac.a{j + 1}" for j in range(d_ac)] + [f"emc.e{j + 1}" for j in range(d_emc)])
    a, e = cols[0], cols[-1]
    if query == "sum":
        items = ["COUNT(*)"]
        for i, c in enumerate(cols):
            items.append(f"{'SUM' if i % 2 == 0 else 'AVG'}({c})")
        return "SELECT " + ", ".join(items) + " FROM ac INNER JOIN emc USING (id)"
    if query == "lasso":
        return (f"SELECT LASSO(ac.y, {', '.join(cols)}, alpha => 0.05) "
                "FROM ac INNER JOIN emc USING (id)")
    if query == "group":
        return (f"SELECT ac.g, COUNT(*), SUM({a}), AVG({e}), SUM(ac.y), AVG(ac.y) "
                "FROM ac INNER JOIN emc USING (id) GROUP BY ac.g ORDER BY ac.g")
    if query == "minmax":
        return (f"SELECT ac.g, MIN({a}), MAX({e}), COUNT(*) "
                "FROM ac INNER JOIN emc USING (id) GROUP BY ac.g ORDER BY ac.g")
    if query == "median":
        return (f"SELECT COUNT(*), MEDIAN({a}), QUANTILE_CONT({e}, 0.9) "
                "FROM ac INNER JOIN emc USING (id)")
    raise ValueError(f"unknown query {query!r} (sum, lasso, group, minmax, median)")


def plain(paths: dict[str, str], sql: str, query: str, d_ac: int, d_emc: int
          ) -> tuple[list[tuple], float]:
    """The same query in plain DuckDB on the same files (LASSO: the join + scikit-learn)."""
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"CREATE VIEW ac AS SELECT * FROM '{paths['ac']}'")
    con.execute(f"CREATE VIEW emc AS SELECT * FROM '{paths['emc']}'")
    if query == "lasso":
        from sklearn.linear_model import Lasso

        cols = ([f"ac.a{j + 1}" for j in range(d_ac)] + [f"emc.e{j + 1}" for j in range(d_emc)])
        got = con.execute(f"SELECT ac.y, {', '.join(cols)} FROM ac JOIN emc USING (id)"
                          ).fetchnumpy()
        import numpy as np

        X = np.column_stack([got[c.split('.')[1]] for c in cols])
        fit = Lasso(alpha=0.05, tol=1e-10, max_iter=100000).fit(X, got["y"])
        rows = [("intercept", float(fit.intercept_))] + list(zip(cols, map(float, fit.coef_),
                                                                  strict=True))
    else:
        rows = con.execute(sql).fetchall()
    con.close()
    return rows, time.perf_counter() - t0


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])  # kB
    except OSError:
        pass
    return out


def _reset_peak(pid: int) -> None:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def load_direct(fed_dir: str, paths: dict[str, str], decl: dict[str, dict]) -> None:
    """Each party's DuckDB file (``<party>.duckdb`` in ``fed_dir``, where the embedded
    federation's servers open it) written from its Parquet file by the party's own storage code
    (engine.server.storage.PartyStore.register: DuckDB reads the file, same checks and catalog
    entry as a registration), before any server starts."""
    from engine.server.storage import PartyStore

    os.makedirs(fed_dir, mode=0o700, exist_ok=True)
    for t, path in paths.items():
        store = PartyStore(os.path.join(fed_dir, f"{t}.duckdb"), t)
        try:
            store.register(t, key="id", path=path, **decl[t])
        finally:
            store.close()


def run_one(con, paths: dict[str, str], sql: str) -> dict:
    pids = con.federation.pids()
    for p in PARTIES:
        _reset_peak(pids[p])
    t0 = time.perf_counter()
    cur = con.cursor()
    cur.execute("SET join_protocol = 'masked'; " + sql)
    rows = cur.fetchall()
    wall = time.perf_counter() - t0
    stats = cur.stats or {}
    server = {p: _status(pids[p]).get("VmHWM", 0) / 1024.0 for p in PARTIES}
    return {"rows": rows, "wall": wall, "stats": stats, "server_peak_mb": server}


def _same(a: list[tuple], b: list[tuple]) -> float:
    """Largest relative difference between two results (same shape)."""
    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            if isinstance(x, str) or isinstance(y, str):
                continue
            if x is None or y is None:
                worst = max(worst, 0.0 if x is y else float("inf"))
                continue
            worst = max(worst, abs(float(x) - float(y)) / max(1.0, abs(float(y))))
    return worst


def _coef_diff(got: list[tuple], want: list[tuple]) -> float:
    """Largest absolute coefficient difference between two fits (terms by column name)."""
    g = {str(t).split(".")[-1]: float(c) for t, c in got}
    w = {str(t).split(".")[-1]: float(c) for t, c in want}
    return max(abs(g[k] - w[k]) for k in w)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=_ints, default=[100_000, 1_000_000])
    ap.add_argument("--query", default="sum", choices=("sum", "lasso", "group", "minmax", "median"))
    ap.add_argument("--features", type=_features, default=(2, 2))
    ap.add_argument("--workdir", default=None, help="where the Parquet files and the parties' "
                    "DuckDB files go (default: a temporary directory, removed at the end)")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--spill-rows", type=lambda v: int(float(v)), default=None)
    ap.add_argument("--spill-dir", default=None)
    ap.add_argument("--load", choices=("api", "direct"), default=None,
                    help="api: register through the API; direct: write the parties' DuckDB "
                    "files before their servers start (default from 2e7 rows)")
    args = ap.parse_args(argv)
    d_ac, d_emc = args.features
    if args.query == "lasso":
        sql = query_sql("lasso", d_ac, d_emc)
    else:
        sql = query_sql(args.query, d_ac, d_emc)
    os.environ["MPCSQL_PHASE_RSS"] = "1"  # the sessions report their peak memory per phase
    if args.spill_rows is not None:
        os.environ["MPCSQL_SPILL_ROWS"] = str(args.spill_rows)  # the party servers inherit it
    if args.spill_dir:
        os.makedirs(args.spill_dir, exist_ok=True)
        os.environ["MPCSQL_SPILL_DIR"] = args.spill_dir
    base = args.workdir or tempfile.mkdtemp(prefix="mpcsql-scale-")
    os.makedirs(base, exist_ok=True)
    start = (time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()[0])
    results = []
    try:
        for n in args.rows:
            paths = make_tables(base, n, d_ac, d_emc)
            want, plain_s = plain(paths, sql, args.query, d_ac, d_emc)
            fed_dir = os.path.join(base, f"parties_{n}")
            # no NULLs: declared, so the program computes no validity bits
            decl = {"ac": {"domains": {"g": {"min": 0, "max": 9}},
                           "not_null": ["y", "g"] + [f"a{j + 1}" for j in range(d_ac)]},
                    "emc": {"not_null": [f"e{j + 1}" for j in range(d_emc)]}}
            direct = args.load == "direct" or (args.load is None and n >= 20_000_000)
            if direct:
                load_direct(fed_dir, paths, decl)
            with engine.connect(workdir=fed_dir, query_timeout=args.timeout) as con:
                if not direct:
                    for t in ("ac", "emc"):
                        con.register(t, paths[t], party=t, key="id", **decl[t])
                for p in paths.values():
                    os.remove(p)
                load0 = os.getloadavg()
                r = run_one(con, paths, sql)
            shutil.rmtree(fed_dir, ignore_errors=True)
            r.update(n=n, plain_seconds=plain_s, load_mode="direct" if direct else "api",
                     want=want, load=(load0, os.getloadavg()),
                     diff=_same(r["rows"], want) if args.query != "lasso"
                     else _coef_diff(r["rows"], want))
            results.append(r)
            _print(r, sql)
    finally:
        if args.workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n{machine_note(start)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


def _print(r: dict, sql: str) -> None:
    stats = r["stats"]
    names = ordered_phases({n for p in PARTIES for n in ((stats.get(p) or {}).get("phases")
                                                         or {})})
    print(f"\n## {r['n']:,} rows per party: {sql}")
    spilled = "/".join(f"{(stats.get(p) or {}).get('spill_bytes', 0) / 1e6:.0f}" for p in PARTIES)
    print(f"tables loaded by {r.get('load_mode', 'api')}; spill MB written ac/emc/helper: "
          f"{spilled}")
    print(f"load average {r['load'][0][0]:.1f} -> {r['load'][1][0]:.1f}; "
          f"total {stats.get('total_seconds', r['wall']):.1f} s (wall {r['wall']:.1f} s); "
          f"DuckDB {r['plain_seconds']:.2f} s; max diff vs DuckDB (rel.; LASSO: abs. vs "
          f"scikit-learn): {r['diff']}")

    def cell(p: str, key: str, name: str, fmt: str) -> str:
        v = ((stats.get(p) or {}).get(key) or {}).get(name)
        return "–" if v is None else format(v, fmt)

    rows = [[n, "/".join(cell(p, "phases", n, ".1f") for p in PARTIES),
             "/".join(cell(p, "phase_peak_mb", n, ".0f") for p in PARTIES)]
            for n in names + ["wait for peers"]]
    print(markdown(["phase", "s ac/emc/helper", "peak MB ac/emc/helper"], rows))
    rows = []
    for p in PARTIES:
        s = stats.get(p, {}) or {}
        rows.append([p, f"{r['server_peak_mb'][p]:.0f}", f"{s.get('peak_rss_mb', 0):.0f}",
                     f"{s.get('cpu_seconds', 0):.1f}",
                     f"{sum((s.get('bytes_sent') or {}).values()) / 1e6:.1f}"])
    print(markdown(["party", "server peak MB", "session peak MB", "session CPU s", "sent MB"],
                   rows))


if __name__ == "__main__":
    sys.exit(main())
