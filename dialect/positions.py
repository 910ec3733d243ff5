"""Source positions of parsed constructs (1-based line and column of their first character).

sqlglot records positions only on some nodes (identifiers, literals, function names); for
clauses such as WHERE or LEFT JOIN we find the keyword token that starts the construct.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from sqlglot import exp
from sqlglot.tokens import Token, TokenType

from dialect.dialect import MpcDialect

#: Tokens that can begin a join (``LEFT OUTER JOIN``, ``NATURAL JOIN``, a comma, ...).
JOIN_TOKENS = frozenset(
    {
        TokenType.JOIN, TokenType.LEFT, TokenType.RIGHT, TokenType.FULL, TokenType.OUTER,
        TokenType.INNER, TokenType.CROSS, TokenType.NATURAL, TokenType.SEMI, TokenType.ANTI,
        TokenType.ASOF, TokenType.POSITIONAL, TokenType.COMMA,
    }
)


class SourceMap:
    """Maps parsed nodes back to line/column positions in ``sql``."""

    def __init__(self, sql: str, tokens: list[Token] | None = None) -> None:
        self.sql = sql
        self.tokens = tokens if tokens is not None else _tokenize(sql)
        self._starts = [t.start for t in self.tokens]

    # --- offsets -> positions -----------------------------------------------------------------

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of character ``offset``."""
        offset = max(0, min(offset, len(self.sql)))
        line = self.sql.count("\n", 0, offset) + 1
        col = offset - (self.sql.rfind("\n", 0, offset) + 1) + 1
        return line, col

    # --- nodes -> offsets ---------------------------------------------------------------------

    @staticmethod
    def own_start(node: exp.Expression) -> int | None:
        meta = node.meta if isinstance(node, exp.Expression) else {}
        start = meta.get("start")
        return start if isinstance(start, int) else None

    def first_start(self, node: exp.Expression) -> int | None:
        """Smallest recorded start offset of ``node`` or any node below it."""
        starts = [s for n in node.walk() if (s := self.own_start(n)) is not None]
        return min(starts, default=None)

    def _last_before(self, offset: int) -> int:
        """Index of the last token starting before ``offset`` (-1 if none)."""
        return bisect.bisect_left(self._starts, offset) - 1

    def keyword_start(self, types: Iterable[TokenType], anchor: int | None) -> int | None:
        """Start of the last token of ``types`` before ``anchor`` (or the first one at all)."""
        types = frozenset(types)
        if anchor is None:
            return next((t.start for t in self.tokens if t.token_type in types), None)
        for i in range(self._last_before(anchor), -1, -1):
            if self.tokens[i].token_type in types:
                return self.tokens[i].start
        return None

    def join_start(self, join: exp.Join) -> int | None:
        """Start of the words introducing ``join`` (``LEFT OUTER JOIN``, ``,``, ...)."""
        anchor = self.first_start(join.this) if join.this is not None else None
        if anchor is None:
            return None
        i = self._last_before(anchor)
        first = None
        while i >= 0 and self.tokens[i].token_type in JOIN_TOKENS:
            first = i
            if self.tokens[i].token_type == TokenType.COMMA:
                break
            i -= 1
        return self.tokens[first].start if first is not None else None

    def function_start(self, func: exp.Func) -> int | None:
        """Start of the name of a function call whose node has no recorded position."""
        anchor = self.first_start(func)
        if anchor is None:
            return None
        i = self._last_before(anchor)
        while i >= 1 and self.tokens[i].token_type == TokenType.L_PAREN:
            if self.tokens[i - 1].token_type != TokenType.L_PAREN:
                return self.tokens[i - 1].start
            i -= 1
        return None

    def token_before(self, node: exp.Expression) -> Token | None:
        """The token just before ``node``'s first recorded position."""
        anchor = self.first_start(node)
        if anchor is None:
            return None
        i = self._last_before(anchor)
        return self.tokens[i] if i >= 0 else None

    def statement_starts(self) -> list[int]:
        """Start offsets of the statements of the SQL text (split on semicolons)."""
        starts, expect = [], True
        for t in self.tokens:
            if t.token_type == TokenType.SEMICOLON:
                expect = True
            elif expect:
                starts.append(t.start)
                expect = False
        return starts

    # --- the public entry point ---------------------------------------------------------------

    def position(
        self,
        node: exp.Expression | None,
        *,
        keywords: Iterable[TokenType] = (),
        join: bool = False,
    ) -> tuple[int, int]:
        """Line and column where ``node`` starts; always some position (1, 1 at worst)."""
        offset = None
        if isinstance(node, exp.Join) and join:
            offset = self.join_start(node)
        elif node is not None and keywords:
            offset = self.keyword_start(keywords, self.first_start(node))
        if offset is None and node is not None:
            offset = self.own_start(node)
        if offset is None and isinstance(node, exp.Func):
            offset = self.function_start(node)
        if offset is None and node is not None:
            offset = self.first_start(node)
        if offset is None and node is not None and node.parent is not None:
            return self.position(node.parent)
        if offset is None:
            starts = self.statement_starts()
            offset = starts[0] if starts else 0
        return self.line_col(offset)


def _tokenize(sql: str) -> list[Token]:
    try:
        return list(MpcDialect().tokenize(sql))
    except Exception:  # positions are best effort; parsing reports the error itself
        return []
