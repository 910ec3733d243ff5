"""PartyStore.load_local: a program plan's local columns, evaluated by the owner in DuckDB.

The key is checked as by ``load``; NULLs in the table are the planner's SQL's business; each
value is checked against its public bound and normalised (divided by 2**bits, exactly); errors
name the table and the local column's text, never a value.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from dialect.errors import DataError, ProgrammingError
from engine.server.participant import load_scan
from engine.server.storage import PartyStore
from planner.physical import LocalColumn

SECRET = 987654.25  # a value no error message may contain


def _store(tmp_path, ddl: str, values: str, key: str | None = "id") -> PartyStore:
    path = str(tmp_path / f"src{len(list(tmp_path.iterdir()))}.duckdb")
    with duckdb.connect(path) as c:
        c.execute(f"CREATE TABLE t ({ddl})")
        c.execute(f"INSERT INTO t VALUES {values}")
    store = PartyStore(":memory:", "ac")
    store.register("t", key=key, path=path, table="t")
    return store


def col(name: str, sql: str, bits: int, indicator: bool = False) -> LocalColumn:
    return LocalColumn("ac", name, sql, bits, f"<{name}>", indicator)


BMI = "id INTEGER, bmi DOUBLE, smoker BOOLEAN, region VARCHAR"
ROWS = "(1, 31.5, true, 'north'), (2, NULL, false, 'south'), (3, 22.0, NULL, NULL)"


def test_values_are_evaluated_checked_and_normalised(tmp_path):
    store = _store(tmp_path, BMI, ROWS)
    local = (
        col("v", 'CASE WHEN "bmi" IS NULL THEN 0 ELSE "bmi" END', 6),
        col("ok", 'CAST("bmi" IS NOT NULL AS INTEGER)', 0, indicator=True),
        col("f", 'COALESCE("bmi" > 30, false)', 0, indicator=True),  # a BOOLEAN
        col("g", "COALESCE(\"t\".\"region\" = 'north', false)", 0, indicator=True),
        col("n", '"region" IS NULL', 0, indicator=True),
    )
    data = store.load_local("t", "id", local)
    order = np.argsort(data.ids)
    assert sorted(data.ids) == [1, 2, 3]
    got = data.values[order]
    assert got.dtype == np.float64 and got.shape == (3, 5)
    np.testing.assert_array_equal(got[:, 0], [31.5 / 64, 0.0, 22.0 / 64])  # exact: ldexp
    np.testing.assert_array_equal(got[:, 1:], [[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1]])


def test_negative_and_fractional_bounds(tmp_path):
    store = _store(tmp_path, "id INTEGER, x DOUBLE", "(1, -0.375), (2, 0.25)")
    data = store.load_local("t", "id", (col("x", '"x"', -1),))
    np.testing.assert_array_equal(np.sort(data.values[:, 0]), [-0.75, 0.5])
    assert np.abs(data.values).max() <= 1


def test_single_table_without_key_and_without_columns(tmp_path):
    store = _store(tmp_path, "id INTEGER, x DOUBLE", "(1, 1.0), (2, 2.0), (3, 4.0)", key=None)
    data = store.load_local("t", None, (col("x", '"x"', 2),))
    assert data.ids is None
    np.testing.assert_array_equal(np.sort(data.values[:, 0]), [0.25, 0.5, 1.0])
    empty = store.load_local("t", None, ())
    assert empty.ids is None and empty.values.shape == (3, 0)
    keyed = store.load_local("t", "id", ())
    assert sorted(keyed.ids) == [1, 2, 3] and keyed.values.shape == (3, 0)


def _refused(err: pytest.ExceptionInfo, *parts: str) -> None:
    text = str(err.value)
    for p in parts:
        assert p in text, text
    assert str(SECRET) not in text and "987654" not in text, text
    assert err.value.party == "ac"


def test_bound_violation_names_table_and_column_not_value(tmp_path):
    store = _store(tmp_path, "id INTEGER, x DOUBLE", f"(1, 1.0), (2, {SECRET})")
    with pytest.raises(DataError) as err:
        store.load_local("t", "id", (col("x", '"x"', 10),))
    _refused(err, "<x>", "table t", "bound 2^10")
    with pytest.raises(DataError) as err:  # negative values count by magnitude
        store.load_local("t", "id", (col("x", '-"x"', 10),))
    _refused(err, "<x>", "bound 2^10")


def test_nan_and_infinity_are_refused(tmp_path):
    store = _store(tmp_path, "id INTEGER, x DOUBLE",
                   "(1, 'nan'::DOUBLE), (2, 'inf'::DOUBLE), (3, 1.0)")
    for sql in ('"x"', "CASE WHEN \"id\" = 2 THEN \"x\" ELSE 0 END"):
        with pytest.raises(DataError) as err:
            store.load_local("t", "id", (col("x", sql, 31),))
        _refused(err, "<x>", "NaN or infinite")


def test_a_null_result_is_refused(tmp_path):
    store = _store(tmp_path, BMI, ROWS)
    with pytest.raises(DataError) as err:
        store.load_local("t", "id", (col("v", '"bmi"', 6),))
    _refused(err, "<v>", "NULL")


def test_an_indicator_must_be_zero_or_one(tmp_path):
    store = _store(tmp_path, "id INTEGER, x DOUBLE", "(1, 0.5), (2, 1.0)")
    with pytest.raises(DataError) as err:
        store.load_local("t", "id", (col("x", '"x"', 0, indicator=True),))
    _refused(err, "<x>", "0/1")


def test_key_checks_still_apply(tmp_path):
    local = (col("x", 'COALESCE("x", 0)', 4),)
    store = _store(tmp_path, "id INTEGER, x DOUBLE", "(1, 1.0), (NULL, 2.0)")
    with pytest.raises(DataError, match=r"key column t\.id contains 1 NULL"):
        store.load_local("t", "id", local)
    store = _store(tmp_path, "id INTEGER, x DOUBLE", "(1, 1.0), (1, NULL)")
    with pytest.raises(DataError, match=r"t\.id has 1 duplicated id"):
        store.load_local("t", "id", local)
    store = _store(tmp_path, "id DECIMAL(6,2), x DOUBLE", "(5.00, 1), (5.0, 2)")
    with pytest.raises(DataError, match=r"t\.id has 1 duplicated id"):
        store.load_local("t", "id", local)
    store = _store(tmp_path, "id DOUBLE, x DOUBLE", "(1, 1)")
    with pytest.raises(ProgrammingError, match=r"join key t\.id is DOUBLE"):
        store.load_local("t", "id", local)


def test_sql_errors_name_the_column_without_data(tmp_path):
    store = _store(tmp_path, "id INTEGER, s VARCHAR, n INTEGER",
                   "(1, 'x987654', 2147483647), (2, '1', 1)")
    ok = col("ok", "1", 0, indicator=True)
    with pytest.raises(ProgrammingError) as err:  # schema-level: the message is kept
        store.load_local("t", "id", (ok, col("y", '"nosuch"', 4)))
    _refused(err, "<y>", "table t", "nosuch")
    with pytest.raises(ProgrammingError) as err:
        store.load_local("t", "id", (col("y", "1 +", 4),))
    _refused(err, "<y>", "syntax")
    with pytest.raises(DataError) as err:  # data-dependent: DuckDB's message would name it
        store.load_local("t", "id", (ok, col("c", 'CAST("s" AS INTEGER)', 4)))
    _refused(err, "<c>", "ConversionException", "not shown")
    with pytest.raises(DataError) as err:  # "Overflow in multiplication (2147483647 * 2)"
        store.load_local("t", "id", (col("m", '"n" * 2', 31),))
    _refused(err, "<m>", "OutOfRangeException")
    assert "2147483647" not in str(err.value)
    with pytest.raises(DataError) as err:  # error() is data-dependent too
        store.load_local("t", "id", (col("e", "CASE WHEN \"id\" = 1 THEN error(\"s\") "
                                              "ELSE 0 END", 4),))
    _refused(err, "<e>", "InvalidInputException")
    with pytest.raises(ProgrammingError, match="table nosuch does not exist"):
        store.load_local("nosuch", "id", ())


def test_only_served_columns_are_visible(tmp_path):
    path = str(tmp_path / "ac.duckdb")
    with duckdb.connect(path) as c:
        c.execute("CREATE TABLE t (id INTEGER, x DOUBLE, secret DOUBLE)")
        c.execute("INSERT INTO t VALUES (1, 1.0, 5.0)")
    store = PartyStore(path, "ac")
    store.expose([("t", "id", ["x"], {})])
    assert store.load_local("t", "id", (col("x", '"t"."x"', 1),)).values[0, 0] == 0.5
    with pytest.raises(ProgrammingError, match="secret"):
        store.load_local("t", "id", (col("y", '"secret"', 4),))


class _Scan:
    def __init__(self, local):
        self.table, self.local = "t", local
        self.columns = tuple(c.name for c in local)


class _Plan:
    def __init__(self, program):
        self.program = program


def test_participant_loads_program_scans_with_load_local(tmp_path):
    store = _store(tmp_path, BMI, ROWS)
    local = (col("v", 'COALESCE("bmi", 0)', 6),)
    got = load_scan(store, _Plan(object()), _Scan(local), "id")
    assert sorted(got.values[:, 0] * 64) == [0.0, 22.0, 31.5]
    with pytest.raises(DataError, match="NULL value"):  # a model plan: plain columns, no NULLs
        load_scan(store, _Plan(None), type("S", (), {"table": "t", "columns": ("bmi",)}), "id")


def test_declared_domains_are_checked_too(tmp_path):
    path = str(tmp_path / "src.duckdb")
    with duckdb.connect(path) as c:
        c.execute("CREATE TABLE t (id INTEGER, region VARCHAR)")
        c.execute("INSERT INTO t VALUES (1, 'north'), (2, NULL)")
    store = PartyStore(":memory:", "ac")
    store.register("t", key="id", path=path, table="t", domains={"region": ["north", "south"]})
    g = col("g", "COALESCE(\"region\" = 'north', false)", 0, indicator=True)
    assert sorted(store.load_local("t", "id", (g,)).values[:, 0]) == [0.0, 1.0]
    store.con.execute("INSERT INTO t VALUES (3, 'atlantis')")
    with pytest.raises(DataError, match=r"t\.region has 1 value\(s\) outside") as e:
        store.load_local("t", "id", (g,))
    assert "atlantis" not in str(e.value)
