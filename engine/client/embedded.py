"""The embedded default: three local party servers (ac, emc, helper) on loopback ports.

Each party is its own OS process.  Its files live in the federation's working directory
``workdir``: ``<party>.duckdb`` (its tables), ``<party>.audit.jsonl`` (its audit log) and
``<party>.log`` (its server log).  A ``workdir`` given by the caller is created if missing and
kept; without one, a temporary directory is made and removed on ``stop()``.  The federation
starts the parties on free ports, tells each its peers' addresses, and tears them down on
``stop()``, at interpreter exit, or (by the servers' own watchdog) when this process dies.

Authentication: the same mutual TLS as deployments.  At every start the federation makes a
fresh CA in a private (0700) directory inside ``workdir``, a certificate per party (each party
pins its peers' certificates) and one analyst certificate ``owner@<party>`` per party for
this program; the CA key is deleted once they are signed and the directory is removed on
``stop()``.  The parties accept no plain TCP connection and no certificate from another CA;
only the owner may ``register``, ``drop``, ``configure`` and ``shutdown``.  ``register`` from
a path reads the file here, with this program's permissions, and sends its bytes: the servers
never open a path a client names.  The servers run with umask 077 (their files are private).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from dialect.errors import DataError, OperationalError, ProgrammingError
from engine.control import wire
from engine.control.messages import Configure, Shutdown
from engine.deploy import certs, tls
from engine.deploy.config import (
    DEFAULT_PAILLIER_RANDOMNESS,
    KEY_BITS,
    PartyConfig,
    check_embedded,
    check_policies,
)
from engine.deploy.tls import TLSFiles

DEFAULT_PARTIES: tuple[tuple[str, str], ...] = (("ac", "data"), ("emc", "data"),
                                                  ("helper", "helper"))


class LocalFederation:
    """Three party-server processes on this machine; ``addresses`` maps party -> (host, port)."""

    def __init__(
        self,
        workdir: str | None = None,
        *,
        parties: tuple[tuple[str, str], ...] = DEFAULT_PARTIES,
        policies: dict[str, dict[str, Any]] | None = None,
        key_bits: int = KEY_BITS,
        query_timeout: float = 600.0,
        connect_timeout: float = 30.0,
        transcript_dir: str | None = None,
        start_timeout: float = 60.0,
        hosts: dict[str, str] | None = None,
        launcher: Callable[[str], list[str]] | None = None,
        paillier_pool: int = 0,
        paillier_randomness: str = DEFAULT_PAILLIER_RANDOMNESS,
    ):
        """``hosts``: listen address per party (default loopback); ``launcher``: command
        prefix per party (e.g. ``ip netns exec NS``; bench/netns.py uses both)."""
        # every setting is checked before anything is created or started (ConfigError)
        check_embedded(key_bits=key_bits, query_timeout=query_timeout,
                       connect_timeout=connect_timeout, start_timeout=start_timeout,
                       paillier_pool=paillier_pool, paillier_randomness=paillier_randomness)
        policies = check_policies(parties, policies)
        self._own_dir = not workdir
        #: absolute path of the parties' files (see the module docstring)
        self.workdir = os.path.abspath(os.fspath(workdir)) if workdir \
            else tempfile.mkdtemp(prefix="mpcsql-")
        if not os.path.isdir(self.workdir):
            os.makedirs(self.workdir, mode=0o700)
            os.chmod(self.workdir, 0o700)
        self.parties = parties
        self.procs: dict[str, subprocess.Popen] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        self._logs: list[Any] = []
        self._ssl: dict[str, ssl.SSLContext] = {}
        #: the private directory of this run's CA, certificates and keys (removed on stop)
        self.tls_dir: str | None = None
        policies = policies or {}
        try:
            self.tls_dir = tempfile.mkdtemp(prefix=".tls-", dir=self.workdir)  # 0700
            files = _credentials(self.tls_dir, [n for n, _ in parties])
            for name, role in parties:
                cfg = PartyConfig(
                    name=name, role=role, parties=list(parties),
                    database=os.path.join(self.workdir, f"{name}.duckdb"),
                    policy=policies.get(name, {}), key_bits=key_bits,
                    paillier_pool=paillier_pool, paillier_randomness=paillier_randomness,
                    query_timeout=query_timeout, connect_timeout=connect_timeout,
                    transcript_dir=transcript_dir, parent_pid=os.getpid(),
                    audit_log=os.path.join(self.workdir, f"{name}.audit.jsonl"),
                    tls=files[name], peer_certs={p: f.cert for p, f in files.items()
                                                 if p != name and p in dict(parties)},
                    **({"host": hosts[name]} if hosts and name in hosts else {}),
                )
                self._ssl[name] = tls.client_context(files[tls.owner_name(name)])
                fd = os.open(os.path.join(self.workdir, f"{name}.log"),
                             os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                log = os.fdopen(fd, "ab")
                self._logs.append(log)
                self.procs[name] = subprocess.Popen(
                    (launcher(name) if launcher else [])
                    + [sys.executable, "-m", "engine.server", "--config-json",
                       json.dumps(asdict(cfg))],
                    stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                    env=_child_env(), start_new_session=True, umask=0o077,
                )
            deadline = time.monotonic() + start_timeout
            for name, proc in self.procs.items():
                self.addresses[name] = _await_ready(name, proc, deadline, self.log_tail)
            for name, (host, port) in self.addresses.items():
                c = wire.BlockingClient(host, port, party=name,
                                        ssl_context=self.ssl_context_for(name))
                peers = {n: list(a) for n, a in self.addresses.items() if n != name}
                c.request(Configure(peers=peers).to_wire(), timeout=10)
                c.close()
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)

    def ssl_context_for(self, party: str) -> ssl.SSLContext:
        """The owner's client TLS context for ``party``'s server (its ``owner@party``
        certificate; the server must present ``party``'s certificate from this run's CA)."""
        try:
            return self._ssl[party]
        except KeyError:
            raise ProgrammingError(f"unknown party {party!r}") from None

    def tls_files(self, party: str) -> dict[str, str]:
        """PEM paths of the owner's credentials for ``party`` (``ca``, ``cert``, ``key``), e.g.
        for ``mpcsql status --server ... --tls-*``; they are removed on ``stop()``."""
        if self.tls_dir is None:
            raise ProgrammingError("the federation has no credentials (stopped?)")
        f = _files(self.tls_dir, tls.owner_name(party))
        return {"ca": f.ca, "cert": f.cert, "key": f.key}

    def log_tail(self, name: str, lines: int = 5) -> str:
        """The last lines of a party server's log (for start-up errors)."""
        try:
            with open(os.path.join(self.workdir, f"{name}.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:]).strip()
        except OSError:
            return ""

    def pids(self) -> dict[str, int]:
        """OS process ids of the party servers (for tests and operators)."""
        return {n: p.pid for n, p in self.procs.items()}

    def alive(self) -> dict[str, bool]:
        return {n: p.poll() is None for n, p in self.procs.items()}

    def stop(self) -> None:
        """Stop every party server and remove the working directory if we created it."""
        for name, proc in self.procs.items():
            if proc.poll() is None and name in self.addresses:
                try:
                    c = wire.BlockingClient(*self.addresses[name], party=name, timeout=2,
                                            ssl_context=self._ssl.get(name))
                    c.request(Shutdown().to_wire(), timeout=2)
                    c.close()
                except Exception:  # noqa: BLE001 - fall through to terminate/kill
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stdout:
                proc.stdout.close()
        self.procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        self._ssl.clear()
        if self.tls_dir is not None:
            shutil.rmtree(self.tls_dir, ignore_errors=True)
            self.tls_dir = None
        if self._own_dir and os.path.isdir(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.stop)


def _files(d: str, name: str) -> TLSFiles:
    base = os.path.join(d, name)
    return TLSFiles(os.path.join(d, "ca.crt"), base + ".crt", base + ".key")


def _credentials(d: str, parties: list[str]) -> dict[str, TLSFiles]:
    """A fresh CA in ``d`` (private), a certificate per party and an ``owner@<party>`` analyst
    certificate per party; the CA key is deleted afterwards (nobody can issue more)."""
    certs.make_ca(d, name="mpcsql embedded federation CA", days=30)
    out = {}
    for name in parties:
        f = _files(d, name)
        certs.make_request(name, "party", f.key, f.cert + ".csr")
        certs.sign(d, f.cert + ".csr", f.cert, days=30, expect=name)
        os.unlink(f.cert + ".csr")
        owner = tls.owner_name(name)
        certs.issue_analyst(d, owner, d, days=30)
        os.unlink(os.path.join(d, owner + ".csr"))
        out[name], out[owner] = f, _files(d, owner)
    os.unlink(os.path.join(d, "ca.key"))
    return out


def read_source(path: str, table: str | None) -> tuple[bytes, str]:
    """The bytes and format of a file to register, read with this program's permissions.

    CSV and Parquet files are sent as they are; from a DuckDB file, table ``table`` is copied
    into a fresh DuckDB file (exact column types, no pending write-ahead log) and that is sent.
    """
    kind = os.path.splitext(path)[1].lstrip(".").lower()
    if kind not in ("csv", "parquet", "duckdb", "db"):
        raise ProgrammingError(f"unsupported file type {kind!r} (csv, parquet, duckdb)")
    if not os.path.exists(path):
        raise ProgrammingError(f"file not found: {path}")
    if kind in ("csv", "parquet"):
        try:
            with open(path, "rb") as f:
                return f.read(), kind
        except OSError as e:
            raise ProgrammingError(f"cannot read {path}: {e.strerror}") from None
    if not table:
        raise ProgrammingError("registering a DuckDB file needs table=...")
    import duckdb

    with tempfile.TemporaryDirectory(prefix="mpcsql-register-") as tmp:
        out = os.path.join(tmp, "table.duckdb")
        con = duckdb.connect()
        try:
            con.execute(f"ATTACH {_literal(path)} AS _src (READ_ONLY)")
            con.execute(f"ATTACH {_literal(out)} AS _out")
            quoted = '"' + table.replace('"', '""') + '"'
            con.execute(f"CREATE TABLE _out.{quoted} AS SELECT * FROM _src.{quoted}")
            con.execute("DETACH _out")
        except duckdb.Error as e:
            raise DataError(f"cannot read table {table} from {path}: {e}") from None
        finally:
            con.close()
        with open(out, "rb") as f:
            return f.read(), "duckdb"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # The three parties share this host's cores: one BLAS thread each (numpy's dot products in
    # the secure sums), else they oversubscribe the cores and slow each other down ~10x.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def _await_ready(name: str, proc: subprocess.Popen, deadline: float, log_tail
                 ) -> tuple[str, int]:
    import select

    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OperationalError(f"party server {name} exited during start-up "
                                   f"(exit code {proc.returncode}): {log_tail(name)}", party=name)
        r, _, _ = select.select([proc.stdout], [], [], 0.1)
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096)
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith("READY "):
                    _, host, port = line.split()
                    return host, int(port)
    raise OperationalError(f"party server {name} did not start in time", party=name)
