"""Talking to a party server over the network: ``mpcsql://host:port`` with mutual TLS."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dialect.errors import InterfaceError
from engine.control import wire
from engine.control.messages import Hello, HelloReply

DEFAULT_PORT = 7400


def parse_dsn(dsn: str) -> tuple[str, int, str | None]:
    """``mpcsql://host[:port][?party=NAME]`` -> (host, port, expected party or None)."""
    u = urlsplit(dsn)
    if u.scheme != "mpcsql" or not u.hostname:
        raise InterfaceError(f"bad data source {dsn!r}; expected mpcsql://host:port")
    try:
        port = u.port or DEFAULT_PORT
    except ValueError:
        raise InterfaceError(f"bad port in data source {dsn!r}") from None
    query = parse_qs(u.query)
    unknown = set(query) - {"party"}
    if unknown or u.path not in ("", "/"):
        raise InterfaceError(f"data source {dsn!r}: only ?party=NAME may follow host:port")
    return u.hostname, port, query.get("party", [None])[0]


def client_ssl(tls: ssl.SSLContext | Mapping[str, str] | None) -> ssl.SSLContext | None:
    """An SSL context from ``{"ca": ..., "cert": ..., "key": ...}`` (PEM paths) or as given."""
    if tls is None or isinstance(tls, ssl.SSLContext):
        return tls
    from engine.deploy.certs import CertError
    from engine.deploy.tls import TLSFiles, client_context

    missing = {"ca", "cert", "key"} - set(tls)
    if missing or set(tls) - {"ca", "cert", "key"}:
        raise InterfaceError("tls= takes an ssl.SSLContext or a dict with exactly the keys "
                             "ca, cert and key (paths to PEM files)")
    files = TLSFiles(*(os.path.expanduser(os.fspath(tls[k])) for k in ("ca", "cert", "key")))
    try:
        return client_context(files)
    except CertError as e:
        raise InterfaceError(str(e)) from None


class RemoteServer:
    """The analyst's own party server, reached at ``host:port`` (one connection per request).

    Stands in for :class:`engine.client.embedded.LocalFederation` in a Connection: ``addresses``
    lists only this party, whose server coordinates with the others.
    """

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None,
                 expect_party: str | None = None, timeout: float = 30.0):
        self.host, self.port, self.ssl, self.timeout = host, port, tls, timeout
        self.party = expect_party or "?"
        reply = HelloReply.from_wire(self.request(Hello().to_wire(), None, timeout))
        self.party, self.role = reply.party, reply.role
        self.parties = [p[0] for p in reply.parties]
        self.addresses = {self.party: (host, port)}

    def request(self, msg: dict[str, Any], blob: bytes | None,
                timeout: float | None) -> dict[str, Any]:
        return wire.call(self.host, self.port, msg, blob, party=self.party, timeout=timeout,
                         connect_timeout=self.timeout, ssl_context=self.ssl)

    def stop(self) -> None:
        """Nothing to stop: the party server belongs to its organisation."""
