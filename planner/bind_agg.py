"""Binding of aggregate expressions (select items, HAVING, ORDER BY) to planner.logical nodes.

An aggregate expression is a tree of aggregate calls (:class:`AggCall`), group keys
(:class:`KeyRef`: a grouped expression, matched by structural equality with a GROUP BY key or
by the key's output name), literals and operators (:class:`AggOp`).  A column that is neither
grouped nor inside an aggregate is refused as DuckDB refuses it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sqlglot import exp

from dialect.errors import BindError, DataError, NotSupportedError, ProgrammingError
from planner.bind_expr import (
    _ARITH,
    _CMP,
    RowBinder,
    literal_value,
    make_lit,
    sql_text,
    unparen,
)
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
)
from planner.lower_rows import expr_text
from planner.physical import MAX_BITS
from planner.types import (
    FLOAT_TYPES,
    arith_type,
    base_type,
    decimal_scale,
    decimal_type,
    duckdb_decimal,
    expr_type,
    is_integer_type,
    literal_type,
)

#: sqlglot class -> canonical aggregate name (synonyms folded; MEDIAN becomes QUANTILE_CONT).
AGGREGATE_CLASSES: dict[type[exp.Expression], str] = {
    exp.Count: "COUNT", exp.Sum: "SUM", exp.Avg: "AVG", exp.Min: "MIN", exp.Max: "MAX",
    exp.VariancePop: "VAR_POP", exp.Variance: "VAR_SAMP", exp.StddevPop: "STDDEV_POP",
    exp.StddevSamp: "STDDEV_SAMP", exp.Stddev: "STDDEV_SAMP", exp.CovarPop: "COVAR_POP",
    exp.CovarSamp: "COVAR_SAMP", exp.Corr: "CORR", exp.RegrSlope: "REGR_SLOPE",
    exp.RegrIntercept: "REGR_INTERCEPT", exp.RegrR2: "REGR_R2", exp.RegrCount: "REGR_COUNT",
    exp.RegrSxx: "REGR_SXX", exp.RegrSyy: "REGR_SYY", exp.RegrSxy: "REGR_SXY",
    exp.RegrAvgx: "REGR_AVGX", exp.RegrAvgy: "REGR_AVGY",
    exp.Median: "QUANTILE_CONT", exp.PercentileCont: "QUANTILE_CONT",
}
UNARY = frozenset({"SUM", "AVG", "MIN", "MAX", "VAR_POP", "VAR_SAMP", "STDDEV_POP",
                   "STDDEV_SAMP"})
BINARY = frozenset({"COVAR_POP", "COVAR_SAMP", "CORR", "REGR_SLOPE", "REGR_INTERCEPT",
                    "REGR_R2", "REGR_COUNT", "REGR_SXX", "REGR_SYY", "REGR_SXY", "REGR_AVGX",
                    "REGR_AVGY"})
#: Every scalar aggregate name the binder produces (AggCall.func), for policies.
SQL_AGGREGATES = frozenset({"COUNT", "QUANTILE_CONT"} | UNARY | BINARY)
#: Names a policy may write for an aggregate (synonyms as DuckDB spells them).
SYNONYMS = {"VARIANCE": "VAR_SAMP", "STDDEV": "STDDEV_SAMP", "MEDIAN": "QUANTILE_CONT",
            "VARIANCE_POP": "VAR_POP", "VARIANCE_SAMP": "VAR_SAMP", "PERCENTILE_CONT":
            "QUANTILE_CONT"}
_BOOLEAN_OK = frozenset({"COUNT", "SUM", "MIN", "MAX"})
_KIND_NAMES = {NUMBER: "a number", BOOLEAN: "a boolean", TEXT: "a string"}


def aggregate_name(node: exp.Expression) -> str | None:
    """The canonical name of an aggregate node, or None if it is not one."""
    return AGGREGATE_CLASSES.get(type(node))


def contains_aggregate(node: exp.Expression) -> bool:
    return any(isinstance(n, (exp.AggFunc, exp.Filter)) for n in node.walk())


def agg_kind(e: AggExpr, keys: tuple[GroupKey, ...]) -> str:
    if isinstance(e, AggCall):
        return BOOLEAN if e.dtype == "BOOLEAN" else NUMBER
    if isinstance(e, KeyRef):
        return keys[e.index].expr.kind
    if isinstance(e, AggLit):
        return make_lit(e.value).kind
    assert isinstance(e, AggOp)
    return e.result_kind


def agg_type(e: AggExpr, keys: tuple[GroupKey, ...]) -> str:
    """DuckDB's type name of a bound aggregate expression."""
    if isinstance(e, AggCall):
        return e.dtype
    if isinstance(e, KeyRef):
        return keys[e.index].dtype
    if isinstance(e, AggLit):
        lit = make_lit(e.value)
        return literal_type(lit.value, lit.kind)
    assert isinstance(e, AggOp)
    if e.result_kind == BOOLEAN:
        return "BOOLEAN"
    if e.op == "/":
        return "DOUBLE"
    if e.op in ("neg", "abs"):
        return agg_type(e.args[0], keys)
    return arith_type(e.op, [agg_type(a, keys) for a in e.args],
                      [isinstance(a, AggLit) for a in e.args])


#: The largest window (in units of the scale 10^-s) in which a DECIMAL quantile is snapped to
#: a multiple of 10^-s before DuckDB's truncation is applied (see :func:`quantile_type`).
SNAP_UNITS = 2.0 ** -12
#: Bound (as a power of two of the column's bound 2^bits) of the error of an opened quantile:
#: the owners' rounding of the two order statistics (2^(bits - 33) each) plus the rounding of
#: the interpolation (< 2^(bits - 32)), with a factor 2 to spare (engine.protocols.order_stats).
QUANTILE_ERROR_BITS = -30


def quantile_type(x: Expr, q: float) -> str:
    """DuckDB's type of QUANTILE_CONT(x, q): x's DECIMAL(p,s) or FLOAT, else DOUBLE.

    DuckDB computes a DECIMAL quantile as ``lo + (hi - lo) * d`` on the unscaled integers and
    truncates it toward zero at the scale s (``QUANTILE_CONT(d, 0.25)`` of DECIMAL(4,1) values
    24.7, 24.8 is 24.7, not 24.725).  The engine opens the untruncated value (|error| <
    2^(bits + QUANTILE_ERROR_BITS)); the receivers snap it to the nearest multiple of 10^-s if
    it is that close, else truncate it (engine.protocols.present), which is DuckDB's answer
    unless the exact quantile lies within that error below a multiple of 10^-s.  Refused
    (NotSupportedError) where that window exceeds ``SNAP_UNITS`` of the scale, and for
    arguments DuckDB types DECIMAL that this planner types DOUBLE (``d * 2``, ``i * 1.5``)."""
    dtype = decimal_type(x)
    text = f"QUANTILE_CONT({expr_text(x)}, {q:g})"
    if dtype is not None:
        s = decimal_scale(dtype) or 0
        bits = min(x.bits, MAX_BITS)
        if 2.0 ** (bits + QUANTILE_ERROR_BITS) * 10.0 ** s > SNAP_UNITS:
            unit = "an integer" if s == 0 else f"a multiple of 10^-{s}"
            raise NotSupportedError(
                f"{text} over {dtype} is not supported for values up to 2^{x.bits} (the "
                f"argument's public bound): DuckDB truncates it toward zero to {unit}, which "
                "the engine cannot decide at that magnitude (its error may reach "
                f"2^{bits + QUANTILE_ERROR_BITS}); cast the argument to DOUBLE for the "
                "untruncated quantile")
        return dtype
    t = expr_type(x)
    if base_type(t) in FLOAT_TYPES and base_type(t) != "DOUBLE":
        return "FLOAT"
    if duckdb_decimal(x):
        raise NotSupportedError(
            f"{text} is not supported: DuckDB computes it as a DECIMAL truncated to the scale "
            "of its argument, whose DECIMAL type the secure engine does not derive; cast the "
            "argument: CAST(... AS DECIMAL(p,s)) or CAST(... AS DOUBLE)")
    return "DOUBLE"


def truncated(e: AggExpr) -> bool:
    """Whether ``e`` is a QUANTILE_CONT with a DECIMAL result (truncated by the receivers)."""
    return isinstance(e, AggCall) and e.func == "QUANTILE_CONT" and \
        base_type(e.dtype) == "DECIMAL"


def check_truncated(e: AggExpr, node: exp.Expression, where: str) -> None:
    """Refuse a DECIMAL quantile inside an expression: its DuckDB truncation happens only where
    it is an output column of its own."""
    if truncated(e):
        assert isinstance(e, AggCall)
        raise NotSupportedError(
            f"QUANTILE_CONT over {e.dtype} inside an expression ({sql_text(node)} in {where}) "
            f"is not supported: DuckDB truncates it to {e.dtype} first, which the secure "
            "engine does only for an output column of its own; select it alone, or cast its "
            "argument to DOUBLE")


@dataclass
class AggBinder:
    """Binds aggregate expressions against the GROUP BY ``keys``.

    ``aliases`` maps select-item aliases (lower case) to their expressions, for HAVING and
    ORDER BY.
    """

    rows: RowBinder
    keys: tuple[GroupKey, ...]
    aliases: Mapping[str, exp.Expression] | None = None

    def bind(self, node: exp.Expression, where: str, _seen: frozenset[str] = frozenset()
             ) -> AggExpr:
        node = unparen(node)
        if isinstance(node, exp.Window):
            raise NotSupportedError(f"window function (OVER) in {where} is not supported")
        if isinstance(node, exp.Filter) or aggregate_name(node) is not None:
            return self.call(node, where)
        if isinstance(node, exp.AggFunc):
            raise NotSupportedError(f"aggregate {node.sql_name().upper()} is not supported")
        ok, value = literal_value(node)
        if ok:
            lit = make_lit(value)
            return AggLit(value, bits=lit.bits, integral=lit.integral, nullable=value is None)
        if not contains_aggregate(node):
            ref = self.grouped(node, where, _seen)
            if ref is not None:
                return ref
        return self.operator(node, where)

    def grouped(self, node: exp.Expression, where: str, seen: frozenset[str]) -> AggExpr | None:
        """A KeyRef (or an alias's expression) for an aggregate-free ``node``, None if it
        is an operator to decompose; BindError for an ungrouped column."""
        try:
            e = self.rows.bind(node, where)
        except BindError:
            if not isinstance(node, exp.Column):
                return None  # decompose: the leaf that fails names itself (or is an alias)
            found = self.by_name(node.name, where, seen) if not node.table else None
            if found is not None:
                return found
            raise
        for i, key in enumerate(self.keys):
            if key.expr == e:
                return self.key_ref(i)
        if isinstance(node, exp.Column):
            raise BindError(f"column {sql_text(node)} must appear in the GROUP BY clause or be "
                            f"used in an aggregate function (in {where})")
        return None

    def by_name(self, name: str, where: str, seen: frozenset[str]) -> AggExpr | None:
        for i, key in enumerate(self.keys):
            if key.name.lower() == name.lower():
                return self.key_ref(i)
        alias = (self.aliases or {}).get(name.lower())
        if alias is not None and name.lower() not in seen:
            return self.bind(alias, where, seen | {name.lower()})
        return None

    def key_ref(self, i: int) -> KeyRef:
        k = self.keys[i]
        return KeyRef(i, bits=k.expr.bits, integral=k.expr.integral,
                      nullable=None in k.domain)

    # --- aggregate calls ----------------------------------------------------------------------

    def call(self, node: exp.Expression, where: str) -> AggCall:
        filt: Expr | None = None
        if isinstance(node, exp.Filter):
            cond = node.expression
            cond = cond.this if isinstance(cond, exp.Where) else cond
            filt = self.rows.predicate(cond, "FILTER")
            node = unparen(node.this)
            if isinstance(node, exp.Filter) or aggregate_name(node) is None:
                raise NotSupportedError(f"FILTER must follow an aggregate ({sql_text(node)})")
        func = aggregate_name(node)
        assert func is not None
        args, q = self.arguments(node, func)
        bound = tuple(self.argument(a, func, node) for a in args)
        if func == "COUNT" and bound and bound[0] is None:
            bound = ()
        exprs = tuple(b for b in bound if b is not None)
        return self.make_call(func, exprs, filt, q)

    def arguments(self, node: exp.Expression, func: str) -> tuple[list[exp.Expression],
                                                                  float | None]:
        """The argument nodes of an aggregate (arity checked) and QUANTILE_CONT's q."""
        extra = [k for k in ("count", "quantile") if node.args.get(k) is not None]
        args = [v for k in ("this", "expression") if (v := node.args.get(k)) is not None]
        args += list(node.args.get("expressions") or [])
        if isinstance(node, exp.Median):
            return self.check_arity(func, args, 1, extra, "MEDIAN(x)"), 0.5
        if func == "QUANTILE_CONT":
            args = self.check_arity(func, args, 2, extra, "QUANTILE_CONT(x, q)")
            return [args[0]], self.quantile(args[1])
        if func == "COUNT":
            if args and isinstance(args[0], exp.Star):
                args = args[1:]
            n = min(len(args), 1) if len(args) < 2 else 1
            return self.check_arity(func, args, n, extra, "COUNT(*) or COUNT(x)"), None
        n = 2 if func in BINARY else 1
        sig = f"{func}(y, x)" if func.startswith("REGR") else (
            f"{func}(x, y)" if n == 2 else f"{func}(x)")
        return self.check_arity(func, args, n, extra, sig), None

    @staticmethod
    def check_arity(func: str, args: list[exp.Expression], n: int, extra: list[str],
                    sig: str) -> list[exp.Expression]:
        if len(args) != n or extra:
            words = {0: "no argument", 1: "one argument", 2: "two arguments"}[n]
            got = len(args) + len(extra)
            raise ProgrammingError(f"{func} takes {words} ({sig}), not {got}")
        for a in args:
            if isinstance(a, exp.Distinct):
                raise NotSupportedError(f"{func}(DISTINCT ...) is not supported")
            if isinstance(a, exp.Star):
                raise ProgrammingError(f"* is allowed only in COUNT(*), not in {func}")
        return args

    @staticmethod
    def quantile(node: exp.Expression) -> float:
        ok, q = literal_value(node)
        if not ok or not isinstance(q, (int, float)) or isinstance(q, bool):
            raise ProgrammingError(f"the quantile of QUANTILE_CONT must be a number literal "
                                   f"in [0, 1], not {sql_text(node)}")
        if not 0 <= q <= 1:
            raise ProgrammingError(f"the quantile of QUANTILE_CONT must be in [0, 1], not {q}")
        return float(q)

    def argument(self, node: exp.Expression, func: str, call: exp.Expression) -> Expr | None:
        """One bound argument (None: COUNT of a join key, i.e. COUNT(*))."""
        node = unparen(node)
        where = f"{func}({sql_text(node)})"
        if isinstance(node, exp.Column):
            table, column = self.rows.resolve(node)
            if self.rows.is_key(table, column):
                if func == "COUNT":
                    return None
                raise BindError(
                    f"column {column.name} is the key of {table.name}: the key is never "
                    f"revealed nor aggregated, so {func}({node.sql()}) is refused")
        e = self.rows.bind(node, where)
        if func == "COUNT":
            # COUNT(<non-NULL constant>) counts every row: COUNT(*)
            return None if isinstance(e, Lit) and e.value is not None else e
        if e.kind == BOOLEAN and func in _BOOLEAN_OK:
            return Call("cast", (e,), NUMBER, to="INTEGER", bits=0, integral=True,
                        nullable=e.nullable)
        if e.kind != NUMBER:
            if hasattr(e, "ref"):
                ref = e.ref  # type: ignore[attr-defined]
                what = f"column {ref.column} of {ref.table} is {ref.dtype}"
                what += " (non-numeric)" if e.kind == TEXT else ""
                raise DataError(f"{what}, {func} needs a numeric column")
            raise DataError(f"{func} needs a numeric argument, not {_KIND_NAMES[e.kind]} "
                            f"({sql_text(node)})")
        return e

    def make_call(self, func: str, args: tuple[Expr, ...], filt: Expr | None,
                  q: float | None) -> AggCall:
        x = args[0] if args else None
        bx = x.bits if x is not None else 0
        by = args[1].bits if len(args) > 1 else 0  # REGR_*(y, x): bx is y's, by is x's
        bits = {"COUNT": 0, "REGR_COUNT": 0, "VAR_POP": 2 * bx, "VAR_SAMP": 2 * bx,
                "COVAR_POP": bx + by, "COVAR_SAMP": bx + by, "CORR": 0, "REGR_R2": 0,
                "REGR_SLOPE": MAX_BITS, "REGR_INTERCEPT": MAX_BITS, "REGR_SXX": 2 * by,
                "REGR_SYY": 2 * bx, "REGR_SXY": bx + by, "REGR_AVGX": by,
                "REGR_AVGY": bx}.get(func, bx)
        counts = func in ("COUNT", "REGR_COUNT")
        integral = counts or (func in ("SUM", "MIN", "MAX") and x is not None and x.integral)
        if func == "COUNT":
            dtype = "BIGINT"
        elif func == "REGR_COUNT":
            dtype = "UINTEGER"  # DuckDB 2.0
        elif func == "SUM":
            dtype = "HUGEINT" if x is not None and is_integer_type(expr_type(x)) else "DOUBLE"
        elif func in ("MIN", "MAX"):
            assert x is not None
            inner = x.args[0] if isinstance(x, Call) and x.op == "cast" and \
                x.args[0].kind == BOOLEAN else x
            dtype = expr_type(inner)
            if decimal_type(inner) is None and duckdb_decimal(inner):
                raise NotSupportedError(
                    f"{func}({expr_text(x)}) is not supported: DuckDB computes it as a DECIMAL "
                    "whose type the secure engine does not derive; cast the argument: "
                    "CAST(... AS DECIMAL(p,s)) or CAST(... AS DOUBLE)")
        elif func == "QUANTILE_CONT":
            assert x is not None and q is not None
            dtype = quantile_type(x, q)
        else:
            dtype = "DOUBLE"
        return AggCall(func, args, filt, q, dtype, bits=bits, integral=integral,
                       nullable=not counts)

    # --- operators over aggregates ------------------------------------------------------------

    def operator(self, node: exp.Expression, where: str) -> AggExpr:
        e = self._operator(node, where)
        if isinstance(e, AggOp):
            for a in e.args:
                check_truncated(a, node, where)
        return e

    def _operator(self, node: exp.Expression, where: str) -> AggExpr:
        if type(node) in _ARITH:
            return self.arith(node, _ARITH[type(node)], where)
        if type(node) in _CMP:
            a, b = self.bind(node.this, where), self.bind(node.expression, where)
            return self.compare(_CMP[type(node)], a, b, node, where)
        if isinstance(node, (exp.Neg, exp.Abs)):
            a = self.number(self.bind(node.this, where), node.this, where)
            op = "neg" if isinstance(node, exp.Neg) else "abs"
            return AggOp(op, (a,), NUMBER, bits=a.bits, integral=a.integral,
                         nullable=a.nullable)
        if isinstance(node, (exp.And, exp.Or)):
            a = self.boolean(self.bind(node.this, where), node.this, where)
            b = self.boolean(self.bind(node.expression, where), node.expression, where)
            op = "and" if isinstance(node, exp.And) else "or"
            return AggOp(op, (a, b), BOOLEAN, nullable=a.nullable or b.nullable)
        if isinstance(node, exp.Not):
            a = self.boolean(self.bind(node.this, where), node.this, where)
            return AggOp("not", (a,), BOOLEAN, nullable=a.nullable)
        if isinstance(node, exp.Is) and isinstance(unparen(node.expression), exp.Null):
            a = self.bind(node.this, where)
            return AggOp("is_null", (a,), BOOLEAN, nullable=False)
        if isinstance(node, exp.Between):
            x = self.bind(node.this, where)
            lo = self.compare(">=", x, self.bind(node.args["low"], where), node, where)
            hi = self.compare("<=", x, self.bind(node.args["high"], where), node, where)
            return AggOp("and", (lo, hi), BOOLEAN, nullable=lo.nullable or hi.nullable)
        raise NotSupportedError(f"expression {sql_text(node)} in {where} is not supported "
                                "over aggregates")

    def number(self, e: AggExpr, node: exp.Expression, where: str) -> AggExpr:
        kind = agg_kind(e, self.keys)
        if kind != NUMBER and not (isinstance(e, AggLit) and e.value is None):
            raise DataError(f"{sql_text(node)} is {_KIND_NAMES[kind]}, arithmetic needs a "
                            f"number (in {where})")
        return e

    def boolean(self, e: AggExpr, node: exp.Expression, where: str) -> AggExpr:
        kind = agg_kind(e, self.keys)
        if kind != BOOLEAN and not (isinstance(e, AggLit) and e.value is None):
            raise DataError(f"{sql_text(node)} is {_KIND_NAMES[kind]}, AND/OR/NOT need a "
                            f"boolean (in {where})")
        return e

    def arith(self, node: exp.Expression, op: str, where: str) -> AggExpr:
        a = self.number(self.bind(node.this, where), node.this, where)
        b = self.number(self.bind(node.expression, where), node.expression, where)
        nullable = a.nullable or b.nullable
        if op == "/":
            return self.divide(a, b, node, where)
        bits = a.bits + b.bits if op == "*" else max(a.bits, b.bits) + 1
        return AggOp(op, (a, b), NUMBER, bits=bits, integral=a.integral and b.integral,
                     nullable=nullable)

    def divide(self, a: AggExpr, b: AggExpr, node: exp.Expression, where: str) -> AggExpr:
        if isinstance(b, AggLit):
            if b.value == 0:
                raise ProgrammingError(f"division by zero in {where}: {sql_text(node)}")
            value = b.value
            bits = a.bits if value is None else a.bits - math.floor(math.log2(abs(value)))
        elif not contains_aggregate(node.expression):
            raise NotSupportedError(
                f"division by {sql_text(node.expression)} in {where} is not supported: divide "
                "by an aggregate or by a nonzero number literal")
        elif isinstance(b, AggCall) and b.func in ("COUNT", "REGR_COUNT"):
            bits = a.bits  # a nonzero count is >= 1
        else:
            bits = MAX_BITS  # no public bound: the lowering bounds it by the divisor's floor
        return AggOp("/", (a, b), NUMBER, bits=bits, integral=False, nullable=True)

    def compare(self, op: str, a: AggExpr, b: AggExpr, node: exp.Expression,
                where: str) -> AggExpr:
        ka, kb = agg_kind(a, self.keys), agg_kind(b, self.keys)
        nulls = [isinstance(x, AggLit) and x.value is None for x in (a, b)]
        if ka != kb and not any(nulls):
            raise DataError(f"cannot compare {_KIND_NAMES[ka]} with {_KIND_NAMES[kb]} in "
                            f"{where}: {sql_text(node)}")
        if TEXT in (ka, kb) and op not in ("=", "<>"):
            raise NotSupportedError(f"ordering comparison {op} on strings in {where} is not "
                                    f"supported ({sql_text(node)})")
        return AggOp(op, (a, b), BOOLEAN, nullable=a.nullable or b.nullable)
