"""What a session tells its party server about its progress, and why that reveals nothing new.

A :class:`Report` is ``(phase, done, total, unit)``: the step this party's session is in
("encrypting", 3200, 5000, "rows"; "helper re-randomising", None, None, None; "solver
iteration", 12, 30, None).  The session sends every report to its own party server over the
pipe it returns its result on (:func:`engine.server.participant.child_main`); the server keeps
the latest one per running query for the query's analyst and the party's administrator.

Why a report carries nothing secret:

* A phase is a fixed point of the protocol the plan names: every party runs the same steps
  in the same order whatever the hidden data (no branch of the MPC code depends on a secret;
  the branches on m or on an opened bit follow values the plan already reveals).
* A count is a public quantity the reporting party already knows: its own table size, the
  intersection size m once it has been announced to it, a number of ciphertexts (m times a
  constant of the plan), an iteration count fixed by the plan's public options.  Nothing that
  depends on a secret (rows passing a WHERE, present groups) is ever counted.
* A report is ``public`` when its phase, counts and timing depend only on what every party
  of the query knows (e.g. everything after the join has announced m, and the MPC steps all
  parties take part in); the joins' local steps before that (a data party hashing and
  encrypting its own rows, the helper matching) are not.  Only public reports are shown to
  the coordinating party (:meth:`engine.server.queries.QueryRecord.progress_dict`): a data
  party's table size stays hidden from the other data party, its encryption time too.
* Counted steps report at most :data:`STEPS` thresholds ``ceil(k total / STEPS)``, each once,
  in order, and the first at 0: the sequence of reports is a function of the public sizes
  alone, identical in two runs whose hidden data differ (tests/test_progress_e2e.py).  Only
  *when* a report arrives depends on the machine; that is the timing of the party's own
  computation, which the party observes anyway (and its peers see in its messages).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Most counted reports per step (plus its start at 0).
STEPS = 50

#: The step that follows a phase closed by code that announces no next step itself (the
#: program stages in engine/protocols/program.py, the aggregates and the regression).  A
#: closed phase not listed (e.g. "wait for peers", the joins' phases, which announce their
#: next step) changes nothing.
AFTER = {"rows": "slots", "slots": "finish", "aggregate": "reveal", "gram": "solve",
         "solve": "reveal"}

UNITS = frozenset({"rows", "iterations", "ciphertexts"})


@dataclass(frozen=True)
class Report:
    """One progress report: the phase and, for a counted step, done of total units."""

    phase: str
    done: int | None = None
    total: int | None = None
    unit: str | None = None
    public: bool = True  # may be shown to the other parties of the query (module docstring)

    def to_wire(self) -> dict[str, Any]:
        return {"phase": self.phase, "done": self.done, "total": self.total, "unit": self.unit,
                "public": self.public}

    @classmethod
    def from_wire(cls, msg: Any) -> Report:
        """A report from its dict (what the session process sends), checked field by field."""
        if not isinstance(msg, dict) or set(msg) != {"phase", "done", "total", "unit", "public"}:
            raise ValueError("malformed progress report")
        phase, done, total, unit = msg["phase"], msg["done"], msg["total"], msg["unit"]
        if not isinstance(msg["public"], bool):
            raise ValueError("malformed progress report: public")
        if not isinstance(phase, str) or not 0 < len(phase) <= 80:
            raise ValueError("malformed progress report: phase")
        for v in (done, total):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ValueError("malformed progress report: count")
        if (done is None) != (total is None) or (total is not None and done > total):
            raise ValueError("malformed progress report: done/total")
        if unit is not None and unit not in UNITS:
            raise ValueError("malformed progress report: unit")
        return cls(phase, done, total, unit, msg["public"])

    @property
    def fraction(self) -> float | None:
        """done / total of a counted step (1.0 for an empty one), else None."""
        if self.total is None:
            return None
        return 1.0 if self.total == 0 else self.done / self.total

    def text(self) -> str:
        """``encrypting 3,200 / 5,000 rows``; ``helper re-randomising``."""
        if self.total is None:
            return self.phase
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.phase} {self.done:,} / {self.total:,}{unit}"


def thresholds(total: int) -> list[int]:
    """The counts a step of ``total`` units reports after its start: ceil(k total / S) for
    k = 1..S, S = min(STEPS, total) (distinct, increasing, the last = total)."""
    s = min(STEPS, total)
    return [-(-k * total // s) for k in range(1, s + 1)]


class Reporter:
    """Turns the protocol's steps, counts and closed phases into the session's reports.

    ``send`` gets every report (None: keep them only in :attr:`sent`).
    """

    def __init__(self, send: Callable[[Report], None] | None = None,
                 after: dict[str, str] | None = None):
        self.send = send
        self.after = AFTER if after is None else after
        self.sent: list[Report] = []  # every report, in order (transcripts, tests)
        self._step: Report | None = None
        self._todo: list[int] = []  # thresholds of the running counted step not yet reported
        self._done = 0  # the highest count of the running step
        self.public = True  # whether the steps started now are public (module docstring)

    def _emit(self, report: Report) -> None:
        if self.sent and self.sent[-1] == report:
            return
        self.sent.append(report)
        if self.send is not None:
            self.send(report)

    @property
    def current(self) -> Report | None:
        return self.sent[-1] if self.sent else None

    def step(self, phase: str, total: int | None = None, unit: str | None = None
             ) -> Callable[[int], None]:
        """Start step ``phase`` (of ``total`` public units, if counted); returns the function
        to call with the units done so far (monotone; calls beyond total are capped)."""
        step = self._step = Report(phase, 0 if total is not None else None, total, unit,
                                   self.public)
        self._todo = thresholds(total) if total else []
        self._done = 0
        self._emit(step)

        def count(done: int) -> None:
            if self._step is step:
                self._count(done)

        return count

    def _count(self, done: int) -> None:
        step = self._step
        self._done = max(self._done, done)
        while self._todo and done >= self._todo[0]:
            t = self._todo.pop(0)
            self._emit(Report(step.phase, t, step.total, step.unit, step.public))

    def iteration(self, phase: str, done: int, total: int) -> None:
        """A loop of ``total`` public iterations has finished ``done`` (0 at its start); a
        count lower than the last starts the step anew (e.g. the next group's fit)."""
        cur = self._step
        if cur is None or cur.phase != phase or cur.total != total or done < self._done:
            self.step(phase, total)
        self._count(done)

    def closed(self, name: str) -> None:
        """Phase ``name`` was closed (Session.phase): start the step that follows it, if
        the plan's table (:func:`after_for`) knows it."""
        nxt = self.after.get(name)
        if nxt is not None:
            self.step(nxt)


def after_for(plan: Any) -> dict[str, str]:
    """:data:`AFTER` for ``plan``: a program's finish stage is followed by its model's fit
    (``solve``) or by the opening of its result (``reveal``)."""
    program = getattr(plan, "program", None)
    model = program is not None and getattr(program, "model", None) is not None
    return {**AFTER, "finish": "solve" if model else "reveal"}


def first_stage(plan: Any) -> str:
    """The step that follows the source (join or single table) in ``plan``."""
    if getattr(plan, "program", None) is not None:
        return "rows"
    return "gram" if getattr(plan, "model", None) is not None else "aggregate"
