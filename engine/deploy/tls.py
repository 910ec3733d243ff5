"""Mutually authenticated TLS for party-to-party and analyst-to-party connections.

Contexts require a certificate from the other side signed by the configured CA (TLS >= 1.2);
only that CA is trusted, never the system's public CAs.
Host names are not checked: identity is the certificate's mpcsql identity (CN + OU, see
:mod:`engine.deploy.certs`), checked after the handshake against who we expected, and — for party
peers whose certificate is listed in ``party.toml`` — against that exact certificate (pinning).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from dialect.errors import OperationalError
from engine.deploy.certs import CertError, Identity, identity_of_der, same_certificate

#: The analyst name (``owner@<party>``) of the program that started an embedded federation:
#: the only identity its fresh, private CA certifies besides the three parties.
EMBEDDED_OWNER = "owner"


def owner_name(party: str) -> str:
    """The embedded federation owner's analyst identity at ``party``."""
    return f"{EMBEDDED_OWNER}@{party}"


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of one TLS endpoint: trusted CA certificate(s), own certificate and key."""

    ca: str
    cert: str
    key: str


def _context(purpose: ssl.Purpose, files: TLSFiles) -> ssl.SSLContext:
    # Not create_default_context(): that would also trust the system's public CAs.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose == ssl.Purpose.CLIENT_AUTH
                         else ssl.PROTOCOL_TLS_CLIENT)
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # identity = certificate CN/OU, checked after the handshake
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=files.ca)
        ctx.load_cert_chain(files.cert, keyfile=files.key)
    except (OSError, ssl.SSLError) as e:
        raise CertError(f"cannot load TLS files (ca {files.ca}, cert {files.cert}, key "
                        f"{files.key}): {e}") from None
    return ctx


def server_context(files: TLSFiles) -> ssl.SSLContext:
    """Context for a listening party: clients must present a CA-signed certificate."""
    return _context(ssl.Purpose.CLIENT_AUTH, files)


def client_context(files: TLSFiles) -> ssl.SSLContext:
    """Context for connecting to a party server (which must present a CA-signed certificate)."""
    return _context(ssl.Purpose.SERVER_AUTH, files)


def peer_der(ssl_object) -> bytes | None:
    """The DER certificate the other side presented (None without TLS)."""
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)


def check_party(der: bytes | None, expected: str, pinned: str | None) -> Identity:
    """Raise OperationalError unless ``der`` is party ``expected``'s certificate."""
    if der is None:
        raise OperationalError(f"party {expected} presented no certificate", party=expected)
    try:
        ident = identity_of_der(der)
    except (CertError, ValueError) as e:
        raise OperationalError(f"the certificate presented as party {expected} is not a "
                               f"party certificate: {e}", party=expected) from None
    if ident.kind != "party" or ident.name != expected:
        raise OperationalError(f"expected party {expected}, but the peer's certificate names "
                               f"{ident}", party=expected)
    if pinned and not same_certificate(der, pinned):
        raise OperationalError(f"party {expected}'s certificate is not the one configured for "
                               f"it ({pinned})", party=expected)
    return ident


def describe_tls_error(e: BaseException) -> str:
    """A short human reason for a failed handshake (``unknown ca``, ``certificate required``...)."""
    reason = (getattr(e, "reason", None) or "").replace("_", " ").lower()
    verify = getattr(e, "verify_message", None)
    if reason and verify:
        return f"{reason}: {verify}"
    return reason or verify or str(e)
