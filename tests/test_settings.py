"""``SET join_protocol = '...'; SELECT ...``: the dialect's SET form and the planner's choice."""

from __future__ import annotations

import re

import pytest
from sqlglot import exp

from dialect import (
    SETTINGS,
    ParseError,
    ProgrammingError,
    UnsupportedError,
    parse,
    parse_query,
)
from planner import Catalog, PrivateJoin, Scan, plan
from planner.plan import JOIN_PROTOCOLS
from tests.test_planner import Q_JOIN
from tests.test_planner import catalog as catalog  # noqa: F401  (fixture)

SELECT = "SELECT COUNT(*), AVG(ac.charges) FROM ac JOIN emc USING (id)"


def _position(message: str) -> tuple[int, int]:
    m = re.search(r"\(line (\d+), column (\d+)\)", message)
    assert m, f"no position in {message!r}"
    return int(m.group(1)), int(m.group(2))


# --- dialect ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sql,value", [
    ("SET join_protocol = 'masked'; " + SELECT, "masked"),
    ("SET join_protocol='paillier';" + SELECT + ";", "paillier"),
    ("set JOIN_PROTOCOL = 'Masked';\n" + SELECT, "masked"),
    ('SET "join_protocol" TO \'masked\'; ' + SELECT, "masked"),
    ("-- fast path\nSET join_protocol = 'masked'; /* then */ " + SELECT, "masked"),
])
def test_set_before_select(sql, value):
    q = parse_query(sql)
    assert isinstance(q.select, exp.Select)
    assert q.settings == (("join_protocol", value),)
    assert q.setting("join_protocol") == value
    assert isinstance(parse(sql), exp.Select)  # parse() checks the settings and drops them


def test_no_set_means_no_settings():
    q = parse_query(SELECT)
    assert q.settings == () and q.setting("join_protocol", "paillier") == "paillier"


def test_allowed_values_match_the_planner():
    assert set(SETTINGS["join_protocol"]) == JOIN_PROTOCOLS
    assert SETTINGS["join_protocol"][0] == "paillier"  # the default


@pytest.mark.parametrize("sql,construct,pos", [
    ("SET threads = 4; " + SELECT, "SET threads", (1, 1)),
    ("SET x; " + SELECT, "SET x", (1, 1)),
    ("SET GLOBAL join_protocol = 'masked'; " + SELECT, "SET GLOBAL", (1, 1)),
    ("SET SESSION join_protocol = 'masked'; " + SELECT, "SET SESSION", (1, 1)),
    ("SET join_protocol = 'masked', threads = 4; " + SELECT, "SET with several settings", (1, 1)),
    ("SET a.join_protocol = 'masked'; " + SELECT, "SET a.join_protocol", (1, 1)),
    (SELECT + "; SET join_protocol = 'masked'", "SET after the query", (1, 63)),
    ("SET join_protocol = 'masked';\n  DELETE FROM ac", "DELETE statement", (2, 3)),
    ("SET join_protocol = 'masked'; " + SELECT + "; " + SELECT, "multiple statements",
     (1, 93)),
])
def test_other_set_forms_are_unsupported(sql, construct, pos):
    with pytest.raises(UnsupportedError) as info:
        parse_query(sql)
    assert info.value.construct == construct
    assert construct in str(info.value)
    assert (info.value.line, info.value.col) == pos == _position(str(info.value))


@pytest.mark.parametrize("sql,words", [
    ("SET join_protocol = 'fast'; " + SELECT, "unknown join_protocol 'fast'"),
    ("SET join_protocol = masked; " + SELECT, "must be a quoted string"),
    ("SET join_protocol = 1; " + SELECT, "must be a quoted string"),
    ("SET join_protocol = 'masked'; SET join_protocol = 'paillier'; " + SELECT, "set twice"),
])
def test_bad_values_are_programming_errors(sql, words):
    with pytest.raises(ProgrammingError) as info:
        parse_query(sql)
    assert words in str(info.value)
    assert not isinstance(info.value, UnsupportedError)
    if "set twice" not in words:
        assert "'paillier', 'masked'" in str(info.value)  # lists the allowed values


def test_comment_after_a_semicolon_is_not_a_statement():
    assert parse_query(SELECT + "; -- done").settings == ()
    assert parse_query("SET join_protocol = 'masked'; /* c */ " + SELECT).settings == (
        ("join_protocol", "masked"),)


def test_set_without_select():
    with pytest.raises(ParseError, match="no SELECT after SET"):
        parse_query("SET join_protocol = 'masked';")


# --- planner ----------------------------------------------------------------------------------


def test_plan_uses_the_set_protocol(catalog: Catalog):
    p = plan("SET join_protocol = 'masked'; " + Q_JOIN, catalog)
    assert isinstance(p.source, PrivateJoin) and p.source.protocol == "masked"
    left = p.source.left
    assert (left.party, left.table, left.key, left.reads) == ("ac", "ac", "id", ("charges",))
    assert plan(Q_JOIN, catalog).source.protocol == "paillier"
    assert plan("SET join_protocol = 'paillier'; " + Q_JOIN, catalog).source.protocol == \
        "paillier"
    # a federation default, overridden by the SQL
    assert plan(Q_JOIN, catalog, join_protocol="masked").source.protocol == "masked"
    assert plan("SET join_protocol = 'paillier'; " + Q_JOIN, catalog,
                join_protocol="masked").source.protocol == "paillier"
    with pytest.raises(ProgrammingError, match="unknown join_protocol"):
        plan(Q_JOIN, catalog, join_protocol="fast")


def test_set_on_a_single_table_query_is_harmless(catalog: Catalog):
    p = plan("SET join_protocol = 'masked'; SELECT SUM(age) FROM ac", catalog)
    assert isinstance(p.source, Scan)


def test_explain_and_fingerprint_name_the_protocol(catalog: Catalog):
    masked = plan("SET join_protocol = 'masked'; " + Q_JOIN, catalog)
    paillier = plan(Q_JOIN, catalog)
    text = masked.explain()
    assert "PrivateJoin[masked] ac.id = emc.id (helper: helper)" in text
    assert "PrivateJoin[paillier]" in paillier.explain()
    assert masked.fingerprint() != paillier.fingerprint()
    learns = masked.learns()
    assert any("|emc| (row count of emc" in f for f in learns["ac"])
    assert any("|ac| (row count of ac" in f for f in learns["emc"])
    assert learns["helper"] == paillier.learns()["helper"]
    assert not any("row count" in f for f in paillier.learns()["ac"])


def test_masked_learns_only_what_is_sent(catalog: Catalog):
    """A data party learns the other's size only if the other contributes value columns."""
    p = plan("SET join_protocol = 'masked'; SELECT AVG(charges) FROM ac JOIN emc USING (id)",
             catalog)
    learns = p.learns()
    assert not any("row count" in f for f in learns["ac"])  # emc sends no values
    assert any("|ac| (row count of ac" in f for f in learns["emc"])
