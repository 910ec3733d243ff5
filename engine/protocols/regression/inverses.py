"""Protocols RECIPROCAL, INV-SQRT and NS-INVERSE: inverses of secret values in public ranges.

* RECIPROCAL (1/v, v in [2^lo, 2^hi)): one batched comparison against powers of two gives the
  exponent as a thermometer, which scales v into [1/2, 1); then Newton steps from the linear
  start 2.9142 - 2x, as in Catrina and Saxena, "Secure computation with fixed-point numbers"
  (FC 2010). Used by LDL-SOLVE for the guarded pivots (>= 2^-40).
* INV-SQRT (1/sqrt(v), v a variance in [2^-40, 1]): Newton's iteration y <- y (3 - v y^2) / 2
  from y = 1 with a public number of steps, no comparison. Used by LASSO's standardisation.
* NS-INVERSE (A^-1 for symmetric A with public eigenvalue bounds): the Newton-Schulz iteration
  X <- X (2I - A X) (G. Schulz, 1933) from the scaled identity X0 = 2/(lam_lo + lam_hi) I,
  accelerated by public per-step scalings X <- X (a I - b A X) while the condition number is
  large (Pan and Schreiber 1991), with a public step count from the bounds (15 instead of 26
  steps for [2^-16, 30]). Used by LASSO-ADMM and POLISH.

Fixed-point products are one-round (:mod:`engine.protocols.fastfxp`). What each party sees:
only PRSS-masked openings inside those products and MPyC's masked openings inside the
comparisons; nothing is opened in the clear and the results stay secret-shared.
"""

from __future__ import annotations

import numpy as np

from engine.protocols import fastfxp as fx
from engine.protocols.regression.options import _rt, coroutine


def _thermometer(v, exps: np.ndarray, bits: int):
    """2^k with k = #{e in exps: v < 2^e} (exps descending), elementwise for v flattened.

    One batched comparison (of ``bits``-bit values) and no products: the bits [v < 2^e] are
    monotone in e, so 2^k = 1 + sum_r bit_r 2^(r-1) is a public linear combination.
    """
    rt = _rt()
    n = v.size
    diff = rt.np_reshape(v, (n, 1)) - (2.0 ** exps).reshape(1, -1)
    lt = rt.np_sgn(diff, l=bits, LT=True)
    weights = (1 << np.arange(len(exps))).reshape(1, -1)
    return 1 + rt.np_sum(lt * weights, axis=1)


@coroutine
async def _reciprocal(v, lo: int, hi: int, s=None):
    """Protocol RECIPROCAL: 1/v for secret v in [2^lo, 2^hi), by scaling into [1/2, 1) + Newton."""
    # ``s``: the thermometer value of v, if the caller computed it already.
    rt = _rt()
    await rt.returnType((type(v), v.shape))
    f = type(v).frac_length
    if s is None:
        s = _thermometer(v, np.arange(hi - 1, lo, -1), f + hi + 2)  # v s in [2^(hi-1), 2^hi)
    x = fx.scale(fx.mul(rt.np_reshape(v, (v.size,)), s), 2.0**-hi)  # in [1/2, 1)
    y = 2.9142135623731 - x * 2  # relative error < 0.086; 4 Newton steps reach 2^-48
    for _ in range(4):
        y = fx.mul(y, 2 - fx.mul(x, y))
    return rt.np_reshape(fx.scale(fx.mul(y, s), 2.0**-hi), v.shape)


def _inv_sqrt_steps(lo: int) -> int:
    """Public count of INV-SQRT's coupled steps: enough from y = 1 for every v in [2^lo, 2)."""
    v, y, k = 2.0**lo, 1.0, 0
    while abs(v * y * y - 1) > 2.0**-50:
        y, k = y * (1.5 - 0.5 * v * y * y), k + 1
    return k


@coroutine
async def _inv_sqrt(v, lo: int):
    """Protocol INV-SQRT: 1/sqrt(v) for secret v in [2^lo, 2) by Newton steps from y = 1."""
    # y <- y (3 - v y^2) / 2 from y = 1 rises monotonically to 1/sqrt(v) (x 1.5 per step while
    # v y^2 is small), so a public count covers the whole range. The steps carry p = v y^2
    # along as q = p/2 (q <- q (1.5 - q)^2, two rounds per step instead of three); three
    # last steps with p recomputed (v y^2 / 2 in one product) remove the drift. No comparison:
    # 40 + 3 steps at lo = -41.
    rt = _rt()
    await rt.returnType((type(v), v.shape))
    v = rt.np_reshape(v, (v.size,))
    y = type(v).sectype.array(np.ones(v.size))
    q = fx.scale(v, 0.5)  # q = v y^2 / 2
    for _ in range(_inv_sqrt_steps(lo)):
        h = 1.5 - q
        y = fx.mul(y, h)
        q = fx.mul(q, fx.mul(h, h))
    for _ in range(3):  # q is only as precise as v (2^-48 absolute): y may be 2^-8 off
        y = fx.mul(y, 1.5 - fx.mul(v, fx.mul(y, y), extra=1))
    return rt.np_reshape(y, v.shape)


#: NS-INVERSE: scaled steps while the error 1 - s_lo exceeds this, then plain steps.
NS_SWITCH = 2.0**-16
#: NS-INVERSE's target error (every eigenvalue of A X within 2^-52 of 1).
NS_TARGET = 2.0**-52
#: Relative widening of the tracked eigenvalue interval per scaled step (a safety margin).
NS_WIDEN = 2.0**-30


def _ns_schedule(lam_lo: float, lam_hi: float) -> list[tuple[float, float]]:
    """Public (a, b) of NS-INVERSE's steps X <- X (a I - b A X) for eigenvalues in
    [lam_lo, lam_hi]: plain (2, 1) first, scaled while 1 - s_lo > NS_SWITCH, plain after."""
    # After step 0 (X0 = 2/(lo + hi) I, plain) the eigenvalues s of A X lie in [1 - e0^2, 1].
    # A scaled step with c = (s_lo + s_hi)/2, b = 1/c^2, a = 2/c maps s to s (a - b s), which
    # is 1 at s = c, equals s_lo s_hi / c^2 at both ends and lies in [0, 1] on [0, 2c]: the
    # condition number falls ~4x per step (plain: 2x). Plain steps square the error 1 - s.
    e0 = (lam_hi - lam_lo) / (lam_hi + lam_lo)
    steps = [(2.0, 1.0)]
    s_lo, s_hi = 1 - e0 * e0, 1.0
    while 1 - s_lo > NS_SWITCH:
        s_lo, s_hi = s_lo * (1 - NS_WIDEN), s_hi * (1 + NS_WIDEN)
        c = (s_lo + s_hi) / 2
        steps.append((2 / c, 1 / c**2))
        s_lo, s_hi = s_lo * s_hi / c**2, 1.0
    e = 1 - s_lo + 2 * NS_WIDEN
    while e > NS_TARGET:
        steps.append((2.0, 1.0))
        e = e * e
    return steps


@coroutine
async def _ns_inverse(A, lam_min: float, lam_hi: float, lam_lo=None, definite: bool = False):
    """Protocol NS-INVERSE: A^-1 for symmetric A with public eigenvalue bounds, Newton-Schulz."""
    # ``definite``: the lower bounds are known to hold (A = PSD + rho I, as in LASSO-ADMM), so
    # |X| <= 1/lam_lo, and A X, X (a I - A X) (polynomials in A) are computed on their upper
    # triangles only (fastfxp.symmatmul: half the opening) in every step but the last. The
    # mirror drops the products' small antisymmetric part (|X| times the rounding), which the
    # last, full step squares away (at d = 30, rho = 0.05: 3e-10 -> 6e-13, as without the
    # mirror). Not for POLISH's H, which may be singular: there X grows ~4x per step along the
    # null space (to 2^25 X0) and the dropped part with |X|^2 (measured: X overflows).
    # X <- X (a I - b A X) from X0 = 2/(lam_lo + lam_hi) I with the public schedule of
    # _ns_schedule (scaled Newton-Schulz, as in Pan and Schreiber, SIAM J. Sci. Stat. Comput.
    # 12, 1991: the scaling only depends on the public bounds), b folded into the product A X
    # (fastfxp.matmul ``factor``). A may be a stack (n, d, d); ``lam_lo`` (default lam_min)
    # then gives each one's bounds; all run the longest schedule (plain steps pad the others).
    # Whatever A is (PSD, eigenvalues <= lam_hi), the eigenvalues of A X stay in [0, 1].
    rt = _rt()
    await rt.returnType((type(A), A.shape))
    d = A.shape[-1]
    eye = np.eye(d)
    los = np.reshape(lam_min if lam_lo is None else lam_lo, -1)
    sched = [_ns_schedule(float(lo), lam_hi) for lo in los]
    n_steps = max(len(s) for s in sched)
    sched = [s + [(2.0, 1.0)] * (n_steps - len(s)) for s in sched]
    stack = A.ndim == 3
    lo = los.reshape(-1, 1, 1) if stack else los[0]
    stype = type(A)
    X = fx.public(stype, np.broadcast_to(eye * (2 / (lo + lam_hi)), A.shape))
    for k in range(n_steps):
        a = np.array([s[k][0] for s in sched])
        b = np.array([s[k][1] for s in sched])
        if stack:
            a, b = a.reshape(-1, 1, 1), b.reshape(-1, 1, 1)
        else:
            a, b = a[0], b[0]
        mm = fx.symmatmul if definite and k < n_steps - 1 else fx.matmul
        AX = mm(A, X) if np.all(b == 1) else mm(A, X, factor=b)
        X = mm(X, fx.public(stype, a * eye) - AX)
    return X
