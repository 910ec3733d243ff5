"""Unit tests of the join's local crypto steps. Uses SMALL (512-bit) Paillier keys: unit tests
only; every multi-party test uses 2048-bit keys."""

from __future__ import annotations

import numpy as np
import pytest

from dialect.errors import DataError
from engine.protocols import paillier as P
from engine.protocols.fixedpoint import check_range, encode

FIELD = 2**127 - 1  # any prime > 2^105 works like MPyC's 128-bit field here


@pytest.fixture(scope="module")
def keys():
    return P.generate_keypair(512)  # small key: unit test only


def _reconstruct(owner, helper):
    tot = (np.array(owner, dtype=object) + np.array(helper, dtype=object)) % FIELD
    return np.where(tot > FIELD // 2, tot - FIELD, tot)


@pytest.mark.parametrize("d", [1, 3, 4, 9])
def test_shares_reconstruct_values(keys, d):
    pub, priv = keys
    rng = np.random.default_rng(d)
    x = rng.normal(0, 1e4, (7, d))
    x[0, 0] = -(2**31) + 1
    enc = encode(x)
    cts = P.encrypt_rows(pub, enc.tolist())
    assert all(len(r) == P.ciphertexts_per_row(d, 512) for r in cts)
    masked, hshares = P.helper_mask(pub, cts, d, FIELD)
    oshares = P.decrypt_shares(priv, masked, d, FIELD)
    assert (_reconstruct(oshares, hshares) == enc).all()


def test_packing_capacity():
    assert P.slots_per_ciphertext(2048) == 19
    assert P.ciphertexts_per_row(19, 2048) == 1 and P.ciphertexts_per_row(20, 2048) == 2
    assert P.SLOT_BITS * 19 < 2047


def test_masks_hide_values(keys):
    """The owner's view v + 2^63 + r is (almost) uniform whatever v is."""
    pub, priv = keys
    for value in (-(2**31) + 1, 0.0, 2**31 - 1):
        enc = encode(np.full((200, 1), value))
        masked, _ = P.helper_mask(pub, P.encrypt_rows(pub, enc.tolist()), 1, FIELD)
        seen = np.array([(s[0] + P.OFFSET) % FIELD for s in P.decrypt_shares(priv, masked, 1,
                                                                            FIELD)], dtype=float)
        top = seen / 2.0**P.MASK_BITS
        assert 0.4 < top.mean() < 0.6 and top.min() >= 0 and top.max() < 1.0 + 2**-39


def test_rerandomisation_unlinks_ciphertexts(keys):
    pub, _ = keys
    cts = P.encrypt_rows(pub, [[5, 6]])
    masked, _ = P.helper_mask(pub, cts, 2, FIELD)
    assert masked[0][0] != cts[0][0]


def test_keyed_hashes_and_ids():
    k1, k2 = b"k" * 32, b"j" * 32
    assert P.keyed_hashes(k1, [5]) == P.keyed_hashes(k1, [5.0])
    assert P.keyed_hashes(k1, [5]) != P.keyed_hashes(k2, [5])
    assert P.keyed_hashes(k1, ["a"]) != P.keyed_hashes(k1, [5])
    assert len(P.split_hashes(P.keyed_hashes(k1, [1, 2, 3]))) == 3
    with pytest.raises(DataError):
        P.canonical_id(1.5)


def test_match_is_a_random_order_of_equal_hashes():
    left = [bytes([i]) * 32 for i in range(50)]
    right = [bytes([i]) * 32 for i in range(25, 80)]
    orders = {tuple(P.match(left, right)) for _ in range(5)}
    assert all(sorted(o) == [(i, i - 25) for i in range(25, 50)] for o in orders)
    assert len(orders) > 1
    with pytest.raises(DataError):
        P.match(left + left[:1], right)


def test_range_checks():
    with pytest.raises(DataError, match="t.b has values outside"):
        check_range(np.array([[1.0, 2.0**31]]), ("a", "b"), "t")
    with pytest.raises(DataError, match="NaN"):
        check_range(np.array([[np.nan]]), ("a",), "t")
    assert encode(np.array([[1.5, -0.25]])).tolist() == [[3 * 2**31, -(2**30)]]
