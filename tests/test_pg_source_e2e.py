"""Party tables in a real PostgreSQL database (issue 12, item 4).

A PostgreSQL server is started for this module (initdb in a temporary directory, a free port on
127.0.0.1; as the ``postgres`` user when the tests run as root).  Its database ``parties`` holds
the insurer's table ``ins.ac`` and the hospital's ``hosp.emc``; each party reads its own with its
own PostgreSQL role.  Three ``mpcsql serve`` processes run from party.toml files: ac's only
table is ``ins.ac`` (no DuckDB file at all, the password in a 0600 file); emc serves ``emc``
as a SELECT over ``hosp.emc`` (the password in an environment variable) and ``emc_local`` from
its DuckDB file.  Answers are compared with DuckDB on the same plaintext; errors with those
of the same data in DuckDB tables (the embedded federation).
"""

from __future__ import annotations

import glob
import math
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pandas as pd
import psycopg  # pyproject's [test] extra
import pytest

import engine
from dialect.errors import ConfigError, DataError, OperationalError, ProgrammingError
from engine.data.demo import insurance, split
from engine.deploy.config import load_party_toml
from tests.deployment import ROOT, Deployment, free_port, party_toml

pytestmark = pytest.mark.e2e

JOIN = "ac JOIN emc USING (id)"
MASKED = "SET join_protocol = 'masked'; "
TOTALS = f"SELECT COUNT(*), SUM(ac.charges), AVG(emc.bmi) FROM {JOIN}"
BY_REGION = (f"SELECT region, COUNT(*) AS n, AVG(charges) AS avg_charges, AVG(bmi) AS avg_bmi "
             f"FROM {JOIN} GROUP BY region ORDER BY region")
REGIONS = ["northeast", "northwest", "southeast", "southwest"]
CHARGES_BOUND = 65536.0  # declared in ac's party.toml: |charges| <= 2^16
POLICIES = {p: {"min_intersection": 5} for p in ("ac", "emc", "helper")}


# --- a PostgreSQL server for this module --------------------------------------------------------


def pg_bin(name: str) -> str:
    """``name`` on PATH, else the newest /usr/lib/postgresql/*/bin/name (Debian's layout)."""
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not cands:
        pytest.fail(f"PostgreSQL's {name} is neither on PATH nor in /usr/lib/postgresql/*/bin "
                    "(.ci/run installs the postgresql package)")
    return cands[-1]


class PgServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (TCP only, SCRAM passwords)."""

    def __init__(self):
        self.port = free_port()
        self.superpw = secrets.token_hex(16)
        self.root = tempfile.mkdtemp(prefix="mpcsql-pg-", dir="/tmp")
        self.as_user: dict = {}
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                user = pwd.getpwnam("nobody")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = {"user": user.pw_uid, "group": user.pw_gid}
        os.chmod(self.root, 0o700)
        pwfile = os.path.join(self.root, "superuser.pw")
        with open(pwfile, "w") as f:
            f.write(self.superpw + "\n")
        if self.as_user:
            os.chown(pwfile, self.as_user["user"], self.as_user["group"])
        self.data = os.path.join(self.root, "data")
        self._run([pg_bin("initdb"), "-D", self.data, "-U", "postgres", "-E", "UTF8",
                   "--locale=C", "--auth=scram-sha-256", "--pwfile", pwfile])
        os.unlink(pwfile)
        self._run([pg_bin("pg_ctl"), "-D", self.data, "-l", os.path.join(self.root, "log"),
                   "-w", "-t", "60", "-o",
                   f"-h 127.0.0.1 -p {self.port} -k '' -c fsync=off", "start"])

    def _run(self, cmd: list[str]) -> None:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **self.as_user)
        assert out.returncode == 0, f"{cmd[0]} failed: {out.stdout}{out.stderr}"

    def dsn(self, user: str = "postgres", db: str = "parties") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={db} user={user}"

    def connect(self, db: str = "parties"):
        return psycopg.connect(self.dsn(db=db), password=self.superpw, autocommit=True)

    def stop(self) -> None:
        subprocess.run([pg_bin("pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60, **self.as_user)
        shutil.rmtree(self.root, ignore_errors=True)


AC_DDL = ("CREATE TABLE ins.ac (id bigint, age integer, sex integer, smoker integer, "
          "region text, charges double precision)")
EMC_DDL = "CREATE TABLE hosp.emc (id bigint, bmi double precision, children integer, notes text)"


def fill(pg: PgServer, ac: pd.DataFrame, emc: pd.DataFrame) -> None:
    """Make ins.ac and hosp.emc hold exactly these frames (values exact: floats by repr)."""
    with pg.connect() as c:
        c.execute("TRUNCATE ins.ac, hosp.emc")
        for table, frame in (("ins.ac", ac), ("hosp.emc", emc.assign(notes="x"))):
            cols = ", ".join(frame.columns)
            with c.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for row in frame.itertuples(index=False):
                    cp.write_row([None if pd.isna(v) else v.item() if hasattr(v, "item") else v
                                  for v in row])


@pytest.fixture(scope="module")
def pg():
    server = PgServer()
    try:
        with server.connect(db="postgres") as c:
            c.execute("CREATE DATABASE parties")
        server.passwords = {"ac": secrets.token_hex(12), "emc": secrets.token_hex(12)}
        with server.connect() as c:
            c.execute("CREATE SCHEMA ins")
            c.execute("CREATE SCHEMA hosp")
            c.execute(AC_DDL)
            c.execute(EMC_DDL)
            for party, schema in (("ac", "ins"), ("emc", "hosp")):
                c.execute(f"CREATE ROLE {party}_reader LOGIN PASSWORD "
                          f"'{server.passwords[party]}'")
                c.execute(f"GRANT USAGE ON SCHEMA {schema} TO {party}_reader")
                c.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {party}_reader")
        yield server
    finally:
        server.stop()


# --- the deployment ----------------------------------------------------------------------------


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """80 people of the bundled data: ac 66 rows, emc 66 rows, 52 in both."""
    ac, emc = split(insurance().head(80))
    return ac.reset_index(drop=True), emc.reset_index(drop=True)


def ac_block(pg: PgServer, **over) -> str:
    dsn = over.pop("dsn", pg.dsn("ac_reader"))
    extra = "".join(f', {k} = "{v}"' for k, v in over.items())
    return ("[[tables]]\n" 'name = "ac"\n' 'key = "id"\n'
            f"bounds = {{ charges = {CHARGES_BOUND} }}\n"
            f"domains = {{ region = {REGIONS!r} }}\n".replace("'", '"')
            + f'postgres = {{ dsn = "{dsn}", table = "ins.ac"'
            + (extra or ', password_file = "pg.password"') + " }\n\n")


def emc_block(pg: PgServer) -> str:
    return ("[[tables]]\n" 'name = "emc"\n' 'key = "id"\n'
            f'postgres = {{ dsn = "{pg.dsn("emc_reader")}", '
            'query = "SELECT id, bmi, children FROM hosp.emc", '
            'password_env = "EMC_PG_PASSWORD" }\n\n')


def write_toml(d: Deployment, party: str, block: str, *, duck: list[str],
               path: str | None = None) -> str:
    """The party's party.toml with ``block`` ([[tables]] in PostgreSQL) added; without
    [database] when it has no DuckDB table."""
    text = party_toml(party, d.hosts, POLICIES[party], [{"name": n, "key": "id"} for n in duck],
                      d.timeouts)
    if not duck:
        text = text.replace(f'[database]\npath = "{party}.duckdb"\n\n', "")
    text = text.replace("[policy]", block + "[policy]")
    path = path or d.config(party)
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.fixture(scope="module")
def dep(pg, tmp_path_factory):
    ac, emc = frames()
    fill(pg, ac, emc)
    d = Deployment(str(tmp_path_factory.mktemp("pgdeploy")), tables={
        "emc_local": {"party": "emc", "key": "id", "frame": emc}},
        policies=POLICIES, timeouts={"connect": 5, "peer": 10, "query": 120})
    pwfile = os.path.join(d.dir("ac"), "pg.password")
    with open(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(pg.passwords["ac"] + "\n")
    write_toml(d, "ac", ac_block(pg), duck=[])
    write_toml(d, "emc", emc_block(pg), duck=["emc_local"])
    d.emc_env = {"EMC_PG_PASSWORD": pg.passwords["emc"]}
    d.start("ac")
    d.start("emc", env=d.emc_env)
    d.start("helper")
    d.alice = d.analyst("alice@ac")
    d.frames = (ac, emc)
    yield d
    d.stop_all()


@pytest.fixture
def fresh(pg, dep):
    """Every test starts from the base data in PostgreSQL."""
    ac, emc = frames()
    fill(pg, ac, emc)
    return ac, emc


def plain(sql: str, **tables: pd.DataFrame) -> list[tuple]:
    con = duckdb.connect()
    for name, frame in tables.items():
        con.register(name, frame)
    return con.execute(sql).fetchall()


def query(dep: Deployment, sql: str) -> list[tuple]:
    with engine.connect(dep.dsn("ac") + "?party=ac", tls=dep.alice) as con:
        return con.execute(sql).fetchall()


def refused(dep: Deployment, sql: str) -> Exception:
    with pytest.raises(engine.Error) as info:
        query(dep, sql)
    return info.value


def same(got: list[tuple], want: list[tuple]) -> None:
    """Equal row by row: integers and strings exactly, other values up to fixed point."""
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g, w, strict=True):
            if isinstance(b, (str, int)) or b is None:
                assert a == b, (got, want)
            else:
                assert math.isclose(a, b, rel_tol=1e-8), (got, want)


# --- queries over PostgreSQL tables --------------------------------------------------------------


def test_secure_join_of_two_postgresql_tables_matches_duckdb(dep, fresh):
    ac, emc = fresh
    got = query(dep, TOTALS)  # the published Paillier join
    same(got, plain(TOTALS, ac=ac, emc=emc))
    assert got[0][0] == 52
    same(query(dep, MASKED + BY_REGION), plain(BY_REGION, ac=ac, emc=emc))


def test_postgresql_table_joined_with_a_duckdb_table(dep, fresh):
    ac, emc = fresh
    sql = ("SELECT COUNT(*), AVG(ac.age), SUM(emc_local.children) "
           "FROM ac JOIN emc_local USING (id)")
    same(query(dep, MASKED + sql), plain(sql, ac=ac, emc_local=emc))


def test_a_change_in_postgresql_is_seen_by_the_next_query(pg, dep, fresh):
    ac, emc = fresh
    same(query(dep, MASKED + TOTALS), plain(TOTALS, ac=ac, emc=emc))
    # the hospital sees 5 more of the insurer's people; the insurer halves some charges
    only_ac = ac[~ac["id"].isin(emc["id"])].head(5)
    new = pd.DataFrame({"id": only_ac["id"].to_numpy(), "bmi": [21.5, 33.0, 28.25, 40.5, 19.0],
                        "children": [0, 2, 1, 3, 0]})
    with pg.connect() as c:
        with c.cursor() as cur:
            cur.executemany("INSERT INTO hosp.emc (id, bmi, children) VALUES (%s, %s, %s)",
                            [tuple(r) for r in new.itertuples(index=False)])
        c.execute("UPDATE ins.ac SET charges = charges / 2 WHERE age > 50")
    emc2 = pd.concat([emc, new], ignore_index=True)
    ac2 = ac.assign(charges=ac["charges"].where(ac["age"] <= 50, ac["charges"] / 2))
    got = query(dep, MASKED + TOTALS)
    assert got[0][0] == 57
    same(got, plain(TOTALS, ac=ac2, emc=emc2))
    same(query(dep, MASKED + BY_REGION), plain(BY_REGION, ac=ac2, emc=emc2))


# --- the same checks and errors as DuckDB tables --------------------------------------------------


@pytest.fixture(scope="module")
def duck():
    """The same tables in DuckDB (the embedded federation), for the errors they give."""
    con = engine.connect(policies=POLICIES)
    yield con
    con.close()


def duckdb_error(duck, ac: pd.DataFrame, emc: pd.DataFrame, sql: str) -> Exception:
    duck.register("ac", ac, party="ac", key="id", bounds={"charges": CHARGES_BOUND},
                  domains={"region": REGIONS})
    duck.register("emc", emc, party="emc", key="id")
    with pytest.raises(engine.Error) as info:
        duck.execute(sql).fetchall()
    return info.value


@pytest.mark.parametrize("case", ["null key", "duplicate key", "above the bound", "NaN",
                                  "NULL value"])
def test_validation_errors_are_those_of_duckdb_tables(pg, dep, fresh, duck, case):
    ac, emc = fresh
    a, e = ac.copy(), emc.astype({"id": "Int64", "children": "Int64"})
    victim = int(ac["id"].iloc[0])
    with pg.connect() as c:
        if case == "null key":
            c.execute("INSERT INTO hosp.emc (id, bmi, children) VALUES (NULL, 25, 1)")
            e = pd.concat([e, pd.DataFrame({"id": pd.array([None], dtype="Int64"),
                                            "bmi": [25.0],
                                            "children": pd.array([1], dtype="Int64")})],
                          ignore_index=True)
        elif case == "duplicate key":
            c.execute(f"INSERT INTO ins.ac SELECT * FROM ins.ac WHERE id = {victim}")
            a = pd.concat([a, a[a["id"] == victim]], ignore_index=True)
        elif case == "above the bound":
            c.execute(f"UPDATE ins.ac SET charges = 70000.5 WHERE id = {victim}")
            a.loc[a["id"] == victim, "charges"] = 70000.5
        elif case == "NaN":  # a DataFrame's NaN would be NULL in DuckDB: made in DuckDB
            c.execute(f"UPDATE ins.ac SET charges = 'NaN' WHERE id = {victim}")
            local = duckdb.connect()
            local.register("frame", a)
            a = local.sql(f"SELECT * REPLACE (CASE WHEN id = {victim} THEN 'NaN'::DOUBLE "
                          "ELSE charges END AS charges) FROM frame")
        else:
            c.execute(f"UPDATE hosp.emc SET bmi = NULL WHERE id = {int(emc['id'].iloc[0])}")
            e["bmi"] = e["bmi"].where(e["id"] != int(emc["id"].iloc[0]))
    sql = MASKED + "SELECT SUM(ac.charges), COUNT(*) FROM ac JOIN emc USING (id)" \
        if case != "NULL value" else \
        "SELECT LINREG(charges, age, bmi) FROM ac JOIN emc USING (id)"  # models refuse NULLs
    got, want = refused(dep, sql), duckdb_error(duck, a, e, sql)
    assert isinstance(got, DataError) and type(got) is type(want)
    assert str(got) == str(want), (str(got), str(want))


def test_values_outside_the_declared_domain_are_refused_at_every_query(pg, dep, fresh, duck):
    ac, _ = fresh
    victim = int(ac["id"].iloc[0])
    with pg.connect() as c:
        c.execute(f"UPDATE ins.ac SET region = 'atlantis' WHERE id = {victim}")
    got = refused(dep, MASKED + TOTALS)
    bad = ac.copy()
    bad.loc[bad["id"] == victim, "region"] = "atlantis"
    with pytest.raises(engine.Error) as want:  # a DuckDB table is refused at registration
        duck.register("ac", bad, party="ac", key="id", domains={"region": REGIONS})
    assert isinstance(got, DataError) and str(got) == str(want.value)
    assert "1 value(s) outside its declared domain" in str(got)


def test_a_changed_schema_is_refused_until_restart(pg, dep, fresh):
    with pg.connect() as c:
        c.execute("ALTER TABLE ins.ac ALTER COLUMN age TYPE bigint")
    try:
        err = refused(dep, MASKED + "SELECT AVG(age) FROM ac JOIN emc USING (id)")
    finally:
        with pg.connect() as c:
            c.execute("ALTER TABLE ins.ac ALTER COLUMN age TYPE integer")
    assert isinstance(err, ProgrammingError)
    assert "PostgreSQL source of ac's table ac changed since ac's server started" in str(err)
    assert "column age is now BIGINT, was INTEGER" in str(err)


# --- passwords and wrong DSNs ---------------------------------------------------------------


def _files_text(dep: Deployment, party: str) -> str:
    out = []
    for name in ("serve.log", "audit.log"):
        try:
            with open(os.path.join(dep.dir(party), name), errors="replace") as f:
                out.append(f.read())
        except OSError:
            pass
    return "\n".join(out)


def test_a_wrong_password_names_the_table_never_the_password(pg, dep, fresh):
    ac, emc = fresh
    right, wrong = pg.passwords["ac"], secrets.token_hex(12)
    with pg.connect() as c:
        c.execute(f"ALTER ROLE ac_reader PASSWORD '{wrong}'")
    try:
        err = refused(dep, MASKED + TOTALS)
    finally:
        with pg.connect() as c:
            c.execute(f"ALTER ROLE ac_reader PASSWORD '{right}'")
    assert isinstance(err, OperationalError) and err.party == "ac"
    msg = str(err)
    assert "cannot connect to the PostgreSQL source of ac's table ac" in msg
    assert "password authentication failed" in msg
    for secret in (right, wrong):
        assert secret not in msg
        for party in ("ac", "emc", "helper"):
            assert secret not in _files_text(dep, party)
    assert "127.0.0.1" not in msg and str(pg.port) not in msg  # no address for the analyst
    # the server kept serving: with the password back, the next query works
    same(query(dep, MASKED + TOTALS), plain(TOTALS, ac=ac, emc=emc))


def test_explain_catalog_and_audit_show_no_dsn_or_password(pg, dep, fresh):
    with engine.connect(dep.dsn("ac") + "?party=ac", tls=dep.alice) as con:
        shown = repr(con.tables()) + str(con.explain(BY_REGION)) + repr(con.explain(TOTALS))
        con.execute(MASKED + TOTALS).fetchall()
    for secret in (*pg.passwords.values(), "ac_reader", "emc_reader", "hosp.emc", "ins.ac",
                   "dbname="):
        assert secret not in shown
    for party in ("ac", "emc", "helper"):  # a failed query's cause may name the role, no more
        with open(os.path.join(dep.dir(party), "audit.log")) as f:
            audit = f.read()
        for secret in (*pg.passwords.values(), "dbname=", "hosp.emc", "password_file"):
            assert secret not in audit


def _serve(path: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", path],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})


def test_a_wrong_dsn_stops_the_server_at_start_up_naming_the_table(pg, dep):
    """Four misconfigured ``mpcsql serve`` runs (a closed port, a wrong password, a missing
    database, a missing table); the four processes run at the same time (each spends its
    seconds importing the server before it reads its sources), each checked on its own."""
    closed = free_port()
    bad = write_toml(dep, "ac", ac_block(pg, dsn=f"host=127.0.0.1 port={closed} dbname=parties "
                                                 "user=ac_reader"),
                     duck=[], path=os.path.join(dep.dir("ac"), "bad-port.toml"))
    # a wrong password (from the environment), a missing database, a missing table
    wrong = secrets.token_hex(12)
    cases = {
        "bad-password.toml": (ac_block(pg, password_env="AC_PG_PASSWORD"),
                              {"AC_PG_PASSWORD": wrong}, "password authentication failed"),
        "bad-db.toml": (ac_block(pg, dsn=pg.dsn("ac_reader", db="nope")), {},
                        'database "nope" does not exist'),
    }
    runs = [(bad, None)]
    for name, (block, env, _) in cases.items():
        runs.append((write_toml(dep, "ac", block, duck=[], path=os.path.join(dep.dir("ac"), name)),
                     env))
    no_table = os.path.join(dep.dir("ac"), "no-table.toml")
    with open(no_table, "w") as f:
        f.write(open(dep.config("ac")).read().replace('table = "ins.ac"', 'table = "ins.acx"'))
    runs.append((no_table, None))
    with ThreadPoolExecutor(len(runs)) as pool:
        outs = list(pool.map(lambda run: _serve(*run), runs))

    out = outs[0]
    assert out.returncode == 2, out.stderr
    assert "cannot connect to the PostgreSQL source of ac's table ac" in out.stderr
    assert f"port={closed}" in out.stderr  # the operator is shown the DSN ...
    assert pg.passwords["ac"] not in out.stderr + out.stdout  # ... never the password
    for out, (_, _, cause) in zip(outs[1:3], cases.values(), strict=True):
        assert out.returncode == 2 and "PostgreSQL source of ac's table ac" in out.stderr, \
            out.stderr
        assert cause in out.stderr and wrong not in out.stderr and \
            pg.passwords["ac"] not in out.stderr, out.stderr
    out = outs[3]
    assert out.returncode == 2
    assert 'cannot read the PostgreSQL source of ac\'s table ac: relation "ins.acx" does not ' \
           "exist" in out.stderr, out.stderr


def test_party_toml_refuses_a_password_in_the_dsn_or_a_readable_password_file(pg, dep):
    secret = secrets.token_hex(8)
    for dsn in (pg.dsn("ac_reader") + f" password={secret}",
                f"postgresql://ac_reader:{secret}@127.0.0.1:{pg.port}/parties"):
        path = write_toml(dep, "ac", ac_block(pg, dsn=dsn), duck=[],
                          path=os.path.join(dep.dir("ac"), "inline.toml"))
        with pytest.raises(ConfigError, match="contains a password; give it with "
                                              "password_file or password_env") as info:
            load_party_toml(path)
        assert secret not in str(info.value)
    loose = os.path.join(dep.dir("ac"), "loose.password")
    with open(loose, "w") as f:
        f.write("x\n")
    os.chmod(loose, 0o644)
    path = write_toml(dep, "ac", ac_block(pg, password_file="loose.password"), duck=[],
                      path=os.path.join(dep.dir("ac"), "loose.toml"))
    with pytest.raises(ConfigError, match="password_file: .* is readable by other users"):
        load_party_toml(path)
    path = write_toml(dep, "ac", ac_block(pg, password_env="NO_SUCH_MPCSQL_VARIABLE"), duck=[],
                      path=os.path.join(dep.dir("ac"), "noenv.toml"))
    with pytest.raises(ConfigError, match="NO_SUCH_MPCSQL_VARIABLE is not set"):
        load_party_toml(path)
    cfg = load_party_toml(dep.config("ac"))  # the deployment's own: no [database] needed
    assert cfg.database == ":memory:" and cfg.tables[0].postgres.table == "ins.ac"
    # the same as a [tables.postgres] sub-table (the form of mpcsql init's template)
    sub = ("[[tables]]\nname = \"ac\"\nkey = \"id\"\n[tables.postgres]\n"
           f'dsn = "{pg.dsn("ac_reader")}"\ntable = "ins.ac"\npassword_file = "pg.password"\n\n')
    path = write_toml(dep, "ac", sub, duck=[], path=os.path.join(dep.dir("ac"), "sub.toml"))
    assert load_party_toml(path).tables[0].postgres == cfg.tables[0].postgres
