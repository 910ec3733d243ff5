"""MPC execution of a physical :class:`planner.physical.Program` on the secret-shared rows.

:func:`run_program` runs the stages in order, vectorised, never branching on a secret:

1. ROWS (:mod:`engine.protocols.slots`): the row ops on the m shared rows, exact integers.
2. SLOTS: every slot for every group; sums exactly (local column sums and dot products of the
   shares, one resharing for all), converted into the finish field (one masked opening).
3. The WHERE check (``Program.filtered_count``): one bit, [rows left < largest
   min_intersection], opened to every party as ``filter_too_small``; if set, every party
   raises the min_intersection refusal.
4. FINISH (:mod:`engine.protocols.finish`): the finish ops over the G groups.
5. Reveal, to the receivers only: the presence bits (``group_present``, when the program has
   them), then ``result``: every output's value and NULL bit for all G groups at once, with
   value and NULL bit forced to 0 where the group is absent and the value forced to 0 where it
   is NULL, so the receivers learn exactly the present groups' outputs and every party takes
   part in the same opening without knowing which groups are present.  An output that is an
   integral sum slot is opened as the exact integer.

What each party learns: nothing but the plan's disclosures (``filter_too_small`` to all;
``group_present`` and ``result`` to the receivers); all other openings are masked (products,
truncations, comparisons, the field conversion; statistically hiding).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dialect.errors import InternalError, NotSupportedError
from engine.protocols import finish as fin
from engine.protocols import slots as sl
from engine.protocols.channel import Channel
from planner.policy import too_small

INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                           "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"})


def finish_types(rt):
    """(SecFxp(96, 48), SecInt over its field) of the finish stage."""
    t2 = rt.SecFxp(96, 48)
    s2 = rt.SecInt(t2.field.order.bit_length() - rt.options.sec_param - 2, p=t2.field.order)
    return t2, s2


async def run_program(chan: Channel, plan, program, m: int, table, sf, *,
                      min_group_rows: int) -> list[tuple] | None:
    """Run ``program`` on ``table`` (m shared rows) and open its result to the receivers.

    Returns the present groups' rows (key values, then output values, in output order; None
    for NULL) in group order at the receivers, None elsewhere.
    """
    rt = chan.mpc
    receivers = [chan.pids[r] for r in plan.root.receivers]
    ctx = sl.Ctx(rt, sf.field, m)
    L = sl.log2_rows(m)
    G = len(program.groups)
    vecs: dict[str, sl.Vec] = {}
    if m > 0 and program.local:
        vecs = sl.base_vecs(plan, program, table)
    if m > 0:
        await sl.run_rows(ctx, program, vecs)
    chan.phase("rows")

    t2, s2 = finish_types(rt)
    fc = fin.FCtx(rt, t2.field, G)
    vals, exact_ints, count = await _slots(chan, ctx, fc, program, vecs, L, sf, s2)
    chan.phase("slots")
    if program.filtered_count is not None:
        await _check_filter(chan, fc, s2, count, L)

    consts = {"min_group_rows": float(min_group_rows)}
    await fin.run_finish(fc, program, vals, L, consts)
    chan.phase("finish")
    rows = await _reveal(chan, fc, s2, program, vals, exact_ints, receivers)
    chan.phase("reveal")
    return rows


async def _slots(chan, ctx: sl.Ctx, fc: fin.FCtx, program, vecs, L: int, sf, s2):
    """Every slot of every group as an FV (finish field); the exact integers of integral sum
    slots; the exact filtered row count (shares in the finish field) or None."""
    rt = ctx.rt
    G = fc.G
    whole = {program.filtered_count} if program.filtered_count else set()
    sum_slots = [s for s in program.slots if s.kind == "sum"]
    if ctx.m > 0:
        sums = await sl.slot_sums(ctx, program, vecs, whole=whole)
    else:
        zero = sl.Sum(0, 0, 1, True)
        sums = {(s.name, j): zero for s in sum_slots for j in range(G)}
        sums.update({(n, -1): zero for n in whole})
    keys = [(s.name, j) for s in sum_slots for j in range(G)] + [(n, -1) for n in whole]
    conv = await sl.convert_sums(rt, [sums[k] for k in keys], ctx.field, s2)
    p2 = fc.p
    parts, ints = [], {}
    for i, s in enumerate(sum_slots):
        share = np.array(conv[i * G:(i + 1) * G], dtype=object)
        g = sums[(s.name, 0)].g
        if any(sums[(s.name, j)].g != g for j in range(G)):
            raise InternalError(f"slot {s.name}: groups at different scales")
        exact = all(sums[(s.name, j)].exact for j in range(G))
        e = max(sums[(s.name, j)].e for j in range(G))
        parts.append(dict(share=share, g=g, eff=fin.eff_bits(s.bits, s.rows_pow, L),
                          exact=exact, integral=s.integral, nonneg=_nonneg(s, vecs), e=e))
        if s.integral and exact:
            ints[s.name] = share * fin.pow2(fc, -g) % p2
    fvs = await fin.slot_values(fc, parts)
    vals = {s.name: v for s, v in zip(sum_slots, fvs, strict=True)}
    count = None
    if program.filtered_count is not None:
        s = sums[(program.filtered_count, -1)]
        count = conv[-1] * fin.pow2(fc, -s.g) % p2
    order = [s for s in program.slots if s.kind != "sum"]
    if order and ctx.m == 0:  # no rows: every group is empty (the program's NULL guard)
        vals.update({s.name: fin.FV(np.zeros(G, dtype=object), fin.FRAC,
                                    fin.eff_bits(s.bits, s.rows_pow, L)) for s in order})
    elif order:
        vals.update(await _order_statistics(chan, ctx, fc, program, order, vecs, L))
    return vals, ints, count


def _nonneg(slot, vecs) -> bool:
    """Whether a sum slot is known >= 0: 0/1 factors and values that appear in pairs."""
    names = [n for n in slot.factors if not (n in vecs and vecs[n].bit)]
    return all(names.count(n) % 2 == 0 for n in names)


async def _order_statistics(chan, ctx, fc, program, slots, vecs, L) -> dict[str, fin.FV]:
    """MIN / MAX / QUANTILE slots by :func:`engine.protocols.order_stats.order_statistic` (the
    value vector normalised by its own bound, the group's 0/1 weights; exact results)."""
    try:
        from engine.protocols.order_stats import order_statistic
    except ModuleNotFoundError as e:
        if e.name != "engine.protocols.order_stats":
            raise
        raise NotSupportedError("MIN, MAX and QUANTILE are not supported yet") from e
    rt = ctx.rt
    sf = rt.SecFxp(64, 32)
    t2 = rt.SecFxp(96, 48)
    out = {}
    for s in slots:
        v = vecs[s.value] if isinstance(s.value, str) else sl.public_vec(s.value)
        values = await _as_fxp(ctx, v, v.bits)
        rows = [await _weight(ctx, [vecs[n] for n in (*s.factors, *grp.indicators)])
                for grp in program.groups]
        weights = sf.array(sf.field.array(np.stack(rows)), integral=False)
        res, _empty = await order_statistic(
            chan, s.kind, sf.array(sf.field.array(values), integral=False), weights, v.bits,
            s.q)
        conv = await rt.gather(rt.convert([res[i] for i in range(fc.G)], t2))
        fv = fin.FV(np.array([int(c.value) for c in conv], dtype=object), fin.FRAC, v.bits)
        out[s.name] = await fin.rescale(fc, fv, fin.eff_bits(s.bits, s.rows_pow, L))
    return out


async def _as_fxp(ctx, v: sl.Vec, bits: int) -> np.ndarray:
    """Shares of ``v`` as SecFxp(64, 32) raws of value / 2^bits."""
    k = sl.COL_FRAC - v.g - bits
    if v.is_public:
        return np.full(ctx.m, round(v.public * 2.0 ** (sl.COL_FRAC - bits)) % ctx.p,
                       dtype=object)
    r = sl.ints_of(ctx, v)
    if k >= 0:
        return r * (1 << k) % ctx.p
    return await sl.truncate(ctx, r, -k, v.e + 1, False)


async def _weight(ctx, ws: list[sl.Vec]) -> np.ndarray:
    """The 0/1 product of ``ws`` as SecFxp(64, 32) raws."""
    if not ws:
        return np.full(ctx.m, 1 << sl.COL_FRAC, dtype=object)
    if not all(w.bit for w in ws):
        raise InternalError("an order statistic's weights must be 0/1")
    w = ws[0]
    for x in ws[1:]:
        w = await sl.multiply(ctx, w, x)
    w = sl.canonical_bit(ctx, w)
    return await _as_fxp(ctx, w, 0)


async def _check_filter(chan: Channel, fc: fin.FCtx, s2, count, L: int) -> None:
    """Open [rows the WHERE leaves < the largest min_intersection] to every party; refuse."""
    rt = fc.rt
    lim = int(chan.min_rows)
    l = max(L, max(lim, 1).bit_length()) + 2  # noqa: E741
    st = rt.SecInt(l, p=fc.p)
    d = np.array([(count - lim) % fc.p], dtype=object)
    bit = rt.np_sgn(st.array(fc.field.array(d)), l=l, LT=True)
    opened = await chan.reveal("filter_too_small", s2.array(fc.field.array(
        np.asarray((await rt.gather(bit)).value, dtype=object))), None, raw=True)
    if int(np.asarray(opened.value).reshape(-1)[0]):
        raise too_small(chan.min_rows_by, chan.min_rows, what="the rows the WHERE leaves")


def _raw(fc: fin.FCtx, v: fin.FV) -> np.ndarray:
    return fin.raw_of(fc, v, v.f if not v.is_public else fin.FRAC)


def _decode_scale(v: fin.FV) -> tuple[int, int]:
    return (v.f if not v.is_public else fin.FRAC), v.E


async def _reveal(chan: Channel, fc: fin.FCtx, s2, program, vals, ints, receivers
                  ) -> list[tuple] | None:
    p = fc.p
    G = fc.G
    present = None
    if program.present is not None:
        pv = vals[program.present]
        if pv.is_public:
            present = (pv.pub != 0).astype(int)
            if chan.pid in receivers:
                chan.opened("group_present")
            pres_sh = np.array([int(b) for b in present], dtype=object)
        else:
            pres_sh = pv.sh
            opened = await chan.reveal("group_present", s2.array(fc.field.array(pv.sh)),
                                       receivers, raw=True)
            if opened is not None:
                present = np.array([int(b) for b in np.asarray(opened.value).reshape(-1)])
    outs = [o for o in program.outputs if o.value is not None]
    spec = []  # (output, exact, f, E)
    vraw, nraw = [], []
    for o in outs:
        if o.value in ints and _is_slot(program, o.value):
            vraw.append(ints[o.value])
            spec.append((o, True, 0, 0))
        else:
            v = vals.get(o.value)
            if v is None:
                raise InternalError(f"output {o.name} refers to {o.value!r}, not a finish value")
            vraw.append(np.asarray(_raw(fc, v), dtype=object) % p)
            spec.append((o, False, *_decode_scale(v)))
        if o.null is not None:
            nv = vals[o.null]
            nraw.append(np.asarray(fin.raw_of(fc, nv, 0) if nv.is_public else nv.sh,
                                   dtype=object) % p)
        else:
            nraw.append(np.zeros(G, dtype=object))
    opened = None
    if outs:
        masked_v, masked_n = await _mask(fc, vraw, nraw,
                                         None if program.present is None else pres_sh)
        flat = np.concatenate(masked_v + masked_n) % p
        opened = await chan.reveal("result", s2.array(fc.field.array(flat)), receivers,
                                   raw=True)
    elif chan.pid in receivers:
        chan.opened("result")
    if chan.pid not in receivers:
        return None
    vals_open = (np.asarray(opened.value, dtype=object).reshape(2 * len(outs), G)
                 if outs else np.zeros((0, G), dtype=object))
    return _rows(program, spec, vals_open, present, p)


def _is_slot(program, name: str) -> bool:
    return any(s.name == name for s in program.slots)


async def _mask(fc: fin.FCtx, vraw, nraw, pres) -> tuple[list, list]:
    """Values times present (1 - null) and NULL bits times present: two resharings."""
    p = fc.p
    n = len(vraw)
    if pres is not None:
        flat = await fin.reshare(fc, np.concatenate([nb * pres for nb in nraw]))
        nulls = [flat[i * fc.G:(i + 1) * fc.G] for i in range(n)]
        keep = [(pres - nb) % p for nb in nulls]
    else:
        nulls = nraw
        keep = [(1 - nb) % p for nb in nraw]
    flat = await fin.reshare(fc, np.concatenate([v * k for v, k in zip(vraw, keep,
                                                                       strict=True)]))
    return [flat[i * fc.G:(i + 1) * fc.G] for i in range(n)], nulls


def _signed(v: int, p: int) -> int:
    v = int(v)
    return v - p if v > p // 2 else v


def _rows(program, spec, opened: np.ndarray, present, p: int) -> list[tuple]:
    n = len(spec)
    rows = []
    for j, grp in enumerate(program.groups):
        if present is not None and not present[j]:
            continue
        got = iter([_value(o, exact, f, E, opened[i, j], opened[n + i, j], p)
                    for i, (o, exact, f, E) in enumerate(spec)])
        rows.append(tuple(grp.key[o.key] if o.value is None else next(got)
                          for o in program.outputs))
    return rows


def _value(o, exact: bool, f: int, E: int, raw, null, p: int):
    """One opened output value: None if NULL, else decoded, transformed and typed."""
    if _signed(null, p):
        return None
    r = _signed(raw, p)
    v: Any = r if exact else r * 2.0 ** (E - f)
    return _typed(_transform(v, o.transform), o.dtype)


def _transform(v, transform: str):
    if transform == "identity":
        return v
    if transform == "sqrt":
        return math.sqrt(max(float(v), 0.0))
    if transform == "signed_sqrt":
        return math.copysign(math.sqrt(abs(float(v))), float(v))
    if transform == "integer":
        return int(round(v))
    raise InternalError(f"unknown transform {transform!r}")


def _typed(v, dtype: str):
    base = dtype.split("(")[0].strip().upper()
    if base in INTEGER_TYPES:
        return v if isinstance(v, int) else int(round(v))
    if base == "BOOLEAN":
        return bool(round(float(v)))
    return float(v)
