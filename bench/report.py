"""Summarise ``--json`` dumps of ``bench.run`` as one table of critical-path stages per run set.

Usage::

    python -m bench.report RUN.json [RUN.json ...]

One row per configuration (rows, protocol): the number of runs, medians of the total and of the
stages join (incl. MPyC start-up and waiting), share input (A2S), Gram and solve (see
:meth:`bench.common.Run.stages`), peak resident MB and CPU seconds per party, MB sent per party
and the worst error against the plaintext answer.  CPU seconds do not grow with the machine's
load the way wall-clock seconds do; their sum over the parties divided by the number of cores is
a lower bound on the wall clock of an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.common import PARTIES, Repeated, Run, markdown, pool_cells, sci, secs


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
                                        pool=r.get("pool")))
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="JSON files written by bench.run --json")
    args = ap.parse_args(argv)
    print(table(load(args.paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
