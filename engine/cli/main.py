"""The ``mpcsql`` command: ``demo``, ``query`` and ``explain`` (embedded local parties, or a
running party server with ``--server``), and ``init``/``certs``/``serve`` (see cli_deploy)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

DEMO_SQL = ("SELECT COUNT(*), AVG(ac.charges), AVG(emc.bmi), SUM(emc.children) "
            "FROM ac INNER JOIN emc USING (id)")
DEMO_FEATURES = ("age", "bmi", "children", "sex", "smoker")
DEMO_ALPHA = 1.0
DEMO_LASSO = (f"SELECT LASSO(charges, {', '.join(DEMO_FEATURES)}, alpha => {DEMO_ALPHA}) "
              "FROM ac INNER JOIN emc USING (id)")

QUERY_EPILOG = r"""examples:
  mpcsql query --table ac=insurer.csv --table emc=hospital.csv \
      "SELECT COUNT(*), AVG(ac.charges) FROM ac JOIN emc USING (id)"
  mpcsql query --table claims@ac=claims.parquet --table visits@emc=visits.csv --format csv \
      "SELECT AVG(claims.charges) FROM claims JOIN visits USING (id)"
  mpcsql query --server mpcsql://127.0.0.1:7400 --tls-ca ca.crt --tls-cert me@ac.crt \
      --tls-key me@ac.key "SELECT COUNT(*) FROM ac JOIN emc USING (id)"

Without --server, three local parties (ac, emc, helper) start for this one query and stop
after it; each --table is loaded into its own party's DuckDB file only.  New here? Try
`mpcsql demo` first."""

EXPLAIN_EPILOG = r"""example:
  mpcsql explain --table ac=insurer.csv --table emc=hospital.csv \
      "SELECT AVG(ac.charges) FROM ac JOIN emc USING (id)"

Nothing is computed: it prints the plan, what each party would learn and each party's rules."""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.6f}"
    return "NULL" if v is None else str(v)


def _table(cols: list[str], rows: list[tuple]) -> str:
    cells = [cols] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |",
           line]
    out += ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in cells[1:]]
    out.append(line)
    return "\n".join(out)


def _phases(stats: dict) -> str:
    lines = []
    for party, s in stats.items():
        if not isinstance(s, dict) or "phases" not in s:
            continue
        ph = ", ".join(f"{k} {v:.2f}s" for k, v in s["phases"].items())
        sent = sum(s.get("bytes_sent", {}).values())
        lines.append(f"  {party:<7} {ph}; sent {sent / 1e6:.2f} MB")
    return "\n".join(lines)


def cmd_demo(args) -> int:
    import engine
    from engine.cli.progress import progress_bar
    from engine.data.demo import plaintext, register, split

    ac, emc = split()
    print(f"Medical Costs data split: ac (insurer) {len(ac)} rows, emc (hospital) {len(emc)} "
          "rows, synthetic ids, partial overlap.")
    print("Starting three local parties (ac, emc, helper) on loopback ...")
    t0 = time.perf_counter()
    with engine.connect(key_bits=args.key_bits, workdir=args.workdir) as con:
        workdir = con.workdir
        register(con, ac, emc)  # key id, with the declared domains
        print(f"\n{con.explain(DEMO_SQL)}\n")
        with progress_bar() as bar:  # on a terminal only
            cur = con.execute(DEMO_SQL, on_progress=bar)
        cols = [d[0] for d in cur.description]
        secure = cur.fetchall()
        stats = cur.stats
        with progress_bar() as bar:
            lasso = con.execute(DEMO_LASSO, on_progress=bar)
        model = lasso.fetchall()
        model_stats = lasso.stats
    _, plain = plaintext(DEMO_SQL, {"ac": ac, "emc": emc})
    print(f"Query: {DEMO_SQL}\n")
    print("Secure (three parties, private join, MPyC):")
    print(_table(cols, secure))
    print("Plaintext DuckDB on the same data (reference):")
    print(_table(cols, plain))
    diff = max(abs(float(a) - float(b)) for a, b in zip(secure[0], plain[0], strict=True))
    print(f"max |secure - plaintext| = {diff:.3g}")
    print("\nTime per phase:")
    print(_phases(stats))
    print(f"\nQuery: {DEMO_LASSO}\n")
    ref = _sklearn_lasso(ac, emc)
    diffs = [abs(c - r) for (_, c), r in zip(model, ref, strict=True)]
    rows = [(t, c, r, f"{e:.1e}") for (t, c), r, e in zip(model, ref, diffs, strict=True)]
    print(_table(["term", "secure coefficient", "scikit-learn", "|difference|"], rows))
    print(f"max |secure - scikit-learn| = {max(diffs):.3g} "
          "(raw units: charges in USD, no rescaling by the user)")
    print("\nTime per phase:")
    print(_phases(model_stats))
    print(f"\nTotal {time.perf_counter() - t0:.1f} s including start-up.")
    if args.workdir:
        print(f"The parties' files are kept in {workdir}: DuckDB files, audit logs "
              f"(e.g. mpcsql audit show {os.path.join(workdir, 'ac.audit.jsonl')}) and "
              "server logs.")
    else:
        print(f"The parties' files (DuckDB files, audit logs <party>.audit.jsonl, server logs) "
              f"were in {workdir}, now removed; keep them with mpcsql demo --workdir DIR.")
    return 0


def _sklearn_lasso(ac, emc) -> list[float]:
    """scikit-learn's Lasso on the plaintext join (reference only; needs scikit-learn)."""
    from engine.data.demo import plaintext

    try:
        from sklearn.linear_model import Lasso
    except ImportError:  # pragma: no cover - scikit-learn is a test/bench dependency
        return [float("nan")] * (len(DEMO_FEATURES) + 1)
    cols, rows = plaintext(f"SELECT charges, {', '.join(DEMO_FEATURES)} FROM ac JOIN emc "
                           "USING (id)", {"ac": ac, "emc": emc})
    import numpy as np

    data = np.array(rows, dtype=float)
    ref = Lasso(alpha=DEMO_ALPHA, tol=1e-10, max_iter=100000).fit(data[:, 1:], data[:, 0])
    return [float(ref.intercept_), *map(float, ref.coef_)]


def _open(args):
    import engine

    if args.server:
        from engine.cli.deploy import open_remote

        if args.workdir:
            from dialect.errors import InterfaceError

            raise InterfaceError("--workdir is for embedded local parties; a party server keeps "
                                 "its files where its party.toml says")
        return open_remote(args)
    specs = [_table_spec(spec) for spec in args.table or []]
    domains = _column_specs(getattr(args, "domain", None) or [], "--domain", _domain_value)
    bounds = _column_specs(getattr(args, "bound", None) or [], "--bound", float)
    known = {name for name, _, _ in specs}
    for table in set(domains) | set(bounds):
        if table not in known:
            from dialect.errors import ProgrammingError

            raise ProgrammingError(f"--domain/--bound name table {table!r}, which no --table "
                                   "registers")
    con = engine.connect(key_bits=args.key_bits, workdir=args.workdir)
    try:
        for name, party, path in specs:
            con.register(name, path, party=party, key=args.key,
                         domains=domains.get(name) or None, bounds=bounds.get(name) or None)
    except BaseException:
        con.close()
        raise
    return con


def _column_specs(specs: list[str], flag: str, parse) -> dict[str, dict[str, object]]:
    """``TABLE.COLUMN=VALUE`` options -> {table: {column: parse(VALUE)}}."""
    from dialect.errors import ProgrammingError

    out: dict[str, dict[str, object]] = {}
    for spec in specs:
        target, eq, value = spec.partition("=")
        table, dot, column = target.partition(".")
        if not (eq and dot and table and column and value):
            example = "ac.region=north,south" if flag == "--domain" else "ac.charges=65536"
            raise ProgrammingError(f"{flag} {spec!r}: give TABLE.COLUMN=VALUE, e.g. {example}")
        try:
            out.setdefault(table, {})[column] = parse(value)
        except ValueError as e:
            raise ProgrammingError(f"{flag} {spec!r}: {e}") from None
    return out


def _domain_value(text: str) -> object:
    """``LO..HI`` (an integer range) or a comma-separated list of categories (integers,
    true/false, or strings)."""
    lo, dots, hi = text.partition("..")
    if dots:
        return {"min": int(lo), "max": int(hi)}
    items = [t.strip() for t in text.split(",")]
    if all(t.lower() in ("true", "false") for t in items):
        return [t.lower() == "true" for t in items]
    try:
        return [int(t) for t in items]
    except ValueError:
        return items


def _table_spec(spec: str) -> tuple[str, str, str]:
    """``NAME[@PARTY]=PATH`` -> (name, party, path), checked before any party starts."""
    from dialect.errors import ProgrammingError
    from engine.client.embedded import DEFAULT_PARTIES

    parties = [p for p, _ in DEFAULT_PARTIES]
    data = [p for p, role in DEFAULT_PARTIES if role == "data"]
    name, eq, path = spec.partition("=")
    name, _, party = name.partition("@")
    forms = (f"give --table PARTY=PATH (the table is named after its party, e.g. "
             f"{data[0]}={path or 'a.csv'}) or --table NAME@PARTY=PATH (e.g. "
             f"{name or 'claims'}@{data[0]}={path or 'a.csv'})")
    party = party or name
    if not eq or not path or not name:
        raise ProgrammingError(f"--table {spec!r}: {forms}")
    if party not in parties:
        raise ProgrammingError(f"--table {spec}: unknown party {party!r}; {forms}; "
                               f"parties: {', '.join(parties)}")
    return name, party, path


def cmd_query(args) -> int:
    from engine.cli.progress import progress_bar

    with _open(args) as con, progress_bar() as bar:  # a bar on a terminal only
        cur = con.execute(args.sql, on_progress=bar)
        cols = [d[0] for d in cur.description]
        rows = cur.fetchall()
    if args.format == "json":
        print(json.dumps([dict(zip(cols, r, strict=True)) for r in rows]))
    elif args.format == "csv":
        print(",".join(cols))
        for r in rows:
            print(",".join("" if v is None else str(v) for v in r))
    else:
        print(_table(cols, rows))
    return 0


def cmd_explain(args) -> int:
    with _open(args) as con:
        print(con.explain(args.sql))
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mpcsql")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(version unknown: package not installed; pip install -e .)"


NEWCOMER_HINT = ("New here? try: mpcsql demo   (three local parties, bundled insurer/hospital "
                 "data)\nHelp on one command: mpcsql COMMAND --help")


def main(argv: list[str] | None = None) -> int:
    """Run the ``mpcsql`` command; returns its exit status.

    Without a command it prints the help (command list and a hint) on stdout and returns 2,
    the exit status of every other usage error (git, too, prints its help and fails).
    """
    from engine.cli.deploy import add_commands as add_deploy_commands
    from engine.cli.deploy import add_server_options
    from engine.cli.ops import add_commands as add_ops_commands

    ap = argparse.ArgumentParser(prog="mpcsql", description="Secure SQL across three parties.",
                                 epilog=NEWCOMER_HINT,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"mpcsql {_version()}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the bundled insurer/hospital demo")
    demo.add_argument("--key-bits", type=int, default=2048, help=argparse.SUPPRESS)
    _add_workdir(demo)
    demo.set_defaults(func=cmd_demo)
    for name, func, text, epilog in (
            ("query", cmd_query, "run a secure query", QUERY_EPILOG),
            ("explain", cmd_explain, "show the plan and what each party learns",
             EXPLAIN_EPILOG)):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                           epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("sql", metavar="SQL",
                       help="the query, e.g. \"SELECT COUNT(*) FROM ac JOIN emc USING (id)\" "
                            "(quote it for the shell)")
        p.add_argument("--table", action="append", metavar="NAME[@PARTY]=PATH",
                       help="register a CSV/Parquet file at a party (party defaults to NAME); "
                            "repeat for each table")
        p.add_argument("--key", default="id", help="join key column (default: id)")
        p.add_argument("--domain", action="append", metavar="TABLE.COLUMN=VALUES",
                       help="declare a column's public values, needed to GROUP BY it: "
                            "'a,b,c' or an integer range 'LO..HI'; repeat per column")
        p.add_argument("--bound", action="append", metavar="TABLE.COLUMN=N",
                       help="declare a public bound |x| <= N of a column (models, "
                            "precision); repeat per column")
        p.add_argument("--key-bits", type=int, default=2048, help=argparse.SUPPRESS)
        _add_workdir(p)
        add_server_options(p)
        if name == "query":
            p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                           help="output: a text table (default), CSV with a header line, or "
                                "JSON (a list of objects, one per row)")
        p.set_defaults(func=func)
    add_deploy_commands(sub)
    add_ops_commands(sub)
    _add_serve_pg(sub)
    args = ap.parse_args(argv)
    if args.cmd is None:
        ap.print_help()
        return 2
    from dialect.errors import Error

    try:
        return args.func(args)
    except Error as e:
        print(f"mpcsql: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mpcsql: interrupted; all parties stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit flush does not fail again
        return 141


def _add_workdir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", metavar="DIR",
                   help="keep the local parties' files (DuckDB files, audit logs "
                        "<party>.audit.jsonl, server logs <party>.log) in DIR, created if "
                        "missing and kept afterwards (default: a temporary directory, "
                        "removed at the end)")


SERVE_PG_EPILOG = r"""examples:
  mpcsql serve-pg --hash-password            # prompts; prints a SCRAM-SHA-256 verifier
  mpcsql serve-pg --config ac/party.toml     # its [pg] section; until SIGTERM / Ctrl-C
  psql "host=ac-host port=5432 user=alice dbname=mpcsql sslmode=verify-ca sslrootcert=ca.crt"

Each [pg.users.NAME] login acts as the analyst of its analyst_cert at this party's server;
see docs/pg.md."""


def cmd_serve_pg(args) -> int:
    """``mpcsql serve-pg``: the PostgreSQL wire endpoint (engine.pgwire), or a verifier."""
    if args.hash_password:
        import getpass

        from engine.pgwire.auth import md5_verifier, scram_verifier

        pw = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
        pw = pw.rstrip("\n")
        print(md5_verifier(args.md5, pw) if args.md5 else scram_verifier(pw))
        return 0
    if not args.config:
        from dialect.errors import InterfaceError

        raise InterfaceError("serve-pg needs --config party.toml (with a [pg] section), or "
                             "--hash-password")
    import logging

    from engine.deploy.config import load_pg_config
    from engine.pgwire import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_pg_config(args.config)
    serve(cfg, ready=lambda h, p: print(f"READY {h} {p}", flush=True))
    return 0


def _add_serve_pg(sub) -> None:
    p = sub.add_parser("serve-pg", help="serve PostgreSQL clients (psql, BI tools) as this "
                                        "party's analysts", epilog=SERVE_PG_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="party.toml (or a file) with a [pg] section")
    p.add_argument("--hash-password", action="store_true",
                   help="read a password (prompt or stdin) and print its verifier for "
                        "[pg.users.NAME] password")
    p.add_argument("--md5", metavar="USER", help="with --hash-password: an md5 verifier for "
                                                 "USER instead of SCRAM-SHA-256")
    p.set_defaults(func=cmd_serve_pg)


if __name__ == "__main__":
    sys.exit(main())
