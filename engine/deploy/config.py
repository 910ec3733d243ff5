"""Configuration of one party server: the dataclass, and loading it from ``party.toml``."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from dialect.errors import ConfigError, ProgrammingError
from engine.deploy.tls import TLSFiles

KEY_BITS = 2048  # Paillier modulus size used in production


@dataclass
class ExposedTable:
    """A table of the party's DuckDB file that queries may use (only these columns)."""

    name: str
    key: str
    columns: list[str] | None = None  # None: every column
    bounds: dict[str, float] = field(default_factory=dict)
    #: public domains (planner.domains canonical form: categories, or {"min": a, "max": b})
    domains: dict[str, Any] = field(default_factory=dict)


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
    "crypto": {"paillier_key_bits", "paillier_pool"},
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

    db = _section(raw, "database", required=role == "data")
    database = rel(_get(db, "path", str, "database")) if db else ":memory:"
    tables = _tables(raw.get("tables", []), role)

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
    return PartyConfig(
        name=name, role=role, parties=parties, database=database, host=host, port=port,
        peers=peers, policy=dict(policy), query_timeout=seconds("query", 600.0),
        connect_timeout=seconds("connect", 10.0), peer_timeout=seconds("peer", 60.0),
        idle_timeout=seconds("idle", 300.0),
        key_bits=key_bits, tls=tls, peer_certs=pins, tables=tables,
        audit_log=audit_log,
        session_ports=session_ports, config_path=path, paillier_pool=pool,
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


def _tables(raw: Any, role: str) -> list[ExposedTable]:
    if not isinstance(raw, list):
        raise ConfigError("[[tables]] must be an array of tables")
    if raw and role == "helper":
        raise ConfigError("the helper holds no data: remove its [[tables]]")
    out, seen = [], set()
    for i, t in enumerate(raw):
        where = f"tables[{i}]"
        if not isinstance(t, dict) or set(t) - {"name", "key", "columns", "bounds", "domains"}:
            raise ConfigError(f"{where} takes name, key, columns, bounds and domains")
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
        out.append(ExposedTable(name, _get(t, "key", str, where), cols,
                                {k: float(v) for k, v in bounds.items()},
                                _domains(_get(t, "domains", dict, where, {}), where)))
    return out


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


def check_embedded(*, key_bits: Any, query_timeout: Any, connect_timeout: Any,
                   start_timeout: Any, paillier_pool: Any) -> None:
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


#: Smallest Paillier modulus the embedded federation accepts (tests use 512-bit keys).
MIN_EMBEDDED_KEY_BITS = 512


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
