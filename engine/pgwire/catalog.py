"""The PostgreSQL catalog a client sees: an in-memory DuckDB holding names and types only.

PostgreSQL clients learn what a database holds from ``pg_catalog`` and ``information_schema``
(psql's ``\\dt`` and ``\\d``, JDBC's and Npgsql's metadata queries, BI tools' schema
browsers), and call ``version()``, ``current_setting()``, ``current_schema()`` and the like.
The endpoint answers those queries itself, from a private in-memory DuckDB database that
holds, for each table of the federated catalog (the party server's ``tables`` reply):

* an **empty** table ``public.<name>`` with the exposed columns and their types;
* rows describing it in ``pgc.pg_class``, ``pgc.pg_attribute``, ``pgc.pg_description`` (the
  owning party, the join key and declared domains — all public catalog facts) and the other
  ``pg_catalog`` tables clients read (most of them empty), and in ``pgi.tables`` /
  ``pgi.columns`` / ``pgi.schemata`` (``information_schema``);
* macros for the functions clients call (``version()``, ``pg_table_is_visible``,
  ``format_type``, ``current_setting``...).

It never holds a row of party data: the only values in it are names, types, the owner, the
key and declared domains.  A client query is rewritten (sqlglot, PostgreSQL to DuckDB) so that
``pg_catalog.X`` reads ``pgc.X`` and ``information_schema.X`` reads ``pgi.X``, and runs there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from dialect.errors import NotSupportedError, ProgrammingError
from engine.pgwire import types as pgt

logging.getLogger("sqlglot").setLevel(logging.ERROR)
log = logging.getLogger("mpcsql.pgwire")

SERVER_VERSION = "15.0"
PUBLIC_NS, CATALOG_NS, INFO_NS = 2200, 11, 13000
DB_OID, ROLE_OID = 16380, 10
TABLE_OID0 = 16384

#: The type rows of pg_type (the types a column or a result can have).
_TYPES: tuple[pgt.PgType, ...] = (
    pgt.BOOL, pgt.BYTEA, pgt.INT8, pgt.INT2, pgt.INT4, pgt.TEXT, pgt.OID, pgt.JSON, pgt.FLOAT4,
    pgt.FLOAT8, pgt.VARCHAR, pgt.DATE, pgt.TIME, pgt.TIMESTAMP, pgt.TIMESTAMPTZ, pgt.INTERVAL,
    pgt.NUMERIC, pgt.UUID, pgt.PgType(19, "name", 64), pgt.PgType(18, "char", 1),
)
_TYPE_SQL = {  # format_type() text
    "bool": "boolean", "bytea": "bytea", "int8": "bigint", "int2": "smallint",
    "int4": "integer", "text": "text", "oid": "oid", "json": "json", "float4": "real",
    "float8": "double precision", "varchar": "character varying", "date": "date",
    "time": "time without time zone", "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone", "interval": "interval", "numeric": "numeric",
    "uuid": "uuid", "name": "name", "char": '"char"',
}
_CATEGORY = {"bool": "B", "int8": "N", "int2": "N", "int4": "N", "float4": "N", "float8": "N",
             "numeric": "N", "oid": "N", "date": "D", "time": "D", "timestamp": "D",
             "timestamptz": "D", "interval": "T", "uuid": "U", "json": "U", "bytea": "U"}

# name -> columns ("col TYPE, ..."); the pg_catalog tables clients read.  Those not filled in
# build() stay empty: mpcsql has no indexes, constraints, triggers, rules, policies, ...
_PG_TABLES: dict[str, str] = {
    "pg_namespace": "oid BIGINT, nspname VARCHAR, nspowner BIGINT, nspacl VARCHAR[]",
    "pg_class": (
        "oid BIGINT, relname VARCHAR, relnamespace BIGINT, reltype BIGINT, reloftype BIGINT, "
        "relowner BIGINT, relam BIGINT, relfilenode BIGINT, reltablespace BIGINT, "
        "relpages INTEGER, reltuples REAL, relallvisible INTEGER, reltoastrelid BIGINT, "
        "relhasindex BOOLEAN, relisshared BOOLEAN, relpersistence VARCHAR, relkind VARCHAR, "
        "relnatts SMALLINT, relchecks SMALLINT, relhasrules BOOLEAN, relhastriggers BOOLEAN, "
        "relhassubclass BOOLEAN, relrowsecurity BOOLEAN, relforcerowsecurity BOOLEAN, "
        "relispopulated BOOLEAN, relreplident VARCHAR, relispartition BOOLEAN, "
        "relrewrite BIGINT, relfrozenxid BIGINT, relminmxid BIGINT, relacl VARCHAR[], "
        "reloptions VARCHAR[], relpartbound VARCHAR"),
    "pg_attribute": (
        "attrelid BIGINT, attname VARCHAR, atttypid BIGINT, attstattarget INTEGER, "
        "attlen SMALLINT, attnum SMALLINT, attndims INTEGER, attcacheoff INTEGER, "
        "atttypmod INTEGER, attbyval BOOLEAN, attalign VARCHAR, attstorage VARCHAR, "
        "attcompression VARCHAR, attnotnull BOOLEAN, atthasdef BOOLEAN, "
        "atthasmissing BOOLEAN, attidentity VARCHAR, attgenerated VARCHAR, "
        "attisdropped BOOLEAN, attislocal BOOLEAN, attinhcount INTEGER, attcollation BIGINT, "
        "attacl VARCHAR[], attoptions VARCHAR[], attfdwoptions VARCHAR[], "
        "attmissingval VARCHAR"),
    "pg_type": (
        "oid BIGINT, typname VARCHAR, typnamespace BIGINT, typowner BIGINT, typlen SMALLINT, "
        "typbyval BOOLEAN, typtype VARCHAR, typcategory VARCHAR, typispreferred BOOLEAN, "
        "typisdefined BOOLEAN, typdelim VARCHAR, typrelid BIGINT, typsubscript VARCHAR, "
        "typelem BIGINT, typarray BIGINT, typinput VARCHAR, typoutput VARCHAR, "
        "typreceive VARCHAR, typsend VARCHAR, typmodin VARCHAR, typmodout VARCHAR, "
        "typanalyze VARCHAR, typalign VARCHAR, typstorage VARCHAR, typnotnull BOOLEAN, "
        "typbasetype BIGINT, typtypmod INTEGER, typndims INTEGER, typcollation BIGINT, "
        "typdefaultbin VARCHAR, typdefault VARCHAR, typacl VARCHAR[]"),
    "pg_database": (
        "oid BIGINT, datname VARCHAR, datdba BIGINT, encoding INTEGER, "
        "datlocprovider VARCHAR, datistemplate BOOLEAN, datallowconn BOOLEAN, "
        "datconnlimit INTEGER, datfrozenxid BIGINT, datminmxid BIGINT, "
        "dattablespace BIGINT, datcollate VARCHAR, datctype VARCHAR, daticulocale VARCHAR, "
        "datcollversion VARCHAR, datacl VARCHAR[]"),
    "pg_roles": (
        "oid BIGINT, rolname VARCHAR, rolsuper BOOLEAN, rolinherit BOOLEAN, "
        "rolcreaterole BOOLEAN, rolcreatedb BOOLEAN, rolcanlogin BOOLEAN, "
        "rolreplication BOOLEAN, rolconnlimit INTEGER, rolpassword VARCHAR, "
        "rolvaliduntil TIMESTAMP, rolbypassrls BOOLEAN, rolconfig VARCHAR[]"),
    "pg_user": (
        "usename VARCHAR, usesysid BIGINT, usecreatedb BOOLEAN, usesuper BOOLEAN, "
        "userepl BOOLEAN, usebypassrls BOOLEAN, passwd VARCHAR, valuntil TIMESTAMP, "
        "useconfig VARCHAR[]"),
    "pg_description": "objoid BIGINT, classoid BIGINT, objsubid INTEGER, description VARCHAR",
    "pg_shdescription": "objoid BIGINT, classoid BIGINT, description VARCHAR",
    "pg_tables": (
        "schemaname VARCHAR, tablename VARCHAR, tableowner VARCHAR, tablespace VARCHAR, "
        "hasindexes BOOLEAN, hasrules BOOLEAN, hastriggers BOOLEAN, rowsecurity BOOLEAN"),
    "pg_views": "schemaname VARCHAR, viewname VARCHAR, viewowner VARCHAR, definition VARCHAR",
    "pg_matviews": (
        "schemaname VARCHAR, matviewname VARCHAR, matviewowner VARCHAR, tablespace VARCHAR, "
        "hasindexes BOOLEAN, ispopulated BOOLEAN, definition VARCHAR"),
    "pg_settings": (
        "name VARCHAR, setting VARCHAR, unit VARCHAR, category VARCHAR, short_desc VARCHAR, "
        "extra_desc VARCHAR, context VARCHAR, vartype VARCHAR, source VARCHAR, "
        "min_val VARCHAR, max_val VARCHAR, enumvals VARCHAR[], boot_val VARCHAR, "
        "reset_val VARCHAR, sourcefile VARCHAR, sourceline INTEGER, pending_restart BOOLEAN"),
    "pg_am": "oid BIGINT, amname VARCHAR, amhandler VARCHAR, amtype VARCHAR",
    "pg_collation": (
        "oid BIGINT, collname VARCHAR, collnamespace BIGINT, collowner BIGINT, "
        "collprovider VARCHAR, collisdeterministic BOOLEAN, collencoding INTEGER, "
        "collcollate VARCHAR, collctype VARCHAR, colliculocale VARCHAR, collversion VARCHAR"),
    "pg_tablespace": (
        "oid BIGINT, spcname VARCHAR, spcowner BIGINT, spcacl VARCHAR[], "
        "spcoptions VARCHAR[]"),
    "pg_index": (
        "indexrelid BIGINT, indrelid BIGINT, indnatts SMALLINT, indnkeyatts SMALLINT, "
        "indisunique BOOLEAN, indnullsnotdistinct BOOLEAN, indisprimary BOOLEAN, "
        "indisexclusion BOOLEAN, indimmediate BOOLEAN, indisclustered BOOLEAN, "
        "indisvalid BOOLEAN, indcheckxmin BOOLEAN, indisready BOOLEAN, indislive BOOLEAN, "
        "indisreplident BOOLEAN, indkey SMALLINT[], indcollation BIGINT[], "
        "indclass BIGINT[], indoption SMALLINT[], indexprs VARCHAR, indpred VARCHAR"),
    "pg_constraint": (
        "oid BIGINT, conname VARCHAR, connamespace BIGINT, contype VARCHAR, "
        "condeferrable BOOLEAN, condeferred BOOLEAN, convalidated BOOLEAN, conrelid BIGINT, "
        "contypid BIGINT, conindid BIGINT, conparentid BIGINT, confrelid BIGINT, "
        "confupdtype VARCHAR, confdeltype VARCHAR, confmatchtype VARCHAR, "
        "conislocal BOOLEAN, coninhcount INTEGER, connoinherit BOOLEAN, conkey SMALLINT[], "
        "confkey SMALLINT[], conpfeqop BIGINT[], conppeqop BIGINT[], conffeqop BIGINT[], "
        "confdelsetcols SMALLINT[], conexclop BIGINT[], conbin VARCHAR"),
    "pg_attrdef": "oid BIGINT, adrelid BIGINT, adnum SMALLINT, adbin VARCHAR",
    "pg_inherits": (
        "inhrelid BIGINT, inhparent BIGINT, inhseqno INTEGER, inhdetachpending BOOLEAN"),
    "pg_policy": (
        "oid BIGINT, polname VARCHAR, polrelid BIGINT, polcmd VARCHAR, polpermissive BOOLEAN, "
        "polroles BIGINT[], polqual VARCHAR, polwithcheck VARCHAR"),
    "pg_trigger": (
        "oid BIGINT, tgrelid BIGINT, tgparentid BIGINT, tgname VARCHAR, tgfoid BIGINT, "
        "tgtype SMALLINT, tgenabled VARCHAR, tgisinternal BOOLEAN, tgconstrrelid BIGINT, "
        "tgconstrindid BIGINT, tgconstraint BIGINT, tgdeferrable BOOLEAN, "
        "tginitdeferred BOOLEAN, tgnargs SMALLINT, tgattr SMALLINT[], tgargs VARCHAR, "
        "tgqual VARCHAR, tgoldtable VARCHAR, tgnewtable VARCHAR"),
    "pg_rewrite": (
        "oid BIGINT, rulename VARCHAR, ev_class BIGINT, ev_type VARCHAR, ev_enabled VARCHAR, "
        "is_instead BOOLEAN, ev_qual VARCHAR, ev_action VARCHAR"),
    "pg_statistic_ext": (
        "oid BIGINT, stxrelid BIGINT, stxname VARCHAR, stxnamespace BIGINT, "
        "stxowner BIGINT, stxstattarget INTEGER, stxkeys SMALLINT[], stxkind VARCHAR[], "
        "stxexprs VARCHAR"),
    "pg_publication": (
        "oid BIGINT, pubname VARCHAR, pubowner BIGINT, puballtables BOOLEAN, "
        "pubinsert BOOLEAN, pubupdate BOOLEAN, pubdelete BOOLEAN, pubtruncate BOOLEAN, "
        "pubviaroot BOOLEAN"),
    "pg_publication_rel": (
        "oid BIGINT, prpubid BIGINT, prrelid BIGINT, prqual VARCHAR, prattrs SMALLINT[]"),
    "pg_publication_namespace": "oid BIGINT, pnpubid BIGINT, pnnspid BIGINT",
    "pg_foreign_table": "ftrelid BIGINT, ftserver BIGINT, ftoptions VARCHAR[]",
    "pg_partitioned_table": (
        "partrelid BIGINT, partstrat VARCHAR, partnatts SMALLINT, partdefid BIGINT, "
        "partattrs SMALLINT[], partclass BIGINT[], partcollation BIGINT[], "
        "partexprs VARCHAR"),
    "pg_extension": (
        "oid BIGINT, extname VARCHAR, extowner BIGINT, extnamespace BIGINT, "
        "extrelocatable BOOLEAN, extversion VARCHAR, extconfig BIGINT[], "
        "extcondition VARCHAR[]"),
    "pg_enum": "oid BIGINT, enumtypid BIGINT, enumsortorder REAL, enumlabel VARCHAR",
    "pg_range": (
        "rngtypid BIGINT, rngsubtype BIGINT, rngmultitypid BIGINT, rngcollation BIGINT, "
        "rngsubopc BIGINT, rngcanonical VARCHAR, rngsubdiff VARCHAR"),
    "pg_proc": (
        "oid BIGINT, proname VARCHAR, pronamespace BIGINT, proowner BIGINT, prolang BIGINT, "
        "procost REAL, prorows REAL, provariadic BIGINT, prosupport VARCHAR, "
        "prokind VARCHAR, prosecdef BOOLEAN, proleakproof BOOLEAN, proisstrict BOOLEAN, "
        "proretset BOOLEAN, provolatile VARCHAR, proparallel VARCHAR, pronargs SMALLINT, "
        "pronargdefaults SMALLINT, prorettype BIGINT, proargtypes BIGINT[], "
        "proallargtypes BIGINT[], proargmodes VARCHAR[], proargnames VARCHAR[], "
        "proargdefaults VARCHAR, protrftypes BIGINT[], prosrc VARCHAR, probin VARCHAR, "
        "prosqlbody VARCHAR, proconfig VARCHAR[], proacl VARCHAR[]"),
    "pg_auth_members": (
        "oid BIGINT, roleid BIGINT, member BIGINT, grantor BIGINT, admin_option BOOLEAN"),
    "pg_depend": (
        "classid BIGINT, objid BIGINT, objsubid INTEGER, refclassid BIGINT, refobjid BIGINT, "
        "refobjsubid INTEGER, deptype VARCHAR"),
    "pg_sequence": (
        "seqrelid BIGINT, seqtypid BIGINT, seqstart BIGINT, seqincrement BIGINT, "
        "seqmax BIGINT, seqmin BIGINT, seqcache BIGINT, seqcycle BOOLEAN"),
    "pg_language": "oid BIGINT, lanname VARCHAR, lanowner BIGINT, lanispl BOOLEAN",
    "pg_operator": (
        "oid BIGINT, oprname VARCHAR, oprnamespace BIGINT, oprleft BIGINT, "
        "oprright BIGINT, oprresult BIGINT, oprcode VARCHAR"),
    "pg_cast": (
        "oid BIGINT, castsource BIGINT, casttarget BIGINT, castfunc BIGINT, "
        "castcontext VARCHAR, castmethod VARCHAR"),
    "pg_event_trigger": "oid BIGINT, evtname VARCHAR, evtevent VARCHAR, evtenabled VARCHAR",
    "pg_foreign_server": "oid BIGINT, srvname VARCHAR, srvfdw BIGINT, srvoptions VARCHAR[]",
    "pg_foreign_data_wrapper": "oid BIGINT, fdwname VARCHAR, fdwoptions VARCHAR[]",
    "pg_stat_activity": (
        "datid BIGINT, datname VARCHAR, pid INTEGER, usename VARCHAR, "
        "application_name VARCHAR, client_addr VARCHAR, state VARCHAR, query VARCHAR"),
    "pg_locks": "locktype VARCHAR, database BIGINT, relation BIGINT, pid INTEGER, mode VARCHAR",
    "pg_timezone_names": (
        "name VARCHAR, abbrev VARCHAR, utc_offset INTERVAL, is_dst BOOLEAN"),
}

_INFO_TABLES: dict[str, str] = {
    "schemata": (
        "catalog_name VARCHAR, schema_name VARCHAR, schema_owner VARCHAR, "
        "default_character_set_catalog VARCHAR, default_character_set_schema VARCHAR, "
        "default_character_set_name VARCHAR, sql_path VARCHAR"),
    "tables": (
        "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, "
        "table_type VARCHAR, self_referencing_column_name VARCHAR, "
        "reference_generation VARCHAR, user_defined_type_catalog VARCHAR, "
        "user_defined_type_schema VARCHAR, user_defined_type_name VARCHAR, "
        "is_insertable_into VARCHAR, is_typed VARCHAR, commit_action VARCHAR"),
    "columns": (
        "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, "
        "column_name VARCHAR, ordinal_position INTEGER, column_default VARCHAR, "
        "is_nullable VARCHAR, data_type VARCHAR, character_maximum_length INTEGER, "
        "character_octet_length INTEGER, numeric_precision INTEGER, "
        "numeric_precision_radix INTEGER, numeric_scale INTEGER, "
        "datetime_precision INTEGER, interval_type VARCHAR, interval_precision INTEGER, "
        "character_set_catalog VARCHAR, character_set_schema VARCHAR, "
        "character_set_name VARCHAR, collation_catalog VARCHAR, collation_schema VARCHAR, "
        "collation_name VARCHAR, domain_catalog VARCHAR, domain_schema VARCHAR, "
        "domain_name VARCHAR, udt_catalog VARCHAR, udt_schema VARCHAR, udt_name VARCHAR, "
        "scope_catalog VARCHAR, scope_schema VARCHAR, scope_name VARCHAR, "
        "maximum_cardinality INTEGER, dtd_identifier VARCHAR, is_self_referencing VARCHAR, "
        "is_identity VARCHAR, identity_generation VARCHAR, identity_start VARCHAR, "
        "identity_increment VARCHAR, identity_maximum VARCHAR, identity_minimum VARCHAR, "
        "identity_cycle VARCHAR, is_generated VARCHAR, generation_expression VARCHAR, "
        "is_updatable VARCHAR"),
    "views": (
        "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, "
        "view_definition VARCHAR, check_option VARCHAR, is_updatable VARCHAR, "
        "is_insertable_into VARCHAR"),
    "table_constraints": (
        "constraint_catalog VARCHAR, constraint_schema VARCHAR, constraint_name VARCHAR, "
        "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, "
        "constraint_type VARCHAR, is_deferrable VARCHAR, initially_deferred VARCHAR, "
        "enforced VARCHAR, nulls_distinct VARCHAR"),
    "key_column_usage": (
        "constraint_catalog VARCHAR, constraint_schema VARCHAR, constraint_name VARCHAR, "
        "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, "
        "column_name VARCHAR, ordinal_position INTEGER, "
        "position_in_unique_constraint INTEGER"),
    "referential_constraints": (
        "constraint_catalog VARCHAR, constraint_schema VARCHAR, constraint_name VARCHAR, "
        "unique_constraint_catalog VARCHAR, unique_constraint_schema VARCHAR, "
        "unique_constraint_name VARCHAR, match_option VARCHAR, update_rule VARCHAR, "
        "delete_rule VARCHAR"),
    "routines": (
        "specific_catalog VARCHAR, specific_schema VARCHAR, specific_name VARCHAR, "
        "routine_catalog VARCHAR, routine_schema VARCHAR, routine_name VARCHAR, "
        "routine_type VARCHAR, data_type VARCHAR"),
    "parameters": (
        "specific_catalog VARCHAR, specific_schema VARCHAR, specific_name VARCHAR, "
        "ordinal_position INTEGER, parameter_mode VARCHAR, parameter_name VARCHAR, "
        "data_type VARCHAR"),
    "character_sets": (
        "character_set_catalog VARCHAR, character_set_schema VARCHAR, "
        "character_set_name VARCHAR, character_repertoire VARCHAR, form_of_use VARCHAR, "
        "default_collate_catalog VARCHAR, default_collate_schema VARCHAR, "
        "default_collate_name VARCHAR"),
    "enabled_roles": "role_name VARCHAR",
    "applicable_roles": "grantee VARCHAR, role_name VARCHAR, is_grantable VARCHAR",
    "table_privileges": (
        "grantor VARCHAR, grantee VARCHAR, table_catalog VARCHAR, table_schema VARCHAR, "
        "table_name VARCHAR, privilege_type VARCHAR, is_grantable VARCHAR, "
        "with_hierarchy VARCHAR"),
    "column_privileges": (
        "grantor VARCHAR, grantee VARCHAR, table_catalog VARCHAR, table_schema VARCHAR, "
        "table_name VARCHAR, column_name VARCHAR, privilege_type VARCHAR, "
        "is_grantable VARCHAR"),
    "sequences": (
        "sequence_catalog VARCHAR, sequence_schema VARCHAR, sequence_name VARCHAR, "
        "data_type VARCHAR"),
}

#: Functions clients call, as DuckDB macros over the catalog (pg_catalog's own semantics).
_MACROS = (
    "version() AS {version}",
    "pg_get_userbyid(x) AS {user}",
    "pg_table_is_visible(x) AS x IN (SELECT oid FROM pgc.pg_class)",
    "pg_type_is_visible(x) AS true",
    "pg_function_is_visible(x) AS true",
    "format_type(t, m) AS coalesce((SELECT CASE WHEN ty.typname = 'numeric' AND m > 4 THEN "
    "'numeric(' || ((m - 4) >> 16) || ',' || ((m - 4) & 65535) || ')' ELSE "
    "ty.fmt END FROM pgc.pg_type_fmt ty WHERE ty.oid = t), '???')",
    "pg_get_expr(e, r) AS NULL::VARCHAR",
    "pg_get_expr(e, r, p) AS NULL::VARCHAR",
    "obj_description(o) AS (SELECT first(description) FROM pgc.pg_description d "
    "WHERE d.objoid = o AND d.objsubid = 0)",
    "obj_description(o, c) AS (SELECT first(description) FROM pgc.pg_description d "
    "WHERE d.objoid = o AND d.objsubid = 0)",
    "col_description(o, n) AS (SELECT first(description) FROM pgc.pg_description d "
    "WHERE d.objoid = o AND d.objsubid = n)",
    "shobj_description(o, c) AS NULL::VARCHAR",
    "has_table_privilege(a, b) AS true",
    "has_table_privilege(a, b, c) AS true",
    "has_schema_privilege(a, b) AS true",
    "has_schema_privilege(a, b, c) AS true",
    "has_database_privilege(a, b) AS true",
    "has_database_privilege(a, b, c) AS true",
    "has_column_privilege(a, b, c) AS true",
    "has_column_privilege(a, b, c, d) AS true",
    "has_any_column_privilege(a, b) AS true",
    "has_any_column_privilege(a, b, c) AS true",
    "pg_has_role(a, b) AS true",
    "pg_has_role(a, b, c) AS true",
    "pg_encoding_to_char(x) AS 'UTF8'",
    "pg_get_indexdef(x) AS NULL::VARCHAR",
    "pg_get_indexdef(x, c, p) AS NULL::VARCHAR",
    "pg_get_constraintdef(x) AS NULL::VARCHAR",
    "pg_get_constraintdef(x, p) AS NULL::VARCHAR",
    "pg_get_viewdef(x) AS NULL::VARCHAR",
    "pg_get_viewdef(x, p) AS NULL::VARCHAR",
    "pg_get_triggerdef(x) AS NULL::VARCHAR",
    "pg_get_triggerdef(x, p) AS NULL::VARCHAR",
    "pg_get_statisticsobjdef_columns(x) AS NULL::VARCHAR",
    "pg_get_partkeydef(x) AS NULL::VARCHAR",
    "pg_get_function_result(x) AS NULL::VARCHAR",
    "pg_get_function_arguments(x) AS NULL::VARCHAR",
    "pg_get_function_identity_arguments(x) AS NULL::VARCHAR",
    "pg_get_serial_sequence(t, c) AS NULL::VARCHAR",
    "pg_get_keywords() AS TABLE SELECT NULL::VARCHAR AS word, NULL::VARCHAR AS catcode, "
    "NULL::VARCHAR AS catdesc WHERE false",
    "pg_relation_is_publishable(x) AS false",
    "_pg_expandarray(a) AS struct_pack(x := NULL::SMALLINT, n := NULL::INTEGER)",
    "array_upper(a, d) AS len(a)",
    "array_lower(a, d) AS CASE WHEN len(a) > 0 THEN 1 END",
    "pg_relation_size(x) AS 0::BIGINT",
    "pg_total_relation_size(x) AS 0::BIGINT",
    "pg_table_size(x) AS 0::BIGINT",
    "pg_indexes_size(x) AS 0::BIGINT",
    "pg_database_size(x) AS 0::BIGINT",
    "pg_size_pretty(x) AS x || ' bytes'",
    "pg_tablespace_location(x) AS ''",
    "pg_is_in_recovery() AS false",
    "pg_backend_pid() AS {pid}",
    "pg_postmaster_start_time() AS {started}::TIMESTAMPTZ",
    "pg_conf_load_time() AS {started}::TIMESTAMPTZ",
    "inet_server_addr() AS NULL::VARCHAR",
    "inet_server_port() AS NULL::INTEGER",
    "inet_client_addr() AS NULL::VARCHAR",
    "txid_current() AS 1::BIGINT",
    "pg_current_xact_id() AS 1::BIGINT",
    "current_database() AS {database}",
    "current_catalog() AS {database}",
    "current_schema() AS 'public'",
    "current_schemas(x) AS ['public']",
    "pg_my_temp_schema() AS 0::BIGINT",
    "pg_is_other_temp_schema(x) AS false",
    "current_setting(n) AS (SELECT first(setting) FROM pgc.pg_settings s "
    "WHERE lower(s.name) = lower(n))",
    "current_setting(n, m) AS (SELECT first(setting) FROM pgc.pg_settings s "
    "WHERE lower(s.name) = lower(n))",
    "set_config(n, v, l) AS v",
    "quote_ident(x) AS CASE WHEN regexp_matches(x, '^[a-z_][a-z0-9_]*$') THEN x "
    "ELSE '\"' || replace(x, '\"', '\"\"') || '\"' END",
    "regclass_name(o) AS (SELECT first(relname) FROM pgc.pg_class c WHERE c.oid = o)",
    "regtype_name(o) AS (SELECT first(fmt) FROM pgc.pg_type_fmt t WHERE t.oid = o)",
    "regnamespace_name(o) AS (SELECT first(nspname) FROM pgc.pg_namespace n "
    "WHERE n.oid = o)",
    "to_regclass(x) AS (SELECT first(oid) FROM pgc.pg_class c WHERE c.relname = "
    "regexp_replace(x, '^(public|\"public\")\\.', ''))",
)

#: Tables a client query may read here (pg_catalog and information_schema), by name.
CATALOG_TABLES = frozenset(_PG_TABLES) | {"pg_type_fmt"}
INFO_TABLES = frozenset(_INFO_TABLES)

_REG_TYPES = {"regclass", "regtype", "regproc", "regprocedure", "regnamespace", "regrole",
              "regoper", "regoperator", "regconfig", "regdictionary", "oid", "xid", "cid",
              "tid", "xid8", "name", "aclitem", "int2vector", "oidvector", "pg_node_tree",
              "char", '"char"', "bpchar", "text", "varchar", "int4", "int8", "int2",
              "float8", "float4", "bool"}


def _literal(s: str | None) -> str:
    return "NULL" if s is None else "'" + str(s).replace("'", "''") + "'"


class Catalog:
    """One client session's catalog database (names and types of the federated tables)."""

    def __init__(self, tables: Sequence[dict[str, Any]], *, user: str, database: str,
                 settings: dict[str, str], pid: int, started: str):
        self.tables = list(tables)
        self.user, self.database = user, database
        self.db = duckdb.connect(":memory:")
        self.oids: dict[str, int] = {}
        self._build(settings, pid, started)

    def close(self) -> None:
        self.db.close()

    # --- building ---------------------------------------------------------------------------

    def _create(self, schema: str, name: str, columns: str) -> None:
        self.db.execute(f"CREATE TABLE {schema}.{name} ({columns})")

    def _insert(self, schema: str, name: str, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            cols = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            self.db.execute(f"INSERT INTO {schema}.{name} ({cols}) VALUES ({marks})",
                            list(row.values()))

    def _build(self, settings: dict[str, str], pid: int, started: str) -> None:
        db = self.db
        db.execute("CREATE SCHEMA pgc; CREATE SCHEMA pgi; CREATE SCHEMA public")
        for name, cols in _PG_TABLES.items():
            self._create("pgc", name, cols)
        for name, cols in _INFO_TABLES.items():
            self._create("pgi", name, cols)
        db.execute("CREATE TABLE pgc.pg_type_fmt (oid BIGINT, typname VARCHAR, fmt VARCHAR)")
        self._insert("pgc", "pg_namespace", [
            {"oid": CATALOG_NS, "nspname": "pg_catalog", "nspowner": ROLE_OID},
            {"oid": PUBLIC_NS, "nspname": "public", "nspowner": ROLE_OID},
            {"oid": INFO_NS, "nspname": "information_schema", "nspowner": ROLE_OID}])
        for t in _TYPES:
            self._insert("pgc", "pg_type", [{
                "oid": t.oid, "typname": t.name, "typnamespace": CATALOG_NS,
                "typowner": ROLE_OID, "typlen": t.size, "typbyval": 0 < t.size <= 8,
                "typtype": "b", "typcategory": _CATEGORY.get(t.name, "S"),
                "typispreferred": False, "typisdefined": True, "typdelim": ",",
                "typrelid": 0, "typelem": 0, "typarray": 0, "typinput": f"{t.name}in",
                "typoutput": f"{t.name}out", "typreceive": f"{t.name}recv",
                "typsend": f"{t.name}send", "typalign": "i", "typstorage": "p",
                "typnotnull": False, "typbasetype": 0, "typtypmod": -1, "typndims": 0,
                "typcollation": 100 if t.name in ("text", "varchar", "name") else 0}])
            self._insert("pgc", "pg_type_fmt", [{"oid": t.oid, "typname": t.name,
                                                  "fmt": _TYPE_SQL[t.name]}])
        self._insert("pgc", "pg_database", [{
            "oid": DB_OID, "datname": self.database, "datdba": ROLE_OID, "encoding": 6,
            "datlocprovider": "c", "datistemplate": False, "datallowconn": True,
            "datconnlimit": -1, "dattablespace": 1663, "datcollate": "C.UTF-8",
            "datctype": "C.UTF-8"}])
        self._insert("pgc", "pg_roles", [{
            "oid": ROLE_OID, "rolname": self.user, "rolsuper": False, "rolinherit": True,
            "rolcreaterole": False, "rolcreatedb": False, "rolcanlogin": True,
            "rolreplication": False, "rolconnlimit": -1, "rolpassword": "********",
            "rolbypassrls": False}])
        self._insert("pgc", "pg_user", [{
            "usename": self.user, "usesysid": ROLE_OID, "usecreatedb": False,
            "usesuper": False, "userepl": False, "usebypassrls": False,
            "passwd": "********"}])
        self._insert("pgc", "pg_am", [{"oid": 2, "amname": "heap", "amhandler":
                                        "heap_tableam_handler", "amtype": "t"}])
        self._insert("pgc", "pg_collation", [{
            "oid": 100, "collname": "default", "collnamespace": CATALOG_NS,
            "collowner": ROLE_OID, "collprovider": "d", "collisdeterministic": True,
            "collencoding": -1}])
        self._insert("pgc", "pg_tablespace", [{"oid": 1663, "spcname": "pg_default",
                                                "spcowner": ROLE_OID}])
        self._insert("pgi", "schemata", [
            {"catalog_name": self.database, "schema_name": s, "schema_owner": self.user}
            for s in ("public", "pg_catalog", "information_schema")])
        self.set_settings(settings)
        self._tables()
        subs = {"version": _literal(f"PostgreSQL {SERVER_VERSION} (mpcsql PostgreSQL "
                                    "endpoint; secure queries across parties)"),
                "user": _literal(self.user), "database": _literal(self.database),
                "pid": str(int(pid)), "started": _literal(started)}
        overloads: dict[str, list[str]] = {}
        for macro in _MACROS:
            name, _, rest = macro.format(**subs).partition("(")
            overloads.setdefault(name, []).append("(" + rest)
        for name, bodies in overloads.items():
            db.execute(f"CREATE OR REPLACE MACRO {name}" + ", ".join(bodies))

    def set_settings(self, settings: dict[str, str]) -> None:
        """The session's settings as pg_settings rows (what current_setting() reads)."""
        self.db.execute("DELETE FROM pgc.pg_settings")
        self._insert("pgc", "pg_settings", [
            {"name": k, "setting": v, "context": "user", "vartype": "string",
             "source": "session", "boot_val": v, "reset_val": v, "pending_restart": False}
            for k, v in settings.items()])

    def _tables(self) -> None:
        for i, t in enumerate(self.tables):
            oid = TABLE_OID0 + 2 * i
            name, cols = str(t["name"]), list(t.get("columns", []))
            self.oids[name.lower()] = oid
            decl = ", ".join(f'"{c[0]}" {c[1]}' for c in cols)
            try:
                self.db.execute(f'CREATE TABLE public."{name}" ({decl})')
            except duckdb.Error:  # a type DuckDB cannot declare here: describe it as text
                self.db.execute(f'CREATE TABLE public."{name}" (' + ", ".join(
                    f'"{c[0]}" VARCHAR' for c in cols) + ")")
            self._insert("pgc", "pg_class", [{
                "oid": oid, "relname": name, "relnamespace": PUBLIC_NS, "reltype": oid + 1,
                "reloftype": 0, "relowner": ROLE_OID, "relam": 2, "relfilenode": oid,
                "reltablespace": 0, "relpages": 0, "reltuples": -1, "relallvisible": 0,
                "reltoastrelid": 0, "relhasindex": False, "relisshared": False,
                "relpersistence": "p", "relkind": "r", "relnatts": len(cols),
                "relchecks": 0, "relhasrules": False, "relhastriggers": False,
                "relhassubclass": False, "relrowsecurity": False,
                "relforcerowsecurity": False, "relispopulated": True, "relreplident": "d",
                "relispartition": False, "relrewrite": 0, "relfrozenxid": 0,
                "relminmxid": 0}])
            self._insert("pgc", "pg_tables", [{
                "schemaname": "public", "tablename": name, "tableowner": self.user,
                "hasindexes": False, "hasrules": False, "hastriggers": False,
                "rowsecurity": False}])
            self._insert("pgi", "tables", [{
                "table_catalog": self.database, "table_schema": "public", "table_name": name,
                "table_type": "BASE TABLE", "is_insertable_into": "NO", "is_typed": "NO"}])
            party, key = t.get("party"), t.get("key")
            self._insert("pgc", "pg_description", [{
                "objoid": oid, "classoid": 1259, "objsubid": 0,
                "description": f"table of party {party}; join key {key} (mpcsql: secure "
                               "aggregates only, no rows)"}])
            for n, col in enumerate(cols, start=1):
                self._column(oid, name, n, col, key)

    def _column(self, oid: int, table: str, n: int, col: Sequence[Any], key: Any) -> None:
        cname, ctype = str(col[0]), str(col[1])
        t = pgt.pg_type(ctype)
        self._insert("pgc", "pg_attribute", [{
            "attrelid": oid, "attname": cname, "atttypid": t.oid, "attstattarget": -1,
            "attlen": t.size, "attnum": n, "attndims": 0, "attcacheoff": -1,
            "atttypmod": t.modifier, "attbyval": 0 < t.size <= 8, "attalign": "i",
            "attstorage": "p", "attcompression": "", "attnotnull": False, "atthasdef": False,
            "atthasmissing": False, "attidentity": "", "attgenerated": "",
            "attisdropped": False, "attislocal": True, "attinhcount": 0,
            "attcollation": 100 if t.oid in (pgt.TEXT.oid, pgt.VARCHAR.oid) else 0}])
        prec = {pgt.INT2.oid: 16, pgt.INT4.oid: 32, pgt.INT8.oid: 64, pgt.FLOAT4.oid: 24,
                pgt.FLOAT8.oid: 53}.get(t.oid)
        self._insert("pgi", "columns", [{
            "table_catalog": self.database, "table_schema": "public", "table_name": table,
            "column_name": cname, "ordinal_position": n, "is_nullable": "YES",
            "data_type": _TYPE_SQL.get(t.name, "text"), "numeric_precision": prec,
            "numeric_precision_radix": 2 if prec else None,
            "numeric_scale": 0 if t.oid in (pgt.INT2.oid, pgt.INT4.oid, pgt.INT8.oid)
            else None, "udt_catalog": self.database, "udt_schema": "pg_catalog",
            "udt_name": t.name, "dtd_identifier": str(n), "is_self_referencing": "NO",
            "is_identity": "NO", "is_generated": "NEVER", "is_updatable": "NO"}])
        notes = []
        if str(cname).lower() == str(key).lower():
            notes.append("join key: never revealed nor aggregated")
        if len(col) > 3 and col[3] is not None:
            notes.append(f"declared domain {col[3]} (GROUP BY key)")
        if notes:
            self._insert("pgc", "pg_description", [{"objoid": oid, "classoid": 1259,
                                                     "objsubid": n,
                                                     "description": "; ".join(notes)}])

    # --- answering ----------------------------------------------------------------------------

    def run(self, sql: str, params: Sequence[Any] = ()
            ) -> tuple[list[tuple[str, pgt.PgType]], list[tuple]]:
        """Answer a catalog query: (columns with their PostgreSQL types, rows)."""
        text = rewrite(sql, self.oids)
        log.debug("catalog query %r as %r", sql, text)
        try:
            cur = self.db.execute(text, list(params)) if params else self.db.execute(text)
        except duckdb.Error as e:
            raise catalog_error(e) from None
        desc = cur.description or []
        cols = [(d[0], pgt.pg_type(str(d[1]))) for d in desc]
        return cols, cur.fetchall()


# --- rewriting a client's catalog query for the catalog database -----------------------------

_OPERATOR = re.compile(r"OPERATOR\s*\(\s*(?:pg_catalog\s*\.\s*)?([^)\s]+)\s*\)", re.I)
_COLLATE = re.compile(r"\s+COLLATE\s+(?:pg_catalog\s*\.\s*)?(?:\"?default\"?|\"C\"|C)\b", re.I)


def _preprocess(sql: str) -> str:
    return _COLLATE.sub("", _OPERATOR.sub(r"\1", sql))


def parse(sql: str) -> exp.Expression:
    """A client statement as sqlglot's PostgreSQL AST (ParseError -> ProgrammingError)."""
    try:
        tree = sqlglot.parse_one(_preprocess(sql), read="postgres")
    except sqlglot.errors.SqlglotError as e:
        from dialect.errors import ParseError

        raise ParseError(f"syntax error: {str(e).splitlines()[0]}") from None
    if tree is None:
        raise ProgrammingError("empty query")
    return tree


def table_kind(t: exp.Table) -> str:
    """'pg' (pg_catalog), 'info' (information_schema) or 'user' (a federated table)."""
    db = (t.db or "").lower()
    name = t.name.lower()
    if db == "pg_catalog" or (not db and name in CATALOG_TABLES):
        return "pg"
    if db == "information_schema":
        return "info"
    return "user"


def _type_name(dt: exp.DataType) -> str:
    if dt.this == exp.DataType.Type.USERDEFINED:
        kind = dt.args.get("kind")
        if isinstance(kind, exp.Dot):
            kind = kind.expression
        return (kind.name if isinstance(kind, exp.Expression) else str(kind or "")).lower()
    return ""


def _transform(node: exp.Expression, oids: dict[str, int]) -> exp.Expression:
    if isinstance(node, exp.Table) and not isinstance(node.this, exp.Func):
        kind = table_kind(node)
        if kind == "pg":
            node.set("db", exp.to_identifier("pgc"))
            node.set("catalog", None)
        elif kind == "info":
            node.set("db", exp.to_identifier("pgi"))
            node.set("catalog", None)
        else:
            node.set("db", exp.to_identifier("public"))
            node.set("catalog", None)
        return node
    if isinstance(node, (exp.CurrentDatabase, exp.CurrentCatalog)):
        return exp.Anonymous(this="current_database", expressions=[])
    if isinstance(node, exp.CurrentSchema):
        return exp.Anonymous(this="current_schema", expressions=[])
    if isinstance(node, (exp.CurrentUser, exp.SessionUser)) or (
            isinstance(node, exp.Column) and not node.table
            and node.name.lower() in ("current_user", "session_user", "user",
                                      "current_role")):
        return exp.Anonymous(this="pg_get_userbyid", expressions=[exp.Literal.number(10)])
    if isinstance(node, exp.Column) and not node.table and node.name.lower() in (
            "current_schema", "current_catalog"):
        return exp.Anonymous(this=node.name.lower(), expressions=[])
    if isinstance(node, exp.Cast):
        to = node.args.get("to")
        name = ""
        if isinstance(to, exp.ObjectIdentifier):
            name = to.name.lower()
        elif isinstance(to, exp.DataType):
            name = _type_name(to)
        if name:
            return _cast(node.this, name, oids)
    return node


def _unqualify(node: exp.Expression) -> exp.Expression:
    """``pg_catalog.f(...)`` -> ``f(...)`` (the catalog's macros live in the default schema)."""
    if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) \
            and node.this.name.lower() in ("pg_catalog", "information_schema") \
            and isinstance(node.expression, exp.Func):
        return node.expression
    return node


def _pg_name(e: exp.Expression) -> str:
    """The column name PostgreSQL gives an unaliased select item."""
    if isinstance(e, exp.Column):
        return e.name
    if isinstance(e, (exp.CurrentUser, exp.CurrentSchema, exp.SessionUser,
                      exp.CurrentDatabase, exp.CurrentCatalog)):
        return e.sql("postgres").split("(")[0].lower()
    if isinstance(e, exp.Cast):
        inner = _pg_name(e.this)
        if inner != "?column?":
            return inner
        to = e.args.get("to")
        return to.name.lower() if isinstance(to, exp.ObjectIdentifier) else (
            _type_name(to) or to.sql("postgres").lower()) if to is not None else "?column?"
    if isinstance(e, exp.Func) and not isinstance(e, (exp.Binary, exp.Connector)):
        name = e.sql("postgres").split("(")[0].strip().lower().split(".")[-1]
        return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else "?column?"
    if isinstance(e, exp.Case):
        return "case"
    return "?column?"


def _name_columns(tree: exp.Expression) -> None:
    """Alias unaliased select items as PostgreSQL names them (``?column?``, ``version``)."""
    if not isinstance(tree, exp.Select):
        return
    items = []
    for e in tree.expressions:
        if isinstance(e, (exp.Alias, exp.Star, exp.Column)) or (
                isinstance(e, exp.Column) and isinstance(e.this, exp.Star)):
            items.append(e)
        else:
            items.append(exp.alias_(e, _pg_name(e), quoted=True))
    tree.set("expressions", items)


def _cast(value: exp.Expression, name: str, oids: dict[str, int]) -> exp.Expression:
    """PostgreSQL's object-identifier and system-type casts, over the catalog."""
    if name in ("regclass", "regtype", "regnamespace", "regproc", "regprocedure", "regrole",
                "regoper", "regoperator", "regconfig", "regdictionary"):
        if isinstance(value, exp.Literal) and value.is_string:
            text = value.this.strip()
            if text.isdigit():
                return exp.Literal.number(int(text))
            bare = text.split(".")[-1].strip('"')
            if name == "regclass":
                if bare.lower() in oids:
                    return exp.Literal.number(oids[bare.lower()])
                return sqlglot.parse_one(
                    f"(SELECT first(oid) FROM pgc.pg_class WHERE relname = {_literal(bare)})",
                    read="duckdb")
            if name == "regtype":
                return sqlglot.parse_one(
                    f"(SELECT first(oid) FROM pgc.pg_type_fmt WHERE typname = "
                    f"{_literal(bare)} OR fmt = {_literal(bare)})", read="duckdb")
            if name in ("regproc", "regprocedure"):  # pg_type/pg_proc hold the names
                return exp.Literal.string(bare.split("(")[0])
            if name == "regnamespace":
                return sqlglot.parse_one(
                    f"(SELECT first(oid) FROM pgc.pg_namespace WHERE nspname = "
                    f"{_literal(bare)})", read="duckdb")
            return exp.Literal.number(0)
        names = {"regclass": "regclass_name", "regtype": "regtype_name",
                 "regnamespace": "regnamespace_name"}
        if name in names:  # an oid shown as a reg* value prints as its name
            return exp.Anonymous(this=names[name], expressions=[
                exp.Cast(this=value, to=exp.DataType.build("BIGINT"))])
        return exp.Cast(this=value, to=exp.DataType.build("BIGINT"))
    if name in ("oid", "xid", "cid", "xid8"):
        return exp.Cast(this=value, to=exp.DataType.build("BIGINT"))
    if name in ("text", "name", "varchar", "bpchar", "char", '"char"', "pg_node_tree",
                "aclitem"):
        return exp.Cast(this=value, to=exp.DataType.build("VARCHAR"))
    if name in ("int2vector", "oidvector"):
        return exp.Cast(this=value, to=exp.DataType.build("VARCHAR"))
    if name == "int4":
        return exp.Cast(this=value, to=exp.DataType.build("INTEGER"))
    if name == "int8":
        return exp.Cast(this=value, to=exp.DataType.build("BIGINT"))
    if name == "int2":
        return exp.Cast(this=value, to=exp.DataType.build("SMALLINT"))
    if name in ("float8", "float4"):
        return exp.Cast(this=value, to=exp.DataType.build("DOUBLE"))
    if name == "bool":
        return exp.Cast(this=value, to=exp.DataType.build("BOOLEAN"))
    return exp.Cast(this=value, to=exp.DataType.build("VARCHAR"))


def _reg_names(tree: exp.Expression) -> exp.Expression:
    """``x::regclass::text`` and ``x::regtype::text`` print names, not numbers."""
    for cast in list(tree.find_all(exp.Cast)):
        inner = cast.this
        to = cast.args.get("to")
        if not isinstance(inner, exp.Cast) or not isinstance(to, (exp.DataType,
                                                                    exp.ObjectIdentifier)):
            continue
        outer = to.name.lower() if isinstance(to, exp.ObjectIdentifier) else _type_name(to) \
            or to.this.value.lower()
        ito = inner.args.get("to")
        iname = ito.name.lower() if isinstance(ito, exp.ObjectIdentifier) else (
            _type_name(ito) if isinstance(ito, exp.DataType) else "")
        if outer in ("text", "name", "varchar") and iname in ("regclass", "regtype",
                                                                "regnamespace"):
            fn = {"regclass": "regclass_name", "regtype": "regtype_name",
                  "regnamespace": "regnamespace_name"}[iname]
            cast.replace(exp.Anonymous(this=fn, expressions=[exp.Cast(
                this=inner.this, to=exp.DataType.build("BIGINT"))]))
    return tree


def rewrite(sql: str, oids: dict[str, int] | None = None) -> str:
    """A client's catalog query as DuckDB SQL over the catalog database."""
    tree = parse(sql).transform(_unqualify, copy=False)
    _name_columns(tree)
    tree = _reg_names(tree)
    tree = tree.transform(lambda n: _transform(n, oids or {}), copy=False)
    # unnest(...) in FROM is a table function: drop a pg_catalog qualifier sqlglot kept
    out = tree.sql(dialect="duckdb")
    return re.sub(r"\bpg_catalog\.", "", out)


def catalog_error(e: duckdb.Error) -> Exception:
    """A DuckDB error on a catalog query, as the mpcsql error it means."""
    from dialect.errors import BindError, ParseError

    msg = str(e).splitlines()[0]
    if isinstance(e, duckdb.ParserException):
        return ParseError(f"syntax error in catalog query: {msg}")
    if isinstance(e, duckdb.CatalogException):
        if "Table with name" in msg:
            return BindError("unknown table in catalog query: " + msg)
        return NotSupportedError("catalog query: " + msg)
    if isinstance(e, duckdb.BinderException) and "column" in msg.lower():
        return BindError("unknown column in catalog query: " + msg)
    return NotSupportedError("the endpoint cannot answer this catalog query: " + msg)
