"""Typed control messages: every request is checked field by field when it is received."""

from __future__ import annotations

import pytest

from dialect.errors import ProgrammingError
from engine.control import messages as M

REQUIRED = {"explain": {"sql": "SELECT 1"}, "query": {"sql": "SELECT 1"},
            "cancel": {"query_id": "q1"}, "progress": {"query_id": "q1"},
            "prepare": {"sql": "SELECT 1", "catalog": {"tables": []}, "query_id": "q1"},
            "run": {"query_id": "q1", "addresses": [["h", 1]]},
            "configure": {"peers": {"emc": ["h", 1]}}, "register": {"table": "t"},
            "drop": {"table": "t"}}


def test_round_trip_of_every_request():
    for cls in M.REQUESTS.values():
        req = cls(**REQUIRED.get(cls.op, {}))
        wire = req.to_wire()
        assert wire["op"] == cls.op
        assert M.parse_request(wire) == req
        for name in REQUIRED.get(cls.op, {}):
            with pytest.raises(ProgrammingError, match=f"missing field '{name}'"):
                M.parse_request({k: v for k, v in wire.items() if k != name})
    q = M.Query(sql="SELECT COUNT(*) FROM ac", query_id="q1", receivers=["ac"], user="ana")
    assert M.parse_request(q.to_wire()) == q


@pytest.mark.parametrize("msg, cause", [
    ({"op": "query"}, "missing field 'sql'"),
    ({"op": "query", "sql": 1}, "field 'sql' must be str, not int"),
    ({"op": "query", "sql": "x", "limit": 3}, "unknown field 'limit'"),
    ({"op": "run", "query_id": "q", "addresses": "x"}, "field 'addresses' must be"),
    ({"op": "run", "query_id": "q", "addresses": [], "min_rows": 0},
     "unknown field 'min_rows'"),  # the parties agree on the minimums among themselves
    ({"op": "drop", "table": True}, "field 'table' must be str, not bool"),
    ({"op": "prepare", "sql": "x", "catalog": [], "query_id": "q"}, "field 'catalog' must be"),
    ({"op": "explain", "sql": "x", "receivers": ["ac", 2]}, "field 'receivers' must be"),
    ({"op": "launch"}, "unknown operation 'launch'"),
    ({"sql": "x"}, "unknown operation None"),
    (["op", "query"], "not a JSON object"),
])
def test_malformed_requests_are_refused_naming_the_field(msg, cause):
    with pytest.raises(ProgrammingError, match=cause.replace("(", r"\(").replace(")", r"\)")):
        M.parse_request(msg)


def test_replies_are_checked_too():
    assert M.PrepareReply.from_wire({"ok": True, "fingerprint": "ab", "port": 7}).port == 7
    with pytest.raises(ProgrammingError, match="reply 'prepare': field 'port'"):
        M.PrepareReply.from_wire({"ok": True, "fingerprint": "ab", "port": "7"})
    with pytest.raises(ProgrammingError, match="unknown field 'extra'"):
        M.HelloReply.from_wire({"ok": True, "party": "ac", "extra": 1})


@pytest.mark.e2e
def test_server_answers_a_malformed_request_with_the_cause(con):
    from engine.control import wire

    host, port = con.federation.addresses["ac"]
    for msg, cause in (({"op": "query"}, "missing field 'sql'"),
                       ({"op": "cancel", "query_id": 5}, "field 'query_id' must be str")):
        with pytest.raises(ProgrammingError, match=cause):
            wire.call(host, port, msg, None, party="ac", timeout=10,
                      ssl_context=con.federation.ssl_context_for("ac"))
    assert isinstance(con.queries(), list)  # and the server keeps serving


def test_sql_over_the_limit_is_refused_before_planning():
    sql = "SELECT COUNT(*) FROM ac WHERE " + "x" * M.MAX_SQL
    for op in ("query", "explain"):
        with pytest.raises(ProgrammingError, match="over the limit of 100,000"):
            M.parse_request({"op": op, "sql": sql})
    assert M.parse_request({"op": "query", "sql": "S" * M.MAX_SQL}).sql
