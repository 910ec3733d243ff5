"""Query ids, states, one query at a time per party, and cancellation (three real processes)."""

from __future__ import annotations

import math
import os
import threading
import time

import pytest

import engine
from engine.cli.main import main as cli
from engine.client.dbapi import Connection
from engine.server.audit import read, verify
from tests.conftest import OPEN_POLICY, alive, descendants, make_tables

pytestmark = pytest.mark.e2e

JOIN = "FROM ac JOIN emc USING (id)"
MASKED = "SET join_protocol = 'masked'; "
SLOW = f"SELECT AVG(ac.charges), SUM(emc.bmi) {JOIN}"  # Paillier join: seconds at 150 rows


@pytest.fixture(scope="module")
def fed():
    with engine.connect(policies=OPEN_POLICY, query_timeout=300) as con:
        ac, emc = make_tables(150, 150, 120, seed=51)
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id")
        yield con


def _in_thread(cur, sql: str) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        try:
            box["rows"] = cur.execute(sql).fetchall()
        except Exception as e:  # noqa: BLE001
            box["error"] = e

    th = threading.Thread(target=run)
    th.start()
    return th, box


def _state(con, qid: str | None) -> str | None:
    return next((q["state"] for q in con.queries() if q["query_id"] == qid), None)


def _wait_state(con, cur, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cur.query_id and _state(con, cur.query_id) == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"query {cur.query_id} never became {state}: {con.queries()}")


def _no_sessions_left(con, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for s in con.federation.pids().values() for p in descendants(s) if alive(p)]
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"session processes left behind: {left}")


def _audit(con, party: str) -> dict[str, dict]:
    path = os.path.join(con.federation.workdir, f"{party}.audit.jsonl")
    assert verify(path).ok
    return {e["query_id"]: e for e in read(path)}


def test_status_shows_states_times_and_errors(fed):
    cur = fed.execute(MASKED + f"SELECT COUNT(*) {JOIN}")
    assert cur.fetchall() == [(120,)]
    with pytest.raises(engine.ProgrammingError):
        fed.execute("SELECT SUM(nope) FROM ac")
    queries = {q["query_id"]: q for q in fed.queries()}
    done = queries[cur.query_id]
    assert done["state"] == "done" and done["role"] == "coordinator"
    assert done["analyst"].startswith("local:") and done["coordinator"] == "ac"
    assert done["submitted"] <= done["started"] <= done["finished"]
    failed = [q for q in queries.values() if q["sql"] == "SELECT SUM(nope) FROM ac"][0]
    assert failed["state"] == "failed" and "BindError" in failed["error"]
    helper = Connection(fed.federation, "helper").queries()  # participants keep records too
    assert {q["query_id"]: q["role"] for q in helper}[cur.query_id] == "participant"


def test_concurrent_clients_from_two_coordinators_run_one_at_a_time(fed):
    # Three analysts at once: two at ac, one at emc (each coordinates at its own party).
    cons = [fed, Connection(fed.federation, "ac"), Connection(fed.federation, "emc")]
    cons[2].receivers = ["ac", "emc"]
    curs = [c.cursor() for c in cons]
    # the masked join (seconds per query here, against tens for SLOW's Paillier join): the
    # three still overlap unless the parties queue them
    runs = [_in_thread(cur, MASKED + SLOW) for cur in curs]
    for th, _ in runs:
        th.join(240)
    results = [box.get("rows", box.get("error")) for _, box in runs]
    assert all(isinstance(r, list) for r in results), results
    # the same query: equal up to the secure division's probabilistic rounding
    for r in results[1:]:
        assert len(r) == len(results[0]) and all(
            math.isclose(a, b, rel_tol=1e-12) for ra, rb in zip(r, results[0], strict=True)
            for a, b in zip(ra, rb, strict=True))
    # The helper's records show the three runs one after the other, never overlapping.
    helper = {q["query_id"]: q for q in Connection(fed.federation, "helper").queries()}
    spans = sorted((helper[c.query_id]["started"], helper[c.query_id]["finished"])
                   for c in curs)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    assert {helper[c.query_id]["coordinator"] for c in curs} == {"ac", "emc"}


def test_cancel_a_queued_then_a_running_query(fed):
    other = Connection(fed.federation, "ac")
    running, queued = fed.cursor(), other.cursor()
    th_a, box_a = _in_thread(running, SLOW)
    _wait_state(fed, running, "running")
    th_b, box_b = _in_thread(queued, MASKED + f"SELECT COUNT(*) {JOIN}")
    _wait_state(fed, queued, "queued")

    assert fed.cancel(queued.query_id) == "queued"
    th_b.join(30)
    assert isinstance(box_b.get("error"), engine.OperationalError), box_b
    assert f"query {queued.query_id} was cancelled" in str(box_b["error"])
    assert _state(fed, running.query_id) == "running"  # the other query is untouched

    running.cancel()  # Cursor.cancel, from another thread than the one waiting
    th_a.join(30)
    assert not th_a.is_alive()
    assert isinstance(box_a.get("error"), engine.OperationalError), box_a
    assert "was cancelled" in str(box_a["error"])
    assert _state(fed, running.query_id) == "cancelled"
    assert _state(fed, queued.query_id) == "cancelled"
    _no_sessions_left(fed)  # aborted at every party

    # Nothing was revealed, and every party wrote down what happened.
    ac = _audit(fed, "ac")
    assert ac[queued.query_id]["outcome"] == "cancelled" and ac[queued.query_id]["revealed"] == {}
    assert ac[running.query_id]["outcome"] == "cancelled"
    assert not any("the result" in f for fs in ac[running.query_id]["revealed"].values()
                   for f in fs)
    for party in ("emc", "helper"):
        entry = _audit(fed, party)[running.query_id]
        assert entry["outcome"].startswith("failed: OperationalError") and "abort" in \
            entry["outcome"]
    # The servers keep serving.
    assert fed.execute(MASKED + f"SELECT COUNT(*) {JOIN}").fetchall() == [(120,)]


def test_cancel_a_query_waiting_at_another_coordinators_party(fed):
    emc_con = Connection(fed.federation, "emc")
    emc_con.receivers = ["ac", "emc"]
    first, waiting = fed.cursor(), emc_con.cursor()
    th_a, box_a = _in_thread(first, SLOW)
    _wait_state(fed, first, "running")
    th_b, box_b = _in_thread(waiting, MASKED + f"SELECT COUNT(*) {JOIN}")
    _wait_state(emc_con, waiting, "queued")
    _wait_state(fed, waiting, "queued")  # ac has the prepare: emc's query waits for ac's slot
    assert emc_con.cancel(waiting.query_id) == "queued"
    th_b.join(30)
    assert "was cancelled" in str(box_b.get("error")), box_b
    th_a.join(240)
    assert box_a.get("rows"), box_a  # the first query was not disturbed
    deadline = time.monotonic() + 10  # ac notices that emc gave up waiting for its slot
    while _state(fed, waiting.query_id) not in ("failed", None) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _state(fed, waiting.query_id) == "failed"


def test_cancel_refuses_unknown_finished_and_foreign_queries(fed):
    with pytest.raises(engine.ProgrammingError, match="no query nope"):
        fed.cancel("nope")
    with pytest.raises(engine.ProgrammingError, match="bad query id"):
        fed.cancel("a b")
    cur = fed.execute(MASKED + f"SELECT COUNT(*) {JOIN}")
    with pytest.raises(engine.ProgrammingError, match=r"already finished \(done\)"):
        cur.cancel()
    helper = Connection(fed.federation, "helper")
    with pytest.raises(engine.ProgrammingError, match="coordinated by ac"):
        helper.cancel(cur.query_id)


def test_cli_status_and_cancel(fed, capsys):
    cur = fed.execute(MASKED + f"SELECT COUNT(*) {JOIN}")
    host, port = fed.federation.addresses["ac"]
    owner = fed.federation.tls_files("ac")  # the embedded federation's owner credentials
    tls = ["--tls-ca", owner["ca"], "--tls-cert", owner["cert"], "--tls-key", owner["key"]]
    assert cli(["status", "--server", f"mpcsql://{host}:{port}", *tls]) == 0
    out = capsys.readouterr().out
    assert cur.query_id in out and "done" in out
    assert cli(["cancel", cur.query_id, "--server", f"mpcsql://{host}:{port}", *tls]) == 2
    assert "already finished" in capsys.readouterr().err
