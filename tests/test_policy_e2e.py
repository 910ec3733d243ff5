"""Per-party policies: refusals by each real party server."""

from __future__ import annotations

import getpass
import glob
import os
import pickle

import pytest

import engine
from dialect.errors import PolicyError
from tests.conftest import OPEN_POLICY, make_tables

pytestmark = pytest.mark.e2e

JOIN = "FROM ac JOIN emc USING (id)"
MASKED = "SET join_protocol = 'masked'; "

# --- real party servers: each party refuses for itself; the reason reaches the analyst ---------

POLICIES = {
    "ac": {"min_intersection": 0, "never_leave": ["ac.ac.delta"]},
    "emc": {"min_intersection": 5, "join_protocols": ["masked"],
            "allow": {"*": ["COUNT", "SUM", "AVG"], "emc.children": ["COUNT"]}},
    "helper": {"min_intersection": 0, "receivers": ["ac"]},
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    transcripts = str(tmp_path_factory.mktemp("transcripts"))
    with engine.connect(policies=POLICIES, transcript_dir=transcripts) as con:
        ac, emc = make_tables(20, 20, 8, seed=41)
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id")
        con.receivers = ["ac"]
        yield con, transcripts


def _refused(con, sql: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        con.execute(sql)
    return info.value


def test_ac_refuses_its_never_leave_column(fed):
    con, _ = fed
    err = _refused(con, MASKED + f"SELECT COUNT(*), AVG(ac.delta) {JOIN}")
    assert (err.party, err.rule) == ("ac", "never_leave")
    assert "column ac.delta (in AVG) may never leave ac" in str(err)


def test_emc_refuses_a_join_protocol_and_a_function(fed):
    con, _ = fed
    err = _refused(con, f"SELECT AVG(ac.charges) {JOIN}")  # the default Paillier join
    assert (err.party, err.rule) == ("emc", "join_protocols")
    assert "join_protocol 'paillier' is not allowed" in str(err)
    err = _refused(con, MASKED + f"SELECT SUM(emc.children) {JOIN}")
    assert (err.party, err.rule) == ("emc", "allow")
    assert "SUM is not allowed on emc.children" in str(err)


def test_helper_refuses_receivers_and_the_analyst_can_narrow_them(fed):
    con, _ = fed
    con.receivers = None  # default: ac and emc
    try:
        err = _refused(con, MASKED + f"SELECT COUNT(*) {JOIN}")
    finally:
        con.receivers = ["ac"]
    assert (err.party, err.rule) == ("helper", "receivers")
    assert "may not be revealed to emc" in str(err)
    assert con.execute(MASKED + f"SELECT COUNT(*), SUM(emc.bmi) {JOIN}").fetchall()[0][0] == 8


def test_explain_lists_each_partys_rules(fed):
    con, _ = fed
    text = con.explain(f"SELECT AVG(ac.delta) {JOIN}")
    assert "Reveal to [ac]" in text
    assert "ac: REFUSES: [ac] query refused by policy of ac (never_leave)" in text
    assert "emc: REFUSES: [emc] query refused by policy of emc (join_protocols)" in text
    assert "helper: approves" in text
    assert "helper: result to [ac] allowed by rule receivers = [ac]" in text
    assert "emc: the intersection must have at least 5 rows" in text


@pytest.mark.leakage
def test_too_small_intersection_reveals_one_bit(fed):
    con, transcripts = fed
    ac, emc = make_tables(20, 20, 3, seed=42)
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")
    try:
        cur = con.cursor()
        with pytest.raises(PolicyError) as info:
            cur.execute(MASKED + f"SELECT COUNT(*), AVG(ac.charges) {JOIN}")
        err = info.value
        assert (err.party, err.rule) == ("emc", "min_intersection")
        assert "smaller than the minimum of 5 rows" in str(err) and "3" not in str(err)
        # What the data parties received in place of the intersection size: nothing but "no".
        for party in ("ac", "emc"):
            with open(os.path.join(transcripts, f"{cur.query_id}-{party}.pkl"), "rb") as f:
                view = pickle.load(f)
            sizes = [m["obj"] for m in view["messages"] if m["label"] == "intersection_size"]
            assert sizes == [None]
            assert [m["label"] for m in view["messages"]][-1] == "intersection_size"
    finally:
        ac, emc = make_tables(20, 20, 8, seed=41)
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id")
    ok = con.cursor().execute(MASKED + f"SELECT COUNT(*) {JOIN}")
    view_file = glob.glob(os.path.join(transcripts, f"{ok.query_id}-ac.pkl"))[0]
    with open(view_file, "rb") as f:
        sizes = [m["obj"] for m in pickle.load(f)["messages"] if m["label"] == "intersection_size"]
    assert sizes == [8] and ok.fetchall() == [(8,)]


def test_analysts_rule_uses_the_forwarded_identity():
    me = f"local:{getpass.getuser()}"
    policies = {**OPEN_POLICY, "emc": {"min_intersection": 0, "analysts": ["local:*"]},
                "helper": {"min_intersection": 0, "analysts": ["alice@ac"]}}
    with engine.connect(policies=policies) as con:
        ac, emc = make_tables(12, 12, 6, seed=43)
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id")
        err = _refused(con, MASKED + f"SELECT COUNT(*) {JOIN}")
        assert (err.party, err.rule) == ("helper", "analysts")
        assert f"{me} may not run queries that involve helper" in str(err)
        text = con.explain(MASKED + f"SELECT COUNT(*) {JOIN}")
        assert f"emc: analyst {me} allowed by rule analysts = [local:*]" in text
        assert "helper: REFUSES" in text
