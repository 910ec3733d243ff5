"""Progress on long queries (issue 12, item 5) on real federations: the embedded one (three
server processes, MPyC sessions over TLS, 512-bit Paillier keys) and a deployment of three
``mpcsql serve`` processes with analysts' certificates (2048-bit keys).

* the callback and ``cursor.progress`` show the query advancing, in the order the session at
  the analyst's party reported its steps (its transcript);
* the sequence of reports every party's session sends is the same in two runs whose hidden
  data differ but whose public shape (ids, sizes, bounds) is the same (the security rule of
  engine/session/progress.py), for both joins, a WHERE, a GROUP BY, a LASSO and one table;
* ``mpcsql query`` and ``mpcsql demo`` draw a bar on a pseudo-terminal and none when piped;
* ``mpcsql status`` shows a running query's phase to its analyst and to the party's
  administrator (the server's own certificate), not to another analyst of the party.
"""

from __future__ import annotations

import glob
import os
import pickle
import pty
import re
import select
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

import engine
from dialect.errors import AuthorizationError
from tests.conftest import OPEN_POLICY, make_tables

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_AC, N_EMC, OVERLAP = 300, 260, 200
SQL = "SELECT COUNT(*), AVG(ac.charges), SUM(emc.bmi) FROM ac JOIN emc USING (id)"
#: Every phase a session reports (engine/session, engine/protocols/joins, regression/lasso).
PHASES = ("queued", "starting", "connecting", "agreeing on the query", "hashing ids",
          "generating a Paillier key", "encrypting", "sending rows to the helper",
          "helper matching ids", "helper re-randomising", "decrypting", "converting shares",
          "sharing input", "rows", "slots", "finish", "reveal", "aggregate", "gram", "solve",
          "solver iteration", "polishing", "closing", "done")
#: The steps of the other parties that the coordinating party must never be shown: their own
#: table sizes and timing before the join announces m.
PRIVATE = {"emc": {"hashing ids", "generating a Paillier key", "encrypting",
                   "sending rows to the helper", "helper matching ids"},
           "helper": {"waiting for the data parties' rows", "matching ids"}}


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tdir = str(tmp_path_factory.mktemp("progress-transcripts"))
    with engine.connect(policies=OPEN_POLICY, key_bits=512, transcript_dir=tdir) as con:
        ac, emc = make_tables(N_AC, N_EMC, OVERLAP, seed=41)
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id")
        con.progress_interval = 0.05
        yield con, tdir


def reports(tdir: str, qid: str, public: bool = False) -> dict[str, list[tuple]]:
    """What each party's session reported for query ``qid`` (its transcript), as tuples
    (phase, done, total, unit[, public])."""
    out = {}
    for f in glob.glob(os.path.join(tdir, f"{qid}-*.pkl")):
        with open(f, "rb") as fh:
            view = pickle.load(fh)
        out[os.path.basename(f)[len(qid) + 1:-4]] = [
            (r["phase"], r["done"], r["total"], r["unit"]) + ((r["public"],) if public else ())
            for r in view["progress"]]
    assert set(out) == {"ac", "emc", "helper"}
    return out


def steps(sequence: list[tuple]) -> list[str]:
    """The phases of a report sequence, each counted step once."""
    out: list[str] = []
    for phase, *_ in sequence:
        if not out or out[-1] != phase:
            out.append(phase)
    return out


def assert_advances(seen: list, reported: list[tuple]) -> None:
    """What the client saw is the session's own reports, in their order, then done."""
    assert seen and seen[-1].phase == "done" and seen[-1].state == "done"
    states = [p.state for p in seen]
    order = ["queued", "running", "done"]
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states), states
    running = [(p.phase, p.done, p.total, p.unit) for p in seen
               if p.phase not in ("queued", "starting", "done")]
    at = [reported.index(r) for r in running]  # every one is a report of the session ...
    assert at == sorted(at), running  # ... seen in the order the session sent them
    assert len(set(at)) >= 2, running  # and the query was seen advancing
    for p in seen:
        assert p.phase in PHASES
        if p.total is not None:
            assert 0 <= p.done <= p.total and p.fraction == pytest.approx(p.done / p.total)


def test_the_callback_shows_the_query_advancing(fed):
    con, tdir = fed
    seen = []
    cur = con.execute(SQL, on_progress=seen.append)
    assert cur.fetchall()[0][0] == OVERLAP
    ac = reports(tdir, cur.query_id)["ac"]
    assert steps(ac) == [
        "connecting", "agreeing on the query", "hashing ids", "generating a Paillier key",
        "encrypting", "sending rows to the helper", "helper matching ids",
        "helper re-randomising", "decrypting", "converting shares", "rows", "slots", "finish",
        "reveal", "closing"]
    encrypting = [r for r in ac if r[0] == "encrypting"]
    assert encrypting[0] == ("encrypting", 0, N_AC, "rows")
    assert encrypting[-1] == ("encrypting", N_AC, N_AC, "rows") and len(encrypting) == 51
    assert ("decrypting", OVERLAP, OVERLAP, "rows") in ac
    assert_advances(seen, ac)
    assert cur.progress == seen[-1]
    # ac was shown the other parties' public steps only, and never emc's table size
    shown = {(n, q.phase, q.total) for p in seen for n, q in (p.parties or {}).items() if q}
    assert {n for n, *_ in shown} == {"ac", "emc", "helper"}, shown
    for name, phase, total in shown:
        assert phase not in PRIVATE.get(name, ()) and total != N_EMC, (name, phase)
    rep = reports(tdir, cur.query_id, public=True)
    assert [r[0] for r in rep["emc"] if not r[4]] == [
        "hashing ids", "generating a Paillier key", *["encrypting"] * 51,
        "sending rows to the helper", "helper matching ids"]


def test_cursor_progress_read_from_another_thread(fed):
    con, tdir = fed
    cur = con.cursor()
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            p = cur.progress
            if p is not None and (not seen or seen[-1] != p):
                seen.append(p)
            time.sleep(0.02)

    t = threading.Thread(target=watch)
    t.start()
    try:
        cur.execute("SELECT LASSO(charges, age, bmi, children, alpha => 0.01) "
                    "FROM ac JOIN emc USING (id)")
    finally:
        stop.set()
        t.join()
    seen.append(cur.progress)
    ac = reports(tdir, cur.query_id)["ac"]
    loop = [r for r in ac if r[0] == "solver iteration"]
    total = loop[0][2]
    assert loop == [("solver iteration", k, total, None) for k in range(total + 1)]
    assert steps(ac)[-5:] == ["solve", "solver iteration", "polishing", "reveal", "closing"]
    assert_advances(seen, ac)


def test_a_callback_that_raises_cancels_the_query_at_every_party(fed):
    con, _ = fed

    class Enough(Exception):
        pass

    def stop_when_running(p):
        if p.state == "running":
            raise Enough(str(p))

    cur = con.cursor()
    with pytest.raises(Enough):
        cur.execute(SQL, on_progress=stop_when_running)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = {q["state"] for q in con.queries() if q["query_id"] == cur.query_id}
        if states == {"cancelled"}:
            break
        time.sleep(0.1)
    assert states == {"cancelled"}
    assert cur.execute("SELECT COUNT(*) FROM ac JOIN emc USING (id)").fetchall() == [(OVERLAP,)]


# --- the same reports whatever the hidden data -----------------------------------------------

BOUNDS_AC = {"age": 128, "charges": 65536}
BOUNDS_EMC = {"bmi": 64, "children": 8}


def world(seed: int, bmi: tuple[float, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables with the same ids, sizes, bounds and domains in every world; hidden values
    differ (so do the rows a WHERE leaves and the groups the rows fall in)."""
    ids = np.random.default_rng(1234).choice(np.arange(1, 10_000_000), N_AC + N_EMC - OVERLAP,
                                             replace=False)
    rng = np.random.default_rng(seed)
    ac = pd.DataFrame({"id": ids[:N_AC], "age": rng.integers(18, 90, N_AC),
                       "charges": np.round(rng.uniform(1000, 60000, N_AC), 2)})
    emc = pd.DataFrame({"id": np.concatenate([ids[:OVERLAP], ids[N_AC:]]),
                        "bmi": np.round(rng.uniform(*bmi, N_EMC), 3),
                        "children": rng.integers(0, 6, N_EMC)})
    return (ac.sample(frac=1, random_state=seed).reset_index(drop=True),
            emc.sample(frac=1, random_state=seed + 1).reset_index(drop=True))


WORLDS = {"A": (1, (16.0, 48.0)), "B": (2, (16.0, 31.0))}
CASES = {
    "paillier-where": "SELECT COUNT(*), SUM(ac.charges) FROM ac JOIN emc USING (id) "
                      "WHERE emc.bmi > 30",
    "masked-group-by": "SET join_protocol = 'masked'; SELECT children, COUNT(*), AVG(age) "
                       "FROM ac JOIN emc USING (id) WHERE bmi > 30 GROUP BY children",
    "lasso-where": "SELECT LASSO(charges, age, bmi, alpha => 0.01) FROM ac JOIN emc "
                   "USING (id) WHERE bmi > 25",
    "one-table": "SELECT COUNT(*), AVG(bmi) FROM emc WHERE bmi > 30",
}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    tdir = str(tmp_path_factory.mktemp("progress-worlds"))
    with engine.connect(policies={**OPEN_POLICY, "emc": {"min_intersection": 0,
                                                          "min_group_rows": 2}},
                        key_bits=512, transcript_dir=tdir) as con:

        def run(name: str, sql: str):
            ac, emc = world(*WORLDS[name])
            con.register("ac", ac, party="ac", key="id", bounds=BOUNDS_AC)
            con.register("emc", emc, party="emc", key="id", bounds=BOUNDS_EMC,
                         domains={"children": {"min": 0, "max": 5}})
            cur = con.execute(sql)
            return cur.fetchall(), reports(tdir, cur.query_id, public=True), con.tables()

        yield run


@pytest.mark.leakage
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_party_reports_the_same_sequence_whatever_the_hidden_data(worlds, case):
    rows_a, rep_a, cat_a = worlds("A", CASES[case])
    rows_b, rep_b, cat_b = worlds("B", CASES[case])
    assert cat_a == cat_b  # the same public metadata
    assert rows_a != rows_b  # the hidden data differ (so do the rows the WHERE leaves)
    for party in ("ac", "emc", "helper"):
        assert rep_a[party] == rep_b[party], party  # phases, counts and the public flags
    def totals(party: str) -> dict[str, int]:
        return {r[0]: r[2] for r in rep_a[party] if r[2] is not None}

    if case == "paillier-where":  # not vacuous: the counts are the public sizes
        assert totals("ac") == {"encrypting": N_AC, "decrypting": OVERLAP}
        assert totals("emc") == {"encrypting": N_EMC, "decrypting": OVERLAP}
        assert totals("helper") == {"re-randomising ac's rows": OVERLAP,
                                    "re-randomising emc's rows": OVERLAP}
    elif case == "lasso-where":
        assert "solver iteration" in totals("ac")


# --- the command line: a bar on a terminal, none when piped ----------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": ROOT, "TERM": "xterm", "COLUMNS": "", "LINES": ""}


def in_pty(args: list[str], *, size: tuple[int, int] | None, timeout: float = 300) -> str:
    """Run ``mpcsql ARGS`` with standard output and error on a new pseudo-terminal (of
    ``size`` rows x columns; None: as created, 0 x 0); everything it wrote there."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    if size is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=_env(), start_new_session=True)
    os.close(slave)
    out, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's last writer has gone
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=30) == 0, out.decode(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return out.decode("utf-8", errors="replace")


#: A bar line of party ac: one of its phases, or another party's count it waits for (a loaded
#: machine may show only "ac: waits for helper: re-randomising ac's rows 0 / 200 rows").
BAR = re.compile(r"ac: (" + "|".join(re.escape(p) for p in PHASES)
                 + r"|waits for (ac|emc|helper): )\b")


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    d = tmp_path_factory.mktemp("progress-cli")
    ac, emc = make_tables(N_AC, N_EMC, OVERLAP, seed=43)
    ac.to_csv(d / "ac.csv", index=False)
    emc.to_csv(d / "emc.csv", index=False)
    return ["--key-bits", "512", "--table", f"ac={d / 'ac.csv'}", "--table",
            f"emc={d / 'emc.csv'}"]


def test_query_draws_a_bar_on_a_terminal(csvs):
    out = in_pty(["query", SQL, *csvs], size=None)  # a terminal that reports no size
    assert BAR.search(out), out
    table = out[out.rindex("\r", 0, out.index("+-")):]  # the bar is gone before the result
    assert "count_star()" in table and str(OVERLAP) in table and not BAR.search(table)


def test_query_piped_prints_no_bar(csvs):
    r = subprocess.run([sys.executable, "-m", "engine.cli", "query", SQL, *csvs,
                        "--format", "csv"], capture_output=True, text=True, env=_env(),
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "count_star(),avg(ac.charges),sum(emc.bmi)"
    assert "\r" not in r.stdout + r.stderr and not BAR.search(r.stdout + r.stderr)


def test_demo_draws_a_bar_on_a_terminal():
    """The piped half (no bar, no carriage return) is checked on the demo run that
    tests/test_cli_e2e.py::test_demo_runs_and_matches_duckdb makes anyway (with this module's
    ``_env``): one demo run fewer (each is a whole federation, a join and a LASSO)."""
    out = in_pty(["demo", "--key-bits", "512"], size=(30, 100))
    assert BAR.search(out) and "Plaintext DuckDB" in out, out[-3000:]


# --- mpcsql status on a deployment: who sees a running query's progress ----------------------


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    from tests.deployment import Deployment

    ac, emc = make_tables(N_AC, N_EMC, OVERLAP, seed=44)
    d = Deployment(str(tmp_path_factory.mktemp("progress-deploy")), tables={
        "ac": {"party": "ac", "key": "id", "frame": ac},
        "emc": {"party": "emc", "key": "id", "frame": emc}},
        policies={p: {"min_intersection": 0} for p in ("ac", "emc", "helper")},
        timeouts={"connect": 10, "peer": 10, "query": 300})
    d.alice, d.bob = d.analyst("alice@ac"), d.analyst("bob@ac")
    d.start_all()
    yield d
    d.stop_all()


def _status(capsys, dsn: str, files: dict[str, str]) -> str:
    from engine.cli.main import main

    capsys.readouterr()
    assert main(["status", "--server", dsn, "--tls-ca", files["ca"], "--tls-cert",
                 files["cert"], "--tls-key", files["key"]]) == 0
    return capsys.readouterr().out


def _admin(d, party: str) -> dict[str, str]:
    """The party server's own certificate and key: its administrator's credentials."""
    return {"ca": os.path.join(d.ca, "ca.crt"),
            "cert": os.path.join(d.dir(party), "certs", f"{party}.crt"),
            "key": os.path.join(d.dir(party), f"{party}.key")}


def test_status_shows_a_running_query_s_phase_to_its_analyst_and_the_administrator(dep,
                                                                                    capsys):
    box: dict = {}
    with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
        cur = con.cursor()
        t = threading.Thread(target=lambda: box.update(rows=cur.execute(SQL).fetchall()))
        t.start()
        try:
            deadline = time.monotonic() + 120
            mine = None
            while time.monotonic() < deadline and t.is_alive():
                out = _status(capsys, dep.dsn("ac"), dep.alice)
                mine = re.search(r"^    progress: (.+)$", out, re.M)
                if mine and cur.query_id in out and not mine.group(1).startswith("queued"):
                    break
                time.sleep(0.2)
            assert mine, out
            phase = mine.group(1)
            assert any(phase.startswith(p) for p in PHASES), phase
            assert re.search(rf"^{cur.query_id}  running ", out, re.M)
            # another analyst of ac sees the query listed, not its progress
            other = _status(capsys, dep.dsn("ac"), dep.bob)
            assert cur.query_id in other and "progress:" not in other
            with engine.connect(dep.dsn("ac"), tls=dep.bob) as bob:
                from engine.control.messages import QueryProgress

                with pytest.raises(AuthorizationError, match="another analyst"):
                    bob._request("ac", QueryProgress(query_id=cur.query_id))
            # ac's administrator (the server's own certificate) sees it, and may only watch
            admin = _status(capsys, dep.dsn("ac"), _admin(dep, "ac"))
            assert cur.query_id in admin and "    progress: " in admin
            with engine.connect(dep.dsn("ac"), tls=_admin(dep, "ac")) as adm, \
                    pytest.raises(AuthorizationError, match="administrator may not"):
                adm.execute(SQL)
            # at emc, the participant's record: its administrator sees emc's own progress
            theirs = _status(capsys, dep.dsn("emc"), _admin(dep, "emc"))
            assert cur.query_id in theirs and "participant" in theirs
        finally:
            t.join(timeout=300)
    assert box["rows"][0][0] == OVERLAP
    assert cur.progress.phase == "done"
