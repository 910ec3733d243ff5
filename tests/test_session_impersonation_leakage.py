"""A certificate holder impersonating a party on a query's MPyC session channel (mutual TLS).

Three ``mpcsql serve`` processes (tests/deployment.py) with fixed session ports for emc and the
helper.  The party ac is honest but slow: its session process waits a moment before it connects
(this module run as ``python -m tests.test_session_impersonation_leakage serve ...``, the
ordinary command line with that delay), so strangers reach the other parties' session ports
first.  During the query:

* emc's own party certificate connects to the helper's session port and announces itself as
  party number 0 (ac), with 16 bytes of PRSS key as MPyC's first message carries;
* the analyst bob@emc (a CA-signed analyst certificate) does the same at emc's session port.

Each session must check that the certificate is the announced party's: both strangers are
dropped without receiving a byte, the session goes on, ac connects and the query's result is
DuckDB's.  Without the check the strangers would take ac's place: they would receive what the
parties send to ac, and ac would find the session ports closed.
"""

from __future__ import annotations

import math
import os
import socket
import ssl
import sys
import threading
import time

import duckdb
import pytest

from engine.server import participant

pytestmark = [pytest.mark.e2e, pytest.mark.leakage]

SLOW_ENV = "MPCSQL_TEST_SESSION_DELAY"
DELAY = 2.5  # seconds ac's session process waits before it connects
SQL = ("SET join_protocol = 'masked'; "
       "SELECT COUNT(*), SUM(ac.charges), AVG(emc.bmi) FROM ac JOIN emc USING (id)")


def _slow_sessions(delay: float) -> None:
    """The session process (forked per query) sleeps ``delay`` s before it starts MPyC."""
    orig = participant.run_job

    def run_job(job, *args, **kwargs):
        time.sleep(delay)
        return orig(job, *args, **kwargs)

    participant.run_job = run_job


class Stranger(threading.Thread):
    """Connects to ``port`` as soon as it listens, completes TLS with its own (CA-signed)
    certificate, announces party number ``claim`` and then records what it receives."""

    def __init__(self, port: int, cert: str, key: str, ca: str, claim: int, deadline: float):
        super().__init__(daemon=True)
        self.port, self.claim, self.deadline = port, claim, deadline
        self.ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        self.ctx.check_hostname = False
        self.ctx.load_cert_chain(cert, key)
        self.announced = False  # TLS done and the claim sent
        self.received = b""
        self.closed_by_peer = False
        self.error = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                try:
                    raw = socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
                except OSError:
                    time.sleep(0.003)  # not listening yet
                    continue
                try:
                    sock = self.ctx.wrap_socket(raw, server_hostname="mpyc")
                except (OSError, ssl.SSLError) as e:
                    raw.close()
                    self.error = f"handshake: {e}"
                    time.sleep(0.003)
                    continue
                with sock:
                    sock.sendall(self.claim.to_bytes(2, "little") + os.urandom(16))
                    self.announced = True
                    sock.settimeout(0.2)
                    while not self.stop.is_set() and time.monotonic() < self.deadline:
                        try:
                            data = sock.recv(65536)
                        except TimeoutError:
                            continue
                        except (OSError, ssl.SSLError):
                            self.closed_by_peer = True
                            return
                        if not data:
                            self.closed_by_peer = True
                            return
                        self.received += data
                return
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = repr(e)


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    from tests.conftest import make_tables
    from tests.deployment import Deployment, free_port

    ac, emc = make_tables(30, 30, 15, seed=12)
    ports = {"emc": free_port(), "helper": free_port()}
    d = Deployment(str(tmp_path_factory.mktemp("impersonation")), tables={
        "ac": {"party": "ac", "key": "id", "frame": ac},
        "emc": {"party": "emc", "key": "id", "frame": emc},
    }, policies={p: {"min_intersection": 0} for p in ("ac", "emc", "helper")},
        timeouts={"connect": 8, "peer": 5, "query": 30},
        session_ports={p: (port, port) for p, port in ports.items()})
    d.frames, d.ports = {"ac": ac, "emc": emc}, ports
    d.alice, d.bob = d.analyst("alice@ac"), d.analyst("bob@emc")
    d.start("ac", module="tests.test_session_impersonation_leakage", env={SLOW_ENV: str(DELAY)})
    d.start("emc")
    d.start("helper")
    yield d
    d.stop_all()


def _expected(frames) -> tuple:
    con = duckdb.connect()
    for name, frame in frames.items():
        con.register(name, frame)
    return con.execute(SQL.split("; ", 1)[1]).fetchall()[0]


def test_a_stranger_claiming_to_be_a_party_is_dropped_and_the_query_goes_on(dep):
    import engine

    ca = os.path.join(dep.ca, "ca.crt")
    deadline = time.monotonic() + 25
    strangers = {
        "emc's party certificate at the helper":
            Stranger(dep.ports["helper"], os.path.join(dep.dir("emc"), "certs", "emc.crt"),
                     os.path.join(dep.dir("emc"), "emc.key"), ca, 0, deadline),
        "analyst bob@emc at emc":
            Stranger(dep.ports["emc"], dep.bob["cert"], dep.bob["key"], ca, 0, deadline),
    }
    for s in strangers.values():
        s.start()
    outcome: BaseException | None = None
    rows = stats = None
    try:
        with engine.connect(dep.dsn("ac") + "?party=ac", tls=dep.alice) as con:
            cur = con.execute(SQL)
            rows, stats = cur.fetchall(), cur.stats
    except engine.Error as e:
        outcome = e
    finally:
        time.sleep(0.5)  # what a party sends right after the session started has arrived
        for s in strangers.values():
            s.stop.set()
        for s in strangers.values():
            s.join(timeout=5)
    for who, s in strangers.items():
        assert s.announced, f"{who} never reached the session port ({s.error})"
        assert s.received == b"", (
            f"{who}, announcing itself as party ac, received {len(s.received)} bytes of "
            f"the session (query outcome: {outcome!r})")
        assert s.closed_by_peer, f"{who} was not disconnected"
    assert outcome is None, f"the query failed with a stranger at the session ports: {outcome!r}"
    (n, total, avg), = rows
    en, etotal, eavg = _expected(dep.frames)
    assert n == en == 15 and math.isclose(total, etotal, rel_tol=1e-9) \
        and math.isclose(avg, eavg, rel_tol=1e-9)  # fixed point: 2^(b-33) per value
    for party in ("ac", "emc", "helper"):  # the real peers, and only they, hold the channels
        assert stats[party]["tls_peers"] == sorted({"ac", "emc", "helper"} - {party})


if __name__ == "__main__":
    _slow_sessions(float(os.environ.get(SLOW_ENV, "0")))
    from engine.cli import main

    sys.exit(main())
