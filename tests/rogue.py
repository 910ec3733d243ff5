"""A modified party server that misbehaves as a coordinator (run as ``python -m tests.rogue``).

It is the ordinary ``mpcsql`` command line with the coordinator patched according to
``MPCSQL_ROGUE``, to check that the other parties' software boundary holds:

* ``receivers``: prepares the query at emc with receivers ``[emc]`` and at every other party
  with ``[ac]`` (so the result would be opened to ac against emc's policy), and skips its own
  comparison of the parties' plan fingerprints.
* ``minimum``: runs its own session with minimum 0 whatever its policy says, and skips the
  fingerprint comparison, to get an exact result over an intersection below every minimum.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from engine.control import messages
from engine.server import coordinator, participant

MODE = os.environ.get("MPCSQL_ROGUE", "")


def _patch_receivers() -> None:
    orig_one = coordinator.Peers.one

    async def one(self, name, msg):
        if msg.get("op") == "prepare" and not msg.get("dry_run"):
            msg = {**msg, "receivers": ["emc"] if name == "emc" else ["ac"]}
        return await orig_one(self, name, msg)

    coordinator.Peers.one = one


def _skip_fingerprint_check() -> None:
    class AllEqual(str):
        def __hash__(self):
            return 0

        def __eq__(self, other):
            return True

    orig = messages.PrepareReply.from_wire.__func__

    def from_wire(cls, msg, **kw):
        reply = orig(cls, msg, **kw)
        if reply.port is not None:  # not a dry run: make every fingerprint look the same
            object.__setattr__(reply, "fingerprint", AllEqual(reply.fingerprint))
        return reply

    messages.PrepareReply.from_wire = classmethod(from_wire)
    coordinator.PrepareReply = messages.PrepareReply


def _patch_minimum() -> None:
    orig = participant.Participant.run_session

    async def run_session(self, req, prep, keypair, handed):
        self.policy = dataclasses.replace(self.policy, min_intersection=0)
        return await orig(self, req, prep, keypair, handed)

    participant.Participant.run_session = run_session


if MODE == "receivers":
    _patch_receivers()
    _skip_fingerprint_check()
elif MODE == "minimum":
    _patch_minimum()
    _skip_fingerprint_check()
elif MODE:
    sys.exit(f"unknown MPCSQL_ROGUE mode {MODE!r}")

if __name__ == "__main__":
    from engine.cli import main

    sys.exit(main())
