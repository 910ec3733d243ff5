"""Configuration of one party server: the dataclass, and loading it from ``party.toml``."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from dialect.errors import ConfigError, ProgrammingError
from engine.deploy.tls import TLSFiles

KEY_BITS = 2048  # Paillier modulus size used in production
#: Paillier randomness of a data party's keys (engine.protocols.paillier.RANDOMNESS): "djn"
#: publishes h with the key and uses h^a with a short secret a; "classic" uses r^n;
#: "subgroup" makes Paillier's subgroup-variant keys (h of secret order p'q', short decryption
#: exponents; an extra assumption: docs/protocols.md "Subgroup keys").
PAILLIER_RANDOMNESS = ("djn", "classic", "subgroup")
DEFAULT_PAILLIER_RANDOMNESS = "djn"


@dataclass
class PostgresSource:
    """Where a table's rows live in PostgreSQL (read at every query); never the password itself.

    ``dsn`` is a libpq connection string or ``postgresql://`` URI without a password; the
    password, if libpq's own means (``~/.pgpass``, ``passfile``) are not used, is the first line
    of ``password_file`` or the value of the environment variable ``password_env``, read at each
    connection and never shown.
    """

    dsn: str
    table: str | None = None  # "schema.table" (or "table", found on the search_path)
    query: str | None = None  # a SELECT (or WITH ... SELECT) instead of a table
    password_file: str | None = None  # absolute path
    password_env: str | None = None  # name of an environment variable

    def safe_dsn(self) -> str:
        """The DSN without any password (for start-up messages)."""
        return safe_dsn(self.dsn)


def safe_dsn(dsn: str) -> str:
    """``dsn`` with its password and sslpassword removed (a URI becomes key=value form)."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(dsn)
    except Exception:  # no psycopg, or not a DSN: show nothing of it
        return "<dsn not shown>"
    for secret in ("password", "sslpassword"):
        params.pop(secret, None)
    return make_conninfo(**params)


@dataclass
class ExposedTable:
    """A table that queries may use (only these columns): in the party's DuckDB file, or read
    from PostgreSQL at every query when ``postgres`` is set."""

    name: str
    key: str
    columns: list[str] | None = None  # None: every column
    bounds: dict[str, float] = field(default_factory=dict)
    #: public domains (planner.domains canonical form: categories, or {"min": a, "max": b})
    domains: dict[str, Any] = field(default_factory=dict)
    postgres: PostgresSource | None = None

    def __post_init__(self) -> None:
        if isinstance(self.postgres, dict):  # from PartyConfig.from_dict
            self.postgres = PostgresSource(**self.postgres)


@dataclass
class PartyConfig:
    """How one party server runs (from ``party.toml``, or built by the embedded federation)."""

    name: str
    role: str
    parties: list[tuple[str, str]]  # (name, role) in MPyC pid order
    database: str
    host: str = "127.0.0.1"
    port: int = 0
    peers: dict[str, tuple[str, int]] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    query_timeout: float = 600.0
    connect_timeout: float = 30.0
    peer_timeout: float = 60.0  # a peer must answer a control request (not a run) within this
    idle_timeout: float = 300.0  # a control connection silent this long is closed
    key_bits: int = KEY_BITS
    transcript_dir: str | None = None
    parent_pid: int | None = None
    tls: TLSFiles | None = None  # None: plain TCP (embedded federation on loopback)
    peer_certs: dict[str, str] = field(default_factory=dict)  # pinned peer certificates
    tables: list[ExposedTable] | None = None  # None: tables come from register() (embedded)
    audit_log: str | None = None
    session_ports: tuple[int, int] | None = None  # MPyC session ports (firewalls); None: any
    config_path: str | None = None
    paillier_pool: int = 0  # Paillier randomisers kept ready per key between queries; 0: off
    paillier_randomness: str = DEFAULT_PAILLIER_RANDOMNESS  # of this data party's keys
    #: the masked join's spill files ([storage]): under this directory (None: the system
    #: temporary directory), for tables of more than spill_rows rows
    spill_dir: str | None = None
    spill_rows: int = 1 << 23
    duckdb_memory_limit: str | None = "1GB"  # DuckDB's memory_limit while reading such a table

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartyConfig:
        d = dict(d)
        d["parties"] = [tuple(p) for p in d["parties"]]
        d["peers"] = {k: tuple(v) for k, v in d.get("peers", {}).items()}
        if d.get("tls"):
            d["tls"] = TLSFiles(**d["tls"])
        if d.get("session_ports"):
            d["session_ports"] = tuple(d["session_ports"])
        if d.get("tables") is not None:
            d["tables"] = [ExposedTable(**t) for t in d["tables"]]
        return cls(**d)


# --- party.toml ------------------------------------------------------------------------------

_SECTIONS: dict[str, set[str] | None] = {
    "party": {"name", "role"},
    "federation": {"parties", "helper"},
    "listen": {"host", "port", "session_ports"},
    "tls": {"ca", "cert", "key", "pin_peers"},
    "peers": None,
    "database": {"path"},
    "tables": None,
    "policy": None,  # checked by planner.policy.Policy
    "audit": {"path"},
    "timeouts": {"connect", "peer", "query", "idle"},
    "crypto": {"paillier_key_bits", "paillier_pool", "paillier_randomness"},
    "storage": {"spill_dir", "spill_rows", "duckdb_memory_limit"},
    "pg": None,  # the PostgreSQL endpoint's settings: load_pg_config (mpcsql serve-pg)
}


def _address(value: Any, where: str) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{where} must be 'host:port', not {value!r}")
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where} must be 'host:port' with a port in 1..65535, not {value!r}")
    return host, int(port)


def load_party_toml(path: str) -> PartyConfig:
    """Read and check a ``party.toml``; paths in it are relative to the file."""
    path = os.path.abspath(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    try:
        return _build(raw, os.path.dirname(path), path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.message}") from None


def _section(raw: dict[str, Any], name: str, required: bool = True) -> dict[str, Any]:
    sec = raw.get(name)
    if sec is None:
        if required:
            raise ConfigError(f"missing section [{name}]")
        return {}
    if not isinstance(sec, dict):
        raise ConfigError(f"[{name}] must be a table")
    allowed = _SECTIONS[name]
    if allowed is not None:
        unknown = set(sec) - allowed
        if unknown:
            raise ConfigError(f"unknown setting(s) in [{name}]: {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(allowed))}")
    return sec


def _get(sec: dict[str, Any], key: str, kind: type | tuple, where: str, default: Any = ...):
    if key not in sec:
        if default is ...:
            raise ConfigError(f"missing setting {where}.{key}")
        return default
    value = sec[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}.{key} has the wrong type ({type(value).__name__})")
    return value


def _build(raw: dict[str, Any], base: str, path: str) -> PartyConfig:
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))}; known: "
                          f"{', '.join(sorted(_SECTIONS))}")

    def rel(p: str) -> str:
        return os.path.normpath(os.path.join(base, os.path.expanduser(p)))

    party = _section(raw, "party")
    name = _get(party, "name", str, "party")
    role = _get(party, "role", str, "party")
    if role not in ("data", "helper"):
        raise ConfigError(f"party.role must be 'data' or 'helper', not {role!r}")

    fed = _section(raw, "federation")
    names = _get(fed, "parties", list, "federation")
    helper = _get(fed, "helper", str, "federation")
    if len(names) != 3 or len(set(names)) != 3 or not all(isinstance(n, str) for n in names):
        raise ConfigError("federation.parties must list three distinct party names")
    if name not in names or helper not in names:
        raise ConfigError(f"federation.parties {names} must include this party ({name!r}) "
                          f"and the helper ({helper!r})")
    if (name == helper) != (role == "helper"):
        raise ConfigError(f"party.role = {role!r} contradicts federation.helper = {helper!r}")
    parties = [(n, "helper" if n == helper else "data") for n in names]

    listen = _section(raw, "listen")
    host = _get(listen, "host", str, "listen", "127.0.0.1")
    port = _get(listen, "port", int, "listen")
    session_ports = _get(listen, "session_ports", list, "listen", None)
    if session_ports is not None:
        if (len(session_ports) != 2 or not all(isinstance(p, int) for p in session_ports)
                or not 0 < session_ports[0] <= session_ports[1] < 65536):
            raise ConfigError("listen.session_ports must be [first, last], a port range")
        session_ports = tuple(session_ports)

    tls_sec = _section(raw, "tls")
    tls = TLSFiles(*(rel(_get(tls_sec, k, str, "tls")) for k in ("ca", "cert", "key")))
    for what, p in (("tls.ca", tls.ca), ("tls.cert", tls.cert), ("tls.key", tls.key)):
        if not os.path.isfile(p):
            raise ConfigError(f"{what}: file not found: {p}")
    if os.stat(tls.key).st_mode & 0o077:
        raise ConfigError(f"tls.key: {tls.key} is readable by other users; chmod 600 it")
    # pinning is the default: each peer's exact certificate; opting out must be explicit
    pin_peers = _get(tls_sec, "pin_peers", bool, "tls", True)

    peers_sec = _section(raw, "peers")
    expected = set(names) - {name}
    if set(peers_sec) != expected:
        raise ConfigError(f"[peers] must have exactly one entry per other party "
                          f"({', '.join(sorted(expected))}); found "
                          f"{', '.join(sorted(peers_sec)) or 'none'}")
    peers, pins = {}, {}
    for peer, sec in peers_sec.items():
        where = f"peers.{peer}"
        if not isinstance(sec, dict) or set(sec) - {"address", "cert"}:
            raise ConfigError(f"[{where}] takes address = 'host:port' and optionally cert")
        peers[peer] = _address(_get(sec, "address", str, where), f"{where}.address")
        if "cert" in sec:
            pins[peer] = rel(_get(sec, "cert", str, where))
            if not os.path.isfile(pins[peer]):
                raise ConfigError(f"{where}.cert: file not found: {pins[peer]}")
        elif pin_peers:
            raise ConfigError(f"{where}.cert is missing: peer certificates are pinned by default "
                              f"(cert = \"certs/{peer}.crt\", {peer}'s certificate); to accept "
                              f"any {peer} certificate the CA signs, set [tls] pin_peers = false")

    tables = _tables(raw.get("tables", []), role, rel)
    # a party whose every table is in PostgreSQL needs no DuckDB file
    only_pg = bool(tables) and all(t.postgres is not None for t in tables)
    db = _section(raw, "database", required=role == "data" and not only_pg)
    database = rel(_get(db, "path", str, "database")) if db else ":memory:"

    policy = _section(raw, "policy", required=False)
    from planner.policy import Policy  # config -> planner is the allowed direction

    try:
        Policy.from_dict(name, policy)
    except ValueError as e:
        raise ConfigError(f"[policy]: {e}") from None

    audit = _section(raw, "audit", required=False)
    audit_log = rel(_get(audit, "path", str, "audit")) if "path" in audit else None
    if db:
        _not_writable_by_others("database.path", database)
    if audit_log:
        _not_writable_by_others("audit.path", audit_log)
    timeouts = _section(raw, "timeouts", required=False)
    crypto = _section(raw, "crypto", required=False)
    storage = _section(raw, "storage", required=False)
    spill_dir = rel(_get(storage, "spill_dir", str, "storage")) if "spill_dir" in storage \
        else None
    spill_rows = _get(storage, "spill_rows", int, "storage", 1 << 23)
    if spill_rows < 0:
        raise ConfigError("storage.spill_rows must be 0 (always spill) or a positive count")
    duckdb_memory = _get(storage, "duckdb_memory_limit", str, "storage", "1GB")
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", duckdb_memory.strip(), re.IGNORECASE):
        raise ConfigError("storage.duckdb_memory_limit must be a size such as '1GB' or '512MiB'")

    def seconds(key: str, default: float) -> float:
        v = float(_get(timeouts, key, (int, float), "timeouts", default))
        if v <= 0:
            raise ConfigError(f"timeouts.{key} must be positive")
        return v

    key_bits = _get(crypto, "paillier_key_bits", int, "crypto", KEY_BITS)
    if key_bits < 2048:
        raise ConfigError("crypto.paillier_key_bits must be at least 2048")
    pool = _get(crypto, "paillier_pool", int, "crypto", 0)
    if pool < 0:
        raise ConfigError("crypto.paillier_pool must be 0 (off) or a positive count")
    randomness = _get(crypto, "paillier_randomness", str, "crypto", DEFAULT_PAILLIER_RANDOMNESS)
    check_randomness(randomness, "crypto.paillier_randomness")
    return PartyConfig(
        name=name, role=role, parties=parties, database=database, host=host, port=port,
        peers=peers, policy=dict(policy), query_timeout=seconds("query", 600.0),
        connect_timeout=seconds("connect", 10.0), peer_timeout=seconds("peer", 60.0),
        idle_timeout=seconds("idle", 300.0),
        key_bits=key_bits, tls=tls, peer_certs=pins, tables=tables,
        audit_log=audit_log,
        session_ports=session_ports, config_path=path, paillier_pool=pool,
        paillier_randomness=randomness, spill_dir=spill_dir, spill_rows=spill_rows,
        duckdb_memory_limit=duckdb_memory,
    )


def _not_writable_by_others(what: str, path: str) -> None:
    """Refuse a data file (or, not created yet, its directory) that other users can write."""
    target = path if os.path.exists(path) else os.path.dirname(path) or "."
    try:
        st = os.stat(target)
    except OSError:
        return  # a missing directory is reported when the file is opened
    kind = "" if target == path else f"the directory of {path}, "
    if st.st_mode & 0o022:
        raise ConfigError(f"{what}: {kind}{target} can be written by other users (mode "
                          f"{st.st_mode & 0o777:o}); chmod go-w it")
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(f"{what}: {kind}{target} belongs to another user (uid {st.st_uid}), "
                          "who can make it writable; chown it to the server's user")


def _tables(raw: Any, role: str, rel: Any = os.path.abspath) -> list[ExposedTable]:
    """``[[tables]]``; ``rel`` resolves a path in it (relative to the party.toml)."""
    if not isinstance(raw, list):
        raise ConfigError("[[tables]] must be an array of tables")
    if raw and role == "helper":
        raise ConfigError("the helper holds no data: remove its [[tables]]")
    out, seen = [], set()
    for i, t in enumerate(raw):
        where = f"tables[{i}]"
        if not isinstance(t, dict) or set(t) - {"name", "key", "columns", "bounds", "domains",
                                                "postgres"}:
            raise ConfigError(f"{where} takes name, key, columns, bounds, domains and postgres")
        name = _get(t, "name", str, where)
        if name.lower() in seen:
            raise ConfigError(f"table {name!r} is listed twice")
        seen.add(name.lower())
        cols = _get(t, "columns", list, where, None)
        if cols is not None and (not cols or not all(isinstance(c, str) for c in cols)):
            raise ConfigError(f"{where}.columns must be a non-empty list of column names")
        bounds = _get(t, "bounds", dict, where, {})
        if not all(isinstance(v, (int, float)) and v > 0 for v in bounds.values()):
            raise ConfigError(f"{where}.bounds must map column names to positive numbers")
        pg = _get(t, "postgres", dict, where, None)
        out.append(ExposedTable(name, _get(t, "key", str, where), cols,
                                {k: float(v) for k, v in bounds.items()},
                                _domains(_get(t, "domains", dict, where, {}), where),
                                None if pg is None else _postgres(pg, f"{where}.postgres", rel)))
    return out


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SELECT = re.compile(r"^\s*(SELECT|WITH|VALUES|TABLE)\b", re.IGNORECASE)


def _postgres(raw: dict[str, Any], where: str, rel: Any) -> PostgresSource:
    """``[[tables]] postgres = { dsn, table | query, password_file | password_env }``."""
    keys = {"dsn", "table", "query", "password_file", "password_env"}
    unknown = set(raw) - keys
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(keys))}")
    dsn = _get(raw, "dsn", str, where)
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ConfigError(f"{where}: PostgreSQL sources need psycopg 3 "
                          "(pip install 'mpcsql[postgres]')") from None
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # psycopg's message may quote the DSN, and so a password: not shown
        raise ConfigError(f"{where}.dsn is not a libpq connection string ('host=... "
                          "dbname=... user=...') or postgresql:// URI") from None
    if params.get("password") or params.get("sslpassword"):
        raise ConfigError(f"{where}.dsn contains a password; give it with password_file or "
                          "password_env instead (neither is ever shown)")
    table = _get(raw, "table", str, where, None)
    query = _get(raw, "query", str, where, None)
    if (table is None) == (query is None):
        raise ConfigError(f"{where} takes exactly one of table = \"schema.table\" and "
                          "query = \"SELECT ...\"")
    if table is not None:
        parts = table.split(".")
        if len(parts) > 2 or not all(p.strip() for p in parts) or '"' in table:
            raise ConfigError(f"{where}.table must be \"schema.table\" or \"table\" (names as "
                              f"PostgreSQL stores them, without quotes), not {table!r}")
    if query is not None:
        query = query.strip().rstrip(";").strip()
        if not _SELECT.match(query):
            raise ConfigError(f"{where}.query must be a SELECT (or WITH ... SELECT)")
    pfile = _get(raw, "password_file", str, where, None)
    penv = _get(raw, "password_env", str, where, None)
    if pfile is not None and penv is not None:
        raise ConfigError(f"{where} takes password_file or password_env, not both")
    if pfile is not None:
        pfile = rel(pfile)
        if not os.path.isfile(pfile):
            raise ConfigError(f"{where}.password_file: file not found: {pfile}")
        if os.stat(pfile).st_mode & 0o077:
            raise ConfigError(f"{where}.password_file: {pfile} is readable by other users; "
                              "chmod 600 it")
    if penv is not None:
        if not _ENV_NAME.match(penv):
            raise ConfigError(f"{where}.password_env must name an environment variable, "
                              f"not {penv!r}")
        if penv not in os.environ:
            raise ConfigError(f"{where}.password_env: the environment variable {penv} is not "
                              "set")
    return PostgresSource(dsn, table, query, pfile, penv)


def _domains(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """``[[tables]] domains``: column -> list of categories or { min = a, max = b }."""
    from planner.domains import normalize  # config -> planner is the allowed direction

    out = {}
    for col, spec in raw.items():
        try:
            out[col] = normalize(spec, f"{where}.domains.{col}")
        except ProgrammingError as e:
            raise ConfigError(e.message) from None
    return out


# --- the embedded federation's settings (checked before any process starts) -------------------


def check_policies(parties: list[tuple[str, str]] | tuple[tuple[str, str], ...],
                   policies: Any) -> dict[str, dict[str, Any]]:
    """``policies`` (party name -> policy table) checked for ``parties``; the checked tables.

    Raises :class:`ConfigError` naming the party and the key: a name that is no party, a table
    :meth:`planner.policy.Policy.from_dict` refuses, or ``receivers`` naming no party.  The
    result holds each table in the form ``Policy.to_dict`` writes (plain lists and ints).
    """
    from planner.policy import Policy  # config -> planner is the allowed direction

    names = [n for n, _ in parties]
    if policies is None:
        policies = {}
    if not isinstance(policies, dict):
        raise ConfigError(f"policies must map party names to policy tables, not {policies!r}")
    unknown = [p for p in policies if p not in names]
    if unknown:
        raise ConfigError(f"policies: unknown part{'ies' if len(unknown) > 1 else 'y'} "
                          f"{', '.join(map(repr, unknown))}; the parties are {', '.join(names)}")
    out = {}
    for name in names:
        try:
            policy = Policy.from_dict(name, policies.get(name))
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:  # from_dict names the key itself; just in case
            raise ConfigError(f"policy of {name}: {e}") from None
        bad = [r for r in policy.receivers or () if r not in names]
        if bad:
            raise ConfigError(f"policy of {name}: receivers names unknown part"
                              f"{'ies' if len(bad) > 1 else 'y'} {', '.join(map(repr, bad))}; "
                              f"the parties are {', '.join(names)}")
        out[name] = policy.to_dict() if name in policies else {}
    return out


def check_randomness(value: Any, where: str = "paillier_randomness") -> None:
    """ConfigError unless ``value`` is one of :data:`PAILLIER_RANDOMNESS`."""
    if value not in PAILLIER_RANDOMNESS:
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, PAILLIER_RANDOMNESS))}"
                          f", not {value!r}")


def check_embedded(*, key_bits: Any, query_timeout: Any, connect_timeout: Any,
                   start_timeout: Any, paillier_pool: Any,
                   paillier_randomness: Any = DEFAULT_PAILLIER_RANDOMNESS) -> None:
    """The numeric settings of ``engine.connect()`` / ``LocalFederation``; ConfigError naming
    the setting (e.g. ``query_timeout must be a positive number of seconds, not -1``)."""
    for key, value in (("query_timeout", query_timeout), ("connect_timeout", connect_timeout),
                       ("start_timeout", start_timeout)):
        if not _real(value) or not 0 < value < float("inf"):
            raise ConfigError(f"{key} must be a positive number of seconds, not {value!r}")
    if not _int(key_bits) or key_bits < MIN_EMBEDDED_KEY_BITS:
        raise ConfigError(f"key_bits must be an integer >= {MIN_EMBEDDED_KEY_BITS} (Paillier "
                          f"modulus size; {KEY_BITS} in production), not {key_bits!r}")
    if not _int(paillier_pool) or paillier_pool < 0:
        raise ConfigError(f"paillier_pool must be an integer >= 0 (0: off), not "
                          f"{paillier_pool!r}")
    check_randomness(paillier_randomness)


#: Smallest Paillier modulus the embedded federation accepts (tests use 512-bit keys).
MIN_EMBEDDED_KEY_BITS = 512


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --- [pg]: the PostgreSQL wire endpoint (mpcsql serve-pg) ------------------------------------

_PG_KEYS = {"listen", "server", "party", "ca", "cert", "key", "client_ca", "tls",
            "trust_local", "max_connections", "query_timeout", "users"}
_PG_USER_KEYS = {"password", "client_cert", "analyst_cert", "analyst_key"}


@dataclass
class PgUser:
    """A PostgreSQL login of the endpoint and the analyst it acts as at the party server."""

    name: str
    analyst: str  # the analyst identity (CN of analyst_cert), e.g. alice@ac
    analyst_cert: str
    analyst_key: str
    password: str | None = None  # a SCRAM-SHA-256 or md5 verifier, never a password
    client_cert: str | None = None  # identity the client's certificate must name


@dataclass
class PgConfig:
    """How ``mpcsql serve-pg`` listens, whom it lets in and which party server it uses."""

    server: tuple[str, int]
    server_ca: str  # verifies the party server's certificate
    party: str | None = None  # the party the server must be (None: whichever it is)
    host: str = "127.0.0.1"
    port: int = 5432
    tls: TLSFiles | None = None  # the endpoint's certificate and the CA of client certs
    require_tls: bool = True
    trust_local: bool = False
    users: dict[str, PgUser] = field(default_factory=dict)
    max_connections: int = 32
    query_timeout: float = 600.0
    config_path: str | None = None


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def load_pg_config(path: str) -> PgConfig:
    """Read and check the ``[pg]`` section of a ``party.toml`` (or of a file holding only
    ``[pg]``); paths are relative to the file.  In a party.toml, ``server``, ``party``, ``ca``,
    ``cert`` and ``key`` default to the party's own ``[listen]`` and ``[tls]``."""
    path = os.path.abspath(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    try:
        cfg = _build_pg(raw, os.path.dirname(path))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.message}") from None
    cfg.config_path = path
    return cfg


def _build_pg(raw: dict[str, Any], base: str) -> PgConfig:
    def rel(p: str) -> str:
        return os.path.normpath(os.path.join(base, os.path.expanduser(p)))

    def existing(key: str, value: str, private: bool = False) -> str:
        p = rel(value)
        if not os.path.isfile(p):
            raise ConfigError(f"pg.{key}: file not found: {p}")
        if private and os.stat(p).st_mode & 0o077:
            raise ConfigError(f"pg.{key}: {p} is readable by other users; chmod 600 it")
        return p

    pg = raw.get("pg")
    if not isinstance(pg, dict):
        raise ConfigError("missing section [pg] (the PostgreSQL endpoint's settings)")
    unknown = set(pg) - _PG_KEYS
    if unknown:
        raise ConfigError(f"unknown setting(s) in [pg]: {', '.join(sorted(unknown))}; known: "
                          f"{', '.join(sorted(_PG_KEYS))}")
    party_sec = raw.get("party") if isinstance(raw.get("party"), dict) else {}
    listen_sec = raw.get("listen") if isinstance(raw.get("listen"), dict) else {}
    tls_sec = raw.get("tls") if isinstance(raw.get("tls"), dict) else {}

    listen = _get(pg, "listen", str, "pg", "127.0.0.1:5432")
    if listen.endswith(":0"):  # any free port (tests); the endpoint logs the one it got
        host, port = _address(listen[:-2] + ":1", "pg.listen")[0], 0
    else:
        host, port = _address(listen, "pg.listen")
    if "server" in pg:
        server = _address(_get(pg, "server", str, "pg").removeprefix("mpcsql://"), "pg.server")
    elif "port" in listen_sec:
        lhost = str(listen_sec.get("host", "127.0.0.1"))
        server = ("127.0.0.1" if lhost in ("0.0.0.0", "::", "") else lhost,
                  int(listen_sec["port"]))
    else:
        raise ConfigError("missing setting pg.server ('host:port' of your party's server; in "
                          "a party.toml it defaults to [listen])")
    party = _get(pg, "party", str, "pg", party_sec.get("name"))
    ca_path = _get(pg, "ca", str, "pg", tls_sec.get("ca"))
    if not isinstance(ca_path, str):
        raise ConfigError("missing setting pg.ca (the federation CA that signed your party "
                          "server's certificate; in a party.toml it defaults to [tls] ca)")
    server_ca = existing("ca", ca_path)

    mode = _get(pg, "tls", str, "pg", "require")
    if mode not in ("require", "off"):
        raise ConfigError(f"pg.tls must be 'require' or 'off', not {mode!r}")
    tls = None
    if mode == "require":
        cert = _get(pg, "cert", str, "pg", tls_sec.get("cert"))
        key = _get(pg, "key", str, "pg", tls_sec.get("key"))
        if not isinstance(cert, str) or not isinstance(key, str):
            raise ConfigError("pg.tls = 'require' needs pg.cert and pg.key (the endpoint's "
                              "certificate and key; in a party.toml they default to [tls])")
        client_ca = existing("client_ca", _get(pg, "client_ca", str, "pg", ca_path))
        tls = TLSFiles(client_ca, existing("cert", cert), existing("key", key, private=True))
    elif not _loopback(host):
        raise ConfigError(f"pg.tls = 'off' is only for a loopback pg.listen address, not "
                          f"{host!r}: clients elsewhere must use TLS")
    trust = _get(pg, "trust_local", bool, "pg", False)
    if trust and not _loopback(host):
        raise ConfigError("pg.trust_local = true (logins without a password or certificate) "
                          f"is only for a loopback pg.listen address, not {host!r}")
    max_conn = _get(pg, "max_connections", int, "pg", 32)
    if not 0 < max_conn <= 1024:
        raise ConfigError("pg.max_connections must be in 1..1024")
    timeout = float(_get(pg, "query_timeout", (int, float), "pg", 600.0))
    if not 0 < timeout < float("inf"):
        raise ConfigError("pg.query_timeout must be a positive number of seconds")
    return PgConfig(server=server, server_ca=server_ca, party=party, host=host, port=port,
                    tls=tls, require_tls=tls is not None, trust_local=trust,
                    users=_pg_users(pg.get("users", {}), tls is not None, trust, party,
                                    existing),
                    max_connections=max_conn, query_timeout=timeout)


#: PostgreSQL's verifier formats (pg_authid.rolpassword): SCRAM-SHA-256 and md5.
PG_VERIFIER = re.compile(r"SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+"
                         r"|md5[0-9a-f]{32}")


def _pg_users(raw: Any, tls: bool, trust: bool, party: str | None,
              existing: Any) -> dict[str, PgUser]:
    from engine.deploy.certs import CertError, check_analyst_name, identity_of, load_cert

    if not isinstance(raw, dict) or not raw:
        raise ConfigError("[pg.users.NAME] must list at least one PostgreSQL login, each with "
                          "analyst_cert and analyst_key (and password and/or client_cert)")
    out = {}
    for name, sec in raw.items():
        where = f"pg.users.{name}"
        if not isinstance(sec, dict):
            raise ConfigError(f"[{where}] must be a table")
        unknown = set(sec) - _PG_USER_KEYS
        if unknown:
            raise ConfigError(f"unknown setting(s) in [{where}]: {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(_PG_USER_KEYS))}")
        password = _get(sec, "password", str, where, None)
        if password is not None and not PG_VERIFIER.fullmatch(password):
            raise ConfigError(f"{where}.password must be a SCRAM-SHA-256 verifier (mpcsql "
                              "serve-pg --hash-password writes one) or an md5 verifier, never "
                              "a plaintext password")
        client_cert = _get(sec, "client_cert", str, where, None)
        if client_cert is not None:
            if not tls:
                raise ConfigError(f"{where}.client_cert needs pg.tls = 'require'")
            try:
                check_analyst_name(client_cert)
            except CertError as e:
                raise ConfigError(f"{where}.client_cert: {e.message}") from None
        if password is None and client_cert is None and not trust:
            raise ConfigError(f"{where} has neither password nor client_cert: logins without "
                              "either need pg.trust_local = true (loopback only)")
        cert = existing(f"users.{name}.analyst_cert", _get(sec, "analyst_cert", str, where))
        key = existing(f"users.{name}.analyst_key", _get(sec, "analyst_key", str, where),
                       private=True)
        try:
            ident = identity_of(load_cert(cert).subject)
        except (CertError, ValueError) as e:
            raise ConfigError(f"{where}.analyst_cert: {e}") from None
        if ident.kind != "analyst":
            raise ConfigError(f"{where}.analyst_cert names {ident}, not an analyst")
        if party and ident.party != party:
            raise ConfigError(f"{where}.analyst_cert is {ident.name}, an analyst of "
                              f"{ident.party}; this endpoint serves {party}")
        out[str(name)] = PgUser(str(name), ident.name, cert, key, password, client_cert)
    return out
