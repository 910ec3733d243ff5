"""One-round fixed-point products (engine/protocols/fastfxp.py) among three real MPyC processes.

Three forked processes run an MPyC session over TCP on localhost (Shamir, t = 1, PRSS masks
summed over C(3, 1) = 3 PRFs: the case the single-party unit tests cannot reach). Party 0
secret-shares the inputs; every result is opened and compared with exact rational arithmetic
on the encoded inputs.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
from fractions import Fraction

import numpy as np
import pytest

from tests.mpc_parties import run_three

pytestmark = pytest.mark.e2e

F = 48
N = 400
LTZ_BITS = (27, 39, 60, 96)


def _party(pid: int, ports: list[int], out: mp.Queue) -> None:
    from engine.protocols import fastfxp as fx
    from engine.protocols import runtime as mpcrt

    mpc = mpcrt.make_runtime(pid, [mpcrt.Address("127.0.0.1", p) for p in ports])
    rng = np.random.default_rng(7)
    a = rng.normal(size=N) * 4
    b = rng.normal(size=N)
    A = rng.normal(size=(6, 5))
    B = rng.normal(size=(5, 4))
    cmp_vals = {bl: np.concatenate(([0.0, 2.0**-F, -2.0**-F, 2.0**(bl - 2 - F), -2.0**(bl - 2 - F)],
                                   rng.uniform(-1, 1, 200) * 2.0**(bl - 2 - F)))
                for bl in LTZ_BITS}

    async def main():
        await mpc.start()
        t2 = mpc.SecFxp(96, 48)
        sa, sb, sA, sB = (mpc.input(t2.array(x), senders=0) for x in (a, b, A, B))
        bits = mpc.np_sgn(sa, LT=True)
        p = t2.field.modulus

        async def val(x):  # exact: the opened integers (x 2^-48), signed
            v = np.asarray((await mpc.output(x, raw=True)).value, dtype=object)
            return np.vectorize(lambda i: Fraction(i - p if i > p // 2 else i, 2**F),
                                otypes=[object])(v)

        full, low = fx.matmul(sA, sB, extra=20)
        S = np.round(A[:5] @ A[:5].T * 4) / 4  # symmetric; S, S^2 + I commute (exact encodings)
        sS, sS2 = (mpc.input(t2.array(x), senders=0) for x in (S, S @ S + np.eye(5)))
        sym_stack = mpc.input(t2.array(np.stack([S, -S])), senders=0)
        stack = mpc.input(t2.array(np.stack([A, 2 * A])), senders=0)
        fac = np.array([3.7, 0.3]).reshape(2, 1, 1)
        # PRSS integers (shared mod p and mod a 62-bit prime) and degree-2t zero sharings
        q = fx._small_field(27, mpc.options.sec_param).modulus
        Rp, Rq = fx._prss_int((p, q), N, 57)
        Fq = fx._small_field(27, mpc.options.sec_param)
        z2 = fx._prss_zero2t(q, N)
        prss = {
            "Rp": list((await mpc.output(t2.field.array(Rp))).value),
            "Rq": list((await mpc.output(Fq.array(Rq))).value),
            "z2": list((await mpc.output(Fq.array(z2), threshold=2)).value),
            "zp": list((await mpc.output(t2.field.array(fx._prss_zero2t(p, 5)),
                                         threshold=2)).value),
        }
        res = {
            "mul": await val(fx.mul(sa, sb)),
            "mul_extra": await val(fx.mul(sa, sb, extra=5)),
            "zero": await val(fx.mul(sa * 0, sb)),
            "matmul": await val(fx.matmul(sA, sB)),
            "full": await val(full),
            "low": await val(low),
            "scale": await val(fx.scale(sa, 0.3)),
            "intmul": await val(fx.intmul(bits, sb)),
            "all": await val(fx.all_bits(1 - bits)),
            "all1": await val(fx.all_bits(bits * 0 + 1)),
            "factor": await val(fx.matmul(stack, sB, factor=fac)),
            "sym": await val(fx.symmatmul(sS, sS2)),
            "sym_mm": await val(fx.matmul(sS, sS2)),
            "sym_stack": await val(fx.symmatmul(sym_stack, sS2, factor=fac)),
            **prss,
        }
        for bl, v in cmp_vals.items():  # LTZ-SMALL at several bit lengths (small field sizes)
            res[f"ltz{bl}"] = await val(fx.ltz(mpc.input(t2.array(v), senders=0), bl))
            res[f"sgn{bl}"] = await val(mpc.np_sgn(mpc.input(t2.array(v), senders=0), l=bl,
                                                  LT=True))
        await mpc.shutdown()
        return res

    out.put((pid, mpc.run(main()), a, b, A, B, cmp_vals))


def _sym_inputs(A):
    S = np.round(A[:5] @ A[:5].T * 4) / 4
    return _enc(S), _enc(S @ S + np.eye(5))


def _enc(x) -> np.ndarray:
    """The SecFxp(96, 48) encodings of x as exact fractions."""
    return np.vectorize(lambda v: Fraction(round(v * 2**F), 2**F), otypes=[object])(x)


def test_one_round_products_three_parties():
    got = run_three(_party, (), 120)
    _, res, a, b, A, B, cmp_vals = got[0]
    assert all(list(g[1]["mul"]) == list(res["mul"]) for g in got)  # every party opens the same
    ea, eb, eA, eB = _enc(a), _enc(b), _enc(A), _enc(B)
    ulp = 2.0**-F

    def err(x, exact):
        return np.array([float(v - e) for v, e in zip(x.ravel(), exact.ravel(), strict=True)])

    e = err(res["mul"], ea * eb)
    assert np.abs(e).max() < 2 * ulp  # the documented bound
    assert abs(e.mean()) < 0.25 * ulp  # the bias of the PRSS mask is removed
    assert np.abs(err(res["mul_extra"], ea * eb / 32)).max() < 2 * ulp
    assert np.abs(res["zero"].astype(float)).max() < 2 * ulp
    assert np.abs(err(res["matmul"], eA @ eB)).max() < 2 * ulp  # one truncation per entry
    assert np.abs(err(res["full"], eA @ eB)).max() < 2 * ulp
    assert np.abs(err(res["low"], eA @ eB / 2**20)).max() < 2 * 2.0**-(F - 20)
    assert np.abs(err(res["scale"], ea * _enc(0.3))).max() < 2 * ulp
    assert list(res["intmul"]) == list(np.where(a < 0, eb, 0))  # exact
    assert list(res["all"]) == [int(np.all(a >= 0))]
    assert list(res["all1"]) == [1]
    fac = [Fraction(round(f * 2**40), 2**40) for f in (3.7, 0.3)]
    stack = _enc(np.stack([A, 2 * A]))  # 2A is encoded itself: enc(2A) != 2 enc(A) by up to 1 ulp
    for k, f in enumerate(fac):  # one truncation per entry
        assert np.abs(err(res["factor"][k], (stack[k] @ eB) * f)).max() < 2 * ulp
    eS, eS2 = _sym_inputs(A)
    assert (res["sym"] == res["sym"].T).all()  # exactly symmetric: the mirror of i <= j
    assert np.abs(err(res["sym"], eS @ eS2)).max() < 2 * ulp  # one truncation per entry
    assert np.abs(err(res["sym_mm"], eS @ eS2)).max() < 2 * ulp
    for k, (f, sign) in enumerate(zip(fac, (1, -1), strict=True)):
        assert (res["sym_stack"][k] == res["sym_stack"][k].T).all()
        assert np.abs(err(res["sym_stack"][k], sign * (eS @ eS2) * f)).max() < 2 * ulp
    assert res["Rp"] == res["Rq"]  # the same integers in both fields
    assert all(0 <= r < 3 * 2**57 for r in res["Rp"]) and max(res["Rp"]) > 2**57
    assert res["z2"] == [0] * N and res["zp"] == [0] * 5
    for bl, v in cmp_vals.items():  # exact, and as MPyC's own comparison
        assert list(res[f"ltz{bl}"]) == list((v < 0).astype(int)), bl
        assert list(res[f"ltz{bl}"]) == list(res[f"sgn{bl}"]), bl
        assert all(list(g[1][f"ltz{bl}"]) == list(res[f"ltz{bl}"]) for g in got)


def test_prss_integer_coefficients_are_mpyc_polynomials():
    from mpyc import finfields, thresha

    from engine.protocols import fastfxp as fx

    for m in (3, 4, 5):
        for t in range(1, (m - 1) // 2 + 1):
            subsets = tuple(tuple(sorted(set(range(m)) - set(c)))
                            for c in itertools.combinations(range(m), t))
            q = 2**61 - 1
            for i in range(m):
                cs, D = fx._int_coefs(m, i, subsets)
                want = [int(thresha._f_S_i(finfields.GF(q), m, i, S)) for S in subsets]
                assert [c * pow(D, -1, q) % q for c in cs] == want
                own = tuple(S for S in subsets if i in S)  # the keys party i holds
                assert fx._int_coefs(m, i, own)[1] == D  # one D at every party
