"""The row level of the lowering: atoms, polynomials over them, local columns and row ops.

Every row expression becomes polynomials over *atoms*: per-row quantities that are either a
party's local expression (its value with NULL -> 0, its validity bit, a predicate's is_true /
is_false bit) or a row op computed in MPC (a comparison across parties, an ABS, ...).  For a
row expression ``e``: ``R(e)`` is its value where it is not NULL (anything elsewhere), ``Q(e)``
its validity, ``V(e) = Q(e) R(e)`` its value with NULL -> 0; for a predicate ``p``: ``T(p)`` and
``F(p)`` are SQL's is_true and is_false.  A sum slot is the sum over the rows of one monomial:
its atoms of one party are *fused* into one local column of that party (a product computed in
DuckDB), so that most slots are one column's sum or a dot product of one column of each party.
Polynomials with many terms are *materialised* into row ops instead (a vector in MPC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import duckdb
from sqlglot import exp

from dialect.errors import InternalError, NotSupportedError, ProgrammingError
from planner.logical import BOOLEAN, NUMBER, TEXT, Call, Col, Expr, Lit
from planner.physical import MAX_BITS, LocalColumn, RowOp

#: Largest number of terms a polynomial keeps before it is materialised as a row op.
MONO_CAP = 8
#: Row ops that yield 0/1 vectors (exact in every encoding: they do not count as fixed point).
BIT_OPS = frozenset({"lt", "le", "eq", "ne", "not", "and", "or"})
_INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                  "UINTEGER", "UBIGINT", "UHUGEINT", "INT", "INT4", "INT8", "LONG", "SHORT")
_FLOAT_TYPES = ("DOUBLE", "FLOAT", "REAL", "FLOAT8", "FLOAT4", "NUMERIC", "DECIMAL")
_BINARY = {"+": exp.Add, "-": exp.Sub, "*": exp.Mul, "/": exp.Div, "=": exp.EQ, "<>": exp.NEQ,
           "<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE, "and": exp.And, "or": exp.Or}
_CMP = {"<": ("lt", False), "<=": ("le", False), ">": ("lt", True), ">=": ("le", True),
        "=": ("eq", False), "<>": ("ne", False)}


def expr_text(e: Expr) -> str:
    """A readable form of a row expression (qualified column names)."""
    return to_ast(e, quoted=False, qualify=True).sql(dialect="duckdb")


# --- SQL generation (sqlglot; never pasted text) ---------------------------------------------


def literal(value: Any) -> exp.Expression:
    """A DuckDB literal for a public value (strings escaped by sqlglot)."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ProgrammingError(f"literal {value!r} is not a finite number")
        node = exp.Literal.number(repr(value) if isinstance(value, float) else str(value))
        return exp.Paren(this=node) if value < 0 else node
    if isinstance(value, str):
        return exp.Literal.string(value)
    return exp.Literal.number(str(value))  # Decimal


def to_ast(e: Expr, *, quoted: bool = True, qualify: bool = False) -> exp.Expression:
    """The sqlglot tree of ``e`` (each compound operand parenthesised)."""
    def sub(x: Expr) -> exp.Expression:
        node = to_ast(x, quoted=quoted, qualify=qualify)
        return node if isinstance(x, (Col, Lit)) else exp.Paren(this=node)

    if isinstance(e, Col):
        table = e.ref.table if qualify else None
        return exp.column(e.ref.column, table, quoted=quoted)
    if isinstance(e, Lit):
        return literal(e.value)
    if not isinstance(e, Call):
        raise InternalError(f"unknown row expression {type(e).__name__}")
    a = e.args
    if e.op in _BINARY:
        return _BINARY[e.op](this=sub(a[0]), expression=sub(a[1]))
    if e.op == "neg":
        return exp.Neg(this=sub(a[0]))
    if e.op == "abs":
        return exp.Abs(this=sub(a[0]))
    if e.op == "not":
        return exp.Not(this=sub(a[0]))
    if e.op == "is_null":
        return exp.Is(this=sub(a[0]), expression=exp.Null())
    if e.op == "in":
        return exp.In(this=sub(a[0]), expressions=[sub(x) for x in a[1:]])
    if e.op == "coalesce":
        return exp.Coalesce(this=sub(a[0]), expressions=[sub(x) for x in a[1:]])
    if e.op == "cast":
        return exp.Cast(this=sub(a[0]), to=exp.DataType.build(e.to or "DOUBLE", dialect="duckdb"))
    if e.op == "case":
        ifs = [exp.If(this=sub(a[i]), true=sub(a[i + 1])) for i in range(0, len(a) - 1, 2)]
        return exp.Case(ifs=ifs, default=sub(a[-1]))
    raise InternalError(f"unknown row operator {e.op!r}")


def sql(e: exp.Expression) -> str:
    return e.sql(dialect="duckdb")


def constant(e: Expr) -> Any:
    """The value of a row expression that reads no column (evaluated by DuckDB, exactly)."""
    if isinstance(e, Lit):
        return e.value
    con = duckdb.connect()
    try:
        return con.execute("SELECT " + sql(to_ast(e))).fetchone()[0]
    except duckdb.Error as err:
        raise ProgrammingError(f"cannot evaluate the constant {expr_text(e)}: {err}") from None
    finally:
        con.close()


# --- atoms and polynomials ---------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Atom:
    """A per-row quantity; identity and order by ``key``."""

    key: str
    kind: str = field(compare=False)  # value, valid, true, false (local) or row
    party: str | None = field(compare=False)  # None: a row op
    sql: str = field(compare=False)  # the owner's DuckDB SQL, or the row op's name
    text: str = field(compare=False)
    bits: int = field(compare=False)
    integral: bool = field(compare=False)
    indicator: bool = field(compare=False)
    of: str = field(compare=False, default="")  # the SQL of the expression it is about
    #: SQL of the expressions that are not NULL wherever this atom is nonzero
    implies: frozenset[str] = field(compare=False, default=frozenset())
    reads: tuple[str, ...] = field(compare=False, default=())  # the owner's raw columns


Mono = tuple[Atom, ...]
Poly = dict[Mono, float]
ONE: Poly = {(): 1.0}
ZERO: Poly = {}


def _simplify(atoms: list[Atom]) -> Mono | None:
    """A monomial in canonical form (None if it is identically 0)."""
    atoms.sort()
    out: list[Atom] = []
    for a in atoms:
        if a.indicator and out and out[-1] == a:
            continue  # b * b = b for a 0/1 bit
        out.append(a)
    # [x valid] * y = y where y != 0 implies that x is not NULL ([x valid] * x0, [x > 3])
    out = [a for a in out if not (a.kind == "valid"
                                  and any(a.of in b.implies for b in out if b is not a))]
    trues = {a.of for a in out if a.kind == "true"}
    if any(a.kind == "false" and a.of in trues for a in out):
        return None
    return tuple(out)


def pmul(a: Poly, b: Poly) -> Poly:
    out: Poly = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = _simplify(list(ma) + list(mb))
            if m is not None:
                out[m] = out.get(m, 0.0) + ca * cb
    return {m: c for m, c in out.items() if c != 0.0}


def padd(a: Poly, b: Poly, sign: float = 1.0) -> Poly:
    out = dict(a)
    for m, c in b.items():
        out[m] = out.get(m, 0.0) + sign * c
    return {m: c for m, c in out.items() if c != 0.0}


def pscale(a: Poly, c: float) -> Poly:
    return {m: v * c for m, v in a.items() if v * c != 0.0}


def pconst(c: Any) -> Poly:
    return ZERO if c is None or float(c) == 0.0 else {(): float(c)}


def one_minus(a: Poly) -> Poly:
    return padd(ONE, a, -1.0)


def mono_text(m: Mono) -> str:
    return " * ".join(a.text for a in m) or "1"


def poly_text(p: Poly) -> str:
    parts = []
    for m, c in p.items():
        t = mono_text(m)
        parts.append(t if c == 1.0 else f"{c:g} * {t}" if m else f"{c:g}")
    return " + ".join(parts) or "0"


def bits_of(value: float) -> int:
    """The smallest k with |value| <= 2**k (value != 0)."""
    return math.ceil(math.log2(abs(value))) if value else 0


# --- the row level of one query -----------------------------------------------------------------


class Rows:
    """Local columns and row ops of one program, built on demand and deduplicated."""

    def __init__(self, parties: tuple[str, ...], keys: dict[str, str | None]):
        self.parties = parties  # left party first: the shared table's column order
        self.keys = {p: (k or "").lower() for p, k in keys.items()}
        self.local: dict[tuple[str, ...], LocalColumn] = {}
        self.local_integral: dict[str, bool] = {}
        self.rows: list[RowOp] = []
        self.row_keys: dict[tuple[Any, ...], str] = {}
        self.bit_rows: set[str] = set()  # row ops that are 0/1
        self.col_reads: dict[str, tuple[str, ...]] = {}  # local column -> raw columns
        #: fuse no two values into one local column (a model's statistics: the parties share
        #: each column once and MPC forms the products, instead of a column per product)
        self.separate = False
        self._n = 0

    # --- local atoms --------------------------------------------------------------------------

    def _party(self, e: Expr) -> str:
        (party,) = e.parties
        if party not in self.parties:
            raise InternalError(f"party {party} does not take part in the query")
        return party

    def _atom(self, e: Expr, kind: str) -> Atom:
        party = self._party(e)
        body, text = to_ast(e), to_ast(e, quoted=False).sql(dialect="duckdb")
        of = sql(body)
        if kind == "value":
            cast = exp.Cast(this=exp.Paren(this=body), to=exp.DataType.build("DOUBLE"))
            node = exp.Coalesce(this=cast, expressions=[exp.Literal.number(0)]) \
                if e.nullable else cast
            if e.bits > MAX_BITS:
                raise ProgrammingError(
                    f"the bound 2^{e.bits} of {expr_text(e)} exceeds the fixed-point range "
                    f"(|x| < 2^{MAX_BITS}); declare smaller column bounds or rescale it")
            bits, integral, indicator = max(e.bits, -64), e.integral, False
        else:
            pred = {"valid": exp.Not(this=exp.Is(this=exp.Paren(this=body),
                                                 expression=exp.Null())),
                    "true": exp.Paren(this=body),
                    "false": exp.Not(this=exp.Paren(this=body))}[kind]
            if kind != "valid" and e.nullable:
                pred = exp.Coalesce(this=pred, expressions=[exp.Boolean(this=False)])
            node = exp.Cast(this=pred, to=exp.DataType.build("DOUBLE"))
            text = {"valid": f"[{text} IS NOT NULL]", "true": f"[{text}]",
                    "false": f"[NOT ({text})]"}[kind]
            bits, integral, indicator = 0, True, True
        s = sql(node)
        implies = strict(e) if kind in ("value", "valid") else not_null(e, kind == "true")
        reads = tuple(dict.fromkeys(c.ref.column for c in _columns(e)))
        return Atom(f"{party}|{kind}|{s}", kind, party, s, text, bits, integral, indicator, of,
                    implies, reads)

    def value(self, e: Expr) -> Poly:
        return {(self._atom(e, "value"),): 1.0}

    def valid(self, e: Expr) -> Poly:
        """[e IS NOT NULL]: for an operator that is NULL iff an operand is, its operands'."""
        if not e.nullable or not e.parties:
            return ONE
        if isinstance(e, Call) and e.op in _ARITH:
            out = ONE
            for a in e.args:
                out = pmul(out, self.valid(a))
            return out
        return {(self._atom(e, "valid"),): 1.0}

    def true(self, p: Expr) -> Poly:
        return {(self._atom(p, "true"),): 1.0}

    def false(self, p: Expr) -> Poly:
        if not p.nullable:
            return one_minus(self.true(p))
        return {(self._atom(p, "false"),): 1.0}

    def row_atom(self, name: str, text: str = "") -> Poly:
        op = next(r for r in self.rows if r.out == name)
        bit = name in self.bit_rows
        text = text or op.text or name
        a = Atom(f"~|row|{name}", "row", None, name, f"[{text}]" if bit else f"({text})",
                 0 if bit else op.bits, bit, bit, name)
        return {(a,): 1.0}

    # --- local columns and row ops -------------------------------------------------------------

    def _name(self, prefix: str, party: str | None = None) -> str:
        while True:
            name = f"{prefix}{self._n}"
            self._n += 1
            if party is None or name.lower() != self.keys.get(party):
                return name

    def column(self, atoms: list[Atom]) -> str:
        """The local column of the product of ``atoms`` (one party's), deduplicated."""
        atoms = sorted(atoms)
        key = tuple(a.key for a in atoms)
        if key not in self.local:
            party = atoms[0].party
            assert party is not None and all(a.party == party for a in atoms)
            bits = sum(a.bits for a in atoms)
            name = self._name("c", party)
            self.local[key] = LocalColumn(
                party, name, " * ".join(a.sql for a in atoms), bits,
                " * ".join(a.text for a in atoms), all(a.indicator for a in atoms))
            self.local_integral[name] = all(a.integral for a in atoms)
            self.col_reads[name] = tuple(dict.fromkeys(c for a in atoms for c in a.reads))
        return self.local[key].name

    def row(self, op: str, args: tuple[Any, ...], bits: int, text: str = "", *,
            bit: bool = False) -> str:
        key = (op, args, bits)
        if key not in self.row_keys:
            name = self._name("r")
            self.rows.append(RowOp(name, op, args, bits, text))
            self.row_keys[key] = name
            if bit or op in BIT_OPS:
                self.bit_rows.add(name)
        return self.row_keys[key]

    def is_bit(self, name: str) -> bool:
        """Whether a factor (local column or row op) is a 0/1 indicator."""
        col = next((c for c in self.local.values() if c.name == name), None)
        return col.indicator if col is not None else name in self.bit_rows

    def factor_bits(self, name: str) -> int:
        col = next((c for c in self.local.values() if c.name == name), None)
        if col is not None:
            return col.bits
        if name in self.bit_rows:
            return 0
        return next(r.bits for r in self.rows if r.out == name)

    def integral(self, name: str) -> bool:
        if name in self.local_integral:
            return self.local_integral[name]
        return name in self.bit_rows

    # --- monomials -> factors ----------------------------------------------------------------

    def fuse(self, atoms: list[Atom], *, exact: bool) -> list[str]:
        """One party's atoms as few local columns as their bounds allow (each <= 2^31).

        ``exact``: each column holds at most one non-integral value (products of quantised
        values then equal the quantised products the exact statistics need).
        """
        bins: list[list[Atom]] = []
        for a in sorted((a for a in atoms if not a.indicator), key=lambda a: (-a.bits, a.key)):
            if self.separate:  # one column per value, each carrying the party's 0/1 atoms
                bins.append([a])
                continue
            for b in bins:
                total = sum(x.bits for x in b) + a.bits
                mixed = exact and not (a.integral and all(x.integral for x in b))
                if -64 <= total <= MAX_BITS and not mixed:
                    b.append(a)
                    break
            else:
                bins.append([a])
        bits = [a for a in atoms if a.indicator]
        if bits and self.separate and bins:  # w * z_k: a 0/1 weight is its own square
            for b in bins:
                b += bits
        elif bits:
            if bins:
                bins[0] += bits
            else:
                bins.append(bits)
        return [self.column(b) for b in bins]

    def factors(self, mono: Mono, *, exact: bool = False) -> tuple[str, ...]:
        """The factors of a sum slot over ``mono``: fused columns, then row ops; at most two
        of them fixed-point (the others 0/1), multiplying the extra ones in MPC first."""
        out: list[str] = []
        for party in self.parties:
            mine = [a for a in mono if a.party == party]
            if mine:
                out += self.fuse(mine, exact=exact)
        out += [a.sql for a in mono if a.party is None]
        while sum(not self.is_bit(f) for f in out) > 2:
            fixed = sorted((f for f in out if not self.is_bit(f)), key=self.factor_bits)
            a, b = fixed[0], fixed[1]
            out.remove(a)
            out.remove(b)
            out.append(self.row("mul", (a, b), self.factor_bits(a) + self.factor_bits(b),
                                f"{a} * {b}"))
        return tuple(out)

    def unit(self, factors: tuple[str, ...]) -> int:
        """The exact unit of a sum over ``factors`` (see FinishOp.exact_unit)."""
        return sum(self.factor_bits(f) - 32 for f in factors if not self.is_bit(f))

    # --- materialising polynomials as row vectors ------------------------------------------

    def const(self, value: float) -> str:
        return self.row("const", (float(value),), bits_of(value), f"{value:g}",
                        bit=value in (0.0, 1.0))

    def mono_vector(self, m: Mono) -> tuple[str, int]:
        """A row vector of one monomial: its fused columns multiplied in MPC."""
        names = list(self.factors(m)) if m else [self.const(1.0)]
        while len(names) > 1:
            a, b = names.pop(0), names.pop(0)
            both = self.is_bit(a) and self.is_bit(b)
            names.insert(0, self.row("and" if both else "mul", (a, b),
                                     0 if both else self.factor_bits(a) + self.factor_bits(b)))
        return names[0], self.factor_bits(names[0])

    def vector(self, p: Poly, bits: int, text: str = "") -> str:
        """A row vector holding the polynomial ``p`` (bound 2^bits)."""
        if not p:
            return self.const(0.0)
        terms = []
        for m, c in p.items():
            name, b = self.mono_vector(m)
            if c != 1.0:
                name, b = self.row("mul", (name, self.const(c)), b + bits_of(c)), b + bits_of(c)
            terms.append((name, b))
        name, b = terms[0]
        for i, (t, tb) in enumerate(terms[1:]):
            b = max(b, tb) + 1
            last = i == len(terms) - 2
            name = self.row("add", (name, t), min(b, bits) if last else b, text if last else "")
        return name


_ARITH = frozenset({"+", "-", "*", "/", "neg", "abs", "cast"})
_STRICT = frozenset({"+", "-", "*", "/", "neg", "abs", "cast", "=", "<>", "<", "<=", ">", ">="})


def strict(e: Expr) -> frozenset[str]:
    """SQL of ``e`` and of the subexpressions that are not NULL wherever ``e`` is not NULL."""
    out = {sql(to_ast(e))}
    if isinstance(e, Call) and e.op in _STRICT:
        for a in e.args:
            out |= strict(a)
    return frozenset(out)


def not_null(p: Expr, value: bool) -> frozenset[str]:
    """SQL of the expressions that are not NULL wherever predicate ``p`` is ``value``."""
    if not isinstance(p, Call):
        return frozenset({sql(to_ast(p))})
    if p.op == "not":
        return not_null(p.args[0], not value)
    if p.op in ("and", "or"):
        a, b = (not_null(x, value) for x in p.args)
        return a | b if (p.op == "and") == value else a & b
    if p.op == "in":
        return strict(p.args[0])
    return strict(p) if p.op in _STRICT else frozenset({sql(to_ast(p))})


def _columns(e: Expr) -> list[Col]:
    if isinstance(e, Col):
        return [e]
    if isinstance(e, Call):
        return [c for a in e.args for c in _columns(a)]
    return []


# --- row expressions -> polynomials ---------------------------------------------------------------


class Lowering(Rows):
    """The polynomials ``R, Q, V, T, F`` of row expressions (see the module docstring)."""

    # numbers

    def R(self, e: Expr) -> Poly:
        if not e.parties:
            return pconst(constant(e)) if e.kind != BOOLEAN else self.T(e)
        if len(e.parties) == 1:
            return self.T(e) if e.kind == BOOLEAN else self.value(e)
        if e.kind == BOOLEAN:
            return self.T(e)
        return self._cap(self._R(e), lambda: self.matR(e), e)

    def _R(self, e: Expr) -> Poly:
        assert isinstance(e, Call)
        a = e.args
        if e.op in ("+", "-"):
            return padd(self.R(a[0]), self.R(a[1]), 1.0 if e.op == "+" else -1.0)
        if e.op == "*":
            return pmul(self.R(a[0]), self.R(a[1]))
        if e.op == "/":
            return pscale(self.R(a[0]), 1.0 / _divisor(a[1]))
        if e.op == "neg":
            return pscale(self.R(a[0]), -1.0)
        if e.op == "abs":
            return self.row_atom(self.row("abs", (self.matR(a[0]),), e.bits, expr_text(e)))
        if e.op == "case":
            out = self.R(a[-1])
            for i in range(len(a) - 3, -1, -2):
                t = self.T(a[i])
                out = padd(pmul(t, self.R(a[i + 1])), pmul(one_minus(t), out))
            return out
        if e.op == "coalesce":
            out = self.R(a[-1])
            for x in reversed(a[:-1]):
                q = self.Q(x)
                out = padd(pmul(q, self.R(x)), pmul(one_minus(q), out))
            return out
        if e.op == "cast":
            _check_cast(e)
            return self.R(a[0])
        raise NotSupportedError(f"{expr_text(e)}: operator {e.op} across the parties' columns "
                                "is not supported")

    def Q(self, e: Expr) -> Poly:
        if not e.parties:
            return ONE if constant(e) is not None else ZERO
        if e.kind == BOOLEAN:
            return padd(self.T(e), self.F(e))
        if len(e.parties) == 1:
            return self.valid(e)
        if not e.nullable:
            return ONE
        return self._cap(self._Q(e), lambda: self.matQ(e), e)

    def _Q(self, e: Expr) -> Poly:
        assert isinstance(e, Call)
        a = e.args
        if e.op in ("+", "-", "*"):
            return pmul(self.Q(a[0]), self.Q(a[1]))
        if e.op in ("/", "neg", "abs", "cast"):
            return self.Q(a[0])
        if e.op == "case":
            out = self.Q(a[-1])
            for i in range(len(a) - 3, -1, -2):
                t = self.T(a[i])
                out = padd(pmul(t, self.Q(a[i + 1])), pmul(one_minus(t), out))
            return out
        if e.op == "coalesce":
            out = ONE
            for x in a:
                out = pmul(out, one_minus(self.Q(x)))
            return one_minus(out)
        raise NotSupportedError(f"{expr_text(e)}: operator {e.op} across the parties' columns "
                                "is not supported")

    def V(self, e: Expr) -> Poly:
        """The value with NULL -> 0."""
        return pmul(self.Q(e), self.R(e))

    # predicates

    def T(self, p: Expr) -> Poly:
        return self._tf(p)[0]

    def F(self, p: Expr) -> Poly:
        return self._tf(p)[1]

    def _tf(self, p: Expr) -> tuple[Poly, Poly]:
        if p.kind != BOOLEAN:
            raise InternalError(f"{expr_text(p)} is not a predicate")
        if not p.parties:
            v = constant(p)
            return (ONE, ZERO) if v is True else (ZERO, ONE) if v is False else (ZERO, ZERO)
        if len(p.parties) == 1:
            return self.true(p), self.false(p)
        t, f = self._cross_tf(p)
        return (self._cap(t, lambda: self.matT(p), p), self._cap(f, lambda: self.matF(p), p))

    def _cross_tf(self, p: Expr) -> tuple[Poly, Poly]:
        assert isinstance(p, Call)
        a = p.args
        if p.op == "and":
            (ta, fa), (tb, fb) = self._tf(a[0]), self._tf(a[1])
            return pmul(ta, tb), padd(padd(fa, fb), pmul(fa, fb), -1.0)
        if p.op == "or":
            (ta, fa), (tb, fb) = self._tf(a[0]), self._tf(a[1])
            return padd(padd(ta, tb), pmul(ta, tb), -1.0), pmul(fa, fb)
        if p.op == "not":
            t, f = self._tf(a[0])
            return f, t
        if p.op == "is_null":
            q = self.Q(a[0])
            return one_minus(q), q
        if p.op in _CMP:
            q = pmul(self.Q(a[0]), self.Q(a[1]))
            t = pmul(q, self.row_atom(self.compare(p)))
            return t, padd(q, t, -1.0)
        if p.op == "in":
            q = self.Q(a[0])
            t = pmul(q, self.row_atom(self.member(p)))
            has_null = any(constant(x) is None for x in a[1:])
            return t, ZERO if has_null else padd(q, t, -1.0)
        if p.op in ("case", "coalesce"):
            return self.T(_as_case(p, lambda x: x)), self.T(_as_case(p, _negate))
        raise NotSupportedError(f"{expr_text(p)}: operator {p.op} across the parties' columns "
                                "is not supported")

    def _cap(self, poly: Poly, mat, e: Expr) -> Poly:
        if len(poly) <= MONO_CAP:
            return poly
        return self.row_atom(mat(), expr_text(e))

    # --- materialised vectors (from the expression tree) -----------------------------------

    def matR(self, e: Expr) -> str:
        """A row vector equal to ``e`` wherever ``e`` is not NULL."""
        if e.kind == BOOLEAN:
            return self.matT(e)
        if not e.parties:
            v = constant(e)
            return self.const(0.0 if v is None else float(v))
        if len(e.parties) == 1:
            return self.column(list(next(iter(self.value(e)))))
        assert isinstance(e, Call)
        a, text = e.args, expr_text(e)
        if e.op in ("+", "-", "*"):
            op = {"+": "add", "-": "sub", "*": "mul"}[e.op]
            return self.row(op, (self.matR(a[0]), self.matR(a[1])), e.bits, text)
        if e.op == "/":
            c = 1.0 / _divisor(a[1])
            return self.row("mul", (self.matR(a[0]), self.const(c)), e.bits, text)
        if e.op in ("neg", "abs"):
            return self.row(e.op, (self.matR(a[0]),), e.bits, text)
        if e.op == "cast":
            _check_cast(e)
            return self.matR(a[0])
        if e.op == "case":
            out = self.matR(a[-1])
            for i in range(len(a) - 3, -1, -2):
                out = self.row("select", (self.matT(a[i]), self.matR(a[i + 1]), out), e.bits)
            return out
        if e.op == "coalesce":
            out = self.matR(a[-1])
            for x in reversed(a[:-1]):
                out = self.row("select", (self.matQ(x), self.matR(x), out), e.bits)
            return out
        raise NotSupportedError(f"{text}: operator {e.op} across the parties' columns is not "
                                "supported")

    def _and(self, *names: str) -> str:
        names = tuple(n for n in names if n != self.const(1.0))
        if not names:
            return self.const(1.0)
        out = names[0]
        for n in names[1:]:
            out = self.row("and", (out, n), 0)
        return out

    def _or(self, *names: str) -> str:
        names = tuple(n for n in names if n != self.const(0.0))
        if not names:
            return self.const(0.0)
        out = names[0]
        for n in names[1:]:
            out = self.row("or", (out, n), 0)
        return out

    def _not(self, name: str) -> str:
        return self.row("not", (name,), 0)

    def matQ(self, e: Expr) -> str:
        if e.kind == BOOLEAN:
            return self._or(self.matT(e), self.matF(e))
        if not e.parties:
            return self.const(0.0 if constant(e) is None else 1.0)
        if len(e.parties) == 1:
            return self.column(list(next(iter(self.valid(e))))) if e.nullable \
                else self.const(1.0)
        if not e.nullable:
            return self.const(1.0)
        assert isinstance(e, Call)
        a = e.args
        if e.op in ("+", "-", "*"):
            return self._and(self.matQ(a[0]), self.matQ(a[1]))
        if e.op in ("/", "neg", "abs", "cast"):
            return self.matQ(a[0])
        if e.op == "coalesce":
            return self._or(*(self.matQ(x) for x in a))
        if e.op == "case":
            return self._branches(a, self.matQ)
        raise NotSupportedError(f"{expr_text(e)}: operator {e.op} across the parties' columns "
                                "is not supported")

    def _branches(self, a: tuple[Expr, ...], of) -> str:
        """OR over the CASE branches of (branch taken AND of(branch value))."""
        terms, none_before = [], self.const(1.0)
        for i in range(0, len(a) - 1, 2):
            t = self.matT(a[i])
            terms.append(self._and(none_before, t, of(a[i + 1])))
            none_before = self._and(none_before, self._not(t))
        terms.append(self._and(none_before, of(a[-1])))
        return self._or(*terms)

    def matT(self, p: Expr) -> str:
        if not p.parties:
            return self.const(1.0 if constant(p) is True else 0.0)
        if len(p.parties) == 1:
            return self.column(list(next(iter(self.true(p)))))
        assert isinstance(p, Call)
        a = p.args
        if p.op == "and":
            return self._and(self.matT(a[0]), self.matT(a[1]))
        if p.op == "or":
            return self._or(self.matT(a[0]), self.matT(a[1]))
        if p.op == "not":
            return self.matF(a[0])
        if p.op == "is_null":
            return self._not(self.matQ(a[0]))
        if p.op in _CMP:
            return self._and(self.matQ(a[0]), self.matQ(a[1]), self.compare(p))
        if p.op == "in":
            return self._and(self.matQ(a[0]), self.member(p))
        if p.op in ("case", "coalesce"):
            return self.matT(_as_case(p, lambda x: x))
        raise NotSupportedError(f"{expr_text(p)}: operator {p.op} across the parties' columns "
                                "is not supported")

    def matF(self, p: Expr) -> str:
        if not p.parties:
            return self.const(1.0 if constant(p) is False else 0.0)
        if len(p.parties) == 1:
            f = self.false(p)
            if len(f) == 1 and next(iter(f.values())) == 1.0:
                return self.column(list(next(iter(f))))
            return self._not(self.matT(p))
        assert isinstance(p, Call)
        a = p.args
        if p.op == "and":
            return self._or(self.matF(a[0]), self.matF(a[1]))
        if p.op == "or":
            return self._and(self.matF(a[0]), self.matF(a[1]))
        if p.op == "not":
            return self.matT(a[0])
        if p.op == "is_null":
            return self.matQ(a[0])
        if p.op in _CMP:
            return self._and(self.matQ(a[0]), self.matQ(a[1]), self._not(self.compare(p)))
        if p.op == "in":
            if any(constant(x) is None for x in a[1:]):
                return self.const(0.0)
            return self._and(self.matQ(a[0]), self._not(self.member(p)))
        if p.op in ("case", "coalesce"):
            return self.matT(_as_case(p, _negate))
        raise NotSupportedError(f"{expr_text(p)}: operator {p.op} across the parties' columns "
                                "is not supported")

    # --- comparisons in MPC ----------------------------------------------------------------

    def compare(self, p: Call) -> str:
        """The 0/1 row op of a comparison across parties (its value where both sides are
        not NULL)."""
        a, b = p.args
        for x in (a, b):
            if x.kind == TEXT:
                raise NotSupportedError(f"{expr_text(p)}: a string comparison must read one "
                                        "party's columns only")
            if x.kind != NUMBER:
                raise NotSupportedError(f"{expr_text(p)}: comparing predicates across the "
                                        "parties' columns is not supported")
        op, swap = _CMP[p.op]
        left, right = (b, a) if swap else (a, b)
        bits = max(_bound(left), _bound(right)) + 1
        return self.row(op, (self.matR(left), self.matR(right)), bits, expr_text(p))

    def member(self, p: Call) -> str:
        """The 0/1 row op of ``x IN (literals)`` for a cross-party x, where x is not NULL."""
        x = p.args[0]
        values = list(dict.fromkeys(constant(v) for v in p.args[1:]))
        values = [v for v in values if v is not None]
        if x.kind != NUMBER or any(isinstance(v, str) for v in values):
            raise NotSupportedError(f"{expr_text(p)}: a string IN must read one party's "
                                    "columns only")
        vec = self.matR(x)
        eqs = [self.row("eq", (vec, self.const(float(v))), max(x.bits, bits_of(float(v))) + 1)
               for v in values]
        return self._or(*eqs)


def _bound(e: Expr) -> int:
    if not e.parties:
        v = constant(e)
        return bits_of(float(v)) if v is not None else 0
    return e.bits


def _divisor(e: Expr) -> float:
    if e.parties:
        raise NotSupportedError(f"division by {expr_text(e)}: a row expression may be divided "
                                "by a literal only")
    v = constant(e)
    if v is None or float(v) == 0.0:
        raise ProgrammingError(f"division by {expr_text(e)}: the divisor is zero or NULL")
    return float(v)


def _check_cast(e: Call) -> None:
    to = (e.to or "DOUBLE").upper().split("(")[0].strip()
    if to in _INTEGER_TYPES and not e.args[0].integral:
        raise NotSupportedError(f"{expr_text(e)}: a CAST to an integer type rounds; it must "
                                "read one party's columns only")
    if to == "DECIMAL" or to == "NUMERIC":
        if not e.args[0].integral:
            raise NotSupportedError(f"{expr_text(e)}: a CAST to DECIMAL rounds; it must read "
                                    "one party's columns only")
    elif to not in _INTEGER_TYPES and to not in _FLOAT_TYPES:
        raise NotSupportedError(f"{expr_text(e)}: CAST to {e.to} across the parties' columns "
                                "is not supported")


def _negate(x: Expr) -> Expr:
    return Call("not", (x,), BOOLEAN, nullable=x.nullable)


def _as_case(p: Call, f) -> Expr:
    """A boolean CASE / COALESCE as a predicate whose is_true is ``f``(branch) being true."""
    a = p.args
    if p.op == "coalesce":
        out = f(a[-1])
        for x in reversed(a[:-1]):
            isnull = Call("is_null", (x,), BOOLEAN, nullable=False)
            out = Call("or", (Call("and", (_negate(isnull), f(x)), BOOLEAN),
                              Call("and", (isnull, out), BOOLEAN)), BOOLEAN)
        return out
    out = f(a[-1])
    for i in range(len(a) - 3, -1, -2):
        c = a[i]
        taken = Call("coalesce", (c, Lit(False, BOOLEAN, nullable=False)), BOOLEAN,
                     nullable=False) if c.nullable else c
        out = Call("or", (Call("and", (taken, f(a[i + 1])), BOOLEAN),
                          Call("and", (_negate(taken), out), BOOLEAN)), BOOLEAN)
    return out
