"""Binding: resolve the tables, aliases and columns of a parsed query against the catalog."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from dialect.errors import BindError, DataError, NotSupportedError, ProgrammingError
from dialect.functions import MODEL_FUNCTIONS, function_name
from planner.bind_agg import AggBinder, agg_kind, agg_type
from planner.bind_expr import RowBinder, literal_value, sql_text, unparen
from planner.bind_model import model_call
from planner.catalog import DATA, Catalog, ColumnSchema, TableSchema
from planner.groups import bind_keys
from planner.logical import BOOLEAN, KeyRef, LogicalQuery, SelectItem, SortKey
from planner.naming import ExpressionNamer, default_name, written_function_name
from planner.options import bind_options
from planner.plan import Aggregate, ColumnRef, OutputColumn
from planner.usage import calls

_INTEGER_KEYS = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                           "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"})
_KEY_CLASSES = {
    **{t: "number" for t in _INTEGER_KEYS}, "DECIMAL": "number", "VARCHAR": "text",
    "BLOB": "blob", "UUID": "uuid", "DATE": "date", "TIMESTAMP": "timestamp",
    "TIMESTAMP_S": "timestamp", "TIMESTAMP_MS": "timestamp", "TIMESTAMP_NS": "timestamp_ns",
    "TIMESTAMP WITH TIME ZONE": "timestamptz", "TIME": "time",
}
_NOT_KEYS = {
    "FLOAT": "floating-point ids compare inexactly; cast the key to BIGINT or DECIMAL",
    "REAL": "floating-point ids compare inexactly; cast the key to BIGINT or DECIMAL",
    "DOUBLE": "floating-point ids compare inexactly; cast the key to BIGINT or DECIMAL",
    "BOOLEAN": "a BOOLEAN has only two values and cannot identify rows",
}


def key_base_type(dtype: str) -> str:
    """``DECIMAL(38,0)`` -> ``DECIMAL``; ``VARCHAR(10)`` -> ``VARCHAR``."""
    return dtype.upper().split("(")[0].strip()


def key_class(dtype: str) -> str | None:
    """The compatibility class of a join key type, or None if the type cannot be a key.

    Two keys can be joined iff their classes are equal; within a class ids compare by exact
    value as DuckDB compares them: every integer width and DECIMAL(p,s) by numeric value
    (INTEGER 5 = HUGEINT 5 = DECIMAL 5.00), VARCHAR and BLOB byte for byte, UUID, DATE, TIME,
    TIMESTAMP (with _S/_MS), TIMESTAMP_NS and TIMESTAMP WITH TIME ZONE by value, each on its own.
    """
    return _KEY_CLASSES.get(key_base_type(dtype))


def check_key_type(table: str, key: str, dtype: str) -> str:
    """The key class of ``table.key``; ProgrammingError if ``dtype`` cannot be a join key."""
    kind = key_class(dtype)
    if kind is None:
        why = _NOT_KEYS.get(key_base_type(dtype), "not a supported key type")
        raise ProgrammingError(
            f"join key {table}.{key} is {dtype}, which cannot be a join key ({why}); keys may be "
            "integers, DECIMAL, VARCHAR, BLOB, UUID, DATE, TIME or TIMESTAMP")
    return kind


@dataclass(frozen=True)
class BoundQuery:
    """A query with every name resolved: ``left`` (FROM), optional ``right`` (JOIN)."""

    left: TableSchema
    right: TableSchema | None
    aggregates: tuple[Aggregate, ...]
    output: tuple[OutputColumn, ...]

    @property
    def tables(self) -> tuple[TableSchema, ...]:
        return (self.left,) if self.right is None else (self.left, self.right)


class Binder:
    """Binds one validated ``exp.Select`` (from :func:`dialect.parse`) to ``catalog``."""

    def __init__(self, catalog: Catalog, sql: str) -> None:
        self.catalog = catalog
        self.sql = sql
        self.scope: dict[str, TableSchema] = {}  # qualifier (alias or name, lower) -> table
        self.aliased: dict[str, str] = {}  # table name -> alias, for aliased tables
        self.using: str | None = None  # the USING column, lower case

    # --- queries ------------------------------------------------------------------------------

    @staticmethod
    def is_model_query(select: exp.Select) -> bool:
        """Whether ``select`` computes a model (LASSO, RIDGE, LINREG): bind it with :meth:`bind`,
        every other query with :meth:`bind_logical`."""
        return any(isinstance(n, MODEL_FUNCTIONS) for item in select.expressions
                   for n in item.walk())

    def bind(self, select: exp.Select) -> BoundQuery:
        """The bound form of a model query (and of the plain COUNT/SUM/AVG of columns)."""
        left = self.bind_table(select.args["from_"].this)
        joins = select.args.get("joins") or []
        right = self.bind_join(left, joins[0]) if joins else None
        models = [n for item in select.expressions for n in item.walk()
                  if isinstance(n, MODEL_FUNCTIONS)]
        if models:
            func = function_name(models[0])
            if self.is_filtered_model(select):  # the fast path has no rows to filter or group
                raise NotSupportedError(f"{func} with WHERE or GROUP BY is bound by "
                                        "bind_logical_model (planner.build.plan routes it)")
            self.check_model_clauses(select, func)
        aggregates = tuple(self.bind_item(item) for item in select.expressions)
        models = [a for a in aggregates if a.is_model]
        if models and len(aggregates) > 1:
            raise NotSupportedError(
                f"{models[0].func} must be the only item in SELECT: "
                "a model aggregate cannot be mixed with other aggregates"
            )
        if models:
            output = (OutputColumn("term", "VARCHAR"), OutputColumn("coefficient", "DOUBLE"))
        else:
            output = tuple(
                OutputColumn(a.name, a.dtype)
                for a in aggregates
            )
        return BoundQuery(left, right, aggregates, output)

    @staticmethod
    def check_model_clauses(select: exp.Select, func: str) -> None:
        """A model query has no HAVING, ORDER BY or LIMIT (its rows are the terms)."""
        for key, clause in (("having", "HAVING"), ("order", "ORDER BY"), ("limit", "LIMIT"),
                            ("offset", "OFFSET")):
            if select.args.get(key):
                raise NotSupportedError(f"{func} with {clause} is not supported: a model's "
                                        "rows are its terms; filter rows with WHERE")

    @staticmethod
    def is_filtered_model(select: exp.Select) -> bool:
        """A model query with WHERE or GROUP BY: bound by :meth:`bind_logical_model` (and
        fitted on sufficient statistics per group), the others by :meth:`bind`."""
        return Binder.is_model_query(select) and bool(
            select.args.get("where") or select.args.get("group"))

    def bind_logical_model(self, select: exp.Select) -> LogicalQuery:
        """The :class:`LogicalQuery` of a model query with WHERE or GROUP BY: its select items
        are the model and any of the group keys."""
        left = self.bind_table(select.args["from_"].this)
        joins = select.args.get("joins") or []
        right = self.bind_join(left, joins[0]) if joins else None
        tables = (left,) if right is None else (left, right)
        rows = RowBinder(self.resolve, self.is_key)
        where = select.args.get("where")
        pred = rows.predicate(where.this, "WHERE") if where is not None else None
        namer = ExpressionNamer(self.sql, self.column_name)
        keys = bind_keys(select, rows, self.catalog, namer)
        agg = AggBinder(rows, keys)
        items: list[SelectItem] = []
        model = None
        for item in select.expressions:
            node = item.this if isinstance(item, exp.Alias) else item
            if isinstance(node, MODEL_FUNCTIONS):
                func = function_name(node)
                self.check_model_clauses(select, func)
                if model is not None:
                    raise NotSupportedError("one model aggregate per query")
                model = model_call(agg, node, func)
                continue
            e = agg.bind(node, "SELECT")
            if not isinstance(e, KeyRef):
                raise NotSupportedError(
                    f"{sql_text(node)} beside a model aggregate: a model query selects the "
                    "model and, with GROUP BY, its group keys")
            name = item.alias if isinstance(item, exp.Alias) else namer.name(node)
            items.append(SelectItem(name, e, agg_type(e, keys)))
        assert model is not None
        items.append(SelectItem(model.func, model, "DOUBLE"))
        return LogicalQuery(tables, pred, keys, tuple(items))

    def bind_logical(self, select: exp.Select) -> LogicalQuery:
        """The :class:`LogicalQuery` of a non-model aggregate query."""
        if self.is_model_query(select):
            raise NotSupportedError("a model aggregate (LASSO, RIDGE, LINREG) must be the only "
                                    "item in SELECT: a model aggregate cannot be mixed with "
                                    "other aggregates or expressions")
        left = self.bind_table(select.args["from_"].this)
        joins = select.args.get("joins") or []
        right = self.bind_join(left, joins[0]) if joins else None
        tables = (left,) if right is None else (left, right)
        rows = RowBinder(self.resolve, self.is_key)
        where = select.args.get("where")
        pred = rows.predicate(where.this, "WHERE") if where is not None else None
        namer = ExpressionNamer(self.sql, self.column_name)
        keys = bind_keys(select, rows, self.catalog, namer)
        aliases = {item.alias.lower(): item.this for item in select.expressions
                   if isinstance(item, exp.Alias)}
        agg = AggBinder(rows, keys, aliases=aliases)
        items = tuple(self.select_item(item, agg, namer) for item in select.expressions)
        having = self.bind_having(select, AggBinder(rows, keys, aliases=aliases))
        if not keys and not any(True for e in [i.expr for i in items] + [having]
                                if e is not None for _ in calls(e)):
            raise NotSupportedError(
                "a query without aggregates would return the rows themselves, which never "
                "leave their owners: aggregate them (COUNT(*), SUM(x), ...) or GROUP BY a key")
        return LogicalQuery(tables, pred, keys, items, having, self.bind_order(select, agg, items),
                            *self.bind_limit(select))

    def column_name(self, col: exp.Column) -> str:
        """A column's catalog name (DuckDB's output name of a selected column)."""
        return self.resolve(col)[1].name

    def select_item(self, item: exp.Expression, agg: AggBinder,
                    namer: ExpressionNamer) -> SelectItem:
        alias = item.alias if isinstance(item, exp.Alias) else None
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Star) or (isinstance(node, exp.Column)
                                          and isinstance(node.this, exp.Star)):
            raise NotSupportedError("SELECT * is not supported: name the aggregates and keys")
        e = agg.bind(node, "SELECT")
        return SelectItem(alias or namer.name(node), e, agg_type(e, agg.keys))

    @staticmethod
    def bind_having(select: exp.Select, agg: AggBinder):
        having = select.args.get("having")
        if having is None:
            return None
        e = agg.bind(having.this, "HAVING")
        if agg_kind(e, agg.keys) != BOOLEAN:
            raise DataError(f"HAVING needs a boolean condition ({sql_text(having.this)})")
        return e

    @staticmethod
    def bind_order(select: exp.Select, agg: AggBinder,
                   items: tuple[SelectItem, ...]) -> tuple[SortKey, ...]:
        order = select.args.get("order")
        if order is None:
            return ()
        out = []
        for o in order.expressions:
            index, key = Binder.order_target(unparen(o.this), agg, items)
            out.append(SortKey(index, bool(o.args.get("desc")), bool(o.args.get("nulls_first")),
                               key))
        return tuple(out)

    @staticmethod
    def order_target(node: exp.Expression, agg: AggBinder, items: tuple[SelectItem, ...]
                     ) -> tuple[int, int | None]:
        """(select item index, None), or (-1, GROUP BY key index) for a group key that is not
        selected (its value is the group's public key: ordering by it opens nothing)."""
        ok, value = literal_value(node)
        if ok:
            if not isinstance(value, int) or isinstance(value, bool):
                raise BindError(f"ORDER BY {sql_text(node)}: a constant orders nothing; name an "
                                "output column or its position")
            if not 1 <= value <= len(items):
                raise BindError(f"ORDER BY position {value} is not in the select list (1 to "
                                f"{len(items)})")
            return value - 1, None
        if isinstance(node, exp.Column) and not node.table:
            for i, item in enumerate(items):
                if item.name.lower() == node.name.lower():
                    return i, None
        e = agg.bind(node, "ORDER BY")
        for i, item in enumerate(items):
            if item.expr == e:
                return i, None
        if isinstance(e, KeyRef):
            return -1, e.index
        raise NotSupportedError(f"ORDER BY {sql_text(node)} must name an output column (by "
                                "name, alias or position) or repeat a select item: only the "
                                "output columns are opened; add it to SELECT")

    @staticmethod
    def bind_limit(select: exp.Select) -> tuple[int | None, int]:
        limit, offset = select.args.get("limit"), select.args.get("offset")
        n = None
        if limit is not None:
            if limit.args.get("limit_options") is not None or limit.args.get("offset"):
                raise NotSupportedError(f"{sql_text(limit)} is not supported: use LIMIT n "
                                        "[OFFSET m]")
            target = limit.expression
            if not (isinstance(target, exp.Var) and str(target.this).upper() == "ALL"):
                n = Binder.count_literal(target, "LIMIT")
        skip = Binder.count_literal(offset.expression, "OFFSET") if offset is not None else 0
        return n, skip

    @staticmethod
    def count_literal(node: exp.Expression, clause: str) -> int:
        ok, value = literal_value(node)
        if not ok or not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ProgrammingError(f"{clause} must be an integer literal >= 0, not "
                                   f"{sql_text(node)}")
        return value

    # --- tables -------------------------------------------------------------------------------

    def bind_table(self, table: exp.Table) -> TableSchema:
        schema = self.catalog.table(table.name)
        if schema is None:
            known = ", ".join(t.name for t in self.catalog.tables) or "none"
            raise BindError(f"unknown table {table.name}; known tables: {known}")
        owner = self.catalog.party(schema.party)
        if owner.role != DATA:
            raise BindError(f"table {schema.name} belongs to {owner.name}, not a data party")
        qualifier = (table.alias or table.name).lower()
        if qualifier in self.scope:
            raise BindError(f"duplicate table name or alias {qualifier}")
        self.scope[qualifier] = schema
        if table.alias:
            self.aliased[schema.name.lower()] = table.alias
        return schema

    def bind_join(self, left: TableSchema, join: exp.Join) -> TableSchema:
        right = self.bind_table(join.this)
        if left.party == right.party:
            raise NotSupportedError(
                f"tables {left.name} and {right.name} both belong to {left.party}: "
                "a private join needs tables of two different data parties"
            )
        for t in (left, right):
            if t.key is None:
                raise BindError(f"table {t.name} has no declared key column and cannot be joined")
        declared = f"{left.name}.{left.key} = {right.name}.{right.key}"
        using = join.args.get("using")
        if using:
            name = using[0].name
            for t in (left, right):
                if t.column(name) is None:
                    raise BindError(f"unknown column {name} in table {t.name}")
            for t in (left, right):
                if name.lower() != str(t.key).lower():
                    raise BindError(
                        f"the join must be on the declared key ({declared}); "
                        f"{t.name}.{name} is not the key of {t.name}"
                    )
            self.using = name.lower()
            self.check_key_types(left, right)
            return right
        on = join.args["on"]
        sides = [self.resolve(col) for col in (on.this, on.expression)]
        if sides[0][0] == sides[1][0]:
            raise BindError(
                f"the join condition must compare a column of each table ({declared})"
            )
        for t, c in sides:
            if c.name.lower() != str(t.key).lower():
                raise BindError(
                    f"the join must be on the declared key ({declared}); "
                    f"{t.name}.{c.name} is not the key of {t.name}"
                )
        self.check_key_types(left, right)
        return right

    @staticmethod
    def check_key_types(left: TableSchema, right: TableSchema) -> None:
        """Both join keys must be valid keys of the same class (see :func:`key_class`)."""
        types = []
        for t in (left, right):
            col = t.column(str(t.key))
            assert col is not None  # TableSchema checks that its key is a column
            types.append((f"{t.name}.{col.name}", col.dtype, check_key_type(t.name, col.name,
                                                                              col.dtype)))
        (a, ta, ka), (b, tb, kb) = types
        if ka != kb:
            raise ProgrammingError(
                f"join key {a} is {ta} but {b} is {tb}; cast one of them in its party's table "
                "(keys join only within one type family: integers and DECIMAL by value, "
                "VARCHAR, BLOB, UUID, DATE, TIME, TIMESTAMP, TIMESTAMP_NS, TIMESTAMPTZ)")
        if {key_base_type(ta), key_base_type(tb)} == {"HUGEINT", "UHUGEINT"}:
            raise ProgrammingError(
                f"join key {a} is {ta} but {b} is {tb}; cast one of them in its party's table "
                "(DuckDB compares HUGEINT with UHUGEINT as DOUBLE, inexactly)")

    # --- columns ------------------------------------------------------------------------------

    def resolve(self, col: exp.Column) -> tuple[TableSchema, ColumnSchema]:
        """The table and column a (possibly qualified) column reference names."""
        name, qualifier = col.name, col.table
        if qualifier:
            table = self.scope.get(qualifier.lower())
            if table is None:
                alias = self.aliased.get(qualifier.lower())
                if alias:
                    raise BindError(f"table {qualifier} is aliased as {alias}; use {alias}.{name}")
                raise BindError(f"unknown table or alias {qualifier} in {col.sql()}")
            column = table.column(name)
            if column is None:
                raise BindError(f"unknown column {name} in table {table.name}")
            return table, column
        tables = list(dict.fromkeys(self.scope.values()))
        hits = [(t, c) for t in tables if (c := t.column(name)) is not None]
        if not hits:
            where = " or ".join(t.name for t in tables)
            raise BindError(f"unknown column {name} in table {where}")
        if len(hits) > 1 and name.lower() != self.using:
            names = " and ".join(t.name for t, _ in hits)
            raise BindError(
                f"ambiguous column {name}: it is in both {names}; qualify it, "
                f"e.g. {hits[0][0].name}.{name}"
            )
        return hits[0]

    def is_key(self, table: TableSchema, column: ColumnSchema) -> bool:
        return table.key is not None and table.key.lower() == column.name.lower()

    def column_ref(self, col: exp.Column, func: str, *, count: bool = False) -> ColumnRef | None:
        """A value column for ``func``; ``None`` for COUNT(key), which means COUNT(*)."""
        table, column = self.resolve(col)
        if self.is_key(table, column):
            if count:
                return None
            raise BindError(
                f"column {column.name} is the key of {table.name}: the key is never revealed "
                f"nor aggregated, so {func}({col.sql()}) is refused"
            )
        if not column.numeric:
            need = "COUNT(column)" if count else func
            hint = "; use COUNT(*)" if count else ""
            raise DataError(
                f"column {column.name} of {table.name} is {column.dtype} (non-numeric), "
                f"{need} needs a numeric column{hint}"
            )
        return ColumnRef(table.party, table.name, column.name, column.dtype.upper(),
                         column.scale_bits)

    # --- aggregates ---------------------------------------------------------------------------

    def bind_item(self, item: exp.Expression) -> Aggregate:
        alias = item.alias if isinstance(item, exp.Alias) else None
        node = item.this if isinstance(item, exp.Alias) else item
        func = function_name(node)
        if isinstance(node, MODEL_FUNCTIONS):
            return self.bind_model(node, func, alias)
        if isinstance(node, exp.Count) and isinstance(node.this, exp.Star):
            args: tuple[ColumnRef, ...] = ()
        else:
            ref = self.column_ref(node.this, func, count=isinstance(node, exp.Count))
            args = () if ref is None else (ref,)
        return Aggregate(func, args, alias or default_name(node, self.sql))

    def bind_model(self, node: exp.Expression, func: str, alias: str | None) -> Aggregate:
        positional: list[exp.Column] = [node.this]
        kwargs: list[exp.Expression] = []
        for arg in node.expressions:
            if isinstance(arg, (exp.Kwarg, exp.PropertyEQ)):
                kwargs.append(arg)
            elif kwargs:
                raise ProgrammingError(
                    f"positional argument {arg.sql()} of {func} after named options"
                )
            else:
                positional.append(arg)
        if len(positional) < 2:
            raise ProgrammingError(f"{func} needs a target column and at least one feature")
        refs: list[ColumnRef] = []
        for col in positional:
            ref = self.column_ref(col, func)
            assert ref is not None
            if ref in refs:
                role = "target" if refs.index(ref) == 0 else "feature"
                what = "is also a feature" if role == "target" else "appears twice"
                raise ProgrammingError(f"{role} {ref.column} {what} in {func}")
            refs.append(ref)
        options = bind_options(func, kwargs)
        return Aggregate(func, tuple(refs), alias or written_function_name(node, self.sql),
                         options)
