"""Compiled (numba) kernels for the CPU hot paths: one row of responsibilities, batch statistics.

The formulas are those of :mod:`streamrbf.mappings` (the torch reference, tested equal); they exist
here a second time only because the per-row Python/torch overhead dominates on CPU. Every kernel
takes squared distances and ``divisor = logit_divisor(T)`` and works in float64 internally.

Entmax-1.5 is exact by the support rule: only centres with ``d - d_min < 2 * divisor`` can be
non-zero, so each row sorts just those candidates (usually one or two) instead of all ``k``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

ENTMAX15 = 0
SOFTMAX = 1
HARD = 2
MAPPING_CODES = {"entmax15": ENTMAX15, "softmax": SOFTMAX, "hard": HARD}

_jit = numba.njit(cache=True, nogil=True, fastmath=False)


@_jit
def row_responsibilities(d, divisor, mapping, vals, idx, ubuf, tbuf):
    """Non-zero responsibilities of one row of squared distances ``d``.

    Writes them to ``vals[:n]`` at centre indices ``idx[:n]`` and returns ``(n, j_min, d_min)``.
    ``ubuf`` and ``tbuf`` are float64 scratch buffers of length ``k``.
    """
    k = d.shape[0]
    jmin = 0
    dmin = d[0]
    for j in range(1, k):
        if d[j] < dmin:
            dmin = d[j]
            jmin = j
    if mapping == HARD or k == 1:
        vals[0] = 1.0
        idx[0] = jmin
        return 1, jmin, dmin
    if mapping == SOFTMAX:
        total = 0.0
        n = 0
        for j in range(k):
            e = math.exp((dmin - d[j]) / divisor)
            if e > 0.0:
                vals[n] = e
                idx[n] = j
                total += e
                n += 1
        for r in range(n):
            vals[r] /= total
        return n, jmin, dmin
    # entmax-1.5 on u = z / 2 - max(z / 2) = (d_min - d) / (2 divisor); candidates have u > -1.
    two_div = 2.0 * divisor
    m = 0
    for j in range(k):
        u = (dmin - d[j]) / two_div
        if u > -1.0:
            # insertion sort, descending by u (rows have few candidates)
            r = m
            while r > 0 and ubuf[r - 1] < u:
                ubuf[r] = ubuf[r - 1]
                idx[r] = idx[r - 1]
                r -= 1
            ubuf[r] = u
            idx[r] = j
            m += 1
    if m == 1:
        vals[0] = 1.0
        return 1, jmin, dmin
    s1 = 0.0
    s2 = 0.0
    support = 0
    for r in range(m):
        u = ubuf[r]
        s1 += u
        s2 += u * u
        rho = r + 1.0
        mean = s1 / rho
        delta = (1.0 - (s2 - s1 * mean)) / rho
        tau = mean - math.sqrt(delta) if delta > 0.0 else mean
        tbuf[r] = tau
        if tau <= u:
            support += 1
    tau_star = tbuf[support - 1]
    n = 0
    for r in range(m):
        diff = ubuf[r] - tau_star
        if diff > 0.0:
            vals[n] = diff * diff
            idx[n] = idx[r]
            n += 1
    return n, jmin, dmin


@_jit
def batch_responsibilities(G, xx, cc, divisor, mapping, vals, idx, length, labels, nearest, mass):
    """Sparse responsibilities of a batch, from ``G = X @ C.T`` and the squared norms ``xx``, ``cc``.

    Row ``i`` gets ``length[i]`` non-zeros ``vals[i, :length[i]]`` at centres ``idx[i, :length[i]]``,
    its nearest centre ``labels[i]`` at squared distance ``nearest[i]``; masses are added to
    ``mass``. Returns ``(weighted distortion sum_ik p_ik d_ik, number of non-zeros)``.
    """
    B, k = G.shape
    d = np.empty(k, np.float64)
    ubuf = np.empty(k, np.float64)
    tbuf = np.empty(k, np.float64)
    loss = 0.0
    nnz = 0
    for i in range(B):
        for j in range(k):
            v = xx[i] - 2.0 * G[i, j] + cc[j]
            d[j] = v if v > 0.0 else 0.0
        n, jmin, dmin = row_responsibilities(d, divisor, mapping, vals[i], idx[i], ubuf, tbuf)
        length[i] = n
        labels[i] = jmin
        nearest[i] = dmin
        nnz += n
        for r in range(n):
            p = vals[i, r]
            j = idx[i, r]
            mass[j] += p
            loss += p * d[j]
    return loss, nnz


@_jit
def scatter_sums(X, vals, idx, length, sums):
    """``sums[k] += sum_i p_ik x_i`` over the sparse responsibilities (cost: non-zeros x dim)."""
    B, dim = X.shape
    for i in range(B):
        for r in range(length[i]):
            p = vals[i, r]
            j = idx[i, r]
            for t in range(dim):
                sums[j, t] += p * X[i, t]


@_jit
def densify(vals, idx, length, k):
    """Dense ``(B, k)`` responsibilities from the sparse form."""
    B = length.shape[0]
    P = np.zeros((B, k), np.float64)
    for i in range(B):
        for r in range(length[i]):
            P[i, idx[i, r]] = vals[i, r]
    return P


@_jit
def nearest_centres(G, xx, cc):
    """Index and squared distance of the nearest centre of each row (ties: the lowest index)."""
    B, k = G.shape
    lab = np.empty(B, np.int64)
    best = np.empty(B, np.float64)
    for i in range(B):
        jmin = 0
        dmin = math.inf
        for j in range(k):
            v = xx[i] - 2.0 * G[i, j] + cc[j]
            if v < dmin:
                dmin = v
                jmin = j
        lab[i] = jmin
        best[i] = dmin if dmin > 0.0 else 0.0
    return lab, best
