"""Framing for control messages between clients and party servers (JSON + optional blob).

A frame is a 4-byte big-endian header length, a UTF-8 JSON header and, when the header has
``blob_len``, that many raw bytes.  Control traffic never carries pickles.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

from dialect.errors import OperationalError

MAX_HEADER = 64 << 20
MAX_BLOB = 4 << 30


def _pack(msg: dict[str, Any], blob: bytes | None) -> bytes:
    if blob is not None:
        msg = {**msg, "blob_len": len(blob)}
    head = json.dumps(msg, default=str).encode()
    return struct.pack(">I", len(head)) + head + (blob or b"")


async def send(writer: asyncio.StreamWriter, msg: dict[str, Any], blob: bytes | None = None):
    writer.write(_pack(msg, blob))
    await writer.drain()


async def recv(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes | None]:
    """Read one frame; raises asyncio.IncompleteReadError when the peer closed the stream."""
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    if n > MAX_HEADER:
        raise OperationalError("control message too large")
    msg = json.loads(await reader.readexactly(n))
    blob = None
    if "blob_len" in msg:
        size = int(msg.pop("blob_len"))
        if size > MAX_BLOB:
            raise OperationalError("control message blob too large")
        blob = await reader.readexactly(size)
    return msg, blob


class BlockingClient:
    """A synchronous request/response connection to one party server (used by the API)."""

    def __init__(self, host: str, port: int, *, party: str = "?", timeout: float = 30.0):
        self.party = party
        self.address = (host, port)
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise OperationalError(
                f"cannot reach party {party} at {host}:{port}: {e}", party=party
            ) from e

    def request(self, msg: dict[str, Any], blob: bytes | None = None,
                timeout: float | None = None) -> tuple[dict[str, Any], bytes | None]:
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(_pack(msg, blob))
            n = struct.unpack(">I", self._read(4))[0]
            reply = json.loads(self._read(n))
            data = self._read(int(reply.pop("blob_len"))) if "blob_len" in reply else None
            return reply, data
        except (OSError, ConnectionError, struct.error, json.JSONDecodeError) as e:
            raise OperationalError(
                f"lost connection to party {self.party} ({type(e).__name__}: {e})",
                party=self.party,
            ) from e

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
