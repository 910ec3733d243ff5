"""engine.protocols.runtime: MPyC's field-array constructor without its per-call version parsing
behaves exactly as MPyC's own (values, shapes, copies, in-place effects on the caller's array);
its recombination with small Lagrange coefficients returns what MPyC's returns."""

from __future__ import annotations

import mpyc
import numpy as np
import pytest

from engine.protocols import runtime as mpcrt


def _build(init, field, value, **kw):
    a = field.array.__new__(field.array)
    init(a, value, **kw)
    return a


@pytest.mark.parametrize("kw", [{}, {"check": False}, {"copy": True}, {"copy": False}])
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
def test_field_array_constructor_equals_mpyc_s(kw, shape):
    init = mpyc.finfields.FiniteFieldArray.__init__
    if mpyc.__version__ != "0.11":
        pytest.skip("the constructor is replaced only for the MPyC version it repeats")
    assert init._version_parsed_once
    field = mpcrt.secfxp().field
    p = field.modulus
    base = np.array([0, 1, -1, p, p + 5, -p - 2][:int(np.prod(shape))], dtype=object)
    base = base.reshape(shape)
    ours_in, theirs_in = base.copy(), base.copy()
    ours = _build(init, field, ours_in, **kw)
    theirs = _build(init.__wrapped__, field, theirs_in, **kw)
    assert ours.value.shape == theirs.value.shape == shape
    assert ours.value.dtype == theirs.value.dtype == object
    assert ours.value.tolist() == theirs.value.tolist()
    assert ours_in.tolist() == theirs_in.tolist()  # the same in-place effect, if any
    assert (ours.value is ours_in) == (theirs.value is theirs_in)  # the same copying
    assert (ours + ours).value.tolist() == (theirs + theirs).value.tolist()


def _fields():
    from mpyc import finfields

    return [mpcrt.secfxp().field, finfields.GF(finfields.find_prime_root(62)[0]),
            finfields.GF(finfields.find_prime_root(176)[0])]


@pytest.mark.parametrize("xs", [(1, 2, 3), (1, 2), (2, 3), (1, 3), (3, 1), (2,)])
def test_recombine_with_small_coefficients_equals_mpyc_s(xs):
    thresha = mpyc.thresha
    ours = thresha.np_recombine
    while not getattr(ours, "_small_coefficients", False):  # under codec's shape check
        ours = ours.__wrapped__
    rng = np.random.default_rng(len(xs) * 10 + xs[0])
    for field in _fields():
        p = field.modulus
        for shape in [(0,), (1,), (7,)]:  # MPyC recombines flat shares
            shares = [np.array([int(v) for v in rng.integers(0, 2**62, int(np.prod(shape)))],
                               dtype=object).reshape(shape) * (p // 2**61) % p for _ in xs]
            shares[0].flat[:1] = p - 1  # the largest share
            points = list(zip(xs, shares, strict=True))
            got = ours(field, points)
            want = ours.mpyc_np_recombine(field, points)
            assert type(got) is type(want)
            assert got.value.shape == want.value.shape
            assert got.value.tolist() == want.value.tolist()
    # another recombination point and lists of points are MPyC's own
    field = _fields()[0]
    points = [(1, np.array([3, 4], dtype=object)), (2, np.array([5, 9], dtype=object))]
    for x_rs in (1, [0, 1]):
        got = ours(field, points, x_rs)
        want = ours.mpyc_np_recombine(field, points, x_rs)
        assert np.asarray(got.value).tolist() == np.asarray(want.value).tolist()

