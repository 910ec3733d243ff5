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
concatenation drop) and :func:`all_bits` (AND of secret bits by a product tree).

Only for the runtime's default PRSS mode (MPyC's ``--no-prss`` falls back to MPyC's own
products). Inputs must respect the secure type's range, as for MPyC's products.
"""

from __future__ import annotations

import math

import numpy as np

from engine.protocols import runtime as mpcrt

coroutine = mpcrt.runtime_module.Runtime.coroutine
thresha = mpcrt.runtime_module.thresha


def _rt():
    return mpcrt.runtime_module.mpc


def _encode(c, f: int) -> np.ndarray:
    """The public factor(s) c as integers at scale 2^f (object array)."""
    return np.vectorize(lambda v: int(round(v * 2**f)), otypes=[object])(np.asarray(c, float))


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
    for g in (f, *(f + e for e in extra)):
        r1 = rt._np_randoms(field, n, subsets << g).value  # per PRF uniform in [0, 2^g)
        r2 = rt._np_randoms(field, n, 1 << (k + l - g)).value
        parts.append(flat + r1 + (r2 << g) + (1 << (l - 1)))
        shifts.append((g, r2))
    x = np.concatenate(parts)
    if degree2:
        prfs = rt.prfs(field.order)
        x = x + thresha.np_pseudorandom_share_0(field, m, rt.pid, prfs, rt._prss_uci(),
                                                x.size).value
    c = await rt.output(field.array(x % field.modulus), threshold=2 * t if degree2 else t)
    c = np.asarray(c.value, dtype=object)
    out = []
    for i, (g, r2) in enumerate(shifts):
        y = (c[i * n:(i + 1) * n] >> g) - ((1 << (l - 1 - g)) + (subsets - 1) // 2) - r2
        out.append(field.array((y % field.modulus).reshape(shape)))
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


@coroutine
async def _matmul(A, B, extra: int):
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
    out = await _open_trunc(sec.field, raw, True, f, sec.bit_length + f,
                            (extra,) if extra else ())
    return out if extra else out[0]


def matmul(A, B, *, extra: int = 0):
    """A @ B for secure fixed-point arrays (1-D or 2-D), in one round.

    With ``extra`` > 0 returns the pair (A @ B, A @ B * 2^-extra), the second with only
    f - extra fractional bits (a cheaper input for comparisons), from the same opening.
    """
    if _fallback():
        return (A @ B, (A @ B) * 2.0**-extra) if extra else A @ B
    return _matmul(A, B, extra)


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
    return await rt._reshare(field.array(np.asarray(c, dtype=object)))


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

