"""The PostgreSQL endpoint end to end: one embedded federation (three party processes) and one
``mpcsql serve-pg`` process in front of party ac, reached by the real ``psql`` client and by
psycopg 3 over TLS.

The endpoint logs in as ac's analyst with the federation's owner certificate (the embedded
federation's only analyst); the PostgreSQL logins are alice (SCRAM-SHA-256), bob (md5) and
carol (client certificate alice@ac from the endpoint's own test CA).  Secure results are
compared with plain DuckDB on the same (plaintext) join.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.e2e
psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is in the test extra")
pytest.importorskip("pygwire", reason="pygwire (the wire codec) is in the test extra")

from engine.data.demo import plaintext, register, split  # noqa: E402
from engine.deploy import certs  # noqa: E402
from engine.pgwire.auth import md5_verifier, scram_verifier  # noqa: E402
from tests.conftest import recv_exactly  # noqa: E402

PSQL = shutil.which("psql")
needs_psql = pytest.mark.skipif(PSQL is None, reason="the psql client is not installed "
                                "(apt-get install postgresql-client)")

#: emc allows COUNT/AVG/SUM everywhere and GROUP BY/WHERE on its columns, but no MAX: a
#: MAX(emc.bmi) query is refused by emc's policy (SQLSTATE 42501).
POLICIES = {"ac": {"min_intersection": 10},
            "emc": {"min_intersection": 10, "allow": {"*": ["COUNT", "AVG", "SUM", "WHERE",
                                                             "GROUP BY"]}},
            "helper": {"min_intersection": 10}}
GROUP_SQL = ("SELECT region, AVG(charges) AS avg_charges, SUM(emc.children) AS kids, "
             "COUNT(*) AS n FROM ac JOIN emc USING (id) GROUP BY region ORDER BY region")
REFUSED_SQL = "SELECT MAX(emc.bmi) FROM ac JOIN emc USING (id)"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """(port, dir): a running ``mpcsql serve-pg`` in front of an embedded federation's ac."""
    import engine

    d = str(tmp_path_factory.mktemp("pg"))
    con = engine.connect(key_bits=512, policies=POLICIES)
    proc = None
    try:
        ac, emc = split()
        register(con, ac, emc)
        host, port = con.federation.addresses["ac"]
        up = con.federation.tls_files("ac")
        certs.make_ca(d, name="pg endpoint test CA")
        certs.make_request("ac", "party", f"{d}/endpoint.key", f"{d}/endpoint.csr")
        certs.sign(d, f"{d}/endpoint.csr", f"{d}/endpoint.crt")
        certs.issue_analyst(d, "alice@ac", d)
        user = (f'analyst_cert = "{up["cert"]}"\nanalyst_key = "{up["key"]}"\n')
        with open(f"{d}/pg.toml", "w") as f:
            f.write(f"""[pg]
listen = "127.0.0.1:0"
server = "{host}:{port}"
party = "ac"
ca = "{up['ca']}"
cert = "endpoint.crt"
key = "endpoint.key"
client_ca = "ca.crt"

[pg.users.alice]
password = "{scram_verifier('alice-secret')}"
{user}
[pg.users.bob]
password = "{md5_verifier('bob', 'bob-secret')}"
{user}
[pg.users.carol]
client_cert = "alice@ac"
{user}""")
        log = open(f"{d}/endpoint.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve-pg", "--config",
                                 f"{d}/pg.toml"], stdout=subprocess.PIPE, stderr=log,
                                stdin=subprocess.DEVNULL)
        line = proc.stdout.readline().decode()
        assert line.startswith("READY "), (line, open(f"{d}/endpoint.log").read())
        yield {"port": int(line.split()[2]), "dir": d, "ac": ac, "emc": emc}
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        con.close()


def dsn(ep, user="alice", password="alice-secret", **extra) -> str:
    parts = {"host": "127.0.0.1", "port": ep["port"], "user": user, "dbname": "mpcsql",
             "sslmode": "verify-ca", "sslrootcert": f"{ep['dir']}/ca.crt", "connect_timeout": 30}
    if password is not None:
        parts["password"] = password
    parts.update(extra)
    return " ".join(f"{k}={v}" for k, v in parts.items())


def psql(ep, *commands: str, check: bool = True) -> subprocess.CompletedProcess:
    args = [PSQL, dsn(ep, password=None), "-X", "-v", "ON_ERROR_STOP=1", "-v",
            "VERBOSITY=verbose", "-A", "-F", "|", "-P", "footer=off"]
    for c in commands:
        args += ["-c", c]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PGPASSWORD": "alice-secret"})
    if check:
        assert r.returncode == 0, r.stderr
    return r


def reference(ep) -> dict[str, tuple[float, int, int]]:
    _, rows = plaintext(GROUP_SQL, {"ac": ep["ac"], "emc": ep["emc"]})
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def check_groups(rows, ref) -> None:
    assert [r[0] for r in rows] == sorted(ref)
    for region, avg, kids, n in rows:
        want_avg, want_kids, want_n = ref[region]
        assert int(n) == want_n and int(kids) == want_kids
        assert math.isclose(float(avg), want_avg, rel_tol=1e-6)


# --- psql --------------------------------------------------------------------------------


@needs_psql
def test_psql_dt_lists_the_federated_tables(endpoint):
    out = psql(endpoint, r"\dt").stdout.splitlines()
    assert "Schema|Name|Type|Owner" in out
    assert "public|ac|table|alice" in out and "public|emc|table|alice" in out


@needs_psql
def test_psql_d_ac_shows_its_columns_and_types(endpoint):
    out = psql(endpoint, r"\d ac").stdout
    assert 'Table "public.ac"' in out
    for line in ("id|bigint", "age|bigint", "region|character varying",
                 "charges|double precision"):
        assert line in out, out


@needs_psql
def test_psql_secure_group_by_over_the_join_matches_duckdb(endpoint):
    r = psql(endpoint, "SET join_protocol = 'masked'", GROUP_SQL)
    lines = r.stdout.splitlines()
    assert lines[0] == "SET" and lines[1] == "region|avg_charges|kids|n"
    check_groups([ln.split("|") for ln in lines[2:]], reference(endpoint))


@needs_psql
def test_psql_refused_query_shows_its_sqlstate(endpoint):
    r = psql(endpoint, REFUSED_SQL, check=False)
    assert r.returncode != 0
    assert "ERROR:  42501: query refused by policy of emc" in r.stderr, r.stderr
    r = psql(endpoint, "SELECT COUNT(*) FROM nope", check=False)
    assert "ERROR:  42P01: unknown table nope" in r.stderr, r.stderr


@needs_psql
def test_psql_catalog_functions(endpoint):
    out = psql(endpoint, "select 1", "select version()", "show TimeZone",
               "select current_setting('server_version_num'), current_user").stdout
    assert "?column?\n1" in out
    assert "PostgreSQL 15.0 (mpcsql" in out and "timezone\nUTC" in out
    assert "150000|alice" in out


# --- psycopg (extended query protocol) ------------------------------------------------------


def test_psycopg_extended_protocol_typed_rows(endpoint):
    with psycopg.connect(dsn(endpoint), autocommit=True) as c:
        assert c.info.server_version == 150000 and c.pgconn.ssl_in_use
        c.execute("SET join_protocol = 'masked'")
        cur = c.execute(GROUP_SQL.replace("GROUP BY", "WHERE age > %s GROUP BY"), (30,))
        assert [d.name for d in cur.description] == ["region", "avg_charges", "kids", "n"]
        rows = cur.fetchall()
        assert all(isinstance(r[0], str) and isinstance(r[1], float) and isinstance(r[3], int)
                   for r in rows)
        _, ref = plaintext(GROUP_SQL.replace("GROUP BY", "WHERE age > 30 GROUP BY"),
                           {"ac": endpoint["ac"], "emc": endpoint["emc"]})
        check_groups(rows, {r[0]: (r[1], r[2], r[3]) for r in ref})
        # binary results: SUM of an integer column is an exact numeric (HUGEINT)
        bin_rows = c.cursor(binary=True).execute(GROUP_SQL).fetchall()
        check_groups(bin_rows, reference(endpoint))
        assert type(bin_rows[0][2]).__name__ == "Decimal"


@pytest.mark.parametrize("sql, error, code", [
    (REFUSED_SQL, "InsufficientPrivilege", "42501"),
    ("SELECT COUNT(*) FROM nope", "UndefinedTable", "42P01"),
    ("SELECT AVG(nope) FROM ac", "UndefinedColumn", "42703"),
    ("SELEC 1", "SyntaxError", "42601"),
    ("SELECT DISTINCT age FROM ac", "FeatureNotSupported", "0A000"),
])
def test_psycopg_refusals_raise_the_sqlstate_class(endpoint, sql, error, code):
    with psycopg.connect(dsn(endpoint), autocommit=True) as c:
        with pytest.raises(psycopg.Error) as info:
            c.execute(sql)
        assert type(info.value).__name__ == error and info.value.sqlstate == code
        assert c.execute("select 1").fetchone() == (1,)  # the session goes on


def test_psycopg_cancel_stops_the_secure_query(endpoint):
    """A client's cancel request (psql's Ctrl-C) cancels the query at every party: 57014."""
    import threading

    with psycopg.connect(dsn(endpoint), autocommit=True) as c:
        threading.Timer(0.3, c.cancel).start()  # the Paillier join takes seconds
        with pytest.raises(psycopg.errors.QueryCanceled, match="cancelled"):
            c.execute("SELECT COUNT(*), AVG(charges) FROM ac JOIN emc USING (id)")
        assert c.execute("select 1").fetchone() == (1,)


def test_psycopg_catalog_queries(endpoint):
    with psycopg.connect(dsn(endpoint), autocommit=True) as c:
        cols = c.execute("SELECT column_name, data_type FROM information_schema.columns "
                         "WHERE table_name = %s ORDER BY ordinal_position", ("emc",)).fetchall()
        assert cols == [("id", "bigint"), ("bmi", "double precision"), ("children", "bigint")]
        assert c.execute("SELECT * FROM ac LIMIT 0").fetchall() == []  # a BI column probe
        assert c.execute("SELECT current_setting('join_protocol')").fetchone() == ("paillier",)


def test_psycopg_logins(endpoint):
    with psycopg.connect(dsn(endpoint, channel_binding="require")) as c:  # SCRAM-SHA-256-PLUS
        assert c.execute("select current_user").fetchone() == ("alice",)
    with psycopg.connect(dsn(endpoint, user="bob", password="bob-secret")) as c:  # md5
        assert c.execute("select 1").fetchone() == (1,)
    d = endpoint["dir"]
    with psycopg.connect(dsn(endpoint, user="carol", password=None,  # client certificate
                             sslcert=f"{d}/alice@ac.crt", sslkey=f"{d}/alice@ac.key")) as c:
        assert c.execute("select current_user").fetchone() == ("carol",)


@pytest.mark.parametrize("kwargs, message", [
    ({"password": "wrong"}, 'password authentication failed for user "alice"'),
    ({"user": "mallory", "password": "x"}, 'password authentication failed for user "mallory"'),
    ({"user": "carol", "password": None}, "requires a valid client certificate"),
    ({"sslmode": "disable"}, "accepts only TLS connections"),
])
def test_refused_logins(endpoint, kwargs, message):
    t = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match=message):
        psycopg.connect(dsn(endpoint, **kwargs))
    assert time.monotonic() - t < 30


def test_config_refuses_plaintext_passwords_and_open_listeners(tmp_path, endpoint):
    from dialect.errors import ConfigError
    from engine.deploy.config import load_pg_config

    base = open(f"{endpoint['dir']}/pg.toml").read().replace('cert = "endpoint.crt"',
                                                             f'cert = "{endpoint["dir"]}/'
                                                             'endpoint.crt"')
    base = base.replace('key = "endpoint.key"', f'key = "{endpoint["dir"]}/endpoint.key"')
    base = base.replace('client_ca = "ca.crt"', f'client_ca = "{endpoint["dir"]}/ca.crt"')
    cases = [
        (base.replace(base.split("password = ")[1].split("\n")[0], '"alice-secret"'),
         "never a plaintext password"),
        (base.replace('listen = "127.0.0.1:0"', 'listen = "0.0.0.0:5432"\ntls = "off"'),
         "only for a loopback"),
        (base.replace("[pg]", "[pg]\ntrust_local = true").replace(
            'listen = "127.0.0.1:0"', 'listen = "0.0.0.0:5432"'), "only for a loopback"),
    ]
    for text, message in cases:
        p = tmp_path / "pg.toml"
        p.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_pg_config(str(p))


# --- the metadata queries BI tools' drivers send ---------------------------------------------

#: As DBeaver (pgjdbc), Metabase (pgjdbc) and Power BI (Npgsql) send them on connect and when
#: browsing a schema; each must be answered from the catalog (no refusal).
TOOL_QUERIES = [
    ("SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname = %s", ("mpcsql",)),
    ("SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n LEFT OUTER JOIN "
     "pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 AND "
     "d.classoid='pg_namespace'::regclass ORDER BY nspname", None),
    ("SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) as "
     "partition_expr, pg_catalog.pg_get_partkeydef(c.oid) as partition_key FROM "
     "pg_catalog.pg_class c LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND "
     "d.objsubid=0 AND d.classoid='pg_class'::regclass WHERE c.relnamespace=%s AND "
     "c.relkind not in ('i','I','c')", (2200,)),
    ("SELECT c.relname,a.*,pg_catalog.pg_get_expr(ad.adbin, ad.adrelid, true) as def_value,"
     "dsc.description,dep.objid FROM pg_catalog.pg_attribute a INNER JOIN pg_catalog.pg_class c "
     "ON (a.attrelid=c.oid) LEFT OUTER JOIN pg_catalog.pg_attrdef ad ON (a.attrelid=ad.adrelid "
     "AND a.attnum = ad.adnum) LEFT OUTER JOIN pg_catalog.pg_description dsc ON "
     "(c.oid=dsc.objoid AND a.attnum = dsc.objsubid) LEFT OUTER JOIN pg_depend dep on "
     "dep.refobjid = a.attrelid AND dep.deptype = 'i' and dep.refobjsubid = a.attnum and "
     "dep.classid = dep.refclassid WHERE NOT a.attisdropped AND c.relkind not in ('i','I','c') "
     "AND c.relname = %s ORDER BY a.attnum", ("ac",)),
    ("SELECT r.oid,r.* FROM pg_catalog.pg_roles r", None),
    ("SELECT current_schema(),session_user", None),
    ("select string_agg(word, ',') from pg_catalog.pg_get_keywords() where word <> ALL "
     "('{a,abs,absolute}'::text[])", None),
    ("SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('information_schema', "
     "'pg_catalog') AND has_schema_privilege(nspname, 'USAGE')", None),
    ('SELECT TRUE AS _ FROM "public"."ac" WHERE 1 <> 1 LIMIT 0', None),  # Metabase's probe
    ("SELECT ns.nspname, t.oid, t.typname, t.typtype, t.typnotnull, t.elemtypoid FROM ("
     "SELECT typ.oid, typ.typnamespace, typ.typname, typ.typtype, typ.typrelid, typ.typnotnull,"
     " typ.relkind, elemtyp.oid AS elemtypoid, elemtyp.typname AS elemtypname, elemcls.relkind "
     "AS elemrelkind, CASE WHEN elemproc.proname='array_recv' THEN 'a' ELSE elemtyp.typtype END"
     " AS elemtyptype FROM (SELECT typ.oid, typnamespace, typname, typrelid, typnotnull, "
     "relkind, typelem AS elemoid, CASE WHEN proc.proname='array_recv' THEN 'a' ELSE "
     "typ.typtype END AS typtype, CASE WHEN proc.proname='array_recv' THEN typ.typelem WHEN "
     "typ.typtype='r' THEN rngsubtype WHEN typ.typtype='m' THEN (SELECT rngtypid FROM pg_range "
     "WHERE rngmultitypid = typ.oid) WHEN typ.typtype='d' THEN typ.typbasetype END AS "
     "elemtypoid FROM pg_type AS typ LEFT JOIN pg_class AS cls ON (cls.oid = typ.typrelid) "
     "LEFT JOIN pg_proc AS proc ON proc.oid = typ.typreceive LEFT JOIN pg_range ON "
     "(pg_range.rngtypid = typ.oid)) AS typ LEFT JOIN pg_type AS elemtyp ON elemtyp.oid = "
     "elemtypoid LEFT JOIN pg_class AS elemcls ON (elemcls.oid = elemtyp.typrelid) LEFT JOIN "
     "pg_proc AS elemproc ON elemproc.oid = elemtyp.typreceive) AS t JOIN pg_namespace AS ns "
     "ON (ns.oid = typnamespace) WHERE typtype IN ('b', 'r', 'm', 'e', 'd') OR (typtype = 'c' "
     "AND relkind='c') ORDER BY CASE WHEN typtype IN ('b', 'e', 'p') THEN 0 WHEN typtype = 'r' "
     "THEN 1 ELSE 2 END", None),  # Npgsql's type loading (Power BI)
]


def test_bi_tool_catalog_queries(endpoint):
    with psycopg.connect(dsn(endpoint), autocommit=True) as c:
        for sql, params in TOOL_QUERIES:
            c.execute(sql, params).fetchall()  # raises on any refusal
        types = dict((name, oid) for _, oid, name, *_ in c.execute(TOOL_QUERIES[-1][0]))
        assert types["int8"] == 20 and types["float8"] == 701 and types["varchar"] == 1043


JDBC_PROBE = r"""
import java.sql.*;
import java.util.Properties;

public class Probe {
    public static void main(String[] a) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", "alice"); p.setProperty("password", "alice-secret");
        p.setProperty("sslmode", "verify-ca"); p.setProperty("sslrootcert", a[1]);
        try (Connection c = DriverManager.getConnection(
                "jdbc:postgresql://127.0.0.1:" + a[0] + "/mpcsql", p)) {
            DatabaseMetaData md = c.getMetaData();
            System.out.println("product " + md.getDatabaseProductName());
            try (ResultSet rs = md.getTables(null, "public", "%", new String[]{"TABLE"})) {
                while (rs.next()) System.out.println("table " + rs.getString("TABLE_NAME"));
            }
            try (ResultSet rs = md.getColumns(null, "public", "emc", "%")) {
                while (rs.next()) System.out.println("column " + rs.getString("COLUMN_NAME") + " "
                                                     + rs.getString("TYPE_NAME"));
            }
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "ac")) { while (rs.next()) { } }
            try (Statement s = c.createStatement()) { s.execute("SET join_protocol = 'masked'"); }
            try (PreparedStatement ps = c.prepareStatement(a[2])) {
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) System.out.println("row " + rs.getString(1) + "|"
                        + rs.getDouble(2) + "|" + rs.getLong(3) + "|" + rs.getLong(4));
                }
            }
            try (Statement s = c.createStatement()) {
                s.executeQuery(a[3]);
            } catch (SQLException e) { System.out.println("refused " + e.getSQLState()); }
        }
    }
}
"""


def _pgjdbc() -> str | None:
    import glob

    jars = sorted(glob.glob(os.path.expanduser(
        "~/.m2/repository/org/postgresql/postgresql/*/postgresql-*.jar")))
    return jars[-1] if jars and shutil.which("java") else None


@pytest.mark.skipif(_pgjdbc() is None, reason="needs java and the PostgreSQL JDBC driver "
                    "(org.postgresql:postgresql in ~/.m2)")
def test_jdbc_driver_metadata_and_query(endpoint, tmp_path):
    """pgjdbc, the driver of DBeaver and Metabase: metadata, a prepared query, a refusal."""
    src = tmp_path / "Probe.java"
    src.write_text(JDBC_PROBE)
    r = subprocess.run(["java", "-cp", _pgjdbc(), str(src), str(endpoint["port"]),
                        f"{endpoint['dir']}/ca.crt", GROUP_SQL, REFUSED_SQL],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert "product PostgreSQL" in out and "table ac" in out and "table emc" in out
    assert ["column id int8", "column bmi float8", "column children int8"] == [
        x for x in out if x.startswith("column ")]
    check_groups([x[4:].split("|") for x in out if x.startswith("row ")], reference(endpoint))
    assert "refused 42501" in out


# --- bounded input -------------------------------------------------------------------------


def _pg_tls_socket(ep):
    raw = socket.create_connection(("127.0.0.1", ep["port"]), timeout=30)
    raw.sendall(struct.pack("!II", 8, 80877103))  # SSLRequest
    assert raw.recv(1) == b"S"
    ctx = ssl.create_default_context(cafile=f"{ep['dir']}/ca.crt")
    ctx.check_hostname = False  # the endpoint's certificate names its party, not the host
    return ctx.wrap_socket(raw)


def _pg_message(sock) -> tuple[bytes, bytes]:
    kind = recv_exactly(sock, 1)
    (n,) = struct.unpack("!I", recv_exactly(sock, 4))
    return kind, recv_exactly(sock, n - 4)


def test_an_oversized_message_gets_its_error_even_while_the_client_sends(endpoint):
    """A message over the limit is answered by a FATAL 08P01 naming the limit; the endpoint
    drops (bounded) what the client still sends before it closes, so the error arrives instead
    of a connection reset, and the endpoint keeps serving."""
    for _ in range(3):
        with _pg_tls_socket(endpoint) as s:
            body = b"user\0bob\0database\0mpcsql\0\0"
            s.sendall(struct.pack("!II", 8 + len(body), 196608) + body)
            kind, data = _pg_message(s)
            assert kind == b"R" and struct.unpack("!I", data[:4])[0] == 5  # MD5 password
            s.sendall(b"p" + struct.pack("!I", 20_000))  # over the 10,000-byte limit
            time.sleep(0.3)  # the error is sent by now; the client is still sending
            s.sendall(b"x" * (768 << 10))  # below wire.DRAIN_BYTES; resets without the drain
            kind, data = _pg_message(s)
        fields = {f[:1]: f[1:].decode() for f in data.split(b"\0") if f}
        assert kind == b"E" and fields[b"S"] == "FATAL" and fields[b"C"] == "08P01"
        assert "over the limit of 10000 bytes" in fields[b"M"]
    with psycopg.connect(dsn(endpoint)) as con:
        assert con.execute("SELECT 1").fetchone() == (1,)
