"""The published private inner join: keyed hashes, packed Paillier, helper masks; shares out.

Van Egmond et al., "Privacy-preserving dataset combination and Lasso regression for
healthcare predictions", BMC Med Inform Decis Mak 21:266 (2021), with the fixes described in
docs/protocols.md.  After the shared skeleton (:mod:`engine.protocols.joins.common`):

4. Each data party has sent its shuffled rows encrypted under its own fresh Paillier key
   (19 fixed-point values per 2048-bit plaintext).  H picks the matched ciphertexts in output
   order, adds a uniformly random mask per value (104 bits, statistical hiding 2^-40) and
   re-randomises every ciphertext, so the owner cannot link what it gets back to its rows.
5. Each owner decrypts its additive shares v + r; H holds -r.
6. Protocol A2S (:mod:`engine.protocols.shares`) turns the additive shares into Shamir shares.

What each party learns: the owners learn m and, per matched row, their own values plus a mask
they cannot remove; H learns |L|, |R| and m.  Nobody learns which rows matched.

Progress: an owner counts the rows it encrypts (its own table size) and decrypts (m); H counts
each owner's m rows it re-randomises; the owners report "helper re-randomising" meanwhile.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.protocols import paillier
from engine.protocols.channel import Channel
from engine.protocols.fieldwords import ints_to_words
from engine.protocols.fixedpoint import encode
from engine.protocols.joins.common import hash_and_match, step
from engine.protocols.shares import SharedTable, additive_to_shamir
from planner.plan import PrivateJoin


async def paillier_join(chan: Channel, join: PrivateJoin, sf, *, key_bits: int = paillier.KEY_BITS,
                        keypair: tuple[Any, Any] | None = None,
                        randomizers: dict[int, list[int]] | None = None,
                        randomness: str = paillier.DEFAULT_RANDOMNESS) -> tuple[int, Any]:
    """Published private join; returns m and the m x (d_L + d_R) secret-shared table.

    ``keypair`` is a data party's long-term Paillier key (pools on; else a fresh one) and
    ``randomizers`` the precomputed r^n per modulus handed over by the party's pool.
    ``randomness`` ("djn", "classic" or "subgroup") is this data party's choice for a fresh
    key; a DJN or subgroup key publishes its base h with n (a subgroup key also the bound
    ``h_order_bits`` on h's order), and H re-randomises with h (checked) whenever it is
    present, with exponents of that many bits + SIGMA.
    """
    left, right, helper = join.left.party, join.right.party, join.helper
    randomizers = {} if randomizers is None else randomizers
    p = sf.field.order
    me = chan.party
    d = {left: len(join.left.columns), right: len(join.right.columns)}
    keys: dict[str, Any] = {}

    def encrypted_rows(key: bytes, order: np.ndarray) -> dict[str, Any]:
        if keypair is None:
            step(chan, "generating a Paillier key")
        pub, priv = keypair or paillier.generate_keypair(key_bits, randomness)
        keys["priv"] = priv
        enc = encode(chan.local.values[order]) if d[me] else None
        cts = []
        if d[me]:
            count = step(chan, "encrypting", len(order), "rows")
            cts = paillier.encrypt_rows(pub, enc.tolist(), private_key=priv,
                                        randomizers=randomizers.get(int(pub.n)), progress=count)
        chan.phase("encrypt")
        out: dict[str, Any] = {"n": int(pub.n), "cts": cts}
        h = paillier.djn_h(pub)  # the key owner's choice of randomness, published with n
        bits = paillier.djn_order_bits(pub)  # a subgroup key's bound: ord(h) < 2**bits
        if h is not None:
            out["h"] = h
        if bits is not None:
            out["h_order_bits"] = bits
        return out

    matched = await hash_and_match(chan, join, key_label="hmac_key",
                                   rows_label="hashed_encrypted_rows", hash_key=lambda k: k,
                                   payload=encrypted_rows)
    m = matched.m
    if m == 0:
        return 0, None
    if me != helper:
        step(chan, "helper re-randomising")

    boxes: dict[str, Any] = {left: None, right: None}
    hshares: dict[str, Any] = {}
    if me == helper:
        for party, idx in ((left, 0), (right, 1)):
            inbox = matched.inboxes[party]
            if d[party]:
                pub = paillier.public_key(int(inbox["n"]), inbox.get("h"),
                                          inbox.get("h_order_bits"))  # both checked
                rows = [inbox["cts"][pair[idx]] for pair in matched.pairs]
                count = step(chan, f"re-randomising {party}'s rows", m, "rows")
                boxes[party], hshares[party] = paillier.helper_mask(
                    pub, rows, d[party], p, randomizers=randomizers.get(int(pub.n)),
                    progress=count)
        chan.phase("mask")
        step(chan, "sending masked rows")
    got = {}
    for party in (left, right):
        if d[party]:
            got[party] = await chan.send("masked_rows", boxes[party], helper, [party])

    share = None
    if me in (left, right) and d[me]:
        count = step(chan, "decrypting", m, "rows")
        share = paillier.decrypt_shares(keys["priv"], got[me], d[me], p, progress=count)
        chan.observe("decrypted_shares", share)  # what the owner now knows
        chan.phase("decrypt")

    step(chan, "converting shares")
    blocks = []
    for party in (left, right):
        if not d[party]:
            continue
        words = None
        if me == party:
            words = ints_to_words(np.array(share, dtype=object).reshape(m, d[party]), p)
        elif me == helper:
            words = ints_to_words(np.array(hshares[party], dtype=object).reshape(m, d[party]), p)
        blocks.append(await additive_to_shamir(chan, (party, helper), words, m, d[party], sf))
    table = SharedTable.hstack(blocks) if blocks else None
    chan.phase("share input")
    return m, table
