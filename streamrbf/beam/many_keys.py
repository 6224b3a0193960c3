"""ClusterManyKeys: one model per key, the keys of a shard in one bank, one bank call per chunk.

:class:`~streamrbf.beam.ClusterPerKey` keeps one Beam state cell, one set of timers and one model
record per key, and steps each key on its own: right for a few thousand long streams, costly for
a fleet of short ones (each key pays its own initialisation, its own state reads and writes and
its own timers). :class:`ClusterManyKeys` hashes each key to one of ``shards`` shards; a shard's
streams live in one :class:`~streamrbf.core.streams.StreamBank` (one Beam state cell); events are
parsed and gathered per shard within each bundle, and a shard's chunk is scored and learnt with
one bank call (:meth:`~streamrbf.core.streams.StreamBank.learn_rows`) whatever number of keys it
holds.
"""

from __future__ import annotations

import json
import struct
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from itertools import repeat
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.runners.worker.statecache import CacheAware
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from ..core.assignment import Assignment, AssignmentBatch
from ..core.policy import Policy, translate_deprecated, warmup_size
from ..core.streams import StreamBank, from_bytes, to_bytes
from ..core.validation import value_limit
from .dead_letters import DEAD_LETTERS, DeadLetter, too_large_reason
from .per_key import SNAPSHOTS, PerKeyResult, Snapshot, _event, _ParseAndBatchDoFn, _plain_finite
from .state import _RecordCoder, stable_hash

__all__ = ["ClusterManyKeys", "ShardChunk", "ShardState", "ShardStateCoder"]

_GLOBAL = (GlobalWindow(),)
_SHARD_CHUNK_ROWS = 8192  # rows a shard gathers in a bundle before its chunk goes on


class ShardChunk(NamedTuple):
    """Validated events of the keys of one shard with the same features: rows ``(n, d)``, each
    row's key and (with ``id_field``) id, in arrival order.

    Examples
    --------
    >>> c = ShardChunk(None, np.zeros((2, 1)), ["a", "b"], None)
    >>> len(c.keys), c.rows.shape
    (2, (2, 1))
    """

    names: tuple[str, ...] | None
    rows: np.ndarray
    keys: list[str]
    ids: list | None


class ShardState(CacheAware):
    """What one shard keeps in Beam state: its streams' bank and their feature names.

    Beam's state cache weighs what it holds: a shard reports its size through ``__sizeof__``
    (its arrays, and about 200 bytes per key for the key, its index entry and its warm-up
    buffer's share) and gives the cache's walk nothing to traverse (a walk over a million keys
    on every write would cost more than the step).

    Parameters
    ----------
    bank
        The shard's streams.
    names
        Their feature names (None for array events).

    Examples
    --------
    >>> bank = StreamBank(Policy(n_clusters=2), warmup=2, seed=0, max_streams=4)
    >>> ShardState(bank, ("x",)).bank.n_streams
    0
    """

    __slots__ = ("bank", "names")

    def __init__(self, bank: StreamBank, names: tuple[str, ...] | None) -> None:
        self.bank = bank
        self.names = names

    def get_referents_for_cache(self) -> list[Any]:
        """What Beam's state cache walks to weigh the state: nothing (``__sizeof__`` counts
        it).

        Returns
        -------
        list
            An empty list.
        """
        return []

    def __sizeof__(self) -> int:
        b = self.bank
        st = b.state
        arrays = [getattr(st, f) for f in ("centers", "masses", "temperature",
                                           "initial_temperature", "min_temperature",
                                           "n_steps", "n_seen", "seed")]
        arrays += [b.aux, b.rs, b.det, b.phase, b.count, b.n_warm, b.last_used]
        arrays += list(b.warm.values())
        return 512 + 200 * len(b.keys) + sum(a.nbytes for a in arrays)


_HEAD = struct.Struct("<4sI")


class ShardStateCoder(_RecordCoder):
    """Binary coder of :class:`ShardState`: a JSON header (the bank's policy and parameters, the
    feature names) and :func:`~streamrbf.core.streams.to_bytes` of the bank. Deterministic; no
    pickle.

    Examples
    --------
    >>> bank = StreamBank(Policy(n_clusters=2), warmup=2, seed=0, max_streams=4)
    >>> bank.allocate(1)
    >>> _ = bank.learn_rows(np.array([[0.0], [4.0]]), bank.rows_for(["a", "a"]))
    >>> coder = ShardStateCoder()
    >>> data = coder.encode(ShardState(bank, ("x",)))
    >>> back = coder.decode(data)
    >>> list(back.bank.slots), back.names, coder.encode(back) == data
    (['a'], ('x',), True)
    """

    encodes = ShardState

    def encode(self, s: ShardState) -> bytes:
        """Write a shard's state as bytes.

        Parameters
        ----------
        s
            The state.

        Returns
        -------
        bytes
            The encoding.
        """
        b = s.bank
        head = json.dumps({
            "policy": asdict(b.policy), "warmup": b.warmup, "seed": b.seed,
            "max_streams": b.max_streams, "drift": b.drift,
            "names": None if s.names is None else list(s.names)}, separators=(",", ":")).encode()
        return _HEAD.pack(b"SRS1", len(head)) + head + to_bytes(b)

    def decode(self, data: bytes) -> ShardState:
        """Read a shard's state written by :meth:`encode`.

        Parameters
        ----------
        data
            The encoding.

        Returns
        -------
        ShardState
            The state.
        """
        magic, n = _HEAD.unpack_from(data, 0)
        if magic != b"SRS1":
            raise ValueError(f"not an encoded streamrbf shard state: magic {magic!r}")
        head = json.loads(data[_HEAD.size:_HEAD.size + n])
        bank = from_bytes(bytes(data[_HEAD.size + n:]), Policy(**head["policy"]),
                          head["warmup"], head["seed"], max_streams=head["max_streams"],
                          drift=head["drift"])
        return ShardState(bank, None if head["names"] is None else tuple(head["names"]))


class _ParseAndShardDoFn(_ParseAndBatchDoFn):
    """Validate ``(key, features)`` events (the parser of ``ClusterPerKey``) and gather them per
    shard within the bundle; emits ``(shard, ShardChunk)``. Events of a shard with other
    features (names or dimension) go to another chunk."""

    def __init__(self, feature_names: tuple[str, ...] | None, n_features: int | None,
                 chunk_rows: int, shards: int, id_field: str | None) -> None:
        super().__init__(feature_names, n_features, chunk_rows)
        self.shards = shards
        self.id_field = id_field

    def start_bundle(self) -> None:
        super().start_bundle()
        self._keys: dict[tuple[Any, ...], list] = {}
        self._shard_of: dict[str, int] = {}
        # key -> (rows, keys, d, slot) of its shard's open chunk, for keys already seen in this
        # chunk with the default features: their next events skip the slot lookups
        self._open: dict[str, tuple] = {}

    def process(self, element: Any) -> Iterable[Any]:
        # (not a generator: most events return an empty tuple, no generator object per event)
        if type(element) is tuple and len(element) == 2 and self.id_field is None:
            key, features = element
            t = type(features)
            if (t is list or t is tuple) and type(key) is str:
                at = self._open.get(key)
                if at is not None and len(features) == at[2] and _plain_finite(features):
                    # (a plain event of a key seen in this chunk: checked)
                    at[0].extend(features)
                    at[1].append(key)
                    return [self._chunk(at[3])] if len(at[1]) >= self.chunk_rows else ()
        return list(self._parsed(element))

    def _parsed(self, element: Any) -> Iterable[Any]:
        parsed = self._parse(element, self.id_field)
        if type(parsed) is DeadLetter:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, parsed)
            return
        key, event_id, names, features = parsed
        shard = self._shard_of.get(key)
        if shard is None:
            shard = self._shard_of[key] = stable_hash(key) % self.shards
        slot = (shard, names, len(features))
        buf = self._buffers.get(slot)
        if buf is None:
            buf = self._buffers[slot] = array("d")
            self._keys[slot] = []
            if self.id_field is not None:
                self._ids[slot] = []
        buf.extend(features)
        keys = self._keys[slot]
        keys.append(key)
        if self.id_field is not None:
            self._ids[slot].append(event_id)
        elif names == self.feature_names and type(features) is list:
            self._open[key] = (buf, keys, len(features), slot)
        if len(keys) >= self.chunk_rows:
            yield self._chunk(slot)

    def _chunk(self, slot: tuple[Any, ...]) -> tuple[int, ShardChunk]:
        self._open.clear()  # (entries may point at this chunk)
        shard, names, d = slot
        rows = np.frombuffer(self._buffers.pop(slot), np.float64).reshape(-1, d)
        return shard, ShardChunk(names, rows, self._keys.pop(slot), self._ids.pop(slot, None))

    def finish_bundle(self) -> Iterable[Any]:
        for slot in sorted(self._buffers, key=lambda s: -len(self._keys[s])):
            yield WindowedValue(self._chunk(slot), self._timestamp, _GLOBAL)


class _ParseAndShardTimestampedDoFn(_ParseAndShardDoFn):
    """For streams: leftover chunks carry the latest timestamp of the bundle's events."""

    def process(self, element: Any, timestamp=beam.DoFn.TimestampParam) -> Iterable[Any]:
        if timestamp > self._timestamp:
            self._timestamp = timestamp
        return super().process(element)


class _BankDoFn(beam.DoFn):
    """Per shard: the shard's streams in one bank; each chunk is scored and learnt in one bank
    call, one ``(key, Assignment)`` per event, in arrival order within each key."""

    BANK = ReadModifyWriteStateSpec("bank", ShardStateCoder())

    def __init__(self, policy: Policy, warmup: int, seed: int, max_streams: int, drift: bool,
                 ttl_secs: float | None, snapshot_every: int, clock: Callable[[], float],
                 id_field: str | None, output: str = "events",
                 device: str | None = None) -> None:
        self.output = output
        self.device = device
        self.policy, self.warmup, self.seed = policy, warmup, seed
        self.max_streams, self.drift = max_streams, drift
        self.ttl_secs, self.snapshot_every, self.clock = ttl_secs, snapshot_every, clock
        self.id_field = id_field

    def process(self, element: tuple[int, ShardChunk],
                state=beam.DoFn.StateParam(BANK)) -> Iterable[Any]:
        _, chunk = element
        held: ShardState | None = state.read()
        if held is None:
            bank = StreamBank(self.policy, self.warmup, self.seed,
                              max_streams=self.max_streams, drift=self.drift)
            names = chunk.names
        else:
            # a working copy: a failed bundle's retry starts from the committed bank
            bank, names = held.bank.copy(), held.names
        bank.device = self.device  # (the worker's; not part of the state)
        rows, keys, ids = chunk.rows, chunk.keys, chunk.ids
        d = bank.n_features
        if (d is not None and rows.shape[1] != d) or chunk.names != names:
            yield from self._refuse(chunk, f"the streams of this shard have {d} features "
                                    f"{list(names) if names else ''}".rstrip()
                                    + f"; event has {rows.shape[1]}")
            return
        if len(rows) and np.abs(rows).max() > _limit(rows.shape[1]):
            rows, keys, ids = yield from self._too_large(chunk)
        if not len(rows):
            return
        if d is None:
            bank.allocate(rows.shape[1])
        now = self.clock()
        if self.ttl_secs is not None:  # streams idle beyond the TTL are dropped
            idle = np.flatnonzero((bank.phase > 0) & (bank.last_used < now - self.ttl_secs))
            for row in idle.tolist():
                bank.drop(bank.keys[row])
        yield from self._learn(bank, rows, keys, ids, now)
        state.write(ShardState(bank, names))

    def _learn(self, bank: StreamBank, rows: np.ndarray, keys: list, ids: list | None,
               now: float) -> Iterable[Any]:
        # more streams in one chunk than a shard keeps: in parts, in order
        if len(set(keys)) > bank.max_streams:
            half = len(keys) // 2
            yield from self._learn(bank, rows[:half], keys[:half],
                                   None if ids is None else ids[:half], now)
            yield from self._learn(bank, rows[half:], keys[half:],
                                   None if ids is None else ids[half:], now)
            return
        at = bank.rows_for(keys)
        before = bank.state.n_steps[at].copy()
        labels, sq, temps, (vals, idx, nnz) = bank.learn_rows(rows, at, memberships=True)
        bank.last_used[at] = now
        if self.output == "batches":
            yield from _batches(keys, at, labels, sq, temps, vals, idx, nnz, ids)
        else:
            # most events have one membership: their first column; the others a row each
            mems = [{c: v} for c, v in zip(idx[:, 0].tolist(), vals[:, 0].tolist())]
            for i, c in zip(np.flatnonzero(nnz > 1).tolist(), nnz[nnz > 1].tolist(),
                            strict=True):
                mems[i] = dict(zip(idx[i, :c].tolist(), vals[i, :c].tolist(), strict=True))
            yield from zip(keys, map(Assignment, labels.tolist(), mems, np.sqrt(sq).tolist(),
                                     temps.tolist(), repeat(None) if ids is None else ids))
        if self.snapshot_every:
            yield from self._snapshots(bank, at, before)

    def _snapshots(self, bank: StreamBank, at: np.ndarray, before: np.ndarray) -> Iterable[Any]:
        every = self.snapshot_every
        st = bank.state
        rows, first = np.unique(at, return_index=True)
        for row, b in zip(rows.tolist(), before[first].tolist(), strict=True):
            n = int(st.n_steps[row])
            if bank.is_started(row) and (n // every != b // every or b == 0 != n):
                yield beam.pvalue.TaggedOutput(SNAPSHOTS, Snapshot(
                    bank.keys[row], n, int(st.n_seen[row]), float(st.temperature[row]),
                    st.centers[row].astype(float).tolist(), st.masses[row].tolist(),
                    float(st.initial_temperature[row]), float(st.min_temperature[row]),
                    int(st.seed[row]), None))

    def _refuse(self, chunk: ShardChunk, reason: str) -> Iterable[Any]:
        ids = repeat(None) if chunk.ids is None else chunk.ids
        for key, row, event_id in zip(chunk.keys, chunk.rows.tolist(), ids):
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of(
                key, _event(chunk.names, row, self.id_field, event_id), reason, "model",
                event_id))

    def _too_large(self, chunk: ShardChunk):
        bad = np.abs(chunk.rows).max(axis=1) > _limit(chunk.rows.shape[1])
        ids = repeat(None) if chunk.ids is None else chunk.ids
        for key, row, event_id, b in zip(chunk.keys, chunk.rows.tolist(), ids, bad.tolist()):
            if b:
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of(
                    key, _event(chunk.names, row, self.id_field, event_id),
                    too_large_reason(chunk.names, row, np.float32), "model", event_id))
        keep = np.flatnonzero(~bad).tolist()
        return (chunk.rows[~bad], [chunk.keys[i] for i in keep],
                None if chunk.ids is None else [chunk.ids[i] for i in keep])


def _limit(d: int) -> float:
    """The largest value a bank stream takes: its centres are float32 (and squared distances
    between values within that range fit float64)."""
    return value_limit(d, np.float32)


def _batches(keys: list, at: np.ndarray, labels: np.ndarray, sq: np.ndarray, temps: np.ndarray,
             vals: np.ndarray, idx: np.ndarray, nnz: np.ndarray,
             ids: list | None) -> Iterable[Any]:
    """``(key, AssignmentBatch)`` per stream of a chunk (two when the stream started within it:
    its provisional assignments, then its model's), events in arrival order."""
    order = np.lexsort((np.arange(len(at)), temps > 0, at))
    cuts = np.flatnonzero(np.diff(at[order]) | np.diff(temps[order] > 0)) + 1
    for g in np.split(order, cuts):
        c = nnz[g]
        offsets = np.zeros(len(g) + 1, np.int64)
        np.cumsum(c, out=offsets[1:])
        keep = np.arange(idx.shape[1]) < c[:, None]
        yield keys[int(g[0])], AssignmentBatch(
            labels[g], np.sqrt(sq[g]), offsets, idx[g][keep], vals[g][keep],
            float(temps[g[0]]), None if ids is None else [ids[i] for i in g.tolist()])


class ClusterManyKeys(beam.PTransform):
    """Cluster ``(key, features)`` events with one streaming model per key, many keys per Beam
    state cell: for fleets of short or slow streams (sessions, devices, users).

    Each key is hashed to one of ``shards`` shards; a shard's streams live in one
    :class:`~streamrbf.core.streams.StreamBank` in Beam state (global window): float32 centres,
    masses, temperature, counters and seed per stream, a few hundred bytes each. Events are
    validated and gathered per shard within each bundle; each shard's chunk is then scored and
    learnt in one bank call, whatever number of keys it holds. A stream's first ``warmup``
    events are clustered provisionally as they come and assigned at once (cluster of the
    provisional clustering, membership 1, temperature 0); then the stream's model starts (the
    best of a few annealed k-means++ seedings, its centres matched to the provisional ones, so
    the labels carry over), and from then on each chunk's events of that stream are scored by
    the model as it was and then learnt as one mini-batch step. A CUSUM per stream watches the
    distortion (``drift_detector="cusum"``; None turns it off): after an alarm the stream
    restarts from its next ``warmup`` events if that halves their K-Means cost.

    Compared with :class:`~streamrbf.beam.ClusterPerKey`: no event waits (no batch of exactly
    ``batch_size``, no flush timer: a stream steps on the events a bundle brings it), warm-up
    events are assigned provisionally rather than held back, every stream of a shard shares the
    feature set the shard's first chunk fixes, values beyond the float32 range of the centres are
    dead letters, and a shard keeps at most
    ``max_streams_per_shard`` streams (least recently used evicted). Use ``ClusterPerKey`` for
    a few thousand long streams that want fixed-size batches; ``ClusterManyKeys`` for many
    keys, most of them short. Every event leaves as exactly one ``(key, Assignment)`` or one
    :class:`~streamrbf.beam.dead_letters.DeadLetter`.

    Parameters
    ----------
    n_clusters
        Centres per key.
    shards
        Shards the keys are hashed to: the Beam keys of the state, so the parallelism (each
        shard's chunks are processed in order on one worker at a time).
    max_streams_per_shard
        Streams a shard keeps at most.
    warmup
        Events a stream buffers before its model starts; None: ``max(4 * n_clusters, 32)``.
    ttl_secs
        Processing time after a stream's last event when it is dropped (streams only); None
        keeps it until evicted.
    snapshot_every
        Emit a :class:`~streamrbf.beam.Snapshot` of a stream's model when it starts and every
        this many steps (0: never).
    feature_names, n_features
        As for ``ClusterPerKey``.
    clock
        Processing-time clock for the TTL.
    random_state
        Base seed: each stream's seed is derived from it and its key (not its shard: a stream
        learns the same whatever the sharding).
    id_field
        As for ``ClusterPerKey``.
    device
        Where each chunk's started streams are stepped: None (the compiled CPU kernels) or a
        torch device of the worker (``"cuda"``): one transfer of the stepped streams and the
        chunk there, one back (:class:`~streamrbf.core.streams.StreamBank`'s ``device``).
    output
        ``"events"``: one ``(key, Assignment)`` per event. ``"batches"``: one ``(key,``
        :class:`~streamrbf.core.assignment.AssignmentBatch` ``)`` per stream and chunk (two
        when the stream starts within the chunk: its provisional assignments at temperature 0,
        then its model's), events in arrival order: the same numbers at a fraction of Beam's
        per-element cost.
    drift_detector
        ``"cusum"`` (default) or None.
    model_params
        How each stream learns: parameters of :class:`~streamrbf.core.policy.Policy`.

    Examples
    --------
    >>> import apache_beam as beam
    >>> events = [(f"s{i % 50}", [float(i % 2) * 5.0, 0.1 * (i % 3)]) for i in range(4000)]
    >>> events.append(("s1", [1.0]))
    >>> with beam.Pipeline(runner="FnApiRunner") as p:
    ...     out = p | beam.Create(events) | ClusterManyKeys(2, shards=4)
    ...     n = out.assignments | beam.combiners.Count.Globally() | beam.Map(str)
    ...     bad = out.dead_letters | beam.Map(lambda d: d.reason[:34])
    ...     _ = ((n, bad) | beam.Flatten() | beam.combiners.ToList()
    ...          | beam.FlatMap(sorted) | beam.Map(print))
    4000
    the streams of this shard have 2 f
    """

    def __init__(self, n_clusters: int = 8, *, shards: int = 16,
                 max_streams_per_shard: int = 1_000_000, warmup: int | None = None,
                 ttl_secs: float | None = 3600.0, snapshot_every: int = 0,
                 feature_names: Sequence[str] | None = None, n_features: int | None = None,
                 clock: Callable[[], float] = time.time, random_state: int = 0,
                 id_field: str | None = None, output: str = "events",
                 drift_detector: str | None = "cusum", device: str | None = None,
                 **model_params: Any) -> None:
        super().__init__()
        self.device = device
        if output not in ("events", "batches"):
            raise ValueError(f"output must be 'events' or 'batches', got {output!r}")
        self.output = output
        if drift_detector not in ("cusum", None):
            raise ValueError(f"drift_detector must be 'cusum' or None, got {drift_detector!r}")
        if not (isinstance(shards, int) and shards >= 1):
            raise ValueError(f"shards must be an integer >= 1, got {shards!r}")
        self.policy = Policy.from_params(
            translate_deprecated({"n_clusters": n_clusters, **model_params}, "ClusterManyKeys"))
        if not isinstance(self.policy.init, str) or self.policy.init != "k-means++":
            raise ValueError("ClusterManyKeys seeds each stream by k-means++: init must be "
                             "'k-means++'")
        self.shards = shards
        self.max_streams = int(max_streams_per_shard)
        self.warmup = warmup_size(n_clusters, warmup)
        self.ttl_secs, self.snapshot_every, self.clock = ttl_secs, int(snapshot_every), clock
        self.feature_names = None if feature_names is None else tuple(feature_names)
        self.n_features = n_features
        self.random_state = int(random_state)
        self.id_field = id_field
        self.drift = drift_detector is not None

    def expand(self, pcoll: beam.PCollection) -> Any:
        """Build the graph on ``pcoll``: parse and gather per shard, then one stateful step per
        shard; the dead letters of both stages flattened.

        Parameters
        ----------
        pcoll
            ``(key, event)`` pairs, bounded or unbounded.

        Returns
        -------
        PerKeyResult
            The assignments, the dead letters and the snapshots.
        """
        if not isinstance(pcoll.windowing.windowfn, GlobalWindows):
            pcoll = pcoll | "GlobalWindow" >> beam.WindowInto(GlobalWindows())
        streaming = not pcoll.is_bounded
        parse = (_ParseAndShardTimestampedDoFn if streaming else _ParseAndShardDoFn)(
            self.feature_names, self.n_features, _SHARD_CHUNK_ROWS, self.shards, self.id_field)
        parsed = pcoll | "ParseAndShard" >> beam.ParDo(parse).with_output_types(
            tuple[int, ShardChunk]).with_outputs(DEAD_LETTERS, main="chunks")
        scored = parsed.chunks | "ScoreAndLearn" >> beam.ParDo(_BankDoFn(
            self.policy, self.warmup, self.random_state, self.max_streams, self.drift,
            self.ttl_secs if streaming else None, self.snapshot_every, self.clock,
            self.id_field, self.output, self.device)).with_output_types(
            tuple[str, AssignmentBatch] if self.output == "batches" else tuple[str, Assignment]
        ).with_outputs(
            DEAD_LETTERS, SNAPSHOTS, main="assignments")
        dead = (parsed[DEAD_LETTERS], scored[DEAD_LETTERS]) | "DeadLetters" >> beam.Flatten()
        return PerKeyResult(scored.assignments, dead, scored[SNAPSHOTS])

