"""Secure operators: immutable, typed plan nodes that check their invariants on construction.

A plan is a tree  Scan@party -> PrivateJoin -> SecretShare -> SecureAggregate -> Reveal.
Every node prints itself (``to_s``) and lists what running it discloses to whom
(``disclosures``); ``Plan.learns()`` gathers every disclosure of the plan and is the single
source of what ``explain``, the audit log and the session transcripts say was opened.
Each aggregate kind is its own node class (``Count``, ``Sum``, ... ``Lasso``); the engine
executes them by ``visit_<Class>`` dispatch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dialect.errors import InternalError, ProgrammingError
from planner.facts import OUTCOMES, REFUSED, STAGES, ColumnRef, Disclosure  # noqa: F401 (re-exported)
from planner.physical import LocalColumn, Program

#: Private join protocols (docs/protocols.md): the published Paillier one and the masked fast
#: path (PRF masks shared by the data parties; no public-key operation per row).
JOIN_PROTOCOLS = frozenset({"paillier", "masked"})


def check_join_protocol(name: str) -> None:
    """ProgrammingError unless ``name`` is one of :data:`JOIN_PROTOCOLS`."""
    if name not in JOIN_PROTOCOLS:
        allowed = ", ".join(f"'{p}'" for p in sorted(JOIN_PROTOCOLS))
        raise ProgrammingError(f"unknown join_protocol {name!r}; allowed: {allowed}")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise InternalError(f"invalid plan: {msg}")




class Node:
    """Base of all plan nodes."""

    def to_s(self, indent: int = 0) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def disclosures(self) -> tuple[Disclosure, ...]:
        """What running this node alone discloses, and to whom."""
        return ()


@dataclass(frozen=True)
class Scan(Node):
    """Read ``columns`` (and the key, if joined) of ``table`` locally at ``party``.

    In a program plan (:attr:`Plan.program`) the party computes its ``local`` columns in DuckDB
    on its own table (``columns`` are then their names, in order) and ``reads`` lists the raw
    table columns they read (policy, explain); model plans read plain ``columns``.
    """

    party: str
    table: str
    key: str | None
    columns: tuple[str, ...]
    local: tuple[LocalColumn, ...] = ()
    reads: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(len(set(c.lower() for c in self.columns)) == len(self.columns), "duplicate columns")
        _check(self.key is None or self.key.lower() not in {c.lower() for c in self.columns},
               "the key column cannot be a value column")
        if self.local:
            _check(self.columns == tuple(c.name for c in self.local),
                   "a program scan's columns are its local columns")
            _check(all(c.party == self.party for c in self.local), "local column of another party")

    def to_s(self, indent: int = 0) -> str:
        pad = " " * indent
        key = f" key={self.key}" if self.key else ""
        if not self.local:
            cols = ", ".join(self.columns) or "(no value columns)"
            return pad + f"Scan @{self.party}: {self.table}{key} columns=[{cols}]"
        reads = ", ".join(self.reads) or "(no columns)"
        lines = [pad + f"Scan @{self.party}: {self.table}{key} reads=[{reads}]; computes in "
                 "DuckDB, then shares:"]
        for c in self.local:
            kind = "0/1" if c.indicator else f"|v| <= 2^{c.bits}"
            lines.append(f"{pad}  {c.name} = {c.text}  ({kind})")
        return "\n".join(lines)


@dataclass(frozen=True)
class PrivateJoin(Node):
    """Private inner join of two data parties' tables on their keys, with ``helper``."""

    left: Scan
    right: Scan
    helper: str
    protocol: str = "paillier"

    def __post_init__(self) -> None:
        _check(self.left.party != self.right.party, "a private join needs two different parties")
        _check(self.helper not in (self.left.party, self.right.party), "helper holds data")
        _check(self.left.key is not None and self.right.key is not None, "join without keys")
        _check(self.protocol in JOIN_PROTOCOLS, f"unknown join protocol {self.protocol!r}")

    @property
    def parties(self) -> tuple[str, str]:
        return (self.left.party, self.right.party)

    def to_s(self, indent: int = 0) -> str:
        pad = " " * indent
        head = (f"{pad}PrivateJoin[{self.protocol}] {self.left.table}.{self.left.key} = "
                f"{self.right.table}.{self.right.key} (helper: {self.helper})")
        return "\n".join([head, self.left.to_s(indent + 2), self.right.to_s(indent + 2)])

    def disclosures(self) -> tuple[Disclosure, ...]:
        a, b, h = self.left.party, self.right.party, self.helper
        both = f"|{self.left.table} ∩ {self.right.table}|"
        out = [
            Disclosure("intersection_size", f"{both} (intersection size)", (a, b, h), "size"),
            Disclosure("table_sizes", f"|{self.left.table}|, |{self.right.table}| (row counts)",
                       (h,), "input"),
        ]
        if self.protocol == "masked":
            # Each data party receives, for the other's value columns, the matched positions
            # in the other's shuffled list: a random subset of range(|other table|).
            for me, other in ((self.left, self.right), (self.right, self.left)):
                if other.columns:
                    out.append(Disclosure(
                        f"row_count:{other.party}",
                        f"|{other.table}| (row count of {other.party}, sent by it so that the "
                        "matched positions, a random subset of that range, can be checked)",
                        (me.party,), "size",
                        when="only if the intersection is not empty"))
        return tuple(out)


@dataclass(frozen=True)
class SecretShare(Node):
    """The rows of ``source`` as Shamir secret shares among all parties; ``columns`` in order."""

    source: Scan | PrivateJoin
    columns: tuple[ColumnRef, ...]

    def __post_init__(self) -> None:
        owners = ({self.source.party} if isinstance(self.source, Scan)
                  else set(self.source.parties))
        for c in self.columns:
            _check(c.party in owners, f"column {c.qualified} not produced by the source")
        _check(len(set(self.columns)) == len(self.columns), "duplicate shared columns")

    def index(self, col: ColumnRef) -> int:
        return self.columns.index(col)

    def to_s(self, indent: int = 0) -> str:
        cols = ", ".join(c.qualified for c in self.columns) or "(none)"
        return "\n".join([" " * indent + f"SecretShare (Shamir, t=1) columns=[{cols}]",
                          self.source.to_s(indent + 2)])

    def disclosures(self) -> tuple[Disclosure, ...]:
        if isinstance(self.source, Scan):
            t = self.source.table
            return (Disclosure("row_count", f"|{t}| (row count of {self.source.party})", ("*",),
                               "size"),)
        return self.source.disclosures()

    @property
    def size_fact(self) -> tuple[str, str, str]:
        """The size announcement: its label, what it names in a refusal, and who computes it."""
        if isinstance(self.source, Scan):
            return "row_count", f"table {self.source.table}", self.source.party
        return "intersection_size", "the intersection", self.source.helper


@dataclass(frozen=True)
class Aggregate:
    """One aggregate call ``func(args..., options)`` with output column ``name``.

    ``Aggregate("SUM", ...)`` builds the node class registered for ``SUM`` (:class:`Sum`); each
    class checks its own arity and knows its output type and what it opens.
    """

    func: str
    args: tuple[ColumnRef, ...]
    name: str
    options: tuple[tuple[str, Any], ...] = field(default=())

    is_model: ClassVar[bool] = False
    #: Number of column arguments: (minimum, maximum or None for no maximum), and the rule.
    arity: ClassVar[tuple[int, int | None]] = (1, 1)
    arity_rule: ClassVar[str] = "{func} takes one column"

    def __new__(cls, func: str | None = None, *args: Any, **kwargs: Any) -> Aggregate:
        if cls is Aggregate:
            cls = AGGREGATE_NODES.get(func)  # type: ignore[assignment]
            _check(cls is not None, f"unknown aggregate {func}")
        return object.__new__(cls)

    def __post_init__(self) -> None:
        _check(AGGREGATE_NODES.get(self.func) is type(self),
               f"{type(self).__name__} node for aggregate {self.func}")
        lo, hi = self.arity
        _check(lo <= len(self.args) and (hi is None or len(self.args) <= hi),
               self.arity_rule.format(func=self.func))

    @property
    def dtype(self) -> str:
        """DuckDB's result type of this aggregate."""
        return "DOUBLE"

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def disclosures(self, parties: tuple[str, ...]) -> tuple[Disclosure, ...]:
        """What computing this aggregate opens besides its result (to ``parties``)."""
        return ()

    def to_s(self) -> str:
        parts = [a.qualified for a in self.args] or ["*"]
        parts += [f"{k} => {v!r}" for k, v in self.options]
        return f"{self.func}({', '.join(parts)}) AS {self.name}"


_INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
                            "UINTEGER", "UBIGINT", "BOOLEAN", "HUGEINT"})


@dataclass(frozen=True)
class Count(Aggregate):
    """``COUNT(*)`` or ``COUNT(col)``: the number of joined rows (a public size)."""

    arity: ClassVar[tuple[int, int | None]] = (0, 1)
    arity_rule: ClassVar[str] = "{func} takes at most one column"

    @property
    def dtype(self) -> str:
        return "BIGINT"


@dataclass(frozen=True)
class Sum(Aggregate):
    """``SUM(col)``: the exact sum of the secret column, opened to the receivers."""

    @property
    def dtype(self) -> str:
        return "HUGEINT" if self.args[0].dtype.split("(")[0] in _INTEGER_TYPES else "DOUBLE"


@dataclass(frozen=True)
class Avg(Aggregate):
    """``AVG(col)``: the secret column's sum opened to the receivers, divided by the public size."""


@dataclass(frozen=True)
class Model(Aggregate):
    """A regression model ``func(target, features..., options)``: rows (term, coefficient)."""

    is_model: ClassVar[bool] = True
    arity: ClassVar[tuple[int, int | None]] = (2, None)
    arity_rule: ClassVar[str] = "{func} needs a target and a feature"


@dataclass(frozen=True)
class Lasso(Model):
    """``LASSO``: L1-penalised least squares (coordinate descent or ADMM, then a polish)."""


@dataclass(frozen=True)
class Ridge(Model):
    """``RIDGE``: L2-penalised least squares by an oblivious LDL^T solve."""

    def disclosures(self, parties: tuple[str, ...]) -> tuple[Disclosure, ...]:
        return (
            Disclosure("constant-feature bit", f"one bit: whether a feature of {self.func} is "
                       "constant on the joined rows", parties, "compute",
                       when="only if alpha / rows is below the solver's pivot floor"),
            Disclosure("collinear bit", f"one bit: whether the features of {self.func} are "
                       "collinear on the joined rows", parties, "compute"),
        )


@dataclass(frozen=True)
class Linreg(Model):
    """``LINREG``: ordinary least squares by an oblivious LDL^T solve."""

    def disclosures(self, parties: tuple[str, ...]) -> tuple[Disclosure, ...]:
        return (
            Disclosure("constant-feature bit", f"one bit: whether a feature of {self.func} is "
                       "constant on the joined rows", parties, "compute"),
            Disclosure("collinear bit", f"one bit: whether the features of {self.func} are "
                       "collinear on the joined rows", parties, "compute"),
        )


#: The node class of every aggregate function the planner accepts.
AGGREGATE_NODES: dict[str, type[Aggregate]] = {
    "COUNT": Count, "SUM": Sum, "AVG": Avg, "LASSO": Lasso, "RIDGE": Ridge, "LINREG": Linreg,
}
#: Aggregates producing one scalar (one row, one column each).
SCALAR_AGGREGATES = frozenset(f for f, c in AGGREGATE_NODES.items() if not c.is_model)
#: Aggregates producing a model: rows (term VARCHAR, coefficient DOUBLE).
MODEL_AGGREGATES = frozenset(f for f, c in AGGREGATE_NODES.items() if c.is_model)
ALL_AGGREGATES = SCALAR_AGGREGATES | MODEL_AGGREGATES


@dataclass(frozen=True)
class SecureAggregate(Node):
    """Compute ``aggregates`` in MPC on the secret-shared rows; nothing is opened here.

    A program plan has ``program`` (:class:`planner.physical.Program`: row ops, slots, groups,
    finish ops, outputs) and no ``aggregates``; a model plan has one model aggregate.
    """

    input: SecretShare
    aggregates: tuple[Aggregate, ...]
    program: Program | None = None

    def __post_init__(self) -> None:
        _check(len(self.aggregates) > 0 or self.program is not None, "no aggregates")
        _check(self.program is None or not self.aggregates, "a program plan has no aggregates")
        models = [a for a in self.aggregates if a.is_model]
        _check(not models or len(self.aggregates) == 1, "a model aggregate must stand alone")
        for a in self.aggregates:
            for c in a.args:
                _check(c in self.input.columns, f"{c.qualified} is not secret-shared")

    def to_s(self, indent: int = 0) -> str:
        pad = " " * indent
        if self.program is not None:
            from planner.lower_explain import program_lines  # noqa: PLC0415

            lines = [f"{pad}SecureAggregate (MPyC SecFxp, program)"]
            lines += [f"{pad}  {line}" for line in program_lines(self.program)]
            lines.append(self.input.to_s(indent + 2))
            return "\n".join(lines)
        lines = [f"{pad}SecureAggregate (MPyC SecFxp)"]
        lines += [f"{pad}  {a.to_s()}" for a in self.aggregates]
        models = [a for a in self.aggregates if a.is_model]
        if models:
            bounds = ", ".join(f"|{c.qualified}| <= 2^{c.scale_bits or 0}" for c in models[0].args)
            lines.append(f"{pad}  public scales declared in the catalog: {bounds}")
        lines.append(self.input.to_s(indent + 2))
        return "\n".join(lines)


@dataclass(frozen=True)
class Reveal(Node):
    """Open the aggregate results to ``receivers`` only."""

    input: SecureAggregate
    receivers: tuple[str, ...]

    def __post_init__(self) -> None:
        _check(len(self.receivers) > 0, "nobody receives the result")

    def to_s(self, indent: int = 0) -> str:
        return "\n".join([" " * indent + f"Reveal to [{', '.join(self.receivers)}]",
                          self.input.to_s(indent + 2)])


@dataclass(frozen=True)
class OutputColumn:
    name: str
    dtype: str  # DuckDB type name: BIGINT, DOUBLE, VARCHAR


@dataclass(frozen=True)
class Plan:
    """A bound, checked query plan; identical at every party for the same SQL and catalog.

    ``logical`` is the bound :class:`planner.logical.LogicalQuery` of a program plan (None for
    model plans); it does not take part in equality (the plan's text does, via explain).
    """

    sql: str
    root: Reveal
    output: tuple[OutputColumn, ...]
    parties: tuple[str, ...]  # all parties taking part, MPyC pid order
    logical: Any = field(default=None, compare=False, repr=False)

    @property
    def aggregate(self) -> SecureAggregate:
        return self.root.input

    @property
    def program(self) -> Program | None:
        """The physical program of an aggregate query; None for a model plan."""
        return self.root.input.program

    @property
    def usages(self) -> tuple[Any, ...]:
        """Every use of a column by the query (:func:`planner.usage.usages`; policy)."""
        if self.logical is None:
            return ()
        from planner.usage import usages  # noqa: PLC0415 (usage imports the logical IR)

        return tuple(usages(self.logical))

    @property
    def shared(self) -> SecretShare:
        return self.root.input.input

    @property
    def source(self) -> Scan | PrivateJoin:
        return self.shared.source

    @property
    def scans(self) -> tuple[Scan, ...]:
        s = self.source
        return (s,) if isinstance(s, Scan) else (s.left, s.right)

    def scan_at(self, party: str) -> Scan | None:
        return next((s for s in self.scans if s.party == party), None)

    @property
    def model(self) -> Aggregate | None:
        """The plan's model aggregate (it stands alone), or None."""
        if not self.aggregate.aggregates:
            return None
        first = self.aggregate.aggregates[0]
        return first if first.is_model else None

    def disclosures(self) -> tuple[Disclosure, ...]:
        """Everything running this plan discloses, in the order a run reaches it.

        The only values a session opens are these: the sizes of the source, the "too small"
        bit when a party's minimum refuses the query, the bits an aggregate's solver opens (or,
        for a program plan, the WHERE's "filter_too_small" bit and the groups' presence bits)
        and the result.  The session records each under its ``label`` (transcripts, tests).
        """
        label, what, _ = self.shared.size_fact
        out = list(self.shared.disclosures())
        size = next(d for d in out if d.label == label)
        out.append(Disclosure("too_small", f"one bit: whether {what} is smaller than the "
                              "largest minimum of the parties (the query is then refused)",
                              size.to, "size", when=REFUSED))
        for agg in self.aggregate.aggregates:
            out += agg.disclosures(self.parties)
        receivers = self.root.receivers
        if self.program is not None:
            from planner.lower_explain import program_disclosures  # noqa: PLC0415

            out += program_disclosures(self.program, self.output, receivers)
        else:
            result = ", ".join(c.name for c in self.output)
            out.append(Disclosure("result", f"the result ({result})", receivers, "result"))
        return tuple(Disclosure(d.label, d.text, self.parties if d.to == ("*",) else d.to,
                                d.stage, d.when) for d in out)

    def reached(self, outcome: str = "done") -> list[tuple[Disclosure, tuple[str, ...]]]:
        """The disclosures a run that ends in ``outcome`` reaches, each with who learns it.

        ``outcome`` is ``"done"`` (the run completed), ``"too_small"`` (a party's minimum
        refused it once the size was computed), ``"filter_too_small"`` (the rows a WHERE leaves
        were too few: everything before the result, the filter bit included) or ``"aborted"``
        (failed part-way: at most what comes before the result).
        """
        _check(outcome in OUTCOMES, f"unknown outcome {outcome!r}")
        size_label, _, computed_by = self.shared.size_fact
        out = []
        for d in self.disclosures():
            if outcome == "done":
                keep = d.to if d.when != REFUSED else ()
            elif outcome == "too_small":  # what comes before the announcement, and the bit
                keep = tuple(p for p in d.to if d.stage == "input" or d.label == "too_small"
                             or (d.label == size_label and p == computed_by))
            else:  # filter_too_small, aborted: everything before the result
                keep = d.to if d.stage != "result" and d.when != REFUSED else ()
            if keep:
                out.append((d, keep))
        return out

    def learns(self, outcome: str = "done") -> dict[str, list[str]]:
        """Per party, everything it learns by a run of this plan that ends in ``outcome``."""
        facts: dict[str, list[str]] = {p: [] for p in self.parties}
        for d, parties in self.reached(outcome):
            text = d.text if outcome != "aborted" or d.stage in ("input", "size") \
                else f"at most {d.text}"
            for p in parties:
                facts[p].append(text)
        return facts

    def explain(self) -> str:
        lines = ["Plan:", self.root.to_s(2), "", "What each party learns:"]
        for p in self.parties:
            items = [d.text if d.when == "always" else f"{d.text} ({d.when})"
                     for d in self.disclosures() if p in d.to]
            lines.append(f"  {p} learns: " + ("; ".join(items) if items else "nothing"))
        lines.append("  Everything else (values, identifiers, which rows matched) stays hidden.")
        return "\n".join(lines)

    def fingerprint(self) -> str:
        """A hash of the plan, equal at every party that planned the same query."""
        return hashlib.sha256(json.dumps(self.explain()).encode()).hexdigest()[:16]
