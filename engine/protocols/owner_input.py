"""Single-table source: the owner announces its row count and secret-shares its columns.

The owner inputs its already checked fixed-point values with MPyC's ``input`` (Shamir shares,
t = 1).  What each party learns: the row count n (or one "too small" bit if n is below the
largest minimum); nothing about any value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.protocols.channel import Channel, announce_size
from engine.protocols.fixedpoint import encode
from engine.protocols.shares import SharedTable
from planner.plan import Scan


async def share_table(chan: Channel, scan: Scan, sf) -> tuple[int, Any]:
    """The owner of ``scan`` secret-shares its rows; returns n and the n x d shared table."""
    owner = scan.party
    mine = chan.party == owner
    n = await announce_size(chan, "row_count", len(chan.local.values) if mine else None, owner,
                            [p for p in chan.pids if p != owner], f"table {scan.table}")
    d = len(scan.columns)
    if n == 0 or d == 0:
        return n, None
    value = encode(chan.local.values) if mine else np.zeros((n, d), dtype=object)
    x = sf.array(sf.field.array(value), integral=False)
    shares = await chan.mpc.gather(chan.mpc.input(x, senders=chan.pids[owner]))
    chan.phase("share input")
    return n, SharedTable.from_field_values(sf, shares.value)
