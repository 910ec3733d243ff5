"""Unit tests of the join's local crypto steps. Uses SMALL (512-bit) Paillier keys: unit tests
only; every multi-party test uses 2048-bit keys (as does ``test_real_2048_bit_key`` here)."""

from __future__ import annotations

import multiprocessing
import os
import secrets
import time

import numpy as np
import pytest

from dialect.errors import DataError
from engine.protocols import paillier as P
from engine.protocols.fixedpoint import check_range, encode
from engine.protocols.joins import common

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
    assert common.keyed_hashes(k1, [5]) == common.keyed_hashes(k1, [5.0])
    assert common.keyed_hashes(k1, [5]) != common.keyed_hashes(k2, [5])
    assert common.keyed_hashes(k1, ["a"]) != common.keyed_hashes(k1, [5])
    assert len(P.split_hashes(common.keyed_hashes(k1, [1, 2, 3]))) == 3
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


# --- fast paths (CRT, gmpy2, forked workers); SMALL 512-bit keys unless stated -------------------


def test_crt_randomiser_is_exactly_r_to_the_n(keys):
    """512-bit key (unit test only): nth_power(sp, sq) == r**n mod n**2 for the matching r."""
    pub, priv = keys
    ctx = P._PrivateCtx(priv)
    p, q, n = int(priv.p), int(priv.q), pub.n
    for _ in range(5):
        r = secrets.randbelow(n - 2) + 1
        # r**n mod p**2 depends on r**q mod p only, so sp = r**q mod p, sq = r**p mod q
        x = ctx.nth_power(pow(r, q, p), pow(r, p, q))
        assert int(x) == pow(r, n, n * n)
        assert pub.raw_encrypt(7, r_value=r) == (n * 7 + 1) * int(x) % (n * n)


def test_crt_encryption_interoperates_with_phe(keys):
    """512-bit key (unit test only): phe decrypts CRT encryptions and vice versa."""
    pub, priv = keys
    plain = [0, 1, 2**400 + 12345, pub.n - 1] + [secrets.randbelow(pub.n) for _ in range(10)]
    for private_key in (priv, None):  # owner (CRT) and public-key paths
        cts = P.encrypt_many(pub, plain, private_key=private_key, workers=1)
        assert [priv.raw_decrypt(c) for c in cts] == plain
    assert P.decrypt_many(priv, [pub.raw_encrypt(m) for m in plain], workers=1) == plain
    with pytest.raises(ValueError):
        P.encrypt_many(pub, [pub.n])


def test_encrypt_rows_with_private_key(keys):
    """512-bit key (unit test only): the owner's CRT path gives the same shares."""
    pub, priv = keys
    enc = encode(np.random.default_rng(1).normal(0, 1e3, (5, 4)))
    cts = P.encrypt_rows(pub, enc.tolist(), private_key=priv)
    masked, hshares = P.helper_mask(pub, cts, 4, FIELD)
    assert (_reconstruct(P.decrypt_shares(priv, masked, 4, FIELD), hshares) == enc).all()
    _, other = P.generate_keypair(512)
    with pytest.raises(ValueError):
        P.encrypt_rows(pub, enc.tolist(), private_key=other)


def test_worker_path_equals_single_process_path(keys):
    """512-bit key (unit test only): 2 workers vs 1 give the same shares after decryption."""
    pub, priv = keys
    d = 3
    enc = encode(np.random.default_rng(2).normal(0, 1e4, (150, d)))  # > MIN_PARALLEL rows
    assert P.effective_workers(2, len(enc)) == 2
    assert P.effective_workers(2, P.MIN_PARALLEL - 1) == 1
    for w_enc, w_mask, w_dec in ((1, 1, 1), (2, 2, 2), (2, 1, 2), (1, 2, 1)):
        cts = P.encrypt_rows(pub, enc.tolist(), private_key=priv, workers=w_enc)
        assert [priv.raw_decrypt(r[0]) for r in cts] == [P.pack_row(r, 4)[0] for r in enc.tolist()]
        masked, hshares = P.helper_mask(pub, cts, d, FIELD, workers=w_mask)
        oshares = P.decrypt_shares(priv, masked, d, FIELD, workers=w_dec)
        assert oshares == P.decrypt_shares(priv, masked, d, FIELD, workers=1)
        assert (_reconstruct(oshares, hshares) == enc).all()


def _slow(fn):
    def item(i: int) -> int:
        time.sleep(0.002)  # give the forked worker time to start and take chunks
        return fn(i)
    return item


def test_workers_draw_distinct_randomness(keys):
    """512-bit key (unit test only): forked workers never share a random state."""
    pub, priv = keys
    pids = P._fork_map(_slow(lambda i: os.getpid()), 200, 2)
    assert len(set(pids)) == 2 and os.getpid() in pids  # the caller takes chunks too
    draws = P._fork_map(_slow(lambda i: secrets.randbits(128)), 200, 2)
    assert len(set(draws)) == 200
    for private_key in (priv, None):
        cts = P.encrypt_many(pub, [42] * 200, private_key=private_key, workers=2)
        assert len(set(cts)) == 200 and {priv.raw_decrypt(c) for c in cts} == {42}
    rn = P.precompute_randomizers(pub, 200, workers=2)
    assert len(set(rn)) == 200


def test_workers_keep_order_and_report_errors():
    assert P._fork_map(_slow(lambda i: i * i), 500, 3) == [i * i for i in range(500)]
    assert P._fork_map(lambda i: i, 50_000, 2) == list(range(50_000))
    parent = os.getpid()

    def boom(i: int) -> int:
        if os.getpid() != parent:
            raise ArithmeticError("boom")
        return i

    with pytest.raises(RuntimeError, match="boom"):
        P._fork_map(_slow(boom), 500, 2)
    assert not multiprocessing.active_children()


def _in_daemon(pub, conn):
    conn.send(P.encrypt_many(pub, [3] * 100, workers=2))


def test_daemon_process_falls_back_to_one_process(keys):
    """512-bit key (unit test only): a daemonic caller may not fork; it computes alone."""
    pub, priv = keys
    ctx = multiprocessing.get_context("fork")
    recv_end, send_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_in_daemon, args=(pub, send_end), daemon=True)
    proc.start()
    cts = recv_end.recv()
    proc.join()
    assert proc.exitcode == 0 and {priv.raw_decrypt(c) for c in cts} == {3}


def test_precomputed_randomizers_are_consumed(keys):
    """512-bit key (unit test only): each randomiser is used once, then removed."""
    pub, priv = keys
    enc = encode(np.ones((4, 2)))
    cts = P.encrypt_rows(pub, enc.tolist(), private_key=priv)
    pool = P.precompute_randomizers(pub, 6)
    kept = pool[:2]
    masked, hshares = P.helper_mask(pub, cts, 2, FIELD, randomizers=pool)
    assert pool == kept  # the four used ones came off the end
    assert (_reconstruct(P.decrypt_shares(priv, masked, 2, FIELD), hshares) == enc).all()
    # A pool too small for the batch is used up; the rest is computed on the spot.
    masked, hshares = P.helper_mask(pub, cts, 2, FIELD, randomizers=pool)
    assert pool == []
    assert (_reconstruct(P.decrypt_shares(priv, masked, 2, FIELD), hshares) == enc).all()
    # The owner's encryption takes its (CRT) randomisers from its own pool the same way.
    own = P.precompute_randomizers(pub, 5, private_key=priv)
    cts2 = P.encrypt_rows(pub, enc.tolist(), private_key=priv, randomizers=own)
    assert len(own) == 1 and len(set(map(tuple, cts2))) == 4
    masked, hshares = P.helper_mask(pub, cts2, 2, FIELD)
    assert (_reconstruct(P.decrypt_shares(priv, masked, 2, FIELD), hshares) == enc).all()


def test_background_randomizer_job(keys):
    """512-bit key (unit test only): a background job's values are fresh and usable; cancel
    kills its workers."""
    pub, priv = keys
    job = P.RandomizerJob(pub, 80, workers=2)
    pool = job.result()
    assert job.ready() and len(set(pool)) == 80
    enc = encode(np.arange(6.0).reshape(3, 2))
    cts = P.encrypt_rows(pub, enc.tolist(), private_key=priv)
    masked, hshares = P.helper_mask(pub, cts, 2, FIELD, randomizers=pool)
    assert (_reconstruct(P.decrypt_shares(priv, masked, 2, FIELD), hshares) == enc).all()
    slow = P.RandomizerJob(pub, 10**6, workers=2)
    pids = [p.pid for p in slow._forked.procs]
    slow.cancel()
    assert not {p.pid for p in multiprocessing.active_children()} & set(pids)
    with pytest.raises(RuntimeError):
        slow.result()


def test_real_2048_bit_key():
    """Production-size (2048-bit) key on a handful of values, cross-checked with phe."""
    pub, priv = P.generate_keypair(2048)
    assert P.slots_per_ciphertext(pub.n.bit_length()) == 19
    enc = encode(np.array([[1.5, -2.25, 3.0], [-(2**31) + 1, 0.0, 2**31 - 1]]))
    cts = P.encrypt_rows(pub, enc.tolist(), private_key=priv, workers=1)
    assert [priv.raw_decrypt(r[0]) for r in cts] == [P.pack_row(r, 19)[0] for r in enc.tolist()]
    masked, hshares = P.helper_mask(pub, cts, 3, FIELD, workers=1)
    assert (_reconstruct(P.decrypt_shares(priv, masked, 3, FIELD), hshares) == enc).all()
    m = secrets.randbelow(pub.n)
    assert P.decrypt_many(priv, [pub.raw_encrypt(m)]) == [m]
    ctx = P._PrivateCtx(priv)
    r = secrets.randbelow(pub.n - 2) + 1
    x = ctx.nth_power(pow(r, int(priv.q), int(priv.p)), pow(r, int(priv.p), int(priv.q)))
    assert int(x) == pow(r, pub.n, pub.nsquare)
