"""Named options of the model aggregates (``alpha => 0.001``): literal values, checked."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from sqlglot import exp

from dialect.errors import ProgrammingError

OptionValue = int | float | bool | str


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: Option name -> (check, what it must be, converter).
OPTIONS: dict[str, tuple[Callable[[Any], bool], str, Callable[[Any], OptionValue]]] = {
    "alpha": (lambda v: _number(v) and v >= 0, "a number >= 0", float),
    "fit_intercept": (lambda v: isinstance(v, bool), "a boolean", bool),
    "max_iter": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                 "an integer >= 1", int),
    "tol": (lambda v: _number(v) and v > 0, "a number > 0", float),
    "standardize": (lambda v: isinstance(v, bool), "a boolean", bool),
    "solver": (lambda v: isinstance(v, str) and bool(v), "a non-empty string", str),
}
#: Options each model accepts (ordinary least squares has no penalty).
MODEL_OPTIONS: dict[str, frozenset[str]] = {
    "LASSO": frozenset(OPTIONS),
    "RIDGE": frozenset(OPTIONS),
    "LINREG": frozenset(OPTIONS) - {"alpha"},
}
_INT = re.compile(r"[+-]?\d+")


def literal_value(node: exp.Expression) -> OptionValue:
    """The Python value of a literal number, boolean or string; ProgrammingError otherwise."""
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        value = literal_value(node.this)
        if _number(value):
            return -value
    if isinstance(node, exp.Literal):
        if node.is_string:
            return str(node.this)
        text = str(node.this)
        value: int | float = int(text) if _INT.fullmatch(text) else float(text)
        if math.isfinite(value):
            return value
    raise ValueError(node.sql())


def bind_options(func: str, kwargs: list[exp.Expression]) -> tuple[tuple[str, OptionValue], ...]:
    """Check ``func``'s named options and return them as ``((name, value), ...)`` in order."""
    known = MODEL_OPTIONS[func]
    out: dict[str, OptionValue] = {}
    for kw in kwargs:
        name = kw.this.name.lower()
        if name not in known:
            raise ProgrammingError(
                f"unknown option {name} of {func}; known options: {', '.join(sorted(known))}"
            )
        if name in out:
            raise ProgrammingError(f"option {name} of {func} is given twice")
        try:
            value = literal_value(kw.expression)
        except ValueError:
            raise ProgrammingError(
                f"option {name} of {func} must be a literal number, boolean or string, "
                f"not {kw.expression.sql()}"
            ) from None
        check, what, convert = OPTIONS[name]
        if not check(value):
            raise ProgrammingError(f"option {name} of {func} must be {what}, not {value!r}")
        out[name] = convert(value)
    if func == "LASSO" and out.get("alpha", 1.0) <= 0:
        raise ProgrammingError("LASSO needs alpha > 0 (alpha => 0 is ordinary least squares: "
                               "use LINREG)")
    solvers = SOLVERS[func]
    if "solver" in out and str(out["solver"]).lower() not in solvers:
        raise ProgrammingError(f"unknown solver {out['solver']!r} of {func}; known: "
                               + ", ".join(solvers))
    return tuple(out.items())


#: Solvers each model accepts (see engine/protocols/regression.py for the automatic rule).
SOLVERS: dict[str, tuple[str, ...]] = {
    "LASSO": ("auto", "cd", "admm"),
    "RIDGE": ("auto", "ldl"),
    "LINREG": ("auto", "ldl"),
}
