"""DuckDB result types of bound expressions (planner.logical nodes), and public magnitude bounds.

The rules follow DuckDB 2.0 for the types this engine computes; where DuckDB would return a
DECIMAL(p, s) of an expression (``x * 1.5`` on an integer, ``SUM`` of a DECIMAL), the secure
engine returns DOUBLE (documented in docs/sql.md).  The exception is QUANTILE_CONT / MEDIAN,
whose DECIMAL result DuckDB truncates to its scale: :func:`decimal_scale` gives the exact
DuckDB type of the arguments the engine types exactly (a DECIMAL column or CAST), and
:func:`duckdb_decimal` tells which other arguments DuckDB would type DECIMAL (refused there).
"""

from __future__ import annotations

import math
from typing import Any

from planner.logical import BOOLEAN, NUMBER, TEXT, Call, Col, Expr, Lit
from planner.physical import MAX_BITS

#: Integer types by width (a signed type of the same width as an unsigned one ranks above it).
INTEGER_RANK = {"TINYINT": 1, "UTINYINT": 1, "SMALLINT": 2, "USMALLINT": 2, "INTEGER": 3,
                "UINTEGER": 3, "BIGINT": 4, "UBIGINT": 4, "HUGEINT": 5, "UHUGEINT": 5}
_SIGNED = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
#: Bound 2**bits of an integer type's values (a column without a declared bound).
INTEGER_BITS = {"TINYINT": 7, "UTINYINT": 8, "SMALLINT": 15, "USMALLINT": 16}
FLOAT_TYPES = frozenset({"FLOAT", "REAL", "DOUBLE"})


def base_type(dtype: str) -> str:
    """``DECIMAL(10,2)`` -> ``DECIMAL``; ``varchar`` -> ``VARCHAR``."""
    return dtype.upper().split("(")[0].strip()


def is_integer_type(dtype: str) -> bool:
    return base_type(dtype) in INTEGER_RANK


def kind_of_type(dtype: str) -> str | None:
    """NUMBER, BOOLEAN or TEXT for a catalog type; None for types the engine cannot use."""
    base = base_type(dtype)
    if base == "BOOLEAN":
        return BOOLEAN
    if base in INTEGER_RANK or base in FLOAT_TYPES or base == "DECIMAL":
        return NUMBER
    if base in ("VARCHAR", "TEXT", "STRING", "ENUM"):
        return TEXT
    return None


def column_bits(dtype: str, scale_bits: int | None) -> int:
    """The public bound of a column: its declared ``scale_bits``, else its type's range
    (capped at MAX_BITS; booleans 0)."""
    if base_type(dtype) == "BOOLEAN":
        return 0
    if scale_bits is not None:
        return scale_bits
    return INTEGER_BITS.get(base_type(dtype), MAX_BITS)


def literal_bits(value: Any) -> int:
    """ceil(log2(|v|)) (0 for 0, booleans and non-numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value == 0:
        return 0
    return math.ceil(math.log2(abs(value)))


def literal_type(value: Any, kind: str) -> str:
    if value is None:
        return "NULL"
    if kind == TEXT:
        return "VARCHAR"
    if kind == BOOLEAN:
        return "BOOLEAN"
    if isinstance(value, int):
        if -2**31 <= value < 2**31:
            return "INTEGER"
        return "BIGINT" if -2**63 <= value < 2**63 else "HUGEINT"
    return "DOUBLE"


def promote(types: list[str], literals: list[bool] | None = None) -> str:
    """DuckDB's common type of numeric ``types`` (an integer literal takes the other side's
    integer type; DECIMAL mixed with anything else, and any float, give DOUBLE)."""
    literals = literals or [False] * len(types)
    known = [t for t in types if t != "NULL"]
    if not known:
        return "INTEGER"
    bases = [base_type(t) for t in known]
    if all(b in INTEGER_RANK for b in bases):
        written = [t for t, lit in zip(types, literals, strict=True) if t != "NULL" and not lit]
        pool = [base_type(t) for t in written] or bases
        top = max(INTEGER_RANK[b] for b in pool)
        tops = {b for b in pool if INTEGER_RANK[b] == top}
        if len(tops) == 1:
            return tops.pop()
        return _SIGNED[min(top, len(_SIGNED) - 1)]  # signed and unsigned of one width
    if len(set(known)) == 1:
        return known[0]
    if "FLOAT" in bases or "REAL" in bases:
        return "DOUBLE" if "DOUBLE" in bases or "DECIMAL" in bases else "FLOAT"
    return "DOUBLE"


def expr_type(e: Expr) -> str:
    """DuckDB's type of a bound row expression (``VARCHAR``, ``BOOLEAN``, ``BIGINT``, ...)."""
    if isinstance(e, Col):
        return e.ref.dtype.upper()
    if isinstance(e, Lit):
        return literal_type(e.value, e.kind)
    assert isinstance(e, Call)
    if e.kind == BOOLEAN:
        return "BOOLEAN"
    if e.op == "cast":
        return str(e.to)
    if e.kind == TEXT:
        return "VARCHAR"
    if e.op == "/":
        return "DOUBLE"
    if e.op in ("neg", "abs"):
        return expr_type(e.args[0])
    values = case_values(e) if e.op == "case" else e.args
    types = [expr_type(a) for a in values]
    return arith_type(e.op, types, [isinstance(a, Lit) for a in values])


def arith_type(op: str, types: list[str], literals: list[bool]) -> str:
    """DuckDB's type of ``op`` over operands of ``types`` (:func:`promote`, except that a
    product of DECIMALs is DOUBLE here (DuckDB adds the scales) and a sum or difference of one
    DECIMAL(p,s) type is DECIMAL(p+1,s), as in DuckDB)."""
    t = promote(types, literals)
    if base_type(t) != "DECIMAL":
        return t
    if op == "*":
        return "DOUBLE"
    if op in ("+", "-"):
        p, s = decimal_precision(t), decimal_scale(t)
        return f"DECIMAL({min(p + 1, 38)},{s})"
    return t


def decimal_precision(dtype: str) -> int:
    """The precision p of ``DECIMAL(p,s)`` (plain DECIMAL: 18)."""
    inner = dtype[dtype.find("(") + 1:dtype.rfind(")")] if "(" in dtype else ""
    return int(inner.split(",")[0]) if inner.strip() else 18


def case_values(e: Call) -> tuple[Expr, ...]:
    """The THEN values and the ELSE value of a bound CASE."""
    return e.args[1::2] + (e.args[-1],)


def decimal_type(e: Expr) -> str | None:
    """DuckDB's exact ``DECIMAL(p,s)`` type of ``e`` when this module knows it: a DECIMAL
    column, a CAST to DECIMAL, and ``-`` or ABS of those; else None."""
    if isinstance(e, Call) and e.op in ("neg", "abs"):
        return decimal_type(e.args[0])
    if isinstance(e, Col) or (isinstance(e, Call) and e.op == "cast"):
        t = expr_type(e)
        return t if base_type(t) == "DECIMAL" else None
    return None


def decimal_scale(dtype: str) -> int | None:
    """The scale s of ``DECIMAL(p,s)`` (DuckDB's plain ``DECIMAL`` is DECIMAL(18,3)); None for
    other types."""
    if base_type(dtype) != "DECIMAL":
        return None
    inner = dtype[dtype.find("(") + 1:dtype.rfind(")")] if "(" in dtype else ""
    parts = [p.strip() for p in inner.split(",")] if inner else []
    return int(parts[1]) if len(parts) == 2 else (0 if len(parts) == 1 else 3)


def _duckdb_float(e: Expr) -> bool:
    """Whether DuckDB types the numeric row expression ``e`` FLOAT or DOUBLE."""
    if isinstance(e, Col):
        return base_type(e.ref.dtype) in FLOAT_TYPES
    if isinstance(e, Lit) or e.kind != NUMBER:
        return False
    assert isinstance(e, Call)
    if e.op == "cast":
        return base_type(str(e.to)) in FLOAT_TYPES
    if e.op == "/":
        return True
    values = case_values(e) if e.op == "case" else e.args
    return any(_duckdb_float(a) for a in values)


def duckdb_decimal(e: Expr) -> bool:
    """Whether DuckDB types the numeric row expression ``e`` DECIMAL: it involves a DECIMAL
    column, a CAST to DECIMAL or a literal with a point (``1.5`` is DECIMAL(2,1) in DuckDB)
    and no FLOAT/DOUBLE operand or division."""
    if isinstance(e, Col):
        return base_type(e.ref.dtype) == "DECIMAL"
    if isinstance(e, Lit):
        return e.kind == NUMBER and isinstance(e.value, float)
    if e.kind != NUMBER:
        return False
    assert isinstance(e, Call)
    if e.op == "cast":
        return base_type(str(e.to)) == "DECIMAL"
    if _duckdb_float(e):
        return False
    values = case_values(e) if e.op == "case" else e.args
    return any(duckdb_decimal(a) for a in values)
