"""MPC execution of physical programs (engine/protocols/program.py) in MPyC's one-party runtime.

Programs are built by hand (as planner.lower would), the shared table holds the owners'
normalised SecFxp encodings, and the opened rows are compared with numpy on the same encoded
values: exact for counts and integral sums, within the documented fixed-point bounds otherwise
(|error| <= 2^-40 of each output's bound; the measured figures are far smaller, see
test_precision_at_scale, run with -s to print them).
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace as NS

import numpy as np
import pytest

from dialect.errors import PolicyError
from engine.protocols import runtime as mpcrt
from engine.protocols.program import run_program
from engine.protocols.shares import SharedTable
from planner.physical import FinishOp as FO
from planner.physical import Group, Output, Program, RowOp, Slot
from planner.physical import LocalColumn as LC

mpc = mpcrt.mpc
TOL = 2.0**-40  # relative to each output's bound
#: CORR through sign(cov) cov^2 / (var_x var_y): cov^2 keeps 48 bits of its bound 2^(2 (bx+by+1))
CORR_TOL = 2.0**-24


class Chan:
    """A one-party Channel: records phases and disclosure labels."""

    party = "ac"
    pid = 0
    pids = {"ac": 0}
    recording = False

    def __init__(self, min_rows: int = 0):
        self.mpc = mpcrt.mpc
        self.min_rows, self.min_rows_by = min_rows, "emc" if min_rows else None
        self.labels: list[str] = []
        self.phases: list[str] = []

    def phase(self, name: str) -> None:
        self.phases.append(name)

    def opened(self, label: str, value=None) -> None:
        self.labels.append(label)

    async def reveal(self, label, x, receivers, **kw):
        out = await self.mpc.output(x, receivers=receivers, **kw)
        self.labels.append(label)
        return out


def encode(values, bits: int) -> np.ndarray:
    """What the owner shares: round(v 2^(32 - bits)) (exact on the fixed-point grid)."""
    return np.rint(np.ldexp(np.asarray(values, dtype=float), 32 - bits)).astype(np.int64)


def grid(values, bits: int) -> np.ndarray:
    """The values the engine sees (the owners' encodings decoded)."""
    return np.ldexp(encode(values, bits).astype(float), bits - 32)


def make_table(cols: list[LC], data: dict[str, np.ndarray]) -> SharedTable:
    sf = mpcrt.secfxp()
    p = sf.field.order
    ints = np.column_stack([encode(data[c.name], c.bits).astype(object) % p for c in cols])
    return SharedTable.from_field_values(sf, ints)


def make_plan(cols: list[LC]):
    parties = list(dict.fromkeys(c.party for c in cols)) or ["ac"]
    scans = [NS(party=p, columns=tuple(c.name for c in cols if c.party == p)) for p in parties]
    return NS(scans=scans, root=NS(receivers=("ac",)))


def run(prog: Program, data: dict[str, np.ndarray], m: int, *, chan: Chan | None = None,
        min_group_rows: int = 0):
    cols = list(prog.local)
    # the shared table's columns follow the scans (left party first), as the joins produce
    plan = make_plan(cols)
    order = [c for s in plan.scans for n in s.columns for c in cols if c.name == n]
    table = make_table(order, data) if m and order else None
    chan = chan or Chan()
    rows = mpc.run(run_program(chan, plan, prog, m, table, mpcrt.secfxp(),
                               min_group_rows=min_group_rows))
    return rows, chan


def ind(party: str, name: str) -> LC:
    return LC(party, name, f'"{name}"', 0, name, indicator=True)


def val(party: str, name: str, bits: int) -> LC:
    return LC(party, name, f'"{name}"', bits, name)


def moments(x: str, y: str, bx: int, by: int) -> tuple[list[Slot], list[FO]]:
    """Slots and finish ops of COUNT, SUM(x), AVG(x), VAR_SAMP(x), CORR(x, y) (means first)."""
    slots = [Slot("n", "sum", (), 0, integral=True, rows_pow=1),
             Slot("sx", "sum", (x,), bx, rows_pow=1),
             Slot("sxx", "sum", (x, x), 2 * bx, rows_pow=1),
             Slot("sy", "sum", (y,), by, rows_pow=1),
             Slot("syy", "sum", (y, y), 2 * by, rows_pow=1),
             Slot("sxy", "sum", (x, y), bx + by, rows_pow=1)]
    f = [FO("N", "slot", ("n",), 0, rows_pow=1)]
    f += [FO(s.name.upper(), "slot", (s.name,), s.bits, rows_pow=1) for s in slots[1:]]
    f += [FO("ax", "div", ("SX", "N"), bx, floor_bits=0),
          FO("ay", "div", ("SY", "N"), by, floor_bits=0),
          FO("ex2", "div", ("SXX", "N"), 2 * bx, floor_bits=0),
          FO("ey2", "div", ("SYY", "N"), 2 * by, floor_bits=0),
          FO("exy", "div", ("SXY", "N"), bx + by, floor_bits=0),
          FO("ax2", "mul", ("ax", "ax"), 2 * bx), FO("ay2", "mul", ("ay", "ay"), 2 * by),
          FO("axy", "mul", ("ax", "ay"), bx + by),
          FO("vx", "sub", ("ex2", "ax2"), 2 * bx), FO("vy", "sub", ("ey2", "ay2"), 2 * by),
          FO("cov", "sub", ("exy", "axy"), bx + by + 1),
          FO("one", "const", (1.0,), 0), FO("two", "const", (2.0,), 1),
          FO("nm1", "sub", ("N", "one"), 0, rows_pow=1),
          FO("ratio", "div", ("N", "nm1"), 1, floor_bits=0),
          FO("vs", "mul", ("vx", "ratio"), 2 * bx + 1),
          FO("acov", "abs", ("cov",), bx + by + 1),
          FO("num", "mul", ("cov", "acov"), 2 * (bx + by + 1)),
          FO("den", "mul", ("vx", "vy"), 2 * (bx + by)),
          FO("r2", "div", ("num", "den"), 2, floor_bits=2 * (bx + by) - 30),
          FO("n0", "is_zero", ("N",), 0), FO("small", "lt", ("N", "two"), 0)]
    return slots, f


def moment_outputs(key: bool = True) -> tuple[Output, ...]:
    out = (Output("count", "BIGINT", value="n"),
           Output("sum", "DOUBLE", value="sx", null="n0"),
           Output("avg", "DOUBLE", value="ax", null="n0"),
           Output("var", "DOUBLE", value="vs", null="small"),
           Output("corr", "DOUBLE", value="r2", null="small", transform="signed_sqrt"))
    return ((Output("g", "BIGINT", key=0),) if key else ()) + out


def grouped_program(G: int, *, present: bool = True, where: bool = False) -> Program:
    cols = [ind("ac", f"i{j}") for j in range(G)] + [val("ac", "x", 16), val("emc", "y", 6)]
    if where:
        cols.append(ind("emc", "w"))
    slots, fin = moments("x", "y", 16, 6)
    if where:
        slots = [Slot(s.name, s.kind, s.factors + ("w",), s.bits, integral=s.integral,
                      rows_pow=s.rows_pow) for s in slots]
    pres = []
    if present:
        pres = [FO("mgr", "const", ("min_group_rows",), 0, rows_pow=1),
                FO("one_row", "const", (1.0,), 0, rows_pow=1),
                FO("big", "le", ("mgr", "N"), 0), FO("any", "le", ("one_row", "N"), 0),
                FO("pres", "and", ("big", "any"), 0)]
    groups = tuple(Group((j,), (f"i{j}",)) for j in range(G))
    return Program(tuple(cols), (), tuple(slots), groups, tuple(fin + pres),
                   moment_outputs(), "pres" if present else None,
                   filtered_count="n" if where else None)


def insurance_like(m: int, G: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, m)
    x = np.round(np.clip(rng.lognormal(9, 1, m), 0, 65000), 2)  # charges < 2^16
    y = np.round(np.clip(rng.normal(30, 6, m) + x / 20000, 0, 63), 3)  # bmi < 2^6
    data = {f"i{j}": (g == j).astype(float) for j in range(G)}
    data.update(x=x, y=y, g=g.astype(float))
    return data


def reference(xs: np.ndarray, ys: np.ndarray) -> tuple:
    n = len(xs)
    if n == 0:
        return (0, None, None, None, None)
    var = xs.var(ddof=1) if n > 1 else None
    corr = np.corrcoef(xs, ys)[0, 1] if n > 1 else None
    return (n, xs.sum(), xs.mean(), var, corr)


BOUNDS = (None, 2.0**16, 2.0**16, 2.0**33, 1.0)  # count exact; sum checked relative to m 2^16


def check_row(got: tuple, ref: tuple, m: int) -> None:
    assert got[0] == ref[0] and isinstance(got[0], int)
    for i, (a, b) in enumerate(zip(got[1:], ref[1:], strict=True), start=1):
        if b is None:
            assert a is None, (i, a)
            continue
        bound = BOUNDS[i] * (m if i == 1 else 1)
        assert abs(a - b) <= (CORR_TOL if i == 4 else TOL) * bound, (i, a, b)


def test_grouped_moments_with_presence():
    G, m = 6, 3000
    data = insurance_like(m, G)
    data["i5"][:] = 0  # group 5 is empty
    keep = np.flatnonzero(data["i4"])[:3]  # group 4 has 3 rows: below min_group_rows
    data["i4"][:] = 0
    data["i4"][keep] = 1
    data["i0"][keep] = 0
    rows, chan = run(grouped_program(G), data, m, min_group_rows=5)
    assert chan.labels == ["group_present", "result"]
    assert chan.phases == ["rows", "slots", "finish", "reveal"]
    assert [r[0] for r in rows] == [0, 1, 2, 3]
    x, y = grid(data["x"], 16), grid(data["y"], 6)
    for r in rows:
        s = data[f"i{r[0]}"] == 1
        check_row(r[1:], reference(x[s], y[s]), m)


def test_no_presence_outputs_every_group_with_nulls():
    """Without a presence bit every group is output: an empty group's SUM/AVG are NULL and its
    COUNT 0 (division by zero is guarded), a one-row group's VAR_SAMP and CORR are NULL."""
    G, m = 3, 200
    data = insurance_like(m, G, seed=1)
    data["i0"][:] = 0
    one = np.flatnonzero(data["i1"])[1:]
    data["i1"][one] = 0
    data["i2"][one] = 1
    rows, chan = run(grouped_program(G, present=False), data, m)
    assert chan.labels == ["result"]
    assert rows[0] == (0, 0, None, None, None, None)
    assert rows[1][1] == 1 and rows[1][4:] == (None, None)
    assert rows[1][3] == pytest.approx(grid(data["x"], 16)[data["i1"] == 1][0], abs=1e-9)
    x, y = grid(data["x"], 16), grid(data["y"], 6)
    s = data["i2"] == 1
    check_row(rows[2][1:], reference(x[s], y[s]), m)


@pytest.mark.parametrize("min_rows, refused", [(0, False), (150, False), (151, True)])
def test_where_weights_and_the_filter_check(min_rows, refused):
    G, m = 4, 400
    data = insurance_like(m, G, seed=2)
    w = np.zeros(m)
    w[::2] = 1  # the WHERE leaves 200 rows
    w[:100] = 0  # ... 150
    data["w"] = w
    chan = Chan(min_rows)
    prog = grouped_program(G, present=False, where=True)
    if refused:
        with pytest.raises(PolicyError, match="the rows the WHERE leaves"):
            run(prog, data, m, chan=chan)
        assert chan.labels == ["filter_too_small"]
        return
    rows, chan = run(prog, data, m, chan=chan)
    assert chan.labels == ["filter_too_small", "result"]
    x, y = grid(data["x"], 16), grid(data["y"], 6)
    assert sum(r[1] for r in rows) == 150
    for r in rows:
        s = (data[f"i{r[0]}"] == 1) & (w == 1)
        check_row(r[1:], reference(x[s], y[s]), m)


def row_program(m: int, seed: int = 3):
    """A row program in MPC (cross-party comparison as the WHERE weight, CASE WHEN, ABS,
    arithmetic with constants), its data, and the expected sums."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-50, 50, m).astype(float)
    b = rng.integers(-50, 50, m).astype(float)
    b[:20] = a[:20]  # ties
    c = np.round(rng.normal(0, 10, m), 2)
    cols = [val("ac", "a", 6), val("ac", "c", 6), val("emc", "b", 6)]
    rows_ = (RowOp("gt", "lt", ("b", "a"), 0), RowOp("le", "le", ("a", "b"), 0),
             RowOp("eq", "eq", ("a", "b"), 0), RowOp("ne", "ne", ("a", "b"), 0),
             RowOp("d", "sub", ("a", "b"), 7), RowOp("ad", "abs", ("d",), 7),
             RowOp("k", "const", (2.5,), 2), RowOp("ck", "mul", ("c", "k"), 9),
             RowOp("case", "select", ("gt", "ck", "b"), 9), RowOp("neg", "neg", ("case",), 9),
             RowOp("both", "and", ("gt", "ne"), 0), RowOp("eith", "or", ("eq", "gt"), 0),
             RowOp("nt", "not", ("gt",), 0), RowOp("ab", "mul", ("a", "b"), 12),
             RowOp("abc", "add", ("ab", "c"), 13))
    names = ["gt", "le", "eq", "ne", "ad", "neg", "both", "eith", "nt", "abc"]
    bits = {"gt": 0, "le": 0, "eq": 0, "ne": 0, "ad": 7, "neg": 9, "both": 0, "eith": 0,
            "nt": 0, "abc": 13}
    slots = [Slot(f"s_{n}", "sum", (n,), bits[n] + 9, rows_pow=0,
                  integral=n not in ("neg", "abc")) for n in names]
    slots.append(Slot("s_gtc", "sum", ("gt", "c"), 6 + 9))  # WHERE b < a: SUM(c)
    fin = [FO(f"o_{s.name}", "slot", (s.name,), s.bits) for s in slots]
    outs = tuple(Output(s.name, "DOUBLE", value=s.name) for s in slots)
    prog = Program(tuple(cols), rows_, tuple(slots), (Group((), ()),), tuple(fin), outs, None)
    cg = grid(c, 6)
    gt = b < a
    case = np.where(gt, cg * 2.5, b)
    want = [gt.sum(), (a <= b).sum(), (a == b).sum(), (a != b).sum(), np.abs(a - b).sum(),
            -case.sum(), (gt & (a != b)).sum(), ((a == b) | gt).sum(), (~gt).sum(),
            (a * b + cg).sum(), cg[gt].sum()]
    return prog, {"a": a, "b": b, "c": c}, want


def check_row_program(row: tuple, want: list) -> None:
    assert row[:4] == tuple(float(v) for v in want[:4])  # exact (integral slots)
    assert np.allclose(row, want, rtol=0, atol=1e-6)


def test_row_program_cross_party():
    """Row ops in MPC; sums of the results are exact (comparisons exact at ties)."""
    prog, data, want = row_program(300)
    (row,), _ = run(prog, data, 300)
    check_row_program(row, want)


def test_exact_integral_sums():
    """Integral slots are opened as exact integers: SUM of 31-bit integers, and SUM(a * b) of
    30-bit integers (2^60 per row) as a dot product and through a row op."""
    m = 4000
    rng = np.random.default_rng(4)
    x = rng.integers(-(2**31) + 1, 2**31, m)
    a = rng.integers(2**29, 2**30, m)
    b = rng.integers(2**29, 2**30, m)
    cols = [val("ac", "x", 31), val("ac", "a", 30), val("emc", "b", 30)]
    rows_ = (RowOp("ab", "mul", ("a", "b"), 60),)
    slots = (Slot("sx", "sum", ("x",), 31, integral=True, rows_pow=1),
             Slot("sab", "sum", ("a", "b"), 60, integral=True, rows_pow=1),
             Slot("srow", "sum", ("ab",), 60, integral=True, rows_pow=1))
    fin = tuple(FO(f"f{i}", "slot", (s.name,), s.bits, rows_pow=1) for i, s in enumerate(slots))
    outs = tuple(Output(s.name, "HUGEINT", value=s.name) for s in slots)
    prog = Program(tuple(cols), rows_, slots, (Group((), ()),), fin, outs, None)
    data = {"x": x.astype(float), "a": a.astype(float), "b": b.astype(float)}
    (row,), _ = run(prog, data, m)
    exact_ab = sum(int(u) * int(v) for u, v in zip(a, b, strict=True))
    assert row == (int(x.sum()), exact_ab, exact_ab)
    assert all(type(v) is int for v in row) and exact_ab > 2**60


def test_global_aggregates_and_empty_input():
    """No GROUP BY: one group without indicators (COUNT(*) is the public m); m = 0 with no
    table: COUNT 0, SUM and AVG NULL."""
    cols = [val("ac", "x", 16)]
    slots = (Slot("n", "sum", (), 0, integral=True, rows_pow=1),
             Slot("sx", "sum", ("x",), 16, rows_pow=1))
    fin = (FO("N", "slot", ("n",), 0, rows_pow=1), FO("SX", "slot", ("sx",), 16, rows_pow=1),
           FO("ax", "div", ("SX", "N"), 16, floor_bits=0), FO("n0", "is_zero", ("N",), 0))
    outs = (Output("count", "BIGINT", value="n"), Output("sum", "DOUBLE", value="sx", null="n0"),
            Output("avg", "DOUBLE", value="ax", null="n0"))
    prog = Program(tuple(cols), (), slots, (Group((), ()),), fin, outs, None)
    x = np.round(np.random.default_rng(5).uniform(-60000, 60000, 500), 2)
    (row,), _ = run(prog, {"x": x}, 500)
    xg = grid(x, 16)
    assert row[0] == 500
    assert abs(row[1] - xg.sum()) <= TOL * 500 * 2**16
    assert abs(row[2] - xg.mean()) <= TOL * 2**16
    (row,), chan = run(prog, {"x": x[:0]}, 0)
    assert row == (0, None, None) and chan.labels == ["result"]


def test_keys_only_and_public_presence():
    """An output of keys only opens the presence bits and nothing else."""
    G, m = 3, 50
    data = insurance_like(m, G, seed=6)
    data["i1"][:] = 0
    prog = grouped_program(G)
    prog = Program(prog.local, (), prog.slots, prog.groups, prog.finish,
                   (Output("g", "BIGINT", key=0),), "pres")
    rows, chan = run(prog, data, m, min_group_rows=1)
    assert rows == [(0,), (2,)] and chan.labels == ["group_present", "result"]


@pytest.mark.parametrize("fb, scale", [(0, 1.0), (-8, 2.0**-8), (4, 16.0)])
def test_division_range_and_sign(fb, scale):
    """div(a, b) for denominators over their whole range, both signs (sums of a signed column):
    error <= 2^-40 of the quotient's bound."""
    m = 64
    rng = np.random.default_rng(7)
    G = 40
    gid = np.arange(m) % G
    # one row per group carries the denominator d (|d| >= 2^fb or 0), one the numerator
    mags = np.exp2(rng.uniform(fb, 11, G)) * rng.choice([-1, 1], G)
    mags[:3] = [0.0, 2.0**fb, -(2.0**11)]
    d = np.zeros(m)
    d[:G] = grid(mags, 11)
    num = np.zeros(m)
    num[:G] = grid(rng.uniform(-1, 1, G) * np.abs(mags) * 8, 15)
    data = {f"i{j}": (gid == j).astype(float) for j in range(G)}
    data.update(d=d, num=num)
    cols = [ind("ac", f"i{j}") for j in range(G)] + [val("ac", "d", 11), val("emc", "num", 15)]
    slots = (Slot("sd", "sum", ("d",), 11), Slot("sn", "sum", ("num",), 15))
    fin = (FO("D", "slot", ("sd",), 11), FO("Nm", "slot", ("sn",), 15),
           FO("q", "div", ("Nm", "D"), 15 - fb, floor_bits=fb), FO("z", "is_zero", ("D",), 0))
    outs = (Output("q", "DOUBLE", value="q", null="z"),)
    groups = tuple(Group((j,), (f"i{j}",)) for j in range(G))
    prog = Program(tuple(cols), (), slots, groups, fin, outs, None)
    rows, _ = run(prog, data, m)
    got = np.array([r[0] if r[0] is not None else np.nan for r in rows])
    want = np.where(d[:G] != 0, num[:G] / np.where(d[:G] != 0, d[:G], 1), np.nan)
    assert np.isnan(got[0]) and np.isnan(want[0])
    err = np.abs(got[1:] - want[1:]) / 2.0 ** (15 - fb)
    assert err.max() <= TOL, err.max()
    assert scale  # the floors span 2^-8 .. 2^4


def test_order_statistic_slots():
    """MIN / MAX / MEDIAN per group under a WHERE weight (engine.protocols.order_stats): exact
    data values; an empty group is NULL through the count guard."""
    G, m = 3, 120
    rng = np.random.default_rng(9)
    x = np.round(rng.uniform(-1000, 1000, m), 2)
    gid = rng.integers(0, G, m)
    w = (rng.uniform(size=m) < 0.7).astype(float)
    w[gid == 2] = 0  # group 2 is empty after the WHERE
    cols = [ind("ac", f"i{j}") for j in range(G)] + [val("ac", "x", 10), ind("emc", "w")]
    slots = (Slot("n", "sum", ("w",), 0, integral=True, rows_pow=1),
             Slot("lo", "min", ("w",), 10, value="x"), Slot("hi", "max", ("w",), 10, value="x"),
             Slot("med", "quantile", ("w",), 10, value="x", q=0.5))
    fin = (FO("N", "slot", ("n",), 0, rows_pow=1), FO("n0", "is_zero", ("N",), 0))
    outs = (Output("g", "BIGINT", key=0),) + tuple(
        Output(n, "DOUBLE", value=n, null="n0") for n in ("lo", "hi", "med"))
    prog = Program(tuple(cols), (), slots, tuple(Group((j,), (f"i{j}",)) for j in range(G)),
                   fin, outs, None)
    data = {f"i{j}": (gid == j).astype(float) for j in range(G)}
    data.update(x=x, w=w)
    rows, _ = run(prog, data, m)
    xg = grid(x, 10)
    for r in rows[:2]:
        s = (gid == r[0]) & (w == 1)
        assert r[1:3] == (xg[s].min(), xg[s].max())
        assert abs(r[3] - np.median(xg[s])) <= 2.0 ** (10 - 32)
    assert rows[2] == (2, None, None, None)


def test_precision_at_scale(capsys):
    """10^5 rows, 10 groups x 5 aggregates (COUNT, SUM, AVG, VAR_SAMP, CORR) of charges-like
    (< 2^16) and bmi-like (< 2^6) columns: errors relative to each output's bound."""
    G, m = 10, 100_000
    data = insurance_like(m, G, seed=8)
    t = time.perf_counter()
    rows, _ = run(grouped_program(G), data, m, min_group_rows=1)
    took = time.perf_counter() - t
    x, y = grid(data["x"], 16), grid(data["y"], 6)
    worst = np.zeros(4)
    for r in rows:
        s = data[f"i{r[0]}"] == 1
        ref = reference(x[s], y[s])
        assert r[1] == ref[0]
        bounds = (m * 2.0**16, 2.0**16, 2.0**33, 1.0)
        errs = [abs(a - b) / bd for a, b, bd in zip(r[2:], ref[1:], bounds, strict=True)]
        worst = np.maximum(worst, errs)
    with capsys.disabled():
        print(f"\n10^5 rows x {G} groups: {took:.2f} s (one process); max error / bound: "
              + ", ".join(f"{n} 2^{math.log2(max(e, 2.0**-80)):.1f}"
                          for n, e in zip(("SUM", "AVG", "VAR_SAMP", "CORR"), worst,
                                          strict=True)))
    assert worst[:3].max() <= TOL and worst[3] <= CORR_TOL


def test_word_products_mod_p():
    """slots.mulmod_words (products of shares on 64-bit words) equals Python's a * b % p."""
    from engine.protocols import fieldwords as fw
    from engine.protocols.slots import fast_field, mulmod_words

    p = mpcrt.secfxp().field.order
    assert fast_field(p) and not fast_field(2**127 - 1)
    rng = np.random.default_rng(10)
    edge = [0, 1, 2, 172, 173, 2**64 - 1, 2**64, 2**127, p - 173, p - 2, p - 1]
    xa = edge + [int.from_bytes(rng.bytes(16), "little") % p for _ in range(3000)]
    xb = edge[::-1] + [int.from_bytes(rng.bytes(16), "little") % p for _ in range(3000)]
    xa += [p - 1] * 5
    xb += [p - 1] * 5
    a = np.array(xa, dtype=object)
    b = np.array(xb, dtype=object)
    got = mulmod_words(fw.ints_to_words(a, p), fw.ints_to_words(b, p), p)
    assert (fw.words_to_ints(got) == a * b % p).all()
    inv = pow(2**32, -1, p)
    got = mulmod_words(fw.ints_to_words(a, p), fw.const(inv, fw.ints_to_words(a, p)), p)
    assert (fw.words_to_ints(got) == a * inv % p).all()
