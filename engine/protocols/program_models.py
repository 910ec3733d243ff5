"""Protocol MODELS-BY-GROUP: a program's LASSO / RIDGE / LINREG fitted per group, obliviously.

A model query with WHERE or GROUP BY is lowered (:func:`planner.lower._model`) to the finish
ops of its sufficient statistics per group: the row count n, the means and the population
covariances of z = (target, features) over the rows the WHERE leaves in the group with no
NULL in z.  They are already in the solver's field (the finish type is SecFxp(96, 48), the
solver type of :mod:`engine.protocols.regression`), normalised by public powers of two; here
they are brought to the solver's scaled units (z_k / 2^bits_k, as the model path without
WHERE does), and :func:`engine.protocols.regression.solve` fits every group (the same
public iteration counts whatever the data; n stays secret: RIDGE uses the secret 1/n).

What is opened: the presence bit per group (``group_present``, to the receivers: n >= max(1,
min_group_rows)); for RIDGE and LINREG the constant-feature bit and then the collinear bit,
each the OR over the present groups (to every party, as without WHERE); then the
coefficients of every group with those of absent groups forced to 0 (``result``, to the
receivers).  Every party takes part in the same openings without knowing which groups are
present.
"""

from __future__ import annotations

from itertools import combinations_with_replacement

import numpy as np

from engine.protocols import fastfxp as fx
from engine.protocols import finish as fin
from engine.protocols import regression
from engine.protocols.channel import Channel

SOLVER_FRAC = regression.SOLVER_FRAC


async def _scaled(fc: fin.FCtx, v: fin.FV, E: int) -> np.ndarray:
    """Raw shares (G,) of the value normalised by 2^E at the solver's 48 fraction bits."""
    v = await fin.rescale(fc, v, E)
    if v.is_public:
        return fin.raw_of(fc, v, SOLVER_FRAC)
    if v.f <= SOLVER_FRAC:
        return fin.raw_of(fc, v, SOLVER_FRAC)
    return await fin.trunc1(fc, v.sh, v.f - SOLVER_FRAC, v.f + fin.CMP_MARGIN + 1, False)


async def _statistics(fc: fin.FCtx, model, vals) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: the (d+1) x (d+1) moments (features first, target last, as MOMENTS makes
    them), the means in that order, and 1/n (RIDGE) as raw solver-field shares."""
    e = len(model.bits)
    order = list(range(1, e)) + [0]  # z = (target, features) -> (features, target)
    pos = {k: i for i, k in enumerate(order)}
    G = fc.G
    M = np.zeros((G, e, e), dtype=object)
    for (k, j), name in zip(combinations_with_replacement(range(e), 2), model.cov, strict=True):
        raw = await _scaled(fc, vals[name], model.bits[k] + model.bits[j])
        M[:, pos[k], pos[j]] = raw
        M[:, pos[j], pos[k]] = raw
    means = np.zeros((G, e), dtype=object)
    for k, name in enumerate(model.means):
        means[:, pos[k]] = await _scaled(fc, vals[name], model.bits[k])
    inv = None
    if model.inv_count is not None:
        inv = await _scaled(fc, vals[model.inv_count], 0)
    return M, means, inv


async def fit_groups(chan: Channel, fc: fin.FCtx, program, vals, pres_sh: np.ndarray, m: int):
    """Fit the program's model for every group (and for RIDGE/LINREG open its two bits);
    returns the secret coefficients [b', w'...] of every group, those of absent groups forced
    to 0, flattened, and a decoder of their opened values (original units, per group)."""
    rt = chan.mpc
    model = program.model
    opts = dict(model.options)
    t2 = regression.solver_type()
    M, means, inv = await _statistics(fc, model, vals)
    y_scale = 2.0 ** -model.bits[0]
    x_scale = [2.0 ** -b for b in model.bits[1:]]
    solver = opts.get("solver")
    kw = dict(alpha=float(opts.get("alpha", 1.0)),
              fit_intercept=bool(opts.get("fit_intercept", True)),
              max_iter=opts.get("max_iter"), tol=opts.get("tol"),
              standardize=bool(opts.get("standardize", False)),
              solver=None if solver in (None, "auto", "ldl") else solver,
              x_scale=x_scale, y_scale=y_scale)

    def arr(raw) -> object:
        return t2.array(t2.field.array(np.asarray(raw, dtype=object)), integral=False)

    fits = []
    for g in range(fc.G):  # one after the other: every party creates the same coroutines
        fits.append(await regression.solve(
            arr(M[g]), arr(means[g]), model.func, rows=(1, max(m, 1)),
            inv_rows=None if inv is None else arr(inv[g:g + 1]), **kw))
    pres = arr(np.asarray(pres_sh, dtype=object) * (1 << SOLVER_FRAC) % fc.p)
    if model.func != "LASSO":
        await _check_bits(rt, chan, model.func, fits, pres, fc.G > 1)
    coef = rt.np_concatenate([c for c, _, _ in fits])
    d1 = len(model.bits)
    keep = rt.np_concatenate([pres[g:g + 1] * np.ones(d1, dtype=int) for g in range(fc.G)])

    def decode(opened) -> list[list[float]]:
        flat = np.asarray(opened, dtype=float).reshape(fc.G, d1)
        return [[flat[g, 0] / y_scale] + [flat[g, j + 1] * x_scale[j] / y_scale
                                          for j in range(d1 - 1)] for g in range(fc.G)]

    return fx.intmul(keep, coef), decode


async def _check_bits(rt, chan: Channel, kind: str, fits, pres, grouped: bool) -> None:
    """The constant-feature and collinear bits, each ORed over the present groups, opened to
    every party in that order (DataError if set)."""
    where = "some group" if grouped else "the rows it fits"
    labels = {regression.CONSTANT_BIT: "constant-feature bit",
              regression.COLLINEAR_BIT: "collinear bit"}

    async def reveal(label, x, receivers):
        return await chan.reveal(labels[label], x, receivers)

    def anyof(bits):
        if bits[0] is None:
            return None
        v = rt.np_concatenate([rt.np_reshape(b, (1,)) if hasattr(b, "shape")
                               else rt.np_fromlist([b]) for b in bits])
        return 1 - fx.all_bits(1 - fx.intmul(pres, v))[0]

    const = anyof([c for _, c, _ in fits])
    bad = anyof([b for _, _, b in fits])
    await regression.check_bits(rt, reveal, kind, const, bad, where)
