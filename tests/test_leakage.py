"""Leakage: what each party receives, recorded by the real three-process protocol run.

The party servers record every protocol message they receive (and the shares a data party
decrypts) when started with a transcript directory.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import stats

import engine
from engine.protocols.paillier import MASK_BITS, OFFSET
from tests.conftest import OPEN_POLICY, make_tables, run_recorded

pytestmark = [pytest.mark.e2e, pytest.mark.leakage]

SQL = "SELECT COUNT(*), AVG(ac.charges), AVG(ac.delta), SUM(emc.bmi) FROM ac JOIN emc USING (id)"


@pytest.fixture(scope="module", params=["djn", "subgroup"])
def recorded(request, recording, tmp_path_factory):
    """The recording federation (DJN keys, the default), and one whose data parties make
    subgroup keys (docs/protocols.md "Subgroup keys"): every check below holds for both."""
    if request.param == "djn":
        yield lambda ac, emc: run_recorded(recording, ac, emc, SQL)
        return
    tdir = str(tmp_path_factory.mktemp("subgroup-transcripts"))
    with engine.connect(policies=OPEN_POLICY, transcript_dir=tdir,
                        paillier_randomness="subgroup") as con:
        yield lambda ac, emc: run_recorded((con, tdir), ac, emc, SQL)


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


def _shape(view):
    return [(m["label"], m["from"], _count(m["obj"])) for m in view["messages"]]


def _count(obj):
    if isinstance(obj, dict):
        return {k: _count(v) for k, v in obj.items() if k != "n"}
    if isinstance(obj, (list, bytes)):
        return len(obj)
    return type(obj).__name__


def _masked_values(view):
    shares = [m["obj"] for m in view["messages"] if m["label"] == "decrypted_shares"][0]
    # the owner's share is v + 2^63 + r - 2^63 mod p; undo the offset to see v + 2^63 + r
    return np.array([(s + OFFSET) for row in shares for s in row], dtype=float)


@pytest.mark.parametrize("observer,other", [("ac", "emc"), ("emc", "ac")])
def test_view_does_not_depend_on_other_partys_non_matching_rows(recorded, observer, other):
    ac, emc = make_tables(40, 40, 20, seed=21)
    matching = set(ac["id"]) & set(emc["id"])
    tables = {"ac": ac, "emc": emc}
    rows1, v1 = recorded(ac, emc)
    tables[other] = _change_non_matching(tables[other], matching, seed=5)
    rows2, v2 = recorded(tables["ac"], tables["emc"])
    assert rows1[0][0] == rows2[0][0] == 20
    # Same messages, same shapes, same sizes (up to the few bytes a big integer's length varies).
    assert _shape(v1[observer]) == _shape(v2[observer])
    for a, b in zip(v1[observer]["messages"], v2[observer]["messages"], strict=True):
        assert abs(a["nbytes"] - b["nbytes"]) <= max(64, 0.002 * a["nbytes"])
    for peer, n in v1[observer]["mpc_bytes_received"].items():
        assert abs(n - v2[observer]["mpc_bytes_received"][peer]) <= max(256, 0.002 * n)
    # What the observer decrypts is masked: uniform-looking on [0, 2^104) in both runs and
    # indistinguishable between the runs.
    x1 = _masked_values(v1[observer]) / 2.0**MASK_BITS
    x2 = _masked_values(v2[observer]) / 2.0**MASK_BITS
    for x in (x1, x2):
        assert stats.kstest(x, "uniform").pvalue > 1e-4
    assert stats.ks_2samp(x1, x2).pvalue > 1e-4


def test_helper_never_sees_ids_or_plaintext(recorded):
    ac, emc = make_tables(30, 30, 15, seed=22)
    _, views = recorded(ac, emc)
    helper = views["helper"]
    labels = {m["label"] for m in helper["messages"]}
    assert labels == {"hashed_encrypted_rows"}
    ids = {int(i) for i in ac["id"]} | {int(i) for i in emc["id"]}
    id_bytes = {str(i).encode() for i in ids}
    plain_sha = {hashlib.sha256(b).digest() for b in id_bytes}
    values = {float(v) for df in (ac, emc) for c in df.columns if c != "id" for v in df[c]}
    encoded = {int(round(v * 2**32)) for v in values}
    for m in helper["messages"]:
        obj = m["obj"]
        blob = obj["hashes"]
        hashes = [blob[i:i + 32] for i in range(0, len(blob), 32)]
        assert not (set(hashes) & plain_sha)
        assert not any(b in blob for b in id_bytes if len(b) > 4)
        n = obj["n"]
        for row in obj["cts"]:
            for c in row:
                assert n < c < n * n  # a ciphertext, not a plaintext or an encoding
                assert c not in ids and c not in encoded
    # Fresh HMAC key per query: the same ids hash differently in the next query.
    _, again = recorded(ac, emc)
    h1 = helper["messages"][0]["obj"]["hashes"]
    h2 = again["helper"]["messages"][0]["obj"]["hashes"]
    assert not set(h1[i:i + 32] for i in range(0, len(h1), 32)) & set(
        h2[i:i + 32] for i in range(0, len(h2), 32))


def test_data_parties_receive_only_the_size_and_masked_shares(recorded):
    ac, emc = make_tables(30, 30, 12, seed=23)
    _, views = recorded(ac, emc)
    assert [m["label"] for m in views["ac"]["messages"]] == [
        "intersection_size", "masked_rows", "decrypted_shares"]
    assert [m["label"] for m in views["emc"]["messages"]] == [
        "hmac_key", "intersection_size", "masked_rows", "decrypted_shares"]
    assert views["ac"]["messages"][0]["obj"] == 12
