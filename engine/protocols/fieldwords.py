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


def pseudo_mersenne(a: np.ndarray, modulus: int) -> int:
    """c if p = 2**128 - c with 0 < c < 2**64 and ``a`` holds two words per element, else 0
    (then the generic word loops apply).  Such a p has an all-ones high word."""
    c = (1 << 128) - modulus
    return c if a.shape[0] == 2 and 0 < c < 1 << 64 else 0


def add_mod(a: np.ndarray, b: np.ndarray, modulus: int) -> np.ndarray:
    """(a + b) mod p for words a, b < p."""
    c = pseudo_mersenne(a, modulus)
    if c and a.shape == b.shape:
        return _add_mod2(a, b, np.uint64(c))
    s, carry = add(a, b)
    d, borrow = sub(s, const(modulus, s))
    return np.where((carry == 1) | (borrow == 0), d, s)


def _add_mod2(a: np.ndarray, b: np.ndarray, c: np.uint64) -> np.ndarray:
    """:func:`add_mod` for p = 2**128 - c: s = a + b (129 bits); s >= p iff s + c >= 2**128,
    and then s - p = s + c mod 2**128."""
    out = np.empty(a.shape, dtype=np.uint64)
    s0, s1 = out[0], out[1]
    with np.errstate(over="ignore"):
        np.add(a[0], b[0], out=s0)
        k0 = s0 < a[0]
        np.add(a[1], b[1], out=s1)
        k1 = s1 < a[1]
        s1 += k0
        k1 |= s1 < k0
        t0 = s0 + c
        o0 = t0 < c
        t1 = s1 + o0
        k1 |= t1 < o0
    np.copyto(s0, t0, where=k1)
    np.copyto(s1, t1, where=k1)
    return out


def sub_mod(a: np.ndarray, b: np.ndarray, modulus: int) -> np.ndarray:
    """(a - b) mod p for words a, b < p."""
    c = pseudo_mersenne(a, modulus)
    if not (c and a.shape == b.shape):
        d, borrow = sub(a, b)
        e, _ = add(d, const(modulus, d))
        return np.where(borrow.astype(bool), e, d)
    out = np.empty(a.shape, dtype=np.uint64)
    d0, d1 = out[0], out[1]
    c = np.uint64(c)
    with np.errstate(over="ignore"):
        np.subtract(a[0], b[0], out=d0)
        k0 = a[0] < b[0]
        np.subtract(a[1], b[1], out=d1)
        k1 = a[1] < b[1]
        k1 |= d1 < k0
        d1 -= k0
        # a < b: add p = 2**128 - c, i.e. subtract c mod 2**128
        e0 = d0 - c
        o0 = d0 < c
        e1 = d1 - o0
    np.copyto(d0, e0, where=k1)
    np.copyto(d1, e1, where=k1)
    return out


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
    c = pseudo_mersenne(a, modulus)
    if k == 2 and c:
        return _half_mod2(a, np.uint64(c))
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


def _half_mod2(a: np.ndarray, c: np.uint64) -> np.ndarray:
    """a / 2 mod p for p = 2**128 - c: a >> 1 for even a, else (a + p) >> 1, where
    a + p = (a - c mod 2**128) + 2**128 unless a < c."""
    a0, a1 = a[0], a[1]
    one, s63 = np.uint64(1), np.uint64(63)
    out = np.empty(a.shape, dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.bitwise_or(a0 >> one, a1 << s63, out=out[0])
        np.right_shift(a1, one, out=out[1])
        odd = (a0 & one).astype(bool)
        t0 = a0 - c
        b0 = a0 < c
        t1 = a1 - b0
        top = (a1 >= b0).astype(np.uint64)  # no borrow out of the high word: bit 128 is set
        r0 = (t0 >> one) | (t1 << s63)
        r1 = (t1 >> one) | (top << s63)
    np.copyto(out[0], r0, where=odd)
    np.copyto(out[1], r1, where=odd)
    return out


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
