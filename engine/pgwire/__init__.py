"""A PostgreSQL wire-protocol endpoint in front of one party's server (``mpcsql serve-pg``).

PostgreSQL clients (psql, psycopg, JDBC tools such as DBeaver and Metabase, Tableau, Power BI)
connect with their standard drivers; each login is mapped to an analyst identity, whose
queries go to the party server through the ordinary Python client.  See docs/pg.md.

Imports go one way: this package uses ``engine.client`` (through ``engine.connect``) and
``engine.deploy``; nothing below it imports it.
"""

from __future__ import annotations

from engine.pgwire.server import Endpoint, serve

__all__ = ["Endpoint", "serve"]
