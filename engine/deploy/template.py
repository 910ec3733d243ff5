"""The commented ``party.toml`` that ``mpcsql init`` writes."""

from __future__ import annotations

DEFAULT_PARTIES = ("ac", "emc", "helper")
BASE_PORT = 7400

_TEMPLATE = """\
# mpcsql party configuration for {name!r}.  Paths are relative to this file.
# Start the server with:  mpcsql serve --config {toml_path}

[party]
name = "{name}"
role = "{role}"                 # "data" (holds tables) or "helper" (holds none)

[federation]
# Every party, in the same order in all three party.toml files (it fixes MPyC party numbers).
parties = [{parties}]
helper = "{helper}"

[listen]
host = "{host}"            # address this server listens on (and binds MPyC session ports to)
port = {port}
# session_ports = [7410, 7429]  # MPyC session ports (one per running query); default: any free

[tls]
ca = "certs/ca.crt"           # the federation CA: it signed every party's and analyst's cert
cert = "certs/{name}.crt"       # this party's certificate (mpcsql certs sign ... {name}.csr)
key = "{name}.key"              # this party's private key (written by mpcsql init, mode 0600)
# pin_peers = false             # accept any peer certificate the CA signs (default: pinned)

# The other parties: where their servers listen, and their exact certificates (pinned: only
# that certificate is accepted as that party; required unless [tls] pin_peers = false).
{peers}
{data}
[policy]
min_intersection = 10         # smallest intersection (or table) any aggregate may cover
# Which aggregates may touch this party's columns; the most specific key wins.
allow = {{ "*" = ["COUNT", "SUM", "AVG", "LASSO", "RIDGE", "LINREG"] }}

[audit]
path = "audit.log"            # hash-chained log of every query this party took part in

[timeouts]                    # seconds
connect = 10                  # to open a connection to a peer (and its MPyC session port)
peer = 30                     # for a peer to answer a control request
query = 600                   # for a whole query run; every party aborts after this
idle = 300                    # a control connection that sends nothing this long is closed

[crypto]
paillier_key_bits = 2048      # Paillier key size for the published join (>= 2048)
paillier_pool = 0             # > 0: data parties keep one key per server run, and every
                              # party keeps this many randomisers r^n per key ready,
                              # computed while idle (docs/deploy.md: "Paillier precomputation")
paillier_randomness = "djn"   # a data party's keys: "djn" (h^a, short secret a; published h),
                              # "classic" (r^n), or "subgroup" (Paillier's subgroup variant:
                              # ~4x faster decryption, one more assumption); docs/protocols.md:
                              # "DJN randomness", "Subgroup keys"
"""

_DATA = """
[database]
path = "{name}.duckdb"         # this party's DuckDB file; the server opens it read-only

# Tables queries may use: the join key and the value columns exposed (default: all).
[[tables]]
name = "{name}"
key = "id"
# columns = ["age", "charges"]
# bounds = {{ charges = 65536 }}  # public |x| bounds used to scale model aggregates
# domains = {{ region = ["north", "south"], children = {{ min = 0, max = 5 }} }}  # GROUP BY keys

# A table read from PostgreSQL at every query instead of the DuckDB file (docs/deploy.md);
# the DSN holds no password: it is in password_file (mode 0600) or in password_env.
# [[tables]]
# name = "{name}_pg"
# key = "id"
# bounds = {{ charges = 65536 }}  # declare bounds: the data may change after start-up
# [tables.postgres]
# dsn = "host=db.internal port=5432 dbname=records user=mpcsql_reader"
# table = "public.{name}"  # or: query = "SELECT id, age, charges FROM public.{name}"
# password_file = "pg.password"  # or: password_env = "MPCSQL_PG_PASSWORD"
"""


def render(name: str, role: str, parties: tuple[str, ...], helper: str, host: str, port: int,
           peers: dict[str, str], toml_path: str) -> str:
    """The commented template for party ``name``; ``peers`` maps a peer to 'host:port'."""
    peer_text = "\n".join(f'[peers.{p}]\naddress = "{a}"\ncert = "certs/{p}.crt"\n'
                          for p, a in peers.items())
    return _TEMPLATE.format(
        name=name, role=role, parties=", ".join(f'"{p}"' for p in parties), helper=helper,
        host=host, port=port, peers=peer_text, toml_path=toml_path,
        data=_DATA.format(name=name) if role == "data" else "")
