"""The query agreement with min_group_rows (engine.protocols.agreement.agree), unit level.

Each party sends (binding, min_intersection, min_group_rows) to every other party; it keeps its
own rules as it holds them and takes the largest of each minimum over the parties.  A rogue
peer claiming a smaller minimum (or echoing ours back lowered) cannot lower ours.
"""

from __future__ import annotations

import asyncio

import pytest

from dialect.errors import PolicyError, ProtocolError
from engine.protocols.agreement import agree, binding

B = binding("q1", "SELECT COUNT(*) FROM ac", "fp")
PIDS = {"ac": 0, "emc": 1, "helper": 2}


class FakeMPC:
    """``transfer`` returns what each party (in pid order) sent; records what we sent."""

    def __init__(self, got: list):
        self.got, self.sent = got, None

    async def transfer(self, obj):
        self.sent = obj
        return list(self.got)


class FakeChan:
    def __init__(self, party: str, got: list):
        self.party, self.pids, self.mpc = party, PIDS, FakeMPC(got)


def run(party: str, got: list, own_min: int = 0, own_group_min: int | None = None):
    chan = FakeChan(party, got)
    loop = asyncio.new_event_loop()  # private: asyncio.run would unset MPyC's current loop
    try:
        return loop.run_until_complete(agree(chan, B, own_min, own_group_min)), chan.mpc.sent
    finally:
        loop.close()


def test_each_party_sends_its_own_rules_and_takes_the_largest():
    agreed, sent = run("ac", [(B, 99, 1), (B, 20, 5), (B, 10, None)], 0, 3)
    assert sent == (B, 0, 3)
    assert (agreed.min_rows, agreed.min_rows_by) == (20, "emc")
    assert (agreed.min_group_rows, agreed.min_group_rows_by) == (5, "emc")


def test_no_rule_anywhere_is_zero_by_nobody():
    agreed, _ = run("helper", [(B, 0, None), (B, 0, None), (B, 0, None)])
    assert (agreed.min_group_rows, agreed.min_group_rows_by) == (0, None)
    assert (agreed.min_rows, agreed.min_rows_by) == (0, "ac")


def test_ties_name_the_first_party_in_pid_order():
    agreed, _ = run("helper", [(B, 0, 7), (B, 0, 7), (B, 0, None)], 0, 7)
    assert (agreed.min_group_rows, agreed.min_group_rows_by) == (7, "ac")


@pytest.mark.parametrize("echo", [None, 0, 1])
def test_a_rogue_peer_cannot_lower_our_minimum(echo):
    """emc (own rule 12) hears a smaller number for itself and for every peer: keeps 12."""
    agreed, sent = run("emc", [(B, 0, 1), (B, 0, echo), (B, 0, 0)], 30, 12)
    assert sent == (B, 30, 12)
    assert (agreed.min_group_rows, agreed.min_group_rows_by) == (12, "emc")
    assert (agreed.min_rows, agreed.min_rows_by) == (30, "emc")


def test_a_peer_raising_the_minimum_is_obeyed():
    agreed, _ = run("ac", [(B, 0, 2), (B, 0, 2), (B, 0, 50)], 0, 2)
    assert (agreed.min_group_rows, agreed.min_group_rows_by) == (50, "helper")


@pytest.mark.parametrize("item", [
    (B, 0), (B, 0, 1, 2), (B, 0, -1), (B, 0, True), (B, 0, 2.0), (B, 0, "3"), (B, -1, None),
    (B, None, None), (1, 0, None), "nonsense", None,
])
def test_malformed_rules_are_refused_naming_the_sender(item):
    with pytest.raises(ProtocolError, match="party emc sent a malformed query binding") as e:
        run("ac", [(B, 0, None), item, (B, 0, None)])
    assert e.value.party == "emc"


def test_another_query_is_refused():
    other = binding("q1", "SELECT COUNT(*) FROM emc", "fp")
    with pytest.raises(PolicyError, match="party helper runs a different query"):
        run("ac", [(B, 0, None), (B, 0, None), (other, 0, None)])


def test_lists_are_accepted_like_tuples():
    agreed, _ = run("ac", [(B, 0, None), [B, 4, 6], [B, 0, None]])
    assert (agreed.min_rows, agreed.min_group_rows) == (4, 6)


@pytest.mark.parametrize("agreed,m,want", [(0, 10, 1), (1, 10, 1), (5, 10, 5), (10, 10, 10),
                                           (11, 10, 11), (500, 10, 11), (3, 0, 1), (0, 0, 1)])
def test_the_presence_threshold_is_at_least_one_and_at_most_m_plus_one(agreed, m, want):
    from engine.protocols.aggregates import group_minimum

    assert group_minimum(agreed, m) == want
