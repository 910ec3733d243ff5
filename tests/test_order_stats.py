"""MIN / MAX / QUANTILE_CONT in MPC (engine/protocols/order_stats.py) and the replicated bit
sharing under them (engine/protocols/bitshares.py), in MPyC's single-process runtime.

There :class:`bitshares.Net` simulates the three parties in one process (every array has a
leading party axis, messages move along it), so these tests run the protocols' circuits and
message logic; tests/test_order_stats_e2e.py runs them among three real processes.  Results
are compared with numpy and with DuckDB on the plaintext rows.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from dialect.errors import DataError
from engine.protocols import bitshares as bs
from engine.protocols import runtime as mpcrt
from engine.protocols.order_stats import dyadic, order_statistic

mpc = mpcrt.mpc
sf = mpcrt.secfxp()
FXA = type(sf.array(np.zeros(1)))  # the SecFxp(64, 32) array type
FIELD = sf.field
ULP = 2.0**-32  # fixed-point resolution of a normalised value


class Chan:
    """The part of engine.protocols.channel.Channel the protocol uses; opening is an error."""

    def __init__(self):
        self.mpc = mpc
        self.phases: list[str] = []

    def phase(self, name: str) -> None:
        self.phases.append(name)

    async def reveal(self, *a, **kw):  # pragma: no cover - must not be called
        raise AssertionError("order_statistic opened something")

    def opened(self, *a, **kw):  # pragma: no cover
        raise AssertionError("order_statistic opened something")


def run(coro):
    return mpc.run(coro)


def reveal(x: bs.Bits) -> np.ndarray:
    """The shared bits (simulated parties), checking that the components are replicated."""
    assert (x.a[1] == x.b[0]).all() and (x.a[2] == x.b[1]).all() and (x.b[2] == x.a[0]).all()
    return x.a[0] ^ x.b[0] ^ x.b[1]


def number(bits: np.ndarray) -> np.ndarray:
    return sum(bits[j].astype(object) << j for j in range(bits.shape[0]))


def shared_ints(v) -> object:
    return FIELD.array(np.asarray(v, dtype=object) % FIELD.modulus)


@pytest.fixture
def net():
    return bs.Net(mpc)


# --- the bit sharing ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_bits,scale", [(1, 0), (1, 32), (5, 0), (35, 0), (70, 0), (20, 32)])
def test_a2b_round_trip(net, n_bits, scale):
    rng = np.random.default_rng(n_bits)
    x = np.array([int(rng.integers(0, 2**min(n_bits, 62))) for _ in range(200)], dtype=object)
    x[:2] = [0, (1 << n_bits) - 1]
    got = run(bs.a2b(net, FXA, shared_ints(x << scale), n_bits, n_bits, scale=scale))
    assert got.shape == (n_bits, 200)
    assert list(number(reveal(got))) == list(x)


def test_a2b_keeps_the_shape(net):
    x = np.arange(12, dtype=object).reshape(3, 4)
    got = run(bs.a2b(net, FXA, shared_ints(x), 4, 4))
    assert got.shape == (4, 3, 4)
    assert (number(reveal(got)) == x).all()


def test_and_gates_are_replicated_and_correct(net):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 2, (2, 3, 50)).astype(bool)
    X = run(bs.a2b(net, FXA, shared_ints(x.astype(int)), 1, 1))[0]
    Y = run(bs.a2b(net, FXA, shared_ints(y.astype(int)), 1, 1))[0]
    z1, z2 = run(net.and_n([(X, Y), (X, net.not_(Y))]))
    assert (reveal(z1) == (x & y)).all() and (reveal(z2) == (x & ~y)).all()
    assert (reveal(net.xor_pub(X, y)) == (x ^ y)).all()


def test_adder_comparator_mux_exhaustively(net):
    L = 4
    a, b = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    a, b = a.reshape(-1).astype(object), b.reshape(-1).astype(object)
    A = run(bs.a2b(net, FXA, shared_ints(a), L, L))
    B = run(bs.a2b(net, FXA, shared_ints(b), L, L))
    assert list(number(reveal(run(bs.add(net, A, B))))) == list((a + b) % 16)
    assert list(number(reveal(run(bs.add3(net, A, B, A))))) == list((2 * a + b) % 16)
    lt = run(bs.less_than(net, A, B))
    assert list(reveal(lt)) == list(a < b)
    assert list(number(reveal(run(bs.mux(net, lt, A, B))))) == list(np.minimum(a, b))
    assert list(reveal(run(bs.all_(net, A)))) == list(a == 15)


@pytest.mark.parametrize("L", [1, 2, 3, 35])
def test_less_than_random(net, L):
    rng = np.random.default_rng(L)
    a = np.array([int(v) for v in rng.integers(0, 2**L, 300)], dtype=object)
    b = np.array([int(v) for v in rng.integers(0, 2**L, 300)], dtype=object)
    b[:50] = a[:50]  # ties
    A = run(bs.a2b(net, FXA, shared_ints(a), L, L))
    B = run(bs.a2b(net, FXA, shared_ints(b), L, L))
    assert list(reveal(run(bs.less_than(net, A, B)))) == list(a < b)


def test_count_inputs_and_b2a(net):
    rng = np.random.default_rng(2)
    t = rng.integers(0, 2, (4, 333))
    T = run(bs.a2b(net, FXA, shared_ints(t), 1, 1))[0]
    y = run(bs.count(net, T))
    assert not y[0].any()  # party 0 holds no part of the count
    assert list((y[1] + y[2]) & 0xFFFFFFFF) == list(t.sum(axis=1))
    vals = np.zeros((3, 2), dtype=np.uint64)
    vals[1], vals[2] = [5, 1 << 20], [7, 0]
    got = run(bs.inputs(net, {1: vals, 2: vals}, 21))
    assert list(number(reveal(got[1]))) == [5, 1 << 20]
    assert list(number(reveal(got[2]))) == [7, 0]
    W = np.array([[1, 2, 4, 8], [-1, 0, 0, 3]], dtype=object)
    X = run(bs.a2b(net, FXA, shared_ints(np.arange(10)), 4, 4))
    out = np.asarray(run(bs.b2a(net, FXA, X, W)).value, dtype=object)
    bits = reveal(X).astype(object)
    assert list(out[0]) == list(range(10))
    assert list(out[1]) == list((-bits[0] + 3 * bits[3]) % FIELD.modulus)


def test_masks_are_fresh(net):
    """Two conversions of the same value open different masked values (fresh PRF streams)."""
    words = [bs._masks(net, 0, net.nonce(), 4, 95) for _ in range(2)]
    assert not (words[0] == words[1]).all()
    assert (words[0][1] == 0).all() and (words[0][0] != 0).any()  # party 1 misses component 0


# --- order statistics -----------------------------------------------------------------------------


def _duckdb(v: np.ndarray, w: np.ndarray, q: float) -> pd.DataFrame:
    g, i = np.nonzero(w)
    df = pd.DataFrame({"g": g, "v": v[i]})  # noqa: F841 (read by DuckDB)
    groups = pd.DataFrame({"g": np.arange(w.shape[0])})  # noqa: F841
    sql = f"""SELECT groups.g, min(v) AS mn, max(v) AS mx, quantile_cont(v, {q!r}) AS qc,
                     median(v) AS med
              FROM groups LEFT JOIN df USING (g) GROUP BY groups.g ORDER BY groups.g"""
    return duckdb.sql(sql).df()


def _secure(kind: str, v: np.ndarray, w: np.ndarray, q: float | None = None, wtype=None):
    wtype = wtype or FXA
    vals, wts = sf.array(v), wtype(w.astype(float if wtype is FXA else int))
    chan = Chan()
    res, empty = run(order_statistic(chan, kind, vals, wts, 0, q))
    assert chan.phases == ["order statistic: convert", f"order statistic: {kind}"]
    return np.asarray(run(mpc.output(res)), float), np.asarray(run(mpc.output(empty)), float)


def _data(seed: int, m: int, G: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = rng.integers(-2**20, 2**20 + 1, m) / 2**20  # exact in SecFxp and in doubles
    v[rng.integers(0, m, m // 4)] = v[0]  # ties
    v[1], v[2] = -1.0, 1.0  # the extremes of the normalised range
    w = (rng.uniform(size=(G, m)) < rng.uniform(0.2, 0.9, (G, 1))).astype(int)
    w[0] = 1  # all rows
    w[1] = 0  # empty group
    w[2] = 0
    w[2, rng.integers(0, m)] = 1  # one row
    w[3] = 0
    w[3, :2] = 1  # two rows (-1 and the first value)
    return v, w


@pytest.mark.parametrize("seed,m,G", [(0, 37, 6), (1, 64, 5), (2, 5, 4), (3, 100, 7)])
def test_min_max_exact_vs_duckdb(seed, m, G):
    v, w = _data(seed, m, G)
    ref = _duckdb(v, w, 0.5)
    empty = ref.mn.isna().to_numpy()
    for kind, col in (("min", "mn"), ("max", "mx")):
        res, e = _secure(kind, v, w)
        assert list(e) == list(empty.astype(float))
        assert list(res[empty]) == [0.0] * empty.sum()
        assert list(res[~empty]) == list(ref[col].to_numpy()[~empty])  # exact


@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 1.0, 0.3, 0.9, 0.999])
@pytest.mark.parametrize("seed,m,G", [(4, 41, 6), (5, 16, 4), (6, 7, 5)])
def test_quantile_cont_vs_duckdb(q, seed, m, G):
    v, w = _data(seed, m, G)
    ref = _duckdb(v, w, q)
    empty = ref.qc.isna().to_numpy()
    res, e = _secure("quantile", v, w, q)
    assert list(e) == list(empty.astype(float))
    assert list(res[empty]) == [0.0] * empty.sum()
    err = np.abs(res[~empty] - ref.qc.to_numpy()[~empty])
    assert err.max() <= ULP + 1e-15  # one rounding of the interpolation
    if q in (0.0, 1.0):
        assert err.max() == 0  # an order statistic: exact


def test_median_of_integers_is_exact():
    """Integers below 2^bits, bits <= 31: (lo + hi) / 2 is a multiple of 2^-32 (normalised)."""
    rng = np.random.default_rng(7)
    bits = 10
    v = rng.integers(-2**bits, 2**bits, 30)
    w = (rng.uniform(size=(4, 30)) < 0.6).astype(int)
    w[0], w[1] = 1, 0
    w[1, :2] = 1  # an even count: the mean of two values
    res, e = _secure("quantile", v / 2**bits, w, 0.5)
    want = [np.median(v[row.astype(bool)]) / 2**bits for row in w]
    assert list(res) == want and not e.any()


@pytest.mark.parametrize("kind,q", [("min", None), ("max", None), ("quantile", 0.25)])
def test_blocks_of_groups(monkeypatch, kind, q):
    """Groups processed in blocks (bounded memory) give the same results as all at once."""
    from engine.protocols import order_stats

    v, w = _data(9, 30, 7)
    whole = _secure(kind, v, w, q)
    monkeypatch.setattr(order_stats, "BLOCK", 1)  # one group (or row) per block
    monkeypatch.setattr(order_stats, "COUNT_BITS", 8)  # one selection, 8 rows per COUNT
    blocks = _secure(kind, v, w, q)
    assert [list(x) for x in blocks] == [list(x) for x in whole]


@pytest.mark.parametrize("q", [0.5, 0.3, 1.0])
def test_quantile_over_blocks_of_rows(q):
    """Rows converted in blocks of any size (packed with padding) and selected together give
    what all the rows at once give, and DuckDB's answer."""
    from engine.protocols.order_stats import convert, quantile

    v, w = _data(10, 30, 5)
    whole = _secure("quantile", v, w, q)
    chan, parts, start = Chan(), [], 0
    for size in (5, 13, 1, 11):  # not multiples of 8
        stop = start + size
        vals, wts = sf.array(v[start:stop]), FXA(w[:, start:stop].astype(float))
        parts.append(run(convert(chan, vals, wts)))
        start = stop
    assert [p.m for p in parts] == [5, 13, 1, 11] and parts[0].X.shape == (34, 1)
    res, e = run(quantile(chan, parts, q))
    got = [np.asarray(run(mpc.output(x)), float) for x in (res, e)]
    assert list(got[1]) == list(whole[1])  # the same empty groups
    assert np.abs(got[0] - whole[0]).max() <= ULP  # the interpolation's rounding is random
    ref = _duckdb(v, w, q).qc.to_numpy()
    assert np.abs(got[0][~np.isnan(ref)] - ref[~np.isnan(ref)]).max() <= ULP + 1e-15


def test_all_weights_one_and_all_equal():
    v = np.full(20, -0.375)
    w = np.ones((2, 20), dtype=int)
    for kind, q in (("min", None), ("max", None), ("quantile", 0.5), ("quantile", 0.7)):
        res, e = _secure(kind, v, w, q)
        assert list(res) == [-0.375, -0.375] and not e.any()


def test_single_row_and_no_rows():
    res, e = _secure("min", np.array([0.5]), np.array([[1], [0]]))
    assert list(res) == [0.5, 0.0] and list(e) == [0.0, 1.0]
    res, e = _secure("quantile", np.array([0.5]), np.array([[1], [0]]), 0.25)
    assert list(res) == [0.5, 0.0] and list(e) == [0.0, 1.0]
    chan = Chan()
    no_rows = sf.array(np.zeros(0), integral=True), sf.array(np.zeros((3, 0)), integral=True)
    res, e = run(order_statistic(chan, "max", *no_rows, 0))
    assert list(run(mpc.output(res))) == [0.0] * 3 and list(run(mpc.output(e))) == [1.0] * 3
    no_groups = sf.array(np.zeros(4)), sf.array(np.zeros((0, 4)), integral=True)
    res, e = run(order_statistic(chan, "quantile", *no_groups, 0, 0.5))
    assert res.shape == e.shape == (0,)


def test_integer_weights():
    """Weights may be secure integers over the same field (no fixed-point scale)."""
    sint = mpc.SecInt(l=8, p=FIELD.modulus)
    v, w = _data(8, 20, 4)
    want = _duckdb(v, w, 0.5)
    res, _ = _secure("quantile", v, w, 0.5, wtype=type(sint.array(np.zeros(1, dtype=int))))
    got, ref = res[~want.qc.isna()], want.qc.dropna().to_numpy()
    assert np.abs(got - ref).max() <= ULP


def test_dyadic_quantiles():
    assert dyadic(0.5) == (1, 1) and dyadic(0.25) == (1, 2) and dyadic(0.75) == (3, 2)
    assert dyadic(0) == (0, 0) and dyadic(1) == (1, 0)
    Q, s = dyadic(0.3)
    assert Q / 2**s == 0.3 and Q % 2 == 1
    Q, s = dyadic(1e-30)  # below 2^-60: rounded to a multiple of 2^-60
    assert s <= 60


@pytest.mark.parametrize("q", [-0.1, 1.5, None, float("nan")])
def test_bad_quantile_is_refused(q):
    with pytest.raises(DataError, match="between 0 and 1"):
        run(order_statistic(Chan(), "quantile", sf.array(np.zeros(2)),
                            sf.array(np.ones((1, 2))), 0, q))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown order statistic"):
        run(order_statistic(Chan(), "mode", sf.array(np.zeros(2)), sf.array(np.ones((1, 2))), 0))
    with pytest.raises(ValueError, match="weights"):
        run(order_statistic(Chan(), "min", sf.array(np.zeros(2)), sf.array(np.ones((1, 3))), 0))


def test_malformed_peer_message_is_refused(net, monkeypatch):
    """A message of the wrong type or size raises ProtocolError naming the sender."""
    from dialect.errors import ProtocolError

    X = net.public(np.ones((3, 5), dtype=bool))

    async def bad_route(routes, payload):
        return [np.zeros(1, dtype=np.int64)] * 3

    monkeypatch.setattr(net, "route", bad_route)
    with pytest.raises(ProtocolError, match="party number 1 sent a malformed bit-sharing"):
        run(net.and_(X, X))
