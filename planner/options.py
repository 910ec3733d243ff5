"""Named options of the model aggregates (``alpha => 0.001``): literal values, checked.

Each numeric option has a documented range, checked at planning (before any party computes),
so that no value can leave what the fixed-point solver of
:mod:`engine.protocols.regression` handles (SecFxp(96, 48): a resolution of 2^-48; pivots and
variances below ``PIVOT_ABS`` = ``VAR_FLOOR`` = 2^-40 count as zero):

``alpha``     LASSO: ALPHA_MIN <= alpha <= ALPHA_MAX; RIDGE: 0 or that range.  ALPHA_MIN = 1e-12
              (just above 2^-40): a smaller penalty is below the solver's resolution even on
              data of unit scale, i.e. no penalty at all (use LINREG).  ALPHA_MAX = 1e12
              (about 2^40): LASSO penalties clip at 2 in scaled units (every coefficient 0 long
              before), RIDGE refuses penalties / rows above 2^30 in scaled units.
``max_iter``  1 <= max_iter <= MAX_ITER = 1,000 (CD sweeps or ADMM iterations; the count is
              public and fixed, so it is also the running time).
``tol``       TOL_MIN <= tol <= TOL_MAX, i.e. 1e-12 <= tol <= 1 (it only picks the iteration
              count: at most 300 CD sweeps / 90 ADMM iterations).
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Callable
from typing import Any

from sqlglot import exp

from dialect.errors import ProgrammingError

OptionValue = int | float | bool | str


def _number(v: Any) -> bool:
    return isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool)


ALPHA_MIN = 1e-12
ALPHA_MAX = 1e12
MAX_ITER = 1_000
TOL_MIN = 1e-12
TOL_MAX = 1.0
#: Option name -> (lowest, highest) allowed value (both included); alpha = 0 is checked apart.
RANGES: dict[str, tuple[float, float]] = {
    "alpha": (ALPHA_MIN, ALPHA_MAX),
    "max_iter": (1, MAX_ITER),
    "tol": (TOL_MIN, TOL_MAX),
}


def _show(v: Any) -> str:
    """A number as the analyst wrote it, shortened if huge (``10**400`` -> ``1.000E+400``)."""
    if isinstance(v, decimal.Decimal):
        return str(v) if len(str(v)) <= 20 else f"{v:.3E}"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**15:
        return f"{decimal.Decimal(v):.3E}"
    if isinstance(v, float):  # the short form if exact (1e13, not 10000000000000.0)
        short, exact = f"{v:g}", repr(v)
        return (short if float(short) == v and len(short) < len(exact) else exact) \
            .replace("e+", "e")
    return repr(v)


def _range_text(name: str) -> str:
    lo, hi = RANGES[name]
    return f"{_show(lo)} <= {name} <= {_show(hi)}"


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
#: Why each range ends where it does: option -> (below the lowest, above the highest).
_WHY: dict[str, tuple[str, str]] = {
    "alpha": ("a smaller penalty is below the resolution of the fixed-point solver",
              "a larger penalty leaves the range of the fixed-point solver"),
    "max_iter": ("", "the iteration count is fixed and public: it is the running time"),
    "tol": ("tol only picks the fixed iteration count",
            "tol only picks the fixed iteration count"),
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
        if _INT.fullmatch(text):  # exact, however large: the range checks refuse what is too big
            try:
                return int(text)
            except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
                return decimal.Decimal(text)
        try:
            value = float(text)
        except ValueError:
            raise ValueError(node.sql()) from None
        if math.isinf(value) or (value == 0 and decimal.Decimal(text) != 0):
            return decimal.Decimal(text)  # beyond float: exact, for the range check
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
            raise ProgrammingError(f"option {name} of {func} must be {what}, not {_show(value)}")
        if name in RANGES and not (name == "alpha" and value == 0):
            lo, hi = RANGES[name]
            if not lo <= value <= hi:
                allowed = _range_text(name)
                if name == "alpha" and func == "RIDGE":
                    allowed += ", or 0"
                why = _WHY[name][value > hi]
                if name == "alpha" and value < lo and func == "LASSO":
                    why += "; for no penalty use LINREG"
                raise ProgrammingError(
                    f"option {name} of {func} is out of range: {_show(value)}; allowed: "
                    f"{allowed} ({why})")
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
