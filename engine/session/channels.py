"""The session's channels: messages and openings on one MPyC runtime, byte counts, lost peers."""

from __future__ import annotations

import pickle
import time
from typing import Any

from engine.protocols import runtime
from engine.session.job import Job
from engine.session.transcript import Transcript


class Session:
    """Point-to-point messages, openings and phase timing on top of one MPyC runtime.

    Implements :class:`engine.protocols.channel.Channel` for the protocols.
    """

    def __init__(self, job: Job, mpc):
        self.job = job
        self.mpc = mpc
        self.party = job.party
        self.pids = job.pids
        self.pid = job.pids[job.party]
        self.local = job.local
        self.min_rows = job.own_min  # raised to every party's own minimum by the agreement
        self.min_rows_by: str | None = job.party
        self.names = {i: n for n, i in job.pids.items()}
        self.transcript = Transcript(job)
        self.recording = self.transcript.path is not None
        self.phases: dict[str, float] = {}
        self._t = time.perf_counter()

    def phase(self, name: str) -> None:
        """Close the running phase under ``name``."""
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self._t
        self._t = now

    async def send(self, label: str, obj: Any, sender: str, receivers: list[str]) -> Any:
        """Send ``obj`` from ``sender`` to ``receivers``; returns it at the receivers."""
        s = self.job.pids[sender]
        rs = [self.job.pids[r] for r in receivers]
        out = await self.mpc.transfer(obj if self.pid == s else None, senders=[s], receivers=rs)
        self.phase("wait for peers")
        if self.pid in rs and self.pid != s:
            got = out[0]
            self.transcript.record(label, sender, got, len(pickle.dumps(got)))
            return got
        return obj if self.pid == s else None

    def observe(self, label: str, value: Any) -> None:
        """Record what this party now knows (kept only for leakage tests)."""
        self.transcript.record(label, self.party, value, 0)

    def opened(self, label: str, value: Any = None) -> None:
        """Record that disclosure ``label`` of the plan reached this party."""
        self.transcript.opened.append(label)

    async def reveal(self, label: str, x: Any, receivers: list[int] | None, **kw: Any) -> Any:
        """Open secure ``x`` to ``receivers`` (None: all parties) as disclosure ``label``."""
        out = await self.mpc.output(x, receivers=receivers, **kw)
        if receivers is None or self.pid in receivers:
            self.opened(label)
        return out


def patch_connection_loss(state: dict[str, Any]) -> None:
    """Make a lost peer connection abort the session instead of hanging it."""
    ex = runtime.mpyc.asyncoro.MessageExchanger
    orig_lost = ex.connection_lost
    orig_recv = ex.data_received

    def connection_lost(self, exc):
        if not state["closing"]:
            # Keep the dead peer's protocol object: MPyC would otherwise fail on its next send
            # inside a coroutine and stop the event loop; the session is aborted instead.
            if not state["lost"].done():
                state["lost"].set_result(self.peer_pid)
            return
        orig_lost(self, None)

    def data_received(self, data):
        if self.peer_pid is not None:
            state["received"][self.peer_pid] = state["received"].get(self.peer_pid, 0) + len(data)
        orig_recv(self, data)

    orig_send = ex.send

    def send(self, pc, payload):
        state["sent"][self.peer_pid] = state["sent"].get(self.peer_pid, 0) + 12 + len(payload)
        orig_send(self, pc, payload)

    ex.connection_lost = connection_lost
    ex.data_received = data_received
    ex.send = send


def listen_only_on(loop, host: str) -> None:
    """MPyC listens on every interface; bind our session port to the configured host only."""
    create_server = loop.create_server

    def bound(*args, host_=host, **kwargs):
        kwargs.setdefault("host", host_)
        return create_server(*args, **kwargs)

    loop.create_server = bound
