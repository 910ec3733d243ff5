"""Word arithmetic mod p and the word-based shared tables (unit tests, no network)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.protocols import fieldwords as fw
from engine.protocols import runtime as mpcrt
from engine.protocols.regression import _local_moments
from engine.protocols.shares import SharedTable, _column_chunks, holder_share, holder_step

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


@pytest.mark.parametrize("modulus", [P, 2**61 - 1, 2**127 - 1])
def test_additions_and_subtractions(modulus):
    """add_mod / sub_mod (the two-word fast path for p = 2^128 - 173 and the generic loops)
    on every pair of edge values and on random pairs, against Python ints."""
    edge = sorted({v % modulus for v in EDGE + [1, 172, 173, 174, modulus - 173, modulus - 174,
                                                 2**64 - 1, 2**64, 2**127]})
    a = np.array([x for x in edge for _ in edge] + _values(2000, modulus, 1), dtype=object)
    b = np.array([y for _ in edge for y in edge] + _values(2000, modulus, 2), dtype=object)
    wa, wb = fw.ints_to_words(a, modulus), fw.ints_to_words(b, modulus)
    assert list(fw.words_to_ints(fw.add_mod(wa, wb, modulus))) == list((a + b) % modulus)
    assert list(fw.words_to_ints(fw.sub_mod(wa, wb, modulus))) == list((a - b) % modulus)


def test_prf_reduction_of_samples_at_or_above_p():
    """Samples (uniform 128-bit words) are reduced mod p by one conditional subtraction,
    also for the rare ones with an all-ones high word; unreduced ones stay as they are."""
    from engine.protocols.prf import _reduce_once

    top = 2**128 - 1
    vals = [0, 5, P - 1, P, P + 1, P + 172, top, 2**128 - 2**64, 2**128 - 2**64 + 7, 2**127]
    w = fw.ints_to_words(np.array(vals, dtype=object), 2**128 + 1)  # raw words, any value
    assert list(fw.words_to_ints(_reduce_once(w.copy(), P))) == [v % P for v in vals]
    q = 2**127 - 1  # the generic path (x < 2q)
    small = [v for v in vals if v < 2 * q]
    got = fw.words_to_ints(_reduce_once(fw.ints_to_words(np.array(small, dtype=object), P), q))
    assert list(got) == [v % q for v in small]


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
    runs = np.array([random_permutation(5) for _ in range(12000)])
    # all 120 orders about equally often (100 expected each), each element uniform over positions
    _, counts = np.unique(runs, axis=0, return_counts=True)
    assert len(counts) == 120 and stats.chisquare(counts).pvalue > 1e-4
    for v in range(5):
        assert stats.chisquare(np.bincount(np.argmax(runs == v, axis=1), minlength=5)
                               ).pvalue > 1e-4
    items = list("abcdef")
    shuffle(items)
    assert sorted(items) == list("abcdef")


@pytest.mark.parametrize("holders,w", [((2, 1), 0), ((2, 0), 1), ((0, 1), 2)])
def test_a2s_local_steps_give_a_random_shamir_sharing(holders, w):
    """Protocol A2S's arithmetic for every role assignment: any two shares reconstruct x (MPyC's
    points i + 1), the messages and the third party's share are uniform whatever x is."""
    from scipy import stats

    from engine.protocols.prf import prf_words

    rng = np.random.default_rng(7)
    m = 3000
    x = np.array([int(v) for v in rng.integers(-2**40, 2**40, m)], dtype=object) % P
    x[:3] = [0, 1, P - 1]
    a = np.array([int.from_bytes(rng.bytes(16), "little") % P for _ in range(m)], dtype=object)
    add = {holders[0]: a, holders[1]: (x - a) % P}
    r = {h: prf_words(bytes([h]) * 32, np.arange(m), P).reshape(2, m, 1) for h in holders}
    pt = {i: i + 1 for i in range(3)}
    shares, msgs = {}, {}
    steps = {}
    for me in holders:
        other = holders[1] if me == holders[0] else holders[0]
        own, msg = holder_step(fw.ints_to_words(add[me].reshape(m, 1), P), r[me], pt[me],
                               pt[other], pt[w], P)
        steps[me] = own
        msgs[other] = msg
    for me in holders:
        shares[me] = fw.words_to_ints(holder_share(steps[me], msgs[me], pt[w], P))[:, 0]
    shares[w] = fw.words_to_ints(fw.add_mod(r[holders[0]], r[holders[1]], P))[:, 0]
    for i, j in ((0, 1), (0, 2), (1, 2)):  # Lagrange at 0 from points i + 1, j + 1
        xi, xj = i + 1, j + 1
        li = xj * pow(xj - xi, -1, P) % P
        lj = xi * pow(xi - xj, -1, P) % P
        assert ((shares[i] * li + shares[j] * lj) % P == x).all()
    for v in [shares[w]] + [fw.words_to_ints(msgs[h])[:, 0] for h in holders]:
        assert stats.kstest(np.array([int(t) / P for t in v]), "uniform").pvalue > 1e-4
