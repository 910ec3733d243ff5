"""Control connections: who is calling, whether it may ask for the operation, and the reply.

Every request is identified (TLS certificate), parsed into its typed message
(:mod:`engine.control.messages`) and authorised here, in one place, before any handler runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dialect.errors import (
    AuthorizationError,
    Error,
    InternalError,
    OperationalError,
    ProgrammingError,
)
from engine.control import wire
from engine.control.messages import Register, Request, parse_request
from engine.deploy import tls
from engine.deploy.certs import CertError, Identity, identity_of_der, same_certificate
from engine.server.state import PartyState

log = logging.getLogger("mpcsql.server")

#: Operations a peer party server may ask for (coordinator -> participant).
PEER_OPS = frozenset({"hello", "catalog", "prepare", "run", "paillier_key", "progress"})
#: Operations this party's own analysts may ask for.
ANALYST_OPS = frozenset({"hello", "query", "explain", "tables", "status", "cancel",
                         "progress"})
#: Operations this party's administrator may ask for: whoever connects with this server's own
#: certificate (and so holds its key), e.g. ``mpcsql status`` run by its operator.
ADMIN_OPS = frozenset({"hello", "status", "progress"})
#: Operations only the embedded federation's owner may ask for (the program that started it).
LOCAL_OPS = frozenset({"configure", "shutdown", "register", "drop"})
#: Everything the embedded owner (analyst ``owner@<party>`` of its private CA) may ask for.
OWNER_OPS = ANALYST_OPS | LOCAL_OPS | {"catalog"}

#: The analyst a request is served for; peer requests made while serving it carry it along.
ANALYST: contextvars.ContextVar[str | None] = contextvars.ContextVar("analyst", default=None)


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as this party established it (never as the request claims)."""

    analyst: str | None = None  # the analyst the request is served for
    from_party: str | None = None  # the authenticated peer party (TLS only)
    admin: bool = False  # this party's administrator (or the embedded federation's owner)


Handler = Callable[[Request, Caller, "bytes | None", asyncio.StreamReader],
                   Awaitable["dict[str, Any] | None"]]


def embedded(server: PartyState) -> bool:
    """Whether this party belongs to an embedded federation (tables come from its owner's
    ``register``, not from ``party.toml``; all three parties have the same owner)."""
    return server.cfg.tables is None


def identify(server: PartyState, writer: asyncio.StreamWriter) -> Identity:
    """Who is on the other end of the (mutually authenticated TLS) connection."""
    cfg = server.cfg
    if server.server_ssl is None:  # a configuration without TLS serves nobody
        raise AuthorizationError(f"{cfg.name} has no TLS configured and accepts no "
                                 "unauthenticated connection")
    der = tls.peer_der(writer.get_extra_info("ssl_object"))
    try:
        ident = identity_of_der(der)
    except (CertError, ValueError) as e:
        raise AuthorizationError(f"certificate refused: {e}") from None
    if ident.kind == "party" and ident.name == cfg.name:  # this server's own certificate
        if not same_certificate(der, cfg.tls.cert):
            raise AuthorizationError(f"{ident} is not the certificate of {cfg.name}'s server")
    elif ident.kind == "party":
        if ident.name not in cfg.peers:
            raise AuthorizationError(f"{ident} is not a peer of {cfg.name}")
        try:
            tls.check_party(der, ident.name, cfg.peer_certs.get(ident.name))
        except OperationalError as e:
            raise AuthorizationError(e.message) from None
    return ident


def authorize(server: PartyState, req: Request, ident: Identity | None) -> Caller:
    """Check that ``ident`` may ask for ``req``; the identity the request is served for."""
    op, name = req.op, server.cfg.name
    if ident is None:
        raise AuthorizationError(f"{name} serves only mutually authenticated TLS connections")
    if ident.kind == "party" and ident.name == name:
        if op not in ADMIN_OPS:
            raise AuthorizationError(f"{name}'s administrator may not ask for {op!r} (only "
                                     f"{', '.join(sorted(ADMIN_OPS))})")
        return Caller(admin=True)
    if ident.kind == "party":
        if op not in PEER_OPS:
            raise AuthorizationError(f"party {ident.name} may not ask {name} for {op!r}")
        analyst = req.analyst
        if embedded(server) and str(analyst).startswith("local:"):
            pass  # the embedded owner (one for all three parties), as its coordinator saw it
        elif analyst is not None and not str(analyst).endswith(f"@{ident.name}"):
            raise AuthorizationError(f"party {ident.name} forwarded a request for analyst "
                                     f"{analyst!r}, who is not one of its analysts")
        if (req.coordinator or ident.name) != ident.name:
            raise AuthorizationError(f"party {ident.name} may not speak for coordinator "
                                     f"{req.coordinator!r}")
        return Caller(analyst=analyst, from_party=ident.name)
    if ident.party != name:
        raise AuthorizationError(
            f"analyst {ident.name} belongs to party {ident.party}; {name} serves "
            f"only its own analysts (connect to {ident.party}'s server)")
    if embedded(server):
        if ident.name != tls.owner_name(name) or op not in OWNER_OPS:
            raise AuthorizationError(f"{ident} may not ask {name} for {op!r}: only the program "
                                     "that started the embedded federation may")
        # the owner's OS user, as its client reports it: shown as local:<user>
        return Caller(analyst=f"local:{req.user or 'unknown'}", admin=True)
    if op not in ANALYST_OPS:
        why = ("tables are exposed in party.toml" if op in ("register", "drop")
               else "it is not an analyst operation")
        raise AuthorizationError(f"analyst {ident.name} may not ask for {op!r}: {why}")
    return Caller(analyst=ident.name)


#: Seconds a connection may take to finish sending a request once it has begun.
READ_SECONDS = 30.0
#: Control connections served at once; more are closed at once.
MAX_CONNECTIONS = 64


async def _refuse(server: PartyState, reader, writer, peer, e: AuthorizationError) -> None:
    log.warning("refused connection from %s: %s", peer, e.message)
    try:  # tell the other side why (reading only a small header), then hang up
        await wire.recv_header(reader, max_header=wire.MAX_HEADER_UNTRUSTED,
                               idle=server.cfg.connect_timeout, read=READ_SECONDS)
        await wire.send(writer, {"ok": False, "error": AuthorizationError(
            e.message, party=server.cfg.name).to_dict()})
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, OperationalError):
        pass


def _error(server: PartyState, e: Error) -> dict[str, Any]:
    if e.party is None:
        e.party = server.cfg.name
    return {"ok": False, "error": e.to_dict()}


async def answer(server: PartyState, msg: Any, blob_len: int, ident: Identity | None,
                 reader: asyncio.StreamReader) -> tuple[dict[str, Any] | None, bool]:
    """The reply to one request (None: abandoned, reply to nobody) and whether the connection
    may go on (False when an unread blob is left on it)."""
    try:
        req = parse_request(msg)
        caller = authorize(server, req, ident)
    except Error as e:
        return _error(server, e), blob_len == 0
    blob = None
    if blob_len:
        if not isinstance(req, Register):
            return _error(server, ProgrammingError(f"{req.op!r} takes no data")), False
        if blob_len > wire.MAX_BLOB:
            return _error(server, ProgrammingError(
                f"a table of {blob_len} bytes is over the limit of {wire.MAX_BLOB}")), False
        blob = await reader.readexactly(blob_len)
    try:
        ANALYST.set(caller.analyst)
        return await server.handlers[type(req)](req, caller, blob, reader), True
    except Error as e:
        return _error(server, e), True
    except Exception as e:  # noqa: BLE001 - one bad request never kills the server
        log.exception("%s from %s failed", req.op, ident)  # the traceback stays in our log
        return _error(server, InternalError(
            f"{req.op} failed at {server.cfg.name} with {type(e).__name__} (details in its "
            "log)")), True


async def handle_connection(server: PartyState, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    """Serve one control connection: requests one after the other until it closes.

    Headers are bounded before anything is authorised; a connection that stays silent for
    ``[timeouts] idle`` seconds or takes longer than READ_SECONDS to send a request is closed; at
    most
    MAX_CONNECTIONS are served at once.
    """
    peer = writer.get_extra_info("peername")
    if server.connections >= MAX_CONNECTIONS:
        log.warning("refused connection from %s: %d connections already", peer,
                    server.connections)
        writer.close()
        return
    server.connections += 1
    try:
        try:
            ident = identify(server, writer)
        except AuthorizationError as e:
            await _refuse(server, reader, writer, peer, e)
            return
        while True:
            try:
                msg, blob_len = await wire.recv_header(  # ident is authenticated by now
                    reader, idle=server.cfg.idle_timeout, read=READ_SECONDS)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except TimeoutError:
                log.info("closed idle connection from %s", ident or peer)
                return
            except OperationalError as e:
                await wire.send(writer, _error(server, e))
                await wire.drain_unread(reader)
                return
            reply, go_on = await answer(server, msg, blob_len, ident, reader)
            if reply is None:  # connection abandoned (aborted run)
                return
            if not reply.get("ok") and isinstance(reply.get("error"), dict):
                op = msg.get("op", "") if isinstance(msg, dict) else ""
                log.info("%s from %s refused: %s", op, ident or peer,
                         reply["error"].get("message"))
            await wire.send(writer, reply)
            if not go_on:
                await wire.drain_unread(reader)
                return
    except (ConnectionError, ssl.SSLError) as e:
        log.info("connection from %s ended: %s", peer, e)
    finally:
        server.connections -= 1
        writer.close()
