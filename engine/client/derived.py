"""Merging a derived table in FROM into the SELECT around it (for BI tools).

The secure grammar has no subqueries, but BI tools wrap a saved query ("virtual dataset" in
Apache Superset) as a derived table and select from it::

    SELECT region AS region, MAX(avg_charges) AS "MAX(avg_charges)"
    FROM (SELECT region, AVG(charges) AS avg_charges
          FROM ac JOIN emc USING (id) GROUP BY region) AS virtual_table
    GROUP BY region ORDER BY "MAX(avg_charges)" DESC LIMIT 10000

:func:`merge_derived` rewrites such a query into one SELECT over the tables when the result
is the same, row for row, and refuses it (an :class:`~dialect.errors.UnsupportedError` naming
the reason) when it is not:

* inner SELECT without aggregates or GROUP BY (a view: columns, expressions, WHERE): the
  outer query's references are replaced by the inner expressions and the two WHEREs are
  ANDed; the outer query keeps its aggregates, GROUP BY, HAVING, ORDER BY and LIMIT;
* inner SELECT with aggregates (a GROUP BY query): every inner row is one group.  An outer
  query without aggregates and GROUP BY selects, filters (its WHERE becomes HAVING), orders
  and limits those rows.  An outer query that groups by all the inner GROUP BY keys has one
  inner row per group, so its MIN, MAX, SUM, AVG and ANY_VALUE of an inner column are that
  column, and the merged query groups by the inner keys.  Any other outer aggregate (COUNT,
  STDDEV, ...) or grouping over several inner rows (an aggregate of the inner aggregates)
  is refused: it would need a second aggregation, which the secure grammar does not have.

Also refused: a derived table joined with anything, an inner DISTINCT, LIMIT or OFFSET, a
set operation, window functions, models (LASSO ...) in the inner query, and outer columns
that are not outputs of the inner query.  An inner ORDER BY is dropped (a derived table has no
order).  Column names of the result are the outer query's: an outer column that the merge
replaces by an expression keeps its name as an alias.  The merged SQL is then checked by the
parties like any other query; nothing here widens what the grammar lets through.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from dialect.dialect import MpcDialect
from dialect.errors import ParseError, UnsupportedError
from dialect.functions import MODEL_FUNCTIONS

#: Outer aggregates that equal their argument over a group of one row.
ONE_ROW_AGGREGATES: tuple[type[exp.Expression], ...] = (
    exp.Min, exp.Max, exp.Sum, exp.Avg, exp.AnyValue)


def _refuse(reason: str) -> UnsupportedError:
    return UnsupportedError(
        f"a subquery in FROM (derived table) cannot be merged into one secure query: {reason}",
        construct="a subquery in FROM")


def _from(select: exp.Select) -> exp.Expression | None:
    node = select.args.get("from_", select.args.get("from"))
    return node.this if node is not None else None


def _key(name: str) -> str:
    return name.lower()  # DuckDB's identifiers are case-insensitive, quoted or not


def _unqualified(e: exp.Expression) -> str:
    e = e.copy()
    for col in e.find_all(exp.Column):
        col.set("table", None)
        col.set("db", None)
        col.set("catalog", None)
    return e.sql(dialect=MpcDialect, normalize=True)


def _is_aggregate(e: exp.Expression) -> bool:
    return any(isinstance(n, exp.AggFunc) for n in e.walk())


def _wrap(e: exp.Expression) -> exp.Expression:
    """``e`` as an operand: parenthesised unless it is atomic."""
    atomic = (exp.Column, exp.Literal, exp.Func, exp.Paren, exp.Null, exp.Boolean, exp.Case)
    return e.copy() if isinstance(e, atomic) else exp.Paren(this=e.copy())


def _and(*conds: exp.Expression | None) -> exp.Expression | None:
    parts = [c for c in conds if c is not None]
    if not parts:
        return None
    out = parts[0]
    for c in parts[1:]:
        out = exp.And(this=_wrap(out), expression=_wrap(c))
    return out


class _Inner:
    """The derived table's outputs: name -> expression."""

    def __init__(self, inner: exp.Select, alias: str):
        self.select = inner
        self.alias = _key(alias)
        self.star = False
        self.outputs: dict[str, exp.Expression] = {}
        self.projections: list[exp.Expression] = []
        for proj in inner.expressions:
            if isinstance(proj, exp.Star):
                self.star = True
                continue
            if isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star):
                self.star = True
                continue
            name = proj.alias_or_name
            expr = proj.this if isinstance(proj, exp.Alias) else proj
            if not name or (not isinstance(proj, (exp.Alias, exp.Column))):
                raise _refuse(f"name the derived table's column {proj.sql(dialect=MpcDialect)}"
                              " with AS")
            self.outputs[_key(name)] = expr
            self.projections.append(proj)
        if self.star and self.outputs:
            raise _refuse("the derived table mixes * with other columns")
        self.aggregating = inner.args.get("group") is not None or any(
            _is_aggregate(p) for p in inner.expressions)
        keys = []
        group = inner.args.get("group")
        for g in (group.expressions if group is not None else []):
            if isinstance(g, exp.Literal) and g.is_int:  # GROUP BY 1
                i = int(g.name) - 1
                if not 0 <= i < len(self.projections):
                    raise _refuse(f"GROUP BY {g.name} is not a column of the derived table")
                p = self.projections[i]
                g = p.this if isinstance(p, exp.Alias) else p
            elif (isinstance(g, exp.Column) and not g.table and any(
                    isinstance(p, exp.Alias) and _key(p.alias) == _key(g.name)
                    for p in self.projections)):
                g = self.outputs[_key(g.name)]  # GROUP BY an output alias
            keys.append(_unqualified(g))
        self.group_keys = keys

    def column(self, col: exp.Column) -> exp.Expression:
        """The expression an outer column reference stands for."""
        if col.table and _key(col.table) != self.alias:
            raise _refuse(f"column {col.sql(dialect=MpcDialect)} is not from the derived table "
                          f"{self.alias}")
        if self.star:
            return exp.column(col.name, quoted=col.this.args.get("quoted"))
        try:
            return self.outputs[_key(col.name)]
        except KeyError:
            raise _refuse(f"column {col.name!r} is not an output of the derived table "
                          f"(its columns: {', '.join(self.outputs)})") from None


def _substitute(e: exp.Expression | None, inner: _Inner, *, collapse: bool,
                aliases: frozenset[str] = frozenset()) -> exp.Expression | None:
    """A copy of ``e`` with outer column references replaced by the inner expressions;
    ``collapse``: also each one-row aggregate by its argument.  Names in ``aliases`` (outer
    output names, for ORDER BY) stay as they are."""
    if e is None:
        return None

    def fun(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
            if not node.table and _key(node.name) in aliases:
                return node
            return _wrap(inner.column(node))
        if collapse and isinstance(node, exp.AggFunc):
            arg = node.this if isinstance(node, ONE_ROW_AGGREGATES) else None
            if isinstance(arg, exp.Distinct):
                arg = arg.expressions[0] if len(arg.expressions) == 1 else None
            if arg is None or node.args.get("expression") is not None \
                    or node.args.get("expressions"):
                raise _refuse(
                    f"{node.sql(dialect=MpcDialect)} aggregates the rows of a GROUP BY query "
                    "(each row a group); only MIN, MAX, SUM, AVG or ANY_VALUE of one of its "
                    "columns, grouped by all of its GROUP BY keys, equals one secure query. "
                    "Put the aggregate in the dataset's own SQL instead")
            return _wrap(_substitute(arg, inner, collapse=False))
        return node

    return e.transform(fun)


def merge_derived(sql: str) -> str:
    """``sql`` with the derived table that is its whole FROM merged in (see the module doc);
    ``sql`` unchanged when its FROM is not a derived table."""
    try:
        outer = sqlglot.parse_one(sql, read=MpcDialect)
    except sqlglot.errors.ParseError as e:
        raise ParseError(f"cannot parse the query to merge its derived table: {e}") from None
    if not isinstance(outer, exp.Select):
        return sql
    merged = _merge(outer)
    return sql if merged is outer else merged.sql(dialect=MpcDialect)


def _merge(outer: exp.Select) -> exp.Select:
    source = _from(outer)
    if not isinstance(source, exp.Subquery):
        return outer
    if outer.args.get("joins"):
        raise _refuse("it is joined with another table; join the tables inside it")
    body = source.this
    if not isinstance(body, exp.Select):
        raise _refuse(f"its query is a {body.key.upper()}, not one SELECT")
    body = _merge(body)  # a derived table inside the derived table
    for arg, what in (("distinct", "DISTINCT"), ("limit", "LIMIT"), ("offset", "OFFSET"),
                      ("with", "WITH"), ("with_", "WITH")):
        if body.args.get(arg) is not None:
            raise _refuse(f"its {what}")
    if body.find(exp.Window) or outer.find(exp.Window):
        raise _refuse("a window function")
    if any(body.find(m) for m in MODEL_FUNCTIONS):
        raise _refuse("a model (LASSO, RIDGE, LINREG) in it: query the model directly")
    for k in ("expressions", "where", "group", "having", "order"):
        v = outer.args.get(k)
        for part in (v if isinstance(v, list) else [v] if v is not None else []):
            if part.find(exp.Select):
                raise _refuse("a subquery inside the outer query")
    alias = source.alias
    if not alias:
        raise _refuse("it has no alias")
    inner = _Inner(body, alias)

    out_aliases = frozenset(_key(p.alias) for p in outer.expressions if isinstance(p, exp.Alias))
    outer_aggregates = any(_is_aggregate(p) for p in outer.expressions) or any(
        _is_aggregate(outer.args[k]) for k in ("having", "order") if outer.args.get(k))
    outer_group = outer.args.get("group")
    collapse = inner.aggregating and (outer_aggregates or outer_group is not None)

    merged = exp.Select()
    for k in ("from_", "from", "joins"):
        if body.args.get(k) is not None:
            merged.set(k, body.args[k].copy() if k != "joins" else [j.copy() for j in body.args[k]])

    # projections, keeping the outer output names
    projections: list[exp.Expression] = []
    for proj in outer.expressions:
        if isinstance(proj, exp.Star) or (isinstance(proj, exp.Column)
                                          and isinstance(proj.this, exp.Star)):
            projections.extend(p.copy() for p in inner.projections) if not inner.star \
                else projections.append(exp.Star())
            continue
        name_expr = proj.this if isinstance(proj, exp.Alias) else proj
        new = _substitute(name_expr, inner, collapse=collapse)
        if isinstance(proj, exp.Alias):
            projections.append(exp.Alias(this=new, alias=proj.args["alias"].copy()))
        elif isinstance(proj, exp.Column):
            same = isinstance(new, exp.Column) and _key(new.name) == _key(proj.name)
            projections.append(new if same else exp.Alias(
                this=new, alias=exp.to_identifier(proj.name, quoted=proj.this.args.get("quoted"))))
        else:
            changed = new.sql(dialect=MpcDialect) != proj.sql(dialect=MpcDialect)
            projections.append(exp.Alias(this=new, alias=exp.to_identifier(
                proj.sql(dialect=MpcDialect), quoted=True)) if changed else new)
    merged.set("expressions", projections)

    outer_where = outer.args.get("where")
    outer_where = outer_where.this if outer_where is not None else None
    outer_having = outer.args.get("having")
    outer_having = outer_having.this if outer_having is not None else None
    inner_where = body.args.get("where")
    inner_having = body.args.get("having")

    if not inner.aggregating:
        where = _and(inner_where.this.copy() if inner_where is not None else None,
                     _substitute(outer_where, inner, collapse=False))
        if where is not None:
            merged.set("where", exp.Where(this=where))
        if outer_group is not None:
            merged.set("group", exp.Group(expressions=[
                _substitute(g, inner, collapse=False) for g in outer_group.expressions]))
        having = _substitute(outer_having, inner, collapse=False)
        if having is not None:
            merged.set("having", exp.Having(this=having))
    else:
        if collapse:
            outer_keys = {_unqualified(_substitute(g, inner, collapse=False))
                          for g in (outer_group.expressions if outer_group is not None else [])}
            missing = [k for k in inner.group_keys if k not in outer_keys]
            if missing:
                raise _refuse(
                    "the outer query aggregates over several rows of a GROUP BY query (it does "
                    f"not group by {', '.join(missing)}): that is an aggregate of aggregates. "
                    "Group the chart by all of the dataset's GROUP BY columns, or put the "
                    "aggregate in the dataset's own SQL")
        if inner_where is not None:
            merged.set("where", inner_where.copy())
        if body.args.get("group") is not None:
            merged.set("group", body.args["group"].copy())
        having = _and(inner_having.this.copy() if inner_having is not None else None,
                      _substitute(outer_where, inner, collapse=collapse),
                      _substitute(outer_having, inner, collapse=collapse))
        if having is not None:
            merged.set("having", exp.Having(this=having))

    order = outer.args.get("order")
    if order is not None:
        merged.set("order", exp.Order(expressions=[
            _substitute(o, inner, collapse=collapse, aliases=out_aliases)
            for o in order.expressions]))
    for k in ("limit", "offset", "distinct"):
        if outer.args.get(k) is not None:
            merged.set(k, outer.args[k].copy())
    return merged
