"""Checks of the accepted aggregates: their arguments, FILTER, where they may stand (a mixin of
:class:`dialect.expressions.ExpressionChecks`; it only records violations)."""

from __future__ import annotations

from sqlglot import exp
from sqlglot.tokens import TokenType

from dialect.functions import (
    BINARY_AGGREGATES,
    MODEL_FUNCTIONS,
    UNARY_AGGREGATES,
    function_name,
    is_aggregate,
)
from dialect.positions import SourceMap
from dialect.scope import REPORTED, Scope, number_value


class AggregateChecks:
    """The aggregates' checks; row expressions are checked by ``check_expr``."""

    src: SourceMap

    def refuse(self, node: exp.Expression | None, construct: str, **kw) -> None:  # pragma: no cover
        raise NotImplementedError

    def sql(self, node: exp.Expression) -> str:  # pragma: no cover
        raise NotImplementedError

    def check_expr(self, node: exp.Expression, scope: Scope) -> None:  # pragma: no cover
        raise NotImplementedError

    def check_column_use(self, node: exp.Expression, scope: Scope) -> None:  # pragma: no cover
        raise NotImplementedError

    def written(self, node: exp.Expression) -> str:
        """A function's name as written (upper case), e.g. ``VARIANCE``; else its canonical name."""
        start, end = node.meta.get("start"), node.meta.get("end")
        if isinstance(start, int) and isinstance(end, int) and 0 <= start <= end:
            text = self.src.sql[start : end + 1].strip().strip('"')
            if text.replace("_", "").isalnum():
                return text.upper()
        return function_name(node)

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
