"""Typed functions of the secure dialect: the aggregates and the scalar functions it accepts.

Every accepted aggregate is a typed sqlglot class, never ``exp.Anonymous``: COUNT, SUM, AVG,
MIN, MAX, the variances, standard deviations, covariances, CORR, the REGR_* family, MEDIAN
and QUANTILE_CONT are sqlglot's own classes (as :class:`dialect.dialect.MpcDialect`, i.e.
DuckDB, parses them); the model aggregates LASSO, RIDGE and LINREG are defined here and take
a target column, one or more feature columns and named options (``alpha => 0.001``, parsed
as ``exp.Kwarg``).

How DuckDB's names parse (sqlglot 30): ``VAR_SAMP`` and ``VARIANCE`` -> ``exp.Variance``;
``STDDEV`` -> ``exp.Stddev``, ``STDDEV_SAMP`` -> ``exp.StddevSamp``; ``QUANTILE_CONT(x, q)``
-> ``exp.PercentileCont`` (``this`` x, ``expression`` q); ``QUANTILE`` is DuckDB's
QUANTILE_DISC (``exp.Quantile``) and is not accepted.
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

#: Aggregates of one argument (``this``).
UNARY_AGGREGATES: tuple[type[exp.Expression], ...] = (
    exp.Sum, exp.Avg, exp.Min, exp.Max, exp.VariancePop, exp.Variance, exp.StddevPop,
    exp.StddevSamp, exp.Stddev, exp.Median,
)
#: Aggregates of two arguments (``this``, ``expression``); REGR_*(y, x) has y as ``this``.
BINARY_AGGREGATES: tuple[type[exp.Expression], ...] = (
    exp.CovarPop, exp.CovarSamp, exp.Corr, exp.RegrSlope, exp.RegrIntercept, exp.RegrR2,
    exp.RegrCount, exp.RegrSxx, exp.RegrSyy, exp.RegrSxy, exp.RegrAvgx, exp.RegrAvgy,
)
#: Scalar aggregate classes (sqlglot's own): COUNT, the unary and binary ones, QUANTILE_CONT.
SCALAR_FUNCTIONS: tuple[type[exp.Expression], ...] = (
    (exp.Count,) + UNARY_AGGREGATES + BINARY_AGGREGATES + (exp.PercentileCont,)
)
#: Every aggregate the secure grammar accepts.
AGGREGATE_FUNCTIONS = SCALAR_FUNCTIONS + MODEL_FUNCTIONS

#: Accepted aggregate class -> canonical upper-case SQL name (synonyms folded: VARIANCE ->
#: VAR_SAMP, STDDEV -> STDDEV_SAMP; MEDIAN stays MEDIAN, the binder makes it QUANTILE_CONT 0.5).
AGGREGATE_NAMES: dict[type[exp.Expression], str] = {
    exp.Count: "COUNT",
    exp.Sum: "SUM",
    exp.Avg: "AVG",
    exp.Min: "MIN",
    exp.Max: "MAX",
    exp.VariancePop: "VAR_POP",
    exp.Variance: "VAR_SAMP",
    exp.StddevPop: "STDDEV_POP",
    exp.StddevSamp: "STDDEV_SAMP",
    exp.Stddev: "STDDEV_SAMP",
    exp.CovarPop: "COVAR_POP",
    exp.CovarSamp: "COVAR_SAMP",
    exp.Corr: "CORR",
    exp.RegrSlope: "REGR_SLOPE",
    exp.RegrIntercept: "REGR_INTERCEPT",
    exp.RegrR2: "REGR_R2",
    exp.RegrCount: "REGR_COUNT",
    exp.RegrSxx: "REGR_SXX",
    exp.RegrSyy: "REGR_SYY",
    exp.RegrSxy: "REGR_SXY",
    exp.RegrAvgx: "REGR_AVGX",
    exp.RegrAvgy: "REGR_AVGY",
    exp.Median: "MEDIAN",
    exp.PercentileCont: "QUANTILE_CONT",
    Lasso: "LASSO",
    Ridge: "RIDGE",
    Linreg: "LINREG",
}

#: Scalar (row) functions accepted inside row expressions besides the operators.
ROW_FUNCTIONS: tuple[type[exp.Expression], ...] = (exp.Abs, exp.Coalesce, exp.Case, exp.Cast)

#: The DuckDB types a CAST may convert to (numeric types only; no unsigned types).
CAST_TYPES: frozenset[exp.DataType.Type] = frozenset(
    {
        exp.DataType.Type.TINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.INT,
        exp.DataType.Type.BIGINT, exp.DataType.Type.INT128, exp.DataType.Type.DECIMAL,
        exp.DataType.Type.FLOAT, exp.DataType.Type.DOUBLE,
    }
)


def is_aggregate(node: exp.Expression) -> bool:
    """Whether ``node`` is one of the accepted aggregates (scalar or model)."""
    return type(node) in AGGREGATE_NAMES


def canonical_name(node: exp.Expression) -> str:
    """The canonical upper-case name of an accepted aggregate node (``VAR_SAMP``, ``CORR``...).

    Raises ``KeyError`` for a node that is not an accepted aggregate.
    """
    try:
        return AGGREGATE_NAMES[type(node)]
    except KeyError:
        raise KeyError(f"{type(node).__name__} is not an accepted aggregate") from None


def function_name(node: exp.Expression) -> str:
    """The upper-case SQL name of a function node (``COUNT``, ``LASSO``, ``UPPER``...).

    Accepted aggregates get their canonical name; other functions sqlglot's name.
    """
    if type(node) in AGGREGATE_NAMES:
        return AGGREGATE_NAMES[type(node)]
    if isinstance(node, exp.Anonymous):
        return str(node.name).upper()
    if isinstance(node, exp.Func):
        return node.sql_name().upper()
    return node.key.upper()
