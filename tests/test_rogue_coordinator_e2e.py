"""A coordinator that lies (a modified server, tests/rogue.py) cannot override the others' rules.

Three real ``mpcsql serve`` processes over mutual TLS; ac runs the modified server.  The honest
parties refuse before anything is opened and record the refusal in their audit logs.
"""

from __future__ import annotations

import json
import os

import pytest

import engine
from tests.conftest import make_tables
from tests.deployment import Deployment

pytestmark = pytest.mark.e2e

MASKED = "SET join_protocol = 'masked'; "


def _audit(dep: Deployment, party: str) -> list[dict]:
    with open(os.path.join(dep.dir(party), "audit.log")) as f:
        return [json.loads(line) for line in f]


def _deployment(root: str, mode: str, policies, overlap: int) -> Deployment:
    ac, emc = make_tables(30, 30, overlap, seed=11)
    dep = Deployment(root, tables={"ac": {"party": "ac", "key": "id", "frame": ac},
                                   "emc": {"party": "emc", "key": "id", "frame": emc}},
                     policies=policies, timeouts={"connect": 5, "peer": 5, "query": 30})
    dep.alice = dep.analyst("alice@ac")
    dep.start("ac", module="tests.rogue", env={"MPCSQL_ROGUE": mode})
    dep.start("emc")
    dep.start("helper")
    return dep


def test_different_receivers_per_party_are_refused_by_every_party(tmp_path):
    policies = {"ac": {"min_intersection": 0}, "helper": {"min_intersection": 0},
                "emc": {"min_intersection": 0, "receivers": ["emc"]}}
    dep = _deployment(str(tmp_path), "receivers", policies, overlap=20)
    try:
        with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
            con.receivers = ["ac"]
            with pytest.raises(engine.PolicyError, match="runs a different query") as e:
                con.execute(MASKED + "SELECT SUM(emc.bmi) FROM ac JOIN emc USING (id)")
            assert e.value.rule == "plan"
        for party in ("emc", "helper"):
            line = _audit(dep, party)[-1]
            assert line["outcome"].startswith("failed: PolicyError"), line
            assert "different query" in line["outcome"]
            assert not any("the result" in f for fs in line["revealed"].values() for f in fs)
    finally:
        dep.stop_all()


def test_a_lowered_minimum_opens_nothing(tmp_path):
    policies = {p: {"min_intersection": 10} for p in ("ac", "emc", "helper")}
    dep = _deployment(str(tmp_path), "minimum", policies, overlap=1)
    try:
        with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
            with pytest.raises(engine.PolicyError, match="smaller than") as e:
                con.execute(MASKED + "SELECT COUNT(*), SUM(emc.bmi) FROM ac JOIN emc USING (id)")
            assert e.value.rule == "min_intersection" and e.value.party in ("emc", "helper")
            assert "1" not in e.value.message.split("smaller")[0]  # the size is never named
        for party in ("emc", "helper"):
            line = _audit(dep, party)[-1]
            assert "min_intersection" in line["outcome"] or "smaller" in line["outcome"], line
            assert not any("the result" in f for fs in line["revealed"].values() for f in fs)
    finally:
        dep.stop_all()
