"""Coordinating a query for this party's own analyst.

catalog  -> ask every party for its tables' schemas (never data)
prepare  -> every party plans the SQL itself, checks its policy, loads and checks its columns,
            reserves an MPyC port, and returns the plan's fingerprint
run      -> every party forks its session process; a reply carries the result (receivers) or
            the error.  The first error aborts the others by closing their connections.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from typing import Any

from dialect.errors import Error, InternalError, OperationalError, ProgrammingError
from engine.control.messages import (
    Explain,
    Prepare,
    PrepareReply,
    Query,
    Run,
    RunReply,
    Tables,
    check_query_id,
    new_query_id,
)
from engine.server.audit import NOTHING, approval, describe, revealed
from engine.server.dispatch import Caller
from engine.server.peers import Peers
from engine.server.queries import QueryRecord, stop
from engine.server.state import PartyState
from planner.plan import Plan


def analyst_of(caller: Caller) -> str:
    """The analyst's identity: set by the transport; embedded default ``local:<os user>``."""
    return caller.analyst or f"local:{getpass.getuser()}"


class Coordinator:
    """The queries this party's analysts submit here: explain, query, tables."""

    def __init__(self, server: PartyState):
        self.server = server
        self.cfg = server.cfg
        self.book = server.book

    async def tables(self, req: Tables, caller: Caller, blob, reader) -> dict[str, Any]:
        """Every party's exposed table schemas (names, owner, key, column types; never data)."""
        async with Peers(self.server) as peers:
            return {"ok": True, "tables": (await peers.catalog())["tables"]}

    async def explain(self, req: Explain, caller: Caller, blob, reader) -> dict[str, Any]:
        """The plan, what each party learns, and every party's own policy verdict."""
        analyst = analyst_of(caller)
        receivers = req.receivers
        async with Peers(self.server) as peers:
            catalog = await peers.catalog()
            plan = await self.server.plan(req.sql, catalog, receivers)
            ask = Prepare(sql=req.sql, catalog=catalog, dry_run=True, query_id="explain",
                          analyst=analyst, coordinator=self.cfg.name, receivers=receivers)
            replies = {n: PrepareReply.from_wire(r)
                       for n, r in (await peers.all("prepare", ask.to_wire())).items()}
        lines = [plan.explain(), "",
                 f"Policy checks (each party, before any data moves; analyst {analyst}):"]
        for name, _ in self.cfg.parties:
            r = replies[name]
            verdict = f"REFUSES: {r.refused}" if r.refused else "approves"
            lines.append(f"  {name}: {verdict}")
            lines += [f"    {rule}" for rule in r.rules]
        return {"ok": True, "text": "\n".join(lines)}

    async def query(self, req: Query, caller: Caller, blob, reader) -> dict[str, Any] | None:
        """Queue, run and answer one analyst query; the analyst hanging up cancels it."""
        qid = check_query_id(req.query_id or new_query_id())
        rec = self.book.add(QueryRecord(qid, "coordinator", analyst_of(caller), self.cfg.name,
                                        req.sql))
        rec.task = asyncio.ensure_future(self.coordinate(rec, req))
        watch = asyncio.ensure_future(reader.read(1))
        try:
            done, _ = await asyncio.wait({rec.task, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await stop(watch)
            if not rec.task.done():
                rec.task.cancel()
                await asyncio.wait({rec.task})
        if rec.task not in done:
            return None  # the analyst hung up: the query was cancelled, reply to nobody
        if rec.task.cancelled():
            raise OperationalError(f"query {qid} was cancelled; nothing was revealed")
        return rec.task.result()

    async def coordinate(self, rec: QueryRecord, req: Query) -> dict[str, Any]:
        """Prepare at every party (one at a time, pid order), compare fingerprints, run."""
        qid, t0 = rec.query_id, time.perf_counter()
        approvals: dict[str, str] = {}
        plan: Plan | None = None
        try:
            async with Peers(self.server) as peers:
                catalog = await peers.catalog()
                plan = await self.server.plan(req.sql, catalog, req.receivers)  # fail fast
                if self.cfg.name not in plan.root.receivers:
                    raise ProgrammingError(
                        f"{self.cfg.name} does not receive this query's result")
                ask = Prepare(sql=req.sql, catalog=catalog, query_id=qid, analyst=rec.analyst,
                              coordinator=self.cfg.name, receivers=req.receivers).to_wire()
                prep: dict[str, PrepareReply] = {}
                for name, _ in self.cfg.parties:  # one at a time, in pid order: no deadlock
                    try:
                        prep[name] = PrepareReply.from_wire(await peers.one(name, ask))
                    except Error as e:
                        approvals[name] = approval(e)
                        raise
                    approvals[name] = "approved"
                fps = {r.fingerprint for r in prep.values()}
                if len(fps) != 1:
                    raise InternalError("the parties planned the query differently: " + ", ".join(
                        f"{n}={r.fingerprint}" for n, r in prep.items()))
                rec.start()
                addresses = []
                for name, _ in self.cfg.parties:
                    host = self.cfg.host if name == self.cfg.name else self.cfg.peers[name][0]
                    addresses.append([host, prep[name].port])
                t1 = time.perf_counter()
                run = Run(query_id=qid, addresses=addresses)  # the parties agree on the rest
                results = {n: RunReply.from_wire(r) for n, r in (await peers.all(
                    "run", run.to_wire(), timeout=self.cfg.query_timeout + 30)).items()}
        except BaseException as e:
            cancelled = isinstance(e, asyncio.CancelledError)
            rec.finish("cancelled" if cancelled else "failed",
                       f"cancelled in state {rec.state}" if cancelled else describe(e))
            self.server.audit_query(rec, plan, approvals,
                                    revealed(plan, e) if rec.started else NOTHING, e)
            raise
        finally:
            self.server.prepared.pop(qid, None)
            self.server.slot.release(qid)  # our own slot, if the run never started here
        rec.finish("done")
        self.server.audit_query(rec, plan, approvals, revealed(plan, None), None)
        mine = results[self.cfg.name]
        stats = {n: r.stats for n, r in results.items()}
        stats["plan_seconds"] = t1 - t0
        stats["total_seconds"] = time.perf_counter() - t0
        return {"ok": True, "rows": mine.rows, "query_id": qid,
                "columns": [[c.name, c.dtype] for c in plan.output], "stats": stats}
