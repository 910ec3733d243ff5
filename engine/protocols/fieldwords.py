"""Arithmetic mod a prime p on numpy arrays of 64-bit words (no Python ints per element).

An element of Z_p (p < 2**(64K)) is K uint64 words along axis 0, least significant first, so
an array of shape (K, ...) holds one element per trailing index.  All inputs are reduced
(< p); every function returns reduced words.  Used for the join's masks and shares and for
MPyC Shamir shares of large tables, where Python ints would cost ~50 bytes and ~0.1 us each.
"""

from __future__ import annotations

import numpy as np

_M64 = (1 << 64) - 1
_M32 = np.uint64((1 << 32) - 1)


def value_words(modulus: int) -> int:
    """64-bit words per field element (2 for a 128-bit prime)."""
    return -(-modulus.bit_length() // 64)


def const(x: int, like: np.ndarray) -> np.ndarray:
    """The integer ``x`` as words broadcasting against ``like``."""
    k = like.shape[0]
    c = np.array([(x >> (64 * j)) & _M64 for j in range(k)], dtype=np.uint64)
    return c.reshape((k,) + (1,) * (like.ndim - 1))


def add(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a + b mod 2**(64K) and the carry out."""
    a, b = np.broadcast_arrays(a, b)
    out = np.empty(a.shape, dtype=np.uint64)
    carry = np.zeros(a.shape[1:], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(a.shape[0]):
            np.add(a[j], b[j], out=out[j])
            c = out[j] < a[j]
            out[j] += carry
            carry = (c | (out[j] < carry)).astype(np.uint64)
    return out, carry


def sub(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a - b mod 2**(64K) and the borrow out (1 where a < b)."""
    a, b = np.broadcast_arrays(a, b)
    out = np.empty(a.shape, dtype=np.uint64)
    borrow = np.zeros(a.shape[1:], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(a.shape[0]):
            np.subtract(a[j], b[j], out=out[j])
            bj = a[j] < b[j]
            bj |= out[j] < borrow
            out[j] -= borrow
            borrow = bj.astype(np.uint64)
    return out, borrow


def add_mod(a: np.ndarray, b: np.ndarray, modulus: int) -> np.ndarray:
    """(a + b) mod p for words a, b < p."""
    s, carry = add(a, b)
    d, borrow = sub(s, const(modulus, s))
    return np.where((carry == 1) | (borrow == 0), d, s)


def neg_mod(a: np.ndarray, modulus: int) -> np.ndarray:
    """-a mod p for words a < p."""
    d, _ = sub(const(modulus, a), a)
    return np.where((a == 0).all(axis=0), a, d)


def mul_small_mod(a: np.ndarray, c: int, modulus: int) -> np.ndarray:
    """c * a mod p for a small (signed) integer c, by doubling and adding."""
    if c < 0:
        return neg_mod(mul_small_mod(a, -c, modulus), modulus)
    if c == 0:
        return np.zeros_like(a)
    out = a
    for bit in bin(c)[3:]:
        out = add_mod(out, out, modulus)
        if bit == "1":
            out = add_mod(out, a, modulus)
    return out.copy() if out is a else out


def div_small_mod(a: np.ndarray, k: int, modulus: int) -> np.ndarray:
    """a / k mod p for a small integer 0 < k < 2**31 coprime to p (exact division of a + t p)."""
    if k == 1:
        return a.copy()
    if k == 2:  # halving: add p to odd values, shift right by one bit
        y = np.concatenate([a, np.zeros((1,) + a.shape[1:], dtype=np.uint64)])
        s, _ = add(y, const(modulus, y))
        y = np.where((a[0] & np.uint64(1)).astype(bool), s, y)
        return (y[:-1] >> np.uint64(1)) | (y[1:] << np.uint64(63))
    # t in [0, k) with a + t p = 0 mod k: t = -a p^-1 mod k.
    r = np.zeros(a.shape[1:], dtype=np.uint64)
    for j in range(a.shape[0]):
        r = (r + (a[j] % np.uint64(k)) * np.uint64(pow(2, 64 * j, k))) % np.uint64(k)
    t = (np.uint64(k) - r) % np.uint64(k) * np.uint64(pow(modulus % k, -1, k)) % np.uint64(k)
    # y = a + t p in K + 1 words (t < k, added one p at a time).
    y = np.concatenate([a, np.zeros((1,) + a.shape[1:], dtype=np.uint64)])
    p = const(modulus, y)
    for i in range(1, k):
        s, _ = add(y, p)
        y = np.where(t >= np.uint64(i), s, y)
    # Long division of y by k on 32-bit halves, most significant first (remainder < k).
    out = np.zeros_like(y)
    rem = np.zeros(a.shape[1:], dtype=np.uint64)
    kk = np.uint64(k)
    for j in range(y.shape[0] - 1, -1, -1):
        for shift in (np.uint64(32), np.uint64(0)):
            cur = (rem << np.uint64(32)) | ((y[j] >> shift) & _M32)
            out[j] |= (cur // kk) << shift
            rem = cur % kk
    return out[:-1]


def int64_to_words(v: np.ndarray, modulus: int) -> np.ndarray:
    """Signed 64-bit integers (|v| < 2**63) as words of v mod p."""
    v = np.asarray(v, dtype=np.int64)
    mag = np.zeros((value_words(modulus),) + v.shape, dtype=np.uint64)
    mag[0] = np.abs(v).astype(np.uint64)
    neg, _ = sub(const(modulus, mag), mag)
    return np.where(v < 0, neg, mag)


def words_to_ints(words: np.ndarray) -> np.ndarray:
    """Words (axis 0) -> object array of Python ints, vectorised."""
    acc = words[-1].astype(object)
    for j in range(words.shape[0] - 2, -1, -1):
        acc = (acc << 64) | words[j].astype(object)
    return acc


def ints_to_words(values, modulus: int) -> np.ndarray:
    """Ints in [0, p) (any array-like) -> words (a new axis 0)."""
    x = np.asarray(values, dtype=object)
    k = value_words(modulus)
    out = np.empty((k,) + x.shape, dtype=np.uint64)
    for j in range(k):
        out[j] = ((x >> (64 * j)) & _M64).astype(np.uint64)
    return out


def sum_mod(a: np.ndarray, modulus: int, axis: int = -1) -> np.ndarray:
    """Sums mod p of words ``a`` (K, ...) along ``axis`` (of the element array), as Python ints.

    Exact: 32-bit halves summed in uint64 (fine for up to 2**32 terms).
    """
    k = a.shape[0]
    ax = axis % (a.ndim - 1)
    total = 0
    for j in range(k):
        lo = (a[j] & _M32).sum(axis=ax, dtype=np.uint64).astype(object)
        hi = (a[j] >> np.uint64(32)).sum(axis=ax, dtype=np.uint64).astype(object)
        total = total + (lo << (64 * j)) + (hi << (64 * j + 32))
    return np.asarray(total % modulus, dtype=object)
