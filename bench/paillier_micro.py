"""Micro-benchmark of the Paillier join's local crypto steps (2048-bit keys by default).

Prints throughput in operations per second (median of ``--reps`` runs of ``--batch`` ops each)
for the phe baseline and the fast paths of :mod:`engine.protocols.paillier`, then projects the
crypto cost of a join of 5000 rows x 15 values per side (one packed ciphertext per row, full
overlap), with classic randomness (r**n), with DJN randomness (h**a, short a; the same key
with and without its published h) and with a subgroup key (Paillier's subgroup variant: h of
order p' q', decryption exponents p' and q'; its own key).  Worker timings include forking the
workers on every call; key generation is timed once per kind.
``--windows`` also times the fixed-base table (build time, size, ms per h**a) per window size.
Usage::

    python -m bench.paillier_micro [--reps 3] [--batch 256] [--workers N] [--key-bits 2048]
                                   [--windows 4,6,8,10]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import statistics
import time
from collections.abc import Callable

import gmpy2

from engine.protocols import paillier as P

FIELD = 2**127 - 1  # stands in for MPyC's 128-bit prime


def _cpu() -> float:
    """CPU seconds of this process and of its finished (joined) worker processes."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def rates(cases: dict[str, tuple[Callable[[], object], int]], reps: int
          ) -> dict[str, tuple[float, float, float]]:
    """Median and best wall-clock operations per second, median CPU ms per operation.

    Repetitions are interleaved (case 1, 2, ..., then again) so that load from other processes
    on a shared machine affects all cases alike.
    """
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, (fn, _ops) in cases.items():
            c0, t0 = _cpu(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(_cpu() - c0)
    return {name: (ops / statistics.median(wall[name]), ops / min(wall[name]),
                   1e3 * statistics.median(cpu[name]) / ops) for name, (_fn, ops) in cases.items()}


def _unreduced(ctx, c: int):
    """Decryption as before: the 4096-bit c straight into both exponentiations."""
    c = gmpy2.mpz(c)
    mp = (gmpy2.powmod(c, ctx.p - 1, ctx.psq) - 1) // ctx.p * ctx.hp % ctx.p
    mq = (gmpy2.powmod(c, ctx.q - 1, ctx.qsq) - 1) // ctx.q * ctx.hq % ctx.q
    return mp + ctx.p * ((mq - mp) * ctx.p_inv % ctx.q)


def _batched(ctx, cts: list[int]) -> list:
    """Decryption with gmpy2's batched powmod_base_list (one call per prime for the batch)."""
    xp = gmpy2.powmod_base_list([gmpy2.mpz(c) % ctx.psq for c in cts], ctx.ep, ctx.psq)
    xq = gmpy2.powmod_base_list([gmpy2.mpz(c) % ctx.qsq for c in cts], ctx.eq, ctx.qsq)
    out = []
    for a, b in zip(xp, xq, strict=True):
        mp, mq = (a - 1) // ctx.p * ctx.hp % ctx.p, (b - 1) // ctx.q * ctx.hq % ctx.q
        out.append(mp + ctx.p * ((mq - mp) * ctx.p_inv % ctx.q))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--key-bits", type=int, default=P.KEY_BITS)
    ap.add_argument("--rows", type=int, default=5000, help="rows per side for the projection")
    ap.add_argument("--values", type=int, default=15, help="values per row for the projection")
    ap.add_argument("--windows", default="", help="window sizes to time, e.g. 4,6,8,10")
    a = ap.parse_args(argv)
    b, w, reps = a.batch, a.workers, a.reps

    t0 = time.perf_counter()
    pub, priv = P.generate_keypair(a.key_bits, "djn")
    keygen = {"djn": time.perf_counter() - t0}
    t0 = time.perf_counter()
    sub, sub_priv = P.generate_keypair(a.key_bits, "subgroup")
    keygen["subgroup"] = time.perf_counter() - t0
    djn = pub  # carries h: DJN randomness
    pub = P.public_key(pub.n)  # the same key without h: classic randomness
    ebits = P.djn_exponent_bits(a.key_bits)
    t0 = time.perf_counter()
    P._PublicCtx(djn)  # builds (and caches) the fixed-base table of h
    table_s = time.perf_counter() - t0
    if a.windows:
        nsq = pub.n * pub.n
        print(f"fixed-base h**a mod n**2, {ebits}-bit a, {a.key_bits}-bit n, load average "
              f"{os.getloadavg()[0]:.2f}")
        print(f"{'window':>6} {'build s':>8} {'MB':>7} {'ms/op':>7}")
        for win in (int(x) for x in a.windows.split(",")):
            t0 = time.perf_counter()
            fb = P.FixedBase(P.djn_h(djn), nsq, ebits, win)
            build = time.perf_counter() - t0
            mb = len(fb.rows) * len(fb.rows[0]) * (nsq.bit_length() // 8 + 24) / 1e6
            es = [secrets.randbits(ebits) for _ in range(b)]
            t0 = time.perf_counter()
            for e in es:
                fb.pow(e)
            print(f"{win:6d} {build:8.2f} {mb:7.1f} {1e3 * (time.perf_counter() - t0) / b:7.3f}")
            del fb
    slots = P.slots_per_ciphertext(pub.n.bit_length())
    d = min(a.values, slots)
    plain = [secrets.randbelow(1 << (slots * P.SLOT_BITS - 1)) for _ in range(b)]
    rows = [[secrets.randbelow(1 << 62) - (1 << 61) for _ in range(d)] for _ in range(b)]
    cts = P.encrypt_rows(pub, rows, private_key=priv)
    flat = [r[0] for r in cts]
    sub_cts = P.encrypt_rows(sub, rows, private_key=sub_priv)
    sub_flat = [r[0] for r in sub_cts]
    sub_plain = [m % sub.n for m in plain]
    sub_wire = P.public_key(sub.n, P.djn_h(sub), P.djn_order_bits(sub))  # as the helper has it
    print(f"{a.key_bits}-bit key, batch {b}, median of {reps}, workers = {w}, "
          f"os.cpu_count() = {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; "
          f"DJN: {ebits}-bit exponents, window {P.DJN_WINDOW}, table built in {table_s:.2f} s "
          f"(once per key and process; forked workers inherit it); key generation: DJN "
          f"{keygen['djn']:.2f} s, subgroup ({P.subgroup_order_bits(a.key_bits)}-bit p', q') "
          f"{keygen['subgroup']:.2f} s")

    ctx = P._PrivateCtx(priv)
    pools = [P.precompute_randomizers(pub, b, workers=w) for _ in range(reps)]
    djn_pools = [P.precompute_randomizers(djn, b, workers=w) for _ in range(reps)]
    cases: dict[str, tuple[Callable[[], object], int]] = {
        "enc phe": (lambda: [pub.raw_encrypt(m) for m in plain], b),
        "enc public gmpy2 x1": (lambda: P.encrypt_many(pub, plain, workers=1), b),
        "enc owner CRT x1": (lambda: P.encrypt_many(pub, plain, private_key=priv, workers=1), b),
        f"enc owner CRT x{w}": (
            lambda: P.encrypt_many(pub, plain, private_key=priv, workers=w), b),
        "mask phe (old helper_mask)": (
            lambda: [c * pub.raw_encrypt(m) % pub.nsquare
                     for c, m in zip(flat, plain, strict=True)], b),
        "mask helper_mask x1": (lambda: P.helper_mask(pub, cts, d, FIELD, workers=1), b),
        f"mask helper_mask x{w}": (lambda: P.helper_mask(pub, cts, d, FIELD, workers=w), b),
        f"mask pool fill x{w} (background)": (
            lambda: P.RandomizerJob(pub, b, workers=w).result(), b),
        "mask online, pool given": (
            lambda: P.helper_mask(pub, cts, d, FIELD, randomizers=pools.pop()), b),
        "enc owner DJN x1": (lambda: P.encrypt_many(djn, plain, private_key=priv, workers=1), b),
        f"enc owner DJN x{w}": (
            lambda: P.encrypt_many(djn, plain, private_key=priv, workers=w), b),
        "mask helper_mask DJN x1": (lambda: P.helper_mask(djn, cts, d, FIELD, workers=1), b),
        f"mask helper_mask DJN x{w}": (lambda: P.helper_mask(djn, cts, d, FIELD, workers=w), b),
        f"mask pool fill DJN x{w}": (lambda: P.RandomizerJob(djn, b, workers=w).result(), b),
        "mask online, DJN pool given": (
            lambda: P.helper_mask(djn, cts, d, FIELD, randomizers=djn_pools.pop()), b),
        "enc owner subgroup x1": (
            lambda: P.encrypt_many(sub, sub_plain, private_key=sub_priv, workers=1), b),
        f"enc owner subgroup x{w}": (
            lambda: P.encrypt_many(sub, sub_plain, private_key=sub_priv, workers=w), b),
        "mask helper_mask subgroup x1": (
            lambda: P.helper_mask(sub_wire, sub_cts, d, FIELD, workers=1), b),
        f"mask helper_mask subgroup x{w}": (
            lambda: P.helper_mask(sub_wire, sub_cts, d, FIELD, workers=w), b),
        "dec phe": (lambda: [priv.raw_decrypt(c) for c in flat], b),
        "dec CRT gmpy2 x1": (lambda: P.decrypt_many(priv, flat, workers=1), b),
        "dec CRT unreduced c x1": (lambda: [_unreduced(ctx, c) for c in flat], b),
        "dec CRT powmod_base_list x1": (lambda: _batched(ctx, flat), b),
        f"dec CRT gmpy2 x{w}": (lambda: P.decrypt_many(priv, flat, workers=w), b),
        f"dec decrypt_shares x{w}": (
            lambda: P.decrypt_shares(priv, cts, d, FIELD, workers=w), b),
        "dec subgroup x1": (lambda: P.decrypt_many(sub_priv, sub_flat, workers=1), b),
        f"dec subgroup x{w}": (lambda: P.decrypt_many(sub_priv, sub_flat, workers=w), b),
    }
    res = rates(cases, reps)
    r = {name: v[0] for name, v in res.items()}

    print(f"\n{'operation (ciphertexts)':34} {'ops/s':>9} {'ms/op':>7} {'best ops/s':>10} "
          f"{'CPU ms/op':>9}")
    for name, (v, best, c) in res.items():
        print(f"{name:34} {v:9.1f} {1e3 / v:7.2f} {best:10.1f} {c:9.2f}")
    print("(ops/s and ms/op: medians of wall-clock time; best: fastest repetition; CPU: median "
          "CPU time of this process and its workers)")

    n_ct = a.rows * P.ciphertexts_per_row(a.values, a.key_bits)  # per side; full overlap
    print(f"\nProjected join crypto, {a.rows} rows x {a.values} values per side, full overlap: "
          f"{n_ct} ciphertexts per owner, {2 * n_ct} re-randomisations at the helper")
    print(f"{'':26} {'encrypt':>8} {'mask':>8} {'decrypt':>8} {'total s':>8}")

    def line(label: str, enc: float, mask: float, dec: float) -> None:
        e, m, dd = n_ct / enc, 2 * n_ct / mask, n_ct / dec
        print(f"{label:26} {e:8.1f} {m:8.1f} {dd:8.1f} {e + m + dd:8.1f}")

    line("phe, 1 process", r["enc phe"], r["mask phe (old helper_mask)"], r["dec phe"])
    line("classic, 1 process", r["enc owner CRT x1"], r["mask helper_mask x1"],
         r["dec CRT gmpy2 x1"])
    line(f"classic, {w} workers", r[f"enc owner CRT x{w}"], r[f"mask helper_mask x{w}"],
         r[f"dec CRT gmpy2 x{w}"])
    line("DJN, 1 process", r["enc owner DJN x1"], r["mask helper_mask DJN x1"],
         r["dec CRT gmpy2 x1"])
    line(f"DJN, {w} workers", r[f"enc owner DJN x{w}"], r[f"mask helper_mask DJN x{w}"],
         r[f"dec CRT gmpy2 x{w}"])
    line("subgroup, 1 process", r["enc owner subgroup x1"], r["mask helper_mask subgroup x1"],
         r["dec subgroup x1"])
    line(f"subgroup, {w} workers", r[f"enc owner subgroup x{w}"],
         r[f"mask helper_mask subgroup x{w}"], r[f"dec subgroup x{w}"])
    print(f"load average now {os.getloadavg()[0]:.2f}")
    print("(wall-clock per phase with each party on its own machine like this one; the owners "
          "encrypt and decrypt in parallel, so each phase counts once)")


if __name__ == "__main__":
    main()
