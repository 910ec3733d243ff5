"""Plan building: SQL -> Scan -> [PrivateJoin] -> SecretShare -> SecureAggregate -> Reveal.

Model queries (LASSO, RIDGE, LINREG) without WHERE and GROUP BY are bound to a
:class:`BoundQuery` and planned here (:func:`build_plan`); every other aggregate query is
bound to a LogicalQuery and lowered to a physical Program (:func:`planner.lower.lower`).
"""

from __future__ import annotations

from dialect import DEFAULTS, parse_query
from dialect.errors import BindError, ProgrammingError
from planner.binder import Binder, BoundQuery
from planner.catalog import DATA, Catalog, TableSchema
from planner.lower import join_helper, lower
from planner.plan import (
    ColumnRef,
    Plan,
    PrivateJoin,
    Reveal,
    Scan,
    SecretShare,
    SecureAggregate,
    check_join_protocol,
)


def plan(
    sql: str,
    catalog: Catalog,
    *,
    receivers: tuple[str, ...] | None = None,
    join_protocol: str | None = None,
) -> Plan:
    """Parse, bind and plan ``sql``; the result is revealed to ``receivers``.

    ``receivers`` defaults to every data party of ``catalog``.  The private join uses
    ``SET join_protocol = '...'`` from the SQL if given, else ``join_protocol`` (a federation
    default), else ``'paillier'``.  Raises the ``dialect.errors`` classes:
    ParseError/UnsupportedError (SQL), BindError/ProgrammingError (names, types, options,
    settings), NotSupportedError (queries the secure engine cannot run).
    """
    query = parse_query(sql)
    binder = Binder(catalog, sql)
    protocol = query.setting("join_protocol", join_protocol or DEFAULTS["join_protocol"])
    if Binder.is_filtered_model(query.select):
        logical = binder.bind_logical_model(query.select)
        return lower(logical, catalog, receivers=_receivers(catalog, receivers),
                     join_protocol=protocol, sql=sql)
    if Binder.is_model_query(query.select):
        bound = binder.bind(query.select)
        return build_plan(sql, catalog, bound, receivers=receivers, join_protocol=protocol)
    logical = binder.bind_logical(query.select)
    return lower(logical, catalog, receivers=_receivers(catalog, receivers),
                 join_protocol=protocol, sql=sql)


def used_columns(bound: BoundQuery) -> tuple[ColumnRef, ...]:
    """Every aggregate argument, deduplicated, in first-use order."""
    return tuple(dict.fromkeys(c for a in bound.aggregates for c in a.args))


def _scan(table: TableSchema, columns: tuple[ColumnRef, ...], *, joined: bool) -> Scan:
    mine = tuple(c.column for c in columns if c.table == table.name)
    return Scan(table.party, table.name, table.key if joined else None, mine)


def _receivers(catalog: Catalog, receivers: tuple[str, ...] | None) -> tuple[str, ...]:
    if receivers is None:
        return tuple(p.name for p in catalog.parties if p.role == DATA)
    if isinstance(receivers, str):
        receivers = (receivers,)
    for name in receivers:
        catalog.party(name)  # BindError for an unknown party
    out = tuple(dict.fromkeys(receivers))
    if not out:
        raise ProgrammingError("receivers must name at least one party")
    return out


def build_plan(
    sql: str,
    catalog: Catalog,
    bound: BoundQuery,
    *,
    receivers: tuple[str, ...] | None = None,
    join_protocol: str = "paillier",
) -> Plan:
    """The plan of an already bound query (``join_protocol`` is used only if it joins)."""
    check_join_protocol(join_protocol)
    columns = used_columns(bound)
    source: Scan | PrivateJoin
    if bound.right is None:
        source = _scan(bound.left, columns, joined=False)
    else:
        source = PrivateJoin(
            left=_scan(bound.left, columns, joined=True),
            right=_scan(bound.right, columns, joined=True),
            helper=join_helper(catalog),
            protocol=join_protocol,
        )
    if not bound.aggregates:  # the grammar guarantees at least one
        raise BindError("nothing to compute")
    root = Reveal(
        SecureAggregate(SecretShare(source, columns), bound.aggregates),
        _receivers(catalog, receivers),
    )
    return Plan(sql, root, bound.output, tuple(p.name for p in catalog.parties))
