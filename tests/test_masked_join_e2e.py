"""The masked private join (``SET join_protocol = 'masked'``) in real three-party runs
(three real party processes, tests/conftest.py)."""

from __future__ import annotations

import pytest

import engine
from dialect.errors import PolicyError
from tests.conftest import OPEN_POLICY, make_tables
from tests.test_federation import assert_rows_close, plaintext, run

pytestmark = pytest.mark.e2e

SET = "SET join_protocol = 'masked'; "
SQL = ("SELECT COUNT(*), AVG(ac.charges), SUM(emc.bmi), SUM(ac.delta), AVG(emc.children) "
       "FROM ac INNER JOIN emc USING (id)")


# --- real three-party runs ---------------------------------------------------------------------


@pytest.mark.parametrize("n_ac,n_emc,overlap", [(40, 40, 25), (45, 12, 9), (12, 45, 12)],
                         ids=["partial-overlap", "unequal-sizes", "subset"])
def test_masked_join_matches_duckdb_and_paillier(con, n_ac, n_emc, overlap):
    ac, emc = make_tables(n_ac, n_emc, overlap, seed=n_ac * 100 + n_emc + 1)
    cur = run(con, SET + SQL, ac, emc)
    cols, plain = plaintext(SQL, ac=ac, emc=emc)
    assert [d[0] for d in cur.description] == cols
    rows = cur.fetchall()
    assert rows[0][0] == overlap
    # each value is rounded to 2^(b-33) of its column's bound 2^b (b <= 16 here): docs/sql.md
    assert_rows_close(rows, plain, abs_=overlap * 2.0**(16 - 33))
    phases = set().union(*(cur.stats[p]["phases"] for p in ("ac", "emc", "helper")))
    assert not phases & {"encrypt", "decrypt"}  # no public-key operations
    # n rows x (32-byte hash + 16 bytes per shared value: ac's two columns and their validity
    # bits, + the program's resharings) plus the program's fixed MPC traffic (~18 kB): nothing
    # per row of Paillier size (512 bytes per ciphertext)
    assert cur.stats["ac"]["bytes_sent"]["helper"] < n_ac * 200 + 20000
    # the Paillier join shares the same values: equal up to the finish's probabilistic rounding
    assert_rows_close(run(con, SQL, ac, emc).fetchall(), rows, rel=1e-12, abs_=1e-9)


def test_masked_join_no_overlap(con):
    ac, emc = make_tables(20, 20, 0, seed=8)
    cur = run(con, SET + SQL, ac, emc)
    _, plain = plaintext(SQL, ac=ac, emc=emc)
    assert plain == [(0, None, None, None, None)]
    assert cur.fetchall() == plain


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM ac JOIN emc USING (id)",
    "SELECT AVG(charges), SUM(age) FROM ac JOIN emc USING (id)",
    "SELECT COUNT(*) AS n, AVG(emc.bmi) AS b FROM ac JOIN emc ON ac.id = emc.id",
], ids=["count-only", "left-columns-only", "right-columns-only"])
def test_masked_join_one_sided_columns(con, sql):
    ac, emc = make_tables(30, 25, 14, seed=12)
    ac["id"] = "P-" + ac["id"].astype(str)
    emc["id"] = "P-" + emc["id"].astype(str)
    cur = run(con, SET + sql, ac, emc)
    _, plain = plaintext(sql, ac=ac, emc=emc)
    assert_rows_close(cur.fetchall(), plain)


def test_explain_shows_the_masked_protocol(con):
    ac, emc = make_tables(10, 10, 5, seed=1)
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")
    text = con.explain(SET + "SELECT AVG(ac.charges), SUM(emc.bmi) FROM ac JOIN emc USING (id)")
    assert "PrivateJoin[masked]" in text
    assert "ac learns: |ac ∩ emc| (intersection size); |emc| (row count of emc" in text
    assert "emc learns: |ac ∩ emc| (intersection size); |ac| (row count of ac" in text
    assert "PrivateJoin[paillier]" in con.explain(
        "SELECT AVG(ac.charges) FROM ac JOIN emc USING (id)")


def test_masked_join_checks_the_minimum_intersection():
    policies = {**OPEN_POLICY, "emc": {"min_intersection": 5}}
    with engine.connect(policies=policies) as c:
        c.register("ac", make_tables(20, 20, 3, seed=6)[0], party="ac", key="id")
        c.register("emc", make_tables(20, 20, 3, seed=6)[1], party="emc", key="id")
        with pytest.raises(PolicyError, match="minimum of 5 rows"):
            c.execute(SET + "SELECT AVG(ac.charges) FROM ac JOIN emc USING (id)")
        ac, emc = make_tables(20, 20, 6, seed=6)
        c.register("ac", ac, party="ac", key="id")
        c.register("emc", emc, party="emc", key="id")
        assert c.execute(SET + "SELECT COUNT(*) FROM ac JOIN emc USING (id)").fetchall() == [(6,)]
