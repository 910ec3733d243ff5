"""Rounds on the critical path, bytes per phase, and emulated latency (engine.session.rounds).

The merge of the parties' logs is tested on hand-made logs; the counters with real three-process
sessions (the conftest federation on loopback, and one with ``MPCSQL_EMULATE_RTT_MS`` set,
whose sessions hold every received message RTT/2).
"""

from __future__ import annotations

import statistics
import time

import pytest

from bench.common import PARTIES, TRAFFIC_STAGES, Run
from engine.session import rounds
from tests.conftest import OPEN_POLICY, make_tables

SUM = ("SET join_protocol = 'masked'; "
       "SELECT SUM(ac.charges), SUM(emc.bmi) FROM ac INNER JOIN emc USING (id)")
COUNT = "SET join_protocol = 'masked'; SELECT COUNT(*) FROM ac INNER JOIN emc USING (id)"


def _log(pid: int, events: list[int], marks=()) -> dict:
    return {"pid": pid, "events": events, "marks": [list(m) for m in marks]}


def _send(j: int) -> int:
    return -(j + 1)


def _take(peer: int, k: int) -> int:
    return k * 4 + peer


def test_chain_through_three_parties_counts_every_hop():
    # 0 -> 1 -> 2 -> 0 -> 1: each message sent after taking up the previous one
    logs = {"a": _log(0, [_send(1), _take(2, 0), _send(1)]),
            "b": _log(1, [_take(0, 0), _send(2), _take(0, 1)]),
            "c": _log(2, [_take(1, 0), _send(0)])}
    assert rounds.critical_path(logs)["hops"] == 4
    assert rounds.critical_path(logs)["round_trips"] == 2


def test_simultaneous_exchange_is_one_hop():
    # every party sends to both others, then takes up both: one hop, as in an MPyC opening
    logs = {n: _log(i, [_send(j) for j in range(3) if j != i]
                    + [_take(j, 0) for j in range(3) if j != i])
            for i, n in enumerate("abc")}
    assert rounds.critical_path(logs)["hops"] == 1


def test_messages_taken_up_after_a_send_do_not_count_for_it():
    # b sends before taking up a's message: two independent hops, depth 1 each
    logs = {"a": _log(0, [_send(1), _take(1, 0)]),
            "b": _log(1, [_send(0), _take(0, 0)])}
    assert rounds.critical_path(logs)["hops"] == 1


def test_stages_split_the_hops():
    logs = {"a": _log(0, [_send(1), _take(1, 0), _send(1), _take(1, 1)],
                      [(2, "phase:hash"), (4, "phase:solve")]),
            "b": _log(1, [_take(0, 0), _send(0), _take(0, 1), _send(0)],
                      [(2, "phase:hash"), (4, "phase:solve")])}
    cp = rounds.critical_path(logs, lambda ph: "join" if ph == "hash" else "compute",
                              ("join", "compute"))
    assert cp["hops"] == 4
    assert cp["by_stage"] == {"join": 2, "compute": 2}


def test_logs_that_do_not_fit_are_refused():
    logs = {"a": _log(0, [_take(1, 0)]), "b": _log(1, [])}
    with pytest.raises(ValueError, match="never sent"):
        rounds.critical_path(logs)


def test_emulated_rtt_setting(monkeypatch):
    monkeypatch.setenv(rounds.EMULATE_ENV, "40")
    assert rounds.emulated_rtt() == pytest.approx(0.040)
    monkeypatch.setenv(rounds.EMULATE_ENV, "fast")
    from dialect.errors import ConfigError

    with pytest.raises(ConfigError, match=rounds.EMULATE_ENV):
        rounds.emulated_rtt()


# --- real sessions ------------------------------------------------------------------------------


def _run(con, sql: str) -> Run:
    t0 = time.perf_counter()
    cur = con.cursor()
    cur.execute(sql)
    rows = cur.fetchall()
    return Run(rows, cur.stats, time.perf_counter() - t0)


def _register(con) -> None:
    ac, emc = make_tables(120, 120, 90, seed=3)
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")


@pytest.mark.e2e
def test_sum_counts_rounds_and_bytes(con):
    _register(con)
    run = _run(con, SUM)
    cp = run.critical()
    assert cp is not None and not cp["overflow"]
    assert run.hops > 0
    assert sum(cp["by_stage"].values()) == cp["hops"]
    assert cp["by_stage"]["join"] > 0 and cp["by_stage"]["compute"] > 0
    for p in PARTIES:
        assert run.stage_sent_mb("join", p) > 0
        assert sum(run.stage_sent_mb(s, p) for s in TRAFFIC_STAGES) > 0
        # the per-phase bytes add up to the session's own count of bytes sent
        per_phase = sum(n for v in run.stats[p]["traffic"]["bytes_by_phase"].values()
                        for n in v.values())
        assert per_phase == sum(run.stats[p]["bytes_sent"].values())
    # the projection adds at least the latency of the hops
    assert run.wan_seconds(0.020) >= run.total + run.hops * 0.010


@pytest.mark.e2e
def test_fixed_plan_counts_the_same_rounds_twice(con):
    _register(con)
    a, b = _run(con, COUNT), _run(con, COUNT)
    assert a.hops > 0
    assert a.hops == b.hops
    assert a.critical()["by_stage"] == b.critical()["by_stage"]
    s, t = _run(con, SUM), _run(con, SUM)
    # the join's and the conversion's messages are sequential: the same count every run
    assert s.stage_hops("join") == t.stage_hops("join")
    assert s.stage_hops("conversion") == t.stage_hops("conversion")


@pytest.mark.e2e
def test_emulated_latency_slows_a_session_by_its_hops(con, monkeypatch):
    """With every message held RTT/2, the same SUM takes ~hops x RTT/2 longer, and (latency
    dominating the timing) the count is the same in both runs.

    The bound: with a one-way delay L the wall clock is at least hops(L) x L (the chain of
    messages) and at most the undelayed wall clock + hops(0) x L plus the compute that the
    delays keep from overlapping (at most the undelayed wall clock, on these shared cores).
    """
    import engine

    _register(con)
    base = [_run(con, SUM) for _ in range(3)]
    plain = statistics.median(r.total for r in base)
    hops0 = max(r.hops for r in base)
    rtt = 0.400
    monkeypatch.setenv(rounds.EMULATE_ENV, f"{rtt * 1000:g}")  # inherited by the servers
    with engine.connect(policies=OPEN_POLICY) as slow:
        monkeypatch.delenv(rounds.EMULATE_ENV)
        _register(slow)
        runs = [_run(slow, SUM) for _ in range(2)]
    assert runs[0].hops == runs[1].hops > 0
    added = statistics.median(r.total for r in runs) - plain
    low = runs[0].hops * rtt / 2 - plain - 0.5
    high = hops0 * rtt / 2 + plain + 1.0
    assert runs[0].hops * rtt / 2 > plain  # the delay dominates, so the test can fail
    assert low < added < high, (added, low, high)
    # the projection of an emulated run replaces the emulated delay by the WAN's
    r = runs[0]
    r.emulated_rtt = rtt
    assert r.wan_seconds(rtt) == pytest.approx(
        r.total + rounds_setup(rtt) + sum(max(r.links(s).values(), default=0)
                                          for s in TRAFFIC_STAGES) / 12.5e6)


def rounds_setup(rtt: float) -> float:
    from bench.common import SETUP_ROUND_TRIPS

    return SETUP_ROUND_TRIPS * rtt
