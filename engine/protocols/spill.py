"""Per-query spill files: per-row state of the masked join kept on disk instead of in memory.

Above a row threshold (``Spill.rows``, party option ``[storage] spill_rows``) a party keeps the
per-row arrays that must outlive a chunk of the masked join in raw files of fixed-width rows in
a per-query directory (``Spill.path``: created with mode 0700 under ``[storage] spill_dir``,
default the system temporary directory, removed when the query ends, fails or is cancelled).
They are read back one range at a time (:meth:`RowFile.read`: an explicit read, nothing stays
mapped) or gathered at positions (:meth:`RowFile.gather`: a read-only mapping whose pages are
dropped every :data:`GATHER_ROWS` positions), so the resident memory does not grow with the rows.
Files are raw little-endian words of this machine; nothing in them comes from a peer as code.

Below the threshold nothing here is used: the masked join keeps today's in-memory arrays, and its
messages and results do not depend on which path a party takes (spilling is a local choice).
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from engine.protocols.channel import LocalData

#: Rows above which a party spills (the default of ``[storage] spill_rows``).
SPILL_ROWS = 1 << 23
#: Bytes of one party's upload the helper keeps in memory at most (then it spills).
INBOX_BYTES = 1 << 29
#: Rows per bucket of the on-disk shuffle, the helper's matching and its output order.
BUCKET_ROWS = 1 << 20
#: Positions gathered per mapping before its pages are dropped (bounds the resident pages).
GATHER_ROWS = 1 << 14
#: Rows per explicit read of a file in sequence.
READ_ROWS = 1 << 18


@dataclass
class Spill:
    """Where (``base``, None: the system temporary directory) and above how many rows a party
    spills; ``path`` is the query's own directory, made on first use (:meth:`dir`)."""

    base: str | None = None
    rows: int = SPILL_ROWS
    path: str | None = None
    #: DuckDB's memory_limit while the party server reads a table beyond ``rows`` (None: as is)
    duckdb_memory: str | None = "1GB"
    #: bytes of one party's upload the helper keeps in memory before it moves it to disk
    inbox_bytes: int = INBOX_BYTES
    written: int = 0  # bytes written to spill files (by this process)
    _files: int = field(default=0, repr=False)

    def dir(self) -> str:
        """The query's spill directory (mode 0700), created on first use."""
        if self.path is None:
            base = self.base or tempfile.gettempdir()
            os.makedirs(base, exist_ok=True)
            self.path = tempfile.mkdtemp(prefix="mpcsql-spill-", dir=base)  # mode 0700
        return self.path

    def file(self, name: str) -> str:
        """A fresh file path in the query's directory."""
        self._files += 1
        return os.path.join(self.dir(), f"{self._files:05d}-{name}")

    def row_file(self, name: str, width: int, dtype: str = "<u8") -> RowFile:
        return RowFile(self.file(name), width, dtype, self)

    def cleanup(self) -> None:
        """Remove the query's directory and everything in it (idempotent)."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


class RowFile:
    """Rows of ``width`` values of one ``dtype`` appended to a raw file."""

    def __init__(self, path: str, width: int, dtype: str = "<u8", spill: Spill | None = None):
        self.path, self.width, self.dtype = path, width, np.dtype(dtype)
        self.spill = spill
        self.rows = 0
        self._out = open(path, "wb")  # noqa: SIM115 - closed by close()/read()

    @property
    def row_bytes(self) -> int:
        return self.width * self.dtype.itemsize

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype).reshape(-1, self.width)
        if self._out is None:
            self._out = open(self.path, "ab")  # noqa: SIM115
        self._out.write(rows.data if rows.size else b"")
        self.rows += rows.shape[0]
        if self.spill is not None:
            self.spill.written += rows.nbytes

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a fresh (stop - start, width) array (an explicit read)."""
        self.close()
        stop = min(stop, self.rows)
        count = max(0, stop - start) * self.width
        if not count:
            return np.zeros((0, self.width), dtype=self.dtype)
        with open(self.path, "rb") as f:
            f.seek(start * self.row_bytes)
            out = np.fromfile(f, dtype=self.dtype, count=count)
        return out.reshape(-1, self.width)

    def chunks(self, size: int = READ_ROWS) -> Iterator[np.ndarray]:
        """Every row in order, ``size`` rows at a time."""
        for start in range(0, self.rows, size):
            yield self.read(start, start + size)

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` (in their order) as a fresh (len, width) array.

        The positions are visited in increasing order through a read-only mapping whose
        resident pages are dropped (``MADV_DONTNEED``) after every :data:`GATHER_ROWS` of them.
        """
        self.close()
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        out = np.empty((pos.size, self.width), dtype=self.dtype)
        if not pos.size:
            return out
        order = np.argsort(pos, kind="stable")
        sorted_pos = pos[order]
        with open(self.path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            view = np.frombuffer(mm, dtype=self.dtype).reshape(-1, self.width)
            for a in range(0, pos.size, GATHER_ROWS):
                sel = order[a:a + GATHER_ROWS]
                out[sel] = view[sorted_pos[a:a + GATHER_ROWS]]
                mm.madvise(mmap.MADV_DONTNEED)
            del view
        finally:
            mm.close()
        return out

    def remove(self) -> None:
        self.close()
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


class Buckets:
    """``count`` row files filled by bucket number (:meth:`scatter`), read one bucket at a time."""

    def __init__(self, spill: Spill, name: str, count: int, width: int, dtype: str = "<u8"):
        self.files = [spill.row_file(f"{name}-{b}", width, dtype) for b in range(count)]

    def scatter(self, bucket: np.ndarray, rows: np.ndarray) -> None:
        """Append ``rows[i]`` to bucket ``bucket[i]`` (stable: rows keep their order)."""
        if not len(rows):
            return
        order = np.argsort(bucket, kind="stable")
        counts = np.bincount(bucket, minlength=len(self.files))
        rows = rows[order]
        start = 0
        for b, c in enumerate(counts.tolist()):
            if c:
                self.files[b].append(rows[start:start + c])
                start += c

    def take(self, b: int) -> np.ndarray:
        """All rows of bucket ``b``; its file is removed."""
        f = self.files[b]
        rows = f.read(0, f.rows)
        f.remove()
        return rows

    def remove(self) -> None:
        for f in self.files:
            f.remove()


def bucket_count(n: int, rows: int = BUCKET_ROWS) -> int:
    """A power of two >= n / rows (at least 1): buckets of about ``rows`` rows."""
    b = 1
    while b * rows < n:
        b *= 2
    return b


def random_buckets(n: int, count: int) -> np.ndarray:
    """n independent uniform bucket numbers below ``count`` (a power of two), from os.urandom."""
    if count == 1:
        return np.zeros(n, dtype=np.int64)
    words = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return (words & np.uint64(count - 1)).astype(np.int64)


@dataclass
class SpilledRows(LocalData):
    """A data party's rows on disk (its party server's read, :mod:`engine.server.storage`):
    ``file`` holds n rows of 1 + d 64-bit words, the key (int64 or uint64 bits, ``key_dtype``)
    and the d float64 values.  ``ids`` is None and ``values`` an empty (0, d) array."""

    file: RowFile | None = None
    n: int = 0
    key_dtype: str = "<i8"
    #: per column, the power of two the values are multiplied by as they are read (a model
    #: plan's raw columns, normalised by their public bounds as in memory); None: as stored
    exps: np.ndarray | None = None
    #: per column, the minimum and maximum of the stored values (taken as they were written)
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    @property
    def d(self) -> int:
        return self.file.width - 1

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, values) of rows read from ``file``."""
        ids = np.ascontiguousarray(rows[:, 0]).view(self.key_dtype)
        values = np.ascontiguousarray(rows[:, 1:]).view("<f8")
        return ids, values if self.exps is None else np.ldexp(values, self.exps)

    def column_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """Per column, the minimum and maximum of the stored values."""
        return self.lo, self.hi


def row_count(local: LocalData) -> int:
    """A data party's number of rows, in memory or spilled."""
    if isinstance(local, SpilledRows):
        return local.n
    return len(local.ids) if local.ids is not None else len(local.values)


def shuffled_rows(rows: SpilledRows, spill: Spill, size: int) -> Iterator[tuple[np.ndarray,
                                                                                 np.ndarray]]:
    """The spilled rows in a uniformly random order, as (ids, values) chunks of ``size`` rows
    ending with a shorter one (possibly empty), like ``common.chunk_bounds``.

    Out of core: every row goes to one of B buckets uniformly at random (os.urandom), then each
    bucket is read, put in a uniformly random order (``paillier.random_permutation``) and
    emitted.  The result is a uniformly random permutation: a permutation arises from exactly
    one assignment of each size profile, with probability B^-n times 1 / prod(s_b!) summed over
    the profiles, the same for every permutation.
    """
    from engine.protocols.paillier import random_permutation

    count = bucket_count(rows.n)
    buckets = Buckets(spill, "shuffle", count, rows.file.width)
    try:
        for part in rows.file.chunks():
            buckets.scatter(random_buckets(len(part), count), part)
        pending: list[np.ndarray] = []
        held = 0
        for b in range(count):
            part = buckets.take(b)
            part = part[random_permutation(len(part))]
            pending.append(part)
            held += len(part)
            while held >= size:
                block = np.concatenate(pending) if len(pending) > 1 else pending[0]
                yield rows.split(block[:size])
                rest = block[size:]
                pending, held = ([rest] if len(rest) else []), len(rest)
        block = np.concatenate(pending) if pending else np.zeros((0, rows.file.width),
                                                                   dtype=np.uint64)
        yield rows.split(block)
    finally:
        buckets.remove()
