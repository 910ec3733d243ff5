"""Every party's own minimum size, enforced through the real code path (real party processes).

For each party in turn, that party alone demands at least N rows (the others demand none):

* a private join whose intersection is exactly N runs; one of N - 1 is refused naming that
  party (rule min_intersection) and the data parties receive nothing but the refusal bit;
* a single-table query (owner_input.share_table) on a table of exactly N rows runs; on one of
  N - 1 rows it is refused the same way, and the parties other than the owner receive and open
  nothing but the bit (the row count message carries ``None``).
"""

from __future__ import annotations

import glob
import os
import pickle

import pytest

import engine
from dialect.errors import PolicyError
from tests.conftest import make_tables

pytestmark = [pytest.mark.e2e, pytest.mark.leakage]

N = 9  # the strict party's minimum
MASKED = "SET join_protocol = 'masked'; "
JOIN_SQL = MASKED + "SELECT COUNT(*), SUM(ac.charges), AVG(emc.bmi) FROM ac JOIN emc USING (id)"
SINGLE_SQL = "SELECT COUNT(*), SUM(charges) FROM ac"


@pytest.fixture(scope="module", params=["ac", "emc", "helper"])
def fed(request, tmp_path_factory):
    """A federation in which only ``strict`` has a minimum (N); everyone else demands 0."""
    strict = request.param
    tdir = str(tmp_path_factory.mktemp(f"min-{strict}"))
    policies = {p: {"min_intersection": N if p == strict else 0} for p in ("ac", "emc", "helper")}
    with engine.connect(policies=policies, transcript_dir=tdir) as con:
        yield con, tdir, strict


def _views(tdir: str, query_id: str) -> dict[str, dict]:
    out = {}
    for f in glob.glob(os.path.join(tdir, f"{query_id}-*.pkl")):
        with open(f, "rb") as fh:
            out[os.path.basename(f)[len(query_id) + 1:-4]] = pickle.load(fh)
    assert set(out) == {"ac", "emc", "helper"}
    return out


def _sizes(view, label: str) -> list:
    return [m["obj"] for m in view["messages"] if m["label"] == label]


def _allowed(cur, sql: str, what: str) -> list:
    try:
        return cur.execute(sql).fetchall()
    except PolicyError as e:
        pytest.fail(f"{what} ({N} rows) was refused: {e}")


def _refused(con, sql: str, strict: str):
    cur = con.cursor()
    with pytest.raises(PolicyError) as info:
        cur.execute(sql)
    err = info.value
    assert (err.party, err.rule) == (strict, "min_intersection"), str(err)
    assert f"smaller than the minimum of {N} rows" in str(err)
    assert str(N - 1) not in str(err).replace(f"of {N} rows", "")  # never the size itself
    return cur.query_id


def test_join_at_the_minimum_runs_one_below_is_refused(fed):
    con, tdir, strict = fed
    for overlap in (N, N - 1):
        ac, emc = make_tables(20, 18, overlap, seed=80 + overlap)
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id")
        if overlap == N:
            cur = con.cursor()
            rows = _allowed(cur, JOIN_SQL, f"an intersection of exactly {strict}'s minimum")
            assert rows[0][0] == N
            views = _views(tdir, cur.query_id)
            for party in ("ac", "emc"):
                assert _sizes(views[party], "intersection_size") == [N]
            continue
        views = _views(tdir, _refused(con, JOIN_SQL, strict))
        for party in ("ac", "emc"):
            # in place of the size: one "too small" bit, and nothing after it
            got = _sizes(views[party], "intersection_size")
            assert got == [None], f"{party} received the size {got} of a refused join"
            assert views[party]["messages"][-1]["label"] == "intersection_size"
            assert views[party]["opened"] == ["too_small"], (party, views[party]["opened"])
        assert set(views["helper"]["opened"]) <= {"table_sizes", "intersection_size",
                                                  "too_small"}


def test_single_table_at_the_minimum_runs_one_below_is_refused(fed):
    con, tdir, strict = fed
    ac, _ = make_tables(N, 5, 0, seed=90)
    con.register("ac", ac, party="ac", key="id")
    cur = con.cursor()
    rows = _allowed(cur, SINGLE_SQL, f"a table of exactly {strict}'s minimum")
    assert rows[0][0] == N
    assert abs(rows[0][1] - ac["charges"].sum()) < 1e-4
    con.register("ac", ac.iloc[:N - 1], party="ac", key="id")
    views = _views(tdir, _refused(con, SINGLE_SQL, strict))
    for party in ("emc", "helper"):  # they never learn the row count: only the bit
        got = _sizes(views[party], "row_count")
        assert got == [None], f"{party} received the row count {got} of a refused table"
        assert views[party]["opened"] == ["too_small"], (party, views[party]["opened"])
        assert views[party]["messages"][-1]["label"] == "row_count"  # nothing followed it
    assert set(views["ac"]["opened"]) <= {"row_count", "too_small"}
    assert "result" not in views["ac"]["opened"]
