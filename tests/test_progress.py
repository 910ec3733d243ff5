"""Progress reports (issue 12, item 5), unit level: the session's reports and their thresholds,
the crypto batches' counters, the solver's hook, the wire messages, who may read a query's
progress, and the CLI's bar.  End to end (a real federation): tests/test_progress_e2e.py."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

import numpy as np
import pytest

from dialect.errors import AuthorizationError, ProgrammingError
from engine.client.progress import Progress
from engine.control import messages as M
from engine.deploy.certs import Identity
from engine.protocols import paillier
from engine.server.dispatch import ADMIN_OPS, Caller, authorize
from engine.server.party import may_watch
from engine.server.queries import QueryRecord
from engine.session.progress import (
    STEPS,
    Report,
    Reporter,
    after_for,
    first_stage,
    thresholds,
)

# --- reports --------------------------------------------------------------------------------


def test_report_text_and_fraction():
    assert Report("encrypting", 3200, 5000, "rows").text() == "encrypting 3,200 / 5,000 rows"
    assert Report("encrypting", 3200, 5000, "rows").fraction == 0.64
    assert Report("helper re-randomising").text() == "helper re-randomising"
    assert Report("helper re-randomising").fraction is None
    assert Report("decrypting", 0, 0, "rows").fraction == 1.0
    assert Report("solver iteration", 12, 30).text() == "solver iteration 12 / 30"


def _r(**kw):
    return {"phase": "x", "done": None, "total": None, "unit": None, "public": True, **kw}


@pytest.mark.parametrize("msg, cause", [
    (_r(done=1), "done/total"),  # done without total
    (_r(done=6, total=5, unit="rows"), "done/total"),  # beyond the total
    (_r(done=-1, total=5), "count"),
    (_r(done=True, total=5), "count"),
    (_r(phase=""), "phase"),
    (_r(phase="x" * 81), "phase"),
    (_r(done=1, total=5, unit="secrets"), "unit"),
    (_r(public=1), "public"),
    (_r(value=3), ""),  # no other field
    (["x", 1, 5, "rows", True], ""),
])
def test_malformed_reports_are_refused(msg, cause):
    with pytest.raises(ValueError, match=f"^malformed progress report{': ' if cause else ''}"
                                         f"{cause}"):
        Report.from_wire(msg)


def test_report_round_trip():
    for r in (Report("encrypting", 50, 300, "rows", public=False), Report("rows")):
        assert Report.from_wire(r.to_wire()) == r


def test_steps_before_the_announcement_are_not_public():
    rep = Reporter()
    rep.step("agreeing on the query")
    rep.public = False  # what hash_and_match does until m is announced
    count = rep.step("encrypting", 2, "rows")
    count(2)
    rep.public = True
    rep.step("helper re-randomising")
    assert [r.public for r in rep.sent] == [True, False, False, False, True]


@pytest.mark.parametrize("total", [1, 2, 3, 49, 50, 51, 99, 100, 101, 870, 5000, 12345])
def test_thresholds_are_few_increasing_and_end_at_the_total(total):
    t = thresholds(total)
    assert len(t) == min(STEPS, total)
    assert all(a < b for a, b in zip(t, t[1:], strict=False))
    assert t[0] >= 1 and t[-1] == total


def test_a_counted_step_reports_its_start_and_each_threshold_once_whatever_the_timing():
    """The same step counted in big jumps or one by one gives the same reports: what a party
    reports depends on the total (a public size), not on how fast the work went."""
    def run(calls):
        rep = Reporter()
        count = rep.step("encrypting", 300, "rows")
        for done in calls:
            count(done)
        return rep.sent

    one_by_one = run(range(1, 301))
    jumps = run([7, 7, 150, 151, 299, 300, 300])
    at_once = run([300])
    assert one_by_one == jumps == at_once
    assert one_by_one[0] == Report("encrypting", 0, 300, "rows")
    assert [r.done for r in one_by_one[1:]] == thresholds(300)


def test_an_old_counter_cannot_report_into_a_new_step():
    rep = Reporter()
    old = rep.step("encrypting", 10, "rows")
    rep.step("helper re-randomising")
    old(10)
    assert rep.sent == [Report("encrypting", 0, 10, "rows"), Report("helper re-randomising")]


def test_iterations_restart_for_each_loop_and_repeats_are_not_sent_twice():
    rep = Reporter()
    for _group in range(2):
        for i in range(4):
            rep.iteration("solver iteration", i, 3) if i <= 3 else None
    rep.step("polishing")
    rep.step("polishing")
    loop = [Report("solver iteration", k, 3) for k in range(4)]
    assert rep.sent == loop + loop + [Report("polishing")]


def test_closed_phases_start_the_next_stage_of_the_plan():
    sent = []
    program = SimpleNamespace(program=SimpleNamespace(model=None), model=None)
    model_program = SimpleNamespace(program=SimpleNamespace(model=object()), model=None)
    rep = Reporter(sent.append, after_for(program))
    for name in ("wait for peers", "share input", "rows", "wait for peers", "slots", "finish"):
        rep.closed(name)
    assert [r.phase for r in sent] == ["slots", "finish", "reveal"]
    assert sent == rep.sent
    assert after_for(model_program)["finish"] == "solve"
    assert first_stage(program) == "rows"
    assert first_stage(SimpleNamespace(program=None, model=object())) == "gram"
    assert first_stage(SimpleNamespace(program=None, model=None)) == "aggregate"


# --- the crypto batches count their work -----------------------------------------------------


def _square(i: int) -> int:
    time.sleep(0.0005)  # slow enough for the parent to take chunks too
    return i * i


@pytest.mark.parametrize("workers", [1, 3])
def test_fork_map_counts_every_item_over_all_workers(workers):
    seen: list[int] = []
    out = paillier._fork_map(_square, 400, workers, seen.append)
    assert out == [i * i for i in range(400)]
    assert seen == sorted(seen) and seen[-1] == 400 and len(seen) >= 2


@pytest.fixture(scope="module")
def keypair():
    return paillier.generate_keypair(512)


def test_encrypt_mask_decrypt_count_rows(keypair):
    pub, priv = keypair
    p = (1 << 127) - 1
    d = 9  # three ciphertexts per row at 512 bits: progress is in rows, not ciphertexts
    assert paillier.ciphertexts_per_row(d, 512) == 3
    rows = [list(range(k, k + d)) for k in range(150)]
    enc, mask, dec = [], [], []
    cts = paillier.encrypt_rows(pub, rows, private_key=priv, progress=enc.append)
    masked, shares = paillier.helper_mask(pub, cts, d, p, progress=mask.append)
    plain = paillier.decrypt_shares(priv, masked, d, p, progress=dec.append)
    for seen in (enc, mask, dec):
        assert seen == sorted(seen) and seen[-1] == 150 and max(seen) == 150
    got = (np.array(plain, dtype=object) + np.array(shares, dtype=object)) % p
    assert got.tolist() == rows


def test_randomisers_from_the_pool_count_as_done_at_once(keypair):
    pub, _ = keypair
    ctx = paillier._PublicCtx(pub)
    pool = paillier.precompute_randomizers(pub, 5, workers=1)
    seen: list[int] = []
    assert len(paillier.draw_randomizers(ctx, 8, pool, 1, seen.append)) == 8
    assert seen[0] == 5 and seen[-1] == 8 and pool == []


# --- the solver's loops ----------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["admm", "cd"])
def test_lasso_reports_its_public_iterations_then_polishing(solver):
    from engine.protocols import regression
    from engine.protocols import runtime as mpcrt
    from engine.protocols.regression import lasso

    rng = np.random.default_rng(3)
    X = rng.uniform(-0.5, 0.5, (40, 3))
    y = X @ np.array([0.3, -0.2, 0.0]) + rng.normal(0, 0.01, 40)
    sf = mpcrt.secfxp()
    calls: list[tuple] = []
    token = lasso.PROGRESS.set(lambda *a: calls.append(a))
    try:
        mpcrt.mpc.run(regression.fit(sf.array(X), sf.array(y), 40, "LASSO", alpha=0.001,
                                     solver=solver))
    finally:
        lasso.PROGRESS.reset(token)
    *loop, last = calls
    total = loop[0][2]
    assert loop == [("solver iteration", k, total) for k in range(total + 1)]
    assert last == ("polishing", None, None)


# --- messages and who may read a query's progress --------------------------------------------


def test_progress_request_and_reply_are_checked():
    req = M.parse_request({"op": "progress", "query_id": "q1"})
    assert req == M.QueryProgress(query_id="q1")
    with pytest.raises(ProgrammingError, match="missing field 'query_id'"):
        M.parse_request({"op": "progress"})
    with pytest.raises(ProgrammingError, match="field 'query_id' must be str"):
        M.parse_request({"op": "progress", "query_id": 7})
    rep = M.ProgressReply.from_wire({"ok": True, "query_id": "q1", "party": "ac",
                                     "state": "running", "phase": "encrypting", "done": 3,
                                     "total": 5, "unit": "rows", "fraction": 0.6,
                                     "elapsed": 1.5})
    assert str(Progress.from_reply(rep.to_wire())) == "encrypting 3 / 5 rows (60%)"
    with pytest.raises(ProgrammingError, match="field 'done'"):
        M.ProgressReply.from_wire({"done": "3"})


def _server(name: str = "ac", embedded: bool = False):
    return SimpleNamespace(cfg=SimpleNamespace(name=name, tables=None if embedded else []))


def test_the_administrator_is_the_server_s_own_certificate_and_may_only_watch():
    server = _server()
    own = Identity("ac", "party")
    for op in sorted(ADMIN_OPS):
        req = M.parse_request({"op": op, **({"query_id": "q1"} if op == "progress" else {})})
        assert authorize(server, req, own) == Caller(admin=True)
    for msg in ({"op": "query", "sql": "SELECT 1"}, {"op": "cancel", "query_id": "q1"},
                {"op": "prepare", "sql": "x", "catalog": {}, "query_id": "q1"}):
        with pytest.raises(AuthorizationError, match="administrator may not ask"):
            authorize(server, M.parse_request(msg), own)
    # an analyst may ask, and so may a peer (the coordinating party): the handler decides
    # whether it is theirs (may_watch); a peer may not ask what only analysts may
    req = M.QueryProgress(query_id="q1")
    assert authorize(server, req, Identity("alice@ac", "analyst")) == Caller(analyst="alice@ac")
    assert authorize(server, req, Identity("emc", "party")) == Caller(from_party="emc")
    with pytest.raises(AuthorizationError, match="may not ask ac for 'status'"):
        authorize(server, M.Status(), Identity("emc", "party"))


def test_only_the_submitting_analyst_or_the_administrator_may_watch():
    rec = QueryRecord("q1", "coordinator", "alice@ac", "ac", "SELECT 1")
    assert may_watch(rec, Caller(analyst="alice@ac"))
    assert may_watch(rec, Caller(admin=True))
    assert not may_watch(rec, Caller(analyst="bob@ac"))
    assert not may_watch(rec, Caller())
    assert not may_watch(rec, Caller(analyst="alice@ac", from_party="emc"))  # a peer: no
    # at a participant, the record names the coordinator's analyst: none of ours matches it;
    # the coordinating party may watch (public steps only), no other peer may
    part = QueryRecord("q1", "participant", "alice@ac", "ac", "SELECT 1")
    assert not may_watch(part, Caller(analyst="carol@emc"))
    assert may_watch(part, Caller(analyst="alice@ac", from_party="ac"))
    assert not may_watch(part, Caller(from_party="helper"))


def test_the_coordinating_party_sees_only_public_steps():
    rec = QueryRecord("q1", "participant", "alice@ac", "ac", "SELECT 1")
    rec.start()
    rec.report(Report("encrypting", 100, 260, "rows", public=False))  # emc's own table size
    mine = rec.progress_dict()
    theirs = rec.progress_dict(for_peer=True)
    assert (mine["phase"], mine["total"]) == ("encrypting", 260)
    assert (theirs["phase"], theirs["done"], theirs["total"]) == ("local steps", None, None)
    rec.report(Report("decrypting", 40, 200, "rows"))  # m: known to every party
    assert rec.progress_dict(for_peer=True)["total"] == 200


def test_a_record_reports_its_state_until_the_session_reports():
    rec = QueryRecord("q1", "coordinator", "alice@ac", "ac", "SELECT 1")
    assert rec.progress_dict()["phase"] == "queued"
    rec.start()
    assert rec.progress_dict()["phase"] == "starting"
    rec.report(Report("decrypting", 10, 40, "rows"))
    d = rec.progress_dict()
    assert (d["phase"], d["done"], d["total"], d["fraction"], d["state"]) == (
        "decrypting", 10, 40, 0.25, "running")
    M.ProgressReply.from_wire({"party": "ac", **d})  # the handler's reply is well-formed
    rec.finish("failed", "boom")
    assert rec.progress_dict()["phase"] == "decrypting"  # where it failed
    rec2 = QueryRecord("q2", "coordinator", "alice@ac", "ac", "SELECT 1")
    rec2.start()
    rec2.report(Report("closing"))
    rec2.finish("done")
    assert rec2.progress_dict()["phase"] == "done"


# --- the CLI's bar ---------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_is_wanted_only_on_terminals(monkeypatch):
    from engine.cli.progress import progress_bar, wanted

    monkeypatch.setenv("TERM", "xterm")
    assert wanted(_Tty(), _Tty())
    assert not wanted(io.StringIO(), _Tty())
    assert not wanted(_Tty(), io.StringIO())
    monkeypatch.setenv("TERM", "dumb")
    assert not wanted(_Tty(), _Tty())
    with progress_bar(False) as bar:
        assert bar is None


def test_a_waiting_party_shows_the_count_of_the_party_it_waits_for():
    reply = {"phase": "helper re-randomising", "party": "ac", "state": "running",
             "elapsed": 40.0, "parties": {
                 "ac": {"phase": "helper re-randomising"},
                 "emc": {"phase": "decrypting", "done": 10, "total": 4000, "unit": "rows",
                         "fraction": 0.0025},
                 "helper": {"phase": "re-randomising emc's rows", "done": 1200,
                            "total": 4000, "unit": "rows", "fraction": 0.3}}}
    p = Progress.from_reply(reply)
    assert p.detail.party == "helper"
    assert str(p) == ("helper re-randomising (helper: re-randomising emc's rows 1,200 / "
                      "4,000 rows, 30%)")
    rows = Progress.from_reply({**reply, "phase": "rows"})  # not waiting for anyone
    assert rows.detail is None and str(rows) == "rows"
    from engine.cli.progress import Bar

    out = _Tty()
    Bar(out)(p)
    assert ("ac: waits for helper: re-randomising emc's rows 1,200 / 4,000 rows |"
            in out.getvalue()) and "|  30%, 40" in out.getvalue()  # (80 columns: cut)


def test_bar_draws_the_step_and_clears_itself():
    from engine.cli.progress import Bar

    out = _Tty()
    bar = Bar(out)
    bar(Progress("starting", party="ac", elapsed=0.4))
    bar(Progress("encrypting", 1600, 5000, "rows", 0.32, 3.0, party="ac"))
    bar(Progress("encrypting", 3200, 5000, "rows", 0.64, 5.0, party="ac"))
    bar(Progress("helper re-randomising", elapsed=9.0, party="ac"))
    text = out.getvalue()
    assert "ac: starting" in text
    assert "ac: encrypting 3,200 / 5,000 rows |" in text and " 64%, 5 s" in text
    assert "ac: helper re-randomising, 9 s" in text
    assert "ac: starting |" not in text  # no step is drawn in another step's format
    bar(Progress("done", state="done"))
    bar(Progress("encrypting", 1, 2, "rows", party="ac"))  # after the end: nothing
    assert out.getvalue().endswith("\r") or "\x1b" in out.getvalue()[len(text):]
