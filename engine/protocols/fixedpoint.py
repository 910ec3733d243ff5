"""Fixed-point encoding of plaintext values for the join and MPyC (SecFxp(64, 32)).

A real value x becomes the integer v = round(x * 2**32).  Values must satisfy |x| < 2**31 so
that v fits the 64-bit SecFxp range; anything else is refused with a DataError before it leaves
its party.  The integer v is exactly the MPyC field representation of ``secfxp(x)``.
"""

from __future__ import annotations

import numpy as np

from dialect.errors import DataError

FRAC_BITS = 32
INT_BITS = 31  # |x| < 2**31
VALUE_BITS = FRAC_BITS + INT_BITS + 1  # signed 64-bit encodings
LIMIT = float(2**INT_BITS)


def check_range(values: np.ndarray, columns: tuple[str, ...], table: str) -> None:
    """Refuse NaN/inf and values outside the SecFxp range, naming the column (not the value)."""
    if values.size == 0:
        return
    bad = ~np.isfinite(values)
    for j in np.flatnonzero(bad.any(axis=0)):
        raise DataError(f"column {table}.{columns[j]} contains NaN or infinite values")
    big = np.abs(values) >= LIMIT
    for j in np.flatnonzero(big.any(axis=0)):
        raise DataError(
            f"column {table}.{columns[j]} has values outside the supported range "
            f"|x| < 2^{INT_BITS} (fixed point with {FRAC_BITS} fractional bits)"
        )


def encode_int64(values: np.ndarray) -> np.ndarray:
    """Encode floats as an int64 array round(x * 2**FRAC_BITS) (exact after check_range)."""
    scaled = np.ldexp(np.asarray(values, dtype=np.float64), FRAC_BITS)
    # |scaled| < 2**63 after check_range, so int64 is exact.
    return np.rint(scaled).astype(np.int64)


def encode(values: np.ndarray) -> np.ndarray:
    """Encode floats as Python-int object array round(x * 2**FRAC_BITS) (exact, no overflow)."""
    return encode_int64(values).astype(object)  # object dtype for field arithmetic


def decode(v: int | float) -> float:
    return float(v) / 2**FRAC_BITS
