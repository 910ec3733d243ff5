"""One query's secure computation at one party: an MPyC session among the three parties.

The party server forks a fresh process per query and calls :func:`run_job` in it, so MPyC's
module-level runtime is never reused and killing the process aborts the query cleanly.  The
runner walks the plan: the source node (``visit_PrivateJoin`` / ``visit_Scan``) yields the
secret-shared table, then the aggregate nodes are evaluated on it
(:mod:`engine.protocols.aggregates`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from dialect.errors import NotSupportedError, OperationalError
from engine.protocols import aggregates, runtime
from engine.protocols.agreement import agree
from engine.protocols.joins.common import CHUNK_ROWS
from engine.protocols.joins.masked import masked_join
from engine.protocols.joins.paillier import paillier_join
from engine.protocols.owner_input import share_table
from engine.protocols.paillier import key_id
from engine.protocols.regression import lasso
from engine.protocols.spill import SpilledRows
from engine.session import tls as session_tls
from engine.session.channels import (
    Session,
    connect_promptly,
    listen_only_on,
    patch_connection_loss,
)
from engine.session.job import Job, SessionResult
from engine.session.progress import Report, first_stage
from planner.plan import Node, PrivateJoin, Scan


def _cpu_seconds() -> float:
    """User + system CPU time of this session process and its finished (worker) children."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _peak_rss_mb() -> float:
    """Peak resident memory of this session process and its (crypto worker) children, MB."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024.0  # Linux reports KiB


def chunk_rows() -> int:
    """Rows per chunk of the masked join (engine.protocols.joins.common.CHUNK_ROWS); the
    environment variable MPCSQL_CHUNK_ROWS overrides it for tests and benchmarks and must then
    be the same at every party (the parties would otherwise fail the query)."""
    value = os.environ.get("MPCSQL_CHUNK_ROWS")
    return max(1, int(value)) if value else CHUNK_ROWS


class PhaseMemory:
    """Peak resident memory per phase of this session process (MPCSQL_PHASE_RSS=1: benchmarks).

    A thread reads /proc/self/status every 10 ms; each :meth:`Session.phase` call closes the
    running phase and files the largest resident size seen since the previous call under its
    name (MB, the maximum over the phase's occurrences).
    """

    def __init__(self, sess: Session):
        import threading

        self.peaks: dict[str, float] = {}
        self._max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        close = sess.phase

        def phase(name: str) -> None:
            close(name)
            now, self._max = self._max, 0
            self.peaks[name] = max(self.peaks.get(name, 0.0), now / 1024.0)

        sess.phase = phase

    @staticmethod
    def _rss_kb() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self._max = max(self._max, self._rss_kb())

    def stop(self) -> dict[str, float]:
        self._stop.set()
        return self.peaks


def _lost(state: dict[str, Any], peer: str) -> OperationalError:
    if state.get("error") is not None:  # a refused peer message (engine.protocols.codec)
        return state["error"]
    if state.get("tls_error"):
        return OperationalError(state["tls_error"], party=peer)
    return OperationalError(f"lost connection to party {peer} during the query", party=peer)


def run_job(job: Job, report: Callable[[Report], None] | None = None) -> SessionResult:
    """Run this party's side of ``job`` to completion (blocking; call in a fresh process).

    ``report`` gets the session's progress reports (engine.session.progress) as they happen.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    addrs = [runtime.Address(h, p) for h, p in job.addresses]
    mpc = runtime.make_runtime(job.pids[job.party], addrs)
    listen_only_on(loop, addrs[job.pids[job.party]].host)
    connect_promptly(loop)
    state: dict[str, Any] = {"closing": False, "lost": loop.create_future(), "received": {},
                             "sent": {}}
    patch_connection_loss(state, job.max_peer_buffer)
    if job.tls is not None:
        session_tls.install(loop, job.tls, job.pids[job.party],
                            {i: n for n, i in job.pids.items()}, list(job.addresses), state)
    sess = Session(job, mpc, report)
    memory = PhaseMemory(sess) if os.environ.get("MPCSQL_PHASE_RSS") == "1" else None
    sess.memory = memory
    # the solver loops report their public iteration counts (in every task of this session)
    lasso.PROGRESS.set(sess.solver_progress)
    try:
        return loop.run_until_complete(_run(sess, state))
    except RuntimeError as e:  # MPyC stops the loop when one of its coroutines fails
        if state["lost"].done():
            peer = sess.names.get(state["lost"].result(), "?")
            raise _lost(state, peer) from e
        raise


async def _run(sess: Session, state: dict[str, Any]) -> SessionResult:
    mpc = sess.mpc
    names = sess.names

    async def guarded(coro, timeout=None):
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({task, state["lost"]}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        if state["lost"].done():
            # A peer that stopped for a reason of its own (e.g. a policy refusal every party
            # reaches at once) closes its connections: give our own reason a moment to surface.
            await asyncio.wait({task}, timeout=1.0)
            if task.done():
                return task.result()
        task.cancel()
        if state["lost"].done():
            peer = names.get(state["lost"].result(), "?")
            raise _lost(state, peer)
        missing = [n for i, n in names.items()
                   if i != sess.pid and mpc.parties[i].protocol is None]
        if missing:
            raise OperationalError(
                f"timed out after {timeout:g} s connecting to the session port of party "
                f"{', '.join(missing)}", party=missing[0])
        raise OperationalError(f"timed out after {timeout:g} s waiting for the other parties")

    sess.step("connecting")
    await guarded(mpc.start(), timeout=sess.job.connect_timeout)
    sess.phase("connect")
    try:
        rows = await guarded(_compute(sess))
        sess.step("closing")
        state["closing"] = True
        await guarded(mpc.shutdown(), timeout=30)
    except BaseException:
        state["closing"] = True
        for peer in mpc.parties:
            if peer.pid != mpc.pid and peer.protocol is not None:
                try:
                    peer.protocol.close_connection()
                except Exception:  # noqa: BLE001
                    pass
        sess.transcript.save({})  # what it received before stopping (leakage tests)
        raise
    received = {names[i]: n for i, n in state["received"].items()}
    sent = {names[i]: n for i, n in state["sent"].items()}
    sess.transcript.save(received)
    stats = {"phases": sess.phases, "bytes_received": received, "bytes_sent": sent,
             "peak_rss_mb": _peak_rss_mb(), "cpu_seconds": _cpu_seconds(),
             "tls_peers": sorted(state.get("tls_peers", ())),
             # bytes this party wrote to its spill files (the masked join beyond memory)
             "spill_bytes": getattr(sess.job.spill, "written", 0),
             **({"phase_peak_mb": sess.memory.stop()} if sess.memory is not None else {}),
             # Precomputed randomisers this session did not use (they are taken from the end).
             "pool_left": {key_id(n): len(v) for n, v in sess.job.randomizers.items()},
             # critical-path rounds and bytes per phase (engine.session.rounds)
             "traffic": sess.traffic()}
    return SessionResult(rows, stats)


def _scale_for_models(job: Job) -> None:
    """Model aggregates work on |x| <= 1: divide each column by its public catalog bound.

    Models only: a program plan's local columns arrive normalised (PartyStore.load_local).
    """
    plan = job.plan
    if job.local is None or plan.program is not None or plan.model is None:
        return
    bits = {c.column.lower(): c.scale_bits or 0 for c in plan.shared.columns
            if c.party == job.party}
    scan = plan.scan_at(job.party)
    exps = np.array([-bits[c.lower()] for c in scan.columns], dtype=np.int64)
    if isinstance(job.local, SpilledRows):  # scaled as its chunks are read
        job.local.exps = exps
    else:
        job.local.values = np.ldexp(job.local.values, exps)  # exact: powers of two


class SourceRunner:
    """Run the plan's source node: the rows it produces, secret-shared among all parties."""

    def __init__(self, sess: Session, sf):
        self.sess, self.sf = sess, sf

    async def visit(self, node: Node) -> tuple[int, Any]:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise NotSupportedError(f"no secure implementation of plan node {type(node).__name__}")
        return await method(node)

    async def visit_PrivateJoin(self, join: PrivateJoin) -> tuple[int, Any]:
        if join.protocol == "masked":
            # a program or model plan consumes the joined rows chunk by chunk
            # (engine.protocols.program, engine.protocols.aggregates.reduce_rows)
            plan = self.sess.job.plan
            return await masked_join(self.sess, join, self.sf, chunk_rows=chunk_rows(),
                                     stream=plan.program is not None or plan.model is not None,
                                     spill=self.sess.job.spill)
        job = self.sess.job
        return await paillier_join(self.sess, join, self.sf, key_bits=job.key_bits,
                                   keypair=job.paillier_key, randomizers=job.randomizers,
                                   randomness=job.paillier_randomness)

    async def visit_Scan(self, scan: Scan) -> tuple[int, Any]:
        self.sess.step("sharing input")
        return await share_table(self.sess, scan, self.sf)


async def _compute(sess: Session) -> list[tuple] | None:
    plan = sess.job.plan
    sess.step("agreeing on the query")
    agreed = await agree(sess, sess.job.binding, sess.job.own_min, sess.job.own_group_min)
    sess.min_rows, sess.min_rows_by = agreed.min_rows, agreed.min_rows_by
    sess.min_group_rows = agreed.min_group_rows
    sess.min_group_rows_by = agreed.min_group_rows_by
    sess.phase("agree")
    _scale_for_models(sess.job)
    sf = runtime.secfxp()
    m, table = await SourceRunner(sess, sf).visit(plan.source)
    sess.step(first_stage(plan))
    return await aggregates.evaluate(sess, plan, m, table, sf)
