"""Lowering LogicalQuery -> physical Program (no MPC): shapes, fusion, bounds, disclosures, and
the plaintext reference evaluator (tests/program_reference.py) against DuckDB on the join."""

from __future__ import annotations

import math
import os
import random

import duckdb
import numpy as np
import pandas as pd
import pytest

from dialect import parse_query
from dialect.errors import ProgrammingError
from planner.binder import Binder
from planner.build import plan
from planner.catalog import Catalog, ColumnSchema, Party, TableSchema
from planner.logical import BOOLEAN, NUMBER, AggCall, Call, Col, GroupKey, Lit, LogicalQuery
from planner.logical import SelectItem as Item
from planner.lower import check_size, lower, lower_program
from planner.physical import MAX_GROUPS, Program
from planner.plan import ColumnRef
from tests.program_reference import evaluate

AC = (ColumnSchema("id", "BIGINT"), ColumnSchema("age", "BIGINT", 7),
      ColumnSchema("charges", "DOUBLE", 16), ColumnSchema("smoker", "BOOLEAN", 0, (False, True)),
      ColumnSchema("sex", "VARCHAR", None, ("female", "male")))
EMC = (ColumnSchema("id", "BIGINT"), ColumnSchema("bmi", "DOUBLE", 6),
       ColumnSchema("region", "VARCHAR", None, ("ne", "nw", "se", "sw")),
       ColumnSchema("children", "BIGINT", 3, (0, 1, 2, 3, 4, 5)))
CATALOG = Catalog((Party("ac", "data", 0), Party("emc", "data", 1), Party("helper", "helper", 2)),
                  (TableSchema("ac", "ac", "id", AC), TableSchema("emc", "emc", "id", EMC)))
JOIN = "FROM ac JOIN emc USING (id)"


def program(sql: str) -> Program:
    return plan(sql, CATALOG).program


def logical(sql: str) -> LogicalQuery:
    return Binder(CATALOG, sql).bind_logical(parse_query(sql).select)


def tables(seed: int = 0, n: int = 60) -> dict[str, pd.DataFrame]:
    """Vertically partitioned tables with NULLs, negatives, ties; 2/3 of ac's ids in emc."""
    r = np.random.default_rng(seed)
    ids = r.permutation(200)[:n]
    ac = pd.DataFrame({
        "id": ids.astype("int64"),
        "age": r.integers(18, 65, n),
        "charges": r.choice([1000.5, 2000.0, -50.25, 31000.0, 12345.678], n) + r.integers(0, 3, n),
        "smoker": r.random(n) < 0.4,
        "sex": r.choice(["female", "male"], n)})
    emc_ids = np.concatenate([ids[: n * 2 // 3], np.arange(200, 200 + n // 3)])
    k = len(emc_ids)
    emc = pd.DataFrame({"id": emc_ids.astype("int64"), "bmi": np.round(r.uniform(15, 50, k), 1),
                        "region": r.choice(["ne", "nw", "se", "sw"], k),
                        "children": r.integers(0, 6, k)})
    types = {"age": "Int64", "charges": "Float64", "smoker": "boolean", "bmi": "Float64",
             "children": "Int64", "sex": object, "region": object}
    for df in (ac, emc):
        for c in df.columns[1:]:
            col = df[c].astype(object).where(r.random(len(df)) >= 0.12, None)
            df[c] = col.astype(types[c])
    return {"ac": ac, "emc": emc}


def loaded(data: dict[str, pd.DataFrame]) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB database holding ``data``'s tables."""
    con = duckdb.connect()
    for name, df in data.items():
        con.register(f"_{name}", df)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _{name}")
    return con


def duckdb_answer(sql: str, data: dict[str, pd.DataFrame]) -> list[tuple]:
    with loaded(data) as con:
        return con.execute(sql).fetchall()


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (str, bool)) or isinstance(b, (str, bool)):
        return a == b
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-7)


def _key(row: tuple) -> tuple:
    return tuple((x is None, str(x)) for x in row)


def check_against_duckdb(sql: str, seed: int = 0, ordered: bool = False) -> None:
    # one DuckDB database for both (the reference reads the tables, DuckDB answers the SQL):
    # a database and its tables per side were a third of the time of a generated query
    with loaded(tables(seed)) as con:
        got, want = evaluate(plan(sql, CATALOG), con), con.execute(sql).fetchall()
    if not ordered:
        got, want = sorted(got, key=_key), sorted(want, key=_key)
    assert len(got) == len(want), (sql, got, want)
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w) and all(same(x, y) for x, y in zip(g, w, strict=True)), \
            (sql, got, want)


# --- shapes of the program ----------------------------------------------------------------------


def test_count_sum_avg_without_where() -> None:
    p = program(f"SELECT COUNT(*), SUM(ac.age), AVG(ac.charges) {JOIN}")
    slots = {s.name: s for s in p.slots}
    count, total, avg = p.outputs
    assert slots[count.value].factors == () and slots[count.value].integral
    assert slots[count.value].rows_pow == 1 and slots[count.value].bits == 0
    assert count.null is None and count.transform == "integer"
    s = slots[total.value]  # SUM of integers: opened as the exact slot
    assert s.integral and s.bits == 7 and s.rows_pow == 1 and total.dtype == "HUGEINT"
    assert total.null is not None
    div = next(f for f in p.finish if f.out == avg.value)
    assert div.op == "div" and div.floor_bits == 0 and div.bits == 16 and div.rows_pow == 0
    assert p.filtered_count is None and p.present is None and p.rows == ()


def test_where_is_fused_into_the_local_products() -> None:
    p = program(f"SELECT COUNT(*), SUM(emc.bmi), AVG(emc.bmi) {JOIN} WHERE emc.bmi > 30")
    texts = {c.name: c.text for c in p.local}
    slots = {s.name: s for s in p.slots}
    total = slots[p.outputs[1].value]
    assert [texts[f] for f in total.factors] == ["[bmi > 30] * bmi"]
    assert [texts[f] for f in slots[p.filtered_count].factors] == ["[bmi > 30]"]
    # [bmi > 30] implies bmi IS NOT NULL: the count of SUM's values is the WHERE's count
    assert slots[p.outputs[0].value].factors == slots[p.filtered_count].factors
    assert p.rows == () and all(c.party == "emc" for c in p.local)
    fused = next(c for c in p.local if c.text == "[bmi > 30] * bmi")
    assert fused.sql == ('CAST(COALESCE(("bmi" > 30), FALSE) AS DOUBLE) * '
                         'COALESCE(CAST(("bmi") AS DOUBLE), 0)')
    assert fused.bits == 6 and not fused.indicator


def test_shared_statistics_and_deduplicated_columns() -> None:
    p = program(f"SELECT SUM(ac.charges), AVG(ac.charges), COUNT(ac.charges) {JOIN}")
    assert len(p.slots) == 2  # Σ [charges valid], Σ charges
    assert len({c.sql for c in p.local}) == len(p.local) == 2


def test_cross_party_product_is_a_dot_product() -> None:
    p = program(f"SELECT SUM(ac.charges * emc.bmi) {JOIN}")
    s = next(s for s in p.slots if s.name == p.outputs[0].value)
    parties = [next(c.party for c in p.local if c.name == f) for f in s.factors]
    assert parties == ["ac", "emc"] and p.rows == ()
    assert s.bits == 22


def test_cross_party_predicates_become_row_ops() -> None:
    p = program(f"SELECT COUNT(*) {JOIN} WHERE ac.age > emc.bmi")
    (cmp,) = p.rows
    assert cmp.op == "lt" and cmp.bits == 8 and "ac.age > emc.bmi" in cmp.text
    s = next(s for s in p.slots if s.name == p.filtered_count)
    assert cmp.out in s.factors and len(s.factors) == 3  # [age valid], [bmi valid], lt
    p = program(f"SELECT COUNT(*) {JOIN} WHERE ac.age > emc.bmi OR emc.children > 2")
    assert [r.op for r in p.rows][-1] == "or"  # materialised: one 0/1 vector


def test_three_valued_not_uses_is_false() -> None:
    p = program(f"SELECT COUNT(*) FILTER (WHERE NOT (ac.age > emc.bmi)) {JOIN}")
    assert {"lt", "not", "and"} <= {r.op for r in p.rows} or any(
        "NOT" in c.text for c in p.local)
    check_against_duckdb(f"SELECT COUNT(*) FILTER (WHERE NOT (ac.age > emc.bmi)) {JOIN}")


def test_group_indicators_with_the_null_group() -> None:
    p = program(f"SELECT emc.region, ac.smoker, COUNT(*) {JOIN} GROUP BY emc.region, ac.smoker")
    assert len(p.groups) == 5 * 3
    by = {c.name: c for c in p.local}
    null_group = next(g for g in p.groups if g.key == (None, None))
    assert [by[i].sql for i in null_group.indicators] == ['CAST(("region" IS NULL) AS DOUBLE)',
                                                           'CAST(("smoker" IS NULL) AS DOUBLE)']
    ne = next(g for g in p.groups if g.key == ("ne", True))
    assert by[ne.indicators[0]].sql == "CAST(COALESCE((\"region\" = 'ne'), FALSE) AS DOUBLE)"
    assert all(by[i].indicator for g in p.groups for i in g.indicators)
    assert [o.key for o in p.outputs[:2]] == [0, 1]
    assert p.present is not None and p.min_group_rows_const == "min_group_rows"


def test_too_many_groups_refused() -> None:
    ac = CATALOG.table("ac")
    k = Col(ColumnRef("ac", "ac", "age", "BIGINT", 7), bits=7, integral=True)
    keys = tuple(GroupKey(k, tuple(range(20)), f"k{i}", "BIGINT") for i in range(2))
    lq = LogicalQuery((ac,), None, keys, (Item("n", AggCall("COUNT", (), dtype="BIGINT"),
                                                "BIGINT"),))
    with pytest.raises(ProgrammingError, match=f"at most {MAX_GROUPS}"):
        lower_program(lq)


def test_bound_beyond_the_fixed_point_range_is_refused() -> None:
    with pytest.raises(ProgrammingError, match=r"2\^32 of .*charges.*fixed-point"):
        plan("SELECT SUM(charges * charges) FROM ac", CATALOG)


def test_moments_and_ratios() -> None:
    p = program(f"SELECT VAR_SAMP(ac.age), STDDEV(ac.age), CORR(ac.charges, emc.bmi), "
                f"REGR_SLOPE(ac.charges, ac.age) {JOIN}")
    var, sd, corr, slope = p.outputs
    assert var.transform == "identity" and sd.transform == "sqrt" and var.value == sd.value
    assert corr.transform == "signed_sqrt" and corr.nan is not None
    assert slope.transform == "odds" and slope.scale == 2.0 ** (16 - 7) and slope.nan
    exact = [f for f in p.finish if f.exact_unit is not None]
    assert {f.op for f in exact} >= {"slot", "mul", "sub"}
    assert any(f.op == "is_zero" and f.args[0] in {e.out for e in exact} for f in p.finish)


def test_order_statistics() -> None:
    p = program(f"SELECT MIN(ac.age), MEDIAN(emc.bmi) {JOIN} WHERE ac.sex = 'male'")
    lo, med = (next(s for s in p.slots if s.name == o.value) for o in p.outputs)
    assert lo.kind == "min" and lo.integral and med.kind == "quantile" and med.q == 0.5
    local = {c.name: c for c in p.local}
    assert all(local[f].indicator for f in lo.factors)
    assert p.outputs[0].transform == "integer"
    text = next(d.text for d in plan(f"SELECT MIN(ac.age) {JOIN}", CATALOG).disclosures()
                if d.label == "result")
    assert "data value of one person" in text


def test_string_literals_are_rendered_safely() -> None:
    p = program("SELECT COUNT(*) FROM ac WHERE sex = 'O''Brien' OR sex IN ('a\"b', 'c')")
    (col,) = [c for c in p.local if c.indicator and "sex" in c.sql]
    assert "'O''Brien'" in col.sql
    con = duckdb.connect()
    con.execute("CREATE TABLE ac AS SELECT 'O''Brien' AS sex UNION ALL SELECT 'x'")
    assert con.execute(f"SELECT sum({col.sql}) FROM ac").fetchone()[0] == 1


def test_hand_built_logical_query() -> None:
    """The lowering needs only the LogicalQuery (no SQL): COUNT(x) by a boolean key."""
    ac = CATALOG.table("ac")
    x = Col(ColumnRef("ac", "ac", "age", "BIGINT", 7), bits=7, integral=True)
    k = Col(ColumnRef("ac", "ac", "smoker", "BOOLEAN", 0), BOOLEAN, integral=True)
    where = Call(">", (x, Lit(30, NUMBER, bits=5, integral=True, nullable=False)), BOOLEAN)
    lq = LogicalQuery((ac,), where, (GroupKey(k, (False, True, None), "smoker", "BOOLEAN"),),
                      (Item("n", AggCall("COUNT", (x,), dtype="BIGINT", integral=True,
                                         nullable=False), "BIGINT"),))
    prog, _ = lower_program(lq)
    assert len(prog.groups) == 3 and prog.filtered_count
    assert any(c.text == "[age > 30]" for c in prog.local)
    p = lower(lq, CATALOG, receivers=("ac",))
    assert p.scans[0].key is None and set(p.scans[0].reads) == {"age", "smoker"}


# --- plan integration --------------------------------------------------------------------------


def test_plan_fields_of_a_program_plan() -> None:
    p = plan(f"SELECT AVG(ac.charges) {JOIN} WHERE emc.bmi > 30", CATALOG)
    assert p.aggregate.aggregates == () and p.model is None and p.program is not None
    left, right = p.scans
    assert left.columns == tuple(c.name for c in left.local) and left.reads == ("charges",)
    assert right.reads == ("bmi",)
    assert p.shared.columns == tuple(ColumnRef(s.party, s.table, c.name, "DOUBLE", c.bits)
                                     for s in p.scans for c in s.local)
    assert p.logical is not None and [u for u in p.usages]
    assert [c.name for c in p.output] == ["avg(ac.charges)"]


def test_model_plans_keep_their_path() -> None:
    p = plan("SELECT LINREG(ac.charges, ac.age, emc.bmi) FROM ac JOIN emc USING (id)", CATALOG)
    assert p.program is None and p.model is not None and p.scan_at("ac").local == ()
    q = plan("SELECT LASSO(ac.charges, ac.age) FROM ac JOIN emc USING (id) WHERE ac.age > 3",
             CATALOG)  # with WHERE: a program with a model (tests/test_models_sql_plan.py)
    assert q.program is not None and q.program.model is not None and q.model is None


def _labels(sql: str) -> dict[str, tuple]:
    return {d.label: d for d in plan(sql, CATALOG, receivers=("ac",)).disclosures()}


def test_disclosures_per_query_shape() -> None:
    plain = _labels(f"SELECT COUNT(*) {JOIN}")
    assert "filter_too_small" not in plain and "group_present" not in plain
    assert plain["result"].to == ("ac",)
    where = _labels(f"SELECT COUNT(*) {JOIN} WHERE ac.age > 30")
    d = where["filter_too_small"]
    assert d.to == ("ac", "emc", "helper") and d.stage == "compute" and d.when == "always"
    grouped = _labels(f"SELECT region, COUNT(*) {JOIN} GROUP BY region")
    assert grouped["group_present"].to == ("ac",) and "5 groups" in grouped["group_present"].text
    having = _labels(f"SELECT COUNT(*) {JOIN} HAVING COUNT(*) > 3")
    assert "whether HAVING holds" in having["group_present"].text


def test_outcomes_reach_the_filter_bit_before_the_result() -> None:
    p = plan(f"SELECT COUNT(*) {JOIN} WHERE ac.age > 30", CATALOG)
    done = {d.label for d, _ in p.reached("done")}
    assert {"filter_too_small", "result"} <= done
    refused = {d.label for d, _ in p.reached("filter_too_small")}
    assert "filter_too_small" in refused and "result" not in refused
    assert "filter_too_small" not in {d.label for d, _ in p.reached("too_small")}
    assert "filter_too_small" in {d.label for d, _ in p.reached("aborted")}
    assert any("WHERE leaves" in t for t in p.learns("aborted")["helper"])


def test_explain_prints_every_stage() -> None:
    sql = (f"SELECT region, VAR_POP(ac.age) {JOIN} WHERE ac.age > emc.bmi GROUP BY region "
           "HAVING COUNT(*) > 2 ORDER BY region LIMIT 3")
    p = plan(sql, CATALOG)
    text = p.explain()
    for part in ("reads=[age]", "row program in MPC", "lt(", "slots in MPC", "groups (public",
                 "finish in MPC", "presence bit per group", "outputs (opened", "ORDER BY region",
                 "LIMIT 3", "[region = 'ne']", "min_group_rows"):
        assert part in text, part
    assert p.fingerprint() == plan(sql, CATALOG).fingerprint()
    assert p.fingerprint() != plan(sql.replace("> 2", "> 3"), CATALOG).fingerprint()


def test_size_check_of_divisions() -> None:
    p = program(f"SELECT AVG(ac.age) {JOIN}")
    check_size(p, 10**6)
    with pytest.raises(ProgrammingError, match="denominator"):
        check_size(p, 2**32)


# --- the reference evaluator against DuckDB -----------------------------------------------------

QUERIES = [
    f"SELECT COUNT(*), AVG(ac.charges), SUM(emc.bmi), SUM(ac.age) {JOIN} WHERE emc.bmi > 30",
    f"SELECT COUNT(ac.age), VAR_POP(ac.age), VAR_SAMP(charges), STDDEV(bmi), STDDEV_POP(bmi) "
    f"{JOIN}",
    f"SELECT region, COUNT(*), AVG(charges), MIN(age), MAX(bmi), MEDIAN(bmi), "
    f"QUANTILE_CONT(charges, 0.3) {JOIN} GROUP BY region",
    f"SELECT smoker, sex, CORR(charges, bmi), COVAR_POP(charges, age), COVAR_SAMP(age, bmi), "
    f"REGR_SLOPE(charges, age), REGR_INTERCEPT(charges, age), REGR_R2(charges, bmi), "
    f"REGR_COUNT(charges, bmi) {JOIN} GROUP BY smoker, sex",
    f"SELECT COUNT(*), SUM(ac.charges * emc.bmi), AVG(ac.age + emc.children), "
    f"VAR_POP(ac.age - emc.bmi) {JOIN}",
    f"SELECT COUNT(*) {JOIN} WHERE ac.age > emc.bmi OR emc.children IS NULL",
    f"SELECT SUM(CASE WHEN ac.age > emc.bmi THEN ac.charges ELSE emc.bmi END), "
    f"COUNT(COALESCE(ac.age, emc.children)), SUM(COALESCE(ac.age, emc.children)) {JOIN}",
    f"SELECT COUNT(*) FILTER (WHERE ac.age + emc.children IN (30, 31, 40)), SUM(ac.age) "
    f"FILTER (WHERE emc.region IN ('ne','se') AND ac.sex = 'male') {JOIN}",
    f"SELECT region, SUM(charges) / COUNT(*), AVG(age) - AVG(bmi), SUM(age) * 2, "
    f"SUM(age) / 0.5 {JOIN} GROUP BY region HAVING COUNT(*) > 3 AND AVG(bmi) > 20",
    f"SELECT children, VAR_SAMP(age), CORR(age, children), REGR_R2(age, children), "
    f"REGR_SLOPE(children, age), STDDEV_SAMP(bmi), REGR_INTERCEPT(bmi, age) {JOIN} "
    "GROUP BY children",
    f"SELECT COUNT(*), SUM(age), AVG(age), MIN(age), VAR_POP(age), CORR(age, bmi) {JOIN} "
    "WHERE age > 1000",
    f"SELECT SUM(age) / SUM(children), SUM(age) / (SUM(children) - SUM(children)), "
    f"(SUM(age) - SUM(age)) / (SUM(children) - SUM(children)) {JOIN}",
    f"SELECT ABS(SUM(ac.charges - emc.bmi * 1000)), -AVG(ABS(ac.charges - emc.bmi * 1000)) "
    f"{JOIN}",
    f"SELECT COUNT(*) {JOIN} WHERE ac.age BETWEEN emc.bmi AND emc.bmi + 10",
    f"SELECT CASE WHEN age < 30 THEN 'young' WHEN age < 50 THEN 'mid' ELSE 'old' END AS b, "
    f"COUNT(*), AVG(charges) {JOIN} GROUP BY b",
    "SELECT COUNT(*), SUM(age) FROM ac WHERE 1 = 0",
    "SELECT sex, smoker, COUNT(*), REGR_SLOPE(charges, age) FROM ac GROUP BY sex, smoker",
    f"SELECT COUNT(*) {JOIN} WHERE CASE WHEN ac.age > emc.bmi THEN ac.smoker "
    "ELSE emc.children > 2 END",
    f"SELECT COUNT(*) FILTER (WHERE COALESCE(ac.smoker, emc.children > 2)), COUNT(*) FILTER "
    f"(WHERE NOT COALESCE(ac.smoker, emc.children > 2)) {JOIN}",
    f"SELECT SUM(age) > 100, AVG(bmi) IS NULL, COUNT(*) = 40 {JOIN}",
    f"SELECT MAX(CASE WHEN ac.age > 40 THEN ac.charges END), MIN(ac.age * emc.children) {JOIN}",
    f"SELECT COUNT(*) {JOIN} WHERE ac.age + emc.children NOT IN (20, 30, NULL)",
    f"SELECT region, SUM(age) {JOIN} GROUP BY region HAVING region <> 'ne' AND COUNT(*) > 1",
    f"SELECT region, REGR_SXX(charges, bmi), REGR_SYY(charges, bmi), REGR_SXY(charges, bmi), "
    f"REGR_AVGX(charges, bmi), REGR_AVGY(charges, bmi) FILTER (WHERE age > 30) {JOIN} "
    "GROUP BY region",
]


@pytest.mark.parametrize("sql", QUERIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_reference_equals_duckdb(sql: str, seed: int) -> None:
    check_against_duckdb(sql, seed)


def test_ordered_and_limited() -> None:
    check_against_duckdb(f"SELECT region, COUNT(*) AS n {JOIN} GROUP BY region "
                         "ORDER BY n DESC, region LIMIT 2", ordered=True)
    check_against_duckdb(f"SELECT children, AVG(age) {JOIN} GROUP BY children "
                         "ORDER BY children DESC NULLS FIRST", ordered=True)
    check_against_duckdb(f"SELECT COUNT(*), AVG(age) {JOIN} GROUP BY region, sex "
                         "ORDER BY sex DESC, region LIMIT 5", ordered=True)
    check_against_duckdb(f"SELECT sex, COUNT(*) {JOIN} GROUP BY 1 ORDER BY 1 DESC", ordered=True)


def test_order_by_a_key_that_is_not_selected_is_a_hidden_key_output() -> None:
    p = plan(f"SELECT COUNT(*) {JOIN} GROUP BY region ORDER BY region DESC", CATALOG)
    hidden = p.program.outputs[-1]
    assert hidden.hidden and hidden.key == 0 and hidden.value is None
    assert [k.output for k in p.program.order] == [1] and len(p.output) == 1
    assert "for ORDER BY only: not returned" in p.explain()


def test_min_group_rows_suppresses_small_groups() -> None:
    sql = f"SELECT region, COUNT(*) {JOIN} GROUP BY region"
    data = tables(3)
    full = evaluate(plan(sql, CATALOG), data)
    big = evaluate(plan(sql, CATALOG), data, min_group_rows=9)
    assert {r for r in full if r[1] >= 9} == set(big)


# --- generated queries ---------------------------------------------------------------------

VALUES = ["ac.age", "ac.charges", "emc.bmi", "emc.children", "ac.age + emc.children",
          "ac.charges * emc.bmi", "ac.age - emc.bmi", "CASE WHEN ac.smoker THEN ac.age ELSE "
          "emc.children END", "COALESCE(ac.age, emc.children)", "-ac.age", "ABS(emc.bmi - 30)",
          "emc.bmi / 4", "ac.age * ac.age"]
PREDICATES = ["ac.age > 40", "emc.bmi < 30", "ac.age > emc.bmi", "emc.region IN ('ne', 'sw')",
              "ac.smoker", "NOT ac.smoker", "emc.children IS NULL", "ac.sex = 'male'",
              "ac.age + emc.children BETWEEN 30 AND 50", "ac.charges > 5000 OR emc.bmi > 40"]
ONE_ARG = ["COUNT", "SUM", "AVG", "VAR_POP", "VAR_SAMP", "STDDEV_POP", "STDDEV_SAMP", "MIN",
           "MAX", "MEDIAN"]
TWO_ARGS = ["COVAR_POP", "COVAR_SAMP", "CORR", "REGR_SLOPE", "REGR_INTERCEPT", "REGR_R2",
            "REGR_COUNT"]
KEYS = ["emc.region", "ac.smoker", "ac.sex", "emc.children"]


def generated(rnd: random.Random) -> str:
    items = []
    for _ in range(rnd.randint(1, 3)):
        if rnd.random() < 0.7:
            f = rnd.choice(ONE_ARG)
            agg = f"{f}({rnd.choice(VALUES)})" if f != "COUNT" or rnd.random() < 0.5 \
                else "COUNT(*)"
        else:
            agg = f"{rnd.choice(TWO_ARGS)}({rnd.choice(VALUES)}, {rnd.choice(VALUES)})"
        if rnd.random() < 0.25:
            agg += f" FILTER (WHERE {rnd.choice(PREDICATES)})"
        items.append(agg)
    keys = rnd.sample(KEYS, rnd.choice([0, 0, 1, 1, 2]))
    sql = f"SELECT {', '.join(keys + items)} {JOIN}"
    if rnd.random() < 0.5:
        sql += f" WHERE {rnd.choice(PREDICATES)}"
    if keys:
        sql += f" GROUP BY {', '.join(keys)}"
    if rnd.random() < 0.2:
        sql += f" HAVING COUNT(*) > {rnd.randint(0, 4)}"
    return sql


@pytest.mark.parametrize("chunk", range(4))
def test_generated_queries_equal_duckdb(chunk: int) -> None:
    rnd = random.Random(1000 + chunk)
    for i in range(40):
        check_against_duckdb(generated(rnd), seed=chunk * 40 + i)


# --- DuckDB's own aggregate cases ----------------------------------------------------------

CASES = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                     "duckdb-aggregate-cases")


@pytest.mark.skipif(not os.path.isdir(CASES), reason="DuckDB aggregate cases not available")
def test_duckdb_aggregate_cases_through_the_reference() -> None:
    """Each case's table at one party (bounds and domains as an owner would declare them):
    what the lowering accepts, the reference answers as DuckDB did."""
    from bench.duckdb_cases import load_cases, rows_match
    from engine.server.storage import power_of_two_bits

    equal = wrong = 0
    for case in load_cases(CASES):
        con = duckdb.connect()
        types = ", ".join(f'"{n}" {ty}' for n, ty in case["columns"].items())
        con.execute(f"CREATE TABLE t ({types})")
        if case["rows"]:  # as text, cast by DuckDB to the column types (as the bench's rows)
            rows = pd.DataFrame([[None if v is None else str(v) for v in r] for r in case["rows"]],
                                dtype=object)
            con.register("_rows", rows)
            con.execute("INSERT INTO t SELECT * FROM _rows")
        cols = []
        for name, ty in case["columns"].items():
            q = '"' + name + '"'
            bits = None
            if not ty.startswith("VARCHAR"):
                top = con.execute(f"SELECT max(abs(CAST({q} AS DOUBLE))) FROM t").fetchone()[0]
                bits = power_of_two_bits(top or 0.0)
            vals = [r[0] for r in con.execute(f"SELECT DISTINCT {q} FROM t WHERE {q} IS NOT "
                                              "NULL ORDER BY 1").fetchall()]
            discrete = not ty.startswith(("DOUBLE", "FLOAT", "REAL", "DECIMAL"))
            cols.append(ColumnSchema(name, ty, bits, tuple(vals) if discrete
                                     and len(vals) <= MAX_GROUPS else None))
        cat = Catalog(CATALOG.parties, (TableSchema("t", "ac", None, tuple(cols)),))
        try:
            p = plan(case["sql"], cat)
            got = evaluate(p, con)
        except Exception:  # noqa: BLE001 - refusals (and values beyond the bounds) are counted
            continue
        if rows_match([list(r) for r in got], case["expected"], case["expected_types"],
                      case["ordered"]):
            equal += 1
        else:
            wrong += 1
    assert wrong == 0 and equal >= 120
