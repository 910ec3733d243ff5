"""How a PostgreSQL client proves who it is: SCRAM-SHA-256, md5, client certificates.

Passwords are never stored: ``[pg.users.NAME] password`` holds a verifier in PostgreSQL's own
formats, ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (what
:func:`scram_verifier` and ``mpcsql serve-pg --hash-password`` write) or ``md5<hex>`` (md5 of
password + user name, as PostgreSQL's ``pg_authid`` keeps it).  Over TLS the endpoint also
offers ``SCRAM-SHA-256-PLUS``, which binds the exchange to the endpoint's certificate
(``tls-server-end-point``), so a man in the middle cannot relay it.  (The exchange is written
here on ``hashlib``/``hmac``: ``scramp``, the maintained SCRAM library, refuses the empty user
name that libpq sends in SCRAM messages.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from dialect.errors import ConfigError

_SCRAM = re.compile(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)")


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier for ``password`` (random salt), in PostgreSQL's format."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
    server = _hmac(salted, b"Server Key")
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
            f"{b64(stored).decode()}:{b64(server).decode()}")


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def md5_verifier(user: str, password: str) -> str:
    """PostgreSQL's md5 verifier: ``md5`` + md5(password + user)."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def method(verifier: str) -> str:
    return "scram-sha-256" if verifier.startswith("SCRAM-SHA-256$") else "md5"


def scram_auth_info(verifier: str) -> tuple[bytes, bytes, bytes, int]:
    """(salt, stored key, server key, iterations) for scramp's ``auth_fn``."""
    m = _SCRAM.fullmatch(verifier)
    if not m:
        raise ConfigError("not a SCRAM-SHA-256 verifier")
    d = base64.b64decode
    return d(m[2]), d(m[3]), d(m[4]), int(m[1])


def md5_response_ok(verifier: str, salt: bytes, response: str) -> bool:
    """Whether the client's md5 answer to ``salt`` matches the stored verifier."""
    expect = "md5" + hashlib.md5(verifier[3:].encode() + salt).hexdigest()
    return hmac.compare_digest(expect.encode(), response.encode())


class ScramError(Exception):
    """A SCRAM exchange that failed (malformed message, wrong proof, binding mismatch)."""


class ScramExchange:
    """The server side of one SCRAM-SHA-256(-PLUS) exchange (RFC 5802, 7677, 5929) for a
    stored verifier; only the verifier's StoredKey and ServerKey are used.

    The user name inside the SCRAM messages is ignored, as PostgreSQL does (libpq sends an
    empty one): the user is the one named in the startup message, whose verifier this is.
    ``cert_der`` is the endpoint's certificate when the exchange runs over TLS: with
    ``SCRAM-SHA-256-PLUS`` the client must prove it saw that very certificate
    (``tls-server-end-point``); a client that could bind but was not offered it (``y``) is
    refused, as that means someone removed the offer.
    """

    def __init__(self, verifier: str, mechanism: str, cert_der: bytes | None):
        self.salt, self.stored, self.server_key, self.iterations = scram_auth_info(verifier)
        self.mechanism = mechanism
        self.cert_der = cert_der

    def first(self, client_first: bytes) -> bytes:
        text = client_first.decode("utf-8", errors="strict")
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise ScramError("malformed client-first message")
        flag, authzid, bare = parts
        plus = self.mechanism.endswith("-PLUS")
        if plus:
            if flag != "p=tls-server-end-point":
                raise ScramError("SCRAM-SHA-256-PLUS needs channel binding "
                                 "tls-server-end-point")
        elif flag == "y" and self.cert_der is not None:
            raise ScramError("the client supports channel binding, which this TLS "
                             "connection offered: possible downgrade, refused")
        elif flag not in ("n", "y"):
            raise ScramError("channel binding requested with a mechanism without it")
        if authzid and not authzid.startswith("a="):
            raise ScramError("malformed authorization identity")
        attrs = dict(a.split("=", 1) for a in bare.split(",") if "=" in a)
        if "r" not in attrs or not attrs["r"] or bare.startswith("m="):
            raise ScramError("malformed client-first message (no nonce)")
        self.gs2 = flag + "," + authzid + ","
        self.bare = bare
        self.nonce = attrs["r"] + base64.b64encode(secrets.token_bytes(18)).decode()
        self.server_first = (f"r={self.nonce},s={base64.b64encode(self.salt).decode()},"
                             f"i={self.iterations}")
        return self.server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        """The server-final message; raises ScramError on a wrong proof or binding."""
        text = client_final.decode("utf-8", errors="strict")
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise ScramError("malformed client-final message (no proof)")
        attrs = dict(a.split("=", 1) for a in without_proof.split(",") if "=" in a)
        binding = self.gs2.encode()
        if self.gs2.startswith("p="):
            binding += _end_point_hash(self.cert_der)
        if attrs.get("c") != base64.b64encode(binding).decode():
            raise ScramError("channel binding does not match this connection")
        if attrs.get("r") != self.nonce:
            raise ScramError("nonce mismatch")
        auth_message = f"{self.bare},{self.server_first},{without_proof}".encode()
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError:
            raise ScramError("malformed proof") from None
        signature = _hmac(self.stored, auth_message)
        if len(proof) != len(signature):
            raise ScramError("malformed proof")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.stored):
            raise ScramError("wrong password")
        return b"v=" + base64.b64encode(_hmac(self.server_key, auth_message))


def _end_point_hash(der: bytes | None) -> bytes:
    """RFC 5929 tls-server-end-point: the certificate hashed with its signature's hash
    (SHA-256 when that is MD5 or SHA-1)."""
    if der is None:
        raise ScramError("channel binding needs TLS")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    algo = x509.load_der_x509_certificate(der).signature_hash_algorithm
    if algo is None or isinstance(algo, (hashes.MD5, hashes.SHA1)):
        algo = hashes.SHA256()
    h = hashes.Hash(algo)
    h.update(der)
    return h.finalize()


def mechanisms(tls: bool) -> list[str]:
    return ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"] if tls else ["SCRAM-SHA-256"]
