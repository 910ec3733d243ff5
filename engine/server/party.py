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
import contextvars
import getpass
import itertools
import json
import logging
import multiprocessing
import os
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from engine.control import wire
from engine.deploy import tls
from engine.deploy.certs import CertError, Identity, identity_of_der
from engine.deploy.config import ConfigError, PartyConfig, load_party_toml
from engine.server.audit import AuditLog
from engine.server.pools import PaillierPools
from engine.server.queries import (
    QueryBook,
    QueryRecord,
    Slot,
    check_query_id,
    new_query_id,
    stop,
)
from engine.server.storage import LocalData, PartyStore
from engine.session.runner import Job, run_job
from engine.session.tls import SessionTLS
from planner import plan as make_plan
from planner.catalog import Catalog, Party
from planner.plan import Plan, PrivateJoin
from planner.policy import Policy

_FORK = multiprocessing.get_context("fork")
log = logging.getLogger("mpcsql.server")

#: The analyst a request is served for; peer requests made while serving it carry it along.
_ANALYST: contextvars.ContextVar[str | None] = contextvars.ContextVar("analyst", default=None)


@dataclass
class Prepared:
    plan: Plan
    local: LocalData | None
    port: int
    record: QueryRecord | None = None  # None at the coordinator (it keeps its own)


def _free_port(host: str, ports: tuple[int, int] | None = None) -> int:
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


def _child_main(job: Job, conn) -> None:
    """Entry point of the forked session process: run the job, send back the outcome."""
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
        self.store = PartyStore(cfg.database, cfg.name, read_only=cfg.tables is not None)
        if cfg.tables is not None:
            self.store.expose([(t.name, t.key, t.columns, t.bounds) for t in cfg.tables])
        self.server_ssl = tls.server_context(cfg.tls) if cfg.tls else None
        self.client_ssl = tls.client_context(cfg.tls) if cfg.tls else None
        self.policy = Policy.from_dict(cfg.name, cfg.policy)
        self.prepared: dict[str, Prepared] = {}
        self.run_lock = asyncio.Lock()
        self.slot = Slot()  # one query at a time at this party, reserved at prepare
        self.book = QueryBook()
        self.leases: set[asyncio.Task] = set()
        audit_path = getattr(cfg, "audit_log", None)
        self.audit = AuditLog(audit_path) if audit_path else None
        self.children: set[Any] = set()
        self.pools = PaillierPools(cfg.role, cfg.paillier_pool, cfg.key_bits)
        self.stopping = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def serve(self) -> None:
        asyncio.get_running_loop().set_exception_handler(_quiet_tls_errors)
        self.server = await asyncio.start_server(
            self._handle, self.cfg.host, self.cfg.port, ssl=self.server_ssl,
            ssl_handshake_timeout=self.cfg.connect_timeout if self.server_ssl else None)
        port = self.server.sockets[0].getsockname()[1]
        log.info("party %s (%s) serving on %s:%d (%s)", self.cfg.name, self.cfg.role,
                 self.cfg.host, port, "mutual TLS" if self.server_ssl else "plain TCP")
        print(f"READY {self.cfg.host} {port}", flush=True)
        tasks = [asyncio.ensure_future(self.stopping.wait())]
        if self.cfg.parent_pid:
            tasks.append(asyncio.ensure_future(self._watch_parent()))
        filler = None
        if self.pools.enabled:
            data = self.cfg.role == "data"
            filler = asyncio.ensure_future(self.pools.run(
                idle=lambda: self.slot.holder is None,
                fetch_keys=None if data else self._peer_paillier_keys,
                own_party=self.cfg.name if data else None, stopping=self.stopping))
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if filler is not None:
            await stop(filler)
            self.pools.stop()
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

    #: Operations a peer party server may ask for (coordinator -> participant).
    PEER_OPS = frozenset({"hello", "catalog", "prepare", "run", "paillier_key"})
    #: Operations this party's own analysts may ask for.
    ANALYST_OPS = frozenset({"hello", "query", "explain", "tables", "status", "cancel"})
    #: Operations only the embedded (plain TCP, single-owner) federation uses.
    LOCAL_OPS = frozenset({"configure", "shutdown", "register", "drop"})

    def _identify(self, writer: asyncio.StreamWriter) -> Identity | None:
        """Who is on the other end of a TLS connection (None on plain TCP)."""
        if self.server_ssl is None:
            return None
        der = tls.peer_der(writer.get_extra_info("ssl_object"))
        try:
            ident = identity_of_der(der)
        except (CertError, ValueError) as e:
            raise AuthorizationError(f"certificate refused: {e}") from None
        if ident.kind == "party":
            if ident.name not in self.cfg.peers:
                raise AuthorizationError(f"{ident} is not a peer of {self.cfg.name}")
            try:
                tls.check_party(der, ident.name, self.cfg.peer_certs.get(ident.name))
            except OperationalError as e:
                raise AuthorizationError(e.message) from None
        return ident

    def _authorize(self, op: str, ident: Identity | None, msg: dict[str, Any]) -> None:
        """Check that ``ident`` may ask for ``op``; stamp the analyst identity on the request."""
        if ident is None:  # embedded federation: the OS user name the client sent, unverified
            if op in self.ANALYST_OPS - self.PEER_OPS:
                msg["analyst"] = f"local:{msg.get('user') or 'unknown'}"
            return
        if ident.kind == "party":
            if op not in self.PEER_OPS:
                raise AuthorizationError(f"party {ident.name} may not ask {self.cfg.name} "
                                         f"for {op!r}")
            analyst = msg.get("analyst")
            if analyst is not None and not str(analyst).endswith(f"@{ident.name}"):
                raise AuthorizationError(f"party {ident.name} forwarded a request for analyst "
                                         f"{analyst!r}, who is not one of its analysts")
            if msg.get("coordinator", ident.name) != ident.name:
                raise AuthorizationError(f"party {ident.name} may not speak for coordinator "
                                         f"{msg['coordinator']!r}")
            msg["from_party"] = ident.name
            return
        if ident.party != self.cfg.name:
            raise AuthorizationError(
                f"analyst {ident.name} belongs to party {ident.party}; {self.cfg.name} serves "
                f"only its own analysts (connect to {ident.party}'s server)")
        if op not in self.ANALYST_OPS:
            why = ("tables are exposed in party.toml" if op in ("register", "drop")
                   else "it is not an analyst operation")
            raise AuthorizationError(f"analyst {ident.name} may not ask for {op!r}: {why}")
        msg["analyst"] = ident.name

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            try:
                ident = self._identify(writer)
            except AuthorizationError as e:
                log.warning("refused connection from %s: %s", peer, e.message)
                try:  # tell the other side why, then hang up
                    await asyncio.wait_for(wire.recv(reader), self.cfg.connect_timeout)
                    await wire.send(writer, {"ok": False, "error": AuthorizationError(
                        e.message, party=self.cfg.name).to_dict()})
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError,
                        OperationalError):
                    pass
                return
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
                    self._authorize(op, ident, msg)
                    _ANALYST.set(msg.get("analyst"))
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
                if not reply.get("ok") and isinstance(reply.get("error"), dict):
                    log.info("%s from %s refused: %s", op, ident or peer,
                             reply["error"].get("message"))
                await wire.send(writer, reply)
        except (ConnectionError, ssl.SSLError) as e:
            log.info("connection from %s ended: %s", peer, e)
        finally:
            writer.close()

    # --- simple operations -------------------------------------------------------------------

    async def op_hello(self, msg, blob, reader):
        return {"ok": True, "party": self.cfg.name, "role": self.cfg.role,
                "parties": [list(p) for p in self.cfg.parties]}

    async def op_paillier_key(self, msg, blob, reader):
        """This data party's long-term Paillier public key (for the helper's pool)."""
        if self.cfg.role != "data" or not self.pools.enabled:
            raise ProgrammingError(f"{self.cfg.name} keeps no long-term Paillier key "
                                   "([crypto] paillier_pool is 0)")
        pub, _ = await self.pools.own_keypair(self.cfg.name)
        return {"ok": True, "n": str(pub.n)}

    async def _peer_paillier_keys(self) -> dict[str, int | None]:
        """The data parties' current long-term public keys (None: no answer; 0: the party
        keeps none)."""
        out: dict[str, int | None] = {}
        peers = _Peers(self)
        try:
            for name, role in self.cfg.parties:
                if role != "data" or name == self.cfg.name:
                    continue
                out[name] = None
                if name not in self.cfg.peers:  # embedded federation: not configured yet
                    continue
                try:
                    peers.conns[name] = await peers._connect(name)
                    reply = await asyncio.wait_for(peers._one(name, {"op": "paillier_key"}),
                                                   self.cfg.peer_timeout)
                    out[name] = int(reply["n"])
                except ProgrammingError as e:  # it keeps no long-term key: ask again later
                    out[name] = 0
                    log.info("no Paillier pool for %s: %s", name, e)
                except (Error, TimeoutError) as e:
                    log.info("no Paillier key from %s yet: %s", name, e)
        finally:
            await peers.__aexit__(None, None, None)
        return out

    async def op_tables(self, msg, blob, reader):
        """Every party's exposed table schemas (names, owner, key, column types; never data)."""
        async with _Peers(self) as peers:
            return {"ok": True, "tables": (await peers.catalog())["tables"]}

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

    def _plan(self, sql: str, catalog: dict[str, Any],
              receivers: list[str] | None = None) -> Plan:
        """Plan with the peers' schemas but this party's own tables as it knows them."""
        theirs = Catalog.from_dict(catalog)
        own = self._own_catalog()
        tables = tuple(t for t in theirs.tables if t.party != self.cfg.name) + own.tables
        return make_plan(sql, Catalog(self._parties(), tables),
                         receivers=tuple(receivers) if receivers else None)

    async def op_prepare(self, msg, blob, reader):
        """Plan, check this party's policy, reserve this party's slot, load and check data."""
        analyst = msg.get("analyst")
        if msg.get("dry_run"):
            plan = self._plan(msg["sql"], msg["catalog"], msg.get("receivers"))
            try:
                self.policy.check(plan, analyst)
                refused = None
            except PolicyError as e:
                refused = str(e)
            return {"ok": True, "fingerprint": plan.fingerprint(), "refused": refused,
                    "rules": self.policy.describe(plan, analyst)}
        qid = check_query_id(msg["query_id"])
        coordinator = msg.get("coordinator", "?")
        rec = None
        if coordinator != self.cfg.name:  # the coordinator keeps its own record
            rec = self.book.add(QueryRecord(qid, "participant", analyst, coordinator,
                                            msg["sql"]))
        plan = None
        try:
            plan = self._plan(msg["sql"], msg["catalog"], msg.get("receivers"))
            self.policy.check(plan, analyst)
            await self.slot.acquire(qid, reader)
            try:
                scan = plan.scan_at(self.cfg.name)
                local = self.store.load(scan.table, scan.key if _joined(plan) else None,
                                        scan.columns) if scan else None
                if local is not None:
                    _check_model_features(plan, scan, local, self.cfg.name)
                port = _free_port(self.cfg.host, self.cfg.session_ports)
            except BaseException:
                self.slot.release(qid)
                raise
        except BaseException as e:
            if rec is not None:
                rec.finish("failed", _describe(e))
                self._audit(rec, plan, {self.cfg.name: _approval(e)}, _NOTHING, e)
            raise
        if rec is not None:
            rec.start()
        self.prepared[qid] = Prepared(plan, local, port, rec)
        lease = asyncio.ensure_future(self._lease(qid, reader))
        self.leases.add(lease)  # keep a reference: the loop holds tasks only weakly
        lease.add_done_callback(self.leases.discard)
        return {"ok": True, "fingerprint": plan.fingerprint(), "port": port,
                "min_rows": self.policy.min_intersection}

    async def _lease(self, qid: str, reader: asyncio.StreamReader) -> None:
        """Free a prepared query's slot if its run never comes (coordinator gone or too slow)."""
        deadline = time.monotonic() + 2 * self.cfg.connect_timeout + 60
        while qid in self.prepared:
            if reader.at_eof() or time.monotonic() > deadline:
                prep = self.prepared.pop(qid)
                self.slot.release(qid)
                if prep.record is not None:
                    err = OperationalError(f"query {qid} was abandoned by its coordinator "
                                           "before its run")
                    prep.record.finish("failed", _describe(err))
                    self._audit(prep.record, prep.plan, {self.cfg.name: "approved"}, _NOTHING,
                                err)
                return
            await asyncio.sleep(0.1)

    async def op_run(self, msg, blob, reader):
        """Run a prepared query; closing the connection meanwhile aborts it."""
        qid = msg["query_id"]
        prep = self.prepared.get(qid)
        if prep is None:
            raise ProgrammingError(f"query {qid} was not prepared here")
        sender = msg.get("from_party")  # set on authenticated (TLS) peer connections only
        if sender is not None and prep.record is not None and sender != prep.record.coordinator:
            raise AuthorizationError(f"party {sender} may not run query {qid}: it was prepared "
                                     f"by coordinator {prep.record.coordinator}")
        del self.prepared[qid]
        watch = asyncio.ensure_future(reader.read(1))
        run = asyncio.ensure_future(self._run_child(msg, prep))
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
            self.slot.release(qid)
            if prep.record is not None:
                rec = prep.record
                rec.finish("done" if outcome is None else "failed", _describe(outcome))
                self._audit(rec, prep.plan, {self.cfg.name: "approved"},
                            _revealed(prep.plan, outcome), outcome)

    def _session_addresses(self, given: list) -> list[tuple[str, int]]:
        """MPyC addresses: ports as announced, hosts as this party's own config names them."""
        out = []
        for (name, _), (host, port) in zip(self.cfg.parties, given, strict=True):
            if name == self.cfg.name:
                host = self.cfg.host
            elif name in self.cfg.peers:
                host = self.cfg.peers[name][0]
            out.append((host, int(port)))
        return out

    async def _run_child(self, msg, prep: Prepared) -> dict[str, Any]:
        keypair, handed = None, {}
        if self.pools.enabled and isinstance(prep.plan.source, PrivateJoin) \
                and prep.plan.source.protocol == "paillier":
            if self.cfg.role == "data":
                keypair = await self.pools.own_keypair(self.cfg.name)
            handed = self.pools.take()
        left = None
        try:
            out = await self._run_session(msg, prep, keypair, handed)
            left = out["stats"].get("pool_left") if out["stats"] else None
            if handed:
                out["stats"]["pool_used"] = sum(len(v) for v in handed.values()) - sum(
                    (left or {}).values())
            return out
        finally:
            self.pools.give_back(handed, left)

    async def _run_session(self, msg, prep: Prepared, keypair, handed) -> dict[str, Any]:
        job = Job(
            query_id=msg["query_id"], plan=prep.plan, party=self.cfg.name,
            pids={n: i for i, (n, _) in enumerate(self.cfg.parties)},
            addresses=self._session_addresses(msg["addresses"]), local=prep.local,
            min_rows=int(msg["min_rows"]), min_rows_by=msg.get("min_rows_by"),
            key_bits=self.cfg.key_bits,
            transcript_dir=self.cfg.transcript_dir, connect_timeout=self.cfg.connect_timeout,
            tls=SessionTLS(self.cfg.tls, dict(self.cfg.peer_certs)) if self.cfg.tls else None,
            paillier_key=keypair, randomizers=handed,
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
        analyst = _analyst(msg)
        receivers = msg.get("receivers")
        async with _Peers(self) as peers:
            catalog = await peers.catalog()
            plan = self._plan(msg["sql"], catalog, receivers)
            replies = await peers.all("prepare", {
                "sql": msg["sql"], "catalog": catalog, "dry_run": True, "query_id": "explain",
                "analyst": analyst, "coordinator": self.cfg.name, "receivers": receivers})
        lines = [plan.explain(), "",
                 f"Policy checks (each party, before any data moves; analyst {analyst}):"]
        for name, _ in self.cfg.parties:
            r = replies[name]
            verdict = f"REFUSES: {r['refused']}" if r.get("refused") else "approves"
            lines.append(f"  {name}: {verdict}")
            lines += [f"    {rule}" for rule in r.get("rules", [])]
        return {"ok": True, "text": "\n".join(lines)}

    async def op_query(self, msg, blob, reader):
        """Queue, run and answer one analyst query; the analyst hanging up cancels it."""
        qid = check_query_id(msg.get("query_id") or new_query_id())
        rec = self.book.add(QueryRecord(qid, "coordinator", _analyst(msg), self.cfg.name,
                                        msg["sql"]))
        rec.task = asyncio.ensure_future(self._coordinate(rec, msg))
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

    async def _coordinate(self, rec: QueryRecord, msg: dict[str, Any]) -> dict[str, Any]:
        qid, t0 = rec.query_id, time.perf_counter()
        approvals: dict[str, str] = {}
        plan: Plan | None = None
        try:
            async with _Peers(self) as peers:
                catalog = await peers.catalog()
                plan = self._plan(msg["sql"], catalog, msg.get("receivers"))  # fail fast
                if self.cfg.name not in plan.root.receivers:
                    raise ProgrammingError(
                        f"{self.cfg.name} does not receive this query's result")
                ask = {"op": "prepare", "sql": msg["sql"], "catalog": catalog, "query_id": qid,
                       "analyst": rec.analyst, "coordinator": self.cfg.name,
                       "receivers": msg.get("receivers")}
                prep = {}
                for name, _ in self.cfg.parties:  # one at a time, in pid order: no deadlock
                    try:
                        prep[name] = await peers._one(name, ask)
                    except Error as e:
                        approvals[name] = _approval(e)
                        raise
                    approvals[name] = "approved"
                fps = {r["fingerprint"] for r in prep.values()}
                if len(fps) != 1:
                    raise InternalError("the parties planned the query differently: " + ", ".join(
                        f"{n}={r['fingerprint']}" for n, r in prep.items()))
                rec.start()
                addresses = []
                for name, _ in self.cfg.parties:
                    host = self.cfg.host if name == self.cfg.name else self.cfg.peers[name][0]
                    addresses.append((host, prep[name]["port"]))
                min_by = max(prep, key=lambda n: int(prep[n]["min_rows"]))  # first such
                min_rows = int(prep[min_by]["min_rows"])
                t1 = time.perf_counter()
                results = await peers.all("run", {"query_id": qid, "addresses": addresses,
                                                  "min_rows": min_rows, "min_rows_by": min_by},
                                          timeout=self.cfg.query_timeout + 30)
        except BaseException as e:
            cancelled = isinstance(e, asyncio.CancelledError)
            rec.finish("cancelled" if cancelled else "failed",
                       f"cancelled in state {rec.state}" if cancelled else _describe(e))
            self._audit(rec, plan, approvals, _revealed(plan, e) if rec.started else _NOTHING,
                        e)
            raise
        finally:
            self.prepared.pop(qid, None)
            self.slot.release(qid)  # our own slot, if the run never started here
        rec.finish("done")
        self._audit(rec, plan, approvals, _revealed(plan, None), None)
        mine = results[self.cfg.name]
        stats = {n: r.get("stats") for n, r in results.items()}
        stats["plan_seconds"] = t1 - t0
        stats["total_seconds"] = time.perf_counter() - t0
        return {"ok": True, "rows": mine["rows"], "query_id": qid,
                "columns": [[c.name, c.dtype] for c in plan.output], "stats": stats}

    async def op_status(self, msg, blob, reader):
        """Recent queries at this party (coordinated here or taken part in), oldest first."""
        return {"ok": True, "party": self.cfg.name, "queries": self.book.list(),
                "paillier_pool": self.pools.describe() if self.pools.enabled else None}

    async def op_cancel(self, msg, blob, reader):
        """Cancel a queued or running query coordinated here (its own analyst only)."""
        qid = check_query_id(msg.get("query_id"))
        rec = self.book.get(qid)
        if rec is None:
            raise ProgrammingError(f"no query {qid} at {self.cfg.name}")
        if rec.role != "coordinator":
            raise ProgrammingError(f"query {qid} is coordinated by {rec.coordinator}; "
                                   "cancel it there")
        if rec.analyst != _analyst(msg):
            raise ProgrammingError(f"query {qid} belongs to another analyst")
        if not rec.active:
            raise ProgrammingError(f"query {qid} has already finished ({rec.state})")
        state = rec.state
        if rec.task is not None:
            rec.task.cancel()
            await asyncio.wait({rec.task})
        return {"ok": True, "query_id": qid, "was": state, "state": rec.state}

    def _audit(self, rec: QueryRecord, plan: Plan | None, approvals: dict[str, str],
               revealed: dict[str, list[str]], error: BaseException | None) -> None:
        """One audit line for a query this party took part in (never raises into the query)."""
        if self.audit is None:
            return
        try:
            self.audit.append(
                query_id=rec.query_id, analyst=rec.analyst, coordinator=rec.coordinator,
                sql=rec.sql, plan=plan.fingerprint() if plan else None, approvals=approvals,
                revealed=revealed, outcome=(f"failed: {_describe(error)}"
                                            if rec.state == "failed" else rec.state),
                role=rec.role, submitted=rec.to_dict()["submitted"])
        except OSError as e:  # a full disk must not take the server down; say so loudly
            print(f"mpcsql[{self.cfg.name}]: cannot write the audit log: {e}",
                  file=sys.stderr, flush=True)


_NOTHING: dict[str, list[str]] = {}  # refused or failed before any data moved


def _analyst(msg: dict[str, Any]) -> str:
    """The analyst's identity: set by the transport; embedded default ``local:<os user>``."""
    return msg.get("analyst") or f"local:{getpass.getuser()}"


def _describe(e: BaseException | None) -> str | None:
    if e is None:
        return None
    if isinstance(e, asyncio.CancelledError):
        return "cancelled"
    return f"{type(e).__name__}: {e}"


def _approval(e: BaseException) -> str:
    if isinstance(e, PolicyError):
        return f"refused ({e.rule})" if e.rule else "refused"
    return f"failed ({type(e).__name__})"


def _revealed(plan: Plan | None, error: BaseException | None) -> dict[str, list[str]]:
    """What the run revealed to whom: everything ``plan.learns()`` lists when it completed."""
    if plan is None:
        return _NOTHING
    if error is None:
        return plan.learns()
    if isinstance(error, PolicyError) and error.rule == "min_intersection":
        return {p: ["that the intersection (or table) is smaller than the largest minimum"]
                for p in plan.parties}
    return {p: ["at most the sizes the join reveals (the run was aborted); no result"]
            for p in plan.parties}


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
        """Connect to every peer (mutual TLS when configured) and check who answered."""
        cfg = self.server.cfg
        names = list(cfg.peers)
        results = await asyncio.gather(*(self._connect(n) for n in names),
                                       return_exceptions=True)
        for name, r in zip(names, results, strict=True):
            if not isinstance(r, BaseException):
                self.conns[name] = r
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.__aexit__(None, None, None)
            raise errors[0]
        return self

    async def _connect(self, name: str):
        cfg, ctx = self.server.cfg, self.server.client_ssl
        host, port = cfg.peers[name]
        where = f"party {name} at {host}:{port}"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=name if ctx else None,
                ssl_handshake_timeout=cfg.connect_timeout if ctx else None),
                timeout=cfg.connect_timeout)
        except ssl.SSLError as e:
            raise OperationalError(f"TLS handshake with {where} failed: "
                                   f"{tls.describe_tls_error(e)}", party=name) from None
        except (OSError, TimeoutError) as e:
            why = str(e) or f"no answer within {cfg.connect_timeout:g} s"
            raise OperationalError(f"{where} is unreachable ({why})", party=name) from None
        try:
            if ctx is not None:
                tls.check_party(tls.peer_der(writer.get_extra_info("ssl_object")), name,
                                cfg.peer_certs.get(name))
            await wire.send(writer, {"op": "hello"})
            reply, _ = await asyncio.wait_for(wire.recv(reader), timeout=cfg.peer_timeout)
        except TimeoutError:
            writer.close()
            raise OperationalError(f"{where} did not answer within {cfg.peer_timeout:g} s",
                                   party=name) from None
        except ssl.SSLError as e:
            writer.close()
            raise OperationalError(f"{where} refused our connection: "
                                   f"{tls.describe_tls_error(e)}", party=name) from None
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            writer.close()
            raise OperationalError(f"{where} closed the connection ({type(e).__name__})",
                                   party=name) from None
        except OperationalError:
            writer.close()
            raise
        if not reply.get("ok"):
            writer.close()
            raise error_from_dict(reply["error"])
        ours = [list(p) for p in cfg.parties]
        if reply.get("party") != name or reply.get("parties", ours) != ours:
            writer.close()
            raise OperationalError(
                f"{where} answers as {reply.get('party')!r} with parties "
                f"{reply.get('parties')}; this party's configuration says {name!r} with "
                f"{ours}", party=name)
        return reader, writer

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
            if msg.get("analyst") is None and _ANALYST.get() is not None:
                msg = {**msg, "analyst": _ANALYST.get()}  # peers see whose request this is
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
            if failed and pending and all(isinstance(t.exception(), OperationalError)
                                          and "timed out" in t.exception().message
                                          for t in failed):
                # The others timed out waiting while these never answered: name the silent.
                silent = [tasks[t] for t in pending]
                raise OperationalError(
                    f"party {', '.join(silent)} stopped answering during {op}; the query was "
                    f"aborted at every party ({_first_error(failed, tasks)})", party=silent[0])
            if failed:
                raise _first_error(failed, tasks)
            if pending:
                silent = [tasks[t] for t in pending]
                raise OperationalError(
                    f"party {', '.join(silent)} did not answer {op} within {timeout:.0f} s",
                    party=silent[0])
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


def _quiet_tls_errors(loop, context: dict[str, Any]) -> None:
    """Log a refused TLS client in one line instead of asyncio's traceback."""
    exc = context.get("exception")
    if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError)):
        peer = context.get("transport") and context["transport"].get_extra_info("peername")
        log.warning("refused TLS connection from %s: %s", peer or "?",
                    tls.describe_tls_error(exc))
        return
    loop.default_exception_handler(context)


def serve(cfg: PartyConfig, *, stop_on_sigint: bool = False) -> int:
    """Run a party server until SIGTERM (or SIGINT, when asked); returns an exit code."""
    try:
        server = PartyServer(cfg)
    except (Error, CertError) as e:
        print(f"mpcsql serve: {e}", file=sys.stderr, flush=True)
        return 2
    if not stop_on_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def run() -> None:
        loop = asyncio.get_running_loop()  # handlers that wake the loop at once
        for sig in (signal.SIGTERM, signal.SIGINT) if stop_on_sigint else (signal.SIGTERM,):
            loop.add_signal_handler(sig, server.stopping.set)
        await server.serve()
        log.info("party %s stopped", cfg.name)

    try:
        asyncio.run(run())
    except OSError as e:  # e.g. the listen address is in use
        print(f"mpcsql serve: cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}",
              file=sys.stderr, flush=True)
        return 2
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run a party server from ``party.toml`` or a JSON config (the local federation's)."""
    ap = argparse.ArgumentParser(prog="python -m engine.server")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="path to party.toml")
    src.add_argument("--config-json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)  # MPyC configures the root logger itself
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    if args.config:
        try:
            cfg = load_party_toml(args.config)
        except ConfigError as e:
            print(f"mpcsql serve: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        sys.exit(serve(cfg, stop_on_sigint=True))
    # the federation owner stops us explicitly (SIGINT from a terminal is not for us)
    sys.exit(serve(PartyConfig.from_dict(json.loads(args.config_json))))


if __name__ == "__main__":
    main()
