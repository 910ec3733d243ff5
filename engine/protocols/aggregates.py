"""Secure aggregates over the secret-shared rows, one ``visit_<Node>`` per plan node class.

COUNT is the public size m.  SUM and AVG: every column sum the query needs is computed locally
on the shares and opened to the receivers in one output (the exact field sum; AVG divides it by
the public m).  LASSO / RIDGE / LINREG: :mod:`engine.protocols.regression`, which opens only
the coefficients (and the bits the plan lists).  Nothing else is opened.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dialect.errors import DataError, NotSupportedError
from engine.protocols import regression
from engine.protocols.channel import Channel
from engine.protocols.fixedpoint import FRAC_BITS
from engine.protocols.shares import ChunkedTable, ReducedRows, SharedTable, materialized
from planner.plan import Aggregate, ColumnRef, Count, Plan


def column_index(plan: Plan, ref: ColumnRef) -> int:
    """Position of ``ref`` in the shared table: the scans' columns, left scan first."""
    layout = [(s.party, c.lower()) for s in plan.scans for c in s.columns]
    return layout.index((ref.party, ref.column.lower()))


def visitor(executor: Any, node: Aggregate):
    """``executor.visit_<node class>``, or a clear error if there is no secure implementation."""
    method = getattr(executor, f"visit_{type(node).__name__}", None)
    if method is None:
        raise NotSupportedError(f"{node.func} ({type(node).__name__}) has no secure "
                                f"implementation in {type(executor).__name__}")
    return method


async def evaluate(chan: Channel, plan: Plan, m: int, table, sf) -> list[tuple] | None:
    """Compute the plan's aggregates on ``table`` (m rows) and open them to the receivers.

    A program plan runs :func:`engine.protocols.program.run_program`, which returns the
    present groups' opened rows in the domain order (None at a party that receives nothing);
    :func:`engine.protocols.present.present` then applies ORDER BY / LIMIT / OFFSET and the
    output types.  Model plans keep :class:`Models`.
    """
    program = plan.program
    if program is not None:  # runs a ChunkedTable chunk by chunk where it can
        return await _run_program(chan, plan, program, m, table, sf)
    if plan.model is not None:  # reduces a ChunkedTable chunk by chunk (Models._fit)
        return await visitor(Models(chan, plan), plan.model)(plan.model, m, table)
    return await ScalarAggregates(chan, plan, sf).run(m, await materialized(table))


def group_minimum(agreed: int, m: int) -> int:
    """The presence threshold of a group's row count: max(1, the largest min_group_rows of the
    parties, each as it sent it: engine.protocols.agreement), clipped to m + 1 (no group has
    more than m rows, so the result is the same and the public constant stays within its
    bound).  An empty group is never output."""
    return max(1, min(agreed, m + 1))


async def _run_program(chan: Channel, plan: Plan, program, m: int, table, sf
                       ) -> list[tuple] | None:
    try:
        from engine.protocols.program import run_program
    except ModuleNotFoundError as e:  # pragma: no cover - until the program executor exists
        if e.name != "engine.protocols.program":
            raise
        raise NotSupportedError("this engine cannot run program plans yet") from e
    from engine.protocols.present import present

    rows = await run_program(chan, plan, program, m, table, sf,
                             min_group_rows=group_minimum(chan.min_group_rows, m))
    if rows is None or program.model is not None:  # a model's rows are final
        return rows
    return present(rows, program, plan.output)


class ScalarAggregates:
    """COUNT / SUM / AVG of one plan: one opening of all the column sums they need."""

    def __init__(self, chan: Channel, plan: Plan, sf):
        self.chan, self.plan, self.sf = chan, plan, sf

    async def run(self, m: int, table) -> list[tuple] | None:
        aggs = self.plan.aggregate.aggregates
        methods = [visitor(self, a) for a in aggs]
        receivers = [self.chan.pids[r] for r in self.plan.root.receivers]
        sums = await self._open_sums(m, table, receivers)
        if self.chan.pid not in receivers:
            return None
        if sums is None:  # nothing was opened: the result follows from the public m alone
            self.chan.opened("result")
            sums = {}
        return [tuple(f(a, m, sums) for f, a in zip(methods, aggs, strict=True))]

    async def _open_sums(self, m: int, table, receivers: list[int]) -> dict[int, int] | None:
        """The exact field sums of the columns SUM/AVG need, opened to ``receivers`` (None if
        there is nothing to open)."""
        summed = sorted({column_index(self.plan, a.args[0]) for a in self.plan.aggregate.aggregates
                         if not isinstance(a, Count)})
        if not summed or m == 0:
            return None
        total = table[:, summed].column_sums()  # local: no interaction until the output
        self.chan.phase("aggregate")
        opened = await self.chan.reveal("result", total, receivers, raw=True)
        self.chan.phase("reveal")
        if opened is None:
            return {}
        p = self.sf.field.order
        ints = [int(v) for v in np.asarray(opened.value).reshape(-1)]
        ints = [v - p if v > p // 2 else v for v in ints]
        return dict(zip(summed, ints, strict=True))

    def _sum(self, node: Aggregate, sums: dict[int, int]) -> int:
        return sums[column_index(self.plan, node.args[0])]

    def visit_Count(self, node: Aggregate, m: int, sums: dict[int, int]) -> int:
        return m

    def visit_Sum(self, node: Aggregate, m: int, sums: dict[int, int]) -> Any:
        if m == 0:
            return None
        s = self._sum(node, sums)
        if node.dtype == "HUGEINT":  # a sum of integers is exact: keep it an integer
            return (s + (1 << (FRAC_BITS - 1))) >> FRAC_BITS
        return s / 2**FRAC_BITS

    def visit_Avg(self, node: Aggregate, m: int, sums: dict[int, int]) -> float | None:
        return None if m == 0 else self._sum(node, sums) / 2**FRAC_BITS / m


def model_scales(agg: Aggregate) -> tuple[float, list[float]]:
    """The public factors 2**-k the owners applied to the target and to each feature."""
    factor = [2.0 ** -(c.scale_bits or 0) for c in agg.args]
    return factor[0], factor[1:]


def term_names(agg: Aggregate) -> list[str]:
    """Feature names as written, qualified only where two tables share a column name."""
    names = [c.column for c in agg.args[1:]]
    return [f"{c.table}.{c.column}" if names.count(c.column) > 1 else c.column
            for c in agg.args[1:]]


class Models:
    """LASSO / RIDGE / LINREG on the shared rows; opens only the coefficients (and the plan's
    bits)."""

    def __init__(self, chan: Channel, plan: Plan):
        self.chan, self.plan = chan, plan

    async def visit_Lasso(self, node: Aggregate, m: int, table) -> list[tuple] | None:
        return await self._fit(node, m, table)

    async def visit_Ridge(self, node: Aggregate, m: int, table) -> list[tuple] | None:
        return await self._fit(node, m, table)

    async def visit_Linreg(self, node: Aggregate, m: int, table) -> list[tuple] | None:
        return await self._fit(node, m, table)

    async def _fit(self, agg: Aggregate, m: int, table) -> list[tuple] | None:
        chan, plan = self.chan, self.plan
        receivers = [chan.pids[r] for r in plan.root.receivers]
        d = len(agg.args) - 1
        if m == 0:
            raise DataError(f"{agg.func}: the intersection is empty; there is nothing to fit")
        if m <= d:
            raise DataError(f"{agg.func}: {d} features need more than {d} rows; the "
                            "intersection is smaller (more features than rows)")
        idx = [column_index(plan, c) for c in agg.args]
        if isinstance(table, ChunkedTable):
            X, y = await reduce_rows(table, idx)
            chan.phase("moments")
        else:
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
            x_scale=x_scale, y_scale=y_scale, receivers=receivers, on_phase=chan.phase,
            reveal=_regression_reveal(chan))
        chan.phase("solve")
        if coef is None:
            return None
        b = coef[0] / y_scale
        w = [coef[j + 1] * x_scale[j] / y_scale for j in range(d)]
        return [("intercept", b)] + list(zip(term_names(agg), w, strict=True))


async def reduce_rows(table: ChunkedTable, idx: list[int]) -> tuple[ReducedRows, SharedTable]:
    """The local part of protocol MOMENTS chunk by chunk: Z^T Z and the column sums of
    Z = [X | y] (target ``idx[0]``, features ``idx[1:]``) of each chunk's shares, exactly
    (``moments._local_moments``), added mod p; MOMENTS then reshares and converts them as it
    does for a whole table.  Returns (X, y) for :func:`regression.fit`."""
    from engine.protocols.regression.moments import _local_moments

    p = table.sectype.field.order
    ztz = sums = None
    async for part in table.chunks():
        cols = [part.columns[j] for j in idx[1:]] + [part.columns[idx[0]]]
        a, b = _local_moments(cols, p)
        ztz, sums = (a, b) if ztz is None else ((ztz + a) % p, (sums + b) % p)
    X = ReducedRows(table.sectype, [], table.m, d=len(idx) - 1, ztz=ztz, sums=sums)
    return X, SharedTable(table.sectype, [], table.m, vector=True)


def _regression_reveal(chan: Channel):
    """The regression's openings, recorded under the plan's disclosure labels."""
    labels = {regression.CONSTANT_BIT: "constant-feature bit",
              regression.COLLINEAR_BIT: "collinear bit", regression.COEFFICIENTS: "result"}

    async def reveal(label: str, x, receivers):
        return await chan.reveal(labels[label], x, receivers)

    return reveal
