"""The skeleton both private joins share: agree a key, shuffle and hash, match at the helper.

1. The data parties L and R agree on a fresh 256-bit key that the helper H never sees.
2. Each data party shuffles its rows (a uniformly random permutation from a cryptographic
   source), computes keyed hashes (HMAC-SHA256) of its ids in that order and sends them to H
   with a protocol-specific payload for its values (Paillier ciphertexts, or PRF-masked words).
3. H matches the hashes, fixes a uniformly random output order and announces the intersection
   size m to L and R — or one "too small" bit if m is below the largest minimum.

What each party learns here: L and R learn m (or the bit); H learns |L|, |R| (the number of
hashes it receives) and m, never an id or a value.

Progress (:func:`step`): every party reports the steps above as it starts them, with counts
it already knows (its own row count, m once announced); the steps before m is announced are
not public (:func:`public_steps`): see engine/session/progress.py.
"""

from __future__ import annotations

import os
from asyncio import Future
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from mpyc.asyncoro import mpc_coro

from dialect.errors import DataError, ProtocolError
from engine.protocols import paillier
from engine.protocols import spill as spill_mod
from engine.protocols.channel import Channel, announce_size
from engine.protocols.joins import hashing, outofcore
from planner.plan import PrivateJoin

KEY_BYTES = 32
#: Rows per chunk of the masked join's row-proportional steps (hashing, masking, the upload to
#: the helper, positions, share derivation, A2S).  Public and the same at every party, so all
#: make the same messages and MPyC calls; a table of at most this many rows is one chunk.
CHUNK_ROWS = 1 << 18


def step(chan: Channel, phase: str, total: int | None = None, unit: str | None = None
         ) -> Callable[[int], None] | None:
    """Report that this party starts ``phase`` (of ``total`` public units, counted by the
    returned function); None, and nothing reported, on a channel without progress reports.

    Counts must be public quantities this party knows (its own table size, the announced
    intersection size, constants of the plan), never anything that depends on a secret.
    """
    start = getattr(chan, "step", None)
    return start(phase, total, unit) if start is not None else None


def public_steps(chan: Channel, public: bool) -> None:
    """Mark the steps this party starts from now on as public or not (their phases, counts and
    timing depend only on what every party knows, e.g. after m is announced)."""
    mark = getattr(chan, "public_steps", None)
    if mark is not None:
        mark(public)


@dataclass
class Matched:
    """One party's view after the match: m, and what the rest of the join needs."""

    m: int
    key: bytes | None  # the data parties' key (None at the helper)
    inboxes: dict[str, dict[str, Any]] | None  # at the helper: what each data party sent
    pairs: np.ndarray | None  # at the helper: (m, 2) matched (left, right) positions


# --- keyed hashing -------------------------------------------------------------------------------


def keyed_hashes(key: bytes, ids: Any) -> bytes:
    """The keyed PRF of every id under ``key`` (:func:`hashing.prf`: AES-256 on one-block
    encodings of the canonical ids, HMAC-SHA256 for longer ones), each the 16-byte word
    (the wire's paillier.HASH_BYTES), concatenated.  ``ids`` is a numpy integer
    array or a sequence of ids."""
    return hashing.keyed_hashes(key, ids, paillier.HASH_BYTES)


def hash_words(blob: bytes) -> np.ndarray:
    """Each 16-byte keyed hash as (n, 2) uint64 words (the helper's
    matching key: two different ids collide with probability 2^-128 a pair)."""
    if len(blob) % paillier.HASH_BYTES:
        raise ProtocolError("malformed hash list")
    return np.frombuffer(blob, dtype="<u8").reshape(-1, paillier.HASH_BYTES // 8)[:, :2].copy()


def match_words(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Helper: the (m, 2) int64 positions (i, j) with left[i] == right[j], in a uniformly
    random order (cryptographic source); DataError on a duplicated hash within one side.

    Numpy sort-merge on the hash words (O(n) words, no Python object per row): each side's
    first words, their low b = bits(n - 1) bits replaced by the row's index, are sorted as
    plain uint64 values (one value sort, ~10x faster than an argsort); the sorted right high
    parts are looked up by binary search in the left ones and each candidate pair is kept if
    both of its words are equal.  Rows whose high parts tie within a side (~n^2 / 2^(65-b))
    have their full words compared, so a duplicate is refused exactly as before.
    """
    nl, nr = left.shape[0], right.shape[0]
    low = np.uint64((1 << max(1, (max(nl, nr) - 1).bit_length())) - 1)
    hl, il, ties_l = _sorted_side(left, low)
    hr, ir, _ = _sorted_side(right, low)
    if nl == 0 or nr == 0:
        return np.zeros((0, 2), dtype=np.int64)
    lo = np.searchsorted(hl, hr)  # sorted needles: a merge (random ones: cache misses)
    if not ties_l:
        hit = np.flatnonzero(hl[np.minimum(lo, nl - 1)] == hr)
        li, ri = il[lo[hit]], ir[hit]
    else:  # rare: equal high parts within the left side: every left row of the run
        cnt = np.searchsorted(hl, hr, "right") - lo
        first = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt)
        li, ri = il[first + np.arange(first.size)], ir[np.repeat(np.arange(nr), cnt)]
    del hl, il, hr, ir, lo
    same = np.empty(li.size, dtype=bool)
    for a in range(0, li.size, 1 << 20):  # row gathers (2x faster than per word), bounded
        b = a + (1 << 20)
        same[a:b] = (np.take(left, li[a:b], axis=0)
                     == np.take(right, ri[a:b], axis=0)).all(axis=1)
    pairs = np.stack([li[same], ri[same]], axis=1)
    return np.take(pairs, paillier.random_permutation(pairs.shape[0]), axis=0)


def _sorted_side(words: np.ndarray, low: np.uint64) -> tuple[np.ndarray, np.ndarray, bool]:
    """One side of :func:`match_words`: the sorted high parts of its first words, the row of
    each (int64) and whether high parts tie; DataError if two rows have equal words."""
    v = words[:, 0] & ~low
    v |= np.arange(v.size, dtype=np.uint64)
    v.sort()
    rows = (v & low).astype(np.int64)
    v &= ~low
    tie = np.flatnonzero(v[1:] == v[:-1])
    if tie.size:  # equal words have equal high parts: compare those rows' words in full
        run = words[rows[np.unique(np.concatenate([tie, tie + 1]))]]
        if np.unique(run, axis=0).shape[0] != run.shape[0]:
            raise DataError("duplicate join keys reached the helper")
    return v, rows, bool(tie.size)


# --- chunked upload to the helper ---------------------------------------------------------------


def chunk_bounds(n: int, size: int = CHUNK_ROWS) -> Iterator[tuple[int, int]]:
    """The upload's chunks of n rows: full chunks of ``size`` rows, then one of fewer rows
    (possibly none), so the receiver knows the last one without being told n."""
    start = 0
    while True:
        stop = min(n, start + size)
        yield start, stop
        if stop - start < size:
            return
        start = stop


@mpc_coro
async def _upload(chan: Channel, label: str, sender: str, receiver: str,
                  chunks: Callable[[], Iterator[dict[str, Any]]] | None,
                  rows_of: Callable[[dict[str, Any]], int], size: int,
                  keep: Callable[[dict[str, Any]], dict[str, Any]] | None) -> Future:
    """``sender`` sends ``receiver`` its chunks until one has fewer than ``size`` rows; the
    receiver acknowledges each full chunk before the next is sent ("chunk_received"), so at
    most one chunk is buffered whatever the speeds (no ack for the last, short chunk: a table
    of fewer than ``size`` rows is one message, as unchunked).

    One MPyC coroutine at every party: inside it only the sender and the receiver exchange
    messages (the third party's program counter moves by this one call), so the third party
    learns nothing, not even the number of chunks.  Returns the received chunks at the
    receiver, each as ``keep`` makes it (a refusal as an exception object: raised by the
    caller)."""
    me = chan.party
    got: list[dict[str, Any]] = []
    try:
        if me == sender:
            for msg in chunks():
                await chan.send(label, msg, sender, [receiver])
                if rows_of(msg) == size:  # flow control: at most one chunk in flight
                    await chan.send("chunk_received", None, receiver, [sender])
        elif me == receiver:
            while True:
                msg = await chan.send(label, None, sender, [receiver])
                if not isinstance(msg, dict):
                    raise ProtocolError(f"malformed {label} message", party=sender)
                rows = rows_of(msg)
                got.append(msg if keep is None else keep(msg))
                del msg  # with ``keep``: only what it kept (unless in the transcript)
                if rows < size:
                    break
                await chan.send("chunk_received", True, receiver, [sender])
    except Exception as e:  # noqa: BLE001 - raised by the caller, outside MPyC's task
        return e
    return got


async def upload(chan: Channel, label: str, sender: str, receiver: str,
                 chunks: Callable[[], Iterator[dict[str, Any]]] | None,
                 rows_of: Callable[[dict[str, Any]], int], size: int = CHUNK_ROWS,
                 keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                 ) -> list[dict[str, Any]]:
    """:func:`_upload`, raising what it refused."""
    got = await _upload(chan, label, sender, receiver, chunks, rows_of, size, keep)
    if isinstance(got, Exception):
        raise got
    return got


def _as_words(msg: dict[str, Any]) -> dict[str, Any]:
    """What the helper keeps of an uploaded chunk: its row count, the hashes' matching words
    (two uint64 per row) and the rest of the payload."""
    out = {k: v for k, v in msg.items() if k != "hashes"}
    out["rows"] = _hash_rows(msg)
    out["words"] = hash_words(msg["hashes"])
    return out


def _hash_rows(msg: dict[str, Any]) -> int:
    hashes = msg.get("hashes")
    if not isinstance(hashes, bytes) or len(hashes) % paillier.HASH_BYTES:
        raise ProtocolError("malformed hash list")
    return len(hashes) // paillier.HASH_BYTES


async def hash_and_match(
    chan: Channel,
    join: PrivateJoin,
    *,
    key_label: str,
    rows_label: str,
    hash_key: Callable[[bytes], bytes],
    payload: Callable[[bytes, np.ndarray], dict[str, Any]] | None = None,
    chunk_payload: Callable[[bytes, np.ndarray, int], dict[str, Any]] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    inbox: Callable[[str], Any] | None = None,
    spill: Any = None,
) -> Matched:
    """Steps 1-3 above; ``payload(key, order)`` is a data party's value message (shuffled).

    With ``chunk_payload(key, values, start)`` instead, a data party hashes and sends its
    shuffled rows in chunks of ``chunk_rows`` (:func:`upload`; ``values`` are the chunk's rows,
    ``start`` its first shuffled position); the helper keeps each party's chunks in
    ``inbox(party)`` (an :class:`engine.protocols.joins.outofcore.Inbox`: in memory, or on
    disk beyond ``spill.rows``), and its pairs are then an array or an on-disk
    :class:`~engine.protocols.joins.outofcore.PairFile`.  A data party whose rows are spilled
    (:class:`engine.protocols.spill.SpilledRows`) shuffles them on disk
    (:func:`engine.protocols.spill.shuffled_rows`).
    """
    left, right, helper = join.left.party, join.right.party, join.helper
    me = chan.party
    key = await chan.send(key_label, os.urandom(KEY_BYTES) if me == left else None, left,
                          [right])
    outbox = None
    public_steps(chan, False)  # a party's own sizes and timing, until m is announced
    chunks = None
    if me in (left, right):
        data = chan.local
        step(chan, "hashing ids")
        hkey = hash_key(key)
        if isinstance(data, spill_mod.SpilledRows):
            shuffled = spill_mod.shuffled_rows(data, spill, chunk_rows)

            def chunks() -> Iterator[dict[str, Any]]:
                start = 0
                for ids, values in shuffled:
                    hashes = keyed_hashes(hkey, ids)
                    chan.phase("hash")
                    yield {"hashes": hashes, **chunk_payload(key, values, start)}
                    start += len(ids)
        else:
            order = paillier.random_permutation(len(data.ids))
            ids = data.ids if isinstance(data.ids, np.ndarray) else None
            if chunk_payload is None:
                shuffled = ids[order] if ids is not None else (data.ids[i] for i in order)
                hashes = keyed_hashes(hkey, shuffled)
                chan.phase("hash")
                outbox = {"hashes": hashes, **payload(key, order)}
                step(chan, "sending rows to the helper")
            else:
                values = np.asarray(data.values, dtype=np.float64)
                if values.ndim != 2:
                    values = values.reshape(len(order), -1 if values.size else 0)

                def chunks() -> Iterator[dict[str, Any]]:
                    for start, stop in chunk_bounds(len(order), chunk_rows):
                        part = order[start:stop]
                        hashes = keyed_hashes(hkey, ids[part] if ids is not None
                                              else [data.ids[i] for i in part])
                        chan.phase("hash")
                        yield {"hashes": hashes, **chunk_payload(key, values[part], start)}
    else:
        step(chan, "waiting for the data parties' rows")
    boxes = {p: inbox(p) for p in (left, right)} if me == helper and inbox is not None else {}

    def keeper(party: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        box = boxes.get(party)
        if box is None:
            return _as_words
        return lambda msg: box.keep(msg, _hash_rows(msg), hash_words(msg["hashes"]))

    if chunk_payload is None:
        inbox_l = await chan.send(rows_label, outbox if me == left else None, left, [helper])
        inbox_r = await chan.send(rows_label, outbox if me == right else None, right, [helper])
    else:
        inbox_l = await upload(chan, rows_label, left, helper,
                               chunks if me == left else None, _hash_rows, chunk_rows,
                               keeper(left))
        inbox_r = await upload(chan, rows_label, right, helper,
                               chunks if me == right else None, _hash_rows, chunk_rows,
                               keeper(right))
    pairs = None
    step(chan, "matching ids" if me == helper else "helper matching ids")
    if me == helper:
        if boxes:
            inbox_l, inbox_r = boxes[left], boxes[right]
            chan.opened("table_sizes", (inbox_l.n, inbox_r.n))
            pairs = outofcore.match(inbox_l, inbox_r, match_words)
        else:
            if chunk_payload is None:
                words = [hash_words(inbox_l["hashes"]), hash_words(inbox_r["hashes"])]
            else:
                words = []
                for box in (inbox_l, inbox_r):
                    words.append(np.concatenate([c["words"] for c in box]))
                    for c in box:
                        del c["words"]
            chan.opened("table_sizes", (len(words[0]), len(words[1])))
            pairs = match_words(*words)
            del words
        chan.phase("match")
    m = await announce_size(chan, "intersection_size", len(pairs) if me == helper else None,
                            helper, [left, right], "the intersection")
    public_steps(chan, True)  # from here on everything depends on m and the plan only
    inboxes = {left: inbox_l, right: inbox_r} if me == helper else None
    return Matched(m, key if me != helper else None, inboxes, pairs)
