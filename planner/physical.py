"""The physical program of a SQL aggregate query: what each party computes, in which order.

A query ``SELECT ... FROM ac JOIN emc USING (id) WHERE ... GROUP BY ... HAVING ...`` is lowered
(:mod:`planner.lower`) to four stages, each a tuple of small immutable records:

1. **Local columns** (:class:`LocalColumn`): each data party evaluates, in DuckDB on its own
   table, the SQL expressions that use only its own columns — one-party predicates as 0/1,
   validity bits (``x IS NOT NULL``), group indicators (``region = 'north'``), values with NULL
   replaced by 0, and products of these (``[bmi > 30] * [charges IS NOT NULL] * charges``).
   They are the value columns of the party's :class:`~planner.plan.Scan`, so they travel
   through the private join exactly as plain columns do today and end up secret-shared.
2. **Row program** (:class:`RowOp`): what mixes both parties' columns row by row
   (``ac.x > emc.y``, ``ac.x * emc.y``) is computed in MPC on the m shared rows, vectorised.
3. **Slots** (:class:`Slot`) per group (:class:`Group`): secret scalars per group — sums over
   the rows of products of vectors (``Σ w·x``, the sufficient statistics of every moment
   aggregate), or an order statistic (MIN, MAX, QUANTILE) of a vector over the rows whose
   weight is 1.  A group's indicator vectors join every product of its slots.
4. **Finish program** (:class:`FinishOp`), vectorised over the groups: the aggregates' values
   from the slots, arithmetic over aggregates, HAVING, and the presence bit of each group
   (count >= the largest ``min_group_rows``, and HAVING).  Only the :class:`Output` values and
   the presence bits are opened; the opened rows are then ordered and limited in plaintext.

Every secret value carries a public bound ``|v| <= 2**bits`` derived at planning from the
catalog's column bounds; the planner refuses a query whose bounds overflow the fixed-point
range (``MAX_BITS``).  Names are unique strings; a record refers to others by name only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dialect.errors import InternalError

#: Largest public bound (bits of the integer part) a finished value may have: SecFxp(64, 32)
#: holds |v| < 2**31; values are normalised by their public bounds before finishing.
MAX_BITS = 31
#: Largest number of groups a GROUP BY may form (the product of its keys' domain sizes).
MAX_GROUPS = 256

ROW_OPS = frozenset({"add", "sub", "mul", "neg", "abs", "lt", "le", "eq", "ne", "not", "and",
                     "or", "select", "const"})
FINISH_OPS = frozenset({"slot", "const", "add", "sub", "mul", "div", "neg", "abs", "is_zero",
                        "lt", "le", "eq", "ne", "not", "and", "or", "select"})
SLOT_KINDS = frozenset({"sum", "min", "max", "quantile"})
#: Plaintext transforms applied to an opened output value (each a public bijection on its
#: range, so the transformed value reveals exactly what the opened one does).
#: ``sqrt`` and ``signed_sqrt`` clamp a rounding error below 0 (sqrt(max(v, 0)),
#: sign(v) * sqrt(|v|)); ``integer`` rounds half away from zero; ``odds`` is v / (1 - |v|) for
#: |v| < 1 (a quotient a / b opened as u = a / (|a| + |b| / scale), see :attr:`Output.scale`).
TRANSFORMS = frozenset({"identity", "sqrt", "signed_sqrt", "integer", "odds"})


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise InternalError(f"invalid physical plan: {msg}")


@dataclass(frozen=True)
class LocalColumn:
    """A column ``party`` computes from its own table before anything leaves it.

    ``sql`` is a DuckDB expression over the owner's table (quoted identifiers) that is never
    NULL; ``bits`` is the public bound |value| <= 2**bits the planner derived (the owner
    checks it and refuses with a DataError otherwise).  The owner shares ``value * 2**-bits``
    (|shared| <= 1); :attr:`bits` tells every party how to undo that.  ``text`` is the readable
    form explain prints (``[bmi > 30] * charges``).
    """

    party: str
    name: str
    sql: str
    bits: int
    text: str
    #: the expression is a 0/1 indicator (predicate, validity bit or group indicator)
    indicator: bool = False

    def __post_init__(self) -> None:
        _check(bool(self.party and self.name and self.sql), "empty local column")
        _check(-64 <= self.bits <= MAX_BITS, f"bound 2^{self.bits} of {self.name} out of range")


@dataclass(frozen=True)
class RowOp:
    """One vectorised MPC operation on the m shared rows: ``out = op(args)``.

    ``args`` name local columns or earlier row ops (``const`` has one float argument).
    Comparisons and boolean ops yield 0/1 vectors; ``select`` is (cond, if_true, if_false).
    ``bits`` bounds the result (comparisons use it as their bit length).
    """

    out: str
    op: str
    args: tuple[Any, ...]
    bits: int
    text: str = ""

    def __post_init__(self) -> None:
        _check(self.op in ROW_OPS, f"unknown row op {self.op!r}")


@dataclass(frozen=True)
class Slot:
    """A secret scalar per group computed from the rows.

    ``sum``: Σ over rows of the product of ``factors`` (and the group's indicators);
    ``min``/``max``/``quantile``: the order statistic of vector ``value`` over the rows where
    the product of ``factors`` (and the group's indicators) is 1 (``q`` for quantile).
    ``bits`` bounds the result; ``integral`` is true if it is an integer (counts, sums of
    integers), which the engine then opens exactly when an output is the slot itself.

    A sum slot has at most two factors that are not 0/1 indicators (local columns with
    ``indicator`` or comparison / boolean row ops), so that its exact field sum stays below
    2**120 for m <= 2**31 (each such factor is a fixed-point word of 32 fractional bits); the
    group's indicators and the other factors are 0/1.
    """

    name: str
    kind: str
    factors: tuple[str, ...]
    bits: int
    value: str | None = None
    q: float | None = None
    integral: bool = False
    text: str = ""
    #: the bound is 2**(bits + rows_pow * ceil(log2(m + 1))) for the public size m
    rows_pow: int = 0

    def __post_init__(self) -> None:
        _check(self.kind in SLOT_KINDS, f"unknown slot kind {self.kind!r}")
        _check((self.value is None) == (self.kind == "sum"), "value iff order statistic")
        _check((self.q is not None) == (self.kind == "quantile"), "q iff quantile")


@dataclass(frozen=True)
class Group:
    """One group of the declared key domains: its public key values and indicator vectors."""

    key: tuple[Any, ...]  # one public value per GROUP BY key (None: the NULL group)
    indicators: tuple[str, ...]  # local column names whose product is 1 on this group's rows


@dataclass(frozen=True)
class FinishOp:
    """One MPC operation on secret scalars, vectorised over the groups: ``out = op(args)``.

    ``slot`` reads a :class:`Slot` by name (args = (slot name,)); ``const`` a public float;
    ``div`` is (numerator, denominator) with the denominator nonzero wherever the result is
    used (a NULL bit guards it); ``is_zero`` and comparisons yield 0/1; ``select`` is (cond,
    if_true, if_false).  ``bits`` is the public bound of ``out``; for ``div``, ``floor_bits``
    is the public lower bound 2**floor_bits of |denominator| when it is nonzero.

    ``exact_unit`` (None by default: a normalised fixed-point value) marks an op computed on
    exact field integers: the op holds the integer E = value * 2**-exact_unit.  ``slot`` then
    reads the slot's exact field sum as E (its unit is the sum, over the slot's factors that are
    not indicators, of (factor bits - 32): every shared non-indicator value is a multiple of
    2**(bits - 32)); ``const`` holds the integer args[0] * 2**-exact_unit; ``add``/``sub``
    align their arguments to the op's (smaller) unit by exact multiplications by powers of two;
    ``mul`` multiplies exactly (units add); ``is_zero`` (not exact itself) tests an exact
    argument without error.  The lowering forms only nonnegative exact products and a
    difference of two (n Σx² - (Σx)² >= 0), each < 2**126 for m <= 2**31 (checked at
    planning).  An output
    whose value is an exact op is opened exactly (E, then times 2**exact_unit).
    """

    out: str
    op: str
    args: tuple[Any, ...]
    bits: int
    floor_bits: int | None = None
    text: str = ""
    #: the bound is 2**(bits + rows_pow * ceil(log2(m + 1))) for the public size m
    rows_pow: int = 0
    exact_unit: int | None = None
    #: the floor of a div is 2**(floor_bits + floor_rows_pow * ceil(log2(m + 1)))
    floor_rows_pow: int = 0

    def __post_init__(self) -> None:
        _check(self.op in FINISH_OPS, f"unknown finish op {self.op!r}")
        _check(self.op != "div" or self.floor_bits is not None, "div needs a floor")


@dataclass(frozen=True)
class Output:
    """One output column: ``value`` (a finish op or slot name) opened with its NULL bit.

    A group key column has ``key`` = its index in :attr:`Group.key` and no value.  ``null``
    names a 0/1 finish op that is 1 where the SQL result is NULL (then the value is not
    opened but forced to 0 before opening).  ``transform`` is applied in plaintext after
    opening; ``dtype`` is DuckDB's result type.

    ``nan`` / ``inf`` name 0/1 finish ops that are 1 where DuckDB's result is NaN / infinite
    (CORR of a constant column, x / 0); the engine forces the value to 0 where ``null`` or
    ``nan`` is 1 and opens the bits with it; where ``inf`` is 1 the opened value is the sign
    (+1 or -1) of the infinity.  The opened, transformed value is multiplied by the public
    ``scale`` (a power of two; used with the ``odds`` transform).

    ``hidden``: a group key column (``key`` set, nothing opened) that only ORDER BY uses (a
    GROUP BY key that is not selected); hidden outputs come after every other output, the
    receivers sort by them and drop them (engine.protocols.present).
    """

    name: str
    dtype: str
    value: str | None = None
    null: str | None = None
    key: int | None = None
    transform: str = "identity"
    nan: str | None = None
    inf: str | None = None
    scale: float = 1.0
    hidden: bool = False

    def __post_init__(self) -> None:
        _check((self.value is None) == (self.key is not None), "an output is a value or a key")
        _check(not self.hidden or self.key is not None, "a hidden output is a group key")
        _check(self.transform in TRANSFORMS, f"unknown transform {self.transform!r}")


@dataclass(frozen=True)
class Model:
    """A regression (LASSO, RIDGE, LINREG) per group, fitted on its sufficient statistics.

    The rows a model uses are those the WHERE leaves, in the group, with no NULL in the
    target or a feature.  ``count``, ``means`` (target first, then the features) and ``cov``
    (the population covariances of z = (target, features...), upper triangle row by row) are
    finish ops of those rows; ``inv_count`` (RIDGE only) is 1 / count.  ``bits`` are the
    public bounds |z_k| <= 2**bits[k]: the solver works on z_k * 2**-bits[k] (|.| <= 1), as
    the model path without WHERE does.  The engine fits every group obliviously, forces the
    coefficients of absent groups to 0 and opens (intercept, coefficients) per present group.
    """

    func: str
    terms: tuple[str, ...]  # the features' output names
    bits: tuple[int, ...]  # target, then features
    count: str
    means: tuple[str, ...]
    cov: tuple[str, ...]
    inv_count: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        e = len(self.terms) + 1
        _check(self.func in ("LASSO", "RIDGE", "LINREG"), f"unknown model {self.func!r}")
        _check(len(self.bits) == e and len(self.means) == e, "one bound and mean per column")
        _check(len(self.cov) == e * (e + 1) // 2, "the covariances' upper triangle")
        _check((self.inv_count is not None) == (self.func == "RIDGE"), "1/count iff RIDGE")

    @property
    def refs(self) -> tuple[str, ...]:
        return (self.count, *self.means, *self.cov,
                *(() if self.inv_count is None else (self.inv_count,)))


@dataclass(frozen=True)
class OrderKey:
    """``ORDER BY`` one output column (by index into Program.outputs, hidden ones included) on
    the opened rows."""

    output: int
    descending: bool = False
    nulls_first: bool | None = None  # None: DuckDB's default (NULLS LAST)


@dataclass(frozen=True)
class Program:
    """The whole physical program of one aggregate query (see the module docstring)."""

    local: tuple[LocalColumn, ...]
    rows: tuple[RowOp, ...]
    slots: tuple[Slot, ...]
    groups: tuple[Group, ...]  # one group, with no key and no indicators, without GROUP BY
    finish: tuple[FinishOp, ...]
    outputs: tuple[Output, ...]
    #: a 0/1 finish op per group: the group's row is output (count >= min, HAVING holds)
    present: str | None
    #: the slot counting the rows a WHERE leaves (all groups together: the engine evaluates
    #: it once, without group indicators): checked against min_intersection, revealing one
    #: bit; None without WHERE
    filtered_count: str | None = None
    order: tuple[OrderKey, ...] = field(default=())
    limit: int | None = None
    offset: int = 0
    #: the ``const`` finish op whose value the engine sets at run time to the agreed
    #: max(1, largest min_group_rows of the parties), clipped to m + 1 (the presence test
    #: compares each group's count with it); None without GROUP BY
    min_group_rows_const: str | None = None
    #: a model per group (then ``outputs`` holds only the selected group keys, and the
    #: engine returns (keys..., term, coefficient) rows); None for SQL aggregates
    model: Model | None = None

    def __post_init__(self) -> None:
        names = ([c.name for c in self.local] + [r.out for r in self.rows]
                 + [s.name for s in self.slots] + [f.out for f in self.finish])
        _check(len(set(names)) == len(names), "duplicate names in the program")
        _check(len(self.groups) >= 1, "no group")
        _check(len(self.groups) <= MAX_GROUPS, f"more than {MAX_GROUPS} groups")
        known = set(names)
        hidden = [o.hidden for o in self.outputs]
        _check(hidden == sorted(hidden), "hidden outputs come after the others")
        for o in self.outputs:
            for ref in (o.value, o.null, o.nan, o.inf):
                _check(ref is None or ref in known, f"output {o.name} refers to unknown {ref}")
        _check(self.present is None or self.present in known, "unknown presence bit")
        if self.model is not None:
            _check(all(r in known for r in self.model.refs), "a model refers to unknown ops")
            _check(all(o.key is not None for o in self.outputs), "a model outputs only keys")
            _check(not self.order and self.limit is None, "no ORDER BY / LIMIT with a model")
        consts = {f.out for f in self.finish if f.op == "const"}
        _check(self.min_group_rows_const is None or self.min_group_rows_const in consts,
               "min_group_rows_const is not a const finish op")

    def local_at(self, party: str) -> tuple[LocalColumn, ...]:
        return tuple(c for c in self.local if c.party == party)
