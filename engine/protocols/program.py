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
   them), then ``result``: every output's value and NULL / NaN / infinity bits for all G
   groups at once, every bit forced to 0 where the group is absent and the value forced to 0
   where the group is absent, NULL or NaN, so the receivers learn exactly the present groups'
   outputs and every party takes part in the same opening without knowing which groups are
   present.  An output that is a sum slot computed without rounding, or an exact op, is
   opened as its exact integer N (value N 2^u: exact counts and integer sums).

What each party learns: nothing but the plan's disclosures (``filter_too_small`` to all;
``group_present`` and ``result`` to the receivers); all other openings are masked (products,
truncations, comparisons, the field conversion; statistically hiding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from dialect.errors import InternalError, NotSupportedError
from engine.protocols import finish as fin
from engine.protocols import slots as sl
from engine.protocols.channel import Channel
from engine.protocols.shares import ChunkedTable
from planner.lower import check_size
from planner.policy import FILTERED, too_small

#: The name of the const finish op filled with max(1, min_group_rows) (planner.lower).
MIN_GROUP_ROWS = "min_group_rows"

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
    check_size(program, m)  # every party refuses the same way: m is public
    rt = chan.mpc
    receivers = [chan.pids[r] for r in plan.root.receivers]
    ctx = sl.Ctx(rt, sf.field, m)
    L = sl.log2_rows(m)
    G = len(program.groups)
    vecs: dict[str, sl.Vec] = {}
    sums = picks = None
    if isinstance(table, ChunkedTable) and m == 0:
        table = await table.materialize()
    if isinstance(table, ChunkedTable) and linear(program):
        vecs, sums = await _summed_rows(ctx, plan, program, table)
        chan.phase("slots")
    elif isinstance(table, ChunkedTable):
        vecs, sums, picks = await _chunked_rows_and_sums(chan, ctx, plan, program, table)
        chan.phase("slots")
    else:
        if m > 0 and program.local:
            vecs = sl.base_vecs(plan, program, table)
        if m > 0:
            await sl.run_rows(ctx, program, vecs)
        chan.phase("rows")

    t2, s2 = finish_types(rt)
    fc = fin.FCtx(rt, t2.field, G)
    vals, exact, count = await _slots(chan, ctx, fc, program, vecs, L, sf, s2, sums, picks)
    chan.phase("slots")
    if program.filtered_count is not None:
        await _check_filter(chan, fc, s2, count, L)

    launched = fin.run_finish(fc, program, vals, L, _consts(program, m, min_group_rows), exact)
    vals = {k: await fin.resolve(v) for k, v in launched.items()}  # every op (none left running)
    chan.phase("finish")
    if program.model is not None:
        return await _model_rows(chan, fc, s2, program, vals, m, receivers)
    rows = await _reveal(chan, fc, s2, program, vals, exact, receivers)
    chan.phase("reveal")
    return rows


def linear(program) -> bool:
    """Whether every slot is the plain sum of one shared column (or a count): no row ops, no
    WHERE, no group indicators, one factor at most.  Its sums are then linear in the shares,
    so the table's column totals (:meth:`ChunkedTable.totals`) give the same field integers."""
    local = {c.name for c in program.local}
    return (not program.rows and program.filtered_count is None
            and all(not g.indicators for g in program.groups)
            and all(s.kind == "sum" and len(s.factors) <= 1
                    and all(isinstance(f, str) and f in local for f in s.factors)
                    for s in program.slots))


async def _summed_rows(ctx: sl.Ctx, plan, program, table: ChunkedTable):
    """SLOTS of a :func:`linear` program from the table's column totals: a one-row table whose
    sums (bounds for the whole table, as chunk sums have) are the slots' exact field sums."""
    totals = await table.totals()
    one = sl.Ctx(ctx.rt, ctx.field, 1, total=ctx.m, first=True)
    vecs = sl.base_vecs(plan, program, totals) if program.local else {}
    return vecs, await sl.slot_sums(one, program, vecs, whole=_whole(program))


def _whole(program) -> set[str]:
    return {program.filtered_count} if program.filtered_count else set()


async def _chunked_rows_and_sums(chan: Channel, ctx: sl.Ctx, plan, program,
                                 table: ChunkedTable):
    """ROWS and SLOTS chunk by chunk of ``table`` (:class:`ChunkedTable`): the row ops on
    each chunk's rows, its slot sums (bounds for the whole table), added up locally.  The
    parties exchange the same messages per chunk as the unchunked run does for the table;
    the sums are the same field integers.  A MIN or MAX slot takes each chunk's extremum per
    group (and its "empty" bit), and the extremum of those at the end (:func:`_combine`); a
    quantile keeps each chunk's rows as packed bits (``order_stats.convert``) and selects over
    all of them at the end.  Returns the last chunk's vectors (their public structure only is
    used after this), the sums and the order statistics' result shares."""
    sums, vecs = None, {}
    order = [s for s in program.slots if s.kind != "sum"]
    picks: dict[str, list] = {s.name: [] for s in order}
    stats = _order_stats()
    first = True
    async for part in table.chunks():
        c = sl.Ctx(ctx.rt, ctx.field, part.m, total=ctx.m, first=first)
        vecs = sl.base_vecs(plan, program, part) if program.local else {}
        await sl.run_rows(c, program, vecs)
        got = await sl.slot_sums(c, program, vecs, whole=_whole(program))
        sums = got if sums is None else sl.add_sums(ctx, sums, got)
        for s in order:
            values, weights = await _order_inputs(c, program, s, vecs)
            if s.kind == "quantile":
                picks[s.name].append(await stats.convert(chan, values, weights))
            else:
                picks[s.name].append(await stats.order_statistic(
                    chan, s.kind, values, weights, _value_vec(s, vecs).bits))
        first = False
    combined = {}
    for s in order:
        if s.kind == "quantile":
            combined[s.name] = (await stats.quantile(chan, picks.pop(s.name), s.q))[0]
        else:
            combined[s.name] = await _combine(chan, s.kind, picks.pop(s.name))
    return vecs, sums, combined


async def _model_rows(chan: Channel, fc: fin.FCtx, s2, program, vals, m: int,
                      receivers: list[int]) -> list[tuple] | None:
    """A model program: the presence bits, then the fit per group (:mod:`.program_models`);
    rows (group keys..., term, coefficient) of the present groups at the receivers."""
    from engine.protocols.program_models import fit_groups

    pres_sh = _bit_shares(fc, vals, program.present)
    masked, decode = await fit_groups(chan, fc, program, vals, pres_sh, m)
    chan.phase("solve")
    opened = await chan.reveal("group_present", s2.array(fc.field.array(pres_sh)), receivers,
                               raw=True)
    result = await chan.reveal("result", masked, receivers)
    chan.phase("reveal")
    if result is None or opened is None:
        return None
    coefs = decode(result)
    present = [int(b) for b in np.asarray(opened.value).reshape(-1)]
    keys = [o.key for o in program.outputs]
    terms = ("intercept", *program.model.terms)
    out = []
    for grp, here, coef in zip(program.groups, present, coefs, strict=True):
        if here:
            key = tuple(grp.key[k] for k in keys)
            out += [(*key, t, float(c)) for t, c in zip(terms, coef, strict=True)]
    return out


def _consts(program, m: int, min_group_rows: int | None) -> dict[str, float]:
    """The run-time constants: the min_group_rows const is max(1, the largest
    min_group_rows), clipped to m + 1 (``Program.min_group_rows_const``)."""
    value = float(min(max(1, int(min_group_rows or 0)), m + 1))
    name = getattr(program, "min_group_rows_const", None) or MIN_GROUP_ROWS
    return {name: value, MIN_GROUP_ROWS: value}


async def _slots(chan, ctx: sl.Ctx, fc: fin.FCtx, program, vecs, L: int, sf, s2, sums=None,
                 picks=None):
    """Every slot of every group as an FV (finish field); the exact sums (XV) of the sum
    slots computed without rounding; the exact filtered row count (shares) or None.
    ``sums``, ``picks``: the slot sums and order statistics already computed chunk by chunk
    (else computed here)."""
    rt = ctx.rt
    G = fc.G
    whole = _whole(program)
    sum_slots = [s for s in program.slots if s.kind == "sum"]
    if sums is None and ctx.m > 0:
        sums = await sl.slot_sums(ctx, program, vecs, whole=whole)
    elif sums is None:
        zero = sl.Sum(0, 0, 1, True)
        sums = {(s.name, j): zero for s in sum_slots for j in range(G)}
        sums.update({(n, -1): zero for n in whole})
    for s in sum_slots:  # one fraction length per slot (exact shifts up)
        _align_groups(ctx, sums, s.name, G)
    keys = [(s.name, j) for s in sum_slots for j in range(G)] + [(n, -1) for n in whole]
    conv = await sl.convert_sums(rt, [sums[k] for k in keys], ctx.field, s2)
    parts, exact = [], {}
    for i, s in enumerate(sum_slots):
        share = np.array(conv[i * G:(i + 1) * G], dtype=object)
        g = sums[(s.name, 0)].g
        ok = all(sums[(s.name, j)].exact for j in range(G))
        e = max(sums[(s.name, j)].e for j in range(G))
        eff = fin.eff_bits(s.bits, s.rows_pow, L)
        parts.append(dict(share=share, g=g, eff=eff, exact=ok, integral=s.integral,
                          nonneg=_nonneg(s, vecs), e=e))
        if ok:
            exact[s.name] = fin.XV(share, -g, eff)
    fvs = await fin.slot_values(fc, parts)
    vals = {s.name: v for s, v in zip(sum_slots, fvs, strict=True)}
    count = None
    if program.filtered_count is not None:
        s = sums[(program.filtered_count, -1)]
        count = conv[-1] * fin.pow2(fc, -s.g) % fc.p
    order = [s for s in program.slots if s.kind != "sum"]
    if order and ctx.m == 0:  # no rows: every group is empty (the program's NULL guard)
        vals.update({s.name: fin.FV(np.zeros(G, dtype=object), fin.FRAC,
                                    fin.eff_bits(s.bits, s.rows_pow, L)) for s in order})
    else:
        for s in order:
            res = (picks[s.name] if picks is not None
                   else (await _order_statistic(chan, ctx, program, s, vecs))[0])
            vals[s.name] = await _order_value(fc, s, res, _value_vec(s, vecs).bits, L)
    return vals, exact, count


def _align_groups(ctx: sl.Ctx, sums: dict, name: str, G: int) -> None:
    """Bring a slot's per-group sums to one fraction length (exact multiplications)."""
    g = max(sums[(name, j)].g for j in range(G))
    for j in range(G):
        x = sums[(name, j)]
        if x.g != g:
            sums[(name, j)] = sl.Sum(x.share * (1 << (g - x.g)) % ctx.p, g, x.e + g - x.g,
                                     x.exact)


def _nonneg(slot, vecs) -> bool:
    """Whether a sum slot is known >= 0: 0/1 factors and values that appear in pairs."""
    names = [n for n in slot.factors if not (n in vecs and vecs[n].bit)]
    return all(names.count(n) % 2 == 0 for n in names)


def _value_vec(slot, vecs) -> sl.Vec:
    return vecs[slot.value] if isinstance(slot.value, str) else sl.public_vec(slot.value)


async def _order_statistic(chan, ctx: sl.Ctx, program, slot, vecs) -> tuple[Any, Any]:
    """A MIN / MAX / QUANTILE slot per group by :func:`engine.protocols.order_stats.
    order_statistic` (exact): its (result, empty) SecFxp(64, 32) arrays (G,)."""
    values, weights = await _order_inputs(ctx, program, slot, vecs)
    return await _order_stats().order_statistic(chan, slot.kind, values, weights,
                                                _value_vec(slot, vecs).bits, slot.q)


async def _order_inputs(ctx: sl.Ctx, program, slot, vecs) -> tuple[Any, Any]:
    """An order statistic's SecFxp(64, 32) arrays: the value vector normalised by its own
    bound (m,) and the groups' 0/1 weights (G, m)."""
    sf = ctx.rt.SecFxp(64, 32)
    v = _value_vec(slot, vecs)
    values = await _as_fxp(ctx, v, v.bits)
    rows = [await _weight(ctx, [vecs[n] for n in (*slot.factors, *grp.indicators)])
            for grp in program.groups]
    weights = sf.array(sf.field.array(np.stack(rows)), integral=False)
    return sf.array(sf.field.array(values), integral=False), weights


async def _combine(chan, kind: str, picks: list[tuple[Any, Any]]) -> Any:
    """The MIN / MAX per group of C chunks' results (C (result, empty) pairs of arrays (G,)):
    one more :func:`order_statistic` over the C G candidates, candidate (c, g) weighted by
    1 - empty_cg in group g only (the shares of 1 - e are 2^32 minus those of e: no message).
    Exact, as the chunks' extrema are."""
    rt = chan.mpc
    order_statistic = _order_stats().order_statistic
    sf = rt.SecFxp(64, 32)
    p = sf.field.order
    G = picks[0][0].shape[0]
    values, weights = [], np.zeros((G, len(picks) * G), dtype=object)
    for c, (res, empty) in enumerate(picks):
        r, e = await rt.gather(res, empty)
        values.append(np.asarray(r.value, dtype=object))
        for g in range(G):
            weights[g, c * G + g] = ((1 << sf.frac_length) - int(e.value[g])) % p
    res, _empty = await order_statistic(
        chan, kind, sf.array(sf.field.array(np.concatenate(values)), integral=False),
        sf.array(sf.field.array(weights), integral=False), 0)
    return res


async def _order_value(fc: fin.FCtx, slot, res, bits: int, L: int) -> fin.FV:
    """An order statistic's result (G,), normalised by 2^bits, as an FV of the finish field."""
    t2 = fc.rt.SecFxp(96, 48)
    conv = await fc.rt.gather(fc.rt.convert([res[i] for i in range(fc.G)], t2))
    fv = fin.FV(np.array([int(c.value) for c in conv], dtype=object), fin.FRAC, bits)
    return await fin.rescale(fc, fv, fin.eff_bits(slot.bits, slot.rows_pow, L))


def _order_stats():
    try:
        from engine.protocols import order_stats
    except ModuleNotFoundError as e:
        if e.name != "engine.protocols.order_stats":
            raise
        raise NotSupportedError("MIN, MAX and QUANTILE are not supported yet") from e
    return order_stats


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
        raise too_small(chan.min_rows_by, chan.min_rows, what=FILTERED)


@dataclass
class _Opened:
    """How to decode one output: exact (value = N 2^u) or fixed (raw / 2^f * 2^E)."""

    out: Any
    exact: bool
    f: int  # exact: -u
    E: int


def _output_value(fc: fin.FCtx, program, o, vals, exact) -> tuple[np.ndarray, _Opened]:
    """The shares an output opens and how to decode them: an exact sum slot or exact op as
    its exact integer, anything else as its normalised fixed-point value."""
    v = vals.get(o.value)
    if isinstance(v, fin.XV) or (o.value in exact and _is_slot(program, o.value)):
        x = v if isinstance(v, fin.XV) else exact[o.value]
        return np.asarray(x.raw(), dtype=object) % fc.p, _Opened(o, True, -x.u, 0)
    if v is None:
        raise InternalError(f"output {o.name} refers to {o.value!r}, not a finish value")
    f = fin.FRAC if v.is_public else v.f
    return np.asarray(fin.raw_of(fc, v, f), dtype=object) % fc.p, _Opened(o, False, f, v.E)


def _bit_shares(fc: fin.FCtx, vals, name: str | None) -> np.ndarray:
    """Shares of a 0/1 finish value as integers (0 where ``name`` is None)."""
    if name is None:
        return np.zeros(fc.G, dtype=object)
    v = vals[name]
    if isinstance(v, fin.XV) or not (v.bit or v.is_public):
        raise InternalError(f"{name} is not a 0/1 value")
    return np.asarray(fin.raw_of(fc, v, 0) if v.is_public else v.sh, dtype=object) % fc.p


async def _reveal(chan: Channel, fc: fin.FCtx, s2, program, vals, exact, receivers
                  ) -> list[tuple] | None:
    """Open the presence bits, then every output's value and NULL / NaN / infinity bits."""
    G = fc.G
    present, pres_sh = None, None
    if program.present is not None:
        pres_sh = _bit_shares(fc, vals, program.present)
        if vals[program.present].is_public:
            present = [int(b) for b in pres_sh]
            if chan.pid in receivers:
                chan.opened("group_present")
        else:
            opened = await chan.reveal("group_present", s2.array(fc.field.array(pres_sh)),
                                       receivers, raw=True)
            if opened is not None:
                present = [int(b) for b in np.asarray(opened.value).reshape(-1)]
    outs = [o for o in program.outputs if o.value is not None]
    pairs = [_output_value(fc, program, o, vals, exact) for o in outs]
    raws, specs = [r for r, _ in pairs], [sp for _, sp in pairs]
    flags = [[_bit_shares(fc, vals, getattr(o, k, None)) for k in ("null", "nan", "inf")]
             for o in outs]
    opened = None
    if outs:
        flat = await _mask(fc, raws, flags, pres_sh)
        opened = await chan.reveal("result", s2.array(fc.field.array(flat)), receivers,
                                   raw=True)
    elif chan.pid in receivers:
        chan.opened("result")
    if chan.pid not in receivers:
        return None
    table = (np.asarray(opened.value, dtype=object).reshape(4, len(outs), G)
             if outs else np.zeros((4, 0, G), dtype=object))
    return _rows(program, specs, table, present, fc.p)


def _is_slot(program, name: str) -> bool:
    return any(s.name == name for s in program.slots)


async def _mask(fc: fin.FCtx, raws: list, flags: list, pres) -> np.ndarray:
    """[values * keep, null * present, nan * present, inf * present] for all outputs, with
    keep = present (1 - null) (1 - nan): three resharings of G-long bit products."""
    p, G, n = fc.p, fc.G, len(raws)
    null, nan, inf = ([f[k] for f in flags] for k in range(3))
    both = np.concatenate([a * b for a, b in zip(null, nan, strict=True)])
    both = await fin.reshare(fc, both)  # null nan
    bad = [(null[i] + nan[i] - both[i * G:(i + 1) * G]) % p for i in range(n)]  # null or nan
    if pres is None:
        keep = [(1 - b) % p for b in bad]
        bits = null + nan + inf
    else:
        prod = await fin.reshare(fc, np.concatenate([x * pres for x in bad + null + nan + inf]))
        parts = [prod[i * G:(i + 1) * G] for i in range(4 * n)]
        keep = [(pres - parts[i]) % p for i in range(n)]
        bits = parts[n:]
    vals = await fin.reshare(fc, np.concatenate([v * k for v, k in zip(raws, keep, strict=True)]))
    return np.concatenate([vals] + bits) % p


def _signed(v: int, p: int) -> int:
    v = int(v)
    return v - p if v > p // 2 else v


def _rows(program, specs: list[_Opened], opened: np.ndarray, present, p: int) -> list[tuple]:
    """The present groups' rows at a receiver: keys and decoded output values."""
    rows = []
    for j, grp in enumerate(program.groups):
        if present is not None and not present[j]:
            continue
        got = iter([_value(sp, *(int(opened[k, i, j]) for k in range(4)), p)
                    for i, sp in enumerate(specs)])
        rows.append(tuple(grp.key[o.key] if o.value is None else next(got)
                          for o in program.outputs))
    return rows


def _value(sp: _Opened, raw: int, null: int, nan: int, inf: int, p: int):
    """One opened output: None if NULL, NaN, +-infinity (the value's sign), else decoded,
    transformed, scaled and typed."""
    o = sp.out
    if _signed(null, p):
        return None
    if _signed(nan, p):
        return _typed(math.nan, o.dtype)
    r = _signed(raw, p)
    if sp.exact:
        q = Fraction(r) / Fraction(2) ** sp.f if sp.f >= 0 else Fraction(r * 2 ** -sp.f)
        v: Any = int(q) if q.denominator == 1 else float(q)
    else:
        v = r * 2.0 ** (sp.E - sp.f)
    if _signed(inf, p):
        return _typed(math.copysign(math.inf, v), o.dtype)
    v = _transform(v, o.transform)
    scale = getattr(o, "scale", 1.0)
    if scale != 1.0:
        v = v * scale
    return _typed(v, o.dtype)


def _transform(v, transform: str):
    if transform == "identity":
        return v
    if transform == "sqrt":
        return math.sqrt(max(float(v), 0.0))
    if transform == "signed_sqrt":
        return math.copysign(math.sqrt(abs(float(v))), float(v))
    if transform == "integer":
        return v if isinstance(v, int) else _round_half_away(float(v))
    if transform == "odds":
        v = float(v)
        return v / (1.0 - abs(v)) if abs(v) < 1.0 else math.copysign(math.inf, v)
    raise InternalError(f"unknown transform {transform!r}")


def _round_half_away(v: float) -> int:
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def _typed(v, dtype: str):
    base = dtype.split("(")[0].strip().upper()
    if base in INTEGER_TYPES:
        if isinstance(v, float) and not math.isfinite(v):
            return v
        return v if isinstance(v, int) else _round_half_away(float(v))
    if base == "BOOLEAN":
        return bool(round(float(v)))
    return float(v)
