"""The session's channels: messages and openings on one MPyC runtime, byte counts, lost peers."""

from __future__ import annotations

import asyncio
import pickle
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from engine.protocols import codec, runtime
from engine.session import rounds
from engine.session.job import Job
from engine.session.progress import Report, Reporter, after_for
from engine.session.transcript import Transcript


class Session:
    """Point-to-point messages, openings and phase timing on top of one MPyC runtime.

    Implements :class:`engine.protocols.channel.Channel` for the protocols, and
    :meth:`step` for their progress reports (engine.session.progress), sent to ``report``.
    """

    def __init__(self, job: Job, mpc, report: Callable[[Report], None] | None = None):
        self.job = job
        self.mpc = mpc
        self.party = job.party
        self.pids = job.pids
        self.pid = job.pids[job.party]
        self.local = job.local
        self.min_rows = job.own_min  # raised to every party's own minimum by the agreement
        self.min_rows_by: str | None = job.party
        self.names = {i: n for n, i in job.pids.items()}
        codec.set_party_names(self.names)  # refusals of peers' messages name the sender
        self.transcript = Transcript(job)
        self.recording = self.transcript.path is not None
        self.phases: dict[str, float] = {}
        self._t = time.perf_counter()
        self.progress = Reporter(report, after_for(job.plan))
        self.transcript.progress = self.progress.sent
        # rounds and bytes per phase (engine.session.rounds), if the transport keeps them
        self.traffic_log = rounds.current()
        if self.traffic_log is not None:
            self.traffic_log.pid = self.pid
        self._step: str | None = None

    def phase(self, name: str) -> None:
        """Close the running phase under ``name``."""
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self._t
        self._t = now
        self.progress.closed(name)
        if self.traffic_log is not None:
            self.traffic_log.phase(name)

    def _mark_step(self, name: str) -> None:
        if self.traffic_log is not None and name != self._step:
            self.traffic_log.mark("step:" + name)
        self._step = name

    def traffic(self) -> dict[str, Any]:
        """The session statistics' ``traffic``: this party's message events, bytes per phase
        (engine.session.rounds); empty without a transport log."""
        return {} if self.traffic_log is None else self.traffic_log.stats(self.names)

    def step(self, phase: str, total: int | None = None, unit: str | None = None
             ) -> Callable[[int], None]:
        """Report that this party starts step ``phase`` (of ``total`` public ``unit``s);
        returns the function to call with the units done (see engine.session.progress)."""
        self._mark_step(phase)
        return self.progress.step(phase, total, unit)

    def public_steps(self, public: bool) -> None:
        """Whether the steps this party starts from now on are public (engine.session.progress):
        False for a join's local steps before the intersection size is announced."""
        self.progress.public = public

    def solver_progress(self, phase: str, done: int | None, total: int | None) -> None:
        """The solver's progress hook (engine.protocols.regression.lasso.PROGRESS): a loop's
        ``done`` of ``total`` public iterations, or a step without counts."""
        self._mark_step(phase)
        if total is None:
            self.progress.step(phase)
        else:
            self.progress.iteration(phase, done or 0, total)

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


def patch_connection_loss(state: dict[str, Any], max_buffer: int | None = None) -> None:
    """Make a lost peer connection abort the session instead of hanging it, and frame what
    peers send with :class:`engine.protocols.codec.Framer` (payloads tagged with their sender,
    at most ``max_buffer`` bytes held per peer, default :func:`codec.default_max_buffer`).

    A refused message (here or in :func:`codec.loads`) is kept as ``state["error"]`` and
    aborts the session like a lost peer; the runner raises that error.

    The transport also keeps this party's :class:`engine.session.rounds.TrafficLog` (messages
    sent and taken up, bytes per phase; nothing extra goes to peers) and, if
    :data:`engine.session.rounds.EMULATE_ENV` is set (benchmarks), holds every chunk a peer
    sends for RTT/2 before MPyC sees it, in arrival order.
    """
    ex = runtime.mpyc.asyncoro.MessageExchanger
    orig_lost = ex.connection_lost
    orig_receive = ex.receive
    limit = codec.default_max_buffer() if max_buffer is None else max_buffer
    framers: dict[int, codec.Framer] = {}
    refused: set[Any] = set()  # the exchangers themselves: an id() may be reused
    log = rounds.start(-1)  # the Session sets this party's pid
    rounds.label_tasks(runtime.mpyc.asyncoro)
    delay = rounds.emulated_rtt() / 2
    held: dict[Any, deque] = {}  # exchanger -> (due time, chunk), emulated latency only
    lost_later: dict[Any, Any] = {}  # exchanger -> exc of a connection lost with chunks held

    def on_refusal(err, peer):
        state.setdefault("error", err)
        if not state["lost"].done():
            state["lost"].set_result(peer)

    codec.set_refusal_hook(on_refusal)

    def connection_lost(self, exc):
        if held.get(self):  # deliver what it sent before it closed first
            lost_later[self] = exc
            return
        if not state["closing"]:
            # Keep the dead peer's protocol object: MPyC would otherwise fail on its next send
            # inside a coroutine and stop the event loop; the session is aborted instead.
            if not state["lost"].done():
                state["lost"].set_result(self.peer_pid)
            return
        orig_lost(self, None)

    def drop(self, err) -> None:
        refused.add(self)
        self.bytes.clear()
        held.pop(self, None)
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data):  # MPyC's MessageExchanger.data_received, bounded
        if self in refused:
            return
        if self.peer_pid is not None:
            state["received"][self.peer_pid] = state["received"].get(self.peer_pid, 0) + len(data)
            if delay:
                loop = self.runtime._loop
                q = held.get(self)
                if q is None:
                    q = held[self] = deque()
                q.append((loop.time() + delay, data))
                if len(q) == 1:
                    loop.call_at(q[0][0], release, self)
                return
        process(self, data)

    def release(self):
        q = held.get(self)
        if not q:
            return
        loop = self.runtime._loop
        now = loop.time()
        while q and q[0][0] <= now + 1e-4:
            process(self, q.popleft()[1])
            if self in refused:
                return
        if q:
            loop.call_at(q[0][0], release, self)
        elif self in lost_later:
            connection_lost(self, lost_later.pop(self))

    def process(self, data):
        self.bytes.extend(data)
        buf = self.bytes
        rt = self.runtime
        if self.peer_pid is None:  # the peer connected to us: its pid and PRSS keys first
            if len(buf) < 2:
                return
            peer_pid = int.from_bytes(buf[:2], "little")
            if not 0 <= peer_pid < len(rt.parties) or peer_pid == rt.pid:
                return drop(self, codec.refuse(None, f"a connection announcing party number "
                                                     f"{peer_pid}"))
            if not rt.options.no_prss:
                n_keys = rt._prss_keys_from_peer(peer_pid)
                if len(buf) < n_keys + 2:
                    return
            self.peer_pid = peer_pid
            del buf[:2]
            if not rt.options.no_prss:
                rt._prss_keys_from_peer(peer_pid, buf)
                del buf[:n_keys]
            rt.set_protocol(peer_pid, self)
        framer = framers.get(self.peer_pid)
        if framer is None:
            framer = framers[self.peer_pid] = codec.Framer(self.peer_pid, limit)
        # the complete messages in buf, in link order, and whether MPyC already waits for each
        complete, at = [], 0
        while len(buf) - at >= 12:
            pc, size = struct.unpack_from("<qI", buf, at)
            if len(buf) - at < 12 + size:
                break
            complete.append((pc, pc in self.buffers))
            at += 12 + size
        err = framer.feed(self, buf)
        if err is not None:
            return drop(self, err)
        for pc, waited in complete:
            log.arrive(self.peer_pid, pc)
            if waited:  # the framer handed it to the waiting future: taken up now
                log.consume(self.peer_pid, pc)

    def receive(self, pc):
        payload = self.buffers.get(pc)
        if isinstance(payload, bytes):
            if self.peer_pid in framers:
                framers[self.peer_pid].taken(len(payload))
            log.consume(self.peer_pid, pc)
        return orig_receive(self, pc)

    orig_send = ex.send

    def send(self, pc, payload):
        n = 12 + len(payload)
        state["sent"][self.peer_pid] = state["sent"].get(self.peer_pid, 0) + n
        log.send(self.peer_pid, n, log.label_id(rounds.send_label()))
        orig_send(self, pc, payload)

    ex.connection_lost = connection_lost
    ex.data_received = data_received
    ex.receive = receive
    ex.send = send


#: Waits (s) before connecting again to a session port that refused: MPyC itself waits 0.1 s
#: after a failed attempt, most of a small query's time when the peers start a moment apart.
REFUSED_RETRIES = (0.002, 0.004, 0.008, 0.016, 0.032)


def connect_promptly(loop) -> None:
    """Connect again after a few ms when a peer's session port refuses (it may be a moment from
    listening), before MPyC's own 0.1 s wait; with or without TLS (installed over this)."""
    create_connection = loop.create_connection

    async def prompt(*args, **kwargs):
        for wait in REFUSED_RETRIES:
            try:
                return await create_connection(*args, **kwargs)
            except ConnectionRefusedError:
                await asyncio.sleep(wait)
        return await create_connection(*args, **kwargs)

    loop.create_connection = prompt


def listen_only_on(loop, host: str) -> None:
    """MPyC listens on every interface; bind our session port to the configured host only."""
    create_server = loop.create_server

    def bound(*args, host_=host, **kwargs):
        kwargs.setdefault("host", host_)
        return create_server(*args, **kwargs)

    loop.create_server = bound
