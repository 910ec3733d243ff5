"""Framing for control messages between clients and party servers (JSON + optional blob).

A frame is a 4-byte big-endian header length, a UTF-8 JSON header and, when the header has
``blob_len``, that many raw bytes.  Control traffic never carries pickles.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
from typing import Any

from dialect.errors import OperationalError, error_from_dict

#: Largest header a party reads from a client or peer it has identified (SQL, catalogs).
MAX_HEADER = 16 << 20
#: Largest header read before the sender is identified or from a refused one.
MAX_HEADER_UNTRUSTED = 64 << 10
#: Largest blob (a registered table) the embedded federation's owner may send.
MAX_BLOB = 2 << 30


def _pack(msg: dict[str, Any], blob: bytes | None) -> bytes:
    if blob is not None:
        msg = {**msg, "blob_len": len(blob)}
    head = json.dumps(msg, default=str).encode()
    return struct.pack(">I", len(head)) + head + (blob or b"")


async def send(writer: asyncio.StreamWriter, msg: dict[str, Any], blob: bytes | None = None):
    writer.write(_pack(msg, blob))
    await writer.drain()


async def recv_header(reader: asyncio.StreamReader, *, max_header: int = MAX_HEADER,
                      idle: float | None = None, read: float | None = None
                      ) -> tuple[Any, int]:
    """Read one frame's header: the decoded JSON and the length of the blob that follows.

    Waits at most ``idle`` seconds for the frame to begin and ``read`` seconds for the rest;
    a header over ``max_header`` bytes is refused before it is read.  Raises
    asyncio.IncompleteReadError when the peer closed the stream, TimeoutError on a time-out.
    """
    first = await asyncio.wait_for(reader.readexactly(4), idle)
    (n,) = struct.unpack(">I", first)
    if n > max_header:
        raise OperationalError(f"control message header of {n} bytes is over the limit of "
                               f"{max_header} bytes")
    raw = await asyncio.wait_for(reader.readexactly(n), read)
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        raise OperationalError("control message header is not valid JSON") from None
    size = msg.pop("blob_len", 0) if isinstance(msg, dict) else 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise OperationalError("control message announces a malformed blob length")
    return msg, size


async def recv(reader: asyncio.StreamReader, *, max_header: int = MAX_HEADER,
               max_blob: int = MAX_BLOB) -> tuple[dict[str, Any], bytes | None]:
    """Read one whole frame; raises asyncio.IncompleteReadError when the peer closed."""
    msg, size = await recv_header(reader, max_header=max_header)
    if size > max_blob:
        raise OperationalError("control message blob too large")
    blob = await reader.readexactly(size) if size else None
    return msg, blob


#: After a refusal that leaves input unread: at most this much is read and dropped, for at
#: most DRAIN_SECONDS, before the connection is closed (see :func:`drain_unread`).
DRAIN_BYTES = 1 << 20
DRAIN_SECONDS = 2.0


async def drain_unread(reader: asyncio.StreamReader) -> None:
    """Read and drop (bounded, never kept) what a refused client is still sending, so that
    closing does not reset the connection (TCP does when unread data is left) before the
    client has read the refusal it was sent. Used by the party servers and the PostgreSQL
    endpoint."""
    left = DRAIN_BYTES
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while left > 0:
                chunk = await reader.read(min(left, 1 << 16))
                if not chunk:
                    return
                left -= len(chunk)
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass


class BlockingClient:
    """A synchronous request/response connection to one party server (used by the API).

    With ``ssl_context`` the connection is mutually authenticated TLS and the server must
    present a party certificate (named ``party``, unless ``party`` is ``"?"``).
    """

    def __init__(self, host: str, port: int, *, party: str = "?", timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None):
        self.party = party
        self.address = (host, port)
        self.answered = False
        where = f"party {party} at {host}:{port}" if party != "?" else f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise OperationalError(f"cannot reach {where}: {e}", party=_named(party)) from e
        if ssl_context is None:
            self.sock = sock
            return
        try:
            self.sock = ssl_context.wrap_socket(sock, server_hostname=party if party != "?"
                                                else None)
        except (ssl.SSLError, OSError) as e:
            sock.close()
            raise OperationalError(f"TLS handshake with {where} failed: {_tls_reason(e)}",
                                   party=_named(party)) from e
        from engine.deploy.certs import CertError, identity_of_der

        try:
            ident = identity_of_der(self.sock.getpeercert(binary_form=True))
        except (CertError, ValueError) as e:
            self.close()
            raise OperationalError(f"{where} is not an mpcsql party server: {e}",
                                   party=_named(party)) from e
        if ident.kind != "party" or party not in ("?", ident.name):
            self.close()
            raise OperationalError(f"{where} presented the certificate of {ident}",
                                   party=_named(party))
        self.server_identity = ident

    def request(self, msg: dict[str, Any], blob: bytes | None = None,
                timeout: float | None = None) -> tuple[dict[str, Any], bytes | None]:
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(_pack(msg, blob))
            n = struct.unpack(">I", self._read(4))[0]
            reply = json.loads(self._read(n))
            data = self._read(int(reply.pop("blob_len"))) if "blob_len" in reply else None
            self.answered = True
            return reply, data
        except ssl.SSLError as e:  # TLS 1.3: a refused client certificate shows up here
            raise OperationalError(
                f"party {self.party} refused the connection: {_tls_reason(e)}",
                party=_named(self.party)) from e
        except TimeoutError as e:
            raise OperationalError(
                f"party {self.party} did not answer within {timeout:g} s",
                party=_named(self.party)) from e
        except (OSError, ConnectionError, struct.error, json.JSONDecodeError) as e:
            where = (f"party {self.party}" if self.party != "?"
                     else "{}:{}".format(*self.address))
            if not self.answered and isinstance(e, ConnectionError):
                hint = ("it refused our client certificate (not signed by a CA it trusts?)"
                        if isinstance(self.sock, ssl.SSLSocket) else
                        "it may require mutual TLS (pass tls=... / --tls-*)")
                raise OperationalError(f"{where} closed the connection without answering: "
                                       f"{hint}", party=_named(self.party)) from e
            raise OperationalError(f"lost connection to {where} ({type(e).__name__}: {e})",
                                   party=_named(self.party)) from e

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise ConnectionError("connection closed by the server")
            buf.extend(chunk)
        return bytes(buf)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _named(party: str) -> str | None:
    return None if party == "?" else party


def _tls_reason(e: BaseException) -> str:
    from engine.deploy.tls import describe_tls_error

    return describe_tls_error(e)


def call(host: str, port: int, msg: dict[str, Any], blob: bytes | None = None, *,
         party: str = "?", timeout: float | None = None, connect_timeout: float = 30.0,
         ssl_context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """One request on a fresh connection; a refusal in the reply is raised as its error class."""
    client = BlockingClient(host, port, party=party, timeout=connect_timeout,
                            ssl_context=ssl_context)
    try:
        reply, _ = client.request(msg, blob, timeout=timeout)
    finally:
        client.close()
    if not reply.get("ok"):
        raise error_from_dict(reply["error"])
    return reply
