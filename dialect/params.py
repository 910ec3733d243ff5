"""``bind_parameters``: substitute qmark (``?``) parameters as SQL literals (PEP 249 qmark)."""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlglot.errors import TokenError
from sqlglot.tokens import TokenType

from dialect.dialect import MpcDialect
from dialect.errors import ProgrammingError


def sql_literal(value: Any) -> str:
    """``value`` as a SQL literal: NULL, TRUE/FALSE, a number or a quoted string."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise ProgrammingError(f"parameter is an integer of {value.bit_length()} bits: too "
                                   "large to write as SQL") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProgrammingError(f"parameter {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ProgrammingError(f"parameter {value!r} is not a finite number")
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise ProgrammingError(f"unsupported parameter type {type(value).__name__}")


def bind_parameters(sql: str, parameters: Sequence[Any]) -> str:
    """``sql`` with each ``?`` placeholder replaced by the next parameter, as a literal."""
    if isinstance(parameters, (str, bytes, Mapping)) or not isinstance(parameters, Sequence):
        raise ProgrammingError("parameters must be a sequence (paramstyle qmark)")
    try:
        tokens = MpcDialect().tokenize(sql)
    except TokenError as e:
        raise ProgrammingError(f"cannot tokenize the SQL: {e}") from e
    marks = [t for t in tokens if t.token_type == TokenType.PLACEHOLDER and t.text == "?"]
    if len(marks) != len(parameters):
        raise ProgrammingError(
            f"the SQL has {len(marks)} ? placeholder(s) but {len(parameters)} parameter(s) "
            "were given"
        )
    out = sql
    for token, value in reversed(list(zip(marks, parameters, strict=True))):
        out = out[: token.start] + sql_literal(value) + out[token.end + 1 :]
    return out
