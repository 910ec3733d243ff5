"""MIN, MAX and QUANTILE_CONT / MEDIAN of secret values per group, without opening anything.

:func:`order_statistic` takes MPyC Shamir shares of m normalised SecFxp values (|v| <= 1,
integer representation X = v * 2^32, |X| <= 2^32) and of a 0/1 weight matrix (G groups x m
rows) and returns Shamir shares of one result per group and of its "empty" bit.  The bit work
runs in the three-party replicated sharing of :mod:`engine.protocols.bitshares`:

1. A2B of x = X + 2^33 (34 bits: x in [2^32, 3 * 2^32]) and of the weights (bit 0 of a masked
   opening, no AND gate).
2. MIN: a tournament over y_gi = (1 - w_gi) 2^34 + x_i (the missing weight as a 35th, most
   significant bit: a row of the group beats every other row; no gate), log2 m rounds of
   "compare the two halves, keep the smaller" for all G groups at once: G (m - 1) comparisons
   of 35 bits, 8 AND rounds per level.  MAX: the same on the mirror 2^34 - 1 - x (a NOT of the
   34 bits, free), mirrored back.  The group is empty iff the winner's bit 34 is set.
3. QUANTILE_CONT(q) (DuckDB: positions floor and ceil of q (n - 1), linear interpolation;
   MEDIAN = q 1/2): n = sum_i w_gi is a local sum of shares; with q = Q / 2^s (exact for the
   double q, s <= 60), A2B of Q (n - 1) + 2^s gives the rank floor(q (n - 1)) + 1 in its bits
   >= s and the fraction in its low s bits.  Radix selection of the lower and upper order
   statistics of every group at once, most significant bit first (34 steps): t = e & ~x_j
   for the still eligible rows e, c = popcount(t) (:func:`bitshares.count`), the result bit is
   [c <= rank] (rank 0-based), then rank -= bit * c and e = t ^ (bit & e).  Finally
   lo + frac * (hi - lo) in Shamir form: one product and one probabilistic truncation by s
   bits (MPyC ``np_trunc``).
4. B2A of the result bits and the empty bits (a weighted sum of bits, no product).

Rows in blocks (a joined table in chunks): :func:`convert` runs step 1 on each block and keeps
its bits packed eight rows to a byte (:class:`Rows`); :func:`quantile` runs steps 3-4 over all
the blocks' rows at once, so a quantile holds 2 (34 + G) bits per row and party, not the
table.  MIN and MAX instead combine the blocks' extrema (engine/protocols/program.py).

Precision: MIN, MAX and the two order statistics of a quantile are exact (the very fixed-point
words of the inputs).  The interpolation adds one rounding of frac * (hi - lo) to a multiple of
2^-32 (normalised; |error| < 2^-32, i.e. < 2^(bits - 32) in the column's units), up or down
with probability given by the remainder; it is exact when frac * (hi - lo) is a multiple of
2^-32, e.g. any quantile with q (n - 1) an integer, and the median of integers (bits <= 31).
An empty group gives value 0 and empty = 1.

What each party learns: nothing (semi-honest, one corrupted party; every message is masked,
see :mod:`engine.protocols.bitshares`); the caller opens the result.

Cost (m rows, G groups; per party): A2B: one opening (two 64-bit words per value, to one
peer), ~15 * 34 ANDs per value of x and none per weight, 10 rounds.  MIN/MAX: 4 * 35 = 140
ANDs (one bit sent each) per comparison, G (m - 1) comparisons, 8 ceil(log2 m) + 3 rounds.
QUANTILE: per bit step 2 G' m ANDs and 4 G' m bytes from party 0 to party 1 (the count), with
G' = 2 G (lower and upper statistic; G' = G for q in {0, 1}), ~11 rounds; 34 steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dialect.errors import DataError
from engine.protocols import bitshares as bs
from engine.protocols.bitshares import Bits, Net, concat

DATA_BITS = 34  # bits of x = X + 2^33 for |X| <= 2^32
VALUE_BITS = DATA_BITS + 1  # plus the "no row" bit of the tournament
OFFSET = 1 << 33
Q_BITS = 60  # q is used as a multiple of 2^-60 (exactly, for any double q >= 2^-8)
BLOCK = 1 << 25  # bits per array in one block of groups (bounds the peak memory)
COUNT_BITS = 1 << 20  # bits per COUNT message of a quantile's selection (~30 bytes each)
KINDS = ("min", "max", "quantile")


async def order_statistic(chan: Any, kind: str, values: Any, weights: Any, bits: int,
                          q: float | None = None) -> tuple[Any, Any]:
    """MIN / MAX / QUANTILE_CONT(q) of ``values`` over the rows of each group (protocols
    A2B, tournament or radix selection, B2A of :mod:`engine.protocols.bitshares`; see the
    module docstring).

    values: secure SecFxp array (m,) of v / 2^bits (|v / 2^bits| <= 1); weights: secure array
    (G, m) of 0/1 (SecFxp or secure integers over the same field).  Returns (result, empty),
    secure arrays (G,) of the values' type: result normalised like the input (0 for an empty
    group), empty 1 (1.0, integral) iff the group has no row.  ``bits`` does not change the
    protocol (absolute error of a quantile < 2^(bits - 32)).  Opens nothing.  Safe to run
    concurrently with other MPyC work (its messages use a program counter forked at the call).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown order statistic {kind!r}")
    if kind == "quantile":
        dyadic(q)  # a bad q is refused before anything runs
    G, m = _shapes(values, weights)
    stype = type(values)
    if G == 0 or m == 0:
        return stype(np.zeros(G), integral=True), stype(np.ones(G), integral=True)
    # under a program counter forked now: the same message labels at every party whatever
    # else runs concurrently (a quantile's own forks, after its conversion, would otherwise be
    # taken in the order the concurrent conversions happen to finish, which differs by party)
    if kind == "quantile":
        return await bs.forked(chan.mpc, _convert_and_select(chan, values, weights, q))
    return await bs.forked(chan.mpc, _run(chan, kind, values, weights))


async def _convert_and_select(chan: Any, values: Any, weights: Any,
                              q: float | None) -> tuple[Any, Any]:
    return await quantile(chan, [await convert(chan, values, weights)], q)


@dataclass
class Rows:
    """Some rows after A2B, for a quantile over these and other rows (:func:`quantile`): the
    values' bits X (DATA_BITS, ceil(m / 8)) and the weights' bits W (G, ceil(m / 8)), packed
    eight rows to a byte (the last byte's padding is zero: no row), the weights' row sums
    n (G,) as field shares (this party's), and the values' secure array type."""

    X: Bits
    W: Bits
    n: np.ndarray
    m: int
    stype: Any


async def convert(chan: Any, values: Any, weights: Any) -> Rows:
    """A2B of the values (m,) and 0/1 weights (G, m) of some rows, packed (:class:`Rows`).
    Opens nothing but the masked values of :func:`bitshares.a2b`."""
    _shapes(values, weights)
    return await bs.forked(chan.mpc, _convert(chan, values, weights))


async def _convert(chan: Any, values: Any, weights: Any) -> Rows:
    rt = chan.mpc
    stype = type(values)
    field = stype.sectype.field
    net = Net(rt)
    xs, ws = await rt.gather(values, weights)
    X, W = await _bits(net, stype, xs, ws, weights.frac_length)
    n = np.sum(np.asarray(ws.value, dtype=object), axis=1)  # local: row counts 2^wf
    n = n * pow(1 << weights.frac_length, -1, field.modulus) % field.modulus
    chan.phase("order statistic: convert")
    return Rows(bs.pack(X), bs.pack(W), n, W.shape[1], stype)


async def _bits(net: Net, stype: Any, xs: Any, ws: Any, wf: int) -> tuple[Bits, Bits]:
    """A2B of the values x = X + 2^33 (DATA_BITS bits) and of the weights w 2^wf (one bit)."""
    X = await bs.a2b(net, stype, xs + OFFSET, DATA_BITS, stype.sectype.bit_length + 1)
    G, m = ws.value.shape
    step = max(1, BLOCK // 16 // m)  # groups per conversion (~16 bytes per weight and mask)
    W = concat([(await bs.a2b(net, stype, ws[g:g + step], 1, 2, scale=wf))[0]
                for g in range(0, G, step)])
    return X, W


async def quantile(chan: Any, parts: list[Rows], q: float | None) -> tuple[Any, Any]:
    """QUANTILE_CONT(q) per group over the rows of ``parts`` (:func:`convert`, in any blocks,
    at least one): (result, empty) as :func:`order_statistic` returns them for all the rows at
    once.  Keeps the packed bits only: 2 (DATA_BITS + G) bits per row and party, plus one block
    of rows being selected."""
    Q, s = dyadic(q)
    stype, G = parts[0].stype, parts[0].W.shape[0]
    if G == 0 or sum(p.m for p in parts) == 0:
        return stype(np.zeros(G), integral=True), stype(np.ones(G), integral=True)
    return await bs.forked(chan.mpc, _quantile_run(chan, parts, Q, s))


async def _quantile_run(chan: Any, parts: list[Rows], Q: int, s: int) -> tuple[Any, Any]:
    rt = chan.mpc
    stype = parts[0].stype
    p = stype.sectype.field.modulus
    X = concat([r.X for r in parts], axis=1)
    W = concat([r.W for r in parts], axis=1)
    n = sum((r.n for r in parts[1:]), start=parts[0].n) % p
    m = sum(r.m for r in parts)
    value, empty = await _quantile(Net(rt), rt, stype, X, W, n, m, Q, s)
    chan.phase("order statistic: quantile")
    return stype(value), stype(empty * (1 << stype.frac_length), integral=True)


async def _run(chan: Any, kind: str, values: Any, weights: Any) -> tuple[Any, Any]:
    """A2B of the values and weights, then :func:`_extremum`."""
    rt = chan.mpc
    stype = type(values)
    net = Net(rt)
    xs, ws = await rt.gather(values, weights)
    X, W = await _bits(net, stype, xs, ws, weights.frac_length)
    chan.phase("order statistic: convert")
    value, empty = await _extremum(net, stype, X, W, kind == "max")
    chan.phase(f"order statistic: {kind}")
    return stype(value), stype(empty * (1 << stype.frac_length), integral=True)


def dyadic(q: float | None) -> tuple[int, int]:
    """q = Q / 2^s with Q odd (or q in {0, 1}); q is first rounded to a multiple of 2^-60."""
    if q is None or not isinstance(q, (int, float)) or not 0 <= q <= 1:
        raise DataError(f"QUANTILE_CONT needs a quantile between 0 and 1, got {q!r}")
    num, den = float(q).as_integer_ratio()
    if den > 1 << Q_BITS:
        num, den = round(num * (1 << Q_BITS) / den), 1 << Q_BITS
    while num and num % 2 == 0 and den > 1:
        num, den = num // 2, den // 2
    if num == 0:
        den = 1
    return num, den.bit_length() - 1


def _shapes(values: Any, weights: Any) -> tuple[int, int]:
    if len(values.shape) != 1 or len(weights.shape) != 2 or weights.shape[1] != values.shape[0]:
        raise ValueError(f"values (m,) and weights (G, m) expected, got {values.shape} and "
                         f"{weights.shape}")
    if weights.sectype.field is not values.sectype.field:
        raise ValueError("values and weights must be shared over the same field")
    return weights.shape[0], values.shape[0]


async def _extremum(net: Net, stype: Any, X: Bits, W: Bits, is_max: bool) -> tuple[Any, Any]:
    """Protocol MIN (MAX on the mirror): a vectorised tournament, the missing weight as the most
    significant bit (after ``mpc.np_amin``'s halving loop, MPyC runtime.py)."""
    G, m = W.shape
    Xv = net.not_(X) if is_max else X  # mirror: 2^34 - 1 - x
    step = max(1, BLOCK // (VALUE_BITS * m))
    Y = concat([await _tournament(net, Xv, W[g:g + step]) for g in range(0, G, step)], axis=1)
    empty = Y[VALUE_BITS - 1]
    data = net.not_(Y[:DATA_BITS]) if is_max else Y[:DATA_BITS]
    data = await net.and_(data, net.not_(empty).expand(0))
    planes = concat([data, empty.expand(0)])
    weights = np.zeros((2, VALUE_BITS), dtype=object)
    weights[0, :DATA_BITS] = [1 << j for j in range(DATA_BITS)]
    weights[0, DATA_BITS] = OFFSET
    weights[1, DATA_BITS] = 1
    out = await bs.b2a(net, stype, planes, weights)
    return out[0] - OFFSET, out[1]


async def _tournament(net: Net, X: Bits, W: Bits) -> Bits:
    """The minima (L, G) of y_gi = (1 - w_gi) 2^34 + x_i over i for the groups of W (G, m).

    Rows are padded to a multiple of 8 with "no row" entries and packed eight to a byte, so
    that every level but the last three compares whole bytes (an eighth of the local work)."""
    G, m = W.shape
    pad = (-m) % 8
    Xg = Bits(*(np.broadcast_to(v[:, :, None, :], v.shape[:2] + (G, m)) for v in (X.a, X.b)))
    Y = concat([Xg, net.not_(W).expand(0)])  # (L, G, m): bit 34 = no row, so rows win first
    if pad:
        filler = net.public(np.zeros((VALUE_BITS, G, pad), dtype=bool))
        filler = net.xor_pub(filler, np.arange(VALUE_BITS)[:, None, None] == VALUE_BITS - 1)
        Y = concat([Y, filler], axis=2)
    Y = bs.pack(Y)
    for packed in (True, False):
        while Y.shape[-1] > 1:
            n = Y.shape[-1]
            h = n // 2
            a, b = Y[:, :, :h], Y[:, :, h:2 * h]
            lt = await bs.less_than(net, a, b)
            win = await bs.mux(net, lt, a, b)
            Y = concat([win, Y[:, :, 2 * h:]], axis=2) if n % 2 else win
        if packed:
            Y = bs.unpack(Y, 8)
    return Y[:, :, 0]


async def _quantile(net: Net, rt: Any, stype: Any, X: Bits, W: Bits, n: np.ndarray, m: int,
                    Q: int, s: int) -> tuple[Any, Any]:
    """Protocol QUANTILE_CONT (DuckDB's semantics: linear interpolation between the order
    statistics at floor and ceil of q (n - 1)): secret ranks by A2B, :func:`_select`,
    interpolation with MPyC's probabilistic truncation (``np_trunc``).  X, W: packed bits of
    the m rows (:class:`Rows`)."""
    G = W.shape[0]
    field = stype.sectype.field
    K = m.bit_length() + 1  # ranks and counts in two's complement
    n_bits = m.bit_length()
    r = (Q * (n - 1) + (1 << s)) % field.modulus  # = floor(q (n - 1)) 2^s + frac 2^s + 2^s
    L = max((Q * (m - 1) + (1 << s)).bit_length(), n_bits, s + K)
    NR = await bs.a2b(net, stype, field.array(np.stack([n, r])), L, L)  # (L, 2, G)
    nb, rb = NR[:, 0], NR[:, 1]
    zero_tests = [_pad(net, net.not_(nb[:n_bits]), L)]
    if s:
        zero_tests.append(_pad(net, net.not_(rb[:s]), L))
    z = await bs.all_(net, concat(zero_tests, axis=1))
    empty = z[:G]
    k1 = rb[s:s + K]  # floor(q (n - 1)) + 1
    ones = net.public(np.ones((K, G), dtype=bool))
    if s:
        no_frac = z[G:]
        step = Bits(*(np.broadcast_to(v[:, None], (v.shape[0], K, G)).copy()
                      for v in (no_frac.a, no_frac.b)))
        rank = await bs.add(net, concat([k1, k1], axis=1), concat([ones, step], axis=1))
        rows = concat([W, W])
    else:
        rank = await bs.add(net, k1, ones)
        rows = W
    step = max(1, COUNT_BITS // m)  # selections at once: one COUNT message per bit
    R = rows.shape[0]
    sel = concat([await _select(net, X, rows[r:r + step], rank[:, r:r + step], K)
                  for r in range(0, R, step)], axis=1)  # (DATA_BITS, R) result bits
    keep = net.not_(empty)
    pairs = [(sel, concat([keep] * (sel.shape[1] // G)).expand(0))]
    if s:
        pairs.append((rb[:s], keep.expand(0)))
    masked = await net.and_n(pairs)
    pw = [1 << j for j in range(DATA_BITS)]
    if not s:
        planes = concat([masked[0], empty.expand(0)])
        w = np.zeros((2, DATA_BITS + 1), dtype=object)
        w[0, :DATA_BITS], w[0, DATA_BITS], w[1, DATA_BITS] = pw, OFFSET, 1
        out = await bs.b2a(net, stype, planes, w)
        return out[0] - OFFSET, out[1]
    lo, hi = masked[0][:, :G], masked[0][:, G:]
    planes = concat([lo, hi, masked[1], empty.expand(0)])  # D + D + s + 1 planes
    D = DATA_BITS
    w = np.zeros((4, 2 * D + s + 1), dtype=object)
    w[0, :D], w[0, -1] = pw, OFFSET  # lo + 2^33 empty
    w[1, :D], w[1, D:2 * D] = [-v for v in pw], pw  # hi - lo
    w[2, 2 * D:2 * D + s] = [1 << j for j in range(s)]  # frac * 2^s
    w[3, -1] = 1  # empty
    out = await bs.b2a(net, stype, planes, w)
    sint = rt.SecInt(l=s + DATA_BITS + 2, p=field.modulus)
    prod = sint.array(out[2]) * sint.array(out[1])
    frac = await rt.gather(rt.np_trunc(prod, f=s, l=s + DATA_BITS + 2))
    return out[0] - OFFSET + frac, out[3]


def _pad(net: Net, x: Bits, n: int) -> Bits:
    """x (bit axis 0) padded with public ones to n planes."""
    if len(x) >= n:
        return x
    return concat([x, net.public(np.ones((n - len(x),) + x.shape[1:], dtype=bool))])


async def _select(net: Net, X: Bits, E: Bits, rank: Bits, K: int) -> Bits:
    """Protocol RADIX-SELECT: for every row r of the eligibility bits E (R, m), the bits of the
    rank[r]-th smallest (0-based) of the eligible x, most significant bit first: the k-th
    ranked element by bits (after Aggarwal, Mishra and Pinkas, EUROCRYPT 2004, with the secret
    counts of :func:`bitshares.count` instead of comparisons).  11 rounds per bit (plus one per
    further block of COUNT_BITS counted bits).  X, E packed eight rows to a byte."""
    mask = np.uint64((1 << K) - 1)
    out = []
    for j in reversed(range(DATA_BITS)):
        t = await net.and_(E, net.not_(X[j]).expand(0))  # eligible with bit j = 0
        y = await _count(net, t)  # (P, R): parts of c at parties 1 and 2
        neg = (np.uint64(0) - y) & mask
        parts = await bs.inputs(net, {1: neg, 2: neg}, K)
        d = await bs.add3(net, rank, parts[1], parts[2])  # rank - c
        bit = net.not_(d[K - 1])  # c <= rank: the answer has bit j = 1
        r1, r2 = await net.and_n([(_spread(bit.expand(0)), _spread(d ^ rank)),
                                  (_spread(bit.expand(1)), E)])
        rank, E = rank ^ _low(r1), t ^ r2
        out.append(bit)
    return concat([b.expand(0) for b in reversed(out)])


async def _count(net: Net, t: Bits) -> np.ndarray:
    """:func:`bitshares.count` of the packed bits t (R, bytes) per row, COUNT_BITS at a time
    (its local work is ~30 bytes per bit)."""
    R, nbytes = t.shape
    step = max(1, COUNT_BITS // 8 // R)
    total = np.zeros((net.P, R), dtype=np.uint64)
    for b in range(0, nbytes, step):
        part = t[:, b:b + step]
        total += await bs.count(net, bs.unpack(part, 8 * part.shape[-1]))
    return total & np.uint64(0xFFFFFFFF)


def _spread(x: Bits) -> Bits:
    """Bool shares as packed ones: each bit in all eight bits of a byte (local)."""
    return Bits(x.a.astype(np.uint8) * np.uint8(0xFF), x.b.astype(np.uint8) * np.uint8(0xFF))


def _low(x: Bits) -> Bits:
    """Inverse of :func:`_spread` (any bit of the byte; local)."""
    return Bits((x.a & np.uint8(1)).astype(bool), (x.b & np.uint8(1)).astype(bool))
