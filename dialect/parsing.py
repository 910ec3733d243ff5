"""``parse(sql)``: SQL text -> a validated ``exp.Select`` of the secure grammar.

``parse_query(sql)`` also returns the ``SET name = 'value';`` settings written before it.
"""

from __future__ import annotations

import re

from sqlglot import exp
from sqlglot.errors import ParseError as SqlglotParseError
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from dialect.dialect import MpcDialect
from dialect.errors import ParseError, ProgrammingError, UnsupportedError
from dialect.grammar import GrammarChecker
from dialect.positions import SourceMap
from dialect.settings import ParsedQuery, is_set_statement, read_setting

_TOKEN_REPR = re.compile(r"<Token token_type: TokenType\.(\w+), text: (.*?), line: .*?>")
_UNTERMINATED = re.compile(r"Missing (.+?) from")
_MISSING = re.compile(r"Required keyword: '(\w+)' missing for <class '[\w.]*?(\w+)'>")

#: Deepest nesting a query may have: open parentheses (brackets, braces, CASE ... END) plus a
#: run of prefix operators (``NOT``, ``-``, ``+``, ``~``).  The parser recurses about 23 Python
#: frames per level, so 24 levels stay well inside the default recursion limit of 1000 from
#: any caller; the secure grammar itself needs at most a handful.
MAX_NESTING = 24
_OPEN = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE, TokenType.CASE})
_CLOSE = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE, TokenType.END})
_PREFIX = frozenset({TokenType.NOT, TokenType.DASH, TokenType.PLUS, TokenType.TILDE})
TOO_DEEP = f"query nested too deeply (limit {MAX_NESTING})"


def parse(sql: str) -> exp.Select:
    """Parse ``sql`` with :class:`MpcDialect` and check it against the secure grammar.

    Raises :class:`ParseError` for SQL that does not parse and :class:`UnsupportedError`
    (naming the construct and its line/column) for SQL outside the grammar.  Leading
    ``SET name = 'value';`` statements are checked but dropped: use :func:`parse_query` to
    get them.
    """
    return parse_query(sql).select


def parse_query(sql: str) -> ParsedQuery:
    """Like :func:`parse`, keeping the settings (``SET join_protocol = 'masked';``) before it."""
    if not isinstance(sql, str):
        raise ProgrammingError(f"SQL must be a string, not {type(sql).__name__}")
    dialect = MpcDialect()
    try:
        tokens = dialect.tokenize(sql)
    except TokenError as e:
        raise _token_error(sql, e) from e
    _check_nesting(sql, tokens)
    try:
        statements = dialect.parser().parse(tokens, sql)
    except SqlglotParseError as e:
        raise _parse_error(e) from e
    except TokenError as e:
        raise _token_error(sql, e) from e
    except RecursionError:  # a nesting the token scan does not count: same refusal
        raise ParseError(TOO_DEEP) from None
    try:
        return _statements(sql, statements)
    except RecursionError:
        raise ParseError(TOO_DEEP) from None


def _check_nesting(sql: str, tokens: list[Token]) -> None:
    """ParseError "query nested too deeply" at the first token deeper than MAX_NESTING."""
    depth = run = 0
    for t in tokens:
        if t.token_type in _OPEN:
            depth += 1
        elif t.token_type in _CLOSE:
            depth = max(0, depth - 1)
        run = run + 1 if t.token_type in _PREFIX else 0
        if depth + run > MAX_NESTING:
            line, col = SourceMap(sql, tokens=[]).line_col(t.start)
            raise ParseError(TOO_DEEP, line=line, col=col, highlight=t.text)


def _statements(sql: str, statements: list) -> ParsedQuery:
    """The checked settings and SELECT of the parsed ``statements``."""
    src = SourceMap(sql)
    # exp.Semicolon carries a comment that follows a ';': not a statement
    found = [s for s in statements if s is not None and not isinstance(s, exp.Semicolon)]
    if not found:
        raise ParseError("empty SQL: expected one SELECT statement", line=1, col=1)
    starts = src.statement_starts()
    if len(starts) != len(found):  # positions are best effort
        starts = [starts[0] if starts else 0] * len(found)
    settings: dict[str, str] = {}
    rest: list[int] = []  # indices of the statements that are not SETs
    for i, stmt in enumerate(found):
        if not is_set_statement(stmt):
            rest.append(i)
            continue
        line, col = src.line_col(starts[i])
        if rest:
            raise UnsupportedError(
                f"SET after the query (line {line}, column {col}); write SET before the SELECT",
                construct="SET after the query", line=line, col=col,
            )
        name, value = read_setting(stmt, line, col)
        if name in settings:
            raise ProgrammingError(f"{name} is set twice (line {line}, column {col})")
        settings[name] = value
    if not rest:
        line, col = src.line_col(len(sql.rstrip()))
        raise ParseError("no SELECT after SET: expected one SELECT statement", line=line,
                         col=col)
    if len(rest) > 1:
        line, col = src.line_col(starts[rest[1]])
        raise UnsupportedError(
            f"multiple statements are not supported (line {line}, column {col}); "
            "send one SELECT at a time",
            construct="multiple statements", line=line, col=col,
        )
    select = GrammarChecker(src, start=starts[rest[0]]).check(found[rest[0]])
    return ParsedQuery(select, tuple(settings.items()))


def _parse_error(e: SqlglotParseError) -> ParseError:
    """Our ParseError from sqlglot's: description, line, start column and highlight."""
    info = e.errors[0] if e.errors else {}
    description = str(info.get("description") or e)
    description = _TOKEN_REPR.sub(
        lambda m: "end of input" if m.group(1) == "SENTINEL" else repr(m.group(2)), description
    )
    missing = _MISSING.search(description)
    if missing:
        arg, cls = missing.groups()
        description = (
            f"{cls.upper()} needs a target column and at least one feature column"
            if cls.upper() in ("LASSO", "RIDGE", "LINREG")
            else f"{cls.upper()} is missing its {arg!r} argument"
        )
    line, col = info.get("line"), info.get("col")
    highlight = info.get("highlight")
    if isinstance(col, int) and highlight and "\n" not in highlight:
        col = max(1, col - len(highlight) + 1)  # sqlglot points at the token's last character
    message = f"syntax error: {description}"
    if highlight:
        message += f" near {highlight!r}"
    if line is not None:
        message += f" (line {line}, column {col})"
    return ParseError(message, line=line, col=col, highlight=highlight)


def _token_error(sql: str, e: TokenError) -> ParseError:
    """Our ParseError for SQL that cannot be tokenized (e.g. an unterminated string)."""
    match = _UNTERMINATED.match(str(e.__cause__ or ""))
    if match and (offset := sql.rfind(match.group(1))) >= 0:
        line, col = SourceMap(sql, tokens=[]).line_col(offset)
        quote = match.group(1)
        return ParseError(f"syntax error: unterminated {quote} (line {line}, column {col})",
                          line=line, col=col, highlight=quote)
    return ParseError(f"syntax error: cannot tokenize the SQL ({e.__cause__ or e})")
