"""The aggregate level of the lowering: slots (sufficient statistics) and the finish program.

Each aggregate is computed from sums over the rows (slots) of products of the row weight
``w = [WHERE] * [FILTER]`` with the arguments' values and validity bits; the finish program then
applies DuckDB's formula and NULL rules, vectorised over the groups, in normalised fixed point:

* n = Σ w·[x valid], s1 = Σ w·x, s2 = Σ w·x² (x with NULL -> 0);  mean = s1 / n;
  var_pop = s2 / n - mean²; var_samp = var_pop · n / (n - 1) (NULL if n < 2).
* pairs (y, x): n = Σ w·[x valid]·[y valid] and the pair-weighted Σx, Σy, Σx², Σy², Σxy;
  cov = Σxy / n - mean_x mean_y.  A zero variance (CORR, REGR_*) is decided exactly on field
  integers: n Σx² - (Σx)² = 0.
* MIN / MAX / QUANTILE_CONT: an order-statistic slot of the value over the rows of weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from dialect.errors import InternalError, NotSupportedError, ProgrammingError
from planner.logical import BOOLEAN, AggCall, AggExpr, AggLit, AggOp, Expr, KeyRef
from planner.lower_rows import ONE, Lowering, Poly, bits_of, expr_text, pmul, poly_text
from planner.physical import FinishOp, Slot

#: Largest number of terms of a statistic before its factors are materialised in MPC.
STAT_CAP = 16
#: Bits of the row count assumed by planning-time checks (m <= 2**31).
MAX_ROWS_BITS = 31
#: Largest magnitude (bits) of an exact field integer: p = 2^128 - 173; the exact values the
#: lowering forms (n Σx², (Σx)², their difference) are nonnegative.
EXACT_BITS = 126
#: The accuracy of a division whose denominator has no public floor: 2^(bound - 30).
RESOLUTION = 30
INTEGER_DTYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                            "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"})


@dataclass
class Stat:
    """Σ over the rows of a polynomial: ``terms`` (coefficient, slot), summand bound 2^bits."""

    terms: list[tuple[float, Slot]]
    bits: int
    integral: bool


@dataclass
class Val:
    """A per-group value of the finish program (a finish op, or a slot for ``out``)."""

    name: str  # normalised finish op ("" until norm() is called for a lazy value)
    bits: int
    rp: int = 0
    integral: bool = False
    null: str | None = None
    nan: str | None = None
    inf: str | None = None
    out: str | None = None  # what an output opens (a slot, an exact op), default ``name``
    transform: str = "identity"
    scale: float = 1.0
    output_only: str = ""  # why the value cannot be used in arithmetic (odds, sqrt)
    t: str | None = None  # predicates: is_true / is_false bits
    f: str | None = None
    count: bool = False  # a COUNT(*) without FILTER: >= 1 in every present group
    sign: str | None = None  # an exact op with the value's sign (AVG: its sum), default ``name``
    lazy: Any = field(default=None, repr=False)

    def norm(self) -> str:
        if not self.name and self.lazy is not None:
            self.name = self.lazy()
        return self.name


class Finish:
    """The finish ops of one program, deduplicated."""

    def __init__(self) -> None:
        self.ops: list[FinishOp] = []
        self.keys: dict[tuple[Any, ...], str] = {}
        self._n = 0

    def op(self, op: str, args: tuple[Any, ...], bits: int, rp: int = 0, *,
           floor: int | None = None, floor_rp: int = 0, text: str = "",
           exact: int | None = None, name: str | None = None) -> str:
        key = (op, args, bits, rp, floor, floor_rp, exact)
        if name is None and key in self.keys:
            return self.keys[key]
        if name is None:
            name = f"f{self._n}"
            self._n += 1
        self.ops.append(FinishOp(name, op, args, bits, floor, text, rp, exact, floor_rp))
        if op != "const" or name.startswith("f"):
            self.keys[key] = name
        return name

    def const(self, v: float, exact: int | None = None) -> str:
        return self.op("const", (float(v),), bits_of(v), exact=exact)

    def bit(self, op: str, *args: str) -> str:
        return self.op(op, tuple(args), 0)

    def or_(self, *names: str | None) -> str | None:
        names = tuple(dict.fromkeys(n for n in names if n))
        if not names:
            return None
        out = names[0]
        for n in names[1:]:
            out = self.bit("or", out, n)
        return out

    def and_(self, *names: str | None) -> str | None:
        names = tuple(dict.fromkeys(n for n in names if n))
        if not names:
            return None
        out = names[0]
        for n in names[1:]:
            out = self.bit("and", out, n)
        return out

    def not_(self, name: str) -> str:
        return self.bit("not", name)


def _dyadic(c: float) -> tuple[int, int] | None:
    """(numerator, exponent) with c = numerator * 2**exponent and a small numerator."""
    f = Fraction(c)
    den = f.denominator
    if den & (den - 1) or abs(f.numerator) >= 2**20:
        return None
    return f.numerator, -(den.bit_length() - 1)


class Aggregates:
    """Slots and finish ops of the aggregates of one query."""

    def __init__(self, rows: Lowering, where: Expr | None, grouped: bool):
        self.rows, self.fin = rows, Finish()
        self.slots: list[Slot] = []
        self.slot_keys: dict[tuple[Any, ...], Slot] = {}
        self.grouped = grouped
        self.where = self.weight(where)

    # --- weights and statistics ----------------------------------------------------------

    def weight(self, p: Expr | None) -> Poly:
        """is_true of a WHERE / FILTER predicate as one monomial (materialised if needed)."""
        if p is None:
            return ONE
        t = self.rows.T(p)
        if not t:  # never true
            return self.rows.row_atom(self.rows.const(0.0), "false")
        if len(t) > 1 or any(c != 1.0 for c in t.values()):
            return self.rows.row_atom(self.rows.matT(p), expr_text(p))
        return t

    def slot(self, kind: str, factors: tuple[str, ...], bits: int, text: str, *,
             value: str | None = None, q: float | None = None, integral: bool = False,
             rp: int = 1, global_: bool = False) -> Slot:
        key = (kind, tuple(sorted(factors)), value, q, global_ and self.grouped)
        if key not in self.slot_keys:
            s = Slot(f"s{len(self.slots)}", kind, factors, bits, value, q, integral, text, rp)
            self.slots.append(s)
            self.slot_keys[key] = s
        return self.slot_keys[key]

    def stat(self, parts: list[Poly], bits: int, text: str, *, exact: bool = False,
             global_: bool = False) -> Stat:
        """Σ over the rows of the product of ``parts`` (each slot one monomial)."""
        poly = ONE
        for p in parts:
            poly = pmul(poly, p)
        if len(poly) > STAT_CAP:
            poly = self.rows.row_atom(self.rows.vector(poly, bits, text))
        terms = []
        for mono, c in poly.items():
            fac = self.rows.factors(mono, exact=exact)
            fbits = sum(self.rows.factor_bits(f) for f in fac)
            integral = all(self.rows.integral(f) for f in fac)
            terms.append((c, self.slot("sum", fac, fbits, poly_text({mono: 1.0}),
                                       integral=integral, global_=global_)))
        integral = all(s.integral and float(c).is_integer() for c, s in terms)
        return Stat(terms, bits, integral)

    def norm(self, st: Stat, text: str) -> str:
        """The normalised finish value of a statistic."""
        fin = self.fin
        if not st.terms:
            return fin.const(0.0)
        acc, abits = None, 0
        for c, s in st.terms:
            v, b = fin.op("slot", (s.name,), s.bits, s.rows_pow), s.bits
            if c != 1.0:
                b += bits_of(c)
                v = fin.op("mul", (v, fin.const(c)), b, 1)
            if acc is None:
                acc, abits = v, b
            else:
                abits = max(abits, b) + 1
                acc = fin.op("add", (acc, v), abits, 1)
        if len(st.terms) > 1:
            acc = fin.op("add", (acc, fin.const(0.0)), min(abits, st.bits), 1, text=text)
        return acc

    def exact(self, st: Stat) -> tuple[str, int, int] | None:
        """The statistic as an exact finish op: (name, unit, bits), or None if it cannot be."""
        fin = self.fin
        acc = None
        for c, s in st.terms:
            unit = self.rows.unit(s.factors)
            v = fin.op("slot", (s.name,), s.bits, s.rows_pow, exact=unit)
            if c != 1.0:
                d = _dyadic(c)
                if d is None:
                    return None
                k = fin.const(c, exact=d[1])
                unit += d[1]
                v = fin.op("mul", (v, k), s.bits + bits_of(c), 1, exact=unit)
            if acc is None:
                acc = (v, unit)
            else:
                u = min(acc[1], unit)
                acc = (fin.op("add", (acc[0], v), st.bits + len(st.terms), 1, exact=u), u)
        if acc is None:
            return None
        return acc[0], acc[1], st.bits

    # --- aggregate calls --------------------------------------------------------------------

    def call(self, a: AggCall) -> Val:
        w = pmul(self.where, self.weight(a.filter))
        method = getattr(self, f"agg_{a.func.lower()}", None)
        if method is None:
            raise NotSupportedError(f"aggregate {a.func} is not supported by the secure engine")
        return method(a, w)

    def count(self, w: Poly, parts: list[Poly], text: str) -> tuple[Stat, str]:
        st = self.stat([w, *parts], 0, text)
        return st, self.norm(st, text)

    def _counted(self, st: Stat, text: str, **kw: Any) -> Val:
        if len(st.terms) == 1 and st.terms[0][0] == 1.0:
            s = st.terms[0][1]
            return Val("", 0, 1, True, out=s.name, lazy=lambda: self.norm(st, text), **kw)
        ex = self.exact(st)
        return Val(self.norm(st, text), 0, 1, True, out=ex[0] if ex else None, **kw)

    def agg_count(self, a: AggCall, w: Poly) -> Val:
        text = _call_text(a)
        if not a.args:
            return self._counted(self.stat([w], 0, text), text,
                                 count=a.filter is None)
        return self._counted(self.stat([w, self.rows.Q(a.args[0])], 0, text), text)

    def _n(self, w: Poly, args: tuple[Expr, ...], text: str) -> tuple[str, str, str]:
        """(n, is_zero(n), n guarded against 0) for the rows where every arg is valid."""
        st = self.stat([w, *(self.rows.Q(x) for x in args)], 0, f"n of {text}")
        n = self.norm(st, f"n of {text}")
        z = self.fin.bit("is_zero", n)
        return n, z, self.fin.op("add", (n, z), 0, 1)

    def _mean(self, s: str, n1: str, bits: int, text: str) -> str:
        return self.fin.op("div", (s, n1), bits, 0, floor=0, text=text)

    def agg_sum(self, a: AggCall, w: Poly) -> Val:
        (x,) = a.args
        text = _call_text(a)
        _, z, _ = self._n(w, a.args, text)
        st = self.stat([w, self.rows.V(x)], x.bits, text)
        integral = st.integral and a.dtype.split("(")[0] in INTEGER_DTYPES | {"HUGEINT"}
        if len(st.terms) == 1 and st.terms[0][0] == 1.0:
            out = st.terms[0][1].name
        else:
            ex = self.exact(st)
            out = ex[0] if ex else None
        return Val("", x.bits, 1, integral, null=z, out=out, lazy=lambda: self.norm(st, text))

    def agg_avg(self, a: AggCall, w: Poly) -> Val:
        (x,) = a.args
        text = _call_text(a)
        _, z, n1 = self._n(w, a.args, text)
        s1 = self.norm(self.stat([w, self.rows.V(x)], x.bits, f"Σ {expr_text(x)}"), text)
        # the mean's rounding may turn a zero sum into +-1 unit: its sign is the exact sum's
        return Val(self._mean(s1, n1, x.bits, text), x.bits, null=z, sign=s1)

    def _moments(self, a: AggCall, w: Poly) -> tuple[str, str, str, str, int]:
        """(n, is_zero(n), n guarded, var_pop, bits of var) of the one argument."""
        (x,) = a.args
        text, v = _call_text(a), self.rows.V(x)
        n, z, n1 = self._n(w, a.args, text)
        bx, tx, fin = x.bits, expr_text(x), self.fin
        st_n = self.stat([w, self.rows.Q(x)], 0, f"n of {text}")
        st_1 = self.stat([w, v], bx, f"Σ {tx}")
        st_2 = self.stat([w, v, v], 2 * bx, f"Σ {tx}²", exact=True)
        mean = self._mean(self.norm(st_1, ""), n1, bx, f"mean of {tx}")
        ex2 = self._mean(self.norm(st_2, ""), n1, 2 * bx, f"mean of {tx}²")
        var = fin.op("sub", (ex2, fin.op("mul", (mean, mean), 2 * bx)), 2 * bx,
                     text=f"var_pop of {tx}")
        zero = self._zero_var(st_n, st_1, st_2, var, bx, tx)  # exactly 0 for constant values
        var = fin.op("select", (zero, fin.const(0.0), var), 2 * bx)
        return n, z, n1, var, 2 * bx

    def _sample(self, n: str, value: str, bits: int, text: str) -> tuple[str, str, int]:
        """``value * n / (n - 1)`` and the bit n < 2 (its NULL bit)."""
        fin = self.fin
        small = fin.bit("lt", n, fin.const(2.0))
        n1 = fin.op("select", (small, fin.const(1.0), fin.op("sub", (n, fin.const(1.0)), 0, 1)),
                    0, 1)
        ratio = fin.op("div", (n, n1), 1, 0, floor=0)
        return fin.op("mul", (value, ratio), bits + 1, text=text), small, bits + 1

    def agg_var_pop(self, a: AggCall, w: Poly) -> Val:
        _, z, _, var, bits = self._moments(a, w)
        return Val(var, bits, null=z)

    def agg_var_samp(self, a: AggCall, w: Poly) -> Val:
        n, _, _, var, bits = self._moments(a, w)
        v, small, b = self._sample(n, var, bits, _call_text(a))
        return Val(v, b, null=small)

    def agg_stddev_pop(self, a: AggCall, w: Poly) -> Val:
        v = self.agg_var_pop(a, w)
        v.transform, v.output_only = "sqrt", "STDDEV_POP (a square root)"
        return v

    def agg_stddev_samp(self, a: AggCall, w: Poly) -> Val:
        v = self.agg_var_samp(a, w)
        v.transform, v.output_only = "sqrt", "STDDEV_SAMP (a square root)"
        return v

    # --- two arguments (y, x) ---------------------------------------------------------------

    def _pairs(self, a: AggCall, w: Poly, *, squares: bool) -> dict[str, Any]:
        y, x = a.args
        rows, fin = self.rows, self.fin
        qx, qy, vx, vy = rows.Q(x), rows.Q(y), rows.V(x), rows.V(y)
        text = _call_text(a)
        st_n = self.stat([w, qx, qy], 0, f"n of {text}")
        n = self.norm(st_n, f"n of {text}")
        z = fin.bit("is_zero", n)
        n1 = fin.op("add", (n, z), 0, 1)
        bx, by = x.bits, y.bits
        tx, ty = expr_text(x), expr_text(y)
        st_x = self.stat([w, vx, qy], bx, f"Σ {tx}")
        st_y = self.stat([w, vy, qx], by, f"Σ {ty}")
        mx = self._mean(self.norm(st_x, ""), n1, bx, f"mean of {tx}")
        my = self._mean(self.norm(st_y, ""), n1, by, f"mean of {ty}")
        st_xy = self.stat([w, vx, vy], bx + by, f"Σ {tx} * {ty}")
        exy = self._mean(self.norm(st_xy, ""), n1, bx + by, f"mean of {tx} * {ty}")
        cov = fin.op("sub", (exy, fin.op("mul", (mx, my), bx + by)), bx + by,
                     text=f"covar_pop of {ty}, {tx}")
        out = dict(n=n, z=z, n1=n1, mx=mx, my=my, cov=cov, bx=bx, by=by, st_n=st_n, st_x=st_x,
                   st_y=st_y, st_xy=st_xy, text=text)
        if squares:
            for name, v, q, b, st_m, t in (("x", vx, qy, bx, st_x, tx), ("y", vy, qx, by, st_y,
                                                                            ty)):
                st2 = self.stat([w, v, v, q], 2 * b, f"Σ {t}²", exact=True)
                e2 = self._mean(self.norm(st2, ""), n1, 2 * b, f"mean of {t}²")
                m = out["m" + name]
                var = fin.op("sub", (e2, fin.op("mul", (m, m), 2 * b)), 2 * b,
                             text=f"var_pop of {t}")
                out["v" + name] = var
                out["s2" + name] = st2
                out["z" + name] = self._zero_var(st_n, st_m, st2, var, b, t)
        return out

    def _zero_var(self, st_n: Stat, st_s: Stat, st_2: Stat, var: str, b: int, t: str) -> str:
        """1 where the variance is 0: n Σx² - (Σx)² = 0, decided on exact field integers (a
        tolerance 2^(2b - 26) on the fixed-point variance if they would not fit)."""
        fin = self.fin
        en, es, e2 = self.exact(st_n), self.exact(st_s), self.exact(st_2)
        if en and es and e2:
            u2 = en[1] + e2[1]
            if 2 * b + 2 * MAX_ROWS_BITS - min(u2, 2 * es[1]) <= EXACT_BITS:
                left = fin.op("mul", (en[0], e2[0]), 2 * b, 2, exact=u2)
                right = fin.op("mul", (es[0], es[0]), 2 * b, 2, exact=2 * es[1])
                d = fin.op("sub", (left, right), 2 * b + 1, 2, exact=min(u2, 2 * es[1]),
                           text=f"n Σ{t}² - (Σ{t})²")
                return fin.bit("is_zero", d)
        return fin.bit("lt", var, fin.const(2.0 ** (2 * b - 26)))

    def agg_covar_pop(self, a: AggCall, w: Poly) -> Val:
        p = self._pairs(a, w, squares=False)
        return Val(p["cov"], p["bx"] + p["by"], null=p["z"])

    def agg_covar_samp(self, a: AggCall, w: Poly) -> Val:
        p = self._pairs(a, w, squares=False)
        v, small, b = self._sample(p["n"], p["cov"], p["bx"] + p["by"], p["text"])
        return Val(v, b, null=small)

    def agg_regr_count(self, a: AggCall, w: Poly) -> Val:
        y, x = a.args
        text = _call_text(a)
        return self._counted(self.stat([w, self.rows.Q(x), self.rows.Q(y)], 0, text), text)

    def agg_regr_avgx(self, a: AggCall, w: Poly) -> Val:
        p = self._pairs(a, w, squares=False)
        return Val(p["mx"], p["bx"], null=p["z"])

    def agg_regr_avgy(self, a: AggCall, w: Poly) -> Val:
        p = self._pairs(a, w, squares=False)
        return Val(p["my"], p["by"], null=p["z"])

    def _ssd(self, a: AggCall, w: Poly, which: str) -> Val:
        p = self._pairs(a, w, squares=which != "xy")
        fin = self.fin
        if which == "xy":
            s, m, bits = self.norm(p["st_x"], ""), p["my"], p["bx"] + p["by"]
            s2 = self.norm(p["st_xy"], "")
        else:
            s, m = self.norm(p["st_" + which], ""), p["m" + which]
            bits = 2 * p["b" + which]
            s2 = self.norm(p["s2" + which], "")
        v = fin.op("sub", (s2, fin.op("mul", (s, m), bits, 1)), bits, 1, text=p["text"])
        return Val(v, bits, 1, null=p["z"])

    def agg_regr_sxx(self, a: AggCall, w: Poly) -> Val:
        return self._ssd(a, w, "x")

    def agg_regr_syy(self, a: AggCall, w: Poly) -> Val:
        return self._ssd(a, w, "y")

    def agg_regr_sxy(self, a: AggCall, w: Poly) -> Val:
        return self._ssd(a, w, "xy")

    def _clamp(self, v: str, lo: float, hi: float) -> str:
        fin = self.fin
        v = fin.op("select", (fin.bit("lt", fin.const(hi), v), fin.const(hi), v), 0)
        return fin.op("select", (fin.bit("lt", v, fin.const(lo)), fin.const(lo), v), 0)

    def _guarded(self, den: str, bits: int, zero: str) -> str:
        """``den`` with 2^bits where ``zero`` (so that a division never sees 0)."""
        return self.fin.op("select", (zero, self.fin.const(2.0 ** bits), den), bits)

    def agg_corr(self, a: AggCall, w: Poly) -> Val:
        p = self._pairs(a, w, squares=True)
        fin = self.fin
        bx, by = p["bx"], p["by"]
        nan = fin.or_(p["zx"], p["zy"])
        den = self._guarded(fin.op("mul", (p["vx"], p["vy"]), 2 * bx + 2 * by), 2 * bx + 2 * by,
                            nan)
        c2 = fin.op("mul", (p["cov"], fin.op("abs", (p["cov"],), bx + by)), 2 * bx + 2 * by)
        r = fin.op("div", (c2, den), 0, floor=2 * bx + 2 * by - RESOLUTION,
                   text=f"sign(cov) cov² / (var var) of {p['text']}")
        return Val(self._clamp(r, -1.0, 1.0), 0, null=p["z"], nan=nan, transform="signed_sqrt",
                   output_only="CORR (a square root)")

    def agg_regr_r2(self, a: AggCall, w: Poly) -> Val:
        p = self._pairs(a, w, squares=True)
        fin = self.fin
        bx, by = p["bx"], p["by"]
        b = 2 * bx + 2 * by
        den = self._guarded(fin.op("mul", (p["vx"], p["vy"]), b), b, fin.or_(p["zx"], p["zy"]))
        r = fin.op("div", (fin.op("mul", (p["cov"], p["cov"]), b), den), 0,
                   floor=b - RESOLUTION, text=f"cov² / (var var) of {p['text']}")
        r = fin.op("select", (p["zy"], fin.const(1.0), self._clamp(r, 0.0, 1.0)), 0)
        return Val(r, 0, null=fin.or_(p["z"], p["zx"]))

    def _odds(self, num: str, nbits: int, den: str, dbits: int, guard: str | None, text: str,
              rp: int = 0) -> tuple[str, float]:
        """u = num / (|num| + c |den|) with c = 2^(nbits - dbits): num / den = c u / (1 - |u|).
        """
        fin = self.fin
        c = 2.0 ** (nbits - dbits)
        total = fin.op("add", (fin.op("abs", (num,), nbits, rp),
                               fin.op("mul", (fin.const(c), fin.op("abs", (den,), dbits, rp)),
                                      nbits, rp)), nbits + 1, rp)
        if guard:
            total = fin.op("select", (guard, fin.const(2.0 ** (nbits + 1)), total), nbits + 1,
                           rp)
        u = fin.op("div", (num, total), 0, floor=nbits + 1 - RESOLUTION, floor_rp=rp,
                   text=text)
        return u, c

    def agg_regr_slope(self, a: AggCall, w: Poly) -> Val:
        p = self._pairs(a, w, squares=True)
        bx, by = p["bx"], p["by"]
        u, c = self._odds(p["cov"], bx + by, p["vx"], 2 * bx, p["zx"],
                          f"slope of {p['text']} as u / (1 - |u|)")
        return Val(u, 0, null=p["z"], nan=p["zx"], transform="odds", scale=c,
                   output_only="REGR_SLOPE (opened as a ratio)")

    def agg_regr_intercept(self, a: AggCall, w: Poly) -> Val:
        p = self._pairs(a, w, squares=True)
        fin = self.fin
        bx, by = p["bx"], p["by"]
        nb = by + 2 * bx + 1
        num = fin.op("sub", (fin.op("mul", (p["my"], p["vx"]), by + 2 * bx),
                             fin.op("mul", (p["mx"], p["cov"]), by + 2 * bx)), nb)
        u, c = self._odds(num, nb, p["vx"], 2 * bx, p["zx"],
                          f"intercept of {p['text']} as u / (1 - |u|)")
        return Val(u, 0, null=fin.or_(p["z"], p["zx"]), transform="odds", scale=c,
                   output_only="REGR_INTERCEPT (opened as a ratio)")

    # --- order statistics -------------------------------------------------------------------

    def _order(self, a: AggCall, w: Poly, kind: str, q: float | None = None) -> Val:
        (x,) = a.args
        text = _call_text(a)
        rows = self.rows
        n, z, _ = self._n(w, a.args, text)
        weight = pmul(w, rows.Q(x))
        if len(weight) == 1 and next(iter(weight.values())) == 1.0:
            fac = rows.factors(next(iter(weight)))
        else:
            fac = rows.factors(next(iter(w))) + (rows.matQ(x),)
        if any(not rows.is_bit(f) for f in fac):
            raise InternalError(f"the weight of {text} is not 0/1")
        integral = x.integral and kind != "quantile"
        s = self.slot(kind, fac, x.bits, text, value=rows.matR(x), q=q, integral=integral, rp=0)
        fin = self.fin
        return Val("", x.bits, 0, integral, null=z, out=s.name,
                   lazy=lambda: fin.op("slot", (s.name,), s.bits, 0))

    def agg_min(self, a: AggCall, w: Poly) -> Val:
        return self._order(a, w, "min")

    def agg_max(self, a: AggCall, w: Poly) -> Val:
        return self._order(a, w, "max")

    def agg_quantile_cont(self, a: AggCall, w: Poly) -> Val:
        if a.q is None or not 0.0 <= a.q <= 1.0:
            raise ProgrammingError(f"{_call_text(a)}: the quantile must be between 0 and 1")
        return self._order(a, w, "quantile", float(a.q))

    # --- expressions over aggregates ----------------------------------------------------------

    def expr(self, e: AggExpr, *, top: bool = False) -> Val:
        """The finish value of an aggregate expression (``top``: it is an output or HAVING)."""
        if isinstance(e, AggCall):
            return self.call(e)
        if isinstance(e, AggLit):
            if e.value is None:
                return Val(self.fin.const(0.0), 0, null=self.fin.const(1.0))
            if isinstance(e.value, bool):
                one = self.fin.const(1.0)
                zero = self.fin.const(0.0)
                return Val(one if e.value else zero, 0, t=one if e.value else zero,
                           f=zero if e.value else one)
            v = float(e.value)
            return Val(self.fin.const(v), bits_of(v), integral=v.is_integer())
        if isinstance(e, KeyRef):
            raise NotSupportedError("a GROUP BY key inside an expression over aggregates is not "
                                    "supported; select the key as its own column")
        if isinstance(e, AggOp):
            return self.op(e, top=top)
        raise InternalError(f"unknown aggregate expression {type(e).__name__}")

    def arg(self, e: AggExpr, what: str) -> Val:
        v = self.expr(e)
        if v.output_only:
            raise NotSupportedError(f"{v.output_only} cannot be used inside {what}; select it "
                                    "as its own column")
        if v.inf:
            raise NotSupportedError(f"a quotient that is infinite where its denominator is 0 "
                                    f"cannot be used inside {what}")
        v.norm()
        return v

    def op(self, e: AggOp, *, top: bool) -> Val:
        fin, a = self.fin, e.args
        if e.op in ("and", "or", "not"):
            return self.logic(e)
        if e.op == "is_null":
            v = self.arg(a[0], "IS NULL")
            t = v.null or fin.const(0.0)
            return Val(t, 0, t=t, f=fin.not_(t))
        if e.op in ("<", "<=", ">", ">=", "=", "<>"):
            return self.compare(e)
        if e.op == "/" and not isinstance(a[1], AggLit) and top:
            return self.quotient(a[0], a[1])
        vals = [self.arg(x, f"operator {e.op}") for x in a]
        null = fin.or_(*(v.null for v in vals))
        nan = fin.or_(*(v.nan for v in vals))
        x = vals[0]
        if e.op == "neg":
            return Val(fin.op("neg", (x.name,), x.bits, x.rp), x.bits, x.rp, x.integral, null,
                       nan)
        if e.op == "abs":
            return Val(fin.op("abs", (x.name,), x.bits, x.rp), x.bits, x.rp, x.integral, null,
                       nan)
        if e.op == "cast":
            return x
        y = vals[1]
        if e.op in ("+", "-"):
            bits, rp = _max_bound(x, y)
            name = fin.op("add" if e.op == "+" else "sub", (x.name, y.name), bits, rp)
            return Val(name, bits, rp, x.integral and y.integral, null, nan)
        if e.op == "*":
            name = fin.op("mul", (x.name, y.name), x.bits + y.bits, x.rp + y.rp)
            return Val(name, x.bits + y.bits, x.rp + y.rp, x.integral and y.integral, null, nan)
        if e.op == "/":
            return self.divide(x, y, a[1], null, nan)
        raise NotSupportedError(f"operator {e.op} over aggregates is not supported")

    def divide(self, x: Val, y: Val, ey: AggExpr, null: str | None, nan: str | None) -> Val:
        fin = self.fin
        if isinstance(ey, AggLit):
            c = float(ey.value)
            if c == 0.0:
                raise ProgrammingError("division by the literal 0")
            bits = x.bits - bits_of(c) + 1
            return Val(fin.op("mul", (x.name, fin.const(1.0 / c)), bits, x.rp), bits, x.rp,
                       False, null, nan)
        if not y.integral:
            raise ProgrammingError(
                "division by an aggregate that is not an integer inside an expression: its "
                "magnitude has no public lower bound, so the quotient has no public bound; "
                "select the quotient as its own column (it is then opened as a ratio)")
        zy = fin.bit("is_zero", y.sign or y.name)
        den = fin.op("select", (zy, fin.const(1.0), y.name), y.bits, y.rp)
        inf = None
        if not (y.count and self.grouped):  # a COUNT(*) is >= 1 in every present group
            zx = fin.bit("is_zero", x.sign or x.name)
            inf = fin.and_(zy, fin.not_(zx))
            nan = fin.or_(nan, fin.and_(zy, zx))
        q = fin.op("div", (x.name, den), x.bits, x.rp, floor=0)
        return Val(q, x.bits, x.rp, False, null, nan, inf)

    def quotient(self, ex: AggExpr, ey: AggExpr) -> Val:
        """An output ``x / y`` over aggregates, opened as u = x / (|x| + c |y|) (odds)."""
        fin = self.fin
        x, y = self.arg(ex, "a division"), self.arg(ey, "a division")
        null = fin.or_(x.null, y.null)
        zx, zy = fin.bit("is_zero", x.sign or x.name), fin.bit("is_zero", y.sign or y.name)
        nan = fin.or_(x.nan, y.nan, fin.and_(zx, zy))
        inf = fin.and_(zy, fin.not_(zx))
        rp = max(x.rp, y.rp)
        # x / y = (x sign(y)) / |y|: the ratio u carries the denominator's sign in its numerator
        sy = fin.op("select", (fin.bit("lt", y.sign or y.name, fin.const(0.0)), fin.const(-1.0),
                               fin.const(1.0)), 0)
        num = fin.op("mul", (sy, x.name), x.bits, x.rp)
        u, c = self._odds(num, x.bits, y.name, y.bits, fin.and_(zx, zy), "x / y as ratio",
                          rp)
        sign = fin.op("select", (fin.bit("lt", u, fin.const(0.0)), fin.const(-1.0),
                                 fin.const(1.0)), 0)
        u = fin.op("select", (inf, sign, u), 0)
        return Val(u, 0, null=null, nan=nan, inf=inf, transform="odds", scale=c,
                   output_only="a quotient of aggregates (opened as a ratio)")

    def compare(self, e: AggOp) -> Val:
        fin = self.fin
        x, y = (self.arg(v, "a comparison") for v in e.args)
        op, swap = {"<": ("lt", False), "<=": ("le", False), ">": ("lt", True),
                    ">=": ("le", True), "=": ("eq", False), "<>": ("ne", False)}[e.op]
        if swap:
            x, y = y, x
        c = fin.bit(op, x.name, y.name)
        if x.nan or y.nan:  # DuckDB: NaN is larger than every number and equal to itself
            nx, ny = x.nan or fin.const(0.0), y.nan or fin.const(0.0)
            both = fin.and_(nx, ny)
            neither = fin.and_(fin.not_(nx), fin.not_(ny))
            if op in ("lt", "le"):
                c = fin.or_(fin.and_(neither, c), fin.and_(fin.not_(nx), ny),
                            both if op == "le" else None)
            else:
                same = fin.or_(fin.and_(neither, fin.bit("eq", x.name, y.name)), both)
                c = same if op == "eq" else fin.not_(same)
        null = fin.or_(x.null, y.null)
        t = fin.and_(fin.not_(null), c) if null else c
        f = fin.and_(fin.not_(null), fin.not_(c)) if null else fin.not_(c)
        return Val(t, 0, t=t, f=f, null=null)

    def logic(self, e: AggOp) -> Val:
        fin = self.fin
        vals = [self.expr(x) for x in e.args]
        for v in vals:
            if v.t is None:
                raise ProgrammingError("AND / OR / NOT over aggregates need predicates")
        if e.op == "not":
            t, f = vals[0].f, vals[0].t
        elif e.op == "and":
            t, f = fin.and_(vals[0].t, vals[1].t), fin.or_(vals[0].f, vals[1].f)
        else:
            t, f = fin.or_(vals[0].t, vals[1].t), fin.and_(vals[0].f, vals[1].f)
        null = fin.not_(fin.or_(t, f))
        return Val(t, 0, t=t, f=f, null=null)


def _max_bound(x: Val, y: Val) -> tuple[int, int]:
    return max(x.bits, y.bits) + 1, max(x.rp, y.rp)


def _call_text(a: AggCall) -> str:
    args = ", ".join(expr_text(x) for x in a.args) or "*"
    if a.q is not None and a.func == "QUANTILE_CONT":
        args += f", {a.q:g}"
    f = f" FILTER (WHERE {expr_text(a.filter)})" if a.filter is not None else ""
    return f"{a.func}({args}){f}"


__all__ = ["BOOLEAN", "Aggregates", "Finish", "Stat", "Val"]
