"""GROUP BY keys: row expressions of one party with a public domain.

A key's domain is public when it follows from the catalog or from the query itself:

* a column whose owner declared its ``domain`` (categories or an integer range);
* a BOOLEAN column or any boolean expression: (False, True);
* a CASE whose THEN and ELSE values are literals: those literals, in order;
* any other expression of columns that have public domains (``age + 1``, ``COALESCE(region,
  'other')``, ``CASE WHEN children > 2 THEN 3 ELSE children END``): the values it takes on the
  combinations of its columns' values, NULL included, computed by DuckDB at planning.

A key that may be NULL also has the NULL group (None, last in its domain).  The groups are
the cartesian product of the keys' domains, at most :data:`planner.physical.MAX_GROUPS`.
"""

from __future__ import annotations

import decimal
import itertools
from typing import Any

from sqlglot import exp

from dialect.errors import BindError, NotSupportedError
from planner.bind_expr import RowBinder, literal_value, sql_text, unparen
from planner.catalog import Catalog
from planner.logical import BOOLEAN, Call, Col, Expr, GroupKey, Lit
from planner.naming import ExpressionNamer
from planner.physical import MAX_GROUPS
from planner.types import case_values, expr_type
from planner.usage import columns

#: Most combinations of declared values a derived key domain is computed from.
MAX_IMAGE = 65536
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
    named = _aliased_items(select, rows)
    for entry in key_nodes(select):
        e, node, alias = _bind_entry(entry, rows)
        name = alias or named.get(e) or namer.name(node)
        if any(k.expr == e for k in keys):
            continue  # GROUP BY a, a groups as GROUP BY a
        keys.append(GroupKey(_one_party(e, name), domain(e, name, catalog, node), name,
                             expr_type(e)))
    check_groups(tuple(keys))
    return tuple(keys)


def _aliased_items(select: exp.Select, rows: RowBinder) -> dict[Expr, str]:
    """Bound row expression -> alias of the aliased select items without aggregates (a key
    is named by the item that selects it: ``SELECT age + 1 AS a ... GROUP BY age + 1``)."""
    out: dict[Expr, str] = {}
    for item in select.expressions:
        if not isinstance(item, exp.Alias) or any(
                isinstance(n, (exp.AggFunc, exp.Filter)) for n in item.this.walk()):
            continue
        try:
            out.setdefault(rows.bind(item.this, "SELECT"), item.alias)
        except Exception:  # noqa: BLE001 - the item's own binding reports it
            continue
    return out


def _one_party(e: Expr, name: str) -> Expr:
    if len(e.parties) > 1:
        raise NotSupportedError(
            f"GROUP BY key {name} reads columns of {' and '.join(sorted(e.parties))}: a group "
            "key must be computed by one party from its own columns")
    if not e.parties:
        raise NotSupportedError(f"GROUP BY {name}: a constant is not a group key")
    return e


def domain(e: Expr, name: str, catalog: Catalog,
           node: exp.Expression | None = None) -> tuple[Any, ...]:
    """The public domain of key ``e`` (bound from ``node``; None last if it may be NULL)."""
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
        return image(e, node, name, catalog)
    if e.nullable and None not in values:
        values += (None,)
    return values


def _column_domain(c: Col, catalog: Catalog) -> tuple[Any, ...] | None:
    """The public values of a column (None included: columns may be NULL), or None."""
    declared = _declared(c, catalog)
    if declared is not None:
        return (*declared, None)
    if c.kind == BOOLEAN:
        return (False, True, None)
    return None


def image(e: Expr, node: exp.Expression | None, name: str,
          catalog: Catalog) -> tuple[Any, ...]:
    """The domain of an expression over columns with public domains (``age + 1``,
    ``COALESCE(region, 'other')``): the values it takes on every combination of its columns'
    values (NULL included), computed by DuckDB as the owner computes the key, in the order of
    the combinations, NULL last."""
    cols = list(dict.fromkeys(columns(e)))
    domains = [_column_domain(c, catalog) for c in cols]
    missing = [c for c, d in zip(cols, domains, strict=True) if d is None]
    if missing or node is None:
        raise NotSupportedError(f"GROUP BY key {name} has no public domain: "
                                + _how_to_declare(missing[0] if missing else e, name))
    combos = list(itertools.islice(itertools.product(*domains), MAX_IMAGE + 1))
    if len(combos) > MAX_IMAGE:
        raise NotSupportedError(f"GROUP BY key {name} combines too many declared values "
                                f"(more than {MAX_IMAGE}) to compute its domain")
    values = _evaluate(node, cols, combos, name)
    out = tuple(dict.fromkeys(v for v in values if v is not None))
    return out + ((None,) if None in values else ())


def _evaluate(node: exp.Expression, cols: list[Col], combos: list[tuple[Any, ...]],
              name: str) -> list[Any]:
    import duckdb  # noqa: PLC0415 (only for derived domains)

    names = {c.ref.column.lower(): f"c{i}" for i, c in enumerate(cols)}

    def rename(n: exp.Expression) -> exp.Expression:
        if isinstance(n, exp.Column):
            return exp.column(names[n.name.lower()])
        return n

    sql = node.copy().transform(rename).sql(dialect="duckdb")
    decl = ", ".join(f"c{i} {c.ref.dtype}" for i, c in enumerate(cols))
    with duckdb.connect() as con:
        con.execute(f"CREATE TABLE d (ord INTEGER, {decl})")
        marks = ", ".join("?" for _ in range(len(cols) + 1))
        con.executemany(f"INSERT INTO d VALUES ({marks})",
                        [(i, *combo) for i, combo in enumerate(combos)])
        try:
            rows = con.execute(f"SELECT {sql} FROM d ORDER BY ord").fetchall()
        except duckdb.Error as err:
            raise NotSupportedError(f"the domain of GROUP BY key {name} cannot be computed "
                                    f"from its columns' declared values: {err}") from None
    return [_plain(r[0]) for r in rows]


def _plain(v: Any) -> Any:
    """DuckDB's DECIMAL values as floats (keys are output as numbers)."""
    return float(v) if isinstance(v, decimal.Decimal) else v


def _declared(e: Col, catalog: Catalog) -> tuple[Any, ...] | None:
    table = catalog.table(e.ref.table)
    column = table.column(e.ref.column) if table is not None else None
    return column.domain if column is not None else None


def _how_to_declare(e: Expr, name: str) -> str:
    if isinstance(e, Col):
        return _DECLARE.format(col=e.ref.qualified, name=e.ref.column) + \
            ", or group by a CASE whose branches are literals"
    return ("group by a column with a declared domain, a boolean expression, a CASE whose "
            "THEN and ELSE values are literals, or an expression of columns with declared "
            "domains")


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
