"""What a session opens is exactly what ``Plan.learns()`` lists (real three-process runs).

Every session records, under the plan's disclosure labels, each value that reaches its party in
the clear: sizes, the "too small" bit, the bits a solver opens and the result.  These tests run
queries of every shape on both joins and compare those records with the plan.
"""

from __future__ import annotations

import glob
import os
import pickle

import pytest

import engine
from planner import plan as make_plan
from planner.catalog import Catalog
from planner.plan import REFUSED
from tests.conftest import OPEN_POLICY, make_tables

pytestmark = pytest.mark.e2e

PARTIES = [["ac", "data", 0], ["emc", "data", 1], ["helper", "helper", 2]]
MASKED = "SET join_protocol = 'masked'; "


@pytest.fixture(scope="module")
def fed(recording):
    con, tdir = recording  # the session's recording federation (conftest)
    ac, emc = make_tables(40, 35, 25, seed=5)
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")
    return con, tdir


def opened(tdir: str, query_id: str) -> dict[str, list[str]]:
    out = {}
    for f in glob.glob(os.path.join(tdir, f"{query_id}-*.pkl")):
        with open(f, "rb") as fh:
            out[os.path.basename(f)[len(query_id) + 1:-4]] = pickle.load(fh)["opened"]
    return out


def planned(con, sql: str, receivers=None):
    catalog = Catalog.from_dict({"parties": PARTIES, "tables": con.tables()})
    return make_plan(sql, catalog, receivers=receivers)


def check_completed(con, tdir, sql: str, receivers=None) -> dict[str, set[str]]:
    """Run ``sql``; every party opened all the plan's unconditional disclosures and nothing
    the plan does not list for it.  Returns what each party opened."""
    con.receivers = receivers
    cur = con.execute(sql)
    cur.fetchall()
    plan = planned(con, sql, tuple(receivers) if receivers else None)
    got = opened(tdir, cur.query_id)
    assert set(got) == {"ac", "emc", "helper"}
    for party, labels in got.items():
        assert len(labels) == len(set(labels)), (party, labels)  # each opened once
        reached = {d.label: d for d, ps in plan.reached("done") if party in ps}
        must = {label for label, d in reached.items() if d.when == "always"}
        assert must <= set(labels) <= set(reached), (party, sql, labels, sorted(reached))
    return {p: set(v) for p, v in got.items()}


@pytest.mark.parametrize("prefix", ["", MASKED], ids=["paillier", "masked"])
def test_join_aggregates_open_the_sizes_and_the_result(fed, prefix):
    con, tdir = fed
    got = check_completed(con, tdir, prefix + "SELECT COUNT(*), AVG(ac.charges), SUM(emc.bmi) "
                          "FROM ac JOIN emc USING (id)")
    assert got["helper"] == {"intersection_size", "table_sizes"}
    masked = {"row_count:ac", "row_count:emc"} if prefix else set()
    mine = {"ac": "row_count:emc", "emc": "row_count:ac"}
    for p in ("ac", "emc"):
        assert got[p] == {"intersection_size", "result"} | ({mine[p]} & masked)


def test_only_the_receivers_open_the_result(fed):
    con, tdir = fed
    got = check_completed(con, tdir, MASKED + "SELECT SUM(emc.bmi) FROM ac JOIN emc USING (id)",
                          receivers=["ac"])
    assert "result" in got["ac"] and "result" not in got["emc"] | got["helper"]


def test_single_table_opens_its_row_count(fed):
    con, tdir = fed
    got = check_completed(con, tdir, "SELECT COUNT(*), AVG(age) FROM ac")
    assert got == {"ac": {"row_count", "result"}, "emc": {"row_count", "result"},
                   "helper": {"row_count"}}


@pytest.mark.parametrize("func, bits", [
    ("LASSO", set()),
    ("RIDGE", {"collinear bit"}),  # alpha / rows is well above the pivot floor here
    ("LINREG", {"constant-feature bit", "collinear bit"}),
])
def test_models_open_only_their_listed_bits(fed, func, bits):
    con, tdir = fed
    sql = MASKED + f"SELECT {func}(ac.charges, ac.age, emc.bmi) FROM ac JOIN emc USING (id)"
    got = check_completed(con, tdir, sql)
    for p in ("ac", "emc", "helper"):
        solver_bits = got[p] - {"intersection_size", "table_sizes", "result", "row_count:ac",
                                "row_count:emc"}
        assert solver_bits == bits, (p, got[p])


def test_a_too_small_intersection_opens_one_bit(tmp_path):
    tdir = str(tmp_path)
    policies = {**OPEN_POLICY, "emc": {"min_intersection": 30}}
    with engine.connect(policies=policies, transcript_dir=tdir) as con:
        ac, emc = make_tables(40, 35, 25, seed=6)
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id")
        sql = MASKED + "SELECT SUM(emc.bmi) FROM ac JOIN emc USING (id)"
        cur = con.cursor()
        with pytest.raises(engine.PolicyError, match="smaller than"):
            cur.execute(sql)
        plan = planned(con, sql)
    got = opened(tdir, cur.query_id)
    reached = plan.reached("too_small")
    for party in ("ac", "emc", "helper"):
        expect = {d.label for d, ps in reached if party in ps}
        assert set(got[party]) == expect, (party, got[party])
    assert set(got["ac"]) == {"too_small"}
    assert {d.label for d, _ in reached if d.when == REFUSED} == {"too_small"}


def test_explain_and_audit_name_every_disclosure(fed):
    con, _ = fed
    sql = MASKED + "SELECT LINREG(ac.charges, emc.bmi) FROM ac JOIN emc USING (id)"
    text = con.explain(sql)
    for d in planned(con, sql).disclosures():
        assert d.text in text
    assert "collinear" in text and "smaller than the largest minimum" in text
