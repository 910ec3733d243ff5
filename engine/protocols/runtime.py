"""Importing MPyC safely and building a runtime for one session among the parties.

``import mpyc`` parses ``sys.argv`` (and exits on options it does not know, such as pytest's
``-W``), so every import of MPyC in mpcsql goes through this module, which hides argv first.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass


def _import_mpyc():
    saved = sys.argv
    sys.argv = [saved[0] if saved else "mpcsql", "--no-log"]
    try:
        import mpyc  # noqa: F401
        import mpyc.runtime as runtime
    finally:
        sys.argv = saved
    return runtime


runtime_module = _import_mpyc()
mpc = runtime_module.mpc  # the single-party runtime MPyC creates on import (unit tests only)

import mpyc  # noqa: E402  (after the argv-safe import above)
import mpyc.asyncoro  # noqa: E402
import mpyc.finfields  # noqa: E402
import mpyc.mpctools  # noqa: E402
import mpyc.random  # noqa: E402
import mpyc.secgroups  # noqa: E402
import mpyc.seclists  # noqa: E402
import mpyc.secpols  # noqa: E402
import mpyc.sectypes  # noqa: E402
import mpyc.statistics  # noqa: E402
import mpyc.thresha  # noqa: E402
import numpy as np  # noqa: E402

from engine.protocols import codec  # noqa: E402


def _array_init_without_version_parsing() -> None:
    """MPyC 0.11's ``FiniteFieldArray.__init__`` parses numpy's version string on every call
    (``np.lib.NumpyVersion`` twice: ~13 % of party 0's CPU in a 5,000 x 30 LASSO solve,
    cProfile); install the same constructor with that comparison made once (idempotent; only
    for the MPyC version whose constructor this repeats)."""
    cls = mpyc.finfields.FiniteFieldArray
    if mpyc.__version__ != "0.11" or getattr(cls.__init__, "_version_parsed_once", False):
        return
    numpy2 = np.lib.NumpyVersion(np.__version__) >= "2.0.0b1"

    def __init__(self, value, check=True, copy=False):
        if numpy2 and copy is False:
            copy = None
        value = np.array(value, dtype=object, copy=copy)
        if check:
            value %= self.field.modulus  # in place: keeps the shape of value, as MPyC does
        self.value = value

    __init__._version_parsed_once = True
    __init__.__wrapped__ = cls.__init__  # MPyC's own, for the test that compares the two
    cls.__init__ = __init__


_array_init_without_version_parsing()


def _recombine_with_small_coefficients() -> None:
    """MPyC's ``thresha.np_recombine`` at x = 0 in a prime field with the Lagrange coefficients
    taken in (-p/2, p/2]: for the parties' points they are small integers (3, -3, 1 for
    {1, 2, 3}; 2, -1 for {1, 2}), so the sum costs a small multiplication per share instead of
    MPyC's object matmul with field-sized coefficients (1.5-2.5x faster; ~7 % of a LASSO
    solve's CPU went there). Same results; other fields and points fall back to MPyC's own
    (idempotent)."""
    thresha = mpyc.thresha
    if getattr(thresha.np_recombine, "_small_coefficients", False):
        return
    orig = thresha.np_recombine

    def np_recombine(field, points, x_rs=0):
        if (x_rs != 0 or isinstance(x_rs, list) or field.order != field.modulus
                or not all(isinstance(s, np.ndarray) and s.dtype == object for _, s in points)):
            return orig(field, points, x_rs)
        p = field.modulus
        vector = thresha._recombination_vector(field, tuple(x for x, _ in points), 0)
        acc = None
        for c, (_, share) in zip(vector, points, strict=True):
            c = c - p if c > p // 2 else c
            term = share if c == 1 else share * c
            acc = term if acc is None else acc + term
        return field.array(acc % p, check=False)

    np_recombine._small_coefficients = True
    # MPyC's own, for the test that compares the two (not __wrapped__: codec.install wraps
    # whatever is here with its shape check, and takes __wrapped__ as "already checked")
    np_recombine.mpyc_np_recombine = orig
    thresha.np_recombine = np_recombine


_recombine_with_small_coefficients()

#: Default secure fixed-point type: 64-bit values with 32 fractional bits.
FRAC_BITS = 32
BIT_LENGTH = 64


@dataclass(frozen=True)
class Address:
    host: str
    port: int


def make_runtime(pid: int, addresses: list[Address], threshold: int | None = None):
    """Build an MPyC runtime for party ``pid`` of ``len(addresses)`` and install it globally.

    MPyC keeps its runtime in module globals, so one process runs one session at a time.
    What peers send is decoded by :mod:`engine.protocols.codec` (plain data only, never code).
    """
    options = mpyc._get_arg_parser().parse_args(["--no-log"])
    m = len(addresses)
    options.threshold = (m - 1) // 2 if threshold is None else threshold
    options.no_async = m == 1
    parties = [runtime_module.Party(i, a.host, a.port) for i, a in enumerate(addresses)]
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    rt = runtime_module.Runtime(pid, parties, options)
    codec.install(runtime_module, mpyc.finfields)  # peers' pickles decode to plain data only
    for mod in (mpyc.sectypes, mpyc.asyncoro, mpyc.mpctools, mpyc.seclists, mpyc.secpols,
                mpyc.secgroups, mpyc.random, mpyc.statistics):
        mod.runtime = rt
    runtime_module.mpc = rt
    return rt


def secfxp():
    """The secure fixed-point type used for all values (SecFxp(64, 32))."""
    return runtime_module.Runtime.SecFxp(BIT_LENGTH, FRAC_BITS)
