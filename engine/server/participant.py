"""A party's part in a query coordinated elsewhere (or by itself): prepare, then run.

prepare  -> plan the SQL itself, check this party's own policy, reserve its slot, load and check
            its columns, reserve an MPyC session port, answer with the plan's fingerprint
run      -> fork the session process (one MPyC session) and answer with its outcome; the
            coordinator closing the connection meanwhile aborts it

The session process sends ``("progress", report)`` messages (engine.session.progress) on the
pipe before its outcome; the latest is kept in the query's record for ``progress``/``status``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from dialect.errors import (
    AuthorizationError,
    DataError,
    Error,
    InternalError,
    OperationalError,
    PolicyError,
    ProgrammingError,
    error_from_dict,
)
from engine.control.messages import Prepare, PrepareReply, Run, RunReply, check_query_id
from engine.protocols.agreement import binding
from engine.protocols.channel import LocalData
from engine.protocols.spill import SPILL_ROWS, Spill, SpilledRows, row_count
from engine.server.audit import NOTHING, approval, describe, revealed
from engine.server.dispatch import Caller
from engine.server.queries import QueryRecord, stop
from engine.server.state import PartyState
from engine.session.job import Job
from engine.session.progress import Report
from engine.session.runner import run_job
from engine.session.tls import SessionTLS
from planner.plan import Plan, PrivateJoin

_FORK = multiprocessing.get_context("fork")


@dataclass
class Prepared:
    plan: Plan
    local: LocalData | None
    port: int
    record: QueryRecord | None = None  # None at the coordinator (it keeps its own)
    spill: Spill | None = None  # the query's spill directory (the masked join beyond memory)


def free_port(host: str, ports: tuple[int, int] | None = None) -> int:
    """A port for a query's MPyC session: any free one, or one in ``[listen] session_ports``."""
    candidates = [0] if ports is None else secrets.SystemRandom().sample(
        range(ports[0], ports[1] + 1), ports[1] - ports[0] + 1)
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OperationalError(f"no free session port in {ports[0]}-{ports[1]} on {host}")


def child_main(job: Job, conn) -> None:
    """Entry point of the forked session process: run the job, send its progress reports and
    then the outcome."""
    parent = os.getppid()

    def watchdog() -> None:  # never outlive the server that forked us
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    signal.set_wakeup_fd(-1)  # the server's loop owns that fd: our signals are not its own
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        res = _profiled(job, lambda: run_job(job, lambda r: conn.send(("progress", r.to_wire(),
                                                                           None))))
        conn.send(("ok", res.rows, res.stats))
    except Error as e:
        if e.party is None:
            e.party = job.party
        conn.send(("error", e.to_dict(), None))
    except BaseException as e:  # noqa: BLE001 - report, never hang the others
        # the traceback goes to this party's own log only, never to a peer or the analyst
        print(f"mpcsql[{job.party}] session {job.query_id} failed:\n"
              f"{traceback.format_exc(limit=12)}", file=sys.stderr, flush=True)
        conn.send(("error", InternalError(f"{type(e).__name__} in the session of party "
                                          f"{job.party} (details in its log)",
                                          party=job.party).to_dict(), None))
    finally:
        conn.close()


def _profiled(job: Job, run):
    """``run()``; with MPCSQL_SESSION_PROFILE=DIR set (a developer's switch, read from the
    server's environment) under cProfile on CPU time, the statistics written to
    DIR/<query id>-<party>.prof for ``python -m pstats``."""
    out = os.environ.get("MPCSQL_SESSION_PROFILE")
    if not out:
        return run()
    import cProfile

    prof = cProfile.Profile(time.process_time)
    try:
        return prof.runcall(run)
    finally:
        os.makedirs(out, exist_ok=True)
        prof.dump_stats(os.path.join(out, f"{job.query_id}-{job.party}.prof"))


class Participant:
    """Prepared queries and session processes of one party server."""

    def __init__(self, server: PartyState):
        self.server = server
        self.cfg = server.cfg
        self.policy = server.policy
        self.book = server.book
        self.slot = server.slot
        self.prepared: dict[str, Prepared] = server.prepared
        self.run_lock = asyncio.Lock()
        self.leases: set[asyncio.Task] = set()

    async def prepare(self, req: Prepare, caller: Caller, blob, reader) -> dict[str, Any]:
        """Plan, check this party's policy, reserve this party's slot, load and check data."""
        analyst = caller.analyst
        if req.dry_run:
            plan = await self.server.plan(req.sql, req.catalog, req.receivers)
            try:
                self.policy.check(plan, analyst)
                refused = None
            except PolicyError as e:
                refused = str(e)
            return PrepareReply(fingerprint=plan.fingerprint(), refused=refused,
                                rules=self.policy.describe(plan, analyst)).to_wire()
        qid = check_query_id(req.query_id)
        coordinator = req.coordinator or "?"
        rec = None
        if coordinator != self.cfg.name:  # the coordinator keeps its own record
            rec = self.book.add(QueryRecord(qid, "participant", analyst, coordinator, req.sql))
        plan = None
        try:
            plan = await self.server.plan(req.sql, req.catalog, req.receivers)
            self.policy.check(plan, analyst)
            await self.slot.acquire(qid, reader)
            spill = query_spill(self.cfg, plan)
            try:
                scan = plan.scan_at(self.cfg.name)
                key = scan.key if scan and len(plan.scans) == 2 else None
                local = load_scan(self.server.store, plan, scan, key, spill) if scan else None
                if local is not None:
                    check_model_features(plan, scan, local, self.cfg.name)
                port = free_port(self.cfg.host, self.cfg.session_ports)
            except BaseException:
                self.slot.release(qid)
                if spill is not None:
                    spill.cleanup()
                raise
        except BaseException as e:
            if rec is not None:
                rec.finish("failed", describe(e))
                self.server.audit_query(rec, plan, {self.cfg.name: approval(e)}, NOTHING, e)
            raise
        if rec is not None:
            rec.start()
        self.prepared[qid] = Prepared(plan, local, port, rec, spill)
        lease = asyncio.ensure_future(self.lease(qid, reader))
        self.leases.add(lease)  # keep a reference: the loop holds tasks only weakly
        lease.add_done_callback(self.leases.discard)
        return PrepareReply(fingerprint=plan.fingerprint(), port=port).to_wire()

    async def lease(self, qid: str, reader: asyncio.StreamReader) -> None:
        """Free a prepared query's slot if its run never comes (coordinator gone or too slow)."""
        deadline = time.monotonic() + 2 * self.cfg.connect_timeout + 60
        while qid in self.prepared:
            if reader.at_eof() or time.monotonic() > deadline:
                prep = self.prepared.pop(qid)
                self.slot.release(qid)
                if prep.spill is not None:
                    prep.spill.cleanup()
                if prep.record is not None:
                    err = OperationalError(f"query {qid} was abandoned by its coordinator "
                                           "before its run")
                    prep.record.finish("failed", describe(err))
                    self.server.audit_query(prep.record, prep.plan, {self.cfg.name: "approved"},
                                            NOTHING, err)
                return
            await asyncio.sleep(0.1)

    async def run(self, req: Run, caller: Caller, blob, reader) -> dict[str, Any] | None:
        """Run a prepared query; closing the connection meanwhile aborts it."""
        qid = req.query_id
        prep = self.prepared.get(qid)
        if prep is None:
            raise ProgrammingError(f"query {qid} was not prepared here")
        sender = caller.from_party  # set on authenticated (TLS) peer connections only
        if sender is not None and prep.record is not None and sender != prep.record.coordinator:
            raise AuthorizationError(f"party {sender} may not run query {qid}: it was prepared "
                                     f"by coordinator {prep.record.coordinator}")
        del self.prepared[qid]
        watch = asyncio.ensure_future(reader.read(1))
        run = asyncio.ensure_future(self.run_child(req, prep))
        outcome: BaseException | None = None
        try:
            done, _ = await asyncio.wait({watch, run}, return_when=asyncio.FIRST_COMPLETED)
            if run in done:
                outcome = run.exception()
                return run.result()
            outcome = OperationalError(f"query {qid} was aborted by its coordinator "
                                       f"{prep.record.coordinator if prep.record else ''}")
            return None  # the coordinator went away or aborted: session killed, reply to nobody
        except BaseException as e:
            outcome = e
            raise
        finally:  # also when the coordinator cancels us: never leave a session running
            await stop(watch)
            if not run.done():
                await stop(run)
            if prep.spill is not None:  # the session process has ended (or was killed)
                prep.spill.cleanup()
            self.slot.release(qid)
            if prep.record is not None:
                rec = prep.record
                rec.finish("done" if outcome is None else "failed", describe(outcome))
                self.server.audit_query(rec, prep.plan, {self.cfg.name: "approved"},
                                        revealed(prep.plan, outcome), outcome)

    def session_addresses(self, given: list) -> list[tuple[str, int]]:
        """MPyC addresses: ports as announced, hosts as this party's own config names them."""
        out = []
        for (name, _), (host, port) in zip(self.cfg.parties, given, strict=True):
            if name == self.cfg.name:
                host = self.cfg.host
            elif name in self.cfg.peers:
                host = self.cfg.peers[name][0]
            out.append((host, int(port)))
        return out

    async def run_child(self, req: Run, prep: Prepared) -> dict[str, Any]:
        keypair, handed = None, {}
        if self.server.pools.enabled and isinstance(prep.plan.source, PrivateJoin) \
                and prep.plan.source.protocol == "paillier":
            if self.cfg.role == "data":
                keypair = await self.server.pools.own_keypair(self.cfg.name)
            handed = self.server.pools.take()
        left = None
        try:
            out = await self.run_session(req, prep, keypair, handed)
            left = out["stats"].get("pool_left") if out["stats"] else None
            if handed:
                out["stats"]["pool_used"] = sum(len(v) for v in handed.values()) - sum(
                    (left or {}).values())
            return out
        finally:
            self.server.pools.give_back(handed, left)

    async def run_session(self, req: Run, prep: Prepared, keypair, handed) -> dict[str, Any]:
        job = Job(
            query_id=req.query_id, plan=prep.plan, party=self.cfg.name,
            pids={n: i for i, (n, _) in enumerate(self.cfg.parties)},
            addresses=self.session_addresses(req.addresses), local=prep.local,
            own_min=self.policy.min_intersection,
            own_group_min=self.policy.min_group_rows,
            binding=binding(req.query_id, prep.plan.sql, prep.plan.fingerprint()),
            key_bits=self.cfg.key_bits, paillier_randomness=self.cfg.paillier_randomness,
            transcript_dir=self.cfg.transcript_dir, connect_timeout=self.cfg.connect_timeout,
            tls=SessionTLS(self.cfg.tls, dict(self.cfg.peer_certs)) if self.cfg.tls else None,
            paillier_key=keypair, randomizers=handed, spill=prep.spill,
        )
        if prep.spill is not None:
            prep.spill.dir()  # made here, so that this server removes it whatever the session
        async with self.run_lock:
            recv_end, send_end = _FORK.Pipe(duplex=False)
            proc = _FORK.Process(target=child_main, args=(job, send_end), daemon=False,
                                 name=f"mpcsql-{self.cfg.name}-{job.query_id}")
            proc.start()
            send_end.close()
            self.server.children.add(proc)
            deadline = time.monotonic() + self.cfg.query_timeout
            rec = self.book.get(job.query_id)
            try:
                while True:
                    while not recv_end.poll():
                        if time.monotonic() > deadline:
                            raise OperationalError(
                                f"query timed out after {self.cfg.query_timeout:.0f} s at "
                                f"{self.cfg.name}", party=self.cfg.name)
                        await asyncio.sleep(0.02)
                    try:
                        status, payload, stats = recv_end.recv()
                    except EOFError:
                        proc.join(timeout=1)
                        raise OperationalError(
                            f"the session process of party {self.cfg.name} died "
                            f"(exit code {proc.exitcode})", party=self.cfg.name) from None
                    if status != "progress":
                        break
                    if rec is not None:
                        rec.report(Report.from_wire(payload))
            finally:
                if proc.is_alive():
                    proc.kill()
                proc.join(timeout=5)
                self.server.children.discard(proc)
                recv_end.close()
        if status == "error":
            raise error_from_dict(payload)
        return RunReply(rows=payload, stats=stats).to_wire()


def load_scan(store, plan: Plan, scan, key: str | None, spill: Spill | None = None
              ) -> LocalData:
    """This party's rows for ``scan``: a program plan's local columns (evaluated and
    normalised by :meth:`PartyStore.load_local`; beyond ``spill.rows`` rows into the query's
    spill directory), or a model plan's plain columns."""
    if plan.program is not None:
        return store.load_local(scan.table, key, scan.local, spill)
    return store.load(scan.table, key, scan.columns, spill)


def query_spill(cfg, plan: Plan) -> Spill | None:
    """The spill settings of a query that may spill: the masked join streaming into a program
    or a model (``[storage] spill_dir`` and ``spill_rows``; MPCSQL_SPILL_DIR and
    MPCSQL_SPILL_ROWS in the environment override them for tests and benchmarks).  None for
    every other plan."""
    if not (isinstance(plan.source, PrivateJoin) and plan.source.protocol == "masked"
            and (plan.program is not None or plan.model is not None)):
        return None
    rows = os.environ.get("MPCSQL_SPILL_ROWS")
    return Spill(os.environ.get("MPCSQL_SPILL_DIR") or getattr(cfg, "spill_dir", None),
                 max(0, int(rows)) if rows else getattr(cfg, "spill_rows", SPILL_ROWS),
                 duckdb_memory=getattr(cfg, "duckdb_memory_limit", "1GB"))


def check_model_features(plan: Plan, scan, local: LocalData, party: str) -> None:
    """A feature that is constant in the owner's whole table is refused before any MPC."""
    aggs = plan.aggregate.aggregates
    if plan.program is not None or not aggs[0].is_model or not row_count(local):
        return
    agg = aggs[0]
    features = {c.column.lower() for c in agg.args[1:] if c.party == party}
    if isinstance(local, SpilledRows):
        lo, hi = local.column_ranges()
    else:
        lo, hi = local.values.min(axis=0), local.values.max(axis=0)
    for j, col in enumerate(scan.columns):
        if col.lower() in features and lo[j] == hi[j]:
            what = "all zero" if lo[j] == 0 else "constant"
            raise DataError(f"{agg.func}: feature {scan.table}.{col} is {what} in {party}'s "
                            "table, so it cannot be a regression feature", party=party)
