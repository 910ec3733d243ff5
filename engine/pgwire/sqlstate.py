"""SQLSTATE codes for mpcsql's errors, as the PostgreSQL endpoint reports them.

The table (docs/pg.md repeats it) maps each error class, and for ``BindError`` the kind of
name it could not bind, to the code PostgreSQL itself would use, so that a client's standard
handling applies (psycopg raises ``UndefinedTable`` for 42P01, JDBC reports the state).
"""

from __future__ import annotations

from dialect.errors import (
    AuthorizationError,
    BindError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ParseError,
    PolicyError,
    ProgrammingError,
)

SYNTAX_ERROR = "42601"
UNDEFINED_TABLE = "42P01"
UNDEFINED_COLUMN = "42703"
UNDEFINED_FUNCTION = "42883"
AMBIGUOUS_COLUMN = "42702"
GROUPING_ERROR = "42803"
INSUFFICIENT_PRIVILEGE = "42501"
SYNTAX_OR_ACCESS = "42000"
FEATURE_NOT_SUPPORTED = "0A000"
DATA_EXCEPTION = "22000"
INTEGRITY = "23000"
QUERY_CANCELED = "57014"
SYSTEM_ERROR = "58000"
INTERNAL_ERROR = "XX000"
PROTOCOL_VIOLATION = "08P01"
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION = "28000"
CONNECTION_FAILURE = "08006"
TOO_MANY_CONNECTIONS = "53300"
INVALID_PARAMETER_VALUE = "22023"
UNDEFINED_OBJECT = "42704"
READ_ONLY = "25006"

#: BindError messages start with what could not be bound; the code follows from that.
_BIND_PREFIXES: tuple[tuple[str, str], ...] = (
    ("unknown table", UNDEFINED_TABLE),
    ("unknown column", UNDEFINED_COLUMN),
    ("ambiguous column", AMBIGUOUS_COLUMN),
    ("duplicate table name", "42712"),
    ("aggregate ", GROUPING_ERROR),
)


#: Codes of the endpoint's own error classes (registered by engine.pgwire.server).
EXTRA_CODES: dict[type, str] = {}


def sqlstate(e: BaseException) -> str:
    """The SQLSTATE for an error raised while answering a client."""
    for cls, code in EXTRA_CODES.items():
        if isinstance(e, cls):
            return code
    if isinstance(e, ParseError):
        return SYNTAX_ERROR
    if isinstance(e, (PolicyError, AuthorizationError)):
        return INSUFFICIENT_PRIVILEGE
    if isinstance(e, BindError):
        msg = e.message.lower()
        for prefix, code in _BIND_PREFIXES:
            if msg.startswith(prefix):
                return code
        if "must appear in the group by" in msg:
            return GROUPING_ERROR
        if "is the key of" in msg:  # the join key is never revealed nor aggregated
            return INSUFFICIENT_PRIVILEGE
        return SYNTAX_OR_ACCESS
    if isinstance(e, NotSupportedError):
        return FEATURE_NOT_SUPPORTED
    if isinstance(e, DataError):
        return DATA_EXCEPTION
    if isinstance(e, IntegrityError):
        return INTEGRITY
    if isinstance(e, OperationalError):
        msg = e.message.lower()
        if "cancel" in msg or "timed out" in msg or "time-out" in msg:
            return QUERY_CANCELED
        return SYSTEM_ERROR
    if isinstance(e, ProgrammingError):
        return SYNTAX_OR_ACCESS
    if isinstance(e, InterfaceError):
        return SYSTEM_ERROR
    if isinstance(e, (InternalError, Error)):
        return INTERNAL_ERROR
    return INTERNAL_ERROR


def position(e: BaseException, sql: str) -> int | None:
    """1-based character position of a ParseError in ``sql`` (PostgreSQL's ``P`` field)."""
    line, col = getattr(e, "line", None), getattr(e, "col", None)
    if not line or not col:
        return None
    lines = sql.split("\n")
    if line > len(lines):
        return None
    return sum(len(s) + 1 for s in lines[:line - 1]) + min(col, len(lines[line - 1]) + 1)
