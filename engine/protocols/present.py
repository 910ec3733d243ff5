"""Presentation of a program plan's opened rows: output types, ORDER BY, LIMIT and OFFSET.

Runs at each receiver on the rows it already holds in plaintext (the present groups, in the
domain order), so it opens nothing and sends nothing.  Semantics are DuckDB's:

* ``ORDER BY`` keys in turn, ``ASC`` by default; ``NULL`` sorts last in both directions unless
  ``NULLS FIRST`` is given (DuckDB's default is ``NULLS LAST`` for ASC and DESC); NaN sorts
  above every number; strings compare by code point (DuckDB's binary collation on UTF-8);
  ``false < true``.  Rows that tie on every key keep the domain order (a stable sort).
* without ``ORDER BY`` the rows stay in the domain order (that of ``Program.groups``, as the
  planner lists the declared domains);
* then ``OFFSET`` rows are skipped and at most ``LIMIT`` rows are kept.

Values are converted to the Python type of their column's DuckDB type (``Plan.output``), as
the DB-API cursor's ``description`` reports it: integer types -> ``int``, DOUBLE -> ``float``,
FLOAT/REAL -> ``float`` rounded to the nearest single-precision value (DuckDB's FLOAT result
is one), DECIMAL -> ``float`` too (the control wire is JSON; the planner's outputs are DOUBLE
where DuckDB's would be DECIMAL, except MIN/MAX and QUANTILE_CONT of a DECIMAL), VARCHAR ->
``str``, BOOLEAN -> ``bool``; NULL -> ``None``.

QUANTILE_CONT / MEDIAN of a DECIMAL(p,s) (an output whose value is a quantile slot and whose
type is DECIMAL): DuckDB truncates the interpolated quantile toward zero at the scale s.  The
opened value is within 2^(bits + planner.bind_agg.QUANTILE_ERROR_BITS) of the exact quantile
(bits: the slot's public bound); it is snapped to the nearest multiple of 10^-s if it is that
close (the exact quantile is then that multiple, or lies just below it: the one case where the
answer differs from DuckDB's, by 10^-s), else truncated toward zero.  MIN/MAX of a DECIMAL
(a data value at the scale s) are rounded to the nearest multiple of 10^-s, where the owners'
input rounding is well below it.

``Program.outputs`` may end with hidden GROUP BY key columns (``Output.hidden``: public values
of the group, nothing opened) after the ``Plan.output`` columns: ORDER BY a key that is not
selected sorts by them; they are dropped before LIMIT and never returned.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from dialect.errors import InternalError

if TYPE_CHECKING:
    from planner.physical import OrderKey, Program

INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                           "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"})
#: DECIMAL too: the control wire is JSON, so a float reaches the client (the planner's outputs
#: are DOUBLE where DuckDB's would be DECIMAL)
FLOAT_TYPES = frozenset({"DOUBLE", "FLOAT", "REAL", "DECIMAL"})
SINGLE_TYPES = frozenset({"FLOAT", "REAL"})


def present(rows: Sequence[Sequence[Any]], program: Program, output: Sequence[Any]
            ) -> list[tuple]:
    """The receivers' result: ``rows`` typed per ``output``, ordered and limited (hidden key
    columns, see the module docstring, sort and are dropped)."""
    outs = tuple(program.outputs)
    hidden = tuple(o for o in outs if o.hidden)
    if hidden and len(outs) - len(hidden) != len(output):
        raise InternalError(f"{len(outs) - len(hidden)} returned outputs for {len(output)} "
                            "columns")
    dtypes = [c.dtype for c in output] + [o.dtype for o in hidden]
    trunc = [_truncation(program, o, d) for o, d in zip(outs, dtypes, strict=False)]
    typed = [typed_row(r, dtypes, trunc) for r in rows]
    ordered = order_rows(typed, program.order)
    if hidden:
        ordered = [r[:len(output)] for r in ordered]
    return limit_rows(ordered, program.limit, program.offset)


def _truncation(program: Program, out: Any, dtype: str) -> tuple[int, float] | None:
    """(scale s, snapping tolerance) of a DECIMAL(p,s) order-statistic output, else None: a
    quantile is snapped within its error bound, else truncated; MIN/MAX (a data value of that
    scale) are rounded to the nearest multiple of 10^-s where their error (the owner's rounding,
    < 2^(bits - 32)) is below a quarter of it (tolerance inf)."""
    from planner.bind_agg import QUANTILE_ERROR_BITS
    from planner.physical import MAX_BITS
    from planner.types import decimal_scale

    s = decimal_scale(dtype)
    if s is None or out.value is None:
        return None
    slot = next((x for x in program.slots if x.name == out.value), None)
    if slot is None or slot.kind not in ("quantile", "min", "max"):
        return None
    bits = min(slot.bits, MAX_BITS)
    if slot.kind != "quantile":
        return (s, math.inf) if 2.0 ** (bits - 32) * 10.0 ** s <= 0.25 else None
    return s, 2.0 ** (bits + QUANTILE_ERROR_BITS)


def truncate_decimal(v: float, scale: int, tol: float) -> float:
    """DuckDB's DECIMAL quantile from the opened ``v``: the nearest multiple of 10^-scale if
    within ``tol`` (always, for ``tol`` inf), else ``v`` truncated toward zero at that scale
    (as a float)."""
    if not math.isfinite(v):
        return v
    unit = 10 ** scale
    u = Fraction(v) * unit
    k = round(u)
    if not math.isinf(tol) and abs(u - k) > Fraction(tol) * unit:
        k = math.trunc(u)
    return float(Fraction(k, unit))


def typed_row(row: Sequence[Any], dtypes: Sequence[str],
              trunc: Sequence[tuple[int, float] | None] = ()) -> tuple:
    if len(row) != len(dtypes):
        raise InternalError(f"a result row has {len(row)} values for {len(dtypes)} columns")
    out = tuple(typed_value(v, t) for v, t in zip(row, dtypes, strict=True))
    if any(trunc):
        out = tuple(v if tr is None or v is None else truncate_decimal(v, *tr)
                    for v, tr in zip(out, list(trunc) + [None] * len(out), strict=False))
    return out


def typed_value(v: Any, dtype: str) -> Any:
    """``v`` as the Python type of DuckDB type ``dtype`` (None stays None)."""
    if v is None:
        return None
    if hasattr(v, "item") and not isinstance(v, (int, float, str, bool)):
        v = v.item()  # a numpy scalar
    base = dtype.split("(")[0].strip().upper()
    if base in INTEGER_TYPES:
        return v if isinstance(v, int) and not isinstance(v, bool) else int(round(v))
    if base in SINGLE_TYPES:
        return single(float(v))
    if base in FLOAT_TYPES:
        return float(v)
    if base == "BOOLEAN":
        return bool(v)
    if base == "VARCHAR":
        return str(v)
    return v


def single(v: float) -> float:
    """``v`` rounded to the nearest single-precision float (beyond its range: +-inf)."""
    if not math.isfinite(v):
        return v
    try:
        return struct.unpack("<f", struct.pack("<f", v))[0]
    except OverflowError:
        return math.copysign(math.inf, v)


def _key(v: Any, nulls_rank: int) -> tuple:
    """A sort key for one value: (NULL rank, NaN rank, value); NULLs and NaN never compare
    with values."""
    if v is None:
        return (nulls_rank, 0, 0)
    if isinstance(v, float) and math.isnan(v):
        return (1 - nulls_rank, 1, 0)
    return (1 - nulls_rank, 0, v)


def order_rows(rows: list[tuple], order: Sequence[OrderKey]) -> list[tuple]:
    """``rows`` sorted by ``order`` (SQL semantics, see the module docstring), stably."""
    out = list(rows)
    for k in reversed(order):  # least significant key first: stable sorts compose
        if rows and not 0 <= k.output < len(rows[0]):
            raise InternalError(f"ORDER BY output {k.output} out of range")
        nulls_first = bool(k.nulls_first)  # None: DuckDB's default, NULLS LAST
        # The NULL rank is the first element of the key; reverse=True flips it, so it is
        # chosen such that NULLs end up where asked whatever the direction.
        rank = int(nulls_first == k.descending)
        out.sort(key=lambda r, i=k.output, n=rank: _key(r[i], n), reverse=k.descending)
    return out


def limit_rows(rows: list[tuple], limit: int | None, offset: int = 0) -> list[tuple]:
    """``OFFSET offset`` then ``LIMIT limit`` (None: no limit)."""
    if offset < 0 or (limit is not None and limit < 0):
        raise InternalError("negative LIMIT or OFFSET")
    return rows[offset:] if limit is None else rows[offset:offset + limit]
