"""Many streams' models stepped in one call: the engine's step over a bank of models.

A :class:`~streamrbf.core.state.ModelState` holds ``B`` models (centres ``(B, k, d)``). A
mixed batch tags each row with the model it belongs to; :func:`step_bank` scores every row
against its own model and steps every model present on its own rows, with its own temperature,
step count, forgetting and re-seeding: the result equals :func:`~streamrbf.core.engine.step`
of each model alone on its rows (tested to 1e-6 in float64). The pass over the rows is one
compiled segment loop (:func:`~streamrbf.core._kernels.bank_statistics`); the step, the
temperatures and the counters are array operations over the bank. Python runs per model only
for the rare model that has a starved centre to re-seed (drawn from that model's own random
stream, as its lone step would).

This is the CPU path (numpy centres); models on an accelerator step one at a time through
:func:`~streamrbf.core.engine.step`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _kernels
from .engine import _reseed, sample_weights
from .policy import Policy
from .state import COUNTER_MAX, RESEEDING, LazyGenerator, ModelState
from .statistics import overflow_error
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
    if state.on_device:
        raise ValueError("step_bank steps numpy banks; step models on an accelerator with "
                         "engine.step")
    X = np.ascontiguousarray(X)
    B, k, d = state.centers.shape
    if X.ndim != 2 or X.shape[1] != d:
        raise ValueError(f"X has shape {X.shape}; the bank's models have {d} features")
    models = np.asarray(models)
    if models.shape != (X.shape[0],) or not np.issubdtype(models.dtype, np.integer):
        raise ValueError(f"models must be one integer index per row of X ({X.shape[0]}), got "
                         f"{models.dtype} {models.shape}")
    models = models.astype(np.int64)
    if models.size and (models.min() < 0 or models.max() >= B):
        raise ValueError(f"model indices must be in [0, {B}), got {models.min()}..{models.max()}")
    w = sample_weights(sample_weight, X.shape[0])
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
    old_c = C[stepped].astype(np.float64)
    old_m = state.masses[stepped].astype(np.float64)
    new_m = forget[:, None] * old_m + mass[stepped]
    moving = new_m > 0
    safe = new_m + ~moving
    new_c = old_c + (sums[stepped] - mass[stepped][:, :, None] * old_c) / safe[:, :, None] \
        * moving[:, :, None]
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
    factor = _per_count(n_b, lambda n: policy.temperature_factor(n))
    T = state.temperature.copy()
    T[stepped] = np.maximum(np.maximum(T[stepped] * factor, state.min_temperature[stepped]),
                            _TINY)
    centers, masses = C.copy(), state.masses.copy()
    centers[stepped] = new_c.astype(C.dtype)
    masses[stepped] = new_m.astype(masses.dtype)
    n_steps, n_seen = state.n_steps.copy(), state.n_seen.copy()
    n_steps[stepped] = np.minimum(n_steps[stepped].astype(np.uint64) + 1,
                                  COUNTER_MAX).astype(n_steps.dtype)
    n_seen[stepped] = np.minimum(n_seen[stepped].astype(np.uint64) + n_b.astype(np.uint64),
                                 COUNTER_MAX).astype(n_seen.dtype)
    new = ModelState(centers, masses, T, state.initial_temperature, state.min_temperature,
                     n_steps, n_seen, state.seed, state.feature_names)
    return new, BankResult(labels, nearest, counts)
