"""Per-party policies: rules at the planner level, then refusals by each real party server."""

from __future__ import annotations

import getpass
import glob
import os
import pickle

import pytest

import engine
from dialect.errors import PolicyError
from planner import Catalog, ColumnSchema, Party, Policy, TableSchema, plan
from planner.policy import too_small
from tests.conftest import OPEN_POLICY, make_tables

_AC = [("id", "BIGINT"), ("age", "BIGINT"), ("charges", "DOUBLE"), ("delta", "DOUBLE")]
_EMC = [("id", "BIGINT"), ("bmi", "DOUBLE"), ("children", "BIGINT")]
CATALOG = Catalog(
    (Party("ac", "data", 0), Party("emc", "data", 1), Party("helper", "helper", 2)),
    tuple(TableSchema(t, t, "id", tuple(ColumnSchema(n, d) for n, d in cols))
          for t, cols in (("ac", _AC), ("emc", _EMC))),
)
JOIN = "FROM ac JOIN emc USING (id)"
MASKED = "SET join_protocol = 'masked'; "


def _plan(sql: str, receivers=None):
    return plan(sql, CATALOG, receivers=receivers)


def _refusal(policy: Policy, sql: str, analyst: str | None = "alice@ac", receivers=None):
    with pytest.raises(PolicyError) as info:
        policy.check(_plan(sql, receivers), analyst)
    assert info.value.party == policy.party
    return info.value


# --- planner level ------------------------------------------------------------------------------


def test_never_leave_refuses_every_use_by_the_owner():
    pol = Policy.from_dict("emc", {"never_leave": ["emc.children", "emc.emc.bmi"]})
    assert pol.never_leave == {"emc.children", "emc.bmi"}
    for sql in (f"SELECT SUM(emc.children) {JOIN}", f"SELECT COUNT(children) {JOIN}",
                f"SELECT AVG(bmi) {JOIN}", "SELECT LINREG(charges, age, bmi) " + JOIN,
                "SELECT COUNT(children) FROM emc"):
        err = _refusal(pol, sql)
        assert err.rule == "never_leave" and "may never leave emc" in str(err)
    pol.check(_plan(f"SELECT COUNT(*), AVG(ac.charges) {JOIN}"))
    Policy.from_dict("ac", {"never_leave": ["emc.children"]}).check(  # not ac's column
        _plan(f"SELECT SUM(children) {JOIN}"))


def test_never_leave_on_the_key_refuses_joins_only():
    pol = Policy.from_dict("ac", {"never_leave": ["ac.id"]})
    err = _refusal(pol, f"SELECT COUNT(*) {JOIN}")
    assert "as the join key" in str(err)
    pol.check(_plan("SELECT SUM(age) FROM ac"))  # no key leaves in a single-table query


def test_join_protocols_receivers_analysts():
    pol = Policy.from_dict("helper", {"join_protocols": ["paillier"], "receivers": ["ac"],
                                      "analysts": ["alice@ac", "*@emc"]})
    ok = f"SELECT AVG(charges) {JOIN}"
    pol.check(_plan(ok, ["ac"]), "alice@ac")
    pol.check(_plan(ok, ["ac"]), "bob@emc")
    err = _refusal(pol, MASKED + ok, receivers=["ac"])
    assert err.rule == "join_protocols" and "'masked' is not allowed" in str(err)
    err = _refusal(pol, ok)  # default receivers: both data parties
    assert err.rule == "receivers" and "may not be revealed to emc" in str(err)
    err = _refusal(pol, ok, analyst="mallory@ac", receivers=["ac"])
    assert err.rule == "analysts" and "mallory@ac may not run queries" in str(err)
    err = _refusal(pol, ok, analyst=None, receivers=["ac"])
    assert "unidentified" in str(err)
    Policy("helper").check(_plan(MASKED + ok), None)  # absent rules: anyone, anything


def test_min_intersection_refusal_never_states_the_size():
    p = _plan(f"SELECT COUNT(*) {JOIN}")
    pol = Policy("emc", min_intersection=50)
    pol.check_rows(50, p)
    with pytest.raises(PolicyError) as info:
        pol.check_rows(17, p)
    assert info.value.rule == "min_intersection" and "17" not in str(info.value)
    err = too_small("emc", 50, what="the intersection")
    assert str(err) == ("[emc] query refused by policy of emc (min_intersection): the "
                        "intersection is smaller than the minimum of 50 rows; nothing was "
                        "computed")


def test_min_group_rows_is_validated_and_described():
    pol = Policy.from_dict("ac", {"min_group_rows": 5})
    assert pol.min_group_rows == 5
    lines = pol.describe(_plan(f"SELECT COUNT(*) {JOIN}"))
    assert "ac: min_group_rows = 5 (this query forms no groups)" in lines
    with pytest.raises(ValueError, match="min_group_rows"):
        Policy.from_dict("ac", {"min_group_rows": -1})


@pytest.mark.parametrize("d, match", [
    ({"never_leave": ["bmi"]}, "never_leave entries"),
    ({"never_leave": ["ac.emc.bmi"]}, "never_leave entries"),
    ({"never_leave": "emc.bmi"}, "list of strings"),
    ({"receivers": [""]}, "non-empty"),
    ({"join_protocols": ["fast"]}, "unknown join protocol"),
    ({"analysts": "alice"}, "list of strings"),
    ({"allow": ["SUM"]}, "allow must be a table"),
    ({"min_intersection": True}, "integer"),
    ({"deny": {}}, "unknown key"),
])
def test_bad_policy_tables_are_refused_with_the_key(d, match):
    with pytest.raises(ValueError, match=match):
        Policy.from_dict("emc", d)


def test_round_trip_and_describe_lists_every_rule():
    d = {"min_intersection": 25, "allow": {"*": ["AVG", "COUNT"]}, "never_leave": ["emc.children"],
         "min_group_rows": 3, "receivers": ["ac"], "join_protocols": ["paillier"],
         "analysts": ["*@ac"]}
    pol = Policy.from_dict("emc", d)
    assert Policy.from_dict("emc", pol.to_dict()) == pol
    lines = pol.describe(_plan(f"SELECT COUNT(*), AVG(bmi) {JOIN}"), "bob@emc")
    text = "\n".join(lines)
    assert "analyst bob@emc REFUSED by rule analysts = [*@ac]" in text
    assert "never_leave [emc.children]: none used" in text
    assert "AVG on emc.bmi allowed by rule '*'" in text
    assert "join_protocol 'paillier' allowed" in text
    assert "result to [ac, emc] REFUSED for emc by rule receivers = [ac]" in text
    assert "at least 25 rows" in text and "min_group_rows = 3" in text


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
