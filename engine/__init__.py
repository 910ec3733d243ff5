"""mpcsql engine: run secure plans across three parties; PEP 249 API, party server, CLI."""

from __future__ import annotations

from dialect.errors import (
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PolicyError,
    ProgrammingError,
    Warning,
)
from engine.client.dbapi import Connection, Cursor, apilevel, connect, paramstyle, threadsafety

__all__ = [
    "Connection", "Cursor", "DataError", "DatabaseError", "Error", "IntegrityError",
    "InterfaceError", "InternalError", "NotSupportedError", "OperationalError", "PolicyError",
    "ProgrammingError", "Warning", "apilevel", "connect", "paramstyle", "threadsafety",
]
