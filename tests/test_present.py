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
