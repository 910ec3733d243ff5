"""A three-organisation deployment for tests: CA, party.toml files, DuckDB files and
``mpcsql serve`` processes (optionally each in its own network namespace)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import duckdb

from engine import cli
from engine.deploy import certs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTIES = ("ac", "emc", "helper")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def party_toml(name: str, hosts: dict[str, tuple[str, int]], policy: dict[str, Any],
               tables: list[dict[str, Any]], timeouts: dict[str, float],
               ca: str = "certs/ca.crt", cert: str | None = None,
               session_ports: tuple[int, int] | None = None,
               crypto: dict[str, Any] | None = None) -> str:
    """A complete party.toml (TOML written by hand: the loader must read what people write)."""
    host, port = hosts[name]
    session = [f"session_ports = {list(session_ports)}"] if session_ports else []
    lines = ["[party]", f'name = "{name}"', f'role = "{"helper" if name == "helper" else "data"}"',
             "", "[federation]", 'parties = ["ac", "emc", "helper"]', 'helper = "helper"', "",
             "[listen]", f'host = "{host}"', f"port = {port}", *session, "",
             "[tls]", f'ca = "{ca}"', f'cert = "{cert or f"certs/{name}.crt"}"',
             f'key = "{name}.key"', ""]
    for peer in PARTIES:
        if peer != name:
            h, p = hosts[peer]
            lines += [f"[peers.{peer}]", f'address = "{h}:{p}"', f'cert = "certs/{peer}.crt"', ""]
    if name != "helper":
        lines += ["[database]", f'path = "{name}.duckdb"', ""]
    for t in tables:
        lines += ["[[tables]]", f'name = "{t["name"]}"', f'key = "{t["key"]}"', ""]
    lines += ["[policy]", f"min_intersection = {policy.get('min_intersection', 10)}"]
    if "allow" in policy:
        allow = ", ".join(f'"{k}" = {json.dumps(v)}' for k, v in policy["allow"].items())
        lines.append(f"allow = {{ {allow} }}")
    lines += ["", "[audit]", 'path = "audit.log"', "", "[timeouts]"]
    lines += [f"{k} = {v}" for k, v in timeouts.items()]
    if crypto:
        lines += ["", "[crypto]"] + [f"{k} = {v}" for k, v in crypto.items()]
    return "\n".join(lines) + "\n"


class Deployment:
    """Three parties set up the documented way (init, CA, sign, exchange certificates)."""

    def __init__(self, root: str, *, tables: dict[str, dict[str, Any]],
                 policies: dict[str, dict[str, Any]] | None = None,
                 timeouts: dict[str, float] | None = None,
                 hosts: dict[str, tuple[str, int]] | None = None,
                 netns: dict[str, str] | None = None,
                 session_ports: dict[str, tuple[int, int]] | None = None,
                 crypto: dict[str, Any] | None = None):
        self.root = root
        self.crypto = crypto
        self.session_ports = session_ports or {}
        self.hosts = hosts or {p: ("127.0.0.1", free_port()) for p in PARTIES}
        self.netns = netns or {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.ca = os.path.join(root, "ca")
        certs.make_ca(self.ca)
        for p in PARTIES:
            d = self.dir(p)
            assert cli.main(["init", "--party", p, "--out", d]) == 0
            certs.sign(self.ca, os.path.join(d, f"{p}.csr"),
                       os.path.join(d, "certs", f"{p}.crt"), expect=p)
        for p in PARTIES:
            self._copy(os.path.join(self.ca, "ca.crt"), os.path.join(self.dir(p), "certs"))
            for q in PARTIES:
                self._copy(os.path.join(self.dir(q), "certs", f"{q}.crt"),
                           os.path.join(self.dir(p), "certs"))
        self.timeouts = timeouts or {"connect": 5, "peer": 5, "query": 60}
        self.policies = policies or {}
        for p in PARTIES:
            frames = {n: t for n, t in tables.items() if t["party"] == p}
            if frames:
                con = duckdb.connect(os.path.join(self.dir(p), f"{p}.duckdb"))
                for n, t in frames.items():
                    con.register("frame", t["frame"])
                    con.execute(f'CREATE TABLE "{n}" AS SELECT * FROM frame')
                    con.unregister("frame")
                con.close()
            self.write_config(p, tables=[{"name": n, "key": t["key"]} for n, t in frames.items()])

    def dir(self, party: str) -> str:
        return os.path.join(self.root, party)

    def config(self, party: str) -> str:
        return os.path.join(self.dir(party), "party.toml")

    def write_config(self, party: str, *, tables: list[dict[str, Any]] | None = None,
                     **tls: str) -> None:
        if tables is None:
            tables = self._tables[party]
        self._tables = {**getattr(self, "_tables", {}), party: tables}
        with open(self.config(party), "w") as f:
            f.write(party_toml(party, self.hosts, self.policies.get(party, {}), tables,
                               self.timeouts, session_ports=self.session_ports.get(party),
                               crypto=self.crypto,
                               **tls))

    @staticmethod
    def _copy(src: str, dst_dir: str) -> None:
        if os.path.dirname(os.path.abspath(src)) == os.path.abspath(dst_dir):
            return
        with open(src, "rb") as f, open(os.path.join(dst_dir, os.path.basename(src)), "wb") as g:
            g.write(f.read())

    def analyst(self, name: str, ca_dir: str | None = None) -> dict[str, str]:
        """TLS files for analyst ``name`` (signed by the federation CA unless ``ca_dir``)."""
        out = os.path.join(self.root, "analysts" if ca_dir is None
                           else f"analysts-{os.path.basename(ca_dir)}")
        crt, key = certs.issue_analyst(ca_dir or self.ca, name, out)
        return {"ca": os.path.join(self.ca, "ca.crt"), "cert": crt, "key": key}

    def dsn(self, party: str) -> str:
        host, port = self.hosts[party]
        return f"mpcsql://{host}:{port}"

    # --- processes --------------------------------------------------------------------------

    def start(self, party: str, timeout: float = 60.0, *, module: str = "engine.cli",
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """``mpcsql serve --config party.toml`` (in the party's namespace, if any).

        ``module`` runs another command line in place of ``engine.cli`` (e.g. the modified,
        misbehaving server of tests/rogue.py), with extra environment ``env``.
        """
        cmd = [sys.executable, "-m", module, "serve", "--config", self.config(party)]
        if party in self.netns:
            cmd = ["ip", "netns", "exec", self.netns[party], *cmd]  # execs in place: same pid
        env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
        log = open(os.path.join(self.dir(party), "serve.log"), "ab")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        log.close()
        self.procs[party] = proc
        deadline, buf = time.monotonic() + timeout, b""
        while b"READY" not in buf:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{party} did not start: {self.log(party)}")
            if select.select([proc.stdout], [], [], 0.1)[0]:
                buf += os.read(proc.stdout.fileno(), 4096)
        return proc

    def start_all(self) -> None:
        for p in PARTIES:
            self.start(p)

    def log(self, party: str) -> str:
        try:
            with open(os.path.join(self.dir(party), "serve.log"), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def signal(self, party: str, sig: int) -> None:
        """Signal the party's whole process group (server, session process, workers)."""
        os.killpg(self.procs[party].pid, sig)

    def kill(self, party: str) -> None:
        """SIGKILL the party's process group; a party already gone is no error."""
        try:
            self.signal(party, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.procs[party].wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGCONT)
                    proc.terminate()
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()
        self.procs.clear()
