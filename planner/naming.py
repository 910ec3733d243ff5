"""Default output column names, as DuckDB names them for the SQL as written.

DuckDB names an unaliased aggregate after its text: the function name in lower case as written
(``SUM`` -> ``sum``), the column reference as written (``ac.charges``; identifiers are quoted
only when DuckDB must quote them), and ``count_star()`` for ``COUNT(*)``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

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


# --- expressions, as DuckDB prints them in a column name ---------------------------------------

_BINARY_TEXT = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.EQ: "=",
                exp.NEQ: "!=", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}
_CAST_TEXT = {"INT": "INTEGER", "INT128": "HUGEINT", "REAL": "FLOAT", "INT2": "SMALLINT",
              "INT8": "BIGINT", "NUMERIC": "DECIMAL"}


def _literal_text(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Literal):
        if node.is_string:
            return "'" + str(node.this).replace("'", "''") + "'"
        return str(node.this)
    if isinstance(node, exp.Boolean):
        return "true" if node.this else "false"
    if isinstance(node, exp.Null):
        return "NULL"
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) \
            and not node.this.is_string:
        return f"-{node.this.this}"
    return None


def _cast_type(to: exp.Expression | None) -> str:
    if not isinstance(to, exp.DataType):
        return "?"
    name = to.this.name if hasattr(to.this, "name") else str(to.this)
    name = _CAST_TEXT.get(name, name)
    params = [p.sql(dialect="duckdb") for p in to.expressions]
    return f"{name}({', '.join(params)})" if params else name


class ExpressionNamer:
    """DuckDB's column name of an unaliased select item (``sum((x * 2))``, ``(avg(x) / 2)``,
    ``count_star() FILTER (WHERE (x > 1))``, ``CASE  WHEN ((x > 1)) THEN ('a') ELSE 'b' END``).

    ``column_name`` gives a top-level column's catalog name (DuckDB names ``SELECT ac.Region``
    ``region`` when the table's column is ``region``).
    """

    def __init__(self, sql: str, column_name: Callable[[exp.Column], str] | None = None):
        self.sql = sql
        self.column_name = column_name

    def name(self, node: exp.Expression) -> str:
        node = _unparen(node)
        if isinstance(node, exp.Column) and self.column_name is not None:
            return self.column_name(node)
        return self.text(node)

    def text(self, node: exp.Expression) -> str:
        node = _unparen(node)
        lit = _literal_text(node)
        if lit is not None:
            return lit
        if isinstance(node, exp.Column):
            return column_text(node)
        if isinstance(node, exp.Star):
            return "*"
        if isinstance(node, exp.Filter):
            cond = node.expression
            cond = cond.this if isinstance(cond, exp.Where) else cond
            return f"{self.text(node.this)} FILTER (WHERE {self.text(cond)})"
        if type(node) in _BINARY_TEXT:
            return f"({self.text(node.this)} {_BINARY_TEXT[type(node)]} " \
                   f"{self.text(node.expression)})"
        if isinstance(node, (exp.And, exp.Or)):
            word = "AND" if isinstance(node, exp.And) else "OR"
            parts = [self.text(p) for p in _flatten(node, type(node))]
            return f"({f' {word} '.join(parts)})"
        return self.special(node)

    def special(self, node: exp.Expression) -> str:
        t = self.text
        if isinstance(node, exp.Not):
            inner = _unparen(node.this)
            if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null):
                return f"({t(inner.this)} IS NOT NULL)"
            if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Boolean):
                return (f"(CAST({t(inner.this)} AS BOOLEAN) IS DISTINCT FROM "
                        f"{t(inner.expression)})")
            return f"(NOT {t(inner)})"
        if isinstance(node, exp.Is):
            target = _unparen(node.expression)
            if isinstance(target, exp.Boolean):
                return f"(CAST({t(node.this)} AS BOOLEAN) IS NOT DISTINCT FROM {t(target)})"
            return f"({t(node.this)} IS {t(target)})"
        if isinstance(node, exp.Neg):
            return f"(-({t(node.this)}))"
        if isinstance(node, exp.Between):
            return f"({t(node.this)} BETWEEN {t(node.args['low'])} AND {t(node.args['high'])})"
        if isinstance(node, exp.In):
            return f"({t(node.this)} IN ({', '.join(t(v) for v in node.expressions)}))"
        if isinstance(node, exp.Case):
            return self.case(node)
        if isinstance(node, exp.Coalesce):
            return f"COALESCE({', '.join(t(a) for a in [node.this, *node.expressions])})"
        if isinstance(node, (exp.Cast, exp.TryCast)):
            return f"CAST({t(node.this)} AS {_cast_type(node.args.get('to'))})"
        if isinstance(node, exp.Count) and isinstance(node.this, exp.Star):
            return "count_star()"
        if isinstance(node, exp.Func):
            args = [a for k in ("this", "expression") if (a := node.args.get(k)) is not None]
            args += list(node.args.get("expressions") or [])
            return f"{written_function_name(node, self.sql)}({', '.join(t(a) for a in args)})"
        return node.sql(dialect="duckdb")

    def case(self, node: exp.Case) -> str:
        subject = node.args.get("this")
        parts = ["CASE "]
        for branch in node.args.get("ifs") or []:
            cond = (f"({self.text(subject)} = {self.text(branch.this)})" if subject is not None
                    else self.text(branch.this))
            parts.append(f"WHEN ({cond}) THEN ({self.text(branch.args['true'])})")
        default = node.args.get("default")
        parts.append(f"ELSE {self.text(default) if default is not None else 'NULL'}")
        parts.append("END")
        return " ".join(parts)


def _unparen(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _flatten(node: exp.Expression, cls: type) -> list[exp.Expression]:
    node = _unparen(node)
    if isinstance(node, cls):
        return _flatten(node.this, cls) + _flatten(node.expression, cls)
    return [node]
