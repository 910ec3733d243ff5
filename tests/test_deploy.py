"""Three organisations: ``mpcsql serve`` processes with party.toml, mutual TLS everywhere,
2048-bit Paillier, analysts connecting with ``engine.connect("mpcsql://...", tls=...)``."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import duckdb
import numpy as np
import pandas as pd
import pytest

import engine
from dialect.errors import AuthorizationError
from engine.server.pools import NICE
from tests.conftest import alive, descendants, make_tables, niceness
from tests.deployment import PARTIES, ROOT, Deployment

pytestmark = pytest.mark.e2e

SQL = "SELECT COUNT(*), SUM(ac.charges), AVG(emc.bmi) FROM ac JOIN emc USING (id)"
MASKED = "SET join_protocol = 'masked'; "


def _tables(seed: int = 5):
    ac, emc = make_tables(40, 40, 25, seed=seed)
    # emc_small shares only 15 people with ac: below the helper's minimum of 20
    emc_small = pd.DataFrame({"id": np.r_[ac["id"].to_numpy()[:15], np.arange(1, 11)],
                              "bmi": np.linspace(20, 35, 25)})
    return ac, emc, emc_small


#: Big enough that a Paillier run lasts seconds (a peer is stopped in the middle of it).
BIG_SQL = ("SELECT COUNT(*), SUM(ac_big.charges), AVG(emc_big.bmi) "
           "FROM ac_big JOIN emc_big USING (id)")


POLICIES = {
    "ac": {"min_intersection": 10,
           "allow": {"*": ["COUNT", "SUM", "AVG", "LASSO", "RIDGE", "LINREG"],
                     "ac.delta": ["COUNT", "AVG"]}},
    "emc": {"min_intersection": 10,
            "allow": {"*": ["COUNT", "SUM", "AVG", "LASSO", "RIDGE", "LINREG"],
                      "emc.children": ["COUNT", "AVG"]}},
    "helper": {"min_intersection": 20},
}


def plain(sql: str, **frames) -> list[tuple]:
    con = duckdb.connect()
    for name, frame in frames.items():
        con.register(name, frame)
    return con.execute(sql).fetchall()


POOL = 50  # Paillier randomisers per key precomputed between queries


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    ac, emc, emc_small = _tables()
    ac_big, emc_big = make_tables(300, 300, 250, seed=6)
    d = Deployment(str(tmp_path_factory.mktemp("deploy")), tables={
        "ac": {"party": "ac", "key": "id", "frame": ac},
        "emc": {"party": "emc", "key": "id", "frame": emc},
        "emc_small": {"party": "emc", "key": "id", "frame": emc_small},
        "ac_big": {"party": "ac", "key": "id", "frame": ac_big},
        "emc_big": {"party": "emc", "key": "id", "frame": emc_big},
    }, policies=POLICIES, timeouts={"connect": 5, "peer": 5, "query": 30},
        crypto={"paillier_pool": POOL},
        session_ports={"emc": (41000 + os.getpid() % 500 * 20, 41019 + os.getpid() % 500 * 20)})
    d.frames = {"ac": ac, "emc": emc}
    d.alice = d.analyst("alice@ac")
    d.bob = d.analyst("bob@emc")
    d.start_all()
    yield d
    d.stop_all()


def _check(rows, frames):
    (n, s, a), = rows
    (pn, ps, pa), = plain(SQL, **frames)
    assert n == pn == 25
    # fixed point: each value rounded to 2^(b-33) of its column's bound 2^b (docs/sql.md)
    assert math.isclose(s, ps, rel_tol=1e-9) and math.isclose(a, pa, rel_tol=1e-9)


def _session_children(dep, party):
    """A party's live session processes: its descendants except the Paillier pool's workers,
    which run at nice 19 between queries by design (they refill after a failed query)."""
    return [p for p in descendants(dep.procs[party].pid)
            if alive(p) and niceness(p) not in (None, NICE)]


def _wait_for_sessions(dep, parties, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not all(_session_children(dep, p) for p in parties):
        assert time.monotonic() < deadline, "no session process started"
        time.sleep(0.05)


def test_query_over_mutual_tls_matches_duckdb(dep):
    with engine.connect(dep.dsn("ac") + "?party=ac", tls=dep.alice) as con:
        assert con.remote and con.party == "ac"
        tables = {t["name"]: t for t in con.tables()}
        assert set(tables) == {"ac", "emc", "emc_small", "ac_big", "emc_big"}
        cur = con.execute(SQL)
        _check(cur.fetchall(), dep.frames)
        for party in PARTIES:  # every MPyC channel ran over TLS with the peer's certificate
            assert cur.stats[party]["tls_peers"] == sorted(set(PARTIES) - {party})
    # the same from the command line of emc's analyst, who talks to emc's server
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "query", "--server", dep.dsn("emc"),
         "--tls-ca", dep.bob["ca"], "--tls-cert", dep.bob["cert"], "--tls-key", dep.bob["key"],
         "--format", "json", SQL], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)[0]
    assert got["count_star()"] == 25
    # each party's audit log names the authenticated analysts
    with open(os.path.join(dep.dir("helper"), "audit.log")) as f:
        analysts = {json.loads(line)["analyst"] for line in f}
    assert {"alice@ac", "bob@emc"} <= analysts


def test_lasso_over_tls_matches_scikit_learn(dep):
    from sklearn.linear_model import Lasso

    sql = "SELECT LASSO(charges, age, bmi, alpha => 0.5) FROM ac JOIN emc USING (id)"
    with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
        model = con.execute(sql).fetchall()
    data = np.array(plain("SELECT charges, age, bmi FROM ac JOIN emc USING (id)",
                          **dep.frames), dtype=float)
    ref = Lasso(alpha=0.5, tol=1e-12, max_iter=100_000).fit(data[:, 1:], data[:, 0])
    assert [t for t, _ in model] == ["intercept", "age", "bmi"]
    expected = [ref.intercept_, *ref.coef_]
    assert max(abs(c - r) for (_, c), r in zip(model, expected, strict=True)) < 1e-3


def test_unknown_or_wrong_clients_are_refused(dep, tmp_path):
    from engine.deploy.certs import make_ca

    make_ca(str(tmp_path / "other"))
    stranger = dep.analyst("alice@ac", ca_dir=str(tmp_path / "other"))  # right name, wrong CA
    with pytest.raises(engine.OperationalError, match="refused our client certificate") as e:
        engine.connect(dep.dsn("ac") + "?party=ac", tls=stranger)
    assert e.value.party == "ac"
    with pytest.raises(engine.OperationalError, match="may require mutual TLS"):
        engine.connect(dep.dsn("ac"))  # no client certificate at all
    # emc's analyst is known to the federation but is not ac's analyst
    with pytest.raises(AuthorizationError, match="bob@emc belongs to party emc"):
        engine.connect(dep.dsn("ac"), tls=dep.bob)
    # a party certificate may not be used as an analyst's
    party_tls = {"ca": dep.bob["ca"], "cert": os.path.join(dep.dir("emc"), "certs", "emc.crt"),
                 "key": os.path.join(dep.dir("emc"), "emc.key")}
    with engine.connect(dep.dsn("ac"), tls=party_tls) as con:
        with pytest.raises(AuthorizationError, match="party emc may not ask ac for 'query'"):
            con.execute(SQL)
    # the server must be the party the analyst expects
    with pytest.raises(engine.OperationalError, match="presented the certificate of party emc"):
        engine.connect(dep.dsn("emc") + "?party=ac", tls=dep.alice)
    with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
        with pytest.raises(engine.NotSupportedError, match="party.toml"):
            con.register("x", pd.DataFrame({"id": [1]}), party="ac", key="id")
        _check(con.execute(MASKED + SQL).fetchall(), dep.frames)  # still serving


@pytest.mark.parametrize("sql,party,match", [
    ("SELECT SUM(ac.delta) FROM ac JOIN emc USING (id)", "ac", "SUM is not allowed on ac.delta"),
    ("SELECT SUM(emc.children) FROM ac JOIN emc USING (id)", "emc", "SUM is not allowed"),
    (MASKED + "SELECT AVG(emc_small.bmi) FROM ac JOIN emc_small USING (id)", "helper",
     "smaller than"),
], ids=["ac", "emc", "helper"])
def test_policy_refusals_name_the_refusing_party(dep, sql, party, match):
    with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
        with pytest.raises(engine.PolicyError, match=match) as e:
            con.execute(sql)
    assert e.value.party == party


def test_concurrent_clients_of_two_parties(dep):
    results: dict[str, object] = {}

    def run(who, tls, party):
        try:
            with engine.connect(dep.dsn(party), tls=tls) as con:
                results[who] = con.execute(MASKED + SQL).fetchall()
        except Exception as e:  # noqa: BLE001 - reported below
            results[who] = e

    threads = [threading.Thread(target=run, args=(f"{w}{i}", tls, party))
               for i in range(2) for w, tls, party in (("alice", dep.alice, "ac"),
                                                      ("bob", dep.bob, "emc"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 4
    for who, rows in results.items():
        assert not isinstance(rows, Exception), (who, rows)
        _check(rows, dep.frames)


def test_peer_killed_mid_query_then_restarted_rejoins(dep):
    outcome: dict[str, object] = {}

    def run():
        try:
            with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
                outcome["rows"] = con.execute(BIG_SQL).fetchall()
        except Exception as e:  # noqa: BLE001
            outcome["error"] = e

    t = threading.Thread(target=run)
    t.start()
    _wait_for_sessions(dep, ["emc"])
    killed = time.monotonic()
    dep.kill("emc")
    try:
        t.join(timeout=120)
        err = outcome.get("error")
        assert isinstance(err, engine.OperationalError) and "rows" not in outcome, outcome
        assert err.party == "emc" and "emc" in str(err), repr(err)
        assert time.monotonic() - killed < 30  # within the configured time-outs
        for party in ("ac", "helper"):  # the others keep serving, no session left behind
            assert dep.procs[party].poll() is None
            deadline = time.monotonic() + 10
            while _session_children(dep, party) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _session_children(dep, party)
        with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:  # down: refused at once
            t0 = time.monotonic()
            with pytest.raises(engine.OperationalError, match="party emc at .* is unreachable"):
                con.execute(SQL)
            assert time.monotonic() - t0 < 10
    finally:  # the module's later tests need emc whatever failed above
        dep.start("emc")  # restarted: rejoins with no other action
    with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
        _check(con.execute(SQL).fetchall(), dep.frames)


def test_paillier_pools_fill_over_mutual_tls_and_follow_a_restarted_party(dep):
    """The helper fetched the data parties' long-term keys over mutual TLS (after emc's restart
    above: emc's new key) and filled a pool for each."""
    carol = dep.analyst("carol@helper")

    def pools():
        out = {}
        for party, who in (("ac", dep.alice), ("emc", dep.bob), ("helper", carol)):
            with engine.connect(dep.dsn(party), tls=who) as con:
                out[party] = con.paillier_pool()
        return out

    def consumed(pool):  # values handed to queries and used there
        return pool["made"] - pool["discarded"] - sum(k["ready"] for k in pool["keys"])

    deadline = time.monotonic() + 60
    while True:
        st = pools()
        keys = {k["owner"]: k for k in st["helper"]["keys"]}
        if (set(keys) == {"ac", "emc"} and st["emc"]["keys"] and st["ac"]["keys"]
                and keys["emc"]["key"] == st["emc"]["keys"][0]["key"]
                and all(k["ready"] == POOL for s in st.values() for k in s["keys"])):
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    assert st["emc"]["keys"][0]["owner"] == "emc" and st["emc"]["target"] == POOL
    with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:  # a Paillier query uses them
        _check(con.execute(SQL).fetchall(), dep.frames)
    after = pools()
    # ac encrypted its 40 rows, emc its 40, the helper re-randomised 25 matches per owner.
    assert [consumed(after[p]) - consumed(st[p]) for p in PARTIES] == [40, 40, 50]


def test_peer_that_stops_answering_times_out_naming_it(dep):
    # stopped before the query: the connection or its first answer times out
    dep.signal("helper", signal.SIGSTOP)
    try:
        with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
            t0 = time.monotonic()
            with pytest.raises(engine.OperationalError, match="helper") as e:
                con.execute(MASKED + SQL)
            assert e.value.party == "helper" and time.monotonic() - t0 < 15
    finally:
        dep.signal("helper", signal.SIGCONT)
    # stopped in the middle of the run: every party gives up after its query time-out (30 s)
    outcome: dict[str, object] = {}

    def run():
        try:
            with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
                outcome["rows"] = con.execute(BIG_SQL).fetchall()
        except Exception as e:  # noqa: BLE001
            outcome["error"] = e

    t = threading.Thread(target=run)
    t.start()
    _wait_for_sessions(dep, ["ac", "emc", "helper"])
    time.sleep(1.0)  # connected (5 s connect time-out); keys, encryption, masking take seconds
    dep.signal("helper", signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        t.join(timeout=120)
    finally:
        dep.signal("helper", signal.SIGCONT)
    err = outcome.get("error")
    assert isinstance(err, engine.OperationalError) and "rows" not in outcome, outcome
    assert err.party == "helper" and "stopped answering" in str(err)
    assert time.monotonic() - stopped < 30 + 15
    with engine.connect(dep.dsn("emc"), tls=dep.bob) as con:  # everyone serves again
        _check(con.execute(MASKED + SQL).fetchall(), dep.frames)


def test_server_with_a_certificate_from_another_ca_is_refused(dep, tmp_path):
    from engine.deploy import certs

    certs.make_ca(str(tmp_path / "rogue"))
    certs.sign(str(tmp_path / "rogue"), os.path.join(dep.dir("emc"), "emc.csr"),
               str(tmp_path / "emc-rogue.crt"))
    dep.kill("emc")
    dep.write_config("emc", cert=str(tmp_path / "emc-rogue.crt"))
    dep.start("emc")
    try:
        with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
            with pytest.raises(engine.OperationalError, match="TLS handshake with party emc") \
                    as e:
                con.execute(SQL)
        assert e.value.party == "emc" and "certificate verify failed" in str(e.value)
    finally:
        dep.kill("emc")
        dep.write_config("emc")
        dep.start("emc")
    with engine.connect(dep.dsn("ac"), tls=dep.alice) as con:
        _check(con.execute(MASKED + SQL).fetchall(), dep.frames)


def _ip(*args: str, ns: str | None = None, check: bool = True):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


@pytest.fixture
def namespaces():
    """Three network namespaces on one bridge: 10.231.X.2-4, the test itself at .1."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("network namespaces need Linux and root")
    tag = f"{os.getpid() % 10000:04d}"
    probe = _ip("ip", "netns", "add", f"mpt{tag}probe", check=False)
    if probe.returncode:
        pytest.skip(f"'ip netns add' is not permitted here: {probe.stderr.strip()}")
    _ip("ip", "netns", "del", f"mpt{tag}probe", check=False)
    bridge, subnet = f"mptb{tag}", f"10.231.{int(tag) % 250}"
    names: dict[str, str] = {}
    try:
        _ip("ip", "link", "add", bridge, "type", "bridge")
        _ip("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("ip", "link", "set", bridge, "up")
        for i, party in enumerate(PARTIES):
            ns, outer, inner = f"mpt{tag}{party}", f"mpt{tag}{i}h", f"mpt{tag}{i}n"
            _ip("ip", "netns", "add", ns)
            names[party] = ns
            _ip("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("ip", "link", "set", outer, "master", bridge)
            _ip("ip", "link", "set", outer, "up")
            _ip("ip", "link", "set", inner, "netns", ns)
            _ip("ip", "addr", "add", f"{subnet}.{i + 2}/24", "dev", inner, ns=ns)
            _ip("ip", "link", "set", inner, "up", ns=ns)
            _ip("ip", "link", "set", "lo", "up", ns=ns)
        yield names, {p: (f"{subnet}.{i + 2}", 7400 + i) for i, p in enumerate(PARTIES)}
    finally:
        for ns in names.values():  # deleting a namespace deletes its end of the veth pair
            _ip("ip", "netns", "del", ns, check=False)
        _ip("ip", "link", "del", bridge, check=False)


def test_three_servers_in_three_network_namespaces(namespaces, tmp_path):
    netns, hosts = namespaces
    ac, emc, _ = _tables(seed=9)
    d = Deployment(str(tmp_path), tables={"ac": {"party": "ac", "key": "id", "frame": ac},
                                          "emc": {"party": "emc", "key": "id", "frame": emc}},
                   hosts=hosts, netns=netns, timeouts={"connect": 5, "peer": 5, "query": 60})
    try:
        d.start_all()
        with engine.connect(d.dsn("ac"), tls=d.analyst("alice@ac")) as con:
            cur = con.execute(SQL)  # published (Paillier) join across the namespaces
            _check(cur.fetchall(), {"ac": ac, "emc": emc})
            assert cur.stats["helper"]["tls_peers"] == ["ac", "emc"]
    finally:
        d.stop_all()
