"""A party's append-only, hash-chained audit log: one JSON line per query it took part in.

Each line is a JSON object with ``seq`` (1, 2, ...), ``prev`` (the ``hash`` of the line before;
:data:`GENESIS` for the first) and ``hash`` = SHA-256 of the canonical JSON of every other field
(``prev`` included).  Editing, deleting, reordering or cutting a line breaks the chain at that
line; :func:`verify` names the first bad line.  Removing lines at the *end* leaves a valid,
shorter chain: record the last hash elsewhere now and then and pass it as an ``anchor``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dialect.errors import PolicyError
from planner.policy import FILTERED

if TYPE_CHECKING:
    from planner.plan import Plan

GENESIS = "0" * 64
FIELDS = ("time", "query_id", "analyst", "coordinator", "sql", "plan", "approvals", "revealed",
          "outcome")


def canonical(entry: dict[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 (hex) of ``entry`` without its own ``hash`` field."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class AuditLog:
    """Appends chained entries to ``path`` (created with its directory if missing)."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.seq, self.last = _tail(self.path)

    def append(self, **fields: Any) -> dict[str, Any]:
        """Write one entry (``time`` defaults to now, UTC); flushed and fsynced before return."""
        entry: dict[str, Any] = {"seq": self.seq + 1, "time": fields.pop("time", utc_now())}
        entry.update({k: fields.pop(k, None) for k in FIELDS if k != "time"})
        entry.update(fields)
        entry["prev"] = self.last
        entry["hash"] = entry_hash(entry)
        line = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.seq, self.last = entry["seq"], entry["hash"]
        return entry


def _tail(path: str) -> tuple[int, str]:
    """(seq, hash) of the last line of an existing log, to chain on from it."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - (1 << 20)))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return 0, GENESIS
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        return 0, GENESIS
    try:
        last = json.loads(lines[-1])
        return int(last["seq"]), str(last["hash"])
    except (ValueError, KeyError, TypeError):
        # A damaged last line: keep appending (verify will report it) chained to its bytes.
        return len(lines), hashlib.sha256(lines[-1]).hexdigest()


@dataclass
class Verdict:
    """The outcome of :func:`verify`."""

    ok: bool
    entries: int
    last_hash: str
    bad_line: int | None = None  # 1-based line number of the first bad line
    reason: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.entries} entries, chain intact (last hash {self.last_hash})"
        return f"line {self.bad_line}: {self.reason}"


def read(path: str) -> Iterator[dict[str, Any]]:
    """The entries of a log, in order (no checks; see :func:`verify`)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _problem(raw: bytes, prev: str, seq: int) -> tuple[str | None, dict[str, Any]]:
    """Why line ``raw`` cannot follow ``prev`` as entry number ``seq`` (None: it can)."""
    if not raw.endswith(b"\n"):
        return "incomplete last line (the log was cut)", {}
    try:
        entry = json.loads(raw)
    except ValueError:
        return "not a JSON object (edited or cut)", {}
    if not isinstance(entry, dict) or not {"seq", "prev", "hash"} <= entry.keys():
        return "not an audit entry (seq, prev or hash missing)", {}
    if entry["prev"] != prev:
        return ("prev does not match the previous line's hash (a line was deleted, inserted "
                "or reordered)"), entry
    if entry["seq"] != seq:
        return f"seq {entry['seq']} where {seq} was expected", entry
    if entry_hash(entry) != entry["hash"]:
        return "hash does not match the content (the line was edited)", entry
    return None, entry


def verify(path: str, anchor: str | None = None) -> Verdict:
    """Check the whole chain of ``path``; ``anchor``: a hash recorded earlier that must appear."""
    prev, n, seen_anchor = GENESIS, 0, anchor is None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            reason, entry = _problem(raw, prev, n + 1)
            if reason:
                return Verdict(False, n, prev, lineno, reason)
            prev, n = entry["hash"], n + 1
            seen_anchor = seen_anchor or prev == anchor
    if not seen_anchor:
        return Verdict(False, n, prev, n + 1, f"anchor {anchor} not found: lines after it "
                       "were removed, or the log was rewritten")
    return Verdict(True, n, prev)


# --- what a query's audit line says ---------------------------------------------------------

NOTHING: dict[str, list[str]] = {}  # refused or failed before any data moved


def describe(e: BaseException | None) -> str | None:
    if e is None:
        return None
    if isinstance(e, asyncio.CancelledError):
        return "cancelled"
    return f"{type(e).__name__}: {e}"


def approval(e: BaseException) -> str:
    if isinstance(e, PolicyError):
        return f"refused ({e.rule})" if e.rule else "refused"
    return f"failed ({type(e).__name__})"


def revealed(plan: Plan | None, error: BaseException | None) -> dict[str, list[str]]:
    """What a run revealed to whom, as ``plan.learns()`` lists it for the way it ended."""
    if plan is None:
        return NOTHING
    if error is None:
        return plan.learns()
    if isinstance(error, PolicyError) and error.rule == "min_intersection":
        return plan.learns("filter_too_small" if FILTERED in str(error) else "too_small")
    return plan.learns("aborted")
