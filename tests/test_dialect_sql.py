"""The SQL grammar of issue 11: WHERE, GROUP BY, HAVING, ORDER BY, LIMIT, FILTER, row
expressions and the statistical aggregates (parsing only: no catalog, no MPC)."""

from __future__ import annotations

import re

import pytest
import sqlglot
from sqlglot import exp

from dialect import (
    AGGREGATE_FUNCTIONS,
    AGGREGATE_NAMES,
    MODEL_FUNCTIONS,
    SCALAR_FUNCTIONS,
    MpcDialect,
    UnsupportedError,
    canonical_name,
    parse,
)

JOIN = "FROM ac JOIN emc USING (id)"

ANALYST = [
    f"SELECT region, AVG(charges), COUNT(*) {JOIN} WHERE emc.bmi > 30 GROUP BY region "
    "HAVING COUNT(*) > 10 ORDER BY 2 DESC LIMIT 3",
    f"SELECT smoker, CORR(charges, bmi) {JOIN} GROUP BY smoker",
    "SELECT CASE WHEN age < 40 THEN 'young' ELSE 'old' END AS band, "
    f"STDDEV(charges) FILTER (WHERE children > 0) {JOIN} GROUP BY band",
]

ACCEPTED = ANALYST + [
    # clauses
    "SELECT COUNT(*) FROM ac WHERE age > 30",
    "SELECT COUNT(*) FROM ac AS a JOIN emc b ON a.id = b.id WHERE a.age >= 18 AND b.bmi < 40",
    "SELECT sex, smoker, COUNT(*) FROM ac GROUP BY sex, smoker",
    "SELECT sex FROM ac GROUP BY sex",
    "SELECT COUNT(*) FROM ac HAVING COUNT(*) > 5",
    "SELECT COUNT(age) AS j FROM ac HAVING j = 5",
    "SELECT sex, SUM(charges) AS s FROM ac GROUP BY sex ORDER BY s DESC NULLS FIRST, sex",
    "SELECT sex, COUNT(*) FROM ac GROUP BY sex ORDER BY COUNT(*) ASC NULLS LAST LIMIT 1",
    "SELECT sex, avg(charges) FROM ac GROUP BY sex ORDER BY AVG(Charges)",
    "SELECT COUNT(*) FROM ac LIMIT 0",
    "SELECT COUNT(*) FROM ac LIMIT 10 OFFSET 2",
    "SELECT COUNT(*) FROM ac OFFSET 1",
    "SELECT age + 1 AS a1, COUNT(*) FROM ac GROUP BY age + 1 ORDER BY age + 1",
    "SELECT sex, smoker, COUNT(*) FROM ac GROUP BY 1, 2 ORDER BY 1",
    "SELECT COUNT(*) FROM ac GROUP BY sex ORDER BY sex DESC",
    "SELECT REGR_SXX(charges, age), REGR_SYY(charges, age), REGR_SXY(charges, age), "
    "REGR_AVGX(charges, age), REGR_AVGY(charges, age) FILTER (WHERE age > 1) FROM ac",
    # aggregates
    "SELECT COUNT(*), COUNT(age), COUNT(1), SUM(age), AVG(age), MIN(age), MAX(age) FROM ac",
    "SELECT VAR_POP(age), VAR_SAMP(age), VARIANCE(age) FROM ac",
    "SELECT STDDEV_POP(age), STDDEV_SAMP(age), STDDEV(age) FROM ac",
    "SELECT COVAR_POP(age, bmi), COVAR_SAMP(age, bmi), CORR(age, bmi) " + JOIN,
    "SELECT REGR_SLOPE(charges, age), REGR_INTERCEPT(charges, age), REGR_R2(charges, age), "
    "REGR_COUNT(charges, age) FROM ac",
    "SELECT MEDIAN(charges), QUANTILE_CONT(charges, 0.9), QUANTILE_CONT(charges, 0), "
    "QUANTILE_CONT(charges, 1) FROM ac",
    "SELECT SUM(age) FILTER (WHERE smoker), COUNT(*) FILTER (WHERE age IS NULL) AS n FROM ac",
    "SELECT LASSO(charges, age, bmi, alpha => 0.001) " + JOIN,
    # arithmetic over aggregates, literals, aliases
    "SELECT SUM(charges) / COUNT(*), AVG(age) - AVG(bmi), 2 * MAX(age), -MIN(age) " + JOIN,
    "SELECT 1, 'x', NULL, TRUE FROM ac",
    "SELECT sex, COUNT(*) * 100 / 7 AS pct FROM ac GROUP BY sex",
    # row expressions
    "SELECT AVG(ac.charges * 2), SUM(-age), SUM(ABS(age - 40)), SUM(age / 2) " + JOIN,
    "SELECT SUM(CASE WHEN age < 40 THEN 1 WHEN age < 60 THEN 2 ELSE 3 END) FROM ac",
    "SELECT SUM(CASE children WHEN 0 THEN 1 ELSE 0 END) FROM ac",
    "SELECT SUM(COALESCE(bmi, 0)), AVG(CAST(age AS DOUBLE)), SUM(age::BIGINT) " + JOIN,
    "SELECT SUM(CAST(age AS DECIMAL(10, 2))), SUM(CAST(age AS TINYINT)), "
    "SUM(CAST(age AS HUGEINT)), AVG(CAST(age AS REAL)), AVG(CAST(age AS FLOAT)) FROM ac",
    "SELECT COUNT(*) FROM ac WHERE age BETWEEN 20 AND 30 OR NOT (age IN (1, -2, 3.5))",
    "SELECT COUNT(*) FROM ac WHERE region IN ('north', 'south') AND sex <> 'f'",
    "SELECT COUNT(*) FROM ac WHERE age IS NOT NULL AND (bmi IS NULL OR bmi != 2)",
    "SELECT COUNT(*) FROM ac WHERE age NOT BETWEEN 1 AND 2 AND age NOT IN (NULL, 3)",
    "SELECT COUNT(*) " + JOIN + " WHERE ac.age > emc.bmi * 2 + 1",
    "SELECT COUNT(*) FROM ac WHERE smoker = TRUE AND age = NULL",
    "SELECT COUNT(*) FROM ac WHERE smoker IS TRUE OR smoker IS NOT FALSE OR (age > 1) IS NULL",
    "SELECT CASE WHEN bmi > 30 THEN 1 ELSE 0 END AS obese, COUNT(*) FROM emc GROUP BY obese",
    "SELECT COUNT(*) FROM emc GROUP BY CASE WHEN bmi > 30 THEN 'high' ELSE 'low' END",
]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_accepted(sql: str) -> None:
    tree = parse(sql)
    assert isinstance(tree, exp.Select)
    assert not list(tree.find_all(exp.Anonymous))


@pytest.mark.parametrize("sql", ACCEPTED)
def test_round_trip(sql: str) -> None:
    """explain prints SQL: the printed form parses back to the same tree."""
    tree = parse(sql)
    assert parse(tree.sql(dialect=MpcDialect)) == tree
    for node in tree.expressions:
        inner = node.this if isinstance(node, exp.Alias) else node
        printed = inner.sql(dialect=MpcDialect)
        assert sqlglot.parse_one(f"SELECT {printed}", dialect=MpcDialect).expressions[0] == inner


# --- typed aggregates -------------------------------------------------------------------------

TYPED = [
    ("COUNT(*)", exp.Count, "COUNT"),
    ("COUNT(age)", exp.Count, "COUNT"),
    ("SUM(age)", exp.Sum, "SUM"),
    ("AVG(age)", exp.Avg, "AVG"),
    ("MIN(age)", exp.Min, "MIN"),
    ("MAX(age)", exp.Max, "MAX"),
    ("VAR_POP(age)", exp.VariancePop, "VAR_POP"),
    ("VAR_SAMP(age)", exp.Variance, "VAR_SAMP"),
    ("VARIANCE(age)", exp.Variance, "VAR_SAMP"),
    ("STDDEV_POP(age)", exp.StddevPop, "STDDEV_POP"),
    ("STDDEV_SAMP(age)", exp.StddevSamp, "STDDEV_SAMP"),
    ("STDDEV(age)", exp.Stddev, "STDDEV_SAMP"),
    ("COVAR_POP(age, bmi)", exp.CovarPop, "COVAR_POP"),
    ("COVAR_SAMP(age, bmi)", exp.CovarSamp, "COVAR_SAMP"),
    ("CORR(age, bmi)", exp.Corr, "CORR"),
    ("REGR_SLOPE(age, bmi)", exp.RegrSlope, "REGR_SLOPE"),
    ("REGR_INTERCEPT(age, bmi)", exp.RegrIntercept, "REGR_INTERCEPT"),
    ("REGR_R2(age, bmi)", exp.RegrR2, "REGR_R2"),
    ("REGR_COUNT(age, bmi)", exp.RegrCount, "REGR_COUNT"),
    ("REGR_SXX(age, bmi)", exp.RegrSxx, "REGR_SXX"),
    ("REGR_SYY(age, bmi)", exp.RegrSyy, "REGR_SYY"),
    ("REGR_SXY(age, bmi)", exp.RegrSxy, "REGR_SXY"),
    ("REGR_AVGX(age, bmi)", exp.RegrAvgx, "REGR_AVGX"),
    ("REGR_AVGY(age, bmi)", exp.RegrAvgy, "REGR_AVGY"),
    ("MEDIAN(age)", exp.Median, "MEDIAN"),
    ("QUANTILE_CONT(age, 0.25)", exp.PercentileCont, "QUANTILE_CONT"),
    ("LASSO(charges, age)", MODEL_FUNCTIONS[0], "LASSO"),
    ("RIDGE(charges, age)", MODEL_FUNCTIONS[1], "RIDGE"),
    ("LINREG(charges, age)", MODEL_FUNCTIONS[2], "LINREG"),
]


@pytest.mark.parametrize(("call", "cls", "name"), TYPED, ids=[t[0] for t in TYPED])
def test_aggregates_are_typed(call: str, cls: type, name: str) -> None:
    node = parse(f"SELECT {call} FROM ac").expressions[0]
    assert type(node) is cls and isinstance(node, exp.AggFunc)
    assert canonical_name(node) == name
    assert parse(f"SELECT {call.lower()} FROM ac").expressions[0] == node


def test_aggregate_tables() -> None:
    assert set(AGGREGATE_NAMES) == set(AGGREGATE_FUNCTIONS)
    assert set(SCALAR_FUNCTIONS) | set(MODEL_FUNCTIONS) == set(AGGREGATE_FUNCTIONS)
    assert not set(SCALAR_FUNCTIONS) & set(MODEL_FUNCTIONS)
    assert {cls for _, cls, _ in TYPED} == set(AGGREGATE_FUNCTIONS)
    with pytest.raises(KeyError):
        canonical_name(exp.Abs(this=exp.column("x")))


def test_argument_shapes() -> None:
    corr = parse("SELECT CORR(ac.age, emc.bmi) " + JOIN).expressions[0]
    assert corr.this.sql() == "ac.age" and corr.expression.sql() == "emc.bmi"
    slope = parse("SELECT REGR_SLOPE(charges, age) FROM ac").expressions[0]
    assert (slope.this.name, slope.expression.name) == ("charges", "age")  # REGR_*(y, x)
    q = parse("SELECT QUANTILE_CONT(age, 0.25) FROM ac").expressions[0]
    assert q.this.name == "age" and q.expression.to_py() == 0.25
    filt = parse("SELECT SUM(age) FILTER (WHERE smoker) FROM ac").expressions[0]
    assert isinstance(filt, exp.Filter) and isinstance(filt.this, exp.Sum)
    assert isinstance(filt.expression, exp.Where) and filt.expression.this.name == "smoker"


def test_clauses_are_in_the_tree() -> None:
    tree = parse(ANALYST[0])
    assert isinstance(tree.args["where"].this, exp.GT)
    assert [k.name for k in tree.args["group"].expressions] == ["region"]
    assert isinstance(tree.args["having"].this, exp.GT)
    (ordered,) = tree.args["order"].expressions
    assert ordered.this.to_py() == 2 and ordered.args["desc"] is True
    assert tree.args["limit"].expression.to_py() == 3


# --- refusals ---------------------------------------------------------------------------------

REFUSED = [
    # (sql, construct, (line, column))
    ("SELECT DISTINCT sex FROM ac GROUP BY sex", "DISTINCT", (1, 8)),
    ("SELECT SUM(DISTINCT age) FROM ac", "SUM(DISTINCT ...)", (1, 12)),
    ("SELECT COUNT(DISTINCT age) FROM ac", "COUNT(DISTINCT ...)", (1, 14)),
    ("SELECT AVG(age) OVER (PARTITION BY sex) FROM ac", "window function (OVER)", (1, 8)),
    ("SELECT COUNT(*) FROM ac WHERE SUM(age) OVER () > 1", "window function (OVER)", (1, 31)),
    ("SELECT COUNT(*) FROM ac WHERE age > (SELECT 1)", "subquery", (1, 38)),
    ("SELECT COUNT(*) FROM ac WHERE age IN (SELECT age FROM emc)", "subquery", (1, 39)),
    ("SELECT COUNT(*) FROM ac WHERE EXISTS (SELECT 1)", "subquery", (1, 39)),
    ("SELECT COUNT(*) FROM ac WHERE region LIKE 'n%'", "LIKE", (1, 31)),
    ("SELECT COUNT(*) FROM ac WHERE region ILIKE 'n%'", "ILIKE", (1, 31)),
    ("SELECT region || 'x', COUNT(*) FROM ac GROUP BY region", "|| (string concatenation)",
     (1, 8)),
    ("SELECT UPPER(region), COUNT(*) FROM ac GROUP BY region", "function UPPER", (1, 8)),
    ("SELECT SUM(AVG(age)) FROM ac", "aggregate AVG inside SUM", (1, 12)),
    ("SELECT VARIANCE(1 + MAX(age)) FROM ac", "aggregate MAX inside VARIANCE", (1, 21)),
    ("SELECT SUM(age) FILTER (WHERE COUNT(*) > 1) FROM ac", "aggregate COUNT inside FILTER of SUM",
     (1, 31)),
    ("SELECT COUNT(*) FROM ac WHERE AVG(age) > 1", "aggregate AVG in WHERE", (1, 31)),
    ("SELECT COUNT(*) FROM ac GROUP BY MAX(age)", "aggregate MAX in GROUP BY", (1, 34)),
    ("SELECT COUNT(*) FROM ac LIMIT 1 + 1", "LIMIT expression", (1, 31)),
    ("SELECT COUNT(*) FROM ac LIMIT -1", "LIMIT expression", (1, 32)),
    ("SELECT COUNT(*) FROM ac LIMIT 2.5", "LIMIT expression", (1, 31)),
    ("SELECT COUNT(*) FROM ac LIMIT ALL", "LIMIT expression", (1, 25)),
    ("SELECT COUNT(*) FROM ac LIMIT 1 OFFSET age", "OFFSET expression", (1, 40)),
    ("SELECT COUNT(*) FROM ac LIMIT 10%", "LIMIT PERCENT", (1, 25)),
    ("SELECT COUNT(*) FROM ac FETCH FIRST 3 ROWS ONLY", "FETCH", (1, 25)),
    ("SELECT COUNT(*) FROM ac UNION SELECT COUNT(*) FROM emc", "UNION", (1, 25)),
    ("SELECT COUNT(*) FROM ac INTERSECT SELECT COUNT(*) FROM emc", "INTERSECT", (1, 25)),
    ("SELECT FOO(age) FROM ac", "function FOO", (1, 8)),
    ("SELECT COUNT(*) FROM ac WHERE bar(age) > 1", "function BAR", (1, 31)),
    ("SELECT MODE(age) FROM ac", "function MODE", (1, 8)),
    ("SELECT QUANTILE(age, 0.5) FROM ac", "function QUANTILE", (1, 8)),
    ("SELECT QUANTILE_DISC(age, 0.5) FROM ac", "function QUANTILE_DISC", (1, 8)),
    ("SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY age) FROM ac", "WITHIN GROUP", (1, 8)),
    ("SELECT QUANTILE_CONT(age, [0.1, 0.9]) FROM ac", "QUANTILE_CONT with a list of quantiles",
     (1, 27)),
    ("SELECT QUANTILE_CONT(age, 1.5) FROM ac", "QUANTILE_CONT quantile outside [0, 1]", (1, 27)),
    ("SELECT QUANTILE_CONT(age, bmi) FROM ac", "QUANTILE_CONT with a non-literal quantile",
     (1, 27)),
    ("SELECT QUANTILE_CONT(age) FROM ac", "QUANTILE_CONT without a quantile", (1, 8)),
    ("SELECT SUM(age ORDER BY bmi) FROM ac", "ORDER BY inside SUM", (1, 16)),
    ("SELECT MIN(age, 2) FROM ac", "MIN with several arguments", (1, 17)),
    ("SELECT COUNT(age, bmi) FROM ac", "COUNT with several arguments", (1, 19)),
    ("SELECT age FROM ac", "raw column age in SELECT", (1, 8)),
    ("SELECT COUNT(*) FROM ac HAVING age > 1", "raw column age in HAVING", (1, 32)),
    ("SELECT COUNT(*) FROM ac QUALIFY COUNT(*) > 1", "QUALIFY", (1, 25)),
    ("SELECT SUM(age) FROM ac WINDOW w AS (ORDER BY age)", "WINDOW", (1, 25)),
    ("SELECT COUNT(*) FROM ac GROUP BY ALL", "GROUP BY ALL", (1, 25)),
    ("SELECT COUNT(*) FROM ac GROUP BY ROLLUP (sex)", "ROLLUP", (1, 34)),
    ("SELECT COUNT(*) FROM ac GROUP BY CUBE (sex)", "CUBE", (1, 34)),
    ("SELECT COUNT(*) FROM ac GROUP BY 0", "GROUP BY position 0", (1, 34)),
    ("SELECT COUNT(*) FROM ac GROUP BY 1.5", "constant GROUP BY key", (1, 34)),
    ("SELECT COUNT(*) FROM ac GROUP BY 'a'", "constant GROUP BY key", (1, 34)),
    ("SELECT COUNT(*) FROM ac ORDER BY ALL", "ORDER BY ALL", (1, 25)),
    ("SELECT COUNT(*) FROM ac ORDER BY 0", "ORDER BY constant", (1, 34)),
    ("SELECT COUNT(*) FROM ac ORDER BY 'x'", "ORDER BY constant", (1, 34)),
    ("SELECT COUNT(*) FROM ac ORDER BY SUM(age)", "ORDER BY expression that is not a select item",
     (1, 34)),
    ("SELECT SUM(age / bmi) FROM ac", "division by a row expression", (1, 18)),
    ("SELECT SUM(age % 2) FROM ac", "% (modulo)", (1, 12)),
    ("SELECT SUM(age // 2) FROM ac", "// (integer division)", (1, 12)),
    ("SELECT SUM(TRY_CAST(age AS INTEGER)) FROM ac", "TRY_CAST", (1, 12)),
    ("SELECT SUM(CAST(age AS VARCHAR)) FROM ac", "CAST to TEXT", (1, 12)),
    ("SELECT SUM(CAST(age AS UBIGINT)) FROM ac", "CAST to UBIGINT", (1, 12)),
    ("SELECT COUNT(*) FROM ac WHERE CAST(age AS DATE) > 1", "CAST to DATE", (1, 31)),
    ("SELECT COUNT(*) FROM ac WHERE age IS 1", "IS 1", (1, 31)),
    ("SELECT COUNT(*) FROM ac WHERE age IS DISTINCT FROM 1", "IS DISTINCT FROM", (1, 31)),
    ("SELECT COUNT(*) FROM ac WHERE age IN (1, bmi)", "IN with a non-literal value", (1, 42)),
    ("SELECT COUNT(*) FROM ac WHERE age BETWEEN SYMMETRIC 1 AND 2", "BETWEEN SYMMETRIC",
     (1, 31)),
    ("SELECT LASSO(charges, age) FILTER (WHERE age > 1) FROM ac", "FILTER on LASSO", (1, 28)),
    ("SELECT LASSO(charges, age) + 1 FROM ac", "LASSO in an expression", (1, 8)),
    ("SELECT COUNT(*) FROM ac HAVING RIDGE(charges, age) > 1", "RIDGE in HAVING", (1, 32)),
    ("SELECT LINREG(charges, age * 2) FROM ac", "expression age * 2 as argument of LINREG",
     (1, 24)),
    ("SELECT SUM(*) FROM ac", "* outside COUNT", (1, 12)),
    ("SELECT COUNT(*) FROM ac WHERE age IN ()", "empty IN list", (1, 31)),
    ("SELECT SUM(age IGNORE NULLS) FROM ac", "IGNORE NULLS", (1, 8)),
    ("SELECT ANY_VALUE(age) FROM ac", "function ANY_VALUE", (1, 8)),
    ("SELECT COUNT(age) AS j FROM ac HAVING k = 5", "raw column k in HAVING", (1, 39)),
]


def _position(message: str) -> tuple[int, int]:
    m = re.search(r"\(line (\d+), column (\d+)\)", message)
    assert m, f"no position in {message!r}"
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize(("sql", "construct", "pos"), REFUSED, ids=[r[1] for r in REFUSED])
def test_refused(sql: str, construct: str, pos: tuple[int, int]) -> None:
    with pytest.raises(UnsupportedError) as info:
        parse(sql)
    err = info.value
    assert err.construct == construct
    assert (err.line, err.col) == pos == _position(str(err))


def test_order_by_an_aggregate_that_is_not_selected_says_add_it() -> None:
    with pytest.raises(UnsupportedError, match=r"\); only the output columns are opened: add "
                                               "it to SELECT, or order by an output column"):
        parse("SELECT sex, SUM(age) FROM ac GROUP BY sex ORDER BY COUNT(age)")


def test_nested_aggregate_message() -> None:
    with pytest.raises(UnsupportedError,
                       match=r"^nested aggregate: AVG inside SUM is not supported \(line 1"):
        parse("SELECT SUM(AVG(age)) FROM ac")
    with pytest.raises(UnsupportedError, match="WHERE filters rows before aggregation"):
        parse("SELECT COUNT(*) FROM ac WHERE COUNT(*) > 1")


def test_refusal_positions_across_lines() -> None:
    sql = "SELECT region, COUNT(*)\nFROM ac\nWHERE age > 1\nGROUP BY region\nLIMIT 1 + 2"
    with pytest.raises(UnsupportedError) as info:
        parse(sql)
    assert (info.value.line, info.value.col, info.value.construct) == (5, 7, "LIMIT expression")


def test_first_refusal_in_the_text_wins() -> None:
    with pytest.raises(UnsupportedError) as info:
        parse("SELECT SUM(age % 2) FROM ac WHERE region LIKE 'x' LIMIT 1 + 1")
    assert info.value.construct == "% (modulo)"
