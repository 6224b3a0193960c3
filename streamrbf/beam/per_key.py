"""ClusterPerKey: one streaming RBF K-Means model, with its own temperature, per key."""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from math import isfinite
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.timestamp import MIN_TIMESTAMP as _MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from ..core import engine
from ..core.assignment import Assignment, AssignmentBatch
from ..core.drift import detector as core_detector
from ..core.policy import DRIFT_RESTART_GAIN, Policy, translate_deprecated, warmup_size
from ..core.state import ModelState
from ..core.validation import value_limit
from .dead_letters import (
    DEAD_LETTERS,
    DeadLetter,
    _parse_keyed_with_id,
    is_utf8_text,
    parse_keyed,
    too_large_reason,
)
from .state import EventChunk, KeyState, KeyStateCoder, stable_hash

__all__ = ["ClusterPerKey", "PerKeyResult", "Snapshot"]

SNAPSHOTS = "snapshots"
_DRIFT_ALARMS = beam.metrics.Metrics.counter("streamrbf", "drift_alarms")
_DRIFT_RESTARTS = beam.metrics.Metrics.counter("streamrbf", "drift_restarts")
_END_OF_TIME = GlobalWindow().max_timestamp()
_GLOBAL = (GlobalWindow(),)
# Rows a key gathers within a bundle before they go to the stateful step as one chunk.
_CHUNK_ROWS = 4096


class Snapshot(NamedTuple):
    """A key's model after ``n_steps`` steps and ``n_seen`` events (plain lists: JSON-ready).

    It holds all of the key's model record, so a model rebuilt from it (as the ``streamrbf run``
    job writes each stream's model file) is the one ClusterPerKey held: the same centres, masses,
    temperatures, counters, seed and feature names, hence the same later random draws. The fields
    after ``counts`` came later and have defaults (None: not recorded), so that
    ``Snapshot(**d)`` still reads the JSON of a snapshot that lacks them.

    Attributes
    ----------
    key : str
        The key (the stream).
    n_steps : int
        Learning steps (batches learnt from) of the key's model.
    n_seen : int
        Events the key's model has seen.
    temperature : float
        The model's current temperature.
    centers : list of list of float
        The centres, ``n_clusters`` lists of ``n_features`` values.
    counts : list of float
        The centres' decayed masses.
    initial_temperature : float or None
        The temperature the model started from (since its last drift restart, which starts a
        model afresh, hot).
    min_temperature : float or None
        The floor the temperature never anneals below.
    seed : int or None
        The model's seed (derived from ``random_state`` and the key): with ``n_steps``, it
        determines the model's random draws.
    feature_names : list of str or None
        The model's feature names (None for array events without ``feature_names``).

    Examples
    --------
    >>> import apache_beam as beam
    >>> events = [("a", [float(i % 2) * 5.0]) for i in range(40)]
    >>> with beam.Pipeline(runner="FnApiRunner") as p:
    ...     out = p | beam.Create(events) | ClusterPerKey(2, batch_size=10, warmup=20,
    ...                                                   snapshot_every=1)
    ...     _ = (out.snapshots
    ...          | beam.Map(lambda s: (s.n_seen, s.key, sorted(round(c[0], 1) for c in s.centers)))
    ...          | beam.combiners.ToList() | beam.FlatMap(sorted) | beam.Map(print))
    (20, 'a', [0.0, 5.0])
    (30, 'a', [0.0, 5.0])
    (40, 'a', [0.0, 5.0])
    """

    key: str
    n_steps: int
    n_seen: int
    temperature: float
    centers: list[list[float]]
    counts: list[float]
    initial_temperature: float | None = None
    min_temperature: float | None = None
    seed: int | None = None
    feature_names: list[str] | None = None


class PerKeyResult(NamedTuple):
    """Outputs of :class:`ClusterPerKey`: ``(key, Assignment)`` per good event (or ``(key,
    AssignmentBatch)`` per batch with ``output="batches"``), ``DeadLetter`` per bad one, and
    ``Snapshot`` records (empty unless ``snapshot_every`` is set).

    Examples
    --------
    >>> import apache_beam as beam
    >>> from apache_beam.pvalue import AsSingleton
    >>> events = [("a", [float(i % 2) * 5.0]) for i in range(40)] + [("b", ["oops"])]
    >>> count = beam.combiners.Count.Globally
    >>> with beam.Pipeline(runner="FnApiRunner") as p:
    ...     out = p | beam.Create(events) | ClusterPerKey(2, batch_size=10, warmup=20,
    ...                                                   output="batches")
    ...     n_dead = AsSingleton(out.dead_letters | "Dead" >> count())
    ...     _ = (out.assignments | beam.Map(lambda kv: len(kv[1])) | beam.CombineGlobally(sum)
    ...          | beam.Map(lambda n, d: print(n, "assigned,", d, "dead letter"), n_dead))
    40 assigned, 1 dead letter
    """

    assignments: beam.PCollection
    dead_letters: beam.PCollection
    snapshots: beam.PCollection


def _snapshot(key: str, m: ModelState) -> Snapshot:
    return Snapshot(key, int(m.n_steps[0]), int(m.n_seen[0]), float(m.temperature[0]),
                    m.centers[0].tolist(), m.masses[0].tolist(),
                    float(m.initial_temperature[0]), float(m.min_temperature[0]), int(m.seed[0]),
                    None if m.feature_names is None else list(m.feature_names))


_NUMBER_TYPES = frozenset((float, int))


def _plain_finite(features: list | tuple) -> bool:
    """Whether every value is a plain ``float`` or ``int`` and they are finite: one type check
    per value and one finiteness check per event (a sum; an overflow or a non-finite value is
    False, and the full parser decides). The parse stages' fast path."""
    if not _NUMBER_TYPES.issuperset(map(type, features)):
        return False
    try:
        return isfinite(sum(features))
    except OverflowError:
        return False


class _ParseAndBatchDoFn(beam.DoFn):
    """Validate ``(key, features)`` events and gather them per key within the bundle.

    Emits ``(key, EventChunk)`` when a key's buffer holds ``chunk_rows`` events, and what is left
    in ``finish_bundle``; bad events leave as dead letters. Events of one key with different
    features (names or dimension) go to different chunks, so the stateful step can refuse a whole
    chunk. Values are copied into flat ``array('d')`` buffers: no per-event Python object stays
    alive (which would make the garbage collector rescan them, the main cost at 100k events/s).
    """

    def __init__(self, feature_names: tuple[str, ...] | None, n_features: int | None,
                 chunk_rows: int) -> None:
        self.feature_names = feature_names
        self.n_features = n_features
        self.chunk_rows = chunk_rows

    def start_bundle(self) -> None:
        # (key, names, d) -> flat float64 values (and, with ids, the slot's event ids)
        self._buffers: dict[tuple[Any, ...], array] = {}
        self._ids: dict[tuple[Any, ...], list] = {}
        self._timestamp = _MIN_TIMESTAMP
        self._dim = len(self.feature_names) if self.feature_names is not None else self.n_features

    def _parse(self, element: Any, id_field: str | None = None) -> Any:
        """``(key, event id, feature names, features)`` of a good event (the id None without
        ``id_field``), or the :class:`DeadLetter` saying why it is bad."""
        if id_field is None and type(element) is tuple and len(element) == 2:
            key, features = element
            t = type(features)
            # Fast path, plain (str, list of numbers): anything else takes the full parser.
            if (type(key) is str and key and (key.isascii() or is_utf8_text(key))
                    and (t is list or t is tuple) and features
                    and (self._dim is None or len(features) == self._dim)
                    and _plain_finite(features)):
                return key, None, self.feature_names, features
        # Anything else: the full parser decides (and says why an event is bad).
        try:
            if id_field is None:
                key, (names, features) = parse_keyed(element, self.feature_names,
                                                     self.n_features)
                return key, None, names, features
            key, event_id, (names, features) = _parse_keyed_with_id(
                element, id_field, self.feature_names, self.n_features)
            return key, event_id, names, features
        except (ValueError, TypeError, OverflowError) as err:
            return DeadLetter.of_element(element, str(err))

    def process(self, element: Any) -> Iterable[Any]:
        # (not a generator: most events return an empty tuple, no generator object per event)
        parsed = self._parse(element)
        if type(parsed) is DeadLetter:
            return [beam.pvalue.TaggedOutput(DEAD_LETTERS, parsed)]
        key, _, names, features = parsed
        slot = (key, names, len(features))
        buf = self._buffers.get(slot)
        if buf is None:
            buf = self._buffers[slot] = array("d")
        buf.extend(features)
        if len(buf) >= self.chunk_rows * slot[2]:
            del self._buffers[slot]
            return [_chunk(slot, buf)]
        return ()

    def finish_bundle(self) -> Iterable[Any]:
        # Larger chunks first: a key's first chunk fixes its features, let the majority decide.
        ids = self._ids
        for slot, buf in sorted(self._buffers.items(), key=lambda kv: -len(kv[1]) // kv[0][2]):
            yield WindowedValue(_chunk(slot, buf, ids.get(slot)), self._timestamp, _GLOBAL)
        self._buffers = {}
        self._ids = {}


class _ParseAndBatchWithIdsDoFn(_ParseAndBatchDoFn):
    """:class:`_ParseAndBatchDoFn` for dict events carrying their id in ``id_field``: the full
    parser for every event (dict events take it anyway), the ids kept in a list per slot,
    alongside the rows."""

    def __init__(self, feature_names: tuple[str, ...] | None, n_features: int | None,
                 chunk_rows: int, id_field: str) -> None:
        super().__init__(feature_names, n_features, chunk_rows)
        self.id_field = id_field

    def process(self, element: Any) -> Iterable[Any]:
        parsed = self._parse(element, self.id_field)
        if type(parsed) is DeadLetter:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, parsed)
            return
        key, event_id, names, features = parsed
        slot = (key, names, len(features))
        buf = self._buffers.get(slot)
        if buf is None:
            buf = self._buffers[slot] = array("d")
            ids = self._ids[slot] = []
        else:
            ids = self._ids[slot]
        buf.extend(features)
        ids.append(event_id)
        if len(ids) >= self.chunk_rows:
            del self._buffers[slot], self._ids[slot]
            yield _chunk(slot, buf, ids)


class _ParseAndBatchTimestampedDoFn(_ParseAndBatchDoFn):
    """For streams: the chunks left at the end of a bundle carry the latest timestamp of the
    bundle's events (as a GroupIntoBatches batch carries one timestamp for all its events), so
    that event-time windows downstream see them on time. (Asking Beam for every event's timestamp
    costs ~3 us per event on the FnApiRunner: bounded input skips it, its leftover chunks carry
    the minimum timestamp.)"""

    def process(self, element: Any, timestamp=beam.DoFn.TimestampParam) -> Iterable[Any]:
        if timestamp > self._timestamp:
            self._timestamp = timestamp
        return super().process(element)


class _ParseAndBatchWithIdsTimestampedDoFn(_ParseAndBatchTimestampedDoFn,
                                           _ParseAndBatchWithIdsDoFn):
    """Events with ids, in a stream (see both parents)."""


def _keep(state: KeyState, rows: np.ndarray, ids: list | None) -> KeyState:
    """``state`` with ``rows`` (and their ``ids``) pending."""
    state.pending = rows if len(rows) else None
    state.pending_ids = ids if len(rows) else None
    return state


def _chunk(slot: tuple[Any, ...], buf: array, ids: list | None = None) -> tuple[str, EventChunk]:
    key, names, d = slot
    return key, EventChunk(names, np.frombuffer(buf, np.float64).reshape(-1, d), ids)


def _event(names: tuple[str, ...] | None, row: list[float], id_field: str | None,
           event_id: Any) -> Any:
    """An event as a model-stage dead letter reports it: its features (and its id)."""
    event = dict(zip(names, row)) if names else row
    if id_field is not None and event_id is not None:
        event = {**event, id_field: event_id} if names else {"features": row, id_field: event_id}
    return event


class _ScoreAndLearnDoFn(beam.DoFn):
    """Per key: batch the rows of incoming chunks into batches of ``batch_size``, buffer the first
    ``warmup`` events and initialise, then score each batch and learn from it (prequential).

    State is one :class:`~streamrbf.beam.state.KeyState` (the engine's record of the key's model,
    and its ``pending`` rows: the warm-up rows, then the part of the
    next batch received so far; with ids, ``pending_ids`` wait with them). Every batch scored
    carries its rows' ids, in order. Timers: ``flush`` (processing time, ``max_buffering_secs``
    after a batch starts filling; streaming only), ``end_of_input`` (watermark) and ``idle`` (TTL).
    """

    MODEL = ReadModifyWriteStateSpec("model", KeyStateCoder())
    FLUSH = TimerSpec("flush", TimeDomain.REAL_TIME)
    IDLE = TimerSpec("idle", TimeDomain.REAL_TIME)
    END = TimerSpec("end_of_input", TimeDomain.WATERMARK)

    def __init__(self, policy: Policy, warmup: int, ttl_secs: float | None,
                 snapshot_every: int, clock: Callable[[], float], seed: int,
                 batch_size: int = 256, max_buffering_secs: float | None = None,
                 output: str = "events", id_field: str | None = None,
                 drift_detector: Any = None) -> None:
        self.policy = policy
        self.drift_detector = drift_detector
        self.output = output
        self.id_field = id_field
        self.warmup = warmup
        self.ttl_secs = ttl_secs
        self.snapshot_every = snapshot_every
        self.clock = clock
        self.seed = seed
        self.batch_size = batch_size
        self.max_buffering_secs = max_buffering_secs

    def _seed(self, key: str) -> int:
        return (self.seed * 1_000_003 + stable_hash(key)) % (2**32)

    def _emit(self, key: str, batch: AssignmentBatch) -> Iterable[Any]:
        if self.output == "batches":
            yield key, batch
        else:
            yield from zip(repeat(key), batch.to_list())

    def _initialise(self, key: str, rows: np.ndarray, names,
                    ids: list | None = None) -> tuple[ModelState, Iterable[Any]]:
        model = engine.initialise(rows, self.policy, self._seed(key), names).state
        # The first events are scored by the model they initialised.
        batch = engine.assignments(model, rows, self.policy, event_ids=ids)
        return model, self._emit(key, batch)

    def _new_detector(self) -> np.ndarray | None:
        return None if self.drift_detector is None else self.drift_detector.new_state()

    def _watch_drift(self, state: KeyState, model: ModelState, X: np.ndarray,
                     nearest: np.ndarray) -> ModelState:
        """Feed a learnt batch's distortions to the key's drift detector; after an alarm, gather
        the next ``warmup`` rows and let a fresh model replace the key's if it explains them much
        better (:func:`streamrbf.core.engine.refit`)."""
        det = self.drift_detector
        if det is None:
            return model
        if state.detector is None:
            state.detector = det.new_state()
        if state.recent is not None:
            state.recent = np.concatenate([state.recent, X])
            if len(state.recent) >= self.warmup:
                model, replaced = engine.refit(model, state.recent, self.policy,
                                               DRIFT_RESTART_GAIN)
                _DRIFT_RESTARTS.inc(int(replaced))
                state.recent, state.detector = None, det.new_state()
        elif det.update(state.detector, nearest):
            _DRIFT_ALARMS.inc()
            state.recent = X[:0].copy()
        return model

    def _snap(self, key: str, before: int, model: ModelState) -> Iterable[Any]:
        every = self.snapshot_every
        n_steps = int(model.n_steps[0])
        if every and (before < 0 or n_steps // every != before // every):
            yield beam.pvalue.TaggedOutput(SNAPSHOTS, _snapshot(key, model))

    def _advance(self, key: str, state: KeyState, rows: np.ndarray, flush: bool,
                 ids: list | None = None):
        """Learn from the whole batches in ``rows`` (all of them if ``flush``); keep the rest
        (and their ``ids``, None without ids). Yields the outputs (batch by batch: no chunk-sized
        list of outputs stays alive) and returns the new state."""
        b = self.batch_size
        names = state.feature_names
        if state.model is None:
            # Initialise on the first `warmup` events rounded up to whole batches (or on what
            # there is, at least `warmup`, when a flush comes first).
            first = -(-self.warmup // b) * b
            if len(rows) < first and not (flush and len(rows) >= self.warmup):
                return _keep(state, rows, ids)
            first = min(first, len(rows))
            try:
                model, scored = self._initialise(key, rows[:first], names,
                                                 None if ids is None else ids[:first])
            except ValueError as err:
                # The core refused the batch (its squared distances overflow float64, though
                # each value is within bounds): its events are dead letters, the key still
                # warms up on what comes next.
                yield from self._dead_rows(key, names, rows[:first],
                                           None if ids is None else ids[:first],
                                           self._refused_batch(err))
                return _keep(state, rows[first:], None if ids is None else ids[first:])
            state.model = model
            state.detector = self._new_detector()
            yield from scored
            yield from self._snap(key, -1, model)
            rows = rows[first:]
            if ids is not None:
                ids = ids[first:]
        n_full = len(rows) if flush else len(rows) - len(rows) % b
        model = state.model
        for start in range(0, n_full, b):
            X = rows[start:start + b]
            # Prequential: scored with the model as it was, then learnt from (one pass).
            temperature = float(model.temperature[0])
            before = int(model.n_steps[0])
            batch_ids = None if ids is None else ids[start:start + b]
            try:
                model, result = engine.step(model, X, self.policy)
            except ValueError as err:
                # Refused by the core (squared distances overflow): the model is unchanged.
                yield from self._dead_rows(key, names, X, batch_ids, self._refused_batch(err))
                continue
            yield from self._emit(key, AssignmentBatch.from_memberships(
                result.memberships, temperature, batch_ids))
            model = self._watch_drift(state, model, X, result.nearest)
            del result
            # A refit can add more than one step: a snapshot each time a multiple is passed.
            yield from self._snap(key, before, model)
        state.model = model
        return _keep(state, rows[n_full:], None if ids is None else ids[n_full:])

    def process(
        self,
        element: tuple[str, EventChunk],
        model=beam.DoFn.StateParam(MODEL),
        flush=beam.DoFn.TimerParam(FLUSH),
        idle=beam.DoFn.TimerParam(IDLE),
        end=beam.DoFn.TimerParam(END),
    ) -> Iterable[Any]:
        key, chunk = element
        state: KeyState | None = model.read()
        if state is not None:
            state = state.working_copy()  # a failed bundle's retry reads the committed state
        rows = chunk.rows
        if state is None:
            # A new stream: its first chunk fixes its features.
            end.set(_END_OF_TIME)
            state = KeyState(None, chunk.names)
        elif chunk.names != state.feature_names or rows.shape[1] != (
                state.n_features or rows.shape[1]):
            d0, names0 = state.n_features, state.feature_names
            what = f"{d0} features {list(names0) if names0 else ''}".rstrip()
            names = chunk.names
            got = f"{rows.shape[1]} {list(names) if names else ''}".rstrip()
            ids = repeat(None) if chunk.ids is None else chunk.ids
            for row, event_id in zip(rows.tolist(), ids):
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of(
                    key, _event(names, row, self.id_field, event_id),
                    f"stream {key!r} has {what}; event has {got}", "model", event_id))
            return
        ids = chunk.ids
        if len(rows) and np.abs(rows).max() > value_limit(rows.shape[1]):
            # Finite values too large to cluster (squared distances would overflow): their
            # events go to the dead letters, the rest of the chunk goes on.
            rows, ids = yield from self._refuse_too_large(key, chunk.names, rows, ids)
        if self.ttl_secs is not None:
            idle.set(self.clock() + self.ttl_secs)
        if state.n_pending:
            rows = np.concatenate([state.pending, rows])
            if ids is not None:
                ids = (state.pending_ids or [None] * state.n_pending) + ids
        before = int(state.model.n_steps[0]) if state.initialised else -1
        state = yield from self._advance(key, state, rows, False, ids)
        if self.max_buffering_secs is not None:
            # The flush timer runs from when the current batch started filling (GroupIntoBatches'
            # rule): armed when pending rows appear, re-armed when a batch was just learnt from.
            stepped = state.initialised and int(state.model.n_steps[0]) != before
            if state.n_pending and (state.flush_at is None or stepped):
                state.flush_at = self.clock() + self.max_buffering_secs
                flush.set(state.flush_at)
            elif not state.n_pending and state.flush_at is not None:
                state.flush_at = None
                flush.clear()
        model.write(state)

    def _refuse_too_large(self, key: str, names, rows: np.ndarray, ids: list | None):
        """Dead-letter the rows holding a value beyond the value rule's limit; return the others
        (and their ids)."""
        bad = np.abs(rows).max(axis=1) > value_limit(rows.shape[1])
        at = np.flatnonzero(bad).tolist()
        yield from self._dead_rows(key, names, rows[bad], None if ids is None else
                                   [ids[i] for i in at], lambda row: too_large_reason(names, row))
        keep = ~bad
        return rows[keep], None if ids is None else [i for i, k in zip(ids, keep.tolist()) if k]

    def _dead_rows(self, key: str, names, rows: np.ndarray, ids: list | None,
                   reason: str | Callable[[list[float]], str]) -> Iterable[Any]:
        """Model-stage dead letters for ``rows`` (with their ``ids``): ``reason`` is the text, or
        gives it for each row."""
        for row, event_id in zip(rows.tolist(), repeat(None) if ids is None else ids):
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of(
                key, _event(names, row, self.id_field, event_id),
                reason if isinstance(reason, str) else reason(row), "model", event_id))

    def _refused_batch(self, err: ValueError) -> str:
        return f"the model refused this event's batch: {err}"

    def _flush(self, key: str, model, final: bool) -> Iterable[Any]:
        """Learn from the pending rows now. ``final``: the stream ends (input over or idle), so a
        stream still warming up initialises on what it has, or, with fewer than ``n_clusters``
        events, sends them to the dead letters."""
        state: KeyState | None = model.read()
        if state is None:
            return
        state = state.working_copy()
        state.flush_at = None
        if state.n_pending:
            ids = state.pending_ids
            state = yield from self._advance(key, state, state.pending, True, ids)
        if final and not state.initialised and state.n_pending:
            rows, ids = state.pending, state.pending_ids
            k = int(self.policy.n_clusters)
            refused = None
            if len(rows) >= self.policy.min_events():  # n_clusters, or one with init centres
                try:
                    state.model, out = self._initialise(key, rows, state.feature_names, ids)
                except ValueError as err:
                    refused = self._refused_batch(err)
                else:
                    state.pending = state.pending_ids = None
                    yield from out
                    yield from self._snap(key, -1, state.model)
            else:
                refused = f"stream {key!r} ended with {len(rows)} events, fewer than n_clusters={k}"
            if refused is not None:
                yield from self._dead_rows(key, state.feature_names, rows, ids, refused)
                model.clear()
                return
        model.write(state)

    @on_timer(FLUSH)
    def flush_batch(self, key=beam.DoFn.KeyParam, model=beam.DoFn.StateParam(MODEL)):
        yield from self._flush(key, model, final=False)

    @on_timer(END)
    def end_of_input(self, key=beam.DoFn.KeyParam, model=beam.DoFn.StateParam(MODEL),
                     flush=beam.DoFn.TimerParam(FLUSH), idle=beam.DoFn.TimerParam(IDLE)):
        # Bounded input is over: a pending processing-time timer would keep the runner waiting.
        flush.clear()
        idle.clear()
        yield from self._flush(key, model, final=True)
        # No event can follow the end of the global window: free the key's state (one state-cache
        # update instead of a write's two, each weighing the value: ~1-3 ms on a worker).
        model.clear()

    @on_timer(IDLE)
    def expire(self, key=beam.DoFn.KeyParam, model=beam.DoFn.StateParam(MODEL),
               flush=beam.DoFn.TimerParam(FLUSH)):
        flush.clear()
        yield from self._flush(key, model, final=True)
        model.clear()


class ClusterPerKey(beam.PTransform):
    """Cluster ``(key, features)`` events with one streaming RBF K-Means model per key.

    Each key (stream) has its own centres and its own annealing temperature, kept in Beam state
    (global window): the engine's state record and the rows not learnt yet
    (:class:`~streamrbf.beam.state.KeyState`). Events are validated and gathered per key within
    each bundle (one chunk per key, as raw float64 rows), then the
    stateful step cuts each key's rows into batches of exactly ``batch_size`` (a partial batch
    waits in state; streams flush it after ``max_buffering_secs`` of processing time, bounded input
    at its end); each batch is scored first and then learned from, one core step per batch
    (``partial_fit``'s, without the moves on a sample: a key's state stays its model). The
    first ``warmup`` events of a key, rounded up to whole batches, initialise its model
    (k-means++ and annealing) and are then scored by it. A key idle for ``ttl_secs`` is
    dropped from state (streams only).

    ``features`` is a dict, a 1-D array or list, or JSON text. Events with a bad key, unparseable
    or non-finite features, missing or extra features, or a dimension different from their
    stream's go to ``dead_letters``: every event leaves as exactly one ``(key, Assignment)`` or one
    :class:`~streamrbf.beam.dead_letters.DeadLetter`.

    Parameters
    ----------
    n_clusters
        Centres per key.
    batch_size
        Events per batch: each key's model scores and learns from its events this many at a time.
    max_buffering_secs
        Processing time a partial batch may wait before it is scored and learnt from (streams
        only); None: it waits until it is full or the key is idle.
    warmup
        Events a key buffers before initialising its model; None: ``max(4 * n_clusters, 32)``.
    ttl_secs
        Processing time after a key's last batch when its state is cleared; None keeps it forever.
    snapshot_every
        Emit a :class:`Snapshot` of a key's model at initialisation and every this many steps
        (0: never).
    feature_names
        The feature names of every stream: a dict event must have exactly these keys, a sequence
        gets these names; None: each stream's first event fixes its own.
    n_features
        The number of features of every stream; None: each stream's first event fixes its own.
    clock
        Processing-time clock for buffering and TTL (tests under ``TestStream`` pass one).
    random_state
        Base seed; each key's seed is derived from it and the key.
    drift_detector
        What watches each key's distortion (every event's squared distance to its nearest
        centre) for drift: ``"cusum"`` (default), any detector of :mod:`streamrbf.core.drift`
        (by name or as an object), or None. After an alarm the key gathers its next ``warmup``
        events and a model initialised afresh on them replaces the key's if it halves their
        K-Means cost (:func:`streamrbf.core.engine.refit`, River's rule after an alarm); the
        ``streamrbf`` counters ``drift_alarms`` and ``drift_restarts`` count them.
    output
        ``"events"``: one ``(key, Assignment)`` per event. ``"batches"``: one ``(key,``
        :class:`~streamrbf.core.assignment.AssignmentBatch` ``)`` per scored batch, the assignments
        in columns (events in arrival order within a key); the same numbers at a fraction of Beam's
        per-element cost, for sinks that write columns or reduce per batch.
    id_field
        A field of dict events (or of JSON text of one) holding the event's id, a ``str`` or an
        ``int``: not a feature, it is copied to the event's ``Assignment.event_id`` (the
        ``event_ids`` column of an ``AssignmentBatch``) and to the ``event_id`` of its
        model-stage dead letter, to join outputs back to their events (Beam collections are
        unordered). An event without it, with an id of another
        type, or an array event goes to the dead letters. None (default): no ids, every
        ``event_id`` is None.
    model_params
        How each key's model learns: any parameter of the learning policy
        (:class:`~streamrbf.core.policy.Policy`: ``initial_temperature``, ``temperature_decay``,
        ``min_temperature``, ``half_life``, ``mapping``, ``reassignment_ratio``, ...), with the
        names and defaults of every face; an unknown name is a ``TypeError``.

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

    With ids, each assignment says which event it belongs to:

    >>> events = [("a", {"id": f"e{i}", "x": 5.0 * (i % 2)}) for i in range(20)]
    >>> events.append(("a", {"x": 1.0}))
    >>> with beam.Pipeline(runner="FnApiRunner") as p:
    ...     out = p | beam.Create(events) | ClusterPerKey(2, batch_size=10, warmup=10,
    ...                                                   id_field="id")
    ...     ids = (out.assignments | beam.Map(lambda kv: (kv[1].cluster, kv[1].event_id))
    ...            | beam.GroupByKey()  # the ids of each cluster's events (first four)
    ...            | beam.Map(lambda c: " ".join(sorted(c[1], key=lambda i: int(i[1:]))[:4])))
    ...     bad = out.dead_letters | beam.Map(lambda d: d.reason)
    ...     _ = ((ids, bad) | beam.Flatten() | beam.combiners.ToList()
    ...          | beam.FlatMap(sorted) | beam.Map(print))
    e0 e2 e4 e6
    e1 e3 e5 e7
    event has no 'id' field
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
        output: str = "events",
        id_field: str | None = None,
        drift_detector: Any = "cusum",
        **model_params: Any,
    ) -> None:
        super().__init__()
        self.drift_detector = core_detector(drift_detector)
        if output not in ("events", "batches"):
            raise ValueError(f"output must be 'events' or 'batches', got {output!r}")
        self.output = output
        if id_field is not None and not isinstance(id_field, str):
            raise TypeError(f"id_field must be a str or None, got {type(id_field).__name__}")
        if id_field is not None and feature_names is not None and id_field in feature_names:
            raise ValueError(f"id_field {id_field!r} cannot also be a feature")
        self.id_field = id_field
        # Checked at construction, not on a worker: a bad or unknown parameter raises here.
        self.policy = Policy.from_params(
            translate_deprecated({"n_clusters": n_clusters, **model_params}, "ClusterPerKey"))
        self.batch_size = int(batch_size)
        self.max_buffering_secs = max_buffering_secs
        self.warmup = warmup_size(n_clusters, warmup)
        self.ttl_secs = ttl_secs
        self.snapshot_every = int(snapshot_every)
        self.feature_names = feature_names
        self.n_features = n_features
        self.clock = clock
        self.random_state = int(random_state)

    # Returns a PerKeyResult, annotated Any: Beam reads expand's return annotation as an output type
    # hint and logs a warning on every run for anything but a PCollection.
    def expand(self, pcoll: beam.PCollection) -> Any:
        """Build the per-key graph on ``pcoll`` (Beam's ``PTransform`` entry point).

        Events are moved to the global window (where the models live), parsed and chunked per
        key, then scored and learned from by one stateful DoFn per key; the dead letters of both
        stages are flattened into one collection.

        Parameters
        ----------
        pcoll
            ``(key, event)`` pairs, bounded or unbounded.

        Returns
        -------
        PerKeyResult
            The assignments, the dead letters and the snapshots.
        """
        # State per key AND window: the models live in the global window. Input already there
        # (the usual case) skips the per-event re-windowing.
        if not isinstance(pcoll.windowing.windowfn, GlobalWindows):
            pcoll = pcoll | "GlobalWindow" >> beam.WindowInto(GlobalWindows())
        chunk_rows = -(-max(_CHUNK_ROWS, self.batch_size) // self.batch_size) * self.batch_size
        # A typed str key: a deterministic key coder for the state; chunks travel as raw bytes.
        streaming = not pcoll.is_bounded
        names = None if self.feature_names is None else tuple(self.feature_names)
        if self.id_field is None:
            parse = (_ParseAndBatchTimestampedDoFn if streaming else _ParseAndBatchDoFn)(
                names, self.n_features, chunk_rows)
        else:
            parse = (_ParseAndBatchWithIdsTimestampedDoFn if streaming
                     else _ParseAndBatchWithIdsDoFn)(names, self.n_features, chunk_rows,
                                                     self.id_field)
        parsed = pcoll | "ParseAndBatch" >> beam.ParDo(parse).with_output_types(
            tuple[str, EventChunk]).with_outputs(DEAD_LETTERS, main="chunks")
        chunks = parsed.chunks
        # Bounded input ends with the end-of-input timer, and a processing-time timer set while
        # the runner drains timers at the end is never run (FnApiRunner): buffering time and TTL
        # are for streams.
        scored = chunks | "ScoreAndLearn" >> beam.ParDo(_ScoreAndLearnDoFn(
            self.policy, self.warmup, self.ttl_secs if streaming else None, self.snapshot_every,
            self.clock, self.random_state, self.batch_size,
            self.max_buffering_secs if streaming else None, self.output, self.id_field,
            self.drift_detector,
        )).with_output_types(
            tuple[str, AssignmentBatch] if self.output == "batches" else tuple[str, Assignment]
        ).with_outputs(
            DEAD_LETTERS, SNAPSHOTS, main="assignments")
        dead = (parsed[DEAD_LETTERS], scored[DEAD_LETTERS]) | "DeadLetters" >> beam.Flatten()
        return PerKeyResult(scored.assignments, dead, scored[SNAPSHOTS])
