"""Many keyed streams in one bank of models: :class:`StreamBank`.

A fleet of short or slow streams (one per device, user, tenant) costs a few hundred bytes per
stream here, and no Python object per stream: every stream's model is a row of one
:class:`~streamrbf.core.state.ModelState` (float32 centres), its key maps to that row, and the
rows are stepped by compiled kernels, one event at a time
(:func:`~streamrbf.core._online_kernels.learn_event_bank`) or every stream of a mixed batch at once
(:func:`~streamrbf.core.bank.step_bank`). The faces build on it: River's ``KeyedRBFKMeans`` and
Beam's ``ClusterManyKeys``.

A stream's life: its first ``warmup`` events are buffered and clustered provisionally as they
come (:func:`~streamrbf.core._start_kernels.provisional_event`: it answers from its first event);
then the stream starts in one compiled call with every other stream that completed its warm-up
(:func:`~streamrbf.core.bank.initialise_bank`), its centres matched to the provisional ones so
its labels carry over, and the buffer is released. After that each step forgets, cools and
re-seeds starved centres as the policy says; a CUSUM detector per stream watches the distortion,
and after an alarm the stream buffers its next ``warmup`` events and restarts from them if that
halves their K-Means cost (:func:`~streamrbf.core.engine.refit`). At most ``max_streams`` are
kept: a new stream evicts the least recently used one.
"""

from __future__ import annotations

import collections
import hashlib
import json
from typing import Any

import numpy as np

from . import _kernels
from . import _online_kernels as _ok
from . import _start_kernels as _sk
from .bank import initialise_bank, step_bank
from .policy import DRIFT_RESTART_GAIN, Policy
from .state import ModelState

__all__ = ["StreamBank", "from_bytes", "key_seed", "to_bytes"]

WARMING, STARTED = 1, 2
#: The bank's arrays grow by a quarter when full: at most a fifth of them stand empty.
GROWTH = 1.25
#: A warming stream's buffer starts with room for this many events and doubles when an event
#: finds it full, up to ``warmup`` rows: a stream that stops after a few events holds at most
#: twice as many rows, not ``warmup``.
WARM_ROWS = 1
_STATE_FIELDS = ("centers", "masses", "temperature", "initial_temperature", "min_temperature",
                 "n_steps", "n_seen", "seed")
_ARRAYS = ("aux", "rs", "det", "phase", "count", "n_warm", "last_used")


def key_seed(seed: int, key: Any) -> int:
    """A stream's seed from a base seed and its key: both hashed (BLAKE2b of the key's
    ``repr``), so the seed is the same in every process and whatever order streams arrive in.

    Parameters
    ----------
    seed
        The base seed (any int).
    key
        The stream's key (its ``repr`` is hashed: ints, strings, tuples of them).

    Returns
    -------
    int
        A seed in ``[0, 2**63)``.

    Examples
    --------
    >>> key_seed(0, "a") == key_seed(0, "a") != key_seed(1, "a")
    True
    """
    h = hashlib.blake2b(repr(key).encode(), digest_size=8,
                        key=(int(seed) % 2**64).to_bytes(8, "little"))
    return int.from_bytes(h.digest(), "little") >> 1


class StreamBank:
    """Keyed streams' models in one bank (the module docstring tells a stream's life).

    Parameters
    ----------
    policy
        How every stream learns (the per-event step forgets by ``policy.forgetting(1)`` and
        cools by ``policy.temperature_factor(1)``).
    warmup
        Events a stream buffers before its model starts (at least ``n_clusters``).
    seed
        Base seed: each stream's seed is :func:`key_seed` of it and the key.
    max_streams
        Streams kept at most (least recently used evicted).
    drift
        Watch each stream with the CUSUM detector
        (:func:`~streamrbf.core._online_kernels.watch_distortion`).
    device
        Where :meth:`learn_rows` steps the started streams: None (the compiled CPU kernels) or
        a torch device (``"cuda"``): the stepped streams' rows of the bank and the batch go
        there in one transfer each, and the new rows come back (the bank stays on the host).

    Attributes
    ----------
    state : ModelState
        The bank (rows of free and warming streams hold provisional or no centres); no rows
        until :meth:`allocate` fixes the feature count ``d``.
    n_evicted, n_alarms, n_drifts : int
        Streams evicted, drift alarms, restarts after an alarm.

    Examples
    --------
    >>> bank = StreamBank(Policy(n_clusters=2), warmup=4, seed=0, max_streams=10)
    >>> bank.allocate(1)   # one feature
    >>> X = np.array([[0.0], [10.0], [0.2], [10.2], [0.1], [9.9]])
    >>> rows = bank.rows_for(["a"] * 6)
    >>> bank.learn_rows(X, rows).tolist()   # provisional labels, then the started model's
    [0, 1, 0, 1, 0, 1]
    >>> bank.n_streams, bank.is_started(bank.row_of("a"))
    (1, True)
    """

    def __init__(self, policy: Policy, warmup: int, seed: int, *, max_streams: int,
                 drift: bool = True, device: str | None = None) -> None:
        self.device = device
        self.policy = policy
        self.warmup = int(warmup)
        self.seed = int(seed)
        self.max_streams = int(max_streams)
        self.drift = bool(drift)
        self.k = int(policy.n_clusters)
        if self.warmup < self.k:
            raise ValueError(f"warmup must be at least n_clusters={self.k}, got {warmup}")
        self.params = np.array([policy.forgetting(1), policy.temperature_factor(1),
                                float(_kernels.check_mapping(policy.mapping)),
                                float(self.warmup), float(policy.reassignment_ratio)])
        self.d: int | None = None  # features per event, fixed by `allocate`
        self.state = ModelState(np.zeros((0, self.k, 0), np.float32), np.zeros((0, self.k)),
                                np.ones(0), np.ones(0), np.zeros(0), np.zeros(0, np.int64),
                                np.zeros(0, np.int64), np.zeros(0, np.uint64))
        # per stream: see `allocate`
        self.aux = np.zeros((0, 1), np.float32)
        self.rs = np.zeros(0, np.uint64)
        self.det = np.zeros((0, 3 if self.drift else 0))
        self.phase = np.zeros(0, np.int8)
        self.count = np.zeros(0, np.int32)
        self.n_warm = np.zeros(0, np.int32)
        self.last_used = np.zeros(0)
        self.slots: collections.OrderedDict = collections.OrderedDict()  # key -> row
        self.keys: list = []  # row -> key (None: free)
        self.free: list[int] = []
        self.warm: dict[int, np.ndarray] = {}  # row -> warm-up events (weight last)
        self.rewarm: dict[int, list] = {}  # row -> events buffered after a drift alarm
        self.event_args: tuple = ()  # the per-event step's operands
        self.on_release: Any = None  # called with a row its stream leaves (a face's cleanup)
        self.n_evicted = self.n_alarms = self.n_drifts = 0

    # -- the bank's rows ----------------------------------------------------------------------

    @property
    def n_streams(self) -> int:
        """Streams kept."""
        return len(self.slots)

    @property
    def n_features(self) -> int | None:
        """Features of every stream (None before :meth:`allocate`)."""
        return self.d

    def allocate(self, d: int, capacity: int = 16) -> None:
        """Fix the streams' feature count ``d`` (first call) and make room for ``capacity``
        streams.

        Parameters
        ----------
        d
            Features per event.
        capacity
            Rows wanted (never beyond ``max_streams``, never fewer than there are).
        """
        if self.d is not None and d != self.d:
            raise ValueError(f"the bank's streams have {self.d} features, not {d}")
        k = self.k
        st = self.state
        old = st.centers.shape[0]
        self.d = int(d)
        capacity = max(old, min(int(capacity), self.max_streams))
        grown = ModelState(
            np.zeros((capacity, k, d), np.float32), np.zeros((capacity, k)),
            np.ones(capacity), np.ones(capacity), np.zeros(capacity),
            np.zeros(capacity, np.int64), np.zeros(capacity, np.int64),
            np.zeros(capacity, np.uint64))
        arrays: dict[str, np.ndarray] = {
            "aux": np.zeros((capacity, 1 + d), np.float32),  # re-seeding reservoir
            "rs": np.zeros(capacity, np.uint64),  # its splitmix64 state
            "det": np.zeros((capacity, 3 if self.drift else 0)),  # CUSUM memory
            "phase": np.zeros(capacity, np.int8),  # 0 free, WARMING, STARTED
            "count": np.zeros(capacity, np.int32),  # provisional centres (k once started)
            "n_warm": np.zeros(capacity, np.int32),
            "last_used": np.zeros(capacity),  # the caller's clock at the last event
        }
        if old:
            for f in _STATE_FIELDS:
                getattr(grown, f)[:old] = getattr(st, f)
            for name, a in arrays.items():
                a[:old] = getattr(self, name)
        self.state = grown
        for name, a in arrays.items():
            setattr(self, name, a)
        self.keys.extend([None] * (capacity - old))
        self.free.extend(range(capacity - 1, old - 1, -1))
        self.event_args = (grown.centers, grown.masses, grown.temperature, grown.min_temperature,
                           grown.n_steps, grown.n_seen, self.aux, self.rs, self.det, self.params)

    def row_of(self, key: Any) -> int | None:
        """The bank row of a stream; not a use.

        Parameters
        ----------
        key
            The stream's key.

        Returns
        -------
        int or None
            Its row, or None if the stream is not kept.
        """
        return self.slots.get(key)

    def is_started(self, row: int) -> bool:
        """Whether a stream has its model (its warm-up is over).

        Parameters
        ----------
        row
            The stream's row.

        Returns
        -------
        bool
            True once started.
        """
        return bool(self.phase[row] == STARTED)

    def new_stream(self, key: Any) -> int:
        """A row for a new stream (evicting the least recently used one beyond ``max_streams``,
        growing the bank when it is full).

        Parameters
        ----------
        key
            The stream's key (hashable; not kept yet).

        Returns
        -------
        int
            Its row.
        """
        if len(self.slots) >= self.max_streams:
            _, row = self.slots.popitem(last=False)
            self.release(row)
            self.n_evicted += 1
        if not self.free:
            cap = self.state.centers.shape[0]
            self.allocate(self.state.centers.shape[2], max(cap + 1, int(cap * GROWTH)))
        row = self.free.pop()
        st = self.state
        seed = key_seed(self.seed, key)
        st.seed[row] = seed
        self.rs[row] = np.uint64(seed) ^ np.uint64(0x5EED)
        self.phase[row] = WARMING
        self.count[row] = self.n_warm[row] = 0
        st.centers[row] = 0.0
        st.masses[row] = 0.0
        st.n_steps[row] = st.n_seen[row] = 0
        self.aux[row] = 0.0
        self.det[row] = 0.0
        self.warm[row] = np.empty((min(self.warmup, WARM_ROWS), st.centers.shape[2] + 1))
        self.slots[key] = row
        self.keys[row] = key
        return row

    def release(self, row: int) -> None:
        """Free the row of an evicted (or expired) stream: its buffers go.

        Parameters
        ----------
        row
            The row (no longer in ``slots``).
        """
        self.phase[row] = 0
        self.keys[row] = None
        self.warm.pop(row, None)
        self.rewarm.pop(row, None)
        self.free.append(row)
        if self.on_release is not None:
            self.on_release(row)

    def drop(self, key: Any) -> None:
        """Forget a stream (its TTL ran out, say).

        Parameters
        ----------
        key
            The stream's key (nothing happens if it is not kept).
        """
        row = self.slots.pop(key, None)
        if row is not None:
            self.release(row)

    def rows_for(self, keys: list, codes: np.ndarray | None = None) -> np.ndarray:
        """The rows of the streams ``keys`` (one entry per event, in order), creating the new
        ones: the kept ones count as used first, so no stream of ``keys`` is evicted for another
        of them (``keys`` must hold at most ``max_streams`` distinct keys).

        Parameters
        ----------
        keys
            Each event's key; or, with ``codes``, the distinct keys.
        codes
            Each event's index into ``keys`` (distinct keys, say from ``pandas.factorize``), or
            None.

        Returns
        -------
        numpy.ndarray
            Each event's row.

        Examples
        --------
        >>> bank = StreamBank(Policy(n_clusters=1), warmup=1, seed=0, max_streams=4)
        >>> bank.allocate(1)
        >>> bank.rows_for(["a", "b", "a"]).tolist()
        [0, 1, 0]
        >>> bank.rows_for(["b", "a"], np.array([1, 0, 1])).tolist()  # distinct keys and codes
        [0, 1, 0]
        """
        if self.d is None:
            raise RuntimeError("allocate the bank (its feature count) before adding streams")
        unique = list(dict.fromkeys(keys)) if codes is None else list(keys)
        if len(unique) > self.max_streams:
            raise ValueError(f"{len(unique)} streams in one batch, more than max_streams="
                             f"{self.max_streams}")
        slots = self.slots
        rows_of = np.full(len(unique), -1, np.int64)
        for u, key in enumerate(unique):
            row = slots.get(key)
            if row is not None:
                slots.move_to_end(key)
                rows_of[u] = row
        for u in np.flatnonzero(rows_of < 0).tolist():
            rows_of[u] = self.new_stream(unique[u])
        if codes is not None:
            return rows_of[codes]
        index = {key: u for u, key in enumerate(unique)}
        return rows_of[np.fromiter((index[key] for key in keys), np.int64, len(keys))]

    # -- learning -----------------------------------------------------------------------------

    def start(self, rows: np.ndarray) -> None:
        """Start the models of warming streams on their full warm-up buffers, in one call; the
        buffers are released.

        Parameters
        ----------
        rows
            The streams' rows.
        """
        st = self.state
        W = self.warmup
        buf = np.concatenate([self.warm.pop(int(r)) for r in rows])
        new, _ = initialise_bank(
            buf[:, :-1], np.arange(len(rows) + 1) * W, self.policy, st.seed[rows],
            sample_weight=buf[:, -1], reference=st.centers[rows].astype(np.float64),
            reference_count=self.count[rows])
        for f in _STATE_FIELDS[:-1]:
            getattr(st, f)[rows] = getattr(new, f)
        self.phase[rows] = STARTED
        self.count[rows] = self.k

    def warm_event(self, row: int, xv: np.ndarray, w: float) -> None:
        """A warming stream takes one event (provisional clustering, buffered); the stream
        starts once its buffer is full.

        Parameters
        ----------
        row
            The stream's row.
        xv
            The checked event ``(d,)``.
        w
            Its weight, > 0.
        """
        buf = self.warm[row] = _room(self.warm[row], self.n_warm[row] + 1, self.warmup)
        if _sk.warm_event(xv, w, row, self.state.centers, self.state.masses, self.count,
                          self.n_warm, buf) and len(buf) == self.warmup:
            self.start(np.array([row]))

    def predict_event(self, row: int, xv: np.ndarray) -> int:
        """The cluster of an event under its stream.

        Parameters
        ----------
        row
            The stream's row.
        xv
            The checked event ``(d,)``.

        Returns
        -------
        int
            The nearest centre, or during the warm-up the provisional label learning the event
            would give.
        """
        if self.phase[row] == WARMING:
            st = self.state
            return _sk.provisional_event(xv, 1.0, st.centers[row], st.masses[row],
                                         int(self.count[row]), False)[0]
        return _ok.nearest_in_model(xv, self.state.centers, row, self.k)[0]

    def learn_rows(self, M: np.ndarray, rows: np.ndarray,
                   memberships: bool = False) -> Any:
        """Every stream of a mixed batch at once, each on its rows in order: the rows of a
        warming stream fill its warm-up (clustered provisionally), streams that complete it
        start together, then every started stream takes one mini-batch step on its remaining
        rows (:func:`~streamrbf.core.bank.step_bank`, scored before the step). The CUSUM
        watches the stepped rows; alarms and restarts as in the module docstring.

        Parameters
        ----------
        M
            The rows ``(n, d)``, finite and checked.
        rows
            Each row's stream row in the bank (:meth:`rows_for`).
        memberships
            Also return each row's non-zero memberships.

        Returns
        -------
        numpy.ndarray or tuple
            Each row's cluster (as learning it assigned it: provisional during the warm-up, the
            model's nearest centre before the step after); with ``memberships``, also the
            squared distance to that centre, the temperature it was scored at (0 for a
            provisional cluster), and ``(values, clusters, counts)`` of the memberships
            (``(n, k)`` each, the first ``counts[i]`` of row ``i`` valid).
        """
        st = self.state
        n = len(rows)
        labels = np.zeros(n, np.int64)
        k = self.k
        if memberships:
            sq, temps = np.zeros(n), np.zeros(n)
            vals, idx, nnz = np.zeros((n, k)), np.zeros((n, k), np.int64), np.ones(n, np.int64)
        rank = _rank_within(rows)
        need = np.where(self.phase[rows] == WARMING, self.warmup - self.n_warm[rows], 0)
        warm = rank < need
        wi = np.flatnonzero(warm)
        if wi.size:
            _warm_rows(self, M, rows, wi, labels)
        rest = np.flatnonzero(~warm)
        if rest.size:
            X, r_rows = M[rest], rows[rest]
            if memberships:  # scored before the step
                temps[rest] = divisors = st.temperature[r_rows].astype(np.float64)
                v, j, c = np.zeros((rest.size, k)), np.zeros((rest.size, k), np.int64), \
                    np.zeros(rest.size, np.int64)
                _ok.memberships_rows_bank(X, r_rows, st.centers, divisors, int(self.params[2]),
                                          v, j, c)
                vals[rest], idx[rest], nnz[rest] = v, j, c
            r = _step(self, X, r_rows)
            labels[rest] = r.labels
            if memberships:
                sq[rest] = r.nearest
            self._after_batch(X, r_rows, r.nearest)
        if not memberships:
            return labels
        if wi.size:  # a provisional cluster, membership 1
            vals[wi, 0], idx[wi, 0] = 1.0, labels[wi]
            sq[wi] = _ok.distances_to_labels(M[wi], rows[wi], labels[wi], st.centers)
        return labels, sq, temps, (vals, idx, nnz)

    def _after_batch(self, X: np.ndarray, rows: np.ndarray, nearest: np.ndarray) -> None:
        if self.rewarm:  # streams waiting after an alarm: their rows are buffered
            for i in np.flatnonzero(np.isin(rows, list(self.rewarm))).tolist():
                if int(rows[i]) in self.rewarm:
                    self.after_alarm(int(rows[i]), X[i], 1.0, False)
        if self.drift:
            alarms = np.zeros(self.state.centers.shape[0], np.bool_)
            _ok.watch_rows_bank(self.det, rows, nearest, alarms)
            for row in np.flatnonzero(alarms).tolist():
                if row not in self.rewarm:
                    self.n_alarms += 1
                    self.rewarm[row] = []

    def after_alarm(self, row: int, xv: np.ndarray, w: float, alarm: bool) -> None:
        """After a drift alarm a stream buffers its next ``warmup`` events (``xv`` of weight
        ``w`` is one); then it restarts from fresh centres if those halve their K-Means cost
        (:func:`~streamrbf.core.engine.refit`).

        Parameters
        ----------
        row
            The stream's row.
        xv
            The event it just learnt.
        w
            Its weight.
        alarm
            Whether that event raised the alarm.
        """
        from . import engine

        pending = self.rewarm.get(row)
        if pending is None:
            if alarm:
                self.n_alarms += 1
                self.rewarm[row] = []
            return
        pending.append(np.append(xv, w))
        if len(pending) < self.warmup:
            return
        del self.rewarm[row]
        events = np.stack(pending)
        new, replaced = engine.refit(self.one(row), events[:, :-1], self.policy,
                                     DRIFT_RESTART_GAIN, sample_weight=events[:, -1])
        if replaced:
            self.n_drifts += 1
            st = self.state
            for f in ("centers", "masses", "temperature", "initial_temperature",
                      "min_temperature"):
                getattr(st, f)[row] = getattr(new, f)[0]
            self.det[row] = 0.0
            self.aux[row] = 0.0

    def one(self, row: int) -> ModelState:
        """A copy of one stream's model as a record of its own.

        Parameters
        ----------
        row
            The stream's row.

        Returns
        -------
        ModelState
            A bank of one (float32 centres).
        """
        st = self.state
        return ModelState.single(
            st.centers[row].copy(), st.masses[row].copy(),
            temperature=float(st.temperature[row]),
            initial_temperature=float(st.initial_temperature[row]),
            min_temperature=float(st.min_temperature[row]), n_steps=int(st.n_steps[row]),
            n_seen=int(st.n_seen[row]), seed=int(st.seed[row]))

    # -- copies and bytes ---------------------------------------------------------------------

    def copy(self) -> StreamBank:
        """A deep copy (a retried bundle starts again from the committed bank).

        Returns
        -------
        StreamBank
            The copy; nothing is shared but the policy and the parameters.
        """
        new = StreamBank.__new__(StreamBank)
        new.__dict__.update(self.__dict__)
        new.slots = collections.OrderedDict(self.slots)
        new.keys, new.free = list(self.keys), list(self.free)
        new.warm = {r: a.copy() for r, a in self.warm.items()}
        new.rewarm = {r: list(v) for r, v in self.rewarm.items()}
        st = self.state
        new.state = ModelState(*(getattr(st, f).copy() for f in _STATE_FIELDS))
        for name in _ARRAYS:
            setattr(new, name, getattr(self, name).copy())
        s2 = new.state
        if self.d is not None:
            new.event_args = (s2.centers, s2.masses, s2.temperature, s2.min_temperature,
                              s2.n_steps, s2.n_seen, new.aux, new.rs, new.det, new.params)
        return new


def to_bytes(bank: StreamBank) -> bytes:
    """A bank as bytes: a JSON header (counters, keys in LRU order, array dtypes and shapes,
    which streams are warming up) and the raw arrays of the streams kept, in that order, then
    the events held by the streams still warming (raw float64, one stream after the other).
    No pickle.

    Parameters
    ----------
    bank
        The bank (keys must be JSON values: str, int, float, bool, or lists of them).

    Returns
    -------
    bytes
        The encoding; :func:`from_bytes` reads it back.

    Examples
    --------
    >>> bank = StreamBank(Policy(n_clusters=2), warmup=2, seed=0, max_streams=4)
    >>> bank.allocate(1)
    >>> _ = bank.learn_rows(np.array([[0.0], [4.0], [0.5]]), bank.rows_for(["a", "a", "b"]))
    >>> back = from_bytes(to_bytes(bank), Policy(n_clusters=2), 2, 0, max_streams=4)
    >>> list(back.slots), to_bytes(back) == to_bytes(bank)
    (['a', 'b'], True)
    """
    used = np.fromiter(bank.slots.values(), np.int64, len(bank.slots))
    arrays: list[np.ndarray] = []
    if bank.d is not None:
        arrays = [np.ascontiguousarray(getattr(bank.state, f)[used]) for f in _STATE_FIELDS]
        arrays += [np.ascontiguousarray(getattr(bank, name)[used]) for name in _ARRAYS]
    warming = [i for i, r in enumerate(used.tolist()) if int(r) in bank.warm]
    if warming:  # the events the streams still warming hold, raw
        arrays.append(np.concatenate([bank.warm[r][:bank.n_warm[r]]
                                      for r in used[warming].tolist()]))
    rewarm = {str(i): np.asarray(bank.rewarm[int(r)]).tolist()
              for i, r in enumerate(used.tolist()) if int(r) in bank.rewarm}
    head = json.dumps({
        "keys": list(bank.slots), "d": bank.n_features,
        "counters": [bank.n_evicted, bank.n_alarms, bank.n_drifts],
        "arrays": [[a.dtype.str, list(a.shape)] for a in arrays],
        "warming": warming, "rewarm": rewarm,
    }, separators=(",", ":")).encode()
    return len(head).to_bytes(8, "little") + head + b"".join(a.tobytes() for a in arrays)


def from_bytes(data: bytes, policy: Policy, warmup: int, seed: int, *,
               max_streams: int, drift: bool = True) -> StreamBank:
    """Read a bank written by :func:`to_bytes` (with the parameters it was made with).

    Parameters
    ----------
    data
        The encoding.
    policy, warmup, seed, max_streams, drift
        As for :class:`StreamBank`.

    Returns
    -------
    StreamBank
        The bank, its rows compacted in LRU order.

    Examples
    --------
    >>> empty = StreamBank(Policy(n_clusters=2), warmup=2, seed=0, max_streams=4)
    >>> from_bytes(to_bytes(empty), Policy(n_clusters=2), 2, 0, max_streams=4).n_streams
    0
    """
    n = int.from_bytes(data[:8], "little")
    head = json.loads(data[8:8 + n])
    bank = StreamBank(policy, warmup, seed, max_streams=max_streams, drift=drift)
    bank.n_evicted, bank.n_alarms, bank.n_drifts = head["counters"]
    keys = [tuple(k) if isinstance(k, list) else k for k in head["keys"]]
    if head["d"] is None:
        return bank
    bank.allocate(int(head["d"]), max(len(keys), 1))
    at = 8 + n
    out = []
    for dtype, shape in head["arrays"]:
        a = np.frombuffer(data, np.dtype(dtype), int(np.prod(shape)), at).reshape(shape)
        at += a.nbytes
        out.append(a)
    m = len(keys)
    for f, a in zip(_STATE_FIELDS + _ARRAYS, out, strict=False):
        target = getattr(bank.state, f) if f in _STATE_FIELDS else getattr(bank, f)
        target[:m] = a
    for i, key in enumerate(keys):
        bank.slots[key] = i
        bank.keys[i] = key
    bank.free = [r for r in bank.free if r >= m]
    if head["warming"]:  # each warming stream's events (its buffer grows as they come)
        counts = bank.n_warm[head["warming"]]
        if out[-1].ndim != 2 or len(out[-1]) != counts.sum():
            raise ValueError(f"warm-up events {out[-1].shape} do not match the warming streams' "
                             f"counts ({int(counts.sum())} events)")
        held = np.split(out[-1], np.cumsum(counts)[:-1])
        for i, buf in zip(head["warming"], held, strict=True):
            bank.warm[int(i)] = buf.copy()
    for i, rows in head["rewarm"].items():
        bank.rewarm[int(i)] = [np.array(r) for r in rows]
    return bank


def _warm_rows(self: StreamBank, M, rows, wi, labels) -> None:
    """:meth:`StreamBank.learn_rows` for the rows ``wi`` that warm their streams up."""
    st = self.state
    wl = np.empty(wi.size, np.int64)
    _sk.provisional_rows(M[wi], np.ones(wi.size), rows[wi], st.centers, st.masses, self.count,
                         wl)
    labels[wi] = wl
    by = np.argsort(rows[wi], kind="stable")  # each stream's rows, in arrival order
    owners = rows[wi][by]
    cuts = np.r_[0, np.flatnonzero(np.diff(owners)) + 1, by.size]
    streams = owners[cuts[:-1]]  # (each stream with rows here, once: no sweep of the bank)
    # a stream's rows go to consecutive places of its buffer, from its count so far
    Mw = np.ones((wi.size, M.shape[1] + 1))  # the rows with their weight (1) last
    Mw[:, :-1] = M[wi[by]]
    warm, W = self.warm, self.warmup
    for row, a, b, p in zip(streams.tolist(), cuts[:-1].tolist(), cuts[1:].tolist(),
                            self.n_warm[streams].tolist(), strict=True):
        buf = warm[row]
        if p + b - a > len(buf):  # (_room's test, here to spare a call per stream and frame)
            buf = warm[row] = _room(buf, p + b - a, W)
        buf[p:p + b - a] = Mw[a:b]
    self.n_warm[streams] += np.diff(cuts).astype(np.int32)
    full = streams[self.n_warm[streams] >= self.warmup]
    if full.size:
        self.start(full)


def _room(buf: np.ndarray, need: int, warmup: int) -> np.ndarray:
    """The warm-up buffer ``buf`` if it has room for ``need`` events, else a copy with room for
    at least twice as many as it has (:data:`WARM_ROWS` at least, ``warmup`` at most)."""
    if need <= len(buf):
        return buf
    new = np.empty((min(warmup, max(need, 2 * len(buf), WARM_ROWS)), buf.shape[1]))
    new[:len(buf)] = buf
    return new


def _step(self: StreamBank, X: np.ndarray, rows: np.ndarray) -> Any:
    """One step of every stream with rows in ``X``, on the host or on the bank's ``device``."""
    st = self.state
    if self.device is None:
        return step_bank(st, X, rows, self.policy, in_place=True)[1]
    import torch

    dev = torch.device(self.device)
    stepped, local = np.unique(rows, return_inverse=True)
    sub = ModelState(torch.as_tensor(st.centers[stepped], device=dev),
                     torch.as_tensor(st.masses[stepped], device=dev),
                     *(getattr(st, f)[stepped] for f in _STATE_FIELDS[2:]))
    new, r = step_bank(sub, X, local.astype(np.int64), self.policy)
    st.centers[stepped] = new.centers.cpu().numpy()
    st.masses[stepped] = new.masses.cpu().numpy()
    for f in ("temperature", "n_steps", "n_seen"):
        getattr(st, f)[stepped] = getattr(new, f)
    return r


def _rank_within(rows: np.ndarray) -> np.ndarray:
    """Each entry's rank among the equal entries of ``rows`` before it."""
    order = np.argsort(rows, kind="stable")
    s = rows[order]
    first = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    rank = np.empty(len(rows), np.int64)
    rank[order] = np.arange(len(rows)) - np.repeat(first, np.diff(np.r_[first, len(rows)]))
    return rank

