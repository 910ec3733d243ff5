"""The mpcsql command on real CSV files (three processes, 2048-bit keys)."""

from __future__ import annotations

import json

import duckdb
import pytest

from tests.conftest import make_tables
from tests.test_cli import mpcsql
from tests.test_progress_e2e import BAR, _env

pytestmark = pytest.mark.e2e


def test_query_and_explain_on_csv_files(tmp_path):
    ac, emc = make_tables(30, 25, 15, seed=31)
    ac.to_csv(tmp_path / "ac.csv", index=False)
    emc.to_csv(tmp_path / "emc.csv", index=False)
    sql = "SELECT COUNT(*) AS n, AVG(emc.bmi) AS bmi FROM ac JOIN emc USING (id)"
    tables = ["--table", f"ac={tmp_path / 'ac.csv'}", "--table", f"emc={tmp_path / 'emc.csv'}"]
    out = mpcsql("query", sql, *tables, "--format", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    con = duckdb.connect()
    con.register("ac", ac)
    con.register("emc", emc)
    n, bmi = con.execute(sql).fetchone()
    assert got[0]["n"] == n and abs(got[0]["bmi"] - bmi) < 1e-6
    out = mpcsql("explain", sql, *tables)
    assert out.returncode == 0 and "ac learns:" in out.stdout


def test_errors_exit_nonzero_with_the_cause(tmp_path):
    ac, emc = make_tables(10, 10, 5, seed=32)
    ac.to_csv(tmp_path / "ac.csv", index=False)
    emc.to_csv(tmp_path / "emc.csv", index=False)
    out = mpcsql("query", "SELECT age FROM ac", "--table", f"ac={tmp_path / 'ac.csv'}")
    assert out.returncode == 2
    assert "UnsupportedError" in out.stderr and "line 1" in out.stderr


def test_demo_runs_and_matches_duckdb():
    """Also the piped half of test_progress_e2e's demo test: piped into a file (with a TERM
    that would allow a bar on a terminal), the demo prints no progress bar and no carriage
    return."""
    out = mpcsql("demo", env=_env())
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stdout + out.stderr and not BAR.search(out.stdout + out.stderr)
    assert "Plaintext DuckDB" in out.stdout and "ac learns:" in out.stdout
    diff = float(out.stdout.split("max |secure - plaintext| = ")[1].split()[0])
    assert diff < 1e-6
    diff = float(out.stdout.split("max |secure - scikit-learn| = ")[1].split()[0])
    assert diff < 1e-3  # raw units: coefficients in the hundreds to tens of thousands


def test_grouped_model_and_sql_with_declared_domains(tmp_path):
    """WHERE, GROUP BY over a domain declared with --domain, and a grouped LINREG, from the CLI."""
    ac, emc = make_tables(40, 35, 30, seed=33)
    ac["grp"] = [i % 3 for i in range(len(ac))]
    ac.to_csv(tmp_path / "ac.csv", index=False)
    emc.to_csv(tmp_path / "emc.csv", index=False)
    tables = ["--table", f"ac={tmp_path / 'ac.csv'}", "--table", f"emc={tmp_path / 'emc.csv'}",
              "--domain", "ac.grp=0..2"]
    con = duckdb.connect()
    con.register("ac", ac)
    con.register("emc", emc)
    sql = ("SET join_protocol = 'masked'; SELECT grp, COUNT(*) AS n, AVG(emc.bmi) AS b "
           "FROM ac JOIN emc USING (id) WHERE emc.bmi > 20 GROUP BY grp ORDER BY grp")
    out = mpcsql("query", sql, *tables, "--format", "json")
    assert out.returncode == 0, out.stderr
    ref = con.execute(sql.split("; ", 1)[1]).fetchall()
    got = json.loads(out.stdout)
    assert [(r["grp"], r["n"]) for r in got] == [(g, n) for g, n, _ in ref]
    assert max(abs(r["b"] - b) for r, (_, _, b) in zip(got, ref, strict=True)) < 1e-6
    model = ("SET join_protocol = 'masked'; SELECT grp, LINREG(emc.bmi, ac.age) "
             "FROM ac JOIN emc USING (id) GROUP BY grp")
    out = mpcsql("query", model, *tables, "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["grp"], r["term"]) for r in rows] == [(g, t) for g in range(3)
                                                     for t in ("intercept", "age")]
    bad = mpcsql("query", sql, "--table", f"ac={tmp_path / 'ac.csv'}", "--domain", "ac.grp")
    assert bad.returncode == 2 and "TABLE.COLUMN=VALUE" in bad.stderr
