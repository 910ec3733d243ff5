"""Masked private inner join (``SET join_protocol = 'masked'``): no public-key operation per row.

See docs/masked_join.md for the message flow and what each party learns.  In short: the data
parties L and R share a fresh key k the helper H never sees.  Each shuffles its rows and sends
H keyed hashes of its ids and its fixed-point values masked by PRF(k, party, position, column)
mod p.  H matches the hashes, picks a random output order and tells each data party the matched
positions in the *other* party's shuffled list.  Every joined value is then additively shared
mod p: H holds v + r (the masked value), the other data party -r (recomputed from k and the
position); both input their shares into MPyC, which adds them.

The PRF is one SHAKE-256 stream per (party, column), keyed by a subkey of k; position i reads
bytes [i*S, (i+1)*S) of the stream as an integer reduced mod p, with S chosen so that the result
is within statistical distance 2^-64 of uniform mod p (:func:`sample_bytes`: 16 bytes for the
prime p = 2^128 - 173 of SecFxp(64, 32), distance < 2^-120).  Values travel and are added as
64-bit words in numpy; Python ints appear only for the m x d shares input into MPyC.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from dialect.errors import ProtocolError
from engine.protocols import paillier
from engine.protocols.fixedpoint import encode_int64
from engine.session import announce_size
from planner.plan import PrivateJoin

if TYPE_CHECKING:
    from engine.session import Session

DOMAIN = b"mpcsql/masked-join/v1/"
SIGMA = 64  # statistical security of the masks: distance from uniform mod p <= 2**-SIGMA
KEY_BYTES = 32
_M64 = (1 << 64) - 1


# --- keys and the PRF --------------------------------------------------------------------------


def derive_key(key: bytes, purpose: bytes) -> bytes:
    """A 256-bit subkey of the data parties' key ``key`` for one ``purpose``."""
    return hmac.new(key, DOMAIN + purpose, hashlib.sha256).digest()


def id_key(key: bytes) -> bytes:
    """The HMAC-SHA256 key for hashing join ids (independent of the mask keys)."""
    return derive_key(key, b"id-hash")


def value_words(modulus: int) -> int:
    """64-bit words per field element (2 for a 128-bit prime)."""
    return -(-modulus.bit_length() // 64)


def sample_bytes(modulus: int) -> int:
    """PRF bytes per mask: the fewest whole 64-bit words w (covering the modulus) such that
    (2**w mod p) / 2**w <= 2**-SIGMA, which bounds the distance of (uniform w-bit) mod p from
    uniform.  For p = 2**128 - 173 (SecFxp(64, 32)) that is 16 bytes (distance < 2**-120);
    a prime far below a power of two gets bits(p) + 64 bits and more."""
    words = value_words(modulus)
    while (1 << (64 * words)) % modulus << SIGMA > 1 << (64 * words):
        words += 1
    return 8 * words


def _stream(key: bytes, party: str, column: int, nbytes: int) -> bytes:
    name = party.encode()
    seed = (derive_key(key, b"mask") + len(name).to_bytes(2, "big") + name
            + column.to_bytes(4, "big"))
    return hashlib.shake_256(seed).digest(nbytes)


def _positions(positions: np.ndarray) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    if pos.size and pos.min() < 0:
        raise ProtocolError("negative row position in the masked join")
    return pos


def _sample_words(key: bytes, party: str, column: int, pos: np.ndarray, s: int) -> np.ndarray:
    """(s/8, len(pos)) words of the samples at ``pos`` (word-major)."""
    stream = _stream(key, party, column, s * (int(pos.max()) + 1) if pos.size else 0)
    words = np.frombuffer(stream, dtype="<u8").reshape(-1, s // 8)
    return words[pos].T


def prf(key: bytes, party: str, column: int, positions: np.ndarray, modulus: int) -> np.ndarray:
    """PRF(key, party, position, column) mod ``modulus`` per position, as Python ints.

    The reference definition: position i reads bytes [i*S, (i+1)*S) of the SHAKE-256 stream
    of (key, party, column) as a little-endian integer, S = :func:`sample_bytes`.
    """
    pos = _positions(positions)
    if not pos.size:
        return np.zeros(0, dtype=object)
    return words_to_ints(_sample_words(key, party, column, pos, sample_bytes(modulus))) % modulus


def prf_words(
    key: bytes, party: str, column: int, positions: np.ndarray, modulus: int
) -> np.ndarray:
    """:func:`prf` as (K, len(positions)) 64-bit words, vectorised in numpy.

    Fast path when a sample is one field element wide and below 2p (p = 2**128 - 173): one
    conditional subtraction; otherwise through Python ints.
    """
    pos = _positions(positions)
    k, s = value_words(modulus), sample_bytes(modulus)
    if not pos.size:
        return np.zeros((k, 0), dtype=np.uint64)
    if s != 8 * k or 1 << (64 * k) > 2 * modulus:
        return ints_to_words(prf(key, party, column, pos, modulus), modulus)
    x = np.ascontiguousarray(_sample_words(key, party, column, pos, s), dtype=np.uint64)
    d, borrow = _sub(x, _const(modulus, x))
    return np.where(borrow == 0, d, x)


def masks(key: bytes, party: str, d: int, positions: np.ndarray, modulus: int) -> np.ndarray:
    """(K, len(positions), d) words: the masks of ``party``'s columns 0..d-1 at ``positions``."""
    pos = _positions(positions)
    out = np.empty((value_words(modulus), pos.size, d), dtype=np.uint64)
    for j in range(d):
        out[:, :, j] = prf_words(key, party, j, pos, modulus)
    return out


# --- arithmetic mod p on arrays of 64-bit words (word-major: axis 0, least significant first) --


def _const(x: int, like: np.ndarray) -> np.ndarray:
    """The integer ``x`` as words broadcasting against ``like``."""
    k = like.shape[0]
    c = np.array([(x >> (64 * j)) & _M64 for j in range(k)], dtype=np.uint64)
    return c.reshape((k,) + (1,) * (like.ndim - 1))


def _add(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a + b mod 2**(64K) and the carry out."""
    a, b = np.broadcast_arrays(a, b)
    out = np.empty(a.shape, dtype=np.uint64)
    carry = np.zeros(a.shape[1:], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(a.shape[0]):
            np.add(a[j], b[j], out=out[j])
            c = out[j] < a[j]
            out[j] += carry
            carry = (c | (out[j] < carry)).astype(np.uint64)
    return out, carry


def _sub(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a - b mod 2**(64K) and the borrow out (1 where a < b)."""
    a, b = np.broadcast_arrays(a, b)
    out = np.empty(a.shape, dtype=np.uint64)
    borrow = np.zeros(a.shape[1:], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(a.shape[0]):
            np.subtract(a[j], b[j], out=out[j])
            bj = a[j] < b[j]
            bj |= out[j] < borrow
            out[j] -= borrow
            borrow = bj.astype(np.uint64)
    return out, borrow


def add_mod(a: np.ndarray, b: np.ndarray, modulus: int) -> np.ndarray:
    """(a + b) mod p for words a, b < p."""
    s, carry = _add(a, b)
    d, borrow = _sub(s, _const(modulus, s))
    return np.where((carry == 1) | (borrow == 0), d, s)


def neg_mod(a: np.ndarray, modulus: int) -> np.ndarray:
    """-a mod p for words a < p."""
    d, _ = _sub(_const(modulus, a), a)
    return np.where((a == 0).all(axis=0), a, d)


def int64_to_words(v: np.ndarray, modulus: int) -> np.ndarray:
    """Signed 64-bit integers (|v| < 2**63) as words of v mod p."""
    v = np.asarray(v, dtype=np.int64)
    mag = np.zeros((value_words(modulus),) + v.shape, dtype=np.uint64)
    mag[0] = np.abs(v).astype(np.uint64)
    neg, _ = _sub(_const(modulus, mag), mag)
    return np.where(v < 0, neg, mag)


def words_to_ints(words: np.ndarray) -> np.ndarray:
    """Words (axis 0) -> object array of Python ints, vectorised."""
    acc = words[-1].astype(object)
    for j in range(words.shape[0] - 2, -1, -1):
        acc = (acc << 64) | words[j].astype(object)
    return acc


def ints_to_words(values: np.ndarray, modulus: int) -> np.ndarray:
    """Object array of ints in [0, p) -> words (a new axis 0)."""
    x = np.asarray(values, dtype=object)
    k = value_words(modulus)
    out = np.empty((k,) + x.shape, dtype=np.uint64)
    for j in range(k):
        out[j] = ((x >> (64 * j)) & _M64).astype(np.uint64)
    return out


# --- the parties' local steps ------------------------------------------------------------------


def secure_permutation(n: int) -> np.ndarray:
    """A uniformly random permutation of range(n) from a cryptographic source."""
    order = list(range(n))
    paillier.shuffle(order)
    return np.array(order, dtype=np.int64)


def mask_rows(key: bytes, party: str, values: np.ndarray, modulus: int) -> bytes:
    """Owner: encodings of its (shuffled) n x d rows plus their masks mod p, as wire bytes.

    Wire format: K blocks (least significant word first) of n*d little-endian uint64 each.
    """
    n, d = values.shape
    v = int64_to_words(encode_int64(values), modulus)
    return add_mod(v, masks(key, party, d, np.arange(n), modulus), modulus).astype("<u8").tobytes()


def helper_shares(blob: bytes, n: int, d: int, rows: np.ndarray, modulus: int) -> np.ndarray:
    """Helper: its shares (the masked values) of ``rows`` of an owner's n x d matrix."""
    k = value_words(modulus)
    if len(blob) != n * d * k * 8:
        raise ProtocolError(f"malformed masked values: {len(blob)} bytes for {n} x {d} values")
    words = np.frombuffer(blob, dtype="<u8").reshape(k, n, d)
    return words_to_ints(words[:, np.asarray(rows, dtype=np.int64)])


def other_shares(
    key: bytes, owner: str, d: int, positions: np.ndarray, modulus: int
) -> np.ndarray:
    """The other data party: its shares -PRF(k, owner, position, column) mod p, as ints."""
    return words_to_ints(neg_mod(masks(key, owner, d, positions, modulus), modulus))


async def masked_join(sess: Session, join: PrivateJoin, sf) -> tuple[int, Any]:
    """Masked private inner join; returns m and the m x (d_L + d_R) secret-shared table."""
    job, mpc = sess.job, sess.mpc
    left, right, helper = join.left.party, join.right.party, join.helper
    other = {left: right, right: left}
    p = sf.field.order
    me = job.party
    d = {left: len(join.left.columns), right: len(join.right.columns)}

    # 1. The data parties agree on a key the helper never sees.
    key = await sess.send("join_key", os.urandom(KEY_BYTES) if me == left else None, left,
                          [right])

    # 2. Each data party shuffles its rows; keyed hashes of ids and PRF-masked values to H.
    outbox = None
    if me in (left, right):
        data = job.local
        order = secure_permutation(len(data.ids))
        hashes = paillier.keyed_hashes(id_key(key), (data.ids[i] for i in order))
        sess.phase("hash")
        values = np.asarray(data.values, dtype=np.float64).reshape(len(order), d[me])[order]
        outbox = {"hashes": hashes, "masked": mask_rows(key, me, values, p)}
        sess.phase("mask")
    inbox_l = await sess.send("hashed_masked_rows", outbox if me == left else None,
                              left, [helper])
    inbox_r = await sess.send("hashed_masked_rows", outbox if me == right else None,
                              right, [helper])

    # 3. The helper matches keyed hashes and fixes a uniformly random output order.
    pairs = None
    if me == helper:
        pairs = paillier.match(paillier.split_hashes(inbox_l["hashes"]),
                               paillier.split_hashes(inbox_r["hashes"]))
        sess.phase("match")
    m = await announce_size(sess, "intersection_size", len(pairs) if me == helper else None,
                            helper, [left, right], "the intersection")
    if m == 0 or not (d[left] or d[right]):
        return m, None

    # 4. H tells each data party where the matches lie in the *other* party's shuffled list.
    positions: dict[str, np.ndarray | None] = {left: None, right: None}
    if me == helper:
        pos = np.array(pairs, dtype=np.int64).reshape(m, 2)
        positions = {left: pos[:, 0], right: pos[:, 1]}
    for owner in (left, right):
        if d[owner]:
            got = await sess.send("matched_positions", positions[owner], helper, [other[owner]])
            if me == other[owner]:
                positions[owner] = _check_positions(got, m)

    # 5. Additive shares mod p of every joined value: H holds v + r, the other party -r.
    shares: dict[str, np.ndarray] = {}
    inboxes = {left: inbox_l, right: inbox_r}
    for owner in (left, right):
        if not d[owner]:
            continue
        if me == helper:
            inbox = inboxes[owner]
            n = len(inbox["hashes"]) // paillier.HASH_BYTES
            shares[owner] = helper_shares(inbox["masked"], n, d[owner], positions[owner], p)
        elif me == other[owner]:
            shares[owner] = other_shares(key, owner, d[owner], positions[owner], p)
            sess.transcript.record("derived_shares", me, shares[owner], 0)  # what it now knows
    sess.phase("derive shares")

    # 6. Additive shares become Shamir shares: H and the other party input theirs, MPyC adds.
    blocks = []
    for owner in (left, right):
        if not d[owner]:
            continue
        shape = (m, d[owner])
        zero = np.zeros(shape, dtype=object)
        hel = shares[owner] if me == helper else zero
        oth = shares[owner] if me == other[owner] else zero
        a = mpc.input(sf.array(sf.field.array(hel), integral=False), senders=job.pids[helper])
        b = mpc.input(sf.array(sf.field.array(oth), integral=False),
                      senders=job.pids[other[owner]])
        blocks.append(a + b)
    table = blocks[0] if len(blocks) == 1 else mpc.np_hstack(blocks)
    sess.phase("share input")
    return m, table


def _check_positions(got: Any, m: int) -> np.ndarray:
    pos = np.asarray(got)
    if pos.shape != (m,) or pos.dtype.kind not in "iu" or (m and pos.min() < 0):
        raise ProtocolError("malformed matched positions from the helper")
    return pos.astype(np.int64)
