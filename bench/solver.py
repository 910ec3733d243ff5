"""The secure regression solver alone: three local MPyC processes, no join, vs scikit-learn.

Party 0 secret-shares a synthetic design (:func:`bench.common.synthetic`, rows x d, target
included, scaled by public powers of two as the engine does) and the three parties run
:func:`engine.protocols.regression.fit`. Per run: seconds for the Gram (MOMENTS) phase and for
the solve (everything after it), bytes and messages sent per party during the solve, CPU
seconds per party during the solve, max |coef - sklearn| (intercept included) and the
objective difference. ``--profile`` also times the solver's protocol steps (a barrier around
each, so the total grows a little). Usage::

    python -m bench.solver [--cells 5000x10,5000x30] [--repeat 3] [--alpha 0.05]
                           [--kind LASSO] [--solver auto] [--max-iter N] [--profile]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time

if __package__ in (None, ""):  # python bench/solver.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import synthetic  # noqa: E402

PROFILED = ("_cd", "_admm", "_polish", "_ldl_solve")


def _pow2(col: np.ndarray) -> float:
    top = float(np.abs(col).max())
    return 1.0 if top == 0 else 2.0 ** -math.ceil(math.log2(top))


def _data(rows: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    ds = synthetic(rows, d // 2, d - d // 2, seed=seed)
    df = ds.ac.merge(ds.emc, on="id")
    return df[ds.features].to_numpy(float), df[ds.target].to_numpy(float)


def _party(pid: int, ports: list[int], args: argparse.Namespace, rows: int, d: int,
           out: mp.Queue) -> None:
    from engine.protocols import regression
    from engine.protocols import runtime as mpcrt

    mpc = mpcrt.make_runtime(pid, [mpcrt.Address("127.0.0.1", p) for p in ports])
    import mpyc.asyncoro as aco

    sent_msgs = [0]
    orig_send = aco.MessageExchanger.send

    def send(self, pc, payload):
        sent_msgs[0] += 1
        return orig_send(self, pc, payload)

    aco.MessageExchanger.send = send
    steps: dict[str, list[float]] = {}
    if args.profile:
        for name in PROFILED:
            fn = getattr(regression, name)

            async def timed(*a, _fn=fn, _name=name, **kw):
                await mpc.barrier()
                t0, c0 = time.perf_counter(), time.process_time()
                res = await _fn(*a, **kw)
                await mpc.gather(res)
                steps.setdefault(_name, []).append(time.perf_counter() - t0)
                steps.setdefault(_name + " CPU", []).append(time.process_time() - c0)
                return res

            setattr(regression, name, timed)
        orig_bits = mpc.np_random_bits

        def counted_bits(sftype, n, *a, **kw):
            steps.setdefault("random bits", [0])[0] += n
            return orig_bits(sftype, n, *a, **kw)

        mpc.np_random_bits = counted_bits

    X, y = _data(rows, d, args.seed)
    xs = np.array([_pow2(X[:, j]) for j in range(d)])
    ys = _pow2(y)

    def nbytes() -> int:
        return sum(p.protocol.nbytes_sent for p in mpc.parties if p.pid != mpc.pid)

    marks: dict[str, tuple[float, float, int, int]] = {}

    prof = None
    if pid == 0 and os.environ.get("SOLVER_CPROFILE"):  # e.g. tottime: profile the solve
        import cProfile

        prof = cProfile.Profile(time.process_time)  # CPU, not waiting

    def mark(name: str) -> None:
        marks[name] = (time.perf_counter(), time.process_time(), nbytes(), sent_msgs[0])
        if prof is not None and name in ("gram", "end"):
            prof.enable() if name == "gram" else prof.disable()

    async def main():
        await mpc.start()
        sf = mpcrt.secfxp()
        Xs = mpc.input(sf.array(X * xs), senders=0)
        ys_ = mpc.input(sf.array(y * ys), senders=0)
        await mpc.barrier()
        mark("start")
        kw = {"alpha": args.alpha} if args.kind != "LINREG" else {}
        res = await regression.fit(Xs, ys_, rows, args.kind, solver=args.solver,
                                   max_iter=args.max_iter, x_scale=xs, y_scale=ys,
                                   on_phase=mark, **kw)
        mark("end")
        await mpc.shutdown()
        return res

    res = mpc.run(main())
    if prof is not None:
        import pstats

        pstats.Stats(prof).sort_stats(os.environ["SOLVER_CPROFILE"]).print_stats(30)
    out.put((pid, res, marks, steps))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_once(args: argparse.Namespace, rows: int, d: int) -> dict:
    """One three-process run; returns the per-run numbers."""
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()
    ports = _free_ports(3)
    procs = [ctx.Process(target=_party, args=(i, ports, args, rows, d, q)) for i in range(3)]
    for p in procs:
        p.start()
    got = sorted((q.get(timeout=3600) for _ in procs), key=lambda r: r[0])
    for p in procs:
        p.join()
    res = got[0][1]
    X, y = _data(rows, d, args.seed)
    xs = np.array([_pow2(X[:, j]) for j in range(d)])
    ys = _pow2(y)
    b, w = res[0] / ys, np.array(res[1:]) * xs / ys
    from sklearn.linear_model import Lasso, LinearRegression, Ridge

    if args.kind == "LASSO":
        ref = Lasso(alpha=args.alpha, tol=1e-12, max_iter=1_000_000).fit(X, y)
    elif args.kind == "RIDGE":
        ref = Ridge(alpha=args.alpha).fit(X, y)
    else:
        ref = LinearRegression().fit(X, y)

    def obj(bb, ww):
        r = y - X @ ww - bb
        return float(r @ r / (2 * len(y)) + args.alpha * np.abs(ww).sum())

    marks = [g[2] for g in got]
    solve = max(mk["end"][0] - mk["gram"][0] for mk in marks)
    gram = max(mk["gram"][0] - mk["start"][0] for mk in marks)
    return {
        "gram": gram, "solve": solve,
        "mb": [(mk["end"][2] - mk["gram"][2]) / 1e6 for mk in marks],
        "msgs": [mk["end"][3] - mk["gram"][3] for mk in marks],
        "cpu": [mk["end"][1] - mk["gram"][1] for mk in marks],
        "err": max(abs(b - ref.intercept_), float(np.abs(w - ref.coef_).max())),
        "obj": obj(b, w) - obj(ref.intercept_, ref.coef_),
        "zeros": f"{int(np.sum(w == 0))}/{int(np.sum(ref.coef_ == 0))}",
        "steps": {k: sum(v) for k, v in got[0][3].items()},
        "nsteps": {k: len(v) for k, v in got[0][3].items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.solver",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="5000x10,5000x30")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--kind", default="LASSO")
    ap.add_argument("--solver", default=None)
    ap.add_argument("--max-iter", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    print("| cell | kind | Gram s | solve s | solve MB/party | msgs/party | CPU s/party "
          "| max coef err | obj diff | zeros (secure/sklearn) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cell in args.cells.split(","):
        rows, d = (int(v) for v in cell.split("x"))
        runs = [run_once(args, rows, d) for _ in range(args.repeat)]
        med = statistics.median
        solves = ", ".join(f"{r['solve']:.2f}" for r in runs)

        def per_party(key, fmt, runs=runs, med=med):
            return "/".join(fmt.format(med(r[key][i] for r in runs)) for i in range(3))

        print(f"| {cell} | {args.kind} | {med(r['gram'] for r in runs):.2f} "
              f"| {med(r['solve'] for r in runs):.2f} [{solves}] "
              f"| {per_party('mb', '{:.1f}')} | {per_party('msgs', '{:.0f}')} "
              f"| {per_party('cpu', '{:.1f}')} | {max(r['err'] for r in runs):.1e} "
              f"| {med(r['obj'] for r in runs):.1e} | {runs[-1]['zeros']} |", flush=True)
        if args.profile:
            for k in runs[0]["steps"]:
                print(f"    {k}: {med(r['steps'][k] for r in runs):.2f} s "
                      f"({runs[0]['nsteps'][k]} calls)")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
