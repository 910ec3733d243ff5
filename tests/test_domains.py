"""Declared domains (issue 11): the owner's public list of a column's values, needed to GROUP BY
it.  Parsing and checking (planner.domains), the party's store (registration, metadata table,
old files, every load, party.toml ``expose``), party.toml ``[[tables]] domains``, the control
message, and the embedded federation's catalog (e2e)."""

from __future__ import annotations

import os

import duckdb
import pandas as pd
import pytest

from dialect.errors import ConfigError, DataError, ProgrammingError
from engine.control import messages
from engine.data.demo import DOMAINS, split
from engine.deploy.config import ExposedTable, PartyConfig, _tables
from engine.server.storage import PartyStore
from planner import domains as dom
from planner.catalog import Catalog, ColumnSchema, Party, TableSchema
from planner.physical import MAX_GROUPS

REGIONS = ["northeast", "northwest", "southeast", "southwest"]


def _csv(tmp_path, frame: pd.DataFrame, name: str = "t") -> str:
    path = str(tmp_path / f"{name}.csv")
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "id": [1, 2, 3, 4, 5],
        "region": ["northeast", "southwest", None, "northeast", "southeast"],
        "children": [0, 5, 2, None, 3],
        "smoker": [True, False, True, None, False],
        "bmi": [30.5, 22.0, 27.25, 35.0, 19.5],
    })


def _store(tmp_path, frame, **domains) -> tuple[PartyStore, TableSchema]:
    store = PartyStore(str(tmp_path / "ac.duckdb"), "ac")
    path = str(tmp_path / "t.parquet")
    duckdb.from_df(frame).write_parquet(path)
    return store, store.register("t", key="id", path=path, domains=domains)


# --- planner.domains -----------------------------------------------------------------------


def test_forms_normalise_and_expand():
    assert dom.normalize(REGIONS, "t.region") == REGIONS
    assert dom.normalize(("a", "b"), "t.c") == ["a", "b"]
    assert dom.normalize({"min": 0, "max": 5}, "t.c") == {"min": 0, "max": 5}
    assert dom.normalize(range(0, 6), "t.c") == {"min": 0, "max": 5}  # Python's half-open
    assert dom.normalize(range(0, 10, 5), "t.c") == [0, 5]
    assert dom.normalize([True, False], "t.c") == [True, False]
    assert dom.expand({"min": -2, "max": 1}) == (-2, -1, 0, 1)
    assert dom.expand(["b", "a"]) == ("b", "a")  # the declared order (the output order)
    assert len(dom.expand({"min": 1, "max": MAX_GROUPS})) == MAX_GROUPS


@pytest.mark.parametrize("spec, match", [
    ([], "empty"),
    (["a", 1], "mixes"),
    ([1, True], "mixes"),
    ([1.5, 2.0], "strings, integers or booleans"),
    ([None, 1], "strings, integers or booleans"),
    (["a", "a"], "twice"),
    (list(range(MAX_GROUPS + 1)), f"at most {MAX_GROUPS}"),
    ({"min": 0, "max": MAX_GROUPS}, f"{MAX_GROUPS + 1} values; at most {MAX_GROUPS}"),
    ({"min": 5, "max": 0}, "above max"),
    ({"min": 0}, "both ends included"),
    ({"min": 0.5, "max": 3}, "both ends included"),
    ({"min": 0, "max": 3, "step": 1}, "both ends included"),
    ("northeast", "list of categories"),
    (("range", 0, 5), "mixes"),  # not a form: a tuple is a list of categories
])
def test_bad_forms_are_refused_naming_the_column(spec, match):
    with pytest.raises(ProgrammingError, match=match) as e:
        dom.normalize(spec, "ac.region")
    assert "ac.region" in str(e.value)


@pytest.mark.parametrize("spec, dtype, ok", [
    (["a"], "VARCHAR", True), ([1, 2], "BIGINT", True), ([1, 2], "DOUBLE", True),
    ([True, False], "BOOLEAN", True), ({"min": 0, "max": 3}, "INTEGER", True),
    ({"min": 0, "max": 3}, "DECIMAL(5,2)", True), ({"min": 0, "max": 3}, "DOUBLE", True),
    (["a"], "BIGINT", False), ([1], "VARCHAR", False), ([True], "BIGINT", False),
    ([0, 1], "BOOLEAN", False), ({"min": 0, "max": 3}, "VARCHAR", False),
    ({"min": 0, "max": 1}, "BOOLEAN", False), (["a"], "BOOLEAN", False),
])
def test_the_kind_must_fit_the_column_type(spec, dtype, ok):
    if ok:
        dom.check_type(spec, dtype, "t.c")
    else:
        with pytest.raises(ProgrammingError, match="do(es)? not fit its type"):
            dom.check_type(spec, dtype, "t.c")


# --- the party's store -----------------------------------------------------------------------


def test_register_declares_domains_in_the_catalog(tmp_path, frame):
    store, schema = _store(tmp_path, frame, region=REGIONS, CHILDREN=range(0, 6),
                           smoker=[False, True])
    got = {c.name: c.domain for c in schema.columns}
    assert got == {"id": None, "region": tuple(REGIONS), "children": (0, 1, 2, 3, 4, 5),
                   "smoker": (False, True), "bmi": None}
    assert store.schema("t") == schema  # read back from the metadata table
    assert schema.column("bmi").scale_bits == 6  # bounds unchanged
    store.close()
    again = PartyStore(str(tmp_path / "ac.duckdb"), "ac", read_only=True)
    assert again.schema("t").column("children").domain == tuple(range(6))
    again.close()


def test_values_outside_the_domain_are_refused_with_a_count_never_a_value(tmp_path, frame):
    store = PartyStore(":memory:", "ac")
    path = _csv(tmp_path, frame)
    with pytest.raises(DataError) as e:
        store.register("t", key="id", path=path, domains={"region": ["northeast", "zz"]})
    msg = str(e.value)
    assert "t.region" in msg and "2 value(s) outside its declared domain" in msg
    assert "southwest" not in msg and "southeast" not in msg
    assert store.schemas() == []  # the table is not left behind
    with pytest.raises(DataError, match=r"t\.children has 1 value\(s\) outside"):
        store.register("t", key="id", path=path, domains={"children": {"min": 0, "max": 4}})
    # NULLs are never outside: a nullable key has a NULL group
    store.register("t", key="id", path=path, domains={"children": {"min": 0, "max": 5}})


@pytest.mark.parametrize("domains, match", [
    ({"nope": [1]}, "unknown column 'nope'"),
    ({"id": [1, 2]}, "key column"),
    ({"region": [1, 2]}, "integer categories do not fit its type VARCHAR"),
    ({"smoker": {"min": 0, "max": 1}}, "integer range does not fit its type BOOLEAN"),
    ({"bmi": {"min": 0, "max": 40}}, r"t\.bmi has 3 value\(s\) outside"),  # not integers
    ({"children": list(range(300))}, "at most 256"),
])
def test_bad_declarations_are_refused_at_registration(tmp_path, frame, domains, match):
    store = PartyStore(":memory:", "ac")
    with pytest.raises((ProgrammingError, DataError), match=match) as e:
        store.register("t", key="id", path=_csv(tmp_path, frame), domains=domains)
    assert e.value.party == "ac"
    assert store.schemas() == []


def test_every_load_checks_the_domains(tmp_path, frame):
    store, _ = _store(tmp_path, frame, region=REGIONS)
    store.load("t", "id", ("bmi",))
    store.check_domains("t")
    store.con.execute("INSERT INTO t VALUES (6, 'atlantis', 1, true, 20.0), "
                      "(7, 'atlantis', 1, true, 20.0)")
    for call in (lambda: store.check_domains("t"), lambda: store.load("t", "id", ("bmi",))):
        with pytest.raises(DataError, match=r"t\.region has 2 value\(s\) outside") as e:
            call()
        assert "atlantis" not in str(e.value)


def test_a_file_from_before_domains_stays_readable(tmp_path):
    path = str(tmp_path / "old.duckdb")
    con = duckdb.connect(path)
    con.execute("CREATE TABLE _mpcsql_tables (name VARCHAR PRIMARY KEY, key_column VARCHAR, "
                "scale_bits VARCHAR)")
    con.execute("CREATE TABLE t AS SELECT 1 AS id, 2 AS x")
    con.execute("INSERT INTO _mpcsql_tables VALUES ('t', 'id', '{\"x\": 1}')")
    con.close()
    ro = PartyStore(path, "ac", read_only=True)
    assert [(c.name, c.scale_bits, c.domain) for c in ro.schema("t").columns] == [
        ("id", None, None), ("x", 1, None)]
    ro.load("t", "id", ("x",))
    ro.close()
    rw = PartyStore(path, "ac")  # adds the column; the old row reads as no domains
    assert rw.schema("t").column("x").domain is None
    rw.close()


def test_expose_declares_and_checks_domains(tmp_path, frame):
    path = str(tmp_path / "ac.duckdb")
    con = duckdb.connect(path)
    con.execute("CREATE TABLE t AS SELECT * FROM frame")
    con.close()
    store = PartyStore(path, "ac", read_only=True)
    store.expose([("t", "id", ["region", "children"], {}, {"region": REGIONS,
                                                          "children": {"min": 0, "max": 5}})])
    schema = store.schema("t")
    assert schema.column("region").domain == tuple(REGIONS)
    assert schema.column("children").domain == tuple(range(6))
    store.check_domains("t")
    store.expose([("t", "id", None, {})])  # the four-element form of before
    with pytest.raises(DataError, match=r"t\.children has 1 value\(s\) outside"):
        store.expose([("t", "id", None, {}, {"children": {"min": 0, "max": 3}})])
    with pytest.raises(ProgrammingError, match="unknown column 'nope'"):
        store.expose([("t", "id", None, {}, {"nope": [1]})])
    store.close()


def test_catalog_round_trip_keeps_domains():
    t = TableSchema("t", "ac", "id", (ColumnSchema("id", "BIGINT"),
                                      ColumnSchema("region", "VARCHAR", None, tuple(REGIONS)),
                                      ColumnSchema("children", "BIGINT", 3, (0, 1, 2))))
    cat = Catalog((Party("ac", "data", 0),), (t,))
    assert Catalog.from_dict(cat.to_dict()) == cat


# --- party.toml and the control message ------------------------------------------------------


def test_party_toml_domains():
    (t,) = _tables([{"name": "ac", "key": "id", "domains": {
        "region": REGIONS, "children": {"min": 0, "max": 5}, "smoker": [True, False]}}], "data")
    assert t.domains == {"region": REGIONS, "children": {"min": 0, "max": 5},
                         "smoker": [True, False]}
    cfg = PartyConfig(name="ac", role="data", parties=[("ac", "data")], database=":memory:",
                      tables=[t])
    import dataclasses

    back = PartyConfig.from_dict(dataclasses.asdict(cfg))
    assert back.tables == [t] and isinstance(back.tables[0], ExposedTable)
    (old,) = _tables([{"name": "ac", "key": "id"}], "data")
    assert old.domains == {}


@pytest.mark.parametrize("domains, match", [
    ({"region": []}, r"tables\[0\]\.domains\.region is empty"),
    ({"children": {"min": 0}}, r"tables\[0\]\.domains\.children: a range is"),
    ({"children": {"min": 0, "max": 999}}, "at most 256"),
    ({"region": "north"}, "list of categories"),
    ({"x": [1.5]}, "strings, integers or booleans"),
    ("region", r"tables\[0\]\.domains has the wrong type"),
])
def test_party_toml_bad_domains(domains, match):
    with pytest.raises(ConfigError, match=match):
        _tables([{"name": "ac", "key": "id", "domains": domains}], "data")


def test_register_message_carries_domains():
    msg = messages.Register(table="t", key="id", domains={"region": REGIONS,
                                                          "c": {"min": 0, "max": 5}})
    assert messages.parse_request(msg.to_wire()) == msg


def test_demo_declares_its_domains():
    ac, emc = split()
    assert set(DOMAINS["ac"]) == {"region", "sex", "smoker"}
    assert set(DOMAINS["emc"]) == {"children"}
    assert set(ac["region"]) == set(DOMAINS["ac"]["region"])
    assert set(emc["children"]) <= set(dom.expand(dom.normalize(DOMAINS["emc"]["children"],
                                                                "emc.children")))


# --- the embedded federation -----------------------------------------------------------------


@pytest.mark.e2e
def test_connection_register_publishes_domains(tmp_path):
    import engine
    from engine.data.demo import register

    with engine.connect(key_bits=512, workdir=str(tmp_path / "fed")) as con:
        register(con)
        tables = {t["name"]: t for t in con.tables()}
        cols = {c[0]: c for c in tables["ac"]["columns"]}
        assert cols["region"][3] == REGIONS and cols["smoker"][3] == [0, 1]
        assert len(cols["age"]) == 3  # no domain
        emc = {c[0]: c for c in tables["emc"]["columns"]}
        assert emc["children"][3] == [0, 1, 2, 3, 4, 5]
        con.register("t2", pd.DataFrame({"id": [1, 2], "g": [0, 7]}), party="ac", key="id",
                     domains={"g": range(0, 8)})
        with pytest.raises(DataError, match=r"t3\.g has 1 value\(s\) outside"):
            con.register("t3", pd.DataFrame({"id": [1, 2], "g": [0, 7]}), party="ac",
                         key="id", domains={"g": [0, 1]})
        with pytest.raises(ProgrammingError, match="t4.g"):
            con.register("t4", pd.DataFrame({"id": [1], "g": [0]}), party="ac", key="id",
                         domains={"g": {"min": 3}})
        assert os.path.isdir(con.workdir)
