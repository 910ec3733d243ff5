"""The coordinator's peer connections outlive the peers' idle timeout while it plans.

A party closes a control connection silent for ``[timeouts] idle`` seconds. The coordinator opens
its peer connections, then plans the query itself (seconds for a large one) before it asks the
peers: a connection silent for half the idle timeout is replaced before use, so a slow plan does
not fail as "party ... went away".
"""

from __future__ import annotations

import pytest

import engine
from tests.conftest import make_tables
from tests.deployment import Deployment

pytestmark = pytest.mark.e2e


def test_a_plan_longer_than_the_idle_timeout_is_explained(tmp_path):
    ac, emc = make_tables(30, 30, 20, seed=3)
    d = Deployment(str(tmp_path),
                   tables={"ac": {"party": "ac", "key": "id", "frame": ac},
                           "emc": {"party": "emc", "key": "id", "frame": emc}},
                   policies={p: {"min_intersection": 0} for p in ("ac", "emc", "helper")},
                   timeouts={"connect": 5, "peer": 5, "query": 60, "idle": 1})
    alice = d.analyst("alice@ac")
    d.start_all()
    try:
        # about 3 s of planning at each party on a quiet 2-core machine: > the 1 s idle timeout
        big = ("SELECT " + ",".join("SUM(charges)" for _ in range(1000))
               + " FROM ac JOIN emc USING (id)")
        with engine.connect(d.dsn("ac"), tls=alice) as con:
            text = con.explain(big)
        assert "emc: approves" in text and "helper: approves" in text, text
    finally:
        d.stop_all()
