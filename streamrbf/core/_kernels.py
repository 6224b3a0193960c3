"""Compiled (numba) kernels for the CPU hot paths: one row of responsibilities, batch statistics.

The formulas are those of :mod:`streamrbf.core.mappings` (the torch reference, tested equal); they
exist
here a second time only because the per-row Python/torch overhead dominates on CPU. Every kernel
takes squared distances and ``divisor = logit_divisor(T)`` and works in float64 internally.

Entmax-1.5 is exact by the support rule: only centres with ``d - d_min < 2 * divisor`` can be
non-zero, so each row sorts just those candidates (usually one or two) instead of all ``k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

ENTMAX15 = 0
SOFTMAX = 1
HARD = 2


@dataclass(frozen=True)
class MappingSpec:
    """A mapping of squared distances to memberships, as the engine knows it: its ``name``, the
    ``code`` of its branch in the compiled kernels, and the width of its support: ``"one"``
    (one-hot), ``"window"`` (only centres within ``2 T`` of the nearest can share a point, so
    rows are sorted over those alone) or ``"all"`` (every centre gets a share). Its torch form is
    registered under the same name in :mod:`streamrbf.core.mappings`.

    A new mapping is an entry in :data:`MAPPINGS` with its branch in
    :func:`responsibilities_given_nearest` (this module), and its torch function in
    :mod:`streamrbf.core.mappings`: every face takes it by name.

    Examples
    --------
    >>> MAPPINGS["entmax15"]
    MappingSpec(name='entmax15', code=0, support='window')
    """

    name: str
    code: int
    support: str


MAPPINGS = {m.name: m for m in (
    MappingSpec("entmax15", ENTMAX15, "window"),
    MappingSpec("softmax", SOFTMAX, "all"),
    MappingSpec("hard", HARD, "one"),
)}
MAPPING_CODES = {name: m.code for name, m in MAPPINGS.items()}


def check_mapping(mapping: str) -> int:
    """The kernel code of a mapping name; a ``ValueError`` naming the choices for anything else.
    (Here, not in :mod:`streamrbf.core.mappings`, so that River's torch-free path can use it.)

    Examples
    --------
    >>> check_mapping("softmax") == SOFTMAX
    True
    """
    try:
        return MAPPINGS[mapping].code
    except (KeyError, TypeError):
        raise ValueError(
            f"mapping must be one of {tuple(MAPPINGS)}, got {mapping!r}"
        ) from None

_jit = numba.njit(cache=True, nogil=True, fastmath=False)
# Batch loops may reassociate sums and fuse multiply-adds (SIMD); no flag that assumes away NaN/inf.
_jit_batch = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})


@_jit
def window(mapping, divisor):
    """How far (in squared distance) beyond the nearest centre a centre can still get a share of a
    point under a mapping whose support is a ``"window"``: ``2 * divisor`` for entmax-1.5 (its
    threshold is never below ``max(z) / 2 - 1``); infinite for any other mapping."""
    if mapping == ENTMAX15:
        return 2.0 * divisor
    return math.inf


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
    n = responsibilities_given_nearest(
        d, jmin, dmin, divisor, mapping, vals.reshape(1, k), idx.reshape(1, k), 0, ubuf, tbuf
    )
    return n, jmin, dmin


@_jit
def responsibilities_given_nearest(d, jmin, dmin, divisor, mapping, vals, idx, row, ubuf,  # noqa: C901
                                   tbuf):
    """:func:`row_responsibilities` for a row whose nearest centre is already known, writing to
    row ``row`` of the 2-D ``vals`` and ``idx`` (no per-row array views in the batch loop)."""
    k = d.shape[0]
    if mapping == HARD or k == 1:
        vals[row, 0] = 1.0
        idx[row, 0] = jmin
        return 1
    if mapping == SOFTMAX:
        total = 0.0
        n = 0
        for j in range(k):
            e = math.exp((dmin - d[j]) / divisor)
            if e > 0.0:
                vals[row, n] = e
                idx[row, n] = j
                total += e
                n += 1
        for r in range(n):
            vals[row, r] /= total
        return n
    # entmax-1.5 on u = z / 2 - max(z / 2) = (d_min - d) / (2 divisor) = -gap / window.
    # Candidates (u > -1, i.e. d - d_min < window) are found without dividing; most rows have
    # one, and are done.
    two_div = window(mapping, divisor)
    m = 0
    for j in range(k):
        if d[j] - dmin < two_div:
            m += 1
    if m == 1:
        vals[row, 0] = 1.0
        idx[row, 0] = jmin
        return 1
    m = 0
    for j in range(k):
        gap = d[j] - dmin
        if gap < two_div:
            u = -gap / two_div
            # insertion sort, descending by u (rows have few candidates)
            r = m
            while r > 0 and ubuf[r - 1] < u:
                ubuf[r] = ubuf[r - 1]
                idx[row, r] = idx[row, r - 1]
                r -= 1
            ubuf[r] = u
            idx[row, r] = j
            m += 1
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
            vals[row, n] = diff * diff
            idx[row, n] = idx[row, r]
            n += 1
    return n


@_jit_batch
def batch_responsibilities(X, C, G, divisor, mapping, vals, idx, length, labels, nearest,  # noqa: C901
                           mass, row_norms, weights, exact_below):
    """Sparse responsibilities of the batch ``X`` against centres ``C``, given ``G = X @ C.T``.

    Row ``i`` gets ``length[i]`` non-zeros ``vals[i, :length[i]]`` at centres
    ``idx[i, :length[i]]``, its nearest centre ``labels[i]`` at squared distance ``nearest[i]``;
    masses (times the row's weight) are added to ``mass``. ``row_norms``: the rows' squared norms,
    or empty to compute them from ``X`` (a sparse batch passes them, with ``X`` of no columns);
    ``weights``: each row's weight, or empty for weight 1. A squared distance by the expansion
    below ``exact_below * (|x|^2 + |c|^2)`` has lost its digits to cancellation: it is summed
    from differences instead (a point on a centre is at exactly 0; 0: never). Returns
    ``(weighted distortion
    sum_ik w_i p_ik d_ik, number of non-zeros of the rows of weight > 0)``, or ``(0, -1)`` as
    soon as a row has more entmax candidates than ``vals`` has columns (the caller retries with
    room for all ``k``; ``mass`` is then partial: reset it).
    """
    B, k = G.shape
    dim = X.shape[1]
    cap = vals.shape[1]
    cc = np.empty(k, np.float64)
    for j in range(k):
        acc = 0.0
        for t in range(C.shape[1]):
            acc += np.float64(C[j, t]) * C[j, t]
        cc[j] = acc
    d = np.empty(k, np.float64)
    ubuf = np.empty(k, np.float64)
    tbuf = np.empty(k, np.float64)
    weighted = weights.shape[0] > 0
    loss = 0.0
    nnz = 0
    for i in range(B):
        wi = weights[i] if weighted else 1.0
        if row_norms.shape[0] > 0:
            xx = row_norms[i]
        else:
            xx = 0.0
            for t in range(dim):
                xx += np.float64(X[i, t]) * X[i, t]
        for j in range(k):  # branch-free: vectorises
            d[j] = max(xx - 2.0 * G[i, j] + cc[j], 0.0)
        if exact_below > 0.0:
            for j in range(k):
                if d[j] < exact_below * (xx + cc[j]):
                    s = 0.0
                    for t in range(dim):
                        diff = np.float64(X[i, t]) - np.float64(C[j, t])
                        s += diff * diff
                    d[j] = s
        jmin = 0
        dmin = math.inf
        dsecond = math.inf
        for j in range(k):
            v = d[j]
            if v < dmin:
                dsecond = dmin
                dmin = v
                jmin = j
            elif v < dsecond:
                dsecond = v
        if dsecond - dmin >= window(mapping, divisor):
            # Margin beyond the window (2T under entmax-1.5): exactly one-hot (the common case
            # once annealed).
            vals[i, 0] = 1.0
            idx[i, 0] = jmin
            length[i] = 1
            labels[i] = jmin
            nearest[i] = dmin
            nnz += 1 if wi > 0.0 else 0
            mass[jmin] += wi
            loss += wi * dmin
            continue
        if cap < k and mapping != HARD:
            if mapping == SOFTMAX:
                return 0.0, -1
            m = 0
            width = window(mapping, divisor)
            for j in range(k):
                if d[j] - dmin < width:
                    m += 1
            if m > cap:
                return 0.0, -1
        n = responsibilities_given_nearest(
            d, jmin, dmin, divisor, mapping, vals, idx, i, ubuf, tbuf
        )
        length[i] = n
        labels[i] = jmin
        nearest[i] = dmin
        nnz += n if wi > 0.0 else 0
        for r in range(n):
            p = wi * vals[i, r]
            j = idx[i, r]
            mass[j] += p
            loss += p * d[j]
    return loss, nnz


@_jit_batch
def scatter_sums(X, vals, idx, length, sums, weights):
    """``sums[k] += sum_i w_i p_ik x_i`` over the sparse responsibilities (cost: non-zeros x
    dim); ``weights`` empty: every ``w_i`` is 1."""
    B, dim = X.shape
    weighted = weights.shape[0] > 0
    for i in range(B):
        wi = weights[i] if weighted else 1.0
        for r in range(length[i]):
            p = wi * vals[i, r]
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
def kmeans_plusplus_indices(X, first, uniforms, out, weights):
    """Greedy k-means++ on ``X`` (float64, ``(n, d)``): ``out[0] = first``, then each next
    centre is the best (lowest total weighted squared distance to the nearest centre) of
    ``uniforms.shape[1]`` candidates drawn in proportion to the weighted squared distance to the
    centres so far, candidate ``t`` of centre ``c`` from the uniform ``uniforms[c - 1, t]``
    (in proportion to the weights when every point already sits on a centre). ``weights``
    empty: every weight is 1. Fills ``out`` with row indices."""
    n, d = X.shape
    weighted = weights.shape[0] > 0
    n_clusters = out.shape[0]
    trials = uniforms.shape[1]
    out[0] = first
    closest = np.empty(n)
    for i in range(n):
        s = 0.0
        for j in range(d):
            diff = X[i, j] - X[first, j]
            s += diff * diff
        closest[i] = s
    cum = np.empty(n)
    cand = np.empty(trials, np.int64)
    pot = np.empty((trials, n))
    wsum = np.empty(n)
    wtotal = 0.0
    for i in range(n):
        wtotal += weights[i] if weighted else 1.0
        wsum[i] = wtotal
    for c in range(1, n_clusters):
        total = 0.0
        for i in range(n):
            total += closest[i] * weights[i] if weighted else closest[i]
            cum[i] = total
        for t in range(trials):
            u = uniforms[c - 1, t]
            if total > 0.0 and math.isfinite(total):
                # First index whose cumulative sum reaches u * total (numpy's searchsorted).
                cand[t] = min(np.searchsorted(cum, u * total), n - 1)
            elif weighted:
                cand[t] = min(np.searchsorted(wsum, u * wtotal, side="right"), n - 1)
            else:
                cand[t] = min(int(u * n), n - 1)
        best, best_pot = 0, np.inf
        for t in range(trials):
            ct = cand[t]
            s_pot = 0.0
            for i in range(n):
                # Differences, not the norm expansion: data far from the origin (timestamps,
                # say) would lose the distances to cancellation and seed duplicate centres.
                dist = 0.0
                for j in range(d):
                    diff = X[i, j] - X[ct, j]
                    dist += diff * diff
                p = closest[i] if closest[i] < dist else dist
                pot[t, i] = p
                s_pot += p * weights[i] if weighted else p
            if s_pot < best_pot:
                best, best_pot = t, s_pot
        out[c] = cand[best]
        for i in range(n):
            closest[i] = pot[best, i]
    return out


@_jit
def exact_small_sq_distances(X, C, D, xx, cc, ratio):
    """Recompute, as sums of squared differences, the entries of ``D`` (squared distances of
    the rows of ``X`` to the centres ``C`` by the norm expansion) below ``ratio * (xx + cc)``:
    there the expansion has cancelled most of its digits (a point on a centre gets ~1e-7
    instead of 0). Returns how many entries were recomputed."""
    n, k = D.shape
    dim = X.shape[1]
    count = 0
    for i in range(n):
        for j in range(k):
            if D[i, j] < ratio * (xx[i] + cc[j]):
                s = 0.0
                for t in range(dim):
                    diff = np.float64(X[i, t]) - np.float64(C[j, t])
                    s += diff * diff
                D[i, j] = s
                count += 1
    return count


@_jit
def exact_small_sq_distances_csr(data, indices, indptr, C, D, xx, cc, ratio):
    """:func:`exact_small_sq_distances` for rows in CSR form (``data``, ``indices``,
    ``indptr``; column indices sorted): each recomputed entry walks the row's non-zeros and
    the centre's other coordinates."""
    n, k = D.shape
    dim = C.shape[1]
    count = 0
    for i in range(n):
        lo, hi = indptr[i], indptr[i + 1]
        for j in range(k):
            if D[i, j] < ratio * (xx[i] + cc[j]):
                s = 0.0
                p = lo
                for t in range(dim):
                    c = np.float64(C[j, t])
                    if p < hi and indices[p] == t:
                        diff = np.float64(data[p]) - c
                        p += 1
                    else:
                        diff = -c
                    s += diff * diff
                D[i, j] = s
                count += 1
    return count


@_jit_batch
def nearest_two(X, G, xx, cc, weights, labels, first, second, mass, sums):
    """Lloyd's pass from the Gram block ``G = X @ C.T`` and the squared norms ``xx``, ``cc``:
    each row's nearest centre ``labels``, its squared distance ``first`` and the squared
    distance to the second-nearest centre ``second`` (the norm expansion, at least 0; inf with
    one centre), and the clusters' weighted ``mass`` and ``sums`` (accumulated); ``weights``
    empty: every weight is 1. Ties go to the lowest index, as ``argmin``."""
    n, k = G.shape
    dim = X.shape[1]
    weighted = weights.shape[0] > 0
    for i in range(n):
        best = np.inf
        runner = np.inf
        jbest = 0
        for j in range(k):
            dist = xx[i] + cc[j] - 2.0 * np.float64(G[i, j])
            if dist < best:
                runner = best
                best = dist
                jbest = j
            elif dist < runner:
                runner = dist
        labels[i] = jbest
        first[i] = max(best, 0.0)
        second[i] = max(runner, 0.0)
        wi = weights[i] if weighted else 1.0
        mass[jbest] += wi
        for t in range(dim):
            sums[jbest, t] += wi * X[i, t]


@_jit_batch
def bank_statistics(X, model, C, divisors, mapping, weights, mass, sums, labels, nearest,
                    support):
    """One pass of a bank of models over a mixed batch: row ``i`` belongs to model
    ``model[i]``, whose centres are ``C[model[i]]`` (``(B, k, d)``) and logit divisor
    ``divisors[model[i]]``. Accumulates each model's responsibility masses ``mass (B, k)``,
    weighted sums ``sums (B, k, d)`` and non-zero count ``support (B,)``; writes each row's
    nearest centre and squared distance (by direct differences: no cancellation).
    ``weights`` empty: every weight is 1."""
    n, dim = X.shape
    k = C.shape[1]
    weighted = weights.shape[0] > 0
    d = np.empty(k, np.float64)
    vals = np.empty(k, np.float64)
    idx = np.empty(k, np.int64)
    ubuf = np.empty(k, np.float64)
    tbuf = np.empty(k, np.float64)
    for i in range(n):
        b = model[i]
        for j in range(k):
            s = 0.0
            for t in range(dim):
                diff = np.float64(X[i, t]) - np.float64(C[b, j, t])
                s += diff * diff
            d[j] = s
        cnt, jmin, dmin = row_responsibilities(d, divisors[b], mapping, vals, idx, ubuf, tbuf)
        labels[i] = jmin
        nearest[i] = dmin
        wi = weights[i] if weighted else 1.0
        if wi > 0.0:
            support[b] += cnt
        for r in range(cnt):
            p = wi * vals[r]
            j = idx[r]
            mass[b, j] += p
            for t in range(dim):
                sums[b, j, t] += p * X[i, t]
