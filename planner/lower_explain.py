"""How a program plan prints itself (explain) and what it discloses (:class:`Plan` uses these)."""

from __future__ import annotations

from typing import Any

from planner.facts import Disclosure
from planner.physical import FinishOp, Output, Program, Slot

#: Aggregates whose result is a data value of one person (or between two: QUANTILE_CONT).
ORDER_STATISTICS = ("MIN", "MAX", "QUANTILE_CONT")


def bound(bits: int, rows_pow: int = 0) -> str:
    """``|v| <= 2^b`` or ``|v| <= 2^b * (m+1)^k`` for a bound that grows with the size m."""
    grows = "" if not rows_pow else " * (m+1)" + (f"^{rows_pow}" if rows_pow > 1 else "")
    return f"|v| <= 2^{bits}{grows}"


def _arg(a: Any) -> str:
    return f"{a:g}" if isinstance(a, float) else str(a)


def _slot_line(s: Slot) -> str:
    prod = " * ".join(s.factors) or "1"
    if s.kind == "sum":
        what = f"sum over rows of {prod}"
    else:
        q = f"(q={s.q:g})" if s.q is not None else ""
        what = f"{s.kind}{q} of {s.value} over the rows where {prod} = 1"
    exact = ", exact integer" if s.integral else ""
    text = f"  [{s.text}]" if s.text else ""
    return f"{s.name} = {what}  ({bound(s.bits, s.rows_pow)}{exact}){text}"


def _finish_line(f: FinishOp) -> str:
    args = ", ".join(_arg(a) for a in f.args)
    extra = [bound(f.bits, f.rows_pow)]
    if f.floor_bits is not None:
        extra.append(f"|denominator| >= 2^{f.floor_bits} when nonzero")
    if f.exact_unit is not None:
        extra.append(f"exact, unit 2^{f.exact_unit}")
    text = f"  [{f.text}]" if f.text else ""
    return f"{f.out} = {f.op}({args})  ({'; '.join(extra)}){text}"


def _output_line(o: Output) -> str:
    if o.key is not None:
        hidden = ", for ORDER BY only: not returned" if o.hidden else ""
        return f"{o.name} ({o.dtype}) = group key {o.key} (public{hidden})"
    flags = [f"{k} where {v}" for k, v in (("NULL", o.null), ("NaN", o.nan), ("infinite", o.inf))
             if v]
    tail = f", {'; '.join(flags)}" if flags else ""
    tr = "" if o.transform == "identity" else f", then {o.transform}"
    sc = "" if o.scale == 1.0 else f" * {o.scale:g}"
    return f"{o.name} ({o.dtype}) = {o.value}{tail}{tr}{sc}"


def program_lines(p: Program) -> list[str]:
    """Every stage of the program after the local columns (the scans print those)."""
    lines: list[str] = []
    if p.rows:
        lines.append("row program in MPC (vectorised over the m shared rows):")
        lines += [f"  {r.out} = {r.op}({', '.join(_arg(a) for a in r.args)})  "
                  f"(|v| <= 2^{r.bits})" + (f"  [{r.text}]" if r.text else "") for r in p.rows]
    lines.append(f"slots in MPC (secret, per group; {len(p.slots)}):")
    lines += ["  " + _slot_line(s) for s in p.slots]
    if p.filtered_count:
        lines.append(f"  {p.filtered_count} over all rows (no group indicators) is the count of "
                     "the rows the WHERE leaves")
    if len(p.groups) > 1 or p.groups[0].indicators:
        lines.append(f"groups (public key domain, {len(p.groups)}):")
        lines += [f"  {g.key!r}: rows where {' * '.join(g.indicators)} = 1" for g in p.groups]
    lines.append("finish in MPC (vectorised over the groups):")
    lines += ["  " + _finish_line(f) for f in p.finish]
    if p.present:
        lines.append(f"presence bit per group (opened): {p.present}")
    if p.model is not None:
        lines += model_lines(p)
    lines.append("outputs (opened to the receivers, present groups only):")
    lines += ["  " + _output_line(o) for o in p.outputs]
    tail = []
    if p.order:
        tail.append("ORDER BY " + ", ".join(
            f"{p.outputs[k.output].name}{' DESC' if k.descending else ''}" for k in p.order))
    if p.limit is not None:
        tail.append(f"LIMIT {p.limit}")
    if p.offset:
        tail.append(f"OFFSET {p.offset}")
    if tail:
        lines.append("on the opened rows (plaintext): " + " ".join(tail))
    return lines


def model_lines(p: Program) -> list[str]:
    m = p.model
    assert m is not None
    opts = ", ".join(f"{k} => {v!r}" for k, v in m.options)
    z = ", ".join(f"z{k} / 2^{b}" for k, b in enumerate(m.bits))
    return [f"{m.func}({', '.join(('target',) + m.terms)}{', ' + opts if opts else ''}) per "
            f"group in MPC, on ({z}): rows {m.count}, means {', '.join(m.means)}, covariances "
            f"{', '.join(m.cov)}" + (f", 1/rows {m.inv_count}" if m.inv_count else ""),
            "  (every group is fitted; the coefficients of absent groups are forced to 0)"]


def _model_disclosures(p: Program, receivers: tuple[str, ...]) -> list[Any]:
    m = p.model
    assert m is not None
    grouped = len(p.groups) > 1 or bool(p.groups[0].indicators)
    where = "in some present group" if grouped else "on the rows it fits"
    out = []
    if m.func in ("RIDGE", "LINREG"):
        when = ("only if alpha / rows may fall below the solver's pivot floor"
                if m.func == "RIDGE" else "always")
        out.append(Disclosure("constant-feature bit", f"one bit: whether a feature of {m.func} "
                              f"is constant {where}", ("*",), "compute", when=when))
        out.append(Disclosure("collinear bit", f"one bit: whether the features of {m.func} are "
                              f"collinear {where}", ("*",), "compute"))
    if grouped:
        what = (f"one bit per group of the declared domain ({len(p.groups)} groups): whether "
                f"its {m.func} model is output (the rows it fits, those with no NULL in its "
                "columns, number >= max(1, the largest min_group_rows))")
    else:
        what = f"one bit: whether {m.func} has any row to fit (no NULL in its columns)"
    out.append(Disclosure("group_present", what, receivers, "result"))
    rows = "per present group" if grouped else ""
    out.append(Disclosure("result", f"the {m.func} model {rows}: its intercept and one "
                          f"coefficient per feature ({', '.join(m.terms)})".replace("  ", " "),
                          receivers, "result"))
    return out


def result_text(p: Program, names: list[str], order_stats: list[str]) -> str:
    """The text of the "result" disclosure."""
    grouped = p.present is not None
    rows = "of the present groups" if grouped else "of the one result row"
    text = f"the result ({', '.join(names)}): the output values {rows}, each with its NULL bit"
    if any(o.nan or o.inf for o in p.outputs):
        text += " (and NaN / infinity bits where DuckDB's result can be NaN or infinite)"
    if order_stats:
        text += (f"; {', '.join(order_stats)} each reveal a data value of one person (a "
                 "quantile may lie between the values of two)")
    return text


def program_disclosures(p: Program, output: tuple[Any, ...], receivers: tuple[str, ...]
                        ) -> list[Any]:
    """The disclosures of a program plan after the sizes (:meth:`Plan.disclosures`)."""
    out = []
    if p.filtered_count:
        out.append(Disclosure(
            "filter_too_small", "one bit: whether the rows the WHERE leaves are fewer than the "
            "largest min_intersection of the parties (the query is then refused)", ("*",),
            "compute"))
    if p.model is not None:
        return out + _model_disclosures(p, receivers)
    if p.present:
        if len(p.groups) > 1 or p.groups[0].indicators:
            what = (f"one bit per group of the declared domain ({len(p.groups)} groups): whether "
                    "its row is output (its row count >= max(1, the largest min_group_rows) and "
                    "HAVING holds)")
        else:
            what = "one bit: whether HAVING holds (the result row is output)"
        out.append(Disclosure("group_present", what, receivers, "result"))
    stats = [o.name for o, s in zip(p.outputs, _order_outputs(p), strict=True) if s]
    names = [c.name for c in output]
    out.append(Disclosure("result", result_text(p, names, stats), receivers, "result"))
    return out


def _order_outputs(p: Program) -> list[bool]:
    """Per output: whether its value is (a function of) an order statistic of the rows."""
    kinds = {s.name: s.kind for s in p.slots}
    deps = {f.out: f.args for f in p.finish}

    def reaches(name: Any, seen: set[str]) -> bool:
        if not isinstance(name, str) or name in seen:
            return False
        seen.add(name)
        if kinds.get(name, "sum") != "sum":
            return True
        return any(reaches(a, seen) for a in deps.get(name, ()))

    return [o.value is not None and reaches(o.value, set()) for o in p.outputs]
