"""What a client statement is, and where it is answered.

* session commands (``SET``, ``SHOW``, ``RESET``, ``BEGIN``/``COMMIT``/``ROLLBACK``,
  ``DISCARD``, ``DEALLOCATE``) are answered by the endpoint; ``SET join_protocol = ...`` (an
  mpcsql setting, :data:`dialect.SETTINGS`) is remembered and written before each later
  query, as ``SET join_protocol = 'masked'; SELECT ...``;
* a query that reads only ``pg_catalog`` / ``information_schema`` (or no table at all:
  ``SELECT 1``, ``SELECT version()``) is answered from the catalog database;
* a query over party tables that provably returns no rows (``LIMIT 0``, ``WHERE 1 = 0``: the
  column probes BI tools send) is answered from the catalog's empty tables;
* every other query goes to the party server as the analyst's query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.tokens import Tokenizer, TokenType

from dialect.errors import NotSupportedError, ProgrammingError
from engine.pgwire.catalog import parse, table_kind


@dataclass(frozen=True)
class Command:
    """A session command: ``kind`` (set, reset, show, begin, commit, rollback, discard,
    deallocate, noop) and its parts."""

    kind: str
    name: str = ""
    value: str | None = None


_SET = re.compile(r"SET\s+(?:SESSION\s+|LOCAL\s+)?(?!SESSION\s+CHARACTERISTICS|TRANSACTION)"
                  r"([A-Za-z_][\w.]*)\s*(?:=|\bTO\b)\s*(.+?)\s*;?\s*$", re.I | re.S)
_SET_TZ = re.compile(r"SET\s+(?:SESSION\s+|LOCAL\s+)?TIME\s+ZONE\s+(.+?)\s*;?\s*$", re.I | re.S)
_SET_NAMES = re.compile(r"SET\s+NAMES\s+(.+?)\s*;?\s*$", re.I | re.S)
_SHOW = re.compile(r"SHOW\s+(ALL|[A-Za-z_][\w.]*|TIME\s+ZONE|TRANSACTION\s+ISOLATION\s+LEVEL)"
                   r"\s*;?\s*$", re.I | re.S)
_RESET = re.compile(r"RESET\s+(ALL|[A-Za-z_][\w.]*)\s*;?\s*$", re.I | re.S)
_WORD = re.compile(r"\s*([A-Za-z]+)")
_NOOP = ("SET SESSION CHARACTERISTICS", "SET TRANSACTION", "LISTEN", "UNLISTEN", "SAVEPOINT",
         "RELEASE", "CLOSE", "SET CONSTRAINTS", "SET ROLE", "SET SESSION AUTHORIZATION")


def _value(raw: str) -> str:
    raw = raw.strip()
    parts = [p.strip() for p in raw.split(",")] if not raw.startswith("'") else [raw]
    out = []
    for p in parts:
        if len(p) >= 2 and p[0] == p[-1] == "'":
            p = p[1:-1].replace("''", "'")
        elif len(p) >= 2 and p[0] == p[-1] == '"':
            p = p[1:-1]
        out.append(p)
    return ", ".join(out)


def command(sql: str) -> Command | None:
    """The session command ``sql`` is, or None for a query."""
    text = sql.strip()
    m = _WORD.match(text)
    if not m:
        return None
    first = m[1].upper()
    upper = " ".join(text.upper().split())
    if any(upper.startswith(p) for p in _NOOP):
        return Command("noop", upper.split(" ")[0] if not upper.startswith("SET") else "SET")
    if first == "SET":
        if (mt := _SET_TZ.match(text)):
            return Command("set", "TimeZone", _value(mt[1]))
        if (mn := _SET_NAMES.match(text)):
            return Command("set", "client_encoding", _value(mn[1]))
        if (ms := _SET.match(text)):
            return Command("set", ms[1], _value(ms[2]))
        raise ProgrammingError(f"cannot read the SET statement {text!r}; write SET name = "
                               "value")
    if first == "SHOW":
        if (mw := _SHOW.match(text)):
            name = " ".join(mw[1].split())
            name = {"TIME ZONE": "TimeZone",
                    "TRANSACTION ISOLATION LEVEL": "transaction_isolation"}.get(name.upper(),
                                                                                 name)
            return Command("show", name)
        raise ProgrammingError(f"cannot read the SHOW statement {text!r}")
    if first == "RESET":
        if (mr := _RESET.match(text)):
            return Command("reset", mr[1])
        raise ProgrammingError(f"cannot read the RESET statement {text!r}")
    if first in ("BEGIN", "START"):
        return Command("begin")
    if first in ("COMMIT", "END"):
        return Command("commit")
    if first in ("ROLLBACK", "ABORT"):
        return Command("rollback")
    if first == "DISCARD":
        return Command("discard", upper.removeprefix("DISCARD").strip() or "ALL")
    if first == "DEALLOCATE":
        name = upper.removeprefix("DEALLOCATE").strip().removeprefix("PREPARE").strip()
        return Command("deallocate", text.split()[-1] if name else "")
    return None


def split(sql: str) -> list[str]:
    """The statements of a simple-query string, split at top-level semicolons."""
    try:
        tokens = Tokenizer().tokenize(sql)
    except Exception:  # noqa: BLE001 - untokenizable: one statement, refused downstream
        return [sql] if sql.strip() else []
    out, start = [], 0
    for t in tokens:
        if t.token_type == TokenType.SEMICOLON:
            part = sql[start:t.start]
            if part.strip():
                out.append(part)
            start = t.end + 1
    if sql[start:].strip():
        out.append(sql[start:])
    return out


def _false(node: exp.Expression | None) -> bool:
    """Whether a WHERE predicate is a constant that is never true (1 = 0, 1 <> 1, false)."""
    if node is None:
        return False
    if isinstance(node, exp.Boolean):
        return not node.this
    if isinstance(node, exp.Paren):
        return _false(node.this)
    if isinstance(node, (exp.EQ, exp.NEQ)) and isinstance(node.left, exp.Literal) \
            and isinstance(node.right, exp.Literal):
        same = node.left.this == node.right.this and node.left.is_string == node.right.is_string
        return not same if isinstance(node, exp.EQ) else same
    if isinstance(node, exp.And):
        return _false(node.left) or _false(node.right)
    return False


def _limit_zero(tree: exp.Expression) -> bool:
    limit = tree.args.get("limit")
    value = limit.expression if isinstance(limit, exp.Limit) else None
    return isinstance(value, exp.Literal) and not value.is_string and value.this == "0"


def route(sql: str) -> str:
    """'catalog' (answered from the catalog database) or 'party' (the party server).

    Refuses (NotSupportedError) a query that mixes catalog tables with party tables.
    """
    try:
        tree = parse(sql)
    except ProgrammingError:
        return "party"  # the party server reports the syntax error, with its position
    if not isinstance(tree, (exp.Select, exp.Union, exp.Subquery)):
        return "party"  # DDL, DML, ...: the party server refuses them, naming the construct
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    kinds = {table_kind(t) for t in tree.find_all(exp.Table)
             if t.name and t.name.lower() not in ctes and not isinstance(t.this, exp.Func)}
    if kinds <= {"pg", "info"}:
        return "catalog"
    if "user" in kinds and kinds & {"pg", "info"}:
        raise NotSupportedError("a query cannot join the catalog (pg_catalog, "
                                "information_schema) with party tables")
    if isinstance(tree, exp.Select) and (_limit_zero(tree) or _false(tree.args.get("where")
                                                                     and tree.args["where"].this)):
        return "catalog"  # a column probe: no rows, the types come from the empty tables
    return "party"


_PARAM = re.compile(r"\$(\d+)")


def bind(sql: str, params: list, literal) -> str:
    """``sql`` with each ``$n`` placeholder replaced by ``literal(params[n - 1])`` (outside
    string literals and quoted names, found by the tokenizer)."""
    if not params:
        return sql
    try:
        tokens = Tokenizer().tokenize(sql)
    except Exception as e:  # noqa: BLE001
        raise ProgrammingError(f"cannot read the query to bind its parameters: {e}") from None
    spans = []
    for t in tokens:
        if t.token_type in (TokenType.PARAMETER, TokenType.PLACEHOLDER) or (
                t.token_type == TokenType.VAR and t.text.startswith("$")):
            spans.append((t.start, t.end))
    out, used = sql, set()
    for start, end in sorted(spans, reverse=True):
        piece = sql[start:end + 1]
        m = _PARAM.fullmatch(piece)
        if not m:
            # the tokenizer split "$1" as "$" + "1": widen to the digits that follow
            m2 = _PARAM.match(sql, start)
            if not m2:
                continue
            piece, end = m2[0], m2.end() - 1
            m = m2
        n = int(m[1])
        if not 1 <= n <= len(params):
            raise ProgrammingError(f"there is no parameter ${n} ({len(params)} bound)")
        used.add(n)
        out = out[:start] + literal(params[n - 1]) + out[end + 1:]
    return out
