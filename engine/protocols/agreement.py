"""Before any data moves, the three parties check among themselves that they run the same query.

Every party sends every other party, over the session's own (authenticated) channels, the
binding of the query it approved at prepare — a hash of the query id, the SQL and the plan's
fingerprint, which covers the plan, the join protocol and the receivers — its own
``min_intersection`` and its own ``min_group_rows`` (an int, or None for no rule).  Each party
refuses if any binding differs from its own, and then uses the largest of each minimum *as each
party sent it itself*; its own minimums are always among them (a party never takes another's
word for its own rule).  So a coordinator can neither run another query than the one a party
approved, nor send parties different receivers, nor lower anyone's minimum: nothing it relays
is trusted here, and a peer that claims a smaller minimum only fails to raise the others'.

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
    #: the largest min_group_rows over the parties (0: no party has one), and whose it is
    min_group_rows: int = 0
    min_group_rows_by: str | None = None


def _count(x: object, optional: bool = False) -> bool:
    """A non-negative int (not a bool), or None where ``optional``."""
    if x is None:
        return optional
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _well_formed(item: object) -> bool:
    return (isinstance(item, (tuple, list)) and len(item) == 3 and isinstance(item[0], str)
            and _count(item[1]) and _count(item[2], optional=True))


def _largest(values: dict[str, int | None], names: list[str]) -> tuple[int, str | None]:
    """The largest value and the first party (pid order) that sent it; (0, None) if none."""
    given = {n: v for n, v in values.items() if v is not None}
    if not given:
        return 0, None
    top = max(given.values())
    return top, next(n for n in names if given.get(n) == top)


async def agree(chan: Channel, mine: str, own_min: int, own_group_min: int | None = None
                ) -> Agreement:
    """Exchange bindings and minimums with every party; refuse on any difference."""
    got = await chan.mpc.transfer((mine, own_min, own_group_min))
    names = sorted(chan.pids, key=chan.pids.get)
    mins: dict[str, int] = {}
    group_mins: dict[str, int | None] = {}
    for name, item in zip(names, got, strict=True):
        if name == chan.party:  # our own rules as we hold them, never as echoed back
            mins[name], group_mins[name] = own_min, own_group_min
            continue
        if not _well_formed(item):
            raise ProtocolError(f"party {name} sent a malformed query binding", party=name)
        if item[0] != mine:
            raise PolicyError(
                f"party {name} runs a different query than {chan.party} approved (another "
                "SQL, plan, join protocol or receivers); nothing was revealed",
                party=chan.party, rule="plan")
        mins[name], group_mins[name] = item[1], item[2]
    top, by = _largest(mins, names)
    group_top, group_by = _largest(group_mins, names)
    return Agreement(top, by, group_top, group_by)
