"""The party server: one long-running process per party that owns its DuckDB file.

It answers its analysts (``query``/``explain``), coordinates a query with its peers
(:mod:`engine.server.coordinator`), takes part in its peers' queries
(:mod:`engine.server.participant`), and checks every query against its own policy before any of
its data moves.  Connections are identified and authorised in :mod:`engine.server.dispatch`.
Each approved query runs in a freshly forked process (one MPyC session); killing that process
aborts the query and leaves the server serving.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import signal
import ssl
import sys
import tempfile
import time
from typing import Any

from dialect.errors import AuthorizationError, Error, ProgrammingError
from engine.control import messages
from engine.control.messages import (
    CatalogReply,
    HelloReply,
    PaillierKeyReply,
    ProgressReply,
    check_query_id,
)
from engine.deploy import tls
from engine.deploy.certs import CertError
from engine.deploy.config import ConfigError, PartyConfig, load_party_toml
from engine.server.coordinator import Coordinator, analyst_of
from engine.server.dispatch import Caller, handle_connection
from engine.server.participant import Participant
from engine.server.peers import peer_paillier_keys, peer_progress
from engine.server.queries import QueryRecord, stop
from engine.server.state import PartyState

log = logging.getLogger("mpcsql.server")


class PartyServer(PartyState):
    """Serve one party: control connections from analysts and peer servers."""

    def __init__(self, cfg: PartyConfig):
        super().__init__(cfg)
        self.server: asyncio.base_events.Server | None = None
        self.participant = Participant(self)
        self.coordinator = Coordinator(self)
        self.handlers.update({
            messages.Hello: self.hello, messages.PaillierKey: self.paillier_key,
            messages.CatalogRequest: self.catalog, messages.Status: self.status,
            messages.Cancel: self.cancel, messages.QueryProgress: self.progress,
            messages.Configure: self.configure,
            messages.Shutdown: self.shutdown, messages.Register: self.register,
            messages.Drop: self.drop, messages.Tables: self.coordinator.tables,
            messages.Explain: self.coordinator.explain, messages.Query: self.coordinator.query,
            messages.Prepare: self.participant.prepare, messages.Run: self.participant.run,
        })

    # --- lifecycle -------------------------------------------------------------------------

    async def serve(self) -> None:
        asyncio.get_running_loop().set_exception_handler(_quiet_tls_errors)
        self.server = await asyncio.start_server(
            functools.partial(handle_connection, self), self.cfg.host, self.cfg.port,
            ssl=self.server_ssl,
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
                fetch_keys=None if data else functools.partial(peer_paillier_keys, self),
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

    # --- simple operations -------------------------------------------------------------------

    async def hello(self, req: messages.Hello, caller: Caller, blob, reader) -> dict[str, Any]:
        return HelloReply(party=self.cfg.name, role=self.cfg.role,
                          parties=[list(p) for p in self.cfg.parties]).to_wire()

    async def paillier_key(self, req: messages.PaillierKey, caller: Caller, blob, reader
                           ) -> dict[str, Any]:
        """This data party's long-term Paillier public key (for the helper's pool)."""
        if self.cfg.role != "data" or not self.pools.enabled:
            raise ProgrammingError(f"{self.cfg.name} keeps no long-term Paillier key "
                                   "([crypto] paillier_pool is 0)")
        pub, _ = await self.pools.own_keypair(self.cfg.name)
        h = getattr(pub, "djn_h", None)  # engine.protocols.paillier.djn_h
        bits = getattr(pub, "djn_order_bits", None) or 0  # paillier.djn_order_bits
        return PaillierKeyReply(n=str(pub.n), h=str(h) if h else "", h_order_bits=bits).to_wire()

    async def configure(self, req: messages.Configure, caller: Caller, blob, reader
                        ) -> dict[str, Any]:
        self.cfg.peers = {k: tuple(v) for k, v in req.peers.items()}
        return {"ok": True}

    async def shutdown(self, req: messages.Shutdown, caller: Caller, blob, reader
                       ) -> dict[str, Any]:
        self.stopping.set()
        return {"ok": True}

    async def catalog(self, req: messages.CatalogRequest, caller: Caller, blob, reader
                      ) -> dict[str, Any]:
        return CatalogReply(tables=self.own_catalog().to_dict()["tables"]).to_wire()

    async def register(self, req: messages.Register, caller: Caller, blob, reader
                       ) -> dict[str, Any]:
        if self.cfg.role != "data":
            raise ProgrammingError(f"{self.cfg.name} is a helper and holds no tables")
        if req.path is not None or blob is None:
            # the server never opens a path a client names (it may read what the client
            # may not): the client reads the file with its own permissions and sends it
            raise ProgrammingError(f"{self.cfg.name} does not read files named by a client; "
                                   "send the table's contents (Connection.register reads the "
                                   "file with your own permissions)")
        fmt = (req.format or "parquet").lower()
        if fmt == "parquet" and not req.source_table:
            schema = self.store.register(req.table, key=req.key, blob=blob, bounds=req.bounds,
                                         domains=req.domains, not_null=req.not_null)
        else:  # CSV or DuckDB bytes: read back from a private temporary file
            with tempfile.TemporaryDirectory(prefix="mpcsql-register-") as tmp:
                path = os.path.join(tmp, "source." + fmt.replace("/", "_"))
                with open(path, "wb") as f:
                    f.write(blob)
                schema = self.store.register(req.table, key=req.key, path=path, fmt=fmt,
                                             table=req.source_table, bounds=req.bounds,
                                             domains=req.domains, not_null=req.not_null)
        return {"ok": True, "columns": [[c.name, c.dtype] for c in schema.columns],
                "key": schema.key}

    async def drop(self, req: messages.Drop, caller: Caller, blob, reader) -> dict[str, Any]:
        self.store.drop(req.table)
        return {"ok": True}

    async def status(self, req: messages.Status, caller: Caller, blob, reader) -> dict[str, Any]:
        """Recent queries at this party (coordinated here or taken part in), oldest first;
        a running query's progress only to its analyst and this party's administrator."""
        queries = []
        for rec in list(self.book.records.values()):
            q = rec.to_dict()
            q["progress"] = ({"party": self.cfg.name, **await self.progress_of(rec, caller)}
                             if rec.state == "running" and may_watch(rec, caller) else None)
            queries.append(q)
        return {"ok": True, "party": self.cfg.name, "queries": queries,
                "paillier_pool": self.pools.describe() if self.pools.enabled else None}

    async def progress(self, req: messages.QueryProgress, caller: Caller, blob, reader
                       ) -> dict[str, Any]:
        """One query's progress at this party (engine.session.progress): for the analyst who
        submitted it and for this party's administrator only."""
        qid = check_query_id(req.query_id)
        rec = self.book.get(qid)
        if rec is None:
            raise ProgrammingError(f"no query {qid} at {self.cfg.name}")
        if not may_watch(rec, caller):
            raise AuthorizationError(f"query {qid} belongs to another analyst: only its analyst "
                                     f"and {self.cfg.name}'s administrator may see its progress")
        return ProgressReply(party=self.cfg.name, **await self.progress_of(rec, caller)
                             ).to_wire()

    async def progress_of(self, rec: QueryRecord, caller: Caller) -> dict[str, Any]:
        """``rec``'s progress for ``caller``: the coordinating party sees a participant's public
        steps only; at the coordinator, a running query's progress at every party too (the
        others asked at most once a second)."""
        if caller.from_party is not None:
            return rec.progress_dict(for_peer=True)
        out = rec.progress_dict()
        if rec.role == "coordinator" and rec.state == "running":
            if time.monotonic() - rec.peers_at >= PEER_PROGRESS_EVERY:
                rec.peers_at = time.monotonic()
                rec.peers = await peer_progress(self, rec.query_id)
            out["parties"] = {self.cfg.name: rec.progress_dict(), **(rec.peers or {})}
        return out

    async def cancel(self, req: messages.Cancel, caller: Caller, blob, reader) -> dict[str, Any]:
        """Cancel a queued or running query coordinated here (its own analyst only)."""
        qid = check_query_id(req.query_id)
        rec = self.book.get(qid)
        if rec is None:
            raise ProgrammingError(f"no query {qid} at {self.cfg.name}")
        if rec.role != "coordinator":
            raise ProgrammingError(f"query {qid} is coordinated by {rec.coordinator}; "
                                   "cancel it there")
        if rec.analyst != analyst_of(caller):
            raise ProgrammingError(f"query {qid} belongs to another analyst")
        if not rec.active:
            raise ProgrammingError(f"query {qid} has already finished ({rec.state})")
        state = rec.state
        if rec.task is not None:
            rec.task.cancel()
            await asyncio.wait({rec.task})
        return {"ok": True, "query_id": qid, "was": state, "state": rec.state}



#: Seconds between two requests of the peers' progress for one query (at the coordinator).
PEER_PROGRESS_EVERY = 1.0


def may_watch(rec: QueryRecord, caller: Caller) -> bool:
    """Whether ``caller`` may see the progress of query ``rec``: this party's administrator,
    the analyst who submitted it (as this party knows them), or, at a participant, the party
    coordinating it (which is shown the public steps only)."""
    if caller.from_party is not None:
        return rec.role == "participant" and rec.coordinator == caller.from_party
    return caller.admin or (caller.analyst is not None and rec.analyst == analyst_of(caller))


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
