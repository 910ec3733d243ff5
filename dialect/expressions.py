"""Checks of the expressions of the secure grammar: row expressions and aggregate expressions.

A *row expression* (WHERE, GROUP BY keys, aggregate arguments, FILTER predicates) is made of
columns, numeric/string/boolean/NULL literals, ``+ - * /`` (division by a constant only),
unary minus, ABS, CASE (searched and simple), COALESCE, comparisons, BETWEEN, IN (a list of
literals), IS [NOT] NULL, AND/OR/NOT, CAST to a numeric type and parentheses.  An *aggregate
expression* (select items, HAVING, ORDER BY) may also contain the accepted aggregates (each
optionally with ``FILTER (WHERE <row expression>)``), and columns only with GROUP BY (the
binder checks that they are grouped).  :class:`ExpressionChecks` is mixed into
:class:`dialect.grammar.GrammarChecker`; it only records violations (``self.refuse``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlglot import exp
from sqlglot.tokens import TokenType

from dialect.functions import (
    BINARY_AGGREGATES,
    CAST_TYPES,
    MODEL_FUNCTIONS,
    UNARY_AGGREGATES,
    function_name,
    is_aggregate,
)
from dialect.positions import SourceMap

AGGREGATE_LIST = (
    "COUNT, SUM, AVG, MIN, MAX, VAR_POP, VAR_SAMP, VARIANCE, STDDEV_POP, STDDEV_SAMP, STDDEV, "
    "COVAR_POP, COVAR_SAMP, CORR, REGR_SLOPE, REGR_INTERCEPT, REGR_R2, REGR_COUNT, MEDIAN, "
    "QUANTILE_CONT, LASSO, RIDGE, LINREG"
)
FUNCTION_LIST = "ABS, COALESCE, CASE, CAST and the aggregates"

COMPARISONS = (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)
ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div)
#: Nodes reported elsewhere (subqueries and unknown functions: ``check_hard``).
REPORTED = (exp.Anonymous, exp.Subquery, exp.Query, exp.Exists)

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


def reads_columns(node: exp.Expression) -> bool:
    return any(isinstance(n, exp.Column) for n in node.walk())


class ExpressionChecks:
    """Row and aggregate expression checks (a mixin of the grammar checker)."""

    src: SourceMap

    def refuse(self, node: exp.Expression | None, construct: str, **kw) -> None:  # pragma: no cover
        raise NotImplementedError

    def sql(self, node: exp.Expression) -> str:  # pragma: no cover
        raise NotImplementedError

    def written(self, node: exp.Expression) -> str:
        """A function's name as written (upper case), e.g. ``VARIANCE``; else its canonical name."""
        start, end = node.meta.get("start"), node.meta.get("end")
        if isinstance(start, int) and isinstance(end, int) and 0 <= start <= end:
            text = self.src.sql[start : end + 1].strip().strip('"')
            if text.replace("_", "").isalnum():
                return text.upper()
        return function_name(node)

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
        if not isinstance(node.expression, exp.Null):
            self.refuse(node, f"IS {self.sql(node.expression)}", hint="use IS [NOT] NULL or =")
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

    # --- aggregates ---------------------------------------------------------------------------

    def check_aggregate_use(self, agg: exp.Expression, scope: Scope) -> None:
        name = self.written(agg)
        if not scope.aggregates:
            self.refuse_misplaced(agg, name, scope)
        elif isinstance(agg, MODEL_FUNCTIONS):
            where = "an expression" if scope.clause == "SELECT" else scope.clause
            self.refuse(agg, f"{name} in {where}",
                        hint="a model aggregate is a select item of its own")
        else:
            self.check_aggregate(agg, scope.argument_of(name))

    def refuse_misplaced(self, agg: exp.Expression, name: str, scope: Scope) -> None:
        if scope.inside:
            self.refuse(agg, f"aggregate {name} inside {scope.inside}",
                        message=f"nested aggregate: {name} inside {scope.inside} is not "
                        "supported", hint="aggregates cannot be nested")
        elif scope.clause == "WHERE":
            self.refuse(agg, f"aggregate {name} in WHERE",
                        hint="WHERE filters rows before aggregation; use HAVING")
        else:
            self.refuse(agg, f"aggregate {name} in {scope.clause}",
                        hint=f"{scope.clause} takes row expressions")

    def check_filter(self, node: exp.Filter, scope: Scope) -> None:
        agg = node.this
        where = node.expression
        if not is_aggregate(agg) or isinstance(agg, MODEL_FUNCTIONS):
            if isinstance(agg, MODEL_FUNCTIONS) or not isinstance(agg, REPORTED):
                self.refuse(where, f"FILTER on {self.written(agg)}",
                            keywords=(TokenType.FILTER,),
                            hint="FILTER applies to COUNT, SUM, AVG, ... (models: use WHERE)")
            return
        self.check_expr(agg, scope)
        if scope.aggregates and isinstance(where, exp.Where):
            self.check_expr(where.this, scope.argument_of(f"FILTER of {self.written(agg)}"))

    def check_aggregate(self, agg: exp.Expression, scope: Scope) -> None:
        """The arguments of an accepted scalar aggregate (``scope``: its argument scope)."""
        name = scope.inside or function_name(agg)
        if isinstance(agg, exp.Count):
            self.check_count(agg, scope)
            return
        self.check_argument(agg.this, agg, scope)
        if isinstance(agg, BINARY_AGGREGATES):
            if agg.expression is None:
                self.refuse(agg, f"{name} with one argument", hint=f"{name} takes two arguments")
            else:
                self.check_argument(agg.expression, agg, scope)
        elif isinstance(agg, exp.PercentileCont):
            self.check_quantile(agg, name)
        elif isinstance(agg, UNARY_AGGREGATES):
            extra = [v for k, v in agg.args.items() if k != "this" and v]
            if extra:
                node = extra[0][0] if isinstance(extra[0], list) else extra[0]
                self.refuse(node if isinstance(node, exp.Expression) else agg,
                            f"{name} with several arguments")

    def check_count(self, agg: exp.Count, scope: Scope) -> None:
        if agg.this is None:
            self.refuse(agg, "COUNT() without argument", hint="use COUNT(*)")
        elif not isinstance(agg.this, exp.Star):
            self.check_argument(agg.this, agg, scope)
        if agg.expressions:
            self.refuse(agg.expressions[0], "COUNT with several arguments")

    def check_argument(self, arg: exp.Expression | None, agg: exp.Expression,
                       scope: Scope) -> None:
        name = scope.inside or function_name(agg)
        if arg is None:
            self.refuse(agg, f"{name} without argument")
        elif isinstance(arg, exp.Distinct):
            self.refuse(arg, f"{name}(DISTINCT ...)", keywords=(TokenType.DISTINCT,),
                        hint="DISTINCT would reveal which values are equal")
        elif isinstance(arg, exp.Order):
            first = arg.expressions[0] if arg.expressions else arg
            self.refuse(first, f"ORDER BY inside {name}", keywords=(TokenType.ORDER_BY,))
            if arg.this is not None and arg is agg.this:
                self.check_expr(arg.this, scope)
        else:
            self.check_expr(arg, scope)

    def check_quantile(self, agg: exp.PercentileCont, name: str) -> None:
        q = agg.expression
        value = number_value(q) if q is not None else None
        if q is None:
            self.refuse(agg, f"{name} without a quantile", hint=f"write {name}(x, 0.5)")
        elif isinstance(q, exp.Order):
            first = q.expressions[0] if q.expressions else q
            self.refuse(first, f"ORDER BY inside {name}", keywords=(TokenType.ORDER_BY,))
        elif isinstance(q, exp.Array):
            self.refuse(q, f"{name} with a list of quantiles", keywords=(TokenType.L_BRACKET,),
                        hint=f"write one {name}(x, q) per quantile")
        elif value is None:
            self.refuse(q, f"{name} with a non-literal quantile",
                        hint="the quantile is a numeric literal in [0, 1]")
        elif not 0.0 <= value <= 1.0:
            self.refuse(q, f"{name} quantile outside [0, 1]",
                        message=f"{name} quantile {self.sql(q)} outside [0, 1] is not "
                        "supported", hint="the quantile is a numeric literal in [0, 1]")

    # --- model aggregates ---------------------------------------------------------------------

    def check_model(self, agg: exp.Expression) -> None:
        """LASSO/RIDGE/LINREG: plain column arguments and named options."""
        self.check_model_argument(agg, agg.this)
        for arg in agg.expressions:
            if not isinstance(arg, (exp.Kwarg, exp.PropertyEQ)):
                self.check_model_argument(agg, arg)

    def check_model_argument(self, agg: exp.Expression, arg: exp.Expression | None) -> None:
        name = self.written(agg)
        if arg is None:
            self.refuse(agg, f"{name} without argument")
        elif isinstance(arg, exp.Distinct):
            self.refuse(arg, f"{name}(DISTINCT ...)", keywords=(TokenType.DISTINCT,))
        elif isinstance(arg, (exp.Column, exp.Star)):
            self.check_column_use(arg, Scope("SELECT", inside=name))
        elif not isinstance(arg, REPORTED):
            self.refuse(arg, f"expression {self.sql(arg)} as argument of {name}",
                        hint="model arguments are plain columns")
