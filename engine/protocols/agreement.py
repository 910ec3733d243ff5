"""Before any data moves, the three parties check among themselves that they run the same query.

Every party sends every other party, over the session's own (authenticated) channels, the
binding of the query it approved at prepare — a hash of the query id, the SQL and the plan's
fingerprint, which covers the plan, the join protocol and the receivers — and its own
``min_intersection``.  Each party refuses if any binding differs from its own, and then uses the
largest of the minimums *as each party sent it itself*; its own minimum is always among them.
So a coordinator can neither run another query than the one a party approved, nor send parties
different receivers, nor lower anyone's minimum: nothing it relays is trusted here.

What each party learns: the other parties' bindings and minimums (policy metadata, no data).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from dialect.errors import PolicyError, ProtocolError
from engine.protocols.channel import Channel


def binding(query_id: str, sql: str, fingerprint: str) -> str:
    """The hash a party binds its approval of a query to."""
    return hashlib.sha256("\x00".join((query_id, sql, fingerprint)).encode()).hexdigest()


@dataclass(frozen=True)
class Agreement:
    min_rows: int  # the largest minimum over the parties, each as the party itself sent it
    min_rows_by: str  # the party whose minimum it is (the first in pid order)


async def agree(chan: Channel, mine: str, own_min: int) -> Agreement:
    """Exchange bindings and minimums with every party; refuse on any difference."""
    got = await chan.mpc.transfer((mine, own_min))
    names = sorted(chan.pids, key=chan.pids.get)
    mins: dict[str, int] = {}
    for name, item in zip(names, got, strict=True):
        if name == chan.party:
            mins[name] = own_min
            continue
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], int) and not isinstance(item[1], bool)
                and item[1] >= 0):
            raise ProtocolError(f"party {name} sent a malformed query binding", party=name)
        if item[0] != mine:
            raise PolicyError(
                f"party {name} runs a different query than {chan.party} approved (another "
                "SQL, plan, join protocol or receivers); nothing was revealed",
                party=chan.party, rule="plan")
        mins[name] = item[1]
    top = max(mins.values())
    by = next(n for n in names if mins[n] == top)
    return Agreement(top, by)
