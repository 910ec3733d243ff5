"""Secure aggregates over the secret-shared rows; only the final values are opened."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dialect.errors import NotSupportedError
from engine.protocols.fixedpoint import FRAC_BITS
from planner.plan import ColumnRef, Plan

if TYPE_CHECKING:
    from engine.session import Session


def column_index(plan: Plan, ref: ColumnRef) -> int:
    """Position of ``ref`` in the shared table: the scans' columns, left scan first."""
    layout = [(s.party, c.lower()) for s in plan.scans for c in s.columns]
    return layout.index((ref.party, ref.column.lower()))


async def evaluate(sess: Session, plan: Plan, m: int, table, sf) -> list[tuple] | None:
    """Compute the plan's aggregates on ``table`` (m rows) and open them to the receivers."""
    mpc = sess.mpc
    receivers = [sess.job.pids[r] for r in plan.root.receivers]
    aggs = plan.aggregate.aggregates
    if any(a.is_model for a in aggs):
        raise NotSupportedError(f"{aggs[0].func} is not available yet")
    summed = sorted({column_index(plan, a.args[0]) for a in aggs if a.func in ("SUM", "AVG")})
    sums: dict[int, Any] = {}
    if summed and m > 0:
        cols = table[:, summed] if len(summed) < table.shape[1] else table
        total = mpc.np_sum(cols, axis=0)  # local: no interaction until the output
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
