"""Typed control messages: one small class per operation, checked when received.

Both ends use them: a client or coordinator builds a request and sends ``to_wire()``; the
server turns what it reads back into the class with :func:`parse_request`, which refuses an
unknown operation, an unknown field, a missing field or a field of the wrong type with a
:class:`~dialect.errors.ProgrammingError` naming it (never a ``KeyError`` deep in a handler).
Replies that a party reads from another (hello, prepare, run, ...) have classes too.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from dialect.errors import ProgrammingError

M = TypeVar("M", bound="Wire")

#: Longest SQL text a party plans (characters).
MAX_SQL = 100_000

_QUERY_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def new_query_id() -> str:
    return secrets.token_hex(8)


def check_query_id(qid: Any) -> str:
    """A client-chosen query id: 1-64 characters of ``[0-9A-Za-z_-]``."""
    if not isinstance(qid, str) or not _QUERY_ID.fullmatch(qid):
        raise ProgrammingError(f"bad query id {qid!r}: use 1-64 letters, digits, '-' or '_'")
    return qid


def _fits(value: Any, hint: Any) -> bool:
    """Whether JSON-decoded ``value`` has type ``hint`` (str, int, float, bool, list, dict,
    ``X | None`` and ``list[X]`` / ``dict[str, X]``)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list or hint is list:
        args = typing.get_args(hint)
        # tuples too: a party's replies to itself are not JSON-encoded
        return isinstance(value, (list, tuple)) and (not args or all(_fits(v, args[0])
                                                                     for v in value))
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        return isinstance(value, dict) and (not args or all(
            isinstance(k, str) and _fits(v, args[1]) for k, v in value.items()))
    raise TypeError(f"unsupported field type {hint!r}")  # pragma: no cover - programming error


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


class Wire:
    """A message that travels as a JSON object; subclasses are frozen dataclasses."""

    kind: ClassVar[str] = "message"

    def to_wire(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_wire(cls: type[M], msg: Any, *, ignore: frozenset[str] = frozenset()) -> M:
        """Check ``msg`` field by field and build the message (ProgrammingError if malformed)."""
        what = f"{cls.kind} {getattr(cls, 'op', cls.__name__)!r}"
        if not isinstance(msg, dict):
            raise ProgrammingError(f"malformed {what}: not a JSON object")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(msg) - set(fields) - ignore)
        if unknown:
            raise ProgrammingError(f"malformed {what}: unknown field {unknown[0]!r}")
        values = {}
        for name, f in fields.items():
            if name not in msg:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ProgrammingError(f"malformed {what}: missing field {name!r}")
                continue
            if not _fits(msg[name], hints[name]):
                raise ProgrammingError(f"malformed {what}: field {name!r} must be "
                                       f"{_type_name(hints[name])}, not "
                                       f"{type(msg[name]).__name__}")
            values[name] = msg[name]
        return cls(**values)


# --- requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request(Wire):
    """Fields every request may carry: who the client says it is, and for whom a peer asks."""

    kind: ClassVar[str] = "request"
    op: ClassVar[str]

    user: str | None = None  # the client's OS user (shown as local:<user> without TLS)
    analyst: str | None = None  # set by a coordinator forwarding its analyst's request
    coordinator: str | None = None  # the party coordinating the query (peer requests)

    def __post_init__(self) -> None:
        sql = getattr(self, "sql", None)
        if isinstance(sql, str) and len(sql) > MAX_SQL:
            raise ProgrammingError(f"SQL of {len(sql):,} characters is over the limit of "
                                   f"{MAX_SQL:,}")

    def to_wire(self) -> dict[str, Any]:
        out = {k: v for k, v in super().to_wire().items() if v is not None}
        return {"op": self.op, **out}


@dataclass(frozen=True)
class Hello(Request):
    op: ClassVar[str] = "hello"


@dataclass(frozen=True)
class CatalogRequest(Request):
    """A party's own table schemas (peer operation)."""

    op: ClassVar[str] = "catalog"


@dataclass(frozen=True)
class Tables(Request):
    """Every party's table schemas, gathered by the analyst's own server."""

    op: ClassVar[str] = "tables"


@dataclass(frozen=True, kw_only=True)
class Explain(Request):
    op: ClassVar[str] = "explain"
    sql: str
    receivers: list[str] | None = None


@dataclass(frozen=True, kw_only=True)
class Query(Request):
    op: ClassVar[str] = "query"
    sql: str
    query_id: str | None = None
    receivers: list[str] | None = None


@dataclass(frozen=True)
class Status(Request):
    op: ClassVar[str] = "status"


@dataclass(frozen=True, kw_only=True)
class Cancel(Request):
    op: ClassVar[str] = "cancel"
    query_id: str


@dataclass(frozen=True, kw_only=True)
class QueryProgress(Request):
    """The latest progress of one query at this party (its analyst or the party's admin)."""

    op: ClassVar[str] = "progress"
    query_id: str


@dataclass(frozen=True, kw_only=True)
class Prepare(Request):
    """Coordinator -> every party: plan ``sql``, check policy, reserve a slot and a port."""

    op: ClassVar[str] = "prepare"
    sql: str
    catalog: dict[str, Any]
    query_id: str
    receivers: list[str] | None = None
    dry_run: bool = False


@dataclass(frozen=True, kw_only=True)
class Run(Request):
    """Coordinator -> every party: start the prepared query's session."""

    op: ClassVar[str] = "run"
    query_id: str
    addresses: list[list[Any]]


@dataclass(frozen=True)
class PaillierKey(Request):
    """Helper -> data party: its long-term Paillier public key (randomiser pools)."""

    op: ClassVar[str] = "paillier_key"


@dataclass(frozen=True, kw_only=True)
class Configure(Request):
    """Embedded federation owner -> party: the peers' addresses."""

    op: ClassVar[str] = "configure"
    peers: dict[str, list[Any]]


@dataclass(frozen=True)
class Shutdown(Request):
    op: ClassVar[str] = "shutdown"


@dataclass(frozen=True, kw_only=True)
class Register(Request):
    """Embedded federation owner -> data party: load a table (path or Parquet blob)."""

    op: ClassVar[str] = "register"
    table: str
    key: str | None = None
    bounds: dict[str, float] | None = None
    domains: dict[str, Any] | None = None  # planner.domains canonical form per column
    not_null: list[str] | None = None  # columns declared NOT NULL
    path: str | None = None
    source_table: str | None = None
    format: str | None = None


@dataclass(frozen=True, kw_only=True)
class Drop(Request):
    op: ClassVar[str] = "drop"
    table: str


REQUESTS: dict[str, type[Request]] = {c.op: c for c in (
    Hello, CatalogRequest, Tables, Explain, Query, Status, Cancel, QueryProgress, Prepare, Run,
    PaillierKey, Configure, Shutdown, Register, Drop)}

def parse_request(msg: Any) -> Request:
    """The typed request in ``msg`` (a decoded JSON object), or a ProgrammingError naming what
    is wrong with it."""
    if not isinstance(msg, dict):
        raise ProgrammingError("malformed request: not a JSON object")
    op = msg.get("op")
    cls = REQUESTS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ProgrammingError(f"unknown operation {op!r}")
    return cls.from_wire(msg, ignore=frozenset({"op"}))


# --- replies a party reads from another ------------------------------------------------------


@dataclass(frozen=True)
class Reply(Wire):
    kind: ClassVar[str] = "reply"
    op: ClassVar[str]

    ok: bool = True

    def to_wire(self) -> dict[str, Any]:
        return super().to_wire()


@dataclass(frozen=True)
class HelloReply(Reply):
    op: ClassVar[str] = "hello"
    party: str = ""
    role: str = ""
    parties: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class CatalogReply(Reply):
    op: ClassVar[str] = "catalog"
    tables: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class PrepareReply(Reply):
    op: ClassVar[str] = "prepare"
    fingerprint: str = ""
    port: int | None = None  # None for a dry run
    refused: str | None = None  # dry run: this party's refusal, if any
    rules: list[str] = field(default_factory=list)  # dry run: the rules that apply


@dataclass(frozen=True)
class RunReply(Reply):
    op: ClassVar[str] = "run"
    rows: list[list[Any]] | None = None  # None at parties that do not receive the result
    stats: dict[str, Any] | None = None


@dataclass(frozen=True)
class ProgressReply(Reply):
    """One query's progress at one party (engine.session.progress: public counts only)."""

    op: ClassVar[str] = "progress"
    query_id: str = ""
    party: str = ""
    state: str = ""  # queued, running, done, failed, cancelled
    phase: str = ""  # the step its session is in ("encrypting", "solver iteration", ...)
    done: int | None = None  # units done of a counted step
    total: int | None = None  # units of a counted step (a public quantity)
    unit: str | None = None  # rows, ciphertexts, iterations or None
    fraction: float | None = None  # done / total
    elapsed: float = 0.0  # seconds since the query was submitted at this party
    #: at the coordinator: every party's progress (the others' public steps only), by name
    parties: dict[str, Any] | None = None


@dataclass(frozen=True)
class PaillierKeyReply(Reply):
    op: ClassVar[str] = "paillier_key"
    n: str = ""
    h: str = ""  # the key's DJN base h (docs/protocols.md); "": classic randomness
    h_order_bits: int = 0  # a subgroup key's bound ord(h) < 2**bits; 0: not a subgroup key
