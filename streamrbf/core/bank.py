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

from . import _kernels
from .engine import _reseed, sample_weights
from .policy import Policy
from .state import COUNTER_MAX, RESEEDING, LazyGenerator, ModelState
from .statistics import overflow_error, step_arrays
from .temperature import _TINY, logit_divisor

__all__ = ["BankResult", "step_bank"]


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
              sample_weight: Any = None) -> tuple[ModelState, BankResult]:
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
    mass = np.zeros((B, k), np.float64)
    sums = np.zeros((B, k, d), np.float64)
    support = np.zeros(B, np.int64)
    labels = np.empty(X.shape[0], np.int64)
    nearest = np.empty(X.shape[0], np.float64)
    divisors = np.asarray(logit_divisor(state.temperature.astype(np.float64)), np.float64)
    _kernels.bank_statistics(X, models, C, divisors, _kernels.check_mapping(policy.mapping),
                             np.empty(0) if w is None else w, mass, sums, labels, nearest,
                             support)
    if not np.isfinite(nearest).all():
        raise overflow_error(X)
    stepped = np.flatnonzero(counts)
    n_b = counts[stepped]
    # the step of engine.step (statistics.step_arrays), for every stepped model at once
    forget = _per_count(n_b, lambda n: policy.forgetting(n))
    new_c, new_m = step_arrays(C[stepped], state.masses[stepped], mass[stepped], sums[stepped],
                               forget[:, None])
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
    centers, masses = C.copy(), state.masses.copy()
    centers[stepped] = new_c.astype(C.dtype)
    masses[stepped] = new_m.astype(masses.dtype)
    new = _counted_state(state, centers, masses, stepped, n_b, policy)
    return new, BankResult(labels, nearest, counts)


def _counted_state(state: ModelState, centers: Any, masses: Any, stepped: np.ndarray,
                   n_b: np.ndarray, policy: Policy) -> ModelState:
    """The new record: the stepped models' centres and masses, their temperatures annealed by
    their row counts, their step and event counters (saturating) advanced."""
    factor = _per_count(n_b, lambda n: policy.temperature_factor(n))
    T = state.temperature.copy()
    T[stepped] = np.maximum(np.maximum(T[stepped] * factor, state.min_temperature[stepped]),
                            _TINY)
    n_steps, n_seen = state.n_steps.copy(), state.n_seen.copy()
    n_steps[stepped] = np.minimum(n_steps[stepped].astype(np.uint64) + 1,
                                  COUNTER_MAX).astype(n_steps.dtype)
    n_seen[stepped] = np.minimum(n_seen[stepped].astype(np.uint64) + n_b.astype(np.uint64),
                                 COUNTER_MAX).astype(n_seen.dtype)
    return ModelState(centers, masses, T, state.initial_temperature, state.min_temperature,
                      n_steps, n_seen, state.seed, state.feature_names)


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
