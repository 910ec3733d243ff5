"""The party server: one long-running process per party that owns its DuckDB file.

It answers its analysts (``query``/``explain``), coordinates a query with its peers, and checks
every query against its own policy before any of its data moves.  Each approved query runs in a
freshly forked process (one MPyC session); killing that process aborts the query and leaves the
server serving.

Coordinator flow (the party an analyst talks to):
  catalog  -> ask every party for its tables' schemas (never data)
  prepare  -> every party plans the SQL itself, checks its policy, loads and checks its columns,
              reserves an MPyC port, and returns the plan's fingerprint
  run      -> every party forks its session process; a reply carries the result (receivers) or
              the error.  The first error aborts the others by closing their connections.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
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

import numpy as np

from dialect.errors import (
    DataError,
    Error,
    InternalError,
    OperationalError,
    ProgrammingError,
    error_from_dict,
)
from engine import wire
from engine.config import PartyConfig
from engine.session import Job, run_job
from engine.storage import LocalData, PartyStore
from planner import plan as make_plan
from planner.catalog import Catalog, Party
from planner.plan import Plan
from planner.policy import Policy

_FORK = multiprocessing.get_context("fork")


@dataclass
class Prepared:
    plan: Plan
    local: LocalData | None
    port: int


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _child_main(job: Job, conn) -> None:
    """Entry point of the forked session process: run the job, send back the outcome."""
    parent = os.getppid()

    def watchdog() -> None:  # never outlive the server that forked us
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        res = run_job(job)
        conn.send(("ok", res.rows, res.stats))
    except Error as e:
        if e.party is None:
            e.party = job.party
        conn.send(("error", e.to_dict(), None))
    except BaseException as e:  # noqa: BLE001 - report, never hang the others
        tb = traceback.format_exc(limit=8)
        conn.send(("error", InternalError(f"{type(e).__name__}: {e}\n{tb}",
                                          party=job.party).to_dict(), None))
    finally:
        conn.close()


class PartyServer:
    """Serve one party: control connections from analysts and peer servers."""

    def __init__(self, cfg: PartyConfig):
        self.cfg = cfg
        self.store = PartyStore(cfg.database, cfg.name)
        self.policy = Policy.from_dict(cfg.name, cfg.policy)
        self.prepared: dict[str, Prepared] = {}
        self.run_lock = asyncio.Lock()
        self.children: set[Any] = set()
        self.stopping = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def serve(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.cfg.host, self.cfg.port)
        port = self.server.sockets[0].getsockname()[1]
        print(f"READY {self.cfg.host} {port}", flush=True)
        tasks = [asyncio.ensure_future(self.stopping.wait())]
        if self.cfg.parent_pid:
            tasks.append(asyncio.ensure_future(self._watch_parent()))
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        self.kill_children()
        self.server.close()
        self.store.close()

    async def _watch_parent(self) -> None:
        while os.getppid() == self.cfg.parent_pid:
            await asyncio.sleep(0.5)
        self.stopping.set()

    def kill_children(self) -> None:
        for proc in list(self.children):
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=5)
        self.children.clear()

    # --- dispatch ----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    msg, blob = await wire.recv(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                op = msg.get("op", "")
                handler = getattr(self, f"op_{op}", None)
                try:
                    if handler is None:
                        raise ProgrammingError(f"unknown operation {op!r}")
                    reply = await handler(msg, blob, reader)
                except Error as e:
                    if e.party is None:
                        e.party = self.cfg.name
                    reply = {"ok": False, "error": e.to_dict()}
                except Exception as e:  # noqa: BLE001 - one bad request never kills the server
                    reply = {"ok": False, "error": InternalError(
                        f"{type(e).__name__}: {e}", party=self.cfg.name).to_dict()}
                if reply is None:  # connection abandoned (aborted run)
                    return
                await wire.send(writer, reply)
        finally:
            writer.close()

    # --- simple operations -------------------------------------------------------------------

    async def op_hello(self, msg, blob, reader):
        return {"ok": True, "party": self.cfg.name, "role": self.cfg.role}

    async def op_configure(self, msg, blob, reader):
        self.cfg.peers = {k: tuple(v) for k, v in msg["peers"].items()}
        return {"ok": True}

    async def op_shutdown(self, msg, blob, reader):
        self.stopping.set()
        return {"ok": True}

    async def op_catalog(self, msg, blob, reader):
        return {"ok": True, "tables": self._own_catalog().to_dict()["tables"]}

    async def op_register(self, msg, blob, reader):
        if self.cfg.role != "data":
            raise ProgrammingError(f"{self.cfg.name} is a helper and holds no tables")
        schema = self.store.register(
            msg["table"], key=msg.get("key"), path=msg.get("path"), blob=blob,
            fmt=msg.get("format"), table=msg.get("source_table"), bounds=msg.get("bounds"))
        return {"ok": True, "columns": [[c.name, c.dtype] for c in schema.columns],
                "key": schema.key}

    async def op_drop(self, msg, blob, reader):
        self.store.drop(msg["table"])
        return {"ok": True}

    def _parties(self) -> tuple[Party, ...]:
        return tuple(Party(n, r, i) for i, (n, r) in enumerate(self.cfg.parties))

    def _own_catalog(self) -> Catalog:
        return Catalog(self._parties(), tuple(self.store.schemas()))

    # --- participating in a query ------------------------------------------------------------

    def _plan(self, sql: str, catalog: dict[str, Any]) -> Plan:
        """Plan with the peers' schemas but this party's own tables as it knows them."""
        theirs = Catalog.from_dict(catalog)
        own = self._own_catalog()
        tables = tuple(t for t in theirs.tables if t.party != self.cfg.name) + own.tables
        return make_plan(sql, Catalog(self._parties(), tables))

    async def op_prepare(self, msg, blob, reader):
        plan = self._plan(msg["sql"], msg["catalog"])
        self.policy.check(plan)
        if msg.get("dry_run"):
            return {"ok": True, "fingerprint": plan.fingerprint(),
                    "rules": self.policy.describe(plan)}
        scan = plan.scan_at(self.cfg.name)
        local = self.store.load(scan.table, scan.key if _joined(plan) else None,
                                scan.columns) if scan else None
        if local is not None:
            _check_model_features(plan, scan, local, self.cfg.name)
        port = _free_port(self.cfg.host)
        self.prepared[msg["query_id"]] = Prepared(plan, local, port)
        return {"ok": True, "fingerprint": plan.fingerprint(), "port": port,
                "min_rows": self.policy.min_intersection}

    async def op_run(self, msg, blob, reader):
        """Run a prepared query; closing the connection meanwhile aborts it."""
        prep = self.prepared.pop(msg["query_id"], None)
        if prep is None:
            raise ProgrammingError(f"query {msg['query_id']} was not prepared here")
        watch = asyncio.ensure_future(reader.read(1))
        run = asyncio.ensure_future(self._run_child(msg, prep))
        try:
            done, _ = await asyncio.wait({watch, run}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the coordinator cancels us: never leave a session running
            watch.cancel()
            if not run.done():
                run.cancel()
                await asyncio.wait({run})
        if run in done:
            return run.result()
        return None  # the coordinator went away or aborted: session killed, reply to nobody

    async def _run_child(self, msg, prep: Prepared) -> dict[str, Any]:
        job = Job(
            query_id=msg["query_id"], plan=prep.plan, party=self.cfg.name,
            pids={n: i for i, (n, _) in enumerate(self.cfg.parties)},
            addresses=[tuple(a) for a in msg["addresses"]], local=prep.local,
            min_rows=int(msg["min_rows"]), key_bits=self.cfg.key_bits,
            transcript_dir=self.cfg.transcript_dir, connect_timeout=self.cfg.connect_timeout,
        )
        async with self.run_lock:
            recv_end, send_end = _FORK.Pipe(duplex=False)
            proc = _FORK.Process(target=_child_main, args=(job, send_end), daemon=False,
                                 name=f"mpcsql-{self.cfg.name}-{job.query_id}")
            proc.start()
            send_end.close()
            self.children.add(proc)
            deadline = time.monotonic() + self.cfg.query_timeout
            try:
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
            finally:
                if proc.is_alive():
                    proc.kill()
                proc.join(timeout=5)
                self.children.discard(proc)
                recv_end.close()
        if status == "error":
            raise error_from_dict(payload)
        return {"ok": True, "rows": payload, "stats": stats}

    # --- coordinating a query (this party's analyst asked) -----------------------------------

    async def op_explain(self, msg, blob, reader):
        async with _Peers(self) as peers:
            catalog = await peers.catalog()
            plan = self._plan(msg["sql"], catalog)
            replies = await peers.all("prepare", {"sql": msg["sql"], "catalog": catalog,
                                                  "dry_run": True, "query_id": "explain"})
        lines = [plan.explain(), "", "Policy checks (each party, before any data moves):"]
        for name, r in replies.items():
            lines.append(f"  {name}: approves" + (f" ({'; '.join(r['rules'])})"
                                                  if r.get("rules") else ""))
        return {"ok": True, "text": "\n".join(lines)}

    async def op_query(self, msg, blob, reader):
        qid = msg.get("query_id") or secrets.token_hex(6)
        t0 = time.perf_counter()
        async with _Peers(self) as peers:
            catalog = await peers.catalog()
            plan = self._plan(msg["sql"], catalog)  # fail fast on bad SQL before asking peers
            if self.cfg.name not in plan.root.receivers:
                raise ProgrammingError(f"{self.cfg.name} does not receive this query's result")
            prep = await peers.all("prepare", {"sql": msg["sql"], "catalog": catalog,
                                               "query_id": qid})
            fps = {r["fingerprint"] for r in prep.values()}
            if len(fps) != 1:
                raise InternalError("the parties planned the query differently: "
                                    + ", ".join(f"{n}={r['fingerprint']}" for n, r in prep.items()))
            addresses = []
            for name, _ in self.cfg.parties:
                host = self.cfg.host if name == self.cfg.name else self.cfg.peers[name][0]
                addresses.append((host, prep[name]["port"]))
            min_rows = max(int(r["min_rows"]) for r in prep.values())
            t1 = time.perf_counter()
            results = await peers.all("run", {"query_id": qid, "addresses": addresses,
                                              "min_rows": min_rows},
                                      timeout=self.cfg.query_timeout + 30)
        mine = results[self.cfg.name]
        stats = {n: r.get("stats") for n, r in results.items()}
        stats["plan_seconds"] = t1 - t0
        stats["total_seconds"] = time.perf_counter() - t0
        return {"ok": True, "rows": mine["rows"],
                "columns": [[c.name, c.dtype] for c in plan.output], "stats": stats}


def _check_model_features(plan: Plan, scan, local: LocalData, party: str) -> None:
    """A feature that is constant in the owner's whole table is refused before any MPC."""
    agg = plan.aggregate.aggregates[0]
    if not agg.is_model or not len(local.values):
        return
    features = {c.column.lower() for c in agg.args[1:] if c.party == party}
    for j, col in enumerate(scan.columns):
        if col.lower() in features and np.ptp(local.values[:, j]) == 0:
            what = "all zero" if not local.values[:, j].any() else "constant"
            raise DataError(f"{agg.func}: feature {scan.table}.{col} is {what} in {party}'s "
                            "table, so it cannot be a regression feature", party=party)


def _joined(plan: Plan) -> bool:
    return len(plan.scans) == 2


class _Peers:
    """Per-query connections from the coordinator to every party (itself called directly)."""

    def __init__(self, server: PartyServer):
        self.server = server
        self.conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}

    async def __aenter__(self) -> _Peers:
        for name, (host, port) in self.server.cfg.peers.items():
            try:
                self.conns[name] = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout=10)
            except (OSError, asyncio.TimeoutError) as e:
                await self.__aexit__(None, None, None)
                raise OperationalError(f"party {name} is unreachable at {host}:{port} ({e})",
                                       party=name) from None
        return self

    async def __aexit__(self, *exc) -> None:
        for _, w in self.conns.values():
            w.close()
        self.conns.clear()

    async def catalog(self) -> dict[str, Any]:
        replies = await self.all("catalog", {})
        tables = list(itertools.chain.from_iterable(r["tables"] for r in replies.values()))
        parties = [[n, r, i] for i, (n, r) in enumerate(self.server.cfg.parties)]
        return {"parties": parties, "tables": tables}

    async def _one(self, name: str, msg: dict[str, Any]) -> dict[str, Any]:
        srv = self.server
        if name == srv.cfg.name:
            handler = getattr(srv, f"op_{msg['op']}")
            never = asyncio.StreamReader()  # our own run is never aborted through a socket
            reply = await handler(msg, None, never)
        else:
            reader, writer = self.conns[name]
            try:
                await wire.send(writer, msg)
                reply, _ = await wire.recv(reader)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                raise OperationalError(f"party {name} went away during the query",
                                       party=name) from None
        if not reply.get("ok"):
            raise error_from_dict(reply["error"])
        return reply

    async def all(self, op: str, msg: dict[str, Any], timeout: float | None = None):
        """Send ``op`` to every party at once; the first error aborts the rest and is raised."""
        names = [n for n, _ in self.server.cfg.parties]
        tasks = {asyncio.ensure_future(self._one(n, {**msg, "op": op})): n for n in names}
        try:
            done, pending = await asyncio.wait(tasks, timeout=timeout,
                                               return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if t.exception() is not None]
            if failed and pending:
                # Let the others report too, so that the root cause wins over its echoes.
                more, pending = await asyncio.wait(pending, timeout=2.0)
                failed += [t for t in more if t.exception() is not None]
            if failed:
                raise _first_error(failed, tasks)
            if pending:
                raise OperationalError(
                    f"parties {', '.join(tasks[t] for t in pending)} did not answer within "
                    f"{timeout:.0f} s")
            return {tasks[t]: t.result() for t in done}
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            if any(not t.done() or t.cancelled() or t.exception() for t in tasks):
                await self.__aexit__(None, None, None)  # closing = abort at every peer
                await asyncio.gather(*tasks, return_exceptions=True)


def _first_error(failed, tasks) -> Error:
    """Prefer the root cause: a refusal or data error over 'lost connection' echoes."""
    errs = [t.exception() for t in failed]
    errs = [e if isinstance(e, Error) else InternalError(repr(e)) for e in errs]
    errs.sort(key=lambda e: isinstance(e, OperationalError))
    return errs[0]


def main(argv: list[str] | None = None) -> None:
    """Run a party server from a JSON config (used by the local federation)."""
    ap = argparse.ArgumentParser(prog="python -m engine.server")
    ap.add_argument("--config-json", required=True)
    args = ap.parse_args(argv)
    cfg = PartyConfig.from_dict(json.loads(args.config_json))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the federation owner stops us explicitly
    server = PartyServer(cfg)
    signal.signal(signal.SIGTERM, lambda *_: server.stopping.set())
    asyncio.run(server.serve())
    sys.exit(0)


if __name__ == "__main__":
    main()
