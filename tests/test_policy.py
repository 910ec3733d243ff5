"""Per-party policies: the rules at the planner level (no party servers)."""

from __future__ import annotations

import pytest

from dialect.errors import PolicyError
from planner import Catalog, ColumnSchema, Party, Policy, TableSchema, plan
from planner.policy import too_small

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
