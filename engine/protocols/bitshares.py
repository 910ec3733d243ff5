"""Three-party replicated secret sharing of bits, bit-sliced in numpy, and its conversions to and
from MPyC's Shamir shares (A2B, B2A, counting).

MPyC (``np_sgn``, a la Toft) compares two secret numbers of l bits with l + 1 secret random
bits, each a PRSS square, an opening and a 128-bit modular square root, plus a product tree of
l multiplications: 10^4 comparisons take 13.7 CPU s per party at l = 64 and 7.3 s at the
smallest correct l = 35 for normalised values (74.7 s and 36.0 s wall at load 5 on this 2-core
machine).  Here the bit work runs in the replicated sharing of Araki, Furukawa, Lindell, Nof
and Ohara (CCS 2016) / ABY3 (Mohassel and Rindal, CCS 2018) over GF(2): one bit sent per AND
gate and party, plain numpy boolean operations; only the conversions touch the 128-bit field
(the same 10^4 comparisons, conversions included: 0.1 CPU s per party, 0.33 s wall).

Sharing ([x]^B): x = x_0 ^ x_1 ^ x_2; party i holds (x_i, x_{i+1}) (indices mod 3), so
component j is held by parties j - 1 and j and unknown to party j + 1.  The pseudorandom
functions are the AES-256-CTR PRF of :mod:`engine.protocols.prf` keyed with MPyC's PRSS keys
(the key of the pair {j - 1, j} for component j), with a label, the session's unique common
input and a counter (each stream used once).

* XOR, NOT, AND with a public bit: local.
* AND (protocol of Araki et al.): party i computes z_i = x_i y_i ^ x_i y_{i+1} ^ x_{i+1} y_i
  ^ a_i with the zero sharing a_i = F_i ^ F_{i+1} and sends z_i to party i - 1.  z_i is
  uniform to its receiver.  One round; all ANDs of a round travel in one message.
* :func:`a2b` (Shamir [x] over GF(p), 0 <= x < 2^L, to [x]^B; the masked opening of MPyC's
  ``np_to_bits`` a la Schoenmakers and Tuyls 2006, with bitwise masks): the parties open
  c = x + r_0 + r_1 + r_2, where r_j is uniform in [0, 2^(B + k)) (B >= bits of x, k = MPyC's
  security parameter) and known to the holders of component j, shared in Shamir form for free
  as in PRSS (Cramer, Damgard, Ishai, TCC 2005): every party misses one r_j, so c hides x to
  statistical distance 2^-k.  Then x = c - r_0 - r_1 - r_2 mod 2^L is computed bitwise: two
  carry-save layers and a Kogge-Stone adder, 2 + 1 + ceil(log2(L - 1)) AND rounds, about
  L (3 + 2 log2 L) ANDs per value.  Each party sends its masked share (two words) to one peer
  and interpolates c from two shares (t = 1).
* :func:`count` (the number of ones in each row of [t]^B, as additive shares mod 2^32 held by
  parties 1 and 2): with u = t_0 ^ t_1 (party 0) and v = t_2 (parties 1 and 2),
  t = u + v - 2uv, so sum t = sum v + sum (1 - 2v) u.  Party 0 sends u + a mod 2^32 (a from
  the key of component 0, known to parties 0 and 2) to party 1 only: uniform to party 1.
* :func:`inputs`: a value known to one party becomes [x]^B with one masked message.
* :func:`b2a` ([b]^B -> Shamir sum_j W[o, j] b_j over GF(p)): the same decomposition as
  :func:`count` mod p, then parties 1 and 2 Shamir-share their additive parts with one element
  sent each (the share of one peer is pseudorandom from their common key).

Security: semi-honest, one corrupted party (t = 1), like MPyC; every message a party receives is
uniform given its view (a masked value whose mask it does not know).  Nothing is opened but the
masked c of :func:`a2b`.

The messages travel by MPyC's ``transfer``, labelled with the runtime's program counter: run
a protocol under :func:`forked` if other code may call MPyC concurrently.

In MPyC's single-party runtime (unit tests) :class:`Net` simulates the three parties in one
process: every array has a leading axis over the simulated parties, messages move along it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dialect.errors import NotSupportedError, ProtocolError
from engine.protocols import codec
from engine.protocols import fieldwords as fw
from engine.protocols.prf import keystream

_LABEL = b"mpcsql/bitshares/v1/"
RING = {0: 2, 1: 0, 2: 1}  # party i sends its new component to party i - 1
_M32 = (1 << 32) - 1
_M64 = (1 << 64) - 1


def forked(rt: Any, coro: Any) -> Any:
    """``coro`` under a program counter forked now, as MPyC runs its coroutines
    (``asyncoro._ProgramCounterWrapper``): the messages of a protocol of this module get the
    same labels at every party even when other code runs concurrently (asyncio.gather).  Call
    it in program order (e.g. ``await forked(rt, protocol(...))``)."""
    from engine.protocols.runtime import mpyc

    return mpyc.asyncoro._ProgramCounterWrapper(rt, coro)


def malformed(sender: int, what: str) -> ProtocolError:
    """The error for a peer's message of the wrong type, shape or range (names the party)."""
    name = codec.party_name(sender)
    return ProtocolError(f"party {name} sent a malformed {what}", party=name)


def _pair(j: int) -> tuple[int, int]:
    """The parties holding component j (MPyC's PRSS key of that pair)."""
    return tuple(sorted(((j - 1) % 3, j % 3)))


class Net:
    """This party's end of the replicated sharing (or all three parties, simulated)."""

    def __init__(self, rt: Any):
        self.rt = rt
        m, t = len(rt.parties), rt.threshold
        if m == 1:
            self.sim = True
            self.me = np.arange(3)
            self.keys = {j: secrets.token_bytes(16) for j in range(3)}
        elif m == 3 and t == 1 and not rt.options.no_prss:
            self.sim = False
            self.me = np.array([rt.pid])
            self.keys = {j: rt._prss_keys[_pair(j)] for j in (rt.pid, (rt.pid + 1) % 3)}
        else:
            raise NotSupportedError("MIN/MAX/QUANTILE need three parties with threshold 1 and "
                                    "MPyC's pseudorandom secret sharing")
        self.P = len(self.me)
        self.uci = rt._prss_uci()  # unique per session and call, the same at every party
        self.ctr = 0
        self.x = self.me + 1  # Shamir evaluation points

    # --- randomness and messages ---------------------------------------------------------------

    def nonce(self) -> bytes:
        """A fresh counter value (every party draws one for every PRF use, in the same order)."""
        self.ctr += 1
        return self.ctr.to_bytes(8, "little")

    def stream(self, comp: int, nonce: bytes, nbytes: int) -> np.ndarray:
        """The PRF stream of (key of component comp, label, uci, nonce): nbytes uint8."""
        return keystream(self.keys[comp] + _LABEL + self.uci + nonce, nbytes)

    def prf_rel(self, rel: int, nonce: bytes, nbytes: int) -> np.ndarray:
        """(P, nbytes): each party's stream of its component me + rel (rel 0: a, 1: b)."""
        return np.stack([self.stream((int(i) + rel) % 3, nonce, nbytes) for i in self.me])

    def prf_comp(self, comp: int, nonce: bytes, nbytes: int) -> np.ndarray:
        """(P, nbytes): component comp's stream at its holders, zeros elsewhere."""
        out = np.zeros((self.P, nbytes), dtype=np.uint8)
        for p, i in enumerate(self.me):
            if comp in ((int(i)) % 3, (int(i) + 1) % 3):
                out[p] = self.stream(comp, nonce, nbytes)
        return out

    def holds(self, comp: int) -> np.ndarray:
        """(P,) bool: whether each party holds component comp."""
        return (self.me == comp) | ((self.me + 1) % 3 == comp)

    def rows(self, party: int) -> np.ndarray:
        """(P,) bool: the rows of ``party`` (simulation: one row each; real: my row or none)."""
        return self.me == party

    async def route(self, routes: dict[int, int], payload: Sequence[Any]) -> list[Any]:
        """Each sender s in ``routes`` sends payload[row of s] to routes[s]; returns, per row, what
        that party received (None if nothing)."""
        if self.sim:
            out: list[Any] = [None] * 3
            for s, d in routes.items():
                out[d] = payload[s]
            return out
        pid = int(self.me[0])
        mine = payload[0] if pid in routes else None
        graph: dict[int, list[int]] = {i: [] for i in range(3)}
        for s, d in routes.items():
            graph[s].append(d)
        got = await self.rt.transfer(mine, sender_receivers=graph)
        return [got[0] if got else None]

    def check(self, obj: Any, dtype: Any, shape: tuple[int, ...], sender: int) -> np.ndarray:
        """A received array, or a ProtocolError naming the sender."""
        if (not isinstance(obj, np.ndarray) or obj.dtype != np.dtype(dtype)
                or obj.shape != shape):
            raise malformed(sender, "bit-sharing message")
        return obj

    # --- local operations -----------------------------------------------------------------------

    def public(self, c: np.ndarray) -> Bits:
        """The public bits c as a sharing (component 0 = c)."""
        c = np.asarray(c, dtype=bool)
        out = self.zeros(c.shape)
        return self.xor_pub(out, c)

    def xor_pub(self, x: Bits, c: Any) -> Bits:
        """x ^ c for public bits c (broadcast): component 0 (a at party 0, b at party 2).  For
        packed x, a bool c is the same bit for the eight elements of each byte."""
        c = np.asarray(c)
        if x.a.dtype == np.uint8:
            c = c.astype(np.uint8) * np.uint8(0xFF) if c.dtype == bool else c.astype(np.uint8)
        else:
            c = c.astype(bool)
        a, b = x.a.copy(), x.b.copy()
        for r, i in enumerate(self.me):
            if i == 0:
                a[r] ^= c
            elif i == 2:
                b[r] ^= c
        return Bits(a, b)

    def not_(self, x: Bits) -> Bits:
        return self.xor_pub(x, True)

    def zeros(self, shape: tuple[int, ...], packed: bool = False) -> Bits:
        z = np.zeros((self.P,) + tuple(shape), dtype=np.uint8 if packed else bool)
        return Bits(z, z.copy())

    # --- AND --------------------------------------------------------------------------------------

    async def and_n(self, pairs: Sequence[tuple[Bits, Bits]]) -> list[Bits]:
        """Protocol AND (Araki et al.): x & y for every pair (numpy broadcasting), one round.

        Bool arrays hold one bit per element; uint8 arrays ("packed", see :func:`pack`) eight
        along the last axis (all operands alike)."""
        packed_in = pairs[0][0].a.dtype == np.uint8
        zs, shapes = [], []
        for x, y in pairs:
            z = (x.a & y.a) ^ (x.a & y.b) ^ (x.b & y.a)
            shapes.append(z.shape[1:])
            zs.append(z.reshape(self.P, -1))
        z = np.concatenate(zs, axis=1) if len(zs) > 1 else zs[0]
        n = z.shape[1]
        nb = n if packed_in else (n + 7) // 8
        nonce = self.nonce()
        alpha = self.prf_rel(0, nonce, nb) ^ self.prf_rel(1, nonce, nb)
        if not packed_in:
            alpha = np.unpackbits(alpha, axis=1, count=n).view(bool)
        z = z ^ alpha
        packed = z if packed_in else np.packbits(z, axis=1)
        got = await self.route(RING, list(packed))
        recv = np.stack([self.check(g, np.uint8, (nb,), (int(i) + 1) % 3)
                         for g, i in zip(got, self.me, strict=True)])
        zb = recv if packed_in else np.unpackbits(recv, axis=1, count=n).view(bool)
        out, k = [], 0
        for shape in shapes:
            size = int(np.prod(shape, dtype=np.int64))
            out.append(Bits(z[:, k:k + size].reshape((self.P,) + shape),
                            zb[:, k:k + size].reshape((self.P,) + shape)))
            k += size
        return out

    async def and_(self, x: Bits, y: Bits) -> Bits:
        return (await self.and_n([(x, y)]))[0]


@dataclass
class Bits:
    """This party's two components of shared bits (or the three parties', simulated): arrays of
    shape (P, ...); for numbers, axis 0 after P is the bit position (least significant first)."""

    a: np.ndarray
    b: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.a.shape[1:]

    def __len__(self) -> int:
        return self.a.shape[1]

    def __xor__(self, other: Bits) -> Bits:
        return Bits(self.a ^ other.a, self.b ^ other.b)

    def __getitem__(self, idx: Any) -> Bits:
        idx = idx if isinstance(idx, tuple) else (idx,)
        return Bits(self.a[(slice(None),) + idx], self.b[(slice(None),) + idx])

    def reshape(self, shape: tuple[int, ...]) -> Bits:
        p = self.a.shape[0]
        return Bits(self.a.reshape((p,) + shape), self.b.reshape((p,) + shape))

    def expand(self, axis: int) -> Bits:
        """A new axis of length 1 at ``axis`` (of the non-party axes)."""
        return Bits(np.expand_dims(self.a, axis + 1), np.expand_dims(self.b, axis + 1))


def pack(x: Bits) -> Bits:
    """Eight elements per byte along the last axis (for circuits that never slice it)."""
    return Bits(np.packbits(x.a, axis=-1), np.packbits(x.b, axis=-1))


def unpack(x: Bits, n: int) -> Bits:
    """Inverse of :func:`pack` for a last axis of n elements."""
    return Bits(np.unpackbits(x.a, axis=-1, count=n).view(bool),
                np.unpackbits(x.b, axis=-1, count=n).view(bool))


def concat(xs: Sequence[Bits], axis: int = 0) -> Bits:
    return Bits(np.concatenate([x.a for x in xs], axis=axis + 1),
                np.concatenate([x.b for x in xs], axis=axis + 1))


# --- circuits (bit axis 0) ---------------------------------------------------------------------


def _shift_up(net: Net, x: Bits) -> Bits:
    """2x mod 2^L (bit axis 0)."""
    return concat([net.zeros((1,) + x.shape[1:], packed=x.a.dtype == np.uint8), x[:-1]])


async def csa(net: Net, x: Bits, y: Bits, z: Bits) -> tuple[Bits, Bits]:
    """Carry-save addition (Wallace 1964): x + y + z = s + c mod 2^L, one AND round
    (majority = (x ^ z)(y ^ z) ^ z)."""
    maj = await net.and_(x ^ z, y ^ z)
    return x ^ y ^ z, _shift_up(net, maj ^ z)


async def add(net: Net, x: Bits, y: Bits) -> Bits:
    """x + y mod 2^L: the Kogge-Stone parallel prefix adder (1973) on (generate, propagate),
    1 + ceil(log2(L - 1)) AND rounds, ~L (1 + 2 log2 L) ANDs."""
    n = len(x)
    p = x ^ y
    if n == 1:
        return p
    g = await net.and_(x, y)
    q, d = p, 1
    while d < n - 1:
        last = 2 * d >= n - 1
        pairs = [(q[d:], g[:-d])] if last else [(q[d:], g[:-d]), (q[d:], q[:-d])]
        res = await net.and_n(pairs)
        g = concat([g[:d], g[d:] ^ res[0]])
        if not last:
            q = concat([q[:d], res[1]])
        d *= 2
    return p ^ _shift_up(net, g)


async def add3(net: Net, x: Bits, y: Bits, z: Bits) -> Bits:
    """x + y + z mod 2^L: one carry-save layer and :func:`add`."""
    s, c = await csa(net, x, y, z)
    return await add(net, s, c)


async def less_than(net: Net, x: Bits, y: Bits) -> Bits:
    """Protocol LT: [x < y] for unsigned numbers (bit axis 0) by a tree of (greater, equal)
    prefixes, (g, e)_hi o (g, e)_lo = (g_hi ^ e_hi g_lo, e_hi e_lo), a la Garay, Schoenmakers
    and Villegas (PKC 2007): 1 + ceil(log2 L) AND rounds, ~3L ANDs."""
    gt = await net.and_(net.not_(x), y)  # y_i > x_i
    eq = net.not_(x ^ y)
    while len(gt) > 1:
        n = len(gt)
        h = n // 2
        lo_g, hi_g, lo_e, hi_e = gt[0:2 * h:2], gt[1:2 * h:2], eq[0:2 * h:2], eq[1:2 * h:2]
        if n == 2:
            t = await net.and_(hi_e, lo_g)
            return (hi_g ^ t)[0]
        t1, t2 = await net.and_n([(hi_e, lo_g), (hi_e, lo_e)])
        g2, e2 = hi_g ^ t1, t2
        if n % 2:
            g2, e2 = concat([g2, gt[n - 1:]]), concat([e2, eq[n - 1:]])
        gt, eq = g2, e2
    return gt[0]


async def mux(net: Net, c: Bits, x: Bits, y: Bits) -> Bits:
    """Protocol MUX: c ? x : y = y ^ c (x ^ y), c broadcast over the bit axis; one round."""
    t = await net.and_(c.expand(0), x ^ y)
    return y ^ t


async def all_(net: Net, x: Bits) -> Bits:
    """AND over the bit axis 0 by a tree (as MPyC's ``np_all``), ceil(log2 L) rounds."""
    while len(x) > 1:
        n = len(x)
        h = n // 2
        t = await net.and_(x[0:h], x[h:2 * h])
        x = concat([t, x[2 * h:]]) if n % 2 else t
    return x[0]


# --- conversions ----------------------------------------------------------------------------------


def int_bits(v: np.ndarray, n_bits: int) -> np.ndarray:
    """(n_bits, *shape) bool: the low bits of non-negative ints (object or uint64 array)."""
    v = np.asarray(v)
    out = []
    for off in range(0, n_bits, 64):
        w = v if v.dtype == np.uint64 and off == 0 else None
        if w is None:
            w = ((v.astype(object) >> off) & ((1 << 64) - 1)).astype(np.uint64)
        k = min(64, n_bits - off)
        sh = np.arange(k, dtype=np.uint64).reshape((k,) + (1,) * v.ndim)
        out.append(((w[None] >> sh) & np.uint64(1)).astype(bool))
    return np.concatenate(out) if out else np.zeros((0,) + v.shape, dtype=bool)


def _masks(net: Net, comp: int, nonce: bytes, n: int, width: int) -> np.ndarray:
    """(P, 2, n) uint64 words (least significant first) of r_comp, uniform in [0, 2^width)
    at the holders of comp, zero elsewhere; width <= 128."""
    k = 1 if width <= 64 else 2
    w = np.zeros((net.P, 2, n), dtype=np.uint64)
    w[:, :k] = net.prf_comp(comp, nonce, 8 * k * n).view("<u8").reshape(net.P, n, k).transpose(
        0, 2, 1)
    if width < 64 * k:
        w[:, k - 1] &= np.uint64((1 << (width - 64 * (k - 1))) - 1)
    return w


def _to_words(vals: np.ndarray) -> np.ndarray:
    """Python ints in [0, 2^128) -> (2, n) uint64 words (through bytes: ~0.4 us per value)."""
    to = int.to_bytes
    raw = b"".join([to(v, 16, "little") for v in vals.tolist()])
    return np.frombuffer(raw, dtype="<u8").reshape(-1, 2).T.copy()


def _shift_words(w: np.ndarray, k: int) -> np.ndarray:
    """(2, n) words << k (the result must fit in 128 bits)."""
    if k == 0:
        return w.copy()
    if k >= 64:
        return np.stack([np.zeros_like(w[0]), w[0] << np.uint64(k - 64)])
    return np.stack([w[0] << np.uint64(k), (w[1] << np.uint64(k)) | (w[0] >> np.uint64(64 - k))])


def _word_bits(w: np.ndarray, start: int, count: int) -> np.ndarray:
    """(count, n) bool: bits start .. start + count - 1 of the 128-bit numbers w (2, n)."""
    out = np.empty((count, w.shape[1]), dtype=bool)
    for j in range(count):
        pos = start + j
        out[j] = ((w[pos // 64] >> np.uint64(pos % 64)) & np.uint64(1)).astype(bool)
    return out


async def _open_masked(net: Net, p: int, vals: np.ndarray, masks: Sequence[np.ndarray],
                       scale: int) -> np.ndarray:
    """Words (2, n) of c = x + 2^scale sum_j r_j for Shamir shares ``vals`` (object) of x.

    Party i adds 2^scale r_j f_j(x_i) for its two components j, where f_j(0) = 1 and f_j = 0
    at the outsider of j (PRSS), sends the masked share to party i - 1 and interpolates c from
    its own and party i + 1's share (t = 1)."""
    if net.sim:
        tot = vals.copy()
        for j in range(3):
            tot = tot + (fw.words_to_ints(masks[j][j]) << scale)
        return fw.ints_to_words(tot % p, p)
    i = int(net.me[0])
    xi = i + 1
    share = _to_words(vals)  # field elements, already in [0, p)
    for j in (i, (i + 1) % 3):
        xo = (j + 1) % 3 + 1
        r = _shift_words(masks[j][0], scale)
        term = fw.div_small_mod(fw.mul_small_mod(r, xo - xi, p), xo, p)
        share = fw.add_mod(share, term, p)
    got = await net.route(RING, [share])
    other = net.check(got[0], np.uint64, share.shape, (i + 1) % 3)
    d, borrow = fw.sub(other, fw.const(p, other))
    other = np.where(borrow == 0, d, other)  # a peer's words below p
    xj = (i + 1) % 3 + 1
    num = fw.add_mod(fw.mul_small_mod(share, xj, p), fw.neg_mod(fw.mul_small_mod(other, xi, p), p),
                     p)
    den = xj - xi  # 1 or -2
    c = fw.div_small_mod(num, abs(den), p)
    return c if den > 0 else fw.neg_mod(c, p)


async def a2b(net: Net, sectype: Any, shares: Any, n_bits: int, bound_bits: int,
              scale: int = 0) -> Bits:
    """Protocol A2B: Shamir shares (a field array, any shape) of x 2^scale for integers
    0 <= x < 2^n_bits -> [x]^B of shape (n_bits, *shape).  ``bound_bits`` >= bits of |x| for
    any value the sharing may hold (the masks are 2^k times wider).  One opening (one message
    of two words per value) plus, for n_bits > 1, 3 + ceil(log2(n_bits - 1)) AND rounds; see the
    module docstring."""
    p = sectype.sectype.field.modulus
    shape = shares.value.shape
    vals = np.asarray(shares.value, dtype=object).reshape(-1)
    n = vals.size
    width = max(bound_bits, n_bits) + net.rt.options.sec_param
    if p.bit_length() > 128 or width + scale + 2 >= p.bit_length():
        raise NotSupportedError("order statistics need a field of 128 bits at most, and "
                                "masks that fit it")
    nonce = net.nonce()
    words = [_masks(net, j, nonce, n, width) for j in range(3)]
    c = await _open_masked(net, p, vals, words, scale)
    if n_bits == 1:
        cb = _word_bits(c, scale, 1)
        a = np.stack([_word_bits(words[int(i)][r], 0, 1) for r, i in enumerate(net.me)])
        b = np.stack([_word_bits(words[(int(i) + 1) % 3][r], 0, 1) for r, i in enumerate(net.me)])
        return net.xor_pub(Bits(a, b), cb).reshape((1,) + tuple(shape))
    cb = _word_bits(fw.add(c, fw.const(3 << scale, c))[0], scale, n_bits)  # c + 3 mod 2^128
    neg = []
    for j in range(3):  # ~r_j: component j only
        a = np.zeros((net.P, n_bits, n), dtype=bool)
        b = np.zeros_like(a)
        for r, i in enumerate(net.me):
            if i == j:
                a[r] = ~_word_bits(words[j][r], 0, n_bits)
            elif (i + 1) % 3 == j:
                b[r] = ~_word_bits(words[j][r], 0, n_bits)
        neg.append(pack(Bits(a, b)))
    s1, c1 = await csa(net, pack(net.public(cb)), neg[0], neg[1])  # packed: 1/8 of the work
    s2, c2 = await csa(net, s1, c1, neg[2])
    x = unpack(await add(net, s2, c2), n)
    return x.reshape((n_bits,) + tuple(shape))


async def count(net: Net, t: Bits) -> np.ndarray:
    """Protocol COUNT: the number of ones along the last axis of [t]^B, as (P, *rows) uint64
    additive shares mod 2^32: party 1's part at its row, party 2's at its row (0 elsewhere).
    One message (party 0 -> party 1, 4 bytes per bit)."""
    shape = t.shape
    n = int(np.prod(shape, dtype=np.int64))
    nonce = net.nonce()
    alpha = net.prf_comp(0, nonce, 4 * n).view("<u4").reshape((net.P,) + shape)
    out = np.zeros((net.P,) + shape[:-1], dtype=np.uint64)
    p0, p1, p2 = net.rows(0), net.rows(1), net.rows(2)
    payload: list[Any] = [None] * net.P
    for r in np.flatnonzero(p0):
        u = (t.a[r] ^ t.b[r]).astype(np.uint32)
        payload[r] = (u + alpha[r]).astype(np.uint32)
    got = await net.route({0: 1}, payload)
    for r in np.flatnonzero(p1):
        ut = net.check(got[r], np.uint32, shape, 0).astype(np.uint64)
        v = t.b[r]  # component 2
        tot = ut.sum(axis=-1, dtype=np.uint64) - 2 * (ut * v).sum(axis=-1, dtype=np.uint64)
        out[r] = (tot + v.sum(axis=-1, dtype=np.uint64)) & np.uint64(_M32)
    for r in np.flatnonzero(p2):
        al = alpha[r].astype(np.uint64)
        v = t.a[r]  # component 2
        tot = al.sum(axis=-1, dtype=np.uint64) - 2 * (al * v).sum(axis=-1, dtype=np.uint64)
        out[r] = (np.uint64(0) - tot) & np.uint64(_M32)
    return out


async def inputs(net: Net, values: dict[int, np.ndarray], n_bits: int) -> dict[int, Bits]:
    """Protocol INPUT: for each sender s, the (P, *shape) uint64 array whose row of s holds
    s's private values -> [value mod 2^n_bits]^B of shape (n_bits, *shape).  Sender s sends
    component s = value ^ mu (mu: component s + 1, unknown to the receiver s - 1); one round."""
    nonce = net.nonce()
    payload: list[Any] = [None] * net.P
    masks, bitsv, shapes = {}, {}, {}
    for s, v in values.items():
        shape = v.shape[1:]
        shapes[s] = shape
        n = int(np.prod(shape, dtype=np.int64)) * n_bits
        mu = np.unpackbits(net.prf_comp((s + 1) % 3, nonce + bytes([s]), (n + 7) // 8),
                           axis=1, count=n).view(bool).reshape((net.P, n_bits) + shape)
        masks[s] = mu
        bitsv[s] = np.stack([int_bits(v[r], n_bits) for r in range(net.P)])
        for r in np.flatnonzero(net.rows(s)):
            payload[r] = np.packbits((bitsv[s][r] ^ mu[r]).reshape(-1))
    routes = {s: (s - 1) % 3 for s in values}
    got = await net.route(routes, payload)
    out = {}
    for s, shape in shapes.items():
        n = int(np.prod(shape, dtype=np.int64)) * n_bits
        a = np.zeros((net.P, n_bits) + shape, dtype=bool)
        b = np.zeros_like(a)
        mu = masks[s]
        for r, i in enumerate(net.me):
            if i == s:
                a[r], b[r] = bitsv[s][r] ^ mu[r], mu[r]
            elif i == (s + 1) % 3:
                a[r] = mu[r]
            else:
                recv = net.check(got[r], np.uint8, ((n + 7) // 8,), s)
                b[r] = np.unpackbits(recv, count=n).view(bool).reshape((n_bits,) + shape)
        out[s] = Bits(a, b)
    return out


def _field_prf(net: Net, comp: int, nonce: bytes, n: int, p: int) -> np.ndarray:
    """(P, n) object ints uniform mod p (within 2^-120) at the holders of comp, 0 elsewhere."""
    w = _masks(net, comp, nonce, n, 128)
    return np.stack([fw.words_to_ints(w[r]) % p for r in range(net.P)])


async def b2a(net: Net, sectype: Any, x: Bits, weights: np.ndarray) -> Any:
    """Protocol B2A: [b]^B of shape (J, *rows) -> Shamir shares (a field array of shape
    (O, *rows)) of sum_j weights[o, j] b_j mod p (weights: (O, J) ints).  Two rounds: party 0
    sends u + a mod p (u = b_0 ^ b_1, a known to parties 0 and 2) to party 1; parties 1 and 2
    Shamir-share their additive parts y1, y2 (y1 + y2 = the sums), each sending one element to
    one peer (the other peer's share is pseudorandom from the key they share)."""
    field = sectype.sectype.field
    p = field.modulus
    rows = x.shape[1:]
    n = int(np.prod(x.shape, dtype=np.int64))
    W = np.asarray(weights, dtype=object) % p
    nonce = net.nonce()
    alpha = _field_prf(net, 0, nonce, n, p).reshape((net.P,) + x.shape)
    payload: list[Any] = [None] * net.P
    for r in np.flatnonzero(net.rows(0)):
        payload[r] = ((x.a[r] ^ x.b[r]).astype(object) + alpha[r]) % p
    got = await net.route({0: 1}, payload)

    def combine(vec: np.ndarray) -> np.ndarray:  # (J, *rows) -> (O, *rows): W @ vec mod p
        return np.tensordot(W, vec, axes=([1], [0])) % p

    y = [None] * net.P
    for r in np.flatnonzero(net.rows(1)):
        ut = got[r]
        if not (isinstance(ut, np.ndarray) and ut.dtype == object and ut.shape == x.shape
                and all(isinstance(e, int) and 0 <= e < p for e in ut.reshape(-1))):
            raise malformed(0, "bit-conversion message")
        v = x.b[r].astype(object)
        y[r] = combine((1 - 2 * v) * ut + v)
    for r in np.flatnonzero(net.rows(2)):
        v = x.a[r].astype(object)
        y[r] = (-combine((1 - 2 * v) * alpha[r])) % p
    out_shape = (W.shape[0],) + rows
    if net.sim:
        total = (y[1] + y[2]) % p
        return field.array(np.asarray(total, dtype=object).reshape(out_shape))
    return await _shamir_pair(net, field, y[0], out_shape)


async def _shamir_pair(net: Net, field: Any, y: Any, shape: tuple[int, ...]) -> Any:
    """Shamir shares of y1 + y2, y1 known to party 1 and y2 to party 2 (``y`` at those parties).
    Sender s: f(0) = y, f(x_{s+1}) = sigma (pseudorandom, component s + 1's key, which s and
    s + 1 hold); s sends f(x_{s-1}) to party s - 1.  One round."""
    p = field.modulus
    i = int(net.me[0])
    n = int(np.prod(shape, dtype=np.int64))
    nonce = net.nonce()
    sig = {s: _field_prf(net, (s + 1) % 3, nonce + bytes([s]), n, p)[0].reshape(shape)
           for s in (1, 2)}
    inv = {s: pow((s + 1) % 3 + 1, -1, p) for s in (1, 2)}

    def f(s: int, xval: int) -> np.ndarray:  # the sender's polynomial at xval
        return (y + (sig[s] - y) * (xval * inv[s] % p)) % p

    payload = [f(i, (i - 1) % 3 + 1)] if i in (1, 2) else [None]
    got = await net.route({1: 0, 2: 1}, payload)
    share = np.zeros(shape, dtype=object)
    for s in (1, 2):
        if i == s:
            share = share + f(s, i + 1)
        elif i == (s + 1) % 3:
            share = share + sig[s]
        else:
            g = got[0]
            if not (isinstance(g, np.ndarray) and g.dtype == object and g.shape == shape
                    and all(isinstance(e, int) and 0 <= e < p for e in g.reshape(-1))):
                raise malformed(s, "share")
            share = share + g
    return field.array(share % p)
