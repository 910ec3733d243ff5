"""Declared domains: an owner's public statement of the values a column takes (GROUP BY keys).

A domain is declared per column when a table is registered (``domains=`` of
``Connection.register``) or exposed (``domains`` of a ``[[tables]]`` entry in ``party.toml``),
in one of two forms:

* **categories**: a non-empty list of distinct values of one kind — strings (a VARCHAR
  column), integers (a numeric column) or booleans (a BOOLEAN column), e.g.
  ``["northeast", "northwest", "southeast", "southwest"]`` or ``[0, 1]``;
* **an integer range**, both ends included: ``{"min": 0, "max": 5}`` (TOML
  ``{ min = 0, max = 5 }``), or in Python ``range(0, 6)`` (Python's half-open range).

Integers (categories or a range) fit any numeric column (a DOUBLE column's values must then be
exactly those integers), strings a VARCHAR column, booleans a BOOLEAN column.

The catalog publishes the domain as ``ColumnSchema.domain``: the tuple of its values in the
declared order (a range ascending), at most :data:`planner.physical.MAX_GROUPS` values.  NULL
is never listed (a nullable key always has a NULL group).  The owner checks that every non-NULL
value of the column lies in its domain, at registration and at every load.
"""

from __future__ import annotations

import json
from typing import Any

from dialect.errors import ProgrammingError
from planner.physical import MAX_GROUPS

#: Canonical (JSON) form: a list of categories, or {"min": int, "max": int}.
Spec = list[Any] | dict[str, int]

INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                           "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"})


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _kind(v: Any) -> str | None:
    if isinstance(v, bool):
        return "boolean"
    if _int(v):
        return "integer"
    if isinstance(v, str):
        return "string"
    return None


def normalize(spec: Any, where: str) -> Spec:
    """``spec`` in canonical form; ProgrammingError naming ``where`` (e.g. ``ac.region``)."""
    if isinstance(spec, range):
        if spec.step != 1:
            return normalize(list(spec), where)
        spec = {"min": spec.start, "max": spec.stop - 1}
    if isinstance(spec, dict):
        if set(spec) != {"min", "max"} or not (_int(spec["min"]) and _int(spec["max"])):
            raise ProgrammingError(f"domain of {where}: a range is {{min = <integer>, max = "
                                   "<integer>}} (both ends included)")
        lo, hi = spec["min"], spec["max"]
        if lo > hi:
            raise ProgrammingError(f"domain of {where}: min {lo} is above max {hi}")
        if hi - lo + 1 > MAX_GROUPS:
            raise ProgrammingError(f"domain of {where} has {hi - lo + 1} values; at most "
                                   f"{MAX_GROUPS} are allowed")
        return {"min": lo, "max": hi}
    if not isinstance(spec, (list, tuple)):
        raise ProgrammingError(f"domain of {where} must be a list of categories or an integer "
                               f"range {{min = ..., max = ...}}, not {type(spec).__name__}")
    values = list(spec)
    if not values:
        raise ProgrammingError(f"domain of {where} is empty")
    kinds = {_kind(v) for v in values}
    if None in kinds:
        raise ProgrammingError(f"domain of {where}: categories are strings, integers or "
                               "booleans")
    if len(kinds) > 1:
        raise ProgrammingError(f"domain of {where} mixes {' and '.join(sorted(kinds))} values")
    if len({json.dumps(v) for v in values}) != len(values):
        raise ProgrammingError(f"domain of {where} lists a value twice")
    if len(values) > MAX_GROUPS:
        raise ProgrammingError(f"domain of {where} has {len(values)} values; at most "
                               f"{MAX_GROUPS} are allowed")
    return values


def expand(spec: Spec) -> tuple[Any, ...]:
    """The domain's values in order (a range ascending)."""
    if isinstance(spec, dict):
        return tuple(range(spec["min"], spec["max"] + 1))
    return tuple(spec)


def base_type(dtype: str) -> str:
    return dtype.upper().split("(")[0].strip()


def check_type(spec: Spec, dtype: str, where: str) -> None:
    """The domain's kind fits the column's type (ProgrammingError otherwise)."""
    base = base_type(dtype)
    numeric = base in INTEGER_TYPES or base in ("DOUBLE", "FLOAT", "REAL", "DECIMAL")
    kind = "range" if isinstance(spec, dict) else _kind(spec[0])
    # integers (a range too) fit any numeric column: a pandas integer column with a NULL is
    # DOUBLE; its values must then equal one of the integers
    ok = {"string": base in ("VARCHAR", "ENUM"), "boolean": base == "BOOLEAN",
          "integer": numeric, "range": numeric}[kind]
    if not ok:
        what = "an integer range does" if kind == "range" else f"{kind} categories do"
        raise ProgrammingError(f"domain of {where}: {what} not fit its type {dtype}")
