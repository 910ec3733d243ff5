"""Secure LASSO over a private inner join: the issue's grid n x d, real and synthetic data.

Cells (rows joined x features; target always at ac, features split between ac and emc):

* 442 x 10, diabetes (``sklearn.datasets.load_diabetes(scaled=False)``) raw and standardized
  (features z-scored, target raw); ac: age, sex, bmi, bp, s1; emc: s2..s6; alpha 0.1.
* 1338 x 9, Medical Costs (``engine/data/insurance.csv``) as published: age, bmi, children,
  sex, smoker, region one-hot, charges; everything min-max scaled to [0, 1]; a 90/10 split
  (the model is fitted on the 1204 training rows); alpha 0.001. ac: age, sex, smoker, region,
  charges; emc: bmi, children (as ``mpcsql demo``).
* synthetic (correlated Gaussian design, see :func:`bench.common.synthetic`) for the other
  cells: 442 x 30, 1338 x 30, 5000 x {10, 30}, 20000 x {10, 30} (20000 only with ``--full``),
  every row in both tables; alpha 0.05.

Per cell: seconds per stage on the critical path (join, input, Gram, solve; see
:meth:`bench.common.Run.stages`), the time blocked on peers, total, bytes sent per party,
max |coef - sklearn| (intercept included), objective(secure) - objective(sklearn) on the
joined rows, and the ratio to the plaintext DuckDB join + scikit-learn
``Lasso(alpha, tol=1e-10, max_iter=100000)``. Usage::

    python -m bench.lasso [--quick | --full] [--protocol paillier|masked|paillier,masked]
                          [--repeat N] [--key-bits 2048] [--cells 442x10,5000x30]
                          [--json PATH]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

if __package__ in (None, ""):  # python bench/lasso.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import engine  # noqa: E402
from bench.common import (  # noqa: E402
    GRAM_PHASES,
    PARTIES,
    WAIT,
    Dataset,
    Repeated,
    compare,
    dump_json,
    execute,
    load_now,
    machine_note,
    markdown,
    plaintext,
    query_sql,
    register,
    sci,
    secs,
    synthetic,
    vertical_split,
)

DIABETES_AC = ["age", "sex", "bmi", "bp", "s1"]
DIABETES_EMC = ["s2", "s3", "s4", "s5", "s6"]
INSURANCE_AC = ["age", "sex", "smoker", "region_northeast", "region_northwest",
                "region_southeast", "region_southwest"]
INSURANCE_EMC = ["bmi", "children"]


def diabetes(standardized: bool) -> Dataset:
    """sklearn's diabetes data, raw units or with z-scored features."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False, as_frame=True)
    df = data.frame.rename(columns={"target": "progression"})
    if standardized:
        X = df[DIABETES_AC + DIABETES_EMC]
        df[X.columns] = (X - X.mean()) / X.std(ddof=0)
    return vertical_split(df, "progression", DIABETES_AC, DIABETES_EMC,
                          f"diabetes {'standardized' if standardized else 'raw'}")


def insurance(seed: int = 0) -> Dataset:
    """Medical Costs with the publication's preprocessing; the 90 % training split."""
    df = pd.read_csv(os.path.join(os.path.dirname(engine.__file__), "data", "insurance.csv"))
    df["sex"] = (df["sex"] == "female").astype(float)
    df["smoker"] = (df["smoker"] == "yes").astype(float)
    df = pd.concat([df.drop(columns="region"),
                    pd.get_dummies(df["region"], prefix="region", dtype=float)], axis=1)
    df = df.astype(float)
    df = (df - df.min()) / (df.max() - df.min())
    rng = np.random.default_rng(seed)
    train = rng.permutation(len(df))[: round(0.9 * len(df))]
    return vertical_split(df.iloc[train], "charges", INSURANCE_AC, INSURANCE_EMC,
                          "insurance (90 % train)")


def cells(args: argparse.Namespace) -> list[tuple[str, Callable[[], Dataset], float]]:
    """(label, data set factory, alpha) for the selected grid."""
    real: list[tuple[str, Callable[[], Dataset], float]] = [
        ("442x10", lambda: diabetes(False), 0.1),
        ("442x10", lambda: diabetes(True), 0.1),
        ("1338x10", lambda: insurance(args.seed), 0.001),
    ]

    def synth(n: int, d: int) -> tuple[str, Callable[[], Dataset], float]:
        return (f"{n}x{d}", lambda: synthetic(n, d // 2, d - d // 2, seed=args.seed),
                args.alpha)

    if args.quick:
        grid = [real[1], real[2], synth(442, 30)]
    else:
        sizes = [442, 1338, 5000] + ([20000] if args.full else [])
        grid = list(real)
        grid += [synth(n, d) for n in sizes for d in (10, 30)
                 if (n, d) not in ((442, 10), (1338, 10))]
    if args.cells:
        want = set(args.cells.split(","))
        grid = [c for c in grid if c[0] in want]
        have = {c[0] for c in grid}
        for label in sorted(want - have):  # any other n x d: synthetic
            n, d = (int(v) for v in label.split("x"))
            grid.append(synth(n, d))
    return grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.lasso",
                                 description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true",
                   help="diabetes standardized, insurance, synthetic 442x30 only")
    g.add_argument("--full", action="store_true", help="also n = 20000 (d = 10 and 30)")
    ap.add_argument("--cells", default=None,
                    help="only these cells, e.g. 442x10,5000x30 (others: synthetic)")
    ap.add_argument("--protocol", default="paillier",
                    help="paillier, masked, or both: paillier,masked")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell (medians)")
    ap.add_argument("--alpha", type=float, default=0.05, help="alpha of the synthetic cells")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--json", metavar="PATH", help="also write every run's raw stats here")
    args = ap.parse_args(argv)
    started = load_now()
    protocols = [p.strip() for p in args.protocol.split(",") if p.strip()]

    results: list[tuple[str, Dataset, float, str, Repeated]] = []
    failures: list[str] = []
    with engine.connect(key_bits=args.key_bits, query_timeout=3600.0) as con:
        for label, make, alpha in cells(args):
            ds = make()
            register(con, ds)
            plaintext(ds, "lasso", alpha)  # warm-up: imports, DuckDB start-up
            for protocol in protocols:
                sql = query_sql(ds, "lasso", alpha=alpha, protocol=protocol)
                rep = Repeated()
                for i in range(args.repeat):
                    plain = plaintext(ds, "lasso", alpha)
                    try:
                        run = execute(con, sql)
                    except engine.Error as e:
                        failures.append(f"{ds.name}, {protocol}: {type(e).__name__}: "
                                        f"{str(e).splitlines()[0]}")
                        break
                    compare(run, plain, ds, "lasso", alpha)
                    rep.runs.append(run)
                    rep.plains.append(plain)
                    print(f"# {ds.name} ({label}), {protocol}, run {i + 1}/{args.repeat}: "
                          f"{run.total:.1f} s, err {run.error:.1e}", file=sys.stderr, flush=True)
                if rep.runs:
                    results.append((label, ds, alpha, protocol, rep))

    has_gram = any(not math.isnan(r.phase(n)) for *_, rep in results for r in rep.runs
                   for n in GRAM_PHASES)
    headers = ["data", "n joined", "d", "alpha", "protocol", "join s", "input s"] \
        + (["Gram s"] if has_gram else []) \
        + ["solve s" if has_gram else "Gram+solve s", f"{WAIT} s", "total s",
           "sent MB ac/emc/helper", "max abs coef err", "obj diff", "plain s", "ratio"]
    table = []
    for _label, ds, alpha, protocol, rep in results:
        n = len(rep.plains[0].y)
        total = rep.med(lambda r: r.total)
        plain = rep.plain_seconds
        stage = {k: secs(rep.med(lambda r, k=k: r.stages()[k]))
                 for k in ("join", "input", "gram", "solve")}
        if not has_gram:
            stage["solve"] = secs(rep.med(lambda r: r.stages()["gram"] + r.stages()["solve"]))
        table.append(
            [ds.name, str(n), str(ds.d), f"{alpha:g}", protocol, stage["join"], stage["input"]]
            + ([stage["gram"]] if has_gram else [])
            + [stage["solve"], secs(rep.med(lambda r: r.phase(WAIT))), secs(total),
               "/".join(secs(rep.med(lambda r, p=p: r.sent_mb(p)), 1) for p in PARTIES),
               sci(rep.error), sci(rep.obj_diff), secs(plain, 3),
               secs(total / plain if plain else math.nan, 0)])
    if args.json:
        dump_json(args.json, [({"data": ds.name, "n": len(rep.plains[0].y), "d": ds.d,
                                "alpha": alpha, "protocol": protocol}, rep)
                               for _label, ds, alpha, protocol, rep in results])
    n_runs = min((len(rep.runs) for *_, rep in results), default=0)
    print(f"\nSecure LASSO over a private inner join, {args.key_bits}-bit Paillier, three local "
          f"processes; {machine_note(started)}; median of {n_runs} run(s) per cell.\n")
    print(markdown(headers, table))
    print("\nStages on the critical path (each party's phases tile its session; a stage ends "
          "when the last party leaves it): join = MPyC connect, hashing, encryption, matching, "
          "masking, decryption and every wait for a peer's join message; input = share input; "
          "Gram = the moments of the joined rows incl. receiving the input shares; solve = the "
          f"rest. '{WAIT}': the most any party spent blocked on a peer's join message (part "
          "of join). total: the coordinator's wall clock (plan + fork + session). Errors: "
          "vs scikit-learn Lasso(alpha, tol=1e-10, max_iter=100000) on the DuckDB-joined "
          "rows, intercept included; obj diff = objective(secure) - objective(sklearn), "
          "objective (1/2n)||y - Xw - b||^2 + alpha||w||_1. plain s: DuckDB join + "
          "scikit-learn in this process; ratio = total / plain s.")
    for f in failures:
        print(f"\nFAILED {f}")
    return 1 if failures and not results else 0


if __name__ == "__main__":
    sys.exit(main())
