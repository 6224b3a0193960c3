"""ClusterGlobally (== the core fed the same batches, checkpoint restart) and RBFModelHandler,
on FnApiRunner and on DaskRunner with a 2-process dask.distributed LocalCluster."""

from __future__ import annotations

import json
import zlib

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, ModelMetadata, RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from sklearn.datasets import make_blobs

from streamrbf import RBFKMeans
from streamrbf.beam import ClusterGlobally, RBFModelHandler, ValidateEvents, latest_checkpoint
from streamrbf.core.policy import Policy

pytestmark = pytest.mark.timeout(180)

# (ClusterGlobally's steps make no split and merge moves on a sample of the stream: the core's
# partial_fit without them is the step they equal)
PARAMS = {"temperature_decay": 0.7, "mapping": "entmax15", "max_iter": 2, "half_life": 600,
          "split_merge": False}


@pytest.fixture(scope="module")
def data():
    X, _ = make_blobs(600, n_features=3, centers=4, cluster_std=1.5, random_state=7)
    return X, X[[0, 1, 2, 3]].copy()


def _core(X, C0, steps):
    core = RBFKMeans(4, init=C0, reassignment_ratio=0.0, random_state=0, **PARAMS).partial_fit(X)
    for _ in range(steps):
        core.partial_fit(X)
    return core


def _matches(core, **extra):
    C, counts, T = core.cluster_centers_, core.counts_, core.temperature_

    def check(models):
        assert len(models) == 1
        m = models[0]
        np.testing.assert_allclose(m.centers[0], C, rtol=0, atol=1e-5)
        np.testing.assert_allclose(m.masses[0], counts, rtol=1e-7)
        assert abs(m.temperature[0] - T) <= 1e-12 * T
        for k, v in extra.items():
            assert getattr(m, k)[0] == v, (k, getattr(m, k), v)

    return check


def test_equals_core_fed_the_same_batches(data):
    X, C0 = data
    core = _core(X, C0, 5)
    # The steps really move the centres (so the comparison is not vacuous).
    assert np.abs(core.cluster_centers_ - _core(X, C0, 1).cluster_centers_).max() > 1e-3
    events = X.tolist() + [[1.0, float("nan"), 2.0], [1.0, 2.0], "x"]
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(events) | ClusterGlobally(
            4, steps=5, n_shards=8, init=C0, assign=True, **PARAMS)
        assert_that(out.model, _matches(core, n_seen=600 * 6), label="Model")
        assert_that(out.dead_letters | beam.Map(lambda d: d.reason[:18].rstrip()), equal_to(
            ["feature #1 is NaN", "expected 3 feature", "unparseable event:"]), label="Dead")
        labels = out.assignments | beam.Map(lambda a: a.cluster)
        expected = core.predict(X).tolist()
        assert_that(labels, equal_to(expected), label="Assignments")


def test_seeded_sample_ignores_order_and_sharding():
    from streamrbf.beam.global_model import _SeededSample

    rows = np.random.default_rng(0).normal(size=(500, 3))

    def sample(parts, seed=1):
        fn = _SeededSample(50, seed)
        accs = [fn.create_accumulator() for _ in parts]
        for acc, part in zip(accs, parts):
            for r in part:
                fn.add_input(acc, r)
        return np.array(fn.extract_output(fn.merge_accumulators(accs)))

    one = sample([rows])
    assert one.shape == (50, 3)
    assert (one[:, None, :] == rows[None]).all(-1).any(-1).all()  # every sampled row is an event
    np.testing.assert_array_equal(sample([rows[::-1]]), one)
    np.testing.assert_array_equal(sample([rows[::3], rows[1::3], rows[2::3]]), one)
    assert not np.array_equal(sample([rows], seed=2), one)

    # Repeated events: every value is kept with its exact count, in proportion (the sample does
    # not collapse onto one repeated value), whatever the order and sharding.
    values = np.repeat(np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]]), [600, 300, 100], axis=0)
    mixed = values[np.random.default_rng(1).permutation(len(values))]
    dup = sample([mixed])
    assert sorted(map(tuple, np.unique(dup, axis=0))) == [(0.0, 0.0), (10.0, 0.0), (20.0, 0.0)]
    assert [int((dup[:, 0] == v).sum()) for v in (0.0, 10.0, 20.0)] == [30, 15, 5]
    np.testing.assert_array_equal(sample([mixed[::2], mixed[1::2]]), dup)


def test_repeated_events_initialise_every_cluster():
    rows = [[v, 0.0] for v in (0.0, 10.0, 20.0) for _ in range(300)]
    np.random.default_rng(0).shuffle(rows)
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(rows) | ClusterGlobally(
            3, steps=2, n_shards=2, init_sample=100, random_state=0, n_features=2)
        assert_that(out.model | beam.Map(lambda m: sorted(np.round(m.centers[0][:, 0], 6))),
                    equal_to([[0.0, 10.0, 20.0]]))


def test_same_random_state_same_model(data, tmp_path):
    # k-means++ initialisation from a sample: the same seed gives the same model, run after run.
    X, _ = data
    for run in range(2):
        with beam.Pipeline(runner="FnApiRunner") as p:
            out = p | beam.Create(X.tolist()) | ClusterGlobally(
                4, steps=1, n_shards=3, init_sample=200, random_state=5, n_features=3)
            _ = out.model | beam.Map(lambda m, path=tmp_path / f"run{run}": path.write_text(
                json.dumps([m.temperature.tolist(), np.asarray(m.centers).tolist()])))
    assert (tmp_path / "run0").read_text() == (tmp_path / "run1").read_text()


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_streaming_auto_temperature_follows_the_scale_of_the_init_centres(tmp_path, scale):
    from streamrbf.beam.global_model import _initial_checkpoint

    C0 = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]]) * scale
    _initial_checkpoint(Policy(n_clusters=3, init=C0), str(tmp_path))
    model = RBFKMeans.load(latest_checkpoint(str(tmp_path)))
    # nearest-other-centre squared distances 9, 16, 9: given centres start at half their mean
    t0 = 0.5 * (9 + 16 + 9) / 3 * scale**2
    assert model.temperature_ == pytest.approx(t0, rel=1e-12)
    assert model.temperature_schedule_.minimum == pytest.approx(1e-3 * t0, rel=1e-12)


def test_checkpoint_restart_continues_training(data, tmp_path):
    from streamrbf.core.persistence import load_state

    X, C0 = data
    ckpt = tmp_path / "ckpt"
    core = _core(X, C0, 5)
    for steps, done in ((2, 2), (3, 5)):
        # Two runs: the second resumes from the first's last checkpoint, n_seen included (the
        # same 3600 as 5 steps in one run: 600 to initialise, 600 per step).
        with beam.Pipeline(runner="FnApiRunner") as p:
            out = p | beam.Create(X.tolist()) | ClusterGlobally(
                4, steps=steps, n_shards=8, init=C0, checkpoint_dir=ckpt, **PARAMS)
            assert_that(out.model, _matches(_core(X, C0, done), n_seen=600 * (1 + done),
                                            n_steps=_core(X, C0, done).n_steps_))
    assert len(list(ckpt.glob("step-*.safetensors"))) == 1 + 2 + 3
    resumed = RBFKMeans.load(latest_checkpoint(ckpt))
    np.testing.assert_allclose(resumed.cluster_centers_, core.cluster_centers_, atol=1e-5)
    assert resumed.n_steps_ == core.n_steps_
    assert abs(resumed.temperature_ - core.temperature_) <= 1e-12
    # n_seen is part of the state record in each safetensors checkpoint (no pickle).
    seen = {p.name: int(load_state(p, "RBFKMeans")[0].n_seen[0])
            for p in ckpt.glob("step-*.safetensors")}
    assert sorted(seen.values()) == [600 * i for i in range(1, 7)]


def test_a_saved_model_is_a_checkpoint_to_resume_from(data, tmp_path):
    # A model saved by RBFKMeans (init on 600 events, one step on 600) resumes with its n_seen.
    X, C0 = data
    saved = _core(X, C0, 1)
    saved.save(tmp_path / f"step-{saved.n_steps_:010d}.safetensors")
    core = _core(X, C0, 3)
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(X.tolist()) | ClusterGlobally(
            4, steps=2, n_shards=8, init=C0, checkpoint_dir=tmp_path, **PARAMS)
        assert_that(out.model, _matches(core, n_seen=600 * 4, n_steps=core.n_steps_))


def test_every_event_invalid_gives_no_model(tmp_path):
    events = [["x", 1.0], [float("nan"), 0.0], [1.0, 2.0, 3.0]]
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(events) | ClusterGlobally(
            2, steps=2, n_features=2, assign=True, checkpoint_dir=tmp_path)
        assert_that(out.model, equal_to([]), label="Model")
        assert_that(out.history, equal_to([]), label="History")
        assert_that(out.assignments, equal_to([]), label="Assignments")
        assert_that(out.dead_letters | beam.Map(lambda d: (d.event, d.stage)), equal_to([
            ("['x', 1.0]", "parse"), ("[nan, 0.0]", "parse"), ("[1.0, 2.0, 3.0]", "parse")]),
            label="Dead")
    assert latest_checkpoint(tmp_path) is None


@pytest.mark.parametrize("assign", [False, True])
def test_fewer_valid_events_than_clusters_are_dead_letters(assign):
    # k-means++ needs n_clusters events: no model, and every event leaves once, as a dead letter.
    events = [[0.0, 1.0], [2.0, 3.0], ["x", 1.0]]
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(events) | ClusterGlobally(3, steps=2, n_features=2, assign=assign)
        assert_that(out.model, equal_to([]), label="Model")
        assert_that(out.history, equal_to([]), label="History")
        assert_that(out.assignments, equal_to([]), label="Assignments")
        reason = "fewer valid events than n_clusters=3: no model could be initialised"
        assert_that(out.dead_letters | beam.Map(lambda d: (d.event, d.reason, d.stage)), equal_to([
            ("['x', 1.0]", "feature #0 is not a real number: 'x' (str)", "parse"),
            ("[0.0, 1.0]", reason, "model"), ("[2.0, 3.0]", reason, "model")]), label="Dead")


def test_fewer_events_than_clusters_with_an_init_array_train():
    # An init array needs no n_clusters events (the core's rule): two events train a model.
    C0 = np.array([[0.0, 0.0], [1.0, 1.0], [9.0, 9.0]])
    X = np.array([[0.0, 0.5], [9.0, 8.0]])
    core = RBFKMeans(3, init=C0, reassignment_ratio=0.0, random_state=0, **PARAMS).partial_fit(X)
    core.partial_fit(X)
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(X.tolist()) | ClusterGlobally(
            3, steps=1, n_shards=2, init=C0, assign=True, **PARAMS)
        assert_that(out.model, _matches(core, n_seen=4), label="Model")
        assert_that(out.dead_letters, equal_to([]), label="Dead")
        assert_that(out.assignments | beam.Map(lambda a: a.cluster),
                    equal_to(core.predict(X).tolist()), label="Assignments")


def test_rounded_down_sample_still_holds_n_clusters_events():
    # 40 events of 3 values scaled to a sample of 4: 1.4, 1.4, 1.2 copies rounded to 1, 1, 1
    # were 3 rows, too few for k-means++ with 4 clusters although there are 40 valid events.
    from streamrbf.beam.global_model import _SeededSample

    rows = [[0.0, 0.0]] * 14 + [[10.0, 0.0]] * 14 + [[20.0, 0.0]] * 12
    fn = _SeededSample(4, 0)
    acc = fn.create_accumulator()
    for r in rows:
        fn.add_input(acc, r)
    assert len(fn.extract_output(acc)) == 4
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(rows) | ClusterGlobally(
            4, steps=1, n_shards=2, init_sample=4, n_features=2)
        assert_that(out.model | beam.Map(lambda m: m.n_seen), equal_to([4 + 40]), label="Seen")
        assert_that(out.dead_letters, equal_to([]), label="Dead")
    with pytest.raises(ValueError, match="init_sample=3 must be >= n_clusters=4"):
        ClusterGlobally(4, init_sample=3, n_features=2)


def test_model_handler_runinference_and_model_update(data, tmp_path):
    X, C0 = data
    core = _core(X, C0, 3)
    path_a, path_b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    core.save(path_a)
    shifted = _core(X + 100.0, C0 + 100.0, 3)
    shifted.save(path_b)
    (tmp_path / "evil.safetensors").write_bytes(b"\x80\x04K\x01.")  # a pickle, not our format
    with pytest.raises(ValueError):
        RBFModelHandler(str(tmp_path / "evil.safetensors")).load_model()
    handler = RBFModelHandler(path_a, device="GPU", gpu_hints=True)  # no GPU here: CPU fallback
    assert handler.get_resource_hints() == {
        "accelerator": "type:nvidia-l4;count:1;install-nvidia-driver"}
    model = handler.load_model()
    res = list(handler.run_inference([X[0], X[1].tolist(), json.dumps(X[2].tolist())], model))
    assert [r.inference.cluster for r in res] == core.predict(X[:3]).tolist()
    # Side-input model refresh: the handler swaps to model b, whose centres are all at +100.
    with beam.Pipeline(runner="FnApiRunner") as p:
        updates = p | "Updates" >> beam.Create([ModelMetadata(path_b, "b")])
        out = (p | beam.Create([[100.0, 100.0, 100.0]] * 5)
               | RunInference(RBFModelHandler(path_a), model_metadata_pcoll=updates)
               | beam.Map(lambda r: round(r.inference.distance) < 30))
        assert_that(out, equal_to([True] * 5))


def _validated_runinference(p, X, path, tagged=True, prebatched=False):
    """Keyed events, two of them bad, validated, then RunInference on the valid ones: one
    ``(label, key, cluster)`` per event, ``"dead"`` for the dead letters. ``prebatched``: batches
    of 16 made with a GroupByKey over 4 shards, RunInference's own batching off (for Dask)."""
    events = [(f"e{i}", X[i].tolist()) for i in range(200)]
    events += [("bad0", [float("nan"), 0.0, 0.0]), ("bad1", [1.0, 2.0])]
    good, dead = (p | beam.Create(events)
                  | ValidateEvents(n_features=3, keyed=True, tagged=tagged))
    handler = KeyedModelHandler(RBFModelHandler(path))
    if prebatched:
        good = (good | beam.Map(lambda kv: (zlib.crc32(kv[0].encode()) % 4, kv))
                | beam.GroupByKey()
                | beam.FlatMap(lambda shard: (lambda rows: [
                    rows[i:i + 16] for i in range(0, len(rows), 16)])(list(shard[1]))))
        handler = handler.with_no_batching()
    assigned = (good
                | RunInference(handler)
                | beam.Map(lambda kr: ("assignment", kr[0], kr[1].inference.cluster)))
    return (assigned, dead | beam.Map(lambda d: ("dead", d.key, -1))) | beam.Flatten()


def _check_validated(expected):
    def check(rows):
        labels = sorted(r[0] for r in rows)
        assert labels == ["assignment"] * 200 + ["dead"] * 2, (len(labels), labels.count("dead"))
        assert {k for t, k, _ in rows if t == "dead"} == {"bad0", "bad1"}
        assert all(expected[k] == c for t, k, c in rows if t == "assignment")

    return check


def test_validated_events_feed_runinference(data, tmp_path):
    # What ValidateEvents passes on is what RBFModelHandler takes (keyed: KeyedModelHandler):
    # every event leaves as one assignment, the core's, or one dead letter.
    X, C0 = data
    core = _core(X, C0, 2)
    path = str(tmp_path / "m.safetensors")
    core.save(path)
    expected = {f"e{i}": c for i, c in enumerate(core.predict(X[:200]).tolist())}
    with beam.Pipeline(runner="FnApiRunner") as p:
        assert_that(_validated_runinference(p, X, path) | beam.combiners.ToList(),
                    lambda lists: _check_validated(expected)(lists[0]))
    model = core
    handler = RBFModelHandler(path)
    named = handler.run_inference([(("a", "b", "c"), (1.0, 2.0, 3.0)), (None, (1.0, 2.0, 3.0))],
                                  handler.load_model())
    assert named[0].inference.cluster == named[1].inference.cluster == model.predict(
        [[1.0, 2.0, 3.0]])[0]
    with pytest.raises(ValueError, match="missing features"):
        # names that are not the model's cannot be reordered into its features
        RBFModelHandler(path, feature_names=["a", "b", "z"]).run_inference(
            [(("a", "b", "c"), (1.0, 2.0, 3.0))], handler.load_model())


# ------------------------------------------------------------------------------------ Dask
@pytest.fixture(scope="module")
def dask_address():
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _dask_options(address):
    return PipelineOptions(runner="apache_beam.runners.dask.dask_runner.DaskRunner",
                           dask_client_address=address)


def test_dask_cluster_globally_equals_core(data, dask_address):
    X, C0 = data
    core = _core(X, C0, 1)
    events = X.tolist() + [[float("inf"), 0.0, 0.0], {"a": 1}]
    # One unrolled step: on the DaskRunner, graphs with several unrolled steps (or a resume from
    # a checkpoint inside the same run) give wrong numbers; see docs/beam.md.
    with beam.Pipeline(options=_dask_options(dask_address)) as p:
        out = p | beam.Create(events) | ClusterGlobally(
            4, steps=1, n_shards=8, init=C0, assign=True, **PARAMS)
        # Only the last sink runs on Dask: one check of the model and of the event count.
        labels = ((out.assignments | beam.Map(lambda a: "assignment"),
                   out.dead_letters | beam.Map(lambda d: "dead")) | beam.Flatten()
                  | beam.combiners.Count.PerElement() | beam.combiners.ToList())
        check = _matches(core, n_seen=1200)

        def both(counts, model):
            check([model])
            return sorted(counts)

        assert_that(labels | beam.Map(both, model=beam.pvalue.AsSingleton(out.model)),
                    equal_to([[("assignment", 600), ("dead", 2)]]))


def test_dask_runinference_every_event_accounted(data, dask_address, tmp_path):
    # Batched with a GroupByKey, not BatchElements (the DaskRunner loses what a DoFn emits in
    # finish_bundle, BatchElements' last batch): every event is one assignment (the core's) or
    # one dead letter on Dask too.
    X, C0 = data
    core = _core(X, C0, 2)
    path = str(tmp_path / "m.safetensors")
    core.save(path)
    expected = {f"e{i}": c for i, c in enumerate(core.predict(X[:200]).tolist())}
    with beam.Pipeline(options=_dask_options(dask_address)) as p:
        rows = _validated_runinference(p, X, path, tagged=False, prebatched=True)
        assert_that(rows | beam.combiners.ToList(),
                    lambda lists: _check_validated(expected)(lists[0]))


def test_dask_runinference(data, dask_address, tmp_path):
    X, C0 = data
    core = _core(X, C0, 2)
    path = str(tmp_path / "m.safetensors")
    core.save(path)
    expected = dict(enumerate(core.predict(X[:200]).tolist()))

    def check(pairs):
        # Every assignment is the core's; the DaskRunner collects a DoFn's outputs before
        # finish_bundle, so BatchElements' last batch of each partition is lost (a Beam bug):
        # at most one batch (of 10) per partition.
        assert all(expected[i] == c for i, c in pairs)
        assert len({i for i, _ in pairs}) == len(pairs) >= 200 - 10 * 4

    with beam.Pipeline(options=_dask_options(dask_address)) as p:
        out = (p | beam.Create([(i, X[i].tolist()) for i in range(200)])
               | RunInference(KeyedModelHandler(
                   RBFModelHandler(path, min_batch_size=10, max_batch_size=10)))
               | beam.Map(lambda kr: (kr[0], kr[1].inference.cluster)))
        assert_that(out, check)


class _Ticks(beam.PTransform):
    """Side-input refresh ticks at offset, +60, +120 (the BundleBasedDirectRunner cannot run
    PeriodicImpulse, a splittable DoFn)."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    def expand(self, pbegin):
        from apache_beam.transforms import window

        return (pbegin | beam.Create([self.offset + 60 * i for i in range(3)])
                | beam.Map(lambda t: window.TimestampedValue(t, t))
                | beam.WindowInto(window.FixedWindows(60)))


def test_streaming_windowed_updates_checkpoints_and_restart(data, tmp_path):
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.testing import test_stream
    from apache_beam.transforms import window

    X, C0 = data
    ckpt = tmp_path / "stream"

    def run(offset, seen):
        stream = test_stream.TestStream().advance_watermark_to(offset)
        for w in range(3):   # three 60 s windows of 200 events (and one bad event)
            rows = X[200 * w: 200 * (w + 1)].tolist() + [[float("nan")] * 3]
            stream = stream.add_elements(
                [window.TimestampedValue(r, offset + 60 * w + 1) for r in rows])
            stream = stream.advance_watermark_to(offset + 60 * (w + 1))
        stream = stream.advance_watermark_to_infinity()
        options = PipelineOptions(runner="BundleBasedDirectRunner")
        options.view_as(StandardOptions).streaming = True
        with beam.Pipeline(options=options) as p:
            out = p | stream | ClusterGlobally(
                4, init=C0, checkpoint_dir=ckpt, window_secs=60, refresh_secs=60,
                impulses=_Ticks(offset), initial_temperature=20.0,
                **{k: v for k, v in PARAMS.items() if k != "max_iter"})
            # One step per window: 200 more events seen by the canonical model each time.
            assert_that(out.model | beam.Map(lambda m: m.n_seen), equal_to(seen), label="Seen")
            assert_that(out.dead_letters | beam.Map(lambda d: d.reason),
                        equal_to(["feature #0 is NaN (a missing value)"] * 3), label="Dead")

    run(0, [200, 400, 600])
    first = RBFKMeans.load(latest_checkpoint(ckpt))
    assert len(list(ckpt.glob("step-*.safetensors"))) == 1 + 3
    assert first.n_steps_ == 3 and np.isfinite(first.cluster_centers_).all()
    assert not np.allclose(first.cluster_centers_, C0)      # it learnt
    run(1000, [800, 1000, 1200])                  # a restart continues training (and n_seen)
    second = RBFKMeans.load(latest_checkpoint(ckpt))
    assert second.n_steps_ == 6
    assert second.temperature_ < first.temperature_


# -- weighted events ------------------------------------------------------------------------------
def _weighted_events(X, w):
    return [{"a": r[0], "b": r[1], "c": r[2], "w": wi} for r, wi in zip(X.tolist(), w.tolist())]


def test_weighted_events_give_the_cores_weighted_steps(data):
    # Beam's steps with weights equal the core's partial_fit with sample_weight, which equals
    # the core on the events repeated (without forgetting, which counts events, not weights).
    X, C0 = data
    w = np.random.default_rng(0).integers(0, 4, size=len(X)).astype(float)
    params = {**PARAMS, "half_life": None}
    core = RBFKMeans(4, init=C0, reassignment_ratio=0.0, random_state=0, **params)
    repeated = RBFKMeans(4, init=C0, reassignment_ratio=0.0, random_state=0, **params)
    for _ in range(4):
        core.partial_fit(X, sample_weight=w)
        repeated.partial_fit(np.repeat(X, w.astype(int), axis=0))
    np.testing.assert_allclose(core.cluster_centers_, repeated.cluster_centers_, atol=1e-9)
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(_weighted_events(X, w)) | ClusterGlobally(
            4, steps=3, n_shards=8, n_features=3, init=C0, weight_field="w", **params)
        assert_that(out.model, _matches(core, n_seen=4 * len(X)))


def _centres_near(expected, atol):
    def check(models):
        assert len(models) == 1
        np.testing.assert_allclose(np.sort(models[0].centers[0][:, 0]), expected, atol=atol)

    return check


def test_events_of_weight_zero_pull_no_centre():
    X, y = make_blobs(300, n_features=3, centers=[[0, 0, 0], [10, 0, 0], [0, 10, 0]],
                      cluster_std=0.5, random_state=0)
    w = (y != 2).astype(float)  # the third blob weighs nothing
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(_weighted_events(X, w)) | ClusterGlobally(
            2, steps=3, n_shards=4, n_features=3, weight_field="w", assign=True)
        assert_that(out.model, _centres_near([0.0, 10.0], atol=0.3), label="Model")
        assert_that(out.assignments | beam.combiners.Count.Globally(), equal_to([300]),
                    label="Every event assigned")


def test_bad_weights_are_dead_letters_naming_the_field():
    good = [{"a": float(i % 2) * 5, "w": 1.0} for i in range(20)]
    bad = [{"a": 1.0}, {"a": 1.0, "w": -1}, {"a": 1.0, "w": float("nan")},
           {"a": 1.0, "w": "2"}, [1.0, 2.0], '{"a": 1.0, "w": null}']
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(good + bad) | ClusterGlobally(
            2, steps=1, n_features=1, weight_field="w", assign=True)
        assert_that(out.dead_letters | beam.Map(lambda d: d.reason), equal_to([
            "event has no weight field 'w'",
            "weight field 'w' must be a finite number >= 0, got -1",
            "weight field 'w' must be a finite number >= 0, got nan",
            "weight field 'w' must be a finite number >= 0, got '2'",
            "a weighted event must be a dict with a 'w' field, got list",
            "weight field 'w' must be a finite number >= 0, got None"]), label="Dead")
        assert_that(out.assignments | beam.combiners.Count.Globally(), equal_to([20]),
                    label="Assigned")
    with pytest.raises(ValueError, match="weight_field 'w' is one of the feature_names"):
        ClusterGlobally(2, feature_names=["a", "w"], weight_field="w")


@pytest.mark.parametrize("device", ["cpu", pytest.param(
    "cuda", marks=pytest.mark.skipif(not __import__("torch").cuda.is_available(),
                                     reason="no CUDA device"))])
def test_shard_statistics_on_a_torch_device_equal_the_cpu_ones(device):
    from streamrbf.beam.global_model import _PartialStatistics
    from streamrbf.core.state import ModelState

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    model = ModelState.single(rng.normal(size=(4, 3)), np.ones(4), temperature=0.7)
    policy = Policy(n_clusters=4)
    (cpu,) = list(_PartialStatistics(policy).process(X, model))
    (dev,) = list(_PartialStatistics(policy, device=device).process(X, model))
    assert isinstance(dev.mass, np.ndarray) and dev.n == cpu.n == 500
    np.testing.assert_allclose(dev.mass, cpu.mass, rtol=1e-9)
    np.testing.assert_allclose(dev.sums, cpu.sums, rtol=1e-9, atol=1e-9)
    assert dev.loss == pytest.approx(cpu.loss, rel=1e-9)
