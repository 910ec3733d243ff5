"""The masked private join (``SET join_protocol = 'masked'``): PRF, arithmetic, real runs, leakage.

Unit tests need no network; the rest run three real party processes (tests/conftest.py).
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import os
import pickle

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import engine
from dialect.errors import PolicyError, ProtocolError
from engine.protocols import masked_join as mj
from engine.protocols import paillier
from engine.protocols.fixedpoint import encode
from tests.conftest import OPEN_POLICY, make_tables
from tests.test_federation import assert_rows_close, plaintext, run

P = 2**128 - 173  # the field prime of SecFxp(64, 32)
SET = "SET join_protocol = 'masked'; "
SQL = ("SELECT COUNT(*), AVG(ac.charges), SUM(emc.bmi), SUM(ac.delta), AVG(emc.children) "
       "FROM ac INNER JOIN emc USING (id)")
KEY = bytes(range(32))


def _uniform(x: np.ndarray, modulus: int = P) -> float:
    """KS p-value of ints in [0, modulus) against the uniform distribution."""
    return stats.kstest(np.array([int(v) / modulus for v in np.ravel(x)], dtype=float),
                        "uniform").pvalue


# --- the PRF ----------------------------------------------------------------------------------


def test_field_prime_and_sample_width():
    from engine.protocols import runtime as mpcrt

    assert mpcrt.secfxp().field.order == P
    # 16 bytes: (2^128 mod p) / 2^128 = 173 / 2^128 < 2^-120 from uniform mod p.
    assert mj.sample_bytes(P) == 16 and mj.value_words(P) == 2
    q = 3 * 2**125 + 7  # a modulus far from 2^128 needs 64 extra bits
    assert mj.sample_bytes(q) == 24
    for m in (P, q, 2**61 - 1, 1000003):
        w = 8 * mj.sample_bytes(m)
        assert ((1 << w) % m) << mj.SIGMA <= 1 << w and w >= m.bit_length()


def test_prf_is_deterministic_and_random_access():
    pos = np.arange(500)
    a = mj.prf(KEY, "ac", 3, pos, P)
    assert list(a) == list(mj.prf(KEY, "ac", 3, pos, P))
    sub = np.array([499, 7, 7, 0, 250])
    assert list(mj.prf(KEY, "ac", 3, sub, P)) == [a[i] for i in sub]
    assert all(0 <= int(v) < P for v in a)
    with pytest.raises(ProtocolError):
        mj.prf(KEY, "ac", 3, np.array([-1]), P)
    assert mj.prf(KEY, "ac", 3, np.array([], dtype=np.int64), P).shape == (0,)


@pytest.mark.parametrize("modulus", [P, 3 * 2**125 + 7, 2**61 - 1],
                         ids=["fast-path", "wide-samples", "small-prime"])
def test_vectorised_prf_equals_reference(modulus):
    pos = np.array([0, 9, 3, 3, 1000, 17])
    ref = mj.prf(KEY, "emc", 1, pos, modulus)
    assert list(mj.words_to_ints(mj.prf_words(KEY, "emc", 1, pos, modulus))) == list(ref)
    m = mj.masks(KEY, "emc", 3, pos, modulus)
    assert m.shape == (mj.value_words(modulus), len(pos), 3)
    assert list(mj.words_to_ints(m)[:, 1]) == list(ref)


def test_prf_reference_is_the_shake_stream():
    """Position i is bytes [16i, 16i+16) of SHAKE-256(subkey || party || column), mod p."""
    seed = mj.derive_key(KEY, b"mask") + (2).to_bytes(2, "big") + b"ac" + (5).to_bytes(4, "big")
    stream = hashlib.shake_256(seed).digest(16 * 10)
    want = [int.from_bytes(stream[16 * i:16 * i + 16], "little") % P for i in range(10)]
    assert list(mj.prf(KEY, "ac", 5, np.arange(10), P)) == want


def test_prf_streams_are_independent_across_party_column_key():
    pos = np.arange(4000)
    streams = {
        "base": mj.prf(KEY, "ac", 0, pos, P),
        "party": mj.prf(KEY, "emc", 0, pos, P),
        "column": mj.prf(KEY, "ac", 1, pos, P),
        "key": mj.prf(bytes(32), "ac", 0, pos, P),
        "party-name-prefix": mj.prf(KEY, "a", 0, pos, P),
    }
    values = [int(v) for s in streams.values() for v in s]
    assert len(set(values)) == len(values)  # no repeats within or across streams
    base = np.array([int(v) / P for v in streams["base"]])
    for name, s in streams.items():
        x = np.array([int(v) / P for v in s])
        assert stats.kstest(x, "uniform").pvalue > 1e-4, name
        if name != "base":
            assert abs(stats.pearsonr(base, x).statistic) < 0.08, name
            assert stats.kstest((x - base) % 1.0, "uniform").pvalue > 1e-4, name


def test_prf_is_uniform_mod_p():
    x = mj.prf(KEY, "ac", 0, np.arange(20000), P)
    assert _uniform(x) > 1e-4
    ints = [int(v) for v in x]
    for bit in (0, 1, 63, 64, 100, 126, 127):  # every bit about half the time
        ones = sum((v >> bit) & 1 for v in ints)
        assert stats.binomtest(ones, len(ints)).pvalue > 1e-4, bit
    # low 4 bits: 16 equally likely buckets
    counts = np.bincount([v & 15 for v in ints], minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_subkeys_are_separated():
    ids = [1, 2, 3]
    assert mj.id_key(KEY) != KEY and mj.id_key(KEY) != mj.derive_key(KEY, b"mask")
    assert paillier.keyed_hashes(mj.id_key(KEY), ids) != paillier.keyed_hashes(KEY, ids)


# --- arithmetic mod p on 64-bit words ----------------------------------------------------------


EDGE = [0, 1, 2, 172, 173, 2**64 - 1, 2**64, 2**127, P - 173, P - 2, P - 1]


def test_word_arithmetic_matches_python_ints():
    rng = np.random.default_rng(1)
    vals = EDGE + [int.from_bytes(rng.bytes(16), "little") % P for _ in range(40)]
    x = np.array(vals, dtype=object)
    w = mj.ints_to_words(x, P)
    assert list(mj.words_to_ints(w)) == vals
    a = np.repeat(w[:, :, None], len(vals), axis=2)
    b = np.repeat(w[:, None, :], len(vals), axis=1)
    got = mj.words_to_ints(mj.add_mod(a, b, P))
    want = (x[:, None] + x[None, :]) % P
    assert (got == want).all()
    assert list(mj.words_to_ints(mj.neg_mod(w, P))) == [(-v) % P for v in vals]
    v = np.array([0, 1, -1, 2**63 - 1, -(2**63 - 1), -12345, 12345], dtype=np.int64)
    assert list(mj.words_to_ints(mj.int64_to_words(v, P))) == [int(i) % P for i in v]


def test_shares_reconstruct_the_encoded_values():
    rng = np.random.default_rng(2)
    n, d = 300, 4
    values = rng.normal(0, 1e6, (n, d))
    values[0] = [0.0, -0.0, 2**31 - 1, -(2**31 - 1)]
    blob = mj.mask_rows(KEY, "ac", values, P)
    assert len(blob) == n * d * 16
    rows = rng.permutation(n)[:120]
    helper = mj.helper_shares(blob, n, d, rows, P)
    other = mj.other_shares(KEY, "ac", d, rows, P)
    assert ((helper + other) % P == encode(values[rows]) % P).all()
    assert _uniform(helper) > 1e-4 and _uniform(other) > 1e-4
    with pytest.raises(ProtocolError, match="malformed"):
        mj.helper_shares(blob[:-1], n, d, rows, P)


def test_masked_values_do_not_depend_on_the_values():
    zeros = mj.mask_rows(KEY, "ac", np.zeros((2000, 2)), P)
    big = mj.mask_rows(bytes(32), "ac", np.full((2000, 2), 2.0**30), P)
    for blob in (zeros, big):
        assert _uniform(mj.words_to_ints(np.frombuffer(blob, "<u8").reshape(2, -1))) > 1e-4


# --- real three-party runs ---------------------------------------------------------------------


@pytest.mark.parametrize("n_ac,n_emc,overlap", [(40, 40, 25), (45, 12, 9), (12, 45, 12)],
                         ids=["partial-overlap", "unequal-sizes", "subset"])
def test_masked_join_matches_duckdb_and_paillier(con, n_ac, n_emc, overlap):
    ac, emc = make_tables(n_ac, n_emc, overlap, seed=n_ac * 100 + n_emc + 1)
    cur = run(con, SET + SQL, ac, emc)
    cols, plain = plaintext(SQL, ac=ac, emc=emc)
    assert [d[0] for d in cur.description] == cols
    rows = cur.fetchall()
    assert rows[0][0] == overlap
    assert_rows_close(rows, plain)
    phases = set().union(*(cur.stats[p]["phases"] for p in ("ac", "emc", "helper")))
    assert not phases & {"encrypt", "decrypt"}  # no public-key operations
    # n rows x (32-byte hash + 16 bytes per value) plus framing, nothing per-row Paillier-sized
    assert cur.stats["ac"]["bytes_sent"]["helper"] < n_ac * (32 + 16 * 2) + 4000
    assert run(con, SQL, ac, emc).fetchall() == rows  # the Paillier join: the same exact sums


def test_masked_join_no_overlap(con):
    ac, emc = make_tables(20, 20, 0, seed=8)
    cur = run(con, SET + SQL, ac, emc)
    _, plain = plaintext(SQL, ac=ac, emc=emc)
    assert plain == [(0, None, None, None, None)]
    assert cur.fetchall() == plain


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM ac JOIN emc USING (id)",
    "SELECT AVG(charges), SUM(age) FROM ac JOIN emc USING (id)",
    "SELECT COUNT(*) AS n, AVG(emc.bmi) AS b FROM ac JOIN emc ON ac.id = emc.id",
], ids=["count-only", "left-columns-only", "right-columns-only"])
def test_masked_join_one_sided_columns(con, sql):
    ac, emc = make_tables(30, 25, 14, seed=12)
    ac["id"] = "P-" + ac["id"].astype(str)
    emc["id"] = "P-" + emc["id"].astype(str)
    cur = run(con, SET + sql, ac, emc)
    _, plain = plaintext(sql, ac=ac, emc=emc)
    assert_rows_close(cur.fetchall(), plain)


def test_explain_shows_the_masked_protocol(con):
    ac, emc = make_tables(10, 10, 5, seed=1)
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")
    text = con.explain(SET + "SELECT AVG(ac.charges), SUM(emc.bmi) FROM ac JOIN emc USING (id)")
    assert "PrivateJoin[masked]" in text
    assert "ac learns: |ac ∩ emc| (intersection size); |emc| (row count of emc" in text
    assert "emc learns: |ac ∩ emc| (intersection size); |ac| (row count of ac" in text
    assert "PrivateJoin[paillier]" in con.explain(
        "SELECT AVG(ac.charges) FROM ac JOIN emc USING (id)")


def test_masked_join_checks_the_minimum_intersection():
    policies = {**OPEN_POLICY, "emc": {"min_intersection": 5}}
    with engine.connect(policies=policies) as c:
        c.register("ac", make_tables(20, 20, 3, seed=6)[0], party="ac", key="id")
        c.register("emc", make_tables(20, 20, 3, seed=6)[1], party="emc", key="id")
        with pytest.raises(PolicyError, match="minimum of 5 rows"):
            c.execute(SET + "SELECT AVG(ac.charges) FROM ac JOIN emc USING (id)")
        ac, emc = make_tables(20, 20, 6, seed=6)
        c.register("ac", ac, party="ac", key="id")
        c.register("emc", emc, party="emc", key="id")
        assert c.execute(SET + "SELECT COUNT(*) FROM ac JOIN emc USING (id)").fetchall() == [(6,)]


# --- leakage: what each party receives, recorded by real runs ----------------------------------

LEAK_SQL = SET + ("SELECT COUNT(*), AVG(ac.charges), AVG(ac.delta), SUM(emc.bmi) "
                  "FROM ac JOIN emc USING (id)")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tdir = str(tmp_path_factory.mktemp("masked-transcripts"))
    with engine.connect(policies=OPEN_POLICY, transcript_dir=tdir) as con:

        def run_recorded(ac, emc, sql=LEAK_SQL):
            for f in glob.glob(os.path.join(tdir, "*.pkl")):
                os.unlink(f)
            con.register("ac", ac, party="ac", key="id")
            con.register("emc", emc, party="emc", key="id")
            rows = con.execute(sql).fetchall()
            views = {}
            for f in glob.glob(os.path.join(tdir, "*.pkl")):
                party = os.path.basename(f).rsplit("-", 1)[1][:-4]
                with open(f, "rb") as fh:
                    views[party] = pickle.load(fh)
            return rows, views

        yield run_recorded


def _message(view, label, index=0):
    return [m for m in view["messages"] if m["label"] == label][index]["obj"]


def _change_non_matching(df, matching_ids, seed):
    """Same matching rows; every other row gets new ids and new values (same count)."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    other = ~out["id"].isin(matching_ids)
    out.loc[other, "id"] = rng.choice(np.arange(20_000_000, 30_000_000), other.sum(),
                                      replace=False)
    for col in out.columns:
        if col != "id":
            out.loc[other, col] = rng.permutation(out.loc[other, col].to_numpy()) * 3 + 7
    return out


def _matches_first(df, matching_ids):
    """The table with its matching rows stored first (a worst case for an unshuffled join)."""
    first = df["id"].isin(matching_ids)
    return pd.concat([df[first].sort_values("id"), df[~first]], ignore_index=True)


def test_data_parties_receive_only_size_and_positions(recorded):
    ac, emc = make_tables(30, 24, 12, seed=23)
    rows, views = recorded(ac, emc)
    assert rows[0][0] == 12
    assert [m["label"] for m in views["ac"]["messages"]] == [
        "intersection_size", "matched_positions", "derived_shares"]
    assert [m["label"] for m in views["emc"]["messages"]] == [
        "join_key", "intersection_size", "matched_positions", "derived_shares"]
    assert _message(views["ac"], "intersection_size") == 12
    for observer, n_other, d_other in (("ac", 24, 1), ("emc", 30, 2)):
        pos = _message(views[observer], "matched_positions")
        assert pos.shape == (12,) and len(set(pos.tolist())) == 12
        assert 0 <= pos.min() and pos.max() < n_other
        shares = _message(views[observer], "derived_shares")
        assert shares.shape == (12, d_other)
    key = _message(views["emc"], "join_key")
    assert isinstance(key, bytes) and len(key) == 32


@pytest.mark.parametrize("observer,other", [("ac", "emc"), ("emc", "ac")])
def test_view_does_not_depend_on_other_partys_non_matching_rows(recorded, observer, other):
    ac, emc = make_tables(40, 40, 20, seed=21)
    matching = set(ac["id"]) & set(emc["id"])
    tables = {"ac": ac, "emc": emc}
    views = []
    for variant in range(2):
        if variant:
            tables[other] = _change_non_matching(tables[other], matching, seed=5)
        rows, v = recorded(tables["ac"], tables["emc"])
        assert rows[0][0] == 20
        views.append(v[observer])
    v1, v2 = views
    # Same messages with exactly the same sizes (fixed-width encodings).
    assert [(m["label"], m["from"], m["nbytes"]) for m in v1["messages"]] == \
        [(m["label"], m["from"], m["nbytes"]) for m in v2["messages"]]
    for peer, n in v1["mpc_bytes_received"].items():
        assert abs(n - v2["mpc_bytes_received"][peer]) <= max(256, 0.002 * n)
    # What it derives (minus the PRF masks) is uniform mod p in both runs, alike across runs.
    x1, x2 = (np.array([int(s) / P for s in np.ravel(_message(v, "derived_shares"))])
              for v in (v1, v2))
    for x in (x1, x2):
        assert stats.kstest(x, "uniform").pvalue > 1e-4
    assert stats.ks_2samp(x1, x2).pvalue > 1e-4


def test_received_positions_are_a_uniform_random_subset(recorded):
    """Matched rows stored first at both owners: the positions are still uniform on
    range(n_other), in a uniform order, and their law does not change with the other party's
    non-matching rows."""
    ac, emc = make_tables(36, 30, 15, seed=31)
    matching = set(ac["id"]) & set(emc["id"])
    ac, emc = _matches_first(ac, matching), _matches_first(emc, matching)
    emc2 = _change_non_matching(emc, matching, seed=9)
    runs = 25
    got = {"ac": [], "emc": [], "ac2": []}
    for _ in range(runs):
        _, views = recorded(ac, emc)
        got["ac"].append(_message(views["ac"], "matched_positions"))  # in emc's list
        got["emc"].append(_message(views["emc"], "matched_positions"))  # in ac's list
        _, views = recorded(ac, emc2)
        got["ac2"].append(_message(views["ac"], "matched_positions"))
    for name, n_other in (("ac", 30), ("emc", 36), ("ac2", 30)):
        pos = np.array(got[name])
        assert pos.shape == (runs, 15)
        assert all(len(set(r)) == 15 for r in pos.tolist())
        counts = np.bincount(pos.ravel(), minlength=n_other)
        assert stats.chisquare(counts).pvalue > 1e-4, name  # uniform over the range
        firsts = np.bincount(pos[:, 0], minlength=n_other)
        assert firsts.max() <= 8, name  # the first output position is not pinned
    table = np.array([np.bincount(np.ravel(got[k]), minlength=30) for k in ("ac", "ac2")])
    assert stats.chi2_contingency(table).pvalue > 1e-4


def test_helper_never_sees_ids_or_plaintext(recorded):
    ac, emc = make_tables(30, 30, 15, seed=22)
    _, views = recorded(ac, emc)
    helper = views["helper"]
    assert {m["label"] for m in helper["messages"]} == {"hashed_masked_rows"}
    key = _message(views["emc"], "join_key")
    ids = {int(i) for i in ac["id"]} | {int(i) for i in emc["id"]}
    id_bytes = {str(i).encode() for i in ids}
    plain_sha = {hashlib.sha256(b).digest() for b in id_bytes}
    raw_key_hmac = {hmac.new(key, paillier.canonical_id(i), hashlib.sha256).digest()
                    for i in ids}
    values = {float(v) for df in (ac, emc) for c in df.columns if c != "id" for v in df[c]}
    encoded = {int(round(v * 2**32)) % P for v in values}
    masked_all = []
    for party, df, d in (("ac", ac, 2), ("emc", emc, 1)):
        obj = next(m["obj"] for m in helper["messages"] if m["from"] == party)
        assert set(obj) == {"hashes", "masked"}
        hashes = set(paillier.split_hashes(obj["hashes"]))
        assert len(hashes) == len(df)
        assert not hashes & plain_sha and not hashes & raw_key_hmac
        # The hashes are HMAC-SHA256 under the subkey derived from the data parties' key.
        assert hashes == set(paillier.split_hashes(
            paillier.keyed_hashes(mj.id_key(key), df["id"].tolist())))
        assert not any(b in obj["hashes"] or b in obj["masked"] for b in id_bytes if len(b) > 4)
        assert len(obj["masked"]) == len(df) * d * 16
        masked = mj.words_to_ints(np.frombuffer(obj["masked"], "<u8").reshape(2, -1))
        assert not {int(v) for v in masked} & (encoded | ids)
        masked_all.extend(masked.tolist())
    assert _uniform(np.array(masked_all, dtype=object)) > 1e-4
    # Fresh key per query: the same ids hash differently and the same values mask differently.
    _, again = recorded(ac, emc)
    h1 = set(paillier.split_hashes(_message(helper, "hashed_masked_rows")["hashes"]))
    h2 = set(paillier.split_hashes(_message(again["helper"], "hashed_masked_rows")["hashes"]))
    assert not h1 & h2
    m2 = _message(again["helper"], "hashed_masked_rows")["masked"]
    assert m2 != _message(helper, "hashed_masked_rows")["masked"]
