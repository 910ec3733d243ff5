"""Public parameters of secure regression: solver type, constants, iteration counts, checks.

Nothing here computes on secret data: every value is public and the same at every party (the
arguments of :func:`engine.protocols.regression.fit`, the shapes and the row count m).

The solver works in SecFxp(SOLVER_BITS, SOLVER_FRAC) = SecFxp(96, 48): at f = 32 the scaled
diabetes Gram (entries ~2e-3) has relative resolution ~1e-7, which its condition number (~500)
turns into ~5e-5 relative coefficient error; l = 2f for secure reciprocals.

Iterations (public): ``max_iter`` = CD sweeps or ADMM iterations (per chain); defaults 100 CD
sweeps and ADMM_ITER = 24 ADMM iterations (the test problems need <= 20 CD sweeps / <= 18
iterations of the better chain before POLISH is exact; with the comparison noise modelled,
diabetes at alpha = 0.01 fails at 16 and keeps its noiseless final margins from 20 on, see
tests/test_regression.py::test_admm_support_survives_comparison_noise; 30 until issue 13).
``tol`` only sets the count when ``max_iter`` is absent: CD ceil(100 log10(1/tol) / 4) (100 at
sklearn's default 1e-4, 200 at 1e-8), ADMM 24/100 of that (24, 48). There is no convergence
test. RIDGE/LINREG are direct: ``max_iter`` and ``tol`` do nothing.

Auto rule: ``'admm'`` for every d (with one-round products it is 3-6x faster than CD even at
d = 1..3: 1000 x 3 solve 1.3 s vs 7.7 s, same error); ``'cd'`` stays selectable.

Penalties are clipped where that cannot change the solution (LASSO t_j at 2, see
:mod:`~engine.protocols.regression.lasso`) and RIDGE penalties alpha s_j^2 / m above 2^30 are
refused (NotSupportedError), so no value leaves the range of SecFxp(96, 48).
"""

from __future__ import annotations

import math

import numpy as np

from dialect.errors import NotSupportedError, ProgrammingError
from engine.protocols import runtime as mpcrt

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
#: (whose bits give POLISH its support) with CMP_FRAC_LAST (S is continuous: see SOFT). Two
#: last iterations were too few (a wrong support in ~1 of 1,500 runs of diabetes at
#: alpha = 0.01, see lasso.py); three suffice in the noise model, four leave a margin.
CMP_FRAC = 12  # a float64 simulation of the test problems finds the support down to 12
CMP_FRAC_LAST = 24
CMP_LAST = 4
#: POLISH solves exactly when the support's correlation matrix has eigenvalues >= this.
POLISH_LAM = 2.0**-16
#: POLISH accepts a KKT violation up to t * 2^-20 + 2^-40.
KKT_SLACK = 2.0**-20
#: Largest RIDGE penalty alpha/m (scaled units) accepted; LASSO penalties are clipped instead.
MAX_RIDGE = 2.0**30
DEFAULT_ITER = 100
#: ADMM's default count (two chains; POLISH makes the result exact once the support is found).
ADMM_ITER = 24
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


def _cmp_bits(frac: int, bound: float) -> int:
    """Bit length for comparing values |x| < ``bound`` held with ``frac`` fractional bits."""
    return min(SOLVER_BITS, frac + max(1, math.ceil(math.log2(bound))) + 2)


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


def _check_inputs(X, y, m: int, kind: str, sectype) -> str:
    """The upper-cased ``kind`` after checking it, X's type and the shapes of X and y."""
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
    return kind


def _plan(kind: str, d: int, m: int, alpha: float, max_iter, tol, standardize: bool,
          solver: str | None, x_scale, y_scale: float):
    """Public plan of a fit: (alpha, penalties, LASSO solver, LASSO iteration count).

    Checks alpha, the scales, the solver and (RIDGE/LINREG) the penalty range; for RIDGE and
    LINREG the solver and count are returned as given / None.
    """
    if kind == "LINREG":
        alpha = 0.0
    if not alpha >= 0 or (kind == "LASSO" and not alpha > 0):
        raise ProgrammingError(f"alpha must be {'> 0' if kind == 'LASSO' else '>= 0'}")
    pen = _penalties(kind, alpha, d, x_scale, y_scale)
    n_iter = None
    if kind == "LASSO":
        solver = choose_solver(d, solver)
        n_iter = (iterations if solver == "cd" else admm_iterations)(max_iter, tol)
    elif solver not in (None, "auto", "ldl"):
        raise ProgrammingError(f"{kind} is solved directly; solver {solver!r} does not apply")
    elif max(float(pen.max()), alpha if standardize else 0.0) / m > MAX_RIDGE:
        raise NotSupportedError(f"{kind}: alpha too large for the fixed-point solver "
                                f"(penalty / rows > 2^30 in scaled units)")
    return alpha, pen, solver, n_iter
