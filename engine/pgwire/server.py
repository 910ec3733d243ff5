"""The PostgreSQL endpoint: accepts PostgreSQL clients and serves each as its analyst.

Per client connection: TLS negotiation (``SSLRequest``, then the endpoint's certificate), the
startup message, authentication (:mod:`engine.pgwire.auth`), then a connection to the party
server **as that user's analyst** through the ordinary Python client
(``engine.connect("mpcsql://...", tls=analyst credentials)``), and the query loop: simple
queries and the extended protocol (Parse/Bind/Describe/Execute/Sync, which psycopg and JDBC
use).  Messages are encoded and decoded by ``pygwire``; this module decides what to answer.

The endpoint is a client of its own party: it sees what the analyst sees (results, errors,
the catalog), never another party's data or any secret share.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pygwire import BackendConnection
from pygwire import messages as m
from pygwire.constants import TransactionStatus

from dialect import SETTINGS, sql_literal
from dialect.errors import (
    Error,
    InternalError,
    NotSupportedError,
    ProgrammingError,
)
from engine.control import wire
from engine.deploy.config import PgConfig, PgUser
from engine.pgwire import auth, sqlstate
from engine.pgwire import types as pgt
from engine.pgwire.catalog import SERVER_VERSION, Catalog
from engine.pgwire.statements import Command, bind, command, route, split

log = logging.getLogger("mpcsql.pgwire")

#: Largest startup packet and, before authentication, largest message read.
MAX_STARTUP = 10_000
#: Largest message read from an authenticated client (SQL up to 100,000 characters + params).
MAX_MESSAGE = 1 << 20
#: Seconds a client has to complete TLS, startup and authentication.
AUTH_SECONDS = 30.0

_SSL_REQUEST, _GSS_REQUEST, _CANCEL = 80877103, 80877104, 80877102
_REPORTED = ("server_version", "server_encoding", "client_encoding", "application_name",
             "DateStyle", "IntervalStyle", "TimeZone", "integer_datetimes",
             "standard_conforming_strings", "is_superuser", "session_authorization",
             "default_transaction_read_only", "in_hot_standby", "search_path")


def default_settings(user: str, application: str) -> dict[str, str]:
    s = {
        "server_version": SERVER_VERSION, "server_version_num": "150000",
        "server_encoding": "UTF8", "client_encoding": "UTF8",
        "application_name": application, "DateStyle": "ISO, MDY",
        "IntervalStyle": "postgres", "TimeZone": "UTC", "integer_datetimes": "on",
        "standard_conforming_strings": "on", "is_superuser": "off",
        "session_authorization": user, "default_transaction_read_only": "on",
        "transaction_read_only": "on", "in_hot_standby": "off",
        "search_path": '"$user", public', "default_transaction_isolation": "read committed",
        "transaction_isolation": "read committed", "max_identifier_length": "63",
        "extra_float_digits": "1", "lc_messages": "C", "lc_monetary": "C",
        "lc_numeric": "C", "lc_time": "C", "lc_collate": "C", "lc_ctype": "C",
        "statement_timeout": "0", "lock_timeout": "0",
        "idle_in_transaction_session_timeout": "0", "bytea_output": "hex",
        "max_connections": "100", "block_size": "8192", "ssl": "on",
    }
    for name, values in SETTINGS.items():
        s[name] = values[0]
    return s


class _Closed(Exception):
    """The client went away (or must be disconnected)."""


class AuthFailed(Error):
    """A client could not be authenticated (the reason goes to the endpoint's log)."""

    def __init__(self, message: str, code: str = sqlstate.INVALID_PASSWORD):
        super().__init__(message)
        self.code = code


@dataclass
class Result:
    """What one statement answers: columns (empty: a command), rows and the command tag."""

    columns: list[tuple[str, pgt.PgType]] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    tag: str = "SELECT 0"
    pos: int = 0  # rows already sent (an Execute with a row limit continues from here)


@dataclass
class _Statement:
    sql: str
    param_oids: list[int]
    result: Result | None = None  # run by Describe (no parameters), used by Execute


@dataclass
class _Portal:
    statement: _Statement
    params: list[Any]
    formats: list[int]
    result: Result | None = None


class Endpoint:
    """``mpcsql serve-pg``: a PostgreSQL server in front of one party's server.

    ``connect(user)`` makes the upstream connection for a user (default: ``engine.connect``
    to ``config.server`` with the user's analyst certificate); tests and the embedded demo
    pass the same through the config.
    """

    def __init__(self, config: PgConfig, connect: Callable[[PgUser], Any] | None = None):
        self.cfg = config
        self._connect = connect or self._remote
        self.ssl_ctx = _server_ssl(config) if config.tls else None
        self.cert_der = None
        if config.tls:
            from cryptography.hazmat.primitives.serialization import Encoding

            from engine.deploy.certs import load_cert

            self.cert_der = load_cert(config.tls.cert).public_bytes(Encoding.DER)
        self.sessions: dict[int, Session] = {}
        self.server: asyncio.base_events.Server | None = None
        self.started = dt.datetime.now(dt.UTC).isoformat()
        self._dummy = auth.scram_verifier(secrets.token_hex(16))  # unknown users fail alike

    def _remote(self, user: PgUser):
        import engine

        host, port = self.cfg.server
        dsn = f"mpcsql://{host}:{port}" + (f"?party={self.cfg.party}" if self.cfg.party else "")
        con = engine.connect(dsn, tls={"ca": self.cfg.server_ca, "cert": user.analyst_cert,
                                       "key": user.analyst_key},
                             query_timeout=self.cfg.query_timeout)
        return con

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound (host, port)."""
        self.server = await asyncio.start_server(self._client, self.cfg.host, self.cfg.port)
        host, port = self.server.sockets[0].getsockname()[:2]
        log.info("PostgreSQL endpoint listening on %s:%d for %s:%d", host, port,
                 *self.cfg.server)
        return host, port

    async def serve_forever(self) -> None:
        if self.server is None:
            await self.start()
        async with self.server:
            await self.server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        if len(self.sessions) >= self.cfg.max_connections:
            writer.write(_error_bytes("FATAL", sqlstate.TOO_MANY_CONNECTIONS,
                                      "sorry, too many clients already"))
            writer.close()
            return
        s = Session(self, reader, writer)
        try:
            await s.run()
        except Exception:  # noqa: BLE001 - one client never takes the endpoint down
            log.exception("session %d failed", s.pid)
        finally:
            s.close()

    def cancel(self, pid: int, key: bytes) -> None:
        s = self.sessions.get(pid)
        if s is not None and secrets.compare_digest(s.key, key):
            s.cancel()


def _server_ssl(cfg: PgConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.load_cert_chain(cfg.tls.cert, keyfile=cfg.tls.key)
    ctx.load_verify_locations(cafile=cfg.tls.ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # a certificate if the client has one (client_cert)
    return ctx


def _error_bytes(severity: str, code: str, message: str, **extra: str) -> bytes:
    fields = {"S": severity, "V": severity, "C": code, "M": message, **extra}
    return m.ErrorResponse(fields=fields).to_wire()


class Session:
    """One PostgreSQL client connection."""

    def __init__(self, endpoint: Endpoint, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.ep = endpoint
        self.reader, self.writer = reader, writer
        self.conn = BackendConnection(strict=False)
        self.pid = secrets.randbelow(1 << 30) + 1
        self.key = secrets.token_bytes(4)  # the cancel key (protocol 3.0: 4 bytes)
        self.tls = False
        self.user: PgUser | None = None
        self.upstream: Any = None
        self.catalog: Catalog | None = None
        self.settings: dict[str, str] = {}
        self.statements: dict[str, _Statement] = {}
        self.portals: dict[str, _Portal] = {}
        self.txn = TransactionStatus.IDLE
        self.cursor: Any = None  # the running upstream query's cursor (for CancelRequest)
        self.peer = writer.get_extra_info("peername")

    # --- I/O -------------------------------------------------------------------------------

    def send(self, msg: m.PGMessage) -> None:
        self.writer.write(self.conn.send(msg))

    async def flush(self) -> None:
        await self.writer.drain()

    async def _read_exactly(self, n: int) -> bytes:
        try:
            return await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError):
            raise _Closed() from None

    async def _startup_frame(self) -> bytes:
        head = await self._read_exactly(4)
        (n,) = struct.unpack("!I", head)
        if not 8 <= n <= MAX_STARTUP:
            raise _Closed()
        return head + await self._read_exactly(n - 4)

    async def _frame(self, limit: int) -> list[m.PGMessage]:
        head = await self._read_exactly(5)
        (n,) = struct.unpack("!I", head[1:])
        if n < 4 or n > limit:
            self.writer.write(_error_bytes("FATAL", sqlstate.PROTOCOL_VIOLATION,
                                           f"message of {n} bytes is over the limit of "
                                           f"{limit} bytes"))
            await _drain(self.writer)
            await wire.drain_unread(self.reader)
            raise _Closed()
        return list(self.conn.receive(head + await self._read_exactly(n - 4)))

    def close(self) -> None:
        self.ep.sessions.pop(self.pid, None)
        if self.catalog is not None:
            self.catalog.close()
            self.catalog = None
        if self.upstream is not None:
            try:
                self.upstream.close()
            except Exception:  # noqa: BLE001
                pass
            self.upstream = None
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001
            pass

    def cancel(self) -> None:
        cur = self.cursor
        if cur is not None and cur.query_id:
            asyncio.get_running_loop().run_in_executor(None, _quiet(cur.cancel))

    # --- start-up and authentication -----------------------------------------------------------

    async def run(self) -> None:
        try:
            params = await asyncio.wait_for(self._startup(), AUTH_SECONDS)
            if params is None:
                return
            await asyncio.wait_for(self._authenticate(params), AUTH_SECONDS)
        except (_Closed, TimeoutError, ssl.SSLError, ConnectionError) as e:
            log.info("client %s: closed during start-up (%s)", self.peer, type(e).__name__)
            return
        except AuthFailed as e:
            log.warning("client %s: %s", self.peer, e.message)
            self.writer.write(_error_bytes("FATAL", e.code, e.message))
            await _drain(self.writer)
            return
        try:
            try:
                await self._ready(params)
            except (Error, OSError):
                raise
            except Exception as e:  # noqa: BLE001 - the traceback stays in this log
                log.exception("session set-up failed")
                raise InternalError(f"session set-up failed ({type(e).__name__}; details in "
                                    "the endpoint's log)") from None
        except Error as e:
            log.warning("client %s: upstream connection failed: %s", self.peer, e)
            self.writer.write(_error_bytes(
                "FATAL", sqlstate.CONNECTION_FAILURE,
                f"the endpoint cannot reach its party server as {self.user.analyst}: {e}"))
            await _drain(self.writer)
            return
        try:
            await self._loop()
        except (_Closed, ConnectionError, ssl.SSLError):
            return

    async def _startup(self) -> dict[str, str] | None:
        while True:
            frame = await self._startup_frame()
            (code,) = struct.unpack("!I", frame[4:8])
            if code == _SSL_REQUEST:
                list(self.conn.receive(frame))
                if self.ep.ssl_ctx is None or self.tls:
                    self.send(m.SSLResponse(accepted=False))
                    await self.flush()
                    continue
                self.send(m.SSLResponse(accepted=True))
                await self.flush()
                await self.writer.start_tls(self.ep.ssl_ctx)
                self.tls = True
                continue
            if code == _GSS_REQUEST:
                self.writer.write(b"N")
                await self.flush()
                continue
            if code == _CANCEL:
                (pid,) = struct.unpack("!I", frame[8:12])
                self.ep.cancel(pid, bytes(frame[12:16]))
                return None
            if code >> 16 != 3:
                self.writer.write(_error_bytes("FATAL", sqlstate.PROTOCOL_VIOLATION,
                                               f"unsupported frontend protocol {code >> 16}."
                                               f"{code & 0xFFFF}"))
                return None
            msgs = list(self.conn.receive(frame))
            startup = next((x for x in msgs if isinstance(x, m.StartupMessage)), None)
            if startup is None:
                raise _Closed()
            return dict(startup.params)

    async def _authenticate(self, params: dict[str, str]) -> None:
        name = params.get("user", "")
        if self.ep.cfg.require_tls and not self.tls:
            raise AuthFailed(f"the endpoint accepts only TLS connections (user {name!r}); "
                             "connect with sslmode=require or stronger",
                             sqlstate.INVALID_AUTHORIZATION)
        user = self.ep.cfg.users.get(name)
        verifier = user.password if user else self.ep._dummy
        if user is not None and user.client_cert is not None:
            der = self.writer.get_extra_info("ssl_object")
            der = der.getpeercert(binary_form=True) if der is not None else None
            if der is None:
                raise AuthFailed(f'connection requires a valid client certificate for user '
                                 f'"{name}"', sqlstate.INVALID_AUTHORIZATION)
            from engine.deploy.certs import CertError, identity_of_der

            try:
                ident = identity_of_der(der)
            except (CertError, ValueError) as e:
                raise AuthFailed(f'certificate authentication failed for user "{name}": {e}',
                                 sqlstate.INVALID_AUTHORIZATION) from None
            if ident.name != user.client_cert:
                raise AuthFailed(f'certificate authentication failed for user "{name}": the '
                                 f'certificate names {ident.name}, not {user.client_cert}',
                                 sqlstate.INVALID_AUTHORIZATION)
        if verifier is not None:
            if auth.method(verifier) == "md5":
                await self._md5(name, verifier)
            else:
                await self._scram(name, verifier)
        if user is None:  # only reached with a dummy verifier that cannot succeed
            raise AuthFailed(f'password authentication failed for user "{name}"')
        self.user = user
        self.send(m.AuthenticationOk())

    async def _md5(self, name: str, verifier: str) -> None:
        salt = secrets.token_bytes(4)
        self.send(m.AuthenticationMD5Password(salt=salt))
        await self.flush()
        msgs = await self._frame(MAX_STARTUP)
        pw = next((x for x in msgs if isinstance(x, m.PasswordMessage)), None)
        resp = pw.password if pw else ""
        if not isinstance(resp, str) or not auth.md5_response_ok(verifier, salt, resp):
            raise AuthFailed(f'password authentication failed for user "{name}"')

    async def _scram(self, name: str, verifier: str) -> None:
        mechs = auth.mechanisms(self.tls)
        self.send(m.AuthenticationSASL(mechanisms=mechs))
        await self.flush()
        first = next((x for x in await self._frame(MAX_STARTUP)
                      if isinstance(x, m.SASLInitialResponse)), None)
        if first is None or first.mechanism not in mechs:
            raise AuthFailed(f'password authentication failed for user "{name}": unsupported '
                             'SASL mechanism')
        try:
            ex = auth.ScramExchange(verifier, first.mechanism,
                                    self.ep.cert_der if self.tls else None)
            self.send(m.AuthenticationSASLContinue(data=ex.first(first.data)))
            await self.flush()
            final = next((x for x in await self._frame(MAX_STARTUP)
                          if isinstance(x, m.SASLResponse)), None)
            if final is None:
                raise _Closed()
            self.send(m.AuthenticationSASLFinal(data=ex.final(final.data)))
        except (auth.ScramError, UnicodeDecodeError) as e:
            raise AuthFailed(f'password authentication failed for user "{name}" '
                             f'({e})') from None

    async def _ready(self, params: dict[str, str]) -> None:
        user = self.user
        self.upstream = await asyncio.to_thread(self.ep._connect, user)
        tables = await asyncio.to_thread(self.upstream.tables)
        self.settings = default_settings(user.name, params.get("application_name", ""))
        for k, v in params.items():  # options the client set at start-up
            if k not in ("user", "database", "options", "replication"):
                self._set(k, v, quiet=True)
        database = params.get("database") or user.name
        self.catalog = await asyncio.to_thread(
            Catalog, tables, user=user.name, database=database, settings=self.settings,
            pid=self.pid, started=self.ep.started)
        self.ep.sessions[self.pid] = self
        for k in _REPORTED:
            self.send(m.ParameterStatus(name=k, value=self.settings.get(k, "")))
        self.send(m.BackendKeyData(process_id=self.pid, secret_key=self.key))
        self.send(m.ReadyForQuery(status=self.txn))
        await self.flush()
        log.info("client %s: %s logged in as analyst %s (%s)", self.peer, user.name,
                 user.analyst, "TLS" if self.tls else "no TLS")

    # --- the query loop ------------------------------------------------------------------

    async def _loop(self) -> None:
        skipping = False  # after an error in the extended protocol: until Sync
        while True:
            for msg in await self._frame(MAX_MESSAGE):
                if isinstance(msg, m.Terminate):
                    return
                if isinstance(msg, m.Query):
                    await self._simple(msg.query_string)
                    self.send(m.ReadyForQuery(status=self.txn))
                    await self.flush()
                    continue
                if isinstance(msg, m.Sync):
                    skipping = False
                    self.send(m.ReadyForQuery(status=self.txn))
                    await self.flush()
                    continue
                if isinstance(msg, m.Flush):
                    await self.flush()
                    continue
                if skipping:
                    continue
                try:
                    await self._extended(msg)
                except Error as e:
                    self._error(e, getattr(msg, "query", ""))
                    skipping = True

    def _error(self, e: Error, sql: str = "") -> None:
        code = sqlstate.sqlstate(e)
        extra = {}
        pos = sqlstate.position(e, sql) if sql else None
        if pos:
            extra["P"] = str(pos)
        if getattr(e, "party", None):
            extra["D"] = f"raised by party {e.party}"
        self.send(m.ErrorResponse(fields={"S": "ERROR", "V": "ERROR", "C": code,
                                          "M": e.message, **extra}))
        if self.txn == TransactionStatus.IN_TRANSACTION:
            self.txn = TransactionStatus.ERROR_TRANSACTION

    async def _simple(self, sql: str) -> None:
        parts = split(sql)
        if not parts:
            self.send(m.EmptyQueryResponse())
            return
        for part in parts:
            try:
                res = await self._execute(part, [])
            except Error as e:
                self._error(e, part)
                return
            if res.columns:
                self.send(_row_description(res.columns, [0]))
                self._rows(res, [0], 0)
            self.send(m.CommandComplete(tag=res.tag))

    async def _extended(self, msg: m.PGMessage) -> None:
        if isinstance(msg, m.Parse):
            parts = split(msg.query)
            if len(parts) > 1:
                raise ProgrammingError("cannot insert multiple commands into a prepared "
                                       "statement")
            self.statements[msg.statement] = _Statement(parts[0] if parts else "",
                                                        list(msg.param_types))
            self.send(m.ParseComplete())
        elif isinstance(msg, m.Bind):
            stmt = self._statement(msg.statement)
            oids = stmt.param_oids + [0] * (len(msg.param_values) - len(stmt.param_oids))
            fmts = msg.param_formats or [0]
            fmts = fmts * len(msg.param_values) if len(fmts) == 1 else fmts
            try:
                params = [pgt.decode_param(v, o, f) for v, o, f in zip(
                    msg.param_values, oids, fmts, strict=True)]
            except (ValueError, UnicodeDecodeError, struct.error) as e:
                raise ProgrammingError(f"invalid parameter value: {e}") from None
            result = stmt.result if not msg.param_values else None
            stmt.result = None
            self.portals[msg.portal] = _Portal(stmt, params, list(msg.result_formats), result)
            self.send(m.BindComplete())
        elif isinstance(msg, m.Describe):
            if msg.kind == "S":
                stmt = self._statement(msg.name)
                self.send(m.ParameterDescription(type_oids=[o or pgt.TEXT.oid
                                                            for o in stmt.param_oids]))
                if stmt.param_oids:
                    res = await self._describe_only(stmt.sql, len(stmt.param_oids))
                else:
                    stmt.result = stmt.result or await self._execute(stmt.sql, [])
                    res = stmt.result
                self.send(_row_description(res.columns, [0]) if res.columns else m.NoData())
            else:
                portal = self._portal(msg.name)
                if portal.result is None:
                    portal.result = await self._execute(portal.statement.sql, portal.params)
                res = portal.result
                self.send(_row_description(res.columns, portal.formats) if res.columns
                          else m.NoData())
        elif isinstance(msg, m.Execute):
            portal = self._portal(msg.portal)
            if portal.result is None:
                portal.result = await self._execute(portal.statement.sql, portal.params)
            res = portal.result
            if not portal.statement.sql.strip():
                self.send(m.EmptyQueryResponse())
                return
            if res.columns:
                done = self._rows(res, portal.formats, msg.max_rows)
                if not done:
                    self.send(m.PortalSuspended())
                    return
            self.send(m.CommandComplete(tag=res.tag))
        elif isinstance(msg, m.Close):
            (self.statements if msg.kind == "S" else self.portals).pop(msg.name, None)
            self.send(m.CloseComplete())
        else:
            raise NotSupportedError(f"{type(msg).__name__} messages are not supported (mpcsql "
                                    "answers queries only: no COPY, no function calls)")

    def _statement(self, name: str) -> _Statement:
        try:
            return self.statements[name]
        except KeyError:
            raise ProgrammingError(f'prepared statement "{name}" does not exist') from None

    def _portal(self, name: str) -> _Portal:
        try:
            return self.portals[name]
        except KeyError:
            raise ProgrammingError(f'portal "{name}" does not exist') from None

    def _rows(self, res: Result, formats: list[int], limit: int) -> bool:
        """Send DataRows from ``res.pos``; True when all are sent."""
        fmts = formats or [0]
        if len(fmts) == 1:
            fmts = fmts * len(res.columns)
        end = len(res.rows) if limit <= 0 else min(len(res.rows), res.pos + limit)
        for row in res.rows[res.pos:end]:
            self.send(m.DataRow(columns=[pgt.encode(v, t, f) for v, (_, t), f in zip(
                row, res.columns, fmts, strict=True)]))
        res.pos = end
        return end >= len(res.rows)

    # --- executing one statement ----------------------------------------------------------

    async def _execute(self, sql: str, params: list[Any]) -> Result:
        if not sql.strip():
            return Result(tag="")
        cmd = command(sql)
        if cmd is not None:
            return self._command(cmd)
        if self.txn == TransactionStatus.ERROR_TRANSACTION:
            raise _InFailedTransaction("current transaction is aborted, commands ignored "
                                       "until end of transaction block")
        where = route(sql)
        if where == "catalog":
            cols, rows = await asyncio.to_thread(self.catalog.run, sql, params)
            return Result(cols, [tuple(r) for r in rows], f"SELECT {len(rows)}")
        return await self._party(sql, params)

    async def _describe_only(self, sql: str, nparams: int) -> Result:
        """Columns of a parameterised statement before it is bound (catalog queries only:
        a secure query's columns are known once it runs)."""
        if command(sql) is None and route(sql) == "catalog":
            cols, _ = await asyncio.to_thread(self.catalog.run, sql, [None] * nparams)
            return Result(cols)
        if command(sql) is not None:
            return Result()
        raise NotSupportedError("describing a secure query with parameters before binding "
                                "them is not supported; bind the parameters first (an "
                                "unnamed statement, or Describe the portal)")

    async def _party(self, sql: str, params: list[Any]) -> Result:
        text = bind(sql, params, _literal) if params else sql
        prefix = "".join(f"SET {k} = '{self.settings[k]}'; " for k, values in SETTINGS.items()
                         if self.settings.get(k, values[0]) != values[0])
        cur = self.upstream.cursor()
        self.cursor = cur
        try:
            await asyncio.to_thread(cur.execute, prefix + text)
        except Error:
            raise
        except Exception as e:  # noqa: BLE001 - a client bug, never the endpoint's end
            log.exception("query failed in the client library")
            raise InternalError(f"the query failed in the endpoint ({type(e).__name__}; "
                                "details in its log)") from None
        finally:
            self.cursor = None
        cols = [(d[0], pgt.pg_type(d[1])) for d in cur.description or []]
        rows = cur.fetchall()
        return Result(cols, rows, f"SELECT {len(rows)}")

    def _command(self, cmd: Command) -> Result:
        if cmd.kind == "set":
            self._set(cmd.name, cmd.value or "")
            return Result(tag="SET")
        if cmd.kind == "reset":
            defaults = default_settings(self.user.name, self.settings.get("application_name",
                                                                            ""))
            names = list(defaults) if cmd.name.upper() == "ALL" else [cmd.name]
            for n in names:
                key = self._key(n)
                if key in defaults:
                    self._set(key, defaults[key])
            return Result(tag="RESET")
        if cmd.kind == "show":
            if cmd.name.upper() == "ALL":
                rows = [(k, v, "") for k, v in sorted(self.settings.items())]
                return Result([("name", pgt.TEXT), ("setting", pgt.TEXT),
                               ("description", pgt.TEXT)], rows, "SHOW")
            key = self._key(cmd.name)
            if key not in self.settings:
                raise _UndefinedSetting(f'unrecognized configuration parameter "{cmd.name}"')
            return Result([(cmd.name.lower(), pgt.TEXT)], [(self.settings[key],)], "SHOW")
        if cmd.kind == "begin":
            self.txn = TransactionStatus.IN_TRANSACTION
            return Result(tag="BEGIN")
        if cmd.kind in ("commit", "rollback"):
            failed = self.txn == TransactionStatus.ERROR_TRANSACTION
            self.txn = TransactionStatus.IDLE
            return Result(tag="ROLLBACK" if failed or cmd.kind == "rollback" else "COMMIT")
        if cmd.kind == "discard":
            self.statements.clear()
            self.portals.clear()
            return Result(tag=f"DISCARD {cmd.name}")
        if cmd.kind == "deallocate":
            if cmd.name.upper() in ("", "ALL"):
                self.statements.clear()
            else:
                self.statements.pop(cmd.name, None)
            return Result(tag="DEALLOCATE")
        return Result(tag=cmd.name or "SET")

    def _key(self, name: str) -> str:
        low = name.lower()
        return next((k for k in self.settings if k.lower() == low), name)

    def _set(self, name: str, value: str, quiet: bool = False) -> None:
        key = self._key(name)
        if key.lower() in SETTINGS:
            allowed = SETTINGS[key.lower()]
            if value.lower() not in allowed:
                raise _InvalidValue(f"invalid value for parameter \"{name}\": \"{value}\"; "
                                    f"allowed: {', '.join(allowed)}")
            key, value = key.lower(), value.lower()
        if key == "client_encoding" and value.upper().replace("-", "") not in ("UTF8",
                                                                               "UNICODE"):
            raise _InvalidValue(f"the endpoint speaks UTF8 only, not client_encoding "
                                f"{value!r}")
        if key == "client_encoding":
            value = "UTF8"
        self.settings[key] = value
        if self.catalog is not None:
            self.catalog.set_settings(self.settings)
        if key in _REPORTED and not quiet:
            self.send(m.ParameterStatus(name=key, value=value))


class _InFailedTransaction(ProgrammingError):
    pass


class _UndefinedSetting(ProgrammingError):
    pass


class _InvalidValue(ProgrammingError):
    pass


sqlstate.EXTRA_CODES.update({_InFailedTransaction: "25P02", _UndefinedSetting: "42704",
                             _InvalidValue: sqlstate.INVALID_PARAMETER_VALUE,
                             AuthFailed: sqlstate.INVALID_PASSWORD})


def _literal(v: Any) -> str:
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return sql_literal(v)


def _row_description(cols: list[tuple[str, pgt.PgType]], formats: list[int]) -> m.RowDescription:
    fmts = formats or [0]
    if len(fmts) == 1:
        fmts = fmts * len(cols)
    return m.RowDescription(fields=[
        m.FieldDescription(name=n, table_oid=0, column_attr=0, type_oid=t.oid, type_size=t.size,
                           type_modifier=t.modifier, format_code=f)
        for (n, t), f in zip(cols, fmts, strict=True)])


def _quiet(fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a cancel that comes too late is no error
            log.info("cancel: %s", e)
    return run


async def _drain(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass


def serve(config: PgConfig, *, ready: Callable[[str, int], None] | None = None) -> None:
    """Run the endpoint until interrupted (``mpcsql serve-pg``)."""
    async def main() -> None:
        ep = Endpoint(config)
        host, port = await ep.start()
        if ready:
            ready(host, port)
        await ep.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


__all__ = ["Endpoint", "Session", "default_settings", "serve"]
