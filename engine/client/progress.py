"""A running query's progress as the Python API shows it (``Cursor.progress``, ``on_progress``).

The analyst's own party server keeps the latest progress report of each query's session
(engine/session/progress.py: the step, and for a counted step done of total public units);
the cursor asks it for that report (``progress`` requests) while the query runs.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> Progress:
        return cls(phase=str(reply.get("phase", "")), done=reply.get("done"),
                   total=reply.get("total"), unit=reply.get("unit"),
                   fraction=reply.get("fraction"), elapsed=float(reply.get("elapsed") or 0.0),
                   state=str(reply.get("state", "")), party=str(reply.get("party", "")),
                   query_id=str(reply.get("query_id", "")))

    @property
    def step(self) -> tuple[str, int | None, str | None]:
        """What identifies the step (phase, total, unit): it changes when a new step starts."""
        return self.phase, self.total, self.unit

    def __str__(self) -> str:
        """``encrypting 3,200 / 5,000 rows (64%)``; ``helper re-randomising``."""
        if self.total is None:
            return self.phase
        unit = f" {self.unit}" if self.unit else ""
        pct = f" ({self.fraction:.0%})" if self.fraction is not None else ""
        return f"{self.phase} {self.done:,} / {self.total:,}{unit}{pct}"
