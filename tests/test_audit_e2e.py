"""The audit log kept by real party servers: every party logs every query it took part in."""

from __future__ import annotations

import os

import pytest

import engine
from dialect.errors import PolicyError
from engine.server.audit import read, verify
from tests.conftest import OPEN_POLICY, make_tables

pytestmark = pytest.mark.e2e

# --- real party servers: every party logs every query it took part in -------------------------

MASKED = "SET join_protocol = 'masked'; "


def _party_log(con, party: str) -> list[dict]:
    path = os.path.join(con.federation.workdir, f"{party}.audit.jsonl")
    assert verify(path).ok
    return list(read(path))


def test_every_party_logs_done_refused_and_failed_queries():
    policies = {**OPEN_POLICY, "emc": {"min_intersection": 0, "never_leave": ["emc.children"]}}
    with engine.connect(policies=policies) as con:
        ac, emc = make_tables(20, 20, 12, seed=31)
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id")
        ok_sql = MASKED + "SELECT COUNT(*), SUM(emc.bmi) FROM ac JOIN emc USING (id)"
        cur = con.execute(ok_sql)
        done_id = cur.query_id
        with pytest.raises(PolicyError):
            con.execute(MASKED + "SELECT SUM(emc.children) FROM ac JOIN emc USING (id)")
        with pytest.raises(engine.ProgrammingError):
            con.execute("SELECT SUM(nope) FROM ac")  # fails at the coordinator's planning
        logs = {p: _party_log(con, p) for p in ("ac", "emc", "helper")}

    ac_log = logs["ac"]
    assert [e["outcome"].split(":")[0] for e in ac_log] == ["done", "failed", "failed"]
    done = ac_log[0]
    assert done["query_id"] == done_id and done["sql"] == ok_sql
    assert done["analyst"].startswith("local:") and done["coordinator"] == "ac"
    assert done["approvals"] == {"ac": "approved", "emc": "approved", "helper": "approved"}
    assert any("intersection size" in f for f in done["revealed"]["helper"])
    assert any("the result" in f for f in done["revealed"]["ac"])
    assert not any("the result" in f for f in done["revealed"]["helper"])
    refused = ac_log[1]
    assert refused["approvals"] == {"ac": "approved", "emc": "refused (never_leave)"}
    assert refused["revealed"] == {} and "PolicyError" in refused["outcome"]
    assert ac_log[2]["plan"] is None and "BindError" in ac_log[2]["outcome"]
    # The participants log what they took part in: emc its refusal; helper was never asked.
    assert [(e["query_id"], e["outcome"].split(":")[0]) for e in logs["emc"]][0] == \
        (done_id, "done")
    assert logs["emc"][1]["approvals"] == {"emc": "refused (never_leave)"}
    assert logs["emc"][0]["plan"] == done["plan"] == logs["helper"][0]["plan"]
    assert len(logs["helper"]) == 1 and logs["helper"][0]["role"] == "participant"
