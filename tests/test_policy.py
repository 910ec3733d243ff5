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


# --- program plans: the uses of a column (planner.usage) ----------------------------------------

_DOMAIN_CATALOG = Catalog(
    CATALOG.parties,
    (TableSchema("ac", "ac", "id", tuple(ColumnSchema(n, d) for n, d in _AC)
                 + (ColumnSchema("sex", "VARCHAR", None, ("female", "male")),)),
     TableSchema("emc", "emc", "id", tuple(ColumnSchema(n, d) for n, d in _EMC)
                 + (ColumnSchema("region", "VARCHAR", None, ("north", "south")),))),
)


def _program(sql: str):
    """A plan of ``sql`` carrying its LogicalQuery (as the lowering builds it), so that the
    policy sees ``Plan.usages``; the sources are those of the same FROM clause."""
    import dataclasses

    import sqlglot

    from dialect import MpcDialect
    from planner.binder import Binder

    lq = Binder(_DOMAIN_CATALOG, sql).bind_logical(sqlglot.parse_one(sql, read=MpcDialect))
    names = " JOIN ".join(t.name for t in lq.tables) + (" USING (id)" if len(lq.tables) > 1
                                                         else "")
    base = plan(f"SELECT COUNT(*) FROM {names}", _DOMAIN_CATALOG)
    return dataclasses.replace(base, logical=lq)


def _program_refusal(policy: Policy, sql: str):
    with pytest.raises(PolicyError) as info:
        policy.check(_program(sql), "alice@ac")
    assert info.value.party == policy.party
    return info.value


def test_usages_of_each_clause():
    from planner.usage import Usage, usages

    p = _program(f"SELECT region, SUM(charges) FILTER (WHERE delta > 0), COUNT(*) {JOIN} "
                 "WHERE bmi > 20 GROUP BY region HAVING MAX(age) > 3 ORDER BY 1")
    assert usages(p.logical) == p.usages == (
        Usage("emc", "emc", "bmi", "WHERE"),
        Usage("emc", "emc", "region", "GROUP BY"),
        Usage("ac", "ac", "charges", "SUM"),
        Usage("ac", "ac", "delta", "WHERE"),
        Usage("ac", "ac", None, "COUNT"),
        Usage("emc", "emc", None, "COUNT"),
        Usage("ac", "ac", "age", "MAX"),
    )
    names = {u.use for u in _program("SELECT MEDIAN(age), VARIANCE(age), STDDEV(age), "
                                     "CORR(age, charges) FROM ac").usages}
    assert names == {"QUANTILE_CONT", "VAR_SAMP", "STDDEV_SAMP", "CORR"}


def test_allow_where_and_group_by_per_column():
    pol = Policy("emc", {"*": ["COUNT", "AVG"], "emc.bmi": ["AVG", "WHERE"],
                         "emc.region": ["GROUP BY"]})
    pol.check(_program(f"SELECT region, AVG(bmi) {JOIN} WHERE bmi > 20 GROUP BY region"))
    err = _program_refusal(pol, f"SELECT COUNT(*) {JOIN} WHERE children > 2")
    assert err.rule == "allow"
    assert str(err) == ("[emc] query refused by policy of emc: WHERE is not allowed on "
                        "emc.children (the column appears in WHERE or in a FILTER clause)")
    err = _program_refusal(pol, f"SELECT COUNT(*) FILTER (WHERE children > 2) {JOIN}")
    assert "WHERE is not allowed on emc.children" in str(err)
    err = _program_refusal(pol, f"SELECT AVG(bmi) {JOIN} GROUP BY bmi > 30")
    assert "GROUP BY is not allowed on emc.bmi (the column appears in a group key)" in str(err)
    err = _program_refusal(pol, f"SELECT MIN(bmi) {JOIN}")
    assert "MIN is not allowed on emc.bmi" in str(err)
    err = _program_refusal(pol, f"SELECT COUNT(*) {JOIN} HAVING MAX(bmi) > 3")
    assert "MAX is not allowed on emc.bmi" in str(err)  # aggregates of HAVING are uses too
    pol.check(_program(f"SELECT SUM(charges) {JOIN} WHERE age > 3"))  # ac's columns: not emc's


def test_allow_synonyms_and_new_aggregates():
    pol = Policy.from_dict("ac", {"allow": {"ac.age": ["median", "Variance", "stddev", "CORR",
                                                       "group  by"]}})
    assert pol.allowed("ac", "age") == {"QUANTILE_CONT", "VAR_SAMP", "STDDEV_SAMP", "CORR",
                                        "GROUP BY"}
    pol.check(_program("SELECT QUANTILE_CONT(age, 0.9), VAR_SAMP(age), STDDEV(age) FROM ac"))
    err = _program_refusal(pol, "SELECT REGR_SLOPE(age, charges) FROM ac")
    assert "REGR_SLOPE is not allowed on ac.age" in str(err)
    assert Policy.from_dict("ac", pol.to_dict()) == pol


def test_never_leave_covers_every_use():
    pol = Policy.from_dict("emc", {"never_leave": ["emc.bmi"]})
    for sql, use in ((f"SELECT COUNT(*) {JOIN} WHERE bmi > 1", "WHERE"),
                     (f"SELECT COUNT(*) FILTER (WHERE bmi > 1) {JOIN}", "WHERE"),
                     (f"SELECT COUNT(*) {JOIN} GROUP BY bmi > 30", "GROUP BY"),
                     (f"SELECT COUNT(*) {JOIN} HAVING AVG(bmi) > 3", "AVG"),
                     (f"SELECT AVG(bmi) AS a {JOIN} ORDER BY a", "AVG"),
                     (f"SELECT COUNT(bmi) {JOIN}", "COUNT")):
        err = _program_refusal(pol, sql)
        assert err.rule == "never_leave"
        assert f"column emc.bmi (in {use}) may never leave emc" in str(err)
    pol.check(_program(f"SELECT COUNT(*) {JOIN} WHERE children > 1"))


def test_describe_program_plan():
    pol = Policy("emc", {"emc.region": ["GROUP BY"]}, min_intersection=7, min_group_rows=4)
    lines = pol.describe(_program(f"SELECT region, COUNT(*) {JOIN} WHERE age > 3 "
                                  "GROUP BY region"))
    text = "\n".join(lines)
    assert "emc: GROUP BY on emc.region allowed by rule 'emc.region'" in text
    assert "the rows the WHERE leaves must be at least 7" in text
    assert "min_group_rows = 4 (a group's row is output only if" in text


@pytest.mark.parametrize("bad", ["ORDER BY", "HAVING", "MODE"])
def test_unknown_uses_are_refused(bad):
    with pytest.raises(ValueError, match="unknown aggregate"):
        Policy.from_dict("emc", {"allow": {"*": [bad]}})
