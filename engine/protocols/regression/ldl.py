"""Protocol LDL-SOLVE: oblivious LDL^T solve of (G + Lambda) w = c for RIDGE and LINREG.

Source: the LDL^T factorisation without pivoting of a symmetric positive semidefinite matrix
(Golub and Van Loan, Matrix Computations, section 4.1), followed by forward and back
substitution, run obliviously: the same operations whatever the data. MPyC's
demos/ridgeregression.py solves the same normal equations by randomized Gaussian elimination
over a secure field (Blom, Bouman, Schoenmakers and de Vreede, "Efficient Secure Ridge
Regression from Randomized Gaussian Elimination", CSCML 2021); here the solver type is fixed
point with one-round products (:mod:`engine.protocols.fastfxp`).

Pivots are guarded: a pivot below 2^-32 A_jj + 2^-40 (i.e. some feature is up to
1 - R^2 < 2^-32 a linear combination of the others) is replaced by 1, so nothing overflows, and
flagged. Per pivot the guard and the thermometer of its reciprocal (RECIPROCAL in
:mod:`~engine.protocols.regression.inverses`) are one batched comparison; d reciprocals are
sequential.

What each party sees: only masked openings inside products and comparisons. Nothing is opened
here: the solution and the flag "some pivot was guarded" are returned secret-shared;
:func:`~engine.protocols.regression.fit` opens the flag (the collinear bit) to all parties.
"""

from __future__ import annotations

import math
from asyncio import Future

import numpy as np

from engine.protocols import fastfxp as fx
from engine.protocols.regression.inverses import _reciprocal
from engine.protocols.regression.options import (
    PIVOT_ABS,
    PIVOT_LO,
    PIVOT_REL_LOG2,
    SOLVER_FRAC,
    _rt,
    coroutine,
)


@coroutine
async def _ldl_solve(A, B, bound: float, lo: int = PIVOT_LO):
    """Protocol LDL-SOLVE: oblivious LDL^T of symmetric A (guarded pivots), then solve A X = B."""
    # ``bound`` is a public upper bound on the diagonal of A (so on every pivot). A pivot below
    # 2^-32 A_kk + 2^-40 is replaced by 1 (so nothing overflows) and flagged; returns (X, bad)
    # with bad a secret bit, 1 if any pivot was flagged (X then meaningless). Guarded pivots
    # must be > 2^lo. All values are kept as arrays (also the 1 x 1 pivots): MPyC's scalar
    # operations work on lists of bits. Products are one-round (``fastfxp``).
    rt = _rt()
    await rt.returnType(Future)
    d = A.shape[0]
    vec = B.ndim == 1
    if vec:
        B = rt.np_reshape(B, (d, 1))
    cols, rinvs, bads = _ldl_factor(rt, A, bound, lo)
    X = _ldl_substitute(rt, cols, rinvs, B)
    if vec:
        X = rt.np_reshape(X, (d,))
    bad = 1 - fx.all_bits(1 - rt.np_concatenate(bads))[0]
    return X, bad


def _ldl_factor(rt, A, bound: float, lo: int):
    """A = L D L^T with guarded pivots: (columns of L below the diagonal, 1/D, flag bits)."""
    d = A.shape[0]
    floor = rt.np_diagonal(A) * 2.0**-PIVOT_REL_LOG2 + PIVOT_ABS
    hi = max(1, math.ceil(math.log2(bound)) + 1)
    S = A
    cols, rinvs, bads = [], [], []
    exps = np.arange(hi - 1, lo, -1)
    s_one = 2 ** int(np.sum(1.0 < 2.0**exps))  # the thermometer's value at 1
    for k in range(d):
        piv = S[0, :1]
        # One comparison for the guard and the thermometer of the pivot (0 <= piv <= bound
        # up to rounding: A is PSD); a flagged pivot becomes 1 with its public scale.
        lt = rt.np_sgn(rt.np_concatenate((piv - floor[k:k + 1], piv - 2.0**exps)),
                       l=SOLVER_FRAC + hi + 2, LT=True)
        bad = lt[:1]
        sc = 1 + rt.np_sum(lt[1:] * (1 << np.arange(len(exps))), keepdims=True)
        rinv = _reciprocal(piv + fx.intmul(bad, 1 - piv), lo, hi, sc + fx.intmul(bad, s_one - sc))
        rinvs.append(rinv)
        bads.append(bad)
        if k < d - 1:
            col = S[1:, 0]
            lk = fx.mul(col, rinv)
            cols.append(lk)
            S = S[1:, 1:] - fx.outer(lk, col)
    return cols, rinvs, bads


def _ldl_substitute(rt, cols, rinvs, B):
    """X with L D L^T X = B: forward substitution (L unit lower), D^-1, back substitution."""
    d = len(rinvs)
    rows = []
    Y = B
    for k in range(d):
        rows.append(Y[:1])
        if k < d - 1:
            Y = Y[1:] - fx.outer(cols[k], Y[0])
    Z = fx.mul(rt.np_vstack(rows), rt.np_reshape(rt.np_concatenate(rinvs), (d, 1)))
    # back substitution with L^T
    X = [None] * d
    X[d - 1] = Z[d - 1:]
    for k in range(d - 2, -1, -1):
        X[k] = Z[k:k + 1] - rt.np_reshape(fx.matmul(cols[k], rt.np_vstack(X[k + 1:])), (1, -1))
    return rt.np_vstack(X)
