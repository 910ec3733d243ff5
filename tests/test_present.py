"""Presentation of opened rows (engine.protocols.present): types, ORDER BY, LIMIT, OFFSET.

Compared with DuckDB on the same rows: ``ORDER BY <keys>, <domain position>`` (the position
makes DuckDB's unspecified tie order the domain order that present keeps).
"""

from __future__ import annotations

import math
import random

import duckdb
import numpy as np
import pytest

from dialect.errors import InternalError
from engine.protocols.present import limit_rows, order_rows, present, typed_value
from planner.physical import Group, OrderKey, Program
from planner.plan import OutputColumn

OUTPUT = (OutputColumn("region", "VARCHAR"), OutputColumn("smoker", "BOOLEAN"),
          OutputColumn("n", "BIGINT"), OutputColumn("s", "HUGEINT"), OutputColumn("a", "DOUBLE"))


def program(order=(), limit=None, offset=0) -> Program:
    return Program(local=(), rows=(), slots=(), groups=(Group((), ()),), finish=(), outputs=(),
                   present=None, order=tuple(order), limit=limit, offset=offset)


def _rows(rng: random.Random, n: int) -> list[tuple]:
    def pick(values):
        return rng.choice(values + [None])

    return [(pick(["north", "south", "East", "é"]), pick([True, False]), pick([0, 1, 2, 3]),
             pick([-(2**70), 5, 2**70]), pick([-1.5, 0.0, 2.25, float("nan")]))
            for _ in range(n)]


def _duckdb(rows: list[tuple], order: list[OrderKey], limit, offset) -> list[tuple]:
    con = duckdb.connect()
    con.execute("CREATE TABLE r (region VARCHAR, smoker BOOLEAN, n BIGINT, s HUGEINT, "
                "a DOUBLE, pos INTEGER)")
    if rows:
        con.executemany("INSERT INTO r VALUES (?, ?, ?, ?, ?, ?)",
                        [list(r) + [i] for i, r in enumerate(rows)])
    names = [c.name for c in OUTPUT]
    keys = [names[k.output] + (" DESC" if k.descending else "")
            + ("" if k.nulls_first is None else
               " NULLS FIRST" if k.nulls_first else " NULLS LAST") for k in order]
    sql = f"SELECT {', '.join(names)} FROM r ORDER BY {', '.join(keys + ['pos'])}"
    if limit is not None:
        sql += f" LIMIT {limit}"
    if offset:
        sql += f" OFFSET {offset}"
    return con.execute(sql).fetchall()


def _same(a: list[tuple], b: list[tuple]) -> bool:
    def norm(v):
        return "NaN" if isinstance(v, float) and math.isnan(v) else v

    return [tuple(map(norm, r)) for r in a] == [tuple(map(norm, r)) for r in b]


@pytest.mark.parametrize("seed", range(40))
def test_ordering_matches_duckdb(seed):
    rng = random.Random(seed)
    rows = _rows(rng, rng.randint(0, 12))
    order = [OrderKey(i, rng.random() < 0.5, rng.choice([None, True, False]))
             for i in rng.sample(range(len(OUTPUT)), rng.randint(1, 3))]
    limit = rng.choice([None, 0, 1, 3, 20])
    offset = rng.choice([0, 0, 1, 4])
    got = present(rows, program(order, limit, offset), OUTPUT)
    assert _same(got, _duckdb(rows, order, limit, offset)), (order, limit, offset)


def test_nulls_last_by_default_in_both_directions():
    rows = [(None,), (2,), (1,)]
    assert order_rows(rows, [OrderKey(0)]) == [(1,), (2,), (None,)]
    assert order_rows(rows, [OrderKey(0, descending=True)]) == [(2,), (1,), (None,)]
    assert order_rows(rows, [OrderKey(0, nulls_first=True)]) == [(None,), (1,), (2,)]
    assert order_rows(rows, [OrderKey(0, True, True)]) == [(None,), (2,), (1,)]


def test_ties_keep_the_domain_order():
    rows = [("a", 1), ("b", 2), ("c", 1), ("d", 2), ("e", None), ("f", None)]
    assert order_rows(rows, [OrderKey(1)]) == [rows[0], rows[2], rows[1], rows[3], rows[4],
                                               rows[5]]
    assert order_rows(rows, [OrderKey(1, descending=True)]) == [rows[1], rows[3], rows[0],
                                                                rows[2], rows[4], rows[5]]


def test_without_order_by_rows_stay_in_domain_order_and_limit_applies():
    rows = [("z", None, 1, 2, 0.5), ("a", True, 3, 4, 1.5)]
    assert present(rows, program(), OUTPUT) == rows
    assert present(rows, program(limit=1), OUTPUT) == rows[:1]
    assert present(rows, program(limit=5, offset=1), OUTPUT) == rows[1:]
    assert present(rows, program(offset=2), OUTPUT) == []
    assert limit_rows(list(rows), 0) == []
    with pytest.raises(InternalError):
        limit_rows(list(rows), -1)


def test_values_take_their_output_types():
    rows = [(np.str_("north"), np.bool_(True), np.int64(3), 2**100, np.float64(2.5)),
            (None, None, 4.0, None, 3)]
    got = present(rows, program(), OUTPUT)
    assert got == [("north", True, 3, 2**100, 2.5), (None, None, 4, None, 3.0)]
    assert [type(v) for v in got[0]] == [str, bool, int, int, float]
    assert type(got[1][2]) is int and type(got[1][4]) is float
    assert typed_value(1, "INTEGER") == 1 and typed_value(2, "DECIMAL(18,3)") == 2.0
    with pytest.raises(InternalError, match="2 values for 5 columns"):
        present([(1, 2)], program(), OUTPUT)


def _quantile_program(kind: str, bits: int, order=(), hidden: bool = False) -> Program:
    from planner.physical import Output, Slot

    outs = (Output("q", "DECIMAL(4,1)", value="s"),) + (
        (Output("k", "INTEGER", key=0, hidden=True),) if hidden else ())
    return Program(local=(), rows=(), slots=(Slot("s", kind, ("w",), bits, value="x",
                                                  q=0.25 if kind == "quantile" else None),),
                   groups=(Group((1,), ("w",)), Group((2,), ("w2",))), finish=(), outputs=outs,
                   present=None, order=tuple(order))


def test_decimal_quantile_is_truncated_toward_zero_as_duckdb():
    out = (OutputColumn("q", "DECIMAL(4,1)"),)
    con = duckdb.connect()
    for lo, hi in [(24.7, 24.8), (-24.8, -24.7), (-0.1, 0.0), (-0.1, 0.2), (49.4, 49.6)]:
        want = con.execute("SELECT QUANTILE_CONT(d, 0.25)::DOUBLE FROM (VALUES (?::DECIMAL(4,1)), "
                           "(?::DECIMAL(4,1))) v(d)", [lo, hi]).fetchone()[0]
        exact = lo + 0.25 * (hi - lo)
        for err in (0.0, 3e-8, -3e-8):  # within the engine's error at bound 2^7
            got = present([(exact + err,)], _quantile_program("quantile", 7), out)
            assert got == [(want,)], (lo, hi, err)
    # A multiple of the scale computed a little low is snapped, not truncated one unit down.
    assert present([(49.5 - 2e-8,)], _quantile_program("quantile", 7), out) == [(49.5,)]
    # MIN/MAX of a DECIMAL are rounded to the scale; other DECIMAL outputs are plain floats.
    assert present([(24.70000003,)], _quantile_program("min", 7), out) == [(24.7,)]
    assert present([(24.75,)], program(), out) == [(24.75,)]


def test_hidden_key_outputs_sort_and_are_dropped():
    out = (OutputColumn("q", "DECIMAL(4,1)"),)
    p = _quantile_program("quantile", 7, order=[OrderKey(1, descending=True)], hidden=True)
    assert present([(1.0, 1), (2.0, 2)], p, out) == [(2.0,), (1.0,)]
    with pytest.raises(InternalError, match="returned outputs"):
        present([(1.0, 1)], p, out + out)


def test_float_outputs_are_single_precision():
    got = present([(0.1,)], program(), (OutputColumn("f", "FLOAT"),))[0][0]
    assert got == float(np.float32(0.1)) and typed_value(1e39, "FLOAT") == math.inf
