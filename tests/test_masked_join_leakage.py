"""The masked private join's leakage: what each party receives, recorded by real
three-party runs (three real party processes, tests/conftest.py)."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scipy import stats

from engine.protocols import paillier
from engine.protocols.joins import masked as mj
from tests.conftest import make_tables, run_recorded

pytestmark = [pytest.mark.e2e, pytest.mark.leakage]

P = 2**128 - 173  # the field prime of SecFxp(64, 32)
SET = "SET join_protocol = 'masked'; "


def _uniform(x: np.ndarray, modulus: int = P) -> float:
    """KS p-value of ints in [0, modulus) against the uniform distribution."""
    return stats.kstest(np.array([int(v) / modulus for v in np.ravel(x)], dtype=float),
                        "uniform").pvalue


# --- leakage: what each party receives, recorded by real runs ----------------------------------

LEAK_SQL = SET + ("SELECT COUNT(*), AVG(ac.charges), AVG(ac.delta), SUM(emc.bmi) "
                  "FROM ac JOIN emc USING (id)")


@pytest.fixture(scope="module")
def recorded(recording):
    yield lambda ac, emc, sql=LEAK_SQL: run_recorded(recording, ac, emc, sql)


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
        "intersection_size", "row_count", "matched_positions", "derived_shares"]
    assert [m["label"] for m in views["emc"]["messages"]] == [
        "join_key", "intersection_size", "row_count", "matched_positions", "derived_shares"]
    assert _message(views["ac"], "intersection_size") == 12
    assert (_message(views["ac"], "row_count"), _message(views["emc"], "row_count")) == (24, 30)
    # d_other: the other party's value columns and their validity bits (local columns)
    for observer, n_other, d_other in (("ac", 24, 2), ("emc", 30, 4)):
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


def _aes_hash(id_key: bytes, v: int) -> bytes:
    k = hmac.new(id_key, b"mpcsql/id-prf/v1/aes-256", hashlib.sha256).digest()
    block = b"\x01" + v.to_bytes(15, "big", signed=True)
    return Cipher(algorithms.AES(k), modes.ECB()).encryptor().update(block)


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
    # d shared columns per party: each value column and its validity bit (local columns)
    for party, df, d in (("ac", ac, 4), ("emc", emc, 2)):
        obj = next(m["obj"] for m in helper["messages"] if m["from"] == party)
        assert set(obj) == {"hashes", "masked"}
        hashes = set(paillier.split_hashes(obj["hashes"]))
        assert len(hashes) == len(df)
        assert not hashes & plain_sha and not hashes & raw_key_hmac
        # The hashes are AES-256 of the ids' blocks (integer tag 1, 15-byte two's complement)
        # under a key derived from the id subkey of the data parties' key, zero-padded.
        assert hashes == {_aes_hash(mj.id_key(key), int(i)) for i in df["id"]}
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
