"""Mutually authenticated TLS for one query's MPyC session (instead of MPyC's ``--ssl``).

MPyC 0.11's own TLS reads fixed files from ``.config/`` and, when accepting a connection, only
checks that the certificate is CA-signed: the connecting side announces its party number in its
first message, and any CA-signed certificate may claim any number.  Here the session process
wraps the event loop's ``create_server``/``create_connection`` (as ``_listen_only_on`` does) to
use the party's own TLS files, and checks on every connection that the certificate is the
expected party's: on the connecting side before MPyC sends anything, on the accepting side
before MPyC reads the announced party number.  A mismatch on a connection this party made, or a
failed handshake with a peer, aborts the session at once with an OperationalError naming that
peer; a connection from anyone but the query's parties to this party's session port is dropped
and the session goes on (another party's analyst holding a CA-signed certificate cannot abort
it).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from dialect.errors import OperationalError
from engine.deploy.tls import (
    TLSFiles,
    check_party,
    client_context,
    describe_tls_error,
    server_context,
)
from engine.protocols import runtime as mpcrt


@dataclass(frozen=True)
class SessionTLS:
    """The party's TLS files and the peers' pinned certificates (party name -> PEM path)."""

    files: TLSFiles
    pins: dict[str, str] = field(default_factory=dict)


def _fail(state: dict[str, Any], pid: int | None, message: str) -> None:
    state.setdefault("tls_error", message)
    if not state["lost"].done():
        state["lost"].set_result(pid)


def install(loop, tls: SessionTLS, pid: int, names: dict[int, str],
            addresses: list[tuple[str, int]], state: dict[str, Any]) -> None:
    """Run every MPyC connection of this process over TLS with identity checks."""
    server_ctx, client_ctx = server_context(tls.files), client_context(tls.files)
    by_address = {(h, p): i for i, (h, p) in enumerate(addresses)}
    create_server, create_connection = loop.create_server, loop.create_connection

    def tls_server(*args, **kwargs):
        kwargs["ssl"] = server_ctx
        return create_server(*args, **kwargs)

    async def tls_connection(factory, host=None, port=None, **kwargs):
        peer = by_address.get((host, port))
        kwargs["ssl"] = client_ctx
        kwargs["server_hostname"] = names.get(peer, host)  # SNI only; identity checked below
        try:
            return await create_connection(factory, host, port, **kwargs)
        except ssl.SSLError as e:  # a certificate problem does not go away by retrying
            name = names.get(peer, f"{host}:{port}")
            _fail(state, peer, f"TLS handshake with party {name} failed: "
                  f"{describe_tls_error(e)}")
            raise

    loop.create_server, loop.create_connection = tls_server, tls_connection

    ex = mpcrt.mpyc.asyncoro.MessageExchanger
    orig_made, orig_recv, orig_lost = ex.connection_made, ex.data_received, ex.connection_lost
    rejected: set[Any] = set()  # the exchangers themselves: an id() may be reused

    def verify(self, transport, peer: int | None, *, accepting: bool = False) -> bool:
        name = names.get(peer)
        try:
            if name is None or peer == pid:
                raise OperationalError(f"a session peer announced itself as party number "
                                       f"{peer}, which is not a peer")
            der = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
            check_party(der, name, tls.pins.get(name))
            state.setdefault("tls_peers", set()).add(name)  # reported in the session stats
            return True
        except OperationalError as e:
            rejected.add(self)
            transport.abort()
            if accepting:  # a stranger at our port: drop it, the session goes on
                state.setdefault("refused", []).append(e.message)
            else:  # the address we dialled is not the peer we meant: stop
                _fail(state, peer if name else None,
                      f"refused a session connection: {e.message}")
            return False

    def connection_made(self, transport):
        if self.peer_pid is not None and not verify(self, transport, self.peer_pid):
            return  # we connected: the server must be the peer we meant
        orig_made(self, transport)

    def data_received(self, data):
        if self in rejected:
            return
        if self.peer_pid is None and len(self.bytes) + len(data) >= 2:
            head = bytes(self.bytes[:2]) + bytes(data[:2])
            if not verify(self, self.transport, int.from_bytes(head[:2], "little"),
                          accepting=True):
                return  # it connected to us: its certificate must match the number it claims
        orig_recv(self, data)

    def connection_lost(self, exc):
        if self in rejected or self.peer_pid is None:  # never became a session channel
            return
        orig_lost(self, exc)

    ex.connection_made, ex.data_received, ex.connection_lost = (
        connection_made, data_received, connection_lost)
