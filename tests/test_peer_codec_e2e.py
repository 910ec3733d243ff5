"""A party whose MPC messages are all crafted pickles: no code runs at the other parties.

The misbehaving party is a real party server whose every outgoing MPyC message (the payload
of ``MessageExchanger.send``) is replaced by a pickle whose ``__reduce__`` would run
``touch MARKER``.  No product code knows about this: the test puts a ``sitecustomize.py`` on
the party servers' ``PYTHONPATH`` that patches ``MessageExchanger.send`` in the one server
process whose ``--config-json`` names the evil party (its forked session processes inherit
the patch), and only while a switch file exists, so that the same federation can then run a
normal query.
"""

from __future__ import annotations

import os
import textwrap

import pytest

import engine
from dialect.errors import ProtocolError
from tests.conftest import OPEN_POLICY, make_tables
from tests.test_federation import run

pytestmark = pytest.mark.e2e

SITECUSTOMIZE = textwrap.dedent('''
    import json
    import os
    import sys

    def _party():
        argv = getattr(sys, "argv", [])
        if "--config-json" in argv:
            return json.loads(argv[argv.index("--config-json") + 1]).get("name")

    _EVIL = os.environ.get("MPCSQL_TEST_EVIL_PARTY")
    if _EVIL and _party() == _EVIL:
        import pickle

        from engine.protocols import runtime as _rt

        class _Payload:
            def __reduce__(self):
                return (os.system, ("touch " + os.environ["MPCSQL_TEST_EVIL_MARKER"],))

        _CRAFTED = pickle.dumps(_Payload())
        _SWITCH = os.environ["MPCSQL_TEST_EVIL_SWITCH"]
        _AFTER = int(os.environ.get("MPCSQL_TEST_EVIL_AFTER", "0"))
        _ex = _rt.mpyc.asyncoro.MessageExchanger
        _send = _ex.send
        _sent = [0]

        def send(self, pc, payload):
            _sent[0] += 1  # per session process (forked per query)
            evil = os.path.exists(_SWITCH) and _sent[0] > _AFTER
            _send(self, pc, _CRAFTED if evil else payload)

        _ex.send = send
''')


# (evil party, join protocol, honest messages it sends first, what the refusal says): which
# receive path meets the first crafted pickle (message counts of a 30 x 30 join with 20
# matches, COUNT and SUM).  A crafted payload that reaches a scalar share's ``from_bytes`` is
# refused as a wrong length (not a whole number of field elements, or decoding to a share of
# another shape than the receiver's own) before MPyC recombines it; which of the two meets
# the 7th and the 8th message depends on the order in which the helper's output coroutines
# send (seen both ways), so either refusal is accepted there.
NOT_ALLOWED = "global posix.system is not allowed"
WRONG_LENGTH = ("a share of shape (7,) where", "a share of shape (5,) where",
                "is not a whole number of")
CASES = {
    "agreement-transfer-emc": ("emc", "paillier", 0, NOT_ALLOWED),
    "agreement-transfer-helper": ("helper", "masked", 0, NOT_ALLOWED),
    "mpyc-numpy-input-shares": ("emc", "paillier", 3, NOT_ALLOWED),
    "session-send-masked-rows": ("helper", "paillier", 4, NOT_ALLOWED),
    "session-send-after-rows": ("helper", "paillier", 5, NOT_ALLOWED),
    "output-share-of-another-shape": ("helper", "paillier", 6, WRONG_LENGTH),
    "output-share-not-whole-elements": ("helper", "paillier", 7, WRONG_LENGTH),
    "session-send-masked-values": ("emc", "masked", 4, NOT_ALLOWED),
}


@pytest.mark.parametrize("evil,protocol,after,reason", list(CASES.values()), ids=list(CASES))
def test_crafted_pickles_run_no_code_and_servers_keep_serving(tmp_path, monkeypatch, evil,
                                                              protocol, after, reason):
    """Every message from the ``after``-th on is a crafted pickle: refused, nothing runs."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker, switch = tmp_path / "pwned", tmp_path / "evil-on"
    switch.touch()
    monkeypatch.setenv("PYTHONPATH", str(hook) + (
        os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
    monkeypatch.setenv("MPCSQL_TEST_EVIL_PARTY", evil)
    monkeypatch.setenv("MPCSQL_TEST_EVIL_MARKER", str(marker))
    monkeypatch.setenv("MPCSQL_TEST_EVIL_SWITCH", str(switch))
    monkeypatch.setenv("MPCSQL_TEST_EVIL_AFTER", str(after))
    ac, emc = make_tables(30, 30, 20, seed=5)
    sql = (f"SET join_protocol = '{protocol}'; "
           "SELECT COUNT(*), SUM(emc.bmi) FROM ac INNER JOIN emc USING (id)")
    con = engine.connect(policies=OPEN_POLICY)
    try:
        with pytest.raises(ProtocolError) as info:
            run(con, sql, ac, emc)
        err = info.value
        assert err.party == evil, str(err)
        assert f"refused a message from party {evil}" in str(err)
        reasons = (reason,) if isinstance(reason, str) else reason
        assert any(r in str(err) for r in reasons), str(err)
        assert not marker.exists()
        switch.unlink()  # the same servers, now well-behaved
        assert run(con, sql, ac, emc).fetchall()[0][0] == 20
        assert not marker.exists()
    finally:
        con.close()
