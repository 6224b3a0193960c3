"""RBFKMeans: K-Means as an annealed entmax-1.5 RBF network, with scikit-learn's interface."""

from __future__ import annotations

import inspect
import math
import numbers
import os
import sys
import warnings
from typing import Any

import numpy as np
import torch

from .core._kernels import check_mapping
from .core.mappings import responsibilities
from .core.persistence import read_model_file, write_model_file
from .core.seeding import kmeans_plusplus, reseed_candidates
from .core.statistics import (
    BatchResult,
    SufficientStatistics,
    apply_step,
    batch_statistics,
    compiled_fused_step,
    fused_step,
    overflow_error,
)
from .core.statistics import sq_distances as _sq_distances
from .core.temperature import TemperatureSchedule, auto_temperature
from .core.validation import as_batch, check_finite, feature_names_of

__all__ = ["NotFittedError", "RBFKMeans"]

# k-means++ and the automatic temperature look at no more than this many points.
_INIT_SAMPLE = 100_000
# An "auto" start is this many times the core's auto_temperature (the mean squared distance to the
# nearest k-means++ seed): hot enough that centres still compete for whole clusters (deterministic
# annealing), which is what rescues a bad seeding.
_AUTO_SCALE = 4.0
# An "auto" minimum temperature is this fraction of the starting temperature.
_AUTO_MIN_RATIO = 1e-3


class NotFittedError(ValueError, AttributeError):
    """Raised when a method needs a fitted model (same bases as scikit-learn's NotFittedError).

    Examples
    --------
    >>> from streamrbf import NotFittedError, RBFKMeans
    >>> try:
    ...     RBFKMeans(2).predict([[0.0, 0.0]])
    ... except NotFittedError as err:
    ...     print(isinstance(err, ValueError), isinstance(err, AttributeError))
    True True
    """


def _not_fitted_error() -> type[NotFittedError]:
    """Our NotFittedError, also an instance of scikit-learn's when scikit-learn is in use."""
    if "sklearn" not in sys.modules:
        return NotFittedError
    global _SKLEARN_NOT_FITTED
    if _SKLEARN_NOT_FITTED is None:
        from sklearn.exceptions import NotFittedError as SkNotFitted

        _SKLEARN_NOT_FITTED = type("NotFittedError", (NotFittedError, SkNotFitted), {})
    return _SKLEARN_NOT_FITTED


_SKLEARN_NOT_FITTED: type[NotFittedError] | None = None


def _make_rng(random_state: Any) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31 - 1))
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(random_state)
    raise ValueError(f"random_state must be None, an int or a Generator, got {random_state!r}")


# The numpy bit generators a model file may name (nothing else in np.random is called).
_BIT_GENERATORS = frozenset({"PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"})


def _count(value: Any, what: str) -> int:
    """A non-negative int from a model file's header (not a bool, not a float)."""
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} must be an int >= 0, got {value!r}")
    return value


class RBFKMeans:
    r"""K-Means as a radial-basis-function network, trained by annealed mini-batch gradient steps.

    A point's responsibilities are entmax-1.5 of the logits :math:`-\lVert x - c_k \rVert^2 / T`:
    exactly sparse (only centres within :math:`2T` of the nearest are non-zero), differentiable,
    and never NaN. Centres move by the step :math:`c_k \leftarrow c_k + (s_k - m_k c_k) / n_k`
    computed from each batch's sufficient statistics (masses :math:`m_k`, weighted sums
    :math:`s_k`) with decayed masses :math:`n_k \leftarrow a\,n_k + m_k`. The temperature decays
    by ``temperature_decay`` per step down to ``min_temperature``: soft clustering anneals into
    exact K-Means (once :math:`2T` is below every point's margin, a full-batch step *is* one Lloyd
    iteration). A drop-in replacement for scikit-learn's ``MiniBatchKMeans``.

    Parameters
    ----------
    n_clusters
        Number of centres ``k``.
    init
        ``"k-means++"`` (greedy, seeded from ``random_state``) or an array of shape ``(k, d)``.
    n_init
        Number of k-means++ seedings tried, each annealed on the initialisation data; the one with
        the lowest K-Means objective is kept. ``"auto"``: 1 for :meth:`fit` (annealing over all the
        data already escapes poor seedings) and 5 for the first :meth:`partial_fit` batch (a small
        sample, where a poor local optimum would persist; 1 when that batch is large, above 2**24
        point-centre-feature products). Ignored when ``init`` is an array.
    temperature
        Starting temperature: a positive float, or ``"auto"`` (twice the mean squared distance of
        the initialisation sample to its nearest initial centre).
    temperature_decay
        Multiplicative decay of the temperature per step, in (0, 1]. 1 keeps it constant.
    min_temperature
        Floor of the temperature: a float >= 0, or ``"auto"`` (1e-3 x the starting temperature).
    mapping
        ``"entmax15"`` (sparse, default), ``"softmax"`` (stable) or ``"hard"`` (plain K-Means).
    batch_size
        Events per step in :meth:`fit`; ``None`` means full batch (each step one soft-Lloyd /
        EM iteration). :meth:`partial_fit` takes one step per call whatever this is.
    max_iter
        Full-batch iterations, or epochs over the data when ``batch_size`` is set.
    tol
        Stop :meth:`fit` when the squared centre shift of a step (an epoch in mini-batch mode) is
        below ``tol`` x the mean feature variance, and the clustering is hard (every responsibility
        one-hot, or the temperature at its floor).
    decay
        Forgetting factor ``a`` in (0, 1] applied to the masses per step (1 = never forget; Spark's
        ``decayFactor``). Smaller values let centres follow drift.
    half_life
        Alternative to ``decay``: the masses halve every ``half_life`` events.
    reassignment_ratio
        A centre whose decayed mass falls below this fraction of the largest one is re-seeded on a
        poorly served point of the current batch (drawn in proportion to its squared distance to the
        nearest centre). A full-batch ``fit`` re-seeds only empty centres, onto the farthest points.
    random_state
        Seed (int), ``numpy.random.Generator`` or None; every random choice comes from it.
    device
        Torch device for the state (``"cpu"``, ``"cuda"``, ...); ``None`` follows the first input
        (torch tensors stay on their device).
    dtype
        ``"float32"`` or ``"float64"`` for the centres; ``None`` follows the first input.
    compile
        On accelerators, run :meth:`partial_fit`'s step through ``torch.compile``: ``True``
        (default mode) or ``"reduce-overhead"`` (CUDA graphs). The first call per batch shape
        compiles (seconds); later steps launch a few fused kernels instead of dozens. Ignored on
        CPU, where the step is a compiled numba kernel already.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    counts_ : ndarray of shape (n_clusters,)
        Decayed masses :math:`n_k`.
    temperature_ : float
        Current temperature (per model: each stream anneals on its own).
    labels_ : ndarray of shape (n_samples,)
        Nearest centre of each training point (after :meth:`fit`).
    inertia_ : float
        Sum of squared distances to the nearest centre: of the training data after :meth:`fit`,
        of the last batch (before its step) after :meth:`partial_fit`.
    n_steps_ : int
        Gradient steps taken so far by the model (of the kept seeding, when ``n_init`` > 1): the
        temperature has decayed this many times.
    n_iter_ : int
        Iterations (epochs) run by the last :meth:`fit`.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.

    Notes
    -----
    Passes scikit-learn's ``check_estimator`` (tests/test_kmeans.py); the one check skipped is
    ``check_array_api_input``, which scikit-learn itself skips unless ``SCIPY_ARRAY_API=1`` and
    ``array-api-strict`` are installed. On CPU the hot path is a compiled kernel; ``X @ C.T`` runs
    on one BLAS thread for small products (a second thread was 7x slower on busy 2-core machines).

    Examples
    --------
    >>> import numpy as np
    >>> from streamrbf import RBFKMeans
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 0.3, (50, 2)), rng.normal(5, 0.3, (50, 2))])
    >>> km = RBFKMeans(n_clusters=2, random_state=0).fit(X)
    >>> np.round(np.sort(km.cluster_centers_[:, 0]), 1)
    array([0., 5.])
    >>> p = km.predict_proba([[2.5, 2.5], [0.0, 0.0]])   # a point between, a point on a centre
    >>> p.sum(axis=1), bool((p[0] > 0).all()), int((p[1] == 0).sum())
    (array([1., 1.]), True, 1)
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | np.ndarray = "k-means++",
        n_init: int | str = "auto",
        temperature: float | str = "auto",
        temperature_decay: float = 0.9,
        min_temperature: float | str = "auto",
        mapping: str = "entmax15",
        batch_size: int | None = None,
        max_iter: int = 300,
        tol: float = 1e-4,
        decay: float = 1.0,
        half_life: float | None = None,
        reassignment_ratio: float = 0.01,
        random_state: int | np.random.Generator | None = None,
        device: str | None = None,
        dtype: str | None = None,
        compile: bool | str = False,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.temperature = temperature
        self.temperature_decay = temperature_decay
        self.min_temperature = min_temperature
        self.mapping = mapping
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.decay = decay
        self.half_life = half_life
        self.reassignment_ratio = reassignment_ratio
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.compile = compile

    # ----------------------------------------------------------------- scikit-learn protocol
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters of this estimator (scikit-learn protocol)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> RBFKMeans:
        """Set parameters (scikit-learn protocol); unknown names raise ``ValueError``."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                    f"Valid parameters are: {sorted(valid)!r}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = inspect.signature(type(self).__init__).parameters
        shown = []
        for name in self._param_names():
            value = getattr(self, name)
            default = defaults[name].default
            same = value is default or (
                not isinstance(value, np.ndarray)
                and type(value) is type(default)
                and value == default
            )
            if not same:
                text = "array(...)" if isinstance(value, np.ndarray) else repr(value)
                shown.append(f"{name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def __sklearn_tags__(self):
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type="clusterer",
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"]),
            input_tags=InputTags(allow_nan=False),
        )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_centers")

    # ----------------------------------------------------------------------- fitted views
    @property
    def cluster_centers_(self) -> np.ndarray:
        self._check_fitted()
        return self._centers.detach().cpu().numpy()

    @property
    def counts_(self) -> np.ndarray:
        self._check_fitted()
        return self._counts.detach().cpu().numpy()

    @property
    def temperature_(self) -> float:
        self._check_fitted()
        return self._schedule.value

    @property
    def temperature_schedule_(self) -> TemperatureSchedule:
        """A copy of the model's temperature schedule (start, decay, floor, current value)."""
        self._check_fitted()
        return TemperatureSchedule(**vars(self._schedule))

    @classmethod
    def from_state(
        cls,
        centers: Any,
        counts: Any,
        schedule: TemperatureSchedule,
        *,
        n_steps: int = 0,
        **params: Any,
    ) -> RBFKMeans:
        """A fitted model from its state: centres ``(k, d)``, decayed masses ``(k,)`` and the
        temperature schedule (for adapters that keep state elsewhere, e.g. Beam state). The random
        generator comes from ``params["random_state"]``.

        >>> import numpy as np
        >>> from streamrbf.core.temperature import TemperatureSchedule
        >>> m = RBFKMeans.from_state(np.eye(2), np.ones(2), TemperatureSchedule(1.0), n_steps=3)
        >>> m.predict([[0.9, 0.1]]).tolist(), m.n_steps_, m.temperature_
        ([0], 3, 1.0)
        """
        model = cls(n_clusters=len(centers), **params)
        model._check_params()
        C = as_batch(centers, estimator=cls.__name__)
        n = torch.as_tensor(np.asarray(counts, dtype=np.float64)).to(C.device)
        if n.shape != (C.shape[0],) or not bool(torch.isfinite(n).all()) or bool((n < 0).any()):
            raise ValueError(
                f"counts must be {C.shape[0]} finite masses >= 0, got {tuple(n.shape)}"
            )
        rng = _make_rng(model.random_state)
        model._set_state(C, n, TemperatureSchedule(**vars(schedule)), rng)
        model.n_features_in_ = int(C.shape[1])
        model.n_steps_ = int(n_steps)
        model.inertia_ = math.nan
        return model

    @property
    def centers_tensor_(self) -> torch.Tensor:
        """The centres as a torch tensor on the model's device (no copy)."""
        self._check_fitted()
        return self._centers

    def _check_fitted(self) -> None:
        if not hasattr(self, "_centers"):
            raise _not_fitted_error()(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' or "
                "'partial_fit' with appropriate arguments before using this estimator."
            )

    # ------------------------------------------------------------------------- validation
    def _check_params(self) -> None:
        k = self.n_clusters
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"n_clusters must be an int >= 1, got {k!r}")
        check_mapping(self.mapping)
        if isinstance(self.temperature, str):
            if self.temperature != "auto":
                raise ValueError(
                    f"temperature must be 'auto' or a float > 0, got {self.temperature!r}"
                )
        elif not (isinstance(self.temperature, numbers.Real) and 0 < self.temperature < math.inf):
            raise ValueError(f"temperature must be 'auto' or a float > 0, got {self.temperature!r}")
        if isinstance(self.min_temperature, str):
            if self.min_temperature != "auto":
                raise ValueError(
                    f"min_temperature must be 'auto' or a float >= 0, got {self.min_temperature!r}"
                )
        elif not (
            isinstance(self.min_temperature, numbers.Real) and 0 <= self.min_temperature < math.inf
        ):
            raise ValueError(
                f"min_temperature must be 'auto' or a float >= 0, got {self.min_temperature!r}"
            )
        if not (
            isinstance(self.temperature_decay, numbers.Real) and 0 < self.temperature_decay <= 1
        ):
            raise ValueError(f"temperature_decay must be in (0, 1], got {self.temperature_decay!r}")
        if not (isinstance(self.decay, numbers.Real) and 0 < self.decay <= 1):
            raise ValueError(f"decay must be in (0, 1], got {self.decay!r}")
        if self.half_life is not None and not (
            isinstance(self.half_life, numbers.Real) and 0 < self.half_life < math.inf
        ):
            raise ValueError(f"half_life must be None or a float > 0, got {self.half_life!r}")
        if self.half_life is not None and self.decay != 1.0:
            raise ValueError("give either decay or half_life, not both")
        if self.batch_size is not None and (
            not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be None or an int >= 1, got {self.batch_size!r}")
        if not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an int >= 1, got {self.max_iter!r}")
        if not (isinstance(self.tol, numbers.Real) and self.tol >= 0):
            raise ValueError(f"tol must be a float >= 0, got {self.tol!r}")
        if not (
            isinstance(self.reassignment_ratio, numbers.Real) and 0 <= self.reassignment_ratio < 1
        ):
            raise ValueError(
                f"reassignment_ratio must be in [0, 1), got {self.reassignment_ratio!r}"
            )
        if self.dtype not in (None, "float32", "float64"):
            raise ValueError(f"dtype must be None, 'float32' or 'float64', got {self.dtype!r}")
        if self.compile not in (False, True, "default", "reduce-overhead"):
            raise ValueError(
                "compile must be False, True, 'default' or 'reduce-overhead', got "
                f"{self.compile!r}"
            )
        if not (
            self.n_init == "auto"
            or (
                isinstance(self.n_init, (int, np.integer))
                and not isinstance(self.n_init, bool)
                and self.n_init >= 1
            )
        ):
            raise ValueError(f"n_init must be 'auto' or an int >= 1, got {self.n_init!r}")
        if isinstance(self.init, str) and self.init != "k-means++":
            raise ValueError(f"init must be 'k-means++' or an array of centres, got {self.init!r}")

    def _validate(
        self, X: Any, *, reset: bool, min_samples: int = 1, finite: bool = True
    ) -> torch.Tensor:
        fitted = hasattr(self, "_centers") and not reset
        names = feature_names_of(X)
        if fitted:
            fitted_names = getattr(self, "feature_names_in_", None)
            if fitted_names is not None and names is None:
                warnings.warn(
                    f"X does not have valid feature names, but {type(self).__name__} was fitted "
                    "with feature names",
                    UserWarning,
                    stacklevel=3,
                )
            elif fitted_names is None and names is not None:
                warnings.warn(
                    f"X has feature names, but {type(self).__name__} was fitted without feature "
                    "names",
                    UserWarning,
                    stacklevel=3,
                )
            elif fitted_names is not None and (
                len(names) != len(fitted_names) or np.any(names != fitted_names)
            ):
                unseen = sorted(set(names) - set(fitted_names))
                missing = sorted(set(fitted_names) - set(names))
                raise ValueError(
                    "The feature names should match those that were passed during fit.\n"
                    + (f"Feature names unseen at fit time: {unseen}\n" if unseen else "")
                    + (
                        f"Feature names seen at fit time, yet now missing: {missing}\n"
                        if missing
                        else ""
                    )
                    + (
                        "Feature names must be in the same order as they were in fit.\n"
                        if not unseen and not missing
                        else ""
                    )
                )
            return as_batch(
                X,
                n_features=self.n_features_in_,
                dtype=self._centers.dtype,
                device=self._centers.device,
                estimator=type(self).__name__,
                min_samples=min_samples,
                finite=finite,
            )
        dtype = {"float32": torch.float32, "float64": torch.float64}.get(self.dtype)
        t = as_batch(
            X,
            dtype=dtype,
            device=self.device,
            estimator=type(self).__name__,
            min_samples=min_samples,
        )
        return t

    def _record_input(self, X_raw: Any, X: torch.Tensor) -> None:
        self.n_features_in_ = int(X.shape[1])
        names = feature_names_of(X_raw)
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    # ---------------------------------------------------------------------- initialisation
    def _initial_state(self, X: torch.Tensor, rng: np.random.Generator):
        """Centres, masses and temperature schedule for a first batch ``X``."""
        k = int(self.n_clusters)
        n, d = X.shape
        if isinstance(self.init, str):
            if n < k:
                raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
            Xs = X
            if n > _INIT_SAMPLE:
                Xs = X[torch.from_numpy(rng.choice(n, _INIT_SAMPLE, replace=False)).to(X.device)]
            C = torch.from_numpy(kmeans_plusplus(Xs.cpu().numpy(), k, rng))
        else:
            init = np.asarray(self.init, dtype=np.float64)
            if init.shape != (k, d):
                raise ValueError(
                    f"init array has shape {init.shape}, expected (n_clusters, n_features) = "
                    f"{(k, d)}"
                )
            if not np.isfinite(init).all():
                raise ValueError("init array contains NaN or infinity.")
            C = torch.from_numpy(init.copy())
            Xs = X[:_INIT_SAMPLE]
        C = C.to(device=X.device, dtype=X.dtype)
        if self.temperature == "auto":
            t0 = _AUTO_SCALE * auto_temperature(_sq_distances(Xs, C).cpu().numpy())
        else:
            t0 = float(self.temperature)
        t_min = (
            t0 * _AUTO_MIN_RATIO if self.min_temperature == "auto" else float(self.min_temperature)
        )
        schedule = TemperatureSchedule(t0, float(self.temperature_decay), min(t_min, t0))
        counts = torch.zeros(k, dtype=torch.float64, device=X.device)
        return C, counts, schedule

    # ------------------------------------------------------------------------------ steps
    def _decay_for(self, n_events: int) -> float:
        if self.half_life is not None:
            return 0.5 ** (n_events / float(self.half_life))
        return float(self.decay)

    def _stats(self, X: torch.Tensor, C: torch.Tensor, temperature: float) -> BatchResult:
        return batch_statistics(X, C, temperature, self.mapping)

    def _stream_step(self, X, C, counts, schedule, rng, decay):
        """One mini-batch step on local state; returns (C, counts, result)."""
        result = self._stats(X, C, schedule.value)
        C, counts = apply_step(C, counts, result.stats, decay)
        if self.reassignment_ratio > 0:
            C, counts = self._reseed(X, C, counts, result.nearest, rng)
        schedule.step()
        return C, counts, result

    def _reseed(self, X, C, counts, nearest, rng):
        """Move starved centres onto poorly served points of the batch ``X``."""
        # The batch's distances cross to the host only when some centre is starved.
        dead, rows = reseed_candidates(counts, self.reassignment_ratio, nearest, rng)
        if dead.size:
            dead_t = torch.from_numpy(dead).to(C.device)
            C = C.clone()
            C[dead_t] = X[torch.from_numpy(rows).to(X.device)].to(C.dtype)
            alive = torch.ones_like(counts, dtype=torch.bool)
            alive[dead_t] = False
            counts = counts.clone()
            counts[dead_t] = counts[alive].min()  # the largest centre is never starved
        return C, counts

    def _device_step(self, X: torch.Tensor, keep: bool = False) -> BatchResult | None:
        """``partial_fit``'s step on an accelerator: one fused pass (optionally compiled) and one
        transfer to the host, which also says whether the batch was finite."""
        C0, n0 = self._centers, self._counts
        schedule = TemperatureSchedule(**vars(self._schedule))
        decay = self._decay_for(X.shape[0])
        ratio = float(self.reassignment_ratio)
        out, graphed = None, False
        if self.compile:
            mode = "reduce-overhead" if self.compile == "reduce-overhead" else "default"
            scalars = torch.tensor([schedule.value, decay], dtype=torch.float64).to(
                X.device, non_blocking=True
            )
            try:
                out = compiled_fused_step(mode, tuple(C0.shape))(
                    X, C0, n0, scalars[0], scalars[1], ratio, self.mapping
                )
                graphed = mode == "reduce-overhead"
            except Exception as err:
                # e.g. dynamo's recompile limit after many batch sizes: the eager step below
                # computes the same numbers (and raises again if the problem is not the compiler).
                warnings.warn(
                    f"torch.compile could not run this step ({type(err).__name__}: "
                    f"{str(err).splitlines()[0][:200]}); using the eager step",
                    RuntimeWarning,
                    stacklevel=4,
                )
        if out is None:
            out = fused_step(X, C0, n0, schedule.value, decay, ratio, self.mapping)

        def own(t: torch.Tensor) -> torch.Tensor:
            # CUDA graphs reuse their output buffers on the next replay: keep our own copies.
            return t.clone() if graphed else t

        C, counts = own(out.centers), own(out.counts)
        finite, loss, support, inertia, starving = out.flags.tolist()
        if not finite:
            check_finite(X)  # raises, naming the first bad entry; the model is untouched
        if not math.isfinite(loss):
            raise overflow_error(X)
        if starving and ratio > 0:
            rng_state = self._rng.bit_generator.state
            try:
                C, counts = self._reseed(X, C, counts, out.nearest, self._rng)
            except BaseException:
                self._rng.bit_generator.state = rng_state
                raise
        schedule.step()
        self._set_state(C, counts, schedule, self._rng)
        self.n_steps_ += 1
        self.inertia_ = inertia
        if not keep:
            return None
        labels, nearest, mass, sums = map(own, out[2:6])
        stats = SufficientStatistics(mass, sums, loss, X.shape[0])
        return BatchResult(stats, labels, nearest.to(torch.float64), int(support))

    def _full_batch_step(self, X, C, schedule):
        """One soft-Lloyd (EM) step on all of ``X``; empty centres go to the farthest points."""
        result = self._stats(X, C, schedule.value)
        zeros = torch.zeros_like(result.stats.mass)
        C_new, _ = apply_step(C, zeros, result.stats, decay=0.0)
        empty = torch.nonzero(result.stats.mass <= 0).flatten()
        if empty.numel():
            far = torch.argsort(result.nearest, descending=True)[: empty.numel()]
            C_new = C_new.clone()
            C_new[empty.to(C.device)] = X[far.to(X.device)]
        schedule.step()
        return C_new, result

    # -------------------------------------------------------------------------------- fit
    def _tol_abs(self, X: torch.Tensor) -> float:
        var = X.to(torch.float64).var(dim=0, unbiased=False).mean().item() if len(X) > 1 else 0.0
        return float(self.tol) * var

    def _anneal(self, X, C, counts, schedule, rng, max_iter, tol_abs, full=None):
        """Run ``fit``'s loop on ``X``: annealed full-batch (or mini-batch epoch) steps until the
        clustering is hard and the centres stop moving (by less than ``tol_abs``). ``full``
        forces full-batch steps. Returns (C, counts, the final pass's BatchResult, steps,
        iterations)."""
        n = X.shape[0]
        if full is None:
            full = self.batch_size is None or self.batch_size >= n
        n_steps = n_iter = 0
        for _ in range(int(max_iter)):
            n_iter += 1
            start = C
            if full:
                C, result = self._full_batch_step(X, C, schedule)
                n_steps += 1
                hard = result.support == n
            else:
                order = torch.from_numpy(rng.permutation(n)).to(X.device)
                hard = True
                for lo in range(0, n, int(self.batch_size)):
                    batch = X[order[lo : lo + int(self.batch_size)]]
                    C, counts, result = self._stream_step(
                        batch, C, counts, schedule, rng, self._decay_for(batch.shape[0])
                    )
                    n_steps += 1
                    hard = hard and result.support == batch.shape[0]
            shift = float(((C.to(torch.float64) - start.to(torch.float64)) ** 2).sum())
            cold = hard or self.mapping == "hard" or schedule.value <= schedule.minimum
            if cold and shift <= tol_abs:
                break
        # One last pass: the masses of a full-batch fit, and every point's nearest centre.
        final = batch_statistics(X, C, schedule.value, self.mapping, with_sums=False)
        if full:
            counts = final.stats.mass
        return C, counts, final, n_steps, n_iter

    def _n_init(self, stream: bool, size: int = 0) -> int:
        """Seedings to try; ``size`` is the first batch's point-centre-feature products."""
        if not isinstance(self.init, str):
            return 1
        if self.n_init == "auto":
            return 5 if stream and size <= self._BEST_OF_LIMIT else 1
        return int(self.n_init)

    # A first partial_fit batch above this many point-centre-feature products is seeded once.
    _BEST_OF_LIMIT = 1 << 24

    def _best_of(self, X, rng, n_init, full=None):
        """Seed and anneal ``n_init`` times on ``X``; keep the lowest K-Means objective.
        Returns (C, counts, schedule, final pass, steps and iterations of the kept run)."""
        best = None
        tol_abs = self._tol_abs(X)  # the same for every seeding
        for _ in range(n_init):
            C, counts, schedule = self._initial_state(X, rng)
            C, counts, final, steps, n_iter = self._anneal(
                X, C, counts, schedule, rng, self.max_iter, tol_abs, full=full
            )
            objective = float(final.nearest.sum())
            if best is None or objective < best[0]:
                best = (objective, C, counts, schedule, final, steps, n_iter)
        return best[1:]

    def fit(self, X: Any, y: Any = None) -> RBFKMeans:
        """Fit from scratch: k-means++, then annealed steps (full batch or mini-batch epochs)."""
        self._check_params()
        Xt = self._validate(X, reset=True)
        rng = _make_rng(self.random_state)
        C, counts, schedule, final, n_steps, n_iter = self._best_of(
            Xt, rng, self._n_init(stream=False)
        )
        self._set_state(C, counts, schedule, rng)
        self._record_input(X, Xt)
        self.n_steps_ = n_steps
        self.n_iter_ = n_iter
        self.labels_ = final.labels.cpu().numpy()
        self.inertia_ = float(final.nearest.sum())
        return self

    def partial_fit(self, X: Any, y: Any = None) -> RBFKMeans:
        """One annealed gradient step on the batch ``X``.

        The first call initialises: k-means++ on the batch, then ``fit``'s annealing loop on that
        batch alone (full batch, at most ``max_iter`` iterations), so a stream starts from a good
        local clustering of its first batch rather than from raw seeds. Later calls take exactly one
        step each. The model is unchanged if the call raises.
        """
        if not hasattr(self, "_centers"):
            self._check_params()
            Xt = self._validate(X, reset=True)
            rng = _make_rng(self.random_state)
            n_init = self._n_init(stream=True, size=Xt.numel() * int(self.n_clusters))
            C, counts, schedule, final, n_steps, _ = self._best_of(Xt, rng, n_init, full=True)
            self._set_state(C, counts, schedule, rng)
            self._record_input(X, Xt)
            self.n_steps_ = n_steps
            self.inertia_ = float(final.nearest.sum())
            return self
        self._learn(X, keep=False)
        return self

    def score_then_learn(self, X: Any) -> BatchResult:
        """Score the batch ``X`` with the model as it is, then take :meth:`partial_fit`'s step on
        it, in one pass over the data (prequential evaluation; what streaming adapters do with
        every batch). The model must be fitted.

        Returns the batch's :class:`~streamrbf.core.statistics.BatchResult` before the step:
        ``labels``
        and ``nearest`` (what :meth:`predict` and the squared distances would have given), the
        statistics the step used and, for CPU batches, the sparse ``memberships`` (what
        :meth:`predict_proba` would have given, without its dense array).

        Examples
        --------
        >>> import numpy as np
        >>> km = RBFKMeans(2, random_state=0).partial_fit([[0.0], [0.2], [5.0], [5.2]])
        >>> X = np.array([[0.1], [5.1], [2.6]])
        >>> before = km.predict(X)
        >>> r = km.score_then_learn(X)   # the point halfway has two non-zero memberships
        >>> bool((r.labels.numpy() == before).all()), r.memberships.length.tolist()
        (True, [1, 1, 2])
        """
        self._check_fitted()
        return self._learn(X, keep=True)

    def _learn(self, X: Any, keep: bool) -> BatchResult | None:
        """One step on ``X`` for a fitted model; the batch's result from before the step when
        ``keep`` (accelerators copy it out of reused buffers only then)."""
        on_host = self._centers.device.type == "cpu"
        Xt = self._validate(X, reset=False, finite=on_host)
        if not on_host:
            return self._device_step(Xt, keep)
        # Nothing is committed until the step has succeeded: the step works on new tensors and a
        # copy of the schedule, and the generator's state is put back if anything raises.
        rng_state = self._rng.bit_generator.state
        schedule = TemperatureSchedule(**vars(self._schedule))
        try:
            C, counts, result = self._stream_step(
                Xt, self._centers, self._counts, schedule, self._rng, self._decay_for(Xt.shape[0])
            )
        except BaseException:
            self._rng.bit_generator.state = rng_state
            raise
        self._set_state(C, counts, schedule, self._rng)
        self.n_steps_ += 1
        self.inertia_ = float(result.nearest.numpy().sum())
        return result

    def _set_state(self, C, counts, schedule, rng) -> None:
        self._centers = C.contiguous()
        self._counts = counts
        self._schedule = schedule
        self._rng = rng

    # ------------------------------------------------------------------------- inference
    def _output(self, X_raw: Any, t: torch.Tensor):
        return t if isinstance(X_raw, torch.Tensor) else t.detach().cpu().numpy()

    def predict(self, X: Any) -> np.ndarray | torch.Tensor:
        """Index of the nearest centre of each row (the arg-max membership under every mapping)."""
        self._check_fitted()
        Xt = self._validate(X, reset=False)
        r = batch_statistics(Xt, self._centers, self._schedule.value, "hard", with_sums=False)
        return self._output(X, r.labels)

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit, then return ``labels_``."""
        return self.fit(X).labels_

    def predict_proba(self, X: Any) -> np.ndarray | torch.Tensor:
        """Memberships ``(n, k)`` at the current temperature; rows sum to 1, exact zeros with
        entmax-1.5."""
        self._check_fitted()
        Xt = self._validate(X, reset=False)
        D = _sq_distances(Xt, self._centers).to(torch.float64)
        if not bool(torch.isfinite(D).all()):
            raise overflow_error(Xt)
        P = responsibilities(D, self._schedule.value, self.mapping)
        return self._output(X, P.to(Xt.dtype))

    def transform(self, X: Any) -> np.ndarray | torch.Tensor:
        """Euclidean distances ``(n, k)`` to every centre."""
        self._check_fitted()
        Xt = self._validate(X, reset=False)
        return self._output(X, _sq_distances(Xt, self._centers).sqrt())

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray | torch.Tensor:
        """Fit, then return the distances of ``X`` to the centres."""
        return self.fit(X).transform(X)

    def score(self, X: Any, y: Any = None) -> float:
        """Opposite of the K-Means objective of ``X`` (higher is better, as in scikit-learn)."""
        self._check_fitted()
        Xt = self._validate(X, reset=False)
        r = batch_statistics(Xt, self._centers, self._schedule.value, "hard", with_sums=False)
        return -float(r.nearest.sum())

    def statistics(self, X: Any) -> SufficientStatistics:
        """Sufficient statistics of ``X`` against the current centres and temperature (no step).

        Sum the statistics of several shards and pass them to :meth:`apply_statistics` to take
        exactly the step that ``partial_fit`` on their union would take.
        """
        self._check_fitted()
        Xt = self._validate(X, reset=False)
        return batch_statistics(Xt, self._centers, self._schedule.value, self.mapping).stats

    def apply_statistics(self, stats: SufficientStatistics) -> RBFKMeans:
        """Take one step from (merged) sufficient statistics, as :meth:`partial_fit` does, but
        without re-seeding (which needs the points)."""
        self._check_fitted()
        if tuple(stats.sums.shape) != tuple(self._centers.shape):
            raise ValueError(
                f"statistics have shape {tuple(stats.sums.shape)}, the model's centres "
                f"{tuple(self._centers.shape)}"
            )
        if not (bool(torch.isfinite(stats.mass).all()) and bool(torch.isfinite(stats.sums).all())):
            raise ValueError("statistics contain NaN or infinity.")
        C, counts = apply_step(self._centers, self._counts, stats, self._decay_for(stats.n))
        self._centers, self._counts = C, counts
        self._schedule.step()
        self.n_steps_ += 1
        return self

    # ------------------------------------------------------------------------ temperature
    def reheat(self, factor: float | None = None) -> float:
        """Raise the temperature (by ``factor``, or back to its start) when the stream drifts;
        returns the new temperature."""
        self._check_fitted()
        return self._schedule.reheat(factor)

    # ------------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Save to a safetensors file (tensors) with a JSON header (everything else). No pickle."""
        write_model_file(path, "RBFKMeans", *self._file_contents())

    def _file_contents(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """What :meth:`save` writes: the tensors and the JSON-ready metadata (an adapter may add
        its own keys to the metadata; :meth:`load` ignores them)."""
        self._check_fitted()
        params = self.get_params()
        tensors = {"centers": self._centers, "counts": self._counts}
        if isinstance(params["init"], np.ndarray):
            tensors["init"] = torch.from_numpy(np.asarray(params["init"], dtype=np.float64))
            params["init"] = "array"
        if isinstance(params["random_state"], (np.random.Generator, np.random.RandomState)):
            params["random_state"] = None
        if isinstance(params["random_state"], np.integer):
            params["random_state"] = int(params["random_state"])
        meta = {
            "params": params,
            "schedule": vars(self._schedule),
            "rng": self._rng.bit_generator.state,
            "rng_kind": type(self._rng.bit_generator).__name__,
            "n_features_in": self.n_features_in_,
            "feature_names_in": (
                [str(c) for c in self.feature_names_in_]
                if hasattr(self, "feature_names_in_")
                else None
            ),
            "n_steps": self.n_steps_,
            "n_iter": getattr(self, "n_iter_", None),
            "inertia": self.inertia_,
            "labels": None,
        }
        return tensors, meta

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> RBFKMeans:
        """Load a model written by :meth:`save`; refuses foreign or malformed files."""
        return cls._from_file_contents(*read_model_file(path, "RBFKMeans"), path, device)

    @classmethod
    def _from_file_contents(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                            path: str | os.PathLike, device: str | None = None) -> RBFKMeans:
        """The model from what :func:`read_model_file` read off ``path`` (named in errors)."""
        try:
            params = dict(meta["params"])
            if params.get("init") == "array":
                params["init"] = tensors["init"].numpy()
            model = cls(**params)
            model._check_params()
            C, counts = tensors["centers"], tensors["counts"]
            if C.dtype not in (torch.float32, torch.float64) or not counts.is_floating_point():
                raise ValueError(f"centres must be float32 or float64, got {C.dtype}; counts "
                                 f"floating-point, got {counts.dtype}")
            counts = counts.to(torch.float64)
            if C.dim() != 2:
                raise ValueError(f"centres must be 2-D, got shape {tuple(C.shape)}")
            k, d = C.shape
            if (k != model.n_clusters or counts.shape != (k,)
                    or d != _count(meta["n_features_in"], "n_features_in")):
                raise ValueError("tensor shapes do not match the parameters")
            if bool((counts < 0).any()):
                raise ValueError("counts must be >= 0")
            if device is not None or model.device is not None:
                C = C.to(device or model.device)
                counts = counts.to(C.device)
            schedule = TemperatureSchedule(**meta["schedule"])
            if meta["rng_kind"] not in _BIT_GENERATORS:
                raise ValueError(f"unknown random generator {meta['rng_kind']!r}")
            bitgen = getattr(np.random, meta["rng_kind"])()
            bitgen.state = meta["rng"]
            model._set_state(C, counts, schedule, np.random.Generator(bitgen))
            model.n_features_in_ = d
            names = meta.get("feature_names_in")
            if names is not None:
                if (not isinstance(names, list) or len(names) != d
                        or not all(isinstance(n, str) for n in names)):
                    raise ValueError(f"feature_names_in must be {d} names")
                model.feature_names_in_ = np.asarray(names, dtype=object)
            model.n_steps_ = _count(meta["n_steps"], "n_steps")
            if meta.get("n_iter") is not None:
                model.n_iter_ = _count(meta["n_iter"], "n_iter")
            model.inertia_ = float(meta["inertia"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{str(path)!r} is not a valid RBFKMeans model file: {err}") from None
        return model
