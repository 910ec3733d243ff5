"""Binding of row expressions (WHERE, FILTER, group keys, aggregate arguments) to
:mod:`planner.logical` nodes: types, parties, nullability and public magnitude bounds.

Bounds (``bits``, |v| <= 2**bits): a column's declared ``scale_bits`` (else its type's range,
at most MAX_BITS); ``+``/``-`` the larger bound plus one; ``*`` the sum; ``/ c`` the bound
minus floor(log2|c|); a literal ceil(log2|v|); CASE/COALESCE the largest branch; ABS and
unary minus the same; comparisons and booleans 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from sqlglot import exp

from dialect.errors import BindError, DataError, NotSupportedError, ProgrammingError
from planner.catalog import ColumnSchema, TableSchema
from planner.logical import BOOLEAN, NUMBER, TEXT, Call, Col, Expr, Lit
from planner.plan import ColumnRef
from planner.types import case_values, column_bits, is_integer_type, kind_of_type

#: A resolver: exp.Column -> (table, column); raises BindError for unknown/ambiguous names.
Resolver = Callable[[exp.Column], tuple[TableSchema, ColumnSchema]]

_CMP = {exp.EQ: "=", exp.NEQ: "<>", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}
_ARITH = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/"}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "<>": "<>"}
#: CAST target -> DuckDB type name (numeric types only).
_CAST_NAMES = {
    exp.DataType.Type.TINYINT: "TINYINT", exp.DataType.Type.SMALLINT: "SMALLINT",
    exp.DataType.Type.INT: "INTEGER", exp.DataType.Type.BIGINT: "BIGINT",
    exp.DataType.Type.INT128: "HUGEINT", exp.DataType.Type.FLOAT: "FLOAT",
    exp.DataType.Type.DOUBLE: "DOUBLE", exp.DataType.Type.DECIMAL: "DECIMAL",
    exp.DataType.Type.UTINYINT: "UTINYINT", exp.DataType.Type.USMALLINT: "USMALLINT",
    exp.DataType.Type.UINT: "UINTEGER", exp.DataType.Type.UBIGINT: "UBIGINT",
}
_KIND_NAMES = {NUMBER: "a number", BOOLEAN: "a boolean", TEXT: "a string"}


def sql_text(node: exp.Expression) -> str:
    """``node`` as DuckDB SQL (for messages)."""
    return node.sql(dialect="duckdb")


def number(text: str) -> int | float:
    """A numeric literal's value: int unless it has a point or an exponent."""
    t = text.strip()
    try:
        return int(t)
    except ValueError:
        return float(t)


def unparen(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def literal_value(node: exp.Expression) -> tuple[bool, Any]:
    """(True, value) if ``node`` is a literal (a number, a negated number, a string, TRUE,
    FALSE or NULL), else (False, None)."""
    node = unparen(node)
    if isinstance(node, exp.Neg):
        ok, v = literal_value(node.this)
        if ok and isinstance(v, (int, float)) and not isinstance(v, bool):
            return True, -v
        return False, None
    if isinstance(node, exp.Literal):
        return True, (node.this if node.is_string else number(node.this))
    if isinstance(node, exp.Boolean):
        return True, bool(node.this)
    if isinstance(node, exp.Null):
        return True, None
    return False, None


def make_lit(value: Any, kind: str | None = None) -> Lit:
    if kind is None:
        kind = (BOOLEAN if isinstance(value, bool) else TEXT if isinstance(value, str)
                else NUMBER)
    integral = isinstance(value, int) and not isinstance(value, bool) or kind == BOOLEAN
    bits = 0
    if kind == NUMBER and value not in (None, 0):
        bits = math.ceil(math.log2(abs(value)))
    return Lit(value, kind, bits=bits, integral=integral, nullable=value is None)


def _retype_null(e: Expr, kind: str) -> Expr:
    """A NULL literal takes the kind of its context (CASE branches, COALESCE, comparisons)."""
    if isinstance(e, Lit) and e.value is None and e.kind != kind:
        return make_lit(None, kind)
    return e


def _null_kind(args: list[Expr]) -> str:
    kinds = {a.kind for a in args if not (isinstance(a, Lit) and a.value is None)}
    return kinds.pop() if len(kinds) == 1 else NUMBER


class RowBinder:
    """Binds row expressions; ``resolve`` names columns; ``where`` names the clause (messages)."""

    def __init__(self, resolve: Resolver, is_key: Callable[[TableSchema, ColumnSchema], bool]):
        self.resolve = resolve
        self.is_key = is_key

    # --- entry points -------------------------------------------------------------------------

    def predicate(self, node: exp.Expression, where: str) -> Expr:
        """A BOOLEAN row expression (WHERE, FILTER)."""
        e = self.bind(node, where)
        if e.kind != BOOLEAN:
            raise DataError(f"{where} needs a boolean condition, not {_KIND_NAMES[e.kind]} "
                            f"({sql_text(node)})")
        return e

    def bind(self, node: exp.Expression, where: str) -> Expr:
        """Bind the row expression ``node`` found in ``where`` (e.g. ``"WHERE"``)."""
        node = unparen(node)
        ok, value = literal_value(node)
        if ok:
            return make_lit(value)
        if isinstance(node, exp.Column):
            return self.column(node, where)
        if isinstance(node, (exp.AggFunc, exp.Filter, exp.Window)):
            name = node.key.upper() if isinstance(node, (exp.Filter, exp.Window)) else \
                node.sql_name().upper()
            raise BindError(f"aggregate {name} is not allowed in {where} "
                            f"({sql_text(node)})")
        method = self._dispatch(node)
        if method is None:
            raise NotSupportedError(f"expression {sql_text(node)} in {where} is not supported")
        return method(node, where)

    def _dispatch(self, node: exp.Expression) -> Callable[[Any, str], Expr] | None:
        for cls, method in (
            (tuple(_CMP), self.compare), (tuple(_ARITH), self.arith), (exp.Neg, self.neg),
            (exp.Abs, self.abs), ((exp.And, exp.Or), self.logic), (exp.Not, self.not_),
            (exp.Is, self.is_), (exp.Between, self.between), (exp.In, self.in_),
            (exp.Case, self.case), (exp.If, self.iff), (exp.Coalesce, self.coalesce),
            (exp.Cast, self.cast), (exp.TryCast, self.cast),
        ):
            if isinstance(node, cls):
                return method
        return None

    # --- leaves -------------------------------------------------------------------------------

    def column(self, col: exp.Column, where: str) -> Col:
        table, column = self.resolve(col)
        if self.is_key(table, column):
            raise BindError(
                f"column {column.name} is the key of {table.name}: the key is never revealed "
                f"nor aggregated, so it cannot be used in {where}")
        kind = kind_of_type(column.dtype)
        if kind is None:
            raise DataError(f"column {column.name} of {table.name} is {column.dtype}, which "
                            f"the secure engine cannot compute with (in {where})")
        ref = ColumnRef(table.party, table.name, column.name, column.dtype.upper(),
                        column.scale_bits)
        bits = 0 if kind == TEXT else column_bits(column.dtype, column.scale_bits)
        return Col(ref, kind, bits=bits,
                   integral=kind == BOOLEAN or is_integer_type(column.dtype),
                   nullable=column.nullable)

    # --- numbers ------------------------------------------------------------------------------

    def numeric(self, e: Expr, node: exp.Expression, what: str, where: str) -> Expr:
        """``e`` if it is a number; DataError naming the column/expression otherwise."""
        if e.kind == NUMBER or (isinstance(e, Lit) and e.value is None):
            return _retype_null(e, NUMBER)
        if isinstance(e, Col):
            name = f"column {e.ref.column} of {e.ref.table} is {e.ref.dtype}"
            if e.kind == TEXT:
                name += " (non-numeric)"
        else:
            name = f"{sql_text(node)} is {_KIND_NAMES[e.kind]}"
        hint = "; cast it: CAST(... AS INTEGER)" if e.kind == BOOLEAN else ""
        raise DataError(f"{name}, {what} needs a number (in {where}){hint}")

    def arith(self, node: exp.Expression, where: str) -> Expr:
        op = _ARITH[type(node)]
        a = self.numeric(self.bind(node.this, where), node.this, op, where)
        if op == "/":
            return self.divide(a, node, where)
        b = self.numeric(self.bind(node.expression, where), node.expression, op, where)
        bits = a.bits + b.bits if op == "*" else max(a.bits, b.bits) + 1
        return Call(op, (a, b), NUMBER, bits=bits, integral=a.integral and b.integral,
                    nullable=a.nullable or b.nullable)

    def divide(self, a: Expr, node: exp.Div, where: str) -> Expr:
        ok, value = literal_value(node.expression)
        if not ok or not isinstance(value, (int, float)) or isinstance(value, bool):
            raise NotSupportedError(
                f"division by {sql_text(node.expression)} in {where} is not supported: a row "
                "expression may only be divided by a nonzero number literal (divide "
                "aggregates instead, e.g. SUM(x) / SUM(y))")
        if value == 0:
            raise ProgrammingError(f"division by zero in {where}: {sql_text(node)}")
        b = make_lit(value)
        bits = a.bits - math.floor(math.log2(abs(value)))
        return Call("/", (a, b), NUMBER, bits=bits, integral=False, nullable=a.nullable)

    def neg(self, node: exp.Neg, where: str) -> Expr:
        a = self.numeric(self.bind(node.this, where), node.this, "unary -", where)
        return Call("neg", (a,), NUMBER, bits=a.bits, integral=a.integral, nullable=a.nullable)

    def abs(self, node: exp.Abs, where: str) -> Expr:
        a = self.numeric(self.bind(node.this, where), node.this, "ABS", where)
        return Call("abs", (a,), NUMBER, bits=a.bits, integral=a.integral, nullable=a.nullable)

    def cast(self, node: exp.Cast, where: str) -> Expr:
        to = node.args.get("to")
        name = _CAST_NAMES.get(to.this) if isinstance(to, exp.DataType) else None
        if name is None:
            target = sql_text(to) if to is not None else "?"
            raise NotSupportedError(f"CAST to {target} in {where} is not supported: only casts "
                                    "between numeric types (INTEGER, BIGINT, DOUBLE, DECIMAL, "
                                    "...) are")
        if name == "DECIMAL":
            params = [p.this.this for p in to.expressions if isinstance(p.this, exp.Literal)]
            name = f"DECIMAL({','.join(params)})" if params else "DECIMAL(18,3)"
        a = self.bind(node.this, where)
        if a.kind == BOOLEAN:
            a_bits = 0
        else:
            a = self.numeric(a, node.this, "CAST", where)
            a_bits = a.bits
        integral = is_integer_type(name)
        bits = max(a_bits, 0) if integral else a_bits
        return Call("cast", (a,), NUMBER, to=name, bits=bits, integral=integral,
                    nullable=a.nullable)

    # --- comparisons --------------------------------------------------------------------------

    def compare(self, node: exp.Expression, where: str) -> Expr:
        a, b = self.bind(node.this, where), self.bind(node.expression, where)
        return self.comparison(_CMP[type(node)], a, b, node, where)

    def comparison(self, op: str, a: Expr, b: Expr, node: exp.Expression, where: str) -> Expr:
        kind = _null_kind([a, b])
        a, b = _retype_null(a, kind), _retype_null(b, kind)
        if a.kind != b.kind:
            raise DataError(f"cannot compare {_KIND_NAMES[a.kind]} with {_KIND_NAMES[b.kind]} "
                            f"in {where}: {sql_text(node)}")
        if kind in (TEXT, BOOLEAN) and op not in ("=", "<>"):
            what = "strings" if kind == TEXT else "booleans"
            raise NotSupportedError(f"ordering comparison {op} on {what} in {where} is not "
                                    f"supported ({sql_text(node)}); use = or <> or IN")
        if kind == TEXT:
            self.text_local(a, b, node, where)
        return Call(op, (a, b), BOOLEAN, nullable=a.nullable or b.nullable)

    def text_local(self, a: Expr, b: Expr, node: exp.Expression, where: str) -> None:
        parties = a.parties | b.parties
        if len(parties) > 1:
            raise NotSupportedError(
                f"string comparison across parties in {where} is not supported "
                f"({sql_text(node)}): strings are compared only with literals or within one "
                "party's table")

    def between(self, node: exp.Between, where: str) -> Expr:
        x = self.bind(node.this, where)
        lo, hi = self.bind(node.args["low"], where), self.bind(node.args["high"], where)
        ge = self.comparison(">=", x, lo, node, where)
        le = self.comparison("<=", x, hi, node, where)
        return Call("and", (ge, le), BOOLEAN, nullable=ge.nullable or le.nullable)

    def in_(self, node: exp.In, where: str) -> Expr:
        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            raise NotSupportedError(f"IN with a subquery in {where} is not supported")
        x = self.bind(node.this, where)
        values: list[Expr] = []
        for item in node.expressions:
            ok, value = literal_value(item)
            if not ok:
                raise NotSupportedError(f"IN ({sql_text(item)}, ...) in {where}: the list of "
                                        "IN must hold literals only")
            values.append(make_lit(value))
        kind = _null_kind([x, *values])
        x = _retype_null(x, kind)
        values = [_retype_null(v, kind) for v in values]
        for v in values:
            if v.kind != x.kind:
                raise DataError(f"cannot compare {_KIND_NAMES[x.kind]} with "
                                f"{_KIND_NAMES[v.kind]} in {where}: {sql_text(node)}")
        nullable = x.nullable or any(v.nullable for v in values)
        return Call("in", (x, *values), BOOLEAN, nullable=nullable)

    # --- logic --------------------------------------------------------------------------------

    def boolean(self, node: exp.Expression, where: str, what: str) -> Expr:
        e = self.bind(node, where)
        e = _retype_null(e, BOOLEAN)
        if e.kind != BOOLEAN:
            raise DataError(f"{what} needs a boolean operand, not {_KIND_NAMES[e.kind]} "
                            f"({sql_text(node)}) in {where}")
        return e

    def logic(self, node: exp.Expression, where: str) -> Expr:
        op = "and" if isinstance(node, exp.And) else "or"
        a = self.boolean(node.this, where, op.upper())
        b = self.boolean(node.expression, where, op.upper())
        return Call(op, (a, b), BOOLEAN, nullable=a.nullable or b.nullable)

    def not_(self, node: exp.Not, where: str) -> Expr:
        a = self.boolean(node.this, where, "NOT")
        return Call("not", (a,), BOOLEAN, nullable=a.nullable)

    def is_(self, node: exp.Is, where: str) -> Expr:
        a = self.bind(node.this, where)
        target = unparen(node.expression)
        if isinstance(target, exp.Null):
            return Call("is_null", (a,), BOOLEAN, nullable=False)
        if isinstance(target, exp.Boolean):  # x IS TRUE = COALESCE(x, false); IS FALSE: NOT x
            a = self.boolean(node.this, where, "IS TRUE/FALSE")
            if not target.this:
                a = Call("not", (a,), BOOLEAN, nullable=a.nullable)
            false = make_lit(False)
            return Call("coalesce", (a, false), BOOLEAN, nullable=False)
        raise NotSupportedError(f"IS {sql_text(target)} in {where} is not supported")

    # --- CASE, COALESCE -----------------------------------------------------------------------

    def case(self, node: exp.Case, where: str) -> Expr:
        subject = node.args.get("this")
        args: list[Expr] = []
        for branch in node.args.get("ifs") or []:
            if subject is not None:
                cond = self.comparison("=", self.bind(subject, where),
                                       self.bind(branch.this, where), branch, where)
            else:
                cond = self.boolean(branch.this, where, "WHEN")
            args += [cond, self.bind(branch.args["true"], where)]
        default = node.args.get("default")
        args.append(self.bind(default, where) if default is not None else make_lit(None))
        return self.make_case(args, node, where)

    def iff(self, node: exp.If, where: str) -> Expr:  # IF(c, a, b) / IIF
        cond = self.boolean(node.this, where, "IF")
        args = [cond, self.bind(node.args["true"], where)]
        false = node.args.get("false")
        args.append(self.bind(false, where) if false is not None else make_lit(None))
        return self.make_case(args, node, where)

    def make_case(self, args: list[Expr], node: exp.Expression, where: str) -> Expr:
        values = list(args[1::2]) + [args[-1]]
        kind = self.same_kind(values, node, where, "CASE branches")
        args = [a if i % 2 == 0 and i < len(args) - 1 else _retype_null(a, kind)
                for i, a in enumerate(args)]
        values = list(case_values(Call("case", tuple(args))))
        bits = max(v.bits for v in values)
        integral = all(v.integral or (isinstance(v, Lit) and v.value is None) for v in values)
        nullable = any(v.nullable for v in values)
        return self.text_one_party(Call("case", tuple(args), kind, bits=bits, integral=integral,
                                        nullable=nullable), node, where)

    def coalesce(self, node: exp.Coalesce, where: str) -> Expr:
        items = [node.this, *node.expressions]
        args = [self.bind(a, where) for a in items]
        kind = self.same_kind(args, node, where, "COALESCE arguments")
        args = [_retype_null(a, kind) for a in args]
        integral = all(a.integral or (isinstance(a, Lit) and a.value is None) for a in args)
        out = Call("coalesce", tuple(args), kind, bits=max(a.bits for a in args),
                   integral=integral, nullable=all(a.nullable for a in args))
        return self.text_one_party(out, node, where)

    @staticmethod
    def text_one_party(e: Call, node: exp.Expression, where: str) -> Call:
        """A string-valued CASE/COALESCE is computed by one party (its owner, locally)."""
        if e.kind == TEXT and len(e.parties) > 1:
            raise NotSupportedError(f"a string expression reading both parties in {where} is "
                                    f"not supported ({sql_text(node)})")
        return e

    def same_kind(self, values: list[Expr], node: exp.Expression, where: str,
                  what: str) -> str:
        kind = _null_kind(values)
        kinds = {v.kind for v in values if not (isinstance(v, Lit) and v.value is None)}
        if len(kinds) > 1:
            names = " and ".join(sorted(_KIND_NAMES[k] for k in kinds))
            raise DataError(f"{what} mix {names} in {where}: {sql_text(node)}")
        return kind
