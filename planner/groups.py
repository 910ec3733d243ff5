"""GROUP BY keys: row expressions of one party with a public domain.

A key's domain is public when it follows from the catalog or from the query itself:

* a column whose owner declared its ``domain`` (categories or an integer range);
* a BOOLEAN column or any boolean expression: (False, True);
* a CASE whose THEN and ELSE values are literals: those literals, in order.

A key that may be NULL also has the NULL group (None, last in its domain).  The groups are
the cartesian product of the keys' domains, at most :data:`planner.physical.MAX_GROUPS`.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from dialect.errors import BindError, NotSupportedError
from planner.bind_expr import RowBinder, literal_value, sql_text, unparen
from planner.catalog import Catalog
from planner.logical import BOOLEAN, Call, Col, Expr, GroupKey, Lit
from planner.naming import ExpressionNamer
from planner.physical import MAX_GROUPS
from planner.types import case_values, expr_type

_DECLARE = ("declare the values of {col} in the catalog (domains={{'{name}': [...]}} when "
            "registering the table, or `domains` in its [[tables]] entry of party.toml)")


#: A GROUP BY entry: the expression, the alias that names it, and the select item a bare name
#: means if it is not a column (``GROUP BY band`` for ``CASE ... END AS band``).
Entry = tuple[exp.Expression, str | None, exp.Expression | None]


def key_nodes(select: exp.Select) -> list[Entry]:
    """The GROUP BY entries, a position resolved to its select item."""
    group = select.args.get("group")
    if group is None:
        return []
    for key in ("all", "grouping_sets", "cube", "rollup", "totals"):
        if group.args.get(key):
            what = "GROUP BY ALL" if key == "all" else f"GROUP BY {key.upper()}"
            raise NotSupportedError(f"{what} is not supported: list the group keys")
    items = select.expressions
    aliases = {i.alias.lower(): i for i in items if isinstance(i, exp.Alias)}
    out: list[Entry] = []
    for node in group.expressions:
        node = unparen(node)
        if isinstance(node, (exp.Rollup, exp.Cube, exp.GroupingSets)):
            raise NotSupportedError(f"GROUP BY {node.key.upper()} is not supported")
        ok, value = literal_value(node)
        if ok:
            if not isinstance(value, int) or isinstance(value, bool):
                raise NotSupportedError(f"GROUP BY {sql_text(node)}: a constant is not a group "
                                        "key")
            if not 1 <= value <= len(items):
                raise BindError(f"GROUP BY position {value} is not in the select list (1 to "
                                f"{len(items)})")
            out.append((*_item_key(items[value - 1], f"GROUP BY {value}"), None))
        elif isinstance(node, exp.Column) and not node.table and node.name.lower() in aliases:
            out.append((node, None, aliases[node.name.lower()]))
        else:
            out.append((node, None, None))
    return out


def _item_key(item: exp.Expression, what: str) -> tuple[exp.Expression, str | None]:
    alias = item.alias if isinstance(item, exp.Alias) else None
    node = item.this if isinstance(item, exp.Alias) else item
    if any(isinstance(n, (exp.AggFunc, exp.Filter)) for n in node.walk()):
        raise BindError(f"{what} refers to an aggregate ({sql_text(node)}); group keys are row "
                        "expressions")
    return node, alias


def _bind_entry(entry: Entry, rows: RowBinder) -> tuple[Expr, exp.Expression, str | None]:
    """A column wins over a select alias of the same name (as in DuckDB)."""
    node, alias, item = entry
    if item is None:
        return rows.bind(node, "GROUP BY"), node, alias
    try:
        return rows.bind(node, "GROUP BY"), node, None
    except BindError:
        node, alias = _item_key(item, f"GROUP BY {node.name}")
        return rows.bind(node, "GROUP BY"), node, alias


def bind_keys(select: exp.Select, rows: RowBinder, catalog: Catalog,
              namer: ExpressionNamer) -> tuple[GroupKey, ...]:
    """The GROUP BY keys of ``select``, each with its public domain."""
    keys: list[GroupKey] = []
    for entry in key_nodes(select):
        e, node, alias = _bind_entry(entry, rows)
        name = alias or namer.name(node)
        if any(k.expr == e for k in keys):
            continue  # GROUP BY a, a groups as GROUP BY a
        keys.append(GroupKey(_one_party(e, name), domain(e, name, catalog), name, expr_type(e)))
    check_groups(tuple(keys))
    return tuple(keys)


def _one_party(e: Expr, name: str) -> Expr:
    if len(e.parties) > 1:
        raise NotSupportedError(
            f"GROUP BY key {name} reads columns of {' and '.join(sorted(e.parties))}: a group "
            "key must be computed by one party from its own columns")
    if not e.parties:
        raise NotSupportedError(f"GROUP BY {name}: a constant is not a group key")
    return e


def domain(e: Expr, name: str, catalog: Catalog) -> tuple[Any, ...]:
    """The public domain of key ``e`` (None last if it may be NULL)."""
    values: tuple[Any, ...]
    if isinstance(e, Col) and (declared := _declared(e, catalog)) is not None:
        values = tuple(declared)
    elif e.kind == BOOLEAN:
        values = (False, True)
    elif isinstance(e, Call) and e.op == "case" and all(isinstance(v, Lit)
                                                        for v in case_values(e)):
        lits = [v.value for v in case_values(e) if isinstance(v, Lit)]
        values = tuple(dict.fromkeys(v for v in lits if v is not None))
    else:
        raise NotSupportedError(f"GROUP BY key {name} has no public domain: "
                                + _how_to_declare(e, name))
    if e.nullable and None not in values:
        values += (None,)
    return values


def _declared(e: Col, catalog: Catalog) -> tuple[Any, ...] | None:
    table = catalog.table(e.ref.table)
    column = table.column(e.ref.column) if table is not None else None
    return column.domain if column is not None else None


def _how_to_declare(e: Expr, name: str) -> str:
    if isinstance(e, Col):
        return _DECLARE.format(col=e.ref.qualified, name=e.ref.column) + \
            ", or group by a CASE whose branches are literals"
    return ("group by a column with a declared domain, a boolean expression, or a CASE whose "
            "THEN and ELSE values are literals")


def check_groups(keys: tuple[GroupKey, ...]) -> None:
    """At most MAX_GROUPS groups in total."""
    total = 1
    for k in keys:
        total *= len(k.domain)
    if total > MAX_GROUPS:
        sizes = " x ".join(f"{k.name} ({len(k.domain)})" for k in keys)
        raise NotSupportedError(f"GROUP BY forms {total} groups ({sizes}), more than the "
                                f"{MAX_GROUPS} allowed: declare smaller domains or bucket a key "
                                "with CASE")
