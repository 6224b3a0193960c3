"""RBFKMeans: K-Means as an annealed entmax-1.5 RBF network, with scikit-learn's interface.

The scikit-learn face of the engine: it validates and converts input, keeps one model's state
record (:class:`~streamrbf.core.state.ModelState`, a bank of one) and calls
:mod:`streamrbf.core.engine`; every rule of how the model learns is the core's
(:class:`~streamrbf.core.policy.Policy`).
"""

from __future__ import annotations

import functools
import math
import os
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, validate_data

from .core import engine
from .core._kernels import MAPPINGS
from .core._warn import warn_caller
from .core.persistence import ESTIMATOR_PARAMS, load_state, save_state
from .core.policy import INITS, Policy, translate_deprecated
from .core.sample import StreamSample, offered
from .core.state import ModelState, host_array, seed_from
from .core.statistics import BatchResult, SufficientStatistics, is_sparse
from .core.temperature import TemperatureSchedule
from .core.validation import as_batch, check_finite, check_limit, check_real, value_limit

__all__ = ["NotFittedError", "RBFKMeans"]

_DEPRECATED = "deprecated"


# scikit-learn's own parameter validation (``_fit_context`` checks ``_parameter_constraints``);
# the engine's Policy checks the same ranges again for every face (River and Beam have no
# scikit-learn), and a test keeps the two in agreement.
_REAL_POSITIVE = Interval(Real, 0, None, closed="neither")
_AUTO = StrOptions({"auto"})
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
#: The tensors of a stream's sample in a model file (:meth:`StreamSample.record`).
_SAMPLE_TENSORS = ("sample_rows", "sample_keys")


class _FittedModel:
    """The fitted attributes, read off the model's state record (a bank of one)."""

    _state: ModelState

    @property
    def cluster_centers_(self) -> np.ndarray:
        return host_array(self._fitted().centers[0])

    @cluster_centers_.setter
    def cluster_centers_(self, centers: Any) -> None:
        # Assigned centres (scikit-learn lets users set them): copied into the model's record,
        # in its dtype and on its device, with the other fields kept.
        state = self._fitted()
        C = state.centers[0]
        new = np.asarray(host_array(centers) if hasattr(centers, "detach") else centers,
                         dtype=np.float64)
        if new.shape != tuple(C.shape):
            raise ValueError(f"cluster_centers_ must have shape {tuple(C.shape)}, got "
                             f"{new.shape}")
        if not np.isfinite(new).all():
            raise ValueError("cluster_centers_ must be finite")
        value = new.astype(C.dtype) if isinstance(C, np.ndarray) else torch.from_numpy(new).to(
            device=C.device, dtype=C.dtype)
        self._state = state.replace_model(0, centers=value)

    @property
    def counts_(self) -> np.ndarray:
        return host_array(self._fitted().masses[0])

    @property
    def temperature_(self) -> float:
        return float(self._fitted().temperature[0])

    @property
    def temperature_schedule_(self) -> TemperatureSchedule:
        """The model's temperature schedule (start, decay per full step, floor, current value)."""
        s = self._fitted()
        decay = self.get_policy().fit_temperature_factor(float(s.initial_temperature[0]),
                                                         float(s.min_temperature[0]))
        return TemperatureSchedule(float(s.initial_temperature[0]), decay,
                                   float(s.min_temperature[0]), float(s.temperature[0]))

    @property
    def state_(self) -> ModelState:
        """The model's state record (a bank of one), as the engine and the model file hold it."""
        return self._fitted()

    @property
    def centers_tensor_(self) -> torch.Tensor:
        """The centres as a torch tensor on the model's device (no copy)."""
        C = self._fitted().centers[0]
        return torch.from_numpy(C) if isinstance(C, np.ndarray) else C

    @property
    def _n_features_out(self) -> int:
        """Output features of :meth:`transform` (one per centre), for
        ``get_feature_names_out``."""
        return int(self._fitted().n_clusters)

    def _fitted(self) -> ModelState:
        state = getattr(self, "_state", None)
        if state is None:
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' or "
                "'partial_fit' with appropriate arguments before using this estimator."
            )
        return state



class _ModelFile:
    """A model from its state (:meth:`from_state`) or from a model file (:meth:`load`), and back
    to a file (:meth:`save`): the schema of :mod:`streamrbf.core.persistence`."""

    @classmethod
    def from_state(cls, centers: Any, counts: Any, schedule: TemperatureSchedule, *,
                   n_steps: int = 0, **params: Any) -> RBFKMeans:
        """A fitted model from its state: centres ``(k, d)``, decayed masses ``(k,)`` and the
        temperature schedule (for adapters that keep state elsewhere). Its seed comes from
        ``params["random_state"]``.

        Parameters
        ----------
        centers
            The centres, a numpy array or torch tensor (a CUDA tensor keeps the model there).
        counts
            The decayed masses, finite and >= 0.
        schedule
            The temperature schedule: its current value, start and floor are the model's.
        n_steps
            Steps the model has taken.
        **params
            Any other parameter of the estimator.

        Returns
        -------
        RBFKMeans
            A fitted model.

        Examples
        --------
        >>> import numpy as np
        >>> m = RBFKMeans.from_state(np.eye(2), np.ones(2), TemperatureSchedule(1.0), n_steps=3)
        >>> m.predict([[0.9, 0.1]]).tolist(), m.n_steps_, m.temperature_
        ([0], 3, 1.0)
        """
        model = cls(n_clusters=len(centers), **params)
        model.get_policy()
        C = as_batch(centers, estimator=cls.__name__)
        n = np.asarray(counts, dtype=np.float64)
        if n.shape != (C.shape[0],) or not np.isfinite(n).all() or (n < 0).any():
            raise ValueError(f"counts must be {C.shape[0]} finite masses >= 0, got {n.shape}")
        on_host = C.device.type == "cpu"
        C = C.numpy() if on_host else C
        masses = n if on_host else torch.from_numpy(n).to(C.device)
        model._state = ModelState.single(
            C, masses, temperature=schedule.value, initial_temperature=schedule.initial,
            min_temperature=schedule.minimum, n_steps=n_steps,
            seed=seed_from(model.random_state))
        model.n_features_in_ = int(C.shape[1])
        model.n_steps_ = int(n_steps)
        model.inertia_ = math.nan
        return model

    def save(self, path: str | os.PathLike, sample: bool = True) -> None:
        """Save to a safetensors file (tensors) with a JSON header (everything else). No pickle.

        Parameters
        ----------
        path
            The file to write (replaced atomically if it exists).
        sample
            Also write the stream's sample (a model that learnt by :meth:`partial_fit` keeps
            one for its split and merge moves: :mod:`streamrbf.core.sample`, at most 16,384 rows
            and 16 MB), so that the loaded model goes on exactly as this one would. False: a
            smaller file; the loaded model starts a new sample with its next batch.

        Examples
        --------
        >>> import tempfile
        >>> km = RBFKMeans(2, random_state=0).fit([[0.0], [0.2], [5.0], [5.2]])
        >>> path = tempfile.mkdtemp() + "/m.safetensors"
        >>> km.save(path)
        >>> RBFKMeans.load(path).predict([[5.0]]).tolist() == km.predict([[5.0]]).tolist()
        True
        """
        extra, arrays = self._file_extra(), None
        kept = getattr(self, "_sample", None)
        if sample and kept is not None and self.split_merge:
            extra["sample"], arrays = kept.record()
        save_state(path, "RBFKMeans", self._fitted(), self._file_params(), extra, arrays)

    def _file_params(self) -> dict[str, Any]:
        params = {k: v for k, v in self.get_params().items() if not _is_deprecated_default(v)}
        if isinstance(params["random_state"], (np.random.Generator, np.random.RandomState)):
            params["random_state"] = None
        if callable(params["init"]):  # a function is not data: the centres it gave are
            params["init"] = getattr(self, "_init_centres", "k-means++")
        # numpy scalars (np.int64(8) clusters, np.float32 temperatures) as JSON numbers
        return {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}

    def _file_extra(self) -> dict[str, Any]:
        return {"n_iter": getattr(self, "n_iter_", None), "inertia": self.inertia_}

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> RBFKMeans:
        """Load a model written by :meth:`save`; refuses foreign or malformed files.

        Parameters
        ----------
        path
            The model file.
        device
            Where to put the model (``"cpu"``, ``"cuda"``); by default where its ``device``
            parameter says (the CPU when None).

        Returns
        -------
        RBFKMeans
            The fitted model.

        Raises
        ------
        ValueError
            For a file that is not a valid streamrbf model (the message names the file).

        Examples
        --------
        >>> RBFKMeans.load("no-such-file.safetensors")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no model file at 'no-such-file.safetensors'
        """
        state, params, extra = load_state(path, "RBFKMeans", _SAMPLE_TENSORS)
        invalid = f"{str(path)!r} is not a valid RBFKMeans model file"
        try:
            model = cls(**params)
            model._validate_params()  # scikit-learn's constraints, then the policy's rules
            model.get_policy()
            n_iter, inertia = _file_fit_report(extra)
            kept = None
            if "sample" in extra:
                kept = StreamSample.from_record(extra["sample"], extra["arrays"],
                                                state.n_features)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{invalid}: {err}") from None
        if model.n_clusters != state.n_clusters:
            raise ValueError(f"{invalid}: n_clusters {model.n_clusters} but "
                             f"{state.n_clusters} centres")
        target = device or model.device
        if target is not None and torch.device(target).type != "cpu":
            try:
                state.centers = torch.from_numpy(state.centers).to(target)
                state.masses = torch.from_numpy(state.masses).to(target)
            except (RuntimeError, AssertionError, TypeError) as err:  # (no such device here)
                raise ValueError(f"{str(path)!r}: cannot place the model on {target!r}: "
                                 f"{err}") from None
        model._state = state
        # (a stream on a device, or with its moves off, keeps no sample)
        model._sample = kept if not state.on_device and model.split_merge else None
        model.n_features_in_ = state.n_features
        if state.feature_names is not None:
            model.feature_names_in_ = np.asarray(state.feature_names, dtype=object)
        model.n_steps_ = int(state.n_steps[0])
        if n_iter is not None:
            model.n_iter_ = n_iter
        model.inertia_ = inertia
        return model


class _Inputs:
    """How the scikit-learn face takes its input: validation (scikit-learn's ``validate_data`` for
    arrays, frames and CSR matrices; the engine's for tensors), weights, a callable ``init``,
    labels and reports."""

    _state: ModelState

    def _on_device(self, X: Any) -> bool:
        """Whether ``X`` goes the torch way: a tensor, or a model on an accelerator."""
        if isinstance(X, torch.Tensor):
            return True
        state = getattr(self, "_state", None)
        if state is not None:
            return state.on_device
        return self.device is not None and torch.device(self.device).type != "cpu"

    def _validate(self, X: Any, *, reset: bool, finite: bool = True) -> Any:
        """``X`` as the engine takes it: a numpy array or CSR matrix for CPU models (validated
        by scikit-learn's ``validate_data``: feature names and counts, dtypes, finiteness), a
        torch tensor on the model's device otherwise; values beyond the value rule's limit for
        the model's dtype are refused either way."""
        state = None if reset else self._fitted()
        if self._on_device(X):
            return self._validate_tensor(X, state, finite)
        model_dtype = self.dtype if state is None else state.centers.dtype
        if state is not None and self._passes_unchanged(X):
            Xv = X  # what validate_data returns for it, without its ~0.2 ms of dataframe checks
        else:
            if not is_sparse(X):
                check_real(X)  # the value rule's errors, naming a non-numeric column
            Xv = validate_data(self, X, reset=reset, accept_sparse="csr",
                               dtype=[np.float64, np.float32], order="C",
                               accept_large_sparse=False, ensure_all_finite=False)
        check_finite(Xv)
        target = np.dtype(model_dtype) if model_dtype is not None else Xv.dtype
        # The value rule on the values as given, before a narrower dtype could make them inf.
        names = getattr(self, "feature_names_in_", None)
        values = Xv.data[None, :] if is_sparse(Xv) else Xv
        check_limit(values, value_limit(Xv.shape[1], target), names if not is_sparse(Xv)
                    else None)
        if Xv.dtype != target:
            Xv = Xv.astype(target)
        return Xv

    def _passes_unchanged(self, X: Any) -> bool:
        """Whether a fitted model's ``validate_data(X, reset=False)`` would return ``X`` itself
        without a warning: a C-ordered float numpy array of the fitted width, non-empty, for a
        model fitted without feature names. A stream's batches usually are."""
        return (type(X) is np.ndarray and X.ndim == 2 and X.dtype in _FLOATS
                and X.flags.c_contiguous and X.shape[0] > 0
                and X.shape[1] == getattr(self, "n_features_in_", None)
                and not hasattr(self, "feature_names_in_"))

    def _validate_tensor(self, X: Any, state: ModelState | None, finite: bool) -> Any:
        if state is None:
            validate_data(self, X, reset=True, skip_check_array=True)
            dtype = {"float32": torch.float32, "float64": torch.float64}.get(self.dtype)
            t = as_batch(X, dtype=dtype, device=self.device, estimator=type(self).__name__)
            return t.numpy() if t.device.type == "cpu" else t
        validate_data(self, X, reset=False, skip_check_array=True)
        C = state.centers[0]
        t = as_batch(X, n_features=self.n_features_in_,
                     dtype=torch.float32 if C.dtype in (np.float32, torch.float32)
                     else torch.float64,
                     device=None if isinstance(C, np.ndarray) else C.device,
                     estimator=type(self).__name__, finite=finite or not state.on_device)
        return t.numpy() if isinstance(C, np.ndarray) else t

    def _weights(self, sample_weight: Any, X: Any) -> np.ndarray | None:
        """scikit-learn's checks of ``sample_weight`` (shape, finite, >= 0), as float64."""
        if sample_weight is None:
            return None
        return _check_sample_weight(sample_weight, host_array(X) if isinstance(
            X, torch.Tensor) else X, dtype=np.float64, ensure_non_negative=True)

    def _start(self, X: Any, policy: Policy, seed: int) -> Policy:
        """The policy a model starts with: a callable ``init`` is called now (with a
        ``RandomState`` drawn from the model's seed) and its centres checked."""
        if self.init_size is not None and self.init_size < self.n_clusters:
            warn_caller(f"init_size={self.init_size} should be larger than n_clusters="
                        f"{self.n_clusters}. Setting it to n_clusters.", RuntimeWarning)
        if not callable(self.init):
            return policy
        from dataclasses import replace

        rng = np.random.RandomState(int(seed % 2**32))
        centres = self.init(X, int(self.n_clusters), rng)
        if isinstance(centres, torch.Tensor):
            centres = host_array(centres)
        centres = np.array(centres.toarray() if is_sparse(centres) else centres,
                           dtype=np.float64)
        self._init_centres = centres
        return replace(policy, init=centres)

    def _set_labels(self, labels: Any) -> None:
        if self.compute_labels:
            self.labels_ = host_array(labels).astype(np.int32)

    def _feature_names(self) -> tuple[str, ...] | None:
        names = getattr(self, "feature_names_in_", None)
        return None if names is None else tuple(str(n) for n in names)

    def _progress(self) -> Any:
        """``fit``'s report of each seeding, when ``verbose``."""
        if not self.verbose:
            return None

        def report(trial: int, n_iter: int, temperature: float, inertia: float,
                   reason: str | None) -> None:
            if reason is not None:  # (scikit-learn's words)
                print(f"Converged ({reason}) at iteration {n_iter}")
            print(f"Seeding {trial}: {n_iter} iterations, temperature {temperature:.4g}, "
                  f"inertia {inertia:.6g}")
        return report

    def _warn_if_fewer_clusters(self) -> None:
        """scikit-learn's warning when the points fall into fewer clusters than asked for."""
        distinct = len(np.unique(self.labels_))
        if distinct < int(self.n_clusters):
            warn_caller(f"Number of distinct clusters ({distinct}) found smaller than "
                        f"n_clusters ({self.n_clusters}). Possibly due to duplicate points in X.",
                        ConvergenceWarning)


class _ShardSteps:
    """Steps from statistics summed over shards, and reheating (for pipelines that split a batch
    over workers, or react to drift)."""

    _state: ModelState

    def statistics(self, X: Any, sample_weight: Any = None) -> SufficientStatistics:
        """Sufficient statistics of ``X`` against the current centres and temperature (no step):
        sum those of several shards and :meth:`apply_statistics` takes exactly the step that
        ``partial_fit`` on their union would take (without re-seeding).

        Parameters
        ----------
        X
            A batch (or shard) ``(n_samples, n_features)``.
        sample_weight
            Weight of each row (None: all 1).

        Returns
        -------
        SufficientStatistics
            Masses, weighted sums, weighted distortion and event count.

        Examples
        --------
        >>> km = RBFKMeans(2, random_state=0).fit([[0.0], [0.2], [5.0], [5.2]])
        >>> sorted(km.statistics([[0.1], [5.1], [5.0]]).mass.round(3).tolist())
        [1.0, 2.0]
        """
        state = self._fitted()
        Xv = self._validate(X, reset=False)
        return engine.statistics(state, Xv, self.get_policy(),
                                 sample_weight=self._weights(sample_weight, Xv))

    def apply_statistics(self, stats: SufficientStatistics) -> RBFKMeans:
        """Take one step from (merged) sufficient statistics, as :meth:`partial_fit` does, but
        without re-seeding (which needs the points).

        Parameters
        ----------
        stats
            Statistics from :meth:`statistics`, summed over shards.

        Returns
        -------
        RBFKMeans
            The estimator itself.

        Examples
        --------
        >>> km = RBFKMeans(2, random_state=0).fit([[0.0], [0.2], [5.0], [5.2]])
        >>> s = km.statistics([[0.1], [5.1]]) + km.statistics([[5.0]])
        >>> km.apply_statistics(s).n_steps_ == km.n_steps_
        True
        """
        self._state = engine.apply_statistics(self._fitted(), stats, self.get_policy())
        self.n_steps_ += 1
        return self

    def reheat(self, factor: float | None = None) -> float:
        """Raise the temperature when the stream drifts: by ``factor`` (capped at the initial
        temperature), or back to the initial temperature.

        Parameters
        ----------
        factor
            Multiplier >= 1, or None to return to the initial temperature.

        Returns
        -------
        float
            The new temperature.

        Examples
        --------
        >>> km = RBFKMeans(2, random_state=0).fit([[0.0], [0.2], [5.0], [5.2]])
        >>> km.reheat() > km.temperature_schedule_.minimum
        True
        """
        self._state = engine.reheat(self._fitted(), factor)
        return self.temperature_



class RBFKMeans(_ModelFile, _FittedModel, _Inputs, _ShardSteps, ClassNamePrefixFeaturesOutMixin,
                ClusterMixin, TransformerMixin, BaseEstimator):
    r"""K-Means as a radial-basis-function network, trained by annealed mini-batch gradient steps.

    A point's responsibilities are entmax-1.5 of the logits :math:`-\lVert x - c_k \rVert^2 / T`:
    exactly sparse (only centres within :math:`2T` of the nearest are non-zero), differentiable,
    and never NaN. Centres move by the step :math:`c_k \leftarrow c_k + (s_k - m_k c_k) / n_k`
    computed from each batch's sufficient statistics (masses :math:`m_k`, weighted sums
    :math:`s_k`) with decayed masses :math:`n_k \leftarrow a\,n_k + m_k`. The temperature anneals
    by ``temperature_decay`` per step down to ``min_temperature``: soft clustering anneals into
    exact K-Means (once :math:`2T` is below every point's margin, a full-batch step *is* one Lloyd
    iteration). A drop-in replacement for scikit-learn's ``MiniBatchKMeans``.

    Parameters
    ----------
    n_clusters
        Number of centres ``k``.
    init
        ``"k-means++"`` (greedy, seeded from ``random_state``), ``"random"`` (``n_clusters``
        distinct rows drawn at random), an array of shape ``(k, d)``, or a callable
        ``init(X, n_clusters, random_state)`` returning such an array (``random_state`` is a
        ``numpy.random.RandomState`` drawn from this estimator's seed). Seedings and draws
        weigh rows by ``sample_weight``.
    n_init
        Number of seedings tried, each annealed on the initialisation data; the one with the
        lowest K-Means objective is kept. ``"auto"``: 1 for :meth:`fit` and 5 for the first
        :meth:`partial_fit` batch (1 when that batch is large). Ignored when ``init`` is an array
        or a callable.
    initial_temperature
        Starting temperature: a float > 0, or ``"auto"``: twice the mean squared distance of the
        initialisation data to its nearest initial centre for k-means++ seeds, half that mean
        for given centres (an ``init`` array), which are kept rather than melted down.
    temperature_decay
        Factor applied to the temperature per step, in (0, 1]; 1 keeps it constant. ``"auto"``:
        0.9 per iteration of :meth:`fit`, and 0.9 per 100 events of a stream (at most per step).
    min_temperature
        Floor of the temperature: a float >= 0, or ``"auto"`` (1e-3 x the starting temperature).
    mapping
        ``"entmax15"`` (sparse, default), ``"softmax"`` (stable) or ``"hard"`` (plain K-Means).
    batch_size
        Events per step in :meth:`fit`; ``None`` means full batch (each step one soft-Lloyd /
        EM iteration). :meth:`partial_fit` takes one step per call whatever this is.
    init_size
        Rows the seedings (and the automatic starting temperature) are drawn from: a random
        sample of that many rows (at least ``n_clusters``); None: all rows, up to 100,000.
    max_iter
        Full-batch iterations, or epochs over the data when ``batch_size`` is set (epoch ``e``
        ends after ``floor(e * n_samples / batch_size)`` batches in all, so ``n_iter_`` is
        ``ceil(n_steps_ * batch_size / n_samples)`` as in ``MiniBatchKMeans``).
    split_merge
        Split and merge moves at zero temperature (largest-error clusters split along their
        principal axes, the least useful centres removed, Lloyd's iterations after each) while
        they lower the inertia: at the end of :meth:`fit` within ``max_iter``, and in
        :meth:`partial_fit` on a sample of a numpy stream each time its events double (about a
        quarter of the throughput; :mod:`streamrbf.core.sample`). False: annealing alone.
    max_no_improvement
        Mini-batch :meth:`fit` only: once cold, stop after this many consecutive batches that
        do not improve the smoothed batch inertia (``MiniBatchKMeans``'s rule). None (the
        default): annealing and ``tol`` decide when to stop.
    tol
        Stop :meth:`fit` when the squared centre shift of a step (an epoch in mini-batch mode) is
        below ``tol`` x the mean feature variance, and the clustering is hard (every responsibility
        one-hot, or the temperature at its floor).
    half_life
        Forgetting: events after which the masses have halved (centres follow drift). None never
        forgets; ``"auto"``: :meth:`fit` never forgets, a stream of :meth:`partial_fit` calls
        halves its masses every ``max(100, 4 * n_clusters)`` steps.
    reassignment_ratio
        A centre whose decayed mass falls below this fraction of the largest one is re-seeded on a
        poorly served point of the current batch (drawn in proportion to its squared distance to the
        nearest centre). A full-batch ``fit`` re-seeds only empty centres, onto the farthest points.
    random_state
        Seed (int), ``numpy.random.Generator`` or None; every random choice comes from it.
    device
        Torch device for the state (``"cpu"``, ``"cuda"``, ...); ``None`` follows the first input
        (CUDA tensors keep the model on their device).
    dtype
        ``"float32"`` or ``"float64"`` for the centres; ``None`` follows the first input.
    compile
        On accelerators, run :meth:`partial_fit`'s step through ``torch.compile``: ``True``
        (default mode) or ``"reduce-overhead"`` (CUDA graphs). Ignored on CPU, where the step is
        a compiled numba kernel already.
    compute_labels
        Whether :meth:`partial_fit` sets ``labels_`` (and ``inertia_``) for its batch, from the
        step's own pass: each row's nearest centre before the step (no second pass).
    verbose
        Print one line per seeding of :meth:`fit` (iterations, temperature, objective) when > 0.
    temperature
        Deprecated: the old name of ``initial_temperature``.
    decay
        Deprecated: a forgetting factor of the masses per step; use ``half_life``.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    counts_ : ndarray of shape (n_clusters,)
        Decayed masses :math:`n_k`.
    temperature_ : float
        Current temperature (per model: each stream anneals on its own).
    labels_ : ndarray of shape (n_samples,), int32
        Nearest centre of each training point after :meth:`fit`; of each row of the last batch
        (before its step) after :meth:`partial_fit` with ``compute_labels``.
    inertia_ : float
        Sum of (weighted) squared distances to the nearest centre: of the training data after
        :meth:`fit`, of the last batch (before its step) after :meth:`partial_fit`.
    n_steps_ : int
        Gradient steps taken so far by the model (of the kept seeding, when ``n_init`` > 1): the
        temperature has been annealed this many times.
    n_iter_ : int
        Iterations (epochs) run by the last :meth:`fit`.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.

    Notes
    -----
    A scikit-learn estimator (``BaseEstimator``, ``ClusterMixin``, ``TransformerMixin``):
    parameters are validated by scikit-learn's constraints, input by its ``validate_data``
    (dense or CSR sparse; CSR products stay sparse, centres are dense). scikit-learn's own
    k-means tests pass with it in ``MiniBatchKMeans``'s place (tests/sklearn_suite). Torch
    tensors are taken as they are (CUDA tensors keep the model on their device). Scoring works
    in bounded chunks: :meth:`predict_proba` of a million rows needs little memory beyond its
    output.

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

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions(set(INITS)), callable, "array-like"],
        "n_init": [_AUTO, Interval(Integral, 1, None, closed="left")],
        "initial_temperature": [_AUTO, _REAL_POSITIVE],
        "temperature_decay": [_AUTO, Interval(Real, 0, 1, closed="right")],
        "min_temperature": [_AUTO, Interval(Real, 0, None, closed="left")],
        "mapping": [StrOptions(set(MAPPINGS))],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "max_no_improvement": [Interval(Integral, 1, None, closed="left"), None],
        "split_merge": ["boolean"],
        "init_size": [Interval(Integral, 1, None, closed="left"), None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "half_life": [_AUTO, _REAL_POSITIVE, None],
        "reassignment_ratio": [Interval(Real, 0, 1, closed="left")],
        "random_state": ["random_state", np.random.Generator],
        "device": [str, None],
        "dtype": [StrOptions({"float32", "float64"}), None],
        "compile": ["boolean", StrOptions({"default", "reduce-overhead"})],
        "compute_labels": ["boolean"],
        "verbose": ["verbose"],
        "temperature": [Hidden(StrOptions({_DEPRECATED})), _AUTO, _REAL_POSITIVE],
        "decay": [Hidden(StrOptions({_DEPRECATED})), Interval(Real, 0, 1, closed="right")],
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        n_init: int | str = "auto",
        initial_temperature: float | str = "auto",
        temperature_decay: float | str = "auto",
        min_temperature: float | str = "auto",
        mapping: str = "entmax15",
        batch_size: int | None = None,
        init_size: int | None = None,
        max_iter: int = 300,
        max_no_improvement: int | None = None,
        split_merge: bool = True,
        tol: float = 1e-4,
        half_life: float | str | None = "auto",
        reassignment_ratio: float = 0.01,
        random_state: int | np.random.Generator | None = None,
        device: str | None = None,
        dtype: str | None = None,
        compile: bool | str = False,
        compute_labels: bool = True,
        verbose: int = 0,
        temperature: float | str = _DEPRECATED,
        decay: float | str = _DEPRECATED,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.initial_temperature = initial_temperature
        self.temperature_decay = temperature_decay
        self.min_temperature = min_temperature
        self.mapping = mapping
        self.batch_size = batch_size
        self.init_size = init_size
        self.max_iter = max_iter
        self.max_no_improvement = max_no_improvement
        self.split_merge = split_merge
        self.tol = tol
        self.half_life = half_life
        self.reassignment_ratio = reassignment_ratio
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.compile = compile
        self.compute_labels = compute_labels
        self.verbose = verbose
        self.temperature = temperature
        self.decay = decay

    # ------------------------------------------------------------------------- parameters
    def get_policy(self, *, warn: bool = False) -> Policy:
        """The learning policy these parameters define (checked: a bad parameter raises
        ``ValueError`` naming it; deprecated names are translated, with a DeprecationWarning
        when ``warn``).

        Parameters
        ----------
        warn
            Whether to warn about deprecated parameters (what ``fit`` does).

        Returns
        -------
        Policy
            What the engine learns with.

        Examples
        --------
        >>> RBFKMeans(3, half_life=500).get_policy().forgetting(100)  # per 100 events
        0.870550563296124
        """
        # (the parameters as get_params gives them, without its signature inspection per step)
        values = {name: getattr(self, name) for name in _param_names(type(self))}
        cached = getattr(self, "_policy_of", None)
        # The same parameter objects as last time (each step asks): the same policy.
        if (not warn and cached is not None and len(cached[0]) == len(values)
                and all(a is b for a, b in zip(cached[0], values.values()))):
            return cached[1]
        params = {k: v for k, v in values.items() if not _is_deprecated_default(v)}
        if callable(params["init"]):  # resolved into centres when a model starts (_start)
            params["init"] = "k-means++"
        policy = Policy.from_params(translate_deprecated(params, "RBFKMeans", warn),
                                    ignore=ESTIMATOR_PARAMS)
        if self.device is not None:
            _check_device(self.device)
        if self.dtype not in (None, "float32", "float64"):
            raise ValueError(f"dtype must be None, 'float32' or 'float64', got {self.dtype!r}")
        if self.compile not in (False, True, "default", "reduce-overhead"):
            raise ValueError("compile must be False, True, 'default' or 'reduce-overhead', got "
                             f"{self.compile!r}")
        self._policy_of = (tuple(values.values()), policy)
        return policy

    # ------------------------------------------------------------------------------ learning
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> RBFKMeans:
        """Fit from scratch: the best of ``n_init`` seedings, each annealed on ``X`` until its
        clustering is hard and stable.

        Parameters
        ----------
        X
            Data ``(n_samples, n_features)``: numpy, pandas, scipy sparse (CSR), torch (CUDA
            tensors fit on the device) or nested lists.
        y
            Ignored (scikit-learn protocol).
        sample_weight
            Weight of each row (None: all 1); a row of weight ``w`` counts as ``w`` copies of it.

        Returns
        -------
        RBFKMeans
            The fitted estimator.

        Examples
        --------
        >>> km = RBFKMeans(2, random_state=0).fit([[0.0], [0.2], [5.0], [5.2]])
        >>> sorted(km.cluster_centers_.ravel().round(1).tolist()), len(set(km.labels_.tolist()))
        ([0.1, 5.1], 2)
        """
        policy = self.get_policy(warn=True)
        Xv = self._validate(X, reset=True)
        w = self._weights(sample_weight, Xv)
        seed = seed_from(self.random_state)
        policy = self._start(Xv, policy, seed)
        r = engine.fit(Xv, policy, seed, feature_names=self._feature_names(),
                       sample_weight=w, progress=self._progress())
        self._state, self._sample = r.state, None
        self.n_steps_ = int(r.state.n_steps[0])
        self.n_iter_ = r.n_iter
        self.labels_ = host_array(r.labels).astype(np.int32)
        self.inertia_ = r.inertia
        self._warn_if_fewer_clusters()
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> RBFKMeans:
        """One annealed gradient step on the batch ``X``.

        The first call initialises: the best of ``n_init`` seedings of the batch, each annealed
        on it until hard, so a stream starts from a good clustering of its first batch. Later
        calls take exactly one step each (and, with ``split_merge``, a numpy stream's moves on
        its sample each time its events double). The model is unchanged if the call raises.

        Parameters
        ----------
        X
            A batch ``(n_samples, n_features)``.
        y
            Ignored (scikit-learn protocol).
        sample_weight
            Weight of each row (None: all 1): its share of the step.

        Returns
        -------
        RBFKMeans
            The estimator itself.

        Examples
        --------
        >>> km = RBFKMeans(2, random_state=0).partial_fit([[0.0], [0.2], [5.0], [5.2]])
        >>> km.partial_fit([[0.1], [5.1]]).n_steps_ > 0
        True
        """
        if not hasattr(self, "_state"):
            policy = self.get_policy(warn=True)
            Xv = self._validate(X, reset=True)
            w = self._weights(sample_weight, Xv)
            seed = seed_from(self.random_state)
            policy = self._start(Xv, policy, seed)
            r = engine.initialise(Xv, policy, seed, self._feature_names(), sample_weight=w)
            self._state, self._sample = r.state, None
            self.n_steps_ = int(r.state.n_steps[0])
            self.inertia_ = r.inertia
            self._set_labels(r.labels)
            self._offer(Xv, w)
            return self
        self._learn(X, keep=self.compute_labels, sample_weight=sample_weight)
        return self

    def _offer(self, Xv: Any, w: Any) -> None:
        """Offer a learnt batch to the stream's sample (:func:`~streamrbf.core.sample.offered`;
        after ``fit`` or ``load`` the sample starts with the next batch)."""
        if not self._state.on_device:
            self._sample = offered(getattr(self, "_sample", None), self._state,
                                   self.get_policy(), Xv, w)

    def score_then_learn(self, X: Any) -> BatchResult:
        """Score the batch ``X`` with the model as it is, then take :meth:`partial_fit`'s step on
        it, in one pass over the data (prequential evaluation; what streaming adapters do with
        every batch). The model must be fitted.

        Parameters
        ----------
        X
            A batch ``(n_samples, n_features)``.

        Returns
        -------
        BatchResult
            The batch's result before the step: ``labels`` and ``nearest`` (what :meth:`predict`
            and the squared distances would have given), the statistics the step used and, for
            CPU models, the sparse ``memberships`` (what :meth:`predict_proba` would have given).

        Examples
        --------
        >>> import numpy as np
        >>> km = RBFKMeans(2, random_state=0).partial_fit([[0.0], [0.2], [5.0], [5.2]])
        >>> X = np.array([[0.1], [5.1], [2.6]])
        >>> before = km.predict(X)
        >>> r = km.score_then_learn(X)   # the point halfway has two non-zero memberships
        >>> bool((r.labels == before).all()), r.memberships.length.tolist()
        (True, [1, 1, 2])
        """
        self._fitted()
        return self._learn(X, keep=True)

    def _learn(self, X: Any, keep: bool, sample_weight: Any = None) -> BatchResult:
        state = self._fitted()
        Xv = self._validate(X, reset=False, finite=False)
        w = self._weights(sample_weight, Xv)
        self._state, r = engine.step(state, Xv, self.get_policy(), keep=keep,
                                     compile=self.compile, sample_weight=w)
        self.n_steps_ += 1
        self._offer(Xv, w)
        # (an accelerator step that kept nothing has no distances)
        self.inertia_ = math.nan if r.nearest is None else engine.weighted_sum(r.nearest, w)
        if r.labels is not None:
            self._set_labels(r.labels)
        return r

    # ------------------------------------------------------------------------- inference
    def predict(self, X: Any) -> np.ndarray | torch.Tensor:
        """Index of the nearest centre of each row (the arg-max membership under every mapping).

        Parameters
        ----------
        X
            Data ``(n_samples, n_features)``.

        Returns
        -------
        ndarray or torch.Tensor of shape (n_samples,)
            Cluster indices, int32 (an int64 tensor for tensor input).

        Examples
        --------
        >>> km = RBFKMeans(2, random_state=0).fit([[0.0], [0.2], [5.0], [5.2]])
        >>> km.predict([[0.1], [5.0]]).tolist() == km.labels_[[0, 2]].tolist()
        True
        """
        labels, _ = engine.nearest(self._fitted(), self._validate(X, reset=False))
        if isinstance(X, torch.Tensor):
            return _output(X, labels)
        return host_array(labels).astype(np.int32)

    def predict_proba(self, X: Any) -> np.ndarray | torch.Tensor:
        """Memberships ``(n, k)`` at the current temperature; rows sum to 1, exact zeros with
        entmax-1.5. Computed in bounded chunks: the memory needed beyond the output is small.

        Parameters
        ----------
        X
            Data ``(n_samples, n_features)``.

        Returns
        -------
        ndarray or torch.Tensor of shape (n_samples, n_clusters)
            Memberships in the model's dtype (its centres'; ``X`` is converted to it).

        Examples
        --------
        >>> km = RBFKMeans(2, random_state=0).fit([[0.0], [0.2], [5.0], [5.2]])
        >>> km.predict_proba([[0.1], [2.6]]).sum(axis=1).tolist()
        [1.0, 1.0]
        """
        P = engine.memberships(self._fitted(), self._validate(X, reset=False), self.get_policy())
        return _output(X, P)

    def transform(self, X: Any) -> np.ndarray | torch.Tensor:
        """Euclidean distances ``(n, k)`` to every centre.

        Parameters
        ----------
        X
            Data ``(n_samples, n_features)``.

        Returns
        -------
        ndarray or torch.Tensor of shape (n_samples, n_clusters)
            Distances in the model's dtype (its centres'; ``X`` is converted to it).

        Examples
        --------
        >>> km = RBFKMeans(2, random_state=0).fit([[0.0], [0.2], [5.0], [5.2]])
        >>> km.transform([[0.1]]).round(1).tolist()[0] in ([0.0, 5.0], [5.0, 0.0])
        True
        """
        return _output(X, engine.distances(self._fitted(), self._validate(X, reset=False)))

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Opposite of the K-Means objective of ``X`` (higher is better, as in scikit-learn).

        Parameters
        ----------
        X
            Data ``(n_samples, n_features)``.
        y
            Ignored.
        sample_weight
            Weight of each row (None: all 1).

        Returns
        -------
        float
            Minus the (weighted) sum of squared distances to the nearest centre.

        Examples
        --------
        >>> km = RBFKMeans(2, random_state=0).fit([[0.0], [0.2], [5.0], [5.2]])
        >>> round(km.score([[0.1], [5.1]]), 6)
        -0.0
        """
        Xv = self._validate(X, reset=False)
        _, d2 = engine.nearest(self._fitted(), Xv)
        return -engine.weighted_sum(d2, self._weights(sample_weight, Xv))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_state")



def _check_device(device: Any) -> None:
    """A ``ValueError`` unless ``device`` names a torch device that can hold a model's data."""
    try:
        kind = torch.device(device).type if isinstance(device, str) else None
    except (RuntimeError, TypeError, ValueError):
        kind = None
    if kind is None or kind == "meta":
        raise ValueError(f"device must be None or a torch device with data, such as 'cpu' or "
                         f"'cuda', got {device!r}")


def _file_fit_report(extra: dict[str, Any]) -> tuple[int | None, float]:
    """``(n_iter, inertia)`` of a model file's extra fields, checked: an int >= 0 or None, a
    real number or NaN."""
    n_iter, inertia = extra.get("n_iter"), extra.get("inertia", math.nan)
    if n_iter is not None and not (type(n_iter) is int and 0 <= n_iter < 2**63):
        raise ValueError(f"n_iter must be None or an int >= 0, got {n_iter!r}")
    if inertia is None:
        return n_iter, math.nan
    try:
        value = float(inertia) if type(inertia) in (int, float) else None
    except OverflowError:
        value = None
    if value is None or math.isinf(value):
        raise ValueError(f"inertia must be a finite number, got {inertia!r}")
    return n_iter, value


@functools.cache
def _param_names(cls: type) -> tuple[str, ...]:
    """The constructor's parameter names, as ``get_params`` finds them (once per class)."""
    return tuple(cls._get_param_names())


def _is_deprecated_default(value: Any) -> bool:
    return isinstance(value, str) and value == _DEPRECATED


def _output(X_raw: Any, out: Any) -> Any:
    """Tensors for tensor input (on the input's device), numpy otherwise."""
    if isinstance(X_raw, torch.Tensor):
        t = torch.from_numpy(out) if isinstance(out, np.ndarray) else out
        return t.to(X_raw.device)
    return host_array(out)
