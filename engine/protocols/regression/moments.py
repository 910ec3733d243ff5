"""Protocol MOMENTS: the exact Gram matrix and column sums of the rows, in the solver type.

Source: the secure matrix product of MPyC (``Runtime.np_matmul``: local product of the shares,
one reshare per output element) and MPyC's share conversion ``Runtime.convert``; like MPyC's
demos/ridgeregression.py, all rows are reduced to the d x d normal equations first.

The parties read their SecFxp(64, 32) shares as integers of the same field and form Z^T Z and
the column sums of Z = [X | y] exactly (local product, one reshare per output element, with the
local product done in 16-bit limbs on float64 BLAS). The (d+1)(d+2)/2 + d+1 sums are converted
to the field of the solver type SecFxp(96, 48), centred there exactly (m Z^T Z - s s^T) and
scaled by a pre-scaled public reciprocal of m^2 (or m) with one truncation: no fixed-point
division by m. Error of G = Xc^T Xc / m and c = Xc^T yc / m: <= 2^-48 absolute + m^2 2^-79
relative. Everything after MOMENTS works on the d x d system, so iterations cost nothing per
row.

What each party sees: its own shares, the reshared shares of Z^T Z, and the openings inside
the conversion and the truncation, which are masked by random values (statistically hiding:
MPyC's ``convert``; :func:`engine.protocols.fastfxp._open_trunc`, or ``np_trunc`` under
``--no-prss``). Nothing is opened in the clear; the result stays secret-shared.
"""

from __future__ import annotations

from asyncio import Future

import numpy as np

from engine.protocols import fastfxp as fx
from engine.protocols import fieldwords as fw
from engine.protocols.regression.options import (
    _LIMB,
    SOLVER_FRAC,
    _int_type,
    _rt,
    coroutine,
    solver_type,
)
from engine.protocols.shares import SharedTable


def _local_moments(Z, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Z^T Z mod p and the column sums mod p of shares Z, exactly, as object arrays of ints.

    ``Z`` is either an (m, e) object array of ints in [0, p) or a list of e columns of 64-bit
    words (K, m) (:class:`engine.protocols.shares.SharedTable`). The entries are split into
    16-bit limbs (a view of the words) and multiplied with float64 BLAS in row blocks small
    enough (< 2^20 rows) that every limb product sum stays below 2^53, so the result is exact;
    the blocks bound the memory (~64 MB) whatever m is.
    """
    if isinstance(Z, np.ndarray):
        cols = [fw.ints_to_words(Z[:, j], p) for j in range(Z.shape[1])]
    else:
        cols = list(Z)
    e = len(cols)
    k, m = cols[0].shape
    nl = 4 * k  # 16-bit limbs per element
    rows = max(1, min(1 << (52 - 2 * _LIMB), (1 << 23) // (nl * e)))
    gram = np.zeros((nl * e, nl * e), dtype=object)
    sums = np.zeros(nl * e, dtype=object)
    W = np.empty((rows, nl, e), dtype=np.float64)
    for start in range(0, m, rows):
        n = min(rows, m - start)
        for j, c in enumerate(cols):  # (n, K) words -> (n, 4K) limbs, least significant first
            W[:n, :, j] = np.ascontiguousarray(c[:, start:start + n].T).view(np.uint16)
        B = W[:n].reshape(n, nl * e)
        gram += (B.T @ B).astype(np.int64).astype(object)
        sums += B.sum(axis=0).astype(np.int64).astype(object)
    gram = gram.reshape(nl, e, nl, e)
    sums = sums.reshape(nl, e)
    shifts = [1 << (_LIMB * a) for a in range(2 * nl)]
    ztz = sum(gram[a, :, b, :] * shifts[a + b] for a in range(nl) for b in range(nl))
    total = sum(sums[a] * shifts[a] for a in range(nl))
    return ztz % p, total % p


@coroutine
async def _moments(X, y, m: int, center: bool):
    """Protocol MOMENTS: exact Z^T Z and column sums of Z = [X | y], scaled into the solver type."""
    # Returns (Gc, means): Gc (d+1) x (d+1) with G = Gc[:d, :d], c = Gc[:d, d] (centred if
    # ``center``), means the column means of Z (None if not ``center``). X, y are secure arrays
    # or SharedTables (the engine's: word shares, never turned into m x d Python ints).
    rt = _rt()
    await rt.returnType(Future)
    t2 = solver_type()
    words = isinstance(X, SharedTable)
    sectype = X.sectype if words else type(X).sectype
    s1 = _int_type(sectype.field)
    s2 = _int_type(t2.field)
    f_in = sectype.frac_length
    d = X.shape[1]
    e = d + 1
    ztz, sums = await _exact_products(rt, X, y, m, s1, words)
    iu = np.triu_indices(e)
    Q, s = await _to_solver_field(rt, ztz, sums, e, iu, s1, s2)
    scaled = await _scale(rt, Q, s, m, e, iu, f_in, s2, center)
    return _unpack(scaled, e, iu, t2, center)


async def _exact_products(rt, X, y, m: int, s1, words: bool):
    """Secret Z^T Z (reshared) and column sums of Z = [X | y] over the input field, exactly."""
    if words and getattr(X, "ztz", None) is not None:  # rows reduced chunk by chunk
        ztz, sums = X.ztz, X.sums  # (engine.protocols.aggregates.reduce_rows)
    elif words:
        ztz, sums = _local_moments(X.columns + y.columns, s1.field.order)
    else:
        Xf, yf = await rt.gather(X, y)
        ztz, sums = _local_moments(np.column_stack((Xf.value, yf.value.reshape(m, 1))),
                                   s1.field.order)
    # As MPyC's secure matrix product: local product of the shares, one reshare per element.
    # Exact integers: Z^T Z at scale 2^(2 f_in) with |.| <= m 2^(2 f_in), sums at 2^f_in.
    ztz = rt._reshare(s1.array(s1.field.array(ztz)))
    sums = s1.array(s1.field.array(sums))
    return await rt.gather(ztz, sums)


async def _to_solver_field(rt, ztz, sums, e: int, iu, s1, s2):
    """The upper triangle of Z^T Z and the sums converted to the solver's field: (Q, s)."""
    vals = list(ztz.value[iu]) + list(sums.value)
    conv = rt.convert([s1(s1.field(int(v))) for v in vals], s2)
    conv = await rt.gather(conv)
    Q = np.zeros((e, e), dtype=object)
    Q[iu] = [int(a.value) for a in conv[: len(iu[0])]]
    Q = Q + np.triu(Q, 1).T
    s = s2.array(s2.field.array(np.array([int(a.value) for a in conv[len(iu[0]):]],
                                         dtype=object)))
    Q = s2.array(s2.field.array(Q))
    return Q, s


async def _scale(rt, Q, s, m: int, e: int, iu, f_in: int, s2, center: bool):
    """Centre (m Q - s s^T) and divide by m^2 (or m) with one truncation: field values."""
    # One truncation by F bits brings everything to scale 2^SOLVER_FRAC; the public reciprocals
    # carry K extra bits so that values stay below 2^(l-2) of s2.
    headroom = s2.bit_length - 2
    k_g = headroom - 2 * f_in
    F = 2 * f_in + k_g - SOLVER_FRAC
    k_m = F + SOLVER_FRAC - f_in
    if center:
        N = Q * m - rt.np_outer(s, s)  # m^2 Cov, exact
        G = N * round(2**k_g / m**2)
    else:
        G = Q * round(2**k_g / m)
    tri = rt.np_reshape(G, (e * e,))[np.ravel_multi_index(iu, (e, e))]
    parts = [tri, s * round(2**k_m / m)] if center else [tri]
    if rt.options.no_prss:
        scaled = rt.np_trunc(rt.np_concatenate(parts), f=F, l=s2.bit_length)
        scaled = (await rt.gather(scaled)).value
    else:  # one opening and no random bits (F ~ 94 per value for np_trunc): error < 2 units
        raw = (await rt.gather(rt.np_concatenate(parts))).value
        scaled = (await fx._open_trunc(s2.field, raw, False, F, s2.bit_length))[0].value
    return scaled


def _unpack(scaled, e: int, iu, t2, center: bool):
    """(Gc, means) as solver-type arrays from the scaled upper triangle and column means."""
    n_tri = len(iu[0])
    Gc = np.zeros((e, e), dtype=object)
    Gc[iu] = scaled[:n_tri]
    Gc = Gc + np.triu(Gc, 1).T
    Gc = t2.array(t2.field.array(Gc), integral=False)
    means = t2.array(t2.field.array(scaled[n_tri:]), integral=False) if center else None
    return Gc, means
