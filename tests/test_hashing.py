"""The join-id PRF (engine/protocols/joins/hashing.py) against AES-ECB and HMAC computed here
independently, one block at a time, and the helper's matching against the previous one."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import hmac
import uuid

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dialect.errors import DataError
from engine.protocols import paillier
from engine.protocols.joins import common, hashing
from engine.protocols.joins import masked as mj

KEY = bytes(range(32))


# --- the reference: the construction written out, one id and one AES block at a time ----------


def _keys(key: bytes) -> tuple[bytes, bytes]:
    return (hmac.new(key, b"mpcsql/id-prf/v1/aes-256", hashlib.sha256).digest(),
            hmac.new(key, b"mpcsql/id-prf/v1/hmac-sha256", hashlib.sha256).digest())


_TAGS = {"i": 1, "date": 2, "time": 3, "timestamp": 4, "timestamptz": 5, "timestamp_ns": 6}


def _reference_block(canon: bytes) -> bytes | None:
    text = canon.decode("utf-8", "surrogateescape")
    tag, _, rest = text.partition(":")
    if tag in _TAGS and rest.lstrip("-").isdecimal() and rest.isascii():
        v = int(rest)
        if -2**119 <= v < 2**119:
            return bytes([_TAGS[tag]]) + (v % 2**120).to_bytes(15, "big")
        return None
    if len(canon) <= 15:
        return bytes([0x10 + len(canon)]) + canon + bytes(15 - len(canon))
    return None


def _reference(key: bytes, ids) -> tuple[bytes, list[str]]:
    k_aes, k_hmac = _keys(key)
    out, paths = b"", []
    for v in ids:
        canon = paillier.canonical_id(v.item() if isinstance(v, np.generic) else v)
        block = _reference_block(canon)
        if block is None:
            out += hmac.new(k_hmac, canon, hashlib.sha256).digest()[:16]
            paths.append("hmac")
        else:
            enc = Cipher(algorithms.AES(k_aes), modes.ECB()).encryptor()
            out += enc.update(block) + enc.finalize()
            paths.append("aes")
    return out, paths


IDS = {
    "int64": np.array([0, 1, -1, 5, -7, 2**62, 2**63 - 1, -2**63, 10**9], dtype=np.int64),
    "int32": np.array([0, -5, 2**31 - 1, -2**31], dtype=np.int32),
    "uint64": np.array([0, 5, 2**63, 2**64 - 1], dtype=np.uint64),
    "huge": [2**64, -2**64 - 3, 2**119 - 1, -2**119, 2**119, -2**119 - 1, 2**200, -(10**38)],
    "decimal": [decimal.Decimal("5.00"), decimal.Decimal("-0.50"), decimal.Decimal("1E+3"),
                decimal.Decimal("12345678901.5"), decimal.Decimal("123456789012.5"),
                decimal.Decimal("1234567890123456789012345678901234567.8")],
    "text": ["", "a", "5", "é", "x" * 13, "x" * 14, "ü" * 7, "a longer string id"],
    "blob": [b"", b"\x00", b"\xff" * 13, b"\xff" * 14],
    "uuid": [uuid.UUID("12345678-1234-5678-1234-567812345678")],
    "temporal": [datetime.date(1970, 1, 2), datetime.date(1900, 3, 1),
                 datetime.datetime(2024, 5, 6, 7, 8, 9, 123456),
                 datetime.datetime(2024, 5, 6, tzinfo=datetime.UTC), datetime.time(23, 59, 1),
                 paillier.TypedId("timestamp_ns", 1_700_000_000_123_456_789),
                 paillier.TypedId("date", -1)],
}


@pytest.mark.parametrize("kind", list(IDS))
def test_prf_is_aes_ecb_of_the_block_or_truncated_hmac(kind):
    ids = IDS[kind]
    want, paths = _reference(KEY, ids)
    got = hashing.prf(KEY, ids)
    assert got.shape == (len(ids), 16) and got.dtype == np.uint8
    assert got.tobytes() == want
    if isinstance(ids, np.ndarray):  # the vectorised path equals the per-id one
        assert hashing.prf(KEY, ids.tolist()).tobytes() == want
    wire = common.keyed_hashes(KEY, ids)
    assert len(wire) == paillier.HASH_BYTES * len(ids)
    assert wire == want  # the 16-byte words themselves, nothing padded
    padded = hashing.keyed_hashes(KEY, ids, 32)
    for i in range(len(ids)):
        assert padded[32 * i:32 * i + 16] == want[16 * i:16 * i + 16]
        assert padded[32 * i + 16:32 * (i + 1)] == bytes(16)
    assert (common.hash_words(wire).view(np.uint8).reshape(-1, 16) == got).all()


def test_both_paths_are_taken():
    """Ids whose canonical form fits a block go through AES, the others through HMAC."""
    assert _reference(KEY, IDS["int64"])[1] == ["aes"] * 9
    assert _reference(KEY, IDS["huge"])[1] == ["aes"] * 4 + ["hmac"] * 4
    assert _reference(KEY, IDS["decimal"])[1] == ["aes"] * 4 + ["hmac"] * 2
    assert _reference(KEY, IDS["text"])[1] == ["aes"] * 5 + ["hmac"] * 3
    assert _reference(KEY, IDS["uuid"])[1] == ["hmac"]
    assert _reference(KEY, IDS["temporal"])[1] == ["aes"] * 7


def test_equal_ids_of_one_key_class_give_equal_words_whatever_the_width():
    w = hashing.prf(KEY, [5])
    for same in (np.array([5], dtype=np.int8), np.array([5], dtype=np.uint16),
                 np.array([5], dtype=np.int64), np.array([5], dtype=np.uint64), [5], [5.0],
                 [decimal.Decimal("5.000")], [np.int32(5)]):
        assert (hashing.prf(KEY, same) == w).all(), same
    neg = hashing.prf(KEY, [-3])
    assert (hashing.prf(KEY, np.array([-3], dtype=np.int16)) == neg).all()
    assert (hashing.prf(KEY, [decimal.Decimal("-3.0")]) == neg).all()
    big = hashing.prf(KEY, [2**63 + 1])
    assert (hashing.prf(KEY, np.array([2**63 + 1], dtype=np.uint64)) == big).all()
    assert (hashing.prf(KEY, [decimal.Decimal(2**63 + 1)]) == big).all()
    frac = hashing.prf(KEY, [decimal.Decimal("2.50")])
    assert (hashing.prf(KEY, [decimal.Decimal("2.5")]) == frac).all()
    ts = hashing.prf(KEY, [datetime.datetime(1970, 1, 1, 0, 0, 1)])
    assert (hashing.prf(KEY, [paillier.TypedId("timestamp", 10**6)]) == ts).all()


def test_different_ids_give_different_words():
    ids = (list(range(-500, 500)) + [2**64 + i for i in range(50)] + [2**130 + i for i in range(50)]
           + [str(i) for i in range(-100, 100)] + [f"name-{i:020d}" for i in range(100)]
           + [decimal.Decimal(i) / 4 for i in range(1, 200, 2)]
           + [paillier.TypedId(kind, i) for kind in ("date", "time", "timestamp",
                                                      "timestamptz", "timestamp_ns")
              for i in range(-20, 20)]
           + [b"%d" % i for i in range(50)] + [uuid.UUID(int=i) for i in range(20)])
    words = hashing.prf(KEY, ids)
    assert len({bytes(w) for w in words}) == len(ids)  # "5", 5, b"5", date 5 all differ


def test_a_key_change_changes_every_word():
    ids = IDS["int64"].tolist() + IDS["huge"] + IDS["text"] + IDS["temporal"]
    a = hashing.prf(KEY, ids)
    for other in (bytes(32), KEY[:-1] + b"\x00", mj.id_key(KEY)):
        b = hashing.prf(other, ids)
        assert not (a == b).all(axis=1).any()
    rng = np.random.default_rng(4)
    ints = rng.integers(-2**63, 2**63, size=10_000, dtype=np.int64)
    a, b = hashing.prf(KEY, ints), hashing.prf(bytes(32), ints)
    assert not (a == b).all(axis=1).any()
    assert len({bytes(w) for w in a} & {bytes(w) for w in b}) == 0


def test_subkeys_are_independent_labels_of_the_key():
    k_aes, k_hmac = hashing.subkeys(KEY)
    assert (k_aes, k_hmac) == _keys(KEY) and k_aes != k_hmac and KEY not in (k_aes, k_hmac)
    # Neither the shared key nor the raw HMAC-SHA256 of the canonical id reaches the wire.
    raw = hmac.new(KEY, b"i:5", hashlib.sha256).digest()
    assert raw[:16] not in common.keyed_hashes(KEY, [5])


def test_words_look_uniform():
    """Consecutive integers (the encodings differ in one byte) give balanced output bits."""
    words = hashing.prf(KEY, np.arange(20_000, dtype=np.int64))
    bits = np.unpackbits(words, axis=1).mean(axis=0)
    assert np.abs(bits - 0.5).max() < 0.02


# --- matching --------------------------------------------------------------------------------


def _old_match_words(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The previous match_words (commit d676c96), without its final shuffle."""
    ol = np.argsort(left[:, 0])
    kl = left[ol, 0]
    orr = np.argsort(right[:, 0])
    kr = right[orr, 0]

    def distinct(s):
        return s.size < 2 or bool((s[1:] != s[:-1]).all())

    if distinct(kl) and distinct(kr):
        if kl.size == 0:
            return np.zeros((0, 2), dtype=np.int64)
        j = np.searchsorted(kl, kr)
        j[j == kl.size] = 0
        hit = kl[j] == kr
        li, ri = ol[j[hit]], orr[hit]
        same = left[li, 1] == right[ri, 1]
        return np.stack([li[same], ri[same]], axis=1).astype(np.int64)
    both = np.concatenate([left, right])
    o = np.lexsort((both[:, 1], both[:, 0]))
    s = both[o]
    eq = np.flatnonzero((s[1:] == s[:-1]).all(axis=1))
    a, b = np.minimum(o[eq], o[eq + 1]), np.maximum(o[eq], o[eq + 1])
    if (b < left.shape[0]).any() or (a >= left.shape[0]).any() \
            or np.unique(a).size != a.size or np.unique(b).size != b.size:
        raise DataError("duplicate join keys reached the helper")
    return np.stack([a, b - left.shape[0]], axis=1).astype(np.int64)


def _sides(rng, nl, nr, overlap, first_bits):
    """Random words whose first words have only ``first_bits`` random bits (many ties)."""
    def words(n):
        w = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64).astype(np.uint64)
        w[:, 0] >>= np.uint64(64 - first_bits)
        w[:, 0] <<= np.uint64(64 - first_bits)
        return w
    left, right = words(nl), words(nr)
    k = min(overlap, nl, nr)
    right[rng.permutation(nr)[:k]] = left[rng.permutation(nl)[:k]]
    return left, right


@pytest.mark.parametrize("nl,nr,overlap,first_bits", [
    (0, 0, 0, 63), (0, 5, 0, 63), (5, 0, 0, 63), (1, 1, 1, 63), (1, 1, 0, 63), (2, 3, 2, 63),
    (300, 200, 120, 63), (3000, 5000, 2500, 63), (3000, 5000, 2500, 12), (4000, 100, 90, 8),
    (100, 4000, 90, 8), (2**12, 2**12, 2**11, 14), (2**12 + 1, 7, 7, 13)])
def test_match_equals_the_old_implementation(nl, nr, overlap, first_bits):
    rng = np.random.default_rng(nl * 7919 + nr * 31 + first_bits)
    for _ in range(3):
        left, right = _sides(rng, nl, nr, overlap, first_bits)
        try:
            old = _old_match_words(left, right)
        except DataError:  # a random duplicate within a side (only with few random bits)
            with pytest.raises(DataError, match="duplicate join keys"):
                common.match_words(left, right)
            continue
        new = common.match_words(left, right)
        assert new.dtype == np.int64 and new.shape == old.shape
        assert sorted(map(tuple, new.tolist())) == sorted(map(tuple, old.tolist()))
        assert (left[new[:, 0]] == right[new[:, 1]]).all()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("first_bits", [63, 8])
def test_match_refuses_duplicates_like_the_old_one(side, first_bits):
    rng = np.random.default_rng(first_bits)
    for n, a, b in ((2, 0, 1), (300, 5, 250), (3000, 2999, 0)):
        left, right = _sides(rng, n, n, n // 2, first_bits)
        words = left if side == "left" else right
        words[a] = words[b]
        with pytest.raises(DataError, match="duplicate join keys"):
            _old_match_words(left, right)
        with pytest.raises(DataError, match="duplicate join keys"):
            common.match_words(left, right)
        # equal first words with different second words are not duplicates
        words[a, 1] ^= np.uint64(1)
        try:
            old = _old_match_words(left, right)
        except DataError:
            continue
        new = common.match_words(left, right)
        assert sorted(map(tuple, new.tolist())) == sorted(map(tuple, old.tolist()))


def test_match_order_is_uniform():
    """All 3! output orders of three matches appear about equally often."""
    left = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.uint64)
    counts: dict[tuple, int] = {}
    for _ in range(1200):
        key = tuple(common.match_words(left, left[::-1].copy())[:, 0].tolist())
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 6 and min(counts.values()) > 120


def test_random_order_is_a_uniform_permutation():
    for n in (0, 1, 2, 3, 1000, 2**16 + 3):
        p = paillier.random_permutation(n)
        assert p.dtype == np.int64 and sorted(p.tolist()) == list(range(n))
    counts: dict[tuple, int] = {}
    for _ in range(2400):
        key = tuple(paillier.random_permutation(4).tolist())
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 24 and min(counts.values()) > 50


def test_random_order_breaks_ties_uniformly(monkeypatch):
    """With random parts that tie often (here: one random bit per row) the order is still a
    uniformly random permutation."""
    real, armed = paillier.os.urandom, [False]

    def few_bits(size: int) -> bytes:
        if not armed[0]:  # the tie-breaking draws stay real
            return real(size)
        armed[0] = False
        top = np.frombuffer(real(size), dtype=np.uint64) & np.uint64(1 << 63)
        return top.tobytes()

    monkeypatch.setattr(paillier.os, "urandom", few_bits)
    first, orders = [], set()
    for _ in range(1800):
        armed[0] = True
        p = paillier.random_permutation(9)
        assert sorted(p.tolist()) == list(range(9))
        first.append(int(np.flatnonzero(p == 0)[0]))
        orders.add(tuple(p.tolist()))
    assert min(np.bincount(first, minlength=9)) > 130  # 200 expected per position
    assert len(orders) > 1500  # of 9! = 362,880: nearly all distinct
