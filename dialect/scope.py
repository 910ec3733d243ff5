"""What the expression checks share: where an expression stands (:class:`Scope`) and the
literal helpers."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlglot import exp

AGGREGATE_LIST = (
    "COUNT, SUM, AVG, MIN, MAX, VAR_POP, VAR_SAMP, VARIANCE, STDDEV_POP, STDDEV_SAMP, STDDEV, "
    "COVAR_POP, COVAR_SAMP, CORR, REGR_SLOPE, REGR_INTERCEPT, REGR_R2, REGR_COUNT, REGR_SXX, "
    "REGR_SYY, REGR_SXY, REGR_AVGX, REGR_AVGY, MEDIAN, QUANTILE_CONT, LASSO, RIDGE, LINREG"
)
#: Nodes reported elsewhere (subqueries and unknown functions: ``check_hard``).
REPORTED = (exp.Anonymous, exp.Subquery, exp.Query, exp.Exists)


@dataclass(frozen=True)
class Scope:
    """Where an expression stands.

    ``clause``: the clause (``SELECT``, ``WHERE``, ...); ``aggregates``: aggregates may appear;
    ``columns``: columns may appear (outside aggregates: only with GROUP BY); ``inside``: the
    aggregate (or FILTER) whose argument this is, for the nested-aggregate message;
    ``aliases``: the select aliases (lower case) an unqualified column may name (HAVING).
    """

    clause: str
    aggregates: bool = False
    columns: bool = True
    inside: str | None = None
    aliases: frozenset[str] = frozenset()

    def argument_of(self, name: str) -> Scope:
        return replace(self, aggregates=False, columns=True, inside=name, aliases=frozenset())


def is_literal(node: exp.Expression) -> bool:
    """A literal value: number, string, boolean, NULL, or a negated number."""
    if isinstance(node, exp.Paren):
        return is_literal(node.this)
    if isinstance(node, exp.Neg):
        return isinstance(node.this, exp.Literal) and not node.this.is_string
    return isinstance(node, (exp.Literal, exp.Boolean, exp.Null))


def number_value(node: exp.Expression) -> float | None:
    """The value of a numeric literal (``0.5``, ``-1``, ``(0.25)``), else None."""
    if isinstance(node, exp.Paren):
        return number_value(node.this)
    if isinstance(node, exp.Neg):
        inner = number_value(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this)
        except ValueError:
            return None
    return None

