"""Exact join keys (issue 10 finding 5): canonical ids, key classes, planning check, storage."""

from __future__ import annotations

import datetime
import re
import uuid
from decimal import Decimal

import duckdb
import pytest

from dialect.errors import DataError, ProgrammingError
from engine.protocols import paillier as P
from engine.protocols.joins import common
from engine.server.storage import PartyStore
from planner.binder import key_class
from planner.build import plan
from planner.catalog import Catalog, ColumnSchema, Party, TableSchema

BIG = 12345678901234567890


# --- canonical ids ----------------------------------------------------------------------------


def test_integers_of_any_width_and_decimals_by_exact_value():
    assert P.canonical_id(5) == P.canonical_id(Decimal("5.00")) == P.canonical_id(5.0) == b"i:5"
    assert P.canonical_id(Decimal("-0.50")) == P.canonical_id(Decimal("-0.5")) == b"i:-0.5"
    assert P.canonical_id(Decimal("0.00")) == P.canonical_id(Decimal("-0")) == b"i:0"
    assert P.canonical_id(Decimal("1E+3")) == b"i:1000"
    assert P.canonical_id(Decimal("0.001")) == b"i:0.001"
    assert P.canonical_id(BIG) != P.canonical_id(BIG + 1)
    assert P.canonical_id(Decimal(BIG)) == P.canonical_id(BIG)
    # 38 significant digits survive (the default decimal context keeps only 28)
    d = Decimal("1234567890123456789012345678901234567.8")
    assert P.canonical_id(d) == b"i:1234567890123456789012345678901234567.8"
    assert P.canonical_id(2**100) != P.canonical_id(2**100 + 1)


def test_other_key_types_are_exact_and_tagged():
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert P.canonical_id(u) == b"u:12345678123456781234567812345678"
    assert P.canonical_id(b"ab") == P.canonical_id(bytearray(b"ab")) == b"b:ab"
    assert P.canonical_id("5") != P.canonical_id(5)
    assert P.canonical_id(datetime.date(1970, 1, 2)) == P.canonical_id(P.TypedId("date", 1))
    ts = datetime.datetime(1970, 1, 1, 0, 0, 1, 5)
    assert P.canonical_id(ts) == P.canonical_id(P.TypedId("timestamp", 1_000_005))
    tz = datetime.datetime(1970, 1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert P.canonical_id(tz) == P.canonical_id(P.TypedId("timestamptz", 0))
    assert P.canonical_id(P.TypedId("date", 1)) != P.canonical_id(P.TypedId("timestamp", 1))
    for bad in (True, 1.5, float("nan"), Decimal("NaN"), object()):
        with pytest.raises(DataError):
            P.canonical_id(bad)


# --- key classes and the planning check -------------------------------------------------------


@pytest.mark.parametrize("a,b", [("INTEGER", "HUGEINT"), ("TINYINT", "UHUGEINT"),
                                 ("DECIMAL(38,0)", "BIGINT"), ("DECIMAL(5,2)", "DECIMAL(10,4)"),
                                 ("TIMESTAMP", "TIMESTAMP_S"), ("VARCHAR", "VARCHAR")])
def test_compatible_key_types(a, b):
    assert key_class(a) is not None and key_class(a) == key_class(b)


def _catalog(ac_type: str, emc_type: str) -> Catalog:
    return Catalog(
        (Party("ac", "data", 0), Party("emc", "data", 1), Party("helper", "helper", 2)),
        (TableSchema("ac", "ac", "id", (ColumnSchema("id", ac_type), ColumnSchema("x", "DOUBLE"))),
         TableSchema("emc", "emc", "id", (ColumnSchema("id", emc_type),
                                          ColumnSchema("y", "DOUBLE")))),
    )


SQL = "SELECT COUNT(*) FROM ac JOIN emc USING (id)"


@pytest.mark.parametrize("a,b", [("BIGINT", "VARCHAR"), ("DATE", "TIMESTAMP"), ("UUID", "VARCHAR"),
                                 ("BLOB", "VARCHAR"), ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE"),
                                 ("TIMESTAMP_NS", "TIMESTAMP"), ("HUGEINT", "UHUGEINT")])
def test_incompatible_key_types_refused_at_planning(a, b):
    with pytest.raises(ProgrammingError, match=rf"join key ac\.id is {a} but emc\.id is {b}; "
                                               r"cast one of them in its party's table"):
        plan(SQL, _catalog(a, b))
    with pytest.raises(ProgrammingError, match=rf"join key ac\.id is {b} but emc\.id is {a}"):
        plan("SELECT COUNT(*) FROM ac JOIN emc ON ac.id = emc.id", _catalog(b, a))


@pytest.mark.parametrize("bad", ["DOUBLE", "FLOAT", "BOOLEAN", "INTERVAL", "INTEGER[]"])
def test_invalid_key_types_refused_at_planning(bad):
    with pytest.raises(ProgrammingError,
                       match=rf"join key emc\.id is {re.escape(bad)}, which cannot be a join key"):
        plan(SQL, _catalog("BIGINT", bad))


def test_compatible_key_types_plan():
    assert plan(SQL, _catalog("INTEGER", "HUGEINT")).scans
    assert plan(SQL, _catalog("DECIMAL(38,0)", "UBIGINT")).scans


# --- storage: exact reads and exact duplicate check -------------------------------------------


def _store(tmp_path, ddl: str, values: str) -> PartyStore:
    path = str(tmp_path / f"src{len(list(tmp_path.iterdir()))}.duckdb")
    with duckdb.connect(path) as c:
        c.execute(f"CREATE TABLE t ({ddl})")
        c.execute(f"INSERT INTO t VALUES {values}")
    store = PartyStore(":memory:", "ac")
    store.register("t", key="id", path=path, table="t")
    return store


def test_storage_reads_hugeint_ids_exactly(tmp_path):
    store = _store(tmp_path, "id HUGEINT, x DOUBLE",
                   f"({BIG}, 1), ({BIG + 1}, 2), ({2**100}, 3), ({2**100 + 1}, 4)")
    ids = store.load("t", "id", ("x",)).ids
    assert sorted(ids) == [BIG, BIG + 1, 2**100, 2**100 + 1]
    assert len(set(P.split_hashes(common.keyed_hashes(b"k" * 32, ids)))) == 4


@pytest.mark.parametrize("ddl,values,expected", [
    ("id DECIMAL(38,0)", f"({BIG}), ({BIG + 1})", [Decimal(BIG), Decimal(BIG + 1)]),
    ("id DECIMAL(6,2)", "(5.00), (5.50)", [5, Decimal("5.5")]),
    ("id UUID", "('12345678-1234-5678-1234-567812345678')",
     [uuid.UUID("12345678-1234-5678-1234-567812345678")]),
    ("id DATE", "('1970-01-02'), ('5881580-07-10')", [P.TypedId("date", 1),
                                                       P.TypedId("date", 2147483646)]),
    ("id TIMESTAMP_NS", "('1970-01-01 00:00:00.000000001')", [P.TypedId("timestamp_ns", 1)]),
    ("id BLOB", "('\\xAA'::BLOB)", [b"\xaa"]),
    ("id VARCHAR", "('a'), ('A')", ["a", "A"]),
])
def test_storage_reads_each_key_type_exactly(tmp_path, ddl, values, expected):
    store = _store(tmp_path, ddl, values)
    ids = store.load("t", "id", ()).ids
    assert sorted(P.canonical_id(i) for i in ids) == sorted(P.canonical_id(e) for e in expected)


def test_storage_refuses_bad_keys(tmp_path):
    store = _store(tmp_path, "id DOUBLE, x DOUBLE", "(1, 1)")
    with pytest.raises(ProgrammingError, match=r"join key t\.id is DOUBLE, which cannot be"):
        store.load("t", "id", ("x",))
    store = _store(tmp_path, "id DATE", "('infinity'), ('2020-01-01')")
    with pytest.raises(DataError, match=r"t\.id contains 1 infinite value"):
        store.load("t", "id", ())
    store = _store(tmp_path, "id DECIMAL(6,2)", "(5.00), (5.0)")
    with pytest.raises(DataError, match=r"t\.id has 1 duplicated id"):
        store.load("t", "id", ())
