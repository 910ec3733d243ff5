"""The bound (logical) form of an aggregate query: typed row expressions and aggregate trees.

The binder (:mod:`planner.binder`) produces a :class:`LogicalQuery`; the lowering
(:mod:`planner.lower`) turns it into the physical :class:`planner.physical.Program`.  Every
node is immutable and knows its SQL type, the parties whose columns it reads, whether it may
be NULL, and a public bound of its magnitude derived from the catalog's column bounds.

Row expressions (:class:`Expr`) are evaluated per joined row; aggregate expressions
(:class:`AggExpr`) once per group.  Predicates are expressions of type BOOLEAN with SQL's
three-valued logic (NULL is unknown; WHERE, FILTER and HAVING keep the rows where it is TRUE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dialect.errors import InternalError
from planner.facts import ColumnRef

NUMBER, BOOLEAN, TEXT = "NUMBER", "BOOLEAN", "TEXT"
ARITH_OPS = frozenset({"+", "-", "*", "/"})
CMP_OPS = frozenset({"=", "<>", "<", "<=", ">", ">="})


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise InternalError(f"invalid logical plan: {msg}")


@dataclass(frozen=True)
class Expr:
    """A row expression.  ``bits``: public bound |value| <= 2**bits (numbers; 0 for booleans).

    ``integral``: every value is an integer.  ``nullable``: the value may be NULL.
    """

    @property
    def kind(self) -> str:  # NUMBER, BOOLEAN or TEXT
        raise NotImplementedError

    @property
    def parties(self) -> frozenset[str]:
        raise NotImplementedError

    bits: int = field(default=0, kw_only=True)
    integral: bool = field(default=False, kw_only=True)
    nullable: bool = field(default=True, kw_only=True)


@dataclass(frozen=True)
class Col(Expr):
    """A column of a party's table (numeric, boolean or string)."""

    ref: ColumnRef
    col_kind: str = NUMBER

    @property
    def kind(self) -> str:
        return self.col_kind

    @property
    def parties(self) -> frozenset[str]:
        return frozenset({self.ref.party})


@dataclass(frozen=True)
class Lit(Expr):
    """A literal: number, string, boolean or NULL (``value`` None)."""

    value: Any
    lit_kind: str = NUMBER

    @property
    def kind(self) -> str:
        return self.lit_kind

    @property
    def parties(self) -> frozenset[str]:
        return frozenset()


@dataclass(frozen=True)
class Call(Expr):
    """An operator or function applied to row expressions.

    ``op`` is one of: ``+ - * /`` (division by a nonzero literal only), ``neg``, ``abs``,
    the comparisons ``= <> < <= > >=``, ``and``, ``or``, ``not``, ``is_null`` (never NULL),
    ``in`` (args[0] IN args[1:], literals), ``case`` (args = cond1, value1, cond2, value2, ...,
    default), ``coalesce``, ``cast`` (``to`` = the DuckDB type).  BETWEEN is bound as
    ``x >= lo and x <= hi``; ``IS NOT NULL`` as ``not(is_null(x))``.
    """

    op: str
    args: tuple[Expr, ...]
    result_kind: str = NUMBER
    to: str | None = None

    @property
    def kind(self) -> str:
        return self.result_kind

    @property
    def parties(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for a in self.args:
            out |= a.parties
        return out


@dataclass(frozen=True)
class AggExpr:
    """An expression evaluated once per group: aggregate calls, keys, literals, arithmetic."""

    bits: int = field(default=0, kw_only=True)
    integral: bool = field(default=False, kw_only=True)
    nullable: bool = field(default=True, kw_only=True)


@dataclass(frozen=True)
class AggCall(AggExpr):
    """``func(args) [FILTER (WHERE filter)]``; ``func`` upper case (``VAR_SAMP``, ``CORR``, ...).

    COUNT(*) has no args.  Synonyms are normalised by the binder: VARIANCE -> VAR_SAMP,
    STDDEV -> STDDEV_SAMP, MEDIAN -> QUANTILE_CONT with ``q`` 0.5.
    """

    func: str
    args: tuple[Expr, ...]
    filter: Expr | None = None
    q: float | None = None
    dtype: str = "DOUBLE"  # DuckDB's result type


@dataclass(frozen=True)
class ModelCall(AggCall):
    """``LASSO | RIDGE | LINREG(target, feature, ..., option => literal)`` in a query with
    WHERE or GROUP BY: fitted per group on the rows the WHERE leaves with no NULL in
    ``args`` = (target, features...) (plain columns); ``terms`` are the features' names."""

    terms: tuple[str, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _check(len(self.args) >= 2 and len(self.terms) == len(self.args) - 1,
               "a model has a target and features")


@dataclass(frozen=True)
class KeyRef(AggExpr):
    """The value of GROUP BY key number ``index`` (public per group)."""

    index: int


@dataclass(frozen=True)
class AggLit(AggExpr):
    value: Any


@dataclass(frozen=True)
class AggOp(AggExpr):
    """Arithmetic, comparison or boolean op over aggregate expressions (ops as in :class:`Call`)."""

    op: str
    args: tuple[AggExpr, ...]
    result_kind: str = NUMBER


@dataclass(frozen=True)
class GroupKey:
    """A GROUP BY key: a row expression of one party with a public ``domain`` (NULL included
    as None when the key may be NULL); ``name`` is its output column name."""

    expr: Expr
    domain: tuple[Any, ...]
    name: str
    dtype: str

    def __post_init__(self) -> None:
        _check(len(self.expr.parties) <= 1, "a group key reads one party's columns")


@dataclass(frozen=True)
class SelectItem:
    name: str
    expr: AggExpr
    dtype: str


@dataclass(frozen=True)
class SortKey:
    output: int  # index into LogicalQuery.items (-1 when ``key`` is set)
    descending: bool = False
    nulls_first: bool | None = None
    #: ORDER BY a GROUP BY key that is not a select item: its index into LogicalQuery.keys
    #: (the group's public key value; the lowering adds it as a hidden output, never returned)
    key: int | None = None


@dataclass(frozen=True)
class LogicalQuery:
    """A bound aggregate query over one table or the private join of two."""

    tables: tuple[Any, ...]  # planner.catalog.TableSchema, FROM first
    where: Expr | None
    keys: tuple[GroupKey, ...]
    items: tuple[SelectItem, ...]
    having: AggExpr | None = None
    order: tuple[SortKey, ...] = ()
    limit: int | None = None
    offset: int = 0
