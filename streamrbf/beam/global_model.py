"""ClusterGlobally: one model trained data-parallel from summed sufficient statistics.

Each step broadcasts the model as a side input, every worker computes the sufficient statistics of
its shards against it, a plain CombineFn adds them, and the core takes the step. Since statistics
are sums, the result is the step the core :class:`~streamrbf.kmeans.RBFKMeans` takes on all the
data at once (to float rounding).
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.transforms import window
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from ..core import engine
from ..core.persistence import load_state, save_state
from ..core.policy import Policy, translate_deprecated
from ..core.state import ModelState, host_array
from .dead_letters import DeadLetter, ValidateEvents
from .state import ModelStateCoder

__all__ = ["ClusterGlobally", "GlobalResult", "latest_checkpoint"]

# ASCII digits only, and the whole name (fullmatch): ``\d`` would take Arabic-Indic or
# full-width digits and ``$`` a trailing newline; the temp files of an atomic write
# (``.step-....safetensors.<hex>.tmp``) are no checkpoints.
_CKPT = re.compile(r"step-([0-9]{10})\.safetensors", re.ASCII)
_START_OVER = "to start over, give a new or empty checkpoint_dir"


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint with the most steps in ``directory`` (None when there is none).

    Checkpoints are the files ``step-<10 digits>.safetensors`` that :class:`ClusterGlobally`
    writes (ASCII digits, the whole name); other files are ignored (the temp files of a write in
    progress among them), and a missing directory has none.

    Parameters
    ----------
    directory
        The checkpoint directory.

    Returns
    -------
    pathlib.Path or None
        The newest checkpoint.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> latest_checkpoint(d) is None
    True
    >>> for name in ["step-0000000002.safetensors", "step-0000000010.safetensors", "notes.txt"]:
    ...     (d / name).touch()
    >>> latest_checkpoint(d).name
    'step-0000000010.safetensors'
    >>> (d / ".step-0000000099.safetensors.0123456789abcdef.tmp").touch()  # a write under way
    >>> (d / ("step-" + "\\uff19" * 10 + ".safetensors")).touch()  # full-width digits
    >>> latest_checkpoint(d).name
    'step-0000000010.safetensors'
    """
    d = Path(directory)
    if not d.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in d.iterdir()
             if (m := _CKPT.fullmatch(p.name)) and p.is_file()]
    return max(found)[1] if found else None


def _write_checkpoint(model: ModelState, policy: Policy, directory: str) -> None:
    """Write ``model`` as ``step-<n_steps>.safetensors``: the core's model file (safetensors +
    JSON, no pickle; written atomically, temp name then rename), which ``RBFKMeans.load`` and
    ``RBFModelHandler`` read. A retried bundle rewrites the same file with the same content."""
    save_state(Path(directory) / f"step-{int(model.n_steps[0]):010d}.safetensors", "RBFKMeans",
               model, policy.to_params())


def _load_checkpoint(path: Path, policy: Policy | None = None,
                     n_features: int | None = None) -> ModelState:
    """The model of a checkpoint (with the events it had learnt from: 0 when unknown).

    A ``ValueError`` naming the file, and saying how to start over, when a file named
    ``step-<n>.safetensors`` holds a model after another number of steps, or (given ``policy``)
    when the model does not fit the transform (:func:`_check_fits`).

    Parameters
    ----------
    path
        The checkpoint.
    policy
        The transform's policy, or None to take any model.
    n_features
        The transform's dimension, or None to take any.

    Returns
    -------
    ModelState
        The model.
    """
    model, params, extra = load_state(path, "RBFKMeans")
    where = repr(str(path))
    m = _CKPT.fullmatch(Path(path).name)
    named, n = (-1 if m is None else int(m.group(1))), int(model.n_steps[0])
    if m is not None and named != n:
        stuck = (" (this one would be resumed on every run, and the checkpoints written after it "
                 "never)" if named > n else "")
        raise ValueError(
            f"{where} is named for step {named} but holds a model after {n} steps "
            f"(n_steps={n}): checkpoints are found by their names, so a name must state the "
            f"step count{stuck}. Rename it step-{n:010d}.safetensors or remove it; "
            f"{_START_OVER}.")
    if policy is not None:
        _check_fits(model, params, policy, n_features, where)
    beam_extra = extra.get("beam")  # version-1 checkpoints kept n_seen there
    if isinstance(beam_extra, dict) and not model.n_seen[0]:
        n_seen = beam_extra.get("n_seen", 0)
        if type(n_seen) is not int or not 0 <= n_seen < 2**63:
            raise ValueError(f"{str(path)!r} is not a valid checkpoint: n_seen must be an int "
                             f">= 0, got {n_seen!r}")
        model.n_seen[0] = n_seen
    return model


def _check_fits(model: ModelState, params: dict[str, Any], policy: Policy,
                n_features: int | None, where: str) -> None:
    """Raise a ``ValueError`` naming the checkpoint ``where`` and everything in which its model
    differs from what the transform trains: one model of ``policy.n_clusters`` centres in
    ``n_features`` dimensions, learning with ``policy.mapping`` (a file without a mapping was
    written with the default). The transform fixes no dtype: float32 or float64 centres resume
    as they are."""
    got = {"n_models": model.n_models, "n_clusters": model.n_clusters,
           "n_features": model.n_features,
           "mapping": params.get("mapping", Policy.mapping)}
    wanted = {"n_models": 1, "n_clusters": policy.n_clusters, "n_features": n_features,
              "mapping": policy.mapping}
    differ = [f"{name}={got[name]!r} (this transform: {value!r})"
              for name, value in wanted.items() if value is not None and got[name] != value]
    if differ:
        raise ValueError(
            f"the checkpoint {where} does not match this ClusterGlobally and cannot be resumed: "
            f"it has {', '.join(differ)}. A checkpoint is resumed only by a transform with its "
            f"n_clusters, n_features and mapping: {_START_OVER}; to resume it, give the "
            "transform the checkpoint's parameters.")


def _resume(checkpoint_dir: str, policy: Policy, n_features: int | None) -> ModelState | None:
    """The newest checkpoint in ``checkpoint_dir``, checked against the transform (None when
    there is none)."""
    ckpt = latest_checkpoint(checkpoint_dir)
    return None if ckpt is None else _load_checkpoint(ckpt, policy, n_features)


class GlobalResult(NamedTuple):
    """The outputs of :class:`ClusterGlobally`, four PCollections.

    On unbounded input ``model`` and ``history`` are both the stream of updated models and
    ``assignments`` is empty.

    Attributes
    ----------
    model : apache_beam.PCollection
        The final model, one :class:`~streamrbf.beam.ModelState`.
    history : apache_beam.PCollection
        The model after initialisation and after every step.
    dead_letters : apache_beam.PCollection
        A :class:`~streamrbf.beam.DeadLetter` for every invalid event, and for every valid one
        when no model could be initialised (fewer valid events than ``n_clusters`` for a
        k-means++ start, no checkpoint): then ``model`` and ``history`` are empty.
    assignments : apache_beam.PCollection
        An :class:`~streamrbf.core.assignment.Assignment` of every valid event under the final model
        (empty unless ``assign=True``).

    Examples
    --------
    >>> import apache_beam as beam
    >>> from apache_beam.pvalue import AsSingleton
    >>> count = beam.combiners.Count.Globally
    >>> with beam.Pipeline(runner="FnApiRunner") as p:
    ...     out = p | beam.Create([[0.0], [0.2], [5.0], [5.2], ["x"]]) | ClusterGlobally(
    ...         2, steps=2, n_features=1, assign=True)
    ...     n_dead = AsSingleton(out.dead_letters | "Dead" >> count())
    ...     n_assigned = AsSingleton(out.assignments | "Assigned" >> count())
    ...     _ = (out.history | "Models" >> count()  # the initial model and one per step
    ...          | beam.Map(lambda n, a, d: print(n, a, d), n_assigned, n_dead))
    3 4 1
    """

    model: beam.PCollection
    history: beam.PCollection
    dead_letters: beam.PCollection
    assignments: beam.PCollection


class _SeededSample(beam.CombineFn):
    """A sample of about ``size`` events that depends on ``seed`` and the events alone, never on
    their order, sharding or runner (Beam's SampleCombineFn draws from Python's unseeded
    ``random``), so the initial model follows from ``random_state``.

    The distinct event values with the ``size`` smallest seeded 64-bit hashes are kept (a bottom-k
    sample), each with its exact count: a value kept in the end has one of the smallest hashes in
    every shard it occurs in, so its counts add up exactly. The output repeats each kept value in
    proportion to its count (at least once), so repeated events weigh as often as they occur
    instead of the sample collapsing onto one of them.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.key = int(seed).to_bytes(8, "little", signed=True)

    def create_accumulator(self) -> dict[bytes, list[int]]:
        return {}  # row bytes -> [hash, count], the `size` smallest hashes

    def _hash(self, data: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=self.key).digest(),
                              "little")

    def add_input(self, acc: dict[bytes, list[int]], row: Any) -> dict[bytes, list[int]]:
        data = np.ascontiguousarray(row, dtype=np.float64).tobytes()
        entry = acc.get(data)
        if entry is not None:
            entry[1] += 1
            return acc
        acc[data] = [self._hash(data), 1]
        if len(acc) > 2 * self.size:  # trim now and then: amortised O(1) per event
            self._trim(acc)
        return acc

    def _trim(self, acc: dict[bytes, list[int]]) -> None:
        if len(acc) > self.size:
            keep = heapq.nsmallest(self.size, acc.items(), key=lambda kv: (kv[1][0], kv[0]))
            acc.clear()
            acc.update(keep)

    def merge_accumulators(self, accs: Iterable[dict[bytes, list[int]]]
                           ) -> dict[bytes, list[int]]:
        merged: dict[bytes, list[int]] = {}
        for acc in accs:
            for data, (h, count) in acc.items():
                entry = merged.get(data)
                if entry is None:
                    merged[data] = [h, count]
                else:
                    entry[1] += count
            if len(merged) > 2 * self.size:
                self._trim(merged)
        return merged

    def extract_output(self, acc: dict[bytes, list[int]]) -> list[np.ndarray]:
        self._trim(acc)
        kept = sorted(acc.items(), key=lambda kv: (kv[1][0], kv[0]))
        total = sum(count for _, (_, count) in kept)
        scale = min(1.0, self.size / total) if total else 1.0  # all of it, when it fits
        copies = [max(1, round(count * scale)) for _, (_, count) in kept]
        # Rounding down can leave fewer rows than min(total, size) (counts 14, 14, 12 scaled to
        # 4 give 1, 1, 1): one more copy of the values rounded down the most, so that a sample of
        # at least n_clusters events is never too small for k-means++.
        short = min(total, self.size) - sum(copies)
        if short > 0:
            lost = sorted(range(len(kept)), key=lambda i: copies[i] - kept[i][1][1] * scale)
            for i in lost[:short]:
                copies[i] += 1
        rows = []
        for (data, _), n in zip(kept, copies):
            rows += [np.frombuffer(data, np.float64)] * n
        return rows


def _rows(batch: Any, weighted: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A batch of events as ``(X, weights)``: a weighted event's last value is its weight."""
    rows = np.asarray(batch, dtype=np.float64)
    if not weighted:
        return rows, None
    return rows[:, :-1], rows[:, -1]


class _InitialModel(beam.DoFn):
    def __init__(self, policy: Policy, checkpoint_dir: str | None, seed: int,
                 weighted: bool = False, n_features: int | None = None) -> None:
        self.policy = policy
        self.checkpoint_dir = checkpoint_dir
        self.seed = seed
        self.weighted = weighted
        self.n_features = n_features

    def process(self, sample: list[Any]) -> Iterable[ModelState]:
        if self.checkpoint_dir:
            # Checked again here: a checkpoint may have come since the graph was built.
            resumed = _resume(self.checkpoint_dir, self.policy, self.n_features)
            if resumed is not None:
                yield resumed
                return
        X, w = _rows(sample, self.weighted)
        # (events of weight 0 count as events, but cannot seed a centre)
        if (len(X) if w is None else np.count_nonzero(w)) < self.policy.min_events():
            # k-means++ needs n_clusters events: no model (the events become dead letters).
            return
        model = engine.initialise(X, self.policy, self.seed, sample_weight=w).state
        if self.checkpoint_dir:
            _write_checkpoint(model, self.policy, self.checkpoint_dir)
        yield model


class _NoModelDeadLetters(beam.DoFn):
    """Every valid event as a dead letter when no model was initialised (none otherwise)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def process(self, row: Any, models: list[Any]) -> Iterable[DeadLetter]:
        if not any(isinstance(m, ModelState) for m in models):
            yield DeadLetter.of(None, list(row), self.reason, "model")


class _PartialStatistics(beam.DoFn):
    """Sufficient statistics of one shard against the broadcast model (on the worker's
    ``device`` when one is named: the model and the shard go there in one transfer each, the
    statistics come back as host arrays)."""

    def __init__(self, policy: Policy, weighted: bool = False, device: str | None = None) -> None:
        self.policy = policy
        self.weighted = weighted
        self.device = device

    def process(self, batch: Any, model: ModelState | None) -> Iterable[Any]:
        if not isinstance(model, ModelState):  # no model (Beam's EmptySideInput)
            return
        X, w = _rows(batch, self.weighted)
        if w is not None and not w.any():  # a shard of weight 0: its events, no mass
            stats = engine.statistics(model, X[:0], self.policy)
            yield type(stats)(stats.mass, stats.sums, stats.loss, len(X))
            return
        if self.device is None:
            yield engine.statistics(model, X, self.policy, sample_weight=w)
            return
        import torch

        dev = torch.device(self.device)
        on = dataclasses.replace(model, centers=torch.as_tensor(model.centers, device=dev),
                                 masses=torch.as_tensor(model.masses, device=dev))
        stats = engine.statistics(on, torch.as_tensor(X, device=dev), self.policy,
                                  sample_weight=w)
        yield type(stats)(host_array(stats.mass), host_array(stats.sums), float(stats.loss),
                          int(stats.n))


class _SumStatistics(beam.CombineFn):
    """Adds sufficient statistics with the core's ``+`` (no side input: see BEAM.md)."""

    def create_accumulator(self) -> Any:
        return None

    def add_input(self, acc: Any, stats: Any) -> Any:
        return stats if acc is None else acc + stats

    def merge_accumulators(self, accs: Iterable[Any]) -> Any:
        total = None
        for a in accs:
            if a is not None:
                total = a if total is None else total + a
        return total

    def extract_output(self, acc: Any) -> Any:
        return acc


class _ApplyStep(beam.DoFn):
    def __init__(self, policy: Policy, checkpoint_dir: str | None) -> None:
        self.policy = policy
        self.checkpoint_dir = checkpoint_dir

    def process(self, stats: Any, model: ModelState) -> Iterable[ModelState]:
        if not isinstance(model, ModelState):  # no model (Beam's EmptySideInput): none out
            return
        if stats is None or stats.n == 0:
            yield model
            return
        model = engine.apply_statistics(model, stats, self.policy)
        if self.checkpoint_dir:
            _write_checkpoint(model, self.policy, self.checkpoint_dir)
        yield model


class _LoadLatest(beam.DoFn):
    """The slowly-updating side input: on each impulse, the newest checkpoint (checked against
    the transform)."""

    def __init__(self, checkpoint_dir: str, policy: Policy | None = None,
                 n_features: int | None = None) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.policy = policy
        self.n_features = n_features

    def process(self, _: Any) -> Iterable[ModelState]:
        ckpt = latest_checkpoint(self.checkpoint_dir)
        if ckpt is not None:
            yield _load_checkpoint(ckpt, self.policy, self.n_features)


class _UpdateModel(beam.DoFn):
    """Streaming: the one canonical model, in state under a single key (global window). Each
    window's summed statistics are one step; every step is checkpointed."""

    MODEL = ReadModifyWriteStateSpec("model", ModelStateCoder())

    def __init__(self, policy: Policy, checkpoint_dir: str,
                 n_features: int | None = None) -> None:
        self.policy = policy
        self.checkpoint_dir = checkpoint_dir
        self.n_features = n_features

    def process(self, keyed: tuple[str, Any],
                model=beam.DoFn.StateParam(MODEL)) -> Iterable[ModelState]:
        stats = keyed[1]
        if stats is None or stats.n == 0:
            return
        state = model.read()
        if state is None:
            state = _resume(self.checkpoint_dir, self.policy, self.n_features)
            if state is None:
                raise ValueError(f"no checkpoint in {self.checkpoint_dir!r} to resume from")
        state = engine.apply_statistics(state, stats, self.policy)
        _write_checkpoint(state, self.policy, self.checkpoint_dir)
        model.write(state)
        yield state


def _initial_checkpoint(policy: Policy, checkpoint_dir: str) -> None:
    """A first checkpoint from an ``init`` array when a stream starts with none."""
    if latest_checkpoint(checkpoint_dir) is not None:
        return
    if isinstance(policy.init, str):
        raise ValueError("streaming ClusterGlobally needs an init array or a checkpoint in "
                         "checkpoint_dir to start from")
    C = np.asarray(policy.init, dtype=np.float64)
    # No data yet: the policy's starting temperature with the init centres themselves as the
    # sample (each centre's squared distance to its nearest other centre), so the start is hot
    # on the scale of the clusters, whatever the units of the features.
    D = ((C[:, None, :] - C[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    t0 = policy.start_temperature(D, given=True)
    model = ModelState.single(C, np.zeros(len(C)), temperature=t0,
                              min_temperature=policy.floor_temperature(t0))
    _write_checkpoint(model, policy, checkpoint_dir)


class _Assign(beam.DoFn):
    def __init__(self, policy: Policy, weighted: bool = False) -> None:
        self.policy = policy
        self.weighted = weighted

    def process(self, batch: Any, model: ModelState | None) -> Iterable[Any]:
        if not isinstance(model, ModelState):  # no model: the events are dead letters
            return
        yield from engine.assignments(model, _rows(batch, self.weighted)[0],
                                      self.policy).to_list()


class ClusterGlobally(beam.PTransform):
    """Train one RBF K-Means model on a bounded PCollection, data-parallel across workers.

    The model is initialised (core ``partial_fit``: k-means++ and annealing) on a sample of up to
    ``init_sample`` events, or resumed from the latest checkpoint in ``checkpoint_dir``. Then
    ``steps`` steps are unrolled in the graph; each one broadcasts the model as a side input,
    computes the sufficient statistics of each of ``n_shards`` shards of the events, adds them with
    a plain ``CombineFn`` and takes the core step (``apply_statistics``): step ``t`` equals the core
    ``partial_fit`` on all the data (with ``reassignment_ratio=0``, as re-seeding needs points).
    With ``checkpoint_dir`` every model is written there (``step-<n>.safetensors``, the core's safe
    format, with ``n_seen`` in its JSON metadata): a new run with the same directory continues
    from the last one, ``n_seen`` included (0 from a checkpoint without it). Bad events go to
    ``dead_letters``; the dimension is fixed by ``n_features``, ``feature_names`` or ``init``.
    With no checkpoint and fewer valid events than ``n_clusters`` (a k-means++ start needs that
    many) there is no model: ``model`` and ``history`` are empty and every valid event is a dead
    letter too (stage ``"model"``).

    Unbounded input (streaming) trains continuously instead: events are windowed into
    ``window_secs`` fixed windows, each window's statistics (against the model side input) are
    summed and applied as one step by a single-key stateful DoFn in the global window, which
    checkpoints every step to ``checkpoint_dir`` (required; it must hold a checkpoint or ``init``
    must be an array). The side input is the slowly-updating pattern: a ``PeriodicImpulse``
    every ``refresh_secs`` loads the newest checkpoint (``impulses`` replaces it with any windowed
    PTransform of ticks, e.g. for runners without splittable DoFns). ``model`` and ``history``
    are then the stream of updated models. A stream that starts from an ``init`` array with
    ``initial_temperature="auto"`` has no data to scale the temperature by: it starts at the
    policy's rule for given centres applied to the init centres themselves (half the mean squared
    distance from each centre to its nearest other one).

    Parameters
    ----------
    n_clusters
        Number of centres.
    steps
        Data-parallel steps unrolled in the graph (bounded input).
    n_shards
        Shards the events are split into; each one's statistics are computed on one worker.
    init_sample
        Events sampled to initialise the model: a bottom-k sample by a hash seeded from
        ``random_state``, so the same seed and events give the same model on any runner.
    checkpoint_dir
        Where every model is written, and resumed from (required for unbounded input). The
        newest checkpoint is resumed only if it is one model with ``n_clusters`` centres in
        ``n_features`` dimensions, learnt with the same ``mapping`` (float32 or float64 centres
        alike), from a file whose name states its step count (``step-<n_steps>.safetensors``);
        otherwise a ``ValueError`` names the file and what differs, when the transform is
        applied (the graph is built) and again wherever a run loads a checkpoint. To start over,
        give a new or empty ``checkpoint_dir``.
    assign
        Whether to emit the assignment of every valid event under the final model.
    feature_names
        Feature names of dict events (fixes the dimension).
    n_features
        Dimension of the events; events of another one go to the dead letters.
    random_state
        Seed of every random choice.
    window_secs
        Streaming: length of the fixed windows, each one a step.
    refresh_secs
        Streaming: how often the model side input reloads the newest checkpoint.
    impulses
        Streaming: a PTransform of windowed ticks replacing the ``PeriodicImpulse``.
    weight_field
        Dict events only: the field that holds each event's weight, a finite number >= 0 (an
        event of weight 2 counts as the event twice in the masses, the sums, the distortion
        and the initialisation's seedings; a missing or bad weight makes a dead letter). The
        other fields are the features. A valid event's row is its features then its weight,
        also in the ``"model"`` stage's dead letters.
    device
        Where each shard's statistics are computed: None (numpy, compiled kernels) or a torch
        device on the worker (``"cuda"``): the model and the shard go there, the statistics
        come back to the host (summed as ever).
    **model_params
        How the model learns: any parameter of the learning policy
        (:class:`~streamrbf.core.policy.Policy`: ``mapping``, ``initial_temperature``, ``init``,
        ...); ``reassignment_ratio`` defaults to 0 (re-seeding needs the rows, and a step here
        only has their statistics).

    Examples
    --------
    >>> import apache_beam as beam
    >>> events = [[0.0, 0.1 * (i % 3)] for i in range(30)] + [[5.0, 5.0], [5.0, 5.1], [None, 1]]
    >>> with beam.Pipeline(runner="FnApiRunner") as p:
    ...     out = p | beam.Create(events) | ClusterGlobally(2, steps=3, n_features=2)
    ...     _ = out.model | beam.Map(
    ...         lambda m: print(m.n_seen[0], np.sort(m.centers[0][:, 0]).round()))
    ...     _ = out.dead_letters | beam.Map(lambda d: print(d.reason))
    feature #0 is not a real number: None (NoneType)
    128 [0. 5.]
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        steps: int = 10,
        n_shards: int = 64,
        init_sample: int = 10_000,
        checkpoint_dir: str | os.PathLike | None = None,
        assign: bool = False,
        feature_names: Sequence[str] | None = None,
        n_features: int | None = None,
        random_state: int = 0,
        window_secs: float = 60.0,
        refresh_secs: float = 60.0,
        impulses: beam.PTransform | None = None,
        weight_field: str | None = None,
        device: str | None = None,
        **model_params: Any,
    ) -> None:
        super().__init__()
        self.device = device
        if weight_field is not None and feature_names is not None and (
                weight_field in feature_names):
            raise ValueError(f"weight_field {weight_field!r} is one of the feature_names")
        self.weight_field = weight_field
        self.window_secs = float(window_secs)
        self.refresh_secs = float(refresh_secs)
        self.impulses = impulses
        params = {"n_clusters": n_clusters, "reassignment_ratio": 0.0, **model_params}
        self.policy = Policy.from_params(translate_deprecated(params, "ClusterGlobally"))
        self.steps = int(steps)
        self.n_shards = int(n_shards)
        self.init_sample = int(init_sample)
        self.checkpoint_dir = None if checkpoint_dir is None else str(checkpoint_dir)
        self.assign = assign
        init = params.get("init")
        if n_features is None and feature_names is not None:
            n_features = len(feature_names)
        if n_features is None and init is not None and not isinstance(init, str):
            n_features = int(np.asarray(init).shape[1])
        if n_features is None:
            raise ValueError("ClusterGlobally needs n_features, feature_names or an init array: "
                             "events of another dimension must go to the dead letters")
        if isinstance(init if init is not None else "k-means++", str) and (
                self.init_sample < n_clusters):
            raise ValueError(f"init_sample={self.init_sample} must be >= n_clusters={n_clusters}"
                             " for a k-means++ start")
        self.feature_names = feature_names
        self.n_features = int(n_features)
        self.random_state = int(random_state)

    def _shards(self, vectors: beam.PCollection) -> beam.PCollection:
        # Shards by a GroupByKey on a hash of the event, not BatchElements: the DaskRunner drops
        # what a DoFn emits in finish_bundle. Float hashes are the same in every process.
        n_shards = self.n_shards
        return (
            vectors
            | "ShardKey" >> beam.Map(lambda v: (hash(v) % n_shards, v))
            | "Shard" >> beam.GroupByKey()
            | "ShardArray" >> beam.Map(lambda kv: np.asarray(list(kv[1]), dtype=np.float64))
        )

    def _expand_unbounded(self, pcoll: beam.PCollection) -> GlobalResult:
        if not self.checkpoint_dir:
            raise ValueError("streaming ClusterGlobally needs a checkpoint_dir")
        _initial_checkpoint(self.policy, self.checkpoint_dir)
        impulses = self.impulses or PeriodicImpulse(
            Timestamp.now(), MAX_TIMESTAMP, self.refresh_secs, apply_windowing=True)
        side = (
            pcoll.pipeline
            | "Refresh" >> impulses
            | "LoadLatest" >> beam.ParDo(
                _LoadLatest(self.checkpoint_dir, self.policy, self.n_features))
        )
        windowed = pcoll | "Window" >> beam.WindowInto(window.FixedWindows(self.window_secs))
        vectors, bad = windowed | "ValidateEvents" >> ValidateEvents(
            self.feature_names, self.n_features, tagged=False, weight_field=self.weight_field)
        weighted = self.weight_field is not None
        models = (
            self._shards(vectors)
            | "Statistics" >> beam.ParDo(_PartialStatistics(self.policy, weighted, self.device),
                                         model=beam.pvalue.AsSingleton(side))
            | "Sum" >> beam.CombineGlobally(_SumStatistics()).without_defaults()
            | "OneKey" >> beam.Map(lambda st: ("model", st)).with_output_types(tuple[str, Any])
            | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
            | "Update" >> beam.ParDo(
                _UpdateModel(self.policy, self.checkpoint_dir, self.n_features))
        )
        none = vectors | "NoAssignments" >> beam.Filter(lambda _: False)
        return GlobalResult(models, models, bad, none)

    # Returns a GlobalResult, annotated Any: Beam reads expand's return annotation as an output type
    # hint and logs a warning on every run for anything but a PCollection.
    def expand(self, pcoll: beam.PCollection) -> Any:
        """Build the training graph on ``pcoll`` (Beam's ``PTransform`` entry point).

        Bounded input gets the initialisation and ``steps`` unrolled data-parallel steps;
        unbounded input gets the windowed, continuously checkpointed training (see the class).

        Parameters
        ----------
        pcoll
            The events: sequences of numbers, or dicts keyed by ``feature_names``.

        Returns
        -------
        GlobalResult
            The final model, the model history, the dead letters and the assignments.

        Raises
        ------
        ValueError
            When the newest checkpoint in ``checkpoint_dir`` cannot be resumed (see the class):
            before the pipeline runs.
        """
        if self.checkpoint_dir:
            # Fail fast: a checkpoint that cannot be resumed stops the graph being built.
            _resume(self.checkpoint_dir, self.policy, self.n_features)
        if not pcoll.is_bounded:
            return self._expand_unbounded(pcoll)
        seed = self.random_state
        weighted = self.weight_field is not None
        vectors, bad = pcoll | "ValidateEvents" >> ValidateEvents(
            self.feature_names, self.n_features, tagged=False, weight_field=self.weight_field)
        batches = self._shards(vectors)
        model = (
            vectors
            # without_defaults: the default-value injection runs twice on the DaskRunner.
            | "Sample" >> beam.CombineGlobally(
                _SeededSample(self.init_sample, seed)).without_defaults()
            | "Initialise" >> beam.ParDo(
                _InitialModel(self.policy, self.checkpoint_dir, seed, weighted,
                              self.n_features))
        )
        # No model (too few valid events for k-means++, no checkpoint): every valid event is a
        # dead letter, so that each event still leaves exactly once.
        k = self.policy.n_clusters
        no_model = vectors | "NoModel" >> beam.ParDo(
            _NoModelDeadLetters(f"fewer valid events than n_clusters={k}: no model could be "
                                "initialised"), models=beam.pvalue.AsList(model))
        bad = (bad, no_model) | "DeadLetters" >> beam.Flatten()
        history = [model]
        for t in range(self.steps):
            stats = (
                batches
                | f"Statistics{t}" >> beam.ParDo(
                    _PartialStatistics(self.policy, weighted, self.device),
                    model=beam.pvalue.AsSingleton(model))
                | f"Sum{t}" >> beam.CombineGlobally(_SumStatistics())
            )
            # The statistics are the main input and the model the side input: a PCollection
            # that is both (model -> Step, model -> Statistics) comes out twice on Dask.
            model = stats | f"Step{t}" >> beam.ParDo(
                _ApplyStep(self.policy, self.checkpoint_dir),
                model=beam.pvalue.AsSingleton(model))
            history.append(model)
        all_models = tuple(history) | "History" >> beam.Flatten()
        if self.assign:
            assignments = batches | "Assign" >> beam.ParDo(
                _Assign(self.policy, weighted),
                model=beam.pvalue.AsSingleton(model))
        else:
            assignments = vectors | "NoAssignments" >> beam.Filter(lambda _: False)
        return GlobalResult(model, all_models, bad, assignments)
