"""engine.protocols.fastfxp's encoding of public constants (no parties: local arithmetic only).

``_encode`` rounds c 2^f to an integer as Python's round does (ties to even) and ``public``
gives the same secure fixed-point array as MPyC's own constructor from a float array."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.protocols import fastfxp as fx
from engine.protocols import runtime as mpcrt

EDGES = [0.0, -0.0, 1.0, -1.0, 0.3, -0.3, 2.0**-49, 3 * 2.0**-49, -(2.0**-49), 2.0**-60,
         7.999999, 2.0**13 + 2.0**-48, 1e200, -1e200, 2.0**14 - 2.0**-38]


@pytest.mark.parametrize("f", [0, 24, 40, 48, 88])
def test_encode_is_python_round(f):
    rng = np.random.default_rng(f)
    c = np.concatenate([EDGES, rng.normal(size=50) * 4, rng.uniform(-8, 8, size=50)])
    got = fx._encode(c, f)
    assert got.dtype == object
    assert got.tolist() == [int(round(v * 2**f)) for v in c]
    assert all(type(v) is int for v in got.tolist())
    assert fx._encode(np.array(0.3), f).shape == ()
    assert fx._encode(np.zeros((2, 0, 3)), f).shape == (2, 0, 3)


def test_encode_refuses_what_round_refuses():
    for bad in (math.inf, math.nan):
        with pytest.raises((OverflowError, ValueError)):
            fx._encode(np.array([1.0, bad]), 48)


@pytest.mark.parametrize("shape", [(), (4,), (2, 3, 3)])
def test_public_equals_mpyc_s_constructor(shape):
    t2 = mpcrt.runtime_module.Runtime.SecFxp(96, 48)
    rng = np.random.default_rng(len(shape))
    c = np.asarray(rng.normal(size=shape) * 3)
    if c.size:
        c.flat[0] = -2.5  # a tie at no scale, a negative value
    ours, theirs = fx.public(type(t2.array(np.zeros(1))), c), t2.array(c)
    assert type(ours) is type(theirs)
    assert ours.shape == theirs.shape == shape
    assert ours.share.value.tolist() == theirs.share.value.tolist()
    assert ours.integral is False
