"""A running query's progress as the Python API shows it (``Cursor.progress``, ``on_progress``).

The analyst's own party server keeps the latest progress report of each query's session
(engine/session/progress.py: the step, and for a counted step done of total public units);
the cursor asks it for that report (``progress`` requests) while the query runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Progress:
    """One query's progress at the analyst's party.

    ``phase`` is the step its session is in (``"encrypting"``, ``"helper re-randomising"``,
    ``"rows"``, ``"solver iteration"``, ...; ``"queued"`` / ``"starting"`` before the session
    runs, ``"done"`` at the end); ``done`` of ``total`` ``unit`` (rows, ciphertexts,
    iterations) for a counted step, else None; ``fraction`` = done / total of that step;
    ``elapsed`` seconds since the party received the query; ``state`` the query's state
    (queued, running, done, failed, cancelled).  Counts are public quantities only: a table
    size, the intersection size once it is revealed, a fixed number of iterations.

    ``parties``: while the query runs, its progress at every party by name (the analyst's
    own included), each a :class:`Progress`; the other parties show only their public steps
    (``"local steps"`` before the join has announced the intersection size), or None if
    they did not answer.  ``detail`` is the counted step to show: this party's, or that of
    the party its phase says it waits for (the helper's ``re-randomising ac's rows 1,200 /
    4,000 rows`` while this party is at ``helper re-randomising``).
    """

    phase: str
    done: int | None = None
    total: int | None = None
    unit: str | None = None
    fraction: float | None = None
    elapsed: float = 0.0
    state: str = "running"
    party: str = ""
    query_id: str = ""
    parties: dict[str, Progress | None] | None = field(default=None, compare=False)

    @classmethod
    def from_reply(cls, reply: dict[str, Any], party: str | None = None) -> Progress:
        parties = reply.get("parties")
        if isinstance(parties, dict):
            parties = {str(n): (cls.from_reply(p, str(n)) if isinstance(p, dict) else None)
                       for n, p in parties.items()}
        else:
            parties = None
        return cls(phase=str(reply.get("phase", "")), done=reply.get("done"),
                   total=reply.get("total"), unit=reply.get("unit"),
                   fraction=reply.get("fraction"), elapsed=float(reply.get("elapsed") or 0.0),
                   state=str(reply.get("state", "")),
                   party=str(party if party is not None else reply.get("party", "")),
                   query_id=str(reply.get("query_id", "")), parties=parties)

    @property
    def detail(self) -> Progress | None:
        """The counted step to show: this party's, or the one of the party it is waiting for
        (its phase names it: ``helper re-randomising``), else None."""
        if self.total is not None:
            return self
        for name, p in (self.parties or {}).items():
            if (name != self.party and self.phase.startswith(name + " ") and p is not None
                    and p.total is not None):
                return p
        return None

    @property
    def step(self) -> tuple[str, int | None, str | None]:
        """What identifies the step (phase, total, unit): it changes when a new step starts."""
        return self.phase, self.total, self.unit

    def __str__(self) -> str:
        """``encrypting 3,200 / 5,000 rows (64%)``; ``helper re-randomising (helper:
        re-randomising ac's rows 1,200 / 4,000 rows, 30%)``; ``helper re-randomising``."""
        detail = self.detail
        if detail is None:
            return self.phase
        unit = f" {detail.unit}" if detail.unit else ""
        count = f"{detail.phase} {detail.done:,} / {detail.total:,}{unit}"
        pct = f"{detail.fraction:.0%}" if detail.fraction is not None else ""
        if detail is self:
            return f"{count} ({pct})" if pct else count
        return f"{self.phase} ({detail.party}: {count}{', ' + pct if pct else ''})"
