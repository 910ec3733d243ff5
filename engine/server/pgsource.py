"""Party tables read from PostgreSQL at query time (``[[tables]] postgres = {...}``).

Each read opens one connection (psycopg 3), runs one read-only REPEATABLE READ transaction and
closes it: a ``LIMIT 0`` probe gives the columns and their PostgreSQL types, then one SELECT
returns the chosen columns in PostgreSQL's own text form (exact: integers and numerics as
digits, floats as their shortest exact decimal, dates and timestamps in ISO form at UTC, byte
strings as hex).  :class:`engine.server.storage.PartyStore` casts that text to the DuckDB type
each column maps to (:func:`duckdb_type`) in a temporary table and runs on it exactly the checks
it runs on its own tables; the rows are gone after the query's data has been loaded.

Why not DuckDB's ``postgres`` extension: DuckDB downloads it from its own extension host on
first use, which a party's network (and this project's CI) may not reach; the copies on PyPI
are built for other DuckDB versions.  psycopg ships libpq in its wheel.

Nothing here shows a password: the DSN comes without one (``party.toml`` refuses a DSN that
has one), the password is read from ``password_file`` / ``password_env`` at each connection
and removed from any message, and messages that reach peers name the table, not the DSN.
"""

from __future__ import annotations

import os
import re
from typing import Any

from dialect.errors import DataError, OperationalError, ProgrammingError

#: PostgreSQL type OID -> DuckDB type (others, e.g. enums, json, arrays: VARCHAR, as text)
_TYPES = {
    16: "BOOLEAN", 17: "BLOB", 18: "VARCHAR", 19: "VARCHAR", 20: "BIGINT", 21: "SMALLINT",
    23: "INTEGER", 25: "VARCHAR", 26: "BIGINT", 700: "FLOAT", 701: "DOUBLE", 1042: "VARCHAR",
    1043: "VARCHAR", 1082: "DATE", 1083: "TIME", 1114: "TIMESTAMP",
    1184: "TIMESTAMP WITH TIME ZONE", 2950: "UUID",
}
_NUMERIC, _BYTEA = 1700, 17
_CONNECT_TIMEOUT = 10  # seconds, unless the DSN sets connect_timeout
#: libpq's prefix naming the server's address; peers and analysts get the cause only
_ADDRESS = re.compile(r'^(connection failed: )?connection to server (at|on) [^:]*?(, port \d+)? '
                      r'failed: ', re.IGNORECASE)
_SEVERITY = re.compile(r"^(FATAL|ERROR):\s+")


def duckdb_type(oid: int, precision: int | None, scale: int | None) -> str:
    """The DuckDB type a PostgreSQL column of type ``oid`` is read as.

    ``numeric(p, s)`` becomes ``DECIMAL(p, s)`` when DuckDB has it (p <= 38, 0 <= s <= p);
    an unconstrained or wider ``numeric`` becomes ``DOUBLE``, as in DuckDB's own postgres
    scanner.
    """
    if oid == _NUMERIC:
        if precision is not None and scale is not None and 1 <= precision <= 38 \
                and 0 <= scale <= precision:
            return f"DECIMAL({precision},{scale})"
        return "DOUBLE"
    return _TYPES.get(oid, "VARCHAR")


class PgTable:
    """One party table whose rows live in PostgreSQL (``source``: a config PostgresSource)."""

    def __init__(self, party: str, name: str, source: Any):
        self.party, self.name, self.source = party, name, source
        self.where = f"the PostgreSQL source of {party}'s table {name}"

    # --- connecting ----------------------------------------------------------------------------

    def _password(self) -> str | None:
        src = self.source
        if src.password_file:
            try:
                with open(src.password_file, encoding="utf-8") as f:
                    return f.readline().rstrip("\r\n")
            except OSError as e:
                raise OperationalError(f"cannot read the password_file of {self.where} "
                                       f"({e.strerror})", party=self.party) from None
        if src.password_env:
            value = os.environ.get(src.password_env)
            if value is None:
                raise OperationalError(f"the environment variable {src.password_env} "
                                       f"(password_env of {self.where}) is not set",
                                       party=self.party)
            return value
        return None  # libpq's own: ~/.pgpass, passfile=, PGPASSWORD

    def _reason(self, e: BaseException, secret: str | None) -> str:
        """The first line of a driver message, without the server's address or any secret."""
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        text = _ADDRESS.sub("", lines[0]) if lines else type(e).__name__
        text = " ".join(_SEVERITY.sub("", text).split())
        for s in (secret, getattr(self.source, "dsn", None)):
            if s:
                text = text.replace(s, "***")
        return text

    def _suffix(self, detail: bool) -> str:
        """At start-up (only the operator reads it) the DSN, without a password, helps."""
        if not detail:
            return ""
        from engine.deploy.config import safe_dsn  # server -> deploy is the allowed direction

        return f" [dsn: {safe_dsn(self.source.dsn)}]"

    def _connect(self, detail: bool):
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            raise ProgrammingError(f"{self.where} needs psycopg 3 "
                                   "(pip install 'mpcsql[postgres]')", party=self.party) from None
        password = self._password()
        try:
            params = conninfo_to_dict(self.source.dsn)
        except Exception:
            raise ProgrammingError(f"{self.where} has a malformed dsn", party=self.party) from None
        kwargs: dict[str, Any] = {}
        if password is not None:
            kwargs["password"] = password
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = _CONNECT_TIMEOUT
        if "application_name" not in params:
            kwargs["application_name"] = f"mpcsql-{self.party}"
        try:
            conn = psycopg.connect(self.source.dsn, **kwargs)
        except psycopg.Error as e:
            raise OperationalError(f"cannot connect to {self.where}: "
                                   f"{self._reason(e, password)}{self._suffix(detail)}",
                                   party=self.party) from None
        return conn, password

    # --- reading -------------------------------------------------------------------------------

    def _inner(self):
        from psycopg import sql

        if self.source.table is not None:
            return sql.SQL("SELECT * FROM {}").format(
                sql.Identifier(*self.source.table.split(".")))
        return sql.SQL(self.source.query)

    def read(self, columns: list[str] | None, *, rows: bool = True, detail: bool = False
             ) -> tuple[list[tuple[str, str]], list[tuple]]:
        """``(name, DuckDB type)`` of ``columns`` (all when None) and, if ``rows``, their rows
        as PostgreSQL text (``None`` for NULL).  ``detail`` adds the DSN (no password) to
        messages: for start-up, which only the operator sees."""
        import psycopg
        from psycopg import sql

        conn, password = self._connect(detail)
        try:
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.cursor() as cur:
                for setting, value in (("TimeZone", "UTC"), ("DateStyle", "ISO, YMD"),
                                       ("IntervalStyle", "iso_8601"), ("bytea_output", "hex"),
                                       ("extra_float_digits", "3")):
                    cur.execute(sql.SQL("SET LOCAL {} = {}").format(
                        sql.Identifier(setting), sql.Literal(value)))
                src = self._inner()
                cur.execute(sql.SQL("SELECT * FROM ({}) AS _mpcsql_src LIMIT 0").format(src))
                found = {}
                for d in cur.description or ():
                    if d.name.lower() in {k.lower() for k in found}:
                        raise ProgrammingError(f"{self.where} has two columns named {d.name!r}",
                                               party=self.party)
                    found[d.name] = (d.type_code, duckdb_type(d.type_code, d.precision,
                                                              d.scale))
                if columns is None:
                    columns = list(found)
                missing = [c for c in columns if c not in found]
                if missing:
                    raise ProgrammingError(
                        f"{self.where} has no column {missing[0]!r} (any more); it has "
                        f"{', '.join(found) or 'none'}; restart {self.party}'s server after "
                        "changing its columns", party=self.party)
                described = [(c, found[c][1]) for c in columns]
                if not rows:
                    return described, []
                exprs = [sql.SQL("encode({}, 'hex')").format(sql.Identifier(c))
                         if found[c][0] == _BYTEA else
                         sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns]
                cur.execute(sql.SQL("SELECT {} FROM ({}) AS _mpcsql_src").format(
                    sql.SQL(", ").join(exprs), src))
                return described, cur.fetchall()
        except psycopg.Error as e:
            state = getattr(e, "sqlstate", None) or ""
            if state.startswith("22"):  # data exception: its message may quote a value
                raise DataError(f"reading {self.where} failed on its data (SQLSTATE {state}; "
                                "the message is not shown)", party=self.party) from None
            if isinstance(e, psycopg.OperationalError) and not state.startswith("42"):
                raise OperationalError(f"reading {self.where} failed: "
                                       f"{self._reason(e, password)}{self._suffix(detail)}",
                                       party=self.party) from None
            raise ProgrammingError(f"cannot read {self.where}: {self._reason(e, password)}"
                                   f"{self._suffix(detail)}", party=self.party) from None
        finally:
            conn.close()
