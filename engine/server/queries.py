"""Queries a party server knows about: their state, and the one slot that runs them.

Every query gets an id; its record moves queued -> running -> done | failed | cancelled.  A
party runs one query at a time: a query reserves the party's :class:`Slot` when the party
prepares it and frees it when its run ends.  Coordinators reserve the parties' slots in the
same (MPyC pid) order, so two coordinators can never wait for each other.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dialect.errors import OperationalError, ProgrammingError
from engine.control.messages import check_query_id, new_query_id  # noqa: F401 (re-exported)
from engine.session.progress import Report

STATES = ("queued", "running", "done", "failed", "cancelled")
#: What the coordinating party is shown of a participant's steps that are not public.
LOCAL_STEPS = "local steps"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


@dataclass
class QueryRecord:
    """One query as seen by this party (as coordinator or as participant)."""

    query_id: str
    role: str  # "coordinator" or "participant"
    analyst: str | None
    coordinator: str
    sql: str
    state: str = "queued"
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    task: asyncio.Task | None = field(default=None, repr=False)
    #: the latest progress report of this party's session (engine.session.progress)
    progress: Report | None = None
    #: at the coordinator: the other parties' latest public progress and when it was asked
    peers: dict[str, Any] | None = field(default=None, repr=False)
    peers_at: float = 0.0

    def start(self) -> None:
        self.state, self.started = "running", time.time()

    def report(self, report: Report) -> None:
        self.progress = report

    def progress_dict(self, *, for_peer: bool = False) -> dict[str, Any]:
        """The query's progress here: its state, the session's latest report (or the state
        before the session reports: ``queued``, ``starting``), seconds since it was
        submitted here.  ``for_peer`` (the coordinating party asks): a report that is not
        public (a join's local steps before m is announced) shows as ``local steps``, no
        counts."""
        rep = self.progress
        if self.state == "done":
            rep = Report("done")
        elif rep is None:
            rep = Report("queued" if self.state == "queued" else
                         "starting" if self.active else self.state)
        elif for_peer and not rep.public:
            rep = Report(LOCAL_STEPS)
        end = self.finished if self.finished is not None else time.time()
        out = {"query_id": self.query_id, "state": self.state, **rep.to_wire(),
               "fraction": rep.fraction, "elapsed": round(max(0.0, end - self.submitted), 3)}
        del out["public"]
        return out

    def finish(self, state: str, error: str | None = None) -> None:
        if self.finished is None:
            self.state, self.finished, self.error = state, time.time(), error

    @property
    def active(self) -> bool:
        return self.finished is None

    def to_dict(self) -> dict[str, Any]:
        return {"query_id": self.query_id, "state": self.state, "role": self.role,
                "analyst": self.analyst, "coordinator": self.coordinator, "sql": self.sql,
                "submitted": _iso(self.submitted), "started": _iso(self.started),
                "finished": _iso(self.finished), "error": self.error}


class QueryBook:
    """The records of active queries and of the ``keep`` most recent finished ones."""

    def __init__(self, keep: int = 200):
        self.keep = keep
        self.records: OrderedDict[str, QueryRecord] = OrderedDict()

    def add(self, rec: QueryRecord) -> QueryRecord:
        old = self.records.get(rec.query_id)
        if old is not None and (old.active or old.role == rec.role):
            raise ProgrammingError(f"query id {rec.query_id} is already in use")
        self.records[rec.query_id] = rec
        self.records.move_to_end(rec.query_id)
        done = [k for k, r in self.records.items() if not r.active]
        for k in done[:max(0, len(done) - self.keep)]:
            del self.records[k]
        return rec

    def get(self, qid: str) -> QueryRecord | None:
        return self.records.get(qid)

    def list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.records.values()]


async def stop(task: asyncio.Future) -> None:
    """Cancel ``task`` and wait until it has finished (a cancelled stream read must let go of
    its reader before anyone reads from it again)."""
    task.cancel()
    await asyncio.wait({task})


class Slot:
    """The right to run one query at this party; FIFO among waiters."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.holder: str | None = None

    async def acquire(self, qid: str, abort: asyncio.StreamReader) -> None:
        """Wait for the slot; give up if ``abort`` reaches EOF (the coordinator went away)."""
        if not self._lock.locked():  # free: no waiting, nothing to watch
            await self._lock.acquire()
            self.holder = qid
            return
        get = asyncio.ensure_future(self._lock.acquire())
        watch = asyncio.ensure_future(abort.read(1))
        try:
            await asyncio.wait({get, watch}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled while waiting: never keep (or leak) the lock
            watch.cancel()
            if get.done() and not get.cancelled():
                self._lock.release()
            else:
                get.cancel()
            raise
        await stop(watch)
        if not get.done():
            get.cancel()
            await asyncio.wait({get})
            if get.cancelled():
                raise OperationalError(f"query {qid} was abandoned while waiting for its turn")
        if watch.done() and not watch.cancelled():  # the coordinator closed the connection
            self._lock.release()
            raise OperationalError(f"query {qid} was abandoned while waiting for its turn")
        self.holder = qid

    def release(self, qid: str) -> bool:
        """Free the slot if ``qid`` holds it; returns whether it did."""
        if self.holder != qid:
            return False
        self.holder = None
        self._lock.release()
        return True
