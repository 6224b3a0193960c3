"""Many streams' models in one bank: :class:`KeyedRBFKMeans`."""

from __future__ import annotations

import functools
import numbers
import struct
from operator import itemgetter
from typing import Any

import numpy as np
from river import base

from ..core import _online_kernels as _ok
from ..core.drift import Cusum
from ..core.drift import detector as core_detector
from ..core.state import counted
from ..core.streams import STARTED, WARMING, StreamBank
from ..core.temperature import cooled, logit_divisor
from ._model import (
    _PACKERS,
    RBFKMeans,
    _event_weight,
    _EventFeatures,
    _river_alarm,
)


def _first_value(feature: Any, event: dict) -> tuple:
    """The fast path's getter for one feature: its value as a 1-tuple (picklable, unlike a
    lambda)."""
    return (event[feature],)


class KeyedRBFKMeans(_EventFeatures, base.Wrapper, base.Clusterer):
    """One :class:`RBFKMeans` (and one temperature) per value of a key field, all in one bank.

    Each event is routed on `x[key]`; the key field itself is not a feature, and the features are
    fixed by the first event of any stream (all streams share them). Every stream's model is a row
    of one bank (the engine's :class:`~streamrbf.core.state.ModelState` with a leading stream
    axis: float32 centres, masses, temperatures, counters, seeds), so a stream costs a few hundred
    bytes and no Python object; `learn_one` steps one row of the bank with the compiled step of
    :class:`RBFKMeans` (the same rule: forgetting, cooling, re-seeding of starved centres, the
    CUSUM drift detector), and `learn_many` steps every stream of a frame at once
    (:func:`~streamrbf.core.bank.step_bank`).

    A stream starts like :class:`RBFKMeans`: its first `warmup` events are buffered, then the
    engine's stream start (the best of a few k-means++ seedings annealed on them,
    :func:`~streamrbf.core.bank.initialise_bank`, about 0.1 ms at (16, 4)) gives its model and the
    buffer is released. Meanwhile the stream is not mute: its warm-up events are clustered
    provisionally as they come (:func:`~streamrbf.core._start_kernels.provisional_event`), so
    `predict_one` answers from the first event, and the started model keeps those labels (its
    centres are matched to the provisional ones). Unlike a lone :class:`RBFKMeans`, a stream does
    not re-check its start on `3 * warmup` events (that buffer would cost kilobytes per stream);
    starved centres are re-seeded as usual, and after a drift alarm the next `warmup` events are
    buffered and the stream restarts from them if that halves their K-Means cost.

    At most `max_streams` streams are kept: a new stream beyond that evicts the least recently
    used one (which would start again if it came back); an event that is refused does not count
    as a use. Predicting for an unknown stream checks the event, returns 0 (`{}` for
    `predict_proba_one`) and creates nothing. Each stream's seed is drawn from the template's
    `seed` and its key, so a stream learns the same whatever other streams do.

    Parameters
    ----------
    model
        The model every stream follows (its parameters; a River drift detector object or another
        core detector than the CUSUM is fed per stream from Python, and costs its own memory).
    key
        Name of the field that identifies the stream.
    max_streams
        Maximum number of streams kept.

    Attributes
    ----------
    n_streams : int
        Number of streams currently kept.
    n_evicted : int
        Number of streams evicted so far.
    n_alarms, n_drifts : int
        Drift alarms raised, and restarts they led to, over all streams.
    bank : streamrbf.core.streams.StreamBank
        The streams' models (the engine's bank of keyed streams).

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
        if not isinstance(model, RBFKMeans):
            raise TypeError(f"model must be a streamrbf.river.RBFKMeans, got "
                            f"{type(model).__name__}")
        self.missing = model.missing
        self._bs = int(model.batch_size)
        det = model.drift_detector
        found = None if (det == "adwin" or isinstance(det, base.DriftDetector)) else \
            core_detector(det)
        cusum = isinstance(found, Cusum)
        self._python_detector = det is not None and not cusum
        self.bank = StreamBank(model._policy, model._warmup_size, model._seed,
                               max_streams=int(max_streams), drift=cusum)
        # the per-event step of River's clusterer: forgetting and cooling per `batch_size` events
        self.bank.params[0], self.bank.params[1] = model._decay, model._cooling
        self.bank.on_release = self._forget_row
        self._features: tuple | None = None
        self._feature_set: frozenset | None = None
        self._get: Any = None
        # the values of the last event read and its vector (its values compared, not its identity)
        self._last_vals: tuple = ()
        self._last_xv: np.ndarray | None = None
        self._fast = self._bs == 1 and not self._python_detector
        self._batches: dict[int, list] = {}  # row -> [events, weights, count] (batch_size > 1)
        self._detectors: dict[int, Any] = {}  # row -> a detector fed from Python

    @property
    def _wrapped_model(self):
        return self.model

    @classmethod
    def _unit_test_params(cls):
        yield {"model": RBFKMeans(n_clusters=2, seed=0), "max_streams": 4}

    @property
    def n_streams(self) -> int:
        return self.bank.n_streams

    @property
    def n_evicted(self) -> int:
        return self.bank.n_evicted

    @property
    def n_alarms(self) -> int:
        return self.bank.n_alarms

    @property
    def n_drifts(self) -> int:
        return self.bank.n_drifts

    @property
    def streams(self) -> list:
        """The keys of the streams kept, least recently used first."""
        return list(self.bank.slots)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_last_vals"], state["_last_xv"] = (), None  # a cache, not the model
        return state

    def _forget_row(self, row: int) -> None:
        self._batches.pop(row, None)
        self._detectors.pop(row, None)

    def _new_stream(self, key: Any) -> int:
        row = self.bank.new_stream(key)
        if self._python_detector:
            self._detectors[row] = self._new_detector()
        return row

    def _new_detector(self) -> Any:
        det = self.model.drift_detector
        if det == "adwin":
            from river import drift

            return drift.ADWIN()
        if isinstance(det, base.DriftDetector):
            return det.clone()
        found = core_detector(det)
        return (found, found.new_state())

    # -- events -------------------------------------------------------------------------------

    def _split(self, x: dict) -> tuple[Any, dict]:
        try:
            k = x[self.key]
            rest = {f: v for f, v in x.items() if f != self.key}
        except KeyError:
            raise ValueError(f"missing key field {self.key!r}") from None
        except (TypeError, AttributeError):
            raise TypeError(
                f"an event must be a dict {{field: value}}, got {type(x).__name__}"
            ) from None
        if not rest:
            raise ValueError(f"empty event: no features besides the key field {self.key!r}")
        try:
            hash(k)
        except TypeError:
            raise TypeError(
                f"key field {self.key!r} must be hashable, got {type(k).__name__}"
            ) from None
        return k, rest

    def _key_vector(self, x: dict) -> tuple[Any, np.ndarray | None]:
        """``(key, the checked feature vector)``; the vector is None before the features are
        fixed (the event is checked then). Raises naming what is wrong."""
        get = self._get
        if get is not None and type(x) is dict:
            try:
                key = x[self.key]
                vals = get(x)
                if len(x) == len(vals) + 1:
                    hash(key)
                    if vals == self._last_vals:  # the event just checked (predict, then learn)
                        return key, self._last_xv
                    xv = self._packed(vals)
                    if xv is not None:
                        self._last_vals, self._last_xv = vals, xv
                        return key, xv
            except (LookupError, TypeError, OverflowError, struct.error):
                pass
        key, rest = self._split(x)
        if self._features is None:
            self._check_event(rest)
            return key, None
        return key, self._vector_slow(rest)

    def _fix_features(self, x: dict) -> np.ndarray:
        _, rest = self._split(x)
        xv = self._first_event(rest)
        self._start_bank(self._features)
        return xv

    def _start_bank(self, features: tuple) -> None:
        """Fix the features (the fast path's getter always returns a tuple, one feature too)
        and allocate the bank."""
        self._set_features(features)
        d = len(features)
        self._get = itemgetter(*features) if d > 1 else functools.partial(_first_value,
                                                                          features[0])
        if d not in _PACKERS:
            _PACKERS[d] = struct.Struct(f"{d}d").pack
        self.bank.allocate(d)

    def learn_one(self, x: dict, w: float = 1.0, **kwargs) -> None:
        """Learn from one event with the model of its stream (created on its first event).

        Parameters
        ----------
        x
            The event: the key field and the features.
        w
            The event's weight (see :meth:`RBFKMeans.learn_one`); an event of weight 0 is
            checked, and neither creates nor refreshes its stream.
        **kwargs
            Ignored (River's protocol).
        """
        if w.__class__ is not float or w != 1.0:
            w = _event_weight(w)
            if w == 0.0:
                self._key_vector(x)  # checked, not learnt
                return
        key, xv = self._key_vector(x)
        if xv is None:
            xv = self._fix_features(x)
        bank = self.bank
        row = bank.slots.get(key)
        if row is not None and self._fast and bank.phase[row] == STARTED:
            _, _, alarm = _ok.learn_event_bank(xv, w, row, *bank.event_args)
            bank.slots.move_to_end(key)
            if alarm or (bank.rewarm and row in bank.rewarm):
                bank.after_alarm(row, xv, w, alarm)
            return
        if row is None:
            row = self._new_stream(key)
        else:
            bank.slots.move_to_end(key)
        if bank.phase[row] == WARMING:
            bank.warm_event(row, xv, w)
            if self._bs > 1 and bank.phase[row] == STARTED:
                d = len(self._features)
                self._batches[row] = [np.empty((self._bs, d)), np.ones(self._bs), 0]
        else:
            self._learn_started(row, xv, w)

    def _learn_started(self, row: int, xv: np.ndarray, w: float) -> None:
        """The slow path of a started stream: mini-batches, detectors fed from Python."""
        bank = self.bank
        st, params = bank.state, bank.params
        if self._bs > 1:
            batch = self._batches[row]
            batch[0][batch[2]] = xv
            batch[1][batch[2]] = w
            batch[2] += 1
            if batch[2] < self._bs:
                if bank.rewarm and row in bank.rewarm:
                    bank.after_alarm(row, xv, w, False)
                return
            values = np.empty(self._bs)
            _, alarm = _ok.learn_rows(
                batch[0], batch[1], self._bs, st.centers[row], st.masses[row],
                logit_divisor(st.temperature[row]), int(params[2]), params[0],
                bank.aux[row], bank.rs[row:row + 1], values, bank.det[row])
            batch[2] = 0
            # the bookkeeping of a lone RBFKMeans after a step (`_after_step`)
            st.temperature[row] = cooled(st.temperature.item(row), params[1],
                                         st.min_temperature.item(row))
            st.n_steps[row] = counted(st.n_steps.item(row), 1)
            st.n_seen[row] = counted(st.n_seen.item(row), self._bs)
            if st.n_steps[row] % bank.warmup == 0:
                _ok.reseed_event_model(st.centers[row], st.masses[row], bank.aux[row],
                                       params[4])
        else:
            _, dmin, alarm = _ok.learn_event_bank(xv, w, row, *bank.event_args)
            values = np.array([dmin])
        det = self._detectors.get(row)
        if det is not None:
            alarm |= self._feed(det, values)
        bank.after_alarm(row, xv, w, alarm)

    @staticmethod
    def _feed(det: Any, values: np.ndarray) -> bool:
        if isinstance(det, tuple):  # a core detector and its memory
            return bool(det[0].update(det[1], values.astype(np.float64)))
        return _river_alarm(det, values.tolist())

    # -- prediction ---------------------------------------------------------------------------

    def predict_one(self, x: dict, **kwargs) -> int:
        """The nearest cluster of an event under its stream's model (during the stream's
        warm-up, its provisional clustering; 0 for an unknown stream).

        Parameters
        ----------
        x
            The event: the key field and the features.
        **kwargs
            Ignored (River's protocol).

        Returns
        -------
        int
            The cluster.
        """
        key, xv = self._key_vector(x)
        row = self.bank.slots.get(key)
        if row is None or xv is None:
            return 0
        return self.bank.predict_event(row, xv)

    def predict_proba_one(self, x: dict, **kwargs) -> dict[int, float]:
        """The non-zero memberships of an event under its stream's model (`{}` for an unknown
        stream; during the warm-up, the provisional cluster with membership 1).

        Parameters
        ----------
        x
            The event: the key field and the features.
        **kwargs
            Ignored (River's protocol).

        Returns
        -------
        dict
            `{cluster: membership}`.
        """
        key, xv = self._key_vector(x)
        bank = self.bank
        row = bank.slots.get(key)
        if row is None or xv is None:
            return {}
        if bank.phase[row] == WARMING:
            return {int(bank.predict_event(row, xv)): 1.0}
        k = bank.k
        vals, idx = np.empty(k), np.empty(k, np.int64)
        n = _ok.responsibilities_event(
            xv, bank.state.centers[row], logit_divisor(bank.state.temperature[row]),
            int(bank.params[2]), vals, idx)
        return dict(zip(idx[:n].tolist(), vals[:n].tolist(), strict=True))

    # -- frames -------------------------------------------------------------------------------

    def _key_frame(self, X) -> tuple[Any, tuple]:
        """``(the key column, (checked features, the features to fix or None))`` of a frame
        with the key column."""
        self._check_frame(X)
        if self.key not in X.columns:
            raise ValueError(f"missing key field {self.key!r}: the frame has no such column")
        keys = X[self.key]
        na = keys.isna().to_numpy()
        if na.any():
            raise ValueError(f"missing key in row {int(np.argmax(na))}: the key field "
                             f"{self.key!r} is NA")
        Xf = X.drop(columns=[self.key])
        if len(Xf.columns) == 0:
            raise ValueError(f"empty events: no features besides the key field {self.key!r}")
        if self._features is None:
            features = tuple(Xf.columns)
            return keys, (self._frame(Xf, features, strict=True), features)
        return keys, (self._frame(Xf, self._features), None)

    def learn_many(self, X, **kwargs) -> None:
        """Learn a frame of events of many streams at once: each stream's rows, in order, fill its
        warm-up; streams that complete it start together; then every started stream takes one
        mini-batch step on its remaining rows of the frame (as `partial_fit` does: forgetting
        and cooling by its row count; :func:`~streamrbf.core.bank.step_bank`).

        The whole frame is checked first: a bad frame raises and changes nothing.

        Parameters
        ----------
        X
            A `pandas.DataFrame` with the key column and the features.
        **kwargs
            Ignored (River's protocol).

        Examples
        --------
        >>> import pandas as pd
        >>> from streamrbf.river import KeyedRBFKMeans, RBFKMeans
        >>> keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=2, warmup=4, seed=0), key="id")
        >>> X = pd.DataFrame({"id": ["a", "b"] * 20, "v": [0.0, 10.0, 1.0, 11.0] * 10})
        >>> keyed.learn_many(X)
        >>> sorted(round(c["v"], 1) for c in keyed.model_for("b").centers.values())
        [10.0, 11.0]
        """
        import pandas as pd

        keys, (M, features) = self._key_frame(X)
        if len(M) == 0:
            return
        if features is not None:
            self._start_bank(features)
        codes, uniques = pd.factorize(keys, sort=False)
        if len(uniques) > self.max_streams:  # more streams than kept: in parts, in order
            half = len(X) // 2
            self.learn_many(X.iloc[:half])
            self.learn_many(X.iloc[half:])
            return
        bank = self.bank
        uniques = uniques.tolist()
        new = [key for key in uniques if key not in bank.slots]
        rows = bank.rows_for(uniques, codes)
        if self._python_detector:
            for key in new:
                self._detectors[bank.slots[key]] = self._new_detector()
        bank.learn_rows(M, rows)

    def predict_many(self, X, **kwargs):
        """The nearest cluster of each row of a frame under its stream's model (as
        `predict_one`: provisional during a stream's warm-up, 0 for an unknown stream).

        Parameters
        ----------
        X
            A `pandas.DataFrame` with the key column and the features.
        **kwargs
            Ignored (River's protocol).

        Returns
        -------
        pandas.Series
            The clusters, indexed as ``X``.
        """
        import pandas as pd

        keys, (M, features) = self._key_frame(X)
        bank = self.bank
        if features is not None or bank.state is None:
            return pd.Series(np.zeros(len(X), dtype=np.int64), index=X.index)
        slots = bank.slots
        rows = np.fromiter((slots.get(k, -1) for k in keys.tolist()), np.int64, len(keys))
        out = np.empty(len(X), np.int64)
        _ok.nearest_rows_bank(M, rows, bank.state.centers, bank.count, out)
        return pd.Series(out, index=X.index)

    # -- one stream -----------------------------------------------------------------------------

    def model_for(self, key: Any) -> RBFKMeans | None:
        """A copy of one stream's model as a standalone :class:`RBFKMeans` (None if unknown);
        does not count as a use. Learning on the copy does not change the stream.

        Parameters
        ----------
        key
            The value of the key field that identifies the stream.

        Returns
        -------
        RBFKMeans or None
            The stream's clusterer (centres, masses, temperature, counters; during the stream's
            warm-up, a model holding its warm-up events), or None for a stream not seen (or
            evicted).

        Examples
        --------
        >>> from streamrbf.river import KeyedRBFKMeans, RBFKMeans
        >>> keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=2, warmup=4, seed=0), key="id")
        >>> for i in range(20):
        ...     keyed.learn_one({"id": "s" + str(i % 2), "v": float(i % 4)})
        >>> sorted(c["v"] for c in keyed.model_for("s0").centers.values())  # s0 saw 0 and 2
        [0.0, 2.0]
        >>> keyed.model_for("unknown") is None
        True
        """
        bank = self.bank
        row = bank.slots.get(key)
        if row is None:
            return None
        m = self.model.clone()
        m._set_features(self._features)
        if bank.phase[row] == WARMING:
            m._warm = list(bank.warm[row][: bank.n_warm[row]].copy())
            return m
        one = bank.one(row)
        one.feature_names = self._features
        m._adopt(one, len(self._features))
        m._aux[:] = bank.aux[row]
        return m
