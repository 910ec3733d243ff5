"""Certificates, TLS identity checks and party.toml loading (no party servers; fast)."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dialect.errors import InterfaceError, OperationalError
from engine import cli
from engine.client.remote import parse_dsn
from engine.deploy import certs, tls
from engine.deploy.config import ConfigError, load_party_toml


def _federation(tmp_path):
    """A CA and three initialised parties with signed, distributed certificates."""
    ca = tmp_path / "ca"
    certs.make_ca(str(ca))
    for p in ("ac", "emc", "helper"):
        assert cli.main(["init", "--party", p, "--out", str(tmp_path / p)]) == 0
        certs.sign(str(ca), str(tmp_path / p / f"{p}.csr"),
                   str(tmp_path / p / "certs" / f"{p}.crt"), expect=p)
    for p in ("ac", "emc", "helper"):
        d = tmp_path / p / "certs"
        (d / "ca.crt").write_bytes((ca / "ca.crt").read_bytes())
        for q in ("ac", "emc", "helper"):
            (d / f"{q}.crt").write_bytes((tmp_path / q / "certs" / f"{q}.crt").read_bytes())
    return ca


def test_ca_signs_parties_and_analysts_with_distinct_identities(tmp_path):
    ca = _federation(tmp_path)
    assert stat.S_IMODE(os.stat(ca / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "emc" / "emc.key").st_mode) == 0o600
    party = certs.load_cert(str(tmp_path / "emc" / "certs" / "emc.crt"))
    assert certs.identity_of(party.subject) == certs.Identity("emc", "party")
    crt, key = certs.issue_analyst(str(ca), "alice@ac", str(tmp_path / "alice"))
    analyst = certs.load_cert(crt)
    ident = certs.identity_of(analyst.subject)
    assert (ident.name, ident.kind, ident.party) == ("alice@ac", "analyst", "ac")
    eku = analyst.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # can never act as a server
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    with pytest.raises(certs.CertError, match="refusing to sign"):
        certs.sign(str(ca), str(tmp_path / "ac" / "ac.csr"), str(tmp_path / "x.crt"),
                   expect="emc")
    with pytest.raises(certs.CertError, match="exists"):
        certs.make_ca(str(ca))
    with pytest.raises(certs.CertError, match="user@party"):
        certs.issue_analyst(str(ca), "alice", str(tmp_path / "alice"))


def test_requests_without_an_mpcsql_identity_are_not_signed(tmp_path):
    certs.make_ca(str(tmp_path / "ca"))
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emc")]))
           .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "bad.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(certs.CertError, match="not an mpcsql identity"):
        certs.sign(str(tmp_path / "ca"), str(tmp_path / "bad.csr"), str(tmp_path / "bad.crt"))


def _handshake(server_files, client_files):
    """A real TLS handshake over loopback; returns (server-seen DER, client-seen DER)."""
    srv_ctx, cli_ctx = tls.server_context(server_files), tls.client_context(client_files)
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    seen: dict[str, object] = {}

    def serve():
        conn, _ = lsock.accept()
        try:
            with srv_ctx.wrap_socket(conn, server_side=True) as s:
                seen["server"] = s.getpeercert(binary_form=True)
                s.sendall(b"x")
        except (ssl.SSLError, OSError) as e:
            seen["server_error"] = e

    t = threading.Thread(target=serve)
    t.start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                cli_ctx.wrap_socket(raw) as s:
            seen["client"] = s.getpeercert(binary_form=True)
            if not s.recv(1):
                raise ConnectionError("closed by the server")
    except (ssl.SSLError, OSError) as e:
        seen["client_error"] = e
    finally:
        t.join(5)
        lsock.close()
    return seen


def test_mutual_tls_identities_and_pinning(tmp_path):
    ca = _federation(tmp_path)
    files = {p: tls.TLSFiles(str(tmp_path / p / "certs" / "ca.crt"),
                             str(tmp_path / p / "certs" / f"{p}.crt"),
                             str(tmp_path / p / f"{p}.key")) for p in ("ac", "emc")}
    for ctx in (tls.server_context(files["emc"]), tls.client_context(files["emc"])):
        assert len(ctx.get_ca_certs()) == 1  # the federation CA only, no public CAs
        assert ctx.verify_mode == ssl.CERT_REQUIRED
    seen = _handshake(files["emc"], files["ac"])
    assert "client_error" not in seen and "server_error" not in seen
    assert tls.check_party(seen["server"], "ac", str(tmp_path / "emc" / "certs" / "ac.crt")).name \
        == "ac"
    assert tls.check_party(seen["client"], "emc", None).name == "emc"
    with pytest.raises(OperationalError, match="expected party helper"):
        tls.check_party(seen["client"], "helper", None)
    with pytest.raises(OperationalError, match="not the one configured"):
        tls.check_party(seen["client"], "emc", str(tmp_path / "ac" / "certs" / "ac.crt"))
    # an analyst certificate is not a party certificate
    crt, key = certs.issue_analyst(str(ca), "alice@ac", str(tmp_path / "alice"))
    seen = _handshake(files["emc"], tls.TLSFiles(str(ca / "ca.crt"), crt, key))
    with pytest.raises(OperationalError, match="analyst alice@ac"):
        tls.check_party(seen["server"], "ac", None)
    # a client whose certificate another CA signed fails the handshake at the server
    certs.make_ca(str(tmp_path / "other"))
    crt, key = certs.issue_analyst(str(tmp_path / "other"), "mallory@ac", str(tmp_path / "m"))
    seen = _handshake(files["emc"], tls.TLSFiles(str(ca / "ca.crt"), crt, key))
    assert "server" not in seen and "server_error" in seen and "client_error" in seen
    assert "certificate verify failed" in str(seen["server_error"])


def test_init_writes_a_loadable_party_toml(tmp_path):
    _federation(tmp_path)
    cfg = load_party_toml(str(tmp_path / "emc" / "party.toml"))
    assert (cfg.name, cfg.role, cfg.port) == ("emc", "data", 7401)
    assert cfg.parties == [("ac", "data"), ("emc", "data"), ("helper", "helper")]
    assert cfg.peers == {"ac": ("127.0.0.1", 7400), "helper": ("127.0.0.1", 7402)}
    assert cfg.peer_certs["ac"] == str(tmp_path / "emc" / "certs" / "ac.crt")
    assert cfg.database == str(tmp_path / "emc" / "emc.duckdb")
    assert [(t.name, t.key) for t in cfg.tables] == [("emc", "id")]
    assert cfg.audit_log == str(tmp_path / "emc" / "audit.log")
    assert (cfg.connect_timeout, cfg.peer_timeout, cfg.query_timeout) == (10, 30, 600)
    helper = load_party_toml(str(tmp_path / "helper" / "party.toml"))
    assert helper.role == "helper" and helper.tables == [] and helper.database == ":memory:"
    assert cli.main(["init", "--party", "emc", "--out", str(tmp_path / "emc")]) == 2  # no clobber


@pytest.mark.parametrize("edit,message", [
    (("[party]\nname", "[partie]\nname"), "unknown section"),
    (('role = "data"', 'role = "helper"'), "contradicts federation.helper"),
    (('role = "data"', 'role = "boss"'), "party.role must be"),
    (('address = "127.0.0.1:7400"', 'address = "127.0.0.1"'), "peers.ac.address"),
    (('[peers.helper]', '[peers.hlp]'), "exactly one entry per other party"),
    (('cert = "certs/emc.crt"', 'cert = "certs/nope.crt"'), "tls.cert: file not found"),
    (("port = 7401", 'port = "7401"'), "listen.port has the wrong type"),
    (("query = 600", "query = -1"), "timeouts.query must be positive"),
    (("min_intersection = 10", "min_intersection = 10\nbogus = 1"), r"\[policy\]"),
    (("peer = 30", "peer = 30\nretry = 3"), r"unknown setting\(s\) in \[timeouts\]: retry"),
])
def test_config_errors_name_the_setting(tmp_path, edit, message):
    _federation(tmp_path)
    path = tmp_path / "emc" / "party.toml"
    text = path.read_text()
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError, match=message) as e:
        load_party_toml(str(path))
    assert str(path) in str(e.value)


def test_a_private_key_readable_by_others_is_refused(tmp_path):
    _federation(tmp_path)
    os.chmod(tmp_path / "emc" / "emc.key", 0o644)
    with pytest.raises(ConfigError, match="readable by other users; chmod 600"):
        load_party_toml(str(tmp_path / "emc" / "party.toml"))


def test_serve_refuses_bad_configs_with_the_cause(tmp_path):
    _federation(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    out = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config",
                          str(tmp_path / "nope.toml")], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 2 and "cannot read" in out.stderr
    # the database file does not exist yet: a clear error, not a new empty database
    out = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config",
                          str(tmp_path / "emc" / "party.toml")], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 2 and "database file not found" in out.stderr
    assert not (tmp_path / "emc" / "emc.duckdb").exists()


def test_dsn_parsing():
    assert parse_dsn("mpcsql://ac-host:7400") == ("ac-host", 7400, None)
    assert parse_dsn("mpcsql://10.0.0.2") == ("10.0.0.2", 7400, None)
    assert parse_dsn("mpcsql://[::1]:7401?party=emc") == ("::1", 7401, "emc")
    for bad in ("http://x:1", "mpcsql://", "mpcsql://h:1/db", "mpcsql://h:1?user=x",
                "mpcsql://h:99999"):
        with pytest.raises(InterfaceError):
            parse_dsn(bad)


def test_session_ports_come_from_the_configured_range(tmp_path):
    from engine.server.participant import free_port as _free_port

    _federation(tmp_path)
    path = tmp_path / "emc" / "party.toml"
    path.write_text(path.read_text().replace("port = 7401", "port = 7401\n"
                                             "session_ports = [45100, 45103]"))
    cfg = load_party_toml(str(path))
    assert cfg.session_ports == (45100, 45103)
    got = {_free_port("127.0.0.1", cfg.session_ports) for _ in range(40)}
    assert got <= {45100, 45101, 45102, 45103} and len(got) > 1
    path.write_text(path.read_text().replace("[45100, 45103]", "[45103, 45100]"))
    with pytest.raises(ConfigError, match="session_ports"):
        load_party_toml(str(path))
