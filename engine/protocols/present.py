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
the DB-API cursor's ``description`` reports it: integer types -> ``int``, DOUBLE/FLOAT ->
``float`` (DECIMAL too), VARCHAR -> ``str``, BOOLEAN -> ``bool``; NULL -> ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dialect.errors import InternalError

if TYPE_CHECKING:
    from planner.physical import OrderKey, Program

INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                           "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"})
#: DECIMAL too: the control wire is JSON, so a float reaches the client (the planner's outputs
#: are DOUBLE where DuckDB's would be DECIMAL)
FLOAT_TYPES = frozenset({"DOUBLE", "FLOAT", "REAL", "DECIMAL"})


def present(rows: Sequence[Sequence[Any]], program: Program, output: Sequence[Any]
            ) -> list[tuple]:
    """The receivers' result: ``rows`` typed per ``output``, ordered and limited."""
    dtypes = [c.dtype for c in output]
    typed = [typed_row(r, dtypes) for r in rows]
    return limit_rows(order_rows(typed, program.order), program.limit, program.offset)


def typed_row(row: Sequence[Any], dtypes: Sequence[str]) -> tuple:
    if len(row) != len(dtypes):
        raise InternalError(f"a result row has {len(row)} values for {len(dtypes)} columns")
    return tuple(typed_value(v, t) for v, t in zip(row, dtypes, strict=True))


def typed_value(v: Any, dtype: str) -> Any:
    """``v`` as the Python type of DuckDB type ``dtype`` (None stays None)."""
    if v is None:
        return None
    if hasattr(v, "item") and not isinstance(v, (int, float, str, bool)):
        v = v.item()  # a numpy scalar
    base = dtype.split("(")[0].strip().upper()
    if base in INTEGER_TYPES:
        return v if isinstance(v, int) and not isinstance(v, bool) else int(round(v))
    if base in FLOAT_TYPES:
        return float(v)
    if base == "BOOLEAN":
        return bool(v)
    if base == "VARCHAR":
        return str(v)
    return v


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
