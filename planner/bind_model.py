"""Binding a model aggregate (LASSO, RIDGE, LINREG) of a query with WHERE or GROUP BY.

Such a model is fitted per group on the rows the WHERE leaves, with no NULL in its columns;
:func:`model_call` binds it to a :class:`~planner.logical.ModelCall` (the lowering builds its
sufficient statistics, :func:`planner.lower.lower_model`).
"""

from __future__ import annotations

from sqlglot import exp

from dialect.errors import ProgrammingError
from planner.bind_agg import AggBinder
from planner.logical import Col, ModelCall
from planner.options import bind_options


def _split(node: exp.Expression, func: str) -> tuple[list[exp.Expression], list[exp.Expression]]:
    positional: list[exp.Expression] = [node.this]
    kwargs: list[exp.Expression] = []
    for arg in node.expressions:
        if isinstance(arg, (exp.Kwarg, exp.PropertyEQ)):
            kwargs.append(arg)
        elif kwargs:
            raise ProgrammingError(f"positional argument {arg.sql()} of {func} after named "
                                   "options")
        else:
            positional.append(arg)
    if len(positional) < 2:
        raise ProgrammingError(f"{func} needs a target column and at least one feature")
    return positional, kwargs


def _terms(features: list[Col]) -> tuple[str, ...]:
    """Feature names as written, qualified only where two tables share a column name."""
    names = [c.ref.column for c in features]
    return tuple(f"{c.ref.table}.{c.ref.column}" if names.count(c.ref.column) > 1
                 else c.ref.column for c in features)


def model_call(agg: AggBinder, node: exp.Expression, func: str) -> ModelCall:
    """The :class:`ModelCall` of ``func(target, features..., options)`` (plain columns)."""
    positional, kwargs = _split(node, func)
    zs: list[Col] = []
    for arg in positional:
        e = agg.rows.bind(arg, func)
        if not isinstance(e, Col):
            raise ProgrammingError(f"{func} takes plain columns, not {arg.sql()}")
        agg.rows.numeric(e, arg, f"argument of {func}", func)
        if e in zs:
            role = "target" if zs.index(e) == 0 else "feature"
            what = "is also a feature" if role == "target" else "appears twice"
            raise ProgrammingError(f"{role} {e.ref.column} {what} in {func}")
        zs.append(e)
    options = bind_options(func, kwargs)
    return ModelCall(func, tuple(zs), None, None, "DOUBLE", terms=_terms(zs[1:]),
                     options=options, bits=0, nullable=True)
