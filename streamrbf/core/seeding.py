"""Where centres start, and where dead centres restart.

``kmeans_plusplus`` is greedy k-means++ (Arthur & Vassilvitskii, with ``2 + log k`` local trials as
in scikit-learn): each new centre is drawn with probability proportional to the squared distance to
the nearest centre so far, keeping the best of several draws.

The re-seeding rule (:func:`reseed_candidates`): a centre whose decayed mass has fallen below
``ratio`` times the largest mass serves (almost) no one; it is moved onto a point of the current
batch drawn with probability proportional to that point's squared distance to its nearest
centre, i.e. a poorly served point. Every draw comes from the model's one random generator.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ._kernels import kmeans_plusplus_indices
from .state import host_array

if TYPE_CHECKING:
    import torch

__all__ = ["kmeans_plusplus", "reseed_candidates"]

_NO_WEIGHTS = np.empty(0, np.float64)
_NO_WEIGHTS.flags.writeable = False


def kmeans_plusplus(X: np.ndarray, n_clusters: int, rng: np.random.Generator,
                    sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Greedy k-means++ seeding; returns ``(n_clusters, d)`` rows of ``X`` (float64 copies).

    The first centre is a uniformly drawn row; each next one is the best (lowest total squared
    distance to the nearest centre) of ``2 + log k`` rows drawn in proportion to their squared
    distance to the centres so far. Duplicated points are handled: when every point already sits
    on a centre the draws are uniform. With weights, every draw and total is weighted (the
    first row is drawn in proportion to its weight): a row of weight ``w`` counts as ``w``
    copies of it, and a row of weight 0 is never drawn.

    Parameters
    ----------
    X
        Points ``(n, d)``, with ``n >= n_clusters``: a numpy array or a scipy sparse matrix
        (rows are densified one candidate at a time).
    n_clusters
        Number of centres ``k``.
    rng
        The random generator every draw comes from.
    sample_weight
        Each row's weight ``(n,)``, finite, >= 0, not all 0; None: all 1.

    Returns
    -------
    numpy.ndarray
        The centres, ``(n_clusters, d)`` float64 copies of rows of ``X``.

    Examples
    --------
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.1, 10.0]])
    >>> C = kmeans_plusplus(X, 2, np.random.default_rng(0))
    >>> sorted(int(c[0] > 5) for c in C)
    [0, 1]
    >>> all(any((c == x).all() for x in X) for c in C)  # centres are data points
    True
    """
    n = X.shape[0]
    if n < n_clusters:
        raise ValueError(f"n_samples={n} should be >= n_clusters={n_clusters}")
    trials = 2 + int(math.log(n_clusters))
    w = _NO_WEIGHTS if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w.size:
        # The weighted draws invert the cumulative weights with one uniform each: a row of
        # weight w is drawn as often as one of w copies of it would be.
        cum = np.cumsum(w)
        first = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), n - 1)
    else:
        first = int(rng.integers(n))
    # Every draw up front (the same stream as one ``rng.random(trials)`` per centre), then the
    # greedy loop compiled: ~20x faster than numpy calls per centre at the sizes streams start
    # with (a first batch of a few hundred rows), where seeding is most of a key's start-up.
    uniforms = rng.random((n_clusters - 1, trials))
    if not isinstance(X, np.ndarray):  # scipy sparse
        idx = _sparse_kmeans_plusplus(X.tocsr(), first, uniforms, w)
        return X[idx].toarray().astype(np.float64)
    X = np.ascontiguousarray(X, dtype=np.float64)
    # Scaled by a power of two (exact) so that the largest value is about 1: squared distances
    # of data near 1e160 (or 1e-162) would overflow (underflow) and make the draws uniform.
    top = float(np.abs(X).max()) if X.size else 0.0
    # (ldexp: subnormal data needs factors beyond the largest float, 2 ** 1074 for 5e-324.)
    Xs = np.ldexp(X, -math.ceil(math.log2(top))) if 0.0 < top < math.inf else X
    idx = kmeans_plusplus_indices(Xs, first, uniforms, np.empty(n_clusters, np.int64), w)
    return X[idx]


def _sparse_kmeans_plusplus(X: Any, first: int, uniforms: np.ndarray,
                            w: np.ndarray) -> np.ndarray:
    """:func:`~streamrbf.core._kernels.kmeans_plusplus_indices` for a CSR matrix: the same draws
    from the same uniforms, each candidate's squared distances to all rows through one sparse
    product (the norm expansion, clipped at 0)."""
    n = X.shape[0]
    n_clusters = uniforms.shape[0] + 1
    X = X.astype(np.float64)
    norms = np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel()
    weights = w if w.size else np.ones(n)

    def sq_distances(rows: np.ndarray) -> np.ndarray:
        G = (X @ X[rows].T).toarray() if len(rows) else np.zeros((n, 0))
        return np.maximum(norms[:, None] - 2.0 * G + norms[rows][None, :], 0.0).T

    out = np.empty(n_clusters, np.int64)
    out[0] = first
    closest = sq_distances(np.array([first]))[0]
    wsum = np.cumsum(weights)
    for c in range(1, n_clusters):
        cum = np.cumsum(closest * weights)
        total = cum[-1]
        u = uniforms[c - 1]
        if total > 0.0 and math.isfinite(total):
            cand = np.minimum(np.searchsorted(cum, u * total), n - 1)
        elif w.size:
            cand = np.minimum(np.searchsorted(wsum, u * wsum[-1], side="right"), n - 1)
        else:
            cand = np.minimum((u * n).astype(np.int64), n - 1)
        pot = np.minimum(closest[None, :], sq_distances(cand))
        best = int(np.argmin(pot @ weights))
        out[c] = cand[best]
        closest = pot[best]
    return out


_NONE = np.empty(0, np.int64)
_NONE.flags.writeable = False


def reseed_candidates(
    counts: torch.Tensor | np.ndarray,
    ratio: float,
    nearest: torch.Tensor | np.ndarray,
    rng: np.random.Generator,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Which centres to re-seed and onto which batch rows.

    A centre is starved when its decayed mass is below ``ratio`` times the largest mass; each
    starved centre gets a distinct batch row drawn with probability proportional to the row's
    (weighted) squared distance to its nearest centre (rows already on a centre, or of weight 0,
    are never drawn). When there are fewer such rows than starved centres, the first starved
    centres get them.

    Parameters
    ----------
    counts
        Decayed masses ``(k,)`` (numpy array or torch tensor, on any device).
    ratio
        Starvation threshold as a share of the largest mass.
    nearest
        Squared distance ``(n,)`` of each batch point to its nearest centre.
    rng
        The random generator the rows are drawn from.
    sample_weight
        The rows' weights ``(n,)``; None: all 1.

    Returns
    -------
    tuple of numpy.ndarray
        ``(centre indices, row indices)`` of equal length; both empty when no centre is starved.

    Examples
    --------
    >>> import torch
    >>> dead, rows = reseed_candidates(torch.tensor([10.0, 0.0]), 0.01,
    ...                                torch.tensor([0.0, 5.0]), np.random.default_rng(0))
    >>> dead.tolist(), rows.tolist()
    ([1], [1])
    >>> dead, rows = reseed_candidates(np.array([10.0, 5.0]), 0.01, np.array([0.0, 5.0]),
    ...                                np.random.default_rng(0))
    >>> dead.size, rows.size  # no centre is starved
    (0, 0)
    """
    c = host_array(counts)
    top = c.max()
    starved = c < ratio * top
    if not top > 0 or not starved.any():  # the common case: a cheap exit on every step
        return _NONE, _NONE
    dead = np.flatnonzero(starved)
    w = host_array(nearest).astype(np.float64)
    if sample_weight is not None:
        w = w * sample_weight
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    n_rows = w.shape[0]
    take = min(dead.size, int((w > 0).sum()))
    if take == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rows = rng.choice(n_rows, size=take, replace=False, p=w / w.sum())
    return dead[:take], rows
