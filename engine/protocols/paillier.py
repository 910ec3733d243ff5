"""Party-local steps of the published private inner join (keyed hashing + packed Paillier).

See docs/protocols.md for the message flow and what each party learns.  Every step here is
local to one party: it takes plaintext or ciphertext integers and returns integers; the session
code moves them between parties.

Packing: a row's encoded values v (|v| < 2**63) are offset to v + 2**63 in [0, 2**64) and packed
into slots of SLOT_BITS bits of one Paillier plaintext.  The helper adds to every slot a mask r
uniform in [0, 2**(64 + SIGMA)), so a slot never carries into the next one, and the owner learns
v + 2**63 + r, which hides v up to statistical distance 2**-SIGMA.

Speed: all modular arithmetic runs on gmpy2 ``mpz``.  Randomness: a key made with DJN
randomness (the default) publishes h = (-x**2)**n mod n**2, and every randomiser under it is
h**a from a fixed-base table (:class:`FixedBase`; docs/protocols.md "DJN randomness"): the
owner's encryptions use a secret a of ceil(k/2) bits (tables modulo p**2 and q**2, CRT), the
helper's re-randomisations (and any encryption without the private key) one of k + SIGMA bits,
so that h**a is statistically close to uniform in <h> and hides the owner's own randomiser even
from the owner, who knows p and q.
With classic randomness the owner computes r**n mod n**2 by CRT modulo p**2 and q**2 and the
helper, who only has the public key, computes r**n mod n**2 directly (r uniform in Z_n^*).
Decryption is by CRT modulo p**2 and q**2 either way.  Batches of at least ``MIN_PARALLEL``
ciphertexts are split over forked worker processes (``workers``, default ``os.cpu_count()``);
each worker draws its randomness from ``os.urandom`` (via ``secrets``), so no random state is
shared between workers.

Progress: the batch functions take ``progress``, called with the number of rows (or items)
done so far, counted over all worker processes (a shared counter per process); the session
turns it into its public progress reports (engine/session/progress.py).
"""

from __future__ import annotations

import datetime
import decimal
import gc
import hashlib
import math
import mmap
import multiprocessing
import os
import secrets
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import gmpy2
import numpy as np
from gmpy2 import mpz
from phe import paillier

from dialect.errors import DataError, ProtocolError

#: ``progress(done)``: how many rows (or items) of a batch are done so far (monotone).
Progress = Callable[[int], None]

SIGMA = 40  # statistical security of the helper's masks, in bits
OFFSET_BITS = 64
OFFSET = 1 << (OFFSET_BITS - 1)  # makes signed 64-bit encodings non-negative
MASK_BITS = OFFSET_BITS + SIGMA
SLOT_BITS = MASK_BITS + 1  # v + 2**63 + r < 2**64 + 2**104 < 2**105
KEY_BITS = 2048
HASH_BYTES = 16  # the keyed PRF word of an id on the wire
MIN_PARALLEL = 64  # fewer ciphertexts than this are not worth forking worker processes for


def slots_per_ciphertext(key_bits: int) -> int:
    """How many value slots fit in one plaintext (which must stay below n)."""
    return max(1, (key_bits - 1) // SLOT_BITS)


def ciphertexts_per_row(d: int, key_bits: int) -> int:
    return -(-d // slots_per_ciphertext(key_bits)) if d else 0


class TypedId(NamedTuple):
    """An identifier reduced to an exact integer in its type's unit, tagged with the type.

    ``kind`` is a key class of :func:`planner.binder.key_class` for temporal keys: ``date``
    (days since 1970-01-01), ``timestamp`` / ``timestamptz`` (microseconds since the epoch,
    UTC for timestamptz), ``timestamp_ns`` (nanoseconds), ``time`` (microseconds since 00:00).
    """

    kind: str
    value: int


_EPOCH = datetime.datetime(1970, 1, 1)
_EPOCH_UTC = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)


def _exact_decimal(d: decimal.Decimal) -> str:
    """The shortest exact decimal text of ``d``: 5.00 -> '5', -0.50 -> '-0.5' (no rounding)."""
    if not d.is_finite():
        raise DataError("identifiers must be finite numbers")
    if d == 0:
        return "0"
    sign, digits, exp = d.as_tuple()
    while exp < 0 and digits[-1] == 0:
        digits, exp = digits[:-1], exp + 1
    if exp >= 0:
        return str(int(d))  # exact: int() of a Decimal never rounds
    text = "".join(map(str, digits)).rjust(1 - exp, "0")
    return ("-" if sign else "") + text[:exp] + "." + text[exp:]


def canonical_id(value: object) -> bytes:
    """Bytes that two parties produce for the same identifier, exactly (never via a float).

    Injective within each key class, and equal across parties for ids DuckDB considers equal:
    integers of any width and decimals by exact value (5, 5.0, Decimal('5.00') -> b"i:5";
    Decimal('5.50') -> b"i:5.5"), strings as UTF-8 (b"s:"), BLOBs as bytes (b"b:"), UUIDs
    (b"u:"), dates and times as exact integers tagged with their type (:class:`TypedId`).
    """
    if isinstance(value, (bool, np.bool_)):
        raise DataError("boolean identifiers are not supported")
    if isinstance(value, (int, np.integer)):
        return b"i:" + str(int(value)).encode()
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or not float(value).is_integer():
            raise DataError("identifiers must be integers or strings, not fractional numbers")
        return b"i:" + str(int(value)).encode()
    if isinstance(value, decimal.Decimal):
        return b"i:" + _exact_decimal(value).encode()
    if isinstance(value, str):
        return b"s:" + value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"b:" + bytes(value)
    if isinstance(value, uuid.UUID):
        return b"u:" + value.hex.encode()
    if isinstance(value, TypedId):
        return value.kind.encode() + b":" + str(int(value.value)).encode()
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return canonical_id(TypedId("timestamp", (value - _EPOCH) // _MICROSECOND))
        return canonical_id(TypedId("timestamptz", (value - _EPOCH_UTC) // _MICROSECOND))
    if isinstance(value, datetime.date):
        return canonical_id(TypedId("date", (value - _EPOCH.date()).days))
    if isinstance(value, datetime.time) and value.tzinfo is None:
        us = ((value.hour * 60 + value.minute) * 60 + value.second) * 10**6 + value.microsecond
        return canonical_id(TypedId("time", us))
    raise DataError(f"identifiers of type {type(value).__name__} are not supported")


def split_hashes(blob: bytes) -> list[bytes]:
    if len(blob) % HASH_BYTES:
        raise DataError("malformed hash list")
    return [blob[i:i + HASH_BYTES] for i in range(0, len(blob), HASH_BYTES)]


#: Randomness of new keys: "djn" (h**a, short secret a; Damgard-Jurik-Nielsen), "classic"
#: (r**n), or "subgroup" (Paillier's subgroup variant: special primes, h of secret order
#: p' q', decryption exponents p' and q'; docs/protocols.md "Subgroup keys").
RANDOMNESS = ("djn", "classic", "subgroup")
DEFAULT_RANDOMNESS = "djn"
#: Bits of the DJN secret exponent a for a key of k bits: ceil(k / 2), as in DJN (2010) and
#: SecretFlow HEU; 1024 for 2048-bit keys (see docs/protocols.md for why not 2 x 112 = 224).
def djn_exponent_bits(key_bits: int) -> int:
    return -(-int(key_bits) // 2)


#: Bits of the helper's DJN re-randomisation exponent: k + SIGMA (2088 for 2048-bit keys), or
#: b + SIGMA for a subgroup key that publishes ord(h) < 2**b (488 for 2048-bit keys).
#: <h> has order < n, so h**a' for a uniform a' < 2**(k + SIGMA) is within 2**-SIGMA of uniform
#: in <h>: the owner's own randomiser h**a_i times h**a' is then statistically independent of
#: a_i, whatever the owner computes (it can take discrete logarithms modulo p and q: 1024-bit
#: primes, index calculus).  A ceil(k/2)-bit a' would leave a' + a_i - a_j in a short range only
#: for the owner's true row j (always; ~2/3 for another row): a linking signal at the cost of
#: discrete logarithms modulo two 1024-bit primes.
def rerandomizer_exponent_bits(key_bits: int, order_bits: int | None = None) -> int:
    return (int(key_bits) if order_bits is None else int(order_bits)) + SIGMA


#: Window of the fixed-base table for h (bits per table row; 2**w entries a row).
DJN_WINDOW = 8

#: Security level in bits of a k-bit modulus (NIST SP 800-57 Part 1, Table 2); below 1024 bits
#: (labelled unit-test keys only) 40.
_SECURITY_BITS = ((15360, 256), (7680, 192), (3072, 128), (2048, 112), (1024, 80))


def subgroup_order_bits(key_bits: int) -> int:
    """Bits of each prime p', q' of a subgroup key (p' | p - 1, q' | q - 1): twice the key's
    security level, since a rho walk on h modulo p finds p after ~sqrt(p') steps (224 bits for
    2048-bit keys, as in Ma, Han and Lei, ACSAC 2021)."""
    level = next((s for k, s in _SECURITY_BITS if int(key_bits) >= k), 40)
    return 2 * level


def _random_prime(bits: int) -> mpz:
    """A uniform prime of exactly ``bits`` bits (odd candidates from the OS CSPRNG)."""
    while True:
        x = mpz(secrets.randbits(bits) | (1 << (bits - 1)) | 1)
        if gmpy2.is_prime(x, 32):
            return x


def _subgroup_prime(bits: int, order_bits: int) -> tuple[mpz, mpz]:
    """A prime p of ``bits`` bits, p >= sqrt(2) 2**(bits - 1), with p - 1 = 2 p' t for a fresh
    prime p' of ``order_bits`` bits and a uniform t: returns (p, p')."""
    lo, hi = gmpy2.isqrt(mpz(1) << (2 * bits - 1)) + 1, (mpz(1) << bits) - 1
    while True:
        order = _random_prime(order_bits)
        t_lo, t_hi = -(-(lo - 1) // (2 * order)), (hi - 1) // (2 * order)
        for _ in range(20 * bits):  # ~bits ln 2 / 2 candidates per prime; then a new p'
            p = 2 * order * (t_lo + secrets.randbelow(int(t_hi - t_lo + 1))) + 1
            if gmpy2.is_prime(p, 32):
                return p, order


def _element_of_order(prime: mpz, order: mpz) -> mpz:
    """A uniform element of order exactly ``order`` (a prime dividing prime - 1) mod prime**2."""
    mod = prime * prime
    cofactor = prime * (prime - 1) // order
    while True:
        x = gmpy2.powmod(_random_unit(mod), cofactor, mod)
        if x != 1:
            return x


def _subgroup_keypair(key_bits: int):
    """Paillier's subgroup variant (Paillier 1999, section 5): n = p q with p - 1 = 2 p' t and
    q - 1 = 2 q' u for primes p', q' of :func:`subgroup_order_bits` bits; h of order p' q' in
    Z_{n^2}^* (an n-th residue: an encryption of zero).  The public key is the DJN form (n, h);
    the private key also carries the orders (attribute ``subgroup_orders``: of its p, q)."""
    half, order_bits = int(key_bits) // 2, subgroup_order_bits(key_bits)
    while True:
        p, po = _subgroup_prime(half, order_bits)
        q, qo = _subgroup_prime(int(key_bits) - half, order_bits)
        n = p * q
        if p != q and n.bit_length() == int(key_bits) and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1:
            break
    pub = paillier.PaillierPublicKey(int(n))
    priv = paillier.PaillierPrivateKey(pub, int(p), int(q))
    orders = {int(p): int(po), int(q): int(qo)}
    priv.subgroup_orders = (orders[int(priv.p)], orders[int(priv.q)])
    hp, hq = _element_of_order(p, po), _element_of_order(q, qo)
    psq, qsq = p * p, q * q
    pub.djn_h = int(hq + qsq * ((hp - hq) * gmpy2.invert(qsq, psq) % psq))
    pub.djn_order_bits = 2 * order_bits  # ord(h) = p' q' < 2**(2 * order_bits): published
    return pub, priv


def generate_keypair(key_bits: int = KEY_BITS, randomness: str = DEFAULT_RANDOMNESS):
    """A fresh Paillier key pair (2048-bit in production; smaller only in labelled unit tests).

    With ``randomness="djn"`` the public key also carries ``h = (-x**2)**n mod n**2`` (x uniform
    in Z_n^*, then forgotten) as its attribute ``djn_h``: encryptions and re-randomisations
    under this key then use h**a with a short secret a (:func:`djn_exponent_bits`).  With
    ``"subgroup"`` the key is Paillier's subgroup variant (:func:`_subgroup_keypair`): the same
    public form (n, h), with h of secret order p' q', plus the bound ``djn_order_bits`` on it.
    """
    if randomness not in RANDOMNESS:
        raise ValueError(f"paillier randomness must be one of {RANDOMNESS}, not {randomness!r}")
    if randomness == "subgroup":
        return _subgroup_keypair(key_bits)
    pub, priv = paillier.generate_paillier_keypair(n_length=key_bits)
    if randomness == "djn":
        n = mpz(pub.n)
        x = _random_unit(n)
        pub.djn_h = int(gmpy2.powmod(n - x * x % n, n, n * n))
    return pub, priv


def djn_h(public_key) -> int | None:
    """The key's published DJN base h, or None (classic randomness)."""
    return getattr(public_key, "djn_h", None)


def check_djn_h(n: int, h: object) -> int:
    """``h`` as an int if it is a valid DJN base for modulus ``n``: an integer in
    [2, n**2 - 2] coprime to n.  Anything else is refused (:class:`ProtocolError`)."""
    if isinstance(h, bool) or not isinstance(h, int):
        raise ProtocolError(f"Paillier DJN base h must be an integer, not {type(h).__name__}")
    n = int(n)
    if n < 3 or not 2 <= h <= n * n - 2:
        raise ProtocolError("Paillier DJN base h out of range [2, n^2 - 2]")
    if gmpy2.gcd(mpz(h), mpz(n)) != 1:
        raise ProtocolError("Paillier DJN base h is not coprime to n")
    return h


def djn_order_bits(public_key) -> int | None:
    """The published bound ord(h) < 2**b of a subgroup key, or None (ord(h) < n assumed)."""
    return getattr(public_key, "djn_order_bits", None)


def check_order_bits(n: int, bits: object) -> int:
    """``bits`` as an int if it is a bound a subgroup key of ``n``'s size may publish: at least
    the 2 x :func:`subgroup_order_bits` of an honest key (a shorter one would shorten the
    helper's re-randomisers below what hides an honest key's rows) and below n's bit length.
    Anything else is refused (:class:`ProtocolError`)."""
    k = int(n).bit_length()
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ProtocolError("Paillier subgroup order bound h_order_bits must be an integer, not "
                            f"{type(bits).__name__}")
    if not 2 * subgroup_order_bits(k) <= bits < k:
        raise ProtocolError(f"Paillier subgroup order bound h_order_bits = {bits} out of range "
                            f"[{2 * subgroup_order_bits(k)}, {k}) for a {k}-bit key")
    return bits


def public_key(n: int, h: object = None, order_bits: object = None):
    """The public key a peer published: modulus ``n`` and, for DJN randomness, base ``h``
    (checked by :func:`check_djn_h`; None: classic randomness) and, for a subgroup key, the
    bound ``order_bits`` on h's order (:func:`check_order_bits`; only with h)."""
    pub = paillier.PaillierPublicKey(int(n))
    if h is not None:
        pub.djn_h = check_djn_h(int(n), h)
    if order_bits is not None:
        if h is None:
            raise ProtocolError("Paillier h_order_bits given without a base h")
        pub.djn_order_bits = check_order_bits(int(n), order_bits)
    return pub


def pack_row(encoded: Sequence[int], slots: int) -> list[int]:
    """Pack one row of signed encodings into ceil(d / slots) non-negative plaintexts."""
    out = []
    for start in range(0, len(encoded), slots):
        acc = 0
        for j, v in enumerate(encoded[start:start + slots]):
            acc |= (int(v) + OFFSET) << (j * SLOT_BITS)
        out.append(acc)
    return out


# --- parallel map over forked workers -------------------------------------------------------


def effective_workers(workers: int | None, count: int) -> int:
    """Worker processes to use for ``count`` items: 1 below MIN_PARALLEL or inside a daemon."""
    w = (os.cpu_count() or 1) if workers is None else int(workers)
    if w <= 1 or count < MIN_PARALLEL or multiprocessing.current_process().daemon:
        return 1  # daemonic processes may not have children
    return min(w, count // (MIN_PARALLEL // 2))  # at least 32 items per worker


def _claims(fd: int, count: int, chunk: int) -> Iterable[range]:
    """Chunks of [0, count) taken from a shared pipe of 4-byte chunk starts until it is empty.

    The pipe is filled before forking and read non-blocking; reads of 4 bytes are atomic, so
    every chunk is taken by exactly one process (dynamic load balancing on a busy machine).
    """
    while True:
        try:
            token = os.read(fd, 4)
        except BlockingIOError:
            return
        if len(token) < 4:
            return
        start = int.from_bytes(token, "little")
        yield range(start, min(count, start + chunk))


def _run_worker(item: Callable[[int], int], fd: int, count: int, chunk: int, conn,
                parent: int, nice: int = 0, done=None, slot: int = 0) -> None:
    """Body of a forked worker: compute claimed chunks, send ``[(start, values), ...]`` and the
    worker's CPU seconds; ``done[slot]`` counts the items computed (shared with the parent)."""
    if nice:
        os.nice(nice)
    gc.disable()  # a collection would touch (and copy) the parent's whole heap; refcounts suffice

    def watchdog() -> None:  # also while blocked sending a large result to a dead parent
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        out = []
        for todo in _claims(fd, count, chunk):
            vals = []
            for i in todo:
                if os.getppid() != parent:  # the session process died: never outlive it
                    os._exit(3)
                vals.append(int(item(i)))
                if done is not None:
                    done[slot] += 1
            out.append((todo.start, vals))
        t = os.times()
        conn.send(("ok", out, t.user + t.system))
    except BaseException:  # noqa: BLE001 - report to the parent, which raises
        conn.send(("error", traceback.format_exc(limit=6), 0.0))
    finally:
        conn.close()


class _Forked:
    """``item(i)`` for i in [0, count) being computed by ``procs`` forked worker processes.

    ``item`` may be a closure over keys and data: the workers inherit them by fork and only the
    results are pickled back.  The caller may take chunks itself (:meth:`work_here`) meanwhile.
    Every process counts the items it computed in a shared page (:meth:`items_done`).
    """

    def __init__(self, item: Callable[[int], int], count: int, procs: int, nice: int = 0):
        self.item, self.count = item, count
        self.cpu_seconds = 0.0  # of the workers, once collected
        self.chunk = max(1, min(16, -(-count // (4 * (procs + 1)))), -(-count // 4096))
        self.results: dict[int, list[int]] = {}
        self.procs: list = []
        self.conns: list = []
        self.collected = False
        self._page = mmap.mmap(-1, 8 * (procs + 1))  # shared with the forked workers
        self._done = memoryview(self._page).cast("q")
        self.fd, wfd = os.pipe()
        try:
            tokens = b"".join(s.to_bytes(4, "little") for s in range(0, count, self.chunk))
            os.write(wfd, tokens)  # <= 16 KiB: fits the pipe buffer
        finally:
            os.close(wfd)
        os.set_blocking(self.fd, False)
        ctx = multiprocessing.get_context("fork")
        try:
            for _ in range(procs):
                recv_end, send_end = ctx.Pipe(duplex=False)
                self.conns.append(recv_end)
                proc = ctx.Process(target=_run_worker, daemon=True, args=(
                    item, self.fd, count, self.chunk, send_end, os.getpid(), nice, self._done,
                    len(self.procs)))
                proc.start()
                send_end.close()  # a dead worker shows as EOF; later workers don't inherit it
                self.procs.append(proc)
        except BaseException:
            self.close()
            raise

    def items_done(self) -> int:
        """Items computed so far by all the processes."""
        return sum(self._done) if self._done is not None else self.count

    def work_here(self, progress: Progress | None = None) -> None:
        me = len(self._done) - 1
        for todo in _claims(self.fd, self.count, self.chunk):
            vals = []
            for i in todo:
                vals.append(int(self.item(i)))
                self._done[me] += 1
                if progress is not None:
                    progress(self.items_done())
            self.results[todo.start] = vals

    def done(self) -> bool:
        return all(conn.poll() for conn in self.conns)

    def collect(self, progress: Progress | None = None) -> list[int]:
        """Wait for the workers (reporting their progress meanwhile); all values in index
        order."""
        try:
            for conn, proc in zip(self.conns, self.procs, strict=True):
                while progress is not None and not conn.poll(0.05):
                    progress(self.items_done())
                try:
                    status, payload, cpu = conn.recv()
                except EOFError:
                    proc.join(timeout=5)
                    raise RuntimeError(f"crypto worker died (exit code {proc.exitcode})") from None
                if status != "ok":
                    raise RuntimeError(f"crypto worker failed:\n{payload}")
                self.results.update(payload)
                self.cpu_seconds += cpu
            self.collected = True
        finally:
            self.close()
        out = [v for start in sorted(self.results) for v in self.results[start]]
        if len(out) != self.count:
            raise RuntimeError("crypto workers returned an incomplete result")
        return out

    def close(self) -> None:
        """Reap the workers; ones still computing (error or cancellation) are killed."""
        for conn in self.conns:
            conn.close()
        for proc in self.procs:
            if proc.is_alive() and self.collected:
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
            proc.join()
        self.procs, self.conns = [], []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._done is not None:
            self._done.release()
            self._done = None
            self._page.close()


def _fork_map(item: Callable[[int], int], count: int, workers: int,
              progress: Progress | None = None) -> list[int]:
    """``[item(i) for i in range(count)]`` on this process and ``workers - 1`` forked ones.

    All of them take chunks from a shared queue; results keep the original order.
    ``progress(done)`` is called as items are done, the last time with ``count``.
    """
    if workers <= 1 or count <= 1:
        out = []
        for i in range(count):
            out.append(int(item(i)))
            if progress is not None:
                progress(i + 1)
        return out
    forked = _Forked(item, count, workers - 1)
    try:
        forked.work_here(progress)
        out = forked.collect(progress)
    finally:
        forked.close()
    if progress is not None:
        progress(count)
    return out


def _per_row(progress: Progress | None, items_per_row: int) -> Progress | None:
    """``progress`` in rows of ``items_per_row`` items each."""
    if progress is None or items_per_row <= 1:
        return progress
    return lambda done: progress(done // items_per_row)


# --- fast Paillier primitives ----------------------------------------------------------------


def _random_unit(m: mpz) -> mpz:
    """Uniform in Z_m^* from the operating system's CSPRNG."""
    while True:
        r = mpz(secrets.randbelow(int(m) - 1) + 1)
        if gmpy2.gcd(r, m) == 1:
            return r


class FixedBase:
    """base**e mod m for e < 2**bits by a precomputed window table (fixed-base comb).

    Row i holds base**(j * 2**(w*i)) for j < 2**w, so base**e is the product of one entry per
    w-bit digit of e: ceil(bits / w) - 1 multiplications modulo m instead of ~1.2 * bits for
    square-and-multiply.  The table has ceil(bits / w) * 2**w entries (w = 8, 1024 bits, 4096-bit
    m: 32,768 entries, 16.8 MB; built in ~0.3 s).
    """

    def __init__(self, base: int, m: int, bits: int, window: int = DJN_WINDOW):
        self.m, self.bits, self.w = mpz(m), int(bits), int(window)
        self.rows: list[list[mpz]] = []
        b = mpz(base) % self.m
        for _ in range(-(-self.bits // self.w)):
            row = [mpz(1), b]
            for _ in range(2, 1 << self.w):
                row.append(row[-1] * b % self.m)
            self.rows.append(row)
            b = row[-1] * b % self.m
        self._mask = (1 << self.w) - 1

    def pow(self, e: int) -> mpz:
        if not 0 <= e < (1 << self.bits):
            raise ValueError("exponent out of the table's range")
        acc, m, mask = mpz(1), self.m, self._mask
        for row in self.rows:
            if not e:
                break
            digit = e & mask
            if digit:
                acc = acc * row[digit] % m
            e >>= self.w
        return acc


_TABLES: dict[tuple[int, int, int, int], FixedBase] = {}


def _fixed_base(base: int, m: int, bits: int, window: int = DJN_WINDOW) -> FixedBase:
    """The fixed-base table of ``base`` mod ``m`` (cached: a few keys per process at most)."""
    key = (int(base) % int(m), int(m), int(bits), int(window))
    table = _TABLES.get(key)
    if table is None:
        if len(_TABLES) >= 6:
            _TABLES.pop(next(iter(_TABLES)))
        table = _TABLES[key] = FixedBase(base, m, bits, window)
    return table


def _djn_table(n: int, h: int, bits: int, window: int = DJN_WINDOW) -> FixedBase:
    """The fixed-base table of h mod n**2."""
    return _fixed_base(h, int(n) * int(n), bits, window)


class _PublicCtx:
    """A public key's constants as mpz; its randomisers are DJN ones if it carries h.

    Without the private key the randomisers are the helper's re-randomisers: h**a' with a'
    of :func:`rerandomizer_exponent_bits` bits (the owner's :class:`_PrivateCtx` uses short a).
    """

    def __init__(self, public_key, *, table: bool = True):
        self.n = mpz(public_key.n)
        self.nsq = self.n * self.n
        h = djn_h(public_key)
        self.djn: FixedBase | None = None
        if h is not None and table:
            bits = rerandomizer_exponent_bits(int(self.n).bit_length(),
                                              djn_order_bits(public_key))
            self.djn = _djn_table(int(self.n), check_djn_h(int(self.n), h), bits)

    def randomizer(self, _i: int = 0) -> mpz:
        """An encryption of zero's randomness: h**a mod n**2, a uniform in [0, 2**bits) (DJN),
        or r**n mod n**2 for r uniform in Z_n^* (classic Paillier)."""
        if self.djn is not None:
            return self.djn.pow(secrets.randbits(self.djn.bits))
        return gmpy2.powmod(_random_unit(self.n), self.n, self.nsq)


class _PrivateCtx(_PublicCtx):
    """A private key's CRT constants as mpz (p < q as in phe)."""

    def __init__(self, private_key, public_key=None):
        public_key = private_key.public_key if public_key is None else public_key
        super().__init__(public_key, table=False)
        p, q = mpz(private_key.p), mpz(private_key.q)
        if p * q != self.n or p == q:
            raise ValueError("private key does not match its public key")
        # Standard Paillier keys (p, q of equal length) have gcd(n, phi(n)) = 1; the CRT
        # randomiser below relies on gcd(q, p - 1) = gcd(p, q - 1) = 1.
        if gmpy2.gcd(q, p - 1) != 1 or gmpy2.gcd(p, q - 1) != 1:
            raise ValueError("Paillier key with gcd(n, phi(n)) != 1")
        self.p, self.q = p, q
        self.psq, self.qsq = p * p, q * q
        self.qsq_inv = gmpy2.invert(self.qsq, self.psq)
        self.p_inv = gmpy2.invert(p, q)
        # Decryption exponents: p - 1 and q - 1, or a subgroup key's p' and q' (the orders of
        # h mod p**2 and q**2, so that c**p' mod p**2 keeps only the plaintext: 1 + m p' n).
        h = djn_h(public_key)
        orders = getattr(private_key, "subgroup_orders", None)
        self.subgroup = orders is not None
        if orders is None:
            self.ep, self.eq = p - 1, q - 1
        else:
            self.ep, self.eq = mpz(orders[0]), mpz(orders[1])
            if (p - 1) % self.ep or (q - 1) % self.eq or h is None:
                raise ValueError("subgroup key whose orders do not divide p - 1 and q - 1")
        g = self.n + 1
        self.hp = gmpy2.invert((gmpy2.powmod(g, self.ep, self.psq) - 1) // p, p)
        self.hq = gmpy2.invert((gmpy2.powmod(g, self.eq, self.qsq) - 1) // q, q)
        # DJN: h**a mod p**2 and mod q**2 from two tables, joined by CRT (half the cost of one
        # table modulo n**2: products of 2048-bit instead of 4096-bit numbers).  A subgroup
        # key's tables cover exponents below p' and q': h**a for a uniform mod p' q' exactly.
        self.djn_bits = djn_exponent_bits(int(self.n).bit_length())
        self.djn_pq: tuple[FixedBase, FixedBase] | None = None
        if h is not None:
            h = check_djn_h(int(self.n), h)
            bp, bq = ((self.ep.bit_length(), self.eq.bit_length()) if self.subgroup
                      else (self.djn_bits, self.djn_bits))
            self.djn_pq = (_fixed_base(h, int(self.psq), bp), _fixed_base(h, int(self.qsq), bq))

    def _crt(self, xp: mpz, xq: mpz) -> mpz:
        """The x mod n**2 with x = xp mod p**2 and x = xq mod q**2."""
        return xq + self.qsq * ((xp - xq) * self.qsq_inv % self.psq)

    def nth_power(self, sp: mpz, sq: mpz) -> mpz:
        """x in Z_{n^2}^* with x = sp**p mod p**2 and x = sq**q mod q**2.

        This equals r**n mod n**2 for the r with r = sp**(1/q) mod p and r = sq**(1/p) mod q
        (r**n mod p**2 depends only on r**q mod p, since a = b mod p implies a**p = b**p
        mod p**2).  As x -> x**q permutes Z_p^* (gcd(q, p - 1) = 1), sp, sq uniform makes r
        uniform in Z_n^*: the result has exactly the distribution of phe's r**n mod n**2, at the
        cost of two 1024-bit exponents modulo 2048-bit moduli instead of a 2048-bit exponent
        modulo a 4096-bit one.
        """
        return self._crt(gmpy2.powmod(sp, self.p, self.psq), gmpy2.powmod(sq, self.q, self.qsq))

    def randomizer(self, _i: int = 0) -> mpz:
        """h**a mod n**2 for a uniform a of :func:`djn_exponent_bits` bits (DJN) or a uniform
        in Z_{p'q'} (subgroup key: a mod p' and a mod q' drawn apart), else r**n."""
        if self.subgroup:
            return self._crt(self.djn_pq[0].pow(secrets.randbelow(int(self.ep))),
                             self.djn_pq[1].pow(secrets.randbelow(int(self.eq))))
        if self.djn_pq is not None:
            a = secrets.randbits(self.djn_bits)
            return self._crt(self.djn_pq[0].pow(a), self.djn_pq[1].pow(a))
        return self.nth_power(_random_unit(self.p), _random_unit(self.q))

    def decrypt(self, c: int) -> mpz:
        """Paillier decryption by CRT (as phe's raw_decrypt, on mpz): c is reduced modulo p**2
        and q**2 before the two exponentiations (by p - 1 and q - 1, or by a subgroup key's
        p' and q': 224- instead of 1024-bit exponents for 2048-bit keys).  This, the
        unreduced c, gmpy2's batched powmod_base_list and phe cost the same within the noise
        (bench/paillier_micro.py, "dec" rows; docs/protocols.md "DJN randomness")."""
        c = mpz(c)
        p, q = self.p, self.q
        mp = (gmpy2.powmod(c % self.psq, self.ep, self.psq) - 1) // p * self.hp % p
        mq = (gmpy2.powmod(c % self.qsq, self.eq, self.qsq) - 1) // q * self.hq % q
        return mp + p * ((mq - mp) * self.p_inv % q)


def _context(public_key, private_key) -> _PublicCtx:
    if private_key is None:
        return _PublicCtx(public_key)
    if int(private_key.public_key.n) != int(public_key.n):
        raise ValueError("private key does not belong to the public key")
    return _PrivateCtx(private_key, public_key)


def precompute_randomizers(
    public_key, count: int, *, private_key=None, workers: int | None = None
) -> list[int]:
    """``count`` fresh randomisers r**n mod n**2 (r uniform in Z_n^*), each for one use only.

    For :func:`helper_mask` (``randomizers=``); :class:`RandomizerJob` computes them in the
    background instead.  With the owner's ``private_key`` they are computed by CRT.
    """
    ctx = _context(public_key, private_key)
    return _fork_map(ctx.randomizer, count, effective_workers(workers, count))


class RandomizerJob:
    """Randomisers r**n mod n**2 computed in the background (e.g. while the helper waits).

    Starts ``workers`` forked processes and returns at once; :meth:`result` waits and returns
    ``count`` values for :func:`helper_mask` (``randomizers=``).  The CPU time is the same as
    computing them on demand; only when it is spent changes.  In a daemonic process (which may
    not fork) the values are computed in the constructor.
    """

    def __init__(self, public_key, count: int, *, private_key=None, workers: int | None = None,
                 nice: int = 0):
        ctx = _context(public_key, private_key)
        w = max(1, min((os.cpu_count() or 1) if workers is None else int(workers), count))
        self._values: list[int] | None = None
        self._forked: _Forked | None = None
        self.cpu_seconds = 0.0  # of the worker processes, once the result is in
        if multiprocessing.current_process().daemon or count == 0:
            t0 = time.process_time()
            self._values = [int(ctx.randomizer()) for _ in range(count)]
            self.cpu_seconds = time.process_time() - t0
        else:
            self._forked = _Forked(ctx.randomizer, count, w, nice=nice)

    def ready(self) -> bool:
        return self._values is not None or (self._forked is not None and self._forked.done())

    def result(self) -> list[int]:
        if self._values is None:
            if self._forked is None:
                raise RuntimeError("randomiser job was cancelled")
            self._values = self._forked.collect()
            self.cpu_seconds = self._forked.cpu_seconds
            self._forked = None
        return self._values

    def cancel(self) -> None:
        if self._forked is not None:
            self._forked.close()
            self._forked = None


def draw_randomizers(ctx: _PublicCtx, count: int, pool: list[int] | None,
                     workers: int | None, progress: Progress | None = None) -> list[int]:
    """``count`` randomisers: taken off the end of ``pool`` (removed, so never used twice) as
    far as it reaches, the rest computed now (``progress``: how many are ready)."""
    take = min(count, len(pool)) if pool else 0
    got: list[int] = []
    if take:
        got = pool[len(pool) - take:]
        del pool[len(pool) - take:]
    rest = count - take
    if progress is not None:
        progress(take)
    return got + _fork_map(ctx.randomizer, rest, effective_workers(workers, rest),
                           None if progress is None else (lambda k: progress(take + k)))


def encrypt_many(
    public_key, plaintexts: Sequence[int], *, private_key=None, workers: int | None = None,
    randomizers: list[int] | None = None, progress: Progress | None = None,
) -> list[int]:
    """Raw Paillier encryptions (g = n + 1) of integers in [0, n), fresh randomness each.

    With the owner's ``private_key`` the randomisers are computed by CRT (same distribution).
    ``randomizers``: a pool of r**n mod n**2 for this key to take them from (see
    :func:`draw_randomizers`).
    """
    ctx = _context(public_key, private_key)
    n, nsq = ctx.n, ctx.nsq
    for m in plaintexts:
        if not 0 <= m < n:
            raise ValueError("Paillier plaintext out of range [0, n)")
    rn = draw_randomizers(ctx, len(plaintexts), randomizers, workers, progress)
    return [int((n * m + 1) * x % nsq) for m, x in zip(plaintexts, rn, strict=True)]


def decrypt_many(private_key, ciphertexts: Sequence[int], *, workers: int | None = None,
                 progress: Progress | None = None) -> list[int]:
    """Raw Paillier decryptions by CRT, in order (``progress``: how many are done)."""
    ctx = _PrivateCtx(private_key)
    cts = [mpz(c) for c in ciphertexts]
    return _fork_map(lambda i: ctx.decrypt(cts[i]), len(cts), effective_workers(workers, len(cts)),
                     progress)


def _regroup(flat: list[int], lengths: Sequence[int]) -> list[list[int]]:
    out, pos = [], 0
    for k in lengths:
        out.append(flat[pos:pos + k])
        pos += k
    return out


# --- the join's local steps ------------------------------------------------------------------


def encrypt_rows(
    public_key, rows: Sequence[Sequence[int]], *, private_key=None, workers: int | None = None,
    randomizers: list[int] | None = None, progress: Progress | None = None,
) -> list[list[int]]:
    """Encrypt each row's packed encodings; returns raw ciphertext integers per row.

    The owner should pass its ``private_key``: encryption is then several times faster (CRT).
    ``randomizers``: a precomputed pool for this key (used up from its end, never reused).
    ``progress(rows done)`` is called as the rows are encrypted.
    """
    slots = slots_per_ciphertext(public_key.n.bit_length())
    packed = [pack_row(r, slots) for r in rows]
    flat = encrypt_many(public_key, [p for row in packed for p in row],
                        private_key=private_key, workers=workers, randomizers=randomizers,
                        progress=_per_row(progress, len(packed[0]) if packed else 1))
    return _regroup(flat, [len(row) for row in packed])


def helper_mask(
    public_key, rows: Sequence[Sequence[int]], d: int, modulus: int, *,
    workers: int | None = None, randomizers: list[int] | None = None,
    progress: Progress | None = None,
) -> tuple[list[list[int]], list[list[int]]]:
    """Helper: add fresh slot masks to each ciphertext and re-randomise it.

    Returns the masked ciphertexts (for the owner) and the helper's additive shares
    (-r mod ``modulus``, one per value) in the same row order.  Re-randomisers r**n mod n**2
    (r uniform in Z_n^*) are taken off the end of ``randomizers`` (removed, so never reused;
    made for this key by :func:`precompute_randomizers` or :class:`RandomizerJob`) as far as
    it reaches, the rest computed now on ``workers`` processes.  ``progress(rows done)`` is
    called as their re-randomisers are ready.
    """
    ctx = _PublicCtx(public_key)
    n, nsq = ctx.n, ctx.nsq
    slots = slots_per_ciphertext(public_key.n.bit_length())
    count = sum(len(row) for row in rows)
    rn = draw_randomizers(ctx, count, randomizers, workers,
                          _per_row(progress, len(rows[0]) if rows else 1))
    low = (1 << MASK_BITS) - 1
    masked_rows, shares = [], []
    pos = 0
    for row in rows:
        masked, row_shares = [], []
        remaining = d
        for c in row:
            k = min(slots, remaining)
            remaining -= k
            bits = secrets.randbits(k * MASK_BITS) if k else 0  # k independent 104-bit masks
            masks = [(bits >> (j * MASK_BITS)) & low for j in range(k)]
            packed = 0
            for j, r in enumerate(masks):
                packed |= r << (j * SLOT_BITS)
            # c * Enc(packed; fresh r) both adds the masks and re-randomises c.
            masked.append(int(mpz(c) * (n * packed + 1) % nsq * rn[pos] % nsq))
            pos += 1
            row_shares.extend((-r) % modulus for r in masks)
        masked_rows.append(masked)
        shares.append(row_shares)
    return masked_rows, shares


def decrypt_shares(
    private_key, rows: Sequence[Sequence[int]], d: int, modulus: int, *,
    workers: int | None = None, progress: Progress | None = None,
) -> list[list[int]]:
    """Owner: decrypt masked ciphertexts and unpack its additive shares (v + r mod modulus);
    ``progress(rows done)`` is called as the rows are decrypted."""
    slots = slots_per_ciphertext(private_key.public_key.n.bit_length())
    mask = (1 << SLOT_BITS) - 1
    plain = decrypt_many(private_key, [c for row in rows for c in row], workers=workers,
                         progress=_per_row(progress, len(rows[0]) if rows else 1))
    out = []
    pos = 0
    for row in rows:
        vals: list[int] = []
        remaining = d
        for _ in row:
            p = plain[pos]
            pos += 1
            k = min(slots, remaining)
            remaining -= k
            vals.extend((((p >> (j * SLOT_BITS)) & mask) - OFFSET) % modulus for j in range(k))
        out.append(vals)
    return out


def match(hashes_left: Sequence[bytes], hashes_right: Sequence[bytes]) -> list[tuple[int, int]]:
    """Helper: index pairs (i, j) with equal keyed hashes, in a fresh uniformly random order."""
    index = {h: j for j, h in enumerate(hashes_right)}
    if len(index) != len(hashes_right) or len(set(hashes_left)) != len(hashes_left):
        raise DataError("duplicate join keys reached the helper")
    pairs = [(i, index[h]) for i, h in enumerate(hashes_left) if h in index]
    shuffle(pairs)
    return pairs


def random_permutation(n: int) -> np.ndarray:
    """A uniformly random permutation of range(n) from a cryptographic source (os.urandom).

    Sorts n words of fresh random high bits with the index in the low b = bits(n - 1) bits (one
    uint64 value sort, ~10x faster than an argsort of random keys); rows whose random parts tie
    (~n^2 / 2^(65-b) of them) are put in a fresh uniformly random order among themselves, so
    every permutation is exactly equally likely.
    """
    if n < 2:
        return np.arange(n, dtype=np.int64)
    bits = (n - 1).bit_length()
    low = np.uint64((1 << bits) - 1)
    v = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) & ~low
    v |= np.arange(n, dtype=np.uint64)
    v.sort()
    order = (v & low).astype(np.int64)
    v &= ~low
    tie = np.flatnonzero(v[1:] == v[:-1])
    if tie.size:
        starts = tie[np.r_[True, tie[1:] != tie[:-1] + 1]]
        for s in starts.tolist():
            e = s + 1
            while e < n and v[e] == v[s]:
                e += 1
            order[s:e] = order[s:e][random_permutation(e - s)]
    return order


def shuffle(items: list) -> None:
    """Shuffle ``items`` in place uniformly at random (cryptographic source)."""
    items[:] = [items[i] for i in random_permutation(len(items))]


def key_id(n: int) -> str:
    """A short public name for a Paillier modulus (status output, statistics)."""
    return hashlib.sha256(str(int(n)).encode()).hexdigest()[:16]
