"""End-to-end: three real party processes over TCP, private join, secure aggregates vs DuckDB."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pytest

import engine
from tests.conftest import make_tables

pytestmark = pytest.mark.e2e

SQL = ("SELECT COUNT(*), AVG(ac.charges), SUM(emc.bmi), SUM(ac.delta), AVG(emc.children) "
       "FROM ac INNER JOIN emc USING (id)")


def plaintext(sql: str, **tables):
    con = duckdb.connect()
    for name, df in tables.items():
        con.register(name, df)
    cur = con.execute(sql)
    return [d[0] for d in cur.description], cur.fetchall()


def assert_rows_close(secure, plain, rel=1e-9, abs_=1e-6):
    assert len(secure) == len(plain)
    for srow, prow in zip(secure, plain, strict=True):
        for s, p in zip(srow, prow, strict=True):
            if p is None:
                assert s is None
            elif isinstance(p, int) and not isinstance(p, bool):
                assert s == p  # COUNT is exact
            else:
                assert math.isclose(s, float(p), rel_tol=rel, abs_tol=abs_), (s, p)


def run(con, sql, ac, emc):
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")
    cur = con.cursor()
    cur.execute(sql)
    return cur


@pytest.mark.parametrize("n_ac,n_emc,overlap", [(40, 40, 25), (45, 12, 9), (12, 45, 12)],
                         ids=["partial-overlap", "unequal-sizes", "subset"])
def test_join_aggregates_match_duckdb(con, n_ac, n_emc, overlap):
    ac, emc = make_tables(n_ac, n_emc, overlap, seed=n_ac * 100 + n_emc)
    cur = run(con, SQL, ac, emc)
    cols, plain = plaintext(SQL, ac=ac, emc=emc)
    assert [d[0] for d in cur.description] == cols
    rows = cur.fetchall()
    assert rows[0][0] == overlap
    assert_rows_close(rows, plain)


def test_no_overlap_is_count_zero_and_nulls(con):
    ac, emc = make_tables(20, 20, 0, seed=7)
    cur = run(con, SQL, ac, emc)
    _, plain = plaintext(SQL, ac=ac, emc=emc)
    assert plain == [(0, None, None, None, None)]
    assert cur.fetchall() == plain


def test_single_table_aggregates(con):
    ac, emc = make_tables(30, 10, 5, seed=3)
    sql = "SELECT COUNT(*), SUM(charges), AVG(age), AVG(delta) FROM ac"
    cur = run(con, sql, ac, emc)
    _, plain = plaintext(sql, ac=ac)
    assert_rows_close(cur.fetchall(), plain)


def test_string_ids_and_on_clause(con):
    ac, emc = make_tables(25, 25, 10, seed=11)
    ac["id"] = "P-" + ac["id"].astype(str)
    emc["id"] = "P-" + emc["id"].astype(str)
    sql = "SELECT COUNT(*) AS n, AVG(emc.bmi) AS mean_bmi FROM ac JOIN emc ON ac.id = emc.id"
    cur = run(con, sql, ac, emc)
    cols, plain = plaintext(sql, ac=ac, emc=emc)
    assert [d[0] for d in cur.description] == ["n", "mean_bmi"]
    assert_rows_close(cur.fetchall(), plain)


def test_cursor_api_and_dataframe(con):
    ac, emc = make_tables(20, 20, 12, seed=5)
    cur = run(con, "SELECT COUNT(*), AVG(emc.bmi) FROM ac INNER JOIN emc USING (id)", ac, emc)
    assert cur.rowcount == 1
    assert [d[1] for d in cur.description] == ["BIGINT", "DOUBLE"]
    row = cur.fetchone()
    assert row[0] == 12 and cur.fetchone() is None
    cur.execute("SELECT COUNT(*) AS n FROM ac INNER JOIN emc USING (id)")
    df = cur.df()
    assert list(df.columns) == ["n"] and int(df["n"][0]) == 12
    assert set(cur.stats) >= {"ac", "emc", "helper"}
    assert cur.stats["ac"]["bytes_sent"]["helper"] > 0


def test_explain_names_what_each_party_learns(con):
    ac, emc = make_tables(10, 10, 5, seed=1)
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")
    text = con.explain("SELECT AVG(charges) FROM ac INNER JOIN emc USING (id)")
    assert "PrivateJoin" in text and "Reveal to [ac, emc]" in text
    assert "ac learns: |ac ∩ emc|" in text and "the result" in text
    assert "helper learns:" in text


def test_register_from_csv_and_parquet_paths(con, tmp_path):
    ac, emc = make_tables(15, 15, 8, seed=9)
    ac.to_csv(tmp_path / "ac.csv", index=False)
    duckdb.connect().from_df(emc).write_parquet(str(tmp_path / "emc.parquet"))
    con.register("ac", tmp_path / "ac.csv", party="ac", key="id")
    con.register("emc", str(tmp_path / "emc.parquet"), party="emc", key="id")
    rows = con.execute("SELECT COUNT(*), SUM(emc.children) FROM ac JOIN emc USING (id)").fetchall()
    _, plain = plaintext("SELECT COUNT(*), SUM(emc.children) FROM ac JOIN emc USING (id)",
                         ac=ac, emc=emc)
    assert_rows_close(rows, plain)


def test_parameters_bind_as_literals(con):
    ac, emc = make_tables(10, 10, 5, seed=2)
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")
    with pytest.raises(engine.ProgrammingError):
        con.execute("SELECT COUNT(*) FROM ac", [1])  # no placeholder for the parameter


def test_values_keep_fixed_point_precision(con):
    ac, emc = make_tables(30, 30, 30, seed=4)
    ac["delta"] = np.linspace(-2**30, 2**30, 30)  # near the edge of the supported range
    sql = "SELECT SUM(ac.delta), AVG(ac.delta) FROM ac JOIN emc USING (id)"
    (total, mean), = run(con, sql, ac, emc).fetchall()
    exact = math.fsum(ac["delta"])  # DuckDB's float sum is less exact than the secure one here
    # Each owner shares v / 2^b (b = 30, the column's bound) with 32 fractional bits: a value is
    # off by at most 2^(b-33), a sum of m values by m times that (docs/sql.md, Precision).
    assert abs(total - exact) <= 30 * 2.0**(30 - 33)
    assert abs(mean - exact / 30) <= 2.0**(30 - 33)
    ac["delta"] = np.linspace(-2**10, 2**10, 30) + 1 / 3  # a tight bound: 2^(11-33) per value
    (total, mean), = run(con, sql, ac, emc).fetchall()
    exact = math.fsum(ac["delta"])
    assert abs(total - exact) <= 30 * 2.0**(11 - 33) and abs(mean - exact / 30) <= 2.0**-22


def test_each_party_keeps_its_own_duckdb_file(tmp_path):
    ac, emc = make_tables(10, 10, 5, seed=12)
    with engine.connect(workdir=str(tmp_path), policies={"ac": {"min_intersection": 0}}) as c:
        c.register("ac", ac, party="ac", key="id")
        c.register("emc", emc, party="emc", key="id")
        with pytest.raises(engine.ProgrammingError, match="helper"):
            c.register("x", ac, party="helper", key="id")
        tables = {t["name"]: t for t in c.tables()}
        assert tables["ac"]["party"] == "ac" and tables["ac"]["key"] == "id"
    ac_db = duckdb.connect(str(tmp_path / "ac.duckdb"), read_only=True)
    emc_db = duckdb.connect(str(tmp_path / "emc.duckdb"), read_only=True)
    assert ac_db.execute("SELECT count(*) FROM ac").fetchone()[0] == 10
    names = {r[0] for r in emc_db.execute("SHOW TABLES").fetchall()}
    assert "ac" not in names and "emc" in names
