"""Summarise ``--json`` dumps of ``bench.run`` as one table of critical-path stages per run set.

Usage::

    python -m bench.report RUN.json [RUN.json ...]

One row per configuration (rows, protocol): the number of runs, medians of the total and of the
stages join (incl. MPyC start-up and waiting), share input (A2S), Gram and solve (see
:meth:`bench.common.Run.stages`), peak resident MB and CPU seconds per party, MB sent per party
and the worst error against the plaintext answer.  Then, per configuration, the communication
(engine.session.rounds): hops on the critical path (one-way messages in sequence; 2 hops = 1
round trip) in all and per stage, MB each party sent per stage (join / share conversion (A2S) /
computation), and the projected wall clock at three sites (``--rtt``, ``--mbit``): measured
total + hops x RTT/2 + setup round trips + per stage the largest per-link bytes / bandwidth
("per link"), or the largest per-party bytes ("shared uplink": both links of a party share one);
and the same projection with the measured total replaced by the CPU path (per phase the largest
CPU seconds of any party, Paillier phases over 1 or 2 cores: :meth:`bench.common.Run.cpu_path`),
which does not grow with this machine's load the way the wall clock does.

CPU seconds do not grow with the machine's
load the way wall-clock seconds do; their sum over the parties divided by the number of cores is
a lower bound on the wall clock of an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.common import (
    PARTIES,
    SETUP_ROUND_TRIPS,
    TRAFFIC_STAGES,
    WAN_BANDWIDTH,
    WAN_RTT,
    Repeated,
    Run,
    markdown,
    pool_cells,
    sci,
    secs,
)


def load(paths: list[str]) -> list[tuple[dict, Repeated]]:
    """The configurations and runs in the JSON dumps, in file order."""
    out = []
    for path in paths:
        with open(path) as f:
            for entry in json.load(f):
                rep = Repeated()
                for r in entry["runs"]:
                    rep.runs.append(Run([tuple(x) for x in r["rows"]], r["stats"], r["wall"],
                                        error=r["error"], obj_diff=r["obj_diff"],
                                        pool=r.get("pool"),
                                        emulated_rtt=r.get("emulated_rtt", 0.0)))
                out.append((entry["config"], rep))
    return out


def table(entries: list[tuple[dict, Repeated]]) -> str:
    headers = ["rows/party", "protocol", "d", "runs", "total s", "join s", "input s", "Gram s",
               "solve s", "peak MB ac/emc/helper", "CPU s ac/emc/helper",
               "sent MB ac/emc/helper", "max abs err"]
    pooled = any(r.pool for _, rep in entries for r in rep.runs)
    if pooled:  # bench.run --pool: the precomputation before each run, next to the online part
        headers[5:5] = ["pool wait s", "pool CPU s ac/emc/helper"]
    rows = []
    for cfg, rep in entries:
        def per_party(fn, digits=0, rep=rep):
            return "/".join(secs(rep.med(lambda r, p=p: fn(r, p)), digits) for p in PARTIES)

        stage = {k: secs(rep.med(lambda r, k=k: r.stages()[k]), 1)
                 for k in ("join", "input", "gram", "solve")}
        row = [str(cfg["rows"]), cfg["protocol"], str(cfg.get("d", "")),
               str(len(rep.runs)), secs(rep.med(lambda r: r.total), 1), stage["join"],
               stage["input"], stage["gram"], stage["solve"],
               per_party(Run.peak_mb), per_party(Run.cpu_s),
               per_party(Run.sent_mb, 1), sci(rep.error)]
        if pooled:
            row[5:5] = pool_cells(rep)
        rows.append(row)
    return markdown(headers, rows)


def traffic_table(entries: list[tuple[dict, Repeated]], rtt: float = WAN_RTT,
                  bandwidth: float = WAN_BANDWIDTH) -> str:
    """Hops, MB per stage and party, and the WAN projection, per configuration (medians)."""
    headers = ["query", "rows/party", "protocol", "d", "emulated RTT ms", "total s", "hops",
               *[f"hops {s}" for s in TRAFFIC_STAGES],
               *[f"MB {s} ac/emc/helper" for s in TRAFFIC_STAGES],
               "max link MB join/A2S/compute", "WAN s per link", "WAN s shared uplink",
               "CPU path s 1/2 cores", "WAN s from CPU path 1/2 cores"]
    rows = []
    for cfg, rep in entries:
        def links(r, s):
            return max(r.links(s).values(), default=0) / 1e6 if r.critical() else float("nan")

        rows.append(
            [cfg.get("query", ""), str(cfg["rows"]), cfg["protocol"], str(cfg.get("d", "")),
             secs(cfg.get("emulate_rtt_ms", 0.0), 0), secs(rep.med(lambda r: r.total), 1),
             secs(rep.med(lambda r: r.hops), 0)]
            + [secs(rep.med(lambda r, s=s: r.stage_hops(s)), 0) for s in TRAFFIC_STAGES]
            + ["/".join(secs(rep.med(lambda r, s=s, p=p: r.stage_sent_mb(s, p)), 1)
                        for p in PARTIES) for s in TRAFFIC_STAGES]
            + ["/".join(secs(rep.med(lambda r, s=s: links(r, s)), 1) for s in TRAFFIC_STAGES),
               secs(rep.med(lambda r: r.wan_seconds(rtt, bandwidth)), 1),
               secs(rep.med(lambda r: r.wan_seconds(rtt, bandwidth, shared_uplink=True)), 1),
               "/".join(secs(rep.med(lambda r, c=c: r.cpu_path(c)), 1) for c in (1, 2)),
               "/".join(secs(rep.med(lambda r, c=c: r.wan_seconds(
                   rtt, bandwidth, compute=r.cpu_path(c))), 1) for c in (1, 2))])
    return markdown(headers, rows)


def latency_table(entries: list[tuple[dict, Repeated]]) -> str | None:
    """Emulated latency vs none for the same configuration (``bench.run --emulate-rtt 0,MS``):
    the wall clock added against hops x RTT/2 (hops counted without and with the delay)."""
    def key(c):
        return c["rows"], c["protocol"], c.get("d"), c.get("query")

    base = {key(c): rep for c, rep in entries if not c.get("emulate_rtt_ms")}
    rows = []
    for cfg, rep in entries:
        ms = cfg.get("emulate_rtt_ms") or 0.0
        b = base.get(key(cfg))
        if not ms or b is None:
            continue
        added = rep.med(lambda r: r.total) - b.med(lambda r: r.total)
        h0, h1 = b.med(lambda r: r.hops), rep.med(lambda r: r.hops)
        rows.append([cfg.get("query", ""), str(cfg["rows"]), cfg["protocol"],
                     str(cfg.get("d", "")), f"{ms:g}",
                     secs(b.med(lambda r: r.total), 1), secs(rep.med(lambda r: r.total), 1),
                     secs(added, 1), f"{h0:.0f}", f"{h1:.0f}", secs(h0 * ms / 2000, 1),
                     secs(h1 * ms / 2000, 1), secs(added / (h1 * ms / 2000), 2)])
    if not rows:
        return None
    return markdown(["query", "rows/party", "protocol", "d", "RTT ms", "total s at 0",
                     "total s at RTT", "added s", "hops at 0", "hops at RTT", "hops at 0 x RTT/2 s",
                     "hops at RTT x RTT/2 s", "added / (hops at RTT x RTT/2)"], rows)


def chain_lines(entries: list[tuple[dict, Repeated]], top: int = 8) -> list[str]:
    """Per configuration (first run): which protocol functions sent the critical path's hops."""
    out = []
    for cfg, rep in entries:
        c = rep.runs[0].critical() if rep.runs else None
        if not c or not c.get("chain"):
            continue
        parts = [f"{k} {v}" for k, v in list(c["chain"].items())[:top]]
        out.append(f"* {cfg.get('query', '')} {cfg['rows']} rows, {cfg['protocol']}, "
                   f"d = {cfg.get('d', '')}, emulated "
                   f"RTT {cfg.get('emulate_rtt_ms', 0):g} ms: {c['hops']} hops = "
                   + ", ".join(parts))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="JSON files written by bench.run --json")
    ap.add_argument("--rtt", type=float, default=WAN_RTT * 1000, help="WAN round trip, ms")
    ap.add_argument("--mbit", type=float, default=WAN_BANDWIDTH * 8 / 1e6,
                    help="WAN bandwidth per link, Mbit/s")
    args = ap.parse_args(argv)
    entries = load(args.paths)
    print(table(entries))
    print(f"\nAcross three sites: {args.rtt:g} ms round trip, {args.mbit:g} Mbit/s per link, "
          f"+ {SETUP_ROUND_TRIPS} setup round trips (hops: one-way messages on the critical "
          "path; WAN s = total + hops x (RTT - emulated RTT)/2 + setup + per stage bytes / "
          "bandwidth)\n")
    print(traffic_table(entries, args.rtt / 1000, args.mbit * 1e6 / 8))
    lat = latency_table(entries)
    if lat:
        print("\nEmulated latency (medians; runs interleaved when measured together):\n")
        print(lat)
    lines = chain_lines(entries)
    if lines:
        print("\nCritical path by the protocol function that sent each hop:\n")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
