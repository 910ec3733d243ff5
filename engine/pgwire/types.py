"""mpcsql (DuckDB) result types as PostgreSQL types: OIDs, sizes and value encodings.

A result column arrives from the party server with its DuckDB type name (``BIGINT``,
``DOUBLE``, ``HUGEINT``, ``DECIMAL(18,3)``, ``VARCHAR``...).  :func:`pg_type` gives the
PostgreSQL type a client sees in the RowDescription; :func:`encode` writes one value in the
text (format 0) or binary (format 1) wire format of that type.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from dialect.errors import NotSupportedError


@dataclass(frozen=True)
class PgType:
    """A PostgreSQL type as RowDescription announces it."""

    oid: int
    name: str  # pg_type.typname
    size: int  # typlen (-1: variable)
    modifier: int = -1  # atttypmod (numeric: ((precision << 16) | scale) + 4)


BOOL = PgType(16, "bool", 1)
BYTEA = PgType(17, "bytea", -1)
INT8 = PgType(20, "int8", 8)
INT2 = PgType(21, "int2", 2)
INT4 = PgType(23, "int4", 4)
TEXT = PgType(25, "text", -1)
OID = PgType(26, "oid", 4)
JSON = PgType(114, "json", -1)
FLOAT4 = PgType(700, "float4", 4)
FLOAT8 = PgType(701, "float8", 8)
VARCHAR = PgType(1043, "varchar", -1)
DATE = PgType(1082, "date", 4)
TIME = PgType(1083, "time", 8)
TIMESTAMP = PgType(1114, "timestamp", 8)
TIMESTAMPTZ = PgType(1184, "timestamptz", 8)
INTERVAL = PgType(1186, "interval", 16)
NUMERIC = PgType(1700, "numeric", -1)
UUID = PgType(2950, "uuid", 16)

_BY_NAME = {
    "BOOLEAN": BOOL, "BOOL": BOOL,
    "TINYINT": INT2, "SMALLINT": INT2, "UTINYINT": INT2,
    "INTEGER": INT4, "INT": INT4, "USMALLINT": INT4,
    "BIGINT": INT8, "UINTEGER": INT8,
    "HUGEINT": NUMERIC, "UBIGINT": NUMERIC, "UHUGEINT": NUMERIC, "INT128": NUMERIC,
    "REAL": FLOAT4, "FLOAT": FLOAT4, "FLOAT4": FLOAT4,
    "DOUBLE": FLOAT8, "FLOAT8": FLOAT8,
    "VARCHAR": VARCHAR, "TEXT": TEXT, "STRING": TEXT,
    "BLOB": BYTEA, "DATE": DATE, "TIME": TIME, "TIMESTAMP": TIMESTAMP,
    "TIMESTAMP WITH TIME ZONE": TIMESTAMPTZ, "TIMESTAMPTZ": TIMESTAMPTZ,
    "INTERVAL": INTERVAL, "UUID": UUID, "JSON": JSON,
    "NULL": TEXT, '"NULL"': TEXT,
}
_DECIMAL = re.compile(r"(?:DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", re.I)
_BY_OID = {t.oid: t for t in _BY_NAME.values()} | {OID.oid: OID}


def pg_type(duckdb_type: str | None) -> PgType:
    """The PostgreSQL type of a DuckDB type name (unknown and NULL types read as text)."""
    name = (duckdb_type or "NULL").strip().upper()
    m = _DECIMAL.fullmatch(name)
    if m:
        return PgType(NUMERIC.oid, "numeric", -1, ((int(m[1]) << 16) | int(m[2])) + 4)
    return _BY_NAME.get(name, TEXT)


def by_oid(oid: int) -> PgType | None:
    return _BY_OID.get(oid)


# --- values ---------------------------------------------------------------------------------


def _float_text(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(float(v))  # shortest round-trip form, as PostgreSQL >= 12 prints


def text(value: Any, t: PgType) -> bytes:
    """``value`` in PostgreSQL's text output format for type ``t``."""
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if t.oid in (FLOAT4.oid, FLOAT8.oid) and isinstance(value, (int, float)):
        return _float_text(float(value)).encode()
    if isinstance(value, float):
        return _float_text(value).encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"\\x" + bytes(value).hex().encode()
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ").encode()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat().encode()
    if isinstance(value, (list, tuple)):
        return ("{" + ",".join("NULL" if v is None else str(v) for v in value) + "}").encode()
    return str(value).encode()


_EPOCH = dt.date(2000, 1, 1)


def binary(value: Any, t: PgType) -> bytes:
    """``value`` in PostgreSQL's binary format for type ``t`` (the types a result can have)."""
    oid = t.oid
    if oid == BOOL.oid:
        return b"\x01" if value else b"\x00"
    if oid == INT2.oid:
        return struct.pack("!h", int(value))
    if oid in (INT4.oid, OID.oid):
        return struct.pack("!i", int(value))
    if oid == INT8.oid:
        return struct.pack("!q", int(value))
    if oid == FLOAT4.oid:
        return struct.pack("!f", float(value))
    if oid == FLOAT8.oid:
        return struct.pack("!d", float(value))
    if oid in (TEXT.oid, VARCHAR.oid, JSON.oid):
        return str(value).encode()
    if oid == BYTEA.oid:
        return bytes(value)
    if oid == NUMERIC.oid:
        return _numeric_binary(value)
    if oid == DATE.oid and isinstance(value, dt.date):
        return struct.pack("!i", (value - _EPOCH).days)
    raise NotSupportedError(f"binary output of type {t.name} is not supported; ask for text "
                            "results (format 0)")


def _numeric_binary(value: Any) -> bytes:
    """PostgreSQL's binary numeric: ndigits, weight, sign, dscale, base-10000 digits."""
    d = decimal.Decimal(value) if not isinstance(value, decimal.Decimal) else value
    if d.is_nan():
        return struct.pack("!hhHh", 0, 0, 0xC000, 0)
    if d.is_infinite():
        return struct.pack("!hhHh", 0, 0, 0xD000 if d > 0 else 0xF000, 0)
    sign, digits, exp = d.as_tuple()
    dscale = max(0, -exp)
    # the decimal digits, padded so that the point falls on a base-10000 boundary
    s = "".join(map(str, digits)) or "0"
    if exp > 0:
        s += "0" * exp
        exp = 0
    int_len = len(s) + exp  # digits before the point
    int_part, frac_part = (s[:int_len] if int_len > 0 else ""), s[max(int_len, 0):]
    if int_len < 0:
        frac_part = "0" * (-int_len) + frac_part
    int_part = int_part.lstrip("0")
    int_part = "0" * (-len(int_part) % 4) + int_part
    frac_part = frac_part + "0" * (-len(frac_part) % 4)
    groups = [int(int_part[i:i + 4]) for i in range(0, len(int_part), 4)]
    weight = len(groups) - 1
    groups += [int(frac_part[i:i + 4]) for i in range(0, len(frac_part), 4)]
    while groups and groups[0] == 0:  # leading zero groups move the weight
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    return struct.pack(f"!hhHh{len(groups)}H", len(groups), weight,
                       0x4000 if sign else 0, dscale, *groups)


def encode(value: Any, t: PgType, fmt: int) -> bytes | None:
    """One DataRow cell: None for SQL NULL, else the text or binary form."""
    if value is None:
        return None
    return binary(value, t) if fmt == 1 else text(value, t)


# --- parameters -----------------------------------------------------------------------------

_NUMERIC_OIDS = {INT2.oid, INT4.oid, INT8.oid, FLOAT4.oid, FLOAT8.oid, NUMERIC.oid, OID.oid}


def decode_param(raw: bytes | None, oid: int, fmt: int) -> Any:
    """A bound parameter's Python value (text or binary format), for binding as a literal."""
    if raw is None:
        return None
    if fmt == 1:
        if oid == BOOL.oid:
            return raw != b"\x00"
        fmts = {INT2.oid: "!h", INT4.oid: "!i", OID.oid: "!I", INT8.oid: "!q",
                FLOAT4.oid: "!f", FLOAT8.oid: "!d"}
        if oid in fmts:
            return struct.unpack(fmts[oid], raw)[0]
        if oid in (0, TEXT.oid, VARCHAR.oid):
            return raw.decode()
        raise NotSupportedError(f"binary parameters of type oid {oid} are not supported; send "
                                "them as text")
    s = raw.decode()
    if oid == BOOL.oid:
        return s.strip().lower() in ("t", "true", "1", "yes", "on", "y")
    if oid in (INT2.oid, INT4.oid, INT8.oid, OID.oid):
        return int(s)
    if oid in (FLOAT4.oid, FLOAT8.oid):
        return float(s)
    if oid == NUMERIC.oid:
        d = decimal.Decimal(s)
        return int(d) if d == d.to_integral_value() and "." not in s else float(d)
    return s


def is_numeric_oid(oid: int) -> bool:
    return oid in _NUMERIC_OIDS
