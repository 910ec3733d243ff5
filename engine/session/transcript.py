"""What a party receives and opens in one session, kept for leakage and disclosure tests."""

from __future__ import annotations

import os
import pickle
from typing import Any

from engine.session.job import Job


class Transcript:
    """What a party receives in the protocol (objects kept only when asked, for leakage tests)."""

    def __init__(self, job: Job):
        self.path = (os.path.join(job.transcript_dir, f"{job.query_id}-{job.party}.pkl")
                     if job.transcript_dir else None)
        self.items: list[dict[str, Any]] = []
        self.opened: list[str] = []  # labels of the plan's disclosures, in the order reached
        self.progress: list = []  # the progress reports sent (engine.session.progress)

    def record(self, label: str, sender: str, obj: Any, nbytes: int) -> None:
        self.items.append({"label": label, "from": sender, "nbytes": nbytes,
                           "obj": obj if self.path else None})

    def save(self, mpc_bytes_received: dict[str, int]) -> None:
        if self.path:
            with open(self.path, "wb") as f:
                pickle.dump({"messages": self.items, "mpc_bytes_received": mpc_bytes_received,
                             "opened": self.opened,
                             "progress": [r.to_wire() for r in self.progress]}, f)
