"""The helper's side of the masked join beyond memory: what it receives, its matching, the pairs.

:class:`Inbox` is what the helper keeps of one data party's upload.  Below the spill threshold
it is the list of received chunks, as before: each chunk's matching words (16 B a row) and
masked values.  Once more rows than the threshold have arrived it moves to disk
(:mod:`engine.protocols.spill`): the words with their positions (24 B a row) into 2^b bucket
files by the top b bits of the first word (the hashes are pseudorandom, so buckets are even), the
masked values into one file of rows (8 K d bytes a row).

:func:`match` then matches in memory (``common.match_words``, exactly as before) when neither
inbox spilled, else bucket by bucket: equal hashes fall in the same bucket of both sides, so each
pair of buckets is matched by ``match_words`` (which refuses a duplicated hash) and the matches'
(i, j) positions go to random output buckets (uniform, os.urandom); each output bucket is then
put in a uniformly random order and appended to the pairs file (16 B a match) — a uniformly
random order of all matches, the argument of ``spill.shuffled_rows``.  :class:`PairFile` reads
them back per output chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dialect.errors import ProtocolError
from engine.protocols import fieldwords as fw
from engine.protocols import paillier
from engine.protocols.fieldwords import value_words
from engine.protocols.spill import (
    Buckets,
    RowFile,
    Spill,
    bucket_count,
    random_buckets,
)


def helper_share_words(blob: bytes, n: int, d: int, rows: np.ndarray, modulus: int
                       ) -> np.ndarray:
    """Helper: its shares (the masked values) of ``rows`` of an owner's n x d matrix, as
    (K, len(rows), d) words."""
    k = value_words(modulus)
    if len(blob) != n * d * k * 8:
        raise ProtocolError(f"malformed masked values: {len(blob)} bytes for {n} x {d} values")
    words = np.frombuffer(blob, dtype="<u8").reshape(k, n, d)
    return words[:, np.asarray(rows, dtype=np.int64)]


def helper_chunk_words(inbox: list[dict[str, Any]], d: int, rows: np.ndarray, modulus: int,
                       chunk_rows: int) -> np.ndarray:
    """Helper: its shares of ``rows`` of an owner's matrix received in chunks of
    ``chunk_rows`` rows (``inbox``: the chunks, each with its "rows" count and "masked" bytes),
    as (K, len(rows), d) words."""
    k = value_words(modulus)
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((k, rows.size, d), dtype=np.uint64)
    which, offset = np.divmod(rows, chunk_rows)
    for b in np.unique(which):
        c = inbox[int(b)]
        sel = np.flatnonzero(which == b)
        out[:, sel] = helper_share_words(c["masked"], c["rows"], d, offset[sel], modulus)
    return out


#: Buckets of the helper's words on disk: 2^WORD_BITS, by the top bits of the first word.
WORD_BITS = 8


class Inbox:
    """What the helper keeps of one data party's chunks (in memory, or on disk beyond
    ``spill.rows`` rows or ``spill.inbox_bytes`` bytes); ``d`` columns of masked values of K
    words each."""

    def __init__(self, spill: Spill | None, d: int, modulus: int, chunk_rows: int):
        self.spill, self.d, self.modulus, self.chunk_rows = spill, d, modulus, chunk_rows
        self.k = value_words(modulus)
        self.n = 0
        self.kept = 0  # bytes of the chunks kept in memory
        self.chunks: list[dict[str, Any]] | None = []
        self.words: Buckets | None = None
        self.masked: RowFile | None = None

    @property
    def on_disk(self) -> bool:
        return self.chunks is None

    def keep(self, msg: dict[str, Any], rows: int, words: np.ndarray) -> dict[str, Any]:
        """Keep one received chunk (``rows`` rows, its matching words); returns its size."""
        masked = msg.get("masked")
        if not isinstance(masked, bytes) or len(masked) != rows * self.d * self.k * 8:
            raise ProtocolError(f"malformed masked values: {len(masked or b'')} bytes for "
                                f"{rows} x {self.d} values")
        if self.chunks is not None:
            self.chunks.append({"rows": rows, "words": words, "masked": masked})
            self.n += rows
            self.kept += len(masked) + words.nbytes
            if self.spill is not None and (self.n > self.spill.rows
                                           or self.kept > self.spill.inbox_bytes):
                self.to_disk()
        else:
            self._write(rows, words, masked, self.n)
            self.n += rows
        return {"rows": rows}

    def to_disk(self) -> None:
        """Move the chunks kept so far to the spill files (from now on everything goes there)."""
        if self.chunks is None:
            return
        self.words = Buckets(self.spill, "words", 1 << WORD_BITS, 3)
        self.masked = self.spill.row_file("masked", self.k * self.d)
        chunks, self.chunks = self.chunks, None
        start = 0
        while chunks:
            c = chunks.pop(0)
            self._write(c["rows"], c["words"], c["masked"], start)
            start += c["rows"]

    def _write(self, rows: int, words: np.ndarray, masked: bytes, start: int) -> None:
        rec = np.empty((rows, 3), dtype=np.uint64)
        rec[:, :2] = words
        rec[:, 2] = np.arange(start, start + rows, dtype=np.uint64)
        self.words.scatter((words[:, 0] >> np.uint64(64 - WORD_BITS)).astype(np.int64), rec)
        if self.d:  # wire layout (K, rows, d) -> rows of (K, d)
            w = np.frombuffer(masked, dtype="<u8").reshape(self.k, rows, self.d)
            self.masked.append(w.transpose(1, 0, 2).reshape(rows, self.k * self.d))

    def all_words(self) -> np.ndarray:
        """In memory: the (n, 2) words of every chunk, in order (the chunks drop theirs)."""
        out = np.concatenate([c["words"] for c in self.chunks]) if self.chunks \
            else np.zeros((0, 2), dtype=np.uint64)
        for c in self.chunks:
            del c["words"]
        return out

    def shares(self, rows: np.ndarray) -> np.ndarray:
        """The helper's shares (the masked values) at ``rows`` as (K, len(rows), d) words."""
        if self.chunks is not None:
            return helper_chunk_words(self.chunks, self.d, rows, self.modulus, self.chunk_rows)
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise ProtocolError("matched position beyond the received rows")
        g = self.masked.gather(rows).reshape(rows.size, self.k, self.d)
        return np.ascontiguousarray(g.transpose(1, 0, 2))

    def sums(self, hit: np.ndarray) -> np.ndarray:
        """The sums mod p, per column, of the masked values of the rows marked in ``hit``
        (one sequential pass over the chunks kept in memory or over the file)."""
        if hit.shape != (self.n,):
            raise ProtocolError("matched positions do not fit the received rows")
        acc = np.zeros(self.d, dtype=object)
        start = 0
        if self.chunks is not None:
            parts = (np.frombuffer(c["masked"], dtype="<u8").reshape(self.k, c["rows"], self.d)
                     for c in self.chunks)
        else:
            parts = (g.reshape(-1, self.k, self.d).transpose(1, 0, 2)
                     for g in self.masked.chunks())
        for w in parts:
            sel = hit[start:start + w.shape[1]]
            start += w.shape[1]
            acc = (acc + fw.sum_mod(w[:, sel], self.modulus, axis=0)) % self.modulus
        return acc

    def clear(self) -> None:
        self.chunks = [] if self.chunks is not None else None
        if self.words is not None:
            self.words.remove()
        if self.masked is not None:
            self.masked.remove()


class PairFile:
    """The m matched (i, j) positions in their random output order, on disk; ``pairs[a:b, c]``
    reads rows a..b-1 and returns column c (as ``np.ndarray`` slicing does)."""

    def __init__(self, file: RowFile):
        self.file = file
        self._cache: tuple[int, int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.file.rows

    def __getitem__(self, key: tuple[slice, int]) -> np.ndarray:
        rows, col = key
        a, b = rows.start or 0, min(rows.stop if rows.stop is not None else len(self), len(self))
        if self._cache is None or self._cache[:2] != (a, b):
            self._cache = (a, b, self.file.read(a, b).view("<i8"))
        return self._cache[2][:, col]

    def remove(self) -> None:
        self._cache = None
        self.file.remove()


def match(left: Inbox, right: Inbox, match_words) -> np.ndarray | PairFile:
    """The matched (i, j) positions in a uniformly random order: ``match_words`` on all words
    in memory when neither side spilled, else bucket by bucket on disk (module docstring)."""
    if not left.on_disk and not right.on_disk:
        return match_words(left.all_words(), right.all_words())
    spill = left.spill
    left.to_disk()
    right.to_disk()
    count = bucket_count(min(left.n, right.n))
    out = Buckets(spill, "pairs", count, 2)
    try:
        for b in range(1 << WORD_BITS):
            lw, rw = left.words.take(b), right.words.take(b)
            if not len(lw) and not len(rw):
                continue  # (one side alone is still matched: match_words refuses duplicates)
            local = match_words(np.ascontiguousarray(lw[:, :2]), np.ascontiguousarray(rw[:, :2]))
            pairs = np.stack([lw[local[:, 0], 2], rw[local[:, 1], 2]], axis=1)
            del lw, rw, local
            out.scatter(random_buckets(len(pairs), count), pairs)
        result = spill.row_file("pairs", 2)
        for b in range(count):
            part = out.take(b)
            result.append(part[paillier.random_permutation(len(part))])
    finally:
        out.remove()
        left.words.remove()
        right.words.remove()
    result.close()
    return PairFile(result)
