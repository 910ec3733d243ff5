"""One query's secure computation at one party: an MPyC session among the three parties.

The party server forks a fresh process per query and calls :func:`run_job` in it, so MPyC's
module-level runtime is never reused and killing the process aborts the query cleanly.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dialect.errors import OperationalError
from engine.protocols import aggregates, paillier
from engine.protocols import runtime as mpcrt
from engine.protocols.fieldwords import ints_to_words
from engine.protocols.fixedpoint import encode
from engine.protocols.shares import SharedTable, additive_to_shamir
from engine.server.pools import key_id
from engine.server.storage import LocalData
from planner.plan import Plan, PrivateJoin, Scan
from planner.policy import too_small


@dataclass
class Job:
    """Everything one party needs to run its part of a query."""

    query_id: str
    plan: Plan
    party: str
    pids: dict[str, int]  # party name -> MPyC index
    addresses: list[tuple[str, int]]  # MPyC listen address per pid
    local: LocalData | None  # this party's rows (None at the helper)
    min_rows: int  # largest minimum intersection/table size over all parties' policies
    min_rows_by: str | None = None  # the party whose policy sets min_rows (named in a refusal)
    key_bits: int = paillier.KEY_BITS
    transcript_dir: str | None = None
    connect_timeout: float = 30.0
    tls: Any = None  # engine.session.tls.SessionTLS: run the MPyC channels over mutual TLS
    paillier_key: tuple[Any, Any] | None = None  # a data party's long-term key pair (pools on)
    randomizers: dict[int, list[int]] = field(default_factory=dict)  # n -> precomputed r^n


@dataclass
class SessionResult:
    rows: list[tuple] | None  # None at parties that do not receive the result
    stats: dict[str, Any] = field(default_factory=dict)


class Transcript:
    """What a party receives in the protocol (objects kept only when asked, for leakage tests)."""

    def __init__(self, job: Job):
        self.path = (os.path.join(job.transcript_dir, f"{job.query_id}-{job.party}.pkl")
                     if job.transcript_dir else None)
        self.items: list[dict[str, Any]] = []

    def record(self, label: str, sender: str, obj: Any, nbytes: int) -> None:
        self.items.append({"label": label, "from": sender, "nbytes": nbytes,
                           "obj": obj if self.path else None})

    def save(self, mpc_bytes_received: dict[str, int]) -> None:
        if self.path:
            with open(self.path, "wb") as f:
                pickle.dump({"messages": self.items, "mpc_bytes_received": mpc_bytes_received}, f)


class Session:
    """Point-to-point messages and phase timing on top of one MPyC runtime."""

    def __init__(self, job: Job, mpc):
        self.job = job
        self.mpc = mpc
        self.pid = job.pids[job.party]
        self.names = {i: n for n, i in job.pids.items()}
        self.transcript = Transcript(job)
        self.phases: dict[str, float] = {}
        self._t = time.perf_counter()

    def phase(self, name: str) -> None:
        """Close the running phase under ``name``."""
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self._t
        self._t = now

    async def send(self, label: str, obj: Any, sender: str, receivers: list[str]) -> Any:
        """Send ``obj`` from ``sender`` to ``receivers``; returns it at the receivers."""
        s = self.job.pids[sender]
        rs = [self.job.pids[r] for r in receivers]
        out = await self.mpc.transfer(obj if self.pid == s else None, senders=[s], receivers=rs)
        self.phase("wait for peers")
        if self.pid in rs and self.pid != s:
            got = out[0]
            self.transcript.record(label, sender, got, len(pickle.dumps(got)))
            return got
        return obj if self.pid == s else None


def _patch_connection_loss(state: dict[str, Any]) -> None:
    """Make a lost peer connection abort the session instead of hanging it."""
    ex = mpcrt.mpyc.asyncoro.MessageExchanger
    orig_lost = ex.connection_lost
    orig_recv = ex.data_received

    def connection_lost(self, exc):
        if not state["closing"]:
            # Keep the dead peer's protocol object: MPyC would otherwise fail on its next send
            # inside a coroutine and stop the event loop; the session is aborted instead.
            if not state["lost"].done():
                state["lost"].set_result(self.peer_pid)
            return
        orig_lost(self, None)

    def data_received(self, data):
        if self.peer_pid is not None:
            state["received"][self.peer_pid] = state["received"].get(self.peer_pid, 0) + len(data)
        orig_recv(self, data)

    orig_send = ex.send

    def send(self, pc, payload):
        state["sent"][self.peer_pid] = state["sent"].get(self.peer_pid, 0) + 12 + len(payload)
        orig_send(self, pc, payload)

    ex.connection_lost = connection_lost
    ex.data_received = data_received
    ex.send = send


def _cpu_seconds() -> float:
    """User + system CPU time of this session process and its finished (worker) children."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _peak_rss_mb() -> float:
    """Peak resident memory of this session process and its (crypto worker) children, MB."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024.0  # Linux reports KiB


def _listen_only_on(loop, host: str) -> None:
    """MPyC listens on every interface; bind our session port to the configured host only."""
    create_server = loop.create_server

    def bound(*args, host_=host, **kwargs):
        kwargs.setdefault("host", host_)
        return create_server(*args, **kwargs)

    loop.create_server = bound


def _lost(state: dict[str, Any], peer: str) -> OperationalError:
    if state.get("tls_error"):
        return OperationalError(state["tls_error"], party=peer)
    return OperationalError(f"lost connection to party {peer} during the query", party=peer)


def run_job(job: Job) -> SessionResult:
    """Run this party's side of ``job`` to completion (blocking; call in a fresh process)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    addrs = [mpcrt.Address(h, p) for h, p in job.addresses]
    mpc = mpcrt.make_runtime(job.pids[job.party], addrs)
    _listen_only_on(loop, addrs[job.pids[job.party]].host)
    state: dict[str, Any] = {"closing": False, "lost": loop.create_future(), "received": {},
                             "sent": {}}
    _patch_connection_loss(state)
    if job.tls is not None:
        from engine.session.runner import tls as session_tls

        session_tls.install(loop, job.tls, job.pids[job.party],
                            {i: n for n, i in job.pids.items()}, list(job.addresses), state)
    sess = Session(job, mpc)
    try:
        return loop.run_until_complete(_run(sess, state))
    except RuntimeError as e:  # MPyC stops the loop when one of its coroutines fails
        if state["lost"].done():
            peer = sess.names.get(state["lost"].result(), "?")
            raise _lost(state, peer) from e
        raise


async def _run(sess: Session, state: dict[str, Any]) -> SessionResult:
    mpc = sess.mpc
    names = sess.names

    async def guarded(coro, timeout=None):
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({task, state["lost"]}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        if state["lost"].done():
            # A peer that stopped for a reason of its own (e.g. a policy refusal every party
            # reaches at once) closes its connections: give our own reason a moment to surface.
            await asyncio.wait({task}, timeout=1.0)
            if task.done():
                return task.result()
        task.cancel()
        if state["lost"].done():
            peer = names.get(state["lost"].result(), "?")
            raise _lost(state, peer)
        missing = [n for i, n in names.items()
                   if i != sess.pid and mpc.parties[i].protocol is None]
        if missing:
            raise OperationalError(
                f"timed out after {timeout:g} s connecting to the session port of party "
                f"{', '.join(missing)}", party=missing[0])
        raise OperationalError(f"timed out after {timeout:g} s waiting for the other parties")

    await guarded(mpc.start(), timeout=sess.job.connect_timeout)
    sess.phase("connect")
    try:
        rows = await guarded(_compute(sess))
        state["closing"] = True
        await guarded(mpc.shutdown(), timeout=30)
    except BaseException:
        state["closing"] = True
        for peer in mpc.parties:
            if peer.pid != mpc.pid and peer.protocol is not None:
                try:
                    peer.protocol.close_connection()
                except Exception:  # noqa: BLE001
                    pass
        sess.transcript.save({})  # what it received before stopping (leakage tests)
        raise
    received = {names[i]: n for i, n in state["received"].items()}
    sent = {names[i]: n for i, n in state["sent"].items()}
    sess.transcript.save(received)
    stats = {"phases": sess.phases, "bytes_received": received, "bytes_sent": sent,
             "peak_rss_mb": _peak_rss_mb(), "cpu_seconds": _cpu_seconds(),
             "tls_peers": sorted(state.get("tls_peers", ())),
             # Precomputed randomisers this session did not use (they are taken from the end).
             "pool_left": {key_id(n): len(v) for n, v in sess.job.randomizers.items()}}
    return SessionResult(rows, stats)


def _scale_for_models(job: Job) -> None:
    """Model aggregates work on |x| <= 1: divide each column by its public catalog bound."""
    plan = job.plan
    if job.local is None or not plan.aggregate.aggregates[0].is_model:
        return
    bits = {c.column.lower(): c.scale_bits or 0 for c in plan.shared.columns
            if c.party == job.party}
    scan = plan.scan_at(job.party)
    exps = np.array([-bits[c.lower()] for c in scan.columns], dtype=np.int64)
    job.local.values = np.ldexp(job.local.values, exps)  # exact: powers of two


async def _compute(sess: Session) -> list[tuple] | None:
    plan = sess.job.plan
    _scale_for_models(sess.job)
    sf = mpcrt.secfxp()
    if isinstance(plan.source, PrivateJoin) and plan.source.protocol == "masked":
        from engine.protocols.joins.masked import masked_join

        m, table = await masked_join(sess, plan.source, sf)
    elif isinstance(plan.source, PrivateJoin):
        m, table = await private_join(sess, plan.source, sf)
    else:
        m, table = await share_table(sess, plan.source, sf)
    return await aggregates.evaluate(sess, plan, m, table, sf)


async def announce_size(sess: Session, label: str, m: int | None, sender: str,
                        receivers: list[str], what: str) -> int:
    """``sender`` (who knows m) sends m to ``receivers`` only if m >= the largest minimum.

    Otherwise it sends ``None``, so a refusal reveals one bit ("too small") and never m.
    """
    job = sess.job
    ok = job.party != sender or m >= job.min_rows
    got = await sess.send(label, m if ok else None, sender, receivers)
    if job.party != sender:
        m = got
    if m is None or not ok:
        raise too_small(job.min_rows_by, job.min_rows, what=what)
    return m


async def share_table(sess: Session, scan: Scan, sf):
    """Single-table source: the owner secret-shares its (already checked) columns."""
    owner = scan.party
    n = await announce_size(sess, "row_count", len(sess.job.local.values)
                            if sess.job.party == owner else None, owner,
                            [p for p in sess.job.pids if p != owner], f"table {scan.table}")
    d = len(scan.columns)
    if n == 0 or d == 0:
        return n, None
    mine = sess.job.pids[owner] == sess.pid
    value = encode(sess.job.local.values) if mine else np.zeros((n, d), dtype=object)
    x = sf.array(sf.field.array(value), integral=False)
    shares = await sess.mpc.gather(sess.mpc.input(x, senders=sess.job.pids[owner]))
    sess.phase("share input")
    return n, SharedTable.from_field_values(sf, shares.value)


async def private_join(sess: Session, join: PrivateJoin, sf):
    """Published private inner join: keyed hashes, packed Paillier, helper masks; shares out."""
    job = sess.job
    left, right, helper = join.left.party, join.right.party, join.helper
    p = sf.field.order
    me = job.party
    d = {left: len(join.left.columns), right: len(join.right.columns)}

    # 1. The data parties agree on an HMAC key the helper never sees.
    key = await sess.send("hmac_key", os.urandom(32) if me == left else None, left, [right])

    # 2. Each data party shuffles its rows, hashes ids, encrypts packed values under its own key.
    outbox = None
    if me in (left, right):
        data = job.local
        order = list(range(len(data.ids)))
        paillier.shuffle(order)
        hashes = paillier.keyed_hashes(key, (data.ids[i] for i in order))
        sess.phase("hash")
        pub, priv = job.paillier_key or paillier.generate_keypair(job.key_bits)
        enc = encode(data.values[order]) if d[me] else None
        cts = paillier.encrypt_rows(pub, enc.tolist(), private_key=priv,
                                    randomizers=job.randomizers.get(int(pub.n))) if d[me] else []
        outbox = {"n": int(pub.n), "hashes": hashes, "cts": cts}
        sess.phase("encrypt")
    inbox_l = await sess.send("hashed_encrypted_rows", outbox if me == left else None,
                              left, [helper])
    inbox_r = await sess.send("hashed_encrypted_rows", outbox if me == right else None,
                              right, [helper])

    # 3. The helper matches keyed hashes and fixes a random output order.
    pairs = None
    if me == helper:
        pairs = paillier.match(paillier.split_hashes(inbox_l["hashes"]),
                               paillier.split_hashes(inbox_r["hashes"]))
        sess.phase("match")
    m = await announce_size(sess, "intersection_size", len(pairs) if me == helper else None,
                            helper, [left, right], "the intersection")
    if m == 0:
        return 0, None

    # 4. The helper masks and re-randomises the matched ciphertexts, in output order.
    boxes: dict[str, Any] = {left: None, right: None}
    hshares: dict[str, Any] = {}
    if me == helper:
        from phe import paillier as phe_paillier
        for party, inbox, idx in ((left, inbox_l, 0), (right, inbox_r, 1)):
            if d[party]:
                pub = phe_paillier.PaillierPublicKey(int(inbox["n"]))
                rows = [inbox["cts"][pair[idx]] for pair in pairs]
                boxes[party], hshares[party] = paillier.helper_mask(
                    pub, rows, d[party], p, randomizers=job.randomizers.get(int(pub.n)))
        sess.phase("mask")
    got = {}
    for party in (left, right):
        if d[party]:
            got[party] = await sess.send("masked_rows", boxes[party], helper, [party])

    # 5. Each data party decrypts its additive shares (v + r); the helper holds -r.
    share = None
    if me in (left, right) and d[me]:
        share = paillier.decrypt_shares(priv, got[me], d[me], p)
        sess.transcript.record("decrypted_shares", me, share, 0)  # what the owner now knows
        sess.phase("decrypt")

    # 6. Additive shares become Shamir shares by protocol A2S (engine/protocols/shares.py).
    blocks = []
    for party in (left, right):
        if not d[party]:
            continue
        words = None
        if me == party:
            words = ints_to_words(np.array(share, dtype=object).reshape(m, d[party]), p)
        elif me == helper:
            words = ints_to_words(np.array(hshares[party], dtype=object).reshape(m, d[party]), p)
        blocks.append(await additive_to_shamir(sess, (party, helper), words, m, d[party], sf))
    table = SharedTable.hstack(blocks) if blocks else None
    sess.phase("share input")
    return m, table
