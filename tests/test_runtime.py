"""engine.protocols.runtime: MPyC's field-array constructor without its per-call version parsing
behaves exactly as MPyC's own (values, shapes, copies, in-place effects on the caller's array)."""

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
