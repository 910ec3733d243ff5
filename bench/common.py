"""Shared pieces of the benchmarks: data sets, one measured secure query, its plaintext twin.

Everything secure goes through the public API (``engine.connect``, ``Connection.register``,
``Cursor.execute``, ``Cursor.stats``); the plaintext reference is DuckDB's join of the same two
tables followed by scikit-learn (models) or by DuckDB's own aggregates, timed in the same run.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

PARTIES = ("ac", "emc", "helper")
WAIT = "wait for peers"
#: Display order of the phase names that the session statistics use; unknown names follow.
PHASE_ORDER = ("connect", "hash", "encrypt", "match", "mask", "decrypt", "derive shares",
               "share input", "gram", "moments", "aggregate", "solve", "reveal")
#: Phases of the private join (Paillier: hash/encrypt/match/mask/decrypt; masked: hash/mask/
#: match/derive shares).  "connect" (MPyC start-up) is counted with the join.
JOIN_PHASES = ("connect", "hash", "encrypt", "match", "mask", "decrypt", "derive shares")
INPUT_PHASES = ("share input",)
#: Phases that run on one forked worker per core (engine.protocols.paillier._fork_map).
CRYPTO_PHASES = ("encrypt", "mask", "decrypt")
GRAM_PHASES = ("gram", "moments")
SOLVE_PHASES = ("solve", "aggregate", "reveal")
MODELS = ("lasso", "ridge", "linreg")
QUERIES = MODELS + ("sum", "count")
#: Traffic stages for rounds and bytes (engine.session.rounds): the private join with MPyC
#: start-up and the parties' agreement; the share conversion (A2S, or an owner's input); the
#: computation (Gram, aggregates, solver, openings, shutdown).
TRAFFIC_STAGES = ("join", "conversion", "compute")
#: The projection's three WAN sites: round-trip time (s) and bandwidth (bytes/s) per link.
WAN_RTT, WAN_BANDWIDTH = 0.020, 100e6 / 8
#: Round trips outside the session's messages (estimated, not counted): the coordinator's
#: per-query connections to its peers (TCP, TLS 1.3, Hello: 3), catalog (1), prepare (1), run
#: request and reply (1), the session's own TCP + TLS handshakes (2), and 2 to spare.
SETUP_ROUND_TRIPS = 10


def traffic_stage(phase: str) -> str:
    """The traffic stage of a session phase name."""
    if phase in JOIN_PHASES or phase in (WAIT, "agree"):
        return "join"
    if phase in INPUT_PHASES:
        return "conversion"
    return "compute"


# --- data -------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Two vertically partitioned tables: ``ac`` (id, target, its features) and ``emc``."""

    name: str
    ac: pd.DataFrame
    emc: pd.DataFrame
    target: str
    ac_features: list[str]
    emc_features: list[str]

    @property
    def features(self) -> list[str]:
        return self.ac_features + self.emc_features

    @property
    def d(self) -> int:
        return len(self.features)


def synthetic(rows: int, d_ac: int, d_emc: int, *, overlap: float = 1.0, seed: int = 0,
              rho: float = 0.5, noise: float = 1.0) -> Dataset:
    """``rows`` rows per party, ``overlap`` of them in both tables; target at ac.

    Features: a Gaussian design with Toeplitz correlation rho^|i-j| over all d_ac + d_emc
    features (so ac's and emc's features are correlated too); target = 1 + X beta + noise with
    every third coefficient zero and the others of size 0.5..2 with random signs.
    """
    if not 0.0 < overlap <= 1.0:
        raise ValueError("overlap must be in (0, 1]")
    rng = np.random.default_rng(seed)
    d = d_ac + d_emc
    both = max(1, round(rows * overlap))
    total = 2 * rows - both
    idx = np.arange(d)
    chol = np.linalg.cholesky(rho ** np.abs(idx[:, None] - idx[None, :]))
    X = rng.standard_normal((total, d)) @ chol.T
    beta = rng.uniform(0.5, 2.0, d) * rng.choice([-1.0, 1.0], d)
    beta[::3] = 0.0
    y = 1.0 + X @ beta + noise * rng.standard_normal(total)
    ids = 10**9 + rng.choice(9 * 10**9, size=total, replace=False)
    ac_rows = np.r_[0:rows]  # 0..both-1 are in both tables
    emc_rows = np.r_[0:both, rows:total]
    a_cols = [f"a{j + 1}" for j in range(d_ac)]
    e_cols = [f"e{j + 1}" for j in range(d_emc)]
    ac = pd.DataFrame({"id": ids[ac_rows], "y": y[ac_rows]})
    for j, c in enumerate(a_cols):
        ac[c] = X[ac_rows, j]
    emc = pd.DataFrame({"id": ids[emc_rows]})
    for j, c in enumerate(e_cols):
        emc[c] = X[emc_rows, d_ac + j]
    ac = ac.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    emc = emc.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)
    return Dataset(f"synthetic {rows}x{d}", ac, emc, "y", a_cols, e_cols)


def vertical_split(df: pd.DataFrame, target: str, ac_features: Sequence[str],
                   emc_features: Sequence[str], name: str, seed: int = 0) -> Dataset:
    """Split a plain table by columns (every row in both parties; synthetic random ids)."""
    rng = np.random.default_rng(seed)
    ids = 10**9 + rng.choice(9 * 10**9, size=len(df), replace=False)
    df = df.reset_index(drop=True).assign(id=ids)
    ac = df[["id", target, *ac_features]].sample(frac=1.0, random_state=seed)
    emc = df[["id", *emc_features]].sample(frac=1.0, random_state=seed + 1)
    return Dataset(name, ac.reset_index(drop=True), emc.reset_index(drop=True), target,
                   list(ac_features), list(emc_features))


# --- queries ----------------------------------------------------------------------------------


def query_sql(ds: Dataset, query: str, *, alpha: float = 0.001, protocol: str = "paillier"
              ) -> str:
    """The benchmark's SQL: a model over all features, SUMs of every column, or COUNT(*)."""
    cols = [f"ac.{c}" for c in ds.ac_features] + [f"emc.{c}" for c in ds.emc_features]
    if query == "lasso" or query == "ridge":
        sel = f"{query.upper()}(ac.{ds.target}, {', '.join(cols)}, alpha => {alpha!r})"
    elif query == "linreg":
        sel = f"LINREG(ac.{ds.target}, {', '.join(cols)})"
    elif query == "sum":
        sel = ", ".join(f"SUM({c})" for c in [f"ac.{ds.target}", *cols])
    elif query == "count":
        sel = "COUNT(*)"
    else:
        raise ValueError(f"unknown query {query!r}; known: {', '.join(QUERIES)}")
    return (f"SET join_protocol = '{protocol}'; "
            f"SELECT {sel} FROM ac INNER JOIN emc USING (id)")


def sklearn_model(query: str, alpha: float):
    """scikit-learn's counterpart of the SQL model aggregate (tight tolerance for LASSO)."""
    from sklearn.linear_model import Lasso, LinearRegression, Ridge

    if query == "lasso":
        return Lasso(alpha=alpha, tol=1e-10, max_iter=100_000)
    if query == "ridge":
        return Ridge(alpha=alpha)
    return LinearRegression()


@dataclass
class Plain:
    """The plaintext answer: model coefficients by term (or result row) and its time."""

    seconds: float
    coef: dict[str, float] | None = None
    row: tuple | None = None
    X: np.ndarray | None = None
    y: np.ndarray | None = None


def plaintext(ds: Dataset, query: str, alpha: float) -> Plain:
    """DuckDB join (+ scikit-learn fit, or DuckDB aggregates) of the same tables, timed."""
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.register("ac", ds.ac)
    con.register("emc", ds.emc)
    if query in MODELS:
        cols = [f"ac.{ds.target}"] + [f"ac.{c}" for c in ds.ac_features] + \
            [f"emc.{c}" for c in ds.emc_features]
        arrs = con.execute(f"SELECT {', '.join(cols)} FROM ac INNER JOIN emc USING (id)"
                           ).fetchnumpy()
        Z = np.column_stack([np.asarray(v, dtype=np.float64) for v in arrs.values()])
        y, X = Z[:, 0], Z[:, 1:]
        model = sklearn_model(query, alpha).fit(X, y)
        seconds = time.perf_counter() - t0
        coef = {"intercept": float(model.intercept_)}
        coef.update(zip(ds.features, map(float, model.coef_), strict=True))
        con.close()
        return Plain(seconds, coef=coef, X=X, y=y)
    sql = query_sql(ds, query).split("; ", 1)[1]
    row = con.execute(sql).fetchone()
    seconds = time.perf_counter() - t0
    con.close()
    return Plain(seconds, row=tuple(row))


def objective(query: str, alpha: float, X: np.ndarray, y: np.ndarray, coef: dict[str, float],
              features: Sequence[str]) -> float:
    """scikit-learn's objective of the model ``coef`` on (X, y)."""
    w = np.array([coef[f] for f in features])
    r = y - X @ w - coef["intercept"]
    if query == "lasso":
        return float(r @ r / (2 * len(y)) + alpha * np.abs(w).sum())
    if query == "ridge":
        return float(r @ r + alpha * w @ w)
    return float(r @ r)


# --- secure runs --------------------------------------------------------------------------------


@dataclass
class Run:
    """One secure query: its result, the session statistics and the error vs plaintext."""

    rows: list[tuple]
    stats: dict[str, Any]
    wall: float
    error: float = math.nan  # max |secure - plaintext| over coefficients / result values
    obj_diff: float = math.nan  # objective(secure) - objective(sklearn), models only
    pool: dict[str, Any] | None = None  # bench.run --pool: the precomputation before this run
    emulated_rtt: float = 0.0  # bench.run --emulate-rtt: seconds of round trip added per link
    _critical: dict[str, Any] | None = field(default=None, repr=False)

    def phase(self, name: str) -> float:
        """Seconds in phase ``name``: the maximum over the parties (NaN if none had it)."""
        vals = [ph[name] for p in PARTIES
                if name in (ph := (self.stats.get(p, {}) or {}).get("phases", {}))]
        return max(vals) if vals else math.nan

    def phases(self) -> dict[str, float]:
        names = {n for p in PARTIES for n in (self.stats.get(p, {}) or {}).get("phases", {})}
        return {n: self.phase(n) for n in names}

    def stages(self) -> dict[str, float]:
        """Critical-path seconds of the stages join, input, gram and solve.

        Every party's phases tile its session, so each party's cumulative time marks when it
        left a stage; all of its "wait for peers" time falls in the join (the later stages
        wait inside MPyC, i.e. inside their own phase).  A stage ends when the last party
        leaves it; its length is the difference to the previous stage's end.  (Summing each
        phase's maximum over the parties instead would count, e.g., the owners' decryption
        twice: once as "decrypt" and once as the helper's wait for their shares in "gram".)
        """
        known = {*JOIN_PHASES, WAIT, *INPUT_PHASES, *GRAM_PHASES}
        groups = (("join", (*JOIN_PHASES, WAIT)), ("input", INPUT_PHASES),
                  ("gram", GRAM_PHASES))
        ends: dict[str, list[float]] = {name: [] for name, _ in groups}
        ends["solve"] = []
        for p in PARTIES:
            ph = (self.stats.get(p, {}) or {}).get("phases", {})
            if not ph:
                continue
            t = 0.0
            for name, members in groups:
                t += sum(ph.get(n, 0.0) for n in members)
                ends[name].append(t)
            ends["solve"].append(t + sum(v for n, v in ph.items() if n not in known))
        out, prev = {}, 0.0
        for name in ("join", "input", "gram", "solve"):
            end = max(ends[name], default=prev)
            out[name] = max(0.0, end - prev)
            prev = max(prev, end)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"rows": [list(r) for r in self.rows], "stats": self.stats, "wall": self.wall,
                "error": self.error, "obj_diff": self.obj_diff, "pool": self.pool,
                "emulated_rtt": self.emulated_rtt}

    # --- rounds, bytes per stage, WAN projection (engine.session.rounds) ------------------

    def critical(self) -> dict[str, Any] | None:
        """Hops on the critical path, in all and per traffic stage (None: no traffic logs)."""
        if self._critical is None:
            from engine.session import rounds

            logs = {p: t for p in PARTIES
                    if (t := (self.stats.get(p, {}) or {}).get("traffic"))}
            if len(logs) != len(PARTIES):
                return None
            self._critical = rounds.critical_path(logs, traffic_stage, TRAFFIC_STAGES)
        return self._critical

    @property
    def hops(self) -> float:
        """One-way messages on the critical path (2 hops = 1 round trip); NaN if unknown."""
        c = self.critical()
        return float(c["hops"]) if c else math.nan

    def stage_hops(self, stage: str) -> float:
        c = self.critical()
        return float(c["by_stage"].get(stage, 0)) if c else math.nan

    def links(self, stage: str) -> dict[tuple[str, str], int]:
        """Bytes sent per directed link (sender, receiver) in ``stage``."""
        out: dict[tuple[str, str], int] = {}
        for p in PARTIES:
            by_phase = ((self.stats.get(p, {}) or {}).get("traffic") or {}).get(
                "bytes_by_phase", {})
            for ph, peers in by_phase.items():
                if traffic_stage(ph) == stage:
                    for q, n in peers.items():
                        out[(p, q)] = out.get((p, q), 0) + int(n)
        return out

    def stage_sent_mb(self, stage: str, party: str) -> float:
        """MB ``party`` sent (to both peers) in ``stage``; NaN without traffic logs."""
        if self.critical() is None:
            return math.nan
        return sum(n for (p, _), n in self.links(stage).items() if p == party) / 1e6

    def cpu_path(self, cores: int = 1) -> float:
        """Compute on the critical path if every party had ``cores`` cores of its own: per
        phase the largest CPU seconds any party spent in it (its session process and the
        crypto workers it joined; the Paillier phases, which fork one worker per core, divided
        by ``cores``), summed over the phases (NaN without per-phase CPU)."""
        per: dict[str, float] = {}
        for p in PARTIES:
            cpu = ((self.stats.get(p, {}) or {}).get("traffic") or {}).get("cpu_by_phase")
            if not cpu:
                return math.nan
            for ph, v in cpu.items():
                if ph != WAIT:
                    v = float(v) / (cores if ph in CRYPTO_PHASES else 1)
                    per[ph] = max(per.get(ph, 0.0), v)
        return sum(per.values())

    def wan_seconds(self, rtt: float = WAN_RTT, bandwidth: float = WAN_BANDWIDTH, *,
                    shared_uplink: bool = False, compute: float | None = None) -> float:
        """Projected wall clock at three sites (docs/performance.md, "Across three sites"):

        measured total + hops x (rtt - emulated rtt) / 2 + SETUP_ROUND_TRIPS x rtt
        + sum over the stages of the stage's largest per-link byte count / bandwidth
        (``shared_uplink``: the largest per-party count, both of a party's links sharing one
        uplink of that bandwidth).  ``compute`` replaces the measured total (e.g.
        :meth:`cpu_path`; then no emulated delay is taken out).
        """
        c = self.critical()
        if c is None:
            return math.nan
        if compute is None:
            t = self.total + c["hops"] * (rtt - self.emulated_rtt) / 2
        else:
            t = compute + c["hops"] * rtt / 2
        t += SETUP_ROUND_TRIPS * rtt
        for stage in TRAFFIC_STAGES:
            links = self.links(stage)
            if shared_uplink:
                per = {p: sum(n for (s, _), n in links.items() if s == p) for p in PARTIES}
                t += max(per.values(), default=0) / bandwidth
            else:
                t += max(links.values(), default=0) / bandwidth
        return t

    def group(self, names: Iterable[str]) -> float:
        """Sum over the phases ``names`` of each phase's maximum over the parties."""
        return sum(v for n in names if not math.isnan(v := self.phase(n)))

    @property
    def total(self) -> float:
        return float(self.stats.get("total_seconds", self.wall))

    def sent_mb(self, party: str) -> float:
        return sum((self.stats.get(party, {}) or {}).get("bytes_sent", {}).values()) / 1e6

    def peak_mb(self, party: str) -> float:
        return float((self.stats.get(party, {}) or {}).get("peak_rss_mb", math.nan))

    def cpu_s(self, party: str) -> float:
        """CPU seconds (user + system) of the party's session process and its workers."""
        return float((self.stats.get(party, {}) or {}).get("cpu_seconds", math.nan))


def execute(con, sql: str) -> Run:
    """Run ``sql`` through the DB-API and keep its rows and statistics."""
    t0 = time.perf_counter()
    cur = con.cursor()
    cur.execute(sql)
    rows = cur.fetchall()
    return Run(rows, cur.stats or {}, time.perf_counter() - t0)


def compare(run: Run, plain: Plain, ds: Dataset, query: str, alpha: float) -> None:
    """Fill in ``run.error`` (and ``run.obj_diff`` for models) against the plaintext answer."""
    if query in MODELS:
        got = {str(t).split(".")[-1]: float(c) for t, c in run.rows}
        run.error = max(abs(got[t] - v) for t, v in plain.coef.items())
        run.obj_diff = (objective(query, alpha, plain.X, plain.y, got, ds.features)
                        - objective(query, alpha, plain.X, plain.y, plain.coef, ds.features))
    else:
        run.error = max(abs(float(a) - float(b)) for a, b in zip(run.rows[0], plain.row,
                                                                   strict=True))


def register(con, ds: Dataset) -> None:
    """Send each party its own table (the only time data crosses to a party server)."""
    con.register("ac", ds.ac, party="ac", key="id")
    con.register("emc", ds.emc, party="emc", key="id")


# --- summaries ----------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(vals) if vals else math.nan


def worst(values: Iterable[float]) -> float:
    vals = [abs(v) for v in values if not (isinstance(v, float) and math.isnan(v))]
    return max(vals) if vals else math.nan


def ordered_phases(names: Iterable[str]) -> list[str]:
    names = set(names) - {WAIT}
    known = [n for n in PHASE_ORDER if n in names]
    return known + sorted(names - set(known))


def secs(v: float, digits: int = 2) -> str:
    """Seconds (or MB) for tables; '–' for a phase that did not occur."""
    return "–" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def sci(v: float) -> str:
    """Errors for tables."""
    return "–" if v is None or math.isnan(v) else f"{v:.1e}"


_NUMERIC = re.compile(r"^[-+0-9.e/–x ]*$")


def markdown(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table of strings; numeric-looking columns are right-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    numeric = [all(_NUMERIC.match(r[i]) for r in cells) for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(vals: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(vals, widths, numeric, strict=True)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                         for w, num in zip(widths, numeric, strict=True)) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in cells])


def machine_note(start: tuple[str, float] | None = None) -> str:
    """Cores, and the 1-minute load average at the start (``start``) and now."""
    now = (time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()[0])
    first = start or now
    return (f"{os.cpu_count()} cores; 1-min load average {first[1]:.1f} at the start "
            f"({first[0]}), {now[1]:.1f} at the end ({now[0]})")


def load_now() -> tuple[str, float]:
    return time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()[0]


@dataclass
class Repeated:
    """Medians over repetitions of one configuration."""

    runs: list[Run] = field(default_factory=list)
    plains: list[Plain] = field(default_factory=list)

    def med(self, fn) -> float:
        return median(fn(r) for r in self.runs)

    @property
    def plain_seconds(self) -> float:
        return median(p.seconds for p in self.plains)

    @property
    def error(self) -> float:
        return worst(r.error for r in self.runs)

    @property
    def obj_diff(self) -> float:
        vals = [r.obj_diff for r in self.runs if not math.isnan(r.obj_diff)]
        return max(vals, key=abs) if vals else math.nan


def pool_cells(rep: Repeated) -> list[str]:
    """Wait and CPU seconds per party of the precomputation before each run (medians)."""
    if not any(r.pool for r in rep.runs):
        return ["–", "–"]
    wait = secs(rep.med(lambda r: r.pool["wait_seconds"] if r.pool else math.nan))
    cpu = "/".join(secs(rep.med(lambda r, p=p: r.pool["cpu_seconds"][p] if r.pool
                                else math.nan), 0) for p in PARTIES)
    return [wait, cpu]


def traffic_cells(rep: Repeated, rtt: float = WAN_RTT, bandwidth: float = WAN_BANDWIDTH
                  ) -> list[str]:
    """Medians: hops in all (per stage), MB sent per party per stage, projected WAN seconds."""
    stages = "/".join(secs(rep.med(lambda r, s=s: r.stage_hops(s)), 0) for s in TRAFFIC_STAGES)
    hops = f"{secs(rep.med(lambda r: r.hops), 0)} ({stages})"
    mb = ["/".join(secs(rep.med(lambda r, s=s, p=p: r.stage_sent_mb(s, p)), 1) for p in PARTIES)
          for s in TRAFFIC_STAGES]
    return [hops, *mb, secs(rep.med(lambda r: r.wan_seconds(rtt, bandwidth)), 1),
            secs(rep.med(lambda r: r.wan_seconds(rtt, bandwidth, compute=r.cpu_path(2))), 1)]


def dump_json(path: str, entries: Sequence[tuple[dict[str, Any], Repeated]]) -> None:
    """Every run's rows, raw session stats and errors, per configuration, as JSON."""
    import json

    out = [{"config": cfg, "plain_seconds": [p.seconds for p in rep.plains],
            "runs": [r.to_json() for r in rep.runs]} for cfg, rep in entries]
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=str)
