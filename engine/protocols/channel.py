"""What a protocol needs from the session it runs in, and the size announcement every source uses.

Protocols take a :class:`Channel` (implemented by :class:`engine.session.channels.Session`):
point-to-point messages on top of the MPyC runtime, phase timing, and a record of what this
party receives and opens.  They never import the session, the server, the client or the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dialect.errors import ProtocolError
from planner.policy import too_small


@dataclass
class LocalData:
    """The rows a party contributes: identifiers (or None) and a float64 value matrix."""

    ids: list | None
    values: np.ndarray  # shape (n, d), columns in Scan.columns order


class Channel(Protocol):
    """One party's end of a query's session, as the protocols see it."""

    party: str  # this party's name
    pid: int  # this party's MPyC index
    pids: Mapping[str, int]  # party name -> MPyC index
    mpc: Any  # the MPyC runtime of this session
    local: LocalData | None  # this party's rows (None at the helper)
    min_rows: int  # the largest minimum size over the parties' policies
    min_rows_by: str | None  # the party whose policy sets it

    async def send(self, label: str, obj: Any, sender: str, receivers: list[str]) -> Any:
        """Send ``obj`` from ``sender`` to ``receivers``; returns it at the receivers."""

    def phase(self, name: str) -> None:
        """Close the running phase (timing) under ``name``."""

    def observe(self, label: str, value: Any) -> None:
        """Record what this party now knows (kept only for leakage tests)."""

    def opened(self, label: str, value: Any = None) -> None:
        """Record a disclosure of the plan (``Plan.disclosures`` label) reaching this party."""

    recording: bool  # whether observations are kept (leakage tests)

    async def reveal(self, label: str, x: Any, receivers: list[int] | None, **kw: Any) -> Any:
        """Open secure ``x`` to ``receivers`` (pids; None: all) as disclosure ``label``.

        ``kw`` goes to MPyC's ``output`` (e.g. ``raw=True``).
        """


async def announce_size(chan: Channel, label: str, m: int | None, sender: str,
                        receivers: list[str], what: str) -> int:
    """``sender`` (who knows m) sends m to ``receivers`` only if m >= the largest minimum.

    Otherwise it sends ``None``, so a refusal reveals one bit ("too small") and never m.
    """
    ok = chan.party != sender or m >= chan.min_rows
    if chan.party == sender:
        chan.opened(label, m)  # the sender computed it
    got = await chan.send(label, m if ok else None, sender, receivers)
    if chan.party != sender:
        m = got
        if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 0):
            raise ProtocolError(f"party {sender} announced a malformed size", party=sender)
        # never trust the sender's comparison alone: a receiver applies every minimum itself
        ok = m is not None and m >= chan.min_rows
    if m is None or not ok:
        chan.opened("too_small")
        raise too_small(chan.min_rows_by, chan.min_rows, what=what)
    if chan.party != sender:
        chan.opened(label, m)
    return m
