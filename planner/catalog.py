"""The federated catalog: which party owns which table, its key column and column types.

Only schemas live here, never data or row counts.  Each party is authoritative for its own
tables; the catalog a query is planned against is the union of what each party declares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dialect.errors import BindError

NUMERIC_TYPES = frozenset(
    {
        "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
        "UINTEGER", "UBIGINT", "FLOAT", "REAL", "DOUBLE", "DECIMAL", "BOOLEAN",
    }
)

DATA, HELPER = "data", "helper"


def is_numeric(dtype: str) -> bool:
    """True for DuckDB types that can be fixed-point encoded (DECIMAL(p,s) included)."""
    return dtype.upper().split("(")[0].strip() in NUMERIC_TYPES


@dataclass(frozen=True)
class Party:
    """A party of the federation; ``pid`` is its MPyC index."""

    name: str
    role: str  # DATA or HELPER
    pid: int

    def __post_init__(self) -> None:
        if self.role not in (DATA, HELPER):
            raise ValueError(f"party role must be {DATA!r} or {HELPER!r}, not {self.role!r}")


@dataclass(frozen=True)
class ColumnSchema:
    """A column; ``scale_bits`` is its owner's public declaration |x| <= 2**scale_bits.

    ``domain`` is the owner's public declaration of the values the column takes (categories of
    a string or boolean column, or every integer of a range), needed to GROUP BY it; None if
    undeclared.  NULL is not listed: a nullable key always has a NULL group.  ``nullable`` is
    False for a column its owner declared NOT NULL (a constraint of its DuckDB table): then no
    validity bit is computed for it.
    """

    name: str
    dtype: str
    scale_bits: int | None = None
    domain: tuple[Any, ...] | None = None
    nullable: bool = True

    @property
    def numeric(self) -> bool:
        return is_numeric(self.dtype)


@dataclass(frozen=True)
class TableSchema:
    """A table exposed by ``party`` with join key ``key`` (the key is never a feature)."""

    name: str
    party: str
    key: str | None
    columns: tuple[ColumnSchema, ...]

    def __post_init__(self) -> None:
        names = [c.name.lower() for c in self.columns]
        if len(set(names)) != len(names):
            raise BindError(f"table {self.name!r} of {self.party} has duplicate column names")
        if self.key is not None and self.key.lower() not in names:
            raise BindError(f"key column {self.key!r} is not a column of table {self.name!r}")

    def column(self, name: str) -> ColumnSchema | None:
        for c in self.columns:
            if c.name.lower() == name.lower():
                return c
        return None


@dataclass(frozen=True)
class Catalog:
    """Parties (in MPyC pid order) and the tables they expose."""

    parties: tuple[Party, ...]
    tables: tuple[TableSchema, ...] = field(default=())

    def __post_init__(self) -> None:
        if [p.pid for p in self.parties] != list(range(len(self.parties))):
            raise ValueError("party pids must be 0..m-1 in order")
        names = [t.name.lower() for t in self.tables]
        if len(set(names)) != len(names):
            raise BindError("two parties expose a table with the same name")
        known = {p.name for p in self.parties}
        for t in self.tables:
            if t.party not in known:
                raise BindError(f"table {t.name!r} belongs to unknown party {t.party!r}")

    def party(self, name: str) -> Party:
        for p in self.parties:
            if p.name == name:
                return p
        raise BindError(f"unknown party {name!r}")

    @property
    def helper(self) -> Party | None:
        return next((p for p in self.parties if p.role == HELPER), None)

    def table(self, name: str) -> TableSchema | None:
        for t in self.tables:
            if t.name.lower() == name.lower():
                return t
        return None

    def with_tables(self, tables: tuple[TableSchema, ...]) -> Catalog:
        return Catalog(self.parties, tuple(tables))

    def to_dict(self) -> dict[str, Any]:
        return {
            "parties": [[p.name, p.role, p.pid] for p in self.parties],
            "tables": [
                {
                    "name": t.name,
                    "party": t.party,
                    "key": t.key,
                    "columns": [[c.name, c.dtype, c.scale_bits]
                                + ([list(c.domain) if c.domain is not None else None]
                                   if c.domain is not None or not c.nullable else [])
                                + ([False] if not c.nullable else [])
                                for c in t.columns],
                }
                for t in self.tables
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Catalog:
        return cls(
            tuple(Party(n, r, i) for n, r, i in d["parties"]),
            tuple(
                TableSchema(
                    t["name"], t["party"], t["key"],
                    tuple(ColumnSchema(*c[:3], tuple(c[3]) if len(c) > 3 and c[3] is not None
                                       else None, bool(c[4]) if len(c) > 4 else True)
                          for c in t["columns"]),
                )
                for t in d["tables"]
            ),
        )
