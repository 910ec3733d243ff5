"""Secure linear regression (LASSO, RIDGE, LINREG) on secret-shared rows; only the model is opened.

Entry point :func:`fit`, run inside an MPyC session (the unit tests use MPyC's single-party
runtime). It opens the coefficient vector (intercept first) and nothing else, except for
RIDGE/LINREG at most two bits that say why a problem cannot be solved (see below).

Precondition (guaranteed by the engine): ``X`` (m x d, d >= 1) and ``y`` ((m,) or (m, 1)) are
secure SecFxp(64, 32) arrays whose columns were multiplied by public powers of two
(``x_scale[j]``, ``y_scale``) so that |x| <= 1 and |y| <= 1; 1 <= m < 2^31. ``alpha`` is in the
units of the original data; the penalty is mapped to the scaled units here. The coefficients are
returned in the scaled units; the engine unscales: w_j = w'_j x_scale[j] / y_scale,
b = b' / y_scale.

Objectives (scikit-learn's, on the original data; b the intercept, fit when ``fit_intercept``):

* LASSO: (1/2m)||y - Xw - b||^2 + alpha ||w||_1   (``sklearn.linear_model.Lasso``)
* RIDGE: ||y - Xw - b||^2 + alpha ||w||^2          (``Ridge``: no 1/(2m), so Lambda = alpha/m)
* LINREG: ||y - Xw - b||^2                         (``LinearRegression``)
* ``standardize``: the same on features standardised inside MPC (secret means and standard
  deviations, ddof=0, never opened), mapped back to the input scale, i.e.
  ``make_pipeline(StandardScaler(), Lasso(alpha))`` with w_j / sd_j and b adjusted. A constant
  feature keeps scale 1, as in StandardScaler.

Method

1. MOMENTS. The parties read their SecFxp(64, 32) shares as integers of the same field and form
   Z^T Z and the column sums of Z = [X | y] exactly (local product, one reshare per output
   element, as MPyC's matrix product, with the local product done in 16-bit limbs on float64
   BLAS). The (d+1)(d+2)/2 + d+1 sums are converted to the field of the solver type
   SecFxp(96, 48), centred there exactly (m Z^T Z - s s^T) and scaled by a pre-scaled public
   reciprocal of m^2 (or m) with one truncation: no fixed-point division by m. Error of
   G = Xc^T Xc / m and c = Xc^T yc / m: <= 2^-48 absolute + m^2 2^-79 relative. Why SecFxp(96, 48):
   at f = 32 the scaled diabetes Gram (entries ~2e-3) has relative resolution ~1e-7, which its
   condition number (~500) turns into ~5e-5 relative coefficient error; l = 2f for reciprocals.
   Everything after MOMENTS works on the d x d system, so iterations cost nothing per row.
2. LASSO solves min 1/2 w^T G w - c^T w + sum_j t_j |w_j| (t_j the penalty in scaled units)
   in standardised variables v = w / s: s_j = 1/sd_j from INV-SQRT (secret, never opened; 0
   for a constant feature), G~ = S G S (unit diagonal; an identity row for a constant
   feature), c~ = S c, t~_j = min(t_j s_j, 2) (one batched comparison; with ``standardize``
   t~_j = min(alpha y_scale, 2), public), then w = S v. The unit diagonal gives public bounds
   whatever the data: the eigenvalues of G~ lie in [0, d]; |c~_j| <= 1; the objective is 0 at
   v = 0 and its quadratic part is >= -E[y^2]/2 >= -1/2 (centred: -var(y)/2), so the optimum has
   sum_j t~_j |v_j| <= 1/2, i.e. |v*|_1 <= v_max = 1/(2 t_min) with the public
   t_min = min_j min(t_j, 2) (s_j >= 1 since var(x_j) <= 1). Clipping t~ at 2 is exact:
   |c~_j - (G~ v)_j| <= sd(residual) <= 1 at the optimum, so t~_j > 1 forces v_j = 0.
   A public, fixed number of iterations follows:

   * ``'cd'``: cyclic coordinate descent. Coordinates are inherently sequential; per coordinate
     one inner product and one soft-thresholding S(u, t) = relu(u - t) - relu(-u - t) whose two
     comparisons are batched into one secure comparison (bit length from 1 + |v|_1 <= 1 +
     v_max, as every CD step lowers the objective).
   * ``'admm'``: two ADMM chains, penalties rho I with rho in ADMM_RHOS = (0.05, 0.5) and
     over-relaxation 1.6, run side by side as stacked arrays (one product and one comparison
     call per iteration serve both). (G~ + rho I)^-1 comes from NS-INVERSE: Newton-Schulz
     X <- X (2I - A X) from X0 = 2/(lam_lo + lam_hi) I with a public step count from the
     public eigenvalue bounds [rho, d + rho] (14 steps at d = 30, two rounds each). An
     iteration is one d x 2d product per chain (one round, opened twice: at 48 and at
     CMP_FRAC fractional bits) and one batched soft-thresholding whose 4d comparisons use
     the low-resolution copy: CMP_FRAC = 12 fractional bits (24 in the last two iterations,
     whose bits become POLISH's support) and bit length CMP_FRAC + log2(bound) + 2. The bound
     is sound: relaxed ADMM is the averaged Douglas-Rachford iteration on a = z + u, hence
     nonexpansive, started at a = 0, so |a| <= 2 |a*| = 2 |v* + u*| with |u*_j| <= t~_j / rho
     <= 2 / rho, i.e. |a| <= 2 (v_max + sqrt(d) 2 / rho_min). A comparison bit can only be
     wrong where |a -+ theta| is below the resolution, and S is continuous, so z then moves by
     less than 2^-CMP_FRAC. At the end the chain whose iterate has the lower objective is
     kept (one comparison). Why two chains: the best rho depends on the data; on the test
     problems (diabetes raw/standardised, alpha 0.01..1, insurance, synthetic d = 10, 30) one
     chain with rho = 0.1 needs up to 41 iterations before POLISH is exact, the better of the
     two chains at most 18.

   Both end with POLISH: the signs and support of the last iterate give the KKT system
   G~_AA v_A = c~_A - t~_A sign(v_A), solved obliviously (inactive coordinates masked to an
   identity block) by NS-INVERSE with the public bounds [POLISH_LAM = 2^-16, d] (26 steps at
   d = 30) plus one refinement step. Whatever H is, the eigenvalues of X H stay in [0, 1] and
   |X| <= 2^steps X0, so every later value is bounded (no range check is needed before the
   comparisons). The polished vector replaces the iterate, by a secret selection, if it
   passes a full secure KKT test (signs kept and c~ - G~ v = t~ sign(v) on the support,
   |c~ - G~ v| <= t~ off it, slack 2^-20 t~ + 2^-40) or has a lower objective. Polishing is
   exact once the iterations have found the support, provided the support's correlation
   matrix has eigenvalues >= 2^-16 (else the iterate, or the better of the two, is returned).

   Auto rule: ``'admm'`` for every d (with one-round products it is 3-6x faster than CD even
   at d = 1..3: 1000 x 3 solve 1.3 s vs 7.7 s, same error); ``'cd'`` stays selectable.
3. RIDGE and LINREG solve (G + Lambda) w = c with LDL-SOLVE (oblivious LDL^T with guarded
   pivots and d sequential reciprocals, forward and back substitution; per pivot the guard
   and the thermometer of the reciprocal are one batched comparison).

Fixed-point products after MOMENTS take one round each (:mod:`engine.protocols.fastfxp`:
PRSS-masked opening of the local product and probabilistic truncation, no secure random bits)
instead of MPyC's three (reshare, random bits, opening); this removed ~90 % of the solver's
traffic and CPU time. Reciprocals are computed for values in publicly known ranges (guarded
pivots >= 2^-40): one batched comparison against powers of two gives the exponent, then Newton
steps; 1/sqrt of a variance in [2^-40, 1] by a public number of Newton steps from 1 (no
comparison). Penalties are clipped where that cannot change the solution (see above) and
RIDGE penalties alpha s_j^2 / m above 2^30 are refused (NotSupportedError), so no value leaves
the range of SecFxp(96, 48).

Iterations (public): ``max_iter`` = CD sweeps or ADMM iterations (per chain); defaults 100 CD
sweeps and ADMM_ITER = 30 ADMM iterations (the test problems need <= 20 CD sweeps / <= 18
iterations of the better chain before POLISH is exact). ``tol`` only sets the count when
``max_iter`` is absent: CD ceil(100 log10(1/tol) / 4) (100 at sklearn's default 1e-4, 200 at
1e-8), ADMM 30/100 of that (30, 60). There is no convergence test. RIDGE/LINREG are direct:
``max_iter`` and ``tol`` do nothing.

What is revealed (all other intermediate values stay secret-shared):

* the coefficient vector, to ``receivers`` (default all parties);
* LINREG, and RIDGE with a penalty below 2^-39: ONE bit to all parties, whether some feature has
  variance < 2^-40 (in scaled units) in the joined rows -> DataError "a feature is constant"
  (with a larger RIDGE penalty a constant feature simply gets coefficient 0, as in sklearn);
* RIDGE/LINREG, only if that bit was 0: ONE bit to all parties, whether some LDL^T pivot fell
  below 2^-32 A_jj + 2^-40, i.e. some feature is up to 1 - R^2 < 2^-32 a linear combination of
  the others -> DataError "the features are collinear".

LASSO reveals only the coefficients: a (near-)constant feature gets coefficient exactly 0 (as
sklearn's Lasso does), decided by a secret bit per feature.
"""

from __future__ import annotations

import math
from asyncio import Future
from collections.abc import Callable, Sequence

import numpy as np

from dialect.errors import DataError, NotSupportedError, ProgrammingError
from engine.protocols import fastfxp as fx
from engine.protocols import fieldwords as fw
from engine.protocols import runtime as mpcrt
from engine.protocols.shares import SharedTable

coroutine = mpcrt.runtime_module.Runtime.coroutine

#: Solver fixed-point type SecFxp(BITS, FRAC): l = 2f so that secure reciprocals are accurate.
SOLVER_BITS = 96
SOLVER_FRAC = 48
#: A feature with G_jj below this (scaled units) counts as constant (sd < 2^-20).
VAR_FLOOR = 2.0**-40
#: LDL^T pivot guard: pivot < PIVOT_REL * A_jj + PIVOT_ABS counts as singular.
PIVOT_REL_LOG2 = 32
PIVOT_ABS = 2.0**-40
PIVOT_LO = -41  # guarded pivots are >= PIVOT_ABS > 2^PIVOT_LO
#: Variances (plus the constant-feature mask) lie in [VAR_FLOOR, 2) > 2^VAR_LO.
VAR_LO = -41
#: ADMM: the penalties rho of the two chains (standardised units) and over-relaxation.
ADMM_RHOS = (0.05, 0.5)
ADMM_RELAX = 1.6
#: ADMM compares its iterate with CMP_FRAC fractional bits, in the last CMP_LAST iterations
#: (whose bits give POLISH its support) with CMP_FRAC_LAST (S is continuous: see SOFT).
CMP_FRAC = 12  # a float64 simulation of the test problems finds the support down to 12
CMP_FRAC_LAST = 24
CMP_LAST = 2
#: POLISH solves exactly when the support's correlation matrix has eigenvalues >= this.
POLISH_LAM = 2.0**-16
#: POLISH accepts a KKT violation up to t * 2^-20 + 2^-40.
KKT_SLACK = 2.0**-20
#: Largest RIDGE penalty alpha/m (scaled units) accepted; LASSO penalties are clipped instead.
MAX_RIDGE = 2.0**30
DEFAULT_ITER = 100
#: ADMM's default count (two chains; POLISH makes the result exact once the support is found).
ADMM_ITER = 30
SOLVERS = ("cd", "admm")
KINDS = ("LASSO", "RIDGE", "LINREG")
_LIMB = 16
MAX_ROWS = 2**31


def _rt():
    """The MPyC runtime of the current session (``make_runtime`` replaces the default one)."""
    return mpcrt.runtime_module.mpc


def solver_type():
    """The secure fixed-point type of the d x d solver: SecFxp(96, 48)."""
    return _rt().SecFxp(SOLVER_BITS, SOLVER_FRAC)


def _int_type(field):
    """Secure integers over ``field`` with the largest bit length MPyC allows there."""
    rt = _rt()
    p = field.order
    return rt.SecInt(p.bit_length() - rt.options.sec_param - 2, p=p)


def choose_solver(d: int, solver: str | None) -> str:
    """The LASSO solver: ``solver`` if given, else 'admm' (faster than 'cd' at every d)."""
    if solver is None or solver == "auto":
        return "admm"
    if solver not in SOLVERS:
        raise ProgrammingError(f"unknown solver {solver!r} of LASSO; known: auto, cd, admm")
    return solver


def iterations(max_iter: int | None, tol: float | None) -> int:
    """The public iteration count: ``max_iter``, else one derived from ``tol``, else 100."""
    if max_iter is not None:
        return int(max_iter)
    if tol is not None:
        return max(1, math.ceil(DEFAULT_ITER * max(1.0, math.log10(1 / tol)) / 4))
    return DEFAULT_ITER


def admm_iterations(max_iter: int | None, tol: float | None) -> int:
    """ADMM's public iteration count: ``max_iter``, else ADMM_ITER (scaled by ``tol`` as above)."""
    if max_iter is not None:
        return int(max_iter)
    return max(1, round(iterations(None, tol) * ADMM_ITER / DEFAULT_ITER))


def _local_moments(Z, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Z^T Z mod p and the column sums mod p of shares Z, exactly, as object arrays of ints.

    ``Z`` is either an (m, e) object array of ints in [0, p) or a list of e columns of 64-bit
    words (K, m) (:class:`engine.protocols.shares.SharedTable`). The entries are split into
    16-bit limbs (a view of the words) and multiplied with float64 BLAS in row blocks small
    enough (< 2^20 rows) that every limb product sum stays below 2^53, so the result is exact;
    the blocks bound the memory (~64 MB) whatever m is.
    """
    if isinstance(Z, np.ndarray):
        cols = [fw.ints_to_words(Z[:, j], p) for j in range(Z.shape[1])]
    else:
        cols = list(Z)
    e = len(cols)
    k, m = cols[0].shape
    nl = 4 * k  # 16-bit limbs per element
    rows = max(1, min(1 << (52 - 2 * _LIMB), (1 << 23) // (nl * e)))
    gram = np.zeros((nl * e, nl * e), dtype=object)
    sums = np.zeros(nl * e, dtype=object)
    W = np.empty((rows, nl, e), dtype=np.float64)
    for start in range(0, m, rows):
        n = min(rows, m - start)
        for j, c in enumerate(cols):  # (n, K) words -> (n, 4K) limbs, least significant first
            W[:n, :, j] = np.ascontiguousarray(c[:, start:start + n].T).view(np.uint16)
        B = W[:n].reshape(n, nl * e)
        gram += (B.T @ B).astype(np.int64).astype(object)
        sums += B.sum(axis=0).astype(np.int64).astype(object)
    gram = gram.reshape(nl, e, nl, e)
    sums = sums.reshape(nl, e)
    shifts = [1 << (_LIMB * a) for a in range(2 * nl)]
    ztz = sum(gram[a, :, b, :] * shifts[a + b] for a in range(nl) for b in range(nl))
    total = sum(sums[a] * shifts[a] for a in range(nl))
    return ztz % p, total % p


@coroutine
async def _moments(X, y, m: int, center: bool):
    """Protocol MOMENTS: exact Z^T Z and column sums of Z = [X | y], scaled into the solver type."""
    # Returns (Gc, means): Gc (d+1) x (d+1) with G = Gc[:d, :d], c = Gc[:d, d] (centred if
    # ``center``), means the column means of Z (None if not ``center``). X, y are secure arrays
    # or SharedTables (the engine's: word shares, never turned into m x d Python ints).
    rt = _rt()
    await rt.returnType(Future)
    t2 = solver_type()
    words = isinstance(X, SharedTable)
    sectype = X.sectype if words else type(X).sectype
    s1 = _int_type(sectype.field)
    s2 = _int_type(t2.field)
    f_in = sectype.frac_length
    d = X.shape[1]
    e = d + 1
    if words:
        ztz, sums = _local_moments(X.columns + y.columns, s1.field.order)
    else:
        Xf, yf = await rt.gather(X, y)
        ztz, sums = _local_moments(np.column_stack((Xf.value, yf.value.reshape(m, 1))),
                                   s1.field.order)
    # As MPyC's secure matrix product: local product of the shares, one reshare per element.
    # Exact integers: Z^T Z at scale 2^(2 f_in) with |.| <= m 2^(2 f_in), sums at 2^f_in.
    ztz = rt._reshare(s1.array(s1.field.array(ztz)))
    sums = s1.array(s1.field.array(sums))
    ztz, sums = await rt.gather(ztz, sums)
    iu = np.triu_indices(e)
    vals = list(ztz.value[iu]) + list(sums.value)
    conv = rt.convert([s1(s1.field(int(v))) for v in vals], s2)
    conv = await rt.gather(conv)
    Q = np.zeros((e, e), dtype=object)
    Q[iu] = [int(a.value) for a in conv[: len(iu[0])]]
    Q = Q + np.triu(Q, 1).T
    s = s2.array(s2.field.array(np.array([int(a.value) for a in conv[len(iu[0]):]],
                                         dtype=object)))
    Q = s2.array(s2.field.array(Q))
    # One truncation by F bits brings everything to scale 2^SOLVER_FRAC; the public reciprocals
    # carry K extra bits so that values stay below 2^(l-2) of s2.
    headroom = s2.bit_length - 2
    k_g = headroom - 2 * f_in
    F = 2 * f_in + k_g - SOLVER_FRAC
    k_m = F + SOLVER_FRAC - f_in
    if center:
        N = Q * m - rt.np_outer(s, s)  # m^2 Cov, exact
        G = N * round(2**k_g / m**2)
    else:
        G = Q * round(2**k_g / m)
    tri = rt.np_reshape(G, (e * e,))[np.ravel_multi_index(iu, (e, e))]
    parts = [tri, s * round(2**k_m / m)] if center else [tri]
    if rt.options.no_prss:
        scaled = rt.np_trunc(rt.np_concatenate(parts), f=F, l=s2.bit_length)
        scaled = (await rt.gather(scaled)).value
    else:  # one opening and no random bits (F ~ 94 per value for np_trunc): error < 2 units
        raw = (await rt.gather(rt.np_concatenate(parts))).value
        scaled = (await fx._open_trunc(s2.field, raw, False, F, s2.bit_length))[0].value
    n_tri = len(iu[0])
    Gc = np.zeros((e, e), dtype=object)
    Gc[iu] = scaled[:n_tri]
    Gc = Gc + np.triu(Gc, 1).T
    Gc = t2.array(t2.field.array(Gc), integral=False)
    means = t2.array(t2.field.array(scaled[n_tri:]), integral=False) if center else None
    return Gc, means


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
    pos = 1 - rt.np_sgn(vc, l=bits, LT=True)
    r = fx.intmul(pos, v)
    return r[:n] - r[n:], pos[:n], pos[n:]


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
    # forward substitution (L unit lower), then scale by D^-1
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
    X = rt.np_vstack(X)
    if vec:
        X = rt.np_reshape(X, (d,))
    bad = 1 - fx.all_bits(1 - rt.np_concatenate(bads))[0]
    return X, bad


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


@coroutine
async def _ns_inverse(A, lam_min: float, lam_hi: float, lam_lo=None):
    """Protocol NS-INVERSE: A^-1 for symmetric A with public eigenvalue bounds, Newton-Schulz."""
    # X <- X (2I - A X) from X0 = 2/(lam_lo + lam_hi) I squares the error I - A X each step;
    # the public count takes it from (kappa - 1)/(kappa + 1) to 2^-52, kappa = lam_hi / lam_min.
    # A may be a stack (n, d, d); ``lam_lo`` (default lam_min) then gives each one's X0.
    rt = _rt()
    await rt.returnType((type(A), A.shape))
    d = A.shape[-1]
    eye = np.eye(d)
    e0 = (lam_hi - lam_min) / (lam_hi + lam_min)
    steps = max(1, math.ceil(math.log2(52 * math.log(2) / -math.log(e0)))) if e0 > 0 else 1
    lo = np.reshape(lam_min if lam_lo is None else lam_lo, (-1, 1, 1) if A.ndim == 3 else ())
    X = type(A).sectype.array(np.broadcast_to(eye * (2 / (lo + lam_hi)), A.shape).copy())
    for _ in range(steps):
        X = fx.matmul(X, 2 * eye - fx.matmul(A, X))
    return X


def _objective(G, c, t, w, absw):
    """1/2 w^T G w - c^T w + t^T |w| (secret, shape (1,))."""
    rt = _rt()
    return rt.np_sum(fx.mul(w, fx.scale(fx.matmul(G, w), 0.5) - c) + fx.mul(t, absw),
                     keepdims=True)


def _cmp_bits(frac: int, bound: float) -> int:
    """Bit length for comparing values |x| < ``bound`` held with ``frac`` fractional bits."""
    return min(SOLVER_BITS, frac + max(1, math.ceil(math.log2(bound))) + 2)


@coroutine
async def _cd(G, c, t, sweeps: int, bound: float):
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
    for _ in range(sweeps):
        for j in range(d):
            a = c[j:j + 1] - rt.np_reshape(fx.matmul(rows[j], w), (1,))
            z, b1, b2 = await _soft_threshold(a, t[j:j + 1], bits=bits)
            # w[j] = z etc. as arithmetic with a public unit vector (no secret indexing)
            w = w + (z - w[j:j + 1]) * eye[j]
            up = up + (b1 - up[j:j + 1]) * eye[j]
            down = down + (b2 - down[j:j + 1]) * eye[j]
    return w, up, down


@coroutine
async def _admm(G, c, t, iters: int, v_max: float):
    """Protocol LASSO-ADMM: two ADMM chains (rho I, unit diagonal G), NS-INVERSE, batched SOFT."""
    # The chains (penalties ADMM_RHOS) run side by side as stacked arrays: one product and one
    # comparison call per iteration for both. At the end the iterate with the lower objective
    # is kept (one comparison). ``v_max``: public bound on |v*|_1 (module docstring).
    rt = _rt()
    await rt.returnType(Future)
    d = G.shape[0]
    n = len(ADMM_RHOS)
    rhos = np.array(ADMM_RHOS).reshape(n, 1, 1)
    eye = np.eye(d)
    Gs = rt.np_concatenate([rt.np_reshape(G, (1, d, d))] * n, axis=0)
    M = _ns_inverse(Gs + eye * rhos, min(ADMM_RHOS), d * (1 + 2.0**-30) + max(ADMM_RHOS),
                    lam_lo=rhos.reshape(-1))
    # Over-relaxed step a = r v + (1 - r) z + u with v = M c + rho M (z - u), as one product:
    # a = K0 + [r rho M + (1 - r) I | I - r rho M] @ [z; u].
    rM = fx.scale(M, ADMM_RELAX * rhos)
    K = rt.np_concatenate((rM + (1 - ADMM_RELAX) * eye, eye - rM), axis=2)
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
    z = u = up = down = type(G).sectype.array(np.zeros(n * d))
    for i in range(iters):
        drop, theta_c, K0_c, bits = low[CMP_FRAC if i < iters - CMP_LAST else CMP_FRAC_LAST]
        zu = rt.np_concatenate((rt.np_reshape(z, (n, d, 1)), rt.np_reshape(u, (n, d, 1))), axis=1)
        a, a_c = fx.matmul(K, zu, extra=drop)
        a = rt.np_reshape(a, (n * d,)) + K0
        a_c = rt.np_reshape(a_c, (n * d,)) + K0_c
        z, up, down = await _soft_threshold(a, theta, (a_c, theta_c), bits)
        u = a - z
    # keep the chain with the lower objective 1/2 z^T G z - c^T z + t^T |z|
    Z = rt.np_reshape(z, (n, d))
    absz = fx.intmul(rt.np_reshape(up - down, (n, d)), Z)
    GZ = fx.matmul(Z, G)
    f = rt.np_sum(fx.mul(Z, fx.scale(GZ, 0.5) - c) + fx.mul(absz, t), axis=1)
    second = rt.np_sgn(f[1:2] - f[:1], LT=True)
    parts = [rt.np_reshape(x, (n, d)) for x in (z, up, down)]
    first = rt.np_concatenate([x[0] for x in parts])
    diff = rt.np_concatenate([x[1] for x in parts]) - first
    sel = first + fx.intmul(second, diff)
    return sel[:d], sel[d:2 * d], sel[2 * d:]


@coroutine
async def _polish(G, c, t, z, up, down):
    """Protocol POLISH: solve the KKT system on the iterate's support and signs, keep if valid."""
    # H = G on the support (identity elsewhere) is inverted by NS-INVERSE with the public
    # eigenvalue bound POLISH_LAM (plus one refinement step); whatever H is, the solution is
    # bounded (|X| <= 2^steps * X0), and only a full KKT test (stationarity on the support too)
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
    lt = rt.np_sgn(rt.np_concatenate((wp, -wp, slack - dev, slack + dev)), LT=True)
    neg, pos, hi, lo = lt[:d], lt[d:2 * d], lt[2 * d:3 * d], lt[3 * d:]
    viol = fx.intmul(rt.np_concatenate((up, down)), rt.np_concatenate((neg, pos)))
    kkt = fx.all_bits(1 - rt.np_concatenate((viol[:d] + viol[d:], hi + lo)))  # 0/1 each
    f_new = _objective(G, c, t, wp, fx.intmul(1 - 2 * neg, wp))
    f_old = _objective(G, c, t, z, fx.intmul(sgn, z))
    better = rt.np_sgn(f_new - f_old, LT=True)
    accept = kkt + better - fx.intmul(kkt, better)
    return z + fx.intmul(accept, wp - z)


def _penalties(kind: str, alpha: float, d: int, x_scale, y_scale: float) -> np.ndarray:
    """Public per-feature penalties in scaled units (LASSO t_j, clipped at 2; RIDGE alpha s_j^2)."""
    xs = np.ones(d) if x_scale is None else np.asarray(x_scale, dtype=float)
    if xs.shape != (d,) or not np.all(xs > 0) or not y_scale > 0:
        raise ProgrammingError("x_scale must hold d positive numbers and y_scale be positive")
    if kind == "LASSO":  # t_j > 1 forces w_j = 0 (|cov(x_j, residual)| <= 1): clipping is exact
        return np.minimum(alpha * y_scale * xs, 2.0)
    if kind == "RIDGE":
        return alpha * xs**2
    return np.zeros(d)


async def _lasso(G, c, g, const, pen: np.ndarray, alpha: float, y_scale: float,
                 standardize: bool, solver: str, n_iter: int):
    """LASSO on the (centred) moments: standardise, iterate, POLISH; w in scaled units."""
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
        small = _rt().np_sgn(raw - 2, l=_cmp_bits(SOLVER_FRAC, 2.0**22), LT=True)
        tt = 2 + fx.intmul(small, raw - 2)
        t_min = float(pen.min()) * (1 - 2.0**-30)  # sd_j <= 1 in scaled units
    # sum t~ |v| <= 1/2 at the optimum; ADMM's iterates stay within 2 |v* + u*|.
    v_max = 0.5 / t_min
    if solver == "cd":
        z, up, down = await _cd(Gt, ct, tt, n_iter, 1 + d * v_max + 2)
    else:
        z, up, down = await _admm(Gt, ct, tt, n_iter, v_max)
    v = await _polish(Gt, ct, tt, z, up, down)
    return fx.intmul(up + down, fx.mul(v, s))  # inactive coefficients exactly 0


async def fit(X, y, m: int, kind: str, *, alpha: float = 1.0, fit_intercept: bool = True,
              max_iter: int | None = None, tol: float | None = None, standardize: bool = False,
              solver: str | None = None, sectype=None, x_scale: Sequence[float] | None = None,
              y_scale: float = 1.0, receivers: Sequence[int] | None = None,
              on_phase: Callable[[str], None] | None = None) -> list[float] | None:
    """Fit ``kind`` (LASSO, RIDGE, LINREG) on secret X (m x d) and y ((m,) or (m, 1)).

    Returns [b', w'_1, ..., w'_d] in the scaled units of the inputs, opened to ``receivers``
    (default: all parties; the others get None). ``alpha`` is in original units, ``x_scale`` and
    ``y_scale`` are the public factors the columns were multiplied by (default 1), ``sectype``
    the input type (default: that of X). Raises DataError for RIDGE/LINREG on singular data
    (see the module docstring for the one or two bits this opens).
    """
    rt = _rt()
    kind = kind.upper()
    if kind not in KINDS:
        raise ProgrammingError(f"unknown regression {kind}")
    if sectype is not None and type(X).sectype is not sectype:
        raise ProgrammingError(f"X has type {type(X).sectype.__name__}, not {sectype.__name__}")
    if X.ndim != 2 or X.shape[0] != m or X.shape[1] < 1:
        raise ProgrammingError(f"X must have shape (m, d) = ({m}, d >= 1), not {X.shape}")
    if y.shape not in ((m,), (m, 1)):
        raise ProgrammingError(f"y must have shape ({m},) or ({m}, 1), not {y.shape}")
    if not 1 <= m < MAX_ROWS:
        raise NotSupportedError(f"regression needs 1 <= rows < 2^31, not {m}")
    d = X.shape[1]
    if kind == "LINREG":
        alpha = 0.0
    if not alpha >= 0 or (kind == "LASSO" and not alpha > 0):
        raise ProgrammingError(f"alpha must be {'> 0' if kind == 'LASSO' else '>= 0'}")
    pen = _penalties(kind, alpha, d, x_scale, y_scale)
    if kind == "LASSO":
        solver = choose_solver(d, solver)
        n_iter = (iterations if solver == "cd" else admm_iterations)(max_iter, tol)
    elif solver not in (None, "auto", "ldl"):
        raise ProgrammingError(f"{kind} is solved directly; solver {solver!r} does not apply")
    elif max(float(pen.max()), alpha if standardize else 0.0) / m > MAX_RIDGE:
        raise NotSupportedError(f"{kind}: alpha too large for the fixed-point solver "
                                f"(penalty / rows > 2^30 in scaled units)")
    t2 = solver_type()
    center = fit_intercept or standardize
    Gc, means = await _moments(X, y, m, center)
    if on_phase is not None:  # wait for our own shares of the Gram (no extra messages)
        await rt.gather(Gc)
        on_phase("gram")
    G = Gc[:d, :d]
    c = Gc[:d, d]
    g = rt.np_diagonal(G)
    # secret bit per feature: (near) zero variance; 0 <= g <= 1 (+ rounding)
    const = rt.np_sgn(g - VAR_FLOOR, l=SOLVER_FRAC + 3, LT=True)
    if kind == "LASSO":
        w = await _lasso(G, c, g, const, pen, alpha, y_scale, standardize, solver, n_iter)
    else:
        lam = alpha / m if standardize else float(pen.min()) / m
        if lam < 2 * PIVOT_ABS:  # LINREG, tiny RIDGE penalty: a constant feature is fatal
            if await rt.output(1 - fx.all_bits(1 - const)[0]):
                raise DataError(f"{kind}: a feature is constant (zero variance) in the joined "
                                "rows; drop it, or use RIDGE or LASSO")
        if standardize:  # sklearn's StandardScaler leaves zero-variance columns unscaled
            A = G + (g + const) * (alpha / m) * np.eye(d, dtype=int)
            bound = 2 * (1 + alpha / m)
        else:
            A = G + t2.array(np.diag(pen / m))
            bound = 2 + float(pen.max()) / m
        w, bad = await _ldl_solve(A, c, bound)
        if await rt.output(bad):
            raise DataError(f"{kind}: the features are collinear in the joined rows (a feature "
                            "is a linear combination of others, 1 - R^2 < 2^-32); drop one"
                            + (", or increase alpha" if kind == "RIDGE" else ", or use RIDGE"))
    if center:
        b = -rt.np_reshape(fx.matmul(rt.np_reshape(means[:d], (1, d)), rt.np_reshape(w, (d, 1))),
                           (1,))
        if fit_intercept:
            b = b + means[d:]
    else:
        b = t2.array(np.zeros(1))
    out = await rt.output(rt.np_concatenate((b, w)),
                          receivers=None if receivers is None else list(receivers))
    if out is None:
        return None
    return [float(v) for v in np.asarray(out).reshape(-1)]
