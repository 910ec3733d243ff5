"""Lowering: a bound :class:`~planner.logical.LogicalQuery` -> the physical Program and its Plan.

:mod:`planner.lower_rows` turns row expressions into polynomials over atoms (local columns of
one party, row ops in MPC) and fuses each party's factors into one local column;
:mod:`planner.lower_aggs` builds the slots and the finish program of the aggregates; this
module adds the groups, the outputs, the presence bits and the WHERE's count, and assembles
the Plan (Scan.local, SecretShare.columns, SecureAggregate.program).
"""

from __future__ import annotations

import itertools
import math
from itertools import combinations_with_replacement
from typing import Any

from dialect.errors import NotSupportedError, ProgrammingError
from planner.catalog import Catalog
from planner.logical import (
    BOOLEAN,
    NUMBER,
    TEXT,
    AggCall,
    AggExpr,
    AggLit,
    AggOp,
    Call,
    Expr,
    GroupKey,
    KeyRef,
    Lit,
    LogicalQuery,
    ModelCall,
)
from planner.lower_aggs import INTEGER_DTYPES, Aggregates, Val
from planner.lower_rows import ONE, Lowering, constant, expr_text, pmul
from planner.physical import (
    MAX_BITS,
    MAX_GROUPS,
    FinishOp,
    Group,
    Model,
    OrderKey,
    Output,
    Program,
)
from planner.plan import (
    ColumnRef,
    OutputColumn,
    Plan,
    PrivateJoin,
    Reveal,
    Scan,
    SecretShare,
    SecureAggregate,
    check_join_protocol,
)

#: The name of the const finish op the engine sets to max(1, min_group_rows) at run time.
MIN_GROUP_ROWS = "min_group_rows"


def join_helper(catalog: Catalog) -> str:
    """The helper party of a private join; NotSupportedError if the catalog has none."""
    helper = catalog.helper
    if helper is None:
        raise NotSupportedError("a private join needs a helper party; the catalog has none")
    return helper.name


def lower(lq: LogicalQuery, catalog: Catalog, *, receivers: tuple[str, ...],
          join_protocol: str = "paillier", sql: str = "") -> Plan:
    """The Plan of a bound aggregate query (``receivers`` already checked)."""
    check_join_protocol(join_protocol)
    program, rows = lower_program(lq)
    return assemble(lq, catalog, program, rows, receivers=receivers,
                    join_protocol=join_protocol, sql=sql)


def lower_program(lq: LogicalQuery) -> tuple[Program, Lowering]:
    """The physical program of ``lq`` (and its row level, which knows what each party reads)."""
    joined = len(lq.tables) == 2
    rows = Lowering(tuple(t.party for t in lq.tables),
                    {t.party: t.key if joined else None for t in lq.tables})
    aggs = Aggregates(rows, lq.where, grouped=bool(lq.keys))
    key_having, having = _split_having(lq.having)
    groups = _groups(rows, lq.keys, key_having)
    filtered = None
    if lq.where is not None:
        st = aggs.stat([aggs.where], 0, f"rows where {expr_text(lq.where)}", global_=True)
        filtered = st.terms[0][1].name
    call = model_of(lq)
    items = [i for i in lq.items if i.expr is not call]
    outputs = tuple(_output(aggs, i, item.name, item.dtype, item.expr)
                    for i, item in enumerate(items))
    outputs, order = _order(lq, outputs)
    model = None
    if call is not None:
        model, present, mgr = _model(aggs, lq, call)
    else:
        present, mgr = _presence(aggs, lq, having, bool(groups and key_having is not None
                                                     and not _kept_any(lq.keys, key_having)))
    local, row_ops, slots, finish = _prune(rows, aggs, groups, outputs, present, filtered,
                                           model.refs if model else ())
    program = Program(
        local=local, rows=row_ops, slots=slots, groups=groups,
        finish=finish, outputs=outputs, present=present, filtered_count=filtered,
        order=order,
        limit=lq.limit, offset=lq.offset, min_group_rows_const=mgr, model=model)
    check_size(program, 0)
    return program, rows


def _prune(rows: Lowering, aggs: Aggregates, groups: tuple[Group, ...],
           outputs: tuple[Output, ...], present: str | None, filtered: str | None,
           extra: tuple[str, ...] = ()):
    """Keep only what the outputs, the presence bits, the WHERE's count and a model need."""
    deps: dict[str, tuple[Any, ...]] = {}
    for f in aggs.fin.ops:
        deps[f.out] = f.args
    for s in aggs.slots:
        deps[s.name] = s.factors + ((s.value,) if s.value else ())
    for r in rows.rows:
        deps[r.out] = r.args
    need: set[str] = set()
    todo = [n for o in outputs for n in (o.value, o.null, o.nan, o.inf) if n]
    todo += [n for n in (present, filtered) if n] + list(extra)
    todo += [i for g in groups for i in g.indicators]
    while todo:
        n = todo.pop()
        if isinstance(n, str) and n not in need:
            need.add(n)
            todo += [a for a in deps.get(n, ()) if isinstance(a, str)]
    local = tuple(sorted((c for c in rows.local.values() if c.name in need),
                         key=lambda c: rows.parties.index(c.party)))
    return (local, tuple(r for r in rows.rows if r.out in need),
            tuple(s for s in aggs.slots if s.name in need),
            tuple(f for f in aggs.fin.ops if f.out in need))


# --- groups ----------------------------------------------------------------------------------


def _indicator(rows: Lowering, key: GroupKey, value: Any) -> str:
    e = key.expr
    if value is None:
        p = Call("is_null", (e,), BOOLEAN, nullable=False)
    else:
        kind = BOOLEAN if isinstance(value, bool) else TEXT if isinstance(value, str) else NUMBER
        p = Call("=", (e, Lit(value, kind, nullable=False)), BOOLEAN, nullable=e.nullable)
    return rows.column(list(next(iter(rows.true(p)))))


def _key_only(e: AggExpr) -> bool:
    if isinstance(e, AggCall):
        return False
    if isinstance(e, AggOp):
        return all(_key_only(a) for a in e.args)
    return True


def _has_key(e: AggExpr) -> bool:
    if isinstance(e, KeyRef):
        return True
    return isinstance(e, AggOp) and any(_has_key(a) for a in e.args)


def _conjuncts(e: AggExpr) -> list[AggExpr]:
    if isinstance(e, AggOp) and e.op == "and":
        return [c for a in e.args for c in _conjuncts(a)]
    return [e]


def _split_having(having: AggExpr | None) -> tuple[AggExpr | None, AggExpr | None]:
    """(the conjuncts over the public keys only, the rest): the first filter the public groups
    in plaintext at planning, the rest is computed in MPC."""
    if having is None:
        return None, None
    keys = [c for c in _conjuncts(having) if _key_only(c) and _has_key(c)]
    rest = [c for c in _conjuncts(having) if not (_key_only(c) and _has_key(c))]

    def conj(cs: list[AggExpr]) -> AggExpr | None:
        out = cs[0] if cs else None
        for c in cs[1:]:
            out = AggOp("and", (out, c), BOOLEAN)
        return out

    return conj(keys), conj(rest)


def _as_row(e: AggExpr, key: tuple[Any, ...]) -> Expr:
    """A key-only aggregate expression with the group's key values, as a constant row one."""
    if isinstance(e, KeyRef):
        v = key[e.index]
        kind = BOOLEAN if isinstance(v, bool) else TEXT if isinstance(v, str) else NUMBER
        return Lit(v, kind)
    if isinstance(e, AggLit):
        v = e.value
        kind = BOOLEAN if isinstance(v, bool) else TEXT if isinstance(v, str) else NUMBER
        return Lit(v, kind)
    assert isinstance(e, AggOp)
    return Call(e.op, tuple(_as_row(a, key) for a in e.args), e.result_kind)


def _kept_any(keys: tuple[GroupKey, ...], pred: AggExpr) -> bool:
    return any(constant(_as_row(pred, g)) is True
               for g in itertools.product(*(k.domain for k in keys)))


def _groups(rows: Lowering, keys: tuple[GroupKey, ...],
            key_having: AggExpr | None = None) -> tuple[Group, ...]:
    if not keys:
        return (Group((), ()),)
    size = math.prod(len(k.domain) for k in keys)
    if key_having is not None and size <= 2**16:
        size = sum(constant(_as_row(key_having, g)) is True
                   for g in itertools.product(*(k.domain for k in keys)))
    if size > MAX_GROUPS:
        names = " x ".join(f"{k.name} ({len(k.domain)})" for k in keys)
        raise ProgrammingError(f"GROUP BY {names} forms {size} groups; at most {MAX_GROUPS} "
                               "are supported")
    for k in keys:
        if not k.expr.parties:
            raise NotSupportedError(f"GROUP BY {k.name}: a constant group key is not supported")
        if not k.domain:
            raise ProgrammingError(f"GROUP BY {k.name}: the key's domain is empty")
    out = []
    for idx in itertools.product(*(range(len(k.domain)) for k in keys)):
        key = tuple(k.domain[i] for k, i in zip(keys, idx, strict=True))
        if key_having is None or constant(_as_row(key_having, key)) is True:
            out.append((key, idx))
    if not out:  # HAVING over the keys keeps no group: one group, never present
        out = [(tuple(k.domain[0] for k in keys), (0,) * len(keys))]
    used = [sorted({idx[j] for _, idx in out}) for j in range(len(keys))]
    ind = [{i: _indicator(rows, k, k.domain[i]) for i in used[j]} for j, k in enumerate(keys)]
    return tuple(Group(key, tuple(ind[j][i] for j, i in enumerate(idx))) for key, idx in out)


# --- outputs and presence --------------------------------------------------------------------


def _output(aggs: Aggregates, index: int, name: str, dtype: str, e: Any) -> Output:
    if isinstance(e, KeyRef):
        return Output(name, dtype, key=e.index)
    v: Val = aggs.expr(e, top=True)
    if v.t is not None:  # a predicate: its is_true bit, NULL where neither true nor false
        return Output(name, dtype, value=v.t, null=v.null)
    value = v.out or v.norm()
    transform = v.transform
    if transform == "identity" and dtype.split("(")[0].upper() in INTEGER_DTYPES:
        transform = "integer"
    return Output(name, dtype, value=value, null=v.null, transform=transform, nan=v.nan,
                  inf=v.inf, scale=v.scale)


def _order(lq: LogicalQuery, outputs: tuple[Output, ...]
           ) -> tuple[tuple[Output, ...], tuple[OrderKey, ...]]:
    """The ORDER BY keys over the outputs; a GROUP BY key that is not selected becomes a hidden
    output (its public key value, nothing opened) after the others."""
    hidden: dict[int, int] = {}  # GROUP BY key index -> output index
    extra: list[Output] = []
    order = []
    for k in lq.order:
        index = k.output
        if k.key is not None:
            if k.key not in hidden:
                key = lq.keys[k.key]
                hidden[k.key] = len(outputs) + len(extra)
                extra.append(Output(key.name, key.dtype, key=k.key, hidden=True))
            index = hidden[k.key]
        order.append(OrderKey(index, k.descending, k.nulls_first))
    return outputs + tuple(extra), tuple(order)


def _presence(aggs: Aggregates, lq: LogicalQuery, having_expr: AggExpr | None,
              never: bool) -> tuple[str | None, str | None]:
    """The presence bit per group and the min_group_rows const (None without GROUP BY)."""
    having = None
    if having_expr is not None:
        h = aggs.expr(having_expr, top=True)
        if h.t is None:
            raise ProgrammingError("HAVING needs a predicate")
        having = h.t
    fin = aggs.fin
    if never:
        having = fin.const(0.0)
    if not lq.keys:
        return having, None
    st = aggs.stat([aggs.where], 0, "rows of the group")
    n = aggs.norm(st, "rows of the group")
    mgr = fin.op("const", (1.0,), 0, 1, name=MIN_GROUP_ROWS,
                 text="max(1, min_group_rows), set at run time")
    big = fin.op("le", (mgr, n), 0, text="the group has at least min_group_rows rows")
    return fin.and_(big, having), mgr


# --- models --------------------------------------------------------------------------------


def _fits(where: Expr | None, zs: tuple[Expr, ...]) -> Expr:
    """The predicate of the rows a model fits: the WHERE and no NULL in its columns, the
    columns' conditions grouped by party (each party's conjunction is one local column)."""
    def both(a: Expr | None, b: Expr) -> Expr:
        return b if a is None else Call("and", (a, b), BOOLEAN, nullable=False)

    by_party: dict[frozenset[str], Expr] = {}
    for z in (z for z in zs if z.nullable):
        ok = Call("not", (Call("is_null", (z,), BOOLEAN, nullable=False),), BOOLEAN,
                  nullable=False)
        by_party[z.parties] = both(by_party.get(z.parties), ok)
    pred = where
    for part in by_party.values():
        pred = both(pred, part)
    return pred if pred is not None else Lit(True, BOOLEAN, nullable=False)


def model_of(lq: LogicalQuery) -> ModelCall | None:
    """The model aggregate of a model query with WHERE or GROUP BY (None for SQL aggregates)."""
    calls = [i.expr for i in lq.items if isinstance(i.expr, ModelCall)]
    return calls[0] if calls else None


def _model(aggs: Aggregates, lq: LogicalQuery, call: ModelCall
           ) -> tuple[Model, str, str | None]:
    """The model's sufficient statistics as finish ops (:class:`planner.physical.Model`) and
    its presence bit per group: the rows it fits number at least max(1, the largest
    min_group_rows) with GROUP BY, at least 1 without.

    The rows are those of the WHERE and the group with no NULL in the model's columns (weight
    w); n = Σ w, mean_k = Σ w z_k / n, cov_kl = Σ w z_k z_l / n - mean_k mean_l.  Each party
    shares each of its columns once (``Lowering.separate``): MPC forms the products.
    """
    rows, fin = aggs.rows, aggs.fin
    zs = call.args
    valid = ONE
    for z in zs:
        valid = pmul(valid, rows.Q(z))
    rows.separate = True
    try:
        w = [aggs.where, valid]
        pred = _fits(lq.where, zs)
        if len(pred.parties) > 1:  # one 0/1 row vector: every product shares it as a prefix
            w = [rows.row_atom(rows.matT(pred), f"rows {call.func} fits")]
        n = aggs.norm(aggs.stat(w, 0, f"rows {call.func} fits"), f"rows {call.func} fits")
        n1 = fin.op("add", (n, fin.bit("is_zero", n)), 0, 1)
        vals = [rows.R(z) for z in zs]
        texts = [expr_text(z) for z in zs]

        def mean(parts: list, bits: int, text: str) -> str:
            s = aggs.norm(aggs.stat(w + parts, bits, f"Σ {text}"), f"Σ {text}")
            return fin.op("div", (s, n1), bits, 0, floor=0, text=f"mean of {text}")

        means = [mean([v], z.bits, t) for v, z, t in zip(vals, zs, texts, strict=True)]
        cov = []
        for k, j in combinations_with_replacement(range(len(zs)), 2):
            bits = zs[k].bits + zs[j].bits
            text = f"{texts[k]} * {texts[j]}"
            e = mean([vals[k], vals[j]], bits, text)
            cov.append(fin.op("sub", (e, fin.op("mul", (means[k], means[j]), bits)), bits,
                              text=f"covar_pop({texts[k]}, {texts[j]})"))
    finally:
        rows.separate = False
    inv = None
    if call.func == "RIDGE":
        inv = fin.op("div", (fin.const(1.0), n1), 0, 0, floor=0, text="1 / rows")
    model = Model(call.func, call.terms, tuple(z.bits for z in zs), n, tuple(means),
                  tuple(cov), inv, call.options)
    mgr = None
    if lq.keys:
        mgr = fin.op("const", (1.0,), 0, 1, name=MIN_GROUP_ROWS,
                     text="max(1, min_group_rows), set at run time")
        least = mgr
    else:
        least = fin.op("const", (1.0,), 0, 1, text="one row")
    present = fin.op("le", (least, n), 0, text=f"{call.func} has rows to fit")
    return model, present, mgr


# --- run-time bounds ------------------------------------------------------------------------------


def rows_bits(m: int) -> int:
    """ceil(log2(m + 1)): the bits a bound gains per ``rows_pow`` for a public size m."""
    return max(0, math.ceil(math.log2(m + 1))) if m > 0 else 0


def check_size(program: Program, m: int) -> None:
    """Refuse (ProgrammingError naming the computation) a program whose divisions cannot be
    computed for the public size ``m``: a denominator's range 2^bits / 2^floor must fit the
    fixed-point type (2^31).  The planner calls it with m = 0; the engine with the real m."""
    L = rows_bits(m)
    ops = {f.out: f for f in program.finish}
    for f in program.finish:
        if f.op != "div":
            continue
        den = ops.get(f.args[1])
        if den is None:
            continue
        top = den.bits + den.rows_pow * L
        floor = (f.floor_bits or 0) + f.floor_rows_pow * L
        if top - floor > MAX_BITS:
            what = f.text or f.out
            raise ProgrammingError(
                f"{what}: the denominator ranges over 2^{top - floor} (bound 2^{top}, smallest "
                f"nonzero value 2^{floor}), more than the fixed-point range 2^{MAX_BITS}"
                + (f" for {m} rows" if m else ""))


# --- the plan ------------------------------------------------------------------------------------


def assemble(lq: LogicalQuery, catalog: Catalog, program: Program, rows: Lowering, *,
             receivers: tuple[str, ...], join_protocol: str, sql: str) -> Plan:
    joined = len(lq.tables) == 2
    scans = []
    for t in lq.tables:
        local = program.local_at(t.party)
        reads = tuple(dict.fromkeys(r for c in local for r in rows.col_reads[c.name]))
        scans.append(Scan(t.party, t.name, t.key if joined else None,
                          tuple(c.name for c in local), local, reads))
    source: Scan | PrivateJoin
    if joined:
        source = PrivateJoin(scans[0], scans[1], join_helper(catalog), join_protocol)
    else:
        source = scans[0]
    columns = tuple(ColumnRef(s.party, s.table, c.name, "DOUBLE", c.bits)
                    for s in scans for c in s.local)
    root = Reveal(SecureAggregate(SecretShare(source, columns), (), program), receivers)
    output = tuple(OutputColumn(i.name, i.dtype) for i in lq.items
                   if not isinstance(i.expr, ModelCall))
    if program.model is not None:
        output += (OutputColumn("term", "VARCHAR"), OutputColumn("coefficient", "DOUBLE"))
    return Plan(sql, root, output, tuple(p.name for p in catalog.parties), logical=lq)


__all__ = ["FinishOp", "check_size", "lower", "lower_program", "rows_bits"]
