"""Typed aggregate functions of the secure dialect (the model aggregates).

COUNT, SUM and AVG are sqlglot's own ``exp.Count``, ``exp.Sum`` and ``exp.Avg``.  The model
aggregates take a target column, one or more feature columns and named options
(``alpha => 0.001``, parsed as ``exp.Kwarg``).
"""

from __future__ import annotations

from sqlglot import exp


class Lasso(exp.Expression, exp.AggFunc):
    """``LASSO(target, feature, ..., opt => literal, ...)``: L1-regularised linear regression."""

    arg_types = {"this": True, "expressions": True}
    is_var_len_args = True
    _sql_names = ["LASSO"]


class Ridge(exp.Expression, exp.AggFunc):
    """``RIDGE(target, feature, ..., opt => literal, ...)``: L2-regularised linear regression."""

    arg_types = {"this": True, "expressions": True}
    is_var_len_args = True
    _sql_names = ["RIDGE"]


class Linreg(exp.Expression, exp.AggFunc):
    """``LINREG(target, feature, ..., opt => literal, ...)``: ordinary least squares."""

    arg_types = {"this": True, "expressions": True}
    is_var_len_args = True
    _sql_names = ["LINREG"]


#: Model aggregate classes, in a fixed order.
MODEL_FUNCTIONS: tuple[type[exp.Expression], ...] = (Lasso, Ridge, Linreg)
#: Scalar aggregate classes (sqlglot's own).
SCALAR_FUNCTIONS: tuple[type[exp.Expression], ...] = (exp.Count, exp.Sum, exp.Avg)
#: Every aggregate the secure grammar accepts.
AGGREGATE_FUNCTIONS = SCALAR_FUNCTIONS + MODEL_FUNCTIONS


def function_name(node: exp.Expression) -> str:
    """The canonical upper-case SQL name of an aggregate node (``COUNT``, ``LASSO``, ...)."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).upper()
    if isinstance(node, exp.Func):
        return node.sql_name().upper()
    return node.key.upper()
