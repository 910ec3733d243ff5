"""Per-party policies: what a party lets a query do with its data and its computation.

A policy is the ``[policy]`` table of a party's ``party.toml`` (or the dict given to
``engine.connect(policies=...)``); :meth:`Policy.from_dict` validates it.  Keys:

``allow``            uses allowed per ``"*"``, ``"table"`` or ``"table.column"`` (the most
                     specific key present wins; without ``"*"`` everything else is allowed): the
                     aggregates (COUNT, SUM, AVG, MIN, MAX, VAR_POP, VAR_SAMP, STDDEV_POP,
                     STDDEV_SAMP, COVAR_POP, COVAR_SAMP, CORR, REGR_SLOPE, REGR_INTERCEPT,
                     REGR_R2, REGR_COUNT, REGR_SXX, REGR_SYY, REGR_SXY, REGR_AVGX,
                     REGR_AVGY, QUANTILE_CONT, LASSO, RIDGE, LINREG; the synonyms
                     VARIANCE, STDDEV and MEDIAN stand for VAR_SAMP, STDDEV_SAMP and
                     QUANTILE_CONT) and two uses of a column: ``"WHERE"`` (it appears in WHERE
                     or in a FILTER clause) and ``"GROUP BY"`` (it appears in a group key)
``never_leave``      ``"table.column"`` (or ``"party.table.column"``) that no query may use in
                     any way: aggregated or counted (in SELECT, HAVING or ORDER BY), in WHERE or
                     FILTER, in a group key, or as the join key
``min_intersection`` minimum rows an aggregate may cover (intersection or table size, and the
                     rows a WHERE leaves)
``min_group_rows``   minimum rows per group where a query forms groups (GROUP BY or HAVING);
                     smaller groups are not output (enforced obliviously in MPC)
``receivers``        parties that may receive the results of queries this party takes part in
``join_protocols``   private join protocols this party takes part in (``paillier``, ``masked``)
``analysts``         analyst identities (exact, or ``fnmatch`` patterns such as ``"*@ac"``)
                     allowed to run queries this party takes part in; absent: anyone
                     authenticated

``allow``/``never_leave`` concern the party's own columns; the other rules apply to every query
the party takes part in (in this federation every query runs at every party).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any

from dialect.errors import ConfigError, PolicyError, register_error
from planner.bind_agg import SQL_AGGREGATES, SYNONYMS
from planner.plan import ALL_AGGREGATES as MODEL_PLAN_AGGREGATES
from planner.plan import JOIN_PROTOCOLS, Plan, PrivateJoin
from planner.usage import COLUMN_USES, GROUP_BY, WHERE, Usage

#: Every name an ``allow`` list may hold: the aggregates and the column uses WHERE, GROUP BY.
ALL_AGGREGATES = frozenset(MODEL_PLAN_AGGREGATES | SQL_AGGREGATES)
ALL_USES = ALL_AGGREGATES | COLUMN_USES
_USE_TEXT = {WHERE: "the column appears in WHERE or in a FILTER clause",
             GROUP_BY: "the column appears in a group key"}

_KEYS = frozenset({"party", "min_intersection", "allow", "never_leave", "min_group_rows",
                   "receivers", "join_protocols", "analysts"})
DEFAULT_MIN_INTERSECTION = 10


@register_error
class PolicyConfigError(ConfigError, ValueError):
    """A policy table that cannot be used; names the party and the key.

    A :class:`~dialect.errors.ConfigError` (so an ``engine.Error``), and a ``ValueError`` for
    callers that catch that.
    """


def _default_allow() -> Mapping[str, frozenset[str]]:
    return {"*": ALL_USES}


def normalize_use(name: str) -> str:
    """``median`` -> ``QUANTILE_CONT``; ``group  by`` -> ``GROUP BY``."""
    up = " ".join(name.split()).upper()
    return SYNONYMS.get(up, up)


def _names(party: str, key: str, value: Any) -> tuple[str, ...] | None:
    """A TOML list of non-empty strings (``None`` stays ``None``: the rule is absent)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise PolicyConfigError(f"policy of {party}: {key} must be a list of strings, not "
                                f"{value!r}")
    out = []
    for v in value:
        if not isinstance(v, str) or not v.strip():
            raise PolicyConfigError(f"policy of {party}: {key} entries must be non-empty "
                                    f"strings, not {v!r}")
        out.append(v.strip())
    return tuple(dict.fromkeys(out))


def _count(party: str, key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PolicyConfigError(f"policy of {party}: {key} must be an integer >= 0, not "
                                f"{value!r}")
    return value


def _refuse(party: str, rule: str, why: str) -> PolicyError:
    return PolicyError(f"query refused by policy of {party} ({rule}): {why}", party=party,
                       rule=rule)


@dataclass(frozen=True)
class Policy:
    """The policy of one party (data party or helper)."""

    party: str
    allowed_functions: Mapping[str, frozenset[str]] = field(
        default_factory=_default_allow, hash=False
    )
    min_intersection: int = DEFAULT_MIN_INTERSECTION
    never_leave: frozenset[str] = frozenset()  # "table.column", lower case
    min_group_rows: int | None = None
    receivers: tuple[str, ...] | None = None
    join_protocols: tuple[str, ...] | None = None
    analysts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        p = self.party
        _count(p, "min_intersection", self.min_intersection)
        if self.min_group_rows is not None:
            _count(p, "min_group_rows", self.min_group_rows)
        allow: dict[str, frozenset[str]] = {}
        if not isinstance(self.allowed_functions, Mapping):
            raise PolicyConfigError(f"policy of {p}: allow must be a table of key = [FUNC, ...], "
                                    f"not {self.allowed_functions!r}")
        for key, funcs in self.allowed_functions.items():
            if not isinstance(key, str):
                raise PolicyConfigError(f"policy of {p}: allow keys are '*', 'table' or "
                                        f"'table.column', not {key!r}")
            if isinstance(funcs, str):
                funcs = [funcs]
            if not isinstance(funcs, Iterable) or isinstance(funcs, Mapping) \
                    or not all(isinstance(f, str) for f in funcs):
                raise PolicyConfigError(f"policy of {p}: allow[{key!r}] must be a list of "
                                        f"aggregate names, not {funcs!r}")
            norm = frozenset(normalize_use(f) for f in funcs)
            unknown = norm - ALL_USES
            if unknown:
                raise PolicyConfigError(
                    f"policy of {p}: unknown aggregate(s) or use(s) {', '.join(sorted(unknown))}"
                    f" for {key!r}; known: {', '.join(sorted(ALL_USES))}"
                )
            k = str(key).strip().lower()
            if not k or k.count(".") > 1 or (k != "*" and "*" in k):
                raise PolicyConfigError(f"policy of {p}: bad key {key!r}")
            allow[k] = norm
        object.__setattr__(self, "allowed_functions", MappingProxyType(allow))
        object.__setattr__(self, "never_leave", frozenset(
            self._column_key(c) for c in (_names(p, "never_leave", self.never_leave) or ())))
        object.__setattr__(self, "receivers", _names(p, "receivers", self.receivers))
        object.__setattr__(self, "analysts", _names(p, "analysts", self.analysts))
        protos = _names(p, "join_protocols", self.join_protocols)
        if protos is not None:
            protos = tuple(x.lower() for x in protos)
            bad = set(protos) - JOIN_PROTOCOLS
            if bad:
                raise PolicyConfigError(f"policy of {p}: unknown join protocol(s) "
                                        f"{', '.join(sorted(bad))}; known: "
                                        f"{', '.join(sorted(JOIN_PROTOCOLS))}")
        object.__setattr__(self, "join_protocols", protos)

    def _column_key(self, name: str) -> str:
        parts = name.lower().split(".")
        if len(parts) == 3 and parts[0] == self.party.lower():
            parts = parts[1:]
        if len(parts) != 2 or not all(parts) or any("*" in x for x in parts):
            raise PolicyConfigError(f"policy of {self.party}: never_leave entries are "
                                    f"'table.column' or '{self.party}.table.column', not "
                                    f"{name!r}")
        return ".".join(parts)

    # --- rules --------------------------------------------------------------------------------

    def rule(self, table: str, column: str | None = None) -> str | None:
        """The key that applies to ``table.column`` (or the whole table); None: the default."""
        keys = ([f"{table}.{column}".lower()] if column else []) + [table.lower(), "*"]
        return next((k for k in keys if k in self.allowed_functions), None)

    def allowed(self, table: str, column: str | None = None) -> frozenset[str]:
        """The uses allowed on ``table.column`` (``column=None``: on the table's rows)."""
        key = self.rule(table, column)
        return ALL_USES if key is None else self.allowed_functions[key]

    def analyst_allowed(self, analyst: str | None) -> bool:
        """Whether ``analyst`` may run queries this party takes part in."""
        if self.analysts is None:
            return True
        return analyst is not None and any(fnmatchcase(analyst, a) for a in self.analysts)

    def _uses(self, plan: Plan, usages: Iterable[Usage] | None = None
              ) -> list[tuple[str, str, str | None]]:
        """(use, table, column) of every use of this party's data by ``plan``.

        A program plan's uses come from ``usages`` (default: ``plan.usages``, computed from the
        plan's own LogicalQuery); a model plan's from its aggregates.
        """
        if usages is None and getattr(plan, "logical", None) is not None:
            usages = plan.usages
        if usages is not None:
            return list(dict.fromkeys((u.use, u.table, u.column) for u in usages
                                      if u.party == self.party))
        mine = [s for s in plan.scans if s.party == self.party]
        uses: list[tuple[str, str, str | None]] = []
        for agg in plan.aggregate.aggregates:
            if not agg.args:  # COUNT(*): counts rows of every table of the query
                uses += [(agg.func, s.table, None) for s in mine]
            uses += [(agg.func, c.table, c.column) for c in agg.args if c.party == self.party]
        return list(dict.fromkeys(uses))

    def _kept(self, plan: Plan, usages: Iterable[Usage] | None = None) -> list[str]:
        """Descriptions of this party's ``never_leave`` columns that ``plan`` would use."""
        out = []
        for s in plan.scans:
            if s.party != self.party:
                continue
            if s.key and f"{s.table}.{s.key}".lower() in self.never_leave:
                out.append(f"{s.table}.{s.key} (as the join key: its keyed hashes would leave "
                           f"{self.party})")
        for use, table, column in self._uses(plan, usages):
            if column is not None and f"{table}.{column}".lower() in self.never_leave:
                out.append(f"{table}.{column} (in {use})")
        return list(dict.fromkeys(out))

    @staticmethod
    def _not_allowed(use: str, table: str, column: str | None) -> str:
        what = f"{table}.{column}" if column else f"table {table} (COUNT(*))"
        why = f" ({_USE_TEXT[use]})" if use in _USE_TEXT else ""
        return f"{use} is not allowed on {what}{why}"

    def check(self, plan: Plan, analyst: str | None = None,
              usages: Iterable[Usage] | None = None) -> None:
        """Raise :class:`PolicyError` (naming this party and the rule) if the policy refuses.

        ``analyst`` is the authenticated identity of whoever asked for the query; ``usages``
        (default ``plan.usages`` for a program plan) how the query uses each column.
        """
        p = self.party
        if not self.analyst_allowed(analyst):
            who = analyst if analyst is not None else "an unidentified analyst"
            raise _refuse(p, "analysts", f"{who} may not run queries that involve {p}")
        kept = self._kept(plan, usages)
        if kept:
            raise _refuse(p, "never_leave", f"column {kept[0]} may never leave {p}")
        for use, table, column in self._uses(plan, usages):
            if use not in self.allowed(table, column):
                raise PolicyError(
                    f"query refused by policy of {p}: {self._not_allowed(use, table, column)}",
                    party=p, rule="allow",
                )
        if isinstance(plan.source, PrivateJoin) and self.join_protocols is not None \
                and plan.source.protocol not in self.join_protocols:
            raise _refuse(p, "join_protocols",
                          f"join_protocol '{plan.source.protocol}' is not allowed; allowed: "
                          + ", ".join(f"'{x}'" for x in self.join_protocols))
        if self.receivers is not None:
            extra = [r for r in plan.root.receivers if r not in self.receivers]
            if extra:
                raise _refuse(p, "receivers",
                              f"the result may not be revealed to {', '.join(extra)} "
                              f"(allowed receivers: {', '.join(self.receivers) or 'none'})")

    def check_rows(self, rows: int, plan: Plan) -> None:
        """Raise :class:`PolicyError` if the aggregates would run over too few rows.

        ``rows`` is the intersection size of a join, or the table size of a single-table query.
        The error says only that the size is too small, never the size itself.
        """
        if rows < self.min_intersection:
            raise too_small(self.party, self.min_intersection, plan)

    def describe(self, plan: Plan, analyst: str | None = None,
                 usages: Iterable[Usage] | None = None) -> list[str]:
        """Which rules of this policy apply to ``plan``, one line each (for explain)."""
        p = self.party
        lines = []
        if self.analysts is not None:
            ok = "allowed" if self.analyst_allowed(analyst) else "REFUSED"
            lines.append(f"{p}: analyst {analyst or '(unidentified)'} {ok} by rule analysts "
                         f"= [{', '.join(self.analysts)}]")
        kept = self._kept(plan, usages)
        if self.never_leave:
            verdict = (f"REFUSED: {kept[0]} may never leave {p}" if kept else "none used")
            lines.append(f"{p}: never_leave [{', '.join(sorted(self.never_leave))}]: {verdict}")
        uses = self._uses(plan, usages)
        if not uses and not any(s.party == p for s in plan.scans):
            lines.append(f"{p}: no table of {p} is used (allow rules do not apply)")
        for func, table, column in uses:
            key = self.rule(table, column)
            verdict = "allowed" if func in self.allowed(table, column) else "REFUSED"
            what = f"{table}.{column}" if column else f"table {table} (COUNT(*))"
            by = f"rule {key!r}" if key else "the default (all aggregates)"
            lines.append(f"{p}: {func} on {what} {verdict} by {by}")
        if isinstance(plan.source, PrivateJoin) and self.join_protocols is not None:
            ok = "allowed" if plan.source.protocol in self.join_protocols else "REFUSED"
            lines.append(f"{p}: join_protocol '{plan.source.protocol}' {ok} by rule "
                         f"join_protocols = [{', '.join(self.join_protocols)}]")
        if self.receivers is not None:
            extra = [r for r in plan.root.receivers if r not in self.receivers]
            ok = f"REFUSED for {', '.join(extra)}" if extra else "allowed"
            lines.append(f"{p}: result to [{', '.join(plan.root.receivers)}] {ok} by rule "
                         f"receivers = [{', '.join(self.receivers)}]")
        rows = "intersection" if isinstance(plan.source, PrivateJoin) else "table"
        lines.append(f"{p}: the {rows} must have at least {self.min_intersection} rows "
                     "(checked when its size is known; a refusal reveals only 'too small')")
        logical = getattr(plan, "logical", None)
        if logical is not None and logical.where is not None:
            lines.append(f"{p}: the rows the WHERE leaves must be at least "
                         f"{self.min_intersection} (checked in MPC; a refusal reveals one bit)")
        if self.min_group_rows is not None:
            groups = logical is not None and (logical.keys or logical.having is not None)
            what = ("a group's row is output only if the group has at least the largest "
                    "min_group_rows of the parties (checked in MPC; only the bit is opened)"
                    if groups else "this query forms no groups")
            lines.append(f"{p}: min_group_rows = {self.min_group_rows} ({what})")
        return lines

    # --- (de)serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A TOML-friendly dict with every key that is set (the form :meth:`from_dict` reads)."""
        d: dict[str, Any] = {
            "party": self.party,
            "min_intersection": self.min_intersection,
            "allow": {k: sorted(v) for k, v in self.allowed_functions.items()},
        }
        if self.never_leave:
            d["never_leave"] = sorted(self.never_leave)
        for key in ("min_group_rows", "receivers", "join_protocols", "analysts"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value if isinstance(value, int) else list(value)
        return d

    @classmethod
    def from_dict(cls, party: str, d: Mapping[str, Any] | None = None) -> Policy:
        """The policy of ``party`` from a ``[policy]`` table (``None`` or ``{}``: default)."""
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise PolicyConfigError(f"policy of {party} must be a table (a dict of rules), not "
                                    f"{d!r}")
        unknown = sorted(map(str, set(d) - _KEYS))
        if unknown:
            raise PolicyConfigError(f"policy of {party}: unknown key(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(sorted(_KEYS - {'party'}))}")
        if d.get("party", party) != party:
            raise PolicyConfigError(f"policy of {d['party']!r} given for party {party!r}")
        allow = d.get("allow")
        if allow is not None and not isinstance(allow, Mapping):
            raise PolicyConfigError(f"policy of {party}: allow must be a table of key = "
                                    "[FUNC, ...]")
        return cls(
            party,
            _default_allow() if allow is None else dict(allow),
            d.get("min_intersection", DEFAULT_MIN_INTERSECTION),
            never_leave=d.get("never_leave") or (),
            min_group_rows=d.get("min_group_rows"),
            receivers=d.get("receivers"),
            join_protocols=d.get("join_protocols"),
            analysts=d.get("analysts"),
        )


#: What a min_intersection refusal of the rows a WHERE leaves names (the audit tells the two
#: refusals apart by it: they reveal different bits).
FILTERED = "the rows the WHERE leaves"


def too_small(party: str | None, minimum: int, plan: Plan | None = None,
              what: str | None = None) -> PolicyError:
    """The min_intersection refusal: says the size is too small, never what it is."""
    if what is None:
        joined = plan is None or isinstance(plan.source, PrivateJoin)
        what = "the intersection" if joined else "the table"
    who = f"policy of {party}" if party else "the parties' policies"
    return PolicyError(
        f"query refused by {who} (min_intersection): {what} is smaller than the minimum of "
        f"{minimum} rows; nothing was computed", party=party, rule="min_intersection")
