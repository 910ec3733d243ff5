"""A data party checks the helper's matched positions before it derives anything from them."""

from __future__ import annotations

import numpy as np
import pytest

from dialect.errors import ProtocolError
from engine.protocols.joins.masked import _check_positions


def test_positions_within_the_owners_rows_pass():
    pos = _check_positions(np.array([4, 0, 2]), 3, 5, "helper", "emc")
    assert pos.dtype == np.int64 and pos.tolist() == [4, 0, 2]


@pytest.mark.parametrize("got, m, n, who", [
    (np.array([0, 1 << 26]), 2, 10, "helper"),  # one huge position (was a 1.1 GB allocation)
    (np.array([1, 1]), 2, 10, "helper"),  # repeated
    (np.array([-1, 2]), 2, 10, "helper"),
    (np.array([0.0, 1.0]), 2, 10, "helper"),
    (np.array([0, 1, 2]), 2, 10, "helper"),  # not m of them
    ("0,1", 2, 10, "helper"),
    (np.array([0, 1]), 2, 1, "emc"),  # the owner's count is below m
    (np.array([0, 1]), 2, "10", "emc"),
])
def test_malformed_positions_or_counts_are_refused_naming_the_sender(got, m, n, who):
    with pytest.raises(ProtocolError) as e:
        _check_positions(got, m, n, "helper", "emc")
    assert e.value.party == who
