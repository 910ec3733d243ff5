"""Protocol POLISH: solve LASSO's KKT system on the iterate's support and signs, keep if valid.

Source: solution polishing as in OSQP (Stellato, Banjac, Goulart, Bemporad and Boyd, "OSQP: an
operator splitting solver for quadratic programs", Math. Program. Comput. 2020): guess the
active set from an approximate iterate, solve the resulting equality system, accept only if
the result is better.

The signs and support of the last LASSO-CD / LASSO-ADMM iterate give the KKT system
G~_AA v_A = c~_A - t~_A sign(v_A), solved obliviously (inactive coordinates masked to an
identity block) by NS-INVERSE with the public bounds [POLISH_LAM = 2^-16, d] (15 steps at
d = 30, scaled Newton-Schulz) plus one refinement step. Whatever H is, the eigenvalues of X H
stay in [0, 1] and |X| <= prod_k a_k X0 (the steps' public factors a_k <= 4; < 2^25 X0 at
d = 30, 2^26 X0 before the scaling), so every later value is bounded (no range check is
needed before the comparisons). The polished vector replaces the iterate, by a secret
selection, if it passes a full secure KKT test (signs kept and c~ - G~ v = t~ sign(v) on
the support, |c~ - G~ v| <= t~ off it, slack 2^-20 t~ + 2^-40) or has a lower objective.
Polishing is exact once the iterations have found the support, provided the support's
correlation matrix has eigenvalues >= 2^-16 (else the iterate, or the better of the two, is
returned).

What each party sees: only masked openings inside the one-round products and the comparisons
(LTZ-SMALL, :func:`engine.protocols.fastfxp.ltz`). Nothing is opened: the support, the signs,
the KKT test and the choice between iterate and polished vector are secret bits.
"""

from __future__ import annotations

from asyncio import Future

import numpy as np

from engine.protocols import fastfxp as fx
from engine.protocols.regression.inverses import _ns_inverse
from engine.protocols.regression.options import KKT_SLACK, POLISH_LAM, _rt, coroutine


def _objective(G, c, t, w, absw):
    """1/2 w^T G w - c^T w + t^T |w| (secret, shape (1,))."""
    rt = _rt()
    return rt.np_sum(fx.mul(w, fx.scale(fx.matmul(G, w), 0.5) - c) + fx.mul(t, absw),
                     keepdims=True)


@coroutine
async def _polish(G, c, t, z, up, down):
    """Protocol POLISH: solve the KKT system on the iterate's support and signs, keep if valid."""
    # H = G on the support (identity elsewhere) is inverted by NS-INVERSE with the public
    # eigenvalue bound POLISH_LAM (plus one refinement step); whatever H is, the solution is
    # bounded (|X| <= prod a_k * X0), and only a full KKT test (stationarity on the support too)
    # or a lower objective lets it replace the iterate.
    rt = _rt()
    await rt.returnType(Future)
    d = G.shape[0]
    act = up + down
    sgn = up - down
    ts = fx.intmul(sgn, t)
    H = fx.intmul(fx.intmul(rt.np_reshape(act, (d, 1)), rt.np_reshape(act, (1, d))), G)
    H = H + (1 - act) * np.eye(d, dtype=int)
    rhs = fx.intmul(act, c - ts)
    X = _ns_inverse(H, POLISH_LAM, d * (1 + 2.0**-30))
    wp = fx.matmul(X, rhs)
    # exact zeros off the support (one-round products round 0 to +-2^-48)
    wp = fx.intmul(act, wp + fx.matmul(X, rhs - fx.matmul(H, wp)))
    # KKT test of wp (relative slack 2^-20): signs kept and c - G wp = t sgn on the support,
    # |c - G wp| <= t off it.
    dev = c - fx.matmul(G, wp) - ts
    slack = fx.scale(t, KKT_SLACK) + fx.intmul(1 - act, t) + KKT_SLACK**2
    lt = fx.ltz(rt.np_concatenate((wp, -wp, slack - dev, slack + dev)))
    neg, pos, hi, lo = lt[:d], lt[d:2 * d], lt[2 * d:3 * d], lt[3 * d:]
    viol = fx.intmul(rt.np_concatenate((up, down)), rt.np_concatenate((neg, pos)))
    kkt = fx.all_bits(1 - rt.np_concatenate((viol[:d] + viol[d:], hi + lo)))  # 0/1 each
    f_new = _objective(G, c, t, wp, fx.intmul(1 - 2 * neg, wp))
    f_old = _objective(G, c, t, z, fx.intmul(sgn, z))
    better = fx.ltz(f_new - f_old)
    accept = kkt + better - fx.intmul(kkt, better)
    return z + fx.intmul(accept, wp - z)
