"""What Beam carries: the engine's state record and the per-key state, with compact coders.

The engine's :class:`~streamrbf.core.state.ModelState` is what a model *is* everywhere: it travels
as a side input and in checkpoints (:class:`ModelStateCoder`), and each key of
:class:`~streamrbf.beam.ClusterPerKey` keeps one in a :class:`KeyState` with its pending rows
(:class:`KeyStateCoder`). Never a pickled torch module, never an estimator: the transforms call
the engine (:mod:`streamrbf.core.engine`) on these records directly.
"""

from __future__ import annotations

import json
import math
import reprlib
import struct
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from apache_beam import coders
from apache_beam.runners.worker.statecache import CacheAware

from ..core.assignment import Assignment, AssignmentBatch
from ..core.persistence import _check_decoded, state_from_bytes, state_to_bytes
from ..core.state import ModelState

__all__ = [
    "AssignmentBatchCoder",
    "AssignmentCoder",
    "EventChunk",
    "EventChunkCoder",
    "KeyState",
    "KeyStateCoder",
    "ModelState",
    "ModelStateCoder",
    "stable_hash",
]

_MAGIC = b"SRK1"
_KEY_HEAD = struct.Struct("<4sBdIIi")  # magic, flags, flush_at (NaN: none), rows, d, names len
_HAS_MODEL, _HAS_IDS, _HAS_DETECTOR, _HAS_RECENT = 1, 2, 4, 8
_KNOWN_FLAGS = _HAS_MODEL | _HAS_IDS | _HAS_DETECTOR | _HAS_RECENT
_NOT_KEY_STATE = "not an encoded streamrbf key state"
_NOT_MODEL_STATE = "not an encoded streamrbf model state"
# What reading malformed bytes can raise (a size too large for an index, a JSON list nested too
# deeply, a value of the wrong type): each becomes a ValueError saying why.
_MALFORMED = (ValueError, struct.error, TypeError, OverflowError, RecursionError, IndexError)
# Per-key states written by earlier releases (centres, counts and the schedule in one header).
_LEGACY_V1 = (b"SRB1", struct.Struct("<4sBIIIdddqq"))
_LEGACY_V2 = (b"SRB2", struct.Struct("<4sBIIIdddqqd"))
_U32, _TWO_U32 = struct.Struct("<I"), struct.Struct("<II")
_ID_TYPES = {str, int, type(None)}  # what an event id may be (bool is not int here)


class _RecordCoder(coders.Coder):
    """A deterministic binary coder of one record type, ``encodes`` (what Beam's type inference
    and key coders need to know of it)."""

    encodes: type

    def is_deterministic(self) -> bool:
        """Whether equal records always encode to equal bytes (Beam asks this of key coders).

        Returns
        -------
        bool
            True.
        """
        return True

    def to_type_hint(self) -> Any:
        """The type this coder encodes, for Beam's type inference.

        Returns
        -------
        type
            The record type, ``encodes``.
        """
        return self.encodes


class ModelStateCoder(_RecordCoder):
    """Binary coder of the engine's state record (:class:`~streamrbf.core.state.ModelState`):
    :func:`~streamrbf.core.persistence.state_to_bytes`, never a pickle. Registered for the
    record, so Beam uses it for side inputs, shuffles and state; deterministic.

    Examples
    --------
    >>> s = ModelState.single(np.eye(2), np.ones(2), temperature=0.5, n_seen=80)
    >>> t = ModelStateCoder().decode(ModelStateCoder().encode(s))
    >>> t.centers.shape, float(t.temperature[0]), int(t.n_seen[0])
    ((1, 2, 2), 0.5, 80)
    >>> ModelStateCoder().decode(b"not a state")
    Traceback (most recent call last):
    ...
    ValueError: not an encoded streamrbf model state: ...
    """

    encodes = ModelState

    def encode(self, s: ModelState) -> bytes:
        """Write a state record as bytes.

        Parameters
        ----------
        s
            The record to write.

        Returns
        -------
        bytes
            Its :func:`~streamrbf.core.persistence.state_to_bytes` encoding.
        """
        return state_to_bytes(s)

    def decode(self, data: bytes) -> ModelState:
        """Read a state record written by :meth:`encode`.

        Parameters
        ----------
        data
            The encoded record.

        Returns
        -------
        ModelState
            The record.

        Raises
        ------
        ValueError
            For anything else (bytes of another kind, truncated or inconsistent, or feature
            names that :meth:`encode` could not write back), saying why; never another error.
        """
        try:
            state = state_from_bytes(data)
        except _MALFORMED as err:
            if isinstance(err, ValueError) and str(err).startswith(_NOT_MODEL_STATE):
                raise
            raise ValueError(f"{_NOT_MODEL_STATE}: {err}") from None
        if state.feature_names is not None and not all(map(_is_text, state.feature_names)):
            raise ValueError(f"{_NOT_MODEL_STATE}: a feature name is not valid Unicode text "
                             "(a lone surrogate)")
        return state


coders.registry.register_coder(ModelState, ModelStateCoder)


@dataclass
class KeyState(CacheAware):
    """What :class:`~streamrbf.beam.ClusterPerKey` keeps in Beam state for one key: the key's
    model (the engine's record, a bank of one; None while the key warms up) and the rows it has
    not learnt from yet, encoded by :class:`KeyStateCoder` (never a pickle).

    Parameters
    ----------
    model
        The key's model, or None while it buffers its first events.
    feature_names
        Names of the features (None for array events).
    pending
        Rows not yet learnt from: the warm-up rows of a key still warming up, then the part of
        the next batch received so far.
    pending_ids
        The ids of the pending rows, in order (None when events carry no ids).
    flush_at
        Processing time when the pending rows are flushed (None: no flush timer armed).
    detector
        The drift detector's memory for this key (:mod:`streamrbf.core.drift`), or None.
    recent
        After a drift alarm, the rows learnt since (up to ``warmup``), on which a fresh model is
        tried (:func:`streamrbf.core.engine.refit`); None otherwise.

    Examples
    --------
    >>> w = KeyState(feature_names=("x", "y"), pending=np.ones((3, 2)))
    >>> w.initialised, w.n_pending, w.n_features
    (False, 3, 2)
    >>> s = KeyState(ModelState.single(np.zeros((2, 3)), np.ones(2), temperature=0.5))
    >>> t = KeyStateCoder().decode(KeyStateCoder().encode(s))
    >>> t.initialised, t.n_features, float(t.model.temperature[0])
    (True, 3, 0.5)
    """

    model: ModelState | None = None
    feature_names: tuple[str, ...] | None = None
    pending: np.ndarray | None = field(default=None, repr=False)
    pending_ids: list[str | int] | None = field(default=None, repr=False)
    flush_at: float | None = None
    detector: np.ndarray | None = field(default=None, repr=False)
    recent: np.ndarray | None = field(default=None, repr=False)

    def working_copy(self) -> KeyState:
        """A copy to change while processing an element: Beam's state cache hands back the
        object it holds, and a bundle that fails after changing it would leave its retry a
        state no commit wrote. The model record and arrays that are replaced (never written
        to) are shared; the drift detector's memory, which detectors update in place, is copied.

        Returns
        -------
        KeyState
            The copy.

        Examples
        --------
        >>> s = KeyState(None, ("x",), detector=np.zeros(3))
        >>> c = s.working_copy()
        >>> c.detector[0] = 1.0; c.flush_at = 5.0
        >>> float(s.detector[0]), s.flush_at
        (0.0, None)
        """
        return replace(self, detector=None if self.detector is None else self.detector.copy())

    @property
    def initialised(self) -> bool:
        """Whether the key has a model (a key still warming up has only ``pending`` rows)."""
        return self.model is not None

    @property
    def n_features(self) -> int | None:
        if self.model is not None:
            return self.model.n_features
        if self.pending is not None and self.pending.size:
            return int(self.pending.shape[1])
        return None

    @property
    def n_pending(self) -> int:
        return 0 if self.pending is None else len(self.pending)

    def get_referents_for_cache(self) -> list[Any]:
        """What Beam's state cache walks to weigh this value: nothing.

        ``__sizeof__`` already counts the arrays, and walking numpy arrays would reach their
        dtype objects.

        Returns
        -------
        list
            An empty list.
        """
        # Beam's state cache weighs cached values by walking their references: nothing to walk,
        # __sizeof__ already counts the arrays (walking numpy arrays reaches dtype objects).
        return []

    def __sizeof__(self) -> int:
        m = self.model
        arrays = [self.pending, self.detector, self.recent]
        arrays += [] if m is None else [m.centers, m.masses]
        ids = 64 * len(self.pending_ids) if self.pending_ids else 0
        return (object.__sizeof__(self) + 512 + ids
                + sum(a.nbytes for a in arrays if a is not None))

    def nbytes(self) -> int:
        """Encoded size in bytes (what one key costs in the state backend).

        Returns
        -------
        int
            The length of the state's :class:`KeyStateCoder` encoding.
        """
        return len(KeyStateCoder().encode(self))


class KeyStateCoder(_RecordCoder):
    """Binary coder of :class:`KeyState`: a fixed header, the feature names as JSON, the pending
    rows as raw float64, the model as :func:`~streamrbf.core.persistence.state_to_bytes`, the
    drift detector's memory and the rows since an alarm (when there are any), then the pending
    rows' ids as JSON when they have ids. Deterministic; it also decodes the per-key
    states earlier releases wrote (which recorded no seed: their models' later random draws,
    for re-seeding starved centres, follow seed 0).

    Examples
    --------
    >>> coder = KeyStateCoder()
    >>> s = KeyState(None, ("x", "y"), pending=np.zeros((1, 2)), pending_ids=["e-9"])
    >>> t = coder.decode(coder.encode(s))
    >>> t.feature_names, t.n_pending, t.pending_ids, len(coder.encode(s)) == s.nbytes()
    (('x', 'y'), 1, ['e-9'], True)
    >>> coder.decode(b"not a state")
    Traceback (most recent call last):
    ...
    ValueError: not an encoded streamrbf key state: magic b'not '
    """

    encodes = KeyState

    def encode(self, s: KeyState) -> bytes:
        """Write a key's state as bytes.

        Parameters
        ----------
        s
            The state to write.

        Returns
        -------
        bytes
            The header, names, pending rows, model, detector memory, recent rows and ids (see
            the class).
        """
        pending = (np.zeros((0, 0)) if s.pending is None
                   else np.ascontiguousarray(s.pending, dtype=np.float64))
        names = b"" if s.feature_names is None else json.dumps(list(s.feature_names)).encode()
        model = b"" if s.model is None else state_to_bytes(s.model)
        ids = s.pending_ids is not None and len(pending) > 0
        flags = ((_HAS_MODEL if s.model is not None else 0) | (_HAS_IDS if ids else 0)
                 | (_HAS_DETECTOR if s.detector is not None else 0)
                 | (_HAS_RECENT if s.recent is not None else 0))
        head = _KEY_HEAD.pack(_MAGIC, flags, math.nan if s.flush_at is None else s.flush_at,
                              pending.shape[0], pending.shape[1] if pending.size else 0,
                              -1 if s.feature_names is None else len(names))
        parts = [head, names, pending.tobytes(), struct.pack("<I", len(model)), model]
        for extra in (s.detector, s.recent):
            if extra is not None:
                a = np.ascontiguousarray(extra, dtype=np.float64)
                parts += [struct.pack("<II", *(a.shape if a.ndim == 2 else (a.size, 0))),
                          a.tobytes()]
        parts.append(_ids_json(s.pending_ids) if ids else b"")
        return b"".join(parts)

    def decode(self, data: bytes) -> KeyState:
        """Read a key's state written by :meth:`encode` or by an earlier release.

        Every size is checked against the bytes before anything is read or allocated, and the
        parts must agree: one model (with finite centres, masses >= 0, temperatures > 0 and
        counters >= 0, as for :class:`ModelStateCoder`), pending rows and rows since a drift
        alarm that are finite and have its number of features, as many feature names, the
        model's names, one id (a str, an int or null) per pending row, known flags only and
        nothing after the end. A state that decodes is one :meth:`encode` writes back.

        Parameters
        ----------
        data
            The encoded state.

        Returns
        -------
        KeyState
            The state, its arrays writable copies.

        Raises
        ------
        ValueError
            For bytes of another kind, truncated or inconsistent ones, saying why; never another
            error.

        Examples
        --------
        >>> KeyStateCoder().decode(b"SRK1")
        Traceback (most recent call last):
        ...
        ValueError: not an encoded streamrbf key state: 25 bytes for its header, only 4 left
        """
        try:
            if not isinstance(data, bytes):
                if not isinstance(data, (bytearray, memoryview)):
                    raise ValueError(f"expected bytes, got {type(data).__name__}")
                data = bytes(data)
            magic = data[:4]
            if magic in (_LEGACY_V1[0], _LEGACY_V2[0]):
                return _check_key_state(_decode_legacy(_Reader(data), magic))
            if magic != _MAGIC:
                raise ValueError(f"magic {magic!r}")
            return _check_key_state(_decode_current(_Reader(data)))
        except _MALFORMED as err:
            raise ValueError(f"{_NOT_KEY_STATE}: {err}") from None


coders.registry.register_coder(KeyState, KeyStateCoder)


def _ids_json(ids: list[str | int]) -> bytes:
    """Event ids (str or int) as compact JSON: deterministic, any int size, any text."""
    return json.dumps(list(ids), separators=(",", ":"), ensure_ascii=False).encode()


class _Reader:
    """Encoded bytes read in order: every read checks first that the bytes are there, so a
    size read from the bytes never indexes past them nor allocates more than they hold."""

    __slots__ = ("data", "off")

    def __init__(self, data: bytes, off: int = 0) -> None:
        self.data = data
        self.off = off

    def _skip(self, n: int, what: str) -> int:
        """Move past ``n`` bytes (after checking they are there); return where they start."""
        left = len(self.data) - self.off
        if not 0 <= n <= left:
            raise ValueError(f"{n} bytes for {what}, only {left} left")
        self.off += n
        return self.off - n

    def take(self, n: int, what: str) -> bytes:
        """The next ``n`` bytes (``what`` they are, for the error)."""
        at = self._skip(n, what)
        return self.data[at:at + n]

    def unpack(self, head: struct.Struct, what: str) -> tuple[Any, ...]:
        """The fields of ``head`` at the next bytes."""
        return head.unpack_from(self.data, self._skip(head.size, what))

    def floats(self, n: int, what: str, dtype: Any = np.float64) -> np.ndarray:
        """``n`` values of ``dtype``, a writable copy."""
        size = np.dtype(dtype).itemsize
        return np.frombuffer(self.data, dtype, n, self._skip(n * size, what)).copy()

    def rest(self) -> bytes:
        """The bytes up to the end."""
        return self.data[self._skip(len(self.data) - self.off, "the rest"):]


def _json(raw: bytes, what: str) -> Any:
    """The JSON text ``raw`` (UTF-8) as a value; a ``ValueError`` naming ``what`` otherwise."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} are not UTF-8 text: {err}") from None
    except RecursionError:
        raise ValueError(f"{what} are JSON nested too deeply") from None
    except ValueError as err:
        raise ValueError(f"{what} are not JSON: {err}") from None


def _is_text(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (no lone surrogates), as the encoders do."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _names_of(raw: bytes) -> tuple[str, ...]:
    """Feature names written as a JSON list of strings."""
    names = _json(raw, "feature names")
    if not isinstance(names, list) or not all(type(n) is str for n in names):
        raise ValueError(f"feature names must be a JSON list of strings, got "
                         f"{type(names).__name__}")
    return tuple(names)


def _ids_of(raw: bytes) -> list[str | int | None]:
    """The pending rows' ids written as a JSON list of strings and ints (null for a row
    without one)."""
    ids = _json(raw, "event ids")
    if not isinstance(ids, list):
        raise ValueError(f"event ids must be a JSON list, got {type(ids).__name__}")
    kinds = set(map(type, ids))
    if not kinds <= _ID_TYPES:
        bad = next(iter(kinds - _ID_TYPES))
        raise ValueError(f"event ids must be strings, ints or null, got {bad.__name__}")
    # (Only a \u escape makes a lone surrogate: UTF-8 text decodes to none.)
    if b"\\u" in raw and not all(_is_text(i) for i in ids if type(i) is str):
        raise ValueError("an event id is not valid Unicode text (a lone surrogate)")
    return ids


def _flush_time(flush_at: float) -> float | None:
    """The flush time as written (NaN: none); an infinite one is refused."""
    if flush_at != flush_at:
        return None
    if not math.isfinite(flush_at):
        raise ValueError(f"flush time {flush_at} is not finite")
    return flush_at


def _decode_current(r: _Reader) -> KeyState:
    """A per-key state written by :meth:`KeyStateCoder.encode`."""
    _, flags, flush_at, m, d, n_names = r.unpack(_KEY_HEAD, "its header")
    if flags & ~_KNOWN_FLAGS:
        raise ValueError(f"unknown flags {flags:#04x}")
    if n_names < -1:
        raise ValueError(f"feature names of length {n_names}")
    names = None if n_names == -1 else _names_of(r.take(n_names, "its feature names"))
    if (m == 0) != (d == 0):
        raise ValueError(f"{m} pending rows of {d} features")
    pending = r.floats(m * d, f"{m} pending rows of {d} features").reshape(m, d) if m else None
    (n_model,) = r.unpack(_U32, "its model's size")
    model_bytes = r.take(n_model, "its model")
    model = None
    if flags & _HAS_MODEL:
        try:
            model = ModelStateCoder().decode(model_bytes)
        except ValueError as err:
            raise ValueError(f"its model is {err}") from None
    elif n_model:
        raise ValueError(f"{n_model} bytes of model without the model flag")
    extras = []
    for flag, what in ((_HAS_DETECTOR, "drift detector memory"),
                       (_HAS_RECENT, "rows since a drift alarm")):
        a = None
        if flags & flag:
            rows, cols = r.unpack(_TWO_U32, f"the shape of its {what}")
            a = r.floats(rows * max(cols, 1), f"its {what} ({rows}, {cols})")
            a = a.reshape(rows, cols) if cols else a
        extras.append(a)
    if flags & _HAS_IDS:
        if not m:
            raise ValueError("event ids without pending rows")
        ids = _ids_of(r.rest())
    else:
        ids = None
        if len(r.data) > r.off:
            raise ValueError(f"{len(r.data) - r.off} bytes after the end")
    return KeyState(model, names, pending, ids, _flush_time(flush_at), *extras)


def _decode_legacy(r: _Reader, magic: bytes) -> KeyState:
    """A per-key state of an earlier release (header ``SRB1`` or ``SRB2``)."""
    head = _LEGACY_V2[1] if magic == _LEGACY_V2[0] else _LEGACY_V1[1]
    fields = r.unpack(head, "its header")
    _, wide, k, d, m, t, t0, tmin, steps, seen = fields[:10]
    flush_at = fields[10] if len(fields) > 10 else math.nan
    if wide not in (0, 1):
        raise ValueError(f"centre width flag {wide} (0: float32, 1: float64)")
    (n_names,) = r.unpack(_U32, "the length of its feature names")
    names = _names_of(r.take(n_names, "its feature names")) if n_names else None
    dtype = np.float64 if wide else np.float32
    centers = r.floats(k * d, f"{k} centres of {d} features", dtype).reshape(k, d)
    counts = r.floats(k, f"{k} centre counts")
    pending = r.floats(m * d, f"{m} pending rows of {d} features").reshape(m, d) if m else None
    ids = None
    if len(r.data) > r.off:
        if not m:
            raise ValueError("event ids without pending rows")
        ids = _ids_of(r.rest())
    model = None
    if k:
        model = ModelState.single(centers, counts, temperature=t, initial_temperature=t0,
                                  min_temperature=tmin, n_steps=steps, n_seen=seen,
                                  feature_names=names)
        try:
            _check_decoded(model)
        except ValueError as err:
            raise ValueError(f"its model is {err}") from None
    return KeyState(model, names, pending, ids, _flush_time(flush_at))


def _check_key_state(s: KeyState) -> KeyState:
    """``s``, a decoded state, if its parts agree; a ``ValueError`` saying what does not.

    The model is one model (with centres and features); the pending rows, the rows since a drift
    alarm and the feature names have the model's number of features (the pending rows' number
    while there is no model); the names are the model's; the rows are finite; there is one id per
    pending row.
    """
    m = s.model
    if m is not None:
        if m.n_models != 1 or not m.n_clusters or not m.n_features:
            raise ValueError(f"its model is {m.n_models} models of {m.n_clusters} centres of "
                             f"{m.n_features} features, not one model")
        if s.feature_names is not None and m.feature_names is not None and (
                s.feature_names != m.feature_names):
            raise ValueError(f"its feature names {reprlib.repr(list(s.feature_names))} are not "
                             f"its model's {reprlib.repr(list(m.feature_names))}")
        if m.feature_names is not None and not all(map(_is_text, m.feature_names)):
            raise ValueError("its model's feature names are not valid Unicode text")
    d = s.n_features
    for what, rows in (("pending rows", s.pending), ("rows since a drift alarm", s.recent)):
        if rows is None:
            continue
        if rows.ndim != 2 or not rows.shape[1]:
            raise ValueError(f"its {what} have no features (shape {rows.shape})")
        if d is not None and rows.shape[1] != d:
            raise ValueError(f"its {what} have {rows.shape[1]} features, its model {d}")
        if not np.isfinite(rows).all():
            raise ValueError(f"its {what} hold NaN or infinity")
    if s.pending_ids is not None and len(s.pending_ids) != s.n_pending:
        raise ValueError(f"{len(s.pending_ids)} event ids for {s.n_pending} pending rows")
    if s.feature_names is not None and d is not None and len(s.feature_names) != d:
        raise ValueError(f"{len(s.feature_names)} feature names for {d} features")
    return s


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


class EventChunkCoder(_RecordCoder):
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

    encodes = EventChunk

    def encode(self, c: EventChunk) -> bytes:
        """Write a chunk as bytes.

        Parameters
        ----------
        c
            The chunk to write.

        Returns
        -------
        bytes
            The header, the names as JSON, the rows as raw float64 and the ids as JSON.
        """
        rows = np.ascontiguousarray(c.rows, dtype=np.float64)
        names = b"" if c.names is None else json.dumps(list(c.names)).encode()
        head = _CHUNK_HEAD.pack(rows.shape[0], rows.shape[1], -1 if c.names is None else len(names))
        ids = b"" if c.ids is None else _ids_json(c.ids)
        return b"".join([head, names, rows.tobytes(), ids])

    def decode(self, data: bytes) -> EventChunk:
        """Read a chunk written by :meth:`encode`.

        Parameters
        ----------
        data
            The encoded chunk.

        Returns
        -------
        EventChunk
            The chunk, its rows a writable copy.
        """
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


coders.registry.register_coder(EventChunk, EventChunkCoder)


def stable_hash(text: str) -> int:
    """A process-independent 32-bit hash (Python's ``hash`` of a str differs per process).

    The CRC-32 of the UTF-8 text: the same on every worker and in every run, so it can derive
    per-key seeds and shard numbers.

    Parameters
    ----------
    text
        The text to hash (a key, say).

    Returns
    -------
    int
        The CRC-32 of its UTF-8 encoding, in ``[0, 2**32)``.

    Examples
    --------
    >>> stable_hash("sensor-1")
    1463541715
    >>> stable_hash("sensor-1") == stable_hash("sensor-1") != stable_hash("sensor-2")
    True
    """
    return zlib.crc32(text.encode("utf-8"))


_ASSIGN_HEAD = struct.Struct("<qddI")
_ID_INT = struct.Struct("<cq")
# One Struct per membership count (at most n_clusters of them): header, int32 ids, float64 values.
_ASSIGN_FORMATS: dict[int, struct.Struct] = {}


def _assign_format(n: int) -> struct.Struct:
    f = _ASSIGN_FORMATS.get(n)
    if f is None:
        f = _ASSIGN_FORMATS[n] = struct.Struct(f"<qddI{n}i{n}d")
    return f


class AssignmentCoder(_RecordCoder):
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

    encodes = Assignment

    def encode(self, a: Any) -> bytes:
        """Write an assignment as bytes.

        Parameters
        ----------
        a
            The :class:`~streamrbf.core.assignment.Assignment` (or a 4-tuple one pickled before
            ``event_id`` existed).

        Returns
        -------
        bytes
            The header and memberships, then the tagged event id if there is one.
        """
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
        """Read an assignment written by :meth:`encode`.

        Parameters
        ----------
        data
            The encoded assignment; an unknown event-id tag raises ``ValueError``.

        Returns
        -------
        Assignment
            The assignment, its ``event_id`` None when none was written.
        """
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


coders.registry.register_coder(Assignment, AssignmentCoder)


_BATCH_HEAD = struct.Struct("<4sIIdi")  # magic, n events, nnz, temperature, len(ids JSON) or -1


class AssignmentBatchCoder(_RecordCoder):
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

    encodes = AssignmentBatch

    _MAGIC = b"SRAB"

    def encode(self, b: AssignmentBatch) -> bytes:
        """Write a batch of assignments as bytes.

        Parameters
        ----------
        b
            The batch to write.

        Returns
        -------
        bytes
            The header, the columns as raw little-endian arrays, then the ids as JSON.
        """
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
        """Read a batch written by :meth:`encode`.

        Parameters
        ----------
        data
            The encoded batch; bytes without its magic raise ``ValueError``.

        Returns
        -------
        AssignmentBatch
            The batch, its columns writable copies.
        """
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


coders.registry.register_coder(AssignmentBatch, AssignmentBatchCoder)
