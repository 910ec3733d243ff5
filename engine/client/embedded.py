"""The embedded default: three local party servers (ac, emc, helper) on loopback ports.

Each party is its own OS process.  Its files live in the federation's working directory
``workdir``: ``<party>.duckdb`` (its tables), ``<party>.audit.jsonl`` (its audit log) and
``<party>.log`` (its server log).  A ``workdir`` given by the caller is created if missing and
kept; without one, a temporary directory is made and removed on ``stop()``.  The federation
starts the parties on free ports, tells each its peers' addresses, and tears them down on
``stop()``, at interpreter exit, or (by the servers' own watchdog) when this process dies.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from dialect.errors import OperationalError
from engine.control import wire
from engine.control.messages import Configure, Shutdown
from engine.deploy.config import KEY_BITS, PartyConfig, check_embedded, check_policies

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
    ):
        """``hosts``: listen address per party (default loopback); ``launcher``: command
        prefix per party (e.g. ``ip netns exec NS``; bench/netns.py uses both)."""
        # every setting is checked before anything is created or started (ConfigError)
        check_embedded(key_bits=key_bits, query_timeout=query_timeout,
                       connect_timeout=connect_timeout, start_timeout=start_timeout,
                       paillier_pool=paillier_pool)
        policies = check_policies(parties, policies)
        self._own_dir = not workdir
        #: absolute path of the parties' files (see the module docstring)
        self.workdir = os.path.abspath(os.fspath(workdir)) if workdir \
            else tempfile.mkdtemp(prefix="mpcsql-")
        os.makedirs(self.workdir, exist_ok=True)
        self.parties = parties
        self.procs: dict[str, subprocess.Popen] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        self._logs: list[Any] = []
        policies = policies or {}
        try:
            for name, role in parties:
                cfg = PartyConfig(
                    name=name, role=role, parties=list(parties),
                    database=os.path.join(self.workdir, f"{name}.duckdb"),
                    policy=policies.get(name, {}), key_bits=key_bits,
                    paillier_pool=paillier_pool,
                    query_timeout=query_timeout, connect_timeout=connect_timeout,
                    transcript_dir=transcript_dir, parent_pid=os.getpid(),
                    audit_log=os.path.join(self.workdir, f"{name}.audit.jsonl"),
                    **({"host": hosts[name]} if hosts and name in hosts else {}),
                )
                log = open(os.path.join(self.workdir, f"{name}.log"), "ab")
                self._logs.append(log)
                self.procs[name] = subprocess.Popen(
                    (launcher(name) if launcher else [])
                    + [sys.executable, "-m", "engine.server", "--config-json",
                       json.dumps(asdict(cfg))],
                    stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                    env=_child_env(), start_new_session=True,
                )
            deadline = time.monotonic() + start_timeout
            for name, proc in self.procs.items():
                self.addresses[name] = _await_ready(name, proc, deadline, self.log_tail)
            for name, (host, port) in self.addresses.items():
                c = wire.BlockingClient(host, port, party=name)
                peers = {n: list(a) for n, a in self.addresses.items() if n != name}
                c.request(Configure(peers=peers).to_wire(), timeout=10)
                c.close()
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)

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
                    c = wire.BlockingClient(*self.addresses[name], party=name, timeout=2)
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
        if self._own_dir and os.path.isdir(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.stop)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
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
