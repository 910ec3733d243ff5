"""DuckDB's own aggregate test cases through the embedded federation: equal / refused / wrong.

Reads the 148 single-table cases of ``../shared/data/duckdb-aggregate-cases/`` (``cases.json``:
each case's table, query over table ``t`` and DuckDB 2.0.1's answer; see that folder's
README.md), starts one embedded federation for the whole run, and for every case

1. materialises the case's table in a scratch DuckDB file with its exact DuckDB column types
   (as the folder's ``verify.py`` does) and registers it as ``t`` at data party ``ac`` (from
   the DuckDB file, so the types survive; no key column: a query over one party's table needs
   none, and the key exists only for joins), declaring the domain of every VARCHAR or integer
   column with at most ``MAX_GROUPS`` distinct values (its sorted distinct values: what the
   data owner declares so that the column can be a GROUP BY key; ``--no-domains`` declares
   none);
2. runs ``SET join_protocol = '<protocol>'; <sql>`` through ``Connection.execute``;
3. compares the rows with the case's ``expected`` (in order if the case is ``ordered``,
   otherwise as multisets) and, on the same table in the same run, times DuckDB's own answer.

Each case prints one line: ``equal``, ``refused`` (the error class and the first line of its
message) or ``WRONG`` (expected vs got), then a summary with the counts, the percentage equal,
the wall time and DuckDB's time on the same data.  The exit status is 1 if any case is wrong.

Tolerance (documented in ``same``): NULL equals only NULL; columns whose expected DuckDB type is
an integer type (counts, integer sums) must be exactly equal; DECIMAL, FLOAT and DOUBLE values
are equal when ``math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-6)``, since the engine
computes in fixed point (32 fractional bits) and returns DOUBLE.  Booleans and strings compare
with ``==``.  Policies: every party ``min_intersection = 0`` (DuckDB answers empty tables).

Usage::

    python -m bench.duckdb_cases [--limit N] [--protocol masked|paillier] [--json]
                                 [--cases DIR] [--no-domains]
"""

from __future__ import annotations

import argparse
import decimal
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

if __package__ in (None, ""):  # python bench/duckdb_cases.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import duckdb  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CASES = os.path.join("..", "shared", "data", "duckdb-aggregate-cases")
POLICIES = {p: {"min_intersection": 0} for p in ("ac", "emc", "helper")}
PARTY = "ac"
REL_TOL = 1e-9
ABS_TOL = 1e-6
INTEGER_TYPES = frozenset({
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT",
})


# --- reading the cases (as verify.py does) ---------------------------------------------------


def base_type(ty: str) -> str:
    return ty.upper().split("(")[0].strip()


def typed(value: Any, ty: str) -> Any:
    if value is None:
        return None
    if base_type(ty) == "DECIMAL":
        return value if isinstance(value, decimal.Decimal) else decimal.Decimal(value)
    if base_type(ty) in ("FLOAT", "DOUBLE", "REAL"):
        return float(value)
    return value


def load_cases(folder: str) -> list[dict[str, Any]]:
    """The cases of ``folder/cases.json`` with DECIMALs exact and doubles as floats."""
    with open(os.path.join(folder, "cases.json")) as f:
        cases = json.load(f, parse_float=decimal.Decimal)
    for c in cases:
        tys = list(c["columns"].values())
        c["rows"] = [[typed(v, ty) for v, ty in zip(r, tys, strict=True)] for r in c["rows"]]
        c["expected"] = [[typed(v, ty) for v, ty in zip(r, c["expected_types"], strict=True)]
                         for r in c["expected"]]
    return cases


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def materialise(con: duckdb.DuckDBPyConnection, case: dict[str, Any]) -> None:
    """Create table ``t`` of ``case`` in ``con`` with its DuckDB column types."""
    cols = ", ".join(_ident(n) + " " + ty for n, ty in case["columns"].items())
    con.execute("DROP TABLE IF EXISTS t")
    con.execute(f"CREATE TABLE t ({cols})")
    if case["rows"]:
        marks = ", ".join("?" * len(case["columns"]))
        con.executemany(f"INSERT INTO t VALUES ({marks})", case["rows"])


# --- comparison ------------------------------------------------------------------------------


def same(got: Any, exp: Any, ty: str) -> bool:
    """One value: NULL == NULL only; integer types exact; DECIMAL/FLOAT/DOUBLE within
    rel 1e-9 or abs 1e-6; booleans and strings by ``==``."""
    if got is None or exp is None:
        return got is None and exp is None
    if isinstance(exp, (bool, str)) or isinstance(got, (bool, str)):
        return got == exp
    if base_type(ty) in INTEGER_TYPES:
        return got == exp  # int == int, or an integral float exactly equal
    try:
        g, e = float(got), float(exp)
    except (TypeError, ValueError, OverflowError):
        return False
    return math.isclose(g, e, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def _sort_key(row: list[Any]) -> list[tuple]:
    out = []
    for v in row:
        if v is None:
            out.append((1, "", 0.0))
        elif isinstance(v, (str, bool)):
            out.append((0, type(v).__name__, v))
        else:
            out.append((0, "n", float(v)))
    return out


def rows_match(got: list[list[Any]], exp: list[list[Any]], types: list[str],
               ordered: bool) -> bool:
    if len(got) != len(exp):
        return False
    if any(len(g) != len(types) for g in got):
        return False
    if not ordered:
        got, exp = sorted(got, key=_sort_key), sorted(exp, key=_sort_key)
    return all(same(x, y, t) for g, e in zip(got, exp, strict=True)
               for x, y, t in zip(g, e, types, strict=True))


# --- running ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    id: str
    sql: str
    status: str  # equal | refused | wrong
    error_class: str | None = None
    message: str | None = None
    expected: list[list[Any]] = field(default_factory=list)
    got: list[list[Any]] | None = None
    register_seconds: float = 0.0
    secure_seconds: float = 0.0  # the query alone (registration not counted)
    duckdb_seconds: float = 0.0
    tags: list[str] = field(default_factory=list)

    def line(self) -> str:
        if self.status == "equal":
            return f"{self.id}  equal    {self.secure_seconds:6.2f}s  {self.sql}"
        if self.status == "refused":
            return f"{self.id}  refused  {self.error_class}: {self.message}  [{self.sql}]"
        return (f"{self.id}  WRONG    {self.sql}\n    expected {_show(self.expected)}\n"
                f"    got      {_show(self.got)}")


def _show(rows: Any) -> str:
    return repr(rows)


def _plain(v: Any) -> Any:
    """JSON-friendly value (DECIMAL as its exact string, ints that big as strings)."""
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**53:
        return str(v)
    return v


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def domains(case: dict[str, Any]) -> dict[str, list[Any]]:
    """The declared domains of ``case``'s table: each VARCHAR or integer column's distinct
    non-NULL values (sorted), if there are at most ``MAX_GROUPS`` of them."""
    from planner.physical import MAX_GROUPS

    out = {}
    for j, (name, ty) in enumerate(case["columns"].items()):
        if base_type(ty) not in INTEGER_TYPES and base_type(ty) != "VARCHAR":
            continue
        values = sorted({r[j] for r in case["rows"] if r[j] is not None})
        if values and len(values) <= MAX_GROUPS:
            out[name] = values
    return out


def prepare(case: dict[str, Any], path: str) -> float:
    """Materialise the case's table, time DuckDB's own answer on it (one thread), and copy the
    table with its exact types into the DuckDB file ``path`` (what the party registers)."""
    con = duckdb.connect()
    try:
        con.execute("SET threads=1")
        materialise(con, case)
        t0 = time.perf_counter()
        con.execute(case["sql"]).fetchall()
        seconds = time.perf_counter() - t0
        con.execute(f"ATTACH '{path}' AS out")
        con.execute("CREATE TABLE out.t AS SELECT * FROM t")
        con.execute("DETACH out")
        return seconds
    finally:
        con.close()


def run_case(con: Any, case: dict[str, Any], protocol: str, scratch: str,
             declare: bool = True) -> Outcome:
    out = Outcome(id=case["id"], sql=" ".join(case["sql"].split()), status="refused",
                  expected=case["expected"], tags=list(case.get("tags", [])))
    path = os.path.join(scratch, f"{case['id']}.duckdb")
    out.duckdb_seconds = prepare(case, path)
    sql = f"SET join_protocol = '{protocol}'; {case['sql']}"
    try:
        t0 = time.perf_counter()
        con.register("t", path, party=PARTY, table="t",
                     domains=domains(case) if declare else None)
        out.register_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = [list(r) for r in con.execute(sql).fetchall()]
    except Exception as e:  # noqa: BLE001 - every refusal is reported with its class
        out.secure_seconds = time.perf_counter() - t0
        out.error_class, out.message = type(e).__name__, first_line(e)
        return out
    finally:
        os.unlink(path)
    out.secure_seconds = time.perf_counter() - t0
    out.got = got
    ok = rows_match(got, case["expected"], case["expected_types"], case["ordered"])
    out.status = "equal" if ok else "wrong"
    return out


def summarise(outcomes: list[Outcome], wall: float, start: float) -> dict[str, Any]:
    n = len(outcomes)
    by = {s: [o for o in outcomes if o.status == s] for s in ("equal", "refused", "wrong")}
    classes: dict[str, int] = {}
    for o in by["refused"]:
        classes[o.error_class or "?"] = classes.get(o.error_class or "?", 0) + 1
    return {
        "cases": n,
        "equal": len(by["equal"]),
        "refused": len(by["refused"]),
        "wrong": len(by["wrong"]),
        "equal_percent": round(100.0 * len(by["equal"]) / n, 1) if n else 0.0,
        "refused_by_class": dict(sorted(classes.items(), key=lambda kv: -kv[1])),
        "wall_seconds": round(wall, 2),
        "federation_start_seconds": round(start, 2),
        "register_seconds_all": round(sum(o.register_seconds for o in outcomes), 3),
        "secure_seconds_all": round(sum(o.secure_seconds for o in outcomes), 3),
        "secure_seconds_equal": round(sum(o.secure_seconds for o in by["equal"]), 3),
        "duckdb_seconds_all": round(sum(o.duckdb_seconds for o in outcomes), 4),
        "duckdb_seconds_equal": round(sum(o.duckdb_seconds for o in by["equal"]), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.duckdb_cases", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=DEFAULT_CASES,
                    help="folder with cases.json (relative paths are from the repository root; "
                         "default %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="run only the first N cases")
    ap.add_argument("--protocol", choices=("masked", "paillier"), default="masked",
                    help="join_protocol set before each query (default %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead")
    ap.add_argument("--no-domains", action="store_true",
                    help="declare no column domains (GROUP BY is then refused)")
    args = ap.parse_args(argv)

    folder = args.cases if os.path.isabs(args.cases) else os.path.join(REPO, args.cases)
    folder = os.path.normpath(folder)
    if not os.path.isfile(os.path.join(folder, "cases.json")):
        print(f"no cases.json in {folder}", file=sys.stderr)
        return 2
    cases = load_cases(folder)
    if args.limit is not None:
        cases = cases[: max(0, args.limit)]

    import engine

    t_wall = time.perf_counter()
    con = engine.connect(policies=POLICIES)
    t_start = time.perf_counter() - t_wall
    outcomes: list[Outcome] = []
    try:
        with tempfile.TemporaryDirectory(prefix="mpcsql-duckdb-cases-") as scratch:
            for case in cases:
                o = run_case(con, case, args.protocol, scratch, not args.no_domains)
                outcomes.append(o)
                if not args.json:
                    print(o.line(), flush=True)
    finally:
        con.close()
    wall = time.perf_counter() - t_wall
    s = summarise(outcomes, wall, t_start)
    s.update(protocol=args.protocol, cases_folder=folder, domains=not args.no_domains,
             tolerance={"integer types": "exact", "DECIMAL/FLOAT/DOUBLE":
                        f"rel {REL_TOL:g} or abs {ABS_TOL:g}", "NULL": "equals only NULL"})
    if args.json:
        doc = {"summary": s, "cases": [
            {k: ([[_plain(v) for v in r] for r in val] if k in ("expected", "got") and val
                 else val) for k, val in asdict(o).items()} for o in outcomes]}
        print(json.dumps(doc, indent=1))
    else:
        print()
        print(f"{s['cases']} cases ({args.protocol}): {s['equal']} equal "
              f"({s['equal_percent']} %), {s['refused']} refused, {s['wrong']} wrong")
        print("refused by class: " + ", ".join(f"{k} {v}" for k, v in
                                               s["refused_by_class"].items()))
        print(f"wall {s['wall_seconds']:.1f} s (federation start "
              f"{s['federation_start_seconds']} s, registering tables "
              f"{s['register_seconds_all']:.1f} s); secure queries {s['secure_seconds_all']:.2f} s"
              " in all, "
              f"{s['secure_seconds_equal']:.2f} s for the equal ones; DuckDB on the same data "
              f"{s['duckdb_seconds_all']:.4f} s in all, {s['duckdb_seconds_equal']:.4f} s "
              "for the equal ones")
        for o in outcomes:
            if o.status == "wrong":
                print("WRONG: " + o.line())
    return 1 if s["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
