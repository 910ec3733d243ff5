"""run_program among three real MPyC processes (Shamir t = 1, PRSS): what the one-party tests
cannot reach (resharing, masked truncations over C(3, 1) PRFs, openings to one receiver).

Party 0 secret-shares the encoded table (as the joins would leave it); every party runs the
same program; only the receiver (party 0) gets rows, and they match numpy as in the unit tests.
Also timed at 10^5 rows (GROUP BY 10 groups, 5 aggregates incl. VAR_SAMP and CORR) with
``MPCSQL_PROGRAM_ROWS=100000`` (printed; the issue's goal is <= 15 s end to end).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from tests.mpc_parties import run_three
from tests.test_program_mpc import (
    check_row,
    check_row_program,
    encode,
    grid,
    grouped_program,
    insurance_like,
    make_plan,
    reference,
    row_program,
)

pytestmark = pytest.mark.e2e

NAMES = ("ac", "emc", "helper")


class _Chan:
    def __init__(self, mpc, pid: int, min_rows: int):
        self.mpc, self.pid, self.party = mpc, pid, NAMES[pid]
        self.pids = {n: i for i, n in enumerate(NAMES)}
        self.min_rows, self.min_rows_by = min_rows, "emc"
        self.recording = False
        self.labels: list[str] = []
        self.phases: dict[str, float] = {}
        self._t = time.perf_counter()

    def phase(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self._t
        self._t = now

    def opened(self, label: str, value=None) -> None:
        self.labels.append(label)

    async def reveal(self, label, x, receivers, **kw):
        out = await self.mpc.output(x, receivers=receivers, **kw)
        if receivers is None or self.pid in receivers:
            self.labels.append(label)
        return out


def _case(kind: str, m: int, G: int):
    """(program, data) of a test case: "groups", "where" (a one-party WHERE) or "rows"."""
    if kind == "rows":
        prog, data, _ = row_program(m)
        return prog, data
    prog = grouped_program(G, where=kind == "where")
    data = insurance_like(m, G, seed=11)
    data["w"] = (data["y"] > 25).astype(float)  # the one-party WHERE (emc's indicator)
    return prog, data


def _party(pid: int, ports: list[int], m: int, G: int, kind: str, out: mp.Queue) -> None:
    from engine.protocols import runtime as mpcrt
    from engine.protocols.program import run_program
    from engine.protocols.shares import SharedTable

    mpc = mpcrt.make_runtime(pid, [mpcrt.Address("127.0.0.1", p) for p in ports])
    prog, data = _case(kind, m, G)
    plan = make_plan(list(prog.local))
    order = [c for s in plan.scans for n in s.columns for c in prog.local if c.name == n]

    async def main():
        await mpc.start()
        sf = mpcrt.secfxp()
        p = sf.field.order
        vals = np.column_stack([encode(data[c.name], c.bits).astype(object) % p
                                for c in order]) if pid == 0 else np.zeros((m, len(order)),
                                                                            dtype=object)
        x = sf.array(sf.field.array(vals), integral=False)
        shares = await mpc.gather(mpc.input(x, senders=0))
        table = SharedTable.from_field_values(sf, shares.value)
        chan = _Chan(mpc, pid, min_rows=10)
        t, c = time.perf_counter(), time.process_time()
        rows = await run_program(chan, plan, prog, m, table, sf, min_group_rows=5)
        took = (time.perf_counter() - t, time.process_time() - c)
        await mpc.shutdown()
        return rows, chan.labels, chan.phases, took

    out.put((pid, *mpc.run(main())))


def _run(m: int, G: int, kind: str):
    return sorted(run_three(_party, (m, G, kind), 900), key=lambda g: g[0])


@pytest.mark.parametrize("where", [False, True])
def test_program_three_parties(where):
    m, G = 3000, 5
    got = _run(m, G, "where" if where else "groups")
    (_, rows, labels, _, _), (_, r1, l1, _, _), (_, r2, l2, _, _) = got
    assert r1 is None and r2 is None  # only the receiver gets rows
    head = ["filter_too_small"] if where else []
    assert labels == head + ["group_present", "result"]
    assert l1 == head and l2 == head  # every party learns the filter bit, nothing else
    data = insurance_like(m, G, seed=11)
    w = data["y"] > 25 if where else np.ones(m, dtype=bool)
    x, y = grid(data["x"], 16), grid(data["y"], 6)
    assert [r[0] for r in rows] == list(range(G))
    for r in rows:
        s = (data[f"i{r[0]}"] == 1) & w
        check_row(r[1:], reference(x[s], y[s]), m)


def test_row_program_three_parties():
    """Cross-party comparisons (bit-sharing A2B), CASE, ABS, products among three processes."""
    m = 400
    got = _run(m, 1, "rows")
    (row,) = got[0][1]
    assert got[1][1] is None and got[2][1] is None
    check_row_program(row, row_program(m)[2])


@pytest.mark.skipif(not os.environ.get("MPCSQL_PROGRAM_ROWS"), reason="timing run on request")
@pytest.mark.parametrize("kind", ["groups", "where", "rows"])
def test_program_three_parties_timing(capsys, kind):
    m, G = int(os.environ["MPCSQL_PROGRAM_ROWS"]), 10
    got = _run(m, G, kind)
    rows, phases, (took, _) = got[0][1], got[0][3], got[0][4]
    cpu = "/".join(f"{g[4][1]:.1f}" for g in got)
    assert len(rows) == (1 if kind == "rows" else G)
    what = {"groups": f"GROUP BY {G} groups x 5 aggregates",
            "where": f"one-party WHERE, GROUP BY {G} groups x 5 aggregates",
            "rows": "row program with 4 cross-party comparisons, ABS, CASE, 11 sums"}[kind]
    with capsys.disabled():
        print(f"\n{m} rows, {what}, three processes: run_program {took:.2f} s (CPU s per "
              f"party {cpu}; load {os.getloadavg()[0]:.1f}); phases "
              + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
