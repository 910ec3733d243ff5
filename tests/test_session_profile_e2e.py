"""MPCSQL_SESSION_PROFILE: every party's session writes its cProfile statistics (a developer's
switch, docs/performance.md#small-queries)."""

from __future__ import annotations

import pstats

import pytest

from tests.conftest import connect_with_env, make_tables

pytestmark = pytest.mark.e2e

SQL = ("SET join_protocol = 'masked'; "
       "SELECT COUNT(*), SUM(emc.bmi) FROM ac INNER JOIN emc USING (id)")


def test_each_session_writes_its_profile(tmp_path):
    out = tmp_path / "prof"
    ac, emc = make_tables(30, 30, 20, seed=3)
    with connect_with_env({"MPCSQL_SESSION_PROFILE": str(out)}) as con:
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id")
        cur = con.execute(SQL)
        assert cur.fetchall()[0][0] == 20
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"{cur.query_id}-{p}.prof" for p in ("ac", "emc", "helper")]
    for name in files:  # real statistics of the session's run, readable by pstats
        stats = pstats.Stats(str(out / name))
        assert any("run_job" in func for _, _, func in stats.stats)

