"""A random-access PRF into Z_p: SHAKE-256 streams read as field elements, vectorised in numpy.

F(seed, i) = int_le(SHAKE-256(seed)[S*i : S*(i+1)]) mod p, with S = :func:`sample_bytes` chosen
so that F(seed, i) is within statistical distance 2^-SIGMA of uniform mod p.  ``seed`` must
contain a secret key of >= 128 bits and a label that makes each stream used once.
"""

from __future__ import annotations

import hashlib

import numpy as np

from dialect.errors import ProtocolError
from engine.protocols.fieldwords import (
    const,
    ints_to_words,
    pseudo_mersenne,
    sub,
    value_words,
    words_to_ints,
)

SIGMA = 64  # statistical security of the masks: distance from uniform mod p <= 2**-SIGMA


def sample_bytes(modulus: int) -> int:
    """PRF bytes per sample: the fewest whole 64-bit words w (covering the modulus) such that
    (2**w mod p) / 2**w <= 2**-SIGMA, which bounds the distance of (uniform w-bit) mod p from
    uniform.  For p = 2**128 - 173 (SecFxp(64, 32)) that is 16 bytes (distance < 2**-120);
    a prime far below a power of two gets bits(p) + 64 bits and more."""
    words = value_words(modulus)
    while (1 << (64 * words)) % modulus << SIGMA > 1 << (64 * words):
        words += 1
    return 8 * words


def positions(pos: np.ndarray) -> np.ndarray:
    """Positions as a flat int64 array (refusing negative ones)."""
    pos = np.asarray(pos, dtype=np.int64).reshape(-1)
    if pos.size and pos.min() < 0:
        raise ProtocolError("negative row position in the masked join")
    return pos


def _sample_words(seed: bytes, pos: np.ndarray, s: int) -> np.ndarray:
    """(s/8, len(pos)) words of the samples at ``pos`` (word-major)."""
    stream = hashlib.shake_256(seed).digest(s * (int(pos.max()) + 1) if pos.size else 0)
    words = np.frombuffer(stream, dtype="<u8").reshape(-1, s // 8)
    if pos.size and pos[0] == 0 and pos[-1] == pos.size - 1 and (
            pos.size < 2 or bool((np.diff(pos) == 1).all())):
        return words.T  # positions 0..n-1 (A2S, whole columns): no gather
    return words[pos].T


def _reduce_once(x: np.ndarray, modulus: int) -> np.ndarray:
    """Words x < 2**(64K) <= 2p reduced mod p (one conditional subtraction, in place where
    x >= p: for p = 2**128 - c that is only where the high word is all ones)."""
    if pseudo_mersenne(x, modulus):
        hi = np.flatnonzero(x[1] == np.uint64((1 << 64) - 1))
        if hi.size:
            sub_words = x[:, hi]
            d, borrow = sub(sub_words, const(modulus, sub_words))
            x[:, hi] = np.where(borrow == 0, d, sub_words)
        return x
    d, borrow = sub(x, const(modulus, x))
    return np.where(borrow == 0, d, x)


def prf_ints(seed: bytes, pos: np.ndarray, modulus: int) -> np.ndarray:
    """F(seed, i) for i in ``pos``, as Python ints (the reference definition)."""
    pos = positions(pos)
    if not pos.size:
        return np.zeros(0, dtype=object)
    return words_to_ints(_sample_words(seed, pos, sample_bytes(modulus))) % modulus


def prf_words(seed: bytes, pos: np.ndarray, modulus: int) -> np.ndarray:
    """:func:`prf_ints` as (K, len(pos)) 64-bit words.

    Fast path when a sample is one field element wide and below 2p (p = 2**128 - 173): one
    conditional subtraction; otherwise through Python ints.
    """
    pos = positions(pos)
    k, s = value_words(modulus), sample_bytes(modulus)
    if not pos.size:
        return np.zeros((k, 0), dtype=np.uint64)
    if s != 8 * k or 1 << (64 * k) > 2 * modulus:
        return ints_to_words(prf_ints(seed, pos, modulus), modulus)
    x = np.ascontiguousarray(_sample_words(seed, pos, s), dtype=np.uint64)
    return _reduce_once(x, modulus)


class Stream:
    """F(seed, i) for consecutive positions i = 0, 1, 2, ...: :meth:`take` returns the next
    ``count`` of them as (K, count) words, equal to :func:`prf_words` at those positions.

    Reads the SHAKE-256 stream incrementally (``cryptography``'s XOF squeeze), so a chunk of
    C positions costs O(C) time and memory wherever it lies; without an incremental XOF it
    falls back to :func:`prf_words` (the stream from its start).
    """

    def __init__(self, seed: bytes, modulus: int):
        self.seed, self.modulus, self.pos = seed, modulus, 0
        self.k, self.s = value_words(modulus), sample_bytes(modulus)
        self._xof = None
        if self.s == 8 * self.k and 1 << (64 * self.k) <= 2 * modulus:
            try:
                from cryptography.hazmat.primitives import hashes

                xof = hashes.XOFHash(hashes.SHAKE256(digest_size=1 << 62))
                xof.update(seed)
                self._xof = xof
            except (ImportError, AttributeError):  # pragma: no cover - cryptography < 45
                self._xof = None

    def take(self, count: int) -> np.ndarray:
        start, self.pos = self.pos, self.pos + count
        if count == 0:
            return np.zeros((self.k, 0), dtype=np.uint64)
        if self._xof is None:
            return prf_words(self.seed, np.arange(start, start + count), self.modulus)
        x = np.frombuffer(self._xof.squeeze(self.s * count), dtype="<u8")
        x = np.ascontiguousarray(x.reshape(count, self.k).T, dtype=np.uint64)
        return _reduce_once(x, self.modulus)
