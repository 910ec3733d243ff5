"""NS-INVERSE in three MPyC processes: with ``definite`` (LASSO-ADMM's G + rho I) the mirrored
products reach the accuracy of full products; a singular H (POLISH) stays bounded with the full
products it uses."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from tests.mpc_parties import run_three

pytestmark = pytest.mark.e2e

RHOS = (0.05, 0.5)


def _gram(d: int = 30) -> np.ndarray:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, d))
    X[:, 5] = X[:, 4]  # a duplicated feature: G is singular
    X /= X.std(axis=0)
    return X.T @ X / 200 / d  # eigenvalues in [0, 1]


def _party(pid: int, ports: list[int], out: mp.Queue) -> None:
    from engine.protocols import runtime as mpcrt
    from engine.protocols.regression import inverses as inv

    mpc = mpcrt.make_runtime(pid, [mpcrt.Address("127.0.0.1", p) for p in ports])
    G = _gram()
    d = G.shape[0]
    stack = np.stack([G + r * np.eye(d) for r in RHOS])

    async def main():
        await mpc.start()
        t2 = mpc.SecFxp(96, 48)
        A = mpc.input(t2.array(stack), senders=0)
        H = mpc.input(t2.array(G), senders=0)
        hi = d * (1 + 2.0**-30) + max(RHOS)
        res = {}
        for definite in (False, True):
            X = inv._ns_inverse(A, min(RHOS), hi, lam_lo=np.array(RHOS), definite=definite)
            res[definite] = await mpc.output(X)
        res["singular"] = await mpc.output(inv._ns_inverse(H, 2.0**-16, d * (1 + 2.0**-30)))
        await mpc.shutdown()
        return res

    out.put((pid, mpc.run(main())))


def test_mirrored_products_are_as_accurate_and_singular_h_stays_bounded():
    got = sorted(run_three(_party, (), 120), key=lambda g: g[0])
    res = got[0][1]
    G = _gram()
    want = np.stack([np.linalg.inv(G + r * np.eye(G.shape[0])) for r in RHOS])
    for definite in (False, True):
        assert np.abs(res[definite] - want).max() < 1e-11, definite
    # the last step is a full product: symmetric up to its own rounding, like the plain path
    assert np.abs(res[True] - np.swapaxes(res[True], 1, 2)).max() < 1e-12
    # POLISH's bound: whatever H is, |X| <= prod a_k X0 < 2^25 X0 (here X0 = 2/(30 + 2^-16))
    assert np.isfinite(res["singular"]).all()
    assert np.abs(res["singular"]).max() < 2.0**25 * 2 / 30
    assert all(np.array_equal(g[1][True], res[True]) for g in got)  # every party opens the same
