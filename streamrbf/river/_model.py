"""River's clusterer of one stream: :class:`RBFKMeans` (re-exported by :mod:`streamrbf.river`)."""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import numba
import numpy as np
from river import base

from ..core import _online_kernels as _ok
from ..core import _start_kernels as _sk
from ..core import engine
from ..core._kernels import check_mapping
from ..core.drift import Cusum
from ..core.drift import detector as core_detector
from ..core.policy import DRIFT_RESTART_GAIN, RECHECK_GAIN, RECHECK_WARMUPS, Policy, warmup_size
from ..core.seeding import reseed_candidates
from ..core.state import RESEEDING, ModelState, counted, generator, seed_from
from ..core.temperature import cooled, logit_divisor
from ..core.validation import (
    FeatureTypeError,
    InputError,
    MissingFeatureError,
    UnknownFeatureError,
    to_real,
    value_limit,
)

__all__ = ["FeatureTypeError", "RBFKMeans"]

_NO_DETECTOR = np.zeros(0)
# The centres are float32 (one model per stream: memory matters), so the value rule's limit is
# the float32 range (streamrbf.core.validation.value_limit).
_CENTRES = np.float32
# The per-event fast path takes events whose values are all of these exact types; any other event
# goes through the value rule for every value (`RBFKMeans._number`).
_FAST_TYPES = frozenset({float, int, bool, np.float64, np.float32, np.int64, np.int32})
_PACKERS: dict[int, Callable[..., bytes]] = {}  # d -> struct packer of d float64s


def _event_weight(w: Any) -> float:
    """``w`` as a float if it is a finite real number >= 0 (booleans: 0 and 1, as feature values
    are), else a ValueError naming it."""
    if isinstance(w, numbers.Real):
        v = float(w)
        if math.isfinite(v) and v >= 0.0:
            return v
    raise ValueError(f"w must be a finite number >= 0, got {w!r}")


def _weighted_row(xv: np.ndarray, w: float) -> np.ndarray:
    """The buffered form of an event: its values, then its weight."""
    row = np.empty(len(xv) + 1)
    row[:-1] = xv
    row[-1] = w
    return row


@numba.njit(cache=True, nogil=True)
def _first_out_of_range(x, limit):
    """Index of the first entry of ``x`` that is NaN or above ``limit`` in magnitude, or -1."""
    for t in range(x.shape[0]):
        if not abs(x[t]) <= limit:
            return t
    return -1


def _river_alarm(det: base.DriftDetector, values: Any) -> bool:
    """Feed each distortion of ``values`` to a River drift detector; True if one raised a drift
    while the distortion rose (it also falls while centres converge: that is no drift)."""
    alarm = False
    for v in values:
        before = getattr(det, "estimation", None)
        det.update(v)
        if det.drift_detected and (before is None or det.estimation > before):
            alarm = True
    return alarm


class _EventFeatures:
    """How River's clusterer reads events and frames of events: the feature set the first event
    fixes, every value through the value rule of :mod:`streamrbf.core.validation` (a compiled
    fast path for plain events, the rule for anything else), and `learn_many` / `predict_many`."""

    missing: str
    _features: tuple | None
    _feature_set: frozenset | None
    _get: itemgetter | None

    def _vector(self, x: dict) -> np.ndarray:
        """The event as a float64 vector in the fixed feature order, every value checked (see
        :meth:`_number`); raises naming the offending feature.

        Fast path: the event is a plain dict of exactly the model's features, all of common number
        types and within range; anything else takes :meth:`_vector_slow`, which applies the rule.
        (A dict subclass may answer for keys it lacks, as `Counter` and `defaultdict` do.)
        """
        get = self._get
        if get is not None and type(x) is dict:
            try:
                vals = get(x)
                if len(x) == len(vals):
                    xv = self._packed(vals)
                    if xv is not None:
                        return xv
            except (LookupError, TypeError, OverflowError, struct.error):
                pass
        return self._vector_slow(x)

    def _packed(self, vals: tuple) -> np.ndarray | None:
        """The fast path's vector of ``vals`` (the feature values in order), or None when a
        value is not of a common number type or is out of range (the value rule decides then).
        May raise ``TypeError``, ``OverflowError`` or ``struct.error`` (the same)."""
        if _FAST_TYPES.issuperset(map(type, vals)):
            xv = np.frombuffer(bytearray(_PACKERS[len(vals)](*vals)))
            if _first_out_of_range(xv, self._max_value) < 0:
                return xv
        return None

    @staticmethod
    def _event_keys(x: dict) -> Any:
        """The keys of an event, which must be a non-empty dict."""
        try:
            keys = x.keys()
        except AttributeError:
            raise TypeError(
                f"an event must be a dict {{feature: value}}, got {type(x).__name__}"
            ) from None
        if not keys:
            raise InputError("empty event: it has no features")
        return keys

    def _vector_slow(self, x: dict) -> np.ndarray:
        keys = self._event_keys(x)
        zero = self.missing == "zero"
        if not zero:
            for f in keys:
                if f not in self._feature_set:
                    raise UnknownFeatureError(
                        f"unknown feature {f!r}: the feature set is fixed by the first event"
                    )
        out = np.empty(len(self._features))
        for t, f in enumerate(self._features):
            if f not in x:
                if zero:
                    out[t] = 0.0
                    continue
                raise MissingFeatureError(f"missing feature {f!r}")
            out[t] = self._number(f, x[f], zero)
        return out

    def _number(self, f: Any, v: Any, zero: bool, where: str = "") -> float:
        """The value ``v`` of feature ``f`` as a float, or the value rule's error naming ``f``
        (and ``where``): :func:`streamrbf.core.validation.to_real` with the float32 limit of the
        centres; under ``missing="zero"`` (``zero``) None, pandas' NA and NaN count as 0."""
        return to_real(repr(f), v, self._limit, missing_as_zero=zero, where=where)

    @property
    def _limit(self) -> float:
        limit = getattr(self, "_max_value", None)  # set with the features (a hot path reads it)
        if limit is None:
            limit = value_limit(len(self._features) if self._features else 1, _CENTRES)
        return limit

    def _set_features(self, features: tuple) -> None:
        self._features = features
        self._feature_set = frozenset(features)
        d = len(features)
        self._max_value = value_limit(d, _CENTRES)
        # the fast path gets the values with one C call; itemgetter of one key is no tuple
        self._get = itemgetter(*features) if d > 1 else None
        if d > 1 and d not in _PACKERS:
            _PACKERS[d] = struct.Struct(f"{d}d").pack

    def _first_event(self, x: dict) -> np.ndarray:
        """Fix the feature set from the first event (only once the event is known to be valid)."""
        features = tuple(self._event_keys(x))
        xv = np.array([self._number(f, x[f], False) for f in features], dtype=np.float64)
        self._set_features(features)
        return xv

    def _check_event(self, x: dict) -> None:
        """Check an event a prediction gets before the model is initialised (against the fixed
        features once there are any): bad input raises then too."""
        if self._features is not None:
            self._vector(x)
            return
        zero = self.missing == "zero"
        for f in self._event_keys(x):
            self._number(f, x[f], zero)

    @staticmethod
    def _check_frame(X) -> None:
        if not hasattr(X, "columns"):
            raise TypeError(f"expected a pandas DataFrame of events, got {type(X).__name__}")
        if len(X) and len(X.columns) == 0:
            raise ValueError("empty events: the frame has no feature columns")
        if X.columns.has_duplicates:
            dup = X.columns[X.columns.duplicated()][0]
            raise ValueError(f"duplicate feature {dup!r}: the frame has two columns of that name")

    def _frame(self, X, features: tuple, strict: bool = False) -> np.ndarray:
        """A checked float64 matrix of the frame's rows in the order of ``features`` (every value
        as in :meth:`_number`)."""
        from pandas.api.types import is_complex_dtype, is_numeric_dtype

        cols = list(X.columns)
        colset = set(cols)
        zero = self.missing == "zero" and not strict
        if not zero and features is self._features:
            for c in cols:
                if c not in self._feature_set:
                    raise UnknownFeatureError(
                        f"unknown feature {c!r}: the feature set is fixed by the first event"
                    )
            for f in features:
                if f not in colset:
                    raise MissingFeatureError(f"missing feature {f!r}")
        M = np.zeros((len(X), len(features)))
        for t, f in enumerate(features):
            if f not in colset:
                continue
            col = X[f]
            if is_complex_dtype(col.dtype):
                raise FeatureTypeError(
                    f"feature {f!r} is not a real number: its column is {col.dtype}"
                )
            if is_numeric_dtype(col.dtype):  # numpy or pandas (nullable, arrow) numbers, bools
                M[:, t] = col.to_numpy(dtype=np.float64, na_value=np.nan)
            else:  # object, category, strings, dates: value by value
                M[:, t] = [
                    self._number(f, v, zero, f" (row {i})") for i, v in enumerate(col.tolist())
                ]
        if zero:
            M[np.isnan(M)] = 0.0
        bad = ~(np.abs(M) <= self._limit)
        if bad.any():
            i, t = np.argwhere(bad)[0]
            self._number(features[t], float(M[i, t]), zero, f" (row {i})")  # raises
        return M

    def learn_many(self, X) -> None:
        """Learn the rows of a DataFrame in order (the same as `learn_one` on each row).

        The whole frame is validated first: a bad frame raises and changes nothing.

        Parameters
        ----------
        X
            A `pandas.DataFrame` whose columns are the features.

        Examples
        --------
        >>> import pandas as pd
        >>> from streamrbf.river import RBFKMeans
        >>> model = RBFKMeans(n_clusters=2, warmup=4, seed=0)
        >>> X = pd.DataFrame({"a": [0.0, 0.2, 5.0, 5.2] * 10, "b": [0.0, 0.1, 5.0, 5.1] * 10})
        >>> model.learn_many(X)
        >>> sorted(round(c["a"], 1) for c in model.centers.values())
        [0.1, 5.1]
        >>> model.learn_many(pd.DataFrame({"a": [1.0], "c": [2.0]}))
        Traceback (most recent call last):
        ...
        streamrbf.core.validation.UnknownFeatureError: unknown feature 'c': the feature set is ...
        """
        self._check_frame(X)
        if len(X) == 0:
            return
        if self._features is None:
            features = tuple(X.columns)
            M = self._frame(X, features, strict=True)
            self._set_features(features)
        else:
            M = self._frame(X, self._features)
        for xv in M:
            self._learn_vector(xv)

    def predict_many(self, X):
        """Nearest cluster of each row of a DataFrame, as a Series with the frame's index.

        Before initialisation every row gets cluster 0.

        Parameters
        ----------
        X
            A `pandas.DataFrame` with the model's features as columns.

        Returns
        -------
        pandas.Series
            The cluster of each row (int64), indexed like `X`.

        Examples
        --------
        >>> import pandas as pd
        >>> from streamrbf.river import RBFKMeans
        >>> model = RBFKMeans(n_clusters=2, warmup=4, seed=0)
        >>> X = pd.DataFrame({"a": [0.0, 0.2, 5.0, 5.2] * 10, "b": [0.0, 0.1, 5.0, 5.1] * 10})
        >>> model.predict_many(X.head(2)).tolist()  # not initialised yet
        [0, 0]
        >>> model.learn_many(X)
        >>> model.predict_many(X.head(4)).tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
        True
        """
        import pandas as pd

        self._check_frame(X)
        if self._C is None:
            labels = np.zeros(len(X), dtype=np.int64)
            if len(X):
                M = self._frame(X, self._features or tuple(X.columns))
                if self._prov_n:
                    labels[:] = [_sk.provisional_event(row, 1.0, self._prov, self._prov_m,
                                                       self._prov_n, False)[0] for row in M]
            return pd.Series(labels, index=X.index)
        return pd.Series(_ok.nearest_rows(self._frame(X, self._features), self._C), index=X.index)


class _Restarts:
    """How River's clusterer (re)starts its model: the engine's initialisation on the warm-up
    events, the re-check of that start on more events, the restart after a drift alarm
    (:func:`streamrbf.core.engine.refit`), and the re-seeding of starved centres."""

    def _start(self, X: np.ndarray, w: np.ndarray) -> None:
        """Start from the engine's initialisation on the buffered warm-up events ``X`` of
        weights ``w`` (the best of a few k-means++ seedings, each annealed on ``X`` until
        hard)."""
        state = engine.initialise(X, self._policy, self._seed, sample_weight=w).state
        if self._prov is not None:  # the labels the warm-up gave carry over
            _sk.align_to(state.centers[0], state.masses[0], self._prov, self._prov_n)
            self._prov = self._prov_m = None
            self._prov_n = 0
        state.centers = state.centers.astype(np.float32)  # one model per stream: memory matters
        self._adopt(state, X.shape[1])
        if self.batch_size > 1:
            self._buf = np.empty((self.batch_size, X.shape[1]))
            self._buf_w = np.ones(self.batch_size)
            self._n_buf = 0

    def _adopt(self, state: ModelState, d: int) -> None:
        """Make ``state`` the model: the kernels' views of its arrays, fresh reservoir and
        detector memories."""
        self._state = state
        self._C, self._counts = state.centers[0], state.masses[0]
        self._aux = np.zeros(1 + d)
        if self._rs is None:
            draw = generator(self._seed, 0, RESEEDING).integers(2**63)
            self._rs = np.array([draw], dtype=np.uint64)
        self._det[:] = 0.0
        if self._core_det is not None:
            self._core_state = self._core_det.new_state()

    def _provisional(self, x: dict) -> int:
        """The warm-up's label of a (checked) event: :func:`_sk.provisional_event`."""
        if not self._prov_n:
            self._check_event(x)
            return 0
        return _sk.provisional_event(self._vector(x), 1.0, self._prov, self._prov_m,
                                     self._prov_n, False)[0]

    def _buffer_for_recheck(self, rows: np.ndarray) -> None:
        """Keep ``rows`` (events with their weight in the last column) for the next check."""
        self._rewarm = list(rows)
        self._next_check = RECHECK_WARMUPS * self._warmup_size

    def _check_restart(self) -> None:
        """Restart from fresh centres chosen on the buffered events if they explain those events
        much better than the current centres: after a drift alarm (first check), or a while after
        a (re)start (the recheck)."""
        rows = np.stack(self._rewarm)
        self._rewarm = None
        first = self._next_check < RECHECK_WARMUPS * self._warmup_size
        gain = DRIFT_RESTART_GAIN if first else RECHECK_GAIN
        X = rows[:, :-1]
        state, replaced = engine.refit(self._state, X, self._policy, gain,
                                       sample_weight=rows[:, -1])
        if replaced:
            # each new centre takes the label of the old centre it is closest to (greedily)
            C = state.centers[0].astype(np.float64)
            masses = state.masses[0].copy()
            _sk.align_to(C, masses, self._C.astype(np.float64), self.n_clusters)
            state.centers[0], state.masses[0] = C, masses
            self._adopt(state, X.shape[1])
            if first:
                self.n_drifts += 1
                self._buffer_for_recheck(rows)

    def _reseed(self) -> None:
        """Move a starved centre onto the reservoir's candidate.

        The rule is :func:`streamrbf.core.seeding.reseed_candidates` (starved: decayed mass below a
        share of the largest; target: a point drawn in proportion to its squared distance to the
        nearest centre), with the draw made over all events since the last check by the kernels:
        the reservoir's one candidate stands for them, with their total weight. As in the core,
        the moved centre gets the smallest mass of the other centres, so it is not moved again at
        once.
        """
        if self.n_clusters > 1 and self._aux[0] > 0:
            rng = generator(self._seed, self._state.n_steps[0], RESEEDING)
            dead, _ = reseed_candidates(self._counts, self._policy.reassignment_ratio,
                                        self._aux[:1], rng)
            if dead.size:
                alive = np.ones(self.n_clusters, dtype=bool)
                alive[dead] = False
                self._C[dead] = self._aux[1:]
                self._counts[dead] = self._counts[alive].min()
        self._aux[0] = 0.0


class RBFKMeans(_Restarts, _EventFeatures, base.Clusterer):
    r"""Streaming K-Means as an annealed entmax-1.5 RBF network, one event at a time.

    Each event $x$ gets responsibilities $p_k$ from the squared distances $d_k = \|x - c_k\|^2$
    at temperature $T$: entmax-1.5 of the logits $-d_k / T$, which is exactly sparse (only centres
    within $2T$ of the nearest share the event) and equals the hard K-Means assignment once $2T$
    is below the margin. Every `batch_size` events the model takes one gradient step with step
    size $1 / (2 n_k)$ on the buffered events' summed statistics $m_k = \sum p_k$,
    $s_k = \sum p_k x$:

    $$n_k \leftarrow a\, n_k + m_k, \qquad c_k \leftarrow c_k + (s_k - m_k c_k) / n_k,$$

    with $a = 2^{-\text{batch\_size} / \text{half\_life}}$: the running mean (MacQueen) of
    the recent events, older ones forgotten geometrically (Spark's half-life). The temperature
    starts from the data ("auto") and decays after every step, so the model anneals from soft,
    competing centres to K-Means. No step size needs tuning.

    The first `warmup` events only fill a buffer; then the engine's initialisation (as for a
    first `partial_fit` of the scikit-learn face: the best of a few k-means++ seedings, each
    annealed on the buffer until its clustering is hard) gives the initial centres, their masses
    and the temperature. Until then the warm-up events are clustered provisionally as they come
    (:func:`streamrbf.core._start_kernels.provisional_event`, an incremental farthest-point
    rule): `predict_one` gives the label learning the event would give it (0 before any event),
    `predict_proba_one` that label with membership 1 (`{}` before any event), and the started
    model keeps those labels (its centres matched to the provisional ones). The events keep
    being buffered up to `3 * warmup`; then fresh centres chosen on all of them replace the
    current ones if they explain them better (a start from few events can put two centres on
    one cluster); new centres after a re-check or a drift restart take the labels of the old
    centres nearest to them.

    A centre whose decayed mass falls below `reassignment_ratio` (1%) of the largest is moved
    onto a poorly served
    recent event (drawn with probability proportional to its squared distance to the nearest
    centre), checked every `warmup` steps (the rule of
    :func:`streamrbf.core.seeding.reseed_candidates`).

    Drift: forgetting lets centres follow a slow drift. For a sudden one, a detector watches the
    squared distance of each event to its nearest centre (the distortion); on an alarm the next
    `warmup` events are buffered, and if fresh k-means++ centres cut their K-Means cost by half
    the model restarts from them (new centres, masses and temperature; then the same recheck as
    after the warm-up). A false alarm changes nothing.

    The feature set is fixed by the first event. A missing or new feature, NaN, infinity, a value
    beyond the float32 range of the centres (about 3.4e38 in magnitude) or an event with no
    features raises a `ValueError`, and a value that is not a real number (a string, None, a
    complex, a Decimal, an array) a :class:`FeatureTypeError` (a `TypeError` and a `ValueError`);
    the message names the feature, and the model is left exactly as it was. Under
    `missing="zero"` a missing feature, None or NaN counts as 0 instead.

    Parameters
    ----------
    n_clusters
        Number of centres.
    batch_size
        Events per gradient step. 1 gives pure online updates.
    initial_temperature
        Starting temperature, or "auto": twice the mean squared distance of the warm-up events to
        their nearest initial centre.
    temperature_decay
        Factor applied to the temperature after every step, or "auto": 0.9 per 100 events.
    min_temperature
        Floor of the temperature, or "auto": 1/1000 of the starting temperature (0 lets it
        approach 0, i.e. hard K-Means).
    mapping
        "entmax15" (sparse, default), "softmax" or "hard" (plain online K-Means).
    half_life
        Events after which the masses have halved. "auto": `max(100, 4 * n_clusters)` steps
        (events, with the default `batch_size` of 1). None never forgets (the running mean of all
        events).
    reassignment_ratio
        A centre whose decayed mass falls below this share of the largest is re-seeded on a
        poorly served recent event.
    warmup
        Events buffered to initialise the centres (at least `n_clusters`); None means
        `max(4 * n_clusters, 32)`.
    missing
        "error": a missing or new feature raises `ValueError`. "zero": a missing feature, `None`
        or NaN counts as 0 and new features are ignored (infinities and non-numbers still raise).
    drift_detector
        What raises a drift alarm. "cusum" (default): a compiled one-sided CUSUM on the
        distortion relative to its running mean (a sustained rise of 50% or more; 9 events
        after a jump far from every centre; :class:`streamrbf.core.drift.Cusum`, run inside the
        compiled step). Any detector of :mod:`streamrbf.core.drift` (by name, or an object
        implementing its protocol) is fed the distortions of every step, as in the Beam
        transforms. "adwin": `river.drift.ADWIN`. A `river` drift detector (cloned) is fed the
        distortion of every event, and only a rise of its estimate counts. None: no detector.
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
    n_alarms : int
        Number of drift alarms.
    n_drifts : int
        Number of restarts after an alarm (confirmed drifts).

    Examples
    --------

    >>> from river import metrics
    >>> from sklearn.datasets import make_blobs
    >>> from streamrbf.river import RBFKMeans

    >>> X, y = make_blobs(n_samples=2000, centers=4, cluster_std=0.6, random_state=0)
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

    _get: itemgetter | None = None  # (a class default too, for models pickled without it)
    _buf_w: np.ndarray | None = None  # (the same)
    # the warm-up's provisional clustering: centres, masses, how many (the same)
    _prov: np.ndarray | None = None
    _prov_m: np.ndarray | None = None
    _prov_n: int = 0

    def __init__(
        self,
        n_clusters: int = 8,
        batch_size: int = 1,
        initial_temperature: float | str = "auto",
        temperature_decay: float | str = "auto",
        min_temperature: float | str = "auto",
        mapping: str = "entmax15",
        half_life: float | str | None = "auto",
        reassignment_ratio: float = 0.01,
        warmup: int | None = None,
        missing: str = "error",
        drift_detector: base.DriftDetector | str | None = "cusum",
        seed: int | None = None,
    ):
        self.n_clusters = n_clusters
        self.batch_size = batch_size
        self.initial_temperature = initial_temperature
        self.temperature_decay = temperature_decay
        self.min_temperature = min_temperature
        self.mapping = mapping
        self.half_life = half_life
        self.reassignment_ratio = reassignment_ratio
        self.warmup = warmup
        self.missing = missing
        self.drift_detector = drift_detector
        self.seed = seed
        self._check_params()

        self._seed = seed_from(seed)
        self._n_starts = 0
        self._mapping_code = check_mapping(mapping)
        # the built-in detector's state lives in an array the kernels update; a River detector is
        # fed from Python
        self._det = _NO_DETECTOR  # the CUSUM's memory, updated inside the compiled step
        self._drift = None  # a River detector, fed from Python
        self._core_det = None  # another core detector, fed each step's distortions
        if drift_detector == "adwin":
            from river import drift

            self._drift = drift.ADWIN()
        elif isinstance(drift_detector, base.DriftDetector):
            self._drift = drift_detector.clone()
        else:
            found = core_detector(drift_detector)
            if isinstance(found, Cusum):
                self._det = found.new_state()
            elif found is not None:
                self._core_det, self._core_state = found, found.new_state()
        self._features: tuple | None = None  # feature order, fixed by the first event
        self._feature_set: frozenset | None = None
        self._get: itemgetter | None = None  # the fast path's getter of the feature values
        # warm-up events (each with its weight in a last column), dropped once initialised
        self._warm: list[np.ndarray] = []
        self._state: ModelState | None = None  # the engine's record, float32 centres
        self._C: np.ndarray | None = None  # a view of its (k, d) centres: the kernels' operand
        self._counts: np.ndarray | None = None  # a view of its (k,) decayed masses
        self._aux: np.ndarray | None = None  # [reservoir weight, reseed candidate (d)]
        self._rs: np.ndarray | None = None  # (1,) uint64 splitmix64 state
        self._buf: np.ndarray | None = None  # (batch_size, d) events waiting for a step
        self._buf_w: np.ndarray | None = None  # (batch_size,) their weights
        self._n_buf = 0
        # events (with their weight in a last column) buffered after a drift alarm
        self._rewarm: list[np.ndarray] | None = None
        self._next_check = 0  # buffered events at which the next restart check happens
        self.n_alarms = 0
        self.n_drifts = 0

    # -- parameters ---------------------------------------------------------------------------

    def _check_params(self) -> None:
        if not (isinstance(self.batch_size, numbers.Integral) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        self._policy = Policy(
            n_clusters=self.n_clusters, mapping=self.mapping,
            initial_temperature=self.initial_temperature,
            temperature_decay=self.temperature_decay, min_temperature=self.min_temperature,
            half_life=self.half_life, reassignment_ratio=self.reassignment_ratio,
        ).check()
        # per step of `batch_size` events: the masses' forgetting and the temperature's factor
        self._decay = self._policy.forgetting(self.batch_size)
        self._cooling = self._policy.temperature_factor(self.batch_size)
        warmup_size(self.n_clusters, self.warmup)  # checks it
        if self.missing not in ("error", "zero"):
            raise ValueError(f"missing must be 'error' or 'zero', got {self.missing!r}")
        det = self.drift_detector
        if not (det == "adwin" or isinstance(det, base.DriftDetector)):
            core_detector(det)  # raises for anything that is not a detector

    @property
    def _mutable_attributes(self) -> set[str]:
        return {"temperature_decay", "min_temperature", "half_life"}

    def mutate(self, new_attrs: dict[str, Any]) -> None:
        """Change parameters in place, keeping what the model has learnt (River's protocol).

        Only `temperature_decay`, `min_temperature` and `half_life` may change (River raises a
        `ValueError` for the others). The parameters are then checked again (a `ValueError` for
        an invalid value), the per-step forgetting and cooling follow the new values, and a
        started model's temperature floor is recomputed from its initial temperature.

        Parameters
        ----------
        new_attrs
            The new values, by parameter name; when one is invalid, nothing changes.
        """
        old = {name: getattr(self, name) for name in new_attrs if hasattr(self, name)}
        super().mutate(new_attrs)
        try:
            self._check_params()
        except ValueError:
            for name, value in old.items():
                setattr(self, name, value)
            self._check_params()
            raise
        if self._state is not None:
            st = self._state
            st.min_temperature[0] = self._policy.floor_temperature(st.initial_temperature[0])

    @classmethod
    def _unit_test_params(cls):
        yield {"n_clusters": 3}
        yield {"n_clusters": 2, "batch_size": 4, "mapping": "softmax", "half_life": 50.0,
               "drift_detector": "adwin"}
        yield {"n_clusters": 2, "half_life": None, "drift_detector": None}

    @property
    def _warmup_size(self) -> int:
        return warmup_size(self.n_clusters, self.warmup)

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
        return float(self._state.temperature[0]) if self._state is not None else math.nan

    def reheat(self, factor: float | None = None) -> float:
        """Raise the temperature (by ``factor``, or back to its start) when you know the stream
        has changed: memberships soften and the centres compete again. The drift detector
        restarts the model by itself; this is for drift you learn about elsewhere.

        Parameters
        ----------
        factor
            Multiplies the temperature, >= 1 (a `ValueError` otherwise), capped at the initial
            temperature; None returns to the initial temperature.

        Returns
        -------
        float
            The new temperature.

        Raises
        ------
        RuntimeError
            Before the model has seen its warm-up events.

        Examples
        --------
        >>> model = RBFKMeans(n_clusters=2, seed=0, temperature_decay=0.5)
        >>> for i in range(40):
        ...     model.learn_one({"x": float(i % 2) * 4.0})
        >>> cold = model.temperature
        >>> model.reheat() > cold
        True
        """
        if self._state is None:
            raise RuntimeError("reheat needs a model that has seen its warm-up events")
        self._state.temperature[0] = engine.reheat(self._state, factor).temperature[0]
        return self.temperature

    @property
    def n_features(self) -> int:
        """Number of features (0 before the first event)."""
        return len(self._features) if self._features is not None else 0

    # -- learning -----------------------------------------------------------------------------

    def learn_one(self, x: dict, w: float = 1.0) -> None:
        """Learn from one event: buffered during the warm-up, then one step per `batch_size`
        events. A bad event or weight raises (naming what is wrong) and changes nothing.

        Parameters
        ----------
        x
            The event, `{feature: value}`.
        w
            The event's weight, a finite number >= 0 (as in river's `CluStream`): a weight of 2
            counts as the event seen twice in the masses, the centres' steps, the warm-up's
            seedings and the re-seeding draws (drift detection counts events). An event of
            weight 0 is checked and changes nothing. (River's `Pipeline` passes no extra
            argument to an unsupervised last step: weigh events on the model itself.)

        Examples
        --------
        >>> from streamrbf.river import RBFKMeans
        >>> model = RBFKMeans(n_clusters=2, warmup=4, seed=0)
        >>> for i in range(40):
        ...     model.learn_one({"a": float(i % 2) * 5}, w=3.0 if i % 2 else 1.0)
        >>> light, heavy = sorted(model.counts.values())  # decayed masses
        >>> round(heavy / light)
        3
        >>> model.learn_one({"a": 1.0}, w=-1)
        Traceback (most recent call last):
        ...
        ValueError: w must be a finite number >= 0, got -1
        """
        if w.__class__ is not float or w != 1.0:
            w = _event_weight(w)
            if w == 0.0:
                self._check_event(x)  # checked, not learnt (nor fixing the features)
                return
        if self._C is not None and self._buf is None:
            # hot path: initialised, one step per event
            xv = self._vector(x)
            _, dmin, alarm = self._step_event(xv, w)
            self._after_step((dmin,), alarm, xv, w)
            return
        if self._features is None:
            xv = self._first_event(x)
        else:
            xv = self._vector(x)
        self._learn_vector(xv, w)

    def _step_event(self, xv: np.ndarray, w: float = 1.0) -> tuple[int, float, bool]:
        """The compiled per-event step on a checked event ``xv`` of weight ``w``: ``(nearest
        centre, its squared distance, drift alarm)``."""
        return _ok.learn_event(
            xv, self._C, self._counts, logit_divisor(self._state.temperature[0]),
            self._mapping_code, self._decay, self._aux, self._rs, self._det, float(w),
        )

    def _learn_vector(self, xv: np.ndarray, w: float = 1.0) -> None:
        """Learn one checked event given as a vector in feature order, of weight ``w > 0``."""
        if self._C is None:
            if self._prov is None:
                self._prov = np.zeros((self.n_clusters, len(xv)))
                self._prov_m = np.zeros(self.n_clusters)
            _, self._prov_n = _sk.provisional_event(xv, w, self._prov, self._prov_m,
                                                    self._prov_n)
            self._warm.append(_weighted_row(xv, w))
            if len(self._warm) >= self._warmup_size:
                rows = np.stack(self._warm)
                self._warm = []
                self._start(rows[:, :-1], rows[:, -1])
                self._buffer_for_recheck(rows)
            return
        if self._buf is None:
            _, dmin, alarm = self._step_event(xv, w)
            self._after_step((dmin,), alarm, xv, w)
            return
        if self._buf_w is None:  # (a model pickled before events had weights)
            self._buf_w = np.ones(self.batch_size)
        self._buf[self._n_buf] = xv
        self._buf_w[self._n_buf] = w
        self._n_buf += 1
        if self._rewarm is not None:
            self._rewarm.append(_weighted_row(xv, w))
        if self._n_buf == self.batch_size:
            nearest = np.empty(self._n_buf)
            _, alarm = _ok.learn_rows(
                self._buf, self._buf_w, self._n_buf, self._C, self._counts,
                logit_divisor(self._state.temperature[0]), self._mapping_code, self._decay,
                self._aux, self._rs, nearest, self._det,
            )
            self._n_buf = 0
            self._after_step(nearest.tolist(), alarm, None)

    def _after_step(self, nearest, alarm: bool, xv: np.ndarray | None, w: float = 1.0) -> None:
        """Temperature, drift and re-seeding bookkeeping after one gradient step (``xv``, ``w``:
        the step's event and its weight when it learnt one event)."""
        st = self._state
        st.temperature[0] = cooled(st.temperature.item(0), self._cooling,
                                   st.min_temperature.item(0))
        n_steps = counted(st.n_steps.item(0), 1)
        st.n_steps[0] = n_steps
        st.n_seen[0] = counted(st.n_seen.item(0), len(nearest))
        if self._core_det is not None:
            alarm |= self._core_det.update(self._core_state, np.asarray(nearest, np.float64))
        if self._drift is not None:
            alarm |= _river_alarm(self._drift, nearest)
        if self._rewarm is not None:
            if xv is not None:
                self._rewarm.append(_weighted_row(xv, w))
            if len(self._rewarm) >= self._next_check:
                self._check_restart()
        elif alarm:
            self.n_alarms += 1
            self._rewarm = []  # buffer the next events, then decide
            self._next_check = self._warmup_size
        if n_steps % self._warmup_size == 0:
            self._reseed()

    # -- prediction ---------------------------------------------------------------------------

    def predict_one(self, x: dict) -> int:
        """The nearest cluster of an event; a bad event raises. During the warm-up, the
        label the provisional clustering of the warm-up events would give it (0 before any
        event), which the started model keeps.

        Parameters
        ----------
        x
            The event, `{feature: value}`.

        Returns
        -------
        int
            The cluster.
        """
        if self._C is None:
            return self._provisional(x)
        j, _ = _ok.nearest_event(self._vector(x), self._C)
        return j

    def predict_proba_one(self, x: dict) -> dict[int, float]:
        """Non-zero memberships `{cluster: responsibility}` at the current temperature.

        During the warm-up: the provisional cluster with membership 1 (`{}` before any event).
        The class example shows it.

        Parameters
        ----------
        x
            The event, `{feature: value}`.

        Returns
        -------
        dict
            The non-zero memberships; they sum to 1.
        """
        if self._C is None:
            return {self._provisional(x): 1.0} if self._prov_n else (self._check_event(x) or {})
        xv = self._vector(x)
        k = self.n_clusters
        vals, idx = np.empty(k), np.empty(k, np.int64)
        n = _ok.responsibilities_event(
            xv, self._C, logit_divisor(self._state.temperature[0]), self._mapping_code, vals, idx
        )
        return dict(zip(idx[:n].tolist(), vals[:n].tolist(), strict=True))
