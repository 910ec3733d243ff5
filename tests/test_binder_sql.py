"""The logical binder (issue 11): SQL -> planner.logical.LogicalQuery, without lowering or MPC.

Each construct's bound form, its types (DuckDB's, checked against duckdb itself), public bounds,
nullability, group domains and the NULL group, and every planning refusal with its message.
"""

from __future__ import annotations

import duckdb
import pytest
import sqlglot

from dialect import MpcDialect, parse_query
from dialect.errors import BindError, DataError, NotSupportedError, ProgrammingError
from planner import Catalog, ColumnSchema, Party, TableSchema
from planner.binder import Binder
from planner.logical import (
    BOOLEAN,
    NUMBER,
    TEXT,
    AggCall,
    AggLit,
    AggOp,
    Call,
    Col,
    KeyRef,
    Lit,
    LogicalQuery,
    SortKey,
)
from planner.physical import MAX_BITS, MAX_GROUPS
from planner.types import expr_type

REGIONS = ("northeast", "northwest", "southeast", "southwest")
AC = TableSchema("ac", "ac", "id", (
    ColumnSchema("id", "BIGINT"),
    ColumnSchema("age", "BIGINT", 7),
    ColumnSchema("sex", "VARCHAR", None, ("female", "male")),
    ColumnSchema("charges", "DOUBLE", 16),
    ColumnSchema("smoker", "BOOLEAN"),
    ColumnSchema("score", "INTEGER"),
    ColumnSchema("small", "SMALLINT"),
    ColumnSchema("price", "DECIMAL(10,2)", 10),
    ColumnSchema("plan", "VARCHAR"),
))
EMC = TableSchema("emc", "emc", "id", (
    ColumnSchema("id", "BIGINT"),
    ColumnSchema("bmi", "DOUBLE", 6),
    ColumnSchema("children", "BIGINT", 3, tuple(range(6))),
    ColumnSchema("region", "VARCHAR", None, REGIONS),
    ColumnSchema("note", "VARCHAR"),
    ColumnSchema("steps", "BIGINT", 20, tuple(range(200))),
))
CATALOG = Catalog((Party("ac", "data", 0), Party("emc", "data", 1), Party("helper", "helper", 2)),
                  (AC, EMC))
JOIN = "FROM ac JOIN emc USING (id)"


def bind(sql: str) -> LogicalQuery:
    """The binder alone (the grammar of dialect.parse may refuse some of these first)."""
    return Binder(CATALOG, sql).bind_logical(sqlglot.parse_one(sql, read=MpcDialect))


def item(sql: str, i: int = 0):
    return bind(sql).items[i].expr


def refused(sql: str, cls: type, words: str) -> Exception:
    with pytest.raises(cls) as info:
        bind(sql)
    assert words in str(info.value), str(info.value)
    return info.value


def col(name: str) -> Col:
    table = AC if AC.column(name) is not None else EMC
    c = table.column(name)
    lq = bind(f"SELECT COUNT({c.name}) {JOIN}")
    return lq.items[0].expr.args[0]


# --- WHERE and row expressions ----------------------------------------------------------------


def test_where_is_a_boolean_row_expression():
    lq = bind(f"SELECT COUNT(*) {JOIN} WHERE age BETWEEN 20 AND 60 AND sex = 'male'")
    w = lq.where
    assert isinstance(w, Call) and w.op == "and" and w.kind == BOOLEAN
    between, eq = w.args
    assert between.op == "and" and [a.op for a in between.args] == [">=", "<="]
    assert between.args[0].args == (col("age"), Lit(20, NUMBER, bits=5, integral=True,
                                                     nullable=False))
    assert eq == Call("=", (col("sex"), Lit("male", TEXT, nullable=False)), BOOLEAN)
    assert w.parties == {"ac"} and lq.keys == () and lq.tables == (AC, EMC)


def test_row_operators():
    w = bind(f"SELECT COUNT(*) {JOIN} WHERE NOT (bmi IS NULL) OR region IN ('northeast', "
             "'southwest') OR bmi IS NOT NULL OR smoker IS TRUE").where
    ops = []

    def walk(e):
        if isinstance(e, Call):
            ops.append(e.op)
            for a in e.args:
                walk(a)
    walk(w)
    assert ops.count("is_null") == 2 and ops.count("not") == 2 and "in" in ops
    assert "coalesce" in ops  # x IS TRUE = COALESCE(x, false)
    assert w.parties == {"ac", "emc"}


def test_bounds_through_expressions():
    e = item(f"SELECT SUM(age + bmi) {JOIN}").args[0]
    assert e.op == "+" and e.bits == 8 and not e.integral  # max(7, 6) + 1
    assert item(f"SELECT SUM(age * bmi) {JOIN}").args[0].bits == 13
    assert item("SELECT SUM(age * 3) FROM ac").args[0].bits == 9  # 7 + ceil(log2 3)
    assert item("SELECT SUM(age / 4) FROM ac").args[0].bits == 5
    assert item("SELECT SUM(age / 3) FROM ac").args[0].bits == 6  # 7 - floor(log2 3)
    assert item("SELECT SUM(charges * 0.001) FROM ac").args[0].bits == 16 - 9
    assert item("SELECT SUM(-age) FROM ac").args[0].bits == 7
    assert item("SELECT SUM(ABS(charges)) FROM ac").args[0].bits == 16
    case = item("SELECT SUM(CASE WHEN smoker THEN charges ELSE 2 END) FROM ac").args[0]
    assert case.op == "case" and case.bits == 16
    assert item("SELECT SUM(score) FROM ac").args[0].bits == MAX_BITS  # INTEGER, no bound
    assert item("SELECT SUM(small) FROM ac").args[0].bits == 15  # SMALLINT's range
    w = bind("SELECT COUNT(*) FROM ac WHERE age * 2 > charges").where
    assert w.bits == 0 and w.args[0].bits == 8


def test_integral_and_nullable():
    e = item("SELECT SUM(age * 2 + 1) FROM ac").args[0]
    assert e.integral and e.nullable  # columns may be NULL (the catalog has no NOT NULL)
    assert not item("SELECT SUM(age / 2) FROM ac").args[0].integral
    assert not item("SELECT SUM(COALESCE(age, 0)) FROM ac").args[0].nullable
    c = item("SELECT SUM(CASE WHEN age > 30 THEN 1 ELSE 0 END) FROM ac").args[0]
    assert c.integral and not c.nullable
    assert item("SELECT SUM(CASE WHEN age > 30 THEN 1 END) FROM ac").args[0].nullable
    assert not bind("SELECT COUNT(*) FROM ac WHERE age IS NULL").where.nullable
    cast = item("SELECT SUM(CAST(charges AS INTEGER)) FROM ac").args[0]
    assert cast.op == "cast" and cast.to == "INTEGER" and cast.integral and cast.bits == 16


def test_boolean_argument_is_cast_to_integer():
    s = item("SELECT SUM(smoker) FROM ac")
    assert s.args[0] == Call("cast", (col("smoker"),), NUMBER, to="INTEGER", bits=0,
                             integral=True)
    assert s.dtype == "HUGEINT"
    assert item("SELECT MAX(smoker) FROM ac").dtype == "BOOLEAN"


# --- aggregates -------------------------------------------------------------------------------


@pytest.mark.parametrize("sql, func, q", [
    ("VARIANCE(bmi)", "VAR_SAMP", None), ("VAR_SAMP(bmi)", "VAR_SAMP", None),
    ("VAR_POP(bmi)", "VAR_POP", None), ("STDDEV(bmi)", "STDDEV_SAMP", None),
    ("STDDEV_SAMP(bmi)", "STDDEV_SAMP", None), ("STDDEV_POP(bmi)", "STDDEV_POP", None),
    ("MEDIAN(bmi)", "QUANTILE_CONT", 0.5), ("QUANTILE_CONT(bmi, 0.25)", "QUANTILE_CONT", 0.25),
    ("QUANTILE_CONT(bmi, 1)", "QUANTILE_CONT", 1.0), ("MIN(bmi)", "MIN", None),
    ("COVAR_POP(age, bmi)", "COVAR_POP", None), ("CORR(age, bmi)", "CORR", None),
    ("REGR_SLOPE(age, bmi)", "REGR_SLOPE", None), ("REGR_COUNT(age, bmi)", "REGR_COUNT", None),
])
def test_aggregate_names_are_normalised(sql, func, q):
    a = item(f"SELECT {sql} {JOIN}")
    assert isinstance(a, AggCall) and a.func == func and a.q == q


def test_aggregate_bounds_and_flags():
    def call(sql):
        return item(f"SELECT {sql} {JOIN}")
    assert (call("COUNT(*)").bits, call("COUNT(*)").nullable, call("COUNT(*)").args) == (0, False,
                                                                                         ())
    assert call("COUNT(bmi)").args == (col("bmi"),) and call("COUNT(bmi)").integral
    assert call("COUNT(note)").args[0].kind == TEXT  # counts non-NULL strings
    assert call("COUNT(ac.id)").args == ()  # COUNT(key) is COUNT(*)
    assert call("SUM(age)").bits == 7 and call("SUM(age)").integral
    assert call("VAR_POP(bmi)").bits == 12 and call("STDDEV_POP(bmi)").bits == 6
    assert call("COVAR_SAMP(age, bmi)").bits == 13 and call("CORR(age, bmi)").bits == 0
    assert call("REGR_R2(age, bmi)").bits == 0 and call("REGR_SLOPE(age, bmi)").bits == MAX_BITS
    assert not call("REGR_COUNT(age, bmi)").nullable and call("MIN(age)").integral
    assert call("AVG(age)").nullable and not call("AVG(age)").integral


def test_filter_clause():
    a = item(f"SELECT AVG(charges) FILTER (WHERE bmi > 30) {JOIN}")
    assert a.func == "AVG" and a.filter.op == ">" and a.filter.parties == {"emc"}
    assert bind(f"SELECT COUNT(*) FILTER (WHERE smoker) {JOIN}").items[0].name == \
        "count_star() FILTER (WHERE smoker)"


def test_arithmetic_over_aggregates():
    e = item(f"SELECT SUM(charges) / COUNT(*) {JOIN}")
    assert isinstance(e, AggOp) and e.op == "/" and e.nullable and e.bits == 16
    assert [type(a) for a in e.args] == [AggCall, AggCall]
    e = item(f"SELECT AVG(age) - AVG(bmi) + 1 {JOIN}")
    assert e.op == "+" and e.args[1] == AggLit(1, bits=0, integral=True, nullable=False)
    assert e.bits == 9
    assert item(f"SELECT SUM(age) / SUM(bmi) {JOIN}").bits == MAX_BITS
    e = item(f"SELECT COUNT(*) > 5 AND SUM(age) < 3 {JOIN}")
    assert e.op == "and" and e.result_kind == BOOLEAN
    assert item(f"SELECT -SUM(age) {JOIN}").op == "neg"
    assert item(f"SELECT SUM(age) / 2 {JOIN}").bits == 6


# --- output names and types, as DuckDB ----------------------------------------------------------

DUCKDB_CASES = [
    f"SELECT COUNT(*), COUNT(bmi), SUM(age), SUM(charges), SUM(smoker), AVG(age), MIN(age), "
    f"MAX(score), MIN(small + 1), MAX(charges), MIN(price) {JOIN}",
    f"SELECT VAR_SAMP(bmi), VARIANCE(bmi), VAR_POP(age), STDDEV(bmi), STDDEV_SAMP(age), "
    f"STDDEV_POP(bmi), COVAR_POP(age, bmi), COVAR_SAMP(age, bmi), CORR(age, bmi) {JOIN}",
    f"SELECT REGR_SLOPE(charges, bmi), REGR_INTERCEPT(charges, bmi), REGR_R2(charges, bmi), "
    f"REGR_COUNT(charges, bmi), MEDIAN(bmi), QUANTILE_CONT(charges, 0.25) {JOIN}",
    f"SELECT SUM(age * 2), SUM(age + score), SUM(charges * 2), SUM(age / 2), SUM(-age), "
    f"SUM(ABS(charges)), SUM(COALESCE(age, 0)), SUM(CAST(charges AS INTEGER)) {JOIN}",
    f"SELECT SUM(CASE WHEN bmi > 30 THEN 1 ELSE 0 END), SUM(CASE WHEN age > 1 THEN age END), "
    f"SUM(CASE children WHEN 1 THEN 2 ELSE 3 END) {JOIN}",
    f"SELECT COUNT(*) FILTER (WHERE bmi > 30 AND NOT smoker), "
    f"SUM(age) FILTER (WHERE region IN ('northeast', 'southwest') OR bmi IS NOT NULL), "
    f"COUNT(*) FILTER (WHERE age BETWEEN 20 AND 30), COUNT(*) FILTER (WHERE sex <> 'male'), "
    f"COUNT(*) FILTER (WHERE bmi IS NULL) {JOIN}",
    f"SELECT SUM(charges) / COUNT(*), AVG(age) - AVG(bmi), SUM(age) + 1, 1 + COUNT(*), "
    f"MIN(age) - MAX(age), -SUM(age), ABS(SUM(charges)), COUNT(*) > 5, "
    f"SUM(charges) / SUM(bmi) * 100 {JOIN}",
    f"SELECT region, smoker, COUNT(*) AS n {JOIN} GROUP BY region, smoker",
    f"SELECT emc.region, ac.sex, AVG(charges) {JOIN} GROUP BY emc.region, sex",
    f"SELECT CASE WHEN age < 30 THEN 'young' ELSE 'old' END, COUNT(*) {JOIN} "
    "GROUP BY CASE WHEN age < 30 THEN 'young' ELSE 'old' END",
    f"SELECT CASE WHEN age < 30 THEN 'young' ELSE 'old' END AS band, COUNT(*) {JOIN} GROUP BY band",
    f"SELECT children, children + 1, COUNT(*) {JOIN} GROUP BY children",
    f"SELECT bmi > 30, COUNT(*) {JOIN} GROUP BY bmi > 30",
    f"SELECT REGR_SXX(charges, bmi), REGR_SYY(charges, bmi), REGR_SXY(charges, bmi), "
    f"REGR_AVGX(charges, bmi), REGR_AVGY(charges, bmi) {JOIN}",
    "SELECT QUANTILE_CONT(price, 0.25), MEDIAN(price), MEDIAN(-price), "
    "QUANTILE_CONT(CAST(age AS DECIMAL(6,2)), 0.5), MEDIAN(CAST(age AS FLOAT)), MAX(price), "
    "MIN(price) + MAX(price) FROM ac",
    "SELECT sex, COUNT(*) FROM ac GROUP BY 1",
]


@pytest.mark.parametrize("sql", DUCKDB_CASES)
def test_names_and_types_match_duckdb(sql):
    con = duckdb.connect()
    for t in CATALOG.tables:
        con.execute(f"CREATE TABLE {t.name} ("
                    + ", ".join(f'"{c.name}" {c.dtype}' for c in t.columns) + ")")
    described = con.execute(sql).description
    lq = bind(sql)
    assert [i.name for i in lq.items] == [d[0] for d in described]
    types = [str(d[1]) for d in described]
    ours = [i.dtype for i in lq.items]
    # Documented deviation: DECIMAL results (SUM of a DECIMAL) are DOUBLE.
    assert ours == [t if not t.startswith("DECIMAL(38") else "DOUBLE" for t in types]


# --- GROUP BY -----------------------------------------------------------------------------------


def test_group_by_declared_domain_and_null_group():
    lq = bind(f"SELECT region, COUNT(*) {JOIN} GROUP BY region")
    (k,) = lq.keys
    assert k.expr == col("region") and k.name == "region" and k.dtype == "VARCHAR"
    assert k.domain == (*REGIONS, None)  # a nullable key has the NULL group, last
    assert lq.items[0].expr == KeyRef(0, bits=0, nullable=True)
    assert bind(f"SELECT COUNT(*) {JOIN} GROUP BY children").keys[0].domain == (0, 1, 2, 3, 4,
                                                                                5, None)


def test_group_by_boolean_and_boolean_expression():
    assert bind("SELECT COUNT(*) FROM ac GROUP BY smoker").keys[0].domain == (False, True, None)
    k = bind(f"SELECT bmi > 30 AS obese, COUNT(*) {JOIN} GROUP BY obese").keys[0]
    assert k.domain == (False, True, None) and k.name == "obese" and k.dtype == "BOOLEAN"


def test_group_by_case_of_literals():
    k = bind("SELECT COUNT(*) FROM ac GROUP BY CASE WHEN age < 30 THEN 'young' "
             "WHEN age < 60 THEN 'middle' ELSE 'old' END").keys[0]
    assert k.domain == ("young", "middle", "old") and k.dtype == "VARCHAR"  # ELSE: no NULL
    k = bind("SELECT COUNT(*) FROM ac GROUP BY CASE WHEN age < 30 THEN 1 "
             "WHEN age < 60 THEN 2 END").keys[0]
    assert k.domain == (1, 2, None) and k.dtype == "INTEGER"  # no ELSE: NULL group
    k = bind("SELECT COUNT(*) FROM ac GROUP BY CASE WHEN age < 30 THEN 'a' WHEN age < 40 "
             "THEN NULL WHEN age < 50 THEN 'a' ELSE 'b' END").keys[0]
    assert k.domain == ("a", "b", None)


def test_group_by_position_alias_and_duplicates():
    lq = bind(f"SELECT CASE WHEN age < 30 THEN 'y' ELSE 'o' END AS band, region, COUNT(*) {JOIN} "
              "GROUP BY band, 2, emc.region")
    assert [k.name for k in lq.keys] == ["band", "region"]
    assert [type(i.expr) for i in lq.items] == [KeyRef, KeyRef, AggCall]
    assert lq.items[1].expr.index == 1
    # A column named like the alias wins (DuckDB binds GROUP BY names to columns first).
    lq = bind("SELECT sex AS age, COUNT(*) FROM ac GROUP BY sex")
    assert lq.keys[0].expr == col("sex")


def test_group_keys_from_both_parties_and_groups_product():
    lq = bind(f"SELECT region, sex, COUNT(*) {JOIN} GROUP BY region, sex")
    assert [k.expr.parties for k in lq.keys] == [{"emc"}, {"ac"}]


def test_key_used_in_expressions_and_having():
    lq = bind(f"SELECT children + 1 AS c1, AVG(bmi) {JOIN} GROUP BY children "
              "HAVING children <> 3 AND COUNT(*) >= 5 ORDER BY c1 DESC")
    c1 = lq.items[0].expr
    assert isinstance(c1, AggOp) and c1.args[0] == KeyRef(0, bits=3, integral=True,
                                                          nullable=True)
    assert lq.items[0].dtype == "BIGINT"
    assert lq.having.op == "and" and lq.having.args[0].args[0] == c1.args[0]
    assert lq.order == (SortKey(0, True, False),)
    lq = bind(f"SELECT region AS r, COUNT(*) {JOIN} GROUP BY region HAVING r = 'northeast'")
    assert lq.having.args[0] == KeyRef(0, bits=0, nullable=True)


@pytest.mark.parametrize("sql, cls, words", [
    ("SELECT COUNT(*) FROM ac GROUP BY age", NotSupportedError,
     "GROUP BY key age has no public domain: declare the values of ac.age in the catalog"),
    ("SELECT COUNT(*) FROM ac GROUP BY age + 1", NotSupportedError,
     "has no public domain: declare the values of ac.age"),
    ("SELECT COUNT(*) FROM ac GROUP BY COALESCE(plan, sex)", NotSupportedError,
     "GROUP BY key COALESCE(plan, sex) has no public domain: declare the values of ac.plan"),
    (f"SELECT COUNT(*) {JOIN} GROUP BY CASE WHEN age > bmi THEN 1 ELSE 0 END", NotSupportedError,
     "reads columns of ac and emc: a group key must be computed by one party"),
    (f"SELECT COUNT(*) {JOIN} GROUP BY steps, region", NotSupportedError,
     "GROUP BY forms 1005 groups (steps (201) x region (5)), more than the 256 allowed"),
    ("SELECT COUNT(*) FROM ac GROUP BY id", BindError, "the key is never revealed"),
    ("SELECT COUNT(*) FROM ac GROUP BY 3", BindError, "GROUP BY position 3 is not in the select"),
    ("SELECT COUNT(*) FROM ac GROUP BY 1", BindError, "GROUP BY 1 refers to an aggregate"),
    ("SELECT age, COUNT(*) FROM ac GROUP BY sex", BindError,
     "column age must appear in the GROUP BY clause or be used in an aggregate function"),
    ("SELECT sex, age + 1, COUNT(*) FROM ac GROUP BY sex", BindError,
     "column age must appear in the GROUP BY clause"),
    ("SELECT COUNT(*) FROM ac GROUP BY sex HAVING age > 3", BindError,
     "column age must appear in the GROUP BY clause or be used in an aggregate function "
     "(in HAVING)"),
    ("SELECT COUNT(*) FROM ac HAVING SUM(age)", DataError, "HAVING needs a boolean"),
])
def test_group_by_refusals(sql, cls, words):
    refused(sql, cls, words)


def test_max_groups_is_the_limit():
    assert MAX_GROUPS == 256
    assert len(bind(f"SELECT COUNT(*) {JOIN} GROUP BY steps").keys[0].domain) == 201
    lq = bind(f"SELECT COUNT(*) {JOIN} GROUP BY sex, region, smoker")
    assert [len(k.domain) for k in lq.keys] == [3, 5, 3]
    refused(f"SELECT COUNT(*) {JOIN} GROUP BY sex, region, smoker, children", NotSupportedError,
            "GROUP BY forms 315 groups")


# --- ORDER BY, LIMIT ----------------------------------------------------------------------------


def test_order_by_name_alias_position_expression():
    lq = bind(f"SELECT region, COUNT(*) AS n, AVG(bmi) {JOIN} GROUP BY region "
              "ORDER BY n DESC, 1, avg(bmi) NULLS FIRST, region")
    assert lq.order == (SortKey(1, True, False), SortKey(0, False, False),
                        SortKey(2, False, True), SortKey(0, False, False))
    lq = bind(f"SELECT region, COUNT(*) {JOIN} GROUP BY region ORDER BY COUNT(*)")
    assert lq.order == (SortKey(1, False, False),)


def test_order_by_a_group_key_that_is_not_selected():
    lq = bind(f"SELECT COUNT(*), AVG(bmi) {JOIN} GROUP BY region, sex ORDER BY sex DESC, 1")
    assert lq.order == (SortKey(-1, True, False, key=1), SortKey(0, False, False))
    lq = bind(f"SELECT region, COUNT(*) {JOIN} GROUP BY region ORDER BY emc.region")
    assert lq.order == (SortKey(0, False, False),)  # selected: the select item


def test_regr_sums_and_averages():
    def call(sql):
        return item(f"SELECT {sql} {JOIN}")
    # REGR_*(y, x): age is y (7 bits), bmi is x (6 bits)
    assert [call(f"{f}(age, bmi)").bits for f in ("REGR_SXX", "REGR_SYY", "REGR_SXY",
                                                  "REGR_AVGX", "REGR_AVGY")] == [12, 14, 13, 6, 7]
    a = call("REGR_SXY(age, bmi) FILTER (WHERE smoker)")
    assert a.func == "REGR_SXY" and a.dtype == "DOUBLE" and a.nullable and a.filter is not None


def test_decimal_quantile_types_and_refusals():
    assert [i.dtype for i in bind("SELECT MEDIAN(price), QUANTILE_CONT(ABS(price), 0.1), "
                                  "MEDIAN(CAST(age AS DECIMAL(9,3))) FROM ac").items] == \
        ["DECIMAL(10,2)", "DECIMAL(10,2)", "DECIMAL(9,3)"]
    assert bind("SELECT MIN(price) * MAX(price) FROM ac").items[0].dtype == "DOUBLE"
    refused("SELECT MEDIAN(price * 2) FROM ac", NotSupportedError,
            "DuckDB computes it as a DECIMAL truncated to the scale of its argument")
    refused("SELECT QUANTILE_CONT(age * 1.5, 0.5) FROM ac", NotSupportedError,
            "cast the argument")
    assert bind("SELECT MEDIAN(charges * 1.5) FROM ac").items[0].dtype == "DOUBLE"
    refused("SELECT MEDIAN(price) + 1 FROM ac", NotSupportedError,
            "QUANTILE_CONT over DECIMAL(10,2) inside an expression (MEDIAN(price) + 1 in SELECT)")
    refused("SELECT COUNT(*) FROM ac HAVING MEDIAN(price) > 1", NotSupportedError,
            "inside an expression (MEDIAN(price) > 1 in HAVING)")
    wide = TableSchema("w", "ac", None, (ColumnSchema("d", "DECIMAL(18,2)", 30),))
    catalog = Catalog(CATALOG.parties, (wide,))
    with pytest.raises(NotSupportedError, match="values up to 2\\^30 .* truncates it toward "
                                                "zero to a multiple of 10\\^-2"):
        sql = "SELECT MEDIAN(d) FROM w"
        Binder(catalog, sql).bind_logical(sqlglot.parse_one(sql, read=MpcDialect))


def test_limit_offset():
    lq = bind(f"SELECT region, COUNT(*) {JOIN} GROUP BY region LIMIT 2 OFFSET 1")
    assert (lq.limit, lq.offset) == (2, 1)
    assert (bind("SELECT COUNT(*) FROM ac").limit, bind("SELECT COUNT(*) FROM ac").offset) == \
        (None, 0)


@pytest.mark.parametrize("sql, cls, words", [
    ("SELECT COUNT(*) FROM ac ORDER BY 2", BindError, "ORDER BY position 2 is not in the select"),
    ("SELECT COUNT(*) FROM ac ORDER BY SUM(age)", NotSupportedError,
     "must name an output column (by name, alias or position) or repeat a select item"),
    ("SELECT COUNT(*) FROM ac ORDER BY age", BindError, "column age must appear in the GROUP BY"),
])
def test_order_refusals(sql, cls, words):
    refused(sql, cls, words)


# --- planning refusals ----------------------------------------------------------------------------

REFUSALS = [
    ("SELECT COUNT(*) FROM ac WHERE sex = 1", DataError, "cannot compare a string with a number"),
    (f"SELECT COUNT(*) {JOIN} WHERE sex = region", NotSupportedError,
     "string comparison across parties in WHERE is not supported"),
    ("SELECT COUNT(*) FROM ac WHERE sex < 'm'", NotSupportedError,
     "ordering comparison < on strings in WHERE is not supported"),
    ("SELECT COUNT(*) FROM ac WHERE sex IN ('male', 2)", DataError,
     "cannot compare a string with a number"),
    ("SELECT SUM(sex) FROM ac", DataError,
     "column sex of ac is VARCHAR (non-numeric), SUM needs a numeric column"),
    ("SELECT MIN(sex) FROM ac", DataError, "MIN needs a numeric column"),
    ("SELECT SUM(sex + 1) FROM ac", DataError,
     "column sex of ac is VARCHAR (non-numeric), + needs a number"),
    ("SELECT COUNT(*) FROM ac WHERE sex * 2 > 1", DataError, "* needs a number (in WHERE)"),
    ("SELECT SUM(smoker + 1) FROM ac", DataError, "cast it: CAST(... AS INTEGER)"),
    ("SELECT AVG(smoker) FROM ac", DataError, "AVG needs a numeric column"),
    (f"SELECT SUM(age / bmi) {JOIN}", NotSupportedError,
     "division by bmi in SUM(age / bmi) is not supported: a row expression may only be divided "
     "by a nonzero number literal"),
    ("SELECT SUM(age / 0) FROM ac", ProgrammingError, "division by zero"),
    ("SELECT SUM(age) / 0 FROM ac", ProgrammingError, "division by zero"),
    ("SELECT SUM(age) / 0.0 FROM ac", ProgrammingError, "division by zero"),
    ("SELECT COUNT(*) FROM ac WHERE CAST(age AS VARCHAR) = 'a'", NotSupportedError,
     "only casts between numeric types"),
    ("SELECT SUM(CAST(sex AS INTEGER)) FROM ac", DataError, "CAST needs a number"),
    ("SELECT COUNT(*) FROM ac WHERE id > 3", BindError,
     "column id is the key of ac: the key is never revealed nor aggregated, so it cannot be "
     "used in WHERE"),
    ("SELECT SUM(id + 1) FROM ac", BindError, "the key is never revealed nor aggregated"),
    ("SELECT AVG(ac.id) FROM ac", BindError, "so AVG(ac.id) is refused"),
    ("SELECT COUNT(*) FROM ac WHERE age", DataError, "WHERE needs a boolean condition"),
    ("SELECT COUNT(*) FILTER (WHERE age + 1) FROM ac", DataError,
     "FILTER needs a boolean condition"),
    ("SELECT QUANTILE_CONT(age, 1.5) FROM ac", ProgrammingError,
     "the quantile of QUANTILE_CONT must be in [0, 1], not 1.5"),
    ("SELECT QUANTILE_CONT(age, -0.5) FROM ac", ProgrammingError, "must be in [0, 1]"),
    ("SELECT QUANTILE_CONT(age, age) FROM ac", ProgrammingError,
     "must be a number literal in [0, 1]"),
    ("SELECT COUNT(*) FROM ac WHERE smoker < true", NotSupportedError,
     "ordering comparison < on booleans"),
    (f"SELECT COUNT(*) {JOIN} WHERE CASE WHEN bmi > 1 THEN sex ELSE 'x' END = 'x'",
     NotSupportedError, "a string expression reading both parties"),
    ("SELECT SUM(CASE WHEN age > 1 THEN sex ELSE 1 END) FROM ac", DataError,
     "CASE branches mix a number and a string"),
    ("SELECT SUM(age) / age FROM ac", BindError, "column age must appear in the GROUP BY"),
    ("SELECT SUM(age) FROM ac GROUP BY smoker HAVING SUM(age) / smoker > 1", DataError,
     "smoker is a boolean, arithmetic needs a number"),
]


@pytest.mark.parametrize("sql, cls, words", REFUSALS, ids=[r[2][:40] for r in REFUSALS])
def test_planning_refusals(sql, cls, words):
    refused(sql, cls, words)


@pytest.mark.parametrize("sql, cls, words", REFUSALS, ids=[r[2][:40] for r in REFUSALS])
def test_refusals_through_the_grammar(sql, cls, words):
    """Through dialect.parse first: the grammar or the binder refuses, never silently binds."""
    with pytest.raises(NotSupportedError if cls is NotSupportedError else Exception) as info:
        Binder(CATALOG, sql).bind_logical(parse_query(sql).select)
    assert isinstance(info.value, (cls, NotSupportedError))


def test_refusals_never_quote_data():
    err = refused("SELECT COUNT(*) FROM ac GROUP BY age", NotSupportedError, "ac.age")
    assert "18" not in str(err)


# --- models -------------------------------------------------------------------------------------


@pytest.mark.parametrize("clause, words", [
    ("WHERE age > 3", "LASSO with WHERE or GROUP BY is bound by bind_logical_model"),
    ("GROUP BY smoker", "LASSO with WHERE or GROUP BY is bound by bind_logical_model"),
    ("HAVING COUNT(*) > 3", "LASSO with HAVING is not supported: a model's rows are its terms"),
    ("ORDER BY 1", "LASSO with ORDER BY is not supported: a model's rows are its terms"),
])
def test_models_keep_bind_and_refuse_clauses(clause, words):
    sql = f"SELECT LASSO(charges, age, alpha => 0.1) FROM ac {clause}"
    select = parse_query(sql).select
    assert Binder.is_model_query(select)
    with pytest.raises(NotSupportedError, match=words):
        Binder(CATALOG, sql).bind(select)


def test_models_are_not_logical_queries():
    sql = "SELECT LASSO(charges, age) FROM ac"
    bound = Binder(CATALOG, sql).bind(parse_query(sql).select)
    assert bound.aggregates[0].func == "LASSO"
    with pytest.raises(NotSupportedError, match="cannot be mixed"):
        Binder(CATALOG, sql).bind_logical(parse_query(sql).select)
    assert not Binder.is_model_query(parse_query("SELECT COUNT(*) FROM ac").select)


def test_expr_type_of_bound_expressions():
    assert expr_type(col("age")) == "BIGINT" and expr_type(col("price")) == "DECIMAL(10,2)"
    e = item("SELECT SUM(small + 1) FROM ac").args[0]
    assert expr_type(e) == "SMALLINT"  # an integer literal takes the column's type


def test_a_query_must_aggregate():
    refused("SELECT 1, 'x' FROM ac", NotSupportedError, "a query without aggregates would "
            "return the rows themselves")
    lq = bind("SELECT sex FROM ac GROUP BY sex")  # one row per present group
    assert lq.items[0].expr == KeyRef(0, bits=0, nullable=True)
    assert bind("SELECT 1, COUNT(*) FROM ac").items[0].expr == AggLit(1, bits=0, integral=True,
                                                                      nullable=False)


def test_having_names_a_select_alias():
    lq = bind("SELECT COUNT(age) AS j FROM ac HAVING j = 5")
    assert lq.having.op == "=" and lq.having.args[0] == lq.items[0].expr


def test_group_by_expression_of_declared_columns():
    k = bind(f"SELECT children + 1 AS c, COUNT(*) {JOIN} GROUP BY children + 1").keys[0]
    assert k.domain == (1, 2, 3, 4, 5, 6, None) and k.name == "c" and k.dtype == "BIGINT"
    k = bind(f"SELECT COUNT(*) {JOIN} GROUP BY COALESCE(region, 'other')").keys[0]
    assert k.domain == (*REGIONS, "other")  # never NULL: no NULL group
    k = bind(f"SELECT COUNT(*) {JOIN} GROUP BY CASE WHEN children > 2 THEN 3 ELSE children END"
             ).keys[0]
    assert k.domain == (0, 1, 2, 3, None)
    k = bind("SELECT COUNT(*) FROM ac GROUP BY CASE WHEN smoker THEN sex ELSE 'none' END").keys[0]
    assert set(k.domain) == {"none", "female", "male", None} and k.domain[-1] is None
    refused("SELECT COUNT(*) FROM ac GROUP BY age + 1", NotSupportedError,
            "declare the values of ac.age")
    refused(f"SELECT COUNT(*) {JOIN} GROUP BY CAST(children AS TINYINT) * 100",
            NotSupportedError, "cannot be computed from its columns' declared values")


@pytest.mark.parametrize("sql, words", [
    ("SELECT COUNT(age, charges) FROM ac",
     "COUNT takes one argument (COUNT(*) or COUNT(x)), not 2"),
    ("SELECT MIN(age, 2) FROM ac", "MIN takes one argument (MIN(x)), not 2"),
    ("SELECT REGR_COUNT(age) FROM ac", "REGR_COUNT takes two arguments (REGR_COUNT(y, x)), not 1"),
    ("SELECT QUANTILE_CONT(age) FROM ac", "QUANTILE_CONT takes two arguments"),
    ("SELECT SUM(*) FROM ac", "* is allowed only in COUNT(*)"),
])
def test_aggregate_arity(sql, words):
    refused(sql, ProgrammingError, words)


def test_distinct_aggregates_are_refused():
    refused("SELECT COUNT(DISTINCT age) FROM ac", NotSupportedError, "COUNT(DISTINCT ...)")
    refused("SELECT COUNT(*) FROM ac WHERE SUM(age) > 1", BindError,
            "aggregate SUM is not allowed in WHERE")
