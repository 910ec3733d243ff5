"""End-to-end benchmark: synthetic vertically partitioned data, one secure query, one table.

Generates ``--rows`` rows per party (``--overlap`` of them in both tables) with a correlated
Gaussian design split ``--features A+E`` between ac and emc and a linear target at ac,
registers both tables through the public API (three party processes, 2048-bit Paillier keys
unless ``--key-bits``), runs ``--query`` with each ``--protocol`` ``--repeat`` times next to the
plaintext DuckDB join + scikit-learn, and prints medians. Usage::

    python -m bench.run [--rows 1000,5000] [--features 15+15] [--overlap 1.0] [--seed 0]
                        [--query lasso|ridge|linreg|sum|count] [--protocol paillier,masked]
                        [--alpha 0.05] [--repeat 3] [--netem DELAY_MS[:RATE_MBIT]]
                        [--pool auto|N] [--emulate-rtt MS[,MS...]] [--wan RTT_MS:MBIT]

``--pool`` turns on the parties' Paillier randomiser pools (``[crypto] paillier_pool``; ``auto``:
one per row and ciphertext of the largest ``--rows``) and, before every run, waits until every
pool is full: the table then shows that precomputation's wall clock and CPU seconds per party
next to the query's own (online) figures.

Every row also shows the communication on the critical path (engine.session.rounds): hops (one-
way messages in sequence; 2 hops = 1 round trip) in all and per stage (join / share conversion /
computation), the MB each party sent per stage, and the projected wall clock at three sites
(``--wan``, default 20 ms round trip and 100 Mbit/s per link: measured total + hops x RTT/2 +
setup round trips + per stage the largest per-link bytes / bandwidth), and the same with the
measured total replaced by the CPU path with two cores per party (:meth:`bench.common.Run.
cpu_path`, independent of this machine's load).  ``--emulate-rtt MS`` delays every message the
sessions receive by MS/2 (user-space latency emulation, where the kernel cannot shape links);
``--emulate-rtt 0,MS`` starts a federation for each value and interleaves their runs, to check
that the wall clock grows by hops x RTT/2 (``bench.report`` compares them).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

if __package__ in (None, ""):  # python bench/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine  # noqa: E402
from bench.common import (  # noqa: E402
    MODELS,
    PARTIES,
    QUERIES,
    WAIT,
    Repeated,
    compare,
    dump_json,
    execute,
    load_now,
    machine_note,
    markdown,
    ordered_phases,
    plaintext,
    pool_cells,
    query_sql,
    register,
    sci,
    secs,
    synthetic,
    traffic_cells,
)
from engine.protocols import paillier  # noqa: E402


def _features(spec: str) -> tuple[int, int]:
    a, sep, e = spec.partition("+")
    if not sep:
        raise argparse.ArgumentTypeError("--features expects AC+EMC, e.g. 15+15")
    return int(a), int(e)


def _ints(spec: str) -> list[int]:
    return [int(float(s)) for s in spec.split(",") if s]


def _protocols(spec: str) -> list[str]:
    out = [s.strip() for s in spec.split(",") if s.strip()]
    for p in out:
        if p not in ("paillier", "masked"):
            raise argparse.ArgumentTypeError(f"unknown protocol {p!r} (paillier, masked)")
    return out


def _wan(spec: str) -> tuple[float, float]:
    rtt, sep, rate = spec.partition(":")
    try:
        return float(rtt) / 1000.0, float(rate or 100) * 1e6 / 8
    except ValueError as e:
        raise argparse.ArgumentTypeError("--wan expects RTT_MS[:MBIT], e.g. 20:100") from e


def pool_target(args: argparse.Namespace) -> int:
    """Randomisers per key for ``--pool``: one per ciphertext of the largest table."""
    if not args.pool:
        return 0
    if args.pool != "auto":
        return int(args.pool)
    from engine.protocols.paillier import ciphertexts_per_row

    d = max(args.features[0] + 1, args.features[1])  # ac also holds the target
    return max(args.rows) * ciphertexts_per_row(d, args.key_bits)


def wait_for_pools(con, target: int, before: dict | None) -> dict:
    """Block until every party's pools hold ``target`` randomisers; what that took."""
    from engine.client.dbapi import Connection

    t0 = time.perf_counter()
    while True:
        st = {p: Connection(con.federation, p).paillier_pool() for p in PARTIES}
        keys = {p: st[p]["keys"] for p in PARTIES}
        if (len(keys["helper"]) == 2 and all(len(keys[p]) == 1 for p in ("ac", "emc"))
                and all(k["ready"] >= target for p in PARTIES for k in keys[p])):
            break
        time.sleep(0.5)
    prev = before or {p: {"cpu_seconds": 0.0, "fill_seconds": 0.0} for p in PARTIES}
    return {"state": st, "wait_seconds": time.perf_counter() - t0,
            "cpu_seconds": {p: st[p]["cpu_seconds"] - prev[p]["cpu_seconds"] for p in PARTIES},
            "fill_seconds": {p: st[p]["fill_seconds"] - prev[p]["fill_seconds"]
                             for p in PARTIES}}


def open_connection(args: argparse.Namespace):
    """The embedded federation, or (``--netem``) three servers in network namespaces."""
    if not args.netem:
        return engine.connect(key_bits=args.key_bits, query_timeout=args.timeout,
                              paillier_pool=pool_target(args),
                              paillier_randomness=args.paillier_randomness), "loopback"
    from bench import netns
    from engine.client.dbapi import Connection

    shaping = netns.Shaping.parse(args.netem)
    ok, how, use_netem = netns.check(shaping)
    if not ok:
        print(f"netem mode: skipped — not available on this machine: {how}")
        return None, ""
    fed = netns.NetnsFederation(shaping, use_netem=use_netem, key_bits=args.key_bits,
                                query_timeout=args.timeout, paillier_pool=pool_target(args),
                                paillier_randomness=args.paillier_randomness)
    return Connection(fed, "ac"), f"3 network namespaces, {shaping} ({how})"


def _floats(spec: str) -> list[float]:
    return [float(x) for x in spec.split(",") if x.strip()]


def _measure(args, cons) -> tuple[list[tuple[dict, Repeated]], list[str]]:
    """Every (rows, protocol, emulated RTT) configuration, the RTTs' runs interleaved."""
    d_ac, d_emc = args.features
    results: list[tuple[dict, Repeated]] = []
    failures: list[str] = []
    target, pools = pool_target(args), {}
    for rows in args.rows:
        ds = synthetic(rows, d_ac, d_emc, overlap=args.overlap, seed=args.seed)
        for _, con in cons:
            register(con, ds)
        plaintext(ds, args.query, args.alpha)  # warm-up: imports, DuckDB start-up
        for protocol in args.protocol:
            sql = query_sql(ds, args.query, alpha=args.alpha, protocol=protocol)
            reps = {ms: Repeated() for ms, _ in cons}
            failed: set[float] = set()
            for i in range(args.repeat):
                for ms, con in cons:
                    if ms in failed:
                        continue
                    rep = reps[ms]
                    plain = plaintext(ds, args.query, args.alpha)
                    if target and protocol == "paillier":
                        prev = pools.get(ms)
                        pools[ms] = wait_for_pools(con, target, prev and prev["state"])
                    try:
                        run = execute(con, sql)
                        run.emulated_rtt = ms / 1000.0
                        if target and protocol == "paillier":
                            run.pool = {k: v for k, v in pools[ms].items() if k != "state"}
                    except engine.Error as e:
                        failures.append(f"{rows} rows, {protocol}, emulated RTT {ms:g} ms: "
                                        f"{type(e).__name__}: {e}")
                        failed.add(ms)
                        continue
                    compare(run, plain, ds, args.query, args.alpha)
                    rep.runs.append(run)
                    rep.plains.append(plain)
                    print(f"# {rows} rows/party, {protocol}, emulated RTT {ms:g} ms, run "
                          f"{i + 1}/{args.repeat}: {run.total:.1f} s, {run.hops:.0f} hops",
                          file=sys.stderr, flush=True)
            for ms, rep in reps.items():
                if rep.runs:
                    results.append(({"rows": rows, "protocol": protocol, "d": ds.d,
                                     "query": args.query, "emulate_rtt_ms": ms}, rep))
    return results, failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=_ints, default=[1000], help="rows per party, e.g. 1000,5000")
    ap.add_argument("--features", type=_features, default=(15, 15), help="AC+EMC, e.g. 15+15")
    ap.add_argument("--overlap", type=float, default=1.0,
                    help="fraction of each party's rows that are in the other table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--query", choices=QUERIES, default="lasso")
    ap.add_argument("--protocol", type=_protocols, default=["paillier"],
                    help="paillier, masked, or both: paillier,masked")
    ap.add_argument("--alpha", type=float, default=0.05, help="LASSO/RIDGE penalty")
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration (medians)")
    ap.add_argument("--netem", metavar="DELAY_MS[:RATE_MBIT]", default=None,
                    help="parties in 3 network namespaces with shaped links (root only)")
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--paillier-randomness", choices=paillier.RANDOMNESS,
                    default=paillier.DEFAULT_RANDOMNESS,
                    help="the data parties' Paillier keys (docs/protocols.md)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="query timeout, seconds")
    ap.add_argument("--json", metavar="PATH", help="also write every run's raw stats here")
    ap.add_argument("--pool", metavar="auto|N", default=None,
                    help="precompute Paillier randomisers (N per key) before each run")
    ap.add_argument("--emulate-rtt", metavar="MS[,MS...]", type=_floats, default=[0.0],
                    help="delay every message a session receives by MS/2 (latency emulation); "
                         "several values: one federation each, runs interleaved")
    ap.add_argument("--wan", metavar="RTT_MS[:MBIT]", type=_wan, default=(0.020, 100e6 / 8),
                    help="the three sites of the projection (default 20:100)")
    args = ap.parse_args(argv)
    started = load_now()
    d_ac, d_emc = args.features

    from engine.session.rounds import EMULATE_ENV

    cons: list[tuple[float, object]] = []  # (emulated RTT ms, connection)
    network = ""
    try:
        for ms in args.emulate_rtt:
            if ms:
                os.environ[EMULATE_ENV] = f"{ms:g}"  # inherited by the party servers
            try:
                con, network = open_connection(args)
            finally:
                os.environ.pop(EMULATE_ENV, None)
            if con is None:
                return 0
            cons.append((ms, con))
        results, failures = _measure(args, cons)
    finally:
        for _, con in cons:
            con.close()

    phases = ordered_phases({n for _, rep in results for r in rep.runs for n in r.phases()})
    err = "max abs coef err" if args.query in MODELS else "max abs err"
    pooled = any(r.pool for _, rep in results for r in rep.runs)
    rtt, bw = args.wan
    wan_label = f"{rtt * 1000:g}ms,{bw * 8 / 1e6:g}Mbit"
    headers = (["rows/party", "joined", "features", "protocol", "emulated RTT ms"]
               + [f"{p} s" for p in phases]
               + [f"{WAIT} s", "total s", "sent MB ac/emc/helper", "peak MB ac/emc/helper",
                  "CPU s ac/emc/helper"]
               + (["pool wait s", "pool CPU s ac/emc/helper"] if pooled else [])
               + ["hops join/A2S/compute", "MB join ac/emc/helper", "MB A2S ac/emc/helper",
                  "MB compute ac/emc/helper", f"WAN s {wan_label}", "WAN s CPU path 2 cores"]
               + [err, "plain s", "ratio"])
    table = []
    for cfg, rep in results:
        joined = round(cfg["rows"] * args.overlap)
        sent = "/".join(secs(rep.med(lambda r, p=p: r.sent_mb(p)), 1) for p in PARTIES)
        peak = "/".join(secs(rep.med(lambda r, p=p: r.peak_mb(p)), 0) for p in PARTIES)
        cpu = "/".join(secs(rep.med(lambda r, p=p: r.cpu_s(p)), 0) for p in PARTIES)
        total = rep.med(lambda r: r.total)
        table.append(
            [str(cfg["rows"]), str(joined), f"{d_ac}+{d_emc}", cfg["protocol"],
             f"{cfg['emulate_rtt_ms']:g}"]
            + [secs(rep.med(lambda r, n=n: r.phase(n))) for n in phases]
            + [secs(rep.med(lambda r: r.phase(WAIT))), secs(total), sent, peak, cpu]
            + (pool_cells(rep) if pooled else [])
            + traffic_cells(rep, rtt, bw)
            + [sci(rep.error),
               secs(rep.plain_seconds, 3),
               secs(total / rep.plain_seconds if rep.plain_seconds else math.nan, 0)])
    if args.json:
        dump_json(args.json, results)
    n_runs = min((len(rep.runs) for _, rep in results), default=0)
    print(f"\nmpcsql {args.query.upper()} over a private inner join; {args.key_bits}-bit Paillier; "
          f"{network}; seed {args.seed}; alpha {args.alpha:g}; {machine_note(started)}")
    print(f"Medians of {n_runs} run(s). Phase columns: seconds per phase as the session stats "
          "name it, maximum over the three parties; "
          f"'{WAIT}' is time blocked on another party's message, shown separately. total: the "
          "coordinator's wall clock (plan + run). err: worst over the runs, vs "
          + ("scikit-learn on the DuckDB-joined plaintext (intercept and coefficients). "
             if args.query in MODELS else "DuckDB's answer. ")
          + "plain s: DuckDB join + " + ("scikit-learn fit" if args.query in MODELS
                                         else "aggregate")
          + " in this process; ratio = total/plain. hops: one-way messages on the critical "
          "path (2 hops = 1 round trip), in all (join/A2S/compute); MB per stage: bytes each "
          "party sent; WAN s: total + hops x (RTT - emulated RTT)/2 + "
          "setup round trips + per stage the largest per-link bytes / bandwidth; CPU path: the "
          "same with the total replaced by per phase the largest CPU s of any party (Paillier "
          "phases over 2 cores).\n")
    print(markdown(headers, table))
    for f in failures:
        print(f"\nFAILED {f}")
    return 1 if failures and not results else 0


if __name__ == "__main__":
    sys.exit(main())
