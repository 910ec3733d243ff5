"""Write the three parties' party.toml files and load the data parties' DuckDB files.

    python parties.py --dir STATE/parties --port 7460

Each party gets its own directory (``ac/``, ``emc/``, ``helper/``) as in
``examples/three-parties``, listening on ``--port``, ``--port``+1 and ``--port``+2 on
127.0.0.1.  The insurer ``ac`` holds id, age, sex, smoker, region, charges and declares the
public values of ``region``, ``sex`` and ``smoker`` (so that they may be GROUP BY keys); the
hospital ``emc`` holds id, bmi, children.  Every party allows COUNT, SUM, AVG, MIN, MAX,
columns in WHERE and GROUP BY, groups of at least 10 rows, and both join protocols.  The
data is the bundled Medical Costs split (1,104 rows each, 870 people in both), the same as
``mpcsql demo``.  Keys and certificates are made by run.sh with
``mpcsql init`` and ``mpcsql certs``; an existing party.toml is rewritten.
"""

from __future__ import annotations

import argparse
import os

import duckdb

from engine.data.demo import DOMAINS, split

PARTIES = ("ac", "emc", "helper")

TEMPLATE = """\
# mpcsql party configuration of "{name}" (written by examples/superset/parties.py)
[party]
name = "{name}"
role = "{role}"

[federation]
parties = ["ac", "emc", "helper"]
helper = "helper"

[listen]
host = "127.0.0.1"
port = {port}

[tls]
ca = "certs/ca.crt"
cert = "certs/{name}.crt"
key = "{name}.key"
{peers}
{data}
[policy]
min_intersection = 10
allow = {{ "*" = ["COUNT", "SUM", "AVG", "MIN", "MAX", "WHERE", "GROUP BY"] }}
min_group_rows = 10
join_protocols = ["masked", "paillier"]

[audit]
path = "audit.log"

[timeouts]
connect = 10
peer = 30
query = 600
"""

DATA = {
    "ac": """
[database]
path = "ac.duckdb"

[[tables]]
name = "ac"
key = "id"
columns = ["age", "sex", "smoker", "region", "charges"]
domains = {{ region = [{regions}], sex = [0, 1], smoker = [0, 1] }}
""",
    "emc": """
[database]
path = "emc.duckdb"

[[tables]]
name = "emc"
key = "id"
columns = ["bmi", "children"]
domains = {{ children = {{ min = 0, max = 5 }} }}
""",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="directory of the three party directories")
    ap.add_argument("--port", type=int, default=7460, help="ac's port; emc +1, helper +2")
    args = ap.parse_args(argv)
    ports = {p: args.port + i for i, p in enumerate(PARTIES)}
    regions = ", ".join(f'"{r}"' for r in DOMAINS["ac"]["region"])
    frames = dict(zip(("ac", "emc"), split(), strict=True))
    for name in PARTIES:
        d = os.path.join(args.dir, name)
        os.makedirs(d, mode=0o700, exist_ok=True)
        peers = "".join(f'\n[peers.{q}]\naddress = "127.0.0.1:{ports[q]}"\n'
                        f'cert = "certs/{q}.crt"\n' for q in PARTIES if q != name)
        data = DATA.get(name, "").format(regions=regions)
        with open(os.path.join(d, "party.toml"), "w") as f:
            f.write(TEMPLATE.format(name=name, role="helper" if name == "helper" else "data",
                                    port=ports[name], peers=peers, data=data))
        if name in frames:
            path = os.path.join(d, f"{name}.duckdb")
            if os.path.exists(path):
                os.remove(path)
            con = duckdb.connect(path)
            con.register("frame", frames[name])
            con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame')
            n = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            con.close()
            print(f"{path}: table {name}, {n} rows, columns {', '.join(frames[name].columns)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
