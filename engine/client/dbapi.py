"""The Python DB-API (PEP 249) of mpcsql: ``connect()``, ``Connection`` and ``Cursor``."""

from __future__ import annotations

import dataclasses
import getpass
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from dialect.errors import (
    Error,
    InterfaceError,
    NotSupportedError,
    ProgrammingError,
    error_from_dict,
)
from engine.client.embedded import LocalFederation, read_source
from engine.client.notebook import (
    Explanation,
    arrow_table,
    html_table,
    markdown_table,
    result_footer,
)
from engine.client.progress import Progress
from engine.control import messages, wire
from engine.control.messages import new_query_id
from engine.deploy.config import DEFAULT_PAILLIER_RANDOMNESS, KEY_BITS

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not connections
paramstyle = "qmark"


def connect(
    dsn: str | None = None,
    *,
    tls: ssl.SSLContext | dict[str, str] | None = None,
    connect_timeout: float = 30.0,
    workdir: str | None = None,
    policies: dict[str, dict[str, Any]] | None = None,
    party: str = "ac",
    key_bits: int = KEY_BITS,
    query_timeout: float = 600.0,
    transcript_dir: str | None = None,
    paillier_pool: int = 0,
    paillier_randomness: str = DEFAULT_PAILLIER_RANDOMNESS,
) -> Connection:
    """Connect to a federation; with no ``dsn``, start the embedded three-party default.

    ``dsn`` = ``"mpcsql://host:port[?party=NAME]"`` connects to your own party's running
    server; ``tls`` is an ``ssl.SSLContext`` or ``{"ca": ..., "cert": ..., "key": ...}`` (PEM
    paths: the federation CA and your analyst certificate and key); ``?party=`` makes sure the
    server is that party's.  The embedded-only options (``workdir``, ``policies``, ``party``,
    ``key_bits``, ``transcript_dir``, ``paillier_pool``, ``paillier_randomness``) are set by
    each party's ``party.toml`` instead (``[crypto] paillier_pool``: randomisers each party
    precomputes per Paillier key while idle, 0 = off; ``paillier_randomness``: the data parties'
    Paillier keys, "djn", "classic" or "subgroup", docs/protocols.md).

    Embedded: ``party`` is the party whose analyst you are: queries go to its server, which
    coordinates.  ``policies`` maps a party name to its policy dict, e.g. ``{"emc":
    {"min_intersection": 20, "allow": {"*": ["COUNT", "AVG"]}}}``.  ``workdir`` is the
    directory of the parties' files: each party's DuckDB file ``<party>.duckdb``, its audit
    log ``<party>.audit.jsonl`` and its server log ``<party>.log``.  Given, it is created if
    missing and kept after ``close()`` (a later connection with the same ``workdir`` appends
    to the same audit logs); by default it is a new temporary directory, removed on
    ``close()``.  Either way ``Connection.workdir`` says where it is (None for ``mpcsql://``).
    """
    if dsn is not None:
        from engine.client.remote import RemoteServer, client_ssl, parse_dsn

        if (workdir is not None or policies is not None or transcript_dir is not None
                or paillier_pool or paillier_randomness != DEFAULT_PAILLIER_RANDOMNESS):
            raise InterfaceError("workdir, policies, transcript_dir, paillier_pool and "
                                 "paillier_randomness are for the embedded federation; a party "
                                 "server takes them from its party.toml")
        host, port, expect = parse_dsn(dsn)
        server = RemoteServer(host, port, tls=client_ssl(tls), expect_party=expect,
                              timeout=connect_timeout)
        con = Connection(server, server.party)
        con.query_timeout = max(con.query_timeout, query_timeout)
        return con
    if tls is not None:
        raise NotSupportedError("tls= applies to mpcsql:// connections; the embedded "
                                "federation makes its own credentials at every start")
    fed = LocalFederation(workdir, policies=policies, key_bits=key_bits,
                          query_timeout=query_timeout, transcript_dir=transcript_dir,
                          paillier_pool=paillier_pool, paillier_randomness=paillier_randomness)
    con = Connection(fed, party)
    con.query_timeout = max(con.query_timeout, query_timeout)  # the client waits as long
    return con


class Connection:
    """A session with the federation, as an analyst of ``party``."""

    def __init__(self, federation: LocalFederation, party: str):
        self.federation = federation
        self.party = party
        self.query_timeout = 3600.0
        #: parties that receive query results (None: every data party); each party's
        #: ``receivers`` policy rule must allow all of them
        self.receivers: list[str] | None = None
        #: seconds between two progress requests while a query with ``on_progress`` runs
        self.progress_interval = 0.5
        self._closed = False
        if party not in federation.addresses:
            federation.stop()
            raise ProgrammingError(f"unknown party {party!r}")

    # --- PEP 249 --------------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.federation.stop()

    def commit(self) -> None:
        self._check()

    def rollback(self) -> None:
        raise NotSupportedError("mpcsql is read-only: there is nothing to roll back")

    def cursor(self) -> Cursor:
        self._check()
        return Cursor(self)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- extensions -----------------------------------------------------------------------

    def execute(self, sql: str, parameters: Sequence[Any] | None = None, *,
                on_progress: Callable[[Progress], None] | None = None) -> Cursor:
        """Shortcut: a new cursor that has executed ``sql`` (see :meth:`Cursor.execute`)."""
        return self.cursor().execute(sql, parameters, on_progress=on_progress)

    @property
    def workdir(self) -> str | None:
        """The embedded parties' directory (DuckDB files, ``<party>.audit.jsonl`` audit logs,
        ``<party>.log`` server logs); None for a ``mpcsql://`` connection."""
        return None if self.remote else self.federation.workdir

    @property
    def remote(self) -> bool:
        """Whether this connection talks to a party server over the network (``mpcsql://``)."""
        from engine.client.remote import RemoteServer

        return isinstance(self.federation, RemoteServer)

    def register(self, name: str, source: Any, *, party: str, key: str | None = None,
                 table: str | None = None, bounds: dict[str, float] | None = None,
                 domains: dict[str, Any] | None = None,
                 not_null: list[str] | None = None) -> None:
        """Load ``source`` into ``party``'s own DuckDB file as table ``name`` with join ``key``.

        ``source`` is a pandas DataFrame, a DuckDB relation, or a path to a CSV, Parquet or
        DuckDB file (``table=`` names the table inside a DuckDB file).  The data goes only to
        the owning party's server.  ``bounds`` declares public magnitude bounds per column
        (|x| <= bound); undeclared numeric columns are declared as the smallest power of two
        above their largest magnitude.  Model aggregates use these public scales.

        ``domains`` declares the public domain of columns, needed to GROUP BY them: per column
        a list of categories (strings, integers or booleans, e.g. ``{"region": ["northeast",
        "northwest", "southeast", "southwest"]}``) or an integer range, both ends included,
        written ``{"min": 0, "max": 5}`` or ``range(0, 6)``.  At most 256 values; every
        non-NULL value of the column must be in its domain (checked now and at every query).

        ``not_null`` declares columns NOT NULL (a constraint of the party's DuckDB table, public
        in the catalog, refused if a column holds a NULL): no secret validity bit is then
        computed for them, which makes WHERE, GROUP BY and models over them cheaper.
        """
        self._check()
        if self.remote:
            raise NotSupportedError(
                "register() is for the embedded federation; a party server exposes the tables "
                "listed in its party.toml (its administrator loads them into its DuckDB file)")
        blob = None
        if isinstance(source, (str, os.PathLike)):  # read here: the server opens no path
            blob, fmt = read_source(os.path.abspath(os.fspath(source)), table)
            msg = messages.Register(table=name, key=key, bounds=bounds, format=fmt,
                                    source_table=table, domains=_domains(name, domains),
                                    not_null=list(not_null) if not_null else None)
        else:
            msg = messages.Register(table=name, key=key, bounds=bounds,
                                    domains=_domains(name, domains),
                                    not_null=list(not_null) if not_null else None)
            blob = _to_parquet(source)
        self._request(party, msg, blob)

    def tables(self) -> list[dict[str, Any]]:
        """Schemas of every party's registered tables (names, owner, key, column types)."""
        self._check()
        if self.remote:
            return self._request(self.party, messages.Tables(), timeout=60)["tables"]
        out = []
        for name in self.federation.addresses:
            out.extend(self._request(name, messages.CatalogRequest())["tables"])
        return out

    def explain(self, sql: str) -> Explanation:
        """The secure plan for ``sql``, what each party would learn, and each party's rules.

        The text is an :class:`~engine.client.notebook.Explanation`, a ``str`` that renders
        as a table in Jupyter (``.plan``, ``.learns``, ``.checks`` give its parts)."""
        self._check()
        req = messages.Explain(sql=sql, receivers=self.receivers)
        return Explanation(self._request(self.party, req)["text"])

    def queries(self) -> list[dict[str, Any]]:
        """Recent queries at this connection's party, oldest first.

        Each is a dict with ``query_id``, ``state`` (queued, running, done, failed, cancelled),
        ``role`` (coordinator or participant), ``analyst``, ``coordinator``, ``sql``,
        ``submitted``/``started``/``finished`` (UTC ISO times) and ``error``.
        """
        self._check()
        return self._request(self.party, messages.Status(), timeout=30)["queries"]

    def paillier_pool(self) -> dict[str, Any] | None:
        """This connection's party's precomputed Paillier randomisers (None when off).

        ``target`` per key; ``keys``: each key's id, owner and ``ready`` count; ``made``,
        ``discarded``, and the background work so far (``fill_seconds`` wall, ``cpu_seconds``).
        """
        self._check()
        return self._request(self.party, messages.Status(), timeout=30).get("paillier_pool")

    def cancel(self, query_id: str) -> str:
        """Cancel a queued or running query of yours; returns the state it was in.

        A running query is aborted at every party; its analyst gets an OperationalError.
        """
        self._check()
        return self._request(self.party, messages.Cancel(query_id=query_id),
                             timeout=60)["was"]

    def _check(self) -> None:
        if self._closed:
            raise InterfaceError("connection is closed")

    def _request(self, party: str, req: messages.Request, blob: bytes | None = None,
                 timeout: float | None = 120.0) -> dict[str, Any]:
        if party not in self.federation.addresses:
            raise ProgrammingError(f"unknown party {party!r}; parties: "
                                   + ", ".join(self.federation.addresses))
        # the embedded federation shows its owner as local:<user>
        msg = dataclasses.replace(req, user=_os_user()).to_wire()
        if self.remote:
            return self.federation.request(msg, blob, timeout)
        host, port = self.federation.addresses[party]
        return wire.call(host, port, msg, blob, party=party, timeout=timeout,
                         ssl_context=self.federation.ssl_context_for(party))

    def _client(self, party: str) -> wire.BlockingClient:
        """A connection to ``party``'s server for one long request (the caller closes it)."""
        if self.remote:
            s = self.federation
            return wire.BlockingClient(s.host, s.port, party=s.party, timeout=s.timeout,
                                       ssl_context=s.ssl)
        host, port = self.federation.addresses[party]
        return wire.BlockingClient(host, port, party=party,
                                   ssl_context=self.federation.ssl_context_for(party))


def _domains(table: str, domains: dict[str, Any] | None) -> dict[str, Any] | None:
    """Declared domains in their JSON form (a ``range`` becomes ``{"min", "max"}``)."""
    if domains is None:
        return None
    if not isinstance(domains, dict):
        raise ProgrammingError("domains must map column names to domains")
    from planner.domains import normalize

    return {str(c): normalize(v, f"{table}.{c}") for c, v in domains.items()}


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _to_parquet(source: Any) -> bytes:
    import duckdb

    fd, path = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    try:
        if isinstance(source, duckdb.DuckDBPyRelation):
            source.write_parquet(path)
        else:
            try:
                import pandas as pd
            except ImportError as e:  # pragma: no cover
                raise InterfaceError("registering a DataFrame needs pandas") from e
            if not isinstance(source, pd.DataFrame):
                raise ProgrammingError(
                    "register() takes a pandas DataFrame, a DuckDB relation or a file path, "
                    f"not {type(source).__name__}")
            con = duckdb.connect()
            con.register("_src", source)
            con.execute(f"COPY (SELECT * FROM _src) TO '{path}' (FORMAT parquet)")
            con.close()
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


class Cursor:
    """A PEP 249 cursor; results arrive whole (aggregates are small)."""

    arraysize = 1

    def __init__(self, connection: Connection):
        self.connection = connection
        self.description: list[tuple] | None = None
        self.rowcount = -1
        self.stats: dict[str, Any] | None = None
        self.query_id: str | None = None  # id of the last query executed (set when it starts)
        self._progress: Progress | None = None
        self._running = False
        self._polled = 0.0
        self._sent_at = 0.0
        self._rows: list[tuple] = []
        self._pos = 0
        self._closed = False

    def execute(self, sql: str, parameters: Sequence[Any] | None = None, *,
                on_progress: Callable[[Progress], None] | None = None) -> Cursor:
        """Run ``sql`` securely across the parties; results are fetched from this cursor.

        ``on_progress`` (extension): called in this thread with a
        :class:`~engine.client.progress.Progress` about twice a second while the query runs
        (``Connection.progress_interval``), and once more with phase ``"done"`` when it has
        succeeded.  If it raises, the query is cancelled at every party and the exception
        propagates.  Without it, :attr:`progress` can be read from another thread.
        """
        self._check()
        if parameters:
            from dialect import bind_parameters

            sql = bind_parameters(sql, parameters)
        con = self.connection
        self.query_id = new_query_id()
        self._sent_at = time.monotonic()
        query = messages.Query(sql=sql, query_id=self.query_id, receivers=con.receivers)
        self._progress, self._running = None, True
        try:
            if on_progress is None:
                reply = con._request(con.party, query, timeout=con.query_timeout)
            else:
                reply = self._watched(query, on_progress)
        finally:
            self._running = False
        self._progress = Progress("done", state="done", party=con.party, query_id=self.query_id,
                                  elapsed=round(time.monotonic() - self._sent_at, 3))
        if on_progress is not None:
            on_progress(self._progress)
        self.description = [(n, t, None, None, None, None, True) for n, t in reply["columns"]]
        self._rows = [tuple(r) for r in reply["rows"]]
        self._pos = 0
        self.rowcount = len(self._rows)
        self.stats = reply.get("stats")
        return self

    @property
    def progress(self) -> Progress | None:
        """The running query's progress at your party (extension; read it from another thread
        while :meth:`execute` runs, or use its ``on_progress``), asked of your party's server
        at most every 0.2 s; after the query, its last progress (phase ``"done"`` on
        success); None before the server has seen the query."""
        if self._running and time.monotonic() - self._polled >= 0.2:
            self._poll()
        return self._progress

    def _poll(self) -> Progress | None:
        """Ask the analyst's party server for this cursor's query progress (None: not there
        yet, or the server cannot say); never raises."""
        self._polled = time.monotonic()
        con = self.connection
        try:
            reply = con._request(con.party, messages.QueryProgress(query_id=self.query_id),
                                 timeout=10)
        except Error:  # not registered yet (the query is on its way), or an older server
            return None
        p = Progress.from_reply(reply)
        if self._running:  # never overwrite the final progress of a finished query
            self._progress = p
        return p

    def _watched(self, query: messages.Query, on_progress: Callable[[Progress], None]
                 ) -> dict[str, Any]:
        """Send ``query`` from a worker thread; meanwhile poll its progress here and call
        ``on_progress``.  Anything raised here (the callback, KeyboardInterrupt) hangs up the
        query's connection, which cancels the query at every party."""
        con = self.connection
        client = con._client(con.party)
        msg = dataclasses.replace(query, user=_os_user()).to_wire()
        box: dict[str, Any] = {}
        finished = threading.Event()

        def work() -> None:
            try:
                box["reply"], _ = client.request(msg, timeout=con.query_timeout)
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
                box["error"] = e
            finally:
                finished.set()

        threading.Thread(target=work, name=f"mpcsql-query-{self.query_id}", daemon=True).start()
        try:
            while not finished.wait(con.progress_interval):
                p = self._poll()
                if p is not None and not finished.is_set():
                    on_progress(p)
        except BaseException:
            try:
                client.sock.shutdown(socket.SHUT_RDWR)  # the server cancels the query
            except OSError:
                pass
            finished.wait(10)
            raise
        finally:
            if finished.is_set():
                client.close()
        if "error" in box:
            raise box["error"]
        reply = box["reply"]
        if not reply.get("ok"):
            raise error_from_dict(reply["error"])
        return reply

    def executemany(self, sql: str, seq_of_parameters) -> None:
        raise NotSupportedError("executemany is not supported: queries are read-only aggregates")

    def fetchone(self) -> tuple | None:
        self._check_result()
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchmany(self, size: int | None = None) -> list[tuple]:
        self._check_result()
        size = self.arraysize if size is None else size
        out = self._rows[self._pos:self._pos + size]
        self._pos += len(out)
        return out

    def fetchall(self) -> list[tuple]:
        self._check_result()
        out = self._rows[self._pos:]
        self._pos = len(self._rows)
        return out

    def df(self):
        """The result as a pandas DataFrame."""
        import pandas as pd

        self._check_result()
        return pd.DataFrame(self.fetchall(), columns=[d[0] for d in self.description])

    def fetch_arrow_table(self):
        """The remaining rows as a ``pyarrow.Table`` (like ``df()``, it fetches them), each
        column typed by its SQL type: BIGINT int64, DOUBLE float64, VARCHAR string, HUGEINT
        decimal128(38, 0) as in DuckDB; NULLs are Arrow nulls.  Needs pyarrow (``[arrow]``)."""
        self._check_result()
        return arrow_table([d[0] for d in self.description],
                           [d[1] for d in self.description], self.fetchall())

    def _repr_html_(self) -> str | None:
        """Jupyter: the last result as an HTML table (every row, fetched or not)."""
        if self.description is None:
            return None
        return html_table([d[0] for d in self.description], self._rows,
                          types=[d[1] for d in self.description],
                          caption=result_footer(len(self._rows)))

    def _repr_markdown_(self) -> str | None:
        """The last result as a Markdown table (every row, fetched or not)."""
        if self.description is None:
            return None
        return (markdown_table([d[0] for d in self.description], self._rows,
                               types=[d[1] for d in self.description])
                + "\n\n" + result_footer(len(self._rows)))

    def cancel(self) -> None:
        """Cancel this cursor's running query (call from another thread)."""
        if self.query_id is None:
            raise ProgrammingError("no query has been executed on this cursor")
        while True:
            try:
                self.connection.cancel(self.query_id)
                return
            except ProgrammingError as e:
                # execute() may have sent the query a moment ago: give the server time to see it
                if "no query" not in e.message or time.monotonic() > self._sent_at + 5:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self._closed = True

    def setinputsizes(self, sizes) -> None:
        pass

    def setoutputsize(self, size, column=None) -> None:
        pass

    def __iter__(self):
        while (row := self.fetchone()) is not None:
            yield row

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self) -> None:
        if self._closed:
            raise InterfaceError("cursor is closed")
        self.connection._check()

    def _check_result(self) -> None:
        self._check()
        if self.description is None:
            raise ProgrammingError("no query has been executed on this cursor")
