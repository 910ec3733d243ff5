"""Word arithmetic mod p and the word-based shared tables (unit tests, no network)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import mpcrt
from engine.protocols import fieldwords as fw
from engine.protocols.regression import _local_moments
from engine.protocols.shares import SharedTable, _column_chunks

P = 2**128 - 173
EDGE = [0, 1, 2, 3, 172, 173, 2**64 - 1, 2**64, 2**127, P - 173, P - 3, P - 2, P - 1]


def _values(n: int, modulus: int = P, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return [v % modulus for v in EDGE] + [int.from_bytes(rng.bytes(16), "little") % modulus
                                          for _ in range(n)]


@pytest.mark.parametrize("modulus", [P, 2**61 - 1, 2**127 - 1])
def test_small_multiples_and_divisions(modulus):
    vals = _values(300, modulus)
    w = fw.ints_to_words(np.array(vals, dtype=object), modulus)
    for c in (-3, -2, -1, 0, 1, 2, 3, 5, 17):
        got = fw.words_to_ints(fw.mul_small_mod(w, c, modulus))
        assert list(got) == [(c * v) % modulus for v in vals], c
    for k in (1, 2, 3, 5, 7):
        got = fw.words_to_ints(fw.div_small_mod(w, k, modulus))
        inv = pow(k, -1, modulus)
        assert list(got) == [(v * inv) % modulus for v in vals], k


def test_sum_mod_is_exact():
    vals = np.array(_values(2000), dtype=object).reshape(-1, 1)
    vals = np.hstack([vals, vals[::-1]])
    w = fw.ints_to_words(vals, P)
    assert list(fw.sum_mod(w, P, axis=0)) == [int(s) % P for s in vals.sum(axis=0)]
    col = fw.ints_to_words(np.full(5000, P - 1, dtype=object), P)  # many large terms
    assert int(fw.sum_mod(col, P)) == (5000 * (P - 1)) % P


def test_gram_from_word_columns_equals_object_path():
    """_local_moments on word columns (the engine's tables) is bit-exact, like the object path."""
    p = mpcrt.secfxp().field.order
    Z = np.array(_values(400 * 3)[: 400 * 3], dtype=object).reshape(400, 3)
    cols = [fw.ints_to_words(Z[:, j], p) for j in range(3)]
    ztz, sums = _local_moments(cols, p)
    assert (ztz == (Z.T @ Z) % p).all()
    assert (sums == Z.sum(axis=0) % p).all()


def test_shared_table_selection_and_sums():
    sf = mpcrt.secfxp()
    vals = np.arange(24, dtype=object).reshape(8, 3) * (P // 7)
    t = SharedTable.from_field_values(sf, vals % P)
    assert t.shape == (8, 3) and t.ndim == 2
    assert t[:, 1].shape == (8,) and t[:, [2, 0]].shape == (8, 2)
    assert t[:, [2, 0]].columns[0] is t.columns[2]
    sums = t.column_sums()
    assert [int(v) for v in sums.share.value] == [int(s) % P for s in (vals % P).sum(axis=0)]
    back = t.to_secure()
    assert (back.share.value == vals % P).all()
    both = SharedTable.hstack([t[:, [0]], t[:, [1, 2]]])
    assert [c is d for c, d in zip(both.columns, t.columns, strict=True)] == [True] * 3
    with pytest.raises(TypeError):
        t[0]


def test_conversion_chunks_cover_the_columns():
    for m, d in ((10, 1), (10**6, 15), (10**6, 31), (5, 100)):
        chunks = _column_chunks(m, d, 2)
        assert [j for c in chunks for j in c] == list(range(d))


def test_random_permutation_is_a_uniform_permutation():
    from scipy import stats

    from engine.protocols.paillier import random_permutation, shuffle

    assert random_permutation(0).shape == (0,) and list(random_permutation(1)) == [0]
    big = random_permutation(100_000)
    assert sorted(big.tolist()) == list(range(100_000))
    runs = np.array([random_permutation(6) for _ in range(6000)])
    # all 720 orders about equally often, and each element uniform over positions
    _, counts = np.unique(runs, axis=0, return_counts=True)
    assert len(counts) == 720 and stats.chisquare(counts).pvalue > 1e-4
    for v in range(6):
        assert stats.chisquare(np.bincount(np.argmax(runs == v, axis=1), minlength=6)
                               ).pvalue > 1e-4
    items = list("abcdef")
    shuffle(items)
    assert sorted(items) == list("abcdef")
