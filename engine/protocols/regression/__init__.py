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

The protocols, one module each: :mod:`.moments` (MOMENTS: exact centred Gram matrix in
SecFxp(96, 48); after it everything works on the d x d system), :mod:`.lasso` (standardisation,
LASSO-CD, LASSO-ADMM, SOFT), :mod:`.polish` (POLISH: KKT solve on the support), :mod:`.ldl`
(LDL-SOLVE for RIDGE and LINREG), :mod:`.inverses` (RECIPROCAL, INV-SQRT, NS-INVERSE) and
:mod:`.options` (public constants, solver choice, iteration counts, argument checks).
Fixed-point products after MOMENTS take one round each (:mod:`engine.protocols.fastfxp`; MPyC's
take three), which removed ~90 % of the solver's traffic and CPU time.

What is revealed (all other intermediate values stay secret-shared), with the label ``fit``
passes to ``reveal``:

* COEFFICIENTS: the coefficient vector, to ``receivers`` (default all parties);
* CONSTANT_BIT (LINREG, and RIDGE with a penalty below 2^-39): ONE bit to all parties, whether
  some feature has variance < 2^-40 (in scaled units) in the joined rows -> DataError "a feature
  is constant" (with a larger RIDGE penalty a constant feature simply gets coefficient 0, as in
  sklearn);
* COLLINEAR_BIT (RIDGE/LINREG, only if that bit was 0): ONE bit to all parties, whether some
  LDL^T pivot fell below 2^-32 A_jj + 2^-40, i.e. some feature is up to 1 - R^2 < 2^-32 a linear
  combination of the others -> DataError "the features are collinear".

LASSO reveals only the coefficients.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from dialect.errors import DataError
from engine.protocols import fastfxp as fx
from engine.protocols import runtime as mpcrt  # noqa: F401  (as before the split)
from engine.protocols.regression.inverses import (  # noqa: F401  (tests use some directly)
    _inv_sqrt,
    _inv_sqrt_steps,
    _ns_inverse,
    _reciprocal,
    _thermometer,
)
from engine.protocols.regression.lasso import (  # noqa: F401
    _admm,
    _admm_system,
    _best_chain,
    _cd,
    _soft_threshold,
    _standardize,
)
from engine.protocols.regression.ldl import _ldl_factor, _ldl_solve, _ldl_substitute  # noqa: F401
from engine.protocols.regression.moments import _local_moments, _moments  # noqa: F401
from engine.protocols.regression.options import (  # noqa: F401
    _LIMB,
    ADMM_ITER,
    ADMM_RELAX,
    ADMM_RHOS,
    CMP_FRAC,
    CMP_FRAC_LAST,
    CMP_LAST,
    DEFAULT_ITER,
    KINDS,
    KKT_SLACK,
    MAX_RIDGE,
    MAX_ROWS,
    PIVOT_ABS,
    PIVOT_LO,
    PIVOT_REL_LOG2,
    POLISH_LAM,
    SOLVER_BITS,
    SOLVER_FRAC,
    SOLVERS,
    VAR_FLOOR,
    VAR_LO,
    _check_inputs,
    _cmp_bits,
    _int_type,
    _penalties,
    _plan,
    _rt,
    admm_iterations,
    choose_solver,
    coroutine,
    iterations,
    solver_type,
)
from engine.protocols.regression.polish import _objective, _polish  # noqa: F401

#: Labels of the three values :func:`fit` may open, passed to ``reveal`` (see the docstring).
CONSTANT_BIT = "constant-feature bit"
COLLINEAR_BIT = "collinear bit"
COEFFICIENTS = "coefficients"
DISCLOSURES = (CONSTANT_BIT, COLLINEAR_BIT, COEFFICIENTS)

#: ``reveal(label, x, receivers)``: open secret ``x`` to ``receivers`` (None: all parties) and
#: return the opened value (None at a party that receives nothing), as ``rt.output`` does.
Reveal = Callable[[str, Any, list[int] | None], Awaitable[Any]]

__all__ = ["COEFFICIENTS", "COLLINEAR_BIT", "CONSTANT_BIT", "DISCLOSURES", "Reveal", "fit",
           "solve", "check_bits",
           "admm_iterations", "choose_solver", "iterations", "solver_type"]


async def fit(X, y, m: int, kind: str, *, alpha: float = 1.0, fit_intercept: bool = True,
              max_iter: int | None = None, tol: float | None = None, standardize: bool = False,
              solver: str | None = None, sectype=None, x_scale: Sequence[float] | None = None,
              y_scale: float = 1.0, receivers: Sequence[int] | None = None,
              on_phase: Callable[[str], None] | None = None,
              reveal: Reveal | None = None) -> list[float] | None:
    """Fit ``kind`` (LASSO, RIDGE, LINREG) on secret X (m x d) and y ((m,) or (m, 1)).

    Returns [b', w'_1, ..., w'_d] in the scaled units of the inputs, opened to ``receivers``
    (default: all parties; the others get None). ``alpha`` is in original units, ``x_scale`` and
    ``y_scale`` are the public factors the columns were multiplied by (default 1), ``sectype``
    the input type (default: that of X). Raises DataError for RIDGE/LINREG on singular data
    (see the module docstring for the one or two bits this opens). ``reveal`` (optional, see
    :data:`Reveal`) is awaited instead of ``rt.output(x, receivers=...)`` for each of these
    openings, with its label CONSTANT_BIT, COLLINEAR_BIT or COEFFICIENTS.
    """
    rt = _rt()
    kind = _check_inputs(X, y, m, kind, sectype)
    center = fit_intercept or standardize
    Gc, means = await _moments(X, y, m, center)
    if on_phase is not None:  # wait for our own shares of the Gram (no extra messages)
        await rt.gather(Gc)
        on_phase("gram")
    coef, const_bit, bad_bit = await solve(
        Gc, means, kind, rows=(m, m), alpha=alpha, fit_intercept=fit_intercept,
        max_iter=max_iter, tol=tol, standardize=standardize, solver=solver, x_scale=x_scale,
        y_scale=y_scale)
    await check_bits(rt, reveal, kind, const_bit, bad_bit)
    out = await _open(rt, reveal, COEFFICIENTS, coef,
                      None if receivers is None else list(receivers))
    if out is None:
        return None
    return [float(v) for v in np.asarray(out).reshape(-1)]


async def solve(Gc, means, kind: str, *, rows: tuple[int, int], inv_rows=None,
                alpha: float = 1.0, fit_intercept: bool = True, max_iter: int | None = None,
                tol: float | None = None, standardize: bool = False, solver: str | None = None,
                x_scale: Sequence[float] | None = None, y_scale: float = 1.0):
    """``kind`` on the moments of MOMENTS (Gc (d+1) x (d+1) with G = Gc[:d, :d] and c =
    Gc[:d, d]; ``means`` of the features, then the target; None if not centred), all secret.

    ``rows`` = (n_min, n_max) are public bounds of the row count n; if they differ, RIDGE
    needs ``inv_rows``, the secret 1/n (shape (1,)).  Returns the secret coefficients
    [b', w'...] (scaled units) and the secret constant-feature and collinear bits (RIDGE,
    LINREG; None where they do not apply); nothing is opened.
    """
    rt = _rt()
    kind = kind.upper()
    d = Gc.shape[0] - 1
    n_min, n_max = rows
    alpha, pen, solver, n_iter = _plan(kind, d, n_min, alpha, max_iter, tol, standardize, solver,
                                       x_scale, y_scale)
    t2 = solver_type()
    center = fit_intercept or standardize
    G = Gc[:d, :d]
    c = Gc[:d, d]
    g = rt.np_diagonal(G)
    # secret bit per feature: (near) zero variance; 0 <= g <= 1 (+ rounding)
    const = fx.ltz(g - VAR_FLOOR, SOLVER_FRAC + 3)
    const_bit = bad = None
    if kind == "LASSO":
        w = await _lasso(G, c, g, const, pen, alpha, y_scale, standardize, solver, n_iter)
    else:
        inv = np.full(d, 1 / n_min) if inv_rows is None else rt.np_concatenate([inv_rows] * d)
        w, const_bit, bad = await _direct(rt, kind, t2, G, c, g, const, pen, alpha,
                                          (n_min, n_max), inv, standardize)
    b = _intercept(rt, t2, means, w, d, center, fit_intercept)
    return rt.np_concatenate((b, w)), const_bit, bad


async def check_bits(rt, reveal: Reveal | None, kind: str, const_bit, bad_bit,
                     where: str = "the joined rows") -> None:
    """Open the constant-feature bit, then the collinear bit (each if given); DataError if set."""
    if const_bit is not None and await _open(rt, reveal, CONSTANT_BIT, const_bit):
        raise DataError(f"{kind}: a feature is constant (zero variance) in {where}; drop it, "
                        "or use RIDGE or LASSO")
    if bad_bit is not None and await _open(rt, reveal, COLLINEAR_BIT, bad_bit):
        raise DataError(f"{kind}: the features are collinear in {where} (a feature is a "
                        "linear combination of others, 1 - R^2 < 2^-32); drop one"
                        + (", or increase alpha" if kind == "RIDGE" else ", or use RIDGE"))


async def _open(rt, reveal: Reveal | None, label: str, x, receivers=None):
    """Open ``x`` to ``receivers`` (None: all parties) by ``reveal`` if given, else rt.output."""
    if reveal is None:
        return await rt.output(x, receivers=receivers)
    return await reveal(label, x, receivers)


async def _lasso(G, c, g, const, pen: np.ndarray, alpha: float, y_scale: float,
                 standardize: bool, solver: str, n_iter: int):
    """LASSO on the (centred) moments: standardise, iterate, POLISH; w in scaled units."""
    d = G.shape[0]
    s, Gt, ct, tt, v_max = _standardize(G, c, g, const, pen, alpha, y_scale, standardize)
    if solver == "cd":
        z, up, down = await _cd(Gt, ct, tt, n_iter, 1 + d * v_max + 2)
    else:
        z, up, down = await _admm(Gt, ct, tt, n_iter, v_max)
    v = await _polish(Gt, ct, tt, z, up, down)
    return fx.intmul(up + down, fx.mul(v, s))  # inactive coefficients exactly 0


async def _direct(rt, kind: str, t2, G, c, g, const, pen: np.ndarray, alpha: float,
                  rows: tuple[int, int], inv, standardize: bool):
    """RIDGE/LINREG: (G + Lambda) w = c by LDL-SOLVE, Lambda = penalty / n with ``inv`` = 1/n
    per feature (secret, or public when n is); returns (w, constant bit or None, collinear
    bit), all secret."""
    d = G.shape[0]
    n_min, n_max = rows
    lam_lo = alpha / n_max if standardize else float(pen.min()) / n_max
    const_bit = None
    if lam_lo < 2 * PIVOT_ABS:  # LINREG, tiny RIDGE penalty: a constant feature is fatal
        const_bit = 1 - fx.all_bits(1 - const)[0]
    if kind == "LINREG":
        A = G
        bound = 2.0
    elif isinstance(inv, np.ndarray):  # a public row count
        if standardize:  # sklearn's StandardScaler leaves zero-variance columns unscaled
            A = G + (g + const) * (alpha * inv[0]) * np.eye(d, dtype=int)
        else:
            A = G + t2.array(np.diag(pen * inv))
    elif standardize:
        A = G + fx.scale(fx.mul(g + const, inv), alpha) * np.eye(d, dtype=int)
    else:
        A = G + fx.scale(inv, pen) * np.eye(d, dtype=int)
    if kind != "LINREG":
        bound = 2 * (1 + alpha / n_min) if standardize else 2 + float(pen.max()) / n_min
    w, bad = await _ldl_solve(A, c, bound)
    return w, const_bit, bad


def _intercept(rt, t2, means, w, d: int, center: bool, fit_intercept: bool):
    """b' = -mean(x)^T w (+ mean(y) if ``fit_intercept``) if centred, else 0; secret, (1,)."""
    if center:
        b = -rt.np_reshape(fx.matmul(rt.np_reshape(means[:d], (1, d)), rt.np_reshape(w, (d, 1))),
                           (1,))
        if fit_intercept:
            b = b + means[d:]
    else:
        b = t2.array(np.zeros(1))
    return b
