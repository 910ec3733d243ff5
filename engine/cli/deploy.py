"""``mpcsql init``, ``mpcsql certs ...`` and ``mpcsql serve``: running as a real party."""

from __future__ import annotations

import argparse
import os
import sys


def _die(msg: str) -> int:
    print(f"mpcsql: {msg}", file=sys.stderr)
    return 2


def cmd_init(args) -> int:
    from engine.deploy import certs
    from engine.deploy.template import BASE_PORT, DEFAULT_PARTIES, render

    parties = tuple(p.strip() for p in args.parties.split(",")) if args.parties \
        else DEFAULT_PARTIES
    helper = args.helper or parties[-1]
    try:
        for p in parties:
            certs.check_party_name(p)
    except certs.CertError as e:
        return _die(str(e))
    if args.party not in parties or helper not in parties or len(set(parties)) != 3:
        return _die(f"--party {args.party!r} and the helper {helper!r} must be among three "
                    f"distinct --parties ({', '.join(parties)})")
    role = "helper" if args.party == helper else "data"
    out = args.out
    toml = os.path.join(out, "party.toml")
    key = os.path.join(out, f"{args.party}.key")
    if os.path.exists(key) and not args.force:
        return _die(f"{key} exists; refusing to replace a party's key (--force to do so)")
    keep_toml = os.path.exists(toml) and not args.force  # an administrator prepared it
    hosts = dict(h.split("=", 1) for h in args.peer or [])
    peers = {p: hosts.get(p, f"127.0.0.1:{BASE_PORT + i}")
             for i, p in enumerate(parties) if p != args.party}
    host, _, port = (args.listen or f"127.0.0.1:{BASE_PORT + parties.index(args.party)}"
                     ).rpartition(":")
    problem = _private_dirs(out, os.path.join(out, "certs"))
    if problem:
        return _die(problem)
    if not keep_toml:
        with open(toml, "w") as f:
            f.write(render(args.party, role, parties, helper, host, int(port), peers,
                           toml_path=toml))
    csr = os.path.join(out, f"{args.party}.csr")
    certs.make_request(args.party, "party", key, csr, hosts=tuple(args.san or ()))
    print(f"{'kept the existing' if keep_toml else 'wrote'} {toml}"
          f"{'' if keep_toml else ' (edit it)'}; wrote {key} (private, 0600) and {csr}.\n"
          f"Next: have the federation CA sign it (mpcsql certs sign --ca CA_DIR {csr} "
          f"--out {os.path.join(out, 'certs', args.party + '.crt')}), and copy ca.crt and the "
          f"other parties' certificates into {os.path.join(out, 'certs')}/.")
    return 0


def _private_dirs(*dirs: str) -> str | None:
    """Create ``dirs`` private (0700); the reason an existing one is unfit, else None."""
    for d in dirs:
        if os.path.isdir(d):
            st = os.stat(d)
            if st.st_mode & 0o022:
                return (f"{d} can be written by other users (mode {st.st_mode & 0o777:o}); "
                        "chmod go-w it or choose another --out")
            continue
        try:
            os.makedirs(d, mode=0o700)
            os.chmod(d, 0o700)  # whatever the umask
        except OSError as e:
            return f"cannot create {d}: {e.strerror}"
    return None


def cmd_certs(args) -> int:
    from engine.deploy import certs

    try:
        if args.certs_cmd == "ca":
            path = certs.make_ca(args.out, name=args.name, days=args.days)
            print(f"wrote {path} (give it to every party and analyst) and "
                  f"{os.path.join(args.out, 'ca.key')} (keep it private)")
        elif args.certs_cmd == "sign":
            out = args.out or os.path.splitext(args.csr)[0] + ".crt"
            ident = certs.sign(args.ca, args.csr, out, days=args.days, expect=args.name)
            print(f"signed {ident}: wrote {out}")
        elif args.certs_cmd == "request":
            base = os.path.join(args.out, args.name)
            certs.make_request(args.name, "analyst", base + ".key", base + ".csr")
            print(f"wrote {base}.key (private, 0600) and {base}.csr: have the CA sign it")
        elif args.certs_cmd == "client":
            crt, key = certs.issue_analyst(args.ca, args.name, args.out, days=args.days)
            print(f"issued analyst {args.name}: wrote {crt} and {key}")
    except certs.CertError as e:
        return _die(str(e))
    return 0


def cmd_serve(args) -> int:
    from engine.server.party import main as server_main

    server_main(["--config", args.config])
    return 0


def add_commands(sub) -> None:
    """Register ``init``, ``certs`` and ``serve`` on the ``mpcsql`` argument parser."""
    p = sub.add_parser("init", help="write a party.toml, a private key and a certificate "
                                    "request for one party (in private, 0700 directories)")
    p.add_argument("--party", required=True, help="this party's name, e.g. emc")
    p.add_argument("--out", required=True, help="directory to write into")
    p.add_argument("--parties", help="all three parties in order (default ac,emc,helper)")
    p.add_argument("--helper", help="which party is the helper (default: the last)")
    p.add_argument("--listen", metavar="HOST:PORT", help="default 127.0.0.1:7400 + position")
    p.add_argument("--peer", action="append", metavar="NAME=HOST:PORT",
                   help="a peer's address (default 127.0.0.1:7400 + its position)")
    p.add_argument("--san", action="append", metavar="HOST",
                   help="host name or IP to list in the certificate (informational)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing key and party.toml (an existing party.toml is "
                        "otherwise kept)")
    p.set_defaults(func=cmd_init)

    c = sub.add_parser("certs", help="a small CA: create it, sign party and analyst requests")
    cs = c.add_subparsers(dest="certs_cmd", required=True)
    x = cs.add_parser("ca", help="create ca.crt and ca.key in --out")
    x.add_argument("--out", required=True)
    x.add_argument("--name", default="mpcsql federation CA")
    x.add_argument("--days", type=int, default=3650)
    x = cs.add_parser("sign", help="sign a party's or analyst's certificate request")
    x.add_argument("csr")
    x.add_argument("--ca", required=True, help="directory holding ca.crt and ca.key")
    x.add_argument("--out", help="certificate to write (default: the request's name + .crt)")
    x.add_argument("--name", help="refuse unless the request names exactly this identity")
    x.add_argument("--days", type=int, default=825)
    x = cs.add_parser("request", help="an analyst's private key and certificate request")
    x.add_argument("--name", required=True, help="user@party, e.g. alice@ac")
    x.add_argument("--out", required=True)
    x = cs.add_parser("client", help="issue an analyst key and certificate in one step "
                                     "(the CA operator then holds the key: for tests)")
    x.add_argument("--ca", required=True)
    x.add_argument("--name", required=True, help="user@party, e.g. alice@ac")
    x.add_argument("--out", required=True)
    x.add_argument("--days", type=int, default=825)
    c.set_defaults(func=cmd_certs)

    s = sub.add_parser("serve", help="run this party's server (until SIGTERM or Ctrl-C)")
    s.add_argument("--config", required=True, help="path to party.toml")
    s.set_defaults(func=cmd_serve)


def add_server_options(p: argparse.ArgumentParser) -> None:
    """``--server mpcsql://host:port`` and the analyst's TLS files for query/explain."""
    p.add_argument("--server", metavar="mpcsql://HOST:PORT",
                   help="your party's running server (instead of embedded local parties)")
    p.add_argument("--tls-ca", default=os.environ.get("MPCSQL_TLS_CA"),
                   help="federation CA certificate (env MPCSQL_TLS_CA)")
    p.add_argument("--tls-cert", default=os.environ.get("MPCSQL_TLS_CERT"),
                   help="your analyst certificate (env MPCSQL_TLS_CERT)")
    p.add_argument("--tls-key", default=os.environ.get("MPCSQL_TLS_KEY"),
                   help="your analyst private key (env MPCSQL_TLS_KEY)")


def open_remote(args):
    """A Connection to ``args.server`` with the analyst's TLS files."""
    import engine
    from dialect.errors import InterfaceError

    files = {"ca": args.tls_ca, "cert": args.tls_cert, "key": args.tls_key}
    given = {k: v for k, v in files.items() if v}
    if given and len(given) != 3:
        raise InterfaceError("--tls-ca, --tls-cert and --tls-key go together (the CA "
                             "certificate, your analyst certificate and its key)")
    if getattr(args, "table", None):
        raise InterfaceError("--table is for embedded local parties; a party server exposes "
                             "the tables in its party.toml")
    return engine.connect(args.server, tls=given or None)
