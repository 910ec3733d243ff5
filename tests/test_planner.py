"""Binding, plan building and policies (no network, no MPC)."""

from __future__ import annotations

import re

import duckdb
import pytest

from dialect.errors import (
    BindError,
    DataError,
    InternalError,
    NotSupportedError,
    PolicyError,
    ProgrammingError,
    UnsupportedError,
)
from planner import (
    Aggregate,
    Catalog,
    ColumnRef,
    ColumnSchema,
    Party,
    Plan,
    Policy,
    PrivateJoin,
    Reveal,
    Scan,
    SecretShare,
    SecureAggregate,
    TableSchema,
    plan,
)
from planner.policy import ALL_USES

AC_COLUMNS = [("id", "BIGINT"), ("age", "BIGINT"), ("sex", "VARCHAR"), ("charges", "DOUBLE"),
              ("smoker", "BIGINT")]
EMC_COLUMNS = [("id", "BIGINT"), ("bmi", "DOUBLE"), ("children", "BIGINT"), ("region", "VARCHAR")]

Q_JOIN = "SELECT COUNT(*), AVG(ac.charges), SUM(emc.bmi) FROM ac INNER JOIN emc USING (id)"
Q_AVG = "SELECT AVG(charges) FROM ac INNER JOIN emc USING (id)"
Q_LASSO = (
    "SELECT LASSO(charges, age, bmi, smoker, alpha => 0.001) FROM ac JOIN emc ON ac.id = emc.id"
)


def _table(name: str, party: str, columns: list[tuple[str, str]], key: str | None = "id"):
    return TableSchema(name, party, key, tuple(ColumnSchema(n, t) for n, t in columns))


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(
        (Party("ac", "data", 0), Party("emc", "data", 1), Party("helper", "helper", 2)),
        (_table("ac", "ac", AC_COLUMNS), _table("emc", "emc", EMC_COLUMNS)),
    )


def ref(party: str, column: str, dtype: str) -> ColumnRef:
    return ColumnRef(party, party, column, dtype)


# --- plan structure ---------------------------------------------------------------------------


def test_join_plan_structure(catalog: Catalog) -> None:
    p = plan(Q_JOIN, catalog)
    assert isinstance(p, Plan)
    assert p.parties == ("ac", "emc", "helper")
    assert p.sql == Q_JOIN
    join = p.source
    assert isinstance(join, PrivateJoin)
    assert (join.left.party, join.left.key, join.left.reads) == ("ac", "id", ("charges",))
    assert (join.right.party, join.right.key, join.right.reads) == ("emc", "id", ("bmi",))
    assert join.helper == "helper"
    # a program plan: the scans share their local columns (tests/test_lower.py has the shapes)
    assert p.shared.columns == tuple(ColumnRef(s.party, s.table, c.name, "DOUBLE", c.bits)
                                     for s in p.scans for c in s.local)
    assert p.aggregate.aggregates == () and p.program is not None
    assert p.root.receivers == ("ac", "emc")
    assert [(c.name, c.dtype) for c in p.output] == [
        ("count_star()", "BIGINT"), ("avg(ac.charges)", "DOUBLE"), ("sum(emc.bmi)", "DOUBLE"),
    ]


def test_unqualified_column_plan(catalog: Catalog) -> None:
    p = plan(Q_AVG, catalog)
    assert [s.reads for s in p.scans] == [("charges",), ()] and p.scans[1].local == ()
    assert [c.name for c in p.output] == ["avg(charges)"]


def test_lasso_plan(catalog: Catalog) -> None:
    p = plan(Q_LASSO, catalog)
    (agg,) = p.aggregate.aggregates
    assert agg.func == "LASSO" and agg.is_model
    assert agg.args == (
        ref("ac", "charges", "DOUBLE"), ref("ac", "age", "BIGINT"), ref("emc", "bmi", "DOUBLE"),
        ref("ac", "smoker", "BIGINT"),
    )
    assert agg.options == (("alpha", 0.001),)
    assert agg.option("alpha") == 0.001
    assert p.scan_at("ac") == Scan("ac", "ac", "id", ("charges", "age", "smoker"))
    assert p.scan_at("emc") == Scan("emc", "emc", "id", ("bmi",))
    assert p.shared.columns == agg.args
    assert [(c.name, c.dtype) for c in p.output] == [("term", "VARCHAR"),
                                                     ("coefficient", "DOUBLE")]


def test_model_options_are_typed(catalog: Catalog) -> None:
    p = plan(
        "SELECT RIDGE(charges, age, alpha => 2, fit_intercept => false, max_iter => 50, "
        "tol => 1e-6, standardize => TRUE, solver => 'ldl') AS m FROM ac",
        catalog,
    )
    (agg,) = p.aggregate.aggregates
    assert agg.name == "m"
    assert agg.options == (("alpha", 2.0), ("fit_intercept", False), ("max_iter", 50),
                           ("tol", 1e-6), ("standardize", True), ("solver", "ldl"))
    assert isinstance(agg.option("alpha"), float)
    (agg,) = plan("SELECT LASSO(charges, age, alpha := 0.5) FROM ac", catalog).aggregate.aggregates
    assert agg.options == (("alpha", 0.5),) and agg.name == "lasso"


def test_single_table_plan(catalog: Catalog) -> None:
    p = plan("SELECT COUNT(*) AS n, SUM(age), AVG(age) FROM ac", catalog)
    assert isinstance(p.source, Scan) and p.source.key is None and p.source.reads == ("age",)
    assert p.parties == ("ac", "emc", "helper")
    assert [c.name for c in p.output] == ["n", "sum(age)", "avg(age)"]
    assert "helper" in p.learns()


def test_scan_columns_deduplicated_in_first_use_order(catalog: Catalog) -> None:
    p = plan("SELECT SUM(emc.bmi), AVG(age), SUM(bmi), COUNT(age), SUM(smoker), AVG(ac.age) "
             "FROM ac JOIN emc USING (id)", catalog)
    assert set(p.scan_at("ac").reads) == {"age", "smoker"}
    assert p.scan_at("emc").reads == ("bmi",)
    assert [c.party for c in p.shared.columns][0] == "ac"  # the left scan's columns first


def test_from_table_is_the_left_side(catalog: Catalog) -> None:
    p = plan("SELECT SUM(bmi) FROM emc JOIN ac USING (id)", catalog)
    assert (p.source.left.party, p.source.right.party) == ("emc", "ac")


def test_aliases_and_case(catalog: Catalog) -> None:
    p = plan('SELECT sum(A.AGE), Avg(b."bmi") FROM AC AS a JOIN emc b ON A.ID = b.id', catalog)
    assert [s.reads for s in p.scans] == [("age",), ("bmi",)]
    assert [c.name for c in p.output] == ["sum(A.AGE)", "avg(b.bmi)"]


def test_count_key_means_count_star(catalog: Catalog) -> None:
    p = plan("SELECT COUNT(ac.id), COUNT(id) FROM ac JOIN emc USING (id)", catalog)
    assert all(a.args == () for a in p.aggregate.aggregates)
    assert p.shared.columns == ()
    assert [c.name for c in p.output] == ["count(ac.id)", "count(id)"]


def test_receivers(catalog: Catalog) -> None:
    assert plan(Q_AVG, catalog, receivers=("emc",)).root.receivers == ("emc",)
    assert plan(Q_AVG, catalog, receivers=("emc", "ac", "emc")).root.receivers == ("emc", "ac")
    with pytest.raises(BindError, match="unknown party"):
        plan(Q_AVG, catalog, receivers=("nobody",))
    with pytest.raises(ProgrammingError):
        plan(Q_AVG, catalog, receivers=())


def test_fingerprint_is_deterministic(catalog: Catalog) -> None:
    a, b = plan(Q_JOIN, catalog), plan(Q_JOIN, Catalog.from_dict(catalog.to_dict()))
    assert a == b and a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != plan(Q_AVG, catalog).fingerprint()
    assert a.fingerprint() != plan(Q_JOIN, catalog, receivers=("ac",)).fingerprint()


def test_explain(catalog: Catalog) -> None:
    text = plan(Q_JOIN, catalog).explain()
    assert "PrivateJoin[paillier] ac.id = emc.id (helper: helper)" in text
    ac_line = next(line for line in text.splitlines() if "ac learns:" in line)
    assert "|ac ∩ emc| (intersection size)" in ac_line
    assert "the result (count_star(), avg(ac.charges), sum(emc.bmi))" in ac_line
    helper_line = next(line for line in text.splitlines() if "helper learns:" in line)
    assert "the result" not in helper_line


# --- output names match DuckDB ----------------------------------------------------------------

DUCKDB_NAMED = [
    Q_JOIN,
    Q_AVG,
    "SELECT count(*), Count(Charges), SUM( charges ), avg(\"charges\"), sum(AC.charges) FROM ac",
    "SELECT COUNT(a.age) AS n, sum(a.age) total, avg(a . charges) FROM ac AS a",
    "SELECT COUNT(emc.id), count(ac.id), SUM(emc.bmi) FROM ac JOIN emc ON ac.id = emc.id",
    'SELECT sum(A.AGE), Avg(b."bmi") FROM AC AS a JOIN emc b ON A.ID = b.id',
    "SELECT AVG(ac.smoker), sum(emc.children), COUNT( * ) AS \"Total count\" FROM emc "
    "JOIN ac USING (id)",
]


@pytest.mark.parametrize("sql", DUCKDB_NAMED)
def test_output_names_match_duckdb(catalog: Catalog, sql: str) -> None:
    con = duckdb.connect()
    for t in catalog.tables:
        cols = ", ".join(f'"{c.name}" {c.dtype}' for c in t.columns)
        con.execute(f"CREATE TABLE {t.name} ({cols})")
    expected = [d[0] for d in con.execute(sql).description]
    assert [c.name for c in plan(sql, catalog).output] == expected


def test_quoted_identifier_names_match_duckdb() -> None:
    cat = Catalog(
        (Party("a", "data", 0), Party("b", "data", 1), Party("h", "helper", 2)),
        (_table("t", "a", [("id", "BIGINT"), ("name", "DOUBLE"), ("Weird col", "DOUBLE")]),),
    )
    sql = 'SELECT SUM("name"), AVG("Weird col") FROM t'
    con = duckdb.connect()
    con.execute('CREATE TABLE t (id BIGINT, "name" DOUBLE, "Weird col" DOUBLE)')
    expected = [d[0] for d in con.execute(sql).description]
    assert [c.name for c in plan(sql, cat).output] == expected


# --- binder errors ----------------------------------------------------------------------------

BIND_ERRORS = [
    ("SELECT COUNT(*) FROM nope", BindError, "unknown table nope; known tables: ac, emc"),
    ("SELECT COUNT(*) FROM ac JOIN nope USING (id)", BindError, "unknown table nope"),
    ("SELECT SUM(foo) FROM ac", BindError, "unknown column foo in table ac"),
    ("SELECT SUM(ac.bmi) FROM ac JOIN emc USING (id)", BindError,
     "unknown column bmi in table ac"),
    ("SELECT SUM(foo) FROM ac JOIN emc USING (id)", BindError, "unknown column foo"),
    ("SELECT SUM(x.age) FROM ac JOIN emc USING (id)", BindError, "unknown table or alias x"),
    ("SELECT SUM(ac.age) FROM ac AS a JOIN emc USING (id)", BindError,
     "table ac is aliased as a"),
    ("SELECT COUNT(*) FROM ac AS x JOIN emc AS x USING (id)", BindError,
     "duplicate table name or alias x"),
    ("SELECT COUNT(id) FROM ac JOIN emc ON ac.id = emc.id", BindError, "ambiguous column id"),
    ("SELECT COUNT(*) FROM ac JOIN emc USING (age)", BindError,
     "unknown column age in table emc"),
    ("SELECT COUNT(*) FROM ac JOIN emc ON ac.age = emc.id", BindError,
     "the join must be on the declared key"),
    ("SELECT COUNT(*) FROM ac JOIN emc ON ac.id = emc.children", BindError,
     "the join must be on the declared key"),
    ("SELECT COUNT(*) FROM ac JOIN emc ON ac.id = ac.id", BindError,
     "must compare a column of each table"),
    ("SELECT SUM(id) FROM ac JOIN emc USING (id)", BindError,
     "the key is never revealed nor aggregated"),
    ("SELECT AVG(ac.id) FROM ac", BindError, "the key is never revealed nor aggregated"),
    ("SELECT LASSO(charges, ac.id) FROM ac JOIN emc USING (id)", BindError,
     "the key is never revealed nor aggregated"),
    ("SELECT SUM(sex) FROM ac", DataError,
     "column sex of ac is VARCHAR (non-numeric), SUM needs a numeric"),
    ("SELECT AVG(emc.region) FROM ac JOIN emc USING (id)", DataError,
     "column region of emc is VARCHAR (non-numeric), AVG needs a numeric column"),
    ("SELECT LINREG(charges, sex) FROM ac", DataError, "column sex of ac is VARCHAR"),
    ("SELECT LASSO(charges, age, charges) FROM ac", ProgrammingError,
     "target charges is also a feature"),
    ("SELECT LASSO(charges, age, ac.age) FROM ac", ProgrammingError, "feature age appears twice"),
    ("SELECT LASSO(charges, age, alpha => 0.1, bmi) FROM ac JOIN emc USING (id)",
     ProgrammingError, "after named options"),
    ("SELECT LASSO(charges, alpha => 0.1) FROM ac", ProgrammingError, "at least one feature"),
    ("SELECT LASSO(charges, age, beta => 1) FROM ac", ProgrammingError, "unknown option beta"),
    ("SELECT LASSO(charges, age, alpha => age) FROM ac", ProgrammingError,
     "must be a literal number, boolean or string"),
    ("SELECT LASSO(charges, age, alpha => 1, alpha => 2) FROM ac", ProgrammingError,
     "given twice"),
    ("SELECT LASSO(charges, age, alpha => -1) FROM ac", ProgrammingError, "a number >= 0"),
    ("SELECT RIDGE(charges, age, fit_intercept => 1) FROM ac", ProgrammingError, "a boolean"),
    ("SELECT RIDGE(charges, age, max_iter => 2.5) FROM ac", ProgrammingError, "an integer"),
    ("SELECT LINREG(charges, age, alpha => 1) FROM ac", ProgrammingError, "unknown option alpha"),
    ("SELECT LASSO(charges, age), COUNT(*) FROM ac", NotSupportedError,
     "cannot be mixed with other aggregates"),
    ("SELECT COUNT(*), RIDGE(charges, age) FROM ac", NotSupportedError, "must be the only item"),
]


@pytest.mark.parametrize(("sql", "cls", "words"), BIND_ERRORS, ids=[b[2] for b in BIND_ERRORS])
def test_bind_errors(catalog: Catalog, sql: str, cls: type, words: str) -> None:
    with pytest.raises(cls) as info:
        plan(sql, catalog)
    assert words in str(info.value)
    assert not isinstance(info.value, UnsupportedError)


def test_join_needs_two_data_parties(catalog: Catalog) -> None:
    cat = catalog.with_tables(catalog.tables + (_table("ac2", "ac", [("id", "BIGINT"),
                                                                      ("x", "DOUBLE")]),))
    with pytest.raises(NotSupportedError, match="two different data parties"):
        plan("SELECT SUM(x) FROM ac JOIN ac2 USING (id)", cat)
    cat = catalog.with_tables(catalog.tables + (_table("h", "helper", [("id", "BIGINT")]),))
    with pytest.raises(BindError, match="not a data party"):
        plan("SELECT COUNT(*) FROM h", cat)
    cat = catalog.with_tables((catalog.tables[0], _table("emc", "emc", EMC_COLUMNS, key=None)))
    with pytest.raises(BindError, match="no declared key"):
        plan("SELECT COUNT(*) FROM ac JOIN emc USING (id)", cat)
    no_helper = Catalog(catalog.parties[:2], catalog.tables)
    with pytest.raises(NotSupportedError, match="helper"):
        plan(Q_AVG, no_helper)
    assert plan("SELECT SUM(age) FROM ac", no_helper).source.party == "ac"


def test_grammar_errors_come_first(catalog: Catalog) -> None:
    with pytest.raises(UnsupportedError, match="LEFT JOIN"):
        plan("SELECT COUNT(*) FROM nope LEFT JOIN emc USING (id)", catalog)


# --- policies ---------------------------------------------------------------------------------


def test_default_policy_allows_everything(catalog: Catalog) -> None:
    pol = Policy("ac")
    assert pol.min_intersection == 10
    assert pol.allowed("ac", "charges") == ALL_USES
    for sql in (Q_JOIN, Q_AVG, Q_LASSO):
        pol.check(plan(sql, catalog))
    assert Policy.from_dict("ac", {}) == pol
    assert hash(pol) == hash(Policy.from_dict("ac", None))
    Policy("helper").check(plan(Q_JOIN, catalog))


def test_policy_allow_by_column_table_star(catalog: Catalog) -> None:
    pol = Policy("emc", {"*": ["COUNT", "SUM", "AVG"], "emc": ["COUNT", "AVG"],
                         "emc.bmi": ["AVG", "LASSO"]})
    assert pol.allowed("emc", "bmi") == {"AVG", "LASSO"}
    assert pol.allowed("emc", "children") == {"COUNT", "AVG"}
    assert pol.allowed("other", "x") == {"COUNT", "SUM", "AVG"}
    assert pol.rule("emc", "bmi") == "emc.bmi" and pol.rule("emc") == "emc"
    pol.check(plan("SELECT AVG(bmi), AVG(children), COUNT(*) FROM ac JOIN emc USING (id)",
                   catalog))
    pol.check(plan(Q_LASSO, catalog))
    with pytest.raises(PolicyError) as info:
        pol.check(plan(Q_JOIN, catalog))
    err = info.value
    assert err.party == "emc" and err.rule == "allow"
    assert "refused by policy of emc: SUM is not allowed on emc.bmi" in str(err)
    with pytest.raises(PolicyError, match="SUM is not allowed on emc.children"):
        pol.check(plan("SELECT SUM(children) FROM emc", catalog))
    with pytest.raises(PolicyError, match="RIDGE is not allowed on emc.bmi"):
        pol.check(plan("SELECT RIDGE(charges, bmi) FROM ac JOIN emc USING (id)", catalog))


def test_policy_ignores_other_parties_tables(catalog: Catalog) -> None:
    pol = Policy("emc", {"*": []})
    pol.check(plan("SELECT SUM(age), AVG(charges) FROM ac", catalog))
    pol.check(plan("SELECT SUM(age) FROM ac JOIN emc USING (id)", catalog))
    with pytest.raises(PolicyError, match=r"COUNT is not allowed on table emc \(COUNT\(\*\)\)"):
        pol.check(plan("SELECT COUNT(*) FROM ac JOIN emc USING (id)", catalog))


def test_policy_count_star_uses_table_entry(catalog: Catalog) -> None:
    pol = Policy("ac", {"*": ["SUM"], "ac": ["COUNT"]})
    pol.check(plan("SELECT COUNT(*) FROM ac", catalog))
    pol.check(plan("SELECT COUNT(ac.id) FROM ac JOIN emc USING (id)", catalog))
    with pytest.raises(PolicyError, match="COUNT is not allowed on table ac"):
        Policy("ac", {"ac": ["SUM"], "ac.age": ["COUNT"]}).check(
            plan("SELECT COUNT(*) FROM ac", catalog))
    Policy("ac", {"ac": ["SUM"], "ac.age": ["COUNT"]}).check(
        plan("SELECT COUNT(age) FROM ac", catalog))


def test_policy_min_rows(catalog: Catalog) -> None:
    pol = Policy("ac", min_intersection=50)
    p = plan(Q_JOIN, catalog)
    pol.check_rows(50, p)
    with pytest.raises(PolicyError) as info:
        pol.check_rows(49, p)
    assert info.value.rule == "min_intersection" and "intersection is smaller" in str(info.value)
    assert "49" not in str(info.value)  # a refusal says "too small", never the size
    with pytest.raises(PolicyError, match="the table is smaller than the minimum of 50"):
        pol.check_rows(3, plan("SELECT SUM(age) FROM ac", catalog))


def test_policy_dict_round_trip() -> None:
    d = {"min_intersection": 25, "allow": {"*": ["COUNT", "SUM", "AVG"], "emc.bmi": ["AVG"]}}
    pol = Policy.from_dict("emc", d)
    assert pol.min_intersection == 25
    assert pol.allowed("emc", "bmi") == {"AVG"}
    out = pol.to_dict()
    assert out == {"party": "emc", "min_intersection": 25,
                   "allow": {"*": ["AVG", "COUNT", "SUM"], "emc.bmi": ["AVG"]}}
    assert Policy.from_dict("emc", out) == pol
    assert Policy("emc", {"EMC.BMI": ["avg"]}).allowed("emc", "bmi") == {"AVG"}


@pytest.mark.parametrize(
    "d",
    [
        {"allow": {"*": ["MODE"]}},
        {"allow": {"*": ["ORDER BY"]}},
        {"min_intersection": -1},
        {"min_intersection": "10"},
        {"deny": {}},
        {"party": "ac"},
        {"allow": {"a.b.c": ["SUM"]}},
    ],
)
def test_policy_refuses_bad_config(d: dict) -> None:
    with pytest.raises(ValueError):
        Policy.from_dict("emc", d)


def test_policy_describe(catalog: Catalog) -> None:
    pol = Policy("emc", {"emc.bmi": ["SUM"]}, min_intersection=20)
    lines = pol.describe(plan(Q_JOIN, catalog))
    assert "emc: SUM on emc.bmi allowed by rule 'emc.bmi'" in lines
    assert "emc: COUNT on table emc (COUNT(*)) allowed by the default (all aggregates)" in lines
    assert lines[-1].startswith("emc: the intersection must have at least 20 rows")
    assert "no table of helper" in Policy("helper").describe(plan(Q_JOIN, catalog))[0]


# --- plan nodes refuse invalid construction ---------------------------------------------------


def test_plan_nodes_check_invariants() -> None:
    a = Scan("ac", "ac", "id", ("charges",))
    b = Scan("emc", "emc", "id", ("bmi",))
    charges = ref("ac", "charges", "DOUBLE")
    with pytest.raises(InternalError):
        Scan("ac", "ac", "id", ("id",))
    with pytest.raises(InternalError):
        Scan("ac", "ac", None, ("age", "AGE"))
    with pytest.raises(InternalError):
        PrivateJoin(a, Scan("ac", "ac2", "id", ()), "helper")
    with pytest.raises(InternalError):
        PrivateJoin(a, b, "ac")
    with pytest.raises(InternalError):
        PrivateJoin(a, Scan("emc", "emc", None, ()), "helper")
    with pytest.raises(InternalError):
        PrivateJoin(a, b, "helper", protocol="naive")
    with pytest.raises(InternalError):
        SecretShare(a, (ref("emc", "bmi", "DOUBLE"),))
    with pytest.raises(InternalError):
        SecretShare(a, (charges, charges))
    with pytest.raises(InternalError):
        Aggregate("MAX", (charges,), "m")
    with pytest.raises(InternalError):
        Aggregate("SUM", (), "s")
    with pytest.raises(InternalError):
        Aggregate("LASSO", (charges,), "lasso")
    shared = SecretShare(PrivateJoin(a, b, "helper"), (charges,))
    with pytest.raises(InternalError):
        SecureAggregate(shared, ())
    with pytest.raises(InternalError):
        SecureAggregate(shared, (Aggregate("SUM", (ref("emc", "bmi", "DOUBLE"),), "s"),))
    model = Aggregate("LASSO", (charges, charges), "lasso")
    with pytest.raises(InternalError):
        SecureAggregate(shared, (model, Aggregate("COUNT", (), "n")))
    with pytest.raises(InternalError):
        Reveal(SecureAggregate(shared, (Aggregate("COUNT", (), "n"),)), ())
    with pytest.raises(InternalError):
        ColumnRef("ac", "", "x")


@pytest.mark.parametrize("sql,words", [
    ("SELECT LASSO(charges, age, alpha => 0) FROM ac", "LASSO needs alpha > 0"),
    ("SELECT LASSO(charges, age, alpha => -1) FROM ac", "alpha of LASSO must be"),
    ("SELECT LASSO(charges, age, solver => 'newton') FROM ac", "unknown solver 'newton'"),
    ("SELECT RIDGE(charges, age, solver => 'admm') FROM ac", "known: auto, ldl"),
])
def test_model_option_refusals(catalog: Catalog, sql: str, words: str) -> None:
    with pytest.raises(ProgrammingError, match=re.escape(words)):
        plan(sql, catalog)


# --- the same names and refusals through the logical binder (program plans) -------------------


def _bind_any(catalog: Catalog, sql: str):
    from dialect import parse_query
    from planner.binder import Binder

    select = parse_query(sql).select
    binder = Binder(catalog, sql)
    return (binder.bind if Binder.is_model_query(select) else binder.bind_logical)(select)


@pytest.mark.parametrize(("sql", "cls", "words"), BIND_ERRORS, ids=[b[2] for b in BIND_ERRORS])
def test_bind_errors_logical(catalog: Catalog, sql: str, cls: type, words: str) -> None:
    with pytest.raises(cls) as info:
        _bind_any(catalog, sql)
    assert words in str(info.value)


@pytest.mark.parametrize("sql", DUCKDB_NAMED)
def test_logical_output_names_match_duckdb(catalog: Catalog, sql: str) -> None:
    con = duckdb.connect()
    for t in catalog.tables:
        cols = ", ".join(f'"{c.name}" {c.dtype}' for c in t.columns)
        con.execute(f"CREATE TABLE {t.name} ({cols})")
    described = con.execute(sql).description
    lq = _bind_any(catalog, sql)
    assert [i.name for i in lq.items] == [d[0] for d in described]
    assert [i.dtype for i in lq.items] == [str(d[1]) for d in described]
