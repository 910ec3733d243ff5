"""Default output column names, as DuckDB names them for the SQL as written.

DuckDB names an unaliased aggregate after its text: the function name in lower case as written
(``SUM`` -> ``sum``), the column reference as written (``ac.charges``; identifiers are quoted
only when DuckDB must quote them), and ``count_star()`` for ``COUNT(*)``.
"""

from __future__ import annotations

import functools
import re

from sqlglot import exp

from dialect.functions import function_name

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Used only when duckdb cannot be imported; DuckDB's own keyword list is preferred.
_FALLBACK_KEYWORDS = frozenset(
    """all analyse analyze and any array as asc asymmetric both case cast check collate column
    constraint create default deferrable desc distinct do else end except false fetch for
    foreign from grant group having in initially intersect into lateral leading limit not null
    offset on only or order placing primary references returning select symmetric table then
    to trailing true union unique using variadic when where window with name type value key
    year month day hour minute second""".split()
)


@functools.cache
def duckdb_keywords() -> frozenset[str]:
    """DuckDB's keywords (any category), lower case; identifiers among them get quoted."""
    try:
        import duckdb

        with duckdb.connect() as con:
            rows = con.execute("SELECT keyword_name FROM duckdb_keywords()").fetchall()
        return frozenset(str(r[0]).lower() for r in rows)
    except Exception:  # duckdb missing or too old: fall back to a static list
        return _FALLBACK_KEYWORDS


def quote_identifier(name: str) -> str:
    """``name`` as DuckDB prints it in a column name: bare if it can be, else double-quoted."""
    if _PLAIN.fullmatch(name) and name.lower() not in duckdb_keywords():
        return name
    return '"' + name.replace('"', '""') + '"'


def column_text(col: exp.Column) -> str:
    """A column reference as written, e.g. ``ac.charges``."""
    return ".".join(quote_identifier(part.name) for part in col.parts)


def written_function_name(node: exp.Expression, sql: str) -> str:
    """The function name as written in ``sql`` (lower case), e.g. ``avg``."""
    meta = node.meta
    start, end = meta.get("start"), meta.get("end")
    if isinstance(start, int) and isinstance(end, int) and 0 <= start <= end < len(sql):
        text = sql[start : end + 1].strip().strip('"')
        if _PLAIN.fullmatch(text):
            return text.lower()
    return function_name(node).lower()


def default_name(agg: exp.Expression, sql: str) -> str:
    """DuckDB's name for an unaliased scalar aggregate ``agg`` parsed from ``sql``."""
    if isinstance(agg, exp.Count) and isinstance(agg.this, exp.Star):
        return "count_star()"
    args = [column_text(a) for a in (agg.this, *agg.expressions) if isinstance(a, exp.Column)]
    return f"{written_function_name(agg, sql)}({', '.join(args)})"
