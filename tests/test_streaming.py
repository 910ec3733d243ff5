"""The masked join in chunks (issue 13 part 2): a federation whose parties use chunks of 1,000
rows (MPCSQL_CHUNK_ROWS) gives exactly the answers of the unchunked federation (one chunk) and
of DuckDB, and every party opens exactly the same disclosures; the chunked messages carry
distinct positions and the helper gets every hash once.  Plus unit tests of the pieces."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from dialect.errors import DataError, ProtocolError
from engine.protocols import paillier
from engine.protocols.joins import common
from engine.protocols.joins import masked as mj
from engine.protocols.prf import Stream, prf_words
from tests.conftest import connect_with_env, make_tables, query_views, rows_close

P = 2**128 - 173
MASKED = "SET join_protocol = 'masked'; "
N_AC, N_EMC, OVERLAP, CHUNK = 5500, 5200, 4300, 1000
DOMAINS = {"children": {"min": 0, "max": 4}}

QUERIES = [
    "SELECT COUNT(*), SUM(ac.age), AVG(ac.charges), SUM(emc.children), AVG(emc.bmi) "
    "FROM ac JOIN emc USING (id)",
    "SELECT COUNT(*), SUM(emc.children), AVG(ac.delta) FROM ac JOIN emc USING (id) "
    "WHERE emc.bmi > 30 AND ac.age < 60",
    "SELECT emc.children, COUNT(*), SUM(ac.age), AVG(emc.bmi) FROM ac JOIN emc USING (id) "
    "GROUP BY emc.children ORDER BY emc.children",
    "SELECT emc.children, MIN(ac.age), MAX(emc.bmi), COUNT(*) FROM ac JOIN emc USING (id) "
    "WHERE ac.age > 30 GROUP BY emc.children ORDER BY emc.children",
    "SELECT emc.children, MEDIAN(ac.age), QUANTILE_CONT(emc.bmi, 0.9), COUNT(*) FROM ac JOIN emc "
    "USING (id) WHERE ac.age > 30 GROUP BY emc.children ORDER BY emc.children",
]


# --- unit tests of the chunked pieces ----------------------------------------------------------


def test_chunk_bounds_end_with_a_short_chunk():
    assert list(common.chunk_bounds(0, 4)) == [(0, 0)]
    assert list(common.chunk_bounds(3, 4)) == [(0, 3)]
    assert list(common.chunk_bounds(8, 4)) == [(0, 4), (4, 8), (8, 8)]
    assert list(common.chunk_bounds(9, 4)) == [(0, 4), (4, 8), (8, 9)]


def test_keyed_hashes_are_aes_of_the_id_blocks_or_hmac():
    """The wire's 16-byte hashes: AES-256 (key HMAC-SHA256(k, label)) of the id's one-block
    encoding, or HMAC-SHA256 (another label) of a long canonical id, truncated
    (tests/test_hashing.py has the full construction)."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def aes(key, block):
        k = hmac.new(key, b"mpcsql/id-prf/v1/aes-256", hashlib.sha256).digest()
        return Cipher(algorithms.AES(k), modes.ECB()).encryptor().update(block)

    key = bytes(range(32))
    ids = np.array([5, -7, 2**62, 10**9], dtype=np.int64)
    want = b"".join(aes(key, b"\x01" + int(v).to_bytes(15, "big", signed=True)) for v in ids)
    assert common.keyed_hashes(key, ids) == want
    assert common.keyed_hashes(key, ids.tolist()) == want
    k_h = hmac.new(b"k" * 100, b"mpcsql/id-prf/v1/hmac-sha256", hashlib.sha256).digest()
    long_id = hmac.new(k_h, b"s:" + b"a" * 14, hashlib.sha256).digest()[:16]
    assert common.keyed_hashes(b"k" * 100, ["a", 3, "a" * 14]) == (
        aes(b"k" * 100, b"\x13s:a" + bytes(12)) + aes(b"k" * 100, b"\x01" + bytes(14) + b"\x03")
        + long_id)


def _words(rng, n):
    return rng.integers(0, 2**63, size=(n, 2), dtype=np.int64).astype(np.uint64)


@pytest.mark.parametrize("clash", [False, True], ids=["unique-first-words", "equal-first-words"])
def test_match_words_finds_exactly_the_equal_hashes(clash):
    rng = np.random.default_rng(1)
    left, right = _words(rng, 300), _words(rng, 200)
    right[:120] = left[rng.permutation(300)[:120]]
    if clash:  # same first word, different second word: only the exact pair matches
        left[0, 0] = left[1, 0]
        right[150] = (left[1, 0], left[1, 1] ^ np.uint64(1))
    pairs = common.match_words(left, right)
    want = {(i, j) for i in range(300) for j in range(200) if (left[i] == right[j]).all()}
    assert {tuple(p) for p in pairs.tolist()} == want and len(pairs) == len(want) == 120
    assert pairs.dtype == np.int64 and pairs.shape == (120, 2)


def test_match_words_order_is_random():
    rng = np.random.default_rng(2)
    left = _words(rng, 50)
    firsts = {int(common.match_words(left, left)[0, 0]) for _ in range(40)}
    assert len(firsts) > 10


def test_match_words_refuses_duplicates():
    rng = np.random.default_rng(3)
    left, right = _words(rng, 20), _words(rng, 20)
    left[5] = left[9]
    with pytest.raises(DataError, match="duplicate join keys"):
        common.match_words(left, right)


def test_stream_continues_the_prf():
    seed = b"s" * 40
    s = Stream(seed, P)
    got = np.concatenate([s.take(3), s.take(1000), s.take(0), s.take(7)], axis=1)
    assert (got == prf_words(seed, np.arange(1010), P)).all()


def test_masks_in_chunks_equal_the_whole():
    key = b"k" * 32
    values = np.random.default_rng(4).normal(0, 100, (2500, 3))
    whole = mj.mask_rows(key, "ac", values, P)
    streams = mj.mask_streams(key, "ac", 3, P)
    parts = [np.frombuffer(mj.mask_rows(key, "ac", values[a:b], P, streams), "<u8")
             .reshape(2, b - a, 3) for a, b in ((0, 1000), (1000, 2000), (2000, 2500))]
    assert (np.concatenate(parts, axis=1) == np.frombuffer(whole, "<u8").reshape(2, 2500, 3)
            ).all()


def test_helper_gathers_its_shares_across_chunks():
    key = b"k" * 32
    values = np.random.default_rng(5).normal(0, 100, (2500, 2))
    streams = mj.mask_streams(key, "ac", 2, P)
    inbox = [{"rows": b - a, "masked": mj.mask_rows(key, "ac", values[a:b], P, streams)}
             for a, b in ((0, 1000), (1000, 2000), (2000, 2500))]
    rows = np.array([2499, 0, 1000, 999, 1500, 2000])
    whole = mj.mask_rows(key, "ac", values, P)
    want = mj.helper_share_words(whole, 2500, 2, rows, P)
    assert (mj.helper_chunk_words(inbox, 2, rows, P, 1000) == want).all()


def test_positions_repeated_across_chunks_are_refused():
    seen = np.zeros(10, dtype=bool)
    mj._check_positions(np.array([1, 4]), 2, 10, "helper", "ac", seen)
    with pytest.raises(ProtocolError, match="helper"):
        mj._check_positions(np.array([4, 5]), 2, 10, "helper", "ac", seen)
    seen = np.zeros(10, dtype=bool)
    with pytest.raises(ProtocolError, match="distinct"):  # repeated within one chunk
        mj._check_positions(np.array([3, 7, 3]), 3, 10, "helper", "ac", seen)
    assert list(mj._check_positions(np.array([9, 0]), 2, 10, "helper", "ac",
                                    np.zeros(10, dtype=bool))) == [9, 0]


# --- real three-party runs ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tables():
    return make_tables(N_AC, N_EMC, OVERLAP, seed=13)


@pytest.fixture(scope="module")
def chunked(tmp_path_factory, tables):
    """A federation whose three parties use chunks of CHUNK rows, recording transcripts."""
    tdir = str(tmp_path_factory.mktemp("chunked"))
    con = connect_with_env({"MPCSQL_CHUNK_ROWS": str(CHUNK)}, transcript_dir=tdir)
    ac, emc = tables
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id", domains=DOMAINS)
    yield con, tdir
    con.close()


@pytest.fixture(scope="module")
def whole(recording, tables):
    con, tdir = recording  # the session's recording federation: the default chunk size
    ac, emc = tables
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id", domains=DOMAINS)
    return con, tdir


def _duckdb(tables, sql: str) -> list[tuple]:
    ac, emc = tables  # noqa: F841 - DuckDB reads the local DataFrames by name
    return duckdb.sql(sql).fetchall()


@pytest.mark.e2e
@pytest.mark.parametrize("sql", QUERIES,
                         ids=["sum-avg", "where", "group-by", "min-max", "quantiles"])
def test_chunked_equals_unchunked_and_duckdb(chunked, whole, tables, sql):
    con_c, tdir_c = chunked
    con_w, tdir_w = whole
    cur_c = con_c.execute(MASKED + sql)
    got_c = cur_c.fetchall()
    cur_w = con_w.execute(MASKED + sql)
    got_w = cur_w.fetchall()
    assert rows_close(got_c, got_w, 1e-9)  # COUNT and integer SUMs exactly
    assert rows_close(got_c, _duckdb(tables, sql))
    views_c, views_w = query_views(tdir_c, cur_c.query_id), query_views(tdir_w, cur_w.query_id)
    assert set(views_c) == set(views_w) == {"ac", "emc", "helper"}
    for party in views_c:  # exactly the same disclosures
        assert views_c[party]["opened"] == views_w[party]["opened"], party


@pytest.mark.e2e
def test_chunked_messages(chunked, tables):
    """The helper receives each party's hashes once, in chunks of CHUNK rows ending with a
    short one; each data party receives the positions of the m matches in ceil(m / CHUNK)
    chunks, all distinct."""
    con, tdir = chunked
    cur = con.execute(MASKED + QUERIES[0])
    assert cur.fetchall()[0][0] == OVERLAP
    views = query_views(tdir, cur.query_id)
    ac, emc = tables
    for party, n in (("ac", N_AC), ("emc", N_EMC)):
        msgs = [m["obj"] for m in views["helper"]["messages"]
                if m["label"] == "hashed_masked_rows" and m["from"] == party]
        sizes = [len(m["hashes"]) // paillier.HASH_BYTES for m in msgs]
        assert sizes == [CHUNK] * (n // CHUNK) + [n % CHUNK]
        hashes = b"".join(m["hashes"] for m in msgs)
        assert len(set(paillier.split_hashes(hashes))) == n
    for observer, n_other in (("ac", N_EMC), ("emc", N_AC)):
        pos = [m["obj"] for m in views[observer]["messages"] if m["label"] == "matched_positions"]
        assert [len(p) for p in pos] == [CHUNK] * (OVERLAP // CHUNK) + [OVERLAP % CHUNK]
        allpos = np.concatenate(pos)
        assert np.unique(allpos).size == OVERLAP and allpos.max() < n_other
        labels = [m["label"] for m in views[observer]["messages"]]
        assert labels.count("row_count") == 1 and labels.count("intersection_size") == 1


@pytest.mark.e2e
def test_chunked_lasso_matches_unchunked(chunked, whole):
    sql = MASKED + ("SELECT LASSO(ac.charges, ac.age, emc.bmi, emc.children, alpha => 0.01) "
                    "FROM ac JOIN emc USING (id)")
    got_c = dict(chunked[0].execute(sql).fetchall())
    got_w = dict(whole[0].execute(sql).fetchall())
    assert got_c.keys() == got_w.keys()
    for t in got_c:
        assert abs(got_c[t] - got_w[t]) <= 1e-6 * max(1.0, abs(got_w[t])), t


@pytest.mark.e2e
def test_plain_sums_convert_only_their_totals(chunked):
    """COUNT/SUM/AVG of plain columns are linear in the shares: the parties add each chunk's
    additive shares locally and convert the column totals once (A2S of d values), so nothing
    is sent per joined value beyond the helper's positions (8 B a match and owner)."""
    con, _ = chunked
    cur = con.execute(MASKED + QUERIES[0])
    assert cur.fetchall()[0][0] == OVERLAP
    sent = cur.stats["helper"]["bytes_sent"]
    per_value = 16 * OVERLAP * 5  # what A2S of every joined value would have the helper send
    assert sum(sent.values()) < per_value / 2, sent  # ~98 KB here (~506 KB with a WHERE)


@pytest.mark.e2e
def test_plain_sum_positions_are_acknowledged(tmp_path, tables):
    """A plain-sum query waits for each data party's acknowledgement every ACK_CHUNKS chunks of
    positions (flow control: nothing else paces the helper there): 18 chunks of 250 matches,
    so two acknowledgements from each data party; the answer is DuckDB's."""
    tdir = str(tmp_path)
    with connect_with_env({"MPCSQL_CHUNK_ROWS": "250"}, transcript_dir=tdir) as con:
        ac, emc = tables
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id", domains=DOMAINS)
        cur = con.execute(MASKED + QUERIES[0])
        assert rows_close(cur.fetchall(), _duckdb(tables, QUERIES[0]))
        helper = query_views(tdir, cur.query_id)["helper"]
    acks = [m["from"] for m in helper["messages"] if m["label"] == "positions_received"]
    assert mj.ACK_CHUNKS == 8 and sorted(acks) == ["ac", "ac", "emc", "emc"]
