"""Join-id PRF: AES-256 as a PRP used as a PRF (birthday bound 2^64 rows); HMAC for long ids."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from engine.protocols.paillier import canonical_id

DOMAIN = b"mpcsql/id-prf/v1/"
WORD_BYTES = 16
#: Tag byte of the integer encodings, by the tag of the canonical id (b"<tag>:<integer>").
#: Generic encodings use 0x10 | length, so the two kinds of block never coincide.
INT_TAGS = {b"i": 1, b"date": 2, b"time": 3, b"timestamp": 4, b"timestamptz": 5,
            b"timestamp_ns": 6}
INT_BYTES = 15  # two's complement, big-endian: integers in [-2^119, 2^119)
_INT_LIMIT = 1 << (8 * INT_BYTES - 1)
_GENERIC = 0x10


def subkeys(key: bytes) -> tuple[bytes, bytes]:
    """The AES-256 key and the HMAC-SHA256 key of the PRF, both derived from the shared hash
    key ``key`` by HMAC-SHA256 with distinct labels (independent PRF domains)."""
    return (hmac.new(key, DOMAIN + b"aes-256", hashlib.sha256).digest(),
            hmac.new(key, DOMAIN + b"hmac-sha256", hashlib.sha256).digest())


def block_of(canon: bytes) -> bytes | None:
    """The 16-byte block of a canonical id (:func:`paillier.canonical_id`), None if it has none.

    ``tag:integer`` with a tag of :data:`INT_TAGS` and an integer in [-2^119, 2^119): the tag's
    byte and the integer in 15 bytes; otherwise a canonical form of at most 15 bytes:
    0x10 | its length, the bytes, zeros.  Injective: the first byte tells the kind (and the
    length), the rest the value.
    """
    tag, sep, rest = canon.partition(b":")
    digits = rest[1:] if rest[:1] == b"-" else rest
    if sep and tag in INT_TAGS and digits.isdigit():
        v = int(rest)
        if -_INT_LIMIT <= v < _INT_LIMIT:
            return bytes((INT_TAGS[tag],)) + v.to_bytes(INT_BYTES, "big", signed=True)
        return None
    if len(canon) < WORD_BYTES:
        return bytes((_GENERIC | len(canon),)) + canon.ljust(INT_BYTES, b"\0")
    return None


def int_blocks(ids: np.ndarray) -> np.ndarray:
    """:func:`block_of` of ``canonical_id(v)`` for a numpy integer array, as (n, 16) uint8:
    byte 0 the integer tag, bytes 1-7 the sign extension, bytes 8-15 the 64-bit value."""
    signed = ids.dtype.kind == "i"
    v = np.ascontiguousarray(ids, dtype=">i8" if signed else ">u8").reshape(-1)
    out = np.empty((v.size, WORD_BYTES), dtype=np.uint8)
    out[:, 0] = INT_TAGS[b"i"]
    out[:, 1:8] = ((v < 0).astype(np.uint8) * np.uint8(0xFF))[:, None] if signed else 0
    out[:, 8:] = v.view(np.uint8).reshape(-1, 8)
    return out


def _hmac_states(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer SHA-256 states after the padded key (RFC 2104)."""
    k = hashlib.sha256(key).digest() if len(key) > 64 else key
    k = k.ljust(64, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in k)),
            hashlib.sha256(bytes(b ^ 0x5C for b in k)))


def prf(key: bytes, ids: Any) -> np.ndarray:
    """The (n, 16) uint8 PRF words of ``ids`` under the shared hash key ``key``.

    AES-256_{k_a}(block_of(canonical id)) when the id has a block (all integers below 2^119,
    dates and times, short strings and decimals): one AES-ECB call over all blocks; else
    HMAC-SHA256_{k_h}(canonical id)[:16].  Equal ids of one key class have equal canonical ids
    (whatever the column widths), hence equal words; distinct ids get distinct words on the
    AES path (a permutation) and collide with probability 2^-128 otherwise.  ``ids`` is a
    numpy integer array or a sequence of ids.
    """
    k_aes, k_hmac = subkeys(key)
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
        blocks, long_ids = int_blocks(ids), []
    else:
        canons = [canonical_id(v) for v in ids]
        found = [block_of(c) for c in canons]
        long_ids = [(i, c) for i, (c, b) in enumerate(zip(canons, found, strict=True)) if b is None]
        blocks = np.frombuffer(b"".join(b if b is not None else bytes(WORD_BYTES)
                                        for b in found), dtype=np.uint8).reshape(-1, WORD_BYTES)
    enc = Cipher(algorithms.AES(k_aes), modes.ECB()).encryptor()
    words = np.frombuffer(enc.update(blocks.tobytes()) + enc.finalize(), dtype=np.uint8)
    words = words.reshape(-1, WORD_BYTES)
    if long_ids:
        words = words.copy()
        inner, outer = _hmac_states(k_hmac)
        for i, c in long_ids:
            a = inner.copy()
            a.update(c)
            b = outer.copy()
            b.update(a.digest())
            words[i] = np.frombuffer(b.digest()[:WORD_BYTES], dtype=np.uint8)
    return words


def keyed_hashes(key: bytes, ids: Any, width: int = WORD_BYTES) -> bytes:
    """:func:`prf` of every id as ``width`` bytes each, concatenated: the 16-byte word, then
    zeros up to ``width`` (the wire's hash width is the word, paillier.HASH_BYTES = 16)."""
    words = prf(key, ids)
    if width == WORD_BYTES:
        return words.tobytes()
    out = np.zeros((words.shape[0], width), dtype=np.uint8)
    out[:, :WORD_BYTES] = words
    return out.tobytes()
