"""LASSO / RIDGE / LINREG with WHERE and GROUP BY over the private join (real three-process runs).

A model query with WHERE or GROUP BY is fitted per group on the rows the WHERE leaves with no
NULL in the model's columns.  Each secure model is compared with scikit-learn on the same rows
of the plaintext join (DuckDB's WHERE semantics: NULL is not kept), and every party's session
opened exactly the labels its plan lists.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Lasso, LinearRegression, Ridge

import engine
from tests.test_sql_disclosures_e2e import (
    ALL_FILTER,
    GROUPS,
    JOIN,
    MASKED,
    MIN_GROUP,
    POLICIES,
    _union,
    check,
    expect_opened,
    register,
)
from tests.test_sql_leakage import assert_same_views, recorded  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e

BITS = {p: {"constant-feature bit", "collinear bit"} for p in ("ac", "emc", "helper")}


def data(n_ac: int = 60, n_emc: int = 55, overlap: int = 45, seed: int = 11):
    """ac (age, charges, grp 0..2, region, smoker), emc (bmi, children, kid with NULLs);
    charges depend linearly on age, bmi and children (plus noise) so the fits are stable."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(1, 10_000_000), n_ac + n_emc - overlap, replace=False)
    emc_ids = np.concatenate([ids[:overlap], ids[n_ac:]])
    bmi = np.round(rng.uniform(16, 48, n_emc), 3)
    children = rng.integers(0, 5, n_emc)
    kid = pd.array([None if rng.random() < 0.15 else int(k) for k in rng.integers(0, 5, n_emc)],
                   dtype="Int64")
    emc = pd.DataFrame({"id": emc_ids, "bmi": bmi, "children": children, "kid": kid})
    age = rng.integers(18, 90, n_ac)
    by_id = dict(zip(emc_ids, bmi * 300 + children * 800, strict=True))
    extra = np.array([by_id.get(i, 5000.0) for i in ids[:n_ac]])
    charges = np.round(np.clip(2000 + 250 * age + extra + rng.normal(0, 1500, n_ac), 0, 65000),
                       2)
    ac = pd.DataFrame({"id": ids[:n_ac], "age": age, "charges": charges,
                       "grp": rng.integers(0, 3, n_ac),
                       "region": rng.choice(["north", "south", "east", "west"], n_ac),
                       "smoker": rng.random(n_ac) < 0.3})
    return ac, emc


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tdir = str(tmp_path_factory.mktemp("sql-models"))
    with engine.connect(policies=POLICIES, transcript_dir=tdir, key_bits=512) as con:
        ac, emc = data()
        register(con, ac, emc)
        yield con, tdir, {"ac": ac, "emc": emc}


def rows_of(tables: dict, where: str, cols: list[str]) -> pd.DataFrame:
    """The plaintext joined rows a WHERE leaves, with no NULL in ``cols`` (DuckDB)."""
    con = duckdb.connect()
    for name, frame in tables.items():
        con.register(name, frame)
    cond = " AND ".join([f"({where})"] + [f"{c} IS NOT NULL" for c in cols])
    return con.execute(f"SELECT {', '.join(cols)}, grp, kid {JOIN} WHERE {cond}").df()


def coefs(rows: list[tuple], key: tuple = ()) -> np.ndarray:
    n = len(key)
    return np.array([r[n + 1] for r in rows if tuple(r[:n]) == key])


def close(got: np.ndarray, ref: np.ndarray, tol: float) -> None:
    assert got.shape == ref.shape, (got, ref)
    assert np.abs(got - ref).max() <= tol * (1 + np.abs(ref).max()), (got, ref)


def test_linreg_with_a_one_party_where_matches_sklearn_and_opens_what_the_plan_says(fed):
    con, tdir, tables = fed
    rows, got, plan = check(con, tdir, MASKED + "SELECT LINREG(charges, age, bmi, children) "
                            f"{JOIN} WHERE age > 30")
    expect_opened(got, _union(ALL_FILTER, GROUPS, BITS))
    assert [r[0] for r in rows] == ["intercept", "age", "bmi", "children"]
    d = rows_of(tables, "age > 30", ["charges", "age", "bmi", "children"])
    ref = LinearRegression().fit(d[["age", "bmi", "children"]], d["charges"])
    close(coefs(rows), np.r_[ref.intercept_, ref.coef_], 1e-6)


def test_lasso_grouped_with_a_cross_party_where_and_nulls_matches_sklearn(fed):
    con, tdir, tables = fed
    sql = (MASKED + "SELECT grp, LASSO(charges, age, kid, alpha => 50.0) "
           f"{JOIN} WHERE ac.age > emc.bmi GROUP BY grp")
    rows, got, plan = check(con, tdir, sql)
    expect_opened(got, _union(ALL_FILTER, GROUPS))
    d = rows_of(tables, "ac.age > emc.bmi", ["charges", "age", "kid"])
    assert {r[0] for r in rows} == set(d["grp"])  # kid NULL rows are dropped, groups remain
    for g, part in d.groupby("grp"):
        ref = Lasso(alpha=50.0, tol=1e-12, max_iter=100_000).fit(
            part[["age", "kid"]].astype(float), part["charges"])
        close(coefs(rows, (g,)), np.r_[ref.intercept_, ref.coef_], 1e-4)


def test_ridge_grouped_suppresses_small_groups_and_matches_sklearn(fed):
    con, tdir, tables = fed
    sql = MASKED + f"SELECT kid, RIDGE(charges, age, bmi, alpha => 4.0) {JOIN} GROUP BY kid"
    rows = con.cursor().execute(sql).fetchall()
    d = rows_of(tables, "TRUE", ["charges", "age", "bmi"])
    d = d.assign(kid=d["kid"].astype(object).where(d["kid"].notna(), None))
    for k, part in d.groupby("kid", dropna=False):
        key = (None if pd.isna(k) else int(k),)
        got = coefs(rows, key)
        if len(part) < MIN_GROUP:  # emc's min_group_rows: the group is not output
            assert got.size == 0, (key, len(part))
            continue
        ref = Ridge(alpha=4.0).fit(part[["age", "bmi"]], part["charges"])
        close(got, np.r_[ref.intercept_, ref.coef_], 1e-6)


def test_paillier_join_model_with_where(fed):
    con, tdir, tables = fed
    sql = ("SET join_protocol = 'paillier'; SELECT LINREG(charges, age, bmi) "
           f"{JOIN} WHERE region <> 'north'")
    rows, got, _ = check(con, tdir, sql)
    expect_opened(got, _union(ALL_FILTER, GROUPS, BITS))
    d = rows_of(tables, "region <> 'north'", ["charges", "age", "bmi"])
    ref = LinearRegression().fit(d[["age", "bmi"]], d["charges"])
    close(coefs(rows), np.r_[ref.intercept_, ref.coef_], 1e-6)


def test_a_constant_feature_in_a_group_is_refused_and_the_server_keeps_serving(fed):
    con, _, _ = fed
    with pytest.raises(engine.DataError, match="a feature is constant .* in some group"):
        con.cursor().execute(MASKED + "SELECT grp, LINREG(charges, age, children) "
                             f"{JOIN} WHERE children = 2 GROUP BY grp")
    rows = con.cursor().execute(MASKED + f"SELECT COUNT(*) {JOIN}").fetchall()
    assert rows[0][0] > 0


@pytest.mark.parametrize("sql,match", [
    (f"SELECT grp, LASSO(charges, age) {JOIN} GROUP BY grp HAVING COUNT(*) > 2", "HAVING"),
    (f"SELECT grp, LASSO(charges, age) {JOIN} GROUP BY grp ORDER BY grp", "ORDER BY"),
    (f"SELECT COUNT(*), LASSO(charges, age) {JOIN} WHERE age > 2", "beside a model"),
])
def test_model_queries_refuse_what_they_cannot_do(fed, sql, match):
    con, _, _ = fed
    with pytest.raises(engine.NotSupportedError, match=match):
        con.cursor().execute(MASKED + sql)


# --- leakage: what each party receives does not depend on the hidden data ------------------

LEAKAGE = {
    "lasso-where-group-by": "SELECT grp, LASSO(charges, age, bmi, alpha => 20.0) "
                            f"{JOIN} WHERE age > 50 OR ac.charges > 1000 * emc.bmi GROUP BY grp",
    "linreg-nulls-presence": f"SELECT kid, LINREG(charges, age, bmi) {JOIN} GROUP BY kid",
}


@pytest.mark.leakage
@pytest.mark.parametrize("case", list(LEAKAGE))
def test_model_views_do_not_depend_on_hidden_values(recorded, case):  # noqa: F811
    """Two worlds with the same public metadata but different rows passing the WHERE, groups
    present or suppressed and NULLs: the same labels, messages and bytes for every party."""
    sql = MASKED + LEAKAGE[case]
    rows_a, va, _ = recorded("A", sql)
    rows_b, vb, _ = recorded("B", sql)
    assert isinstance(rows_a, list) and isinstance(rows_b, list), (rows_a, rows_b)
    assert rows_a != rows_b
    assert_same_views(va, vb)
    assert not {"result", "group_present"} & set(va["helper"]["opened"])


def test_not_null_columns_need_no_validity_bits_and_give_the_same_model(fed):
    """Columns declared NOT NULL at registration: the rows' weight is the WHERE's own column
    (no MPC AND), each of ac's columns carries it, and the model equals scikit-learn's."""
    con, tdir, tables = fed
    ac, emc = tables["ac"], tables["emc"]
    con.register("acn", ac, party="ac", key="id", bounds={"age": 128, "charges": 65536},
                 not_null=["age", "charges"])
    con.register("emcn", emc, party="emc", key="id", bounds={"bmi": 64, "children": 8},
                 not_null=["bmi", "children"])
    sql = (MASKED + "SELECT LINREG(charges, age, bmi, children) FROM acn JOIN emcn USING (id) "
           "WHERE age > 30")
    plan = con.explain(sql)
    assert "IS NULL" not in plan and "row program" not in plan, plan
    rows = con.cursor().execute(sql).fetchall()
    d = rows_of(tables, "age > 30", ["charges", "age", "bmi", "children"])
    ref = LinearRegression().fit(d[["age", "bmi", "children"]], d["charges"])
    close(coefs(rows), np.r_[ref.intercept_, ref.coef_], 1e-6)
    cols = {c[0]: c for t in con.tables() if t["name"] == "emcn" for c in t["columns"]}
    assert cols["bmi"][-1] is False and len(cols["id"]) == 3  # declared, and published
    bad = emc.assign(bmi=emc["bmi"].where(emc.index != 0))
    with pytest.raises(engine.DataError, match="emcx.bmi holds NULL values"):
        con.register("emcx", bad, party="emc", key="id", not_null=["bmi"])
