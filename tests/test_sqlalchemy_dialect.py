"""The SQLAlchemy dialect ``mpcsql`` on a real embedded federation (three party processes).

One federation for the module: ``create_engine("mpcsql://?join_protocol=masked")`` starts it
with the bundled Medical Costs split (the masked join keeps each query to about a second).
Results are compared with DuckDB on the plaintext join of the same split; the ``mpcsql://host``
form is tested against the same federation's ac server with its TLS credentials.
"""

from __future__ import annotations

import re
import warnings
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
import sqlalchemy
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    case,
    cast,
    column,
    create_engine,
    desc,
    distinct,
    func,
    inspect,
    literal_column,
    select,
    text,
    union,
)

from dialect.errors import InterfaceError, NotSupportedError
from engine.client.sa_dialect import MpcsqlDialect, linreg, ridge
from engine.data import demo
from tests.conftest import OPEN_POLICY, alive

Double = getattr(sqlalchemy, "Double", Float)  # 2.0; the file also runs under 1.4 (Superset's)
e2e = pytest.mark.e2e  # the tests that use the module's federation


@pytest.fixture(scope="module")
def sa_engine():
    eng = create_engine("mpcsql://?join_protocol=masked",
                        connect_args={"policies": OPEN_POLICY})
    with eng.connect() as c:
        fed = c.connection.dbapi_connection.federation
    pids = fed.pids()
    yield eng
    eng.dispose()  # stops the embedded federation
    assert not any(alive(p) for p in pids.values())


@pytest.fixture(scope="module")
def tables(sa_engine):
    md = MetaData()
    return (Table("ac", md, autoload_with=sa_engine), Table("emc", md, autoload_with=sa_engine))


@pytest.fixture(scope="module")
def plain():
    ac, emc = demo.split()
    return {"ac": ac, "emc": emc}


def raw(sa_engine):
    """The DB-API connection the engine's static pool holds (the embedded federation's)."""
    return sa_engine.raw_connection().driver_connection


def duckdb_rows(stmt, plain):
    """``stmt`` compiled by the mpcsql dialect with its parameters inlined, run in DuckDB."""
    sql = str(stmt.compile(dialect=MpcsqlDialect(), compile_kwargs={"literal_binds": True}))
    return demo.plaintext(sql, plain)[1]


def assert_rows_close(secure, plain, rel=1e-6, abs_=1e-4):
    assert len(secure) == len(plain), (secure, plain)
    for srow, prow in zip(secure, plain, strict=True):
        assert len(srow) == len(prow)
        for s, p in zip(srow, prow, strict=True):
            if isinstance(p, float):
                assert s == pytest.approx(p, rel=rel, abs=abs_), (srow, prow)
            else:
                assert s == p, (srow, prow)


def joined(ac, emc):
    return ac.join(emc, ac.c.id == emc.c.id)


# --- reflection -----------------------------------------------------------------------------


@e2e
def test_reflection_reads_the_federated_catalog(sa_engine):
    insp = inspect(sa_engine)
    assert insp.get_schema_names() == ["main"]
    assert insp.get_table_names() == ["ac", "emc"]
    assert insp.get_view_names() == []
    assert insp.has_table("ac") and insp.has_table("emc")
    assert not insp.has_table("patients")
    assert not insp.has_table("SELECT COUNT(*) FROM ac")  # what pandas asks of a query string
    cols = {c["name"]: c for c in insp.get_columns("ac")}
    assert list(cols) == ["id", "age", "sex", "smoker", "region", "charges"]
    assert isinstance(cols["id"].get("type"), BigInteger) and not cols["id"]["nullable"]
    assert isinstance(cols["charges"]["type"], Double)
    assert isinstance(cols["region"]["type"], String)
    assert "northeast" in cols["region"]["comment"]  # the declared GROUP BY domain
    assert [c["name"] for c in insp.get_columns("emc")] == ["id", "bmi", "children"]
    assert insp.get_pk_constraint("ac")["constrained_columns"] == ["id"]
    assert insp.get_pk_constraint("emc")["constrained_columns"] == ["id"]
    assert insp.get_foreign_keys("ac") == [] and insp.get_indexes("emc") == []
    assert "party ac" in insp.get_table_comment("ac")["text"]
    md = MetaData()
    md.reflect(sa_engine)
    assert sorted(md.tables) == ["ac", "emc"]
    assert [c.name for c in md.tables["emc"].primary_key] == ["id"]


# --- Core queries vs DuckDB -----------------------------------------------------------------


@e2e
def test_join_where_group_having_order_limit_matches_duckdb(sa_engine, tables, plain):
    ac, emc = tables
    stmt = (select(ac.c.region, func.avg(ac.c.charges).label("avg_charges"),
                   func.count().label("n"), func.sum(emc.c.children).label("kids"))
            .select_from(joined(ac, emc)).where(emc.c.bmi > 30)
            .group_by(ac.c.region).having(func.count() > 10)
            .order_by(desc("avg_charges")).limit(3))
    sql = str(stmt.compile(dialect=MpcsqlDialect()))
    assert "JOIN emc ON ac.id = emc.id" in sql and "LIMIT ?" in sql  # a parameter, not text
    with sa_engine.connect() as c:
        rows = [tuple(r) for r in c.execute(stmt)]
    expected = duckdb_rows(stmt, plain)
    assert len(expected) == 3
    assert_rows_close(rows, expected)
    assert raw(sa_engine).queries()[-1]["sql"].startswith("SET join_protocol = 'masked'; ")


@e2e
def test_case_key_filter_and_two_party_aggregates_match_duckdb(sa_engine, tables, plain):
    ac, emc = tables
    band = case((ac.c.age < 40, "young"), else_="older").label("band")
    stmt = (select(band, func.stddev(ac.c.charges).filter(emc.c.children > 0).label("sd"),
                   func.corr(ac.c.charges, emc.c.bmi).label("r"),
                   func.var_pop(emc.c.bmi).label("v"))
            .select_from(joined(ac, emc)).where(ac.c.smoker == 0)
            .group_by(band).order_by(band))
    with sa_engine.connect() as c:
        rows = [tuple(r) for r in c.execute(stmt)]
    assert [r[0] for r in rows] == ["older", "young"]
    assert_rows_close(rows, duckdb_rows(stmt, plain), rel=1e-5)


@e2e
def test_one_party_in_list_offset_and_parameters_match_duckdb(sa_engine, tables, plain):
    ac, _ = tables
    stmt = (select(ac.c.smoker, func.count().label("n"), func.max(ac.c.age).label("oldest"))
            .where(ac.c.region.in_(["southwest", "northeast"]))
            .group_by(ac.c.smoker).order_by(ac.c.smoker).limit(1).offset(1))
    with sa_engine.connect() as c:
        rows = [tuple(r) for r in c.execute(stmt)]
    assert rows[0][0] == 1
    assert_rows_close(rows, duckdb_rows(stmt, plain))


@e2e
def test_a_string_parameter_is_a_literal_not_sql(sa_engine, tables, plain):
    ac, _ = tables
    evil = "x' OR 1=1 --"
    stmt = select(func.count().label("n")).select_from(ac).where(ac.c.region == evil)
    with sa_engine.connect() as c:
        assert c.execute(stmt).scalar() == 0
        assert c.execute(text("SELECT COUNT(*) FROM ac WHERE region = :r"),
                         {"r": evil}).scalar() == 0
    assert duckdb_rows(stmt, plain) == [(0,)]
    assert "'x'' OR 1=1 --'" in raw(sa_engine).queries()[-1]["sql"]


@e2e
def test_model_aggregate_with_named_options(sa_engine, tables, plain):
    ac, emc = tables
    stmt = select(linreg(ac.c.charges, ac.c.age, emc.c.bmi)).select_from(joined(ac, emc))
    with sa_engine.connect() as c:
        result = c.execute(stmt)
        assert list(result.keys()) == ["term", "coefficient"]
        coef = dict(result.all())
    j = plain["ac"].merge(plain["emc"], on="id")
    x = np.column_stack([np.ones(len(j)), j["age"], j["bmi"]])
    ref, *_ = np.linalg.lstsq(x, j["charges"].to_numpy(), rcond=None)
    assert list(coef) == ["intercept", "age", "bmi"]
    assert list(coef.values()) == pytest.approx(list(ref), rel=1e-4)
    from engine.client.sa_dialect import lasso

    sql = str(select(lasso(ac.c.charges, ac.c.age, alpha=0.001, standardize=True))
              .compile(dialect=MpcsqlDialect()))
    assert "lasso(ac.charges, ac.age, alpha => 0.001, standardize => TRUE)" in sql


def test_core_constructs_compile_to_the_accepted_grammar():
    """Everything the compiler lets through here parses under the secure grammar."""
    from dialect import parse_query

    md = MetaData()
    ac = Table("ac", md, Column("id", BigInteger, primary_key=True), Column("age", BigInteger),
               Column("region", String), Column("charges", Double), Column("smoker", BigInteger))
    emc = Table("emc", md, Column("id", BigInteger, primary_key=True), Column("bmi", Double))
    j = joined(ac, emc)
    a, e = ac.alias("a"), emc.alias("e")
    band = case((ac.c.age < 40, "young"), else_="older").label("band")
    stmts = [
        select(func.avg(ac.c.charges).label("x")).select_from(j)
        .order_by(desc("x").nulls_last()).limit(5).offset(2),
        select(func.sum(cast(ac.c.age, Numeric(10, 2))), func.avg(cast(ac.c.age, Float)),
               func.sum(cast(ac.c.age, Integer))).select_from(j),
        select(func.count()).select_from(j).where(
            emc.c.bmi.between(20, 30) & ac.c.region.is_not(None) & ~(ac.c.smoker == 1)
            & ac.c.region.not_in(["northwest"])),
        select(func.coalesce(func.sum(func.abs(ac.c.charges - 100)), 0)).select_from(j),
        select(func.quantile_cont(ac.c.charges, 0.9), func.median(emc.c.bmi),
               func.regr_slope(ac.c.charges, emc.c.bmi),
               func.covar_samp(ac.c.charges, emc.c.bmi)).select_from(j),
        select(a.c.region, func.count()).select_from(a.join(e, a.c.id == e.c.id))
        .group_by(a.c.region),
        select(func.sum(ac.c.charges) / func.count(), func.sum(ac.c.charges / 2),
               func.count().filter(ac.c.region.in_(["southwest", "northeast"]))).select_from(j),
        select(band, func.count()).select_from(j).group_by("band").having(func.count() > 3),
        select(ridge(ac.c.charges, ac.c.age, emc.c.bmi, alpha=0.5)).select_from(j),
    ]
    for stmt in stmts:
        sql = str(stmt.compile(dialect=MpcsqlDialect(), compile_kwargs={"literal_binds": True}))
        parse_query(sql)  # raises ParseError / UnsupportedError if outside the grammar


# --- derived tables (BI tools' saved queries) ------------------------------------------------

#: Apache Superset's virtual dataset: a GROUP BY query, selected from as ``virtual_table``.
VIRTUAL = ("SELECT region, AVG(charges) AS avg_charges, COUNT(*) AS n "
           "FROM ac JOIN emc USING (id) WHERE bmi > 25 GROUP BY region\n")


def superset_chart(sql=VIRTUAL, metric="max", order=True, where=None):
    """The statement Superset 6.1 builds for a bar chart of ``metric(avg_charges)`` by region
    over the virtual dataset ``sql`` (from its query log: labels, GROUP BY, ORDER BY, LIMIT)."""
    vt = text(sql).columns().subquery("virtual_table")
    label = f"{metric.upper()}(avg_charges)"
    agg = getattr(func, metric)(column("avg_charges"))
    stmt = (select(column("region").label("region"), agg.label(label))
            .select_from(vt).group_by(column("region")).limit(10000))
    if where is not None:
        stmt = stmt.where(where)
    return stmt.order_by(literal_column(f'"{label}"').desc()) if order else stmt


def compiled(stmt, literal=True):
    kw = {"compile_kwargs": {"literal_binds": True}} if literal else {}
    return str(stmt.compile(dialect=MpcsqlDialect(), **kw))


def test_derived_tables_merge_into_one_select_of_the_grammar():
    from dialect import parse_query

    md = MetaData()
    ac = Table("ac", md, Column("id", BigInteger), Column("region", String),
               Column("charges", Double), Column("age", BigInteger))
    emc = Table("emc", md, Column("id", BigInteger), Column("bmi", Double))
    view = (select(ac.c.region, ac.c.charges, (emc.c.bmi * 2).label("b2"))
            .select_from(joined(ac, emc)).where(ac.c.age > 30).subquery("v"))
    cases = {
        superset_chart(): (
            'SELECT region AS region, AVG(charges) AS "MAX(avg_charges)" FROM ac JOIN emc '
            'USING (id) WHERE bmi > 25 GROUP BY region ORDER BY "MAX(avg_charges)" DESC '
            "LIMIT 10000"),
        # WHERE on a GROUP BY query's rows is its HAVING; * is its columns
        select(text("*")).select_from(text(VIRTUAL).columns().subquery("virtual_table"))
        .where(column("n") > 50).limit(5): (
            "SELECT region, AVG(charges) AS avg_charges, COUNT(*) AS n FROM ac JOIN emc USING "
            "(id) WHERE bmi > 25 GROUP BY region HAVING COUNT(*) > 50 LIMIT 5"),
        # a view: the references become its expressions, the WHEREs are ANDed
        select(view.c.region, func.avg(view.c.b2).label("m")).where(view.c.charges < 5000)
        .group_by(view.c.region): (
            "SELECT ac.region, AVG((emc.bmi * 2)) AS m FROM ac JOIN emc ON ac.id = emc.id "
            "WHERE (ac.age > 30) AND (ac.charges < 5000) GROUP BY ac.region"),
    }
    for stmt, want in cases.items():
        got = compiled(stmt)
        assert got == want
        parse_query(got)  # within the grammar
    # rows of a view merge too, and the grammar refuses them as it would written directly
    rows = compiled(select(view.c.b2.label("b2"), view.c.region).select_from(view).limit(1))
    assert rows == ("SELECT (emc.bmi * 2) AS b2, ac.region FROM ac JOIN emc ON ac.id = emc.id "
                    "WHERE ac.age > 30 LIMIT 1")
    with pytest.raises(NotSupportedError, match="raw column"):
        parse_query(rows)
    # parameters stay parameters, in the merged query's order
    c = select(view.c.region, func.count().label("n")).where(view.c.charges < 5000) \
        .group_by(view.c.region).having(func.count() > 3).limit(2).compile(
            dialect=MpcsqlDialect())
    assert str(c).endswith("WHERE (ac.age > ?) AND (ac.charges < ?) GROUP BY ac.region "
                           "HAVING COUNT(*) > ? LIMIT ?")
    assert [c.params[n] for n in c.positiontup] == [30, 5000, 3, 2]


def test_derived_tables_that_are_not_one_query_are_refused():
    md = MetaData()
    ac = Table("ac", md, Column("id", BigInteger), Column("region", String),
               Column("charges", Double))
    emc = Table("emc", md, Column("id", BigInteger), Column("bmi", Double))
    grouped = text(VIRTUAL).columns().subquery("virtual_table")
    refused = {
        "COUNT(*) aggregates the rows of a GROUP BY query":
            select(func.count()).select_from(grouped),
        "COUNT(avg_charges) aggregates the rows":
            superset_chart(metric="count"),
        "STDDEV(avg_charges) aggregates the rows": superset_chart(metric="stddev"),
        "does not group by region": select(func.sum(column("avg_charges"))).select_from(grouped),
        "not an output of the derived table": select(column("bmi")).select_from(grouped),
        "a subquery in FROM is not": select(func.count()).select_from(  # joined: not merged
            grouped.join(emc, literal_column("virtual_table.id") == emc.c.id)),
        "its LIMIT": select(func.avg(column("charges"))).select_from(
            select(ac.c.charges).limit(3).subquery()),
        "a subquery inside": select(column("region")).select_from(grouped).where(
            column("n") > text("(SELECT 1)")),
    }
    for message, stmt in refused.items():
        with pytest.raises(NotSupportedError, match=re.escape(message)) as e:
            compiled(stmt)
        assert e.value.construct == "a subquery in FROM"
    sq = select(ac.c.charges).subquery()
    with pytest.raises(NotSupportedError, match="a subquery is not") as e:  # not in FROM
        compiled(select(func.avg(sq.c.charges)).where(
            sq.c.charges > select(func.avg(ac.c.charges)).scalar_subquery()))
    assert e.value.construct == "a subquery"


@e2e
def test_superset_virtual_dataset_chart_runs_as_one_secure_query(sa_engine, plain):
    """Superset's chart over a virtual dataset: the secure answer equals DuckDB's on the
    plaintext join, where DuckDB runs the wrapped query as written (with its subquery)."""
    for stmt in (superset_chart(), superset_chart(metric="avg", where=column("n") > 100),
                 superset_chart(metric="sum", order=False).order_by(column("region"))):
        with sa_engine.connect() as c:
            secure = sorted(c.execute(stmt).all())
        reference = str(stmt.compile(compile_kwargs={"literal_binds": True}))  # generic SQL
        assert "virtual_table" in reference
        assert_rows_close(secure, sorted(demo.plaintext(reference, plain)[1]))
    assert len(secure) == 4


@e2e
def test_view_derived_table_with_parameters(sa_engine, tables, plain):
    ac, emc = tables
    view = (select(ac.c.region, ac.c.charges, emc.c.bmi).select_from(joined(ac, emc))
            .where(ac.c.smoker == 1).subquery("v"))
    stmt = (select(view.c.region, func.avg(view.c.charges).label("a"), func.count().label("n"))
            .where(view.c.bmi > 30).group_by(view.c.region).order_by(view.c.region))
    with sa_engine.connect() as c:
        secure = c.execute(stmt).all()
    reference = str(stmt.compile(compile_kwargs={"literal_binds": True}))
    assert_rows_close(secure, demo.plaintext(reference, plain)[1])


@e2e
def test_url_settings_reach_raw_dbapi_cursors(sa_engine):
    """Superset runs its SQL on the DB-API cursor, past do_execute: join_protocol=masked
    still applies there."""
    dbapi_con = sa_engine.raw_connection().driver_connection
    cur = dbapi_con.cursor()
    cur.execute("SELECT COUNT(*) FROM ac JOIN emc USING (id)")
    assert cur.fetchall() == [(870,)]
    assert dbapi_con.queries()[-1]["sql"].startswith("SET join_protocol = 'masked'; SELECT")
    assert "mask" in cur.stats["ac"]["phases"]  # the masked join ran
    cur.execute("SET join_protocol = 'paillier'; SELECT COUNT(*) FROM ac")  # its own SET wins
    assert dbapi_con.queries()[-1]["sql"].startswith("SET join_protocol = 'paillier';")


# --- pandas ---------------------------------------------------------------------------------


@e2e
def test_pandas_read_sql_text_and_select_without_warnings(sa_engine, tables, plain):
    ac, emc = tables
    sql = ("SELECT region, COUNT(*) AS n, AVG(emc.bmi) AS bmi FROM ac JOIN emc USING (id) "
           "GROUP BY region ORDER BY region")
    stmt = (select(ac.c.sex, func.sum(ac.c.charges).label("total"))
            .select_from(joined(ac, emc)).group_by(ac.c.sex).order_by(ac.c.sex))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from_text = pd.read_sql(sql, sa_engine)
        from_core = pd.read_sql(stmt, sa_engine)
    assert [str(w.message) for w in caught] == []
    assert list(from_text.columns) == ["region", "n", "bmi"]
    assert_rows_close(list(from_text.itertuples(index=False, name=None)),
                      demo.plaintext(sql, plain)[1])
    assert list(from_core.columns) == ["sex", "total"]
    assert_rows_close(list(from_core.itertuples(index=False, name=None)),
                      duckdb_rows(stmt, plain))


# --- refusals while compiling -----------------------------------------------------------------

REFUSED = {
    "a subquery": lambda ac, emc: select(func.avg(ac.c.charges)).where(
        ac.c.age > select(func.avg(ac.c.age)).scalar_subquery()),
    "a subquery in FROM": lambda ac, emc: select(func.count()).select_from(  # COUNT of groups
        select(ac.c.region, func.avg(ac.c.charges)).group_by(ac.c.region).subquery()),
    "UNION": lambda ac, emc: union(select(func.count()).select_from(ac),
                                   select(func.count()).select_from(emc)),
    "DISTINCT": lambda ac, emc: select(ac.c.region).distinct(),
    "DISTINCT inside an aggregate": lambda ac, emc: select(func.count(distinct(ac.c.region))),
    "a window function (OVER)": lambda ac, emc: select(
        func.avg(ac.c.charges).over(partition_by=ac.c.region)),
    "LEFT OUTER JOIN": lambda ac, emc: select(func.count()).select_from(
        ac.outerjoin(emc, ac.c.id == emc.c.id)),
    "FULL OUTER JOIN": lambda ac, emc: select(func.count()).select_from(
        ac.outerjoin(emc, ac.c.id == emc.c.id, full=True)),
    "a cross join": lambda ac, emc: select(func.count(), func.avg(emc.c.bmi)).select_from(ac),
    "LIKE": lambda ac, emc: select(func.count()).where(ac.c.region.like("south%")),
    "function LOWER": lambda ac, emc: select(func.count()).where(
        func.lower(ac.c.region) == "x"),
    "WITH": lambda ac, emc: select(func.count()).select_from(select(ac.c.age).cte()),
    "EXISTS": lambda ac, emc: select(func.count()).select_from(ac).where(
        select(emc.c.id).exists()),
    "modulo": lambda ac, emc: select(func.sum(ac.c.age % 2)),
    "INSERT": lambda ac, emc: ac.insert().values(id=1),
    "DELETE": lambda ac, emc: ac.delete(),
}


@e2e
@pytest.mark.parametrize("construct", list(REFUSED))
def test_constructs_outside_the_grammar_are_refused_before_any_query(sa_engine, tables,
                                                                     construct):
    stmt = REFUSED[construct](*tables)
    before = len(raw(sa_engine).queries())
    with sa_engine.connect() as c:
        with pytest.raises(NotSupportedError, match=re.escape(construct)) as e:
            c.execute(stmt)
    assert e.value.construct.startswith(construct)
    with pytest.raises(NotSupportedError, match=re.escape(construct)):
        pd.read_sql(stmt, sa_engine)
    assert len(raw(sa_engine).queries()) == before  # refused here: the server saw nothing


@e2e
def test_ddl_is_refused(sa_engine):
    md = MetaData()
    Table("patients", md, Column("id", BigInteger, primary_key=True))
    with pytest.raises(NotSupportedError, match="DDL"):
        md.create_all(sa_engine)


@e2e
def test_a_server_refusal_keeps_its_pep249_class(sa_engine, tables):
    import sqlalchemy.exc

    ac, _ = tables
    with sa_engine.connect() as c, pytest.raises(sqlalchemy.exc.NotSupportedError) as e:
        c.execute(select(func.avg(ac.c.charges)).group_by(ac.c.age))  # age: no domain
    assert isinstance(e.value.orig, NotSupportedError)
    assert "public domain" in str(e.value.orig)


# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url, message", [
    ("mpcsql://?bogus=1", "unknown option"),
    ("mpcsql://?data=all", "data="),
    ("mpcsql://?key_bits=many", "key_bits"),
    ("mpcsql://analyst:secret@ac-host:7400", "no user or password"),
    ("mpcsql://ac-host:7400?workdir=/tmp", "unknown option"),
    ("mpcsql://ac-host:7400/db", "no database path"),
])
def test_bad_urls_are_refused_before_connecting(url, message):
    with pytest.raises(InterfaceError, match=message):
        create_engine(url)


@e2e
def test_party_server_url_with_tls_files(sa_engine, tables, plain):
    fed = raw(sa_engine).federation
    host, port = fed.addresses["ac"]
    tls = fed.tls_files("ac")
    url = (f"mpcsql://{host}:{port}?party=ac&join_protocol=masked&tls_ca={quote(tls['ca'])}"
           f"&tls_cert={quote(tls['cert'])}&tls_key={quote(tls['key'])}")
    remote = create_engine(url)
    try:
        assert inspect(remote).get_table_names() == ["ac", "emc"]
        ac, emc = tables
        stmt = (select(emc.c.children, func.avg(ac.c.charges).label("a"))
                .select_from(joined(ac, emc)).group_by(emc.c.children)
                .order_by(emc.c.children))
        frame = pd.read_sql(stmt, remote)
        assert_rows_close(list(frame.itertuples(index=False, name=None)),
                          duckdb_rows(stmt, plain))
    finally:
        remote.dispose()
    with pytest.raises(InterfaceError, match="tls_ca, tls_cert and tls_key"):
        create_engine(f"mpcsql://{host}:{port}?tls_ca={quote(tls['ca'])}")
