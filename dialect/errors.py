"""The exception hierarchy shared by every stage (PEP 249 classes, one subclass per stage).

``Error`` is the single root.  Each stage raises its own subclass so that callers can tell
where a query failed, while DB-API users can keep catching the PEP 249 classes.
"""

from __future__ import annotations

import builtins
from typing import Any


class Warning(builtins.Warning):  # noqa: A001 - name fixed by PEP 249
    """Important warnings (PEP 249)."""


class Error(Exception):
    """Root of all mpcsql errors (PEP 249 ``Error``).

    ``party`` names the party that raised or caused the error, when known.
    """

    def __init__(self, message: str, *, party: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.party = party

    def __str__(self) -> str:
        if self.party and not self.message.startswith(f"[{self.party}]"):
            return f"[{self.party}] {self.message}"
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """Serialise for sending between processes (never carries data values)."""
        return {"type": type(self).__name__, "message": self.message, "party": self.party}


class InterfaceError(Error):
    """Misuse of the database interface (closed connection or cursor, ...)."""


class DatabaseError(Error):
    """Errors related to the (federated) database."""


class DataError(DatabaseError):
    """Problems with the data: NULLs, non-numeric values, duplicate keys, out of range."""


class OperationalError(DatabaseError):
    """A party died, timed out or could not be reached."""


class IntegrityError(DatabaseError):
    """Relational integrity is affected."""


class InternalError(DatabaseError):
    """The engine reached a state it should not (a bug)."""


class ProgrammingError(DatabaseError):
    """Bad SQL, unknown names, wrong number of arguments, refused by policy."""


class NotSupportedError(DatabaseError):
    """A construct outside the secure SQL grammar."""


# --- stage errors -------------------------------------------------------------------------------


class ParseError(ProgrammingError):
    """SQL that cannot be parsed; keeps line, column and a highlighted excerpt."""

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        col: int | None = None,
        highlight: str | None = None,
        party: str | None = None,
    ) -> None:
        if line is not None and "line" not in message:
            message = f"{message} (line {line}, column {col})"
        super().__init__(message, party=party)
        self.line = line
        self.col = col
        self.highlight = highlight

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(line=self.line, col=self.col, highlight=self.highlight)
        return d


class UnsupportedError(NotSupportedError):
    """A construct that parses but lies outside the secure grammar; names it and its position."""

    def __init__(
        self,
        message: str,
        *,
        construct: str | None = None,
        line: int | None = None,
        col: int | None = None,
        party: str | None = None,
    ) -> None:
        if line is not None and "line" not in message:
            message = f"{message} (line {line}, column {col})"
        super().__init__(message, party=party)
        self.construct = construct
        self.line = line
        self.col = col

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(construct=self.construct, line=self.line, col=self.col)
        return d


class BindError(ProgrammingError):
    """Unknown or ambiguous table/column, or a type mismatch (planner stage)."""


class PolicyError(ProgrammingError):
    """A party's policy refuses the query; names the party and the rule."""

    def __init__(self, message: str, *, party: str | None = None, rule: str | None = None) -> None:
        super().__init__(message, party=party)
        self.rule = rule

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["rule"] = self.rule
        return d


class AuthorizationError(ProgrammingError):
    """An authenticated client or peer asked for something its identity may not do."""


class ProtocolError(OperationalError):
    """A secure protocol could not complete (peer lost, time-out, malformed message)."""


class ConfigError(ProgrammingError):
    """A configuration that cannot be used (``party.toml``, a policy, a certificate, a setting
    of ``engine.connect``); names the file or the setting and the cause."""


_CLASSES: dict[str, type[Error]] = {
    c.__name__: c
    for c in (
        Error,
        InterfaceError,
        DatabaseError,
        DataError,
        OperationalError,
        IntegrityError,
        InternalError,
        ProgrammingError,
        NotSupportedError,
        ParseError,
        UnsupportedError,
        BindError,
        PolicyError,
        ProtocolError,
        AuthorizationError,
        ConfigError,
    )
}


def register_error(cls: type[Error]) -> type[Error]:
    """Let :func:`error_from_dict` rebuild ``cls`` (an Error subclass defined outside dialect)."""
    if not (isinstance(cls, type) and issubclass(cls, Error)):
        raise TypeError(f"{cls!r} is not an Error subclass")
    _CLASSES.setdefault(cls.__name__, cls)
    return cls


def error_from_dict(d: dict[str, Any]) -> Error:
    """Rebuild an error sent by :meth:`Error.to_dict` (unknown types become InternalError)."""
    cls = _CLASSES.get(d.get("type", ""), InternalError)
    extra = {k: v for k, v in d.items() if k not in ("type", "message", "party")}
    try:
        return cls(d.get("message", ""), party=d.get("party"), **extra)
    except TypeError:
        return cls(d.get("message", ""), party=d.get("party"))
