"""Per-party policies: which aggregates may touch which columns, and minimum row counts.

``allowed_functions`` is keyed by ``"*"``, ``"table"`` or ``"table.column"``; the most specific
key present wins.  Without a ``"*"`` key every aggregate is allowed where no key applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dialect.errors import PolicyError
from planner.plan import ALL_AGGREGATES, Plan, PrivateJoin

_KEYS = frozenset({"party", "min_intersection", "allow"})


def _default_allow() -> Mapping[str, frozenset[str]]:
    return {"*": ALL_AGGREGATES}


@dataclass(frozen=True)
class Policy:
    """The policy of one data party; it rules only over that party's own tables."""

    party: str
    allowed_functions: Mapping[str, frozenset[str]] = field(
        default_factory=_default_allow, hash=False
    )
    min_intersection: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.min_intersection, int) or isinstance(self.min_intersection, bool):
            raise ValueError("min_intersection must be an integer")
        if self.min_intersection < 0:
            raise ValueError("min_intersection must be at least 0")
        allow: dict[str, frozenset[str]] = {}
        for key, funcs in self.allowed_functions.items():
            if isinstance(funcs, str):
                funcs = [funcs]
            norm = frozenset(str(f).upper() for f in funcs)
            unknown = norm - ALL_AGGREGATES
            if unknown:
                raise ValueError(
                    f"policy of {self.party}: unknown aggregate(s) {', '.join(sorted(unknown))} "
                    f"for {key!r}; known: {', '.join(sorted(ALL_AGGREGATES))}"
                )
            k = str(key).strip().lower()
            if not k or k.count(".") > 1 or (k != "*" and "*" in k):
                raise ValueError(f"policy of {self.party}: bad key {key!r}")
            allow[k] = norm
        object.__setattr__(self, "allowed_functions", MappingProxyType(allow))

    # --- rules --------------------------------------------------------------------------------

    def rule(self, table: str, column: str | None = None) -> str | None:
        """The key that applies to ``table.column`` (or the whole table); None: the default."""
        keys = ([f"{table}.{column}".lower()] if column else []) + [table.lower(), "*"]
        return next((k for k in keys if k in self.allowed_functions), None)

    def allowed(self, table: str, column: str | None = None) -> frozenset[str]:
        """The aggregates allowed on ``table.column`` (``column=None``: on the table's rows)."""
        key = self.rule(table, column)
        return ALL_AGGREGATES if key is None else self.allowed_functions[key]

    def _uses(self, plan: Plan) -> list[tuple[str, str, str | None]]:
        """(function, table, column) of every use of this party's data by ``plan``."""
        mine = [s for s in plan.scans if s.party == self.party]
        uses: list[tuple[str, str, str | None]] = []
        for agg in plan.aggregate.aggregates:
            if not agg.args:  # COUNT(*): counts rows of every table of the query
                uses += [(agg.func, s.table, None) for s in mine]
            uses += [(agg.func, c.table, c.column) for c in agg.args if c.party == self.party]
        return list(dict.fromkeys(uses))

    def check(self, plan: Plan) -> None:
        """Raise :class:`PolicyError` if this party's policy refuses ``plan``."""
        for func, table, column in self._uses(plan):
            if func not in self.allowed(table, column):
                what = f"{table}.{column}" if column else f"table {table} (COUNT(*))"
                raise PolicyError(
                    f"query refused by policy of {self.party}: {func} is not allowed on {what}",
                    party=self.party, rule="allow",
                )

    def check_rows(self, rows: int, plan: Plan) -> None:
        """Raise :class:`PolicyError` if the aggregates would run over too few rows.

        ``rows`` is the intersection size of a join, or the table size of a single-table query;
        only checked when ``plan`` reads a table of this party.
        """
        if not any(s.party == self.party for s in plan.scans):
            return
        if rows < self.min_intersection:
            what = "the intersection" if isinstance(plan.source, PrivateJoin) else "the table"
            raise PolicyError(
                f"query refused by policy of {self.party}: {what} has {rows} rows, "
                f"fewer than min_intersection = {self.min_intersection}",
                party=self.party, rule="min_intersection",
            )

    def describe(self, plan: Plan) -> list[str]:
        """Which rules of this policy apply to ``plan``, one line each (for explain)."""
        uses = self._uses(plan)
        if not uses and not any(s.party == self.party for s in plan.scans):
            return [f"{self.party}: no table of {self.party} is used; its policy does not apply"]
        lines = []
        for func, table, column in uses:
            key = self.rule(table, column)
            verdict = "allowed" if func in self.allowed(table, column) else "REFUSED"
            what = f"{table}.{column}" if column else f"table {table} (COUNT(*))"
            by = f"rule {key!r}" if key else "the default (all aggregates)"
            lines.append(f"{self.party}: {func} on {what} {verdict} by {by}")
        rows = "intersection" if isinstance(plan.source, PrivateJoin) else "table"
        lines.append(f"{self.party}: the {rows} must have at least {self.min_intersection} rows")
        return lines

    # --- (de)serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A TOML-friendly dict: ``{"party", "min_intersection", "allow": {key: [FUNC, ...]}}``."""
        return {
            "party": self.party,
            "min_intersection": self.min_intersection,
            "allow": {k: sorted(v) for k, v in self.allowed_functions.items()},
        }

    @classmethod
    def from_dict(cls, party: str, d: Mapping[str, Any] | None = None) -> Policy:
        """The policy of ``party`` from :meth:`to_dict`'s form (``None`` or ``{}``: default)."""
        d = d or {}
        unknown = set(d) - _KEYS
        if unknown:
            raise ValueError(f"unknown policy key(s): {', '.join(sorted(unknown))}")
        if d.get("party", party) != party:
            raise ValueError(f"policy of {d['party']!r} given for party {party!r}")
        allow = d.get("allow")
        return cls(
            party,
            _default_allow() if allow is None else dict(allow),
            d.get("min_intersection", 10),
        )
