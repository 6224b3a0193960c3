"""Many streams' models stepped in one call: the engine's step over a bank of models.

A :class:`~streamrbf.core.state.ModelState` holds ``B`` models (centres ``(B, k, d)``). A
mixed batch tags each row with the model it belongs to; :func:`step_bank` scores every row
against its own model and steps every model present on its own rows, with its own temperature,
step count, forgetting and re-seeding: the result equals :func:`~streamrbf.core.engine.step`
of each model alone on its rows (tested to 1e-6 in float64). The pass over the rows is one
compiled segment loop (:func:`~streamrbf.core._kernels.bank_statistics`); the step (the
formula of :func:`~streamrbf.core.statistics.step_arrays`, over the bank), the temperatures and
the counters are array operations. Python runs per model only
for the rare model that has a starved centre to re-seed (drawn from that model's own random
stream, as its lone step would).

A bank whose centres are torch tensors (on an accelerator) steps through one batched torch
program instead (:func:`_step_bank_torch`: a gather of each row's centres, the mapping of every
row at its model's temperature, ``index_add`` into the models' masses and sums, the step on the
device) with one transfer to the host per call (each row's label and distance, and which models
have a starved centre); the same tests run it on CPU tensors.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _kernels, _start_kernels
from .engine import _reseed, sample_weights
from .policy import AUTO, AUTO_MIN_RATIO, AUTO_TEMPERATURE_SCALE, Policy
from .state import COUNTER_MAX, RESEEDING, LazyGenerator, ModelState
from .statistics import overflow_error, step_arrays
from .temperature import _TINY, logit_divisor

__all__ = ["BankResult", "initialise_bank", "step_bank"]


class BankResult(NamedTuple):
    """What :func:`step_bank` reports of the batch, scored before the step: each row's nearest
    centre (of its own model) and squared distance to it, and the rows each model took.

    Examples
    --------
    >>> r = BankResult(np.array([0]), np.array([0.5]), np.array([1, 0]))
    >>> r.rows_per_model.tolist()
    [1, 0]
    """

    labels: np.ndarray
    nearest: np.ndarray
    rows_per_model: np.ndarray


def _per_count(counts: np.ndarray, rule: Any) -> np.ndarray:
    """``rule(n)`` for each entry of ``counts``, computed once per distinct count."""
    values, inverse = np.unique(counts, return_inverse=True)
    return np.array([rule(int(v)) for v in values], dtype=np.float64)[inverse]


def step_bank(state: ModelState, X: Any, models: Any, policy: Policy, *,
              sample_weight: Any = None, in_place: bool = False) -> tuple[ModelState, BankResult]:
    """One mini-batch step of every model of ``state`` that has rows in the mixed batch ``X``.

    Row ``i`` of ``X`` belongs to model ``models[i]``; each model is scored and stepped on its
    own rows exactly as :func:`~streamrbf.core.engine.step` would step it alone on them (its
    temperature, forgetting by its row count, re-seeding from its random stream at its step,
    annealing, counters). Models without rows are unchanged. The input record is never changed.

    Parameters
    ----------
    state
        The bank (numpy centres ``(B, k, d)``).
    X
        The rows ``(n, d)``: a finite numpy array (validated by the face).
    models
        Each row's model index ``(n,)``, integers in ``[0, B)``.
    policy
        How the models learn (one policy for the bank).
    sample_weight
        The rows' weights, or None (all 1).
    in_place
        Write the stepped models into ``state``'s own arrays (numpy banks) and return it, instead
        of a new record: a bank of a million streams is not copied for each batch.

    Returns
    -------
    tuple
        The new record and the batch's :class:`BankResult` (scored before the step).

    Raises
    ------
    ValueError
        For model indices outside the bank, a batch whose shape does not fit it, centres on an
        accelerator, or squared distances that overflow.

    Examples
    --------
    >>> from streamrbf.core.engine import step
    >>> C = np.array([[[0.0], [10.0]], [[0.0], [4.0]]])
    >>> bank = ModelState(C, np.ones((2, 2)), np.array([0.1, 0.1]), np.array([1.0, 1.0]),
    ...                   np.array([0.01, 0.01]), np.zeros(2, np.int64), np.zeros(2, np.int64),
    ...                   np.array([3, 4]))
    >>> X = np.array([[1.0], [9.0], [3.0]])
    >>> new, r = step_bank(bank, X, np.array([0, 0, 1]), Policy(n_clusters=2))
    >>> alone, _ = step(bank, X[:2], Policy(n_clusters=2), model=0)
    >>> bool(np.allclose(new.centers[0], alone.centers[0])), r.rows_per_model.tolist()
    (True, [2, 1])
    """
    B, k, d = state.centers.shape
    if not state.on_device:
        X = np.ascontiguousarray(X)
    if X.ndim != 2 or X.shape[1] != d:
        raise ValueError(f"X has shape {tuple(X.shape)}; the bank's models have {d} features")
    models = np.asarray(models)
    if models.shape != (X.shape[0],) or not np.issubdtype(models.dtype, np.integer):
        raise ValueError(f"models must be one integer index per row of X ({X.shape[0]}), got "
                         f"{models.dtype} {models.shape}")
    models = models.astype(np.int64)
    if models.size and (models.min() < 0 or models.max() >= B):
        raise ValueError(f"model indices must be in [0, {B}), got {models.min()}..{models.max()}")
    w = sample_weights(sample_weight, X.shape[0])
    if state.on_device:
        return _step_bank_torch(state, X, models, policy, w)
    C = state.centers
    X = X.astype(C.dtype, copy=False)
    counts = np.bincount(models, minlength=B)
    # only the models with rows: their statistics in compact arrays (a bank of a million
    # streams is not swept for a batch that touches a few thousand)
    stepped, local = np.unique(models, return_inverse=True)
    S = stepped.size
    mass = np.zeros((S, k), np.float64)
    sums = np.zeros((S, k, d), np.float64)
    support = np.zeros(S, np.int64)
    labels = np.empty(X.shape[0], np.int64)
    nearest = np.empty(X.shape[0], np.float64)
    divisors = np.asarray(logit_divisor(state.temperature[stepped].astype(np.float64)),
                          np.float64)
    C_s = C[stepped]
    _kernels.bank_statistics(X, local.astype(np.int64), C_s, divisors,
                             _kernels.check_mapping(policy.mapping),
                             np.empty(0) if w is None else w, mass, sums, labels, nearest,
                             support)
    if not np.isfinite(nearest).all():
        raise overflow_error(X)
    n_b = counts[stepped]
    # the step of engine.step (statistics.step_arrays), for every stepped model at once
    forget = _per_count(n_b, lambda n: policy.forgetting(n))
    new_c, new_m = step_arrays(C_s, state.masses[stepped], mass, sums, forget[:, None])
    if policy.reassignment_ratio > 0:
        ratio = float(policy.reassignment_ratio)
        top = new_m.max(axis=1)
        starved = ((new_m < ratio * top[:, None]) & (top[:, None] > 0)).any(axis=1)
        for s in np.flatnonzero(starved):  # rare: Python per model only here
            b = int(stepped[s])
            rows = np.flatnonzero(models == b)
            rng = LazyGenerator(state.seed[b], state.n_steps[b], RESEEDING)
            new_c[s], new_m[s] = _reseed(X[rows], new_c[s], new_m[s], nearest[rows], ratio, rng,
                                         None if w is None else w[rows])
    centers, masses = (C, state.masses) if in_place else (C.copy(), state.masses.copy())
    centers[stepped] = new_c.astype(C.dtype)
    masses[stepped] = new_m.astype(masses.dtype)
    new = _counted_state(state, centers, masses, stepped, n_b, policy, in_place)
    return new, BankResult(labels, nearest, counts)


def _counted_state(state: ModelState, centers: Any, masses: Any, stepped: np.ndarray,
                   n_b: np.ndarray, policy: Policy, in_place: bool = False) -> ModelState:
    """The new record: the stepped models' centres and masses, their temperatures annealed by
    their row counts, their step and event counters (saturating) advanced (in ``state``'s own
    arrays when ``in_place``)."""
    factor = _per_count(n_b, lambda n: policy.temperature_factor(n))
    if in_place:
        T, n_steps, n_seen = state.temperature, state.n_steps, state.n_seen
    else:
        T, n_steps, n_seen = (state.temperature.copy(), state.n_steps.copy(),
                              state.n_seen.copy())
    T[stepped] = np.maximum(np.maximum(T[stepped] * factor, state.min_temperature[stepped]),
                            _TINY)
    n_steps[stepped] = np.minimum(n_steps[stepped].astype(np.uint64) + 1,
                                  COUNTER_MAX).astype(n_steps.dtype)
    n_seen[stepped] = np.minimum(n_seen[stepped].astype(np.uint64) + n_b.astype(np.uint64),
                                 COUNTER_MAX).astype(n_seen.dtype)
    if in_place:
        return state
    return ModelState(centers, masses, T, state.initial_temperature, state.min_temperature,
                      n_steps, n_seen, state.seed, state.feature_names)


def initialise_bank(X: Any, starts: Any, policy: Policy, seeds: Any, *,
                    sample_weight: Any = None, reference: Any = None,
                    reference_count: Any = None) -> tuple[ModelState, np.ndarray]:
    """Start many streams' models in one call, each on its own first batch.

    Segment ``s`` (rows ``starts[s]:starts[s + 1]`` of ``X``) starts model ``s`` as
    :func:`~streamrbf.core.engine.initialise` starts a stream: the best of the policy's stream
    seedings (greedy k-means++), each annealed on the whole segment until its clustering is hard.
    One compiled loop runs every segment
    (:func:`~streamrbf.core._start_kernels.initialise_segments`); model ``s`` draws from its own
    seed ``seeds[s]`` (a splitmix64 stream, not numpy's generator: reproducible from the seed,
    other draws than ``initialise``'s).

    Parameters
    ----------
    X
        The rows ``(n, d)``, grouped by segment: a finite numpy array.
    starts
        The segments' boundaries ``(S + 1,)``: increasing, from 0 to ``n``; each segment holds at
        least ``n_clusters`` rows.
    policy
        How the models learn (a k-means++ ``init``).
    seeds
        Each model's seed ``(S,)``.
    sample_weight
        The rows' weights, or None (all 1).
    reference
        Centres ``(S, k, d)`` each model's centres are ordered to match (the first
        ``reference_count[s]`` of segment ``s``; see
        :func:`~streamrbf.core._start_kernels.align_to`): a stream keeps the labels it gave
        before its model started. None: the seeding's order.
    reference_count
        How many reference centres each segment has ``(S,)``.

    Returns
    -------
    tuple
        The bank of the ``S`` new models (float64 centres, ``n_seen`` the segment's rows) and
        each model's weighted inertia on its segment ``(S,)``.

    Raises
    ------
    ValueError
        For an ``init`` array, boundaries that do not split ``X``, or a segment with fewer rows
        than centres.

    Examples
    --------
    >>> X = np.array([[0.0], [0.2], [5.0], [5.2], [1.0], [1.4], [9.0], [9.4]])
    >>> bank, inertia = initialise_bank(X, [0, 4, 8], Policy(n_clusters=2), seeds=[1, 2])
    >>> np.sort(bank.centers[:, :, 0], axis=1).round(1).tolist(), inertia.round(2).tolist()
    ([[0.1, 5.1], [1.2, 9.2]], [0.04, 0.16])
    """
    if not isinstance(policy.init, str) or policy.init != "k-means++":
        raise ValueError(f"initialise_bank seeds by k-means++; got init={policy.init!r}")
    X = np.ascontiguousarray(X, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.int64)
    k = int(policy.n_clusters)
    S = starts.shape[0] - 1
    n, d = X.shape
    sizes = np.diff(starts)
    if S < 0 or starts[0] != 0 or starts[-1] != n or (sizes < k).any():
        raise ValueError(f"starts must split the {n} rows into segments of at least {k} rows "
                         f"each, from 0 to {n}")
    w = sample_weights(sample_weight, n)
    w = np.ones(n) if w is None else np.ascontiguousarray(w, dtype=np.float64)
    seeds = np.asarray(seeds).astype(np.uint64)
    if reference is None:
        ref, ref_count = np.zeros((S, k, d)), np.zeros(S, np.int64)
    else:
        ref = np.ascontiguousarray(reference, dtype=np.float64)
        ref_count = np.asarray(reference_count, dtype=np.int64)
    auto_t = policy.initial_temperature == AUTO
    auto_floor = policy.min_temperature == AUTO
    n_init = policy.n_init_for(True, int(sizes.max(initial=0)) * k * d)
    C, M = np.empty((S, k, d)), np.empty((S, k))
    T, T0, Tmin, inertia = np.empty(S), np.empty(S), np.empty(S), np.empty(S)
    steps = np.empty(S, np.int64)
    _start_kernels.initialise_segments(
        X, w, starts, k, n_init, seeds, _kernels.check_mapping(policy.mapping),
        -1.0 if auto_t else float(policy.initial_temperature), AUTO_TEMPERATURE_SCALE,
        AUTO_MIN_RATIO if auto_floor else float(policy.min_temperature), auto_floor,
        policy.temperature_factor(1, full_batch=True), int(policy.max_iter),
        float(policy.tol or 0.0), ref, ref_count, C, M, T, T0, Tmin, steps, inertia,
        policy.repeat_rtol(True))
    state = ModelState(C, M, T, T0, Tmin, steps, sizes.copy(), seeds)
    return state, inertia


def _step_bank_torch(state: ModelState, X: Any, models: np.ndarray, policy: Policy,
                     w: np.ndarray | None) -> tuple[ModelState, BankResult]:
    """:func:`step_bank` of a bank on torch: the program of the module docstring."""
    import torch

    from .mappings import TORCH_MAPPINGS

    C = state.centers
    dev, dtype = C.device, C.dtype
    B, k, d = C.shape
    X = torch.as_tensor(X).to(device=dev, dtype=dtype)
    counts = np.bincount(models, minlength=B)
    idx = torch.from_numpy(models).to(dev)
    X64 = X.to(torch.float64)
    D = ((X64[:, None, :] - C[idx].to(torch.float64)) ** 2).sum(-1)  # (n, k), direct
    T = torch.from_numpy(state.temperature.astype(np.float64)).to(dev)
    P = TORCH_MAPPINGS[policy.mapping](D, T[idx][:, None])
    if w is not None:
        P = P * torch.from_numpy(w).to(dev)[:, None]
    mass = torch.zeros((B, k), dtype=torch.float64, device=dev).index_add_(0, idx, P)
    sums = torch.zeros((B, k, d), dtype=torch.float64, device=dev).index_add_(
        0, idx, P[:, :, None] * X64[:, None, :])
    nearest, labels = D.min(dim=-1)
    stepped = np.flatnonzero(counts)
    n_b = counts[stepped]
    s_idx = torch.from_numpy(stepped).to(dev)
    forget = torch.from_numpy(_per_count(n_b, lambda n: policy.forgetting(n))).to(dev)
    new_c, new_m = step_arrays(C[s_idx], state.masses[s_idx], mass[s_idx], sums[s_idx],
                               forget[:, None])
    ratio = float(policy.reassignment_ratio)
    top = new_m.max(dim=1, keepdim=True).values
    starved = ((new_m < ratio * top) & (top > 0)).any(dim=1) if ratio > 0 else \
        torch.zeros(len(stepped), dtype=torch.bool, device=dev)
    # the one transfer to the host: labels, distances and the starved models
    host = torch.cat([labels.to(torch.float64), nearest, starved.to(torch.float64)]).cpu().numpy()
    n = X.shape[0]
    labels_h = host[:n].astype(np.int64)
    nearest_h = host[n:2 * n]
    if not np.isfinite(nearest_h).all():
        raise overflow_error(X.cpu().numpy())
    for s in np.flatnonzero(host[2 * n:]):  # rare: a model with a starved centre
        b = int(stepped[s])
        rows = np.flatnonzero(models == b)
        rng = LazyGenerator(state.seed[b], state.n_steps[b], RESEEDING)
        c_s, m_s = _reseed(X64[torch.from_numpy(rows).to(dev)], new_c[s], new_m[s],
                           nearest_h[rows], ratio, rng, None if w is None else w[rows])
        new_c[s], new_m[s] = c_s, m_s
    centers, masses = C.clone(), state.masses.clone()
    centers[s_idx] = new_c.to(dtype)
    masses[s_idx] = new_m.to(masses.dtype)
    new = _counted_state(state, centers, masses, stepped, n_b, policy)
    return new, BankResult(labels_h, nearest_h, counts)
