"""The embedded federation authenticates its owner and its parties (issue 10, finding 3).

Another OS user on the same machine connects to every party port: plain TCP, TLS without a
certificate and TLS with a certificate from a CA of its own.  It gets no reply with data, and
cannot read the federation's private credentials or files.  The owner still works, and the
servers never open a path a client names.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import stat
import tempfile

import duckdb
import pytest
from conftest import OPEN_POLICY, make_tables

import engine
from engine.control import messages, wire
from engine.deploy import certs, tls

pytestmark = pytest.mark.e2e

NOBODY = 65534
SQL = "SELECT COUNT(*), SUM(age) FROM ac JOIN emc USING (id)"


@pytest.fixture(scope="module")
def fed():
    # a workdir other users may enter: the files and the credentials must be private themselves
    workdir = tempfile.mkdtemp(prefix="mpcsql-auth-")
    os.chmod(workdir, 0o755)
    con = engine.connect(workdir=workdir, policies=OPEN_POLICY)
    ac, emc = make_tables(40, 30, 20, seed=3)
    con.register("ac", ac, party="ac", key="id")
    con.register("emc", emc, party="emc", key="id")
    yield con, ac, emc
    con.close()
    shutil.rmtree(workdir, ignore_errors=True)


def _as_nobody(fn, *args) -> list[list[str]]:
    """Run ``fn(*args)`` in a forked child that has become user nobody; its JSON result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no exec (nobody cannot reach this interpreter), modules are loaded
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            assert os.getuid() == NOBODY and os.geteuid() == NOBODY
            with os.fdopen(w, "w") as f:
                json.dump(fn(*args), f)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return json.loads(data)


def _attacks(addresses, tls_dir, workdir, rogue_ctx) -> list[list[str]]:
    out: list[list[str]] = []

    def attempt(what, fn):
        try:
            out.append([what, "REPLY", repr(fn())])
        except Exception as e:  # noqa: BLE001 - what the attacker sees is the point
            out.append([what, type(e).__name__, str(e)])

    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.check_hostname, no_cert.verify_mode = False, ssl.CERT_NONE
    requests = {
        "query": {"op": "query", "sql": SQL},
        "register": {"op": "register", "table": "shadow", "path": "/etc/shadow",
                     "format": "csv"},
        "configure": {"op": "configure", "peers": {}},
        "shutdown": {"op": "shutdown"},
    }
    for party, (host, port) in addresses.items():
        for op, msg in requests.items():
            attempt(f"{party}: plain TCP {op}", lambda h=host, p=port, m=msg, n=party:
                    wire.call(h, p, m, party=n, timeout=10, connect_timeout=10))
        for label, ctx in (("TLS without a client certificate", no_cert),
                           ("TLS with its own CA's owner certificate", rogue_ctx)):
            for op in ("query", "shutdown"):
                attempt(f"{party}: {label}, {op}",
                        lambda h=host, p=port, m=requests[op], n=party, c=ctx:
                        wire.call(h, p, m, party=n, timeout=10, connect_timeout=10,
                                  ssl_context=c))
    attempt("list the private credentials directory", lambda: os.listdir(tls_dir))
    attempt("read ac's certificate key",
            lambda: open(os.path.join(tls_dir, "ac.key"), "rb").read(16))
    attempt("read the owner's key",
            lambda: open(os.path.join(tls_dir, "owner@ac.key"), "rb").read(16))
    attempt("read ac's DuckDB file",
            lambda: open(os.path.join(workdir, "ac.duckdb"), "rb").read(16))
    attempt("read ac's audit log",
            lambda: open(os.path.join(workdir, "ac.audit.jsonl"), "rb").read(16))
    return out


def _rogue_context(tmp_path) -> ssl.SSLContext:
    """What a local user can make: a CA of its own and an ``owner@ac`` certificate from it."""
    ca = str(tmp_path / "rogue-ca")
    certs.make_ca(ca)
    crt, key = certs.issue_analyst(ca, tls.owner_name("ac"), str(tmp_path / "rogue"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # trusts any server
    ctx.load_cert_chain(crt, key)
    return ctx


def test_another_os_user_gets_nothing_from_the_federation(fed, tmp_path):
    con, ac, emc = fed
    expected = con.execute(SQL).fetchall()
    fedn = con.federation
    assert stat.S_IMODE(os.stat(fedn.tls_dir).st_mode) == 0o700
    outcomes = _as_nobody(_attacks, fedn.addresses, fedn.tls_dir, con.workdir,
                          _rogue_context(tmp_path))
    print("\n".join(" | ".join(o) for o in outcomes))  # what the attacker sees (-s shows it)
    assert len(outcomes) == 3 * 8 + 5
    for what, kind, text in outcomes:
        assert kind != "REPLY", (what, text)
        if what.startswith(("list", "read")):
            assert kind == "PermissionError", (what, kind, text)
        else:
            assert kind == "OperationalError", (what, kind, text)
            assert str(expected[0][1]) not in text and "shadow" not in text
    plain = {t for w, _, t in outcomes if "plain TCP" in w}
    assert all("closed the connection without answering" in t for t in plain), plain
    # every server still serves its owner, with the peers it was configured with
    assert all(fedn.alive().values())
    assert con.execute(SQL).fetchall() == expected


def test_the_owner_may_not_make_a_server_open_a_path(fed):
    con, _, _ = fed
    host, port = con.federation.addresses["ac"]
    req = messages.Register(table="shadow", key="id", path="/etc/shadow", format="csv")
    with pytest.raises(engine.ProgrammingError, match="does not read files named by a client"):
        wire.call(host, port, req.to_wire(), party="ac", timeout=30,
                  ssl_context=con.federation.ssl_context_for("ac"))
    assert "shadow" not in {t["name"] for t in con.tables()}


def test_register_reads_files_with_the_callers_permissions(fed, tmp_path):
    con, ac, emc = fed
    db = duckdb.connect(str(tmp_path / "src.duckdb"))
    db.register("frame", emc)
    db.execute("CREATE TABLE emc_tab AS SELECT * FROM frame")
    db.close()
    ac.to_csv(tmp_path / "ac.csv", index=False)
    con.register("ac2", tmp_path / "ac.csv", party="ac", key="id")
    con.register("emc2", str(tmp_path / "src.duckdb"), party="emc", key="id", table="emc_tab")
    got = con.execute("SELECT COUNT(*), SUM(age) FROM ac2 JOIN emc2 USING (id)").fetchall()
    assert got == con.execute(SQL).fetchall()
    with pytest.raises(engine.ProgrammingError, match="file not found"):
        con.register("x", tmp_path / "missing.csv", party="ac", key="id")
    with pytest.raises(engine.DataError, match="cannot read table nope"):
        con.register("x", str(tmp_path / "src.duckdb"), party="emc", key="id", table="nope")


def test_stop_removes_the_credentials(tmp_path):
    con = engine.connect(workdir=str(tmp_path / "w"), policies=OPEN_POLICY)
    tls_dir = con.federation.tls_dir
    assert sorted(os.listdir(tls_dir)) == sorted(
        [f"{p}.{x}" for p in ("ac", "emc", "helper", "owner@ac", "owner@emc", "owner@helper")
         for x in ("crt", "key")] + ["ca.crt"])  # no CA key: nobody can issue more
    assert stat.S_IMODE(os.stat(tmp_path / "w").st_mode) == 0o700
    con.close()
    assert not os.path.exists(tls_dir)
    assert sorted(os.listdir(tmp_path / "w")) == sorted(
        f"{p}.{x}" for p in ("ac", "emc", "helper") for x in ("log", "duckdb"))
