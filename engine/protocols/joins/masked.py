"""Masked private inner join (``SET join_protocol = 'masked'``): no public-key operation per row.

See docs/masked_join.md for the message flow and what each party learns.  In short: the data
parties L and R share a fresh key k the helper H never sees.  Each shuffles its rows and sends
H keyed hashes of its ids and its fixed-point values masked by PRF(k, party, position, column)
mod p.  H matches the hashes, picks a random output order and tells each data party the matched
positions in the *other* party's shuffled list.  Every joined value is then additively shared
mod p: H holds v + r (the masked value), the other data party -r (recomputed from k and the
position); protocol A2S (engine/protocols/shares.py) turns them into Shamir shares.

The PRF is one AES-256-CTR key stream per (party, column) (:mod:`engine.protocols.prf`), keyed
by a subkey of k; position i reads bytes [i*S, (i+1)*S) of the stream as an integer mod p,
with S chosen so that the result is within statistical distance 2^-64 of uniform mod p
(:func:`sample_bytes`: 16 bytes for the prime p = 2^128 - 173 of SecFxp(64, 32), distance
< 2^-120).  Values travel and are added as 64-bit words in numpy throughout; no Python int per
value.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import numpy as np

from dialect.errors import ProtocolError
from engine.protocols import fieldwords as fw
from engine.protocols import paillier
from engine.protocols.channel import Channel
from engine.protocols.fieldwords import (  # noqa: F401  (re-exported: the join's arithmetic)
    add_mod,
    int64_to_words,
    ints_to_words,
    neg_mod,
    value_words,
    words_to_ints,
)
from engine.protocols.fixedpoint import encode_int64
from engine.protocols.joins.common import CHUNK_ROWS, hash_and_match, step
from engine.protocols.joins.outofcore import (
    Inbox,
    PairFile,
    helper_chunk_words,
    helper_share_words,
)
from engine.protocols.prf import SIGMA, Stream, prf_ints, sample_bytes  # noqa: F401
from engine.protocols.prf import positions as _positions
from engine.protocols.prf import prf_words as _prf_words
from engine.protocols.shares import ChunkedTable, SharedTable, additive_to_shamir
from engine.protocols.spill import Spill, row_count
from planner.plan import PrivateJoin

DOMAIN = b"mpcsql/masked-join/v1/"
#: Chunks of positions the helper sends a plain-sum query before waiting for an acknowledgement.
ACK_CHUNKS = 8


# --- keys and the PRF --------------------------------------------------------------------------


def derive_key(key: bytes, purpose: bytes) -> bytes:
    """A 256-bit subkey of the data parties' key ``key`` for one ``purpose``."""
    return hmac.new(key, DOMAIN + purpose, hashlib.sha256).digest()


def id_key(key: bytes) -> bytes:
    """The HMAC-SHA256 key for hashing join ids (independent of the mask keys)."""
    return derive_key(key, b"id-hash")


def _seed(key: bytes, party: str, column: int) -> bytes:
    name = party.encode()
    return (derive_key(key, b"mask") + len(name).to_bytes(2, "big") + name
            + column.to_bytes(4, "big"))


def prf(key: bytes, party: str, column: int, positions: np.ndarray, modulus: int) -> np.ndarray:
    """PRF(key, party, position, column) mod ``modulus`` per position, as Python ints.

    The reference definition: position i reads bytes [i*S, (i+1)*S) of the AES-256-CTR key
    stream of (key, party, column) as a little-endian integer, S = :func:`sample_bytes`.
    """
    return prf_ints(_seed(key, party, column), positions, modulus)


def prf_words(
    key: bytes, party: str, column: int, positions: np.ndarray, modulus: int
) -> np.ndarray:
    """:func:`prf` as (K, len(positions)) 64-bit words, vectorised in numpy."""
    return _prf_words(_seed(key, party, column), positions, modulus)


def masks(key: bytes, party: str, d: int, positions: np.ndarray, modulus: int) -> np.ndarray:
    """(K, len(positions), d) words: the masks of ``party``'s columns 0..d-1 at ``positions``."""
    pos = _positions(positions)
    out = np.empty((value_words(modulus), pos.size, d), dtype=np.uint64)
    for j in range(d):
        out[:, :, j] = prf_words(key, party, j, pos, modulus)
    return out


# --- the parties' local steps ------------------------------------------------------------------


def secure_permutation(n: int) -> np.ndarray:
    """A uniformly random permutation of range(n) from a cryptographic source."""
    return paillier.random_permutation(n)


def mask_rows(key: bytes, party: str, values: np.ndarray, modulus: int,
              streams: list[Stream] | None = None) -> bytes:
    """Owner: encodings of its (shuffled) n x d rows plus their masks mod p, as wire bytes.

    Wire format: K blocks (least significant word first) of n*d little-endian uint64 each.
    ``streams`` (one :class:`Stream` per column, from :func:`mask_streams`) continue the
    masks where the previous chunk of rows stopped; without them the rows are positions 0..n-1.
    """
    n, d = values.shape
    enc = encode_int64(values)
    pos = np.arange(n)
    out = np.empty((value_words(modulus), n, d), dtype="<u8")
    for j in range(d):  # column by column: temporaries of n values, not n x d
        r = streams[j].take(n) if streams is not None else prf_words(key, party, j, pos, modulus)
        out[:, :, j] = add_mod(int64_to_words(enc[:, j], modulus), r, modulus)
    return out.tobytes()


def mask_streams(key: bytes, party: str, d: int, modulus: int) -> list[Stream]:
    """The PRF streams of ``party``'s d columns, read from position 0 on (:func:`mask_rows`)."""
    return [Stream(_seed(key, party, j), modulus) for j in range(d)]


def other_share_words(
    key: bytes, owner: str, d: int, positions: np.ndarray, modulus: int
) -> np.ndarray:
    """The other data party: its shares -PRF(k, owner, position, column) mod p, as words."""
    pos = _positions(positions)
    out = np.empty((value_words(modulus), pos.size, d), dtype=np.uint64)
    for j in range(d):
        out[:, :, j] = neg_mod(prf_words(key, owner, j, pos, modulus), modulus)
    return out


def helper_shares(blob: bytes, n: int, d: int, rows: np.ndarray, modulus: int) -> np.ndarray:
    """:func:`helper_share_words` as an object array of ints."""
    return words_to_ints(helper_share_words(blob, n, d, rows, modulus))


def other_shares(
    key: bytes, owner: str, d: int, positions: np.ndarray, modulus: int
) -> np.ndarray:
    """:func:`other_share_words` as an object array of ints."""
    return words_to_ints(other_share_words(key, owner, d, positions, modulus))


async def masked_join(chan: Channel, join: PrivateJoin, sf, *, chunk_rows: int = CHUNK_ROWS,
                      stream: bool = False, spill: Spill | None = None) -> tuple[int, Any]:
    """Masked private inner join; returns m and the m x (d_L + d_R) secret-shared table.

    Every row-proportional step runs in chunks of ``chunk_rows`` rows (public, the same at
    every party): a data party hashes, masks and uploads its shuffled rows chunk by chunk;
    after m is announced, the positions, the shares' derivation and A2S go output chunk by
    output chunk.  With ``stream`` the table is a :class:`ChunkedTable` whose chunks are
    computed as its consumer iterates them (never all rows at once); else it is materialized.

    With ``spill`` (streaming only), a party keeps the per-row state that outlives a chunk on
    disk once a table has more than ``spill.rows`` rows (docs/masked_join.md): a data party's
    spilled rows (:class:`SpilledRows`) are shuffled on disk, the other owner's masks go to a
    file read at the matched positions, and the helper's words, masked values and pairs go to
    disk (:mod:`engine.protocols.joins.outofcore`).  Messages and results do not change.
    """
    me, p = chan.party, sf.field.order
    d = {join.left.party: len(join.left.columns), join.right.party: len(join.right.columns)}
    spill = spill if stream else None  # a materialized table holds every row anyway
    streams: list[Stream] = []

    def masked_chunk(key: bytes, values: np.ndarray, start: int) -> dict[str, Any]:
        if start == 0:
            step(chan, "masking values")
            streams[:] = mask_streams(key, me, d[me], p)
        out = {"masked": mask_rows(key, me, values.reshape(len(values), d[me]), p, streams)}
        chan.phase("mask")
        return out

    def inbox(owner: str) -> Inbox:
        return Inbox(spill, d[owner], p, chunk_rows)

    # 1-3. Key, shuffle, keyed hashes and PRF-masked values to H in chunks, match, announce m.
    matched = await hash_and_match(chan, join, key_label="join_key",
                                   rows_label="hashed_masked_rows", hash_key=id_key,
                                   chunk_payload=masked_chunk, chunk_rows=chunk_rows,
                                   inbox=inbox, spill=spill)
    if matched.m == 0 or not any(d.values()):
        _drop(matched.inboxes, matched.pairs)
        return matched.m, None
    inboxes, matched.inboxes = matched.inboxes or {}, None
    run = _Conversion(chan, join, sf, matched.m, matched.key, matched.pairs, inboxes, spill,
                      chunk_rows)
    await run.exchange_row_counts()
    table = ChunkedTable(sf, matched.m, sum(d.values()), run.chunks, run.totals)
    return matched.m, table if stream else await table.materialize()


class _Conversion:
    """Steps 4-5 of the masked join at one party, after the helper announced m: the positions
    of each output chunk, every joined value's additive shares (H: v + r, the other data party:
    -r) and their conversion to Shamir shares (A2S, engine/protocols/shares.py), computed as
    the consumer asks for the chunks (:meth:`chunks`) or only their column sums
    (:meth:`totals`)."""

    def __init__(self, chan: Channel, join: PrivateJoin, sf, m: int, key: bytes | None,
                 pairs: Any, inboxes: dict[str, Any], spill: Spill | None,
                 chunk_rows: int) -> None:
        self.chan, self.sf, self.m, self.key, self.pairs = chan, sf, m, key, pairs
        self.inboxes, self.spill, self.chunk_rows = inboxes, spill, chunk_rows
        self.left, self.right, self.helper = join.left.party, join.right.party, join.helper
        self.other = {self.left: self.right, self.right: self.left}
        self.d = {self.left: len(join.left.columns), self.right: len(join.right.columns)}
        self.me, self.p = chan.party, sf.field.order
        self.counts: dict[str, int] = {}  # the other data party: each owner's row count n
        self.seen: dict[str, np.ndarray] = {}  # ... and which of its n positions it was sent

    def _owners(self) -> list[str]:
        return [o for o in (self.left, self.right) if self.d[o]]

    def _ranges(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.m, self.chunk_rows):
            yield start, min(self.m, start + self.chunk_rows)

    async def exchange_row_counts(self) -> None:
        """4. The owner tells the other data party its row count (which the plan discloses to
        it anyway), so that the helper's positions can be checked before anything is derived."""
        step(self.chan, "exchanging positions")
        for owner in self._owners():
            mine = row_count(self.chan.local) if self.me == owner else None
            n = await self.chan.send("row_count", mine, owner, [self.other[owner]])
            if self.me == self.other[owner]:
                self.chan.opened(f"row_count:{owner}", n)
                if not isinstance(n, int) or isinstance(n, bool) or n < self.m:
                    raise ProtocolError(f"party {owner} announced a malformed row count",
                                        party=owner)
                self.counts[owner] = n
                self.seen[owner] = np.zeros(n, dtype=bool)  # positions are distinct

    def _finish(self) -> None:
        _drop(self.inboxes, self.pairs)
        self.inboxes.clear()

    async def chunks(self):
        """5. Output chunk by output chunk: H tells each data party where the chunk's matches
        lie in the *other* party's shuffled list; the additive shares of every joined value go
        through A2S."""
        step(self.chan, "converting shares")
        for start, stop in self._ranges():
            blocks = []
            for owner, share in await self._additive_chunk(start, stop):
                blocks.append(await additive_to_shamir(
                    self.chan, (self.helper, self.other[owner]), share, stop - start,
                    self.d[owner], self.sf))
                del share
                self.chan.phase("share input")
            yield SharedTable.hstack(blocks)
        self._finish()

    async def totals(self) -> SharedTable:
        """Shamir shares of the m rows' column sums.  The additive shares are linear, so after
        the same position messages as :meth:`chunks` each holder sums its shares over the
        matched rows in one sequential pass (the helper over the masked values it received,
        the other data party over the owner's PRF streams, at the positions it was sent), and
        A2S converts the d sums once instead of every value."""
        chan, me, helper = self.chan, self.me, self.helper
        step(chan, "summing shares")
        hit = {o: np.zeros(self.inboxes[o].n, dtype=bool) for o in self._owners()
               if me == helper}
        for i, (start, stop) in enumerate(self._ranges()):
            for owner, pos in (await self._exchange_positions(start, stop)).items():
                if me == helper and pos is not None:
                    hit[owner][pos] = True
                elif pos is not None and chan.recording:  # what it could derive, for the tests
                    chan.observe("derived_shares", words_to_ints(self._other_share(owner, pos)))
            if (i + 1) % ACK_CHUNKS == 0 and stop < self.m:
                await self._positions_received()
        chan.phase("derive shares")
        blocks = []
        for owner in self._owners():
            sums = None
            if me == helper:
                sums = self.inboxes[owner].sums(hit.pop(owner))
            elif me == self.other[owner]:
                sums = self._other_sums(owner)
            chan.phase("derive shares")
            mine = None if sums is None else fw.ints_to_words(sums.reshape(1, self.d[owner]),
                                                              self.p)
            blocks.append(await additive_to_shamir(chan, (helper, self.other[owner]), mine, 1,
                                                   self.d[owner], self.sf))
            chan.phase("share input")
        self._finish()
        return SharedTable.hstack(blocks)

    def _other_sums(self, owner: str) -> np.ndarray:
        """The other data party: the sums -sum F(k, owner, i, j) over the matched positions i
        (marked in ``seen`` as they arrived), the PRF computed at those positions only."""
        p, d, seen = self.p, self.d[owner], self.seen[owner]
        acc = np.zeros(d, dtype=object)
        for start in range(0, seen.size, self.chunk_rows):  # O(chunk) positions at a time
            pos = np.flatnonzero(seen[start:start + self.chunk_rows]) + start
            for j in range(d):
                f = prf_words(self.key, owner, j, pos, p)
                acc[j] = (acc[j] + int(fw.sum_mod(f, p, axis=0))) % p
        return np.array([(-int(v)) % p for v in acc], dtype=object)

    async def _positions_received(self) -> None:
        """Flow control of :meth:`totals`: nothing else makes the helper wait for the data
        parties there, so each acknowledges every ACK_CHUNKS-th chunk of positions (at most
        that many are buffered; without it 1.6 GB of positions queued at 10^8 rows)."""
        for owner in self._owners():
            mine = True if self.me == self.other[owner] else None
            got = await self.chan.send("positions_received", mine, self.other[owner],
                                       [self.helper])
            if self.me == self.helper and got is not True:
                raise ProtocolError("malformed positions_received message",
                                    party=self.other[owner])

    async def _exchange_positions(self, start: int, stop: int) -> dict[str, np.ndarray | None]:
        """H tells each data party where output rows start..stop-1 lie in the *other* party's
        shuffled list (checked there: distinct, in range, new); None where a party has none."""
        positions: dict[str, np.ndarray | None] = {}
        for owner, col in ((self.left, 0), (self.right, 1)):
            if not self.d[owner]:
                continue
            mine = self.pairs[start:stop, col] if self.me == self.helper else None
            got = await self.chan.send("matched_positions", mine, self.helper,
                                       [self.other[owner]])
            positions[owner] = None
            if self.me == self.helper:
                positions[owner] = mine
            elif self.me == self.other[owner]:
                positions[owner] = _check_positions(got, stop - start, self.counts[owner],
                                                    self.helper, owner, self.seen[owner])
        return positions

    async def _additive_chunk(self, start: int, stop: int
                              ) -> list[tuple[str, np.ndarray | None]]:
        """Positions of one output chunk, and this party's additive share words (K, rows, d)
        of each owner's columns (None where it holds none), owner by owner."""
        positions = await self._exchange_positions(start, stop)
        out = []
        for owner, pos in positions.items():
            share = None
            if self.me == self.helper:
                box = self.inboxes[owner]
                share = (box.shares(pos) if isinstance(box, Inbox)
                         else helper_chunk_words(box, self.d[owner], pos, self.p,
                                                 self.chunk_rows))
            elif self.me == self.other[owner]:
                share = self._other_share(owner, pos)
                if self.chan.recording:  # what it now knows (kept only for leakage tests)
                    self.chan.observe("derived_shares", words_to_ints(share))
            self.chan.phase("derive shares")
            out.append((owner, share))
        return out

    def _other_share(self, owner: str, pos: np.ndarray) -> np.ndarray:
        """The other data party's shares -PRF(k, owner, position, column) at ``pos`` (the PRF
        is random access: O(len(pos)) per chunk, nothing kept between chunks)."""
        return other_share_words(self.key, owner, self.d[owner], pos, self.p)


def _drop(inboxes: dict[str, Any] | None, pairs: Any) -> None:
    """Remove the helper's spill files of a finished join (nothing for in-memory state)."""
    for box in (inboxes or {}).values():
        if isinstance(box, Inbox):
            box.clear()
    if isinstance(pairs, PairFile):
        pairs.remove()


def _check_positions(got: Any, m: int, n: Any, helper: str, owner: str,
                     seen: np.ndarray | None = None) -> np.ndarray:
    """The helper's m matched positions into the owner's n rows: distinct, in range(n) (and,
    with ``seen``, distinct from those of earlier chunks, marked there)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < m:
        raise ProtocolError(f"party {owner} announced a malformed row count", party=owner)
    pos = np.asarray(got)
    bad = (pos.shape != (m,) or pos.dtype.kind not in "iu"
           or (m and (pos.min() < 0 or pos.max() >= n)))
    if not bad and seen is None:
        bad = np.unique(pos).size != m
    elif not bad:  # distinct and new: m more marks in the bitmap (no sort)
        before = np.count_nonzero(seen)
        bad = bool(seen[pos].any())
        seen[pos] = True
        bad = bad or np.count_nonzero(seen) - before != m
    if bad:
        raise ProtocolError(f"malformed matched positions from the helper {helper}: "
                            f"{m} distinct positions below {n} expected", party=helper)
    return pos.astype(np.int64)
