"""A plaintext reference evaluator of a physical Program (numpy and DuckDB, no MPC).

``evaluate(plan, tables)`` runs a program plan the way the secure engine must, but in the
clear: each party's local columns in DuckDB on its table (the exact SQL of the plan), the
private join as a plain inner join on the keys, the row program in numpy, the slots per
group, the finish program vectorised over the groups (exact ops on ``Fraction``), then the
outputs of the present groups with their NULL / NaN / infinity bits and transforms, ordered
and limited.  Its answer must equal DuckDB's on the plaintext join (tests/test_lower.py), and
the MPC engine's answer must equal its answer within the fixed-point error (engine tests).
"""

from __future__ import annotations

import decimal
import functools
import math
from fractions import Fraction
from typing import Any

import duckdb
import numpy as np

from planner.physical import FinishOp, Output, Program
from planner.plan import Plan, PrivateJoin


class BoundError(AssertionError):
    """A value exceeds the public bound the planner gave it (a planner bug)."""


def _rows_bits(m: int) -> int:
    return math.ceil(math.log2(m + 1)) if m > 0 else 0


def _check(name: str, values: Any, bits: int, rows_pow: int, m: int) -> None:
    limit = 2.0 ** (bits + rows_pow * _rows_bits(m))
    worst = max((abs(float(v)) for v in values), default=0.0)
    if worst > limit * (1 + 1e-12):
        raise BoundError(f"{name}: |value| {worst:g} exceeds its bound 2^{bits}"
                         + (f" * (m+1)^{rows_pow}" if rows_pow else "") + f" (m = {m})")


class FilterTooSmall(Exception):  # noqa: N818 (a refusal, as the engine's PolicyError)
    """The rows the WHERE leaves are fewer than ``min_intersection``."""


def local_values(plan: Plan, tables: dict[str, Any]) -> tuple[int, dict[str, np.ndarray]]:
    """The joined rows' local columns: (m, {column name: values}).

    ``tables`` maps table names to DataFrames, or is a DuckDB connection holding the tables.
    """
    own = not isinstance(tables, duckdb.DuckDBPyConnection)
    con = duckdb.connect() if own else tables
    per_party = []
    for scan in plan.scans:
        if own:
            con.register(f"_{scan.table}", tables[scan.table])
            con.execute(f'CREATE TABLE "{scan.table}" AS SELECT * FROM "_{scan.table}"')
        exprs = [f'{c.sql} AS "{c.name}"' for c in scan.local]
        key = [f'"{scan.key}" AS _key'] if scan.key else []
        select = ", ".join(key + exprs) or "1 AS _one"
        rows = con.execute(f'SELECT {select} FROM "{scan.table}"').fetchnumpy()
        per_party.append((scan, rows))
    if isinstance(plan.source, PrivateJoin):
        (ls, left), (rs, right) = per_party
        where = {k: i for i, k in enumerate(right["_key"].tolist())}
        pairs = [(i, where[k]) for i, k in enumerate(left["_key"].tolist()) if k in where]
        li = np.array([p[0] for p in pairs], dtype=int)
        ri = np.array([p[1] for p in pairs], dtype=int)
        cols = {c.name: np.asarray(left[c.name], dtype=float)[li] for c in ls.local}
        cols |= {c.name: np.asarray(right[c.name], dtype=float)[ri] for c in rs.local}
        return len(pairs), cols
    (scan, rows) = per_party[0]
    m = len(next(iter(rows.values())))
    return m, {c.name: np.asarray(rows[c.name], dtype=float) for c in scan.local}


def _row_op(op: str, a: list[Any], m: int) -> np.ndarray:
    if op == "const":
        return np.full(m, float(a[0]))
    ops = {
        "add": lambda: a[0] + a[1], "sub": lambda: a[0] - a[1], "mul": lambda: a[0] * a[1],
        "neg": lambda: -a[0], "abs": lambda: np.abs(a[0]),
        "lt": lambda: (a[0] < a[1]) * 1.0, "le": lambda: (a[0] <= a[1]) * 1.0,
        "eq": lambda: (a[0] == a[1]) * 1.0, "ne": lambda: (a[0] != a[1]) * 1.0,
        "not": lambda: 1.0 - a[0], "and": lambda: a[0] * a[1],
        "or": lambda: np.maximum(a[0], a[1]),
        "select": lambda: np.where(a[0] != 0, a[1], a[2]),
    }
    return np.asarray(ops[op](), dtype=float)


def _quantile(values: np.ndarray, q: float) -> float:
    """DuckDB's QUANTILE_CONT: linear interpolation between the order statistics."""
    x = np.sort(values)
    if not len(x):
        return 0.0
    h = (len(x) - 1) * q
    lo, hi = math.floor(h), math.ceil(h)
    return float(x[lo] + (h - lo) * (x[hi] - x[lo]))


class Evaluation:
    """The values of every name of a program on the plaintext rows."""

    def __init__(self, program: Program, m: int, cols: dict[str, np.ndarray]):
        self.p, self.m = program, m
        self.vec: dict[str, np.ndarray] = dict(cols)
        for c in program.local:
            _check(c.name, cols[c.name], c.bits, 0, m)
            if c.indicator and not np.isin(cols[c.name], (0.0, 1.0)).all():
                raise BoundError(f"{c.name} ({c.text}) is not 0/1")
        for r in program.rows:
            args = r.args if r.op == "const" else [self.vec[x] for x in r.args]
            self.vec[r.out] = _row_op(r.op, list(args), m)
            if r.op not in ("lt", "le", "eq", "ne"):  # a comparison's bits are its bit length
                _check(r.out, self.vec[r.out], r.bits, 0, m)
        self.slots = {s.name: s for s in program.slots}
        self.slot_values: dict[str, np.ndarray] = {}
        self.exact_slots: dict[str, list[Fraction]] = {}

    def product(self, names: tuple[str, ...]) -> np.ndarray:
        out = np.ones(self.m)
        for n in names:
            out = out * self.vec[n]
        return out

    def slot(self, name: str, *, exact: bool = False, groups: bool = True) -> Any:
        cache = self.exact_slots if exact else self.slot_values
        if groups and name in cache:
            return cache[name]
        s = self.slots[name]
        gs = self.p.groups if groups else (self.p.groups[0].__class__((), ()),)
        out = []
        for g in gs:
            w = self.product(s.factors) * self.product(g.indicators)
            if s.kind == "sum":
                if exact:
                    fs = [self.vec[n] for n in s.factors + g.indicators]
                    out.append(sum((math.prod((Fraction(float(f[i])) for f in fs),
                                              start=Fraction(1)) for i in range(self.m)),
                                   Fraction(0)))
                else:
                    out.append(math.fsum(w))
                continue
            vals = self.vec[s.value][w == 1.0]
            if s.kind == "quantile":
                out.append(_quantile(vals, s.q))
            elif not len(vals):
                out.append(0.0)
            else:
                out.append(float(vals.min() if s.kind == "min" else vals.max()))
        res = out if exact else np.array(out, dtype=float)
        _check(name, res, s.bits, s.rows_pow, self.m)
        if groups:
            cache[name] = res
        return res


def _finish(ev: Evaluation, min_group_rows: int) -> dict[str, Any]:
    """Every finish op's values over the groups (exact ops as lists of Fraction)."""
    g = len(ev.p.groups)
    val: dict[str, Any] = {}
    for f in ev.p.finish:
        val[f.out] = _finish_op(ev, f, val, g, min_group_rows)
        _check(f.out, val[f.out], f.bits, f.rows_pow, ev.m)
        if f.exact_unit is not None:
            ints = [v / Fraction(2) ** f.exact_unit for v in val[f.out]]
            _check(f"{f.out} (exact integer)", ints,
                   126, 0, ev.m)
        if f.op == "div" and f.floor_bits is not None and f.floor_bits <= 0 \
                and not f.floor_rows_pow:
            den = val[f.args[1]]
            small = [d for d in np.asarray(den, dtype=float) if d and abs(d) < 2.0**f.floor_bits]
            if small:
                raise BoundError(f"{f.out}: denominator {small[0]:g} below its floor "
                                 f"2^{f.floor_bits}")
    return val


def _finish_op(ev: Evaluation, f: FinishOp, val: dict[str, Any], g: int, mgr: int) -> Any:
    exact = f.exact_unit is not None
    if f.op == "slot":
        return ev.slot(f.args[0], exact=exact)
    if f.op == "const":
        v = f.args[0]
        if f.out == ev.p.min_group_rows_const:
            v = float(min(max(1, mgr), ev.m + 1))
        return [Fraction(v)] * g if exact else np.full(g, float(v))
    a = [val[x] for x in f.args]
    if exact:
        ops = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
               "neg": lambda x: -x}
        return [ops[f.op](*xs) for xs in zip(*a, strict=True)]
    a = [np.array([float(x) for x in v]) if isinstance(v, list) else v for v in a]
    if f.op == "div":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a[1] != 0, a[0] / np.where(a[1] != 0, a[1], 1.0), 0.0)
    if f.op == "is_zero":
        return (a[0] == 0) * 1.0
    return _row_op(f.op, a, g)


def _transform(o: Output, v: float) -> Any:
    if o.transform == "sqrt":
        v = math.sqrt(max(v, 0.0))
    elif o.transform == "signed_sqrt":
        v = math.copysign(math.sqrt(abs(v)), v)
    elif o.transform == "odds":
        v = math.copysign(math.inf, v) if abs(v) >= 1 else v / (1 - abs(v))
    elif o.transform == "integer":
        return int(math.copysign(math.floor(abs(v) + 0.5), v))
    return v * o.scale


def typed(dtype: str, v: Any) -> Any:
    """A result value as DuckDB types it: DECIMAL(p, s) truncated to s digits (DuckDB's
    QUANTILE_CONT of a DECIMAL truncates toward zero); other types unchanged."""
    base = dtype.upper().split("(")[0].strip()
    if base != "DECIMAL" or not isinstance(v, float) or not math.isfinite(v):
        return v
    scale = int(dtype.split(",")[1].rstrip(") ")) if "," in dtype else 3
    near = decimal.Decimal(repr(round(v, scale + 6)))
    return near.quantize(decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_DOWN)


def _value(ev: Evaluation, val: dict[str, Any], o: Output, i: int) -> Any:
    def bit(name: str | None) -> bool:
        return bool(name) and float(val[name][i]) != 0.0

    if bit(o.null):
        return None
    if bit(o.nan):
        return math.nan
    v = val[o.value][i] if o.value in val else ev.slot(o.value)[i]
    if bit(o.inf):
        return math.copysign(math.inf, float(v))
    if isinstance(v, Fraction) and v.denominator == 1:
        return int(v) if o.transform in ("identity", "integer") else _transform(o, float(v))
    return _transform(o, float(v))


def _order_key(program: Program):
    def cmp(a: tuple, b: tuple) -> int:
        for k in program.order:
            x, y = a[k.output], b[k.output]
            if x is None or y is None:
                if x is None and y is None:
                    continue
                first = bool(k.nulls_first)  # DuckDB's default: NULLS LAST
                return (-1 if first else 1) if x is None else (1 if first else -1)
            kx = (1, 0.0) if isinstance(x, float) and math.isnan(x) else (0, x)
            ky = (1, 0.0) if isinstance(y, float) and math.isnan(y) else (0, y)
            if kx != ky:
                c = -1 if kx < ky else 1
                return -c if k.descending else c
        return 0
    return functools.cmp_to_key(cmp)


def evaluate(plan: Plan, tables: Any, *, min_group_rows: int = 1,
             min_intersection: int = 0) -> list[tuple]:
    """The result rows of a program plan on plaintext ``tables`` ({table name: DataFrame}, or a
    DuckDB connection holding them)."""
    program = plan.program
    assert program is not None, "not a program plan"
    m, cols = local_values(plan, tables)
    ev = Evaluation(program, m, cols)
    if program.filtered_count is not None:
        n = ev.slot(program.filtered_count, groups=False)[0]
        if n < min_intersection:
            raise FilterTooSmall(f"the WHERE leaves {n} rows")
    val = _finish(ev, min_group_rows)
    rows = []
    for i, g in enumerate(program.groups):
        if program.present is not None and float(val[program.present][i]) == 0.0:
            continue
        rows.append(tuple(g.key[o.key] if o.key is not None
                          else typed(o.dtype, _value(ev, val, o, i)) for o in program.outputs))
    if program.order:
        rows.sort(key=_order_key(program))
    shown = sum(not o.hidden for o in program.outputs)  # hidden keys: ORDER BY only
    rows = [r[:shown] for r in rows]
    end = None if program.limit is None else program.offset + program.limit
    return rows[program.offset:end]
