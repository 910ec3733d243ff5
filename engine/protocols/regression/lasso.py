"""Protocols LASSO-CD and LASSO-ADMM (with SOFT): the LASSO iterations on the d x d moments.

Sources: cyclic coordinate descent for the lasso (Friedman, Hastie and Tibshirani,
"Regularization Paths for Generalized Linear Models via Coordinate Descent", J. Stat. Softw.
2010); ADMM for the lasso with over-relaxation (Boyd, Parikh, Chu, Peleato and Eckstein,
"Distributed Optimization and Statistical Learning via the Alternating Direction Method of
Multipliers", Found. Trends Mach. Learn. 2011, sections 6.4 and 3.4.3). POLISH
(:mod:`~engine.protocols.regression.polish`) finishes both.

LASSO solves min 1/2 w^T G w - c^T w + sum_j t_j |w_j| (t_j the penalty in scaled units) in
standardised variables v = w / s: s_j = 1/sd_j from INV-SQRT (secret, never opened; 0 for a
constant feature), G~ = S G S (unit diagonal; an identity row for a constant feature),
c~ = S c, t~_j = min(t_j s_j, 2) (one batched comparison; with ``standardize``
t~_j = min(alpha y_scale, 2), public), then w = S v. The unit diagonal gives public bounds
whatever the data: the eigenvalues of G~ lie in [0, d]; |c~_j| <= 1; the objective is 0 at
v = 0 and its quadratic part is >= -E[y^2]/2 >= -1/2 (centred: -var(y)/2), so the optimum has
sum_j t~_j |v_j| <= 1/2, i.e. |v*|_1 <= v_max = 1/(2 t_min) with the public
t_min = min_j min(t_j, 2) (s_j >= 1 since var(x_j) <= 1). Clipping t~ at 2 is exact:
|c~_j - (G~ v)_j| <= sd(residual) <= 1 at the optimum, so t~_j > 1 forces v_j = 0. A public,
fixed number of iterations follows (:mod:`~engine.protocols.regression.options`):

* ``'cd'``: cyclic coordinate descent. Coordinates are inherently sequential; per coordinate
  one inner product and one soft-thresholding S(u, t) = relu(u - t) - relu(-u - t) whose two
  comparisons are batched into one secure comparison (bit length from 1 + |v|_1 <= 1 + v_max,
  as every CD step lowers the objective).
* ``'admm'``: two ADMM chains, penalties rho I with rho in ADMM_RHOS = (0.05, 0.5) and
  over-relaxation 1.6, run side by side as stacked arrays (one product and one comparison call
  per iteration serve both). (G~ + rho I)^-1 comes from NS-INVERSE with a public step count
  from the public eigenvalue bounds [rho, d + rho] (9 scaled steps at d = 30, two rounds each). An
  iteration is one d x 2d product per chain (one round, opened twice: at 48 and at CMP_FRAC
  fractional bits) and one batched soft-thresholding whose 4d comparisons use the
  low-resolution copy: CMP_FRAC = 12 fractional bits (24 in the last CMP_LAST = 4 iterations,
  whose bits become POLISH's support; two were too few, see below) and bit length
  CMP_FRAC + log2(bound) + 2. The bound is sound:
  relaxed ADMM is the averaged Douglas-Rachford iteration on a = z + u, hence nonexpansive,
  started at a = 0, so |a| <= 2 |a*| = 2 |v* + u*| with |u*_j| <= t~_j / rho <= 2 / rho, i.e.
  |a| <= 2 (v_max + sqrt(d) 2 / rho_min). A comparison bit can only be wrong where
  |a -+ theta| is below the resolution, and S is continuous, so z then moves by less than
  2^-CMP_FRAC. At the end the chain whose iterate has the lower objective is kept (one
  comparison). Why four iterations at 24 bits: the 12-bit bits err near the threshold, which
  perturbs the iterate by up to a few units of 2^-12; a coordinate closer than that to its
  threshold (diabetes, alpha = 0.01: |v_0| = 1.2e-4) then needs more than two accurate
  iterations to recover. With two, a float64 model of this noise ends on a wrong support in
  13 of 20,000 runs (once seen in CI: POLISH then solved without feature 0); with three or
  more in none, with the noiseless iteration's final margins
  (tests/test_regression.py::test_admm_support_survives_comparison_noise). Why two chains:
  the best rho depends on the data; on the test problems
  (diabetes raw/standardised, alpha 0.01..1, insurance, synthetic d = 10, 30) one chain with
  rho = 0.1 needs up to 41 iterations before POLISH is exact, the better of the two at most 18.

Progress: both loops call ``on_progress("solver iteration", done, total)`` (or, when it is
None, the hook in :data:`PROGRESS`, which the session sets) with the public iteration count
before the first and after every iteration, then ``on_progress("polishing", None, None)``
(POLISH follows both); nothing else is reported.

What each party sees: only masked openings inside the one-round products and the comparisons
(LTZ-SMALL, :func:`engine.protocols.fastfxp.ltz`). Nothing is opened: the scales
s_j, the iterates and the sign/support bits stay secret-shared, and a (near-)constant feature
gets coefficient exactly 0 (as sklearn's Lasso does), decided by a secret bit per feature.
"""

from __future__ import annotations

import math
from asyncio import Future
from collections.abc import Callable
from contextvars import ContextVar

import numpy as np

from engine.protocols import fastfxp as fx
from engine.protocols.regression.inverses import _inv_sqrt, _ns_inverse
from engine.protocols.regression.options import (
    ADMM_RELAX,
    ADMM_RHOS,
    CMP_FRAC,
    CMP_FRAC_LAST,
    CMP_LAST,
    SOLVER_FRAC,
    VAR_LO,
    _cmp_bits,
    _rt,
    coroutine,
)

#: ``on_progress(phase, done, total)``: the solver's progress (public counts only: sweeps or
#: iterations, fixed by the plan's options).
OnProgress = Callable[[str, int | None, int | None], None]

#: The hook used when a loop is given no ``on_progress``; None (the default) reports nothing.
#: The session process sets it to its progress reporter (engine.session.runner).
PROGRESS: ContextVar[OnProgress | None] = ContextVar("lasso_progress", default=None)


def _progress(on_progress: OnProgress | None) -> OnProgress | None:
    return on_progress if on_progress is not None else PROGRESS.get()


def _standardize(G, c, g, const, pen: np.ndarray, alpha: float, y_scale: float,
                 standardize: bool):
    """The unit-diagonal problem: (s, G~, c~, t~, v_max) with s_j = 1/sd_j (0 if constant)."""
    t2 = type(G).sectype
    d = G.shape[0]
    keep = 1 - const
    s = fx.intmul(keep, _inv_sqrt(g + const, VAR_LO))  # 1/sd_j, 0 if constant; never opened
    # Unit-diagonal problem in v = sd * w: G~ = S G S (identity rows for constant features),
    # c~ = S c, t~_j = t_j / sd_j clipped at 2 (exact: t~_j > 1 forces v_j = 0, as for t_j).
    Gt = fx.mul(G, fx.outer(s, s)) + const * np.eye(d, dtype=int)
    ct = fx.mul(c, s)
    if standardize:
        t_min = min(alpha * y_scale, 2.0)
        tt = t2.array(np.full(d, t_min))
    else:
        raw = fx.mul(s, t2.array(pen))  # <= 2 * 2^20
        small = fx.ltz(raw - 2, _cmp_bits(SOLVER_FRAC, 2.0**22))
        tt = 2 + fx.intmul(small, raw - 2)
        t_min = float(pen.min()) * (1 - 2.0**-30)  # sd_j <= 1 in scaled units
    # sum t~ |v| <= 1/2 at the optimum; ADMM's iterates stay within 2 |v* + u*|.
    v_max = 0.5 / t_min
    return s, Gt, ct, tt, v_max


@coroutine
async def _soft_threshold(a, theta, cmp=None, bits: int | None = None):
    """Protocol SOFT: batched soft-thresholding S(a, theta) = relu(a - theta) - relu(-a - theta)."""
    # Returns (z, up, down): z the result, up/down the secret bits [a >= theta], [-a >= theta].
    # All 2n comparisons go into one secure comparison of ``bits``-bit values. ``cmp`` (if
    # given) is a lower-resolution pair (a', theta') to compare instead: S is continuous, so a
    # wrong bit where |a -+ theta| is below that resolution changes z by at most as much.
    rt = _rt()
    await rt.returnType(Future)
    n = a.shape[0]
    v = rt.np_concatenate((a - theta, -a - theta))
    vc = v if cmp is None else rt.np_concatenate((cmp[0] - cmp[1], -cmp[0] - cmp[1]))
    pos = 1 - fx.ltz(vc, bits)
    r = fx.intmul(pos, v)
    return r[:n] - r[n:], pos[:n], pos[n:]


@coroutine
async def _cd(G, c, t, sweeps: int, bound: float, on_progress: OnProgress | None = None):
    """Protocol LASSO-CD: cyclic coordinate descent (unit diagonal G), batched soft-thresholding."""
    # Every CD step lowers the objective, so the iterates keep sum t|w| <= 1/2 and each input
    # to SOFT stays below ``bound`` (|c_j| <= 1 plus d times the largest |w|).
    rt = _rt()
    await rt.returnType(Future)
    t2 = type(G).sectype
    d = G.shape[0]
    eye = np.eye(d, dtype=int)
    Gh = G * (1 - eye)  # diagonal removed
    rows = [Gh[j:j + 1] for j in range(d)]
    bits = _cmp_bits(SOLVER_FRAC, bound)
    w = up = down = t2.array(np.zeros(d))
    report = _progress(on_progress)
    for sweep in range(sweeps):
        if report is not None:
            report("solver iteration", sweep, sweeps)
        for j in range(d):
            a = c[j:j + 1] - rt.np_reshape(fx.matmul(rows[j], w), (1,))
            z, b1, b2 = await _soft_threshold(a, t[j:j + 1], bits=bits)
            # w[j] = z etc. as arithmetic with a public unit vector (no secret indexing)
            w = w + (z - w[j:j + 1]) * eye[j]
            up = up + (b1 - up[j:j + 1]) * eye[j]
            down = down + (b2 - down[j:j + 1]) * eye[j]
    if report is not None:
        report("solver iteration", sweeps, sweeps)
        report("polishing", None, None)
    return w, up, down


@coroutine
async def _admm(G, c, t, iters: int, v_max: float, on_progress: OnProgress | None = None):
    """Protocol LASSO-ADMM: two ADMM chains (rho I, unit diagonal G), NS-INVERSE, batched SOFT."""
    # The chains (penalties ADMM_RHOS) run side by side as stacked arrays: one product and one
    # comparison call per iteration for both. At the end the iterate with the lower objective
    # is kept (one comparison). ``v_max``: public bound on |v*|_1 (module docstring).
    rt = _rt()
    await rt.returnType(Future)
    d = G.shape[0]
    n = len(ADMM_RHOS)
    K, K0, theta, low = _admm_system(rt, G, c, t, v_max)
    z = u = up = down = type(G).sectype.array(np.zeros(n * d))
    report = _progress(on_progress)
    for i in range(iters):
        if report is not None:
            report("solver iteration", i, iters)
        drop, theta_c, K0_c, bits = low[CMP_FRAC if i < iters - CMP_LAST else CMP_FRAC_LAST]
        zu = rt.np_concatenate((rt.np_reshape(z, (n, d, 1)), rt.np_reshape(u, (n, d, 1))), axis=1)
        a, a_c = fx.matmul(K, zu, extra=drop)
        a = rt.np_reshape(a, (n * d,)) + K0
        a_c = rt.np_reshape(a_c, (n * d,)) + K0_c
        z, up, down = await _soft_threshold(a, theta, (a_c, theta_c), bits)
        u = a - z
    if report is not None:
        report("solver iteration", iters, iters)
        report("polishing", None, None)
    return _best_chain(rt, G, c, t, z, up, down)


def _admm_system(rt, G, c, t, v_max: float):
    """ADMM's fixed parts for both chains: (K, K0, theta, {resolution: low-resolution copies})."""
    d = G.shape[0]
    n = len(ADMM_RHOS)
    rhos = np.array(ADMM_RHOS).reshape(n, 1, 1)
    eye = np.eye(d)
    Gs = rt.np_concatenate([rt.np_reshape(G, (1, d, d))] * n, axis=0)
    stype = type(Gs)
    M = _ns_inverse(Gs + fx.public(stype, eye * rhos), min(ADMM_RHOS),
                    d * (1 + 2.0**-30) + max(ADMM_RHOS),
                    lam_lo=rhos.reshape(-1), definite=True)
    # Over-relaxed step a = r v + (1 - r) z + u with v = M c + rho M (z - u), as one product:
    # a = K0 + [r rho M + (1 - r) I | I - r rho M] @ [z; u].
    rM = fx.scale(M, ADMM_RELAX * rhos)
    K = rt.np_concatenate((rM + fx.public(stype, (1 - ADMM_RELAX) * eye),
                           fx.public(stype, eye) - rM), axis=2)
    K0 = rt.np_reshape(fx.matmul(M, rt.np_reshape(fx.scale(c, ADMM_RELAX), (d, 1))), (n * d,))
    tt = rt.np_concatenate([t] * n)
    inv_rho = np.repeat(1 / rhos.reshape(-1), d)
    theta = fx.scale(tt, inv_rho)
    # |a| <= 2 |a*| = 2 |v* + u*| (nonexpansive from a = 0), |u*_j| <= t_j / rho <= 2 / rho
    th_max = 2 / min(ADMM_RHOS)
    bound = 2.0 * (v_max + math.sqrt(d) * th_max) * (1 + 2.0**-10) + 1
    low = {}  # comparison resolution -> (drop, theta', K0', bits)
    for frac in {CMP_FRAC, CMP_FRAC_LAST}:
        drop = SOLVER_FRAC - frac
        low[frac] = (drop, fx.scale(tt, inv_rho, extra=drop), fx.scale(K0, 1, extra=drop),
                     _cmp_bits(frac, bound + th_max))
    return K, K0, theta, low


def _best_chain(rt, G, c, t, z, up, down):
    """(z, up, down) of the chain with the lower objective 1/2 z^T G z - c^T z + t^T |z|."""
    d = G.shape[0]
    n = len(ADMM_RHOS)
    Z = rt.np_reshape(z, (n, d))
    absz = fx.intmul(rt.np_reshape(up - down, (n, d)), Z)
    GZ = fx.matmul(Z, G)
    f = rt.np_sum(fx.mul(Z, fx.scale(GZ, 0.5) - c) + fx.mul(absz, t), axis=1)
    second = fx.ltz(f[1:2] - f[:1])
    parts = [rt.np_reshape(x, (n, d)) for x in (z, up, down)]
    first = rt.np_concatenate([x[0] for x in parts])
    diff = rt.np_concatenate([x[1] for x in parts]) - first
    sel = first + fx.intmul(second, diff)
    return sel[:d], sel[d:2 * d], sel[2 * d:]
