"""Run the three party servers in three Linux network namespaces with shaped links.

Each party gets a namespace with one veth interface on a bridge in the root namespace (which
also carries the benchmark's own address, so the analyst can reach the servers).  Each party's
outgoing traffic is shaped on its own interface: ``tc netem delay D rate R`` (one-way delay D,
so a round trip between two parties takes 2D), or, where the kernel has no netem but D = 0,
``tc tbf rate R``.  The servers are the ordinary ``python -m engine.server --config-json ...``
processes, started with ``ip netns exec`` and bound to their namespace's address; the
:class:`NetnsFederation` object stands in for :class:`engine.federation.LocalFederation`, so the
DB-API :class:`engine.api.Connection` works on it unchanged.  Needs root (CAP_NET_ADMIN).
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from engine import wire
from engine.config import KEY_BITS, PartyConfig
from engine.federation import DEFAULT_PARTIES, _await_ready, _child_env


@dataclass(frozen=True)
class Shaping:
    """A link spec: one-way delay (ms) and optional rate limit (Mbit/s) per party's egress."""

    delay_ms: float
    rate_mbit: float | None = None

    @classmethod
    def parse(cls, spec: str) -> Shaping:
        """``DELAY_MS[:RATE_MBIT]``, e.g. ``10``, ``25:100``, ``0:50``."""
        delay, _, rate = spec.partition(":")
        try:
            return cls(float(delay), float(rate) if rate else None)
        except ValueError as e:
            raise ValueError(f"--netem expects DELAY_MS[:RATE_MBIT], got {spec!r}") from e

    def __str__(self) -> str:
        return f"{self.delay_ms:g} ms one-way" + (f", {self.rate_mbit:g} Mbit/s"
                                                  if self.rate_mbit else "")


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def _qdisc(shaping: Shaping, netem: bool) -> list[str]:
    if netem:
        q = ["netem", "delay", f"{shaping.delay_ms:g}ms"]
        if shaping.rate_mbit:
            q += ["rate", f"{shaping.rate_mbit:g}mbit"]
        # a queue long enough for a bandwidth-delay product of big ciphertext batches
        return q + ["limit", "100000"]
    rate = shaping.rate_mbit or 0.0
    burst = max(64_000, int(rate * 1e6 / 8 / 100))  # >= 10 ms of traffic
    return ["tbf", "rate", f"{rate:g}mbit", "burst", str(burst), "latency", "200ms"]


def check(shaping: Shaping) -> tuple[bool, str, bool]:
    """Can this machine run the namespace mode?  Returns (ok, reason, use_netem).

    Creates and removes a probe namespace and veth pair and tries the qdisc on it.
    """
    if not sys.platform.startswith("linux"):
        return False, "network namespaces need Linux", False
    if os.geteuid() != 0:
        return False, "needs root (CAP_NET_ADMIN) for 'ip netns add'", False
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return False, f"'{tool}' (iproute2) is not installed", False
    tag = secrets.token_hex(2)
    ns, va, vb = f"mpcsql-probe-{tag}", f"mpq{tag}a", f"mpq{tag}b"
    try:
        r = _ip("ip", "netns", "add", ns, check=False)
        if r.returncode:
            return False, f"'ip netns add' failed: {r.stderr.strip()}", False
        r = _ip("ip", "link", "add", va, "type", "veth", "peer", "name", vb, check=False)
        if r.returncode:
            return False, f"cannot create veth pairs: {r.stderr.strip()}", False
        r = _ip("tc", "qdisc", "add", "dev", va, "root", *_qdisc(shaping, True), check=False)
        if r.returncode == 0:
            return True, "tc netem", True
        why = r.stderr.strip() or "tc failed"
        if shaping.delay_ms == 0:
            if not shaping.rate_mbit:
                return True, f"no shaping (netem unavailable: {why})", False
            r = _ip("tc", "qdisc", "add", "dev", va, "root", *_qdisc(shaping, False),
                    check=False)
            if r.returncode == 0:
                return True, f"tc tbf rate limit (netem unavailable: {why})", False
        return False, (f"this kernel has no netem qdisc ('tc qdisc add ... netem' says: {why}); "
                       "latency cannot be emulated. Namespaces work: --netem 0 (no shaping) or "
                       "--netem 0:RATE_MBIT (tbf bandwidth limit) run"), False
    finally:
        _ip("ip", "link", "del", va, check=False)
        _ip("ip", "netns", "del", ns, check=False)


class NetnsFederation:
    """Three party servers, each in its own network namespace; see the module docstring."""

    def __init__(self, shaping: Shaping, *, use_netem: bool, key_bits: int = KEY_BITS,
                 query_timeout: float = 3600.0, start_timeout: float = 60.0,
                 policies: dict[str, dict[str, Any]] | None = None):
        self.workdir = tempfile.mkdtemp(prefix="mpcsql-netns-")
        tag = secrets.token_hex(2)
        self.bridge = f"mpb{tag}"
        subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
        self.namespaces: list[str] = []
        self.procs: dict[str, subprocess.Popen] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        self._logs: list[Any] = []
        policies = policies or {}
        atexit.register(self.stop)
        try:
            _ip("ip", "link", "add", self.bridge, "type", "bridge")
            _ip("ip", "addr", "add", f"{subnet}.1/24", "dev", self.bridge)
            _ip("ip", "link", "set", self.bridge, "up")
            hosts = {}
            for i, (name, _role) in enumerate(DEFAULT_PARTIES):
                ns, host_if, ns_if = f"mpcsql-{tag}-{name}", f"mpv{tag}{i}h", f"mpv{tag}{i}n"
                _ip("ip", "netns", "add", ns)
                self.namespaces.append(ns)
                _ip("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
                _ip("ip", "link", "set", host_if, "master", self.bridge)
                _ip("ip", "link", "set", host_if, "up")
                _ip("ip", "link", "set", ns_if, "netns", ns)
                hosts[name] = f"{subnet}.{i + 2}"
                _ip("ip", "addr", "add", f"{hosts[name]}/24", "dev", ns_if, ns=ns)
                _ip("ip", "link", "set", ns_if, "up", ns=ns)
                _ip("ip", "link", "set", "lo", "up", ns=ns)
                if use_netem or shaping.rate_mbit:
                    _ip("tc", "qdisc", "add", "dev", ns_if, "root",
                        *_qdisc(shaping, use_netem), ns=ns)
            for (name, role), ns in zip(DEFAULT_PARTIES, self.namespaces, strict=True):
                cfg = PartyConfig(
                    name=name, role=role, parties=list(DEFAULT_PARTIES),
                    database=os.path.join(self.workdir, f"{name}.duckdb"), host=hosts[name],
                    policy=policies.get(name, {}), key_bits=key_bits,
                    query_timeout=query_timeout, parent_pid=os.getpid())
                log = open(os.path.join(self.workdir, f"{name}.log"), "ab")
                self._logs.append(log)
                # 'ip netns exec' execs in place, so the server's parent is this process
                # (its watchdog stops it when we die).
                self.procs[name] = subprocess.Popen(
                    ["ip", "netns", "exec", ns, sys.executable, "-m", "engine.server",
                     "--config-json", json.dumps(asdict(cfg))],
                    stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                    env=_child_env(), start_new_session=True)
            deadline = time.monotonic() + start_timeout
            for name, proc in self.procs.items():
                self.addresses[name] = _await_ready(name, proc, deadline, self.log_tail)
            for name, (host, port) in self.addresses.items():
                c = wire.BlockingClient(host, port, party=name)
                peers = {n: a for n, a in self.addresses.items() if n != name}
                c.request({"op": "configure", "peers": peers}, timeout=10)
                c.close()
        except BaseException:
            self.stop()
            raise

    def log_tail(self, name: str, lines: int = 5) -> str:
        try:
            with open(os.path.join(self.workdir, f"{name}.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:]).strip()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the servers, then remove the namespaces, the bridge and the working directory."""
        for name, proc in self.procs.items():
            if proc.poll() is None and name in self.addresses:
                try:
                    c = wire.BlockingClient(*self.addresses[name], party=name, timeout=2)
                    c.request({"op": "shutdown"}, timeout=2)
                    c.close()
                except Exception:  # noqa: BLE001 - fall through to kill
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
        for ns in self.namespaces:  # removing a namespace removes its veth pair
            _ip("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()
        _ip("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.stop)
