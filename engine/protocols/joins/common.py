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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.protocols import paillier
from engine.protocols.channel import Channel, announce_size
from planner.plan import PrivateJoin

KEY_BYTES = 32


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
    pairs: list[tuple[int, int]] | None  # at the helper: matched (left, right) positions


async def hash_and_match(
    chan: Channel,
    join: PrivateJoin,
    *,
    key_label: str,
    rows_label: str,
    hash_key: Callable[[bytes], bytes],
    payload: Callable[[bytes, np.ndarray], dict[str, Any]],
) -> Matched:
    """Steps 1-3 above; ``payload(key, order)`` is a data party's value message (shuffled)."""
    left, right, helper = join.left.party, join.right.party, join.helper
    me = chan.party
    key = await chan.send(key_label, os.urandom(KEY_BYTES) if me == left else None, left,
                          [right])
    outbox = None
    public_steps(chan, False)  # a party's own sizes and timing, until m is announced
    if me in (left, right):
        data = chan.local
        step(chan, "hashing ids")
        order = paillier.random_permutation(len(data.ids))
        hashes = paillier.keyed_hashes(hash_key(key), (data.ids[i] for i in order))
        chan.phase("hash")
        outbox = {"hashes": hashes, **payload(key, order)}
        step(chan, "sending rows to the helper")
    else:
        step(chan, "waiting for the data parties' rows")
    inbox_l = await chan.send(rows_label, outbox if me == left else None, left, [helper])
    inbox_r = await chan.send(rows_label, outbox if me == right else None, right, [helper])
    pairs = None
    step(chan, "matching ids" if me == helper else "helper matching ids")
    if me == helper:
        chan.opened("table_sizes", (len(inbox_l["hashes"]) // paillier.HASH_BYTES,
                                    len(inbox_r["hashes"]) // paillier.HASH_BYTES))
        pairs = paillier.match(paillier.split_hashes(inbox_l["hashes"]),
                               paillier.split_hashes(inbox_r["hashes"]))
        chan.phase("match")
    m = await announce_size(chan, "intersection_size", len(pairs) if me == helper else None,
                            helper, [left, right], "the intersection")
    public_steps(chan, True)  # from here on everything depends on m and the plan only
    inboxes = {left: inbox_l, right: inbox_r} if me == helper else None
    return Matched(m, key if me != helper else None, inboxes, pairs)
