"""ClusterPerKey: one streaming RBF K-Means model, with its own temperature, per key."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow, GlobalWindows

from ..assignment import Assignment
from .dead_letters import DEAD_LETTERS, DeadLetter, ValidateEvents
from .inference import assign
from .state import ModelState, ModelStateCoder, from_estimator, stable_hash, to_estimator

__all__ = ["ClusterPerKey", "PerKeyResult", "Snapshot"]

SNAPSHOTS = "snapshots"
_END_OF_TIME = GlobalWindow().max_timestamp()


class Snapshot(NamedTuple):
    """A key's model after ``n_steps`` steps and ``n_seen`` events (plain lists: JSON-ready)."""

    key: str
    n_steps: int
    n_seen: int
    temperature: float
    centers: list[list[float]]
    counts: list[float]


class PerKeyResult(NamedTuple):
    """Outputs of :class:`ClusterPerKey`: ``(key, Assignment)`` per good event, ``DeadLetter`` per
    bad one, and ``Snapshot`` records (empty unless ``snapshot_every`` is set)."""

    assignments: beam.PCollection
    dead_letters: beam.PCollection
    snapshots: beam.PCollection


def _snapshot(key: str, s: ModelState) -> Snapshot:
    return Snapshot(key, s.n_steps, s.n_seen, s.temperature, s.centers.tolist(), s.counts.tolist())


class _ScoreAndLearnDoFn(beam.DoFn):
    """Per key: buffer the first ``warmup`` events, initialise, then score each batch and learn
    from it (prequential). State is one :class:`ModelState`; a timer clears idle keys."""

    MODEL = ReadModifyWriteStateSpec("model", ModelStateCoder())
    IDLE = TimerSpec("idle", TimeDomain.REAL_TIME)
    END = TimerSpec("end_of_input", TimeDomain.WATERMARK)

    def __init__(self, params: dict[str, Any], warmup: int, ttl_secs: float | None,
                 snapshot_every: int, clock: Callable[[], float], seed: int) -> None:
        self.params = params
        self.warmup = warmup
        self.ttl_secs = ttl_secs
        self.snapshot_every = snapshot_every
        self.clock = clock
        self.seed = seed

    def setup(self) -> None:
        import torch

        # One intra-op thread: a Beam worker runs one bundle per core already, and torch's
        # threads contending with the runner's make small-batch ops 10-100x slower.
        torch.set_num_threads(1)

    def _seed(self, key: str) -> int:
        return (self.seed * 1_000_003 + stable_hash(key)) % (2**32)

    def _initialise(self, key: str, rows: np.ndarray, names) -> tuple[ModelState, Iterable[Any]]:
        from ..kmeans import RBFKMeans

        est = RBFKMeans(**{**self.params, "random_state": self._seed(key)}).partial_fit(rows)
        state = from_estimator(est, len(rows), names)
        out = assign(rows, state.centers, state.temperature, est.mapping)
        return state, [(key, a) for a in out]

    def _snap(self, key: str, before: int, state: ModelState) -> Iterable[Any]:
        every = self.snapshot_every
        if every and (before < 0 or state.n_steps // every != before // every):
            yield beam.pvalue.TaggedOutput(SNAPSHOTS, _snapshot(key, state))

    def process(
        self,
        element: tuple[str, Sequence[Any]],
        model=beam.DoFn.StateParam(MODEL),
        idle=beam.DoFn.TimerParam(IDLE),
        end=beam.DoFn.TimerParam(END),
    ) -> Iterable[Any]:
        key, batch = element
        state: ModelState | None = model.read()
        names0 = state.feature_names if state is not None else None
        d0 = state.n_features if state is not None else None
        rows = []
        for names, values in batch:
            if d0 is None:
                names0, d0 = names, len(values)
            if len(values) != d0 or names != names0:
                what = f"{d0} features {list(names0) if names0 else ''}".rstrip()
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of(
                    key, dict(zip(names, values)) if names else list(values),
                    f"stream {key!r} has {what}; event has {len(values)} "
                    f"{list(names) if names else ''}".rstrip(), "model"))
            else:
                rows.append(values)
        if rows:
            X = np.asarray(rows, dtype=np.float64)
            if state is None or not state.initialised:
                if state is not None and state.pending is not None:
                    X = np.concatenate([state.pending, X])
                if len(X) < self.warmup:
                    state = ModelState.warming_up(X, names0)
                else:
                    state, out = self._initialise(key, X, names0)
                    yield from out
                    yield from self._snap(key, -1, state)
            else:
                est = to_estimator(state, self.params, self._seed(key))
                # Prequential: score with the model as it was, then learn from the batch.
                for a in assign(X, state.centers, state.temperature, est.mapping):
                    yield key, a
                est.partial_fit(X)
                before = state.n_steps
                state = from_estimator(est, state.n_seen + len(X), names0)
                yield from self._snap(key, before, state)
            model.write(state)
        end.set(_END_OF_TIME)
        if self.ttl_secs is not None:
            idle.set(self.clock() + self.ttl_secs)

    def _flush(self, key: str, model) -> Iterable[Any]:
        """Account for warm-up events of a stream that ends (or goes idle) before initialising."""
        state: ModelState | None = model.read()
        if state is not None and not state.initialised and state.pending is not None:
            rows = state.pending
            if len(rows) >= int(self.params.get("n_clusters", 8)):
                state, out = self._initialise(key, rows, state.feature_names)
                yield from out
                yield from self._snap(key, -1, state)
                model.write(state)
            else:
                for row in rows.tolist():
                    event = dict(zip(state.feature_names, row)) if state.feature_names else row
                    yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of(
                        key, event, f"stream {key!r} ended with {len(rows)} events, fewer than "
                        f"n_clusters={self.params.get('n_clusters', 8)}", "model"))
                model.clear()

    @on_timer(END)
    def end_of_input(self, key=beam.DoFn.KeyParam, model=beam.DoFn.StateParam(MODEL),
                     idle=beam.DoFn.TimerParam(IDLE)):
        # Bounded input is over: a pending processing-time timer would keep the runner waiting.
        idle.clear()
        yield from self._flush(key, model)

    @on_timer(IDLE)
    def expire(self, key=beam.DoFn.KeyParam, model=beam.DoFn.StateParam(MODEL)):
        yield from self._flush(key, model)
        model.clear()


class ClusterPerKey(beam.PTransform):
    """Cluster ``(key, features)`` events with one streaming RBF K-Means model per key.

    Each key (stream) has its own centres and its own annealing temperature, kept in Beam state
    (global window) as a compact :class:`~streamrbf.beam.state.ModelState`. Events are grouped
    per key into batches of ``batch_size`` (flushed after ``max_buffering_secs`` of processing
    time); each batch is scored first and then learned from, one core ``partial_fit`` step per
    batch. The first ``warmup`` events of a key initialise its model (k-means++ and annealing) and
    are then scored by it. A key idle for ``ttl_secs`` is dropped from state.

    ``features`` is a dict, a 1-D array or list, or JSON text. Events with a bad key, unparseable
    or non-finite features, missing or extra features, or a dimension different from their
    stream's go to ``dead_letters``: every event leaves as exactly one ``(key, Assignment)`` or one
    :class:`~streamrbf.beam.dead_letters.DeadLetter`.

    Parameters
    ----------
    n_clusters
        Centres per key.
    batch_size, max_buffering_secs
        ``GroupIntoBatches`` size and buffering time.
    warmup
        Events a key buffers before initialising its model; None: ``max(4 * n_clusters, 32)``.
    ttl_secs
        Processing time after a key's last batch when its state is cleared; None keeps it forever.
    snapshot_every
        Emit a :class:`Snapshot` of a key's model at initialisation and every this many steps
        (0: never).
    feature_names, n_features
        Fix the features of every stream (otherwise each stream's first event fixes its own).
    clock
        Processing-time clock for buffering and TTL (tests under ``TestStream`` pass one).
    random_state
        Base seed; each key's seed is derived from it and the key.
    model_params
        Any other :class:`~streamrbf.kmeans.RBFKMeans` parameter (``temperature_decay``,
        ``decay``, ``mapping``, ...).

    Examples
    --------
    >>> import apache_beam as beam
    >>> events = [("a", [0.0, 0.1 * (i % 3)]) for i in range(40)]
    >>> events += [("a", [5.0, 5.0 + 0.1 * (i % 3)]) for i in range(40)]
    >>> events += [("b", {"x": 1.0}), (3, [1.0, 2.0])]
    >>> with beam.Pipeline(runner="FnApiRunner") as p:
    ...     out = p | beam.Create(events) | ClusterPerKey(2, batch_size=20, warmup=80)
    ...     sizes = (out.assignments | beam.Map(lambda kv: kv[1].cluster)
    ...              | beam.combiners.Count.PerElement() | beam.Map(lambda c: f"size {c[1]}"))
    ...     bad = out.dead_letters | beam.Map(lambda d: f"{d.key}: {d.reason[:24]}")
    ...     _ = ((sizes, bad) | beam.Flatten() | beam.combiners.ToList()
    ...          | beam.FlatMap(sorted) | beam.Map(print))
    3: key must be a non-empty
    b: stream 'b' ended with 1
    size 40
    size 40
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        batch_size: int = 256,
        max_buffering_secs: float | None = 5.0,
        warmup: int | None = None,
        ttl_secs: float | None = 3600.0,
        snapshot_every: int = 0,
        feature_names: Sequence[str] | None = None,
        n_features: int | None = None,
        clock: Callable[[], float] = time.time,
        random_state: int = 0,
        **model_params: Any,
    ) -> None:
        super().__init__()
        from ..kmeans import RBFKMeans

        params = {"n_clusters": n_clusters, **model_params}
        RBFKMeans(**params)._check_params()  # fail at construction, not on a worker
        self.params = params
        self.batch_size = int(batch_size)
        self.max_buffering_secs = max_buffering_secs
        self.warmup = int(warmup) if warmup is not None else max(4 * n_clusters, 32)
        if self.warmup < n_clusters:
            raise ValueError(f"warmup must be >= n_clusters={n_clusters}, got {self.warmup}")
        self.ttl_secs = ttl_secs
        self.snapshot_every = int(snapshot_every)
        self.feature_names = feature_names
        self.n_features = n_features
        self.clock = clock
        self.random_state = int(random_state)

    def expand(self, pcoll: beam.PCollection) -> PerKeyResult:
        valid, bad = pcoll | "ValidateEvents" >> ValidateEvents(
            self.feature_names, self.n_features, keyed=True)
        batches = (
            valid
            | "GlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "BatchPerKey" >> beam.GroupIntoBatches(
                self.batch_size, self.max_buffering_secs, clock=self.clock)
        )
        # Bounded input ends with the end-of-input timer, and a processing-time timer set while
        # the runner drains timers at the end is never run (FnApiRunner): TTL is for streams.
        ttl = None if pcoll.is_bounded else self.ttl_secs
        scored = batches | "ScoreAndLearn" >> beam.ParDo(_ScoreAndLearnDoFn(
            self.params, self.warmup, ttl, self.snapshot_every, self.clock,
            self.random_state,
        )).with_output_types(tuple[str, Assignment]).with_outputs(
            DEAD_LETTERS, SNAPSHOTS, main="assignments")
        dead = (bad, scored[DEAD_LETTERS]) | "DeadLetters" >> beam.Flatten()
        return PerKeyResult(scored.assignments, dead, scored[SNAPSHOTS])
