"""Bounded inputs: a party reads little before it authorises, and never waits forever.

Real ``mpcsql serve`` processes over mutual TLS (tests/deployment.py).
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time

import pytest

import engine
from engine.deploy.tls import TLSFiles, client_context
from tests.conftest import make_tables, recv_exactly
from tests.deployment import Deployment

pytestmark = pytest.mark.e2e

SQL = "SET join_protocol = 'masked'; SELECT COUNT(*), SUM(ac.charges) FROM ac JOIN emc USING (id)"


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    ac, emc = make_tables(30, 30, 20, seed=3)
    d = Deployment(str(tmp_path_factory.mktemp("bounded")),
                   tables={"ac": {"party": "ac", "key": "id", "frame": ac},
                           "emc": {"party": "emc", "key": "id", "frame": emc}},
                   policies={p: {"min_intersection": 0} for p in ("ac", "emc", "helper")},
                   timeouts={"connect": 5, "peer": 5, "query": 60, "idle": 6})
    d.alice = d.analyst("alice@ac")
    d.start_all()
    yield d
    d.stop_all()


def _tls_socket(dep, files) -> ssl.SSLSocket:
    host, port = dep.hosts["ac"]
    ctx = client_context(TLSFiles(files["ca"], files["cert"], files["key"]))
    return ctx.wrap_socket(socket.create_connection((host, port), timeout=10),
                           server_hostname="ac")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _reply(sock) -> dict:
    n = struct.unpack(">I", recv_exactly(sock, 4))[0]
    return json.loads(recv_exactly(sock, n))


def _still_serving(dep) -> None:
    with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
        assert con.execute(SQL).fetchall()[0][0] == 20


def test_an_oversized_header_is_refused_before_it_is_read(dep):
    before = _rss_mb(dep.procs["ac"].pid)
    with _tls_socket(dep, dep.alice) as s:
        s.sendall(struct.pack(">I", 512 << 20) + b"{" * 65536)  # announces 512 MiB
        reply = _reply(s)
    assert not reply["ok"] and "over the limit" in reply["error"]["message"]
    assert _rss_mb(dep.procs["ac"].pid) < before + 50
    _still_serving(dep)


def test_a_refused_client_still_sending_gets_the_refusal_not_a_reset(dep):
    """The server drops (bounded) what follows a refused header before it closes: closing with
    unread input would reset the connection, and the client lose the reply or its send."""
    for _ in range(3):
        with _tls_socket(dep, dep.alice) as s:
            s.sendall(struct.pack(">I", 512 << 20))
            time.sleep(0.3)  # the refusal is sent by now; the client is still sending
            s.sendall(b"{" * (256 << 10))
            reply = _reply(s)
        assert not reply["ok"] and "over the limit" in reply["error"]["message"]
    _still_serving(dep)


def test_data_for_an_operation_that_takes_none_is_refused_unread(dep):
    head = json.dumps({"op": "status", "blob_len": 1 << 30}).encode()
    with _tls_socket(dep, dep.alice) as s:
        s.sendall(struct.pack(">I", len(head)) + head)
        reply = _reply(s)
        assert not reply["ok"] and "takes no data" in reply["error"]["message"]
        assert s.recv(1) == b""  # and the connection is closed
    _still_serving(dep)


def test_a_silent_connection_is_closed_after_the_idle_time_out(dep):
    with _tls_socket(dep, dep.alice) as s:
        s.settimeout(30)
        t0 = time.monotonic()
        assert s.recv(1) == b""
        assert 5 < time.monotonic() - t0 < 20


def test_large_sql_does_not_stall_other_clients(dep):
    """Planning runs off the event loop: status answers while a big query is planned."""
    big = "SELECT " + ",".join("SUM(charges)" for _ in range(1000)) + " FROM ac JOIN emc USING (id)"
    assert len(big) < 100_000  # about 3 s of planning at each party (binding, lowering, explain)
    done = threading.Event()
    outcome: dict[str, object] = {}

    def plan_big():
        t0 = time.monotonic()
        try:
            with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
                outcome["text"] = con.explain(big)
        except engine.Error as e:
            outcome["error"] = e
        outcome["seconds"] = time.monotonic() - t0
        done.set()

    t = threading.Thread(target=plan_big)
    t.start()
    time.sleep(0.3)
    worst = 0.0
    with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
        while not done.is_set():
            t0 = time.monotonic()
            con.queries()
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.05)
    t.join()
    assert "text" in outcome and outcome["seconds"] > 1.0, outcome.get("error")
    assert worst < 1.0, worst  # planning on the event loop would block it for seconds
