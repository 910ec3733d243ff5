"""Operator commands of ``mpcsql``: ``audit verify|show``, ``status`` and ``cancel``."""

from __future__ import annotations

import json
import sys


def cmd_audit_verify(args) -> int:
    from engine.server.audit import verify

    try:
        verdict = verify(args.path, anchor=args.anchor)
    except OSError as e:
        print(f"mpcsql: cannot read {args.path}: {e.strerror}", file=sys.stderr)
        return 2
    if verdict.ok:
        print(f"ok: {verdict.entries} entries, chain intact")
        print(f"last hash: {verdict.last_hash}")
        return 0
    print(f"{args.path}: line {verdict.bad_line}: {verdict.reason} "
          f"({verdict.entries} entries before it are intact)")
    return 1


def cmd_audit_show(args) -> int:
    from engine.server.audit import read

    try:
        entries = list(read(args.path))
    except (OSError, ValueError) as e:
        print(f"mpcsql: cannot read {args.path}: {e} (run 'mpcsql audit verify')",
              file=sys.stderr)
        return 2
    for e in entries[-args.last:] if args.last else entries:
        if args.json:
            print(json.dumps(e, ensure_ascii=False))
            continue
        approvals = ", ".join(f"{p} {v}" for p, v in (e.get("approvals") or {}).items())
        print(f"#{e.get('seq')} {e.get('time')} {e.get('query_id')} [{e.get('role')}] "
              f"analyst={e.get('analyst')} coordinator={e.get('coordinator')} "
              f"plan={e.get('plan')} -> {e.get('outcome')}")
        print(f"    sql: {e.get('sql')}")
        if approvals:
            print(f"    approvals: {approvals}")
        for party, facts in (e.get("revealed") or {}).items():
            print(f"    revealed to {party}: {'; '.join(facts)}")
    return 0


def _connect(args):
    if not args.server:
        raise SystemExit("mpcsql: status and cancel talk to a running party server: "
                         "give --server mpcsql://HOST:PORT")
    from engine.cli.deploy import open_remote

    return open_remote(args)


def cmd_status(args) -> int:
    con = _connect(args)
    try:
        queries = con.queries()
        pool = con.paillier_pool()
    finally:
        con.close()
    if args.json:
        print(json.dumps(queries))
        return 0
    if pool is not None:
        ready = ", ".join(f"{k['owner']}'s key {k['key']}: {k['ready']}" for k in pool["keys"])
        print(f"Paillier pool (target {pool['target']} per key): {ready or 'no keys yet'}; "
              f"{pool['made']} made in {pool['fill_seconds']:.1f} s "
              f"({pool['cpu_seconds']:.1f} CPU s), {pool['discarded']} discarded")
    if not queries:
        print("no queries")
        return 0
    for q in queries:
        times = " ".join(f"{k}={q[k]}" for k in ("submitted", "started", "finished") if q[k])
        print(f"{q['query_id']}  {q['state']:<9} {q['role']:<11} analyst={q['analyst']} "
              f"coordinator={q['coordinator']} {times}")
        print(f"    {q['sql']}" + (f"\n    error: {q['error']}" if q["error"] else ""))
        if q.get("progress"):  # a running query of yours (or any, for the administrator)
            print(f"    progress: {_progress_text(q['progress'])}")
            for party, p in (q["progress"].get("parties") or {}).items():
                if party != q["progress"].get("party") and p is not None:
                    print(f"      {party}: {_progress_text({**p, 'parties': None})}")
    return 0


def _progress_text(p: dict) -> str:
    """``encrypting 3,200 / 5,000 rows (64%), 12.3 s``; ``helper re-randomising, 40.0 s``."""
    from engine.client.progress import Progress

    return f"{Progress.from_reply({**p, 'parties': None})}, {float(p.get('elapsed') or 0):.1f} s"


def cmd_cancel(args) -> int:
    con = _connect(args)
    try:
        was = con.cancel(args.query_id)
    finally:
        con.close()
    print(f"cancelled {args.query_id} (was {was})")
    return 0


def add_commands(sub) -> None:
    """Register ``audit``, ``status`` and ``cancel`` on the ``mpcsql`` sub-parsers."""
    from engine.cli.deploy import add_server_options

    audit = sub.add_parser("audit", help="check or show a party's audit log")
    asub = audit.add_subparsers(dest="audit_cmd", required=True)
    v = asub.add_parser("verify", help="check the hash chain (exit 1 at the first bad line)")
    v.add_argument("path")
    v.add_argument("--anchor", metavar="HASH",
                   help="a hash recorded earlier that must still be in the chain "
                        "(detects removed trailing lines)")
    v.set_defaults(func=cmd_audit_verify)
    s = asub.add_parser("show", help="print the entries")
    s.add_argument("path")
    s.add_argument("--last", type=int, default=0, metavar="N", help="only the last N entries")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(func=cmd_audit_show)

    st = sub.add_parser("status", help="recent queries at your party's server, their state and "
                                       "the progress of your running ones")
    st.add_argument("--json", action="store_true")
    add_server_options(st)
    st.set_defaults(func=cmd_status)
    c = sub.add_parser("cancel", help="cancel one of your queued or running queries")
    c.add_argument("query_id")
    add_server_options(c)
    c.set_defaults(func=cmd_cancel)
