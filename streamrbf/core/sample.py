"""A stream's recent sample, and the split and merge moves a stream makes on it.

A streaming model sees each event once, in batches, and its mini-batch steps only move centres
locally: a start from the first batch that put two centres on one cluster and one centre on two
clusters stays that way (the local optimum :mod:`streamrbf.core.refine` repairs at the end of
``fit``). So a stream keeps a bounded sample of what it has seen, recent events favoured, and at
doubling points of its event count (2, 4, 8, ... times its first batch: a number of refinements
logarithmic in the stream's length) it runs the split and merge moves of ``fit``
(:func:`~streamrbf.core.refine.split_merge`) on that sample from its current centres, within
:data:`MAX_PASSES` Lloyd iterations. The moved centres are kept only if they fit the batch the
stream has just learnt at least as well as the centres they replace (after a drift the sample
still holds the old regime, and centres fitted to it would pull the model back); the masses then
follow the new clusters' shares of the sample, the temperature stays.

The sample is a weighted reservoir (Efraimidis and Spirakis' A-Res): each event gets the key
``log(-log u) - log w - t log 2 / h`` (``u`` uniform, ``w`` its weight, ``t`` its index in the
stream) and the ``size`` smallest keys are kept, which samples with weights ``w 2^(t / h)``. The
sample's half-life ``h`` is :data:`MEMORY_FACTOR` times the model's forgetting half-life: it
follows a drift as the model does, but holds more than the model's short memory (a refinement
judged on the last few batches alone overfits them); without forgetting it is a uniform sample
of the whole stream. Its size, :func:`sample_size`, holds about 200 rows per cluster and 4 per
cluster and feature (a cluster's mean and principal axis in ``d`` dimensions need ``O(d)`` rows),
at least 4,096 and at most 16,384 rows, within 16 MB.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .engine import weighted_sum
from .policy import Policy
from .refine import hard_pass, split_merge
from .state import RESEEDING, ModelState, generator

__all__ = ["GROWTH", "MAX_PASSES", "MEMORY_FACTOR", "StreamSample", "offered", "sample_size"]

#: Rows per cluster, rows per cluster and feature, the smallest and largest sizes, and the most
#: bytes a sample may take.
ROWS_PER_CLUSTER, ROWS_PER_DIMENSION, MIN_ROWS, MAX_ROWS, MAX_BYTES = 200, 4, 4096, 16384, 16 << 20
#: The sample's half-life in units of the model's forgetting half-life.
MEMORY_FACTOR = 4.0
#: The moves happen each time the events seen grow by this factor.
GROWTH = 2
#: The most Lloyd iterations one refinement runs (moves and their judging included): the stream's
#: own steps keep converging after it, so the sample need not be solved to the tolerance.
MAX_PASSES = 50


def sample_size(n_clusters: int, n_features: int) -> int:
    """Rows a stream's sample holds: ``max(200 k, 4 k d)`` within ``[4096, 16384]``, and within
    16 MB of float64 rows.

    Parameters
    ----------
    n_clusters
        Centres ``k``.
    n_features
        Features ``d``.

    Returns
    -------
    int
        The size.

    Examples
    --------
    >>> sample_size(8, 16), sample_size(50, 8), sample_size(10, 64), sample_size(8, 10_000)
    (4096, 10000, 4096, 209)
    """
    rows = max(ROWS_PER_CLUSTER * n_clusters, ROWS_PER_DIMENSION * n_clusters * n_features)
    return min(max(rows, MIN_ROWS), _most_rows(n_features))


def _most_rows(n_features: int) -> int:
    """The largest sample of ``n_features``-wide float64 rows: :data:`MAX_ROWS`, within
    :data:`MAX_BYTES` (at least one row)."""
    return max(1, min(MAX_ROWS, MAX_BYTES // (8 * max(n_features, 1))))


class StreamSample:
    """A stream's bounded, recency-weighted sample (module docstring) and its refinement
    schedule.

    Parameters
    ----------
    size
        Rows kept.
    half_life
        Half-life of the sample's weights in events (None or ``inf``: a uniform sample).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = StreamSample(size=3, half_life=None)
    >>> s.add(np.arange(10.0)[:, None], None, rng)
    >>> len(s.rows), s.seen
    (3, 10)
    """

    def __init__(self, size: int, half_life: float | None) -> None:
        self.size = int(size)
        self.half_life = half_life
        self.rows = np.empty((0, 0))
        self.keys = np.empty(0)
        self.seen = 0
        self.next_refine = 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamSample):
            return NotImplemented
        return (self.size == other.size and self.half_life == other.half_life
                and self.seen == other.seen and self.next_refine == other.next_refine
                and np.array_equal(self.rows, other.rows)
                and np.array_equal(self.keys, other.keys))

    __hash__ = None  # type: ignore[assignment]  # (mutable)

    def record(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The sample as a model file holds it: JSON fields and two tensors.

        Returns
        -------
        tuple
            ``({"size", "half_life", "seen", "next_refine"}, {"sample_rows": rows (n, d)
            float64, "sample_keys": keys (n,) float64})``; :meth:`from_record` reads it back.

        Examples
        --------
        >>> s = StreamSample(size=3, half_life=None)
        >>> s.add(np.arange(10.0)[:, None], None, np.random.default_rng(0))
        >>> fields, tensors = s.record()
        >>> fields, tensors["sample_rows"].shape
        ({'size': 3, 'half_life': None, 'seen': 10, 'next_refine': 0}, (3, 1))
        >>> StreamSample.from_record(fields, tensors, n_features=1) == s
        True
        """
        fields = {"size": self.size, "half_life": self.half_life, "seen": self.seen,
                  "next_refine": self.next_refine}
        return fields, {"sample_rows": self.rows, "sample_keys": self.keys}

    @classmethod
    def from_record(cls, fields: Any, tensors: dict[str, np.ndarray],
                    n_features: int) -> StreamSample:
        """A sample from what :meth:`record` wrote, every field checked.

        Parameters
        ----------
        fields
            The JSON fields.
        tensors
            ``"sample_rows"`` and ``"sample_keys"`` (finite floats).
        n_features
            The model's features: the rows' width.

        Returns
        -------
        StreamSample
            The sample.

        Raises
        ------
        ValueError
            Naming the first field that is missing, of the wrong type or out of range.

        Examples
        --------
        >>> StreamSample.from_record({"size": 0, "half_life": None, "seen": 0,
        ...                           "next_refine": 0}, {}, n_features=1)
        Traceback (most recent call last):
        ...
        ValueError: sample size must be an int in [1, 16384] for 1 features, got 0
        """
        if not isinstance(fields, dict):
            raise ValueError("sample must be an object")
        size, half_life = fields.get("size"), fields.get("half_life")
        seen, next_refine = fields.get("seen"), fields.get("next_refine")
        most = _most_rows(n_features)
        if not (type(size) is int and 1 <= size <= most):
            raise ValueError(f"sample size must be an int in [1, {most}] for {n_features} "
                             f"features, got {size!r}")
        if half_life is not None and not (type(half_life) in (int, float)
                                          and 0 < half_life < math.inf):
            raise ValueError(f"sample half_life must be None or a finite number > 0, got "
                             f"{half_life!r}")
        rows, keys = tensors.get("sample_rows"), tensors.get("sample_keys")
        if rows is None or keys is None:
            raise ValueError("the sample's tensors sample_rows and sample_keys are missing")
        n = len(keys) if keys.ndim == 1 else -1
        if rows.ndim != 2 or len(rows) != n or (n and rows.shape[1] != n_features) or n > size:
            raise ValueError(f"sample tensors must be rows (n, {n_features}) and keys (n,) "
                             f"with n <= {size}, got {rows.shape} and {keys.shape}")
        counters = []
        for name, v in (("seen", seen), ("next_refine", next_refine)):
            if not (type(v) is int and 0 <= v < 2**63):
                raise ValueError(f"sample {name} must be an int in [0, 2**63), got {v!r}")
            counters.append(int(v))
        if counters[0] < n:
            raise ValueError(f"sample seen ({seen}) is below its {n} rows")
        sample = cls(size, None if half_life is None else float(half_life))
        sample.rows = np.ascontiguousarray(rows, dtype=np.float64)
        sample.keys = np.ascontiguousarray(keys, dtype=np.float64)
        sample.seen, sample.next_refine = counters
        return sample

    @classmethod
    def for_stream(cls, policy: Policy, X: object) -> StreamSample | None:
        """The sample a stream that started on the batch ``X`` keeps: None unless ``X`` is a
        dense numpy batch and ``policy.split_merge`` is on (a stream on an accelerator makes no
        moves); its half-life is :data:`MEMORY_FACTOR` times the forgetting's in events, as
        :meth:`~streamrbf.core.policy.Policy.forgetting` gives it for batches of ``X``'s size
        (under ``half_life="auto"``, ``memory_steps()`` such batches).

        Parameters
        ----------
        policy
            How the stream learns.
        X
            Its first batch.

        Returns
        -------
        StreamSample or None
            The empty sample.

        Examples
        --------
        >>> s = StreamSample.for_stream(Policy(n_clusters=3, half_life=100), np.zeros((8, 2)))
        >>> s.size, s.half_life
        (4096, 400.0)
        >>> StreamSample.for_stream(Policy(n_clusters=3, split_merge=False), np.zeros((8, 2)))
        """
        if not (policy.split_merge and isinstance(X, np.ndarray) and X.ndim == 2):
            return None
        n = max(len(X), 1)
        factor = policy.forgetting(n)  # per batch of n events: they halve in n ln 2 / -ln f
        events = n * math.log(2.0) / -math.log(factor) if 0.0 < factor < 1.0 else None
        return cls(sample_size(int(policy.n_clusters), X.shape[1]),
                   None if events is None else MEMORY_FACTOR * events)

    def learnt(self, state: ModelState, policy: Policy, X: np.ndarray, w: np.ndarray | None,
               model: int = 0) -> bool:
        """After model ``model`` of ``state`` learnt the batch ``X`` (weights ``w``): offer it
        to the sample and, at a doubling point of the events seen (:meth:`due`), make the split
        and merge moves (:meth:`refine`, checked on ``X``). The draws come from the model's
        seed and step count, so a replay gives the same moves.

        Parameters
        ----------
        state
            The models (numpy centres), changed in place when the moves are kept.
        policy
            How the model learns.
        X
            The batch, dense.
        w
            Its weights, or None.
        model
            Which model of the bank.

        Returns
        -------
        bool
            Whether the centres moved.
        """
        if not isinstance(X, np.ndarray):
            return False
        seed, step = int(state.seed[model]), int(state.n_steps[model])
        self.add(X, w, generator(seed, step, RESEEDING, 1))
        if not self.due():
            return False
        return self.refine(state, policy, generator(seed, step, RESEEDING, 2), model,
                           latest=(X, w))

    def add(self, X: np.ndarray, w: np.ndarray | None, rng: np.random.Generator) -> None:
        """Offer a batch (rows ``X``, weights ``w`` or None) to the sample.

        Parameters
        ----------
        X
            The rows ``(n, d)``, dense.
        w
            Their weights, or None (all 1); a row of weight 0 never enters.
        rng
            Where the uniform draws come from.
        """
        n = X.shape[0]
        if n == 0:
            return
        t = self.seen + np.arange(n)
        with np.errstate(divide="ignore"):
            keys = np.log(-np.log(1.0 - rng.random(n)))  # (1 - u: never log(0))
            if w is not None:
                keys = keys - np.log(w)
        if self.half_life is not None and math.isfinite(self.half_life):
            keys = keys - t * (math.log(2.0) / self.half_life)
        self.seen += n
        if len(self.keys) < self.size:  # filling: keep the smallest keys of all
            rows = X if not len(self.rows) else np.concatenate([self.rows, X])
            keys = keys if not len(self.keys) else np.concatenate([self.keys, keys])
            keep = np.isfinite(keys)
            if keep.sum() > self.size:
                keep = np.zeros(len(keys), bool)
                keep[np.argpartition(keys, self.size - 1)[:self.size]] = True
            self.rows = np.ascontiguousarray(rows[keep], dtype=np.float64)
            self.keys = keys[keep]
            return
        # full: the rows whose keys beat the largest kept one take the places of the largest
        new = np.flatnonzero(keys < self.keys.max())
        if not new.size:
            return
        both = np.concatenate([self.keys, keys[new]])
        kept = np.argpartition(both, self.size - 1)[:self.size]
        entering = kept[kept >= self.size] - self.size
        stays = np.zeros(self.size, bool)
        stays[kept[kept < self.size]] = True
        free = np.flatnonzero(~stays)
        self.rows[free] = X[new[entering]]
        self.keys[free] = keys[new[entering]]

    def due(self) -> bool:
        """Whether the stream has reached its next refinement (twice the events of the last
        one); the first call sets the schedule.

        Returns
        -------
        bool
            True at a doubling point.
        """
        if self.next_refine == 0:
            self.next_refine = GROWTH * self.seen
            return False
        if self.seen >= self.next_refine:
            self.next_refine = GROWTH * self.seen
            return True
        return False

    def refine(self, state: ModelState, policy: Policy, rng: np.random.Generator,
               model: int = 0, latest: tuple[np.ndarray, np.ndarray | None] | None = None
               ) -> bool:
        """Split and merge moves of model ``model`` on the sample
        (:func:`~streamrbf.core.refine.split_merge`, Lloyd's tolerance from the sample's
        variance and the policy's ``tol``, at most ``max_iter`` and :data:`MAX_PASSES`
        iterations); its masses become
        the new clusters' shares of the sample times its total mass. The record is changed in
        place, and only when the moved centres also fit the ``latest`` batch (the rows the
        stream has just learnt) at least as well as the centres they replace: after a drift the
        sample still holds the old regime, and centres fitted to that mixture would pull the
        model back from where the data now are.

        Parameters
        ----------
        state
            The models (numpy centres).
        policy
            How the model learns.
        rng
            Where the moves' random starts come from.
        model
            Which model of the bank.
        latest
            The rows ``(X, w)`` the moves must not fit worse; None: no check.

        Returns
        -------
        bool
            Whether the centres moved.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(0, 0.1, (50, 1)), rng.normal(5, 0.1, (50, 1)),
        ...                     rng.normal(10, 0.1, (50, 1))])
        >>> s = StreamSample(size=150, half_life=None)
        >>> s.add(X, None, rng)
        >>> st = ModelState.single(np.array([[2.5], [9.0], [11.0]]), np.full(3, 50.0),
        ...                        temperature=0.01)
        >>> s.refine(st, Policy(n_clusters=3), rng, latest=(X, None))
        True
        >>> sorted(st.centers[0].ravel().round().tolist())
        [0.0, 5.0, 10.0]
        """
        X = self.rows
        k = state.centers.shape[1]
        if len(X) < 2 * k:
            return False
        C = state.centers[model].astype(np.float64)
        tol = float(policy.tol or 0.0) * float(X.var(axis=0).mean())
        C2, r, _ = split_merge(X, C, None, tol, min(int(policy.max_iter), MAX_PASSES), rng)
        if latest is not None:
            Xl = np.ascontiguousarray(latest[0], dtype=np.float64)
            wl = None if latest[1] is None else np.asarray(latest[1], dtype=np.float64)
            before = hard_pass(Xl, C, wl).nearest
            after = hard_pass(Xl, C2, wl).nearest
            if weighted_sum(after, wl) > weighted_sum(before, wl):
                return False
        share = np.bincount(r.labels, minlength=k) / len(X)
        total = float(np.sum(state.masses[model]))
        state.centers[model] = C2.astype(state.centers.dtype)
        state.masses[model] = share * total
        return True


def offered(sample: StreamSample | None, state: ModelState, policy: Policy, X: object,
            w: np.ndarray | None, model: int = 0) -> StreamSample | None:
    """What a stream does with the batch ``X`` it has just learnt: a stream without a sample yet
    (its start, its first batch after ``fit``, or after a load from a file saved without its
    sample) starts one (:meth:`StreamSample.for_stream`: None when the stream keeps none, as
    when ``split_merge`` is off: a stream whose moves were turned off drops its sample), then
    :meth:`StreamSample.learnt`.

    Parameters
    ----------
    sample
        The stream's sample, or None.
    state
        The models, changed in place when moves are kept.
    policy
        How the stream learns.
    X
        The batch.
    w
        Its weights, or None.
    model
        Which model of the bank.

    Returns
    -------
    StreamSample or None
        The stream's sample.

    Examples
    --------
    >>> st = ModelState.single(np.array([[0.0], [1.0]]), np.ones(2), temperature=0.1)
    >>> s = offered(None, st, Policy(n_clusters=2), np.zeros((8, 1)), None)
    >>> s.seen, offered(None, st, Policy(n_clusters=2, split_merge=False), np.zeros((8, 1)),
    ...                 None)
    (8, None)
    """
    if sample is None or not policy.split_merge:  # (moves turned off: the sample goes)
        sample = StreamSample.for_stream(policy, X)
        if sample is None:
            return None
    sample.learnt(state, policy, X, w, model)  # type: ignore[arg-type]  # (learnt checks X)
    return sample
