"""Split and merge moves at zero temperature: the end of :func:`~streamrbf.core.engine.fit`.

Annealing finds the coarse structure of the data; what it leaves are the errors K-Means is known
for: two centres sharing one cluster while another centre covers two clusters (a local optimum
that no Lloyd step leaves, at any temperature below the pair's critical temperature). The moves
here repair them, in the manner of breathing K-Means (Fritzke 2020):

- **split** (breathe in): the ``m`` clusters with the largest error each get a second centre.
  The pair straddles the centre along the cluster's principal axis, ``c +- sqrt(lambda) v / 2``:
  the direction in which a cluster becomes unstable first as the temperature falls (its
  critical temperature is proportional to the largest eigenvalue ``lambda`` of its scatter,
  see docs/theory.md), so the split is the phase transition annealing would make next if it
  had a centre to spare;
- **merge** (breathe out): the ``m`` centres whose removal costs least (the *utility* of a centre:
  how much the error grows when its points go to their second-nearest centre) are removed; the
  nearest neighbour of a removed centre is kept in that round (removing both would open a hole);
- Lloyd iterations after each move; a round that lowers the K-Means error by more than
  :data:`MIN_GAIN` is kept, otherwise it is undone and ``m`` shrinks by a third; the moves end at
  ``m = 0`` or when the iterations run out. The last round (``m = 1``) is a swap: the two halves
  of the split are kept, the least useful centre elsewhere goes, and Lloyd's iterations run to
  convergence.

Every pass is a hard (one-hot) pass of the compiled kernels over the data in chunks; the data are
numpy arrays or scipy sparse matrices (models on an accelerator skip the moves). Every random
choice (the start of each power iteration) comes from the ``rng`` given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _kernels
from .statistics import (
    CHUNK_ELEMENTS,
    BatchResult,
    SufficientStatistics,
    batch_result,
    blas_threads_for,
    gram,
    is_sparse,
    merged,
    row_chunks,
    row_norms,
    safe_gram,
)

__all__ = ["MIN_GAIN", "POWER_ITERATIONS", "ROUND_ITER", "SCATTER_MAX_FEATURES", "far_rows",
           "hard_pass", "lloyd", "moves_for", "split_merge", "utilities"]

#: A round of moves is kept when it lowers the K-Means error by more than this share.
MIN_GAIN = 1e-6
#: Lloyd iterations after each split or merge: the moves are judged on a partly converged
#: solution (most of a move's gain shows in the first iterations); the best one is polished
#: to convergence within the iterations left.
ROUND_ITER = 5
#: Power iterations for a cluster's principal axis (a direction to split along, not an
#: eigenvector to many digits).
POWER_ITERATIONS = 8
#: Up to this many features, the power iterations run on the cluster's ``d x d`` scatter matrix
#: (one product with its rows, ``d^2`` per row, against ``2 d`` per row and iteration on the rows).
SCATTER_MAX_FEATURES = 2 * POWER_ITERATIONS


def hard_pass(X: Any, C: np.ndarray, w: np.ndarray | None, xx: np.ndarray | None = None
              ) -> BatchResult:
    """One hard pass over all rows of ``X`` (a numpy array or scipy CSR matrix of the dtype of
    ``C``): each row's nearest centre, its squared distance, and the clusters' (weighted) masses
    and sums.

    Parameters
    ----------
    X
        The rows ``(n, d)``.
    C
        The centres ``(k, d)``, the dtype of ``X``.
    w
        The rows' weights, or None.
    xx
        The rows' squared norms when known (dense rows); None: computed.

    Returns
    -------
    BatchResult
        Statistics, labels and squared distances to the nearest centre.

    Examples
    --------
    >>> r = hard_pass(np.array([[0.0], [1.0], [9.0]]), np.array([[0.0], [10.0]]), None)
    >>> r.labels.tolist(), r.stats.sums.ravel().tolist()
    ([0, 0, 1], [1.0, 9.0])
    """
    n = X.shape[0]
    if not is_sparse(X):
        return _dense_pass(X, C, w, row_norms(X) if xx is None else xx)
    return merged([batch_result(X[s], C, 1.0, "hard", sample_weight=None if w is None else w[s])
                   for s in row_chunks(n, len(C))])


@dataclass
class _DensePass(BatchResult):
    """A hard pass over dense rows, with each row's squared distance to its second-nearest
    centre (``second``) as well."""

    second: np.ndarray | None = None


def _dense_pass(X: np.ndarray, C: np.ndarray, w: np.ndarray | None, xx: np.ndarray
                ) -> BatchResult:
    """:func:`hard_pass` of dense rows (squared norms ``xx``) by the compiled kernel (Gram
    blocks from BLAS, which runs as the caller set it); the result also holds each row's
    second-nearest distance."""
    n, k = X.shape[0], len(C)
    labels = np.empty(n, np.int64)
    first = np.empty(n, np.float64)
    second = np.empty(n, np.float64)
    mass = np.zeros(k, np.float64)
    sums = np.zeros((k, X.shape[1]), np.float64)
    cc = row_norms(C)
    for s in row_chunks(n, k):
        part = X[s]
        _kernels.nearest_two(part, safe_gram(part, C, limit=False), xx[s], cc,
                             _NONE if w is None else w[s], labels[s], first[s], second[s],
                             mass, sums)
    loss = float(first.sum() if w is None else first @ w)
    stats = SufficientStatistics(mass, sums, loss, n)
    return _DensePass(stats, labels, first, n if w is None else int(np.count_nonzero(w)),
                      None, second)


_NONE = np.empty(0, np.float64)


def _rows_of(X: Any, rows: np.ndarray) -> np.ndarray:
    part = X[rows]
    return np.asarray(part.toarray() if is_sparse(part) else part, dtype=np.float64)


def far_rows(nearest: np.ndarray, w: np.ndarray | None, count: int) -> np.ndarray:
    """Up to ``count`` rows farthest from their nearest centre, of weight > 0 and distance > 0
    (where an empty or duplicated centre goes), farthest first.

    Parameters
    ----------
    nearest
        Each row's squared distance to its nearest centre (a host array).
    w
        The rows' weights, or None.
    count
        How many rows at most.

    Returns
    -------
    numpy.ndarray
        Row indices.

    Examples
    --------
    >>> far_rows(np.array([0.0, 4.0, 1.0, 9.0]), None, 3).tolist()
    [3, 1, 2]
    """
    far_d = nearest * (1.0 if w is None else (w > 0))
    far = np.argsort(-far_d, kind="stable")[:count]
    return far[far_d[far] > 0]


def lloyd(X: Any, C: np.ndarray, w: np.ndarray | None, tol: float, max_iter: int,
          xx: np.ndarray | None = None) -> tuple[np.ndarray, BatchResult, int]:
    """Lloyd's iterations from the centres ``C`` until no row changes its nearest centre, the
    centres move by at most ``tol`` (summed squared shift), or ``max_iter`` iterations; a
    centre left without rows moves to the row farthest from its nearest centre.

    Parameters
    ----------
    X
        The rows ``(n, d)``: a numpy array or scipy CSR matrix.
    C
        The starting centres ``(k, d)``, the dtype of ``X``.
    w
        The rows' weights, or None.
    tol
        The summed squared centre shift at which the iterations stop.
    max_iter
        The most iterations (passes that move the centres).
    xx
        The rows' squared norms when known (dense rows); None: computed at each pass.

    Returns
    -------
    tuple
        The centres, the hard pass of the data against them (labels, distances, statistics)
        and the iterations run.

    Examples
    --------
    >>> X = np.array([[0.0], [1.0], [9.0], [10.0]])
    >>> C, r, it = lloyd(X, np.array([[0.0], [1.0]]), None, 0.0, 10)
    >>> C.ravel().tolist(), float(r.nearest.sum())
    ([0.5, 9.5], 1.0)
    """
    r = hard_pass(X, C, w, xx=xx)
    it = 0
    while it < max_iter:
        mass = r.stats.mass
        new = C.astype(np.float64)
        full = mass > 0
        new[full] = r.stats.sums[full] / mass[full, None]
        empty = np.flatnonzero(~full)
        if empty.size:
            far = far_rows(r.nearest, w, empty.size)
            new[empty[: far.size]] = _rows_of(X, far)
        new = new.astype(C.dtype)
        shift = float(((new.astype(np.float64) - C) ** 2).sum())
        it += 1
        labels = r.labels
        C, r = new, hard_pass(X, new, w, xx=xx)
        if (shift <= tol or (r.labels == labels).all()) and not empty.size:
            break
    return C, r, it


def second_nearest(X: Any, C: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's squared distance to its second-nearest centre (the nearest other than its
    label), through the norm expansion in chunks.

    Parameters
    ----------
    X
        The rows ``(n, d)``.
    C
        The centres ``(k, d)``, k >= 2.
    labels
        Each row's nearest centre.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64, >= 0.

    Examples
    --------
    >>> second_nearest(np.array([[0.0], [9.0]]), np.array([[0.0], [1.0], [10.0]]),
    ...                np.array([0, 2])).tolist()
    [1.0, 64.0]
    """
    n = X.shape[0]
    C64 = C.astype(np.float64)
    cc = (C64 * C64).sum(1)
    out = np.empty(n, np.float64)
    for s in row_chunks(n, len(C)):
        part = X[s]
        P = part.astype(np.float64) if is_sparse(part) else np.asarray(part, np.float64)
        D = row_norms(P)[:, None] - 2.0 * gram(P, C64) + cc[None, :]
        D[np.arange(D.shape[0]), labels[s]] = np.inf
        out[s] = np.maximum(D.min(axis=1), 0.0)
    return out


def utilities(X: Any, C: np.ndarray, r: BatchResult, w: np.ndarray | None) -> np.ndarray:
    """Each centre's utility: how much the (weighted) K-Means error grows when it is removed
    and its rows go to their second-nearest centre.

    Parameters
    ----------
    X
        The rows ``(n, d)``.
    C
        The centres ``(k, d)``, k >= 2.
    r
        The hard pass of ``X`` against ``C``.
    w
        The rows' weights, or None.

    Returns
    -------
    numpy.ndarray
        ``(k,)`` float64, >= 0 (0 for a centre no row is nearest to).

    Examples
    --------
    >>> X = np.array([[0.0], [0.1], [10.0]])
    >>> C = np.array([[0.0], [0.1], [10.0]])
    >>> utilities(X, C, hard_pass(X, C, None), None).round(3).tolist()
    [0.01, 0.01, 98.01]
    """
    second = getattr(r, "second", None)
    gain = (second if second is not None else second_nearest(X, C, r.labels)) - r.nearest
    if w is not None:
        gain = gain * w
    return np.bincount(r.labels, weights=gain, minlength=len(C))


def _principal_axis(X: Any, rows: np.ndarray, c: np.ndarray, w: np.ndarray | None,
                    rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The top eigenvector of the (weighted) scatter of ``X[rows]`` about ``c`` and its
    eigenvalue (the scatter's variance along it), by power iteration: on the ``d x d`` scatter
    matrix for dense rows of at most :data:`SCATTER_MAX_FEATURES` features (one product with
    the rows), on the rows otherwise (the matrix is never formed: sparse rows stay sparse)."""
    part = X[rows]
    weights = np.ones(len(rows)) if w is None else w[rows]
    total = float(weights.sum())
    v = np.asarray(rng.standard_normal(c.shape[0]), dtype=np.float64)
    lam = 0.0
    if not is_sparse(part) and c.shape[0] <= SCATTER_MAX_FEATURES:
        D = np.asarray(part, dtype=np.float64) - c
        S = (D * (weights / total)[:, None]).T @ D
        for _ in range(POWER_ITERATIONS):
            v = _unit(v)
            Sv = S @ v
            lam = float(v @ Sv)
            v = Sv
        return _unit(v), lam
    for _ in range(POWER_ITERATIONS):
        v = _unit(v)
        proj = np.asarray(part @ v).ravel() - float(c @ v)   # (x - c) . v
        wp = weights * proj
        lam = float(wp @ proj) / total
        v = (np.asarray(part.T @ wp).ravel() - c * wp.sum()) / total
    return _unit(v), lam


def _unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to length 1 (scaled by its largest entry first: no overflow in the norm of
    huge values); a zero vector stays zero."""
    top = float(np.abs(v).max()) if v.size else 0.0
    if not top > 0:
        return np.zeros_like(v)
    v = v / top
    return v / float(np.sqrt(v @ v))


def moves_for(k: int) -> int:
    """Centres split and merged in the first round of moves for ``k`` clusters: ``sqrt(k)``,
    at least 5 (breathing K-Means' default), at most half the clusters (a round that moves more
    rarely survives its comparison, and costs as much as any).

    Parameters
    ----------
    k
        The number of clusters.

    Returns
    -------
    int
        The number of moves.

    Examples
    --------
    >>> moves_for(2), moves_for(7), moves_for(10), moves_for(100)
    (1, 3, 5, 10)
    """
    return max(1, min(int(k) // 2, max(5, math.ceil(math.sqrt(k)))))


def _split(X: Any, C: np.ndarray, r: BatchResult, w: np.ndarray | None, m: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The centres with the ``m`` largest-error clusters split in two along their principal
    axes: ``(k + m, d)``, and which of them are the halves of a split."""
    err = r.nearest if w is None else r.nearest * w
    err = np.bincount(r.labels, weights=err, minlength=len(C))
    new = C.astype(np.float64)
    extra = []
    halves = np.zeros(len(C), bool)
    for j in np.argsort(-err, kind="stable")[:m]:
        rows = np.flatnonzero(r.labels == j)
        if rows.size < 2 or err[j] <= 0:
            continue
        v, lam = _principal_axis(X, rows, new[j], w, rng)
        half = 0.5 * math.sqrt(max(lam, 0.0)) * v
        extra.append(new[j] + half)
        new[j] = new[j] - half
        halves[j] = True
    if not extra:
        return C, halves
    halves = np.concatenate([halves, np.ones(len(extra), bool)])
    return np.vstack([new, *extra]).astype(C.dtype), halves


def _merge(X: Any, C: np.ndarray, r: BatchResult, w: np.ndarray | None, k: int,
           halves: np.ndarray) -> np.ndarray:
    """The ``k`` centres left after removing the least useful ones: in order of utility, each
    removed centre's nearest remaining neighbour is kept in this round, and so are the
    ``halves`` of this round's splits (undoing a split is what rejecting the round does), as
    long as enough others are left to remove."""
    m = len(C) - k
    util = utilities(X, C, r, w)
    C64 = C.astype(np.float64)
    D = ((C64[:, None, :] - C64[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    removed: list[int] = []
    kept = halves.copy()
    for j in np.argsort(util, kind="stable"):
        if len(removed) == m:
            break
        if kept[j]:
            continue
        removed.append(int(j))
        D[:, j] = np.inf
        kept[int(np.argmin(D[j]))] = True
    for j in np.argsort(util, kind="stable"):  # (when the kept ones left too few to remove)
        if len(removed) == m:
            break
        if int(j) not in removed:
            removed.append(int(j))
    return np.delete(C, removed, axis=0)


def split_merge(X: Any, C: np.ndarray, w: np.ndarray | None, tol: float, max_iter: int,
                rng: np.random.Generator, round_iter: int = ROUND_ITER
                ) -> tuple[np.ndarray, BatchResult, int]:
    """Lloyd's iterations, then rounds of split and merge moves (module docstring) while they
    lower the K-Means error; returns the best centres found.

    Parameters
    ----------
    X
        The rows ``(n, d)``: a numpy array or scipy CSR matrix.
    C
        The starting centres ``(k, d)``, the dtype of ``X``.
    w
        The rows' weights, or None.
    tol
        Lloyd's tolerance (summed squared centre shift).
    max_iter
        The most Lloyd iterations in all.
    rng
        Where the power iterations start.
    round_iter
        The most Lloyd iterations after each move.

    Returns
    -------
    tuple
        The centres, the hard pass of the data against them and the Lloyd iterations run.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(m, 0.1, (50, 1)) for m in (0.0, 1.0, 10.0)])
    >>> C, r, _ = split_merge(X, np.array([[0.5], [9.9], [10.1]]), None, 0.0, 100, rng)
    >>> sorted(C.ravel().round().tolist())    # a centre moved from 10 to the pair at 0 and 1
    [0.0, 1.0, 10.0]
    """
    k = len(C)
    if k < 2 or X.shape[0] <= k:
        return lloyd(X, C, w, tol, max_iter)
    xx = None if is_sparse(X) else row_norms(X)
    rows = min(X.shape[0], max(256, CHUNK_ELEMENTS // (k + moves_for(k))))
    with blas_threads_for(rows * X.shape[1] * (k + moves_for(k))):
        return _moves(X, C, w, tol, max_iter, rng, round_iter, xx)


def _moves(X: Any, C: np.ndarray, w: np.ndarray | None, tol: float, max_iter: int,
           rng: np.random.Generator, round_iter: int, xx: np.ndarray | None
           ) -> tuple[np.ndarray, BatchResult, int]:
    """:func:`split_merge`'s rounds, for ``k >= 2`` centres and more rows than centres."""
    k = len(C)
    C, r, used = lloyd(X, C, w, tol, max_iter, xx)

    def error(res: BatchResult) -> float:
        return float(res.nearest.sum() if w is None else res.nearest @ w)

    best, best_r, best_err = C, r, error(r)
    m = moves_for(k)
    while m > 0 and used < max_iter:
        grown, halves = _split(X, best, best_r, w, m, rng)
        if len(grown) == k:
            break  # nothing to split: every cluster is a single point
        # The last round is one swap: the halves of the split are kept (the least useful centre
        # elsewhere goes), and Lloyd's iterations run to convergence: on elongated clusters a
        # good swap shows its gain only after many iterations.
        cap = round_iter if m > 1 else max_iter
        grown, g, it = lloyd(X, grown, w, tol, min(cap, max_iter - used), xx)
        used += it
        merged = _merge(X, grown, g, w, k, halves if m == 1 else np.zeros_like(halves))
        trial, t, it = lloyd(X, merged, w, tol,
                             max(1, min(cap, max_iter - used)), xx)
        used += it
        e = error(t)
        if e < best_err * (1.0 - MIN_GAIN):
            best, best_r, best_err = trial, t, e
        else:
            m = m * 2 // 3  # (5, 3, 2, 1, 0: fewer, smaller rounds once moves stop paying)
    if used < max_iter:  # the best one, polished until no point changes its cluster
        best, best_r, it = lloyd(X, best, w, 0.0, max_iter - used, xx)
        used += it
    return best, best_r, used
