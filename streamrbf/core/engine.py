"""The engine: what a model does, as functions over the model-state record.

Every face calls these and nothing else to learn or score: :func:`fit` (a fixed data set),
:func:`initialise` (a stream's first batch), :func:`step` (one mini-batch step of a stream, which
also scores the batch as the model was), :func:`apply_statistics` (a step from summed shard
statistics), :func:`reheat`, and the scores :func:`nearest`, :func:`memberships`,
:func:`distances` and :func:`statistics`. They take a :class:`~streamrbf.core.state.ModelState`
and a :class:`~streamrbf.core.policy.Policy` and return a new record; the input record is never
changed, so a call that raises leaves a model exactly as it was.

Inputs are validated by the faces (:mod:`streamrbf.core.validation`): a batch here is a finite
2-D numpy array (CPU models) or torch tensor (models on an accelerator). Passes over many rows
run in chunks of about :data:`CHUNK_ELEMENTS` point-centre pairs, so their working memory is
bounded whatever the data's size: only the outputs scale with it.

CPU models use numpy and the compiled kernels and never import torch; models whose centres are
torch tensors (on an accelerator) use the torch programs of :mod:`streamrbf.core.accelerated`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from . import _kernels
from ._warn import warn_caller
from .assignment import AssignmentBatch
from .policy import AUTO, QUIET_SHIFT, Policy
from .refine import far_rows, split_merge
from .seeding import kmeans_plusplus, reseed_candidates
from .state import (
    REFITTING,
    RESEEDING,
    SEEDING,
    LazyGenerator,
    ModelState,
    counted,
    generator,
    host_array,
)
from .statistics import (
    CANCELLATION,
    CHUNK_ELEMENTS,
    BatchResult,
    SufficientStatistics,
    batch_result,
    blas_threads_for,
    gram,
    is_sparse,
    merged,
    overflow_error,
    row_chunks,
    row_norms,
    safe_gram,
    sparse_memberships,
    step_arrays,
)
from .temperature import cooled

__all__ = [
    "CHUNK_ELEMENTS",
    "FitResult",
    "apply_statistics",
    "assignments",
    "distances",
    "fit",
    "initialise",
    "memberships",
    "nearest",
    "refit",
    "reheat",
    "score",
    "statistics",
    "step",
]

class FitResult(NamedTuple):
    """What :func:`fit` and :func:`initialise` return: the model, and the data's labels, K-Means
    objective (inertia) and the iterations the kept run took.

    Examples
    --------
    >>> r = fit(np.array([[0.0], [0.2], [5.0], [5.2]]), Policy(n_clusters=2), seed=0)
    >>> r.state.n_models, len(r.labels), r.n_iter >= 1
    (1, 4, True)
    """

    state: ModelState
    labels: Any
    inertia: float
    n_iter: int


# ---------------------------------------------------------------------------------- helpers
def _numpy(a: Any) -> bool:
    return isinstance(a, np.ndarray)


def _rows(X: Any) -> int:
    """The number of rows of a numpy array, torch tensor or scipy sparse matrix."""
    return int(X.shape[0])


def sample_weights(sample_weight: Any, n: int) -> np.ndarray | None:
    """The rows' weights as the engine uses them: None for no weights or all 1 (the same
    numbers either way), else a float64 array ``(n,)``. A row of weight ``w`` counts as ``w``
    copies of it: in the masses, the sums, the distortion, the seedings and the re-seeding.

    Parameters
    ----------
    sample_weight
        None, or one finite weight >= 0 per row, not all 0 (a numpy array, list or tensor).
    n
        The number of rows.

    Returns
    -------
    numpy.ndarray or None
        The weights, or None.

    Raises
    ------
    ValueError
        For a shape other than ``(n,)``, a negative or non-finite weight, or all weights 0.

    Examples
    --------
    >>> sample_weights([1, 1, 1], 3) is None, sample_weights([2, 0, 1], 3).tolist()
    (True, [2.0, 0.0, 1.0])
    """
    if sample_weight is None:
        return None
    w = np.asarray(host_array(sample_weight) if hasattr(sample_weight, "detach")
                   else sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight has shape {w.shape}, expected ({n},)")
    if not np.isfinite(w).all():
        raise ValueError("sample_weight contains NaN or infinity")
    if (w < 0).any():
        raise ValueError("sample_weight must be >= 0")
    if n and not w.any():
        raise ValueError("sample_weight must not be all 0")
    return None if (w == 1.0).all() else w


def _like(X: Any, C: Any) -> Any:
    """``X`` in the dtype (and on the device) of the centres ``C``; a scipy sparse ``X`` as a
    CSR matrix in canonical form (sorted, no duplicates), copied only when it is not."""
    if _numpy(C):
        if is_sparse(X):
            X = X.tocsr()
            if X.dtype != C.dtype or not X.has_canonical_format:
                X = X.astype(C.dtype)
                X.sum_duplicates()
            return X
        return np.ascontiguousarray(X, dtype=C.dtype)
    return X.to(device=C.device, dtype=C.dtype)


def _take(X: Any, rows: Any) -> Any:
    """Rows ``rows`` (a numpy index array) of ``X``: numpy, sparse or a tensor."""
    return X[_index_like(rows, X)] if not (_numpy(X) or is_sparse(X)) else X[rows]


def _dense(X: Any) -> Any:
    """``X`` as a dense array (a scipy sparse matrix densified; others unchanged)."""
    return X.toarray() if is_sparse(X) else X


def _pass(X: Any, C: Any, temperature: float, mapping: str, *, with_sums: bool,
          keep: bool = False, weights: np.ndarray | None = None) -> BatchResult:
    """Statistics, labels and squared distances to the nearest centre of all rows of ``X``, in
    chunks (``keep``: one pass that also keeps the sparse memberships); ``weights``: the rows'
    (:func:`sample_weights`)."""
    n = _rows(X)

    def w(s: slice) -> np.ndarray | None:
        return None if weights is None else weights[s]

    if not _numpy(C):
        from .accelerated import batch_statistics

        return merged([batch_statistics(X[s], C, temperature, mapping, with_sums=with_sums,
                                         backend="torch", sample_weight=w(s))
                        for s in row_chunks(n, len(C))])
    if keep or n * len(C) <= CHUNK_ELEMENTS:
        return batch_result(X, C, temperature, mapping, with_sums=with_sums,
                            sample_weight=weights)
    labels = np.empty(n, np.int64)
    nearest_d = np.empty(n, np.float64)
    stats, support = None, 0
    for s in row_chunks(n, len(C)):
        r = batch_result(X[s], C, temperature, mapping, with_sums=with_sums,
                         sample_weight=w(s))
        labels[s], nearest_d[s] = r.labels, r.nearest
        stats = r.stats if stats is None else stats + r.stats
        support += r.support
    assert stats is not None  # at least one chunk
    return BatchResult(stats, labels, nearest_d, support)


def _sq_distances_to(sample: Any, C: np.ndarray) -> np.ndarray:
    """Squared distances ``(n, k)`` of a host sample (dense or sparse) to host centres (the
    norm expansion)."""
    S = sample.astype(np.float64, copy=False)
    C64 = C.astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        D = row_norms(S)[:, None] - 2.0 * gram(S, C64) + (C64 * C64).sum(1)[None, :]
    return np.maximum(D, 0.0)


# ---------------------------------------------------------------------------- initialisation
def initial_centres(X: Any, policy: Policy, rng: np.random.Generator,
                    weights: np.ndarray | None = None) -> tuple[np.ndarray, Any, Any]:
    """The initial centres ``(k, d)`` (float64, on the host) for the data ``X``: k-means++ on
    (a sample of ``policy.init_sample_size`` rows of) ``X``, weighted by ``weights``, or the
    policy's ``init`` array; and the sample the starting temperature is measured on, with its
    weights.

    Examples
    --------
    >>> X = np.array([[0.0], [0.1], [9.0], [9.1]])
    >>> C, _, _ = initial_centres(X, Policy(n_clusters=2), np.random.default_rng(0))
    >>> sorted(int(c[0] > 5) for c in C)
    [0, 1]
    """
    k = int(policy.n_clusters)
    n, d = X.shape
    if isinstance(policy.init, str):
        if n < policy.min_events():
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
        sample, w = X, weights
        size = policy.init_sample_size(n)
        if size < n:
            rows = np.sort(rng.choice(n, size, replace=False))
            sample, w = _take(X, rows), None if weights is None else weights[rows]
            if w is not None and not w.any():
                sample, w = X, weights  # every sampled row has weight 0: seed on all of them
        host = sample if is_sparse(sample) else host_array(sample)
        if policy.init == "random":
            return _random_rows(host, k, rng, w), sample, w
        return kmeans_plusplus(host, k, rng, w), sample, w
    init = np.asarray(policy.init, dtype=np.float64)
    if init.ndim != 2 or init.shape[0] != k:
        raise ValueError(f"The shape of the initial centers {init.shape} does not match the "
                         f"number of clusters {k}.")
    if init.shape[1] != d:
        raise ValueError(f"The shape of the initial centers {init.shape} does not match the "
                         f"number of features of the data {d}.")
    if not np.isfinite(init).all():
        raise ValueError("init array contains NaN or infinity.")
    head = slice(0, policy.init_sample_size(n))
    return init.copy(), X[head], None if weights is None else weights[head]


def _random_rows(X: Any, k: int, rng: np.random.Generator,
                 w: np.ndarray | None) -> np.ndarray:
    """``init="random"``: ``k`` distinct rows of ``X`` drawn in proportion to their weights."""
    p = None if w is None else w / w.sum()
    if p is not None and np.count_nonzero(p) < k:
        raise ValueError(f"init='random' needs n_clusters={k} rows of non-zero weight, got "
                         f"{np.count_nonzero(p)}")
    rows = rng.choice(X.shape[0], size=k, replace=False, p=p)
    return np.asarray(_dense(X[rows]), dtype=np.float64)


def _index_like(rows: np.ndarray, X: Any) -> Any:
    import torch

    return torch.from_numpy(rows).to(X.device)


def _centres_like(C: np.ndarray, X: Any) -> Any:
    if _numpy(X) or is_sparse(X):
        return C.astype(X.dtype)
    import torch

    return torch.from_numpy(C).to(device=X.device, dtype=X.dtype)


def _start_temperature(policy: Policy, sample: Any, C0: np.ndarray, w: np.ndarray | None) -> float:
    host = sample if is_sparse(sample) else host_array(sample)
    return policy.start_temperature(_sq_distances_to(host, C0),
                                    given=not isinstance(policy.init, str), weights=w)


def _zeros_masses(C: Any) -> Any:
    if _numpy(C):
        return np.zeros(len(C))
    import torch

    return torch.zeros(len(C), dtype=torch.float64, device=C.device)


def _tolerance(X: Any, policy: Policy, weights: np.ndarray | None = None) -> float:
    """``fit``'s stopping tolerance in squared distance: ``tol`` x the mean feature variance
    (weighted by ``weights``)."""
    n = _rows(X)
    if n < 2 or not policy.tol:
        return 0.0
    if is_sparse(X):
        # E[x^2] - E[x]^2 per feature through sparse products (no densified rows)
        w = np.ones(n) if weights is None else weights
        total = float(w.sum())
        X64 = X.astype(np.float64)
        mean = np.asarray(X64.T @ w).ravel() / total
        squares = np.asarray(X64.multiply(X64).T @ w).ravel() / total
        var = float(np.mean(np.maximum(squares - mean * mean, 0.0)))
    elif _numpy(X):
        total = float(n if weights is None else weights.sum())
        # Mean feature variance, two passes in chunks (float64, no copy of the whole data).
        with np.errstate(over="ignore", invalid="ignore"):  # huge values: refused later
            if weights is None:
                mean = X.sum(axis=0, dtype=np.float64) / n
            else:
                mean = sum((weights[s] @ X[s].astype(np.float64, copy=False)
                            for s in row_chunks(n, X.shape[1])), np.zeros(X.shape[1])) / total
            squares = np.zeros(X.shape[1])
            for s in row_chunks(n, X.shape[1]):
                dev = X[s] - mean
                if weights is None:
                    squares += np.einsum("ij,ij->j", dev, dev)
                else:
                    squares += weights[s] @ (dev * dev)
            var = float(np.mean(squares / total))
    else:
        import torch

        if weights is None:
            var = X.to(torch.float64).var(dim=0, unbiased=False).mean().item()
        else:
            wt = torch.as_tensor(weights, device=X.device)[:, None]
            X64 = X.to(torch.float64)
            mean = (wt * X64).sum(0) / wt.sum()
            var = ((wt * (X64 - mean) ** 2).sum(0) / wt.sum()).mean().item()
    return float(policy.tol) * var


def fit(X: Any, policy: Policy, seed: int, *, stream: bool = False,
        feature_names: tuple[str, ...] | None = None,
        sample_weight: Any = None,
        progress: Callable[[int, int, float, float, str | None], None] | None = None,
        trace: Callable[[int, int, float, np.ndarray], None] | None = None) -> FitResult:
    """Fit a model to the data ``X`` from scratch: the best of the policy's seedings, each
    annealed on ``X`` until its clustering is hard and stable.

    Each seeding (k-means++ from the model's random stream, or the ``init`` array) starts at the
    policy's starting temperature and takes full-batch soft-Lloyd steps (mini-batch epochs when
    the policy has a ``batch_size``) while the temperature anneals, until the memberships are hard
    (or the temperature at its floor) and the centres move less than the tolerance; the seeding
    with the lowest K-Means objective is kept. ``stream=True`` fits a stream's first batch (full
    batch, the stream's number of seedings).

    Parameters
    ----------
    X
        The data ``(n, d)``: a finite numpy array or scipy sparse (CSR) matrix, or a torch
        tensor for a model on its device.
    policy
        How the model learns.
    seed
        The model's seed.
    stream
        Whether ``X`` is a stream's first batch (:func:`initialise`).
    feature_names
        Recorded in the state.
    sample_weight
        The rows' weights (:func:`sample_weights`); None: all 1.
    progress
        Called after each seeding with its number, iterations, final temperature, K-Means
        objective and why it stopped (``"small centers change"``, ``"no point changed
        cluster"``, ``"lack of improvement in inertia"``, or None at ``max_iter``): a face's
        verbose report; None: nothing.
    trace
        Called after each annealing iteration with the seeding's number, the iteration, the
        temperature it ran at and the centres after it (a host copy): to draw the phase
        transitions; None: nothing.

    Returns
    -------
    FitResult
        The model (a bank of one), the nearest centre of each row of ``X``, the (weighted)
        K-Means objective of ``X`` and the iterations the kept seeding ran.

    Examples
    --------
    >>> X = np.array([[0.0, 0.0], [0.0, 0.2], [5.0, 5.0], [5.0, 5.2]])
    >>> r = fit(X, Policy(n_clusters=2), seed=0)
    >>> sorted(r.state.centers[0][:, 1].round(2).tolist()), round(r.inertia, 3)
    ([0.1, 5.1], 0.04)
    """
    n = _rows(X)
    w = sample_weights(sample_weight, n)
    if is_sparse(X):
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
        X = _like(X, np.empty((0, 0), dtype))
    k = int(policy.n_clusters)
    n_init = policy.n_init_for(stream, int(np.prod(X.shape)) * k)
    full = stream or policy.batch_size is None or policy.batch_size >= n
    tol = _tolerance(X, policy, w)
    best: tuple | None = None
    repeat, hits = policy.repeat_rtol(stream), 0
    for trial in range(n_init):
        rng = generator(seed, 0, SEEDING, trial)
        C0, sample, sample_w = initial_centres(X, policy, rng, w)
        t0 = _start_temperature(policy, sample, C0, sample_w)
        tmin = policy.floor_temperature(t0)
        # (the BLAS threads set once for the run's products, not at every pass)
        rows = n if full or policy.batch_size is None else min(n, int(policy.batch_size))
        with blas_threads_for(rows * X.shape[1] * k):
            run = _anneal(X, _centres_like(C0, X), t0, tmin, policy, rng, tol, full, w,
                          stream, None if trace is None else functools.partial(trace, trial))
        if policy.split_merge and full and not stream:
            run = _refined(X, run, policy, rng, tol, w)
        if progress is not None:
            progress(trial, run[6], run[2], run[3], run[7])
        if best is not None and repeat >= 0.0 and abs(run[3] - best[3]) <= repeat * best[3]:
            hits += 1  # the best clustering reached again (policy.REPEAT_RTOL)
            if hits >= 2:
                break
            continue
        if best is None or run[3] < best[3]:
            best, hits = (*run, t0, tmin), 1
    assert best is not None  # n_init >= 1
    C, masses, T, inertia, labels, steps, n_iter, _, t0, tmin = best
    state = ModelState.single(C, masses, temperature=T, initial_temperature=t0,
                              min_temperature=tmin, n_steps=steps, n_seen=n, seed=seed,
                              feature_names=feature_names)
    return FitResult(state, labels, inertia, n_iter)


def initialise(X: Any, policy: Policy, seed: int,
               feature_names: tuple[str, ...] | None = None,
               sample_weight: Any = None) -> FitResult:
    """Start a stream's model on its first batch ``X``: :func:`fit` with ``stream=True``.

    Full-batch annealing with the stream's number of seedings, whatever the policy's
    ``batch_size``.

    Parameters
    ----------
    X
        The first batch ``(n, d)``: a finite numpy array, or a torch tensor for a model on its
        device.
    policy
        How the model learns.
    seed
        The model's seed.
    feature_names
        Recorded in the state.
    sample_weight
        The rows' weights (:func:`sample_weights`); None: all 1.

    Returns
    -------
    FitResult
        The model (a bank of one), the nearest centre of each row of ``X``, the K-Means objective
        of ``X`` and the iterations the kept seeding ran.

    Examples
    --------
    >>> r = initialise(np.array([[0.0], [0.2], [5.0], [5.2]]), Policy(n_clusters=2), seed=0)
    >>> sorted(r.state.centers[0].ravel().round(1).tolist()), int(r.state.n_seen[0])
    ([0.1, 5.1], 4)
    """
    return fit(X, policy, seed, stream=True, feature_names=feature_names,
               sample_weight=sample_weight)


def _anneal(X, C, t0, tmin, policy, rng, tol, full, w, stream, trace=None):
    """``fit``'s loop for one seeding (rows weighted by ``w``); returns (centres, masses,
    temperature, inertia, labels, steps, iterations, why it stopped or None). A stream's first
    batch (``stream``) anneals at the policy's pace and stays where it got to, for the batches
    that follow; a fit reaches its floor within ``max_iter`` iterations."""
    n = _rows(X)
    T = t0
    masses = _zeros_masses(C)
    steps = n_iter = 0
    max_iter = int(policy.max_iter)
    one_hot = _kernels.MAPPINGS[policy.mapping].support == "one"
    factor = (policy.temperature_factor(n, full_batch=True) if stream
              else policy.fit_temperature_factor(t0, tmin))
    hard, previous = one_hot, None
    reason = None
    adaptive = full and not stream and policy.temperature_decay == AUTO
    quiet = 0
    B = n if full else int(policy.batch_size)
    order = np.empty(0, np.int64)
    watch = (None if full or policy.max_no_improvement is None
             else _Improvement(int(policy.max_no_improvement), B, n))
    for it in range(max_iter):
        n_iter += 1
        start = C
        if it == max_iter - 1 and not stream:
            T = cooled(policy.last_fit_temperature(T, tmin), 1.0, tmin)  # never 0
        stable = False
        T_step = T
        cold = hard or one_hot or T <= tmin  # as the iteration starts
        if full:
            C, hard, labels, moved = _full_batch_step(X, C, T, policy.mapping, w, cold)
            # Strict convergence (as Lloyd's): cold, no point changed its nearest centre, and
            # no empty centre was moved.
            stable = cold and not moved and previous is not None and _same(labels, previous)
            previous = labels
            if adaptive:
                # Quiet steps (the centres moved little on the scale of the temperature: the
                # soft fixed point at this temperature is reached) cool faster and faster;
                # a step that moves the centres (a phase transition) returns to the pace.
                quiet = 0 if _shift(C, start) > QUIET_SHIFT * len(C) * T else min(quiet + 1, 3)
            T = cooled(T, factor ** (1 << quiet), tmin)
            steps += 1
        else:
            hard = True
            # Epoch `it` ends after floor((it + 1) n / B) batches in all, as scikit-learn counts
            # them (n_iter = the epochs started = ceil(steps B / n)); batches of B rows run
            # through one random permutation of the rows after another.
            for _ in range(steps, (it + 1) * n // B if B < n else it + 1):
                rows, order = _next_rows(order, B, n, rng)
                batch = _take(X, rows)
                C, masses, r = _cpu_or_torch_step(batch, C, masses, T, policy, rng, stream=False,
                                                  weights=None if w is None else w[rows],
                                                  keep=watch is not None)
                T = cooled(T, policy.temperature_factor(len(rows)), tmin)
                steps += 1
                hard = hard and r.support == _positive(rows, None if w is None else w[rows])
                if watch is not None and watch.stalled(r, len(rows)):
                    if not (cold or T <= tmin):
                        # stalled while soft: quench; the next batch, cold, stops the run
                        # unless it improves the inertia
                        T, watch.stopped = tmin, False
                        continue
                    break
            if watch is not None and watch.stopped:
                reason = "lack of improvement in inertia"
                break
            if cold:
                # Centres that coincide split their points evenly at any temperature: once
                # cold, all but one of them move to the farthest points, as empty ones do.
                # (a move counts in the epoch's shift: the loop goes on)
                C, _ = _separate_duplicates(X, C, T, policy.mapping, w)
        shift = _shift(C, start)
        if trace is not None:
            trace(n_iter, T_step, host_array(C))
        # Converged once a step taken cold (or found hard) moved the centres by less than the
        # tolerance, or changed no point's nearest centre: a run that only now reached its
        # floor takes one more step, in which centres left empty are moved.
        if (cold or hard) and (shift <= tol or stable):
            reason = "no point changed cluster" if stable else "small centers change"
            break
        if not full and shift <= tol and not stream:
            # A mini-batch epoch that no longer moves the centres while soft: the soft fixed
            # point at this temperature is reached; quench to the floor, and the next (cold)
            # epoch confirms convergence as Lloyd's algorithm would.
            T = tmin
    # One last pass: every point's nearest centre, and (full batch) the masses.
    final = _pass(X, C, T, policy.mapping, with_sums=False, weights=w)
    if full:
        masses = final.stats.mass
    return C, masses, T, weighted_sum(final.nearest, w), final.labels, steps, n_iter, reason


def _refined(X: Any, run: tuple, policy: Policy, rng: np.random.Generator, tol: float,
             w: np.ndarray | None) -> tuple:
    """An annealed run (``_anneal``'s tuple) after split and merge moves at zero temperature
    (:func:`~streamrbf.core.refine.split_merge`) within the iterations ``max_iter`` leaves."""
    C, masses, T, inertia, labels, steps, n_iter, reason = run
    left = int(policy.max_iter) - n_iter
    if left < 1:
        return run
    if _numpy(X) or is_sparse(X):
        C2, r, used = split_merge(X, C, w, tol, left, rng)
        new_masses, new_labels = r.stats.mass, r.labels
    else:  # a tensor: the moves run on a host copy of the data (one transfer)
        C2, r, used = split_merge(host_array(X), host_array(C), w, tol, left, rng)
        C2 = _centres_like(C2, C)
        new_masses = _like_tensor(r.stats.mass, C)
        new_labels = _like_tensor(r.labels, C)
    # (never worse than the annealed run: Lloyd's steps and kept moves only lower the error;
    # the temperature stays where the annealing left it, cold)
    return (C2, new_masses, T, weighted_sum(r.nearest, w), new_labels,
            steps + used, n_iter + used, reason if used < left else None)


def _like_tensor(a: np.ndarray, C: Any) -> Any:
    import torch

    return torch.from_numpy(a).to(C.device)


def _next_rows(order: np.ndarray, B: int, n: int, rng: Any) -> tuple[np.ndarray, np.ndarray]:
    """The next ``B`` rows of a stream of random permutations of ``range(n)`` (``order``: what
    is left of the current one); returns ``(rows, what is left)``."""
    while len(order) < min(B, n):
        order = np.concatenate([order, rng.permutation(n)])
    return order[:B], order[B:]


class _Improvement:
    """scikit-learn's MiniBatchKMeans stopping rule on the smoothed batch inertia: each batch's
    inertia (squared distances to the nearest centre, before the step) per row, averaged
    exponentially over batches (weight ``2 B / (n + 1)``); ``stalled`` once ``patience``
    batches in a row did not lower its minimum (the caller quenches a soft model then, and
    stops a cold one; a quenched model stops at its first batch that does not improve)."""

    def __init__(self, patience: int, B: int, n: int) -> None:
        self.patience, self.alpha = patience, min(1.0, 2.0 * B / (n + 1))
        self.ewa: float | None = None
        self.best = math.inf
        self.waiting = 0
        self.stopped = False

    def stalled(self, r: Any, rows: int) -> bool:
        inertia = float(host_array(r.nearest).sum()) / max(rows, 1)
        self.ewa = inertia if self.ewa is None else (
            self.ewa * (1 - self.alpha) + inertia * self.alpha)
        if self.ewa < self.best:
            self.best, self.waiting = self.ewa, 0
        else:
            self.waiting += 1
        self.stopped = self.waiting >= self.patience
        return self.stopped


def weighted_sum(values: Any, weights: np.ndarray | None) -> float:
    """``sum_i w_i v_i`` of per-row values (numpy or torch), or their plain sum without weights.

    Parameters
    ----------
    values
        Per-row values ``(n,)``, e.g. the squared distances to the nearest centre.
    weights
        The rows' weights (:func:`sample_weights`), or None.

    Returns
    -------
    float
        The (weighted) sum.

    Examples
    --------
    >>> weighted_sum(np.array([1.0, 2.0]), None), weighted_sum(np.array([1.0, 2.0]),
    ...                                                        np.array([3.0, 0.0]))
    (3.0, 3.0)
    """
    if weights is None:
        return float(values.sum())
    return float(host_array(values).astype(np.float64) @ weights)


def _shift(C: Any, start: Any) -> float:
    if _numpy(C):
        return float(((C.astype(np.float64) - start.astype(np.float64)) ** 2).sum())
    import torch

    return float(((C.to(torch.float64) - start.to(torch.float64)) ** 2).sum())


def _positive(X: Any, w: np.ndarray | None) -> int:
    """Rows of weight > 0: a clustering is hard when each of those has one membership."""
    return _rows(X) if w is None else int(np.count_nonzero(w))


def _separate_duplicates(X: Any, C: Any, T: float, mapping: str,
                         w: np.ndarray | None) -> tuple[Any, bool]:
    """Move all but the first of each group of identical centres onto the points farthest from
    their nearest centre (of weight > 0, each onto a distinct one); returns the centres and
    whether any moved."""
    host = host_array(C)
    _, first = np.unique(host, axis=0, return_index=True)
    if len(first) == len(host):
        return C, False
    dup = np.setdiff1d(np.arange(len(host)), first)
    r = _pass(X, C, T, mapping, with_sums=False, weights=w)
    far = far_rows(host_array(r.nearest), w, dup.size)
    if not far.size:
        return C, False
    dup = dup[: far.size]
    if _numpy(C):
        C = C.copy()
        C[dup] = _dense(X[far])
    else:
        C = C.clone()
        C[_index_like(dup, C)] = X[_index_like(far, X)].to(C.dtype)
    return C, True


def _same(a: Any, b: Any) -> bool:
    return bool((a == b).all())


def _full_batch_step(X: Any, C: Any, T: float, mapping: str, w: np.ndarray | None = None,
                     cold: bool = False) -> tuple[Any, bool, Any, bool]:
    """One soft-Lloyd (EM) step on all of ``X`` (rows weighted by ``w``); empty centres go to
    the farthest points (of non-zero weight), each onto a distinct one. Once ``cold``, a centre
    is empty when it is no point's nearest (a centre that merged with another during annealing
    is moved, as K-Means moves an empty cluster). Returns the new centres, whether every
    membership was one-hot, each point's nearest centre before the step, and whether a centre
    was moved."""
    r = _pass(X, C, T, mapping, with_sums=True, weights=w)
    C_new, _ = step_arrays(C, _zeros_masses(C), r.stats.mass, r.stats.sums, 0.0)
    mass = host_array(r.stats.mass)
    if cold:
        labels = host_array(r.labels)
        owned = np.bincount(labels, weights=None if w is None else (w > 0).astype(float),
                            minlength=len(mass))
        empty = np.flatnonzero((mass <= 0) | (owned == 0))
    else:
        empty = np.flatnonzero(mass <= 0)
    if empty.size:
        far = far_rows(host_array(r.nearest), w, empty.size)  # away from every centre
        empty = empty[: far.size]
        if _numpy(C_new):
            C_new[empty] = _dense(X[far])
        else:
            C_new[_index_like(empty, C)] = X[_index_like(far, X)].to(C_new.dtype)
    return _centres_dtype(C_new, C), r.support == _positive(X, w), r.labels, bool(empty.size)


def _centres_dtype(C_new: Any, C: Any) -> Any:
    return C_new.astype(C.dtype) if _numpy(C) else C_new.to(C.dtype)


# -------------------------------------------------------------------------------- streaming
def _cpu_or_torch_step(X, C, masses, T, policy, rng, stream=True, weights=None, keep=False):
    """One mini-batch step on local arrays: statistics at ``T`` (rows weighted by ``weights``),
    the step with the policy's forgetting, re-seeding of starved centres. Returns (centres,
    masses, the batch's result)."""
    r = _pass(X, C, T, policy.mapping, with_sums=True, keep=stream or keep, weights=weights)
    C2, n2 = step_arrays(C, masses, r.stats.mass, r.stats.sums,
                         policy.forgetting(_rows(X), stream=stream))
    if policy.reassignment_ratio > 0:
        C2, n2 = _reseed(X, C2, n2, r.nearest, policy.reassignment_ratio, rng, weights)
    return _centres_dtype(C2, C), n2, r


def _reseed(X, C, masses, nearest, ratio, rng, weights=None):
    """Move starved centres onto poorly served rows of ``X`` (:func:`reseed_candidates`); the
    moved centres get the smallest mass of the others, so they are not moved again at once."""
    dead, rows = reseed_candidates(masses, ratio, nearest, rng, weights)
    if not dead.size:
        return C, masses
    alive = np.ones(len(C), dtype=bool)
    alive[dead] = False
    if _numpy(C):
        C, masses = C.copy(), masses.copy()
        C[dead] = _dense(X[rows])
        masses[dead] = masses[alive].min()  # the largest centre is never starved
        return C, masses
    dead_t, alive_t = _index_like(dead, C), _index_like(np.flatnonzero(alive), C)
    C, masses = C.clone(), masses.clone()
    C[dead_t] = X[_index_like(rows, X)].to(C.dtype)
    masses[dead_t] = masses[alive_t].min()
    return C, masses


def step(state: ModelState, X: Any, policy: Policy, *, model: int = 0, keep: bool = True,
         compile: bool | str = False,
         sample_weight: Any = None) -> tuple[ModelState, BatchResult | None]:
    """One mini-batch step of a stream's model on the batch ``X``, which is scored first.

    The batch's memberships at the current temperature give its sufficient statistics; the masses
    forget by the policy's factor and gain the batch's, each centre moves to its decayed
    running mean, a starved centre is re-seeded on a poorly served row (drawn from the model's
    random stream at this step), and the temperature anneals by the policy's factor.

    Parameters
    ----------
    state
        The models; model ``model`` steps.
    X
        The batch ``(n, d)``: finite, numpy (or scipy sparse) for CPU models, a torch tensor on
        the model's device otherwise (its finiteness is then checked in the step's one
        transfer).
    policy
        How the model learns.
    model
        Which model of the bank.
    keep
        Whether to return the batch's result (accelerators copy it out only then).
    compile
        Accelerators: run the step through ``torch.compile`` (``True`` or ``"reduce-overhead"``).
    sample_weight
        The rows' weights (:func:`sample_weights`): a row of weight ``w`` counts as ``w`` copies
        in the masses and sums (the forgetting and annealing count rows); None: all 1.

    Returns
    -------
    tuple
        The new record, and the batch's :class:`~streamrbf.core.statistics.BatchResult` from
        before the step (labels, squared distances to the nearest centre, statistics and, on the
        CPU, the sparse memberships), or None when ``keep`` is false on an accelerator.

    Examples
    --------
    >>> s = ModelState.single(np.array([[0.0], [10.0]]), np.ones(2), temperature=0.1)
    >>> s2, r = step(s, np.array([[1.0], [9.0], [11.0]]), Policy(n_clusters=2, half_life=None))
    >>> r.labels.tolist(), s2.centers[0].ravel().tolist(), s2.masses[0].tolist()
    ([0, 1, 1], [0.5, 10.0], [2.0, 3.0])
    >>> int(s2.n_steps[0]), int(s2.n_seen[0]), float(s.centers[0, 0, 0])  # s is unchanged
    (1, 3, 0.0)
    """
    w = sample_weights(sample_weight, _rows(X))
    if state.on_device and w is None:
        return _device_step(state, X, policy, model, keep, compile)
    C = state.centers[model]
    X = _like(X, C)
    if state.on_device:  # weighted rows: the step in separate operations
        from .validation import check_finite

        check_finite(X)
    rng = LazyGenerator(state.seed[model], state.n_steps[model], RESEEDING)
    C2, n2, r = _cpu_or_torch_step(X, C, state.masses[model], float(state.temperature[model]),
                                   policy, rng, weights=w)
    if not math.isfinite(r.stats.loss):
        raise overflow_error(X)
    return _stepped(state, model, C2, n2, _rows(X), policy), r


def _stepped(state: ModelState, model: int, C: Any, masses: Any, n: int,
             policy: Policy) -> ModelState:
    T = cooled(float(state.temperature[model]), policy.temperature_factor(n),
               float(state.min_temperature[model]))
    return state.replace_model(model, centers=C, masses=masses, temperature=T,
                               n_steps=counted(state.n_steps[model], 1),
                               n_seen=counted(state.n_seen[model], n))


def _device_step(state, X, policy, model, keep, compile):
    """:func:`step` on an accelerator: one fused pass (optionally compiled) and one transfer to
    the host, which also says whether the batch was finite."""
    import torch

    from .accelerated import compiled_fused_step, fused_step
    from .validation import check_finite

    C0, n0 = state.centers[model], state.masses[model]
    X = X.to(device=C0.device, dtype=C0.dtype)
    T = float(state.temperature[model])
    decay = policy.forgetting(len(X))
    ratio = float(policy.reassignment_ratio)
    out, graphed = None, False
    if compile:
        mode = "reduce-overhead" if compile == "reduce-overhead" else "default"
        scalars = torch.tensor([T, decay], dtype=torch.float64).to(X.device, non_blocking=True)
        try:
            out = compiled_fused_step(mode, tuple(C0.shape))(
                X, C0, n0, scalars[0], scalars[1], ratio, policy.mapping)
            graphed = mode == "reduce-overhead"
        except Exception as err:
            # e.g. dynamo's recompile limit after many batch sizes: the eager step below computes
            # the same numbers (and raises again if the problem is not the compiler).
            warn_caller(
                f"torch.compile could not run this step ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:200]}); using the eager step", RuntimeWarning)
    if out is None:
        out = fused_step(X, C0, n0, T, decay, ratio, policy.mapping)

    def own(t: Any) -> Any:
        # CUDA graphs reuse their output buffers on the next replay: keep our own copies.
        return t.clone() if graphed else t

    C, masses = own(out.centers), own(out.counts)
    finite, loss, support, _inertia, starving = out.flags.tolist()
    if not finite:
        check_finite(X)  # raises, naming the first bad entry; the model is untouched
    if not math.isfinite(loss):
        raise overflow_error(X)
    if starving and ratio > 0:
        rng = generator(state.seed[model], state.n_steps[model], RESEEDING)
        C, masses = _reseed(X, C, masses, out.nearest, ratio, rng)
    new = _stepped(state, model, C, masses, len(X), policy)
    if not keep:
        return new, BatchResult(SufficientStatistics(None, None, loss, len(X)), None, None,
                                int(support))
    labels, nearest, mass, sums = map(own, out[2:6])
    stats = SufficientStatistics(mass, sums, loss, len(X))
    return new, BatchResult(stats, labels, nearest.to(torch.float64), int(support))


def apply_statistics(state: ModelState, stats: SufficientStatistics, policy: Policy, *,
                     model: int = 0) -> ModelState:
    """One step from (summed) sufficient statistics: the step :func:`step` takes on the union of
    the shards they come from, without re-seeding (which needs the rows).

    Parameters
    ----------
    state
        The models; model ``model`` steps.
    stats
        The statistics (:func:`statistics`, summed over shards), numpy arrays or tensors.
    policy
        How the model learns: its forgetting for ``stats.n`` events, and the annealing.
    model
        Which model of the bank.

    Returns
    -------
    ModelState
        The new record: centres, masses, temperature and counters of model ``model`` stepped.

    Raises
    ------
    ValueError
        When the statistics' shape is not the centres', or they hold NaN or infinity.

    Examples
    --------
    >>> s = ModelState.single(np.array([[0.0], [10.0]]), np.ones(2), temperature=0.1)
    >>> p = Policy(n_clusters=2, half_life=None)
    >>> st = statistics(s, np.array([[1.0], [9.0]]), p) + statistics(s, np.array([[11.0]]), p)
    >>> apply_statistics(s, st, p).centers[0].ravel().tolist()
    [0.5, 10.0]
    """
    C = state.centers[model]
    if tuple(stats.sums.shape) != tuple(C.shape):
        raise ValueError(f"statistics have shape {tuple(stats.sums.shape)}, the model's centres "
                         f"{tuple(C.shape)}")
    host_mass, host_sums = host_array(stats.mass), host_array(stats.sums)
    if not (np.isfinite(host_mass).all() and np.isfinite(host_sums).all()):
        raise ValueError("statistics contain NaN or infinity.")
    mass: Any = host_mass
    sums: Any = host_sums
    if not _numpy(C):
        import torch

        mass = torch.as_tensor(host_mass).to(C.device)
        sums = torch.as_tensor(host_sums).to(C.device)
    C2, n2 = step_arrays(C, state.masses[model], mass, sums,
                         policy.forgetting(int(stats.n)))
    return _stepped(state, model, _centres_dtype(C2, C), n2, int(stats.n), policy)


def reheat(state: ModelState, factor: float | None = None, *, model: int = 0) -> ModelState:
    """Raise a model's temperature when its stream drifts: by ``factor`` (capped at the initial
    temperature), or back to the initial temperature.

    Parameters
    ----------
    state
        The models; model ``model`` is reheated.
    factor
        Multiplies the temperature, >= 1 (``ValueError`` otherwise); the result is capped at the
        initial temperature, or at the current one if that is higher. None: back to the initial
        temperature.
    model
        Which model of the bank.

    Returns
    -------
    ModelState
        The new record, only that model's temperature changed.

    Examples
    --------
    >>> s = ModelState.single(np.eye(2), np.ones(2), temperature=0.1, initial_temperature=1.0)
    >>> float(reheat(s, 2.0).temperature[0]), float(reheat(s).temperature[0])
    (0.2, 1.0)
    """
    T, t0 = float(state.temperature[model]), float(state.initial_temperature[model])
    if factor is None:
        return state.replace_model(model, temperature=t0)
    if not factor >= 1:
        raise ValueError(f"reheat factor must be >= 1, got {factor!r}")
    return state.replace_model(model, temperature=min(T * factor, max(t0, T)))


def refit(state: ModelState, X: Any, policy: Policy, gain: float, *,
          model: int = 0, sample_weight: Any = None) -> tuple[ModelState, bool]:
    """After a drift alarm (or to re-check a start made on few events): a model initialised
    afresh on the recent rows ``X`` replaces the current one if its K-Means cost on them is below
    ``gain`` times the current model's; a false alarm (or a burst of one cluster) changes
    nothing. The fresh model continues the stream's counters and seed.

    Parameters
    ----------
    state
        The models; model ``model`` is checked.
    X
        The recent rows (already learnt from, or about to be).
    policy
        How the model learns.
    gain
        The share of the current cost the fresh model must beat (the policy's
        ``DRIFT_RESTART_GAIN`` after an alarm).
    model
        Which model of the bank.
    sample_weight
        The rows' weights (:func:`sample_weights`): in the fresh start and in both costs.

    Returns
    -------
    tuple
        The record (changed or not) and whether the model was replaced.

    Examples
    --------
    >>> s = ModelState.single(np.array([[0.0], [1.0]]), np.ones(2), temperature=0.1)
    >>> X = np.array([[10.0], [10.2], [20.0], [20.2]] * 3)   # the clusters moved
    >>> s2, replaced = refit(s, X, Policy(n_clusters=2), gain=0.5)
    >>> replaced, sorted(s2.centers[0].ravel().round(1).tolist())
    (True, [10.1, 20.1])
    """
    n_steps = int(state.n_steps[model])
    seed = int(generator(state.seed[model], n_steps, REFITTING).integers(2**63))
    w = sample_weights(sample_weight, _rows(X))
    fresh = initialise(X, policy, seed, sample_weight=w).state
    _, d2 = nearest(state, X, model=model)
    if not _fresh_is_better(fresh, X, d2, gain, w):
        return state, False
    # Each fresh centre takes the index of the current centre it is matched with (the least total
    # squared distance), so a cluster that moved keeps its number for whatever reads the labels.
    order = _matching(host_array(fresh.centers[0]), host_array(state.centers[model]))
    C, masses = fresh.centers[0][order], fresh.masses[0][order]
    C = C.astype(state.centers.dtype) if _numpy(C) else C.to(state.centers.dtype)
    return state.replace_model(
        model, centers=C, masses=masses, temperature=fresh.temperature[0],
        initial_temperature=fresh.initial_temperature[0],
        min_temperature=fresh.min_temperature[0], n_steps=counted(n_steps, fresh.n_steps[0]),
    ), True


def _matching(fresh: np.ndarray, current: np.ndarray) -> np.ndarray:
    """``order`` such that ``fresh[order][j]`` is the fresh centre matched to ``current[j]``: the
    one-to-one matching with the least total squared distance (scipy's assignment solver)."""
    from scipy.optimize import linear_sum_assignment

    D = ((fresh[:, None, :].astype(np.float64) - current[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(D)
    order = np.empty(len(current), np.int64)
    order[cols] = rows
    return order


def _fresh_is_better(fresh: ModelState, X: Any, current_sq_distances: Any, gain: float,
                     w: np.ndarray | None = None) -> bool:
    """Whether ``fresh`` explains ``X`` with a (weighted) K-Means cost below ``gain`` times the
    cost the current model has (its squared distances to the nearest centre)."""
    _, d2 = nearest(fresh, X)
    return weighted_sum(d2, w) < gain * weighted_sum(current_sq_distances, w)


# ---------------------------------------------------------------------------------- scores
def nearest(state: ModelState, X: Any, *, model: int = 0) -> tuple[Any, Any]:
    """The nearest centre of each row of ``X`` and the squared distance to it, in chunks.

    Parameters
    ----------
    state
        The models.
    X
        The rows ``(n, d)``, converted to the centres' dtype (and device).
    model
        Which model of the bank.

    Returns
    -------
    tuple
        ``(labels, sq_distances)``: int64 and float64 arrays of shape ``(n,)``, numpy for CPU
        models and torch tensors on accelerators.

    Examples
    --------
    >>> s = ModelState.single(np.array([[0.0], [10.0]]), np.ones(2), temperature=0.1)
    >>> labels, d2 = nearest(s, np.array([[1.0], [9.0]]))
    >>> labels.tolist(), d2.tolist()
    ([0, 1], [1.0, 1.0])
    """
    C = state.centers[model]
    r = _pass(_like(X, C), C, float(state.temperature[model]), "hard", with_sums=False)
    return r.labels, r.nearest


def score(state: ModelState, X: Any, policy: Policy, *, model: int = 0,
          sample_weight: Any = None) -> BatchResult:
    """Score the batch ``X`` with a model as it is, in one pass: each row's nearest centre and
    squared distance to it, the batch's statistics (without the weighted sums) and, for CPU
    models, the sparse memberships. What :func:`step` returns, without the step.

    Parameters
    ----------
    state
        The models.
    X
        The batch ``(n, d)``, converted to the centres' dtype (and device).
    policy
        How the model maps distances to memberships.
    model
        Which model of the bank.
    sample_weight
        The rows' weights for the statistics (:func:`sample_weights`); None: all 1.

    Returns
    -------
    BatchResult
        The statistics (weighted sums left at zero), labels, squared distances to the nearest
        centre, number of non-zero memberships and, on the CPU, the memberships themselves.

    Examples
    --------
    >>> s = ModelState.single(np.array([[0.0], [1.0]]), np.ones(2), temperature=1.0)
    >>> r = score(s, np.array([[0.1], [0.5]]), Policy(n_clusters=2))
    >>> r.labels.tolist(), r.memberships.length.tolist()
    ([0, 0], [2, 2])
    """
    C = state.centers[model]
    return _pass(_like(X, C), C, float(state.temperature[model]), policy.mapping,
                 with_sums=False, keep=True, weights=sample_weights(sample_weight, _rows(X)))


def assignments(state: ModelState, X: Any, policy: Policy, *, model: int = 0,
                event_ids: list | None = None) -> AssignmentBatch:
    """The assignments of the rows of ``X`` under a model, as one columnar
    :class:`~streamrbf.core.assignment.AssignmentBatch` on the host (for a model on an
    accelerator, only the non-zero memberships cross to the host).

    Parameters
    ----------
    state
        The models.
    X
        The rows ``(n, d)``, converted to the centres' dtype (and device).
    policy
        How the model maps distances to memberships.
    model
        Which model of the bank.
    event_ids
        The rows' event ids, carried into the batch, or None.

    Returns
    -------
    AssignmentBatch
        Each row's nearest centre, Euclidean distance to it and non-zero memberships, at the
        model's temperature.

    Raises
    ------
    ValueError
        When a squared distance overflows the centres' dtype.

    Examples
    --------
    >>> s = ModelState.single(np.array([[0.0], [1.0], [9.0]]), np.ones(3), temperature=0.5)
    >>> b = assignments(s, np.array([[0.5], [9.0]]), Policy(n_clusters=3))
    >>> [(a.cluster, a.memberships) for a in b]
    [(0, {0: 0.5, 1: 0.5}), (2, {2: 1.0})]
    """
    C = state.centers[model]
    T = float(state.temperature[model])
    X = _like(X, C)
    if _numpy(C):
        m = sparse_memberships(X, C, T, policy.mapping)
        return AssignmentBatch.from_memberships(m, T, event_ids)
    import torch

    from .accelerated import sq_distances
    from .mappings import responsibilities

    D = sq_distances(X, C).to(torch.float64)
    nearest_d, labels = D.min(dim=1)
    if not bool(torch.isfinite(nearest_d).all()):
        raise overflow_error(X)
    P = responsibilities(D, T, policy.mapping)
    rows, cols = P.nonzero(as_tuple=True)  # row-major: grouped by event
    offsets = torch.zeros(len(P) + 1, dtype=torch.int64, device=P.device)
    offsets[1:] = torch.bincount(rows, minlength=len(P)).cumsum(0)
    clusters, distances_, offsets_, member_clusters, member_values = (
        t.cpu().numpy() for t in (labels, nearest_d.sqrt(), offsets, cols, P[rows, cols]))
    return AssignmentBatch(clusters, distances_, offsets_, member_clusters, member_values, T,
                           event_ids)


def statistics(state: ModelState, X: Any, policy: Policy, *,
               model: int = 0, sample_weight: Any = None) -> SufficientStatistics:
    """The sufficient statistics of ``X`` against a model at its temperature, in chunks: sum
    those of several shards and :func:`apply_statistics` takes the step of their union.

    Parameters
    ----------
    state
        The models.
    X
        The rows ``(n, d)``, converted to the centres' dtype (and device).
    policy
        How the model maps distances to memberships.
    model
        Which model of the bank.
    sample_weight
        The rows' weights (:func:`sample_weights`); None: all 1.

    Returns
    -------
    SufficientStatistics
        Masses, weighted sums, weighted distortion and the number of rows, in float64 (numpy
        arrays for CPU models, tensors on the model's device otherwise).

    Examples
    --------
    >>> s = ModelState.single(np.array([[0.0], [10.0]]), np.ones(2), temperature=0.1)
    >>> statistics(s, np.array([[1.0], [9.0], [11.0]]), Policy(n_clusters=2)).mass.tolist()
    [1.0, 2.0]
    """
    C = state.centers[model]
    return _pass(_like(X, C), C, float(state.temperature[model]), policy.mapping,
                 with_sums=True, weights=sample_weights(sample_weight, _rows(X))).stats


def memberships(state: ModelState, X: Any, policy: Policy, *, model: int = 0) -> Any:
    """Dense memberships ``(n, k)`` of the rows of ``X`` at the model's temperature (rows sum to
    1; exact zeros under entmax-1.5), in the centres' dtype; computed in chunks, so the working
    memory beyond the output is bounded.

    Parameters
    ----------
    state
        The models.
    X
        The rows ``(n, d)``, converted to the centres' dtype (and device).
    policy
        How the model maps distances to memberships.
    model
        Which model of the bank.

    Returns
    -------
    ndarray or torch.Tensor of shape (n, k)
        The memberships: numpy for CPU models, a tensor on the model's device otherwise.

    Examples
    --------
    >>> s = ModelState.single(np.array([[0.0], [1.0], [9.0]]), np.ones(3), temperature=1.0)
    >>> memberships(s, np.array([[0.5], [9.0]]), Policy(n_clusters=3)).tolist()
    [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    """
    C = state.centers[model]
    X = _like(X, C)
    T = float(state.temperature[model])
    k = len(C)
    mapping = policy.mapping
    if not _numpy(C):
        return _device_memberships(X, C, T, mapping)
    out = np.zeros((_rows(X), k), dtype=X.dtype)
    for s in row_chunks(_rows(X), k):
        m = sparse_memberships(X[s], C, T, mapping)
        out[s] = _kernels.densify(m.vals, m.idx, m.length, k)
    return out


def _device_memberships(X, C, T, mapping):
    import torch

    from .accelerated import sq_distances
    from .mappings import responsibilities

    out = torch.empty(len(X), len(C), dtype=X.dtype, device=X.device)
    for s in row_chunks(len(X), len(C)):
        D = sq_distances(X[s], C).to(torch.float64)
        if not bool(torch.isfinite(D).all()):
            raise overflow_error(X[s])
        out[s] = responsibilities(D, T, mapping).to(X.dtype)
    return out


def distances(state: ModelState, X: Any, *, model: int = 0) -> Any:
    """Euclidean distances ``(n, k)`` of the rows of ``X`` to every centre, in the centres'
    dtype, computed in chunks.

    Parameters
    ----------
    state
        The models.
    X
        The rows ``(n, d)``, converted to the centres' dtype (and device).
    model
        Which model of the bank.

    Returns
    -------
    ndarray or torch.Tensor of shape (n, k)
        The distances: numpy for CPU models, a tensor on the model's device otherwise.

    Examples
    --------
    >>> s = ModelState.single(np.array([[0.0, 0.0], [3.0, 0.0]]), np.ones(2), temperature=1.0)
    >>> distances(s, np.array([[3.0, 4.0]])).tolist()
    [[5.0, 4.0]]
    """
    C = state.centers[model]
    X = _like(X, C)
    if not _numpy(C):
        import torch

        from .accelerated import sq_distances

        dev = torch.empty(len(X), len(C), dtype=X.dtype, device=X.device)
        for s in row_chunks(len(X), len(C)):
            dev[s] = sq_distances(X[s], C).sqrt()
        return dev
    n = _rows(X)
    out = np.empty((n, len(C)), dtype=X.dtype)
    cc = row_norms(C)
    for s in row_chunks(n, len(C)):
        Xs = X[s]
        xx = row_norms(Xs)
        # squared norms and the distances in float64 (float32 ones overflow near 1e19)
        with np.errstate(over="ignore", invalid="ignore"):
            G = safe_gram(Xs, C)
            D = xx[:, None] - 2.0 * G + cc[None, :]
        if not np.isfinite(D).all():
            raise overflow_error(Xs)
        # Where the expansion cancelled most digits (a point on or near a centre), the
        # distance is summed from differences: exact zeros stay exact.
        ratio = CANCELLATION[G.dtype.type]
        if is_sparse(Xs):
            _kernels.exact_small_sq_distances_csr(Xs.data, Xs.indices, Xs.indptr, C, D, xx, cc,
                                                  ratio)
        else:
            _kernels.exact_small_sq_distances(Xs, C, D, xx, cc, ratio)
        np.sqrt(np.maximum(D, 0.0, out=D), out=D)
        out[s] = D
    return out

