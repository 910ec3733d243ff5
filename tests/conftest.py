"""Shared fixtures: real three-process federations on loopback with 2048-bit Paillier keys."""

from __future__ import annotations

import glob
import os
import pickle
import subprocess

import numpy as np
import pandas as pd
import pytest

OPEN_POLICY = {p: {"min_intersection": 0} for p in ("ac", "emc", "helper")}


def make_tables(n_ac: int, n_emc: int, overlap: int, seed: int = 0):
    """Two vertically partitioned tables with ``overlap`` shared ids (ints), shuffled."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(1, 10_000_000), size=n_ac + n_emc - overlap, replace=False)
    ac_ids = ids[:n_ac]
    emc_ids = np.concatenate([ids[:overlap], ids[n_ac:]])
    ac = pd.DataFrame({
        "id": ac_ids,
        "age": rng.integers(18, 90, n_ac),
        "charges": np.round(rng.lognormal(9, 1, n_ac), 2),
        "delta": rng.normal(0, 1000, n_ac),
    })
    emc = pd.DataFrame({
        "id": emc_ids,
        "bmi": np.round(rng.normal(30, 6, n_emc), 3),
        "children": rng.integers(0, 5, n_emc),
    })
    return (ac.sample(frac=1, random_state=seed).reset_index(drop=True),
            emc.sample(frac=1, random_state=seed + 1).reset_index(drop=True))


def descendants(pid: int) -> list[int]:
    """All live descendant process ids of ``pid``."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def niceness(pid: int) -> int | None:
    """The nice value of a live process (field 19 of /proc/<pid>/stat), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[16])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def recv_exactly(sock, n: int) -> bytes:
    """n bytes from a (TLS) socket; fails the test if the peer closes first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "connection closed early"
        buf += chunk
    return buf


@pytest.fixture(scope="session")
def con():
    """One embedded federation for the whole test session (real processes, real 2048-bit
    Paillier; each start costs ~7 CPU s of imports in the three servers), shared by every
    module that uses this fixture: a test registers the tables it queries (registering
    replaces them), and neither stops, kills nor reconfigures these servers nor leaves
    ``con.receivers`` set; a test that needs other policies or a fresh federation starts its
    own (``engine.connect``)."""
    import engine

    c = engine.connect(policies=OPEN_POLICY)
    yield c
    c.close()


@pytest.fixture(scope="session")
def recording(tmp_path_factory):
    """``(con, tdir)``: one embedded federation for the session that records every party's view
    of every session in ``tdir`` (``transcript_dir``; ``<query_id>-<party>.pkl``), every party
    ``min_intersection = 0``; shared like ``con`` (the leakage and disclosure tests: each
    registers its tables and reads the transcripts of its own queries)."""
    import engine

    tdir = str(tmp_path_factory.mktemp("transcripts"))
    with engine.connect(policies=OPEN_POLICY, transcript_dir=tdir) as c:
        yield c, tdir


def run_recorded(recording, ac: pd.DataFrame, emc: pd.DataFrame, sql: str):
    """``(rows, {party: view})``: ``sql`` over ``ac`` and ``emc`` on the recording federation,
    with each party's transcript of that one query (earlier transcripts are removed first)."""
    con, tdir = recording
    for f in glob.glob(os.path.join(tdir, "*.pkl")):
        os.unlink(f)
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")
    rows = con.execute(sql).fetchall()
    views = {}
    for f in glob.glob(os.path.join(tdir, "*.pkl")):
        with open(f, "rb") as fh:  # written by this test's own sessions
            views[os.path.basename(f).rsplit("-", 1)[1][:-4]] = pickle.load(fh)
    return rows, views


def query_views(tdir: str, query_id: str) -> dict[str, dict]:
    """``{party: view}``: each party's recorded transcript of query ``query_id`` in ``tdir``."""
    out = {}
    for f in glob.glob(os.path.join(tdir, f"{query_id}-*.pkl")):
        with open(f, "rb") as fh:  # written by this test run's own sessions
            out[os.path.basename(f)[len(query_id) + 1:-4]] = pickle.load(fh)
    return out


def rows_close(a: list[tuple], b: list[tuple], rel: float = 1e-6) -> bool:
    """Integers and strings equal; floats within ``rel`` (the finish stage's divisions round
    probabilistically, so two runs of one federation differ in the last digits too)."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            if isinstance(y, (int, str)):
                if x != y:
                    return False
            elif abs(float(x) - float(y)) > rel * max(1.0, abs(float(y))):
                return False
    return True


def connect_with_env(env: dict[str, str], **kw):
    """``engine.connect(policies=OPEN_POLICY, **kw)`` with ``env`` set while the party servers
    start (they inherit it), restored afterwards."""
    import engine

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return engine.connect(policies=OPEN_POLICY, **kw)
    finally:
        for k, v in old.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
