"""Protocol FINISH: the program's finish ops, vectorised over the G groups, in SecFxp(96, 48).

The exact slot sums arrive (:func:`engine.protocols.slots.convert_sums`) in the field of the
solver type SecFxp(96, 48) (p ~ 2^176), where every finish value is an :class:`FV`: shares of
raw = v / 2^E * 2^f, v normalised by its public bound 2^E (E = bits + rows_pow L,
L = ceil(log2(m + 1))), with a public fraction length f <= 64 (0 for 0/1 values).  Scaling by
a public power of two only moves f (free) until f would exceed 64; products are exact (a 0/1
factor, a public integer, or a product that fits 64 fraction bits: one resharing at most) or
one-round (local product, PRSS-masked truncation to 64 fraction bits, error < 2 units of
2^-64 of the bound).  SecFxp(64, 32) would leave 2^-32 of each bound, which a small group's
AVG (its sum normalised by 2^(bits + L)) or a variance's cancellation cannot afford.  Exact
ops (``FinishOp.exact_unit``) are an :class:`XV`: shares of the integer N, value N 2^u.

Protocol DIV, div(a, b) with the public floor 2^fb <= |b| where b != 0: b is scaled to
b'' = b 2^(hi - E_b), |b''| <= 2^hi (D = E_b - fb, hi = min(D, 40)), resolved down to
2^lo: lo = hi - D for an exact denominator (an integer count is 0 or >= 1), hi - 45 for a
computed one (a product of variances may fall below its planner floor while the quotient
stays bounded); one batched comparison of b'' (4 bits below 2^lo; exact for integers) gives
its sign, the zero bit and a thermometer of its exponent in steps of 3 bits, which scale |b''|
(b = 0 replaced by 2^lo) into x in [1/8, 1); then a minimax linear start and six Newton steps
for 1/x (relative error < 2^-46) and two products with the numerator.  Every division by the
same denominator shares that work.  b = 0 yields a finite value that the program's NULL guard
replaces.  Non-negative denominators (counts and sums of them) skip the sign.

Comparisons work on the exact difference at a common normalisation (the larger bound scaled
up exactly), bit length f + the bound difference + 3, less the trailing zero bits an exact
value is known to have (an integer count normalised by 2^L at f = 48 has 48 - L); the values
move to the 128-bit field (``convert``) for A2B in the bit sharing and back (MPyC's ``np_sgn``
beyond 90 bits or without three parties).  ``is_zero`` is the exact equality test on exact
values (counts, integral sums and their exact combinations) and |v| < 2^(E - 40) on computed
ones (noise floor ~2^(E - 60)).

Every op is launched in program order as an MPyC coroutine, so independent ops overlap their
rounds (MPyC's program counters keep the parties' messages in step).

What each party sees: only masked openings inside products, truncations, conversions and
comparisons.
"""

from __future__ import annotations

import math
from asyncio import Future
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np

from dialect.errors import InternalError
from engine.protocols import fastfxp as fx
from engine.protocols import slots as sl

coroutine = fx.coroutine

FRAC = 48
F_MAX = 64
#: Largest exponent a denominator is scaled to (|b''| <= 2^HI_MAX).
HI_MAX = 40
#: Range below 2^hi a nonzero denominator is resolved over.
RANGE_MAX = 45
#: Thermometer step (bits) of DIV and its linear start on [2^-STEP, 1].
STEP = 3
NEWTON = 6
#: Bits below 2^lo kept for DIV's comparisons.
DIV_GUARD = 4
#: is_zero of a computed value: |v| < 2^(E - ZERO_BITS).
ZERO_BITS = 40
#: Headroom bits of comparisons (values may exceed their bound by rounding).
CMP_MARGIN = 3
#: Largest bit length compared in the 128-bit field's bit sharing (A2B masks: l + kappa + 2).
BIT_CMP_MAX = 90


def _linear_start(a: float) -> tuple[float, float]:
    """Minimax y0 = c0 - c1 x for 1/x on [a, 1]: max |1 - x y0| = 1 - c1 a."""
    c1 = 8 / ((1 + a) ** 2 + 4 * a)
    return c1 * (1 + a), c1


@dataclass
class FV:
    """A finish value per group: shares of raw = v / 2^E * 2^f, or public values ``pub``."""

    sh: np.ndarray | None
    f: int
    E: int
    exact: bool = True  # raw is the exact value (no rounding on its way)
    bit: bool = False  # 0/1 values (f = 0, E = 0)
    pub: np.ndarray | None = None  # (G,) public real values
    tz: int = 0  # raw is a multiple of 2^tz (exact values)
    nonneg: bool = False  # known >= 0

    @property
    def is_public(self) -> bool:
        return self.pub is not None


@dataclass
class XV:
    """An exact finish value (``FinishOp.exact_unit``): shares of integers N per group with
    value = N * 2^u (u public), |value| <= 2^E; or public integers ``pub``."""

    sh: np.ndarray | None
    u: int
    E: int
    pub: np.ndarray | None = None  # (G,) object array of public integers N

    @property
    def is_public(self) -> bool:
        return self.pub is not None

    def raw(self) -> np.ndarray:
        return self.pub if self.is_public else self.sh


@dataclass
class FCtx:
    rt: Any
    field: Any  # the field of SecFxp(96, 48)
    G: int

    @property
    def p(self) -> int:
        return self.field.order


def public(fc: FCtx, values, E: int = 0) -> FV:
    pub = np.broadcast_to(np.asarray(values, dtype=float), (fc.G,)).copy()
    return FV(None, 0, E, pub=pub, nonneg=bool(np.all(pub >= 0)))


def bitv(sh: np.ndarray) -> FV:
    return FV(sh, 0, 0, exact=True, bit=True, nonneg=True)


def pow2(fc: FCtx, k: int) -> int:
    """2^k in the field (k < 0: the inverse)."""
    return pow(2, k, fc.p) if k >= 0 else pow(pow(2, -k, fc.p), -1, fc.p)


def _tz(values) -> int:
    """Trailing zero bits common to the integers ``values`` (0 -> no constraint)."""
    out = F_MAX * 4
    for x in np.asarray(values, dtype=object).reshape(-1):
        x = int(x)
        if x:
            out = min(out, (x & -x).bit_length() - 1)
    return out


async def reshare(fc: FCtx, raw) -> np.ndarray:
    out = await fc.rt._reshare(fc.field.array(np.asarray(raw, dtype=object) % fc.p))
    return np.asarray(out.value, dtype=object)


async def truncate(fc: FCtx, raw, shift: int, l: int, degree2: bool,  # noqa: E741
                   extra: tuple[int, ...] = ()) -> list[np.ndarray]:
    """Shares of about raw / 2^s for s = shift and shift + each of ``extra`` (one opening),
    for |raw| < 2^(l-1)."""
    raw = np.asarray(raw, dtype=object)
    shifts = (shift, *(shift + e for e in extra))
    rt = fc.rt
    if min(shifts) <= 0 or rt.options.no_prss:
        if degree2:
            raw = await reshare(fc, raw)
        out = []
        for s in shifts:
            if s <= 0:
                out.append(raw * (1 << -s) % fc.p)
                continue
            st = rt.SecInt(l, p=fc.p)
            y = rt.np_trunc(st.array(fc.field.array(raw % fc.p)), f=s, l=l)
            out.append(np.asarray((await rt.gather(y)).value, dtype=object))
        return out
    if l + rt.options.sec_param + 4 > fc.p.bit_length():
        raise InternalError(f"a truncation of {l}-bit values exceeds the finish field")
    got = await fx._open_trunc(fc.field, fc.field.array(raw % fc.p).value, degree2, shift, l,
                               extra)
    return [np.asarray(g.value, dtype=object) for g in got]


async def trunc1(fc: FCtx, raw, shift: int, l: int, degree2: bool) -> np.ndarray:  # noqa: E741
    return (await truncate(fc, raw, shift, l, degree2))[0]


async def rescale(fc: FCtx, v: FV, E: int) -> FV:
    """``v`` normalised by 2^E instead of 2^v.E (exact, or a truncation when f would pass 64)."""
    if v.is_public:
        return replace(v, E=E)
    k = v.E - E
    if k == 0:
        return v
    if k > 0:
        return FV(v.sh * (1 << k) % fc.p, v.f, E, v.exact, tz=v.tz + k, nonneg=v.nonneg)
    f = v.f - k
    if f <= F_MAX:
        return FV(v.sh, f, E, v.exact, tz=v.tz, nonneg=v.nonneg)
    sh = await trunc1(fc, v.sh, f - F_MAX, v.f + CMP_MARGIN + 1, False)
    return FV(sh, F_MAX, E, False, nonneg=v.nonneg)


def raw_of(fc: FCtx, v: FV, f: int):
    """Raw shares of ``v`` at fraction length f >= v.f (a public value rounded)."""
    if v.is_public:
        return np.array([round(x * 2.0 ** (f - v.E)) for x in v.pub], dtype=object)
    if f < v.f:
        raise InternalError("raw_of only shifts up")
    return v.sh * (1 << (f - v.f)) % fc.p if f > v.f else v.sh


def _tz_of(fc: FCtx, v: FV, f: int) -> int:
    if v.is_public:
        return _tz(raw_of(fc, v, f))
    return v.tz + f - v.f if v.exact else 0


async def aligned(fc: FCtx, vs: list[FV], E: int) -> tuple[list, int, bool, list[int]]:
    """The operands normalised by 2^E at one fraction length: (raws, f, all exact, tz's)."""
    vs = [await rescale(fc, v, E) for v in vs]
    secret = [v for v in vs if not v.is_public]
    f = max([v.f for v in secret] + [FRAC if any(v.is_public for v in vs) else 0])
    exact = all(v.exact for v in secret) and all(
        float(x * 2.0 ** (f - v.E)).is_integer() for v in vs if v.is_public for x in v.pub)
    return ([raw_of(fc, v, f) for v in vs], f, exact, [_tz_of(fc, v, f) for v in vs])


async def linear(fc: FCtx, terms: list[tuple[int, FV]], E: int) -> FV:
    """sum c_i v_i for small public integers c_i, normalised by 2^E (local)."""
    vs = [v for _, v in terms]
    if all(v.is_public for v in vs):
        return public(fc, sum(c * v.pub for c, v in terms), E)
    raws, f, exact, tzs = await aligned(fc, vs, E)
    total = sum(c * r for (c, _), r in zip(terms, raws, strict=True))
    nonneg = all(c > 0 and v.nonneg for c, v in terms)
    return FV(np.asarray(total, dtype=object) % fc.p, f, E, exact,
              tz=min(tzs) if exact else 0, nonneg=nonneg)


async def multiply(fc: FCtx, a: FV, b: FV, E: int) -> FV:
    """a * b normalised by 2^E: exact where a factor is 0/1 or public and integral, or the
    product fits 64 fraction bits; else one truncation in the round of the resharing."""
    if a.is_public and b.is_public:
        return public(fc, a.pub * b.pub, E)
    if a.is_public or b.is_public:
        return await _scale(fc, b if a.is_public else a, a if a.is_public else b, E)
    nonneg = (a.nonneg and b.nonneg) or a is b
    f_p = a.f + b.f
    f_eff = f_p - (a.E + b.E - E)  # the product raw holds v / 2^E at this fraction
    raw = a.sh * b.sh
    exact = a.exact and b.exact
    tz = a.tz + b.tz if exact else 0
    if a.bit and b.bit and E == 0:
        return bitv(await reshare(fc, raw))
    if f_eff < 0:
        raw = raw * (1 << (FRAC - f_eff))
        tz, f_eff = tz + FRAC - f_eff, FRAC
    if f_eff <= F_MAX:
        return FV(await reshare(fc, raw), f_eff, E, exact, tz=tz, nonneg=nonneg)
    l = f_p + CMP_MARGIN + 2  # noqa: E741  (|a b| < 2^(f_a + f_b) times the margin)
    sh = await trunc1(fc, raw, f_eff - F_MAX, l, True)
    return FV(sh, F_MAX, E, False, nonneg=nonneg)


async def _scale(fc: FCtx, s: FV, c: FV, E: int) -> FV:
    """Secret s times public c (local; one truncation unless the factor is integral)."""
    cn = c.pub * 2.0 ** (s.E - E)  # the public factor on the normalised value
    k = max(_frac(x) for x in cn)
    nonneg = s.nonneg and bool(np.all(cn >= 0))
    if s.f + k <= F_MAX and (s.bit or s.f + k >= FRAC or k == 0):
        C = np.array([round(x * 2.0**k) for x in cn], dtype=object)
        bit = s.bit and E == 0 and k == 0 and bool(np.all((cn == 0) | (cn == 1)))
        tz = s.tz + _tz(C) if s.exact else 0
        return FV(s.sh * C % fc.p, s.f + k, E, s.exact, bit, tz=tz, nonneg=nonneg)
    C = np.array([round(x * 2.0**F_MAX) for x in cn], dtype=object)
    top = max(1, max(abs(int(x)) for x in C).bit_length())
    sh = await trunc1(fc, s.sh * C, s.f, s.f + top + CMP_MARGIN + 1, False)
    return FV(sh, F_MAX, E, False, nonneg=nonneg)


def _frac(x: float) -> int:
    if x == 0 or not math.isfinite(x):
        return 0
    for k in range(0, F_MAX + 1):
        if float(x * 2**k).is_integer():
            return k
    return F_MAX + 1


async def signs(fc: FCtx, raws: list, l: int, mode: str) -> list[np.ndarray]:  # noqa: E741
    """[raw < 0] (``mode`` LT) or [raw == 0] (EQ) for each array of integers |raw| < 2^(l-1),
    one batch.

    With three parties (or MPyC's one-party runtime) and l <= 90: the values move to the
    128-bit field (MPyC ``convert``: one masked opening), where A2B in the replicated bit
    sharing gives the bit (:func:`engine.protocols.slots.sign_test`: no secret random bits),
    and back.  Otherwise MPyC's ``np_sgn`` (l + 1 secret random bits per value).
    """
    rt = fc.rt
    l = max(l, 2)  # noqa: E741
    if l + rt.options.sec_param + 3 > fc.p.bit_length():
        raise InternalError(f"a comparison of {l}-bit values exceeds the finish field")
    flat = np.concatenate([np.asarray(r, dtype=object).reshape(-1) for r in raws]) % fc.p
    n = fc.G
    if sl.bit_protocol(rt) and l <= BIT_CMP_MAX:
        bits = await _signs_bitshared(fc, flat, l, mode)
    else:
        st = rt.SecInt(l, p=fc.p)
        out = rt.np_sgn(st.array(fc.field.array(flat)), l=l, LT=mode == "LT", EQ=mode == "EQ")
        bits = np.asarray((await rt.gather(out)).value, dtype=object)
    return [bits[i * n:(i + 1) * n] for i in range(len(raws))]


async def _signs_bitshared(fc: FCtx, flat: np.ndarray, l: int, mode: str  # noqa: E741
                           ) -> np.ndarray:
    rt = fc.rt
    field1 = rt.SecFxp(64, 32).field
    k = rt.options.sec_param
    s2 = rt.SecInt(fc.p.bit_length() - k - 2, p=fc.p)
    s1 = rt.SecInt(field1.order.bit_length() - k - 2, p=field1.order)
    down = await rt.gather(rt.convert([s2(s2.field(int(v))) for v in flat], s1))
    ctx = sl.Ctx(rt, field1, len(flat))
    bits = await sl.sign_bits(ctx, rt.SecInt(l + 1, p=field1.order),
                              np.array([int(c.value) for c in down], dtype=object), l, mode)
    up = await rt.gather(rt.convert([s1(s1.field(int(b))) for b in bits], s2))
    return np.array([int(c.value) for c in up], dtype=object)


def _strip(fc: FCtx, v: FV) -> tuple[np.ndarray, int]:
    """The raw divided exactly by its known trailing zeros: (shares, bits saved)."""
    k = min(v.tz, v.f + 8) if v.exact else 0
    return (v.sh * pow2(fc, -k) % fc.p if k else v.sh), k


async def compare(fc: FCtx, kind: str, a: FV, b: FV) -> FV:
    """lt / le / eq / ne of a and b as a 0/1 value (exact on the representations)."""
    if a.is_public and b.is_public:
        fn = {"lt": np.less, "le": np.less_equal, "eq": np.equal, "ne": np.not_equal}[kind]
        return public(fc, fn(a.pub, b.pub).astype(float))
    secret = [v for v in (a, b) if not v.is_public]
    E = min(v.E for v in secret)
    spread = max(v.E for v in secret) - E
    if kind == "le":
        a, b = b, a
    d = await linear(fc, [(1, a), (-1, b)], E)
    sh, k = _strip(fc, d)
    l = d.f + spread + CMP_MARGIN - k  # noqa: E741
    (t,) = await signs(fc, [sh], l, "EQ" if kind in ("eq", "ne") else "LT")
    return bitv(t) if kind in ("lt", "eq") else bitv((1 - t) % fc.p)


async def is_zero(fc: FCtx, a: FV) -> FV:
    if a.is_public:
        return public(fc, (a.pub == 0).astype(float))
    if a.exact or a.bit:
        sh, k = _strip(fc, a)
        (t,) = await signs(fc, [sh], a.f + CMP_MARGIN - k, "EQ")
        return bitv(t)
    tol = 1 << max(0, a.f - ZERO_BITS)  # |raw| < 2^(f - 40): |v| < 2^(E - 40)
    lo, hi = await signs(fc, [a.sh - tol, -a.sh - tol], a.f + CMP_MARGIN, "LT")
    return bitv((lo + hi - 1) % fc.p)


async def select(fc: FCtx, c: FV, x: FV, y: FV, E: int) -> FV:
    """y + c (x - y) for a 0/1 value c (exact: one resharing)."""
    if c.is_public:
        x2 = await multiply(fc, x, public(fc, c.pub), E)
        y2 = await multiply(fc, y, public(fc, 1.0 - c.pub), E)
        out = await linear(fc, [(1, x2), (1, y2)], E)
        out.nonneg = x.nonneg and y.nonneg
        return out
    (rx, ry), f, exact, tzs = await aligned(fc, [x, y], E)
    prod = await reshare(fc, c.sh * (np.asarray(rx, dtype=object) - ry))
    bit = x.bit and y.bit and E == 0 and f == 0
    exact = exact and c.exact
    return FV((ry + prod) % fc.p, f, E, exact, bit, tz=min(tzs) if exact else 0,
              nonneg=x.nonneg and y.nonneg)


async def absolute(fc: FCtx, a: FV, E: int) -> FV:
    if a.is_public:
        return public(fc, np.abs(a.pub), E)
    a = await rescale(fc, a, E)
    if a.nonneg:
        return a
    sh, k = _strip(fc, a)
    (s,) = await signs(fc, [sh], a.f + CMP_MARGIN - k, "LT")
    return FV(await reshare(fc, a.sh * (1 - 2 * s)), a.f, E, a.exact, tz=a.tz, nonneg=True)


@dataclass
class Recip:
    """DIV's work on one denominator, shared by every division by it."""

    scs: np.ndarray  # shares of sign(b) 2^(-STEP K) (fraction FRAC)
    y: Any  # Future: shares of 1/x (fraction FRAC), x = |b''| 2^(-STEP K - lo - STEP)
    lo: int
    hi: int
    E: int  # the denominator's bound
    nonneg: bool


async def reciprocal(fc: FCtx, b: FV, fb: int) -> Recip:
    """Protocol DIV's denominator part: comparisons, scaling, and (launched) Newton steps."""
    D = max(0, b.E - fb)
    hi = min(D, HI_MAX)
    # an exact denominator respects its floor (an integer count is 0 or >= 1); a computed one
    # (a product of variances) may fall below it while the quotient stays bounded: resolve it
    # down to 2^-RANGE_MAX of 2^hi
    lo = hi - min(D, RANGE_MAX) if b.exact else hi - RANGE_MAX
    bb = await rescale(fc, b, b.E - hi)  # b'' = B / 2^(E_b - hi): exact (scaling up)
    bb = await _at_frac(fc, bb)
    f = bb.f
    absb, scs, z, sc = await _div_scale(fc, bb, lo, hi)
    v = (absb + z * (1 << (f + lo))) % fc.p  # |b''|, with b = 0 replaced by 2^lo
    x = await trunc1(fc, v * sc, f + lo + STEP, f + hi + FRAC + 3, True)  # in [2^-STEP, 1)
    return Recip(scs, _newton(fc, x), lo, hi, b.E, b.nonneg)


@coroutine
async def _newton(fc: FCtx, x: np.ndarray):
    """1/x for x in [2^-STEP, 1): minimax linear start, NEWTON steps y <- y (2 - x y)."""
    await fc.rt.returnType(Future)
    c0, c1 = _linear_start(2.0**-STEP)
    y = await trunc1(fc, (round(c0 * 2**FRAC) << FRAC) - x * round(c1 * 2**FRAC), FRAC,
                     2 * FRAC + STEP + 3, False)
    for _ in range(NEWTON):
        xy = await trunc1(fc, x * y, FRAC, 2 * FRAC + STEP + 3, True)
        y = await trunc1(fc, y * ((2 << FRAC) - xy), FRAC, 2 * FRAC + STEP + 4, True)
    return y


async def _at_frac(fc: FCtx, v: FV) -> FV:
    """``v`` at fraction FRAC exactly (exact values, or fewer bits: exact shifts) or rounded."""
    if v.f < FRAC:
        return FV(v.sh * (1 << (FRAC - v.f)) % fc.p, FRAC, v.E, v.exact, tz=v.tz + FRAC - v.f,
                  nonneg=v.nonneg)
    if v.f == FRAC:
        return v
    if v.exact and v.tz >= v.f - FRAC:
        return FV(v.sh * pow2(fc, FRAC - v.f) % fc.p, FRAC, v.E, True, tz=v.tz - v.f + FRAC,
                  nonneg=v.nonneg)
    sh = await trunc1(fc, v.sh, v.f - FRAC, v.f + HI_MAX + CMP_MARGIN, False)
    return FV(sh, FRAC, v.E, False, nonneg=v.nonneg)


async def divide(fc: FCtx, a: FV, r: Recip, E: int) -> FV:
    """Protocol DIV's numerator part: q = sign a_n sc 2^P / x, two products."""
    # q = A / B / 2^E = sign a_n 2^(E_a - E) / (b'' 2^(E_b - hi)) = a_n scs 2^P / x
    P = a.E - E + r.hi - r.E - r.lo - STEP
    fa, ra = (FRAC, raw_of(fc, a, FRAC)) if a.is_public else (a.f, a.sh)
    ns = await trunc1(fc, ra * r.scs, fa - P + FRAC - F_MAX, fa + FRAC + CMP_MARGIN + 2,
                      not a.is_public)  # at fraction F_MAX, |ns| <= 1
    y = await r.y
    sh = await trunc1(fc, ns * y, FRAC, F_MAX + FRAC + STEP + CMP_MARGIN + 2, True)
    return FV(sh, F_MAX, E, False, nonneg=a.nonneg and r.nonneg)


async def _div_scale(fc: FCtx, bb: FV, lo: int, hi: int):
    """DIV's comparisons: (|b''|, sign(b) 2^(-STEP K), the zero bit, 2^(-STEP K))."""
    f = bb.f
    cut = f + lo - DIV_GUARD  # tb ~ b'' 2^(DIV_GUARD - lo), an integer
    if bb.exact and bb.tz >= cut:
        tb = bb.sh * pow2(fc, -cut) % fc.p
    else:
        tb = await trunc1(fc, bb.sh, cut, f + hi + CMP_MARGIN, False)
    thr = [lo + STEP * j for j in range(1, math.ceil((hi - lo) / STEP) + 1)]
    unit = [1 << (DIV_GUARD - 1)] + [1 << (t - lo + DIV_GUARD) for t in thr]
    signed_b = not bb.nonneg
    tests = [tb] if signed_b else []
    for u in unit:  # [b'' < T] (and [b'' <= -T])
        tests.append(tb - u)
        if signed_b:
            tests.append(tb + u - 1)
    res = await signs(fc, tests, hi - lo + DIV_GUARD + STEP + CMP_MARGIN, "LT")
    if signed_b:
        lt = [res[1 + 2 * i] - res[2 + 2 * i] for i in range(len(unit))]  # [|b''| < T]
    else:
        lt = res
    z = lt[0] % fc.p
    sc = np.full(fc.G, 1 << FRAC, dtype=object)  # 2^(-STEP K), K = #{t: |b''| >= 2^t}
    for j in range(len(thr)):
        sc = sc + (1 - lt[j + 1]) * ((1 << (FRAC - STEP * (j + 1))) - (1 << (FRAC - STEP * j)))
    sc = sc % fc.p
    if not signed_b:
        return bb.sh, sc, z, sc
    flip = 1 - 2 * res[0]
    both = await reshare(fc, np.concatenate([bb.sh * flip, sc * flip]))
    return both[:fc.G], both[fc.G:], z, sc


# --- exact ops (FinishOp.exact_unit) ------------------------------------------------------------

EXACT_OPS = frozenset({"slot", "const", "add", "sub", "neg", "mul"})


async def exact_op(fc: FCtx, op, vals: dict[str, Any], E: int, consts, exact) -> XV:
    """An op on exact integers (units: this engine's own, the values are what count)."""
    kind = op.op
    if kind == "slot":
        x = exact[op.args[0]]
        return XV(x.sh, x.u, E, x.pub)
    if kind == "const":
        c = Fraction(_const(op, consts))
        u = op.exact_unit
        n = c / Fraction(2) ** u if u >= 0 else c * 2**-u
        if n.denominator != 1:
            raise InternalError(f"exact const {op.out} is not a multiple of 2^{u}")
        return XV(None, u, E, pub=np.full(fc.G, int(n), dtype=object))
    args = [vals[a] for a in op.args]
    if kind in ("add", "sub", "neg"):
        coef = (1, 1) if kind == "add" else (1, -1) if kind == "sub" else (-1,)
        u = min(a.u for a in args)
        terms = [c * a.raw() * (1 << (a.u - u)) for c, a in zip(coef, args, strict=True)]
        total = np.asarray(sum(terms), dtype=object)
        if all(a.is_public for a in args):
            return XV(None, u, E, pub=total)
        return XV(total % fc.p, u, E)
    a, b = args  # mul
    u = a.u + b.u
    if a.is_public and b.is_public:
        return XV(None, u, E, pub=a.pub * b.pub)
    if a.is_public or b.is_public:
        return XV(a.raw() * b.raw() % fc.p, u, E)
    return XV(await reshare(fc, a.sh * b.sh), u, E)


async def exact_is_zero(fc: FCtx, x: XV) -> FV:
    if x.is_public:
        return public(fc, (x.pub == 0).astype(float))
    (t,) = await signs(fc, [x.sh], x.E - x.u + CMP_MARGIN, "EQ")
    return bitv(t)


async def to_fv(fc: FCtx, x: XV) -> FV:
    """An exact value as a normalised FV (bound 2^E): N 2^(u + FRAC - E), one truncation if
    that drops bits."""
    if x.is_public:
        return public(fc, [float(Fraction(int(n)) * Fraction(2) ** x.u) for n in x.pub], x.E)
    k = x.u + FRAC - x.E
    if k >= 0:
        return FV(x.sh * (1 << k) % fc.p, FRAC, x.E, True, tz=k)
    if x.u + F_MAX - x.E >= 0:  # fits at a larger fraction: no rounding
        return FV(x.sh, x.E - x.u, x.E, True)
    sh = await trunc1(fc, x.sh, x.E - x.u - F_MAX, x.E - x.u + CMP_MARGIN, False)
    return FV(sh, F_MAX, x.E, False)


# --- slots and the op dispatch -----------------------------------------------------------------

def slot_value(fc: FCtx, share: np.ndarray, g: int, eff: int, exact: bool, integral: bool,
               nonneg: bool) -> tuple[FV, int]:
    """A slot's exact sums S = v 2^g (shares in this field) as an FV normalised by 2^eff, and
    the truncation still needed (0: none; the raw is exact)."""
    f = g + eff  # raw S itself is v / 2^eff at fraction g + eff
    if f < FRAC:
        out = FV(share * (1 << (FRAC - f)) % fc.p, FRAC, eff, exact, nonneg=nonneg)
    elif f <= F_MAX:
        out = FV(share, f, eff, exact, nonneg=nonneg)
    else:
        return FV(share, f, eff, False, nonneg=nonneg), f - F_MAX
    if integral and exact:
        out.tz = max(0, out.f - eff)  # raw = integer * 2^(f - eff)
    return out, 0


async def slot_values(fc: FCtx, parts: list[dict]) -> list[FV]:
    """FVs of slots (each a dict of slot_value's arguments and ``e``, the strict bits of S);
    the truncations they need are batched by shift (one opening per distinct shift)."""
    out: list[FV] = []
    need: dict[int, list[int]] = {}
    for i, part in enumerate(parts):
        kw = {k: v for k, v in part.items() if k != "e"}
        fv, shift = slot_value(fc, **kw)
        out.append(fv)
        if shift:
            need.setdefault(shift, []).append(i)
    for shift, idx in need.items():
        l = max(parts[i]["e"] for i in idx) + 1  # noqa: E741
        flat = np.concatenate([out[i].sh for i in idx])
        sh = await trunc1(fc, flat, shift, l, False)
        for k, i in enumerate(idx):
            out[i] = FV(sh[k * fc.G:(k + 1) * fc.G], F_MAX, out[i].E, False,
                        nonneg=out[i].nonneg)
    return out


def eff_bits(bits: int, rows_pow: int, L: int) -> int:
    return bits + rows_pow * L


async def _divide_public(fc: FCtx, a: FV, b: FV, E: int) -> FV:
    nz = b.pub != 0
    inv = np.where(nz, 1.0 / np.where(nz, b.pub, 1.0), 0.0)
    if a.is_public:
        return public(fc, a.pub * inv, E)
    return await multiply(fc, a, public(fc, inv, 0), E)


async def finish_op(fc: FCtx, op, vals: dict[str, Any], L: int, consts: dict[str, float],
                    recips: dict | None = None, exact: dict | None = None) -> FV | XV:
    """One finish op on the G groups (see the module docstring); ``recips``: the launched
    reciprocals per (denominator, floor); ``exact``: the slots' exact sums (XV)."""
    E = eff_bits(op.bits, op.rows_pow, L)
    kind = op.op
    if op.exact_unit is not None:
        return await exact_op(fc, op, vals, E, consts, exact or {})
    if kind == "slot":
        return vals[op.args[0]]
    if kind == "const":
        return public(fc, _const(op, consts), E)
    args = [_farg(vals, a) for a in op.args]
    if kind == "is_zero" and isinstance(args[0], XV):
        return await exact_is_zero(fc, args[0])
    args = [await to_fv(fc, a) if isinstance(a, XV) else a for a in args]
    if kind in ("add", "sub"):
        return await linear(fc, [(1, args[0]), (1 if kind == "add" else -1, args[1])], E)
    if kind == "neg":
        return await linear(fc, [(-1, args[0])], E)
    if kind == "mul":
        return await multiply(fc, args[0], args[1], E)
    if kind == "div":
        b = args[1]
        if b.is_public:
            return await _divide_public(fc, args[0], b, E)
        fb = op.floor_bits + op.floor_rows_pow * L
        return await divide(fc, args[0], await recips[(op.args[1], fb)], E)
    if kind == "abs":
        return await absolute(fc, args[0], E)
    if kind == "is_zero":
        return await is_zero(fc, args[0])
    if kind in ("lt", "le", "eq", "ne"):
        return await compare(fc, kind, args[0], args[1])
    if kind == "not":
        return _not(fc, args[0])
    if kind == "and":
        return await multiply(fc, args[0], args[1], 0)
    if kind == "or":
        a, b = args
        if a.is_public and b.is_public:
            return public(fc, np.maximum(a.pub, b.pub))
        ab = await multiply(fc, a, b, 0)
        ra, rb, rab = (raw_of(fc, v, 0) if v.is_public else v.sh for v in (a, b, ab))
        return bitv((ra + rb - rab) % fc.p)
    if kind == "select":
        return await select(fc, args[0], args[1], args[2], E)
    raise InternalError(f"unknown finish op {kind!r}")


def _const(op, consts: dict[str, float]) -> float:
    """A const op's value; a named one (``min_group_rows``) is filled in at run time."""
    c = op.args[0] if op.args else op.out
    if isinstance(c, str) or op.out in consts:
        key = c if isinstance(c, str) else op.out
        if key not in consts:
            raise InternalError(f"unknown named constant {key!r}")
        return float(consts[key])
    return float(c)


def _not(fc: FCtx, a: FV) -> FV:
    if a.is_public:
        return public(fc, 1.0 - a.pub)
    return bitv((1 - a.sh) % fc.p)


def _farg(vals: dict[str, FV], a) -> FV:
    if a not in vals:
        raise InternalError(f"finish op refers to unknown {a!r}")
    return vals[a]


def run_finish(fc: FCtx, program, vals: dict[str, Any], L: int, consts: dict[str, float],
               exact: dict[str, XV] | None = None) -> dict[str, Any]:
    """Protocol FINISH: every finish op launched in program order as an MPyC coroutine (so
    independent ops overlap their rounds; MPyC keeps the parties' message order), divisions
    by one denominator sharing its reciprocal.  Returns futures (FVs for the slots).
    ``exact``: the exact sums of the slots that exact ops read."""
    validate(program, vals, consts, exact)
    out = dict(vals)
    recips: dict[tuple[str, int], Any] = {}
    for op in program.finish:
        deps = {a: out[a] for a in _refs(op)}
        if op.op == "div":
            key = (op.args[1], op.floor_bits + op.floor_rows_pow * L)
            if key not in recips:
                recips[key] = _launch_recip(fc, out[op.args[1]], key[1])
        out[op.out] = _launch(fc, op, deps, L, consts, recips, exact)
    return out


def _refs(op) -> list[str]:
    return [] if op.op == "const" else list(op.args)


def validate(program, vals: dict[str, Any], consts: dict[str, float],
             exact: dict[str, XV] | None = None) -> None:
    """Check the finish program before launching anything (its tasks cannot raise cleanly)."""
    known = set(vals)
    exact_ops = set()
    for op in program.finish:
        for a in _refs(op):
            if not isinstance(a, str) or a not in known:
                raise InternalError(f"finish op {op.out} refers to unknown {a!r}")
        if op.op == "const":
            _const(op, consts)
        if op.op == "div" and op.floor_bits is None:
            raise InternalError(f"finish op {op.out}: div needs a floor")
        if op.exact_unit is not None:
            if op.op not in EXACT_OPS:
                raise InternalError(f"finish op {op.out}: {op.op} has no exact form")
            if op.op == "slot" and op.args[0] not in (exact or {}):
                raise InternalError(f"finish op {op.out}: slot {op.args[0]} has no exact sum")
            if op.op != "slot" and any(a not in exact_ops for a in _refs(op)):
                raise InternalError(f"finish op {op.out}: exact op of inexact arguments")
            exact_ops.add(op.out)
        known.add(op.out)


async def resolve(x):
    """An FV from a launched op's future (or the FV itself)."""
    return await x if isinstance(x, Future) else x


@coroutine
async def _launch_recip(fc: FCtx, b, fb: int):
    await fc.rt.returnType(Future)
    b = await resolve(b)
    if b.is_public:
        return None
    return await reciprocal(fc, b, fb)


@coroutine
async def _launch(fc: FCtx, op, deps: dict[str, Any], L: int, consts, recips, exact):
    await fc.rt.returnType(Future)
    vals = {k: await resolve(v) for k, v in deps.items()}
    return await finish_op(fc, op, vals, L, consts, recips, exact)
