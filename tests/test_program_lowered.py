"""The MPC engine on lowered programs (planner.build.plan) against the plaintext reference
evaluator (tests/program_reference.py) and so DuckDB: every query of tests/test_lower.py and
generated ones, in MPyC's one-party runtime (the bit-sharing protocols simulate three parties).

Values agree exactly for counts, integer sums, MIN/MAX and NULL / NaN / infinity; otherwise
within 2^-18 relative to the larger of the value and 1, or (untransformed outputs) within
2^-30 of the output's public bound: the owners share each value rounded to 2^-33 of its own
bound, and a cancellation such as COVAR_POP of one row shows that rounding at the scale of
the bound.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from engine.protocols import runtime as mpcrt
from engine.protocols.present import present
from engine.protocols.program import linear, run_program
from engine.protocols.shares import ChunkedTable, SharedTable
from planner.build import plan
from tests.program_reference import FilterTooSmall, evaluate, local_values
from tests.test_lower import CATALOG, JOIN, QUERIES, generated, loaded, tables
from tests.test_program_mpc import Chan, encode

mpc = mpcrt.mpc
REL = 2.0**-18


class AllChan(Chan):
    """Every party of the catalog is MPyC's one party (receivers collapse to it)."""

    pids = {"ac": 0, "emc": 0, "helper": 0}

    async def reveal(self, label, x, receivers, **kw):
        return await super().reveal(label, x, None if receivers is None else [0], **kw)


def secure(p, data, *, min_group_rows: int = 1, min_rows: int = 0, chunk: int | None = None):
    """run_program on the joined local columns (shared as the owners would share them); with
    ``chunk``, as a :class:`ChunkedTable` of chunks of that many rows (as the masked join
    streams them)."""
    m, cols = local_values(p, data)
    sf = mpcrt.secfxp()
    order = [c for s in p.scans for c in s.local]
    table = None
    if m and order:
        ints = np.column_stack([encode(cols[c.name], c.bits).astype(object) % sf.field.order
                                for c in order])
        table = SharedTable.from_field_values(sf, ints)
        if chunk:
            table = _chunked(table, chunk)
    chan = AllChan(min_rows)
    rows = mpc.run(run_program(chan, p, p.program, m, table, sf, min_group_rows=min_group_rows))
    return present(rows, p.program, p.output)


def _chunked(whole: SharedTable, size: int) -> ChunkedTable:
    async def chunks():
        for a in range(0, whole.m, size):
            b = min(whole.m, a + size)
            yield SharedTable(whole.sectype, [c[:, a:b] for c in whole.columns], b - a)

    return ChunkedTable(whole.sectype, whole.m, len(whole.columns), chunks)


def bounds(p, m: int) -> list[float]:
    """Each output's public bound 2^(bits + rows_pow L) (0: none usable)."""
    L = math.ceil(math.log2(m + 1)) if m else 0
    ops = {f.out: f for f in p.program.finish} | {s.name: s for s in p.program.slots}
    out = []
    for o in p.program.outputs:
        op = ops.get(o.value) if o.value else None
        ok = op is not None and o.transform == "identity" and getattr(o, "scale", 1.0) == 1.0
        out.append(2.0 ** (op.bits + op.rows_pow * L) if ok else 0.0)
    return out


def close(a, b, bound: float = 0.0) -> bool:
    if a is None or b is None or isinstance(a, (str, bool)) or isinstance(b, (str, bool)):
        return a == b
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    if isinstance(b, int) and not isinstance(b, bool):
        return a == b
    if isinstance(b, float) and math.isinf(b):
        return a == b
    return abs(a - b) <= max(REL * max(1.0, abs(b)), 2.0**-30 * bound)


def check(sql: str, seed: int, chunk: int | None = None, **kw) -> None:
    p = plan(sql, CATALOG)
    # one DuckDB database holding the tables, read by the reference, the owners' shares and
    # the bounds (instead of one database each)
    with loaded(tables(seed)) as data:
        try:
            want = evaluate(p, data, **kw)
        except FilterTooSmall:
            return
        got = secure(p, data, chunk=chunk, **kw)
        bd = bounds(p, local_values(p, data)[0])
    assert len(got) == len(want), (sql, got, want)
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w) and all(close(a, b, t) for a, b, t in zip(g, w, bd,
                                                                          strict=True)), \
            (sql, g, w)


#: Products beyond the field's truncation range (operands shrunk first), divisions below the
#: planner's floor (CORR of tiny groups), one-row covariances (cancellation at the bound).
EXTRA = [
    "SELECT VAR_POP(ac.charges * emc.bmi), SUM(ac.charges * emc.bmi * ac.charges * emc.bmi), "
    "CORR(emc.bmi / 4, ac.charges * emc.bmi) FROM ac JOIN emc USING (id)",
    "SELECT emc.region, emc.children, CORR(ac.charges, ABS(emc.bmi - 30)) FROM ac JOIN emc "
    "USING (id) WHERE emc.bmi < 30 GROUP BY emc.region, emc.children",
    "SELECT ac.sex, emc.region, COVAR_POP(ac.charges * emc.bmi, ac.charges) FROM ac JOIN emc "
    "USING (id) WHERE ac.age > emc.bmi GROUP BY ac.sex, emc.region",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_lowered_queries(sql: str) -> None:
    check(sql, 0)


@pytest.mark.parametrize("sql, seed", [(EXTRA[0], 505), (EXTRA[1], 103), (EXTRA[2], 556)])
def test_lowered_edge_queries(sql: str, seed: int) -> None:
    check(sql, seed)


@pytest.mark.parametrize("chunk", range(2))
def test_generated_lowered_queries(chunk: int) -> None:
    rnd = random.Random(2000 + chunk)
    for i in range(15):
        check(generated(rnd), seed=100 + chunk * 15 + i)


@pytest.mark.parametrize("sql", QUERIES)
def test_lowered_queries_in_chunks(sql: str) -> None:
    """The same answers from a table streamed in chunks of 7 rows: row ops and slots chunk by
    chunk, or, for a linear program, from the table's column totals."""
    check(sql, 0, chunk=7)


def _check_chunked_with(kinds: set[str], sql: str, count: int, rnd: random.Random,
                        seed: int) -> None:
    """``sql``, then generated queries with a slot of one of ``kinds``, ``count`` in all, each
    checked from a table in chunks of 3 rows."""
    extra, done = [sql], 0
    while done < count:
        q = extra.pop() if extra else generated(rnd)
        if not kinds & {s.kind for s in plan(q, CATALOG).program.slots}:
            continue
        check(q, seed + done, chunk=3)
        done += 1


def test_min_max_in_chunks() -> None:
    """MIN and MAX stream too: each chunk's extremum and "empty" bit per group, then the
    extremum of those; chunks of 3 rows leave many groups empty in some chunks (and, with the
    FILTERs and WHERE, some groups empty in all).  Generated queries with a MIN or MAX."""
    _check_chunked_with({"min", "max"},
                        f"SELECT emc.region, ac.smoker, MIN(ac.age), MAX(emc.bmi * ac.age), "
                        f"MIN(emc.children) FILTER (WHERE ac.age > 60) {JOIN} "
                        f"WHERE ac.sex = 'male' GROUP BY emc.region, ac.smoker",
                        8, random.Random(77), 300)


def test_quantiles_in_chunks() -> None:
    """Quantiles stream too: each chunk's rows become packed bits, one radix selection over
    all of them at the end; chunks of 3 rows (not a multiple of 8: padded bytes).  Generated
    queries with a MEDIAN or QUANTILE_CONT."""
    _check_chunked_with({"quantile"},
                        f"SELECT emc.region, MEDIAN(ac.age), QUANTILE_CONT(emc.bmi * ac.age, "
                        f"0.9), MIN(ac.charges), MEDIAN(emc.children) FILTER (WHERE ac.age > "
                        f"40) {JOIN} WHERE ac.sex = 'male' GROUP BY emc.region",
                        6, random.Random(78), 400)


def test_linear_programs() -> None:
    """Plain sums of shared columns (NULLs folded into local columns and counts) are linear;
    a product of two parties' columns, WHERE and GROUP BY are not."""
    join = "FROM ac JOIN emc USING (id)"
    yes = [f"SELECT COUNT(*), SUM(ac.age), AVG(emc.bmi) {join}",
           f"SELECT SUM(age) / SUM(children), AVG(ac.age * ac.charges) {join}",
           f"SELECT VAR_POP(ac.age) {join}"]
    no = [f"SELECT SUM(ac.charges * emc.bmi) {join}",
          f"SELECT COUNT(*), SUM(ac.age) {join} WHERE emc.bmi > 30",
          f"SELECT region, SUM(charges) {join} GROUP BY region"]
    assert all(linear(plan(q, CATALOG).program) for q in yes)
    assert not any(linear(plan(q, CATALOG).program) for q in no)
