"""River adapter: annealed entmax-1.5 K-Means for streams of dict events.

:class:`RBFKMeans` is a ``river.base.Clusterer`` that learns one event (or one mini-batch) at a
time; :class:`KeyedRBFKMeans` keeps one such model per value of a key field, with bounded memory.
The step, the temperature and the seeding are those of the core (:mod:`streamrbf.statistics`,
:mod:`streamrbf.temperature`, :mod:`streamrbf.seeding`); the per-event arithmetic runs in the
compiled kernels of :mod:`streamrbf._online_kernels`, so torch is never called per event.
"""

from __future__ import annotations

import collections
import math
import numbers
from array import array
from typing import Any

import numpy as np
from river import base

from . import _online_kernels as _ok
from ._kernels import MAPPING_CODES
from .temperature import TemperatureSchedule, auto_temperature, logit_divisor

__all__ = ["KeyedRBFKMeans", "RBFKMeans"]

# A centre is starved (and re-seeded) when its decayed mass falls below this share of the largest.
_RESEED_RATIO = 0.01
# Initialisation: k-means++ draws on the warm-up buffer, and annealed soft-Lloyd steps per draw.
_N_INIT = 5
_INIT_STEPS = 3


class RBFKMeans(base.Clusterer):
    r"""Streaming K-Means as an annealed entmax-1.5 RBF network, one event at a time.

    Each event $x$ gets responsibilities $p_k$ from the squared distances $d_k = \|x - c_k\|^2$
    at temperature $T$: entmax-1.5 of the logits $-d_k / T$, which is exactly sparse (only centres
    within $2T$ of the nearest share the event) and equals the hard K-Means assignment once $2T$
    is below the margin. Every `batch_size` events the model takes one gradient step with step
    size $1 / (2 n_k)$ on the buffered events' summed statistics $m_k = \sum p_k$,
    $s_k = \sum p_k x$:

    $$n_k \leftarrow a\, n_k + m_k, \qquad c_k \leftarrow c_k + (s_k - m_k c_k) / n_k,$$

    which is the running mean (MacQueen) when $a = 1$ and forgets old events geometrically when
    $a < 1$. The temperature starts from the data ("auto") and decays after every step, so the
    model anneals from soft, competing centres to K-Means. No step size needs tuning.

    The first `warmup` events only fill a buffer; then k-means++ picks the initial centres from it
    and the buffered events are learnt in order. Until then `predict_one` returns 0 and
    `predict_proba_one` returns `{}`. A centre whose decayed mass falls below 1% of the largest
    is moved onto a poorly served recent event (drawn with probability proportional to its
    squared distance to the nearest centre), checked every `warmup` steps.

    The feature set is fixed by the first event. A missing or new feature, a value that is not a
    real number, NaN or infinity raises a `ValueError` naming the feature, and the model is left
    exactly as it was (unless `missing="zero"`).

    Parameters
    ----------
    n_clusters
        Number of centres.
    batch_size
        Events per gradient step. 1 gives pure online updates.
    initial_temperature
        Starting temperature, or "auto": half the mean squared distance of the warm-up events to
        their nearest initial centre.
    temperature_decay
        Factor applied to the temperature after every step.
    min_temperature
        Floor of the temperature (0 lets it approach 0, i.e. hard K-Means).
    mapping
        "entmax15" (sparse, default), "softmax" or "hard" (plain online K-Means).
    decay
        Forgetting factor $a$ of the masses per step; 1 never forgets.
    warmup
        Events buffered to initialise the centres (at least `n_clusters`); None means
        `max(4 * n_clusters, 32)`.
    missing
        "error": a missing or new feature raises `ValueError`. "zero": a missing feature, `None`
        or NaN counts as 0 and new features are ignored (infinities and non-numbers still raise).
    drift_detector
        Optional `river.drift` detector (cloned), fed the squared distance of every event to its
        nearest centre. On a detected rise of that distortion the temperature is re-heated, the
        masses are scaled by `drift_forget` (so the centres move fast again), and the next
        `warmup` events are buffered: if fresh k-means++ centres explain them better than the
        current centres, the model restarts from those.
    reheat_factor
        On drift, multiply the temperature by this factor (capped at the initial temperature);
        None re-heats to the initial temperature.
    drift_forget
        Factor applied to all masses when a drift is detected (0 forgets everything).
    seed
        Seed of every random choice (k-means++, re-seeding). Same seed, same data: same model.

    Attributes
    ----------
    centers : dict
        Centre of each cluster, `{cluster: {feature: value}}` (`{}` before initialisation).
    temperature : float
        Current temperature (NaN before initialisation).
    counts : dict
        Decayed mass of each cluster.
    n_drifts : int
        Number of drifts detected.

    Examples
    --------

    >>> from river import metrics
    >>> from sklearn.datasets import make_blobs
    >>> from streamrbf.river import RBFKMeans

    >>> X, y = make_blobs(n_samples=2000, centers=4, cluster_std=1.0, random_state=0)
    >>> model = RBFKMeans(n_clusters=4, seed=42)
    >>> metric = metrics.AdjustedRand()

    >>> for xi, yi in zip(X, y):
    ...     x = {"a": xi[0], "b": xi[1]}
    ...     metric.update(int(yi), model.predict_one(x))
    ...     model.learn_one(x)

    >>> metric
    AdjustedRand: 0.9...

    >>> model.predict_proba_one({"a": 1.0, "b": 4.0})
    {...: 1.0}

    References
    ----------
    [^1]: F. J. Félix Arredondo, A. Ucan-Puc, C. Astengo Noguez, "K-Means as a Radial Basis
    Function Network: a Variational and Gradient-based Equivalence", arXiv:2603.04625 (2026).
    [^2]: Peters, Niculae, Martins, "Sparse Sequence-to-Sequence Models", ACL 2019 (entmax).

    """

    def __init__(
        self,
        n_clusters: int = 8,
        batch_size: int = 1,
        initial_temperature: float | str = "auto",
        temperature_decay: float = 0.999,
        min_temperature: float = 0.0,
        mapping: str = "entmax15",
        decay: float = 1.0,
        warmup: int | None = None,
        missing: str = "error",
        drift_detector: base.DriftDetector | None = None,
        reheat_factor: float | None = None,
        drift_forget: float = 0.0,
        seed: int | None = None,
    ):
        self.n_clusters = n_clusters
        self.batch_size = batch_size
        self.initial_temperature = initial_temperature
        self.temperature_decay = temperature_decay
        self.min_temperature = min_temperature
        self.mapping = mapping
        self.decay = decay
        self.warmup = warmup
        self.missing = missing
        self.drift_detector = drift_detector
        self.reheat_factor = reheat_factor
        self.drift_forget = drift_forget
        self.seed = seed
        self._check_params()

        self._rng = np.random.default_rng(seed)
        self._mapping_code = MAPPING_CODES[mapping]
        self._drift = drift_detector.clone() if drift_detector is not None else None
        self._features: tuple | None = None  # feature order, fixed by the first event
        self._feature_set: frozenset | None = None
        self._warm: list[np.ndarray] = []  # warm-up events, dropped once initialised
        self._C: np.ndarray | None = None  # (k, d) float32 centres
        self._counts: np.ndarray | None = None  # (k,) float64 decayed masses
        self._schedule: TemperatureSchedule | None = None
        self._aux: np.ndarray | None = None  # [reservoir weight, reseed candidate (d)]
        self._rs: np.ndarray | None = None  # (1,) uint64 splitmix64 state
        self._buf: np.ndarray | None = None  # (batch_size, d) events waiting for a step
        self._n_buf = 0
        self._n_steps = 0
        self._rewarm: list[np.ndarray] | None = None  # events buffered after a drift
        self.n_drifts = 0

    # -- parameters ---------------------------------------------------------------------------

    def _check_params(self) -> None:
        if not (isinstance(self.n_clusters, numbers.Integral) and self.n_clusters >= 1):
            raise ValueError(f"n_clusters must be an integer >= 1, got {self.n_clusters!r}")
        if not (isinstance(self.batch_size, numbers.Integral) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        t0 = self.initial_temperature
        if not (t0 == "auto" or (isinstance(t0, numbers.Real) and 0 < t0 < math.inf)):
            raise ValueError(f"initial_temperature must be 'auto' or a float > 0, got {t0!r}")
        if not 0 < self.temperature_decay <= 1:
            raise ValueError(f"temperature_decay must be in (0, 1], got {self.temperature_decay!r}")
        if not 0 <= self.min_temperature < math.inf:
            raise ValueError(
                f"min_temperature must be finite and >= 0, got {self.min_temperature!r}"
            )
        if self.mapping not in MAPPING_CODES:
            raise ValueError(f"mapping must be one of {tuple(MAPPING_CODES)}, got {self.mapping!r}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay!r}")
        if self.warmup is not None and not (
            isinstance(self.warmup, numbers.Integral) and self.warmup >= self.n_clusters
        ):
            raise ValueError(
                f"warmup must be None or an integer >= n_clusters, got {self.warmup!r}"
            )
        if self.missing not in ("error", "zero"):
            raise ValueError(f"missing must be 'error' or 'zero', got {self.missing!r}")
        if self.reheat_factor is not None and not self.reheat_factor >= 1:
            raise ValueError(f"reheat_factor must be None or >= 1, got {self.reheat_factor!r}")
        if not 0 <= self.drift_forget <= 1:
            raise ValueError(f"drift_forget must be in [0, 1], got {self.drift_forget!r}")

    @property
    def _mutable_attributes(self) -> set[str]:
        return {"temperature_decay", "min_temperature", "decay", "reheat_factor", "drift_forget"}

    def mutate(self, new_attrs: dict[str, Any]) -> None:
        super().mutate(new_attrs)
        self._check_params()
        if self._schedule is not None:
            self._schedule.decay = self.temperature_decay
            self._schedule.minimum = self.min_temperature

    @classmethod
    def _unit_test_params(cls):
        yield {"n_clusters": 3}
        yield {"n_clusters": 2, "batch_size": 4, "mapping": "softmax", "decay": 0.99}

    @property
    def _warmup_size(self) -> int:
        return self.warmup if self.warmup is not None else max(4 * self.n_clusters, 32)

    # -- public state -------------------------------------------------------------------------

    @property
    def centers(self) -> dict[int, dict[Any, float]]:
        if self._C is None:
            return {}
        rows = self._C.astype(float).tolist()
        return {i: dict(zip(self._features, row, strict=True)) for i, row in enumerate(rows)}

    @property
    def counts(self) -> dict[int, float]:
        if self._counts is None:
            return {}
        return dict(enumerate(self._counts.tolist()))

    @property
    def temperature(self) -> float:
        return self._schedule.value if self._schedule is not None else math.nan

    @property
    def n_features(self) -> int:
        """Number of features (0 before the first event)."""
        return len(self._features) if self._features is not None else 0

    # -- features -----------------------------------------------------------------------------

    def _vector(self, x: dict) -> np.ndarray:
        """The event as a float64 vector in the fixed feature order; raises ValueError naming the
        offending feature. Finiteness is checked by the kernels (or :meth:`_finite`)."""
        if x.keys() == self._feature_set:
            try:
                return np.frombuffer(array("d", map(x.__getitem__, self._features)))
            except TypeError:
                pass
        return self._vector_slow(x)

    def _vector_slow(self, x: dict) -> np.ndarray:
        zero = self.missing == "zero"
        if not zero:
            for f in x:
                if f not in self._feature_set:
                    raise ValueError(
                        f"unknown feature {f!r}: the feature set is fixed by the first event"
                    )
        out = np.empty(len(self._features))
        for t, f in enumerate(self._features):
            if f not in x:
                if zero:
                    out[t] = 0.0
                    continue
                raise ValueError(f"missing feature {f!r}")
            out[t] = self._number(f, x[f], zero)
        return out

    @staticmethod
    def _number(f, v, zero: bool) -> float:
        if v is None and zero:
            return 0.0
        if isinstance(v, (str, bytes)) or not isinstance(v, (numbers.Real, np.number)):
            raise ValueError(f"feature {f!r} is not a real number: {v!r}")
        v = float(v)
        if math.isnan(v) and zero:
            return 0.0
        if not math.isfinite(v):
            raise ValueError(f"feature {f!r} is not finite: {v!r}")
        return v

    def _bad_feature(self, code: int, xv: np.ndarray) -> ValueError:
        t = -code - 1
        return ValueError(f"feature {self._features[t]!r} is not finite: {float(xv[t])!r}")

    def _finite(self, xv: np.ndarray) -> np.ndarray:
        """``xv`` if finite; NaN replaced by 0 under ``missing="zero"``; else ValueError."""
        t = _ok.first_nonfinite(xv)
        if t < 0:
            return xv
        if self.missing == "zero":
            xv = np.where(np.isnan(xv), 0.0, xv)
            t = _ok.first_nonfinite(xv)
            if t < 0:
                return xv
        raise self._bad_feature(-(t + 1), xv)

    def _first_event(self, x: dict) -> np.ndarray:
        """Fix the feature set from the first event (only once the event is known to be valid)."""
        features = tuple(x)
        xv = np.array([self._number(f, x[f], False) for f in features], dtype=np.float64)
        self._features = features
        self._feature_set = frozenset(features)
        return xv

    # -- learning -----------------------------------------------------------------------------

    def learn_one(self, x: dict) -> None:
        if self._C is not None and self._buf is None:
            # hot path: initialised, one step per event
            xv = self._vector(x)
            j, dmin = _ok.learn_event(
                xv, self._C, self._counts, logit_divisor(self._schedule.value),
                self._mapping_code, self.decay, self._aux, self._rs,
            )
            if j < 0:
                xv = self._finite(xv)  # raises unless missing="zero" repairs it
                j, dmin = _ok.learn_event(
                    xv, self._C, self._counts, logit_divisor(self._schedule.value),
                    self._mapping_code, self.decay, self._aux, self._rs,
                )
            self._after_step((dmin,))
            if self._rewarm is not None:
                self._rewarm_with(xv)
            return
        if self._features is None:
            xv = self._first_event(x)
        else:
            xv = self._finite(self._vector(x))
        self._learn_vector(xv)

    def _learn_vector(self, xv: np.ndarray) -> None:
        """Learn one finite event given as a vector in feature order."""
        if self._C is None:
            self._warm.append(np.array(xv, dtype=np.float64))
            if len(self._warm) >= self._warmup_size:
                self._initialise()
            return
        if self._buf is None:
            _, dmin = _ok.learn_event(
                xv, self._C, self._counts, logit_divisor(self._schedule.value),
                self._mapping_code, self.decay, self._aux, self._rs,
            )
            self._after_step((dmin,))
        else:
            self._buf[self._n_buf] = xv
            self._n_buf += 1
            if self._n_buf == self.batch_size:
                nearest = np.empty(self._n_buf)
                _ok.learn_rows(
                    self._buf, self._n_buf, self._C, self._counts,
                    logit_divisor(self._schedule.value), self._mapping_code, self.decay,
                    self._aux, self._rs, nearest,
                )
                self._n_buf = 0
                self._after_step(nearest.tolist())
        if self._rewarm is not None:
            self._rewarm_with(xv)

    def _initial_centres(self, X: np.ndarray):
        """Best of a few k-means++ draws on ``X``, each refined by annealed soft-Lloyd steps (the
        core step with decay 0); returns ``(centres, auto temperature, K-Means cost on X)``."""
        from .seeding import kmeans_plusplus

        k, n = self.n_clusters, X.shape[0]
        best = (math.inf, None, None)
        for _ in range(_N_INIT):
            C = kmeans_plusplus(X, k, self._rng)
            t = auto_temperature(_ok.sq_distances_rows(X, C))
            t_start = t
            for _ in range(_INIT_STEPS):
                _ok.learn_rows(X, n, C, np.zeros(k), logit_divisor(t), self._mapping_code, 0.0,
                               np.zeros(1 + X.shape[1]), np.zeros(1, np.uint64), np.empty(n))
                t *= 0.5
            cost = _ok.sq_distances_rows(X, C).min(axis=1).sum()
            if cost < best[0]:
                best = (cost, C, t_start)
        cost, C, t_auto = best
        return C, t_auto, cost

    def _initialise(self) -> None:
        X = np.stack(self._warm)
        C, t0, _ = self._initial_centres(X)
        if self.initial_temperature != "auto":
            t0 = float(self.initial_temperature)
        self._schedule = TemperatureSchedule(t0, self.temperature_decay, self.min_temperature)
        self._C = C.astype(np.float32)
        self._counts = np.zeros(self.n_clusters)
        self._aux = np.zeros(1 + X.shape[1])
        self._rs = np.array([self._rng.integers(2**63)], dtype=np.uint64)
        if self.batch_size > 1:
            self._buf = np.empty((self.batch_size, X.shape[1]))
        self._warm = []
        for xv in X:
            self._learn_vector(xv)

    def _rewarm_with(self, xv: np.ndarray) -> None:
        """After a drift: buffer the next `warmup` events, then restart from fresh k-means++
        centres on them if those explain the recent events better than the current centres."""
        self._rewarm.append(np.array(xv, dtype=np.float64))
        if len(self._rewarm) < self._warmup_size:
            return
        X = np.stack(self._rewarm)
        self._rewarm = None
        C, _, cost = self._initial_centres(X)
        if cost < _ok.sq_distances_rows(X, self._C).min(axis=1).sum():
            counts = np.zeros(self.n_clusters)
            n = X.shape[0]
            _ok.learn_rows(X, n, C, counts, logit_divisor(self._schedule.value),
                           self._mapping_code, 0.0, self._aux, self._rs, np.empty(n))
            self._C = C.astype(np.float32)
            self._counts = counts

    def _after_step(self, nearest) -> None:
        """Temperature, drift and re-seeding bookkeeping after one gradient step."""
        self._schedule.step()
        self._n_steps += 1
        if self._drift is not None:
            det = self._drift
            for v in nearest:
                before = getattr(det, "estimation", None)
                det.update(v)
                # Only a rise of the distortion is a drift: it also falls while centres converge.
                if det.drift_detected and (before is None or det.estimation > before):
                    self.n_drifts += 1
                    self._schedule.reheat(self.reheat_factor)
                    self._counts *= self.drift_forget
                    if self._rewarm is None:
                        self._rewarm = []
        if self._n_steps % self._warmup_size == 0:
            self._reseed()

    def _reseed(self) -> None:
        """Move the most starved centre onto the reservoir's candidate.

        The rule is that of :func:`streamrbf.seeding.reseed_candidates` (starved: decayed mass below
        a share of the largest; target: a point drawn in proportion to its squared distance to the
        nearest centre), with the draw made over all events since the last check by the kernels.
        The moved centre gets the smallest mass of the centres that are not starved, as in
        scikit-learn's MiniBatchKMeans, so it is not moved again at once.
        """
        counts = self._counts
        if self.n_clusters > 1 and self._aux[0] > 0:
            dead = np.flatnonzero(counts < _RESEED_RATIO * counts.max())
            if dead.size:
                j = int(dead[np.argmin(counts[dead])])
                alive = np.delete(counts, dead)
                self._C[j] = self._aux[1:]
                counts[j] = alive.min() if alive.size else 0.0
        self._aux[0] = 0.0

    def learn_many(self, X) -> None:
        """Learn the rows of a DataFrame in order (the same as `learn_one` on each row).

        The whole frame is validated first: a bad frame raises and changes nothing.
        """
        if len(X) == 0:
            return
        if self._features is None:
            features = tuple(X.columns)
            self._features, self._feature_set = features, frozenset(features)
            try:
                M = self._frame(X, strict=True)
            except Exception:
                self._features = self._feature_set = None
                raise
        else:
            M = self._frame(X)
        for xv in M:
            self._learn_vector(xv)

    def _frame(self, X, strict: bool = False) -> np.ndarray:
        """A validated float64 matrix of the frame's rows in the fixed feature order."""
        cols = list(X.columns)
        colset = set(cols)
        zero = self.missing == "zero" and not strict
        if not zero:
            for c in cols:
                if c not in self._feature_set:
                    raise ValueError(
                        f"unknown feature {c!r}: the feature set is fixed by the first event"
                    )
            for f in self._features:
                if f not in colset:
                    raise ValueError(f"missing feature {f!r}")
        M = np.zeros((len(X), len(self._features)))
        for t, f in enumerate(self._features):
            if f not in colset:
                continue
            col = X[f]
            if col.dtype == object or not np.issubdtype(col.dtype, np.number):
                for v in col.tolist():
                    self._number(f, v, zero)
            M[:, t] = col.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(M)
        if zero:
            M[np.isnan(M)] = 0.0
            bad = ~np.isfinite(M)
        if bad.any():
            i, t = np.argwhere(bad)[0]
            raise ValueError(f"feature {self._features[t]!r} is not finite: {M[i, t]!r} (row {i})")
        return M

    # -- prediction ---------------------------------------------------------------------------

    def predict_one(self, x: dict) -> int:
        if self._C is None:
            if self._features is not None:
                self._finite(self._vector(x))
            return 0
        xv = self._vector(x)
        j, _ = _ok.nearest_event(xv, self._C)
        if j < 0:
            j, _ = _ok.nearest_event(self._finite(xv), self._C)
        return j

    def predict_proba_one(self, x: dict) -> dict[int, float]:
        """Non-zero memberships `{cluster: responsibility}` at the current temperature ({} before
        initialisation)."""
        if self._C is None:
            if self._features is not None:
                self._finite(self._vector(x))
            return {}
        xv = self._finite(self._vector(x))
        k = self.n_clusters
        vals, idx = np.empty(k), np.empty(k, np.int64)
        n = _ok.responsibilities_event(
            xv, self._C, logit_divisor(self._schedule.value), self._mapping_code, vals, idx
        )
        return dict(zip(idx[:n].tolist(), vals[:n].tolist(), strict=True))

    def predict_many(self, X):
        """Nearest cluster of each row of a DataFrame, as a Series with the frame's index."""
        import pandas as pd

        if self._C is None:
            if self._features is not None and len(X):
                self._frame(X)
            return pd.Series(np.zeros(len(X), dtype=np.int64), index=X.index)
        return pd.Series(_ok.nearest_rows(self._frame(X), self._C), index=X.index)


class KeyedRBFKMeans(base.Wrapper, base.Clusterer):
    """One :class:`RBFKMeans` (and one temperature) per value of a key field, in bounded memory.

    Each event is routed on `x[key]`; the key field itself is not a feature. A stream's model is a
    clone of `model`, created on its first event. At most `max_streams` models are kept: when a
    new stream arrives beyond that, the least recently used stream is evicted (and would restart
    from scratch if it came back). Predicting for an unknown stream returns 0 (`{}` for
    `predict_proba_one`) and creates nothing.

    Parameters
    ----------
    model
        The model every stream starts from (cloned).
    key
        Name of the field that identifies the stream.
    max_streams
        Maximum number of models kept.

    Attributes
    ----------
    models : collections.OrderedDict
        The models, least recently used first.
    n_streams : int
        Number of streams currently kept.
    n_evicted : int
        Number of streams evicted so far.

    Examples
    --------

    >>> from streamrbf.river import KeyedRBFKMeans, RBFKMeans
    >>> keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=2, warmup=4, seed=0), key="id", max_streams=2)
    >>> for i in range(40):
    ...     keyed.learn_one({"id": i % 3, "v": float(i % 2) + (i % 3) * 10})
    >>> keyed.n_streams, keyed.n_evicted
    (2, 38)
    >>> keyed.predict_one({"id": "unknown", "v": 0.0})
    0

    """

    def __init__(self, model: RBFKMeans, key: Any = "stream", max_streams: int = 10_000):
        self.model = model
        self.key = key
        self.max_streams = max_streams
        if not (isinstance(max_streams, numbers.Integral) and max_streams >= 1):
            raise ValueError(f"max_streams must be an integer >= 1, got {max_streams!r}")
        self.models: collections.OrderedDict = collections.OrderedDict()
        self.n_evicted = 0

    @property
    def _wrapped_model(self):
        return self.model

    @classmethod
    def _unit_test_params(cls):
        yield {"model": RBFKMeans(n_clusters=2, seed=0), "max_streams": 4}

    @property
    def n_streams(self) -> int:
        return len(self.models)

    def _split(self, x: dict):
        try:
            k = x[self.key]
        except KeyError:
            raise ValueError(f"missing key field {self.key!r}") from None
        return k, {f: v for f, v in x.items() if f != self.key}

    def learn_one(self, x: dict, **kwargs) -> None:
        k, rest = self._split(x)
        m = self.models.get(k)
        if m is None:
            m = self.model.clone()
            m.learn_one(rest)  # raises before the stream is registered if the event is bad
            self.models[k] = m
            if len(self.models) > self.max_streams:
                self.models.popitem(last=False)
                self.n_evicted += 1
            return
        self.models.move_to_end(k)
        m.learn_one(rest)

    def predict_one(self, x: dict, **kwargs) -> int:
        k, rest = self._split(x)
        m = self.models.get(k)
        return 0 if m is None else m.predict_one(rest)

    def predict_proba_one(self, x: dict, **kwargs) -> dict[int, float]:
        k, rest = self._split(x)
        m = self.models.get(k)
        return {} if m is None else m.predict_proba_one(rest)

    def model_for(self, key: Any) -> RBFKMeans | None:
        """The model of one stream (None if unknown); does not count as a use."""
        return self.models.get(key)
