"""Secure aggregates over the secret-shared rows; only the final values are opened."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dialect.errors import DataError
from engine.protocols import regression
from engine.protocols.fixedpoint import FRAC_BITS
from planner.plan import Aggregate, ColumnRef, Plan

if TYPE_CHECKING:
    from engine.session.runner import Session


def column_index(plan: Plan, ref: ColumnRef) -> int:
    """Position of ``ref`` in the shared table: the scans' columns, left scan first."""
    layout = [(s.party, c.lower()) for s in plan.scans for c in s.columns]
    return layout.index((ref.party, ref.column.lower()))


async def evaluate(sess: Session, plan: Plan, m: int, table, sf) -> list[tuple] | None:
    """Compute the plan's aggregates on ``table`` (m rows) and open them to the receivers."""
    mpc = sess.mpc
    receivers = [sess.job.pids[r] for r in plan.root.receivers]
    aggs = plan.aggregate.aggregates
    if aggs[0].is_model:
        return await fit_model(sess, plan, m, table, receivers)
    summed = sorted({column_index(plan, a.args[0]) for a in aggs if a.func in ("SUM", "AVG")})
    sums: dict[int, Any] = {}
    if summed and m > 0:
        total = table[:, summed].column_sums()  # local: no interaction until the output
        sess.phase("aggregate")
        opened = await mpc.output(total, receivers=receivers, raw=True)
        sess.phase("reveal")
        if opened is not None:
            p = sf.field.order
            ints = [int(v) for v in np.asarray(opened.value).reshape(-1)]
            ints = [v - p if v > p // 2 else v for v in ints]
            sums = dict(zip(summed, ints, strict=True))
    if sess.pid not in receivers:
        return None
    row = []
    for a, out in zip(aggs, plan.output, strict=True):
        if a.func == "COUNT":
            row.append(m)
        elif m == 0:
            row.append(None)
        else:
            s = sums[column_index(plan, a.args[0])]
            if a.func == "AVG":
                row.append(s / 2**FRAC_BITS / m)
            elif out.dtype == "HUGEINT":  # a sum of integers is exact: keep it an integer
                row.append((s + (1 << (FRAC_BITS - 1))) >> FRAC_BITS)
            else:
                row.append(s / 2**FRAC_BITS)
    return [tuple(row)]


def model_scales(agg: Aggregate) -> tuple[float, list[float]]:
    """The public factors 2**-k the owners applied to the target and to each feature."""
    factor = [2.0 ** -(c.scale_bits or 0) for c in agg.args]
    return factor[0], factor[1:]


def term_names(agg: Aggregate) -> list[str]:
    """Feature names as written, qualified only where two tables share a column name."""
    names = [c.column for c in agg.args[1:]]
    return [f"{c.table}.{c.column}" if names.count(c.column) > 1 else c.column
            for c in agg.args[1:]]


async def fit_model(sess: Session, plan: Plan, m: int, table, receivers: list[int]
                    ) -> list[tuple] | None:
    """LASSO / RIDGE / LINREG on the shared rows; opens only the coefficients."""
    agg = plan.aggregate.aggregates[0]
    d = len(agg.args) - 1
    if m == 0:
        raise DataError(f"{agg.func}: the intersection is empty; there is nothing to fit")
    if m <= d:
        raise DataError(f"{agg.func}: {d} features need more than {d} rows; the intersection "
                        "is smaller (more features than rows)")
    idx = [column_index(plan, c) for c in agg.args]
    y = table[:, idx[0]]
    X = table[:, idx[1:]]
    y_scale, x_scale = model_scales(agg)
    opts = dict(agg.options)
    solver = opts.get("solver")
    coef = await regression.fit(
        X, y, m, agg.func, alpha=float(opts.get("alpha", 1.0)),
        fit_intercept=bool(opts.get("fit_intercept", True)), max_iter=opts.get("max_iter"),
        tol=opts.get("tol"), standardize=bool(opts.get("standardize", False)),
        solver=None if solver in (None, "auto", "ldl") else solver,
        x_scale=x_scale, y_scale=y_scale, receivers=receivers, on_phase=sess.phase)
    sess.phase("solve")
    if coef is None:
        return None
    b = coef[0] / y_scale
    w = [coef[j + 1] * x_scale[j] / y_scale for j in range(d)]
    return [("intercept", b)] + list(zip(term_names(agg), w, strict=True))
