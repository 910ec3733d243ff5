"""Deployment defaults and who may ask what (issue 10): peer pinning on unless opted out,
no DuckDB file or audit log other users can write, private directories from ``mpcsql init``,
no plain TCP, and only the embedded federation's owner may register, configure or stop it.
No party servers: fast."""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import pytest

from dialect.errors import AuthorizationError
from engine import cli
from engine.control import messages
from engine.deploy import certs, tls
from engine.deploy.certs import Identity
from engine.deploy.config import ConfigError, PartyConfig, load_party_toml
from engine.server import dispatch

PARTIES = ("ac", "emc", "helper")


def _federation(tmp_path):
    ca = tmp_path / "ca"
    certs.make_ca(str(ca))
    for p in PARTIES:
        assert cli.main(["init", "--party", p, "--out", str(tmp_path / p)]) == 0
        certs.sign(str(ca), str(tmp_path / p / f"{p}.csr"),
                   str(tmp_path / p / "certs" / f"{p}.crt"), expect=p)
    for p in PARTIES:
        d = tmp_path / p / "certs"
        (d / "ca.crt").write_bytes((ca / "ca.crt").read_bytes())
        for q in PARTIES:
            (d / f"{q}.crt").write_bytes((tmp_path / q / "certs" / f"{q}.crt").read_bytes())
    return tmp_path / "emc" / "party.toml"


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- mpcsql init ----------------------------------------------------------------------------


def test_init_creates_private_directories_and_writes_the_pins(tmp_path):
    path = _federation(tmp_path)
    assert _mode(tmp_path / "emc") == 0o700 and _mode(tmp_path / "emc" / "certs") == 0o700
    cfg = load_party_toml(str(path))
    assert cfg.peer_certs == {p: str(tmp_path / "emc" / "certs" / f"{p}.crt")
                              for p in ("ac", "helper")}


def test_init_refuses_a_directory_others_can_write(tmp_path, capsys):
    out = tmp_path / "shared"
    out.mkdir()
    os.chmod(out, 0o777)
    assert cli.main(["init", "--party", "emc", "--out", str(out)]) == 2
    assert "can be written by other users (mode 777)" in capsys.readouterr().err
    assert not (out / "emc.key").exists()


# --- peer pinning ---------------------------------------------------------------------------


def test_peer_pinning_is_on_unless_explicitly_turned_off(tmp_path):
    path = _federation(tmp_path)
    text = path.read_text()
    unpinned = text.replace('cert = "certs/ac.crt"\n', "", 1)
    assert unpinned != text and "[peers.ac]" in unpinned
    path.write_text(unpinned)
    with pytest.raises(ConfigError, match=r"peers\.ac\.cert is missing.*pin_peers = false") \
            as e:
        load_party_toml(str(path))
    assert str(path) in str(e.value)
    path.write_text(unpinned.replace("[tls]\n", "[tls]\npin_peers = false\n", 1))
    cfg = load_party_toml(str(path))
    assert "ac" not in cfg.peer_certs and "helper" in cfg.peer_certs  # an explicit cert counts
    path.write_text(unpinned.replace("[tls]\n", '[tls]\npin_peers = "no"\n', 1))
    with pytest.raises(ConfigError, match="tls.pin_peers has the wrong type"):
        load_party_toml(str(path))


# --- files other users could change ---------------------------------------------------------


def test_a_database_other_users_can_write_is_refused(tmp_path):
    path = _federation(tmp_path)
    db = tmp_path / "emc" / "emc.duckdb"
    db.write_bytes(b"")
    for mode in (0o666, 0o620):
        os.chmod(db, mode)
        with pytest.raises(ConfigError, match="database.path: .*emc.duckdb can be written by "
                                              "other users") as e:
            load_party_toml(str(path))
        assert str(db) in str(e.value)
    os.chmod(db, 0o644)
    assert load_party_toml(str(path)).database == str(db)
    os.chown(db, 65534, 65534)  # owned by someone else, who could make it writable
    with pytest.raises(ConfigError, match="belongs to another user"):
        load_party_toml(str(path))


def test_an_audit_log_other_users_can_write_is_refused(tmp_path):
    path = _federation(tmp_path)
    (tmp_path / "emc" / "emc.duckdb").write_bytes(b"")
    log = tmp_path / "emc" / "audit.log"
    log.write_text("")
    os.chmod(log, 0o622)
    with pytest.raises(ConfigError, match=r"audit.path: .*audit.log can be written by other "
                                          r"users \(mode 622\); chmod go-w it"):
        load_party_toml(str(path))
    os.chmod(log, 0o600)
    load_party_toml(str(path))
    log.unlink()  # not created yet: then its directory must not be writable by others
    os.chmod(tmp_path / "emc", 0o773)
    with pytest.raises(ConfigError, match="audit.path: the directory of .*audit.log"):
        load_party_toml(str(path))


# --- who may ask what -----------------------------------------------------------------------


def _server(name: str = "ac", *, embedded: bool, tls_on: bool = True):
    cfg = PartyConfig(name=name, role="data", parties=[(p, "helper" if p == "helper" else
                                                        "data") for p in PARTIES],
                      database=":memory:", tables=None if embedded else [],
                      peers={p: ("127.0.0.1", 1) for p in PARTIES if p != name})
    return SimpleNamespace(cfg=cfg, server_ssl=object() if tls_on else None)


OWNER = Identity(tls.owner_name("ac"), "analyst")
LOCAL = [messages.Register(table="t"), messages.Drop(table="t"),
         messages.Configure(peers={}), messages.Shutdown()]


def test_plain_tcp_is_refused():
    for embedded in (True, False):
        server = _server(embedded=embedded, tls_on=False)
        with pytest.raises(AuthorizationError, match="accepts no unauthenticated connection"):
            dispatch.identify(server, SimpleNamespace(get_extra_info=lambda _: None))
        with pytest.raises(AuthorizationError, match="only mutually authenticated TLS"):
            dispatch.authorize(server, messages.Status(), None)


def test_only_the_embedded_owner_may_register_configure_or_stop():
    fed = _server(embedded=True)
    for req in [*LOCAL, messages.Query(sql="SELECT 1"), messages.Status(),
                messages.CatalogRequest()]:
        caller = dispatch.authorize(fed, req.__class__(**{**req.__dict__, "user": "bob"}),
                                    OWNER)
        assert caller.analyst == "local:bob"
    for ident in (Identity("alice@ac", "analyst"), Identity(tls.owner_name("emc"), "analyst")):
        for req in LOCAL:
            with pytest.raises(AuthorizationError):
                dispatch.authorize(fed, req, ident)
    for req in LOCAL:  # a peer party may not either
        with pytest.raises(AuthorizationError, match="party emc may not ask ac"):
            dispatch.authorize(fed, req, Identity("emc", "party"))
    # a peer forwards the owner's requests as local:<user>; only in an embedded federation
    prepare = messages.CatalogRequest(analyst="local:bob", coordinator="emc")
    assert dispatch.authorize(fed, prepare, Identity("emc", "party")).analyst == "local:bob"
    with pytest.raises(AuthorizationError, match="not one of its analysts"):
        dispatch.authorize(_server(embedded=False), prepare, Identity("emc", "party"))


def test_a_deployment_grants_no_local_operation_even_to_an_owner_name():
    dep = _server(embedded=False)
    for req in LOCAL:
        with pytest.raises(AuthorizationError, match="may not ask for"):
            dispatch.authorize(dep, req, OWNER)
    assert dispatch.authorize(dep, messages.Status(), OWNER).analyst == OWNER.name


def test_a_new_ca_directory_is_private(tmp_path):
    from engine.deploy import certs

    out = tmp_path / "new" / "ca"
    certs.make_ca(str(out))
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(out / "ca.key").st_mode) == 0o600
