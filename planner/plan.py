"""Secure operators: immutable, typed plan nodes that check their invariants on construction.

A plan is a tree  Scan@party -> PrivateJoin -> SecretShare -> SecureAggregate -> Reveal.
Every node prints itself (``to_s``) and says what each party learns by running it
(``learns``); ``Plan.explain()`` combines both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from dialect.errors import InternalError

#: Aggregates producing one scalar (one row, one column each).
SCALAR_AGGREGATES = frozenset({"COUNT", "SUM", "AVG"})
#: Aggregates producing a model: rows (term VARCHAR, coefficient DOUBLE).
MODEL_AGGREGATES = frozenset({"LASSO", "RIDGE", "LINREG"})
ALL_AGGREGATES = SCALAR_AGGREGATES | MODEL_AGGREGATES

#: Private join protocols (docs/protocols.md): the published Paillier one and the masked fast
#: path (PRF masks shared by the data parties; no public-key operation per row).
JOIN_PROTOCOLS = frozenset({"paillier", "masked"})


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise InternalError(f"invalid plan: {msg}")


class Node:
    """Base of all plan nodes."""

    def to_s(self, indent: int = 0) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def learns(self) -> dict[str, list[str]]:
        """What each party learns from this node alone (party name -> facts)."""
        return {}


@dataclass(frozen=True)
class ColumnRef:
    """A numeric column of a party's table."""

    party: str
    table: str
    column: str
    dtype: str = "DOUBLE"
    scale_bits: int | None = None  # public bound |x| <= 2**scale_bits declared in the catalog

    def __post_init__(self) -> None:
        _check(bool(self.party and self.table and self.column), "empty column reference")

    @property
    def qualified(self) -> str:
        return f"{self.table}.{self.column}"


@dataclass(frozen=True)
class Scan(Node):
    """Read ``columns`` (and the key, if joined) of ``table`` locally at ``party``."""

    party: str
    table: str
    key: str | None
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        _check(len(set(c.lower() for c in self.columns)) == len(self.columns), "duplicate columns")
        _check(self.key is None or self.key.lower() not in {c.lower() for c in self.columns},
               "the key column cannot be a value column")

    def to_s(self, indent: int = 0) -> str:
        cols = ", ".join(self.columns) or "(no value columns)"
        key = f" key={self.key}" if self.key else ""
        return " " * indent + f"Scan @{self.party}: {self.table}{key} columns=[{cols}]"


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

    def learns(self) -> dict[str, list[str]]:
        a, b = self.left.party, self.right.party
        both = f"|{self.left.table} ∩ {self.right.table}|"
        facts = {
            a: [f"{both} (intersection size)"],
            b: [f"{both} (intersection size)"],
            self.helper: [
                f"{both} (intersection size)",
                f"|{self.left.table}|, |{self.right.table}| (row counts)",
            ],
        }
        if self.protocol == "masked":
            # Each data party receives, for the other's value columns, the matched positions
            # in the other's shuffled list: a random subset of range(|other table|).
            for me, other in ((self.left, self.right), (self.right, self.left)):
                if other.columns:
                    facts[me.party].append(
                        f"|{other.table}| (row count of {other.party}: the positions it "
                        "receives are a random subset of that range)")
        return facts


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

    def learns(self) -> dict[str, list[str]]:
        if isinstance(self.source, Scan):
            t = self.source.table
            return {"*": [f"|{t}| (row count of {self.source.party})"]}
        return self.source.learns()


@dataclass(frozen=True)
class Aggregate:
    """One aggregate call: ``func(args..., options)`` with output column ``name``."""

    func: str
    args: tuple[ColumnRef, ...]
    name: str
    options: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        _check(self.func in ALL_AGGREGATES, f"unknown aggregate {self.func}")
        if self.func == "COUNT":
            _check(len(self.args) <= 1, "COUNT takes at most one column")
        elif self.func in SCALAR_AGGREGATES:
            _check(len(self.args) == 1, f"{self.func} takes one column")
        else:
            _check(len(self.args) >= 2, f"{self.func} needs a target and a feature")

    @property
    def is_model(self) -> bool:
        return self.func in MODEL_AGGREGATES

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def to_s(self) -> str:
        parts = [a.qualified for a in self.args] or ["*"]
        parts += [f"{k} => {v!r}" for k, v in self.options]
        return f"{self.func}({', '.join(parts)}) AS {self.name}"


@dataclass(frozen=True)
class SecureAggregate(Node):
    """Compute ``aggregates`` in MPC on the secret-shared rows; nothing is opened here."""

    input: SecretShare
    aggregates: tuple[Aggregate, ...]

    def __post_init__(self) -> None:
        _check(len(self.aggregates) > 0, "no aggregates")
        models = [a for a in self.aggregates if a.is_model]
        _check(not models or len(self.aggregates) == 1, "a model aggregate must stand alone")
        for a in self.aggregates:
            for c in a.args:
                _check(c in self.input.columns, f"{c.qualified} is not secret-shared")

    def to_s(self, indent: int = 0) -> str:
        pad = " " * indent
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
    """A bound, checked query plan; identical at every party for the same SQL and catalog."""

    sql: str
    root: Reveal
    output: tuple[OutputColumn, ...]
    parties: tuple[str, ...]  # all parties taking part, MPyC pid order

    @property
    def aggregate(self) -> SecureAggregate:
        return self.root.input

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

    def learns(self) -> dict[str, list[str]]:
        """Per party, everything it learns by running this plan."""
        facts: dict[str, list[str]] = {p: [] for p in self.parties}
        for node in (self.shared,):
            for who, items in node.learns().items():
                for p in self.parties if who == "*" else [who]:
                    facts[p].extend(items)
        result = ", ".join(c.name for c in self.output)
        for p in self.root.receivers:
            facts[p].append(f"the result ({result})")
        return facts

    def explain(self) -> str:
        lines = ["Plan:", self.root.to_s(2), "", "What each party learns:"]
        for p, items in self.learns().items():
            lines.append(f"  {p} learns: " + ("; ".join(items) if items else "nothing"))
        lines.append("  Everything else (values, identifiers, which rows matched) stays hidden.")
        return "\n".join(lines)

    def fingerprint(self) -> str:
        """A hash of the plan, equal at every party that planned the same query."""
        return hashlib.sha256(json.dumps(self.explain()).encode()).hexdigest()[:16]
