"""How a query uses each column: the facts a party's policy rules on.

A :class:`Usage` says that a query uses ``table.column`` of ``party`` as ``use``:

* an aggregate name (``"SUM"``, ``"CORR"``, ``"QUANTILE_CONT"`` ...): the column appears in
  that aggregate's argument, in SELECT, HAVING or ORDER BY; ``column`` None with ``"COUNT"``
  is COUNT(*), which counts the rows of every table of the query;
* ``"WHERE"``: the column appears in the WHERE clause or in a FILTER (WHERE ...) clause;
* ``"GROUP BY"``: the column appears in a group key.

The plan stores them as ``Plan.usages`` (computed from its LogicalQuery), so every party
checks its policy on the plan it built itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from planner.logical import AggCall, AggExpr, AggOp, Call, Col, Expr, LogicalQuery

WHERE, GROUP_BY = "WHERE", "GROUP BY"
#: The uses of a column that are not aggregates.
COLUMN_USES = frozenset({WHERE, GROUP_BY})


@dataclass(frozen=True)
class Usage:
    """``party``'s ``table.column`` (None: the table's rows, COUNT(*)) used as ``use``."""

    party: str
    table: str
    column: str | None
    use: str

    @property
    def what(self) -> str:
        """``emc.bmi``, or ``table emc (COUNT(*))`` for a row count."""
        return f"{self.table}.{self.column}" if self.column else f"table {self.table} (COUNT(*))"


def columns(e: Expr) -> Iterator[Col]:
    """The column references of a row expression, in order."""
    if isinstance(e, Col):
        yield e
    elif isinstance(e, Call):
        for a in e.args:
            yield from columns(a)


def calls(e: AggExpr) -> Iterator[AggCall]:
    """The aggregate calls of an aggregate expression, in order."""
    if isinstance(e, AggCall):
        yield e
    elif isinstance(e, AggOp):
        for a in e.args:
            yield from calls(a)


def _col_uses(e: Expr | None, use: str) -> list[Usage]:
    if e is None:
        return []
    return [Usage(c.ref.party, c.ref.table, c.ref.column, use) for c in columns(e)]


def usages(lq: LogicalQuery) -> tuple[Usage, ...]:
    """Every use of a column (or of a table's rows) by ``lq``, deduplicated, in first-use
    order: WHERE, the group keys, then the aggregates of SELECT and HAVING with their FILTERs."""
    out = _col_uses(lq.where, WHERE)
    for key in lq.keys:
        out += _col_uses(key.expr, GROUP_BY)
    roots = [item.expr for item in lq.items] + ([lq.having] if lq.having is not None else [])
    for root in roots:
        for call in calls(root):
            if not call.args:  # COUNT(*): the rows of every table
                out += [Usage(t.party, t.name, None, call.func) for t in lq.tables]
            for arg in call.args:
                out += _col_uses(arg, call.func)
            out += _col_uses(call.filter, WHERE)
    return tuple(dict.fromkeys(out))
