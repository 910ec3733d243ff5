"""Run the three party servers in three Linux network namespaces with shaped links.

Each party gets a namespace with one veth interface on a bridge in the root namespace (which
also carries the benchmark's own address, so the analyst can reach the servers).  Each party's
outgoing traffic is shaped on its own interface: ``tc netem delay D rate R`` (one-way delay D,
so a round trip between two parties takes 2D), or, where the kernel has no netem but D = 0,
``tc tbf rate R``.  The servers are the ordinary ``python -m engine.server --config-json ...``
processes, started with ``ip netns exec`` and bound to their namespace's address by
:class:`engine.client.embedded.LocalFederation` (its ``hosts`` and ``launcher`` options), so the
DB-API :class:`engine.client.dbapi.Connection` works on it unchanged.  Needs root (CAP_NET_ADMIN).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from engine.client.embedded import DEFAULT_PARTIES, LocalFederation
from engine.deploy.config import DEFAULT_PAILLIER_RANDOMNESS, KEY_BITS


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
                       "the kernel cannot add latency (--emulate-rtt MS delays messages in the "
                       "sessions instead). Namespaces work: --netem 0 (no shaping) or "
                       "--netem 0:RATE_MBIT (tbf bandwidth limit) run"), False
    finally:
        _ip("ip", "link", "del", va, check=False)
        _ip("ip", "netns", "del", ns, check=False)


class NetnsFederation(LocalFederation):
    """Three party servers, each in its own network namespace; see the module docstring.

    The servers are started, configured and stopped by :class:`LocalFederation`; this class
    only builds the namespaces and links first (``hosts`` and the ``ip netns exec`` launcher)
    and removes them after the servers stop.
    """

    def __init__(self, shaping: Shaping, *, use_netem: bool, key_bits: int = KEY_BITS,
                 query_timeout: float = 3600.0, start_timeout: float = 60.0,
                 policies: dict[str, dict[str, Any]] | None = None, paillier_pool: int = 0,
                 paillier_randomness: str = DEFAULT_PAILLIER_RANDOMNESS):
        tag = secrets.token_hex(2)
        self.bridge = f"mpb{tag}"
        subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
        self.namespaces: dict[str, str] = {}
        atexit.register(self._remove_network)
        hosts = {}
        try:
            _ip("ip", "link", "add", self.bridge, "type", "bridge")
            _ip("ip", "addr", "add", f"{subnet}.1/24", "dev", self.bridge)
            _ip("ip", "link", "set", self.bridge, "up")
            for i, (name, _role) in enumerate(DEFAULT_PARTIES):
                ns, host_if, ns_if = f"mpcsql-{tag}-{name}", f"mpv{tag}{i}h", f"mpv{tag}{i}n"
                _ip("ip", "netns", "add", ns)
                self.namespaces[name] = ns
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
        except BaseException:
            self._remove_network()
            raise
        # 'ip netns exec' execs in place, so each server's parent is this process (its
        # watchdog stops it when we die).
        super().__init__(policies=policies, key_bits=key_bits, query_timeout=query_timeout,
                         start_timeout=start_timeout, hosts=hosts, paillier_pool=paillier_pool,
                         paillier_randomness=paillier_randomness,
                         launcher=lambda name: ["ip", "netns", "exec", self.namespaces[name]])

    def _remove_network(self) -> None:
        for ns in self.namespaces.values():  # removing a namespace removes its veth pair
            _ip("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()
        _ip("ip", "link", "del", self.bridge, check=False)
        atexit.unregister(self._remove_network)

    def stop(self) -> None:
        """Stop the servers, then remove the namespaces and the bridge."""
        super().stop()
        self._remove_network()
