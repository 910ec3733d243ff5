"""Fixed-point products in one round: local product, PRSS-masked opening, probabilistic truncation.

MPyC 0.11 multiplies two secure fixed-point numbers in three rounds: a reshare of the local
(degree 2t) product, then a truncation that needs f secure random bits per element (each one
a PRSS square, an opening and a modular square root) and one more opening. For the d x d
solvers in :mod:`engine.protocols.regression` that truncation dominated both CPU time and
traffic (48 random bits per product at f = 48). Here a product costs one round and no random
bits: each party adds to its share of the raw product X (|X| < 2^(l-1)) pseudorandom shares
(PRSS, no communication) of r' and r'' and of a degree-2t zero, and the parties open

    c = X + 2^(l-1) + r' + 2^f r''

with threshold 2t (threshold t for a product with a public factor, which is already of
degree t). Then floor((X + r') / 2^f) = floor(c / 2^f) - r'' - 2^(l-1-f) is a linear function
of the public c and the shares of r''. r' is the sum of C(m, t) PRF outputs uniform in
[0, 2^f), each unknown to some party, so c mod 2^f is uniform to every party; r'' is drawn as
MPyC's own truncation draws it (C(m, t) PRF outputs in [0, 2^(k+l-f)/C(m, t)), k the
statistical security parameter), so c hides X to the same statistical distance as
``mpc.np_trunc``; the degree-2t zero sharing makes the opened polynomial uniform, as in MPyC's
random-bit generation. The result is X / 2^f with an error in (-2, 2) units of 2^-f (MPyC's
truncation: (-1, 1)); the bias (C(m, t) - 1)/2 of r' is subtracted.

Also: :func:`intmul` (secret integers, e.g. bits, times a fixed-point array: exact, one
reshare; MPyC does the same only while the integral flag survives, which slicing and
concatenation drop; its degree reduction is one PRSS-masked opening, not MPyC's reshare),
:func:`all_bits` (AND of secret bits by a product tree) and :func:`ltz` (Protocol LTZ-SMALL:
secure comparison in a small prime field, see its section below). The PRSS masks of all of
these are drawn by one SHAKE-128 call per key and parsed by numpy (:func:`_prss_int`), with
the distributions of MPyC's ``_np_randoms`` and ``np_pseudorandom_share_0``.

Only for the runtime's default PRSS mode (MPyC's ``--no-prss`` falls back to MPyC's own
products). Inputs must respect the secure type's range, as for MPyC's products.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from fractions import Fraction

import gmpy2
import numpy as np

from engine.protocols import runtime as mpcrt

coroutine = mpcrt.runtime_module.Runtime.coroutine
thresha = mpcrt.runtime_module.thresha
finfields = mpcrt.runtime_module.finfields


def _rt():
    return mpcrt.runtime_module.mpc


def _encode(c, f: int) -> np.ndarray:
    """The public factor(s) c as integers round(c 2^f) (object array; ties to even, as round)."""
    a = np.asarray(c, float) * 2.0**f  # exact: a power of two
    s = np.asarray(np.round(a))  # 0-d stays an array
    if s.size and np.abs(s).max() < 2.0**62:  # also False for inf/nan: round raises below
        return s.astype(np.int64).astype(object)
    return np.vectorize(lambda v: int(round(v)), otypes=[object])(a)


def public(stype, c):
    """The public float(s) c as a secure fixed-point array of type ``stype`` (no interaction).

    As ``stype(np.asarray(c))`` but without MPyC's per-element Python calls (two np.vectorize
    passes, ~0.5 us per element), which dominated ``a * I - A X`` in NS-INVERSE.
    """
    sec = stype.sectype
    value = sec.field.array(_encode(c, sec.frac_length) % sec.field.modulus, check=False)
    return stype(value, integral=False)


async def _open_trunc(field, raw: np.ndarray, degree2: bool, f: int, l: int,  # noqa: E741
                      extra: tuple[int, ...] = ()) -> list:
    """Shares of floor((X + r') / 2^g) for shares ``raw`` of X, |X| < 2^(l-1), g = f and
    f + e for each e in ``extra`` (one opening for all)."""
    rt = _rt()
    shape = raw.shape
    n = raw.size
    m = len(rt.parties)
    t = rt.threshold
    k = rt.options.sec_param
    subsets = math.comb(m, t)
    flat = raw.reshape(-1)
    parts, shifts = [], []
    p = field.modulus
    for g in (f, *(f + e for e in extra)):
        # as MPyC's _np_randoms(field, n, bound): per key uniform in [0, 2^floor(log2(bound /
        # C(m, t)))), drawn by the vectorised PRSS below
        r1 = _prss_int((p,), n, g)[0]  # per key uniform in [0, 2^g)
        r2 = _prss_int((p,), n, max(0, ((1 << (k + l - g)) // subsets).bit_length() - 1))[0]
        parts.append(flat + r1 + (r2 << g) + (1 << (l - 1)))
        shifts.append((g, r2))
    x = np.concatenate(parts)
    if degree2:
        x = x + _prss_zero2t(p, x.size)
    c = await rt.output(field.array(x % p, check=False), threshold=2 * t if degree2 else t)
    c = np.asarray(c.value, dtype=object)
    out = []
    for i, (g, r2) in enumerate(shifts):
        y = (c[i * n:(i + 1) * n] >> g) - ((1 << (l - 1 - g)) + (subsets - 1) // 2) - r2
        out.append(field.array((y % field.modulus).reshape(shape), check=False))
    return out


def _fallback() -> bool:
    return bool(_rt().options.no_prss)


@coroutine
async def _mul(a, b, extra: int):
    rt = _rt()
    stype = type(a)
    shape = np.broadcast_shapes(a.shape, b.shape)
    await rt.returnType((stype, False, shape))
    a, b = await rt.gather(a, b)
    sec = stype.sectype
    f = sec.frac_length
    raw = np.broadcast_to(a.value * b.value, shape).copy()
    return (await _open_trunc(sec.field, raw, True, f + extra, sec.bit_length + f))[0]


def mul(a, b, *, extra: int = 0):
    """a * b (times 2^-extra) elementwise, numpy broadcasting, secure fixed-point, one round."""
    if _fallback():
        return a * b if not extra else (a * b) * 2.0**-extra
    return _mul(a, b, extra)


#: Fractional bits of a public ``factor`` folded into a product's truncation (matmul).
FACTOR_BITS = 40


@coroutine
async def _matmul(A, B, extra: int, factor):
    rt = _rt()
    stype = type(A)
    shape = (np.zeros(A.shape) @ np.zeros(B.shape)).shape
    if extra:
        await rt.returnType((stype, False, shape), 2)
    else:
        await rt.returnType((stype, False, shape))
    A, B = await rt.gather(A, B)
    sec = stype.sectype
    f = sec.frac_length
    raw = np.asarray(A.value @ B.value, dtype=object).reshape(shape)
    g = f
    if factor is not None:  # times round(factor 2^FACTOR_BITS), truncated FACTOR_BITS more
        raw = np.asarray(raw * _encode(factor, FACTOR_BITS), dtype=object).reshape(shape)
        g = f + FACTOR_BITS
    out = await _open_trunc(sec.field, raw, True, g, sec.bit_length + f,
                            (extra,) if extra else ())
    return out if extra else out[0]


@functools.cache
def _triangle(d: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """The upper triangle's indices (i <= j) of a d x d matrix and, at every (i, j), the
    position of (min(i, j), max(i, j)) among them."""
    iu = np.triu_indices(d)
    pos = np.zeros((d, d), dtype=np.intp)
    pos[iu] = np.arange(iu[0].size)
    pos.T[iu] = np.arange(iu[0].size)
    return iu, pos


@coroutine
async def _symmatmul(A, B, factor):
    rt = _rt()
    stype = type(A)
    shape = (np.zeros(A.shape) @ np.zeros(B.shape)).shape
    await rt.returnType((stype, False, shape))
    A, B = await rt.gather(A, B)
    sec = stype.sectype
    f = sec.frac_length
    iu, pos = _triangle(shape[-1])
    rows = np.asarray(A.value)[..., iu[0], :]
    cols = np.swapaxes(np.asarray(B.value), -1, -2)[..., iu[1], :]
    raw = (rows * cols).sum(axis=-1)  # (A @ B)[..., i, j] for i <= j
    g = f
    if factor is not None:
        fac = np.broadcast_to(np.asarray(factor, float), shape)[..., iu[0], iu[1]]
        raw = raw * _encode(fac, FACTOR_BITS)
        g = f + FACTOR_BITS
    tri = (await _open_trunc(sec.field, np.asarray(raw, dtype=object), True, g,
                             sec.bit_length + f))[0]
    return sec.field.array(tri.value[..., pos], check=False)


def symmatmul(A, B, *, factor=None):
    """A @ B, in one round, for square A and B (or stacks) whose product is symmetric, e.g. two
    polynomials in the same symmetric matrix (NS-INVERSE's A X and X (a I - A X)).

    Only the d (d + 1) / 2 entries i <= j are computed, truncated and opened (the opening is
    the cost: about half of :func:`matmul`'s); the result is their mirror image, exactly
    symmetric. ``factor`` as for :func:`matmul`.
    """
    assert A.shape[-1] == A.shape[-2] == B.shape[-2] == B.shape[-1]
    if _fallback():
        return matmul(A, B, factor=factor)
    return _symmatmul(A, B, factor)


def matmul(A, B, *, extra: int = 0, factor=None):
    """A @ B for secure fixed-point arrays (1-D, 2-D or stacks), in one round.

    With ``extra`` > 0 returns the pair (A @ B, A @ B * 2^-extra), the second with only
    f - extra fractional bits (a cheaper input for comparisons), from the same opening.
    ``factor`` (public, broadcasting against the result, 0 < factor < 8; not with ``extra``)
    gives (A @ B) * factor with the factor rounded to FACTOR_BITS fractional bits, in the same
    round and opening: the raw product is multiplied by the encoded integer and truncated by
    f + FACTOR_BITS bits. The caller keeps |A @ B| * factor below 2^(l - f - FACTOR_BITS - 1)
    (2^7 for SecFxp(96, 48)), as the truncation requires.
    """
    assert factor is None or not extra
    if _fallback():
        C = A @ B if factor is None else (A @ B) * np.asarray(factor, float)
        return (C, C * 2.0**-extra) if extra else C
    return _matmul(A, B, extra, factor)


def outer(a, b):
    """The outer product of secure fixed-point vectors a and b, in one round."""
    rt = _rt()
    return mul(rt.np_reshape(a, (a.size, 1)), rt.np_reshape(b, (1, b.size)))


@coroutine
async def _scale(a, c, f_out: int):
    rt = _rt()
    stype = type(a)
    sec = stype.sectype
    f = sec.frac_length
    cint = _encode(c, f)
    shape = np.broadcast_shapes(a.shape, cint.shape)
    await rt.returnType((stype, False, shape))
    a = await rt.gather(a)
    raw = np.asarray(np.broadcast_to(a.value, shape) * cint, dtype=object)
    return (await _open_trunc(sec.field, raw, False, f + f_out, sec.bit_length + f))[0]


def scale(a, c, *, extra: int = 0):
    """a * c for a secure fixed-point array a and public float(s) c, in one round.

    With ``extra`` > 0 the result is the value at scale 2^(f - extra) stored as if at 2^f,
    i.e. a * c * 2^-extra with f - extra fractional bits (a cheaper input for comparisons).
    """
    if _fallback() and not extra:
        return a * c
    if _fallback():
        return a * (np.asarray(c, float) * 2.0**-extra)
    return _scale(a, c, extra)


@coroutine
async def _intmul(b, x):
    rt = _rt()
    stype = type(x)
    shape = np.broadcast_shapes(b.shape, x.shape)
    await rt.returnType((stype, False, shape))
    b, x = await rt.gather(b, x)
    field = stype.sectype.field
    p = field.modulus
    # b is an integer k held as k 2^f: dividing the product by 2^f in the field is exact
    inv = pow(1 << stype.sectype.frac_length, -1, p)
    c = np.broadcast_to(b.value * x.value, shape) % p * inv % p
    if rt.threshold == 0:
        return field.array(np.asarray(c, dtype=object), check=False)
    # degree 2t -> t by one masked opening (as MPyC's reshare: one round, each party sends its
    # share to the others) with vectorised PRSS instead of a randbelow per element
    return field.array(await _reduce(field, np.asarray(c, dtype=object)), check=False)


def intmul(b, x):
    """b * x for a secure array b of integers (e.g. secret bits), exact, in one round (reshare).

    MPyC does this only when ``b`` carries its integral flag, which slicing and concatenation
    drop; a lost flag costs a full truncation (f random bits per element).
    """
    if _fallback():
        return b * x
    return _intmul(b, x)


def all_bits(bits):
    """The product of the secret bits of a 1-D array (shape (1,)), ceil(log2 n) rounds."""
    rt = _rt()
    while bits.size > 1:
        h = bits.size // 2
        prod = intmul(bits[:h], bits[h:2 * h])
        bits = rt.np_concatenate((prod, bits[2 * h:])) if bits.size % 2 else prod
    return bits



# --- Protocol LTZ-SMALL: comparisons in a small prime field, vectorised PRSS ------------------
#
# MPyC's np_sgn(x, l, LT=True) spends l + 1 secure random bits per element in x's own field
# (176 bits for SecFxp(96, 48)): each a PRSS square, an opening and a modular square root
# (~12 us), plus a reshare per bit in its product tree (one Python randbelow per element).
# ltz() runs the same comparison (T. Toft's variant, "Primitives and applications for multi-
# party computation", PhD thesis, Aarhus 2007, of the bitwise comparison of Damgard, Fitzi,
# Kiltz, Nielsen and Toft, TCC 2006; as mpyc.runtime.np_sgn) in a Blum prime field Zq of
# max(l + k + 5, 2k + 2) bits (62 for l = 27), with every PRSS value drawn by one SHAKE-128
# call per key, parsed by numpy. The moves between fields use statistical masking as in
# Catrina and de Hoogh's protocols (ESORICS 2010), with the mask's integer shared in both
# fields by PRSS from the same PRF outputs:
#
# 1. to Zq: open (threshold 2t, randomised by a PRSS degree-2t sharing of 0)
#    c = x + 2^(l-1) + R with R = sum_S R_S, R_S in [0, 2^(l+k)) the PRF output of key S;
#    each party lacks one R_S, so c hides x + 2^(l-1) in [0, 2^l) to statistical distance
#    2^-k (as MPyC's own comparison mask r_divl).  Every party computes its shares of the
#    same integer R in Zq from the same PRF outputs, so [x]_q = c - 2^(l-1) - [R]_q.
# 2. in Zq: l + 1 random bits r^((q-1)/2) = r (r^2)^((q-3)/4) from uniform PRSS r and the
#    opened r^2 (as MPyC's random bits); open c' = x + 2^l + sum 2^i r_i + 2^l r_divl; the
#    product of the l + 1 Toft terms by a tree of one-round degree reductions (open a product
#    plus a uniform PRSS R and a degree-2t zero sharing, subtract [R]_t: no randbelow); a
#    public zero test of that product times a uniform PRSS value, as MPyC's np_is_zero_public.
# 3. back to Zp: open b + R' (R' as in 1 with k bits per key) in Zq, [b]_p = c - [R']_p.
#
# What is opened: only values uniformly random in the field (the degree reductions, the
# squares r^2, the zero test's masked product, whose zero-ness is a uniformly random bit thanks
# to the random sign bit, as in MPyC) or statistically hiding to 2^-k (1, 3 and the comparison
# mask); every opening is randomised by a degree-2t zero sharing, so only its value is seen.

_TAG = b"mpcsql-ltz"


def _keys():
    return _rt()._prss_keys


def _prf(key: bytes, uci: bytes, n: int, nbits: int) -> np.ndarray:
    """n PRF outputs of ``key`` on ``uci``, uniform in [0, 2^nbits), as Python ints."""
    h = _prf_halves(key, uci, n, nbits)
    return _join_halves(h) if h.shape[0] else np.zeros(n, dtype=object)


def _prf_halves(key: bytes, uci: bytes, n: int, nbits: int) -> np.ndarray:
    """The n PRF outputs of :func:`_prf` as 32-bit halves, int64 (H, n), least significant
    first: the low ``nbits`` bits of 64 ceil(nbits / 64) bits of SHAKE-128 output each."""
    if nbits <= 0:
        return np.zeros((0, n), dtype=np.int64)
    limbs = (nbits + 63) // 64
    buf = hashlib.shake_128(key + uci + _TAG).digest(8 * limbs * n)
    a = np.frombuffer(buf, dtype="<u4").reshape(n, 2 * limbs).T
    nh = (nbits + 31) // 32
    out = a[:nh].astype(np.int64)
    top = nbits - 32 * (nh - 1)
    if top < 32:
        out[-1] &= (1 << top) - 1
    return out


def _join_halves(h: np.ndarray) -> np.ndarray:
    """Object array of the (signed) integers sum_j h[j] 2^(32 j)."""
    x = h[-1].astype(object)
    for j in range(h.shape[0] - 2, -1, -1):
        x = (x << 32) + h[j].astype(object)
    return x


@functools.cache
def _int_coefs(m: int, i: int, subsets: tuple[tuple[int, ...], ...]) -> tuple[list[int], int]:
    """(D f_S(i + 1) for each S, D): f_S(x) = prod_{j not in S} (x_j - x) / x_j (MPyC's PRSS
    polynomial, x_j = j + 1) as integers over the common denominator D of every party's
    values for every subset of that size (the same D at all parties, whichever keys each
    holds: shares of D R are then consistent)."""
    def f(i: int, S: tuple[int, ...]) -> Fraction:
        v = Fraction(1)
        for j in range(m):
            if j not in S:
                v *= Fraction(j - i, j + 1)
        return v

    size = len(subsets[0])  # a party holds only its own keys: D runs over all subsets
    D = math.lcm(*(f(h, S).denominator for h in range(m)
                   for S in itertools.combinations(range(m), size)))
    return [int(f(i, S) * D) for S in subsets], D


def _combine(terms: list[tuple[int, np.ndarray]], D: int, moduli: tuple[int, ...],
             exact: bool = True) -> list:
    """sum c h / D mod each q for integer coefficients c and halves h (int64 (H, n)): the
    sum is formed in int64 per half (exact: |c| 2^32 summed stays below 2^62) and joined
    into Python ints once, then multiplied by D^-1 mod q. With ``exact`` False the factor
    D^-1 is left out: the shares are then of D times the value, which is as uniform as the
    value itself (D is public and invertible mod q), so uniform draws and zero sharings
    need no division."""
    acc = None
    for c, h in terms:
        if c:
            acc = c * h if acc is None else acc + c * h
    if acc is None:
        return [np.zeros(terms[0][1].shape[1], dtype=object) for _ in moduli]
    x = _join_halves(acc)
    if not exact or D == 1:
        return [x % q for q in moduli]
    return [x * pow(D, -1, q) % q for q in moduli]


def _prss_int(moduli: tuple[int, ...], n: int, nbits: int,
              exact: bool = True) -> list[np.ndarray]:
    """This party's shares, modulo each of ``moduli``, of n integers R = sum_S R_S with
    R_S uniform in [0, 2^nbits) (one PRF output per key S), from one fresh common input
    (with ``exact`` False: of D R mod q, D public, see :func:`_combine`; for uniform draws)."""
    rt = _rt()
    uci = rt._prss_uci()
    if nbits <= 0:
        return [np.zeros(n, dtype=object) for _ in moduli]
    keys = _keys()
    cs, D = _int_coefs(len(rt.parties), rt.pid, tuple(keys))
    assert sum(map(abs, cs)) < 1 << 29
    terms = [(c, _prf_halves(key, uci, n, nbits))
             for c, key in zip(cs, keys.values(), strict=True)]
    return _combine(terms, D, moduli, exact)


@functools.cache
def _uniform_bits(q: int) -> int:
    """PRF output length for values uniform in Zq: b = bit length of q if 2^b - q < 2^(b-50)
    (then [0, 2^b) mod q is within 2^-50 of uniform: MPyC's fields and _small_field's), else
    b + k (within 2^-k)."""
    b = q.bit_length()
    return b if (1 << b) - q < 1 << (b - 50) else b + _rt().options.sec_param


def _prss_uniform(q: int, n: int) -> np.ndarray:
    """Shares of n values (statistically) uniform in Zq, see :func:`_uniform_bits`."""
    return _prss_int((q,), n, _uniform_bits(q), exact=False)[0]


def _prss_zero2t(q: int, n: int) -> np.ndarray:
    """Shares of n random degree-2t sharings of 0 in Zq (MPyC's np_pseudorandom_share_0):
    sum over keys S of f_S(x) (r_S1 x + ... + r_St x^t), r_Sj uniform as in _prss_uniform."""
    rt = _rt()
    m, t, i = len(rt.parties), rt.threshold, rt.pid
    if t == 0:
        return np.zeros(n, dtype=object)
    uci = rt._prss_uci()
    nbits = _uniform_bits(q)
    keys = _keys()
    cs, D = _int_coefs(m, i, tuple(keys))
    terms = []
    for c, key in zip(cs, keys.values(), strict=True):
        h = _prf_halves(key, uci, n * t, nbits).reshape(-1, t, n)
        terms += [(c * (i + 1) ** (j + 1), h[:, j]) for j in range(t)]
    assert sum(abs(c) for c, _ in terms) < 1 << 29
    return _combine(terms, D, (q,), exact=False)[0]


async def _open(field, x: np.ndarray) -> np.ndarray:
    """Open shares ``x`` (degree t or 2t) randomised by a degree-2t zero sharing, so that
    only the value is seen; returns the opened values as ints mod q, flattened."""
    rt = _rt()
    q = field.modulus
    x = (x + _prss_zero2t(q, x.size)) % q
    c = await rt.output(field.array(x, check=False), threshold=2 * rt.threshold)
    return np.asarray(c.value, dtype=object).reshape(-1)


async def _reduce(field, x: np.ndarray) -> np.ndarray:
    """Degree-t shares of the values of degree-2t shares ``x`` (one masked opening)."""
    if _rt().threshold == 0:
        return x % field.modulus
    q = field.modulus
    r = _prss_uniform(q, x.size)
    c = await _open(field, x.reshape(-1) + r)
    return ((c - r) % q).reshape(x.shape)


async def _random_bits(field, n: int) -> np.ndarray:
    """Shares of n uniformly random bits in Zq (q a Blum prime): r^((q-1)/2) as MPyC does."""
    q = field.modulus
    r = _prss_uniform(q, n)
    s = await _open(field, r * r)
    bad = s == 0  # r = 0: probability n/q; draw those again
    if bad.any():
        r[bad] = (await _random_bits(field, int(bad.sum()))) * 2 - 1
        s[bad] = 1
    e = (q - 3) // 4
    inv = np.array(list(map(int, gmpy2.powmod_base_list(list(s), e, q))), dtype=object)
    return (r * inv + 1) * ((q + 1) // 2) % q


@functools.cache
def _small_field(l: int, k: int):  # noqa: E741
    """GF(q), q the largest Blum prime below 2^max(l + k + 5, 2k + 2)."""
    b = max(l + k + 5, 2 * k + 2)
    p, _, _ = finfields.find_prime_root(b)
    assert p.bit_length() == b
    return finfields.GF(p)


@coroutine
async def _ltz(a, l: int):  # noqa: E741
    """Protocol LTZ-SMALL: [a < 0], |a 2^f| < 2^(l-1): Toft's comparison (as MPyC) in small Zq."""
    rt = _rt()
    stype = type(a)
    shape = a.shape
    await rt.returnType((stype, True, shape))
    sec = stype.sectype
    p = sec.field.modulus
    k = rt.options.sec_param
    Fq = _small_field(l, k)
    q = Fq.modulus
    n = a.size
    bits = _random_bits(Fq, (l + 1) * n)  # independent of a: runs alongside step 1
    a = await rt.gather(a)
    # 1. [a]_q from one opening of a + 2^(l-1) + R (R the same integer shared mod p and mod q)
    Rp, Rq = _prss_int((p, q), n, l + k)
    half = 1 << (l - 1)
    c = await _open(sec.field, a.value.reshape(-1) + half + Rp)
    x = (c - half - Rq) % q
    # 2. Toft's comparison in Zq (as mpyc.runtime.np_sgn with LT=True)
    rb = (await bits).reshape(l + 1, n)
    s_sign = (2 * rb[l] - 1) % q
    r_bits = rb[:l]  # MSB first
    shifts = np.arange(l - 1, -1, -1, dtype=object).reshape(l, 1)
    r_modl = np.sum(r_bits << shifts, axis=0)
    r_divl = _prss_int((q,), n, k)[0]
    a_r = x + (1 << l) + r_modl
    c = await _open(Fq, a_r + (r_divl << l))
    c = c & ((1 << l) - 1)
    z = c - a_r
    c_bits = (c.reshape(1, n) >> shifts) & 1
    xor = c_bits + r_bits - 2 * c_bits * r_bits
    sums = np.cumsum(np.vstack((np.zeros((1, n), dtype=object), xor)), axis=0)
    e = (s_sign - np.vstack((c_bits - r_bits, np.ones((1, n), dtype=object))) + 3 * sums) % q
    while e.shape[0] > 1:  # product tree over the l + 1 terms
        h = e.shape[0] // 2
        prod = await _reduce(Fq, e[:h] * e[h:2 * h])
        e = np.vstack((prod, e[2 * h:]))
    r = _prss_uniform(q, n)
    g = await _open(Fq, e[0] * r)
    g = (g == 0).astype(object)
    hh = (1 - 2 * g) * s_sign + 3
    b = (z + (hh << (l - 1))) * pow(1 << l, -1, q) % q  # [a < 0] in Zq
    # 3. back to Zp
    Rq, Rp = _prss_int((q, p), n, k)
    c = await _open(Fq, b + Rq)
    return sec.field.array((((c - Rp) % p) << sec.frac_length).reshape(shape) % p)


def ltz(a, l: int | None = None):  # noqa: E741
    """[a < 0] elementwise (secure bits, a's type) for |a| < 2^(l - 1 - f); as
    ``mpc.np_sgn(a, l=l, LT=True)`` but in a small field (Protocol LTZ-SMALL above)."""
    rt = _rt()
    l = l or type(a).sectype.bit_length  # noqa: E741
    if _fallback():
        return rt.np_sgn(a, l=l, LT=True)
    return _ltz(a, l)
