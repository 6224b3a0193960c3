"""The model as Beam carries it: numpy arrays and a few floats, with a compact binary coder.

A :class:`ModelState` is what lives in Beam state (one per key), travels as a side input and is
checkpointed: never a pickled torch module. :func:`to_estimator` and :func:`from_estimator`
translate it to and from the core :class:`~streamrbf.kmeans.RBFKMeans`, which does all the math.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from apache_beam import coders
from apache_beam.runners.worker.statecache import CacheAware

from ..core.assignment import Assignment, AssignmentBatch

__all__ = [
    "AssignmentBatchCoder",
    "AssignmentCoder",
    "EventChunk",
    "EventChunkCoder",
    "ModelState",
    "ModelStateCoder",
    "from_estimator",
    "stable_hash",
    "to_estimator",
]

_MAGIC_V1 = b"SRB1"
_MAGIC = b"SRB2"
_HEADER_V1 = struct.Struct("<4sBIIIdddqq")
_HEADER = struct.Struct("<4sBIIIdddqqd")  # v2: + flush_at (NaN: no flush timer armed)


@dataclass
class ModelState(CacheAware):
    """One model's state, as Beam stores, broadcasts and checkpoints it.

    Plain numpy arrays and floats (never a pickled torch module), encoded by
    :class:`ModelStateCoder`, which Beam picks up for this type. :func:`to_estimator` turns it into
    the core :class:`~streamrbf.kmeans.RBFKMeans` for a step, :func:`from_estimator` back.

    Parameters
    ----------
    centers
        Centres ``(k, d)`` (``(0, 0)`` while a key is warming up).
    counts
        Decayed masses ``(k,)``.
    temperature
        Current temperature of the schedule.
    initial_temperature
        The schedule's starting temperature (where a reheat returns to).
    min_temperature
        The schedule's floor.
    n_steps
        Gradient steps taken.
    n_seen
        Events learnt from.
    feature_names
        Names of the features (None for array events).
    pending
        Rows not yet learnt from: the warm-up rows of a key still warming up, then the part of
        the next batch received so far.
    flush_at
        Processing time when the pending rows are flushed (None: no flush timer armed).
    pending_ids
        The ids of the pending rows, in order (None when events carry no ids).

    Examples
    --------
    >>> s = ModelState(np.zeros((2, 3)), np.ones(2), 0.5, 1.0, 0.001, n_steps=4, n_seen=80)
    >>> t = ModelStateCoder().decode(ModelStateCoder().encode(s))
    >>> t.centers.shape, t.temperature, t.n_seen, t.initialised
    ((2, 3), 0.5, 80, True)
    >>> w = ModelState.warming_up(np.ones((3, 2)), names=("x", "y"))
    >>> w.initialised, w.n_pending, w.n_features
    (False, 3, 2)
    """

    centers: np.ndarray
    counts: np.ndarray
    temperature: float
    initial_temperature: float
    min_temperature: float
    n_steps: int = 0
    n_seen: int = 0
    feature_names: tuple[str, ...] | None = None
    pending: np.ndarray | None = field(default=None, repr=False)
    flush_at: float | None = None
    pending_ids: list[str | int] | None = field(default=None, repr=False)

    @property
    def initialised(self) -> bool:
        """Whether the centres exist (a key still warming up has only ``pending`` rows)."""
        return self.centers.size > 0

    @property
    def n_features(self) -> int | None:
        if self.initialised:
            return int(self.centers.shape[1])
        if self.pending is not None and self.pending.size:
            return int(self.pending.shape[1])
        return None

    @classmethod
    def warming_up(cls, pending: np.ndarray, names: tuple[str, ...] | None) -> ModelState:
        """A state that only buffers rows until there are enough to initialise a model."""
        return cls(
            np.zeros((0, 0)),
            np.zeros(0),
            float("nan"),
            float("nan"),
            float("nan"),
            feature_names=names,
            pending=pending,
        )

    @property
    def n_pending(self) -> int:
        return 0 if self.pending is None else len(self.pending)

    def get_referents_for_cache(self) -> list[Any]:
        # Beam's state cache weighs cached values by walking their references: nothing to walk,
        # __sizeof__ already counts the arrays (walking numpy arrays reaches dtype objects).
        return []

    def __sizeof__(self) -> int:
        arrays = (self.centers, self.counts, self.pending)
        ids = 64 * len(self.pending_ids) if self.pending_ids else 0
        return (object.__sizeof__(self) + 256 + ids
                + sum(a.nbytes for a in arrays if a is not None))

    def nbytes(self) -> int:
        """Encoded size in bytes (what one key costs in the state backend)."""
        return len(ModelStateCoder().encode(self))


class ModelStateCoder(coders.Coder):
    """Binary coder of :class:`ModelState`: a fixed header, the names as JSON, raw array bytes,
    then the pending rows' ids as a JSON list when they have ids (nothing otherwise: a state
    without ids encodes exactly as before ids existed).

    Registered for :class:`ModelState`, so Beam uses it for state, side inputs and shuffles. It is
    deterministic, keeps float32 centres in float32 (float64 otherwise) and still decodes states
    written by the previous format versions.

    Examples
    --------
    >>> coder = ModelStateCoder()
    >>> s = ModelState(np.eye(2, dtype=np.float32), np.ones(2), 0.5, 1.0, 0.0,
    ...                feature_names=("x", "y"), pending=np.zeros((1, 2)))
    >>> data = coder.encode(s)
    >>> len(data) == s.nbytes()
    True
    >>> t = coder.decode(data)
    >>> t.centers.dtype, t.feature_names, t.n_pending, t.pending_ids
    (dtype('float32'), ('x', 'y'), 1, None)
    >>> s.pending_ids = ["e-9"]
    >>> coder.decode(coder.encode(s)).pending_ids
    ['e-9']
    >>> coder.decode(b"not a state")
    Traceback (most recent call last):
    ...
    ValueError: not an encoded streamrbf ModelState
    """

    def encode(self, s: ModelState) -> bytes:
        centers = np.ascontiguousarray(s.centers)
        wide = centers.dtype != np.float32  # float64, and anything else not to lose digits
        centers = centers.astype(np.float64 if wide else np.float32, copy=False)
        counts = np.ascontiguousarray(s.counts, dtype=np.float64)
        pending = (
            np.zeros((0, 0))
            if s.pending is None
            else np.ascontiguousarray(s.pending, dtype=np.float64)
        )
        names = b"" if s.feature_names is None else json.dumps(list(s.feature_names)).encode()
        k, d = centers.shape if centers.size else (0, pending.shape[1] if pending.size else 0)
        head = _HEADER.pack(
            _MAGIC,
            int(wide),
            k,
            d,
            pending.shape[0],
            s.temperature,
            s.initial_temperature,
            s.min_temperature,
            s.n_steps,
            s.n_seen,
            float("nan") if s.flush_at is None else s.flush_at,
        )
        return b"".join(
            [
                head,
                struct.pack("<I", len(names)),
                names,
                centers.tobytes(),
                counts.tobytes(),
                pending.tobytes(),
                _ids_json(s.pending_ids) if s.pending_ids is not None and len(pending) else b"",
            ]
        )

    def decode(self, data: bytes) -> ModelState:
        magic = bytes(data[:4])
        if magic == _MAGIC:
            _, wide, k, d, m, t, t0, tmin, steps, seen, flush_at = _HEADER.unpack_from(data, 0)
            off = _HEADER.size
        elif magic == _MAGIC_V1:  # state written before the flush timer existed
            _, wide, k, d, m, t, t0, tmin, steps, seen = _HEADER_V1.unpack_from(data, 0)
            flush_at, off = float("nan"), _HEADER_V1.size
        else:
            raise ValueError("not an encoded streamrbf ModelState")
        (n_names,) = struct.unpack_from("<I", data, off)
        off += 4
        names = tuple(json.loads(data[off : off + n_names])) if n_names else None
        off += n_names
        dtype = np.float64 if wide else np.float32
        centers = np.frombuffer(data, dtype, k * d, off).reshape(k, d).copy()
        off += k * d * centers.itemsize
        counts = np.frombuffer(data, np.float64, k, off).copy()
        off += k * 8
        pending = np.frombuffer(data, np.float64, m * d, off).reshape(m, d).copy() if m else None
        off += m * d * 8
        # The pending rows' ids, when they have some: a JSON list up to the end.
        ids = json.loads(bytes(data[off:])) if len(data) > off else None
        if k == 0:
            centers = np.zeros((0, 0), dtype)
        return ModelState(centers, counts, t, t0, tmin, steps, seen, names, pending,
                          None if flush_at != flush_at else flush_at, ids)

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> Any:
        return ModelState


coders.registry.register_coder(ModelState, ModelStateCoder)


def _ids_json(ids: list[str | int]) -> bytes:
    """Event ids (str or int) as compact JSON: deterministic, any int size, any text."""
    return json.dumps(list(ids), separators=(",", ":"), ensure_ascii=False).encode()


class EventChunk:
    """Validated events of one key with the same features, as one ``(n, d)`` float64 array.

    What :class:`~streamrbf.beam.ClusterPerKey` sends to its stateful step: one element (and one
    state read and write) per chunk instead of per event.

    Parameters
    ----------
    names
        The feature names (None for array events).
    rows
        The events, ``(n, d)``.
    ids
        The events' ids (``str`` or ``int``), one per row, or None when events carry none.

    Examples
    --------
    >>> c = EventChunk(("x", "y"), np.array([[1.0, 2.0], [3.0, 4.0]]), ids=["e1", 2])
    >>> len(c), c, c.ids
    (2, EventChunk(names=('x', 'y'), rows=(2, 2)), ['e1', 2])
    """

    __slots__ = ("ids", "names", "rows")

    def __init__(self, names: tuple[str, ...] | None, rows: np.ndarray,
                 ids: list[str | int] | None = None) -> None:
        self.names = names
        self.rows = rows
        self.ids = ids

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"EventChunk(names={self.names!r}, rows={self.rows.shape})"


_CHUNK_HEAD = struct.Struct("<IIi")


class EventChunkCoder(coders.Coder):
    """Binary coder of :class:`EventChunk`: ``(n, d, len(names JSON) or -1)``, names, raw rows,
    then the ids as a JSON list when the chunk has ids (nothing otherwise).

    Registered for :class:`EventChunk`; deterministic; rows are decoded as a writable copy.

    Examples
    --------
    >>> c = EventChunkCoder().decode(EventChunkCoder().encode(EventChunk(None, np.eye(2))))
    >>> c.names, c.rows.tolist(), c.ids
    (None, [[1.0, 0.0], [0.0, 1.0]], None)
    >>> c = EventChunk(("x",), np.ones((2, 1)), ids=["a", 10**20])
    >>> EventChunkCoder().decode(EventChunkCoder().encode(c)).ids
    ['a', 100000000000000000000]
    """

    def encode(self, c: EventChunk) -> bytes:
        rows = np.ascontiguousarray(c.rows, dtype=np.float64)
        names = b"" if c.names is None else json.dumps(list(c.names)).encode()
        head = _CHUNK_HEAD.pack(rows.shape[0], rows.shape[1], -1 if c.names is None else len(names))
        ids = b"" if c.ids is None else _ids_json(c.ids)
        return b"".join([head, names, rows.tobytes(), ids])

    def decode(self, data: bytes) -> EventChunk:
        n, d, n_names = _CHUNK_HEAD.unpack_from(data, 0)
        off = _CHUNK_HEAD.size
        names = None
        if n_names >= 0:
            names = tuple(json.loads(data[off : off + n_names]))
            off += n_names
        # A writable copy: torch warns on read-only numpy buffers.
        rows = np.frombuffer(data, np.float64, n * d, off).reshape(n, d).copy()
        off += n * d * 8
        ids = json.loads(bytes(data[off:])) if len(data) > off else None
        return EventChunk(names, rows, ids)

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> Any:
        return EventChunk


coders.registry.register_coder(EventChunk, EventChunkCoder)


def stable_hash(text: str) -> int:
    """A process-independent 32-bit hash (Python's ``hash`` of a str differs per process).

    The CRC-32 of the UTF-8 text: the same on every worker and in every run, so it can derive
    per-key seeds and shard numbers.

    Examples
    --------
    >>> stable_hash("sensor-1")
    1463541715
    >>> stable_hash("sensor-1") == stable_hash("sensor-1") != stable_hash("sensor-2")
    True
    """
    return zlib.crc32(text.encode("utf-8"))


def to_estimator(state: ModelState, params: dict[str, Any], seed: int = 0):
    """An :class:`~streamrbf.kmeans.RBFKMeans` holding ``state``, ready for ``partial_fit``.

    Its random generator is derived from ``(seed, n_steps)``: a retried bundle redoes exactly the
    same step, whichever worker runs it.

    Parameters
    ----------
    state
        An initialised state.
    params
        The estimator's parameters (``n_clusters`` and ``random_state`` are ignored: they come
        from the state and the seed).
    seed
        The transform's seed.

    Returns
    -------
    RBFKMeans
        A fitted estimator with the state's centres, masses, temperature and step count.

    Examples
    --------
    >>> s = ModelState(np.array([[0.0, 0.0], [9.0, 9.0]]), np.ones(2), 0.5, 1.0, 0.0, n_steps=3)
    >>> X = np.array([[0.0, 1.0], [9.0, 8.0]])
    >>> a = to_estimator(s, {"n_clusters": 2}, seed=7).partial_fit(X)
    >>> b = to_estimator(s, {"n_clusters": 2}, seed=7).partial_fit(X)  # a retry
    >>> a.n_steps_, np.array_equal(a.cluster_centers_, b.cluster_centers_)
    (4, True)
    """
    from ..core.temperature import TemperatureSchedule
    from ..kmeans import RBFKMeans

    params = {k: v for k, v in params.items() if k not in ("n_clusters", "random_state")}
    decay = float(params.get("temperature_decay", RBFKMeans().temperature_decay))
    schedule = TemperatureSchedule(
        state.initial_temperature, decay, state.min_temperature, state.temperature
    )
    # The generator is derived from (seed, n_steps): a retried bundle redraws the same numbers.
    return RBFKMeans.from_state(
        np.array(state.centers),
        np.array(state.counts, dtype=np.float64),
        schedule,
        n_steps=int(state.n_steps),
        random_state=np.random.default_rng([int(seed), int(state.n_steps)]),
        **params,
    )


def from_estimator(
    model, n_seen: int = 0, feature_names: tuple[str, ...] | None = None
) -> ModelState:
    """The :class:`ModelState` of a fitted :class:`~streamrbf.kmeans.RBFKMeans`.

    Parameters
    ----------
    model
        A fitted estimator.
    n_seen
        Events learnt from, recorded in the state.
    feature_names
        Names of the features, recorded in the state.

    Returns
    -------
    ModelState
        The centres, masses, temperature schedule and step count of ``model``.

    Examples
    --------
    >>> from streamrbf import RBFKMeans
    >>> km = RBFKMeans(2, random_state=0).fit([[0.0, 0.0], [0.0, 1.0], [9.0, 9.0], [9.0, 8.0]])
    >>> s = from_estimator(km, n_seen=4, feature_names=("x", "y"))
    >>> s.centers.shape, s.counts.tolist(), s.n_seen, s.feature_names
    ((2, 2), [2.0, 2.0], 4, ('x', 'y'))
    >>> np.array_equal(to_estimator(s, {}).cluster_centers_, km.cluster_centers_)
    True
    """
    schedule = model.temperature_schedule_
    return ModelState(
        np.array(model.cluster_centers_),
        np.array(model.counts_, dtype=np.float64),
        float(schedule.value),
        float(schedule.initial),
        float(schedule.minimum),
        int(model.n_steps_),
        int(n_seen),
        feature_names,
    )


_ASSIGN_HEAD = struct.Struct("<qddI")
_ID_INT = struct.Struct("<cq")
# One Struct per membership count (at most n_clusters of them): header, int32 ids, float64 values.
_ASSIGN_FORMATS: dict[int, struct.Struct] = {}


def _assign_format(n: int) -> struct.Struct:
    f = _ASSIGN_FORMATS.get(n)
    if f is None:
        f = _ASSIGN_FORMATS[n] = struct.Struct(f"<qddI{n}i{n}d")
    return f


class AssignmentCoder(coders.Coder):
    """Binary coder of :class:`~streamrbf.core.assignment.Assignment`.

    The cluster, distance and temperature, then the non-zero memberships as (int32 id, float64)
    pairs: a few dozen bytes per event. Then the ``event_id``, if any, up to the end: nothing for
    None (so the same bytes as before ids existed), ``b"q"`` + int64 for an int that fits,
    ``b"s"`` + UTF-8 for a str, ``b"i"`` + decimal digits for a larger int. Registered for
    ``Assignment``; deterministic.

    Examples
    --------
    >>> from streamrbf.core.assignment import Assignment
    >>> coder = AssignmentCoder()
    >>> a = Assignment(1, {1: 0.75, 0: 0.25}, 0.5, 0.1)
    >>> coder.decode(coder.encode(a)) == a
    True
    >>> [len(coder.encode(a._replace(event_id=i))) for i in (None, 7, "e-7")]
    [52, 61, 56]
    >>> coder.decode(coder.encode(a._replace(event_id="e-7"))).event_id
    'e-7'
    """

    def encode(self, a: Any) -> bytes:
        m = a.memberships
        n = len(m)
        data = _assign_format(n).pack(a.cluster, a.distance, a.temperature, n, *m, *m.values())
        if len(a) < 5 or a[4] is None:  # (a 4-tuple: an Assignment pickled before event_id)
            return data
        i = a[4]
        if isinstance(i, str):
            return data + b"s" + i.encode("utf-8")
        if -(2**63) <= i < 2**63:
            return data + _ID_INT.pack(b"q", i)
        return data + b"i" + str(int(i)).encode()

    def decode(self, data: bytes) -> Any:
        n = _ASSIGN_HEAD.unpack_from(data, 0)[3]
        f = _assign_format(n)
        cluster, distance, temperature, _, *rest = f.unpack_from(data, 0)
        event_id = None
        if len(data) > f.size:
            tag, tail = data[f.size:f.size + 1], bytes(data[f.size + 1:])
            if tag == b"s":
                event_id = tail.decode("utf-8")
            elif tag == b"q":
                event_id = _ID_INT.unpack_from(data, f.size)[1]
            elif tag == b"i":
                event_id = int(tail)
            else:
                raise ValueError(f"not an encoded Assignment: event id tag {tag!r}")
        return tuple.__new__(Assignment, (cluster, dict(zip(rest[:n], rest[n:])), distance,
                                          temperature, event_id))

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> Any:
        return Assignment


coders.registry.register_coder(Assignment, AssignmentCoder)


_BATCH_HEAD = struct.Struct("<4sIIdi")  # magic, n events, nnz, temperature, len(ids JSON) or -1


class AssignmentBatchCoder(coders.Coder):
    """Binary coder of :class:`~streamrbf.core.assignment.AssignmentBatch` (``ClusterPerKey(output=
    "batches")``): a header, then the columns as raw little-endian arrays (int64 clusters and
    offsets, float64 distances and values, int32 membership clusters), then the event ids as
    JSON when there are any. 36 bytes per one-hot event; no pickle. Registered for
    ``AssignmentBatch``; deterministic.

    Examples
    --------
    >>> b = AssignmentBatch(np.array([0, 1]), np.array([0.5, 2.0]), np.array([0, 1, 3]),
    ...                     np.array([0, 1, 0]), np.array([1.0, 0.75, 0.25]), 0.1, ["a", 7])
    >>> c = AssignmentBatchCoder()
    >>> back = c.decode(c.encode(b))
    >>> back.to_list() == b.to_list(), len(c.encode(b))
    (True, 123)
    """

    _MAGIC = b"SRAB"

    def encode(self, b: AssignmentBatch) -> bytes:
        n, nnz = len(b.clusters), len(b.member_values)
        ids = b"" if b.event_ids is None else json.dumps(
            list(b.event_ids), separators=(",", ":")).encode()
        head = _BATCH_HEAD.pack(self._MAGIC, n, nnz, float(b.temperature),
                                -1 if b.event_ids is None else len(ids))
        return b"".join([
            head,
            np.ascontiguousarray(b.clusters, "<i8").tobytes(),
            np.ascontiguousarray(b.distances, "<f8").tobytes(),
            np.ascontiguousarray(b.offsets, "<i8").tobytes(),
            np.ascontiguousarray(b.member_clusters, "<i4").tobytes(),
            np.ascontiguousarray(b.member_values, "<f8").tobytes(),
            ids,
        ])

    def decode(self, data: bytes) -> AssignmentBatch:
        magic, n, nnz, temperature, n_ids = _BATCH_HEAD.unpack_from(data, 0)
        if magic != self._MAGIC:
            raise ValueError(f"not an encoded AssignmentBatch (magic {magic!r})")
        off = _BATCH_HEAD.size
        columns = []
        for dtype, size in (("<i8", n), ("<f8", n), ("<i8", n + 1), ("<i4", nnz), ("<f8", nnz)):
            columns.append(np.frombuffer(data, dtype, size, off).astype(dtype[1:], copy=True))
            off += size * int(dtype[2])
        ids = None if n_ids < 0 else json.loads(bytes(data[off:off + n_ids]))
        clusters, distances, offsets, member_clusters, member_values = columns
        return AssignmentBatch(clusters, distances, offsets, member_clusters.astype(np.int64),
                               member_values, temperature, ids)

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> Any:
        return AssignmentBatch


coders.registry.register_coder(AssignmentBatch, AssignmentBatchCoder)
