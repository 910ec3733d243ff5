"""One error root in practice, through real party processes (issue 10, finding 6): what an
analyst or an administrator can cause comes back as an ``engine.Error`` subclass naming the
cause, with no traceback, and the parties keep serving."""

from __future__ import annotations

import math
import os

import pytest

import engine
from dialect.errors import ConfigError, ParseError, ProgrammingError
from dialect.parsing import MAX_NESTING
from tests.conftest import descendants, make_tables

pytestmark = pytest.mark.e2e

FAST = "SET join_protocol = 'masked'; "
JOIN = "FROM ac JOIN emc USING (id)"


@pytest.fixture(scope="module")
def fed(con):
    ac, emc = make_tables(30, 30, 24, seed=10)
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")
    return con


def no_traceback(e: BaseException) -> None:
    assert "Traceback" not in str(e) and 'File "' not in str(e)


def test_deep_nesting_through_execute(fed):
    sql = "SELECT SUM(" + "(" * 50 + "ac.age" + ")" * 50 + f") {JOIN}"
    with pytest.raises(ParseError) as info:
        fed.execute(sql)
    assert str(info.value) == (f"[ac] query nested too deeply (limit {MAX_NESTING}) "
                               f"(line 1, column {11 + MAX_NESTING})")
    no_traceback(info.value)
    assert fed.execute(f"SELECT COUNT(*) {JOIN}").fetchone() == (24,)  # still serving


@pytest.mark.parametrize("alpha, shown", [("1e-308", "1e-308"), ("5e-324", "5e-324"),
                                          ("1e400", "1E+400")])
def test_extreme_alpha_through_execute(fed, alpha, shown):
    with pytest.raises(ProgrammingError) as info:
        fed.execute(FAST + f"SELECT LASSO(charges, age, bmi, alpha => {alpha}) {JOIN}")
    assert str(info.value) == (
        f"[ac] option alpha of LASSO is out of range: {shown}; allowed: 1e-12 <= alpha <= 1e12 ("
        + ("a larger penalty leaves the range of the fixed-point solver)" if alpha == "1e400"
           else "a smaller penalty is below the resolution of the fixed-point solver; for no "
                "penalty use LINREG)"))
    no_traceback(info.value)


def test_huge_parameter_through_execute(fed):
    cur = fed.cursor()
    with pytest.raises(ProgrammingError) as info:
        cur.execute(FAST + f"SELECT LASSO(charges, age, bmi, alpha => ?) {JOIN}", [10**400])
    assert str(info.value).startswith("[ac] option alpha of LASSO is out of range: 1.000E+400; "
                                      "allowed: 1e-12 <= alpha <= 1e12")
    with pytest.raises(ProgrammingError, match=r"option max_iter of LASSO is out of range: "
                                               r"1\.000E\+400; allowed: 1 <= max_iter <= 1000"):
        cur.execute(FAST + f"SELECT LASSO(charges, age, bmi, alpha => 0.1, max_iter => ?) {JOIN}",
                    [10**400])


@pytest.mark.parametrize("alpha", ["1e-12", "1e12"])
def test_alpha_range_ends_fit(fed, alpha):
    # the ends of the documented range run to a result (no solver error) on raw-unit data
    rows = fed.execute(FAST + f"SELECT LASSO(charges, age, bmi, alpha => {alpha}) {JOIN}"
                       ).fetchall()
    assert [r[0] for r in rows] == ["intercept", "age", "bmi"]
    assert all(math.isfinite(r[1]) for r in rows)
    if alpha == "1e12":
        assert rows[1][1] == 0 and rows[2][1] == 0


def test_request_without_sql_names_the_field(fed):
    from engine.control import wire

    host, port = fed.federation.addresses["ac"]
    with pytest.raises(ProgrammingError) as info:
        wire.call(host, port, {"op": "query"}, None, party="ac", timeout=10,
                  ssl_context=fed.federation.ssl_context_for("ac"))
    assert "missing field 'sql'" in str(info.value)
    assert not isinstance(info.value, engine.InternalError)
    no_traceback(info.value)


def test_bad_policy_at_connect_starts_nothing(fed, tmp_path):
    before = len(descendants(os.getpid()))  # (each count includes its own ps process)
    with pytest.raises(ConfigError) as info:
        engine.connect(policies={"emc": {"min_intersection": -1}}, workdir=str(tmp_path / "w"))
    assert str(info.value) == "policy of emc: min_intersection must be an integer >= 0, not -1"
    assert isinstance(info.value, engine.ProgrammingError)
    assert len(descendants(os.getpid())) <= before  # no party process was started
    assert not (tmp_path / "w").exists()
