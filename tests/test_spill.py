"""The masked join beyond memory (issue 13 part 2, 10^8 rows): per-row state on disk.

Real three-process federations whose parties use chunks of 1,000 rows (MPCSQL_CHUNK_ROWS) and
spill every table of more than 1,500 rows (MPCSQL_SPILL_ROWS) into a spill directory of the
test's own (MPCSQL_SPILL_DIR): the server reads the table in record batches into a file, the
data parties shuffle on disk (the other owner's masks are computed at the positions), the
helper keeps its words, masked values and pairs on disk and matches bucket by bucket.  Results
equal DuckDB's and the in-memory federation's, with the same disclosures; the spill directory is
empty after a query that succeeded, was refused or was cancelled; the helper's view of one
party's multi-chunk upload does not depend on the other party's hidden rows.  Plus unit tests
of the pieces.
"""

from __future__ import annotations

import glob
import os
import stat
import threading
import time

import duckdb
import numpy as np
import pytest

import engine
from dialect.errors import DataError
from engine.protocols import spill as sp
from engine.protocols.joins import common, outofcore
from tests.conftest import connect_with_env, make_tables, query_views, rows_close

MASKED = "SET join_protocol = 'masked'; "
N_AC, N_EMC, OVERLAP, CHUNK, SPILL_ROWS = 5500, 5200, 4300, 1000, 1500
DOMAINS = {"children": {"min": 0, "max": 4}}
P = 2**128 - 173

QUERIES = [
    "SELECT COUNT(*), SUM(ac.age), AVG(ac.charges), SUM(emc.children), AVG(emc.bmi) "
    "FROM ac JOIN emc USING (id)",
    "SELECT COUNT(*), SUM(emc.children), AVG(ac.delta) FROM ac JOIN emc USING (id) "
    "WHERE emc.bmi > 30 AND ac.age < 60",
    "SELECT emc.children, COUNT(*), SUM(ac.age), AVG(emc.bmi) FROM ac JOIN emc USING (id) "
    "GROUP BY emc.children ORDER BY emc.children",
]


# --- unit tests --------------------------------------------------------------------------------


def test_spill_directory_is_private_and_removed(tmp_path):
    s = sp.Spill(str(tmp_path), 10)
    f = s.row_file("x", 3)
    f.append(np.arange(30, dtype=np.uint64).reshape(10, 3))
    assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o700
    assert (f.read(2, 5) == np.arange(6, 15).reshape(3, 3)).all()
    pos = np.array([9, 0, 4, 4, 7])
    assert (f.gather(pos) == np.arange(30).reshape(10, 3)[pos]).all()
    assert s.written == 240
    path = s.path
    s.cleanup()
    assert not os.path.exists(path) and os.listdir(tmp_path) == []


def test_gather_in_many_mappings(tmp_path, monkeypatch):
    monkeypatch.setattr(sp, "GATHER_ROWS", 7)
    s = sp.Spill(str(tmp_path))
    f = s.row_file("x", 2)
    data = np.random.default_rng(0).integers(0, 2**63, (1000, 2)).astype(np.uint64)
    for a in range(0, 1000, 300):
        f.append(data[a:a + 300])
    pos = np.random.default_rng(1).permutation(1000)[:333]
    assert (f.gather(pos) == data[pos]).all()
    s.cleanup()


def test_shuffled_rows_are_a_permutation_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(sp, "BUCKET_ROWS", 64)  # 16 buckets
    monkeypatch.setattr(sp, "READ_ROWS", 100)
    s = sp.Spill(str(tmp_path))
    n = 1000
    f = s.row_file("table", 3)
    ids = np.arange(n, dtype=np.int64) * 7 - 50
    vals = np.stack([ids * 0.5, ids * 0.25], axis=1)
    rows = np.empty((n, 3), dtype=np.uint64)
    rows[:, 0], rows[:, 1:] = ids.view(np.uint64), vals.view(np.uint64)
    f.append(rows)
    data = sp.SpilledRows(None, np.zeros((0, 2)), file=f, n=n)
    chunks = list(sp.shuffled_rows(data, s, 128))
    assert [len(c[0]) for c in chunks] == [128] * 7 + [104]
    got_ids = np.concatenate([c[0] for c in chunks])
    got_vals = np.concatenate([c[1] for c in chunks])
    assert sorted(got_ids.tolist()) == sorted(ids.tolist())
    assert (got_vals[:, 0] == got_ids * 0.5).all() and (got_vals[:, 1] == got_ids * 0.25).all()
    assert not (got_ids == ids).all()
    firsts = {int(next(iter(sp.shuffled_rows(data, s, 128)))[0][0]) for _ in range(30)}
    assert len(firsts) > 10  # the order is random (not a fixed one)
    assert sorted(os.listdir(s.path)) == ["00001-table"]  # the buckets are removed
    s.cleanup()


def _words(rng, n):
    return rng.integers(0, 2**63, size=(n, 2), dtype=np.int64).astype(np.uint64) * np.uint64(2)


@pytest.mark.parametrize("spill_rows, inbox_bytes", [(None, None), (0, None), (250, None),
                                                     (10**6, 5000)])
def test_matching_on_disk_equals_in_memory(tmp_path, spill_rows, inbox_bytes):
    """Buckets on disk match as in memory; the helper moves an inbox to disk beyond spill_rows
    rows or beyond inbox_bytes bytes (it does not know a party's n in advance)."""
    rng = np.random.default_rng(4)
    left, right = _words(rng, 700), _words(rng, 500)
    right[:300] = left[rng.permutation(700)[:300]]
    spill = None if spill_rows is None else sp.Spill(str(tmp_path), spill_rows)
    if inbox_bytes is not None:
        spill.inbox_bytes = inbox_bytes  # 3 chunks of 100 rows x (16 + 16) B
    boxes = []
    for words in (left, right):
        box = outofcore.Inbox(spill, 1, P, 100)
        for a in range(0, len(words) + 1, 100):
            part = words[a:a + 100]
            box.keep({"masked": bytes(len(part) * 16)}, len(part), part)
            if len(part) < 100:
                break
        boxes.append(box)
    assert all(b.on_disk for b in boxes) == (spill is not None)
    pairs = outofcore.match(*boxes, common.match_words)
    got = np.stack([pairs[0:len(pairs), 0], pairs[0:len(pairs), 1]], axis=1)
    want = common.match_words(left, right)
    assert {tuple(p) for p in got.tolist()} == {tuple(p) for p in want.tolist()}
    assert len(got) == 300
    if spill is not None:
        assert isinstance(pairs, outofcore.PairFile)
        left[5] = left[9]  # a duplicate within one side is refused, as in memory
        box = outofcore.Inbox(spill, 0, P, 1000)
        box.keep({"masked": b""}, len(left), left)
        empty = outofcore.Inbox(spill, 0, P, 1000)
        empty.keep({"masked": b""}, 0, np.zeros((0, 2), dtype=np.uint64))
        box.to_disk()
        with pytest.raises(DataError, match="duplicate join keys"):
            outofcore.match(box, empty, common.match_words)
        spill.cleanup()


# --- real three-party runs ---------------------------------------------------------------------


def _federation(spill_dir: str, transcript_dir: str | None = None, chunk: int = CHUNK,
                spill_rows: int = SPILL_ROWS, **kw):
    return connect_with_env({"MPCSQL_CHUNK_ROWS": str(chunk), "MPCSQL_SPILL_ROWS": str(spill_rows),
                             "MPCSQL_SPILL_DIR": spill_dir}, transcript_dir=transcript_dir, **kw)


@pytest.fixture(scope="module")
def tables():
    return make_tables(N_AC, N_EMC, OVERLAP, seed=17)


@pytest.fixture(scope="module")
def spilled(tmp_path_factory, tables):
    spill_dir = str(tmp_path_factory.mktemp("spill"))
    tdir = str(tmp_path_factory.mktemp("spilled-transcripts"))
    con = _federation(spill_dir, tdir)
    ac, emc = tables
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id", domains=DOMAINS)
    yield con, tdir, spill_dir
    con.close()


@pytest.fixture(scope="module")
def whole(recording, tables):
    con, tdir = recording  # the session's recording federation: one chunk, nothing spilled
    ac, emc = tables
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id", domains=DOMAINS)
    return con, tdir


def _empty(spill_dir: str, timeout: float = 10.0) -> list[str]:
    """What is left in the spill directory (after up to ``timeout`` s for the servers)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [os.path.relpath(os.path.join(d, f), spill_dir)
                for d, dirs, files in os.walk(spill_dir) for f in files + dirs]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.mark.e2e
@pytest.mark.parametrize("sql", QUERIES, ids=["sum-avg", "where", "group-by"])
def test_spilled_equals_in_memory_and_duckdb(spilled, whole, tables, sql):
    con_s, tdir_s, spill_dir = spilled
    con_w, tdir_w = whole
    cur_s = con_s.execute(MASKED + sql)
    got_s = cur_s.fetchall()
    cur_w = con_w.execute(MASKED + sql)
    got_w = cur_w.fetchall()
    ac, emc = tables  # noqa: F841 - DuckDB reads the local DataFrames by name
    assert rows_close(got_s, got_w, 1e-9)  # COUNT and integer SUMs exactly
    assert rows_close(got_s, duckdb.sql(sql).fetchall())
    for party in ("ac", "emc", "helper"):  # every party did spill
        assert cur_s.stats[party]["spill_bytes"] > 0, party
    assert cur_w.stats["helper"]["spill_bytes"] == 0
    views_s, views_w = query_views(tdir_s, cur_s.query_id), query_views(tdir_w, cur_w.query_id)
    assert set(views_s) == set(views_w) == {"ac", "emc", "helper"}
    for party in views_s:  # exactly the same disclosures
        assert views_s[party]["opened"] == views_w[party]["opened"], party
    assert _empty(spill_dir) == []


LASSO = ("SELECT LASSO(ac.charges, ac.age, ac.delta, emc.bmi, emc.children, alpha => 0.1) "
         "FROM ac JOIN emc USING (id)")


@pytest.mark.e2e
def test_spilled_model_equals_in_memory(spilled, whole):
    """A model's plain columns spill too (read in batches, normalised as they are read): the
    same coefficients as the in-memory federation, the same disclosures, nothing left."""
    con_s, tdir_s, spill_dir = spilled
    con_w, tdir_w = whole
    cur_s, cur_w = con_s.execute(MASKED + LASSO), con_w.execute(MASKED + LASSO)
    got_s, got_w = cur_s.fetchall(), cur_w.fetchall()
    assert len(got_s) == 5 and rows_close(got_s, got_w, 1e-7)
    for party in ("ac", "emc", "helper"):
        assert cur_s.stats[party]["spill_bytes"] > 0, party
    views_s, views_w = query_views(tdir_s, cur_s.query_id), query_views(tdir_w, cur_w.query_id)
    for party in ("ac", "emc", "helper"):
        assert sorted(views_s[party]["opened"]) == sorted(views_w[party]["opened"]), party
    assert _empty(spill_dir) == []


def _register_late_bad_age(con, ac) -> None:
    """ac's table as "ac_bad" with an age beyond its declared bound in the last record batch."""
    bad = ac.copy()
    bad.loc[len(bad) - 3, "age"] = 1000
    con.register("ac_bad", bad, party="ac", key="id", bounds={"age": 100})


@pytest.mark.e2e
def test_spilled_model_refusals(spilled, tables):
    """Beyond the spill threshold a model's table is checked as in memory: a value beyond its
    declared bound in a late batch, and a constant feature, are refused naming the column."""
    con, _, spill_dir = spilled
    ac, _ = tables
    _register_late_bad_age(con, ac)
    with pytest.raises(engine.DataError, match="exceeds its declared bound"):
        con.execute(MASKED + "SELECT LASSO(b.charges, b.age, emc.bmi) FROM ac_bad b "
                    "JOIN emc USING (id)")
    flat = ac.assign(delta=7.0)
    con.register("ac_flat", flat, party="ac", key="id")
    with pytest.raises(engine.DataError, match="feature ac_flat.delta is constant"):
        con.execute(MASKED + "SELECT LASSO(f.charges, f.delta, emc.bmi) FROM ac_flat f "
                    "JOIN emc USING (id)")
    assert _empty(spill_dir) == []


@pytest.mark.e2e
def test_spilled_messages_are_those_of_the_chunked_join(spilled, tables):
    """The helper receives each party's hashes once in chunks of CHUNK rows; each data party
    receives m distinct positions in ceil(m / CHUNK) chunks: spilling changes no message."""
    con, tdir, _ = spilled
    cur = con.execute(MASKED + QUERIES[0])
    assert cur.fetchall()[0][0] == OVERLAP
    views = query_views(tdir, cur.query_id)
    for party, n in (("ac", N_AC), ("emc", N_EMC)):
        msgs = [m["obj"] for m in views["helper"]["messages"]
                if m["label"] == "hashed_masked_rows" and m["from"] == party]
        assert [len(m["hashes"]) // 16 for m in msgs] == [CHUNK] * (n // CHUNK) + [n % CHUNK]
    for observer, n_other in (("ac", N_EMC), ("emc", N_AC)):
        pos = [m["obj"] for m in views[observer]["messages"] if m["label"] == "matched_positions"]
        assert [len(p) for p in pos] == [CHUNK] * (OVERLAP // CHUNK) + [OVERLAP % CHUNK]
        allpos = np.concatenate(pos)
        assert np.unique(allpos).size == OVERLAP and allpos.max() < n_other


@pytest.mark.e2e
def test_refused_in_a_late_batch_leaves_nothing(spilled, tables):
    """A value beyond its declared bound in the last record batch of ac's read is refused
    (DataError naming the column) before any of ac's data leaves it; the rows written so far
    are removed."""
    con, _, spill_dir = spilled
    ac, _ = tables
    _register_late_bad_age(con, ac)
    with pytest.raises(engine.DataError, match="outside its public bound"):
        con.execute(MASKED + "SELECT COUNT(*), SUM(b.age) FROM ac_bad b JOIN emc USING (id)")
    assert _empty(spill_dir) == []
    # and the federation keeps serving
    assert con.execute(MASKED + QUERIES[0]).fetchall()[0][0] == OVERLAP
    assert _empty(spill_dir) == []


@pytest.mark.e2e
def test_cancelled_query_leaves_nothing(tmp_path, tables):
    """Cancelled while the helper matches / the parties convert: every party's spill files
    are removed (the session processes are killed; their servers remove the directory)."""
    spill_dir = str(tmp_path / "spill")
    os.makedirs(spill_dir)
    ac, emc = tables
    with _federation(spill_dir, chunk=500) as con:
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id")
        cur = con.cursor()
        box: dict = {}

        def run() -> None:
            try:
                cur.execute(MASKED + QUERIES[1])  # a WHERE: every value is converted
                box["rows"] = cur.fetchall()
            except engine.Error as e:
                box["error"] = e

        th = threading.Thread(target=run)
        th.start()
        deadline = time.monotonic() + 120
        while not glob.glob(os.path.join(spill_dir, "*", "*pairs*")) and th.is_alive() \
                and time.monotonic() < deadline:
            time.sleep(0.02)  # the helper holds the matched pairs on disk: converting
        assert glob.glob(os.path.join(spill_dir, "*", "*pairs*")), "nothing spilled"
        cur.cancel()
        th.join(60)
        assert not th.is_alive()
        assert isinstance(box.get("error"), engine.OperationalError), box
        assert _empty(spill_dir) == []


@pytest.mark.e2e
@pytest.mark.leakage
def test_helper_view_of_a_spilled_upload_does_not_depend_on_hidden_rows(spilled):
    """Same ac table, emc's non-matching rows changed: what the helper receives from ac
    (chunk sizes, hashes' and masked values' sizes) is the same, the masked values uniform."""
    from scipy import stats

    from tests.test_masked_join_leakage import _change_non_matching

    con, tdir, spill_dir = spilled
    ac, emc = make_tables(4200, 3900, 2100, seed=29)
    matching = set(ac["id"]) & set(emc["id"])
    views = []
    for variant in range(2):
        if variant:
            emc = _change_non_matching(emc, matching, seed=3)
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id")
        cur = con.execute(MASKED + QUERIES[0])
        assert cur.fetchall()[0][0] == 2100
        assert cur.stats["helper"]["spill_bytes"] > 0
        views.append(query_views(tdir, cur.query_id)["helper"])
    v1, v2 = ([m for m in v["messages"] if m["from"] == "ac"] for v in views)
    assert [(m["label"], m["nbytes"]) for m in v1] == [(m["label"], m["nbytes"]) for m in v2]
    assert len(v1) == 5  # 4 full chunks and a short one
    x1, x2 = (np.concatenate([np.frombuffer(m["obj"]["masked"], "<u8")[::2] for m in v])
              / 2.0**64 for v in (v1, v2))  # low words of the masked values
    for x in (x1, x2):
        assert stats.kstest(x, "uniform").pvalue > 1e-4
    assert stats.ks_2samp(x1, x2).pvalue > 1e-4
    assert _empty(spill_dir) == []


def test_spilled_plain_columns_equal_the_in_memory_read(tmp_path):
    """PartyStore.load beyond spill.rows (a model plan's columns): the same ids and values as
    the in-memory read, in batches; scaled by SpilledRows.exps as they are read; column
    ranges for the constant-feature check."""
    from engine.server.storage import PartyStore

    ac, _ = make_tables(2500, 10, 0, seed=5)
    store = PartyStore(str(tmp_path / "ac.duckdb"), "ac")
    try:
        src = str(tmp_path / "ac.parquet")
        ac.to_parquet(src)
        store.register("ac", key="id", path=src)
        cols = ("age", "charges")
        mem = store.load("ac", "id", cols)
        spill = sp.Spill(base=str(tmp_path / "spill"), rows=0)
        try:
            got = store.load("ac", "id", cols, spill)
            assert isinstance(got, sp.SpilledRows) and got.n == 2500
            ids, vals = got.split(got.file.read(0, got.n))
            order = {int(i): k for k, i in enumerate(mem.ids)}
            k = np.array([order[int(i)] for i in ids])
            assert np.array_equal(vals, mem.values[k])
            lo, hi = got.column_ranges()
            assert np.array_equal(lo, mem.values.min(axis=0))
            assert np.array_equal(hi, mem.values.max(axis=0))
            got.exps = np.array([-7, -17])
            assert np.array_equal(got.split(got.file.read(0, 10))[1],
                                  np.ldexp(mem.values[k[:10]], [-7, -17]))
        finally:
            spill.cleanup()
    finally:
        store.close()


def test_two_large_reads_in_a_row_within_duckdb_s_memory_limit(tmp_path):
    """A read beyond spill.rows runs within duckdb_memory and DuckDB spills to its own temporary
    directory; a second such read on the same server works too (DuckDB refuses to switch its
    temporary directory once used, which broke every read after the first spilled one)."""
    from engine.server.storage import PartyStore
    from planner.physical import LocalColumn

    src = str(tmp_path / "t.parquet")
    duckdb.sql("COPY (SELECT i AS id, (i % 1000) / 10.0 AS v FROM range(3000000) r(i)) "
               f"TO '{src}' (FORMAT parquet)")
    store = PartyStore(str(tmp_path / "ac.duckdb"), "ac")
    store.register("t", key="id", path=src, not_null=["id", "v"])
    col = LocalColumn(party="ac", name="v", sql='"v"', bits=7, text="v")
    base = tmp_path / "spill"
    limit = "SELECT current_setting('memory_limit')"
    before = store.con.execute(limit).fetchone()[0]
    try:
        for _ in range(2):
            spill = sp.Spill(base=str(base), rows=0, duckdb_memory="30MB")
            try:
                got = store.load_local("t", "id", (col,), spill)
                assert got.n == 3_000_000
            finally:
                spill.cleanup()
        assert store.con.execute(limit).fetchone()[0] == before  # restored
        assert not os.listdir(base)  # the queries' directories are gone
    finally:
        store.close()
