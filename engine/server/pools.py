"""Paillier work a party server does between queries: long-term keys and randomiser pools.

With ``[crypto] paillier_pool = N`` (0, the default, turns this off) a data party keeps one
Paillier key pair for the server's lifetime instead of drawing one per query, and keeps up to N
encryption randomisers r^n mod n^2 for it (computed by CRT with its private key); the helper
fetches each data party's public key and keeps up to N re-randomisers for each.  They are the
same values the published join would compute during the query (one per ciphertext: one per row
for up to 19 columns), only computed earlier: by niced worker processes, and only while no
query holds this party's slot.  With DJN randomness (``[crypto] paillier_randomness = "djn"``,
the default) a data party's long-term key publishes its base h with n (``PaillierKey`` reply)
and every pooled value is h^a (a short secret exponent) instead of r^n; either kind is a valid
randomiser for its key, so a pool stays usable whatever the owner chose.

Never used twice: a query's session process is handed the pools (they are removed here first);
after a successful run it reports how many of each it left untouched, and only those come back.
A failed or killed session's pools are thrown away.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dialect.errors import Error
from engine.protocols import paillier
from engine.protocols.paillier import key_id

log = logging.getLogger("mpcsql.pools")

BATCH = 256  # randomisers per background job: ~1 s of a 2-core machine, then look again
NICE = 19  # background work yields the CPU to queries and everything else


class PaillierPools:
    """A party's long-term Paillier key (data parties) and its pools of randomisers per key."""

    def __init__(self, role: str, target: int, key_bits: int, *, batch: int = BATCH,
                 workers: int | None = None, randomness: str = paillier.DEFAULT_RANDOMNESS):
        self.role, self.target, self.key_bits = role, int(target), int(key_bits)
        self.randomness = randomness  # of this data party's long-term key (DJN: publishes h)
        self.batch, self.workers = batch, workers
        self.keypair: tuple[Any, Any] | None = None
        self.keys: dict[int, tuple[Any, Any]] = {}  # n -> (public key, private key or None)
        self.owners: dict[int, str] = {}  # n -> party whose key it is
        self.pools: dict[int, list[int]] = {}
        self.fill_seconds = 0.0  # wall-clock seconds with a background job running
        self.cpu_seconds = 0.0  # CPU seconds of the background workers
        self.made = 0
        self.discarded = 0
        self._key_lock = asyncio.Lock()
        self._job: paillier.RandomizerJob | None = None

    @property
    def enabled(self) -> bool:
        return self.target > 0

    async def own_keypair(self, party: str) -> tuple[Any, Any]:
        """This data party's long-term key pair, generated on first use."""
        async with self._key_lock:
            if self.keypair is None:
                pub, priv = await asyncio.to_thread(paillier.generate_keypair, self.key_bits,
                                                    self.randomness)
                self.keypair = (pub, priv)
                self._use_key(pub, priv, party)
                log.info("long-term %d-bit Paillier key %s", self.key_bits, key_id(pub.n))
            return self.keypair

    def set_peer_key(self, party: str, n: int, h: int | None = None,
                     order_bits: int | None = None) -> None:
        """The helper learned ``party``'s current public key (``h``: its DJN base, checked:
        the pool's re-randomisers are then h^a; None: classic r^n; ``order_bits``: a subgroup
        key's bound on h's order, checked: a' of that many bits + SIGMA); a replaced key's
        pool goes."""
        n = int(n)
        pub = paillier.public_key(n, h, order_bits)  # ProtocolError if invalid (logged by run)
        if n in self.keys and (paillier.djn_h(self.keys[n][0]), paillier.djn_order_bits(
                self.keys[n][0])) == (paillier.djn_h(pub), paillier.djn_order_bits(pub)):
            return
        for old, owner in list(self.owners.items()):
            if owner == party:
                self.discarded += len(self.pools.pop(old, []))
                self.keys.pop(old, None)
                self.owners.pop(old, None)
        self._use_key(pub, None, party)

    def _use_key(self, pub, priv, party: str) -> None:
        self.keys[int(pub.n)] = (pub, priv)
        self.owners[int(pub.n)] = party
        self.pools.setdefault(int(pub.n), [])

    # --- handing pools to a query --------------------------------------------------------

    def take(self) -> dict[int, list[int]]:
        """Every non-empty pool, removed from here, for one query's session."""
        out = {n: v for n, v in self.pools.items() if v}
        for n in out:
            self.pools[n] = []
        return out

    def give_back(self, handed: dict[int, list[int]], left: dict[str, int] | None) -> None:
        """Return the values a successful session left untouched (``left``: key id -> count,
        as the session reports them; it uses values from the end).  Without a report (the
        session failed) every handed value is thrown away."""
        for n, values in handed.items():
            k = (left or {}).get(key_id(n))
            if k is None or not 0 <= k <= len(values) or n not in self.pools:
                self.discarded += len(values)
                continue
            self.pools[n] = values[:k] + self.pools[n]

    # --- background filling --------------------------------------------------------------

    def _wanted(self) -> tuple[int, int] | None:
        """The key whose pool is emptiest relative to the target, and a batch size for it."""
        short = [(len(v), n) for n, v in self.pools.items() if len(v) < self.target]
        if not short:
            return None
        have, n = min(short)
        return n, min(self.batch, self.target - have)

    async def run(self, idle: Callable[[], bool],
                  fetch_keys: Callable[[], Awaitable[dict[str, Any]]] | None,
                  own_party: str | None, stopping: asyncio.Event) -> None:
        """Fill the pools up to the target while ``idle()``; ``fetch_keys`` (the helper) asks
        the data parties for their current public keys ((n, h): h the key's DJN base or None;
        a bare n: classic; None: no answer yet; 0: that party keeps no long-term key); it asks
        again
        every 10 s while idle (a restarted data party has a new key), every second while a
        party has not answered."""
        next_fetch = 0.0
        while not stopping.is_set():
            try:
                if own_party is not None:
                    await self.own_keypair(own_party)
                if fetch_keys is not None and time.monotonic() > next_fetch and idle():
                    keys = await fetch_keys()
                    for party, key in keys.items():
                        if not key:
                            continue
                        try:
                            self.set_peer_key(party, *(key if isinstance(key, tuple) else (key,)))
                        except Error as e:  # e.g. an invalid h: no pool for that key
                            log.info("Paillier pool: %s's key refused: %s", party, e)
                    missing = not keys or None in keys.values()
                    next_fetch = time.monotonic() + (1.0 if missing else 10.0)
                want = self._wanted() if idle() else None
                if want is None:
                    await asyncio.sleep(0.5)
                    continue
                await self._fill(*want)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a pool is an optimisation: log, retry
                log.info("Paillier pool: %s: %s", type(e).__name__, e)
                await asyncio.sleep(2.0)

    async def _fill(self, n: int, count: int) -> None:
        pub, priv = self.keys[n]
        t0 = time.monotonic()
        self._job = paillier.RandomizerJob(pub, count, private_key=priv, workers=self.workers,
                                           nice=NICE)
        try:
            while not self._job.ready():
                await asyncio.sleep(0.05)
            values = self._job.result()
        finally:
            job, self._job = self._job, None
            job.cancel()
        self.fill_seconds += time.monotonic() - t0
        self.cpu_seconds += job.cpu_seconds
        if n in self.pools:  # the key may have been replaced meanwhile
            self.pools[n].extend(values)
            self.made += len(values)

    def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def describe(self) -> dict[str, Any]:
        """What ``mpcsql status`` shows: the target, each key's pool, the background work."""
        return {"target": self.target,
                "keys": [{"key": key_id(n), "owner": self.owners.get(n), "ready": len(v)}
                         for n, v in self.pools.items()],
                "made": self.made, "discarded": self.discarded,
                "fill_seconds": round(self.fill_seconds, 3),
                "cpu_seconds": round(self.cpu_seconds, 3),
                "workers": self.workers or os.cpu_count()}
