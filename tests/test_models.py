"""LASSO / RIDGE / LINREG as SQL aggregates across three real processes, vs scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Lasso, LinearRegression, Ridge

from dialect.errors import DataError, ProgrammingError
from engine.data.demo import insurance

pytestmark = pytest.mark.e2e


def insurance_split(seed: int = 0):
    """The publication's preprocessing: one-hot region, min-max scaling, 90 % training rows."""
    df = insurance()
    df = pd.concat([df.drop(columns="region"),
                    pd.get_dummies(df["region"], prefix="region", dtype=float)], axis=1)
    df = (df - df.min()) / (df.max() - df.min())
    rng = np.random.default_rng(seed)
    train = df.iloc[rng.permutation(len(df))[: int(0.9 * len(df))]].reset_index(drop=True)
    train.insert(0, "id", rng.choice(10**8, len(train), replace=False))
    ac = train[["id", "age", "sex", "smoker", "region_northeast", "region_northwest",
                "region_southeast", "region_southwest", "charges"]]
    emc = train[["id", "bmi", "children"]]
    return ac.sample(frac=1, random_state=1), emc.sample(frac=1, random_state=2), train


def objective(X, y, w, b, alpha):
    return 0.5 * np.mean((y - X @ w - b) ** 2) + alpha * np.abs(w).sum()


FAST = "SET join_protocol = 'masked'; "  # the Paillier path is covered by the insurance LASSO


def fit_secure(con, sql):
    rows = con.execute(sql).fetchall()
    assert rows[0][0] == "intercept"
    return rows[0][1], np.array([r[1] for r in rows[1:]]), [r[0] for r in rows[1:]]


FEATURES = ["age", "bmi", "children", "sex", "smoker", "region_northeast", "region_northwest",
            "region_southeast", "region_southwest"]


@pytest.fixture(scope="module")
def ins(con):
    """The session's embedded federation (conftest ``con``) with the insurance tables."""
    ac, emc, train = insurance_split()
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")
    return con, train


def test_lasso_insurance_matches_sklearn(ins):
    con, train = ins
    sql = (f"SELECT LASSO(charges, {', '.join(FEATURES)}, alpha => 0.001) "
           "FROM ac INNER JOIN emc USING (id)")
    b, w, terms = fit_secure(con, sql)
    assert terms == FEATURES
    X, y = train[FEATURES].to_numpy(), train["charges"].to_numpy()
    ref = Lasso(alpha=0.001, tol=1e-10, max_iter=100000).fit(X, y)
    assert abs(b - ref.intercept_) < 1e-4
    assert np.max(np.abs(w - ref.coef_)) < 1e-4
    assert abs(objective(X, y, w, b, 0.001) - objective(X, y, ref.coef_, ref.intercept_,
                                                         0.001)) < 1e-6


def test_ridge_and_linreg_insurance(ins):
    con, train = ins
    feats = ["age", "bmi", "children", "sex", "smoker"]
    X, y = train[feats].to_numpy(), train["charges"].to_numpy()
    b, w, _ = fit_secure(con, FAST + f"SELECT RIDGE(charges, {', '.join(feats)}, alpha => 1.0) "
                              "FROM ac JOIN emc USING (id)")
    ref = Ridge(alpha=1.0).fit(X, y)
    assert np.max(np.abs(np.r_[b, w] - np.r_[ref.intercept_, ref.coef_])) < 1e-4
    b, w, _ = fit_secure(con, FAST + f"SELECT LINREG(charges, {', '.join(feats)}) "
                              "FROM ac JOIN emc USING (id)")
    ref = LinearRegression().fit(X, y)
    assert np.max(np.abs(np.r_[b, w] - np.r_[ref.intercept_, ref.coef_])) < 1e-4


def test_target_at_the_other_party(ins):
    con, train = ins
    b, w, _ = fit_secure(con, FAST + "SELECT LINREG(emc.bmi, age, smoker, children) "
                              "FROM ac JOIN emc USING (id)")
    ref = LinearRegression().fit(train[["age", "smoker", "children"]], train["bmi"])
    assert np.max(np.abs(np.r_[b, w] - np.r_[ref.intercept_, ref.coef_])) < 1e-4


@pytest.fixture(scope="module")
def diabetes(con):
    """The session's embedded federation with the diabetes tables (after the insurance
    tests: registering replaces the tables)."""
    data = load_diabetes()
    X, y = data.data, data.target
    rng = np.random.default_rng(3)
    ids = rng.choice(10**7, len(y), replace=False)
    cols = [f"x{j}" for j in range(X.shape[1])]
    ac = pd.DataFrame(X[:, :5], columns=cols[:5]).assign(id=ids, y=y)
    emc = pd.DataFrame(X[:, 5:], columns=cols[5:]).assign(id=ids)
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc.sample(frac=1, random_state=4), party="emc", key="id")
    return con, X, y, cols


@pytest.mark.parametrize("alpha,standardize", [(0.1, False), (1.0, False), (1.0, True)])
def test_lasso_diabetes_raw_and_standardized(diabetes, alpha, standardize):
    con, X, y, cols = diabetes
    sql = (FAST + f"SELECT LASSO(y, {', '.join(cols)}, alpha => {alpha}, standardize => "
           f"{str(standardize).lower()}) FROM ac JOIN emc USING (id)")
    b, w, _ = fit_secure(con, sql)
    if standardize:
        mu, sd = X.mean(0), X.std(0)
        ref = Lasso(alpha=alpha, tol=1e-10, max_iter=100000).fit((X - mu) / sd, y)
        rw = ref.coef_ / sd
        rb = ref.intercept_ - mu @ rw
    else:
        ref = Lasso(alpha=alpha, tol=1e-10, max_iter=100000).fit(X, y)
        rw, rb = ref.coef_, ref.intercept_
    scale = max(1.0, np.max(np.abs(rw)))  # raw diabetes coefficients are in the hundreds
    assert np.max(np.abs(w - rw)) < 1e-4 * scale
    assert abs(b - rb) < 1e-4 * scale


def test_ridge_diabetes(diabetes):
    con, X, y, cols = diabetes
    b, w, _ = fit_secure(con, FAST + f"SELECT RIDGE(y, {', '.join(cols)}, alpha => 1.0) "
                              "FROM ac JOIN emc USING (id)")
    ref = Ridge(alpha=1.0).fit(X, y)
    assert np.max(np.abs(np.r_[b, w] - np.r_[ref.intercept_, ref.coef_])) < 1e-4 * max(
        1.0, np.max(np.abs(ref.coef_)))


def test_model_explain_and_policy(diabetes):
    con, *_ = diabetes
    text = con.explain("SELECT LASSO(y, x0, x5, alpha => 0.5) FROM ac JOIN emc USING (id)")
    assert "LASSO(ac.y, ac.x0, emc.x5, alpha => 0.5)" in text
    assert "2^" in text  # the public scales the catalog declares


def test_model_bad_input(diabetes):
    con, X, y, cols = diabetes
    with pytest.raises(ProgrammingError, match="also a feature"):
        con.execute("SELECT LASSO(y, x0, y) FROM ac JOIN emc USING (id)")
    with pytest.raises(ProgrammingError, match="alpha > 0"):
        con.execute("SELECT LASSO(y, x0, alpha => 0) FROM ac JOIN emc USING (id)")


def test_constant_feature_and_too_few_rows(con):
    rng = np.random.default_rng(5)
    ids = np.arange(1, 31)
    ac = pd.DataFrame({"id": ids, "y": rng.normal(size=30), "zero": 0.0,
                       "a": rng.normal(size=30)})
    emc = pd.DataFrame({"id": ids[:4], **{f"f{j}": rng.normal(size=4) for j in range(5)}})
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")
    with pytest.raises(DataError, match="feature ac.zero is all zero"):
        con.execute("SELECT LINREG(y, zero, a) FROM ac JOIN emc USING (id)")
    with pytest.raises(DataError, match="more features than rows"):
        con.execute("SELECT LASSO(y, a, f0, f1, f2, f3, f4, alpha => 0.1) "
                    "FROM ac JOIN emc USING (id)")
    # Constant only on the joined rows: detected inside MPC, one bit opened.
    emc2 = pd.DataFrame({"id": ids, "c": np.r_[np.ones(20), rng.normal(size=10)]})
    ac2 = ac.assign(id=np.r_[ids[:20], ids[:10] + 100])
    con.register("ac", ac2, party="ac", key="id")
    con.register("emc", emc2, party="emc", key="id")
    with pytest.raises(DataError, match="constant"):
        con.execute("SELECT LINREG(y, a, emc.c) FROM ac JOIN emc USING (id)")
