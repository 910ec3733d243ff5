"""One party's tables in its own DuckDB database file (or read from PostgreSQL).

The party server is the only process that opens the file.  Registered tables remember their key
column in a small metadata table; ``load`` reads exactly the columns a plan needs and checks
them (NULLs, non-numeric values, duplicate keys, range) before anything leaves the party.

A ``party.toml`` table with a ``postgres`` source has no copy in the file: at start-up and at
every query its served columns are read afresh (:mod:`engine.server.pgsource`) into a
temporary DuckDB table of the same name, the very same checks run on it, and it is dropped
once the query's data is loaded.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import math
import os
import re
import tempfile
import uuid
from collections.abc import Callable

import duckdb
import numpy as np

from dialect.errors import DataError, NotSupportedError, ProgrammingError
from engine.protocols.channel import LocalData
from engine.protocols.fixedpoint import check_range
from engine.protocols.paillier import TypedId
from engine.protocols.spill import Spill, SpilledRows
from engine.server.pgsource import PgTable
from planner import domains as dom
from planner.binder import check_key_type, key_base_type
from planner.catalog import ColumnSchema, TableSchema
from planner.physical import LocalColumn

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_META = "_mpcsql_tables"
_PG_ROWS = "_mpcsql_pg_rows"  # the registered frame a PostgreSQL read passes through
#: Rows per record batch of a spilled read (:meth:`PartyStore.load_local` with a spill).
BATCH_ROWS = 1 << 17
#: DuckDB's memory_limit for a moment after a large read: what it keeps beyond that is evicted.
RELEASE_LIMIT = "32MB"
try:  # the spilled read streams DuckDB's result as Arrow record batches
    import pyarrow  # noqa: F401

    _HAVE_ARROW = True
except ImportError:  # pragma: no cover - without pyarrow every table is read in memory
    _HAVE_ARROW = False
_INT64_KEYS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
               "UINTEGER", "UBIGINT"}


MIN_SCALE_BITS, MAX_SCALE_BITS = -16, 31


def power_of_two_bits(bound: float) -> int:
    """The smallest k (within [-16, 31]) with bound <= 2**k."""
    if bound <= 0:
        return 0
    return int(min(MAX_SCALE_BITS, max(MIN_SCALE_BITS, math.ceil(math.log2(bound)))))


def _closed(reader) -> None:
    """Close a DuckDB result's record batch reader (its connection is free again)."""
    if reader is not None:
        reader.close()


def _quote(name: str) -> str:
    """Any column name as a DuckDB quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def _domain(domains: dict[str, dom.Spec] | None, column: str) -> tuple | None:
    """The expanded domain of ``column`` (None if undeclared)."""
    spec = (domains or {}).get(column)
    return None if spec is None else dom.expand(spec)


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ProgrammingError(f"invalid identifier {name!r} (letters, digits and _ only)")
    return '"' + name + '"'


class PartyStore:
    """A party's DuckDB database file with its exposed tables."""

    def __init__(self, path: str, party: str, *, read_only: bool = False):
        self.path = path
        self.party = party
        self.exposed: dict[str, TableSchema] | None = None  # set by expose() (party.toml)
        self.sources: dict[str, PgTable] = {}  # tables read from PostgreSQL (party.toml)
        self._live: set[str] = set()  # PostgreSQL tables read for the operation under way
        if read_only and path != ":memory:":
            if not os.path.isfile(path):
                raise ProgrammingError(f"database file not found: {path}", party=party)
            try:
                self.con = duckdb.connect(path, read_only=True)
            except duckdb.Error as e:
                raise ProgrammingError(f"cannot open database {path}: {e}", party=party) from e
            return
        self.con = duckdb.connect(path)
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {_META} (name VARCHAR PRIMARY KEY, "
                         "key_column VARCHAR, scale_bits VARCHAR)")
        # declared domains (JSON, planner.domains canonical form); older files lack it
        self.con.execute(f"ALTER TABLE {_META} ADD COLUMN IF NOT EXISTS domains VARCHAR")

    def expose(self, tables: list[tuple]) -> None:
        """Serve exactly these (table, key, columns or None for all, bounds[, domains[,
        postgres]]) only.

        Used with ``party.toml``: the tables already live in the party's DuckDB file, or in
        PostgreSQL (``postgres``: a :class:`engine.deploy.config.PostgresSource`); names, key,
        columns, bounds and domains are checked here so that a bad configuration fails at
        start-up.
        """
        exposed: dict[str, TableSchema] = {}
        for name, key, columns, bounds, *rest in tables:
            if len(rest) > 1 and rest[1] is not None:
                self.sources[name] = PgTable(self.party, name, rest[1])
            with self._fresh(name, rows=False, detail=True):  # PostgreSQL: the columns only
                full = self._schema(name, key, {}, drop_on_error=False)
            known = {c.name.lower(): c for c in full.columns}
            wanted = [c.name for c in full.columns if c.name != full.key] if columns is None \
                else columns
            for c in list(wanted) + list(bounds):
                if c.lower() not in known:
                    raise ProgrammingError(
                        f"table {name} has no column {c!r}; columns: "
                        + ", ".join(known[k].name for k in known), party=self.party)
                if c.lower() == full.key.lower():
                    raise ProgrammingError(f"{name}.{c} is the key column; it is never exposed "
                                           "as a value column", party=self.party)
            cols = (known[full.key.lower()],) + tuple(known[c.lower()] for c in wanted)
            schema = TableSchema(name, self.party, full.key, cols)
            with self._fresh(name, [c.name for c in cols], detail=True):
                bits = self._declare_bounds(name, schema, bounds)
                doms = self._declare_domains(name, schema, rest[0] if rest else {}, drop=False)
                exposed[name] = TableSchema(name, self.party, full.key,
                                            tuple(ColumnSchema(c.name, c.dtype, bits.get(c.name),
                                                               _domain(doms, c.name),
                                                               nullable=c.nullable)
                                                  for c in cols))
                self._check_domain_values(name, exposed[name])
        self.exposed = exposed

    # --- tables read from PostgreSQL -------------------------------------------------------

    @contextlib.contextmanager
    def _fresh(self, name: str, columns: list[str] | None = None, *, rows: bool = True,
               detail: bool = False):
        """For a PostgreSQL table: its rows, read now, as a temporary DuckDB table ``name``
        while the block runs (nested uses share one read).  Nothing for other tables."""
        pg = self.sources.get(name)
        if pg is None or name in self._live:
            yield
            return
        if columns is None and self.exposed is not None and name in self.exposed:
            columns = [c.name for c in self.exposed[name].columns]
        self._read_pg(pg, columns, rows=rows, detail=detail)
        self._live.add(name)
        try:
            yield
        finally:
            self._live.discard(name)
            self.con.execute(f"DROP TABLE IF EXISTS temp.main.{_quote(name)}")

    def _read_pg(self, pg: PgTable, columns: list[str] | None, *, rows: bool,
                 detail: bool) -> None:
        """Read ``pg`` into the temporary table; refuse a schema that differs from the one
        published at start-up (the catalog, and so every peer's plan, depends on it)."""
        import pandas as pd  # only for a PostgreSQL source (its import costs ~0.3 s a start)

        described, data = pg.read(columns, rows=rows, detail=detail)
        grid = np.empty((len(data), len(described)), dtype=object)
        if data:
            grid[:] = data
        frame = pd.DataFrame(grid, columns=[f"c{i}" for i in range(len(described))],
                             dtype=object)
        casts = []
        for i, (col, dtype) in enumerate(described):
            text = f"CAST(c{i} AS VARCHAR)"  # an empty frame's columns have no type
            expr = f"unhex({text})" if dtype == "BLOB" else f"CAST({text} AS {dtype})"
            casts.append(f"{expr} AS {_quote(col)}")
        self.con.execute("SELECT 1").fetchall()  # DuckDB 2 registers nothing over an open result
        self.con.register(_PG_ROWS, frame)
        try:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {_quote(pg.name)} AS "
                             f"SELECT {', '.join(casts)} FROM {_PG_ROWS}")
        except duckdb.Error as e:  # the message may quote a value
            raise DataError(f"cannot read {pg.where} as DuckDB types ({type(e).__name__}; the "
                            "value is not shown)", party=self.party) from None
        finally:
            self.con.unregister(_PG_ROWS)
        served = (self.exposed or {}).get(pg.name)
        if served is not None:
            now = dict(described)
            for c in served.columns:
                if now.get(c.name) != c.dtype:
                    self.con.execute(f"DROP TABLE IF EXISTS temp.main.{_quote(pg.name)}")
                    raise ProgrammingError(
                        f"{pg.where} changed since {self.party}'s server started: column "
                        f"{c.name} is now {now.get(c.name)}, was {c.dtype}; restart the server "
                        "to publish the new schema", party=self.party)

    def close(self) -> None:
        self.con.close()

    # --- registration ----------------------------------------------------------------------

    def register(self, name: str, *, key: str | None, path: str | None = None,
                 blob: bytes | None = None, fmt: str | None = None,
                 table: str | None = None, bounds: dict[str, float] | None = None,
                 domains: dict[str, object] | None = None,
                 not_null: list[str] | None = None) -> TableSchema:
        """Create or replace table ``name`` from a CSV/Parquet/DuckDB source or a Parquet blob.

        ``bounds`` declares public bounds |x| <= bound per column; columns without one get the
        smallest power of two above their largest magnitude (published in the catalog).
        ``domains`` declares the public domain of columns (a list of categories, or an integer
        range ``{"min": a, "max": b}`` / ``range(a, b + 1)``; :mod:`planner.domains`), needed
        to GROUP BY them; every non-NULL value must lie in it.
        """
        if self.exposed is not None:
            raise NotSupportedError(f"{self.party} serves the tables listed in its party.toml; "
                                    "load data into its DuckDB file and restart the server")
        tname = _ident(name)
        tmp = None
        attached = False
        try:
            if blob is not None:
                fd, tmp = tempfile.mkstemp(suffix=".parquet")
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                source = f"read_parquet('{tmp}')"
            elif path is not None:
                if not os.path.exists(path):
                    raise ProgrammingError(f"file not found: {path}", party=self.party)
                quoted = path.replace("'", "''")
                kind = (fmt or os.path.splitext(path)[1].lstrip(".")).lower()
                if kind == "csv":
                    source = f"read_csv('{quoted}', header=true)"
                elif kind == "parquet":
                    source = f"read_parquet('{quoted}')"
                elif kind in ("duckdb", "db"):
                    if not table:
                        raise ProgrammingError("registering a DuckDB file needs table=...")
                    self.con.execute(f"ATTACH '{quoted}' AS _src (READ_ONLY)")
                    attached = True
                    source = f"_src.{_ident(table)}"
                else:
                    raise ProgrammingError(f"unsupported file type {kind!r} (csv, parquet, duckdb)")
            else:
                raise ProgrammingError("register needs a DataFrame, relation or file path")
            try:
                self.con.execute(f"CREATE OR REPLACE TABLE {tname} AS SELECT * FROM {source}")
            except duckdb.Error as e:
                raise DataError(f"cannot read table {name}: {e}", party=self.party) from e
        finally:
            if attached:
                self.con.execute("DETACH DATABASE IF EXISTS _src")
            if tmp:
                os.unlink(tmp)
        schema = self._schema(name, key, {})
        self._declare_not_null(name, schema, not_null or [])
        schema = self._schema(name, key, {})
        bits = self._declare_bounds(name, schema, bounds or {})
        doms = self._declare_domains(name, schema, domains or {})
        declared = self._schema(name, schema.key, bits, doms)
        try:
            self._check_domain_values(name, declared)
        except DataError:
            self.drop(name)
            raise
        self.con.execute(f"INSERT OR REPLACE INTO {_META} (name, key_column, scale_bits, domains)"
                         " VALUES (?, ?, ?, ?)",
                         [name, schema.key, json.dumps(bits), json.dumps(doms)])
        return declared

    def _declare_not_null(self, name: str, schema: TableSchema, columns: list[str]) -> None:
        """Declare ``columns`` NOT NULL (a DuckDB constraint: public, kept for later loads);
        a column holding a NULL is refused (DataError naming it, no count), the table dropped."""
        known = {c.name.lower(): c.name for c in schema.columns}
        for col in columns:
            c = known.get(str(col).lower())
            if c is None:
                self.drop(name)
                raise ProgrammingError(f"not_null names unknown column {col!r} of {name}",
                                       party=self.party)
            try:
                self.con.execute(f"ALTER TABLE {_ident(name)} ALTER COLUMN {_ident(c)} "
                                 "SET NOT NULL")
            except duckdb.ConstraintException:
                self.drop(name)
                raise DataError(f"column {name}.{c} holds NULL values; it cannot be declared "
                                "NOT NULL", party=self.party) from None

    def _declare_domains(self, name: str, schema: TableSchema, domains: dict[str, object], *,
                         drop: bool = True) -> dict[str, dom.Spec]:
        """The declared domains in canonical form, keyed by the columns' own names."""
        if not isinstance(domains, dict):
            raise ProgrammingError(f"domains of {name} must map column names to domains",
                                   party=self.party)
        known = {c.name.lower(): c for c in schema.columns}
        out: dict[str, dom.Spec] = {}
        try:
            for col, spec in domains.items():
                c = known.get(str(col).lower())
                if c is None:
                    raise ProgrammingError(f"domain given for unknown column {col!r} of {name}")
                if schema.key is not None and c.name.lower() == schema.key.lower():
                    raise ProgrammingError(f"{name}.{c.name} is the key column; it takes no "
                                           "domain")
                where = f"{name}.{c.name}"
                out[c.name] = dom.normalize(spec, where)
                dom.check_type(out[c.name], c.dtype, where)
        except ProgrammingError as e:
            if drop:
                self.drop(name)
            raise ProgrammingError(e.message, party=self.party) from None
        return out

    def check_domains(self, table: str) -> None:
        """Refuse (DataError naming the column and a count) values outside a declared domain."""
        schema = self.schema(table)
        with self._fresh(table):
            self._check_domain_values(table, schema)

    def _check_domain_values(self, table: str, schema: TableSchema) -> None:
        cols = [c for c in schema.columns if c.domain is not None]
        if not cols:
            return
        tests, params = [], []
        for c in cols:
            q = _ident(c.name)
            spec = c.domain
            if dom.base_type(c.dtype) in dom.INTEGER_TYPES and spec == tuple(
                    range(spec[0], spec[0] + len(spec))):
                tests.append(f"count_if({q} NOT BETWEEN ? AND ?)")
                params += [spec[0], spec[-1]]
            else:
                tests.append(f"count_if({q} NOT IN ({', '.join('?' * len(spec))}))")
                params += list(spec)
        counts = self.con.execute(f"SELECT {', '.join(tests)} FROM {_ident(table)}",
                                  params).fetchone()
        for c, bad in zip(cols, counts, strict=True):
            if bad:
                raise DataError(f"column {table}.{c.name} has {bad} value(s) outside its "
                                f"declared domain in {self.party}'s table {table}",
                                party=self.party)

    def _declare_bounds(self, name: str, schema: TableSchema, bounds: dict[str, float]
                        ) -> dict[str, int]:
        known = {c.name.lower(): c for c in schema.columns}
        for col in bounds:
            if col.lower() not in known:
                self.drop(name)
                raise ProgrammingError(f"bound given for unknown column {col!r} of {name}")
        bits = {}
        for c in schema.columns:
            if not c.numeric or c.name == schema.key:
                continue
            bound = next((float(v) for k, v in bounds.items() if k.lower() == c.name.lower()),
                         None)
            if bound is None:
                q = _ident(c.name)
                bound = self.con.execute(
                    f"SELECT max(abs(CAST({q} AS DOUBLE))) FROM {_ident(name)}").fetchone()[0]
            if bound is not None and not math.isfinite(bound):
                continue  # NaN/inf are refused when the column is used
            bits[c.name] = power_of_two_bits(bound or 0.0)
        return bits

    def drop(self, name: str) -> None:
        if self.exposed is not None:
            raise NotSupportedError(f"{self.party} serves the tables listed in its party.toml")
        self.con.execute(f"DROP TABLE IF EXISTS {_ident(name)}")
        self.con.execute(f"DELETE FROM {_META} WHERE name = ?", [name])

    def _schema(self, name: str, key: str | None, bits: dict[str, int],
                domains: dict[str, dom.Spec] | None = None, *,
                drop_on_error: bool = True) -> TableSchema:
        where = ("table_catalog = 'temp'" if name in self.sources
                 else "table_catalog = current_database()")
        rows = self.con.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            f"WHERE table_schema = 'main' AND table_name = ? AND {where} "
            "ORDER BY ordinal_position", [name]
        ).fetchall()
        if not rows:
            raise ProgrammingError(f"table {name} does not exist at {self.party}")
        cols = tuple(ColumnSchema(c, t, bits.get(c), _domain(domains, c), nullable=n != "NO")
                     for c, t, n in rows)
        if key is not None:
            match = [c.name for c in cols if c.name.lower() == key.lower()]
            if not match:
                if drop_on_error:
                    self.drop(name)
                raise ProgrammingError(
                    f"key column {key!r} not found in table {name}; columns: "
                    + ", ".join(c.name for c in cols), party=self.party)
            key = match[0]
        return TableSchema(name, self.party, key, cols)

    def schemas(self) -> list[TableSchema]:
        if self.exposed is not None:
            return list(self.exposed.values())
        has = self.con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'main' "
            "AND table_name = ? AND column_name = 'domains'", [_META]).fetchone()[0]
        doms = "domains" if has else "NULL"  # a read-only file from before domains
        rows = self.con.execute(
            f"SELECT name, key_column, scale_bits, {doms} FROM {_META} ORDER BY name").fetchall()
        return [self._schema(n, k, json.loads(b or "{}"), json.loads(d or "{}"))
                for n, k, b, d in rows]

    def schema(self, name: str) -> TableSchema:
        for t in self.schemas():
            if t.name == name:
                return t
        raise ProgrammingError(f"table {name} does not exist at {self.party}")

    # --- loading for a query --------------------------------------------------------------

    def _key_reader(self, table: str, key: str, where: str
                    ) -> tuple[str, Callable[[object], object]]:
        """The SQL that reads ``table.key`` exactly and the conversion to a Python id.

        Never through a float: integers arrive as Python ints (HUGEINT, UHUGEINT and DECIMAL
        as their exact text), DECIMAL as ``Decimal``, UUID as ``uuid.UUID``, strings and BLOBs
        as themselves, dates and times as exact integers (:class:`paillier.TypedId`).  Equal
        values of one key class give equal ids, whatever the width (see ``key_class``).
        """
        col = self.schema(table).column(key)
        if col is None:
            raise ProgrammingError(f"unknown key column {key} in {where}", party=self.party)
        try:
            kind = check_key_type(table, col.name, col.dtype)
        except ProgrammingError as e:
            raise ProgrammingError(str(e), party=self.party) from None
        q, base = _ident(col.name), key_base_type(col.dtype)
        if kind in ("date", "timestamp", "timestamp_ns", "timestamptz"):
            inf = self.con.execute(
                f"SELECT count(*) FROM {_ident(table)} WHERE isinf({q})").fetchone()[0]
            if inf:
                raise DataError(f"key column {table}.{col.name} contains {inf} infinite "
                                f"value(s) in {where}", party=self.party)
        if kind == "number":
            if base == "DECIMAL":
                return f"CAST({q} AS VARCHAR)", decimal.Decimal
            if base in ("HUGEINT", "UHUGEINT"):
                return f"CAST({q} AS VARCHAR)", int
            return q, int  # at most 64 bits: exact numpy integers
        if kind == "uuid":
            return f"CAST({q} AS VARCHAR)", uuid.UUID
        if kind == "blob":
            return q, bytes
        if kind == "text":
            return q, str
        sql = {"date": f"datediff('day', DATE '1970-01-01', {q})",
               "timestamp": f"epoch_us(CAST({q} AS TIMESTAMP))",
               "timestamptz": f"epoch_us({q})", "timestamp_ns": f"epoch_ns({q})",
               "time": f"epoch_us({q})"}[kind]
        return sql, lambda v, kind=kind: TypedId(kind, int(v))

    def _checked_key(self, table: str, key: str | None, where: str
                     ) -> tuple[str | None, Callable[[object], object] | None]:
        """The key's reader (:meth:`_key_reader`) after refusing NULL and duplicated keys."""
        if key is None:
            return None, None
        t, k = _ident(table), _ident(key)
        key_expr, key_value = self._key_reader(table, key, where)
        nulls = self.con.execute(f"SELECT count(*) FROM {t} WHERE {k} IS NULL").fetchone()[0]
        if nulls:
            raise DataError(f"key column {table}.{key} contains {nulls} NULL value(s) in "
                            f"{where}", party=self.party)
        dups = self.con.execute(
            f"SELECT count(*) FROM (SELECT {k} FROM {t} GROUP BY {k} HAVING count(*) > 1)"
        ).fetchone()[0]
        if dups:
            raise DataError(f"key column {table}.{key} has {dups} duplicated id(s) in {where};"
                            " join keys must be unique", party=self.party)
        return key_expr, key_value

    def _ids(self, raw: np.ndarray, key_value: Callable[[object], object], table: str,
             key: str, where: str) -> list | np.ndarray:
        """The ids of the raw key values, refusing duplicates after canonicalisation.

        Integer keys of at most 64 bits stay a numpy integer array (8 bytes a row, no Python
        int per row): DuckDB read them exactly and :meth:`_checked_key` already refused
        duplicates, which for integers is the same as after canonicalisation.  Other keys
        become Python ids (:meth:`_key_reader`).
        """
        if (key_value is int and isinstance(raw, np.ndarray) and raw.dtype.kind in "iu"
                and not np.ma.is_masked(raw)):
            return np.ascontiguousarray(np.ma.getdata(raw))
        ids = [key_value(v) for v in raw.tolist()]
        if len(set(ids)) != len(ids):  # exact, after canonicalisation
            raise DataError(f"key column {table}.{key} has "
                            f"{len(ids) - len(set(ids))} duplicated id(s) in {where};"
                            " join keys must be unique", party=self.party)
        return ids

    def load(self, table: str, key: str | None, columns: tuple[str, ...],
             spill: Spill | None = None) -> LocalData:
        """Read and check the columns a plan needs; DataError names the cause, never a value.

        With ``spill`` (the masked join streaming into a model), a table of more than
        ``spill.rows`` rows with an integer key of at most 64 bits is read in record batches
        into the query's spill directory (:class:`SpilledRows`, raw values), as
        :meth:`load_local` does; the checks and refusals are the same as in memory.
        """
        self.schema(table)  # an unknown (or unserved) table is refused before any read
        with self._fresh(table), self._bounded(table, spill):
            return self._load(table, key, columns, spill)

    def _load(self, table: str, key: str | None, columns: tuple[str, ...],
              spill: Spill | None = None) -> LocalData:
        self.check_domains(table)
        t = _ident(table)
        where = f"{self.party}'s table {table}"
        key_expr, key_value = self._checked_key(table, key, where)
        schema = {c.name.lower(): c for c in self.schema(table).columns}
        exprs = []
        for c in columns:
            col = schema.get(c.lower())
            if col is None:
                raise ProgrammingError(f"unknown column {c} in {where}", party=self.party)
            q = _ident(col.name)
            nulls = self.con.execute(f"SELECT count(*) FROM {t} WHERE {q} IS NULL").fetchone()[0]
            if nulls:
                raise DataError(f"column {table}.{col.name} contains {nulls} NULL value(s) in "
                                f"{where}; remove or impute them first", party=self.party)
            if not col.numeric:
                bad = self.con.execute(
                    f"SELECT count(*) FROM {t} WHERE TRY_CAST({q} AS DOUBLE) IS NULL"
                ).fetchone()[0]
                if bad:
                    raise DataError(f"column {table}.{col.name} ({col.dtype}) has {bad} "
                                    f"non-numeric value(s) in {where}", party=self.party)
            exprs.append(f"CAST({q} AS DOUBLE)")
        select = ([key_expr] if key else []) + exprs
        if not select:
            n = self.con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            return LocalData(None, np.zeros((n, 0)))
        sql = f"SELECT {', '.join(select)} FROM {t}"
        if spill is not None and key and key_value is int and self._int_key(table, key) \
                and _HAVE_ARROW:
            n = self.con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            if n > spill.rows:
                return self._spill_load(sql, table, columns, n, spill)
        rows = self.con.execute(sql).fetchnumpy()
        names = list(rows.keys())
        ids = self._ids(rows[names[0]], key_value, table, key, where) if key else None
        vals = [np.asarray(rows[n], dtype=np.float64) for n in names[1 if key else 0:]]
        n = len(ids) if key else len(vals[0])
        values = np.column_stack(vals) if vals else np.zeros((n, 0))
        self._check_bounds(values, columns, table, schema)
        return LocalData(ids, values)

    def load_local(self, table: str, key: str | None, local: tuple[LocalColumn, ...],
                   spill: Spill | None = None) -> LocalData:
        """Evaluate a program plan's local columns on this party's table, checked, normalised.

        The key is read and checked as by :meth:`load`.  Each column's ``sql`` (from this
        party's own plan, never a peer's) is evaluated by DuckDB over the table's served
        columns only; NULLs in the table are the SQL's business, but a NULL, NaN or infinite
        result, a value beyond the public bound ``2**bits`` or an indicator that is not 0/1 is
        refused naming the table and the column's text, never a value.  Values come back as
        float64 divided by ``2**bits`` (exact), so ``|v| <= 1``.

        With ``spill`` (the masked join streaming into a program), a table of more than
        ``spill.rows`` rows whose key is an integer of at most 64 bits is read in record
        batches of at most :data:`BATCH_ROWS` rows, each checked as above and appended to a file in
        the query's spill directory (:class:`SpilledRows`): neither this server nor the
        session holds the whole table.  A refusal removes what was written.
        """
        self.schema(table)  # an unknown (or unserved) table is refused before any read
        with self._fresh(table), self._bounded(table, spill):
            return self._load_local(table, key, local, spill)

    @contextlib.contextmanager
    def _bounded(self, table: str, spill: Spill | None):
        """For a table beyond ``spill.rows``: DuckDB's own checks and reads run within
        ``spill.duckdb_memory`` (its ``memory_limit``, restored afterwards), spilling to DuckDB's
        own temporary directory (by default next to the database file, ``<database>.tmp``).
        Not the query's spill directory: DuckDB cannot switch its temporary directory once it
        has used it, and the query's directory is removed when the query ends."""
        if spill is None or not spill.duckdb_memory or self.con.execute(
                f"SELECT count(*) FROM {_ident(table)}").fetchone()[0] <= spill.rows:
            yield
            return
        self.con.execute(f"SET memory_limit = '{spill.duckdb_memory}'")
        try:
            yield
        finally:
            self._release_buffers()
            self.con.execute("RESET memory_limit")

    def _release_buffers(self) -> None:
        """Evict DuckDB's buffers of a large read (a lower ``memory_limit`` does): the session
        process forked next would otherwise start with them resident, up to
        ``duckdb_memory_limit`` (measured at 10^8 rows: 1.09 GB of a 1.29 GB session peak).
        Best effort: DuckDB keeps what it cannot evict."""
        try:
            self.con.execute(f"SET memory_limit = '{RELEASE_LIMIT}'")
        except duckdb.Error:
            pass

    def _load_local(self, table: str, key: str | None, local: tuple[LocalColumn, ...],
                    spill: Spill | None = None) -> LocalData:
        where = f"{self.party}'s table {table}"
        schema = self.schema(table)
        self.check_domains(table)  # group indicators assume every value is in its domain
        key_expr, key_value = self._checked_key(table, key, where)
        cols = ", ".join(_quote(c.name) for c in schema.columns)
        source = f"(SELECT {cols} FROM {_ident(table)}) AS {_ident(table)}"
        exprs = [f"CAST(({c.sql}) AS DOUBLE)" for c in local]
        select = ([key_expr] if key else []) + exprs
        if not select:
            n = self.con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
            return LocalData(None, np.zeros((n, 0)))
        sql = f"SELECT {', '.join(select)} FROM {source}"
        if spill is not None and key and key_value is int and self._int_key(table, key) \
                and _HAVE_ARROW:
            n = self.con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
            if n > spill.rows:
                return self._spill_local(sql, source, local, where, n, spill)
        rows = self._evaluate(sql, source, local, where)
        names = list(rows.keys())
        ids = self._ids(rows[names[0]], key_value, table, key, where) if key else None
        vals = [self._checked_local(rows[n], c, where)
                for n, c in zip(names[1 if key else 0:], local, strict=True)]
        n = len(ids) if key else len(vals[0])
        values = np.column_stack(vals) if vals else np.zeros((n, 0))
        return LocalData(ids, values)

    def _int_key(self, table: str, key: str) -> bool:
        """Whether ``table.key`` is read as a numpy integer of at most 64 bits."""
        col = self.schema(table).column(key)
        return col is not None and key_base_type(col.dtype) in _INT64_KEYS

    def _spill_local(self, sql: str, source: str, local: tuple[LocalColumn, ...], where: str,
                     n: int, spill: Spill) -> SpilledRows:
        """:meth:`_load_local` for a table beyond ``spill.rows``: record batches, each checked
        and appended to a spill file of (key, values) rows (8 + 8 d bytes a row)."""

        def values(batch) -> list[np.ndarray]:
            out = []
            for j, c in enumerate(local):
                col = batch.column(1 + j)
                raw = np.ma.masked_array(col.to_numpy(zero_copy_only=False).astype(np.float64),
                                         mask=col.is_null().to_numpy(zero_copy_only=False))
                out.append(self._checked_local(raw, c, where))
            return out

        def refusal(e: duckdb.Error) -> Exception:
            return self._refusal(e, source, local, where)

        return self._spill_rows(sql, len(local), n, spill, where, values, refusal)

    def _spill_load(self, sql: str, table: str, columns: tuple[str, ...], n: int,
                    spill: Spill) -> SpilledRows:
        """:meth:`_load` for a table beyond ``spill.rows`` (a model plan's plain columns, their
        NULLs and non-numeric values refused by SQL first): record batches, each checked for
        the fixed-point range and the declared bounds as :meth:`_load` checks the whole table,
        appended to a spill file of (key, raw values) rows."""
        where = f"{self.party}'s table {table}"
        schema = {c.name.lower(): c for c in self.schema(table).columns}

        def values(batch) -> list[np.ndarray]:
            vals = np.column_stack([batch.column(1 + j).to_numpy(zero_copy_only=False)
                                    .astype(np.float64) for j in range(len(columns))])
            if any(batch.column(1 + j).null_count for j in range(len(columns))):
                raise DataError(f"{where} changed while it was read", party=self.party)
            self._check_bounds(vals, columns, table, schema)
            return [vals[:, j] for j in range(len(columns))]

        def refusal(e: duckdb.Error) -> Exception:
            return DataError(f"reading {where} failed ({type(e).__name__}; the value is not "
                             "shown)", party=self.party)

        return self._spill_rows(sql, len(columns), n, spill, where, values, refusal)

    def _check_bounds(self, values: np.ndarray, columns: tuple[str, ...], table: str,
                      schema: dict[str, ColumnSchema]) -> None:
        """Plain columns: finite, within the fixed-point range and their declared bounds."""
        check_range(values, columns, table)
        for j, c in enumerate(columns):
            k = schema[c.lower()].scale_bits
            if k is not None and values.size and np.abs(values[:, j]).max() > 2.0**k:
                raise DataError(f"column {table}.{c} exceeds its declared bound 2^{k}; "
                                "re-register the table with a larger bound", party=self.party)

    def _spill_rows(self, sql: str, d: int, n: int, spill: Spill, where: str,
                    values: Callable[[object], list[np.ndarray]],
                    refusal: Callable[[duckdb.Error], Exception]) -> SpilledRows:
        """Stream ``sql`` (the integer key, then d values) in record batches into a spill file
        of (key, values) rows; ``values`` checks and converts one batch's value columns."""
        out = spill.row_file("table", 1 + d)
        key_dtype = None
        reader = None
        lo, hi = np.full(d, np.inf), np.full(d, -np.inf)
        try:
            try:
                batch_rows = min(BATCH_ROWS, max(1000, spill.rows))
                self.con.execute("SELECT 1").fetchall()  # no unfinished result before it
                rel = self.con.sql(sql)  # a relation streams its record batches
                reader = (rel.to_arrow_reader(batch_rows) if hasattr(rel, "to_arrow_reader")
                          else rel.fetch_arrow_reader(batch_rows))  # duckdb < 1.4
                del rel
                for batch in reader:
                    key_col = batch.column(0)
                    ids = key_col.to_numpy(zero_copy_only=False)
                    if key_col.null_count or ids.dtype.kind not in "iu":
                        raise DataError(f"key column of {where} contains NULL values",
                                        party=self.party)
                    key_dtype = key_dtype or ids.dtype.newbyteorder("<").str
                    rows = np.empty((len(ids), 1 + d), dtype=np.uint64)
                    rows[:, 0] = ids.astype(key_dtype, copy=False).view(np.uint64)
                    for j, v in enumerate(values(batch)):
                        rows[:, 1 + j] = v.view(np.uint64)
                        if len(v):
                            lo[j], hi[j] = min(lo[j], v.min()), max(hi[j], v.max())
                    out.append(rows)
                    del rows, batch
            except duckdb.Error as e:
                reader = _closed(reader)
                raise refusal(e) from None
            finally:
                reader = _closed(reader)  # the connection serves other queries after this
            out.close()
            if out.rows != n:
                raise DataError(f"{where} changed while it was read", party=self.party)
        except BaseException:
            out.remove()
            raise
        return SpilledRows(None, np.zeros((0, d)), file=out, n=n, key_dtype=key_dtype or "<i8",
                           lo=lo, hi=hi)

    def _evaluate(self, sql: str, source: str, local: tuple[LocalColumn, ...], where: str
                  ) -> dict[str, np.ndarray]:
        """Run the local columns' SELECT; a DuckDB error names the column it comes from and
        its kind, and the message only when it cannot depend on the data (parse, binding)."""
        try:
            return self.con.execute(sql).fetchnumpy()
        except duckdb.Error as e:
            raise self._refusal(e, source, local, where) from None

    def _refusal(self, e: duckdb.Error, source: str, local: tuple[LocalColumn, ...],
                 where: str) -> ProgrammingError | DataError:
        """The refusal of a failed local-column SELECT: names the column it comes from (each
        evaluated alone, aggregated so that no rows are held) and its kind."""
        culprit = "the key"
        for c in local:  # find the column that fails (the key alone is read by load too)
            try:
                self.con.execute(f"SELECT max(CAST(({c.sql}) AS DOUBLE)) FROM {source}"
                                 ).fetchall()
            except duckdb.Error:
                culprit = f"local column {c.text}"
                break
        if isinstance(e, duckdb.ProgrammingError) \
                and not isinstance(e, duckdb.InvalidInputException):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return ProgrammingError(f"cannot evaluate {culprit} of {where}: {first}",
                                    party=self.party)
        return DataError(f"evaluating {culprit} of {where} failed on its data "
                         f"({type(e).__name__}; the value is not shown)", party=self.party)

    def _checked_local(self, raw: np.ndarray, col: LocalColumn, where: str) -> np.ndarray:
        """One local column's values checked (never NULL, finite, within 2**bits, 0/1 for an
        indicator) and divided by 2**bits."""
        what = f"local column {col.text} of {where}"
        if np.ma.getmaskarray(raw).any():
            raise DataError(f"{what} is NULL on some rows (its SQL must handle NULLs)",
                            party=self.party)
        v = np.asarray(np.ma.getdata(raw), dtype=np.float64)
        if not np.isfinite(v).all():
            raise DataError(f"{what} contains NaN or infinite values", party=self.party)
        if v.size and np.abs(v).max() > 2.0**col.bits:
            hint = ("values must lie within the fixed-point range |x| <= 2^31"
                    if col.bits >= MAX_SCALE_BITS else "re-register the table with larger bounds")
            raise DataError(f"{what} has values outside its public bound 2^{col.bits} (derived "
                            f"from the catalog's bounds of the columns it reads); {hint}",
                            party=self.party)
        if col.indicator and not np.isin(v, (0.0, 1.0)).all():
            raise DataError(f"{what} is an indicator but not 0/1", party=self.party)
        return np.ldexp(v, -col.bits)  # exact: a power of two
