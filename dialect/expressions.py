"""Checks of the expressions of the secure grammar: row expressions and aggregate expressions.

A *row expression* (WHERE, GROUP BY keys, aggregate arguments, FILTER predicates) is made of
columns, numeric/string/boolean/NULL literals, ``+ - * /`` (division by a constant only),
unary minus, ABS, CASE (searched and simple), COALESCE, comparisons, BETWEEN, IN (a list of
literals), IS [NOT] NULL, IS [NOT] TRUE/FALSE, AND/OR/NOT, CAST to a numeric type and
parentheses.  An *aggregate expression* (select items, HAVING, ORDER BY) may also contain
the accepted aggregates (each optionally with ``FILTER (WHERE <row expression>)``), and
columns only with GROUP BY (the binder checks that they are grouped).
:class:`ExpressionChecks` is mixed into :class:`dialect.grammar.GrammarChecker`; it only
records violations (``self.refuse``).  The aggregates' own checks are in
:mod:`dialect.aggregates`.
"""

from __future__ import annotations

from sqlglot import exp

from dialect.aggregates import AggregateChecks
from dialect.functions import CAST_TYPES, is_aggregate
from dialect.scope import AGGREGATE_LIST, REPORTED, Scope, is_literal

__all__ = ["AGGREGATE_LIST", "ExpressionChecks", "Scope", "is_literal"]

FUNCTION_LIST = "ABS, COALESCE, CASE, CAST and the aggregates"

COMPARISONS = (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)
ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div)

#: Refused node classes with a readable construct name (others: "function X" / "expression X").
REFUSED_NAMES: dict[type[exp.Expression], str] = {
    exp.Like: "LIKE",
    exp.ILike: "ILIKE",
    exp.SimilarTo: "SIMILAR TO",
    exp.Glob: "GLOB",
    exp.RegexpLike: "regular expression match",
    exp.DPipe: "|| (string concatenation)",
    exp.Mod: "% (modulo)",
    exp.IntDiv: "// (integer division)",
    exp.Pow: "power operator",
    exp.NullSafeEQ: "IS NOT DISTINCT FROM",
    exp.NullSafeNEQ: "IS DISTINCT FROM",
    exp.BitwiseAnd: "bitwise operator",
    exp.BitwiseOr: "bitwise operator",
    exp.BitwiseXor: "bitwise operator",
    exp.BitwiseNot: "bitwise operator",
    exp.BitwiseLeftShift: "bitwise operator",
    exp.BitwiseRightShift: "bitwise operator",
    exp.Tuple: "row value (a, b)",
    exp.Array: "list value",
    exp.Bracket: "subscript [ ]",
    exp.Placeholder: "parameter placeholder",
    exp.Interval: "INTERVAL",
    exp.Lambda: "lambda",
    exp.Any: "ANY",
    exp.All: "ALL",
    exp.Collate: "COLLATE",
    exp.Dot: "field access",
    exp.WithinGroup: "WITHIN GROUP",
    exp.Quantile: "function QUANTILE",
    exp.PercentileDisc: "function QUANTILE_DISC",
}
REFUSED_HINTS: dict[type[exp.Expression], str] = {
    exp.WithinGroup: "write QUANTILE_CONT(x, q)",
    exp.Quantile: "QUANTILE is DuckDB's QUANTILE_DISC; use QUANTILE_CONT(x, q)",
    exp.PercentileDisc: "use QUANTILE_CONT(x, q)",
    exp.Mod: "the arithmetic operators are + - * /",
    exp.IntDiv: "the arithmetic operators are + - * /",
}


def reads_columns(node: exp.Expression) -> bool:
    return any(isinstance(n, exp.Column) for n in node.walk())


class ExpressionChecks(AggregateChecks):
    """Row and aggregate expression checks (a mixin of the grammar checker)."""

    # --- dispatch -----------------------------------------------------------------------------

    def check_expr(self, node: exp.Expression, scope: Scope) -> None:
        """Record every construct of ``node`` outside the grammar of ``scope``."""
        if isinstance(node, REPORTED):
            return
        if isinstance(node, exp.Window):
            self.refuse(node, "window function (OVER)",
                        hint="aggregates are computed over all rows of a group")
        elif isinstance(node, exp.Filter):
            self.check_filter(node, scope)
        elif is_aggregate(node):
            self.check_aggregate_use(node, scope)
        elif isinstance(node, (exp.Column, exp.Star)):
            self.check_column_use(node, scope)
        elif isinstance(node, (exp.Literal, exp.Boolean, exp.Null)):
            return
        elif isinstance(node, (exp.Paren, exp.Neg, exp.Not, exp.Abs)):
            self.check_expr(node.this, scope)
        elif isinstance(node, ARITHMETIC):
            self.check_arithmetic(node, scope)
        elif isinstance(node, (*COMPARISONS, exp.And, exp.Or)):
            self.check_children(node, scope, "this", "expression")
        else:
            self.check_special(node, scope)

    def check_special(self, node: exp.Expression, scope: Scope) -> None:
        if isinstance(node, exp.Is):
            self.check_is(node, scope)
        elif isinstance(node, exp.Between):
            self.check_between(node, scope)
        elif isinstance(node, exp.In):
            self.check_in(node, scope)
        elif isinstance(node, exp.Case):
            self.check_case(node, scope)
        elif isinstance(node, exp.Coalesce):
            self.check_children(node, scope, "this", "expressions")
        elif isinstance(node, exp.Cast):
            self.check_cast(node, scope)
        elif isinstance(node, (exp.IgnoreNulls, exp.RespectNulls)) and not is_aggregate(node.this):
            self.check_expr(node.this, scope)  # ANY_VALUE(x) parses as IgnoreNulls(AnyValue)
        elif isinstance(node, exp.IgnoreNulls):
            self.refuse(node, "IGNORE NULLS", hint="aggregates skip NULLs")
        elif isinstance(node, exp.RespectNulls):
            self.refuse(node, "RESPECT NULLS", hint="aggregates skip NULLs")
        else:
            self.refuse_node(node)

    def check_children(self, node: exp.Expression, scope: Scope, *keys: str) -> None:
        for key in keys:
            value = node.args.get(key)
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, exp.Expression):
                    self.check_expr(child, scope)

    def refuse_node(self, node: exp.Expression) -> None:
        hint = REFUSED_HINTS.get(type(node), "")
        if type(node) in REFUSED_NAMES:
            self.refuse(node, REFUSED_NAMES[type(node)], hint=hint)
        elif isinstance(node, exp.Func):
            self.refuse(node, f"function {self.written(node)}",
                        hint=hint or f"the functions are {FUNCTION_LIST}")
        else:
            self.refuse(node, f"expression {self.sql(node)}", hint=hint)

    # --- leaves and operators -----------------------------------------------------------------

    def check_column_use(self, node: exp.Expression, scope: Scope) -> None:
        if isinstance(node, exp.Star) or isinstance(node.this, exp.Star):
            hint = f"{scope.inside} needs a column" if scope.inside else ""
            self.refuse(node, "* outside COUNT", hint=hint)
        elif len(node.parts) > 2:
            where = f"argument of {scope.inside}" if scope.inside else scope.clause
            self.refuse(node, f"qualified column name {self.sql(node)} in {where}",
                        hint="qualify columns with the table name or alias only")
        elif not scope.columns and not (
            len(node.parts) == 1 and node.name.lower() in scope.aliases
        ):
            self.refuse(node, f"raw column {self.sql(node)} in {scope.clause}",
                        hint="without GROUP BY columns appear only inside aggregates; "
                        f"GROUP BY {self.sql(node)} to use it")

    def check_arithmetic(self, node: exp.Expression, scope: Scope) -> None:
        self.check_children(node, scope, "this", "expression")
        divisor = node.expression
        if isinstance(node, exp.Div) and not scope.aggregates and reads_columns(divisor):
            self.refuse(divisor, "division by a row expression",
                        hint="divide by a literal, or divide aggregates (SUM(a) / COUNT(*))")

    def check_is(self, node: exp.Is, scope: Scope) -> None:
        if not isinstance(node.expression, (exp.Null, exp.Boolean)):
            self.refuse(node, f"IS {self.sql(node.expression)}",
                        hint="use IS [NOT] NULL, IS [NOT] TRUE/FALSE or =")
        self.check_expr(node.this, scope)

    def check_between(self, node: exp.Between, scope: Scope) -> None:
        if node.args.get("symmetric"):
            self.refuse(node, "BETWEEN SYMMETRIC")
        self.check_children(node, scope, "this", "low", "high")

    def check_in(self, node: exp.In, scope: Scope) -> None:
        self.check_expr(node.this, scope)
        if node.args.get("query") is not None:
            return  # a subquery, reported by check_hard
        for key in ("unnest", "field"):
            if node.args.get(key) is not None:
                self.refuse(node.args[key], f"IN {key.upper()}", hint="IN takes a literal list")
        if not node.expressions:
            self.refuse(node, "empty IN list", hint="IN takes a list of literals")
        for value in node.expressions:
            if not is_literal(value):
                self.refuse(value, "IN with a non-literal value",
                            hint="IN takes a list of literals")

    def check_case(self, node: exp.Case, scope: Scope) -> None:
        self.check_children(node, scope, "this")
        for branch in node.args.get("ifs") or []:
            self.check_children(branch, scope, "this", "true")
        self.check_children(node, scope, "default")

    def check_cast(self, node: exp.Cast, scope: Scope) -> None:
        to = node.args.get("to")
        if isinstance(node, exp.TryCast):
            self.refuse(node, "TRY_CAST", hint="use CAST to a numeric type")
        elif not isinstance(to, exp.DataType) or to.this not in CAST_TYPES:
            name = to.sql(dialect="duckdb") if isinstance(to, exp.Expression) else "?"
            self.refuse(node, f"CAST to {name}",
                        hint="CAST converts to TINYINT, SMALLINT, INTEGER, BIGINT, HUGEINT, "
                        "DECIMAL(p, s), REAL or DOUBLE")
        for key in ("format", "action", "default"):
            if node.args.get(key) is not None:
                self.refuse(node, f"CAST with {key.upper()}")
        self.check_expr(node.this, scope)
