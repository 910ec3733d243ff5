"""Keys, certificate requests and a small certificate authority for the three party servers.

Every certificate names its holder in the subject's common name (CN) and says what kind of
identity it is in the organizational unit (OU):

* ``OU=mpcsql party``   — a party server (CN = party name, e.g. ``emc``);
* ``OU=mpcsql analyst`` — an analyst client (CN = ``user@party``, e.g. ``alice@ac``).

A party server accepts peer operations only from party certificates and analyst operations only
from analyst certificates whose CN ends in ``@<its own name>``.  The kind is also bound by the
extended key usage: party certificates carry serverAuth and clientAuth, analyst certificates
only clientAuth, so an analyst certificate can never serve as a party server.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dialect.errors import ConfigError, register_error

PARTY_OU = "mpcsql party"
ANALYST_OU = "mpcsql analyst"
ROLES = {PARTY_OU: "party", ANALYST_OU: "analyst"}

_PARTY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ANALYST_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}@[a-z][a-z0-9_]{0,31}$")


@register_error
class CertError(ConfigError, ValueError):
    """A key, request or certificate that cannot be used (names the file and the cause).

    A :class:`~dialect.errors.ConfigError`, so an ``engine.Error``; still a ``ValueError`` for
    callers that catch ``(CertError, ValueError)``.
    """


@dataclass(frozen=True)
class Identity:
    """Who a certificate names: ``name`` (CN) and ``kind`` (``party`` or ``analyst``)."""

    name: str
    kind: str

    @property
    def party(self) -> str:
        """The party this identity belongs to (its own name for a party server)."""
        return self.name.rpartition("@")[2]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def check_party_name(name: str) -> str:
    if not _PARTY_NAME.match(name):
        raise CertError(f"invalid party name {name!r} (lower-case letters, digits and _)")
    return name


def check_analyst_name(name: str) -> str:
    if not _ANALYST_NAME.match(name):
        raise CertError(f"invalid analyst name {name!r}; expected user@party, e.g. alice@ac")
    return name


# --- files ---------------------------------------------------------------------------------


def _write(path: str, data: bytes, private: bool = False) -> None:
    # a directory created for a private key is private too (0700)
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700 if private else 0o777,
                exist_ok=True)
    if private:  # created 0600 from the start: the key is never readable by others
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CertError(f"cannot read {what} {path}: {e.strerror}") from None


def new_key(path: str) -> ec.EllipticCurvePrivateKey:
    """Generate a P-256 private key and write it (PEM, mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    _write(path, key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), private=True)
    return key


def load_key(path: str):
    try:
        return serialization.load_pem_private_key(_read(path, "private key"), password=None)
    except ValueError as e:
        raise CertError(f"{path} is not a PEM private key: {e}") from None


def load_cert(path: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, "certificate"))
    except ValueError as e:
        raise CertError(f"{path} is not a PEM certificate: {e}") from None


def load_csr(path: str) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(_read(path, "certificate request"))
    except ValueError as e:
        raise CertError(f"{path} is not a PEM certificate request: {e}") from None


def _subject(name: str, kind_ou: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind_ou),
                      x509.NameAttribute(NameOID.COMMON_NAME, name)])


def identity_of(name: x509.Name) -> Identity:
    """The mpcsql identity a subject names; CertError if it names none."""
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = [a.value for a in name.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    kinds = {ROLES[o] for o in ous if o in ROLES}
    if len(cns) != 1 or len(kinds) != 1:
        raise CertError(f"certificate subject {name.rfc4514_string()!r} is not an mpcsql "
                        f"identity (needs one CN and OU={PARTY_OU!r} or {ANALYST_OU!r})")
    return Identity(str(cns[0].value), kinds.pop())


def identity_of_der(der: bytes) -> Identity:
    """Identity of a DER certificate (as ``SSLSocket.getpeercert(binary_form=True)`` gives)."""
    return identity_of(x509.load_der_x509_certificate(der).subject)


def same_certificate(der: bytes, pem_path: str) -> bool:
    """Whether the DER certificate is exactly the PEM certificate at ``pem_path`` (pinning)."""
    return load_cert(pem_path).public_bytes(serialization.Encoding.DER) == der


# --- requests and signing ----------------------------------------------------------------


def make_request(name: str, kind: str, key_path: str, csr_path: str,
                 hosts: tuple[str, ...] = ()) -> None:
    """Write a new private key and a certificate request for ``name`` (kind party/analyst)."""
    if kind == "party":
        check_party_name(name)
    else:
        check_analyst_name(name)
    key = new_key(key_path)
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        _subject(name, PARTY_OU if kind == "party" else ANALYST_OU))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans(hosts)),
                                        critical=False)
    _write(csr_path, builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def _sans(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    import ipaddress

    out: list[x509.GeneralName] = []
    for h in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def make_ca(out_dir: str, name: str = "mpcsql federation CA", days: int = 3650) -> str:
    """Create ``ca.key`` (0600) and ``ca.crt`` in ``out_dir``; returns the certificate path."""
    crt_path, key_path = os.path.join(out_dir, "ca.crt"), os.path.join(out_dir, "ca.key")
    if os.path.exists(key_path):
        raise CertError(f"{key_path} exists; refusing to overwrite a CA key")
    key = new_key(key_path)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write(crt_path, cert.public_bytes(serialization.Encoding.PEM))
    return crt_path


def sign(ca_dir: str, csr_path: str, out_path: str, days: int = 825,
         expect: str | None = None) -> Identity:
    """Sign a party or analyst request with the CA in ``ca_dir``; returns the identity issued.

    ``expect`` (optional) is the name the operator expects in the request; a mismatch refuses.
    """
    csr = load_csr(csr_path)
    if not csr.is_signature_valid:
        raise CertError(f"{csr_path}: the request's signature is invalid")
    ident = identity_of(csr.subject)
    if ident.kind == "party":
        check_party_name(ident.name)
    else:
        check_analyst_name(ident.name)
    if expect is not None and ident.name != expect:
        raise CertError(f"{csr_path} asks for {ident}, not {expect!r}; refusing to sign")
    ca_cert = load_cert(os.path.join(ca_dir, "ca.crt"))
    ca_key = load_key(os.path.join(ca_dir, "ca.key"))
    usage = ([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
             if ident.kind == "party" else [ExtendedKeyUsageOID.CLIENT_AUTH])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(csr.subject)
               .issuer_name(ca_cert.subject).public_key(csr.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, True, False, True, False, False,
                                            False, False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_cert.public_key()), critical=False))
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(san.value, critical=False)
    except x509.ExtensionNotFound:
        pass
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(out_path, cert.public_bytes(serialization.Encoding.PEM))
    return ident


def issue_analyst(ca_dir: str, name: str, out_dir: str, days: int = 825) -> tuple[str, str]:
    """Key and certificate for analyst ``name`` (``user@party``) in one step; returns paths."""
    check_analyst_name(name)
    base = os.path.join(out_dir, name)
    make_request(name, "analyst", base + ".key", base + ".csr")
    sign(ca_dir, base + ".csr", base + ".crt", days=days)
    return base + ".crt", base + ".key"
