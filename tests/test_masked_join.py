"""The masked private join (``SET join_protocol = 'masked'``): PRF and arithmetic mod p.

Unit tests: no network, no party processes. Real three-party runs are in
test_masked_join_e2e.py, what each party receives in test_masked_join_leakage.py.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import stats

from dialect.errors import ProtocolError
from engine.protocols import paillier
from engine.protocols.fixedpoint import encode
from engine.protocols.joins import common
from engine.protocols.joins import masked as mj

P = 2**128 - 173  # the field prime of SecFxp(64, 32)
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
    q = 3 * 2**125 + 7  # a modulus far from 2^128 needs 64 more bits: a second AES block
    assert mj.sample_bytes(q) == 32
    for m in (P, q, 2**61 - 1, 1000003, 2**191 - 19):
        w = 8 * mj.sample_bytes(m)
        assert ((1 << w) % m) << mj.SIGMA <= 1 << w and w >= m.bit_length() and w % 128 == 0


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


def test_prf_reference_is_aes_of_the_position():
    """Position i is AES-256_K(i as a 128-bit big-endian block), little-endian, mod p, with
    K = HMAC-SHA256(subkey || party || column, the PRF's label): block i of the AES-CTR key
    stream from counter 0 (computed here with another mode of the same library)."""
    import hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    seed = mj.derive_key(KEY, b"mask") + (2).to_bytes(2, "big") + b"ac" + (5).to_bytes(4, "big")
    key = hmac.new(seed, b"mpcsql/prf/v2/aes-256-ctr", hashlib.sha256).digest()
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    pos = [0, 1, 2, 7, 3, 2**33 + 5]
    want = [int.from_bytes(ecb.update(i.to_bytes(16, "big")), "little") % P for i in pos]
    assert list(mj.prf(KEY, "ac", 5, np.array(pos), P)) == want  # any order: ECB
    assert list(mj.prf(KEY, "ac", 5, np.arange(4), P)) == want[:3] + [want[4]]  # a range: CTR


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
    words = common.keyed_hashes(mj.id_key(KEY), ids)  # the join's id PRF
    assert words != common.keyed_hashes(KEY, ids)
    assert not set(paillier.split_hashes(words)) & set(
        paillier.split_hashes(common.keyed_hashes(mj.derive_key(KEY, b"mask"), ids)))


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
