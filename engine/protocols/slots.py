"""Protocols ROWS and SLOTS of a physical program: row operations and exact sums over the rows.

Every secret vector over the m rows is a :class:`Vec`: this party's Shamir shares (field
p = 2^128 - 173 of SecFxp(64, 32)) of integers R = value * 2^g with a public fraction length g
and a public strict bound |R| < 2^e.  A shared local column c arrives as its SecFxp encoding
round(v 2^(32 - c.bits)), so g = 32 - c.bits and e = 33; an indicator column (0/1) is the bit
times 2^g exactly (divided out exactly where that helps).  Row operations keep R exact
wherever the bound allows:

* add, sub, neg, multiplication by a public constant: local (aligning g by exact shifts);
* mul, and, or, select, abs: the local product of the shares and one resharing (no
  truncation) while e <= E_CAP = 92; above that the product is truncated to 64 bits in the
  same round (PRSS-masked opening, :func:`engine.protocols.fastfxp._open_trunc`, error < 2
  units), operands first shrunk if the raw product would leave that opening's range;
* comparisons (lt, le, eq, ne; the sign in abs): A2B of R + 2^(l-1) in the three-party
  replicated bit sharing (:mod:`engine.protocols.bitshares`), l = e + 1 from the operands'
  public bounds, then its top bit (or an AND tree for equality) and B2A of that one bit: ties
  compare exactly, and no secret random bits are needed (MPyC's ``np_sgn`` otherwise).

Resharing (degree 2t -> t) is GRR on 64-bit words (:func:`reshare_words`): fresh AES-CTR
coefficients, small-integer Lagrange coefficients, one message per pair of parties; products
of shares are computed on words too (:func:`mulmod_words`, p = 2^128 - 173).

Protocol SLOTS: a sum slot of group j is sum_rows prod(slot factors, group j's indicators).
Each term is reduced to at most two vectors: the product of the slot's factors (computed once
per slot, elementwise, exact, memoised by prefix, one resharing per product length) and the
product of the group's indicators (once per group, bits, exact); the sum of one vector is a
local column sum and the sum of a product of two is a local dot product of the shares,
computed exactly on the words in 16-bit limbs with float64 BLAS (as in protocol MOMENTS).  All
dot products are reshared together in one round.  The sums are exact field integers
S = value * 2^g_S (|S| < 2^95); :func:`convert_sums` moves them into the field of the finish
type with MPyC's ``convert`` (one masked opening, statistically hiding).

What each party sees: its own shares, the uniform points of the resharings, and the masked
openings inside the truncations, the comparisons' A2B and the conversion (statistically
hiding, security parameter MPyC's ``sec_param``).  Nothing is opened in the clear.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dialect.errors import InternalError, ProtocolError
from engine.protocols import fastfxp as fx
from engine.protocols import fieldwords as fw
from engine.protocols.prf import prf_words
from engine.protocols.shares import SharedTable

#: SecFxp(64, 32): the fraction bits of a shared column.
COL_FRAC = 32
#: Largest strict bit bound of a row vector kept exact (comparisons need e + 1 + kappa < 128).
E_CAP = 92
#: Bound a truncated vector is brought down to.
E_TRUNC = 64
#: Largest strict bound a value may have where it is truncated (PRSS-masked opening:
#: l + kappa + 2 bits must fit the 128-bit field).
E_TRUNC_MAX = 94
#: Strict bit bound of a slot sum (conversion through SecInt(96) needs |S| < 2^95).
E_SUM = 95
#: 16-bit limbs for the exact dot products on float64 BLAS.
_LIMB = 16


def log2_rows(m: int) -> int:
    """ceil(log2(m + 1)): the bits a public row count m adds to a bound (the brief's L)."""
    return max(0, math.ceil(math.log2(m + 1)))


def _sum_bits(m: int) -> int:
    """Bits a sum of m terms adds to a strict bound: ceil(log2 m)."""
    return 0 if m <= 1 else math.ceil(math.log2(m))


@dataclass
class Vec:
    """A vector over the rows: shares of integers R = value * 2^g, |R| < 2^e (or public)."""

    g: int
    e: int
    bits: int  # public bound of the value: |value| <= 2^bits
    bit: bool = False  # values are 0/1 (then R = bit * 2^g exactly)
    exact: bool = True  # R is the exact value (no truncation on its way)
    ints: np.ndarray | None = None  # (m,) object array of shares mod p
    words: np.ndarray | None = None  # (K, m) uint64 words of the same shares
    public: float | None = None  # a public constant (no shares)
    name: str = ""
    canon: Vec | None = field(default=None, repr=False)  # cached canonical form of a bit

    @property
    def is_public(self) -> bool:
        return self.public is not None


@dataclass
class Ctx:
    """What the row and slot protocols need: the runtime, the field, the row count.

    In a chunked run (:func:`engine.protocols.program.run_program` on a
    :class:`~engine.protocols.shares.ChunkedTable`) ``m`` is the chunk's rows and ``total``
    the table's: the sums' bounds use ``total``, and a public sum (a count) is contributed
    whole by the ``first`` chunk and zero by the others.
    """

    rt: Any
    field: Any  # the finite field of SecFxp(64, 32)
    m: int
    total: int | None = None
    first: bool = True
    p: int = field(init=False)

    def __post_init__(self) -> None:
        self.p = self.field.order


def ints_of(ctx: Ctx, v: Vec) -> np.ndarray:
    """The shares of ``v`` as an object array of ints mod p (cached)."""
    if v.ints is None:
        v.ints = fw.words_to_ints(v.words)
    return v.ints


def words_of(ctx: Ctx, v: Vec) -> np.ndarray:
    """The shares of ``v`` as (K, m) words (cached)."""
    if v.words is None:
        v.words = fw.ints_to_words(v.ints, ctx.p)
    return v.words


def canonical_bit(ctx: Ctx, v: Vec) -> Vec:
    """A 0/1 vector with g = 0 (exact division of R = b 2^g by 2^g, local)."""
    if not v.bit or v.g == 0 or v.is_public:
        return v
    if v.canon is None:
        inv = pow(pow(2, v.g, ctx.p), -1, ctx.p)
        if v.ints is None and fast_field(ctx.p):
            words = mulmod_words(v.words, fw.const(inv, v.words), ctx.p)
            v.canon = Vec(0, 1, 0, bit=True, words=words, name=v.name)
        else:
            v.canon = Vec(0, 1, 0, bit=True, ints=ints_of(ctx, v) * inv % ctx.p, name=v.name)
    return v.canon


def column_vec(col, words: np.ndarray) -> Vec:
    """The Vec of a shared local column (its SecFxp words, normalised by ``col.bits``)."""
    g = COL_FRAC - col.bits
    if col.indicator:
        return Vec(g, g + 1, 0, bit=True, words=words, name=col.name)
    return Vec(g, COL_FRAC + 1, col.bits, words=words, name=col.name)


def public_vec(c: float, bits: int | None = None, name: str = "") -> Vec:
    c = float(c)
    b = bits if bits is not None else (math.ceil(math.log2(abs(c))) if c else 0)
    return Vec(0, 0, b, bit=c in (0.0, 1.0), public=c, name=name)


def frac_bits(c: float) -> int:
    """Fraction bits to hold public c: exact if c is dyadic with few bits, else 32 significant."""
    if c == 0:
        return 0
    for k in range(0, 40):
        if float(c * 2**k).is_integer():
            return k
    return max(0, COL_FRAC - math.floor(math.log2(abs(c))))


def raw_at(ctx: Ctx, v: Vec, g: int):
    """R of ``v`` at fraction length ``g`` >= v.g (exact shift; a public one is rounded)."""
    if v.is_public:
        return round(v.public * 2**g) if g >= 0 else round(v.public / 2**-g)
    if g < v.g:
        raise InternalError("raw_at only shifts up")
    r = ints_of(ctx, v)
    return r if g == v.g else r * (1 << (g - v.g)) % ctx.p


def e_at(v: Vec, g: int) -> int:
    if v.is_public:
        c = abs(round(v.public * 2.0**g))
        return c.bit_length()
    return v.e + g - v.g


def align(ctx: Ctx, vs: list[Vec]) -> tuple[list, int, list[int]]:
    """The operands at one fraction length g: (raws, g, strict bounds)."""
    secret = [v for v in vs if not v.is_public]
    g = max(v.g for v in secret)
    for v in vs:
        if v.is_public:
            want = frac_bits(v.public)
            top = max(e_at(w, want) for w in secret)
            if want > g and top <= E_CAP:
                g = want
    return [raw_at(ctx, v, g) for v in vs], g, [e_at(v, g) for v in vs]


def _secret(ctx: Ctx, raw, g: int, e: int, bits: int, *, bit: bool = False,
            exact: bool = True, name: str = "") -> Vec:
    raw = np.asarray(raw, dtype=object)
    if raw.ndim == 0:
        raw = np.full(ctx.m, raw, dtype=object)
    return Vec(g, e, bits, bit=bit, exact=exact, ints=raw % ctx.p, name=name)


async def reshare(ctx: Ctx, raw: np.ndarray) -> np.ndarray:
    """Degree-2t shares (ints) -> degree-t shares (ints) of the same values, one round."""
    raw = np.asarray(raw, dtype=object)
    if raw.size == 0 or ctx.rt.threshold == 0:
        return raw % ctx.p
    words = await reshare_words(ctx, fw.ints_to_words(raw.reshape(-1) % ctx.p, ctx.p))
    return fw.words_to_ints(words).reshape(raw.shape)


async def reshare_words(ctx: Ctx, h: np.ndarray) -> np.ndarray:
    """GRR resharing on 64-bit words: degree-2t shares (K, n) -> degree-t shares, one round.

    Each of the parties 0..2t shares its share h_i afresh, h_i + sum_k c_ik x^k with its own
    uniform coefficients (the AES PRF under a fresh 256-bit key: vectorised, unlike MPyC's
    per-element ``secrets.randbelow``), and sends party j its point (x = j + 1) as words;
    party j combines the 2t + 1 points with the Lagrange coefficients at 0 of the points
    1..2t+1, which are the small integers (-1)^(i+1) C(2t+1, i).  Each received point is
    uniform and independent of the sender's share (t = 1: one uniform coefficient), as in
    MPyC's ``_reshare``; all arithmetic stays on words (no Python int per element).
    """
    rt = ctx.rt
    p = ctx.p
    m, t, me = len(rt.parties), rt.threshold, rt.pid
    if t == 0 or h.shape[-1] == 0:
        return h
    n = h.shape[-1]
    senders = range(2 * t + 1)
    points: dict[int, np.ndarray] = {}
    if me in senders:
        key = os.urandom(32)
        coef = [prf_words(key + k.to_bytes(4, "big"), np.arange(n), p) for k in range(t)]
        for j in range(m):
            pt = h
            for k, c in enumerate(coef):
                pt = fw.add_mod(pt, fw.mul_small_mod(c, (j + 1) ** (k + 1), p), p)
            points[j] = pt
    pending = []
    for i in senders:
        for j in range(m):
            if i != j:
                msg = points[j] if me == i else None
                pending.append((i, j, rt.transfer(msg, senders=[i], receivers=[j])))
    got = {me: points[me]} if me in senders else {}
    for i, j, fut in pending:
        out = await fut
        if me == j:
            got[i] = _checked_words(out[0], h.shape, i)
    new = None
    for i in senders:
        lam = (-1) ** i * math.comb(2 * t + 1, i + 1)
        term = fw.mul_small_mod(got[i], lam, p)
        new = term if new is None else fw.add_mod(new, term, p)
    return new


def _checked_words(x, shape: tuple[int, int], sender: int) -> np.ndarray:
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint64 and x.shape == shape):
        raise ProtocolError(f"malformed resharing message from party {sender}")
    return x


async def truncate(ctx: Ctx, raw: np.ndarray, shift: int, l: int,  # noqa: E741
                   degree2: bool) -> np.ndarray:
    """Shares of about raw / 2^shift (error < 2 units) for |raw| < 2^(l-1), one opening."""
    if shift > 0 and l + ctx.rt.options.sec_param + 2 > ctx.p.bit_length() - 1:
        raise InternalError(f"a truncation of {l}-bit values exceeds the field")
    if shift <= 0:
        out = np.asarray(raw, dtype=object) * (1 << -shift)
        return (await reshare(ctx, out)) if degree2 else out % ctx.p
    rt = ctx.rt
    if rt.options.no_prss:
        if degree2:
            raw = await reshare(ctx, raw)
        st = rt.SecInt(l, p=ctx.p)
        y = rt.np_trunc(st.array(ctx.field.array(np.asarray(raw, dtype=object) % ctx.p)),
                        f=shift, l=l)
        return np.asarray((await rt.gather(y)).value, dtype=object)
    flat = ctx.field.array(np.asarray(raw, dtype=object).reshape(-1) % ctx.p)
    (out,) = await fx._open_trunc(ctx.field, flat.value, degree2, shift, l)
    return np.asarray(out.value, dtype=object)


async def multiply(ctx: Ctx, a: Vec, b: Vec, bits: int | None = None, name: str = "") -> Vec:
    """a * b elementwise: exact (local product, one resharing) while the bound stays within
    E_CAP; else truncated to E_TRUNC bits in the same round, operands first shrunk if even
    the product would not fit the truncation's range."""
    if a.is_public and b.is_public:
        return public_vec(a.public * b.public, bits, name)
    if a.is_public or b.is_public:
        return await _scale(ctx, b if a.is_public else a, a if a.is_public else b, bits, name)
    a, b = canonical_bit(ctx, a), canonical_bit(ctx, b)
    if a.bit and b.bit:
        if fast_field(ctx.p) and ctx.rt.threshold > 0:  # on words: no conversion to ints
            w = await reshare_words(ctx, _product_words(ctx, a, b))
            return Vec(0, 1, 0, bit=True, words=w, name=name)
        raw = await reshare(ctx, ints_of(ctx, a) * ints_of(ctx, b))
        return _secret(ctx, raw, 0, 1, 0, bit=True, name=name)
    e = _capped(prod_e(a, b), bits, a.g + b.g)
    if e > E_TRUNC_MAX:  # the raw product would leave the truncation's range
        a, b = await fit_pair(ctx, a, b, E_TRUNC)
        e = _capped(prod_e(a, b), bits, a.g + b.g)
    g = a.g + b.g
    raw = ints_of(ctx, a) * ints_of(ctx, b)
    if e > E_CAP:
        shift = e - E_TRUNC
        out = await truncate(ctx, raw, shift, e + 1, True)
        return _secret(ctx, out, g - shift, E_TRUNC + 1, _bits(bits, a, b), exact=False,
                       name=name)
    return _secret(ctx, await reshare(ctx, raw), g, e, _bits(bits, a, b),
                   exact=a.exact and b.exact, name=name)


async def _scale(ctx: Ctx, s: Vec, c: Vec, bits: int | None, name: str) -> Vec:
    """Secret s times public c: local (a truncation only if the bound leaves E_CAP)."""
    k = frac_bits(c.public)
    cint = round(c.public * 2**k)
    width = max(1, abs(cint).bit_length())
    if s.e + width > E_TRUNC_MAX:
        s = await shrink(ctx, s, E_TRUNC - width)
    g = s.g + k
    e = _capped(s.e + width, bits, g)
    raw = ints_of(ctx, s) * cint
    if e > E_CAP:
        shift = e - E_TRUNC
        return _secret(ctx, await truncate(ctx, raw, shift, e + 1, False), g - shift,
                       E_TRUNC + 1, _bits(bits, s, c), exact=False, name=name)
    return _secret(ctx, raw, g, e, _bits(bits, s, c), bit=s.bit and c.bit, exact=s.exact,
                   name=name)


def _capped(e: int, bits: int | None, g: int) -> int:
    """A product's strict bound, tightened by the planner's bound 2^bits of its value."""
    return e if bits is None else min(e, bits + g + 1)


async def shrink(ctx: Ctx, v: Vec, e_max: int) -> Vec:
    """``v`` with |R| < 2^e_max: truncated by enough bits (one round; inexact)."""
    if v.bit or v.is_public or v.e <= e_max:
        return v
    shift = v.e - e_max + 1  # the rounded |R| / 2^shift + 2 stays below 2^e_max
    out = await truncate(ctx, ints_of(ctx, v), shift, v.e + 1, False)
    return Vec(v.g - shift, e_max, v.bits, exact=False, ints=out, name=v.name)


async def fit_pair(ctx: Ctx, a: Vec, b: Vec, total: int) -> tuple[Vec, Vec]:
    """(a, b) shrunk so that prod_e(a, b) <= total (the larger one first)."""
    if prod_e(a, b) <= total:
        return a, b
    if a.bit or b.bit:
        return (a, await shrink(ctx, b, total)) if a.bit else (await shrink(ctx, a, total), b)
    swap = a.e < b.e
    big, small = (b, a) if swap else (a, b)
    big = await shrink(ctx, big, max(total - small.e, (total + 1) // 2))
    small = await shrink(ctx, small, total - big.e)
    return (small, big) if swap else (big, small)


def prod_e(a: Vec, b: Vec) -> int:
    """Strict bound of the product of canonical vectors (a 0/1 factor adds nothing)."""
    if a.bit and b.bit:
        return 1
    if a.bit or b.bit:
        return b.e if a.bit else a.e
    return a.e + b.e


def _bits(bits: int | None, a: Vec, b: Vec) -> int:
    return bits if bits is not None else a.bits + b.bits


def linear(ctx: Ctx, terms: list[tuple[int, Vec]], bits: int | None, name: str = "") -> Vec:
    """sum of c_i v_i for small public integers c_i (local)."""
    vs = [v for _, v in terms]
    if all(v.is_public for v in vs):
        return public_vec(sum(c * v.public for c, v in terms), bits, name)
    raws, g, es = align(ctx, vs)
    total = sum(c * r for (c, _), r in zip(terms, raws, strict=True))
    e = max(es[i] + (abs(c) - 1).bit_length() for i, (c, _) in enumerate(terms))
    e += max(0, math.ceil(math.log2(len(terms))))
    if bits is not None:
        e = min(e, bits + g + 1)
    b = bits if bits is not None else max(v.bits for v in vs) + 1
    return _secret(ctx, total, g, e, b, exact=all(v.exact for v in vs), name=name)


async def sign_test(ctx: Ctx, d: Vec, mode: str, name: str = "") -> Vec:
    """[d < 0] (mode "LT") or [d == 0] (mode "EQ") as a 0/1 vector, exact on R with the bit
    length l = e + 1 of its public bound.

    Three parties (threshold 1, PRSS) or MPyC's one-party runtime: A2B of R + 2^(l-1) in the
    replicated bit sharing (:mod:`engine.protocols.bitshares`: one masked opening, an adder of
    ~l (4 + log2 l) bit ANDs), its top bit (LT) or an AND tree over its bits (EQ), and B2A of
    the one bit: no secret random bits.  Otherwise MPyC's ``np_sgn`` (l + 1 random bits).
    """
    if d.is_public:
        v = d.public < 0 if mode == "LT" else d.public == 0
        return public_vec(float(v), 0, name)
    rt = ctx.rt
    if d.e > E_TRUNC_MAX - 1:  # beyond the comparisons' range: compare a rounded value
        d = await shrink(ctx, d, E_TRUNC_MAX - 1)
    l = max(2, d.e + 1)  # noqa: E741  (-2^(l-1) <= R < 2^(l-1))
    st = rt.SecInt(l + 1, p=ctx.p)
    if bit_protocol(rt):
        shares = await sign_bits(ctx, st, ints_of(ctx, d), l, mode)
    else:
        arr = st.array(ctx.field.array(ints_of(ctx, d)))
        out = rt.np_sgn(arr, l=l, LT=mode == "LT", EQ=mode == "EQ")
        shares = np.asarray((await rt.gather(out)).value, dtype=object)
    return Vec(0, 1, 0, bit=True, ints=shares, name=name)


def bit_protocol(rt) -> bool:
    """Whether the bit-sharing protocols apply (three parties, t = 1, PRSS; or one party)."""
    m = len(rt.parties)
    return m == 1 or (m == 3 and rt.threshold == 1 and not rt.options.no_prss)


async def sign_bits(ctx: Ctx, st, r: np.ndarray, l: int, mode: str) -> np.ndarray:  # noqa: E741
    """Shares of [r < 0] / [r == 0] for shares r of integers |r| < 2^(l-1) (bit sharing)."""
    from engine.protocols import bitshares as bs

    net = bs.Net(ctx.rt)
    x = ctx.field.array((r + (1 << (l - 1))) % ctx.p)  # in [0, 2^l)
    X = await bs.a2b(net, st.array, x, l, l)
    if mode == "LT":
        bit = net.not_(X[l - 1:l])  # x < 2^(l-1)
    else:  # x == 2^(l-1): every bit equals that pattern's
        pattern = np.zeros((l,) + X.shape[1:], dtype=bool)
        pattern[l - 1] = True
        bit = (await bs.all_(net, net.not_(net.xor_pub(X, pattern)))).expand(0)
    out = await bs.b2a(net, st.array, bit, np.array([[1]], dtype=object))
    return np.asarray(out.value, dtype=object).reshape(-1)


# --- products on words (p = 2^128 - c) ----------------------------------------------------------

_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def fast_field(p: int) -> bool:
    """Whether :func:`mulmod_words` applies (the SecFxp(64, 32) field 2^128 - 173 does)."""
    return p.bit_length() == 128 and (1 << 128) - p < 1 << 16


def _limbs(x: np.ndarray) -> list[np.ndarray]:
    return [x[0] & _M32, x[0] >> _S32, x[1] & _M32, x[1] >> _S32]

def _carry(cols: list[np.ndarray]) -> list[np.ndarray]:
    for k in range(len(cols) - 1):
        cols[k + 1] = cols[k + 1] + (cols[k] >> _S32)
        cols[k] = cols[k] & _M32
    return cols

def mulmod_words(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """a * b mod p on (2, ...) words for p = 2^128 - c, c < 2^16 (broadcasting): 32-bit limb
    products (each < 2^64, column sums < 2^35), then 2^128 = c folds; no Python ints."""
    c = (1 << 128) - p
    A, B = _limbs(a), _limbs(b)
    shape = np.broadcast_shapes(a.shape[1:], b.shape[1:])
    cols = [np.zeros(shape, dtype=np.uint64) for _ in range(9)]
    for i in range(4):
        for j in range(4):
            pr = A[i] * B[j]
            cols[i + j] += pr & _M32
            cols[i + j + 1] += pr >> _S32
    cols = _carry(cols)
    cc = np.uint64(c)
    r = [cols[k] + cc * cols[k + 4] for k in range(4)] + [np.zeros(shape, dtype=np.uint64)]
    r = _carry(r)
    for _ in range(2):
        top = r[4]
        r[4] = np.zeros(shape, dtype=np.uint64)
        r[0] = r[0] + cc * top
        r = _carry(r)
    # r < 2^128 now; subtract p once if r >= p (r + c >= 2^128)
    s = [r[0] + cc, r[1], r[2], r[3], np.zeros(shape, dtype=np.uint64)]
    s = _carry(s)
    ge = s[4] > 0
    out = [np.where(ge, s[k], r[k]) for k in range(4)]
    return np.stack([out[0] | (out[1] << _S32), out[2] | (out[3] << _S32)])


# --- the row program ------------------------------------------------------------------------

def _arg(vecs: dict[str, Vec], a) -> Vec:
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return public_vec(a)
    if a not in vecs:
        raise InternalError(f"row op refers to unknown {a!r}")
    return vecs[a]


async def row_op(ctx: Ctx, op, vecs: dict[str, Vec]) -> Vec:
    """One row op of the program on the m rows (see the module docstring)."""
    name, kind, bits = op.out, op.op, op.bits
    if kind == "const":
        return public_vec(float(op.args[0]), bits, name)
    args = [_arg(vecs, a) for a in op.args]
    if kind in ("add", "sub"):
        return linear(ctx, [(1, args[0]), (1 if kind == "add" else -1, args[1])], bits, name)
    if kind == "neg":
        return linear(ctx, [(-1, args[0])], bits, name)
    if kind == "mul":
        return await multiply(ctx, args[0], args[1], bits, name)
    if kind == "abs":
        a = args[0]
        s = await sign_test(ctx, a, "LT")
        flip = linear(ctx, [(1, public_vec(1.0)), (-2, s)], 0)
        out = await multiply(ctx, flip, a, bits, name)
        out.bits = a.bits if bits is None else bits
        return out
    if kind in ("lt", "le", "eq", "ne"):
        a, b = args
        if kind == "le":  # a <= b  <=>  not (b < a)
            a, b = b, a
        d = linear(ctx, [(1, a), (-1, b)], None)
        t = await sign_test(ctx, d, "EQ" if kind in ("eq", "ne") else "LT", name)
        if kind in ("le", "ne"):
            t = _not(ctx, t, name)
        return t
    if kind == "not":
        return _not(ctx, args[0], name)
    if kind == "and":
        return await multiply(ctx, args[0], args[1], 0, name)
    if kind == "or":
        a, b = args
        ab = await multiply(ctx, a, b, 0)
        out = linear(ctx, [(1, canonical_bit(ctx, a)), (1, canonical_bit(ctx, b)), (-1, ab)],
                     0, name)
        out.bit, out.e = True, 1
        return out
    if kind == "select":
        c, x, y = args
        diff = linear(ctx, [(1, x), (-1, y)], None)
        prod = await multiply(ctx, c, diff, None)
        out = linear(ctx, [(1, y), (1, prod)], bits, name)
        out.bit = x.bit and y.bit
        if out.bit:
            out = canonical_bit(ctx, out) if out.g else out
            out.e = max(1, out.g + 1)
        return out
    raise InternalError(f"unknown row op {kind!r}")


def _not(ctx: Ctx, a: Vec, name: str = "") -> Vec:
    a = canonical_bit(ctx, a)
    out = linear(ctx, [(1, public_vec(1.0)), (-1, a)], 0, name)
    out.bit, out.e, out.bits = True, 1, 0
    return out


def base_vecs(plan, program, table: SharedTable | None) -> dict[str, Vec]:
    """The Vec of every local column, from the shared table (columns in the scans' order)."""
    layout = [(s.party, c.lower()) for s in plan.scans for c in s.columns]
    out: dict[str, Vec] = {}
    for col in program.local:
        key = (col.party, col.name.lower())
        if key not in layout or table is None:
            raise InternalError(f"local column {col.name} is not in the shared table")
        out[col.name] = column_vec(col, table.columns[layout.index(key)])
    return out


async def run_rows(ctx: Ctx, program, vecs: dict[str, Vec]) -> dict[str, Vec]:
    """Protocol ROWS: every row op in order (vectorised over the m rows)."""
    for op in program.rows:
        vecs[op.out] = await row_op(ctx, op, vecs)
    return vecs


# --- sums -------------------------------------------------------------------------------------

@dataclass
class Sum:
    """A slot's exact sum for one group: shares of S = value * 2^g, |S| < 2^e."""

    share: int
    g: int
    e: int
    exact: bool


def add_sums(ctx: Ctx, a: dict[Any, Sum], b: dict[Any, Sum]) -> dict[Any, Sum]:
    """The slot sums of two chunks of rows added (shares mod p, local).  Every chunk's sum of
    a slot has the same fraction length and bound, and that bound covers the whole table
    (:class:`Ctx` ``total``)."""
    out = {}
    for key, x in a.items():
        y = b[key]
        if (x.g, x.e) != (y.g, y.e):
            raise InternalError(f"chunk sums of {key} differ in scale")
        out[key] = Sum((x.share + y.share) % ctx.p, x.g, x.e, x.exact and y.exact)
    return out


def _order(vs: list[Vec]) -> list[Vec]:
    """Canonical factor order: bits first, then by name (so prefixes are shared)."""
    return sorted(vs, key=lambda v: (not v.bit, v.name))


class Products:
    """Elementwise products of vectors, memoised by the multiset of names, built level by
    level with one resharing per level."""

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.done: dict[tuple[str, ...], Vec] = {}

    @staticmethod
    def key(vs: list[Vec]) -> tuple[str, ...]:
        return tuple(v.name for v in _order(vs))

    def want(self, vs: list[Vec], todo: dict[tuple[str, ...], list[Vec]]) -> None:
        vs = _order(vs)
        for n in range(2, len(vs) + 1):
            k = self.key(vs[:n])
            if k not in self.done:
                todo.setdefault(k, vs[:n])

    async def build(self, todo: dict[tuple[str, ...], list[Vec]]) -> None:
        for n in sorted({len(k) for k in todo}):
            level = [(k, vs) for k, vs in todo.items() if len(k) == n and k not in self.done]
            await self._level(level)

    async def _level(self, level) -> None:
        """All products of one length: prefix product times the last factor, one round."""
        ctx = self.ctx
        raws, meta, later = [], [], []
        for k, vs in level:
            a = self.done[k[:-1]] if len(vs) > 2 else vs[0]
            b = vs[-1]
            if a.is_public or b.is_public:
                later.append((k, a, b))
                continue
            a, b = canonical_bit(ctx, a), canonical_bit(ctx, b)
            e = prod_e(a, b)
            if e > E_CAP:
                later.append((k, a, b))
                continue
            raws.append(_product_words(ctx, a, b))
            meta.append((k, a, b, e))
        if raws:
            m = ctx.m
            flat = await reshare_words(ctx, np.concatenate(raws, axis=1))
            for i, (k, a, b, e) in enumerate(meta):
                w = np.ascontiguousarray(flat[:, i * m:(i + 1) * m])
                self.done[k] = Vec(a.g + b.g, e, a.bits + b.bits, bit=a.bit and b.bit,
                                   exact=a.exact and b.exact, words=w,
                                   name="*".join(k))
        for k, a, b in later:
            v = await multiply(ctx, a, b)
            v.name = "*".join(k)
            self.done[k] = v

    def get(self, vs: list[Vec]) -> Vec:
        return vs[0] if len(vs) == 1 else self.done[self.key(vs)]


def _product_words(ctx: Ctx, a: Vec, b: Vec) -> np.ndarray:
    """The local (degree 2t) product of two vectors' shares as words."""
    if fast_field(ctx.p):
        return mulmod_words(words_of(ctx, a), words_of(ctx, b), ctx.p)
    return fw.ints_to_words(ints_of(ctx, a) * ints_of(ctx, b) % ctx.p, ctx.p)


def _terms(factors: list[Vec], inds: list[Vec]) -> tuple[list[Vec], list[list[Vec]]]:
    """A term's vectors reduced to at most two (each a product to build)."""
    if len(factors) + len(inds) <= 2:
        return _order(factors + inds), []  # a 0/1 vector first: lefts are the indicators
    if not inds:
        f = _order(factors)
        return [], [f[:-1], f[-1:]]
    if not factors:
        i = _order(inds)
        return [], [i[:-1], i[-1:]]
    return [], [inds, factors]


async def slot_sums(ctx: Ctx, program, vecs: dict[str, Vec], *, whole: set[str] = frozenset()
                    ) -> dict[tuple[str, int], Sum]:
    """Protocol SLOTS: every sum slot for every group (key (slot, group index)); slots named in
    ``whole`` are also summed over all rows, ignoring the groups (key (slot, -1))."""
    ctx_terms: list[tuple[tuple[str, int], list[Vec], bool]] = []
    prods = Products(ctx)
    todo: dict[tuple[str, ...], list[Vec]] = {}
    specs = []
    for s in program.slots:
        if s.kind != "sum":
            continue
        factors = [_arg(vecs, f) for f in s.factors]
        groups = [(j, [_arg(vecs, n) for n in grp.indicators])
                  for j, grp in enumerate(program.groups)]
        if s.name in whole:
            groups.append((-1, []))
        for j, inds in groups:
            direct, parts = _terms(factors, inds)
            for part in parts:
                if len(part) > 1:
                    prods.want(part, todo)
            specs.append(((s.name, j), direct, parts, s.integral))
    await prods.build(todo)
    for key, direct, parts, integral in specs:
        vs = direct if not parts else [prods.get(p) for p in parts]
        ctx_terms.append((key, vs, integral))
    return await _sums(ctx, ctx_terms, prods)


async def _sums(ctx: Ctx, terms, prods: Products) -> dict[tuple[str, int], Sum]:
    """Sums of one vector (local), of two (local dot products, one resharing), or public."""
    m = ctx.m if ctx.total is None else ctx.total  # the public sums' rows
    L = _sum_bits(m)
    out: dict[tuple[str, int], Sum] = {}
    pairs: list[tuple[tuple[str, int], Vec, Vec]] = []
    singles: list[tuple[tuple[str, int], Vec]] = []
    for key, vs, integral in terms:
        vs = [v for v in vs if not (v.is_public and v.public == 1.0)]
        publics = [v for v in vs if v.is_public]
        vs = [v for v in vs if not v.is_public]
        c = math.prod(v.public for v in publics) if publics else 1.0
        if publics and c != 1.0:
            if not vs:
                out[key] = _public_sum(ctx, c * m)
                continue
            vs[0] = await multiply(ctx, vs[0], public_vec(c))
        if not vs:
            out[key] = _public_sum(ctx, m)
        elif len(vs) == 1:
            singles.append((key, vs[0]))
        else:
            a, b = vs
            a = canonical_bit(ctx, a) if a.bit and a.ints is not None else a
            b = canonical_bit(ctx, b) if b.bit and b.ints is not None else b
            if a.e + b.e + L >= ctx.p.bit_length() - 2:  # the exact division needs |S| < p/2
                a, b = canonical_bit(ctx, a), canonical_bit(ctx, b)
            if _pair_e(a, b) + L > E_SUM:
                a, b = canonical_bit(ctx, a), canonical_bit(ctx, b)
                if integral and a.exact and b.exact and a.e + b.e <= ctx.p.bit_length() - 3:
                    singles.append((key, await _fold_pair(ctx, a, b)))
                    continue
                a, b = await fit_pair(ctx, a, b, E_SUM - L)
            pairs.append((key, a, b))
    for key, v in singles:
        total = int(fw.sum_mod(words_of(ctx, v), ctx.p))
        g, e = _div_bit(ctx, v)
        out[key] = Sum(total * _inv2(ctx, v.g - g) % ctx.p, g, e + L, v.exact)
    if pairs:
        dots = dot_products(ctx, [(a, b) for _, a, b in pairs])
        dots = await reshare(ctx, np.array(dots, dtype=object))
        for (key, a, b), s in zip(pairs, dots, strict=True):
            ga, ea = _div_bit(ctx, a)
            gb, eb = _div_bit(ctx, b)
            div = (a.g - ga) + (b.g - gb)
            e = (ea + eb if not (a.bit or b.bit) else (eb if a.bit else ea)) + L
            out[key] = Sum(int(s) * _inv2(ctx, div) % ctx.p, ga + gb, e, a.exact and b.exact)
    return out


def _pair_e(a: Vec, b: Vec) -> int:
    if a.bit or b.bit:
        return (b.e - b.g * b.bit) if a.bit else (a.e - a.g * a.bit)
    return a.e + b.e


def _div_bit(ctx: Ctx, v: Vec) -> tuple[int, int]:
    """(g, e) of ``v`` once a bit vector's exact factor 2^g is divided out of a sum."""
    return (0, 1) if v.bit else (v.g, v.e)


def _inv2(ctx: Ctx, k: int) -> int:
    return pow(pow(2, k, ctx.p), -1, ctx.p) if k else 1


def _public_sum(ctx: Ctx, value: float) -> Sum:
    """A public sum over the table (``value``); in a chunked run only the first chunk
    contributes it (the others 0 with the same fraction length and bound)."""
    k = frac_bits(value)
    v = round(value * 2**k) if ctx.first else 0
    return Sum(v % ctx.p, k, max(1, abs(round(value * 2**k)).bit_length()), True)


async def _fold_pair(ctx: Ctx, a: Vec, b: Vec) -> Vec:
    """The rows' products of an integral slot too large to sum as they are: exact (one
    resharing), then divided exactly by 2^g (each row's product is an integer)."""
    raw = await reshare(ctx, ints_of(ctx, a) * ints_of(ctx, b))
    bits = a.bits + b.bits
    return Vec(0, bits + 1, bits, ints=raw * _inv2(ctx, a.g + b.g) % ctx.p, name="fold")


def dot_products(ctx: Ctx, pairs: list[tuple[Vec, Vec]]) -> list[int]:
    """sum_rows a * b mod p of the local shares for every pair (exact; degree 2t shares)."""
    lefts: dict[int, Vec] = {}
    rights: dict[int, Vec] = {}
    for a, b in pairs:
        lefts.setdefault(id(a), a)
        rights.setdefault(id(b), b)
    li = {k: i for i, k in enumerate(lefts)}
    ri = {k: i for i, k in enumerate(rights)}
    A = [words_of(ctx, v) for v in lefts.values()]
    B = [words_of(ctx, v) for v in rights.values()]
    M = limb_products(A, B, ctx.p)
    return [int(M[li[id(a)], ri[id(b)]]) for a, b in pairs]


def limb_products(A: list[np.ndarray], B: list[np.ndarray], p: int) -> np.ndarray:
    """(len A, len B) matrix of sum_rows a * b mod p for word columns a in A, b in B, exactly.

    16-bit limbs on float64 BLAS in row blocks (< 2^20 rows: every limb product sum < 2^52),
    on one BLAS thread where threadpoolctl is installed (three party processes on one host
    otherwise spin each other's BLAS threads: 10x slower).
    """
    with _one_blas_thread():
        return _limb_products(A, B, p)


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _limb_products(A: list[np.ndarray], B: list[np.ndarray], p: int) -> np.ndarray:
    k, m = A[0].shape
    nl = 4 * k
    na, nb = len(A), len(B)
    rows = max(1, min(1 << (52 - 2 * _LIMB), (1 << 22) // (nl * (na + nb))))
    acc = np.zeros((na * nl, nb * nl), dtype=object)
    WA = np.empty((rows, na, nl), dtype=np.float64)
    WB = np.empty((rows, nb, nl), dtype=np.float64)
    for start in range(0, m, rows):
        n = min(rows, m - start)
        for W, cols in ((WA, A), (WB, B)):
            for j, c in enumerate(cols):  # (n, K) words -> (n, 4K) limbs, least significant first
                W[:n, j, :] = np.ascontiguousarray(c[:, start:start + n].T).view(np.uint16)
        prod = WA[:n].reshape(n, na * nl).T @ WB[:n].reshape(n, nb * nl)
        acc += prod.astype(np.int64).astype(object)
    acc = acc.reshape(na, nl, nb, nl)
    out = np.zeros((na, nb), dtype=object)
    for x in range(nl):
        for y in range(nl):
            out = out + acc[:, x, :, y] * (1 << (_LIMB * (x + y)))
    return out % p


async def convert_sums(rt, sums: list[Sum], field1, s2) -> list[int]:
    """The sums' shares moved into the field of ``s2`` (MPyC ``convert``, one masked opening;
    requires |S| < 2^95)."""
    if not sums:
        return []
    for s in sums:
        if s.e > E_SUM:
            raise InternalError(f"a slot sum of {s.e} bits exceeds the conversion range")
    s1 = rt.SecInt(field1.order.bit_length() - rt.options.sec_param - 2, p=field1.order)
    conv = rt.convert([s1(s1.field(s.share)) for s in sums], s2)
    conv = await rt.gather(conv)
    return [int(c.value) for c in conv]
