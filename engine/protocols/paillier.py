"""Party-local steps of the published private inner join (keyed hashing + packed Paillier).

See docs/protocols.md for the message flow and what each party learns.  Every function here is
pure: it takes plaintext or ciphertext integers and returns integers; the session code moves
them between parties.

Packing: a row's encoded values v (|v| < 2**63) are offset to v + 2**63 in [0, 2**64) and packed
into slots of SLOT_BITS bits of one Paillier plaintext.  The helper adds to every slot a mask r
uniform in [0, 2**(64 + SIGMA)), so a slot never carries into the next one, and the owner learns
v + 2**63 + r, which hides v up to statistical distance 2**-SIGMA.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence

from phe import paillier

from dialect.errors import DataError

SIGMA = 40  # statistical security of the helper's masks, in bits
OFFSET_BITS = 64
OFFSET = 1 << (OFFSET_BITS - 1)  # makes signed 64-bit encodings non-negative
MASK_BITS = OFFSET_BITS + SIGMA
SLOT_BITS = MASK_BITS + 1  # v + 2**63 + r < 2**64 + 2**104 < 2**105
KEY_BITS = 2048
HASH_BYTES = 32


def slots_per_ciphertext(key_bits: int) -> int:
    """How many value slots fit in one plaintext (which must stay below n)."""
    return max(1, (key_bits - 1) // SLOT_BITS)


def ciphertexts_per_row(d: int, key_bits: int) -> int:
    return -(-d // slots_per_ciphertext(key_bits)) if d else 0


def canonical_id(value: object) -> bytes:
    """Bytes that two parties produce for the same identifier (ints and integral floats alike)."""
    if isinstance(value, bool):
        raise DataError("boolean identifiers are not supported")
    if isinstance(value, float):
        if not value.is_integer():
            raise DataError("identifiers must be integers or strings, not fractional numbers")
        value = int(value)
    if isinstance(value, int):
        return b"i:" + str(value).encode()
    return b"s:" + str(value).encode("utf-8")


def keyed_hashes(key: bytes, ids: Iterable[object]) -> bytes:
    """HMAC-SHA256 of every identifier under the data parties' shared key, concatenated."""
    return b"".join(hmac.new(key, canonical_id(i), hashlib.sha256).digest() for i in ids)


def split_hashes(blob: bytes) -> list[bytes]:
    if len(blob) % HASH_BYTES:
        raise DataError("malformed hash list")
    return [blob[i:i + HASH_BYTES] for i in range(0, len(blob), HASH_BYTES)]


def generate_keypair(key_bits: int = KEY_BITS):
    """A fresh Paillier key pair (2048-bit in production; smaller only in labelled unit tests)."""
    return paillier.generate_paillier_keypair(n_length=key_bits)


def pack_row(encoded: Sequence[int], slots: int) -> list[int]:
    """Pack one row of signed encodings into ceil(d / slots) non-negative plaintexts."""
    out = []
    for start in range(0, len(encoded), slots):
        acc = 0
        for j, v in enumerate(encoded[start:start + slots]):
            acc |= (int(v) + OFFSET) << (j * SLOT_BITS)
        out.append(acc)
    return out


def encrypt_rows(public_key, rows: Sequence[Sequence[int]]) -> list[list[int]]:
    """Encrypt each row's packed encodings; returns raw ciphertext integers per row."""
    slots = slots_per_ciphertext(public_key.n.bit_length())
    return [[public_key.raw_encrypt(p) for p in pack_row(r, slots)] for r in rows]


def helper_mask(
    public_key, rows: Sequence[Sequence[int]], d: int, modulus: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Helper: add fresh slot masks to each ciphertext and re-randomise it.

    Returns the masked ciphertexts (for the owner) and the helper's additive shares
    (-r mod ``modulus``, one per value) in the same row order.
    """
    n = public_key.n
    nsquare = public_key.nsquare
    slots = slots_per_ciphertext(n.bit_length())
    masked_rows, shares = [], []
    for row in rows:
        masked, row_shares = [], []
        remaining = d
        for c in row:
            k = min(slots, remaining)
            remaining -= k
            masks = [secrets.randbits(MASK_BITS) for _ in range(k)]
            packed = sum(r << (j * SLOT_BITS) for j, r in enumerate(masks))
            # Enc(packed) with fresh randomness both adds the masks and re-randomises c.
            masked.append(c * public_key.raw_encrypt(packed) % nsquare)
            row_shares.extend((-r) % modulus for r in masks)
        masked_rows.append(masked)
        shares.append(row_shares)
    return masked_rows, shares


def decrypt_shares(
    private_key, rows: Sequence[Sequence[int]], d: int, modulus: int
) -> list[list[int]]:
    """Owner: decrypt masked ciphertexts and unpack its additive shares (v + r mod modulus)."""
    slots = slots_per_ciphertext(private_key.public_key.n.bit_length())
    mask = (1 << SLOT_BITS) - 1
    out = []
    for row in rows:
        vals: list[int] = []
        remaining = d
        for c in row:
            p = private_key.raw_decrypt(c)
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


def shuffle(items: list) -> None:
    """In-place Fisher-Yates shuffle with a cryptographic random source."""
    for i in range(len(items) - 1, 0, -1):
        j = secrets.randbelow(i + 1)
        items[i], items[j] = items[j], items[i]
