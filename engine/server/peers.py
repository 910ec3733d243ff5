"""The coordinator's connections to its peers for one query (mutual TLS when configured)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from typing import Any

from dialect.errors import (
    Error,
    InternalError,
    OperationalError,
    ProgrammingError,
    ProtocolError,
    error_from_dict,
)
from engine.control import wire
from engine.control.messages import (
    Hello,
    HelloReply,
    PaillierKey,
    QueryProgress,
    parse_request,
)
from engine.deploy import tls
from engine.server.dispatch import ANALYST, Caller
from engine.server.state import PartyState

log = logging.getLogger("mpcsql.server")


class Peers:
    """Per-query connections from the coordinator to every party (itself called directly)."""

    def __init__(self, server: PartyState):
        self.server = server
        self.conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self.used: dict[str, float] = {}  # when each connection last carried a request

    async def __aenter__(self) -> Peers:
        """Connect to every peer (mutual TLS when configured) and check who answered."""
        cfg = self.server.cfg
        names = list(cfg.peers)
        results = await asyncio.gather(*(self.connect(n) for n in names),
                                       return_exceptions=True)
        for name, r in zip(names, results, strict=True):
            if not isinstance(r, BaseException):
                self.conns[name] = r
                self.used[name] = time.monotonic()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.__aexit__(None, None, None)
            raise errors[0]
        return self

    async def connect(self, name: str):
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
            await wire.send(writer, Hello().to_wire())
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
        try:
            hello = HelloReply.from_wire(reply)
        except ProgrammingError as e:
            writer.close()
            raise OperationalError(f"{where} sent a {e.message}", party=name) from None
        ours = [list(p) for p in cfg.parties]
        if hello.party != name or hello.parties != ours:
            writer.close()
            raise OperationalError(
                f"{where} answers as {hello.party!r} with parties "
                f"{hello.parties}; this party's configuration says {name!r} with "
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

    async def one(self, name: str, msg: dict[str, Any]) -> dict[str, Any]:
        """Send one request to party ``name`` (this party itself is called directly)."""
        srv = self.server
        if msg.get("analyst") is None and ANALYST.get() is not None:
            msg = {**msg, "analyst": ANALYST.get()}  # peers see whose request this is
        if name == srv.cfg.name:
            req = parse_request(msg)
            never = asyncio.StreamReader()  # our own run is never aborted through a socket
            reply = await srv.handlers[type(req)](req, Caller(analyst=req.analyst), None, never)
        else:
            await self._fresh(name)
            reader, writer = self.conns[name]
            try:
                await wire.send(writer, msg)
                reply, _ = await wire.recv(reader)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                raise OperationalError(f"party {name} went away during the query",
                                       party=name) from None
            self.used[name] = time.monotonic()
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise error_from_dict(reply["error"] if isinstance(reply, dict) else {})
        return reply

    async def _fresh(self, name: str) -> None:
        """Replace a connection silent for half the idle timeout before using it: the peer may
        close it as idle while this party plans or waits for another party (a large query's
        planning can take that long)."""
        last = self.used.get(name)  # None: connected just now by the caller
        if last is not None and time.monotonic() - last > self.server.cfg.idle_timeout / 2:
            self.conns.pop(name)[1].close()
            self.conns[name] = await self.connect(name)
            self.used[name] = time.monotonic()

    async def all(self, op: str, msg: dict[str, Any], timeout: float | None = None):
        """Send ``op`` to every party at once; the first error aborts the rest and is raised."""
        names = [n for n, _ in self.server.cfg.parties]
        tasks = {asyncio.ensure_future(self.one(n, {**msg, "op": op})): n for n in names}
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
                    f"aborted at every party ({first_error(failed, tasks)})", party=silent[0])
            if failed:
                raise first_error(failed, tasks)
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


def first_error(failed, tasks) -> Error:
    """Prefer the root cause: a refusal or data error over 'lost connection' echoes."""
    errs = [t.exception() for t in failed]
    errs = [e if isinstance(e, Error) else InternalError(repr(e)) for e in errs]
    # a refusal or data error first, then a protocol violation a party detected, then echoes
    errs.sort(key=lambda e: (isinstance(e, OperationalError),
                             not isinstance(e, ProtocolError)))
    return errs[0]


async def peer_paillier_keys(server: PartyState) -> dict[str, tuple | int | None]:
    """The data parties' current long-term public keys as (n, DJN base h or None, subgroup
    order bound or None) (None: no answer; 0: the party keeps none)."""
    out: dict[str, tuple | int | None] = {}
    peers = Peers(server)
    try:
        for name, role in server.cfg.parties:
            if role != "data" or name == server.cfg.name:
                continue
            out[name] = None
            if name not in server.cfg.peers:  # embedded federation: not configured yet
                continue
            try:
                peers.conns[name] = await peers.connect(name)
                reply = await asyncio.wait_for(peers.one(name, PaillierKey().to_wire()),
                                               server.cfg.peer_timeout)
                h = str(reply.get("h") or "")  # range and gcd checked by the pool
                # a malformed h becomes -1, which the pool refuses (and logs) for that key
                bits = reply.get("h_order_bits") or None  # checked by the pool, as h
                out[name] = (int(reply["n"]), (int(h) if h.isdigit() else -1) if h else None,
                             bits)
            except ProgrammingError as e:  # it keeps no long-term key: ask again later
                out[name] = 0
                log.info("no Paillier pool for %s: %s", name, e)
            except (Error, TimeoutError) as e:
                log.info("no Paillier key from %s yet: %s", name, e)
    finally:
        await peers.__aexit__(None, None, None)
    return out


async def peer_progress(server: PartyState, query_id: str, timeout: float = 5.0
                        ) -> dict[str, dict[str, Any] | None]:
    """The coordinated query's progress at every peer (public steps only: each peer decides
    what it shows, QueryRecord.progress_dict); None for a peer that did not answer within
    ``timeout`` seconds."""
    msg = QueryProgress(query_id=query_id, coordinator=server.cfg.name).to_wire()
    peers = Peers(server)

    async def ask(name: str) -> dict[str, Any] | None:
        try:
            peers.conns[name] = await peers.connect(name)
            reply = await peers.one(name, msg)
        except Error as e:
            log.info("no progress of %s from %s: %s", query_id, name, e)
            return None
        reply.pop("ok", None)
        reply.pop("parties", None)
        return reply

    names = [n for n, _ in server.cfg.parties if n != server.cfg.name and n in server.cfg.peers]
    try:
        tasks = [asyncio.ensure_future(ask(n)) for n in names]
        done, pending = await asyncio.wait(tasks, timeout=timeout) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return {n: (t.result() if t in done else None) for n, t in zip(names, tasks,
                                                                        strict=True)}
    finally:
        await peers.__aexit__(None, None, None)
