"""Hand-written analyst queries (issue 11) on the bundled insurance data, secure vs DuckDB.

The Medical Costs data split between the insurer ``ac`` (age, sex, smoker, region, charges) and
the hospital ``emc`` (bmi, children), registered with the declared domains of
``engine.data.demo.DOMAINS`` (region, sex, smoker, children).  Each query runs through the
embedded federation with the masked join and through DuckDB on the plaintext tables; results
must agree row by row: group keys and counts exactly, other values within ``REL`` of their
scale (the public bound of what they measure: charges |x| <= 2^16, bmi and age <= 2^6, so a
variance of charges is measured against 2^32).
"""

from __future__ import annotations

import math

import pytest

from engine.data.demo import plaintext, register, split

pytestmark = pytest.mark.e2e

REL = 2.0**-30
CHARGES, BMI, AGE = 2.0**16, 2.0**6, 2.0**6
JOIN = "ac JOIN emc USING (id)"
AGE_GROUP = ("CASE WHEN age < 30 THEN '18-29' WHEN age < 50 THEN '30-49' ELSE '50+' END")

#: (SQL, the scale of each output column: None = exact)
QUERIES = {
    "charges by smoker and region": (
        f"SELECT smoker, region, COUNT(*) AS n, AVG(charges) AS avg_charges, "
        f"STDDEV(charges) AS sd FROM {JOIN} GROUP BY smoker, region ORDER BY smoker, region",
        (None, None, None, CHARGES, "sd")),
    "bmi filter": (
        f"SELECT COUNT(*) AS n, AVG(charges), SUM(charges) FROM {JOIN} WHERE bmi > 30",
        (None, CHARGES, "sum")),
    "age buckets": (
        f"SELECT {AGE_GROUP} AS age_group, COUNT(*), AVG(charges), MEDIAN(charges) "
        f"FROM {JOIN} GROUP BY age_group ORDER BY age_group",
        (None, None, CHARGES, CHARGES)),
    "smoker premium by region": (
        f"SELECT region, AVG(charges) FILTER (WHERE smoker = 1) - AVG(charges) FILTER "
        f"(WHERE smoker = 0) AS premium FROM {JOIN} GROUP BY region ORDER BY region",
        (None, 2 * CHARGES)),
    "children of people with a mid bmi": (
        f"SELECT children, COUNT(*), AVG(charges), MIN(charges), MAX(charges) FROM {JOIN} "
        "WHERE bmi BETWEEN 25 AND 35 GROUP BY children ORDER BY children",
        (None, None, CHARGES, "value", "value")),
    "regression statistics of non-smokers": (
        f"SELECT CORR(charges, bmi), REGR_SLOPE(charges, age), REGR_INTERCEPT(charges, age), "
        f"REGR_R2(charges, age), COVAR_SAMP(charges, age) FROM {JOIN} WHERE smoker = 0",
        (1.0, CHARGES, 4 * CHARGES, 1.0, CHARGES * AGE)),
    "variance by sex and smoker, large groups": (
        f"SELECT sex, smoker, VAR_SAMP(bmi) AS v, QUANTILE_CONT(charges, 0.9) AS p90 FROM {JOIN} "
        "GROUP BY sex, smoker HAVING COUNT(*) >= 20 ORDER BY sex, smoker",
        (None, None, BMI * BMI, CHARGES)),
    "cross-party filter": (
        f"SELECT COUNT(*), AVG(charges) FROM {JOIN} WHERE bmi > age OR (children >= 3 AND "
        "smoker = 1)",
        (None, CHARGES)),
    "obese southerners by smoker": (
        f"SELECT smoker, COUNT(*) AS n, AVG(charges) AS avg FROM {JOIN} WHERE region IN "
        "('southeast', 'southwest') AND bmi >= 30 GROUP BY smoker ORDER BY avg DESC",
        (None, None, CHARGES)),
    "one table: the insurer's regions": (
        "SELECT region, COUNT(*), SUM(charges), STDDEV_POP(age) FROM ac GROUP BY region "
        "ORDER BY region",
        (None, None, "sum", AGE)),
}


@pytest.fixture(scope="module")
def fed():
    import engine

    ac, emc = split()
    con = engine.connect()  # default policies (min_intersection 10)
    register(con, ac, emc)
    yield con, {"ac": ac, "emc": emc}
    con.close()


def _tolerance(scale, exp: float, n_rows: int) -> float:
    if scale == "sd":  # sqrt of a variance known within REL * CHARGES^2
        tv = REL * CHARGES**2
        return min(math.sqrt(tv), tv / exp) if exp else math.sqrt(tv)
    if scale == "sum":  # exact sum of values each encoded within 2^(16-33)
        return n_rows * 2.0**(16 - 32) + 1e-9 * abs(exp)
    if scale == "value":  # a data value (MIN/MAX), one fixed-point unit
        return 2.0**(16 - 31)
    return REL * scale


def check(con, tables, sql: str, scales) -> None:
    _, expected = plaintext(sql, tables)
    cur = con.execute("SET join_protocol = 'masked'; " + sql)
    got = cur.fetchall()
    cols, _ = plaintext(sql, tables)
    assert [d[0] for d in cur.description] == cols, sql
    assert len(got) == len(expected), f"{sql}\n  mpcsql {got}\n  duckdb {expected}"
    n = len(split()[0])
    for g_row, e_row in zip(got, expected, strict=True):
        for g, e, scale in zip(g_row, e_row, scales, strict=True):
            if e is None or scale is None:
                assert g == e, f"{sql}\n  mpcsql {g_row}\n  duckdb {e_row}"
                continue
            tol = _tolerance(scale, e, n)
            assert isinstance(g, float) and abs(g - e) <= tol, (
                f"{sql}\n  |{g} - {e}| = {abs(g - e):.3g} > {tol:.3g}\n  mpcsql {g_row}\n"
                f"  duckdb {e_row}")


@pytest.mark.parametrize("name", list(QUERIES))
def test_analyst_query_equals_duckdb(fed, name):
    con, tables = fed
    sql, scales = QUERIES[name]
    check(con, tables, sql, scales)


def test_small_groups_are_suppressed():
    """With min_group_rows = 10 at the hospital, a group of fewer rows is absent (DuckDB's
    answer with HAVING COUNT(*) >= 10), and explain says what is opened."""
    import engine

    ac, emc = split()
    tables = {"ac": ac, "emc": emc}
    with engine.connect(policies={"emc": {"min_group_rows": 10}}) as con:
        register(con, ac, emc)
        sql = (f"SELECT region, children, COUNT(*), AVG(charges) FROM {JOIN} WHERE smoker = 1 "
               "GROUP BY region, children ORDER BY region, children")
        _, expected = plaintext(sql.replace("ORDER BY", "HAVING COUNT(*) >= 10 ORDER BY"),
                                tables)
        _, everything = plaintext(sql, tables)
        assert 0 < len(expected) < len(everything)  # the test means something
        got = con.execute("SET join_protocol = 'masked'; " + sql).fetchall()
        assert [r[:3] for r in got] == [r[:3] for r in expected]
        for g, e in zip(got, expected, strict=True):
            assert abs(g[3] - e[3]) <= REL * CHARGES
        text = con.explain(sql)
        assert "min_group_rows" in text
