"""Secret-shared tables held as 64-bit words, and additive shares -> Shamir shares (protocol A2S).

:class:`SharedTable` is this party's Shamir shares (MPyC's, degree t = 1, party i evaluated at
i + 1) of an m x d table of SecFxp values, one (K, m) uint64 word array per column: 16 bytes
per value instead of a ~50-byte Python int, and local linear work (column sums, the Gram
matrix) runs on numpy without ever building MPyC field arrays of m x d elements.

:func:`additive_to_shamir` turns a 2-out-of-2 additive sharing x = a + b mod p, held by two
parties A and B, into a Shamir sharing among the three parties with one field element sent per
value and direction between A and B (2 per value in all; the third party W receives nothing per
value). MPyC's ``input`` of both additive shares would send 4 per value and draw t random
coefficients per value with ``secrets.randbelow``.

Protocol A2S (semi-honest, no collusion; k_P = MPyC index of P + 1):

1. W draws fresh 256-bit keys kA, kB and sends kA to A and kB to B.
2. A and B expand their key into rA = F(kA, j, i), rB = F(kB, j, i) for column j, row i (the
   AES-256 PRF of :mod:`engine.protocols.prf`, within 2^-64 of uniform mod p); W computes
   both.  The target polynomial is f(X) = x + (r - x) X / k_W with r = rA + rB, i.e.
   f(0) = x and f(k_W) = r: a uniformly random degree-1 polynomial with constant term x.
3. A sends B  N_AB = (k_W - k_B) a + k_B rA  and B sends A  N_BA = (k_W - k_A) b + k_A rB.
4. Shares: W: r; A: ((k_W - k_A) a + k_A rA + N_BA) / k_W; B: symmetric.  Indeed
   f(k_A) = ((k_W - k_A) x + k_A r) / k_W.

What each party sees: A receives N_BA, which is masked by k_A rB with rB pseudorandom and
unknown to A (k_A != 0), so it is uniform and independent of b; its own share is then a
function of what it holds.  B likewise.  W receives only its key material; its share r is
uniform.  Any single party's share is uniform, as in any t = 1 Shamir sharing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dialect.errors import ProtocolError
from engine.protocols import fieldwords as fw
from engine.protocols.prf import prf_words

if TYPE_CHECKING:
    from engine.protocols.channel import Channel

KEY_BYTES = 32
_LABEL = b"mpcsql/a2s/v1/"
#: Bytes of shares per message and per local step (bounds the peak memory of a conversion).
CHUNK_BYTES = 1 << 25


@dataclass
class SharedTable:
    """This party's Shamir shares of an m x d table of ``sectype`` values, as word columns."""

    sectype: Any
    columns: list[np.ndarray] = field(default_factory=list)  # each (K, m) uint64
    m: int = 0
    vector: bool = False  # one column picked by an int index: shape (m,)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.m,) if self.vector else (self.m, len(self.columns))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key) -> SharedTable:
        """Column selection ``t[:, j]`` (a vector) or ``t[:, [j, ...]]`` (no copy)."""
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None)):
            raise TypeError("SharedTable supports column selection t[:, cols] only")
        cols = key[1]
        if isinstance(cols, (int, np.integer)):
            return SharedTable(self.sectype, [self.columns[cols]], self.m, vector=True)
        picked = self.columns[cols] if isinstance(cols, slice) else [self.columns[j]
                                                                      for j in cols]
        return SharedTable(self.sectype, picked, self.m)

    @property
    def modulus(self) -> int:
        return self.sectype.field.order

    def column_sums(self):
        """Shares of the column sums (local, no interaction), as a secure array."""
        sums = [int(fw.sum_mod(c, self.modulus)) for c in self.columns]
        return self.sectype.array(self.sectype.field.array(np.array(sums, dtype=object)),
                                  integral=False)

    def to_secure(self):
        """The table as an MPyC secure array (builds m x d Python ints: small tables only)."""
        words = np.stack(self.columns, axis=-1)  # (K, m, d)
        arr = self.sectype.array(self.sectype.field.array(fw.words_to_ints(words)),
                                 integral=False)
        return arr[:, 0] if self.vector else arr

    @classmethod
    def from_field_values(cls, sectype, values: np.ndarray) -> SharedTable:
        """Wrap this party's shares given as an (m, d) array of field ints."""
        words = fw.ints_to_words(values, sectype.field.order)
        return cls(sectype, [np.ascontiguousarray(words[:, :, j]) for j in range(values.shape[1])],
                   values.shape[0])

    @staticmethod
    def hstack(tables: list[SharedTable]) -> SharedTable:
        """Columns of ``tables`` side by side (same rows)."""
        return SharedTable(tables[0].sectype, [c for t in tables for c in t.columns],
                           tables[0].m)


@dataclass
class ChunkedTable:
    """An m x d shared table produced chunk by chunk (the masked join): ``chunks()`` is an
    async iterator of each chunk's :class:`SharedTable`, in row order, that computes them as it
    goes (with interaction: every party iterates it alike, once).  A consumer that needs every
    row at once calls :meth:`materialize`."""

    sectype: Any
    m: int
    d: int
    chunks: Callable[[], AsyncIterator[SharedTable]]
    #: the producer's own :meth:`totals` (e.g. the masked join sums additive shares before
    #: converting them); None: summed from the chunks
    summed: Callable[[], Awaitable[SharedTable]] | None = None

    async def totals(self) -> SharedTable:
        """Shares of the column sums over all m rows, as a one-row table (consumes the table
        as :meth:`chunks` does: once, every party alike)."""
        if self.summed is not None:
            return await self.summed()
        p = self.sectype.field.order
        acc = np.zeros(self.d, dtype=object)
        async for part in self.chunks():
            acc = (acc + np.array([int(fw.sum_mod(c, p)) for c in part.columns],
                                  dtype=object)) % p
        return SharedTable.from_field_values(self.sectype, acc.reshape(1, self.d))

    async def materialize(self) -> SharedTable:
        """All rows as one :class:`SharedTable` (K x m words per column)."""
        k = fw.value_words(self.sectype.field.order)
        cols = [np.empty((k, self.m), dtype=np.uint64) for _ in range(self.d)]
        start = 0
        async for part in self.chunks():
            for c, col in zip(cols, part.columns, strict=True):
                c[:, start:start + part.m] = col
            start += part.m
        if start != self.m:
            raise ProtocolError(f"a chunked table gave {start} of its {self.m} rows")
        return SharedTable(self.sectype, cols, self.m)


@dataclass
class ReducedRows(SharedTable):
    """The X of a fit whose rows were already reduced chunk by chunk (an m x d table that
    holds no rows): ``ztz`` and ``sums`` are this party's local (not yet reshared) Z^T Z and
    column sums mod p of Z = [X | y], exactly as protocol MOMENTS forms them
    (engine/protocols/regression/moments.py), summed over the chunks."""

    d: int = 0
    ztz: Any = None
    sums: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.m, self.d)


async def materialized(table: Any) -> Any:
    """``table`` with every row at once (a :class:`ChunkedTable` is materialized)."""
    return await table.materialize() if isinstance(table, ChunkedTable) else table


#: Elements per block of the holders' word arithmetic (its temporaries stay in the cache).
BLOCK = 1 << 13


def _blocks(m: int):
    return (slice(a, min(m, a + BLOCK)) for a in range(0, m, BLOCK))


def _times(a: np.ndarray, c: int, p: int) -> np.ndarray:
    return a if c == 1 else fw.mul_small_mod(a, c, p)


def holder_step(x: np.ndarray, r: np.ndarray, k_me: int, k_other: int, k_w: int, p: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """A2S step 3 at a holder with additive share words ``x`` and its PRF words ``r``
    (K, m, ...), in blocks of :data:`BLOCK` rows.

    Returns (own numerator (k_W - k_me) x + k_me r, message (k_W - k_other) x + k_other r),
    computed as k_W x - k_me (x - r) and that plus (k_me - k_other)(x - r).
    """
    own, msg = np.empty_like(x), np.empty_like(x)
    diff = k_me - k_other
    for b in _blocks(x.shape[1]):
        xb, rb = x[:, b], r[:, b]
        delta = fw.sub_mod(xb, rb, p)
        o = fw.sub_mod(_times(xb, k_w, p), _times(delta, k_me, p), p)
        own[:, b] = o
        step = _times(delta, abs(diff), p)
        msg[:, b] = fw.add_mod(o, step, p) if diff > 0 else fw.sub_mod(o, step, p)
    return own, msg


def holder_share(own: np.ndarray, received: np.ndarray, k_w: int, p: int) -> np.ndarray:
    """A2S step 4 at a holder: its Shamir share (own + received) / k_W (in blocks)."""
    out = np.empty_like(own)
    for b in _blocks(own.shape[1]):
        t = fw.add_mod(own[:, b], received[:, b], p)
        out[:, b] = t if k_w == 1 else fw.div_small_mod(t, k_w, p)
    return out


def _third_share(ra: np.ndarray, rb: np.ndarray, p: int) -> np.ndarray:
    """A2S at the third party: its share rA + rB (in blocks)."""
    out = np.empty_like(ra)
    for b in _blocks(ra.shape[1]):
        out[:, b] = fw.add_mod(ra[:, b], rb[:, b], p)
    return out


def _column_chunks(m: int, d: int, k: int) -> list[range]:
    step = max(1, CHUNK_BYTES // max(1, 8 * k * m))
    return [range(j, min(d, j + step)) for j in range(0, d, step)]


async def additive_to_shamir(chan: Channel, holders: tuple[str, str], share: np.ndarray | None,
                             m: int, d: int, sectype) -> SharedTable:
    """Protocol A2S: the holders' additive shares (K, m, d) words -> a :class:`SharedTable`.

    ``share`` is this party's additive share (None at the third party).  All three parties
    call this with the same ``holders``, ``m`` and ``d``.
    """
    mpc = chan.mpc
    p = sectype.field.order
    k_words = fw.value_words(p)
    a, b = holders
    (w,) = [n for n in chan.pids if n not in holders]
    pid = chan.pids
    pt = {n: pid[n] + 1 for n in pid}  # MPyC evaluates party i's share at i + 1
    me = chan.party

    # 1. W sends each holder a fresh key (kept out of the transcript's items like MPyC input).
    keys = {h: os.urandom(KEY_BYTES) for h in holders} if me == w else {}
    got = [mpc.transfer(keys.get(h), senders=[pid[w]], receivers=[pid[h]]) for h in holders]
    got = [await g for g in got]
    key = {h: keys[h] for h in holders} if me == w else (
        {me: got[holders.index(me)][0]} if me in holders else {})

    def rho(h: str, j: int) -> np.ndarray:
        return prf_words(key[h] + _LABEL + j.to_bytes(4, "big"), np.arange(m), p)

    other = {a: b, b: a}
    cols: list[np.ndarray] = []
    for chunk in _column_chunks(m, d, k_words):
        msg = own = None
        if me in holders:
            r = np.stack([rho(me, j) for j in chunk], axis=-1)
            own, msg = holder_step(share[:, :, chunk.start:chunk.stop], r, pt[me],
                                   pt[other[me]], pt[w], p)
            del r
        recv = await mpc.transfer(msg, sender_receivers={pid[a]: [pid[b]], pid[b]: [pid[a]],
                                                              pid[w]: []})
        if me in holders:
            theirs = recv[0]
            if not (isinstance(theirs, np.ndarray) and theirs.shape == own.shape
                    and theirs.dtype == np.uint64):
                raise ProtocolError("malformed share-conversion message")
            s = holder_share(own, theirs, pt[w], p)
            cols.extend(np.ascontiguousarray(s[:, :, i]) for i in range(len(chunk)))
        else:
            cols.extend(_third_share(rho(a, j), rho(b, j), p) for j in chunk)
    return SharedTable(sectype, cols, m)
