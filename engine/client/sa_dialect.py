"""SQLAlchemy dialect ``mpcsql``: ``create_engine("mpcsql://...")`` over the PEP 249 module.

Registered under the ``sqlalchemy.dialects`` entry point (pyproject.toml), so that::

    create_engine("mpcsql://ac-host:7400?tls_ca=ca.crt&tls_cert=me.crt&tls_key=me.key")
    create_engine("mpcsql://")        # the embedded default: three local parties, bundled data

connect with :func:`engine.connect`.  A URL with a host reaches your own party's running
server (``tls_ca``, ``tls_cert``, ``tls_key``: PEM paths of the federation CA and your analyst
certificate and key; ``party``, ``connect_timeout``, ``query_timeout``).  ``mpcsql://``
without a host starts the embedded federation (``workdir``, ``party``, ``key_bits``,
``query_timeout``, ``paillier_pool``; ``data=demo`` registers the bundled Medical Costs split
as ``ac`` and ``emc``, the default, ``data=none`` registers nothing); ``connect_args=
{"policies": {...}}`` passes the parties' policies.  One embedded federation serves the
whole engine (a static pool of one connection), stopped by ``engine.dispose()`` or at exit.
``join_protocol=masked`` (either kind of URL) puts ``SET join_protocol = 'masked';`` before
every statement that does not set it itself.

Reflection reads the federated catalog (``Connection.tables()``: names, owners, keys and
column types, never data): one schema ``main``, no views, the join key as the primary key, no
foreign keys (joins name their ``ON`` clause).  The compiler writes the accepted grammar
(``JOIN ... ON``, ``WHERE``, ``GROUP BY``, ``HAVING``, ``ORDER BY``, ``LIMIT``/``OFFSET``,
``FILTER``, the aggregates; :func:`lasso`, :func:`ridge`, :func:`linreg` with named options)
and refuses, while compiling and with an :class:`~dialect.errors.UnsupportedError` (a PEP 249
``NotSupportedError``) naming the construct, what the grammar does not have: subqueries,
UNION/INTERSECT/EXCEPT, WITH, DISTINCT, window functions, outer and cross joins, LIKE and
other functions, INSERT/UPDATE/DELETE and DDL.  One exception: a SELECT whose whole FROM is a
derived table (how Superset queries a virtual dataset) is merged into one SELECT over the
tables when the result is the same (:mod:`engine.client.derived`).  Works with SQLAlchemy 1.4
(which Apache Superset pins) and 2.  Bound parameters stay parameters: they go to
the DB-API in its ``qmark`` style, which writes each as a SQL literal token by token
(:func:`dialect.bind_parameters`), never by pasting text.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy
from sqlalchemy import pool
from sqlalchemy import types as sqltypes
from sqlalchemy.engine import default, reflection
from sqlalchemy.sql import compiler, operators
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import func as sa_func
from sqlalchemy.sql.visitors import InternalTraversal

from dialect import AGGREGATE_NAMES, sql_literal
from dialect.errors import InterfaceError, UnsupportedError
from engine.client.derived import merge_derived

#: SQLAlchemy 1.4 (what Apache Superset pins) or 2.
SA2 = int(sqlalchemy.__version__.split(".")[0]) >= 2
_DOUBLE = getattr(sqltypes, "Double", sqltypes.Float)  # sqltypes.Double is new in 2.0

#: SQL function names the compiler lets through (the grammar's aggregates and row functions).
FUNCTIONS = frozenset(n.lower() for n in AGGREGATE_NAMES.values()) | {
    "variance", "stddev", "abs", "coalesce"}

#: Binary operators outside the grammar -> the name the refusal gives.
_REFUSED_OPERATOR_NAMES = {
    "like_op": "LIKE", "not_like_op": "NOT LIKE", "ilike_op": "ILIKE", "not_ilike_op": "NOT ILIKE",
    "startswith_op": "startswith (LIKE)", "not_startswith_op": "startswith (LIKE)",
    "endswith_op": "endswith (LIKE)", "not_endswith_op": "endswith (LIKE)",
    "contains_op": "contains (LIKE)", "not_contains_op": "contains (LIKE)",
    "icontains_op": "icontains (LIKE)", "not_icontains_op": "icontains (LIKE)",
    "istartswith_op": "istartswith (LIKE)", "not_istartswith_op": "istartswith (LIKE)",
    "iendswith_op": "iendswith (LIKE)", "not_iendswith_op": "iendswith (LIKE)",
    "regexp_match_op": "regular expression match",
    "not_regexp_match_op": "regular expression match",
    "regexp_replace_op": "regexp_replace", "match_op": "MATCH", "not_match_op": "MATCH",
    "concat_op": "string concatenation (||)", "mod": "modulo (%)",
    "floordiv": "floor division (//)", "is_distinct_from": "IS DISTINCT FROM",
    "is_not_distinct_from": "IS NOT DISTINCT FROM", "bitwise_and_op": "bitwise AND",
    "bitwise_or_op": "bitwise OR", "bitwise_xor_op": "bitwise XOR",
    "bitwise_lshift_op": "bit shift", "bitwise_rshift_op": "bit shift", "any_op": "ANY",
    "all_op": "ALL",
}
#: Binary operators outside the grammar -> the name the refusal gives (those this SQLAlchemy
#: version has: the i*/bitwise operators are new in 2.0).
REFUSED_OPERATORS: dict[Any, str] = {
    getattr(operators, k): v for k, v in _REFUSED_OPERATOR_NAMES.items()
    if hasattr(operators, k)}

_EMBEDDED_ARGS = {"workdir": str, "party": str, "key_bits": int, "query_timeout": float,
                  "paillier_pool": int}
_REMOTE_ARGS = {"party": str, "connect_timeout": float, "query_timeout": float}
_TLS_ARGS = {"tls_ca": "ca", "tls_cert": "cert", "tls_key": "key"}
_SET = re.compile(r"\s*SET\s", re.IGNORECASE)
_DECIMAL = re.compile(r"(?:DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", re.IGNORECASE)


def refuse(construct: str, hint: str = "") -> UnsupportedError:
    """The compile-time refusal of ``construct`` (an UnsupportedError, a NotSupportedError)."""
    msg = f"{construct} is not supported by mpcsql's secure SQL"
    return UnsupportedError(msg + (f"; {hint}" if hint else ""), construct=construct)


class option(ColumnElement):  # noqa: N801 - reads as SQL: lasso(..., option("alpha", 0.1))
    """A named model option ``name => literal`` (LASSO/RIDGE/LINREG); the value is written
    as a SQL literal by :func:`dialect.sql_literal` (numbers, strings, booleans)."""

    __visit_name__ = "mpcsql_option"
    inherit_cache = True
    _traverse_internals = [("name", InternalTraversal.dp_string),
                           ("value", InternalTraversal.dp_plain_obj)]

    def __init__(self, name: str, value: Any):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InterfaceError(f"model option name {name!r} is not an identifier")
        self.name, self.value = name, value


def _model(name: str, target, features, options: dict[str, Any]):
    return getattr(sa_func, name)(target, *features,
                                  *(option(k, v) for k, v in options.items()))


def lasso(target, *features, **options):
    """``LASSO(target, feature, ..., alpha => ...)``: ``select(lasso(ac.c.charges, ac.c.age,
    alpha=0.001))``; one row per term (``term``, ``coefficient``)."""
    return _model("lasso", target, features, options)


def ridge(target, *features, **options):
    """``RIDGE(target, feature, ..., alpha => ...)`` (see :func:`lasso`)."""
    return _model("ridge", target, features, options)


def linreg(target, *features, **options):
    """``LINREG(target, feature, ...)``: ordinary least squares (see :func:`lasso`)."""
    return _model("linreg", target, features, options)


_BIND = re.compile(r"%\((\w+)\)s")  # SQLAlchemy 2's positional binds while compiling
_POSTCOMPILE = re.compile(r"__\[POSTCOMPILE_(\w+)\]")  # expanding binds (IN), both versions
_MARK = re.compile(r"[:$]mpcsql(bind|post)_(\w+)")


def _derived_table(froms) -> Any:
    """The derived table (a subquery of a SELECT or of a text() query) that is the whole FROM
    list, or None."""
    if len(froms) != 1:
        return None
    f = froms[0]
    if f.__visit_name__ in ("subquery", "alias") and getattr(f, "element", None) is not None \
            and f.element.__visit_name__ in ("select", "textual_select"):
        return f
    return None


class MpcsqlCompiler(compiler.SQLCompiler):
    """Writes the accepted grammar; refuses the rest while compiling, naming it.

    A SELECT whose whole FROM is a derived table (``select(...).select_from(sq)`` with
    ``sq = select(...).subquery()`` or ``text(...).columns().subquery()``: how BI tools query a
    saved query, e.g. Superset's ``FROM (<virtual dataset SQL>) AS virtual_table``) is written
    as usual and then merged into one SELECT over the tables by
    :func:`engine.client.derived.merge_derived`, which refuses what it cannot merge exactly.
    """

    def __init__(self, *args, **kw):
        self._derived: set[int] = set()  # ids of the derived tables (and their SELECTs) allowed
        super().__init__(*args, **kw)

    def visit_select(self, select_stmt, asfrom=False, lateral=False, **kw):
        inside = id(select_stmt) in self._derived
        if (self.stack or asfrom or lateral) and not inside:
            raise refuse("a subquery", "write one SELECT over a table or one JOIN of two")
        if select_stmt._distinct or select_stmt._distinct_on:
            raise refuse("DISTINCT")
        if select_stmt._for_update_arg is not None:
            raise refuse("FOR UPDATE")
        if select_stmt._fetch_clause is not None:
            raise refuse("FETCH FIRST", "use limit()")
        if getattr(select_stmt, "_independent_ctes", ()):
            raise refuse("WITH (a common table expression)")
        # the FROM list SQLAlchemy will write (get_final_froms() with this compiler)
        froms = select_stmt._compile_state_factory(select_stmt, self)._get_display_froms()
        if len(froms) > 1:
            raise refuse("a cross join (several tables in FROM)",
                         "join them with ac.join(emc, ac.c.id == emc.c.id)")
        derived = _derived_table(froms)
        if derived is None:
            return super().visit_select(select_stmt, asfrom=asfrom, lateral=lateral, **kw)
        self._derived.update((id(derived), id(derived.element)))
        if inside:  # a derived table inside the derived table: merged with it, from the top
            return super().visit_select(select_stmt, asfrom=asfrom, lateral=lateral, **kw)
        if not SA2:  # 1.4 writes "?" at once: write names, then order positiontup by them
            before, self.bindtemplate = len(self.positiontup), "%%(%(name)s)s"
        try:
            text = super().visit_select(select_stmt, asfrom=asfrom, lateral=lateral, **kw)
        finally:
            if not SA2:
                self.bindtemplate = compiler.BIND_TEMPLATES[self.dialect.paramstyle]
        marked = _POSTCOMPILE.sub(r":mpcsqlpost_\1", _BIND.sub(r":mpcsqlbind_\1", text))
        merged = merge_derived(marked)

        def unmark(m: re.Match) -> str:
            if m.group(1) == "post":
                return f"__[POSTCOMPILE_{m.group(2)}]"
            return f"%({m.group(2)})s" if SA2 else self.bindtemplate % {"name": m.group(2)}

        if not SA2:
            self.positiontup[before:] = [m.group(2) for m in _MARK.finditer(merged)]
        return _MARK.sub(unmark, merged)

    def visit_compound_select(self, cs, **kw):
        keyword = cs.keyword  # an enum in 2.0, a symbol in 1.4
        raise refuse(str(getattr(keyword, "value", None) or getattr(keyword, "name", keyword)))

    def visit_cte(self, cte, **kw):
        raise refuse("WITH (a common table expression)")

    def visit_subquery(self, subquery, **kw):
        if id(subquery) in self._derived:
            return super().visit_subquery(subquery, **kw)
        raise refuse("a subquery in FROM", "select from the tables themselves")

    def visit_alias(self, alias, **kw):
        if alias.__visit_name__ == "alias" and alias.element.__visit_name__ in (
                "select", "textual_select") and id(alias) not in self._derived:
            raise refuse("a subquery in FROM", "select from the tables themselves")
        return super().visit_alias(alias, **kw)

    def visit_lateral(self, lateral_, **kw):
        raise refuse("LATERAL")

    def visit_tablesample(self, tablesample, **kw):
        raise refuse("TABLESAMPLE")

    def visit_values(self, element, **kw):
        raise refuse("VALUES")

    def visit_table_valued_alias(self, element, **kw):
        raise refuse("a table-valued function")

    def visit_textual_select(self, taf, **kw):
        if self.stack and id(taf) not in self._derived:
            raise refuse("a subquery")
        return super().visit_textual_select(taf, **kw)

    def visit_join(self, join, asfrom=False, **kw):
        if join.full:
            raise refuse("FULL OUTER JOIN", "only an inner join of two tables")
        if join.isouter:
            raise refuse("LEFT OUTER JOIN", "only an inner join of two tables")
        for side in (join.left, join.right):
            if side.__visit_name__ == "join":
                raise refuse("more than one JOIN", "the grammar joins two tables")
        return super().visit_join(join, asfrom=asfrom, **kw)

    def visit_over(self, over, **kw):
        raise refuse("a window function (OVER)")

    def visit_withingroup(self, withingroup, **kw):
        raise refuse("WITHIN GROUP", "write quantile_cont(x, q)")

    def visit_aggregateorderby(self, element, **kw):
        raise refuse("ORDER BY inside an aggregate")

    def visit_extract(self, extract, **kw):
        raise refuse("EXTRACT")

    def visit_function(self, func, add_to_result_map=None, **kw):
        name = func.name.lower()
        if func.packagenames or name not in FUNCTIONS:
            raise refuse(f"function {'.'.join([*func.packagenames, func.name]).upper()}",
                         "the functions are the aggregates, ABS, COALESCE, CASE and CAST")
        kw["mpcsql_in_function"] = True  # 1.4 does not say within_aggregate_function
        return super().visit_function(func, add_to_result_map=add_to_result_map, **kw)

    def visit_unary(self, unary, **kw):
        if unary.operator is operators.distinct_op:
            inside = kw.get("within_aggregate_function") or kw.get("mpcsql_in_function")
            raise refuse("DISTINCT inside an aggregate" if inside else "DISTINCT")
        if unary.operator in (operators.exists,):
            raise refuse("EXISTS (a subquery)")
        return super().visit_unary(unary, **kw)

    def visit_binary(self, binary, override_operator=None, **kw):
        op = override_operator or binary.operator
        if op in REFUSED_OPERATORS:
            raise refuse(REFUSED_OPERATORS[op])
        return super().visit_binary(binary, override_operator=override_operator, **kw)

    def visit_mpcsql_option(self, element, **kw):
        try:
            return f"{element.name} => {sql_literal(element.value)}"
        except Exception as e:  # sql_literal refuses e.g. NaN or an unknown type
            raise InterfaceError(f"model option {element.name}: {e}") from None

    def visit_insert(self, *a, **kw):
        raise refuse("INSERT", "mpcsql is read-only")

    def visit_update(self, *a, **kw):
        raise refuse("UPDATE", "mpcsql is read-only")

    def visit_delete(self, *a, **kw):
        raise refuse("DELETE", "mpcsql is read-only")

    def limit_clause(self, select, **kw):
        # the grammar has OFFSET without LIMIT (SQLAlchemy's default writes LIMIT -1)
        text = ""
        if select._limit_clause is not None:
            text += "\n LIMIT " + self.process(select._limit_clause, **kw)
        if select._offset_clause is not None:
            text += "\n OFFSET " + self.process(select._offset_clause, **kw)
        return text


class MpcsqlDDLCompiler(compiler.DDLCompiler):
    """No DDL: the parties' administrators own their tables."""

    def process(self, element, **kw):
        raise refuse(f"DDL ({type(element).__name__})",
                     "a party's tables are registered by its owner, not created by SQL")


class MpcsqlTypeCompiler(compiler.GenericTypeCompiler):
    """DuckDB's names for the CAST target types the grammar has."""

    def visit_FLOAT(self, type_, **kw):
        return "DOUBLE"

    def visit_float(self, type_, **kw):
        return "DOUBLE"

    def visit_double(self, type_, **kw):
        return "DOUBLE"

    def visit_DOUBLE_PRECISION(self, type_, **kw):
        return "DOUBLE"


def sa_type(name: str) -> sqltypes.TypeEngine:
    """The SQLAlchemy type of a catalog (DuckDB) type name."""
    up = name.upper().strip()
    m = _DECIMAL.fullmatch(up)
    if m:
        return sqltypes.Numeric(int(m.group(1)), int(m.group(2)))
    simple = {
        "BIGINT": sqltypes.BigInteger, "INT8": sqltypes.BigInteger, "LONG": sqltypes.BigInteger,
        "INTEGER": sqltypes.Integer, "INT": sqltypes.Integer, "INT4": sqltypes.Integer,
        "SMALLINT": sqltypes.SmallInteger, "TINYINT": sqltypes.SmallInteger,
        "UTINYINT": sqltypes.SmallInteger, "USMALLINT": sqltypes.Integer,
        "UINTEGER": sqltypes.BigInteger, "UBIGINT": lambda: sqltypes.Numeric(20, 0),
        "HUGEINT": lambda: sqltypes.Numeric(38, 0), "UHUGEINT": lambda: sqltypes.Numeric(39, 0),
        "DOUBLE": _DOUBLE, "FLOAT8": _DOUBLE, "REAL": sqltypes.REAL,
        "FLOAT": sqltypes.REAL, "FLOAT4": sqltypes.REAL, "DECIMAL": sqltypes.Numeric,
        "VARCHAR": sqltypes.String, "TEXT": sqltypes.String, "STRING": sqltypes.String,
        "BOOLEAN": sqltypes.Boolean, "BOOL": sqltypes.Boolean, "DATE": sqltypes.Date,
        "TIMESTAMP": sqltypes.DateTime, "TIME": sqltypes.Time,
    }.get(up)
    return simple() if simple is not None else sqltypes.NullType()


def _typed(args: dict[str, list[str]], spec: dict[str, type], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in args.items():
        try:
            out[k] = spec[k](v)
        except ValueError:
            raise InterfaceError(f"mpcsql URL: {k}={v!r} is not a valid {spec[k].__name__} "
                                 f"({where})") from None
    return out


class _SettingsCursor:
    """A DB-API cursor that writes the URL's settings (``SET join_protocol = ...;``) before
    each statement: tools such as Superset execute on the DB-API cursor itself, past the
    dialect's ``do_execute``.  Everything else is the wrapped cursor's."""

    def __init__(self, cursor, with_settings):
        object.__setattr__(self, "_cursor", cursor)
        object.__setattr__(self, "_with_settings", with_settings)

    def execute(self, sql, parameters=None):
        self._cursor.execute(self._with_settings(sql) if isinstance(sql, str) else sql,
                             parameters)
        return self

    def __iter__(self):
        return iter(self._cursor)

    def __getattr__(self, name):
        return getattr(self._cursor, name)

    def __setattr__(self, name, value):
        setattr(self._cursor, name, value)


class _SettingsConnection:
    """A DB-API connection whose cursors are :class:`_SettingsCursor` s (``join_protocol=``
    in the URL); everything else is the wrapped :class:`engine.Connection`'s."""

    def __init__(self, connection, with_settings):
        object.__setattr__(self, "_connection", connection)
        object.__setattr__(self, "_with_settings", with_settings)

    def cursor(self):
        return _SettingsCursor(self._connection.cursor(), self._with_settings)

    def execute(self, sql, parameters=None):
        return self.cursor().execute(sql, parameters)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._connection.close()

    def __getattr__(self, name):
        return getattr(self._connection, name)

    def __setattr__(self, name, value):
        setattr(self._connection, name, value)


class MpcsqlDialect(default.DefaultDialect):
    """``mpcsql://``: the secure SQL of a three-party federation, through :mod:`engine`."""

    name = "mpcsql"
    driver = "mpcsql"
    supports_statement_cache = True
    statement_compiler = MpcsqlCompiler
    ddl_compiler = MpcsqlDDLCompiler
    type_compiler_cls = MpcsqlTypeCompiler
    default_paramstyle = "qmark"
    positional = True
    div_is_floordiv = False  # DuckDB's / divides exactly
    supports_native_boolean = True
    supports_native_decimal = True
    supports_alter = False
    supports_sequences = False
    supports_comments = True
    inline_comments = False
    supports_default_values = False
    supports_default_metavalue = False
    supports_empty_insert = False
    supports_multivalues_insert = False
    supports_is_distinct_from = False
    supports_server_side_cursors = False
    supports_sane_rowcount = False
    supports_sane_multi_rowcount = False
    postfetch_lastrowid = False
    use_insertmanyvalues = False
    default_schema_name = "main"

    def __init__(self, join_protocol: str | None = None, **kw: Any):
        super().__init__(**kw)
        self.join_protocol = join_protocol

    @classmethod
    def import_dbapi(cls):
        import engine

        return engine  # connect(), paramstyle and the PEP 249 exceptions

    if not SA2:  # SQLAlchemy 1.4 asks the class for dbapi() and type_compiler
        dbapi = import_dbapi
        type_compiler = MpcsqlTypeCompiler

    @classmethod
    def get_pool_class(cls, url):
        # one embedded federation per engine: every checkout shares the one connection
        return pool.StaticPool if not url.host else pool.QueuePool

    def create_connect_args(self, url):
        if url.username or url.password:
            raise InterfaceError("mpcsql URL: no user or password: an mpcsql:// server "
                                 "authenticates you by your TLS certificate (tls_cert=, "
                                 "tls_key=)")
        if url.database:
            raise InterfaceError(f"mpcsql URL: no database path ({url.database!r}); options "
                                 "go in the query string, e.g. mpcsql://?workdir=DIR")
        query = {k: (v[-1] if isinstance(v, tuple) else v) for k, v in url.query.items()}
        proto = query.pop("join_protocol", None)
        if proto is not None:
            self.join_protocol = proto
        if url.host:
            tls = {_TLS_ARGS[k]: query.pop(k) for k in list(query) if k in _TLS_ARGS}
            if tls and len(tls) != len(_TLS_ARGS):
                raise InterfaceError("mpcsql URL: give all of tls_ca, tls_cert and tls_key "
                                     "(PEM paths: the federation CA, your analyst certificate "
                                     "and its key) or none")
            unknown = set(query) - set(_REMOTE_ARGS)
            if unknown:
                raise InterfaceError(f"mpcsql URL: unknown option(s) {', '.join(sorted(unknown))}"
                                     f" for a party server; options: "
                                     f"{', '.join([*_TLS_ARGS, *_REMOTE_ARGS, 'join_protocol'])}")
            kw = _typed(query, _REMOTE_ARGS, "party server")
            party = kw.pop("party", None)
            dsn = f"mpcsql://{url.host}:{url.port or 7400}" + (f"?party={party}" if party else "")
            if tls:
                kw["tls"] = tls
            return [dsn], kw
        data = query.pop("data", "demo")
        if data not in ("demo", "none"):
            raise InterfaceError(f"mpcsql URL: data={data!r}; expected data=demo (the bundled "
                                 "Medical Costs split, the default) or data=none")
        unknown = set(query) - set(_EMBEDDED_ARGS)
        if unknown:
            raise InterfaceError(f"mpcsql URL: unknown option(s) {', '.join(sorted(unknown))} "
                                 f"for the embedded federation; options: "
                                 f"{', '.join([*_EMBEDDED_ARGS, 'data', 'join_protocol'])}")
        kw = _typed(query, _EMBEDDED_ARGS, "embedded federation")
        kw["data"] = data
        return [], kw

    def connect(self, *cargs, **cparams):
        import engine

        data = cparams.pop("data", None)
        con = engine.connect(*cargs, **cparams)
        if data == "demo":
            from engine.data import demo

            try:
                demo.register(con)
            except BaseException:
                con.close()
                raise
        return _SettingsConnection(con, self._with_settings) if self.join_protocol else con

    # --- execution ------------------------------------------------------------------------

    def _with_settings(self, statement: str) -> str:
        if self.join_protocol and not _SET.match(statement):
            return f"SET join_protocol = {sql_literal(self.join_protocol)}; {statement}"
        return statement

    def do_execute(self, cursor, statement, parameters, context=None):
        cursor.execute(statement, parameters)  # the settings: _SettingsCursor

    def do_execute_no_params(self, cursor, statement, context=None):
        cursor.execute(statement)

    def do_executemany(self, cursor, statement, parameters, context=None):
        raise refuse("executemany", "mpcsql is read-only")

    def do_begin(self, dbapi_connection):
        pass

    def do_rollback(self, dbapi_connection):
        pass  # read-only: nothing to roll back (the DB-API's rollback() refuses)

    def do_commit(self, dbapi_connection):
        pass

    def do_ping(self, dbapi_connection) -> bool:
        dbapi_connection.tables()
        return True

    def get_isolation_level(self, dbapi_connection):
        return "AUTOCOMMIT"

    def get_isolation_level_values(self, dbapi_connection):
        return ["AUTOCOMMIT"]

    def set_isolation_level(self, dbapi_connection, level):
        if level != "AUTOCOMMIT":
            raise InterfaceError(f"isolation level {level!r}: mpcsql is read-only "
                                 "(AUTOCOMMIT only)")

    def _get_server_version_info(self, connection):
        return None

    def _get_default_schema_name(self, connection):
        return "main"

    # --- reflection: the federated catalog ------------------------------------------------

    @reflection.cache
    def _catalog(self, connection, **kw):  # no annotation: 1.4's decorator re-parses it
        con = connection.connection.dbapi_connection
        return {t["name"]: t for t in con.tables()}

    def _tables(self, connection, schema, **kw) -> dict[str, dict[str, Any]]:
        if schema not in (None, "main"):
            return {}
        return self._catalog(connection, info_cache=kw.get("info_cache"))

    def _table(self, connection, table_name, schema, **kw) -> dict[str, Any]:
        from sqlalchemy.exc import NoSuchTableError

        t = self._tables(connection, schema, **kw).get(table_name)
        if t is None:
            raise NoSuchTableError(table_name)
        return t

    def get_schema_names(self, connection, **kw):
        return ["main"]

    def get_table_names(self, connection, schema=None, **kw):
        return sorted(self._tables(connection, schema, **kw))

    def has_table(self, connection, table_name, schema=None, **kw):
        return table_name in self._tables(connection, schema, **kw)

    def get_view_names(self, connection, schema=None, **kw):
        return []

    def get_materialized_view_names(self, connection, schema=None, **kw):
        return []

    def get_temp_table_names(self, connection, schema=None, **kw):
        return []

    def get_temp_view_names(self, connection, schema=None, **kw):
        return []

    def get_sequence_names(self, connection, schema=None, **kw):
        return []

    def has_sequence(self, connection, sequence_name, schema=None, **kw):
        return False

    def get_columns(self, connection, table_name, schema=None, **kw):
        t = self._table(connection, table_name, schema, **kw)
        out = []
        for col in t["columns"]:
            name, dtype = col[0], col[1]
            domain = col[3] if len(col) > 3 else None
            is_key = name == t.get("key")
            if is_key:
                comment = "join key (never revealed or aggregated)"
            elif domain is not None:
                comment = "public domain (GROUP BY): " + ", ".join(map(str, domain))
            else:
                comment = None
            nullable = not is_key and (bool(col[4]) if len(col) > 4 else True)
            out.append({"name": name, "type": sa_type(dtype), "nullable": nullable,
                        "default": None, "autoincrement": False, "comment": comment})
        return out

    def get_pk_constraint(self, connection, table_name, schema=None, **kw):
        t = self._table(connection, table_name, schema, **kw)
        key = t.get("key")
        return {"constrained_columns": [key] if key else [], "name": None}

    def get_foreign_keys(self, connection, table_name, schema=None, **kw):
        self._table(connection, table_name, schema, **kw)
        return []

    def get_indexes(self, connection, table_name, schema=None, **kw):
        self._table(connection, table_name, schema, **kw)
        return []

    def get_unique_constraints(self, connection, table_name, schema=None, **kw):
        self._table(connection, table_name, schema, **kw)
        return []

    def get_check_constraints(self, connection, table_name, schema=None, **kw):
        self._table(connection, table_name, schema, **kw)
        return []

    def get_table_comment(self, connection, table_name, schema=None, **kw):
        t = self._table(connection, table_name, schema, **kw)
        return {"text": f"held by party {t.get('party')}; join key {t.get('key')}"}


dialect = MpcsqlDialect
