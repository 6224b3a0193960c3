"""ClusterPerKey on FnApiRunner (batch, multi-processing) and BundleBasedDirectRunner (TestStream),
the state coder, and bad input at the DoFn level (hypothesis)."""

from __future__ import annotations

import json
import math
import pickle

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrbf import RBFKMeans
from streamrbf.beam import ClusterPerKey, DeadLetter, KeyState, KeyStateCoder
from streamrbf.beam.per_key import (
    Snapshot,
    _ParseAndBatchDoFn,
    _ParseAndBatchWithIdsDoFn,
    _ScoreAndLearnDoFn,
)
from streamrbf.beam.state import EventChunk, stable_hash
from streamrbf.core import engine
from streamrbf.core.assignment import Assignment
from streamrbf.core.policy import Policy
from streamrbf.core.validation import max_abs_value

pytestmark = pytest.mark.timeout(120)

CENTRES = {
    "s0": [[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]],
    "s1": [[20.0, 20.0], [26.0, 20.0], [20.0, 26.0]],
}
BAD = [
    ("s0", "{not json"),                   # unparseable
    ("s0", [1.0, float("nan")]),           # NaN
    ("s0", [1.0, 2.0, 3.0]),               # wrong dimension (parsed fine, refused by the model)
    (42, [1.0, 2.0]),                      # wrong key type
    ("s1", {"x": 1.0}),                    # dict event on an array stream
    ("s0", []),                            # no features
    "just a string",                       # not a pair
]


def keyed_events(n_per_key: int = 150, seed: int = 0) -> list[tuple[str, list[float]]]:
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n_per_key):
        for key, cs in CENTRES.items():
            c = np.asarray(cs[i % 3])
            events.append((key, (c + rng.normal(0, 0.3, 2)).tolist()))
    return events


def _tag(kind):
    return lambda x: kind


def _labels(out):
    """One PCollection of 'assignment' / 'dead' labels, one per output event."""
    return (
        (out.assignments | "LabelA" >> beam.Map(_tag("assignment")),
         out.dead_letters | "LabelD" >> beam.Map(_tag("dead")))
        | "All" >> beam.Flatten()
    )


def _count_outputs(out):
    return _labels(out) | "Count" >> beam.combiners.Count.PerElement()


def test_batch_fnapi_every_event_accounted_and_clusters_found():
    events = keyed_events() + BAD
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(events) | ClusterPerKey(
            3, batch_size=50, warmup=60, snapshot_every=1, random_state=1)
        assert_that(_count_outputs(out), equal_to([("assignment", 300), ("dead", 7)]),
                    label="CountAll")
        purity = out.assignments

        def check(pairs):
            # Each stream's clusters are pure: events of one true centre share one cluster.
            got = {}
            for key, a in pairs:
                assert isinstance(a, Assignment)
                assert math.isclose(sum(a.memberships.values()), 1.0, rel_tol=1e-9)
                assert a.cluster in a.memberships and a.distance >= 0 and a.temperature > 0
                got.setdefault(key, []).append(a.cluster)
            assert set(got) == {"s0", "s1"}
            for clusters in got.values():
                assert len(set(clusters)) == 3
                assert sorted(np.bincount(clusters).tolist()) == [50, 50, 50]

        assert_that(purity, check, label="Purity")
        reasons = out.dead_letters | beam.Map(lambda d: (d.key, d.stage))
        assert_that(reasons, equal_to([
            ("s0", "parse"), ("s0", "parse"), ("s0", "model"), ("42", "parse"),
            ("s1", "model"), ("s0", "parse"), (None, "parse"),
        ]), label="Reasons")
        snaps = out.snapshots | beam.Map(lambda s: (s.key, s.n_seen))
        # Initialised on 2 batches of 50 (warmup 60 -> 100 rows), then one step per batch.
        assert_that(snaps, equal_to([("s0", 100), ("s0", 150), ("s1", 100), ("s1", 150)]),
                    label="Snapshots")


def test_values_too_large_to_cluster_are_dead_letters_not_a_crash():
    # Finite values whose squared distances would overflow float64: the value rule refuses them
    # (a model never steps on infinities), so ClusterPerKey sends each such event to the dead
    # letters, whichever path parsed it (plain lists: the model stage; JSON text: the parse
    # stage), and goes on.
    huge = [("s0", [1e200, 0.0]), ("s1", [0.0, -1e180]), ("s0", "[3e160, 1.0]"),
            ("s1", [2.0, 1e154])]
    events = keyed_events(60, seed=4)
    events = events[:50] + huge[:2] + events[50:] + huge[2:]
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(events) | ClusterPerKey(3, batch_size=20, warmup=30,
                                                      snapshot_every=1)
        assert_that(_count_outputs(out), equal_to([("assignment", 120), ("dead", 4)]),
                    label="Count")
        assert_that(out.dead_letters | beam.Map(lambda d: (d.key, d.stage, d.reason[:30])),
                    equal_to([("s0", "model", "feature #0 = 1e+200 is too lar"),
                              ("s1", "model", "feature #1 = -1e+180 is too la"),
                              ("s0", "parse", "feature #0 = 3e+160 is too lar"),
                              ("s1", "model", "feature #1 = 1e+154 is too lar")]),
                    label="Reasons")

        def finite(snaps):
            assert snaps and all(np.isfinite(s.centers).all() and max(map(abs, np.ravel(
                s.centers))) < 40 for s in snaps)

        assert_that(out.snapshots, finite, label="Snapshots")


def _canonical(kv):
    key, a = kv
    members = tuple(sorted((j, round(v, 9)) for j, v in a.memberships.items()))
    return key, a.cluster, round(a.distance, 9), round(a.temperature, 12), members


def _append_to(path):
    def write(line):
        with open(path, "a") as f:
            f.write(repr(line) + "\n")
    return write


def test_batches_output_equals_the_events_output(tmp_path):
    # output="batches" carries exactly the per-event assignments, in columns.
    events = keyed_events(n_per_key=160, seed=3) + BAD
    for output in ("events", "batches"):
        with beam.Pipeline(runner="FnApiRunner") as p:
            out = p | beam.Create(events) | ClusterPerKey(
                3, batch_size=40, warmup=60, snapshot_every=2, random_state=2, output=output)
            rows = out.assignments
            if output == "batches":
                # per key: the 80 warm-up rows (scored by the model they initialised), then
                # batches of 40
                assert_that(out.assignments | beam.Map(lambda kv: len(kv[1])),
                            equal_to([80, 40, 40] * 2), label="BatchSizes")
                rows = rows | beam.FlatMap(lambda kv: [(kv[0], a) for a in kv[1]])
            _ = rows | beam.Map(_canonical) | beam.Map(_append_to(tmp_path / output))
            assert_that(out.dead_letters | beam.combiners.Count.Globally(), equal_to([7]))
            # A snapshot at initialisation (80 rows) and at every second step after it.
            snaps = out.snapshots | beam.Map(lambda s: (s.key, s.n_seen))
            assert_that(snaps, equal_to([("s0", 80), ("s0", 160), ("s1", 80), ("s1", 160)]),
                        label="Snapshots")
    got = {o: sorted((tmp_path / o).read_text().splitlines()) for o in ("events", "batches")}
    assert len(got["events"]) == 320
    assert got["events"] == got["batches"]


def test_state_coder_roundtrip_and_size():
    model = engine.initialise(np.asarray([e[1] for e in keyed_events(30)]), Policy(n_clusters=3),
                              seed=0, feature_names=("a", "b")).state
    s = KeyState(model, ("a", "b"))
    coder = KeyStateCoder()
    t = coder.decode(coder.encode(s))
    for name in ("centers", "masses", "temperature", "initial_temperature", "min_temperature",
                 "n_steps", "n_seen", "seed"):
        np.testing.assert_array_equal(getattr(t.model, name), getattr(model, name), name)
    assert t.feature_names == t.model.feature_names == ("a", "b") and t.model.n_seen[0] == 60
    # (k=3, d=2) float64 centres + masses + per-model scalars + header: about 200 bytes.
    assert s.nbytes() < 240
    assert b"torch" not in coder.encode(s)
    # Pending rows and an armed flush timer survive the round trip.
    s.pending, s.flush_at = np.ones((5, 2)), 12.5
    t = coder.decode(coder.encode(s))
    np.testing.assert_array_equal(t.pending, s.pending)
    assert t.flush_at == 12.5
    # States an earlier release wrote (formats SRB1 and SRB2) still decode.
    import struct

    def legacy(magic, flush_at):
        fmt = "<4sBIIIdddqq" + ("d" if magic == b"SRB2" else "")
        C, counts = model.centers[0], model.masses[0]
        head = struct.pack(fmt, magic, 1, 3, 2, 5, 0.5, 1.0, 0.001, 4, 80,
                           *([flush_at] if magic == b"SRB2" else []))
        names = b'["a","b"]'
        return b"".join([head, struct.pack("<I", len(names)), names, C.tobytes(),
                         counts.tobytes(), np.ones((5, 2)).tobytes()])

    for magic in (b"SRB1", b"SRB2"):
        t = coder.decode(legacy(magic, 7.0))
        np.testing.assert_array_equal(t.model.centers[0], model.centers[0])
        assert (float(t.model.temperature[0]), int(t.model.n_steps[0]), int(t.model.n_seen[0]),
                t.feature_names, t.pending.shape) == (0.5, 4, 80, ("a", "b"), (5, 2))
        assert t.flush_at == (7.0 if magic == b"SRB2" else None)


def test_assignment_output_coder_is_binary_and_stable():
    import struct

    from streamrbf.beam.state import AssignmentCoder

    # The assignments PCollection is typed: Beam encodes it with AssignmentCoder, not pickle.
    p = beam.Pipeline(runner="FnApiRunner")
    out = p | beam.Create([("a", [1.0])]) | ClusterPerKey(1, warmup=1)
    coder = beam.coders.registry.get_coder(out.assignments.element_type)
    assert coder == beam.coders.TupleCoder([beam.coders.StrUtf8Coder(), AssignmentCoder()])
    c = AssignmentCoder()
    for a in (Assignment(1, {1: 0.75, 0: 0.25}, 0.5, 0.1), Assignment(3, {3: 1.0}, 2.0, 1e-3),
              Assignment(0, {}, 0.0, 1.0)):
        data = c.encode(a)
        # Wire format: cluster, distance, temperature, n, then n int32 ids and n float64 values.
        m = a.memberships
        assert data == struct.pack(f"<qddI{len(m)}i{len(m)}d", a.cluster, a.distance,
                                   a.temperature, len(m), *m, *m.values())
        b = c.decode(data)
        assert b == a and type(b) is Assignment


def test_assignment_batch_output_coder_is_binary():
    from streamrbf.beam.state import AssignmentBatchCoder
    from streamrbf.core.assignment import AssignmentBatch

    p = beam.Pipeline(runner="FnApiRunner")
    out = p | beam.Create([("a", [1.0])]) | ClusterPerKey(1, warmup=1, output="batches")
    coder = beam.coders.registry.get_coder(out.assignments.element_type)
    assert coder == beam.coders.TupleCoder([beam.coders.StrUtf8Coder(), AssignmentBatchCoder()])
    c = AssignmentBatchCoder()
    rng = np.random.default_rng(0)
    for ids in (None, [f"e{i}" for i in range(50)], list(range(50))):
        lengths = rng.integers(1, 4, 50)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        vals = rng.random(int(offsets[-1]))
        b = AssignmentBatch(rng.integers(0, 8, 50), rng.random(50), offsets,
                            rng.integers(0, 8, int(offsets[-1])), vals, 0.25, ids)
        data = c.encode(b)
        assert c.encode(c.decode(data)) == data  # deterministic, lossless
        assert c.decode(data).to_list() == b.to_list()
    with pytest.raises(ValueError, match="not an encoded AssignmentBatch"):
        c.decode(b"XXXX" + data[4:])


@pytest.mark.parametrize("temperature", [1e-3, 0.05, 2.0, 30.0, 1e4])
def test_assign_matches_the_kernel_for_any_sparsity(temperature):
    from streamrbf.beam.inference import assign
    from streamrbf.core.statistics import sparse_memberships

    rng = np.random.default_rng(1)
    C = rng.uniform(-3, 3, (6, 4))
    X = C[rng.integers(6, size=200)] + rng.normal(0, 1.5, (200, 4))
    m = sparse_memberships(X, C, temperature)
    out = assign(X, C, temperature)
    assert len(out) == 200
    for r, a in enumerate(out):
        n = int(m.length[r])
        assert type(a) is Assignment and a.cluster == m.labels[r]
        assert a.memberships == dict(zip(m.idx[r, :n].tolist(), m.vals[r, :n].tolist()))
        assert a.distance == pytest.approx(math.sqrt(m.nearest[r]))
        assert a.temperature == temperature


def test_streaming_teststream_watermarks_late_data_and_processing_time_flush():
    events = keyed_events(40, seed=2)
    stream = test_stream.TestStream().advance_watermark_to(0)
    for i, (k, x) in enumerate(events[:60]):
        stream = stream.add_elements([window.TimestampedValue((k, x), 10 + i)])
    stream = stream.advance_watermark_to(1000)
    # Late data (behind the watermark) still reaches the per-key models (global window).
    late = [window.TimestampedValue(kv, 5) for kv in events[60:]] + [
        window.TimestampedValue(("s0", [float("inf"), 0.0]), 5)]
    stream = stream.add_elements(late)
    # Only a processing-time flush releases the last partial batches (batch_size > remaining).
    stream = stream.advance_processing_time(30).advance_watermark_to_infinity()
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        out = (p | stream | beam.WindowInto(window.FixedWindows(100))
               | ClusterPerKey(3, batch_size=32, max_buffering_secs=10, warmup=30,
                               ttl_secs=None, clock=lambda: 0.0, random_state=3))
        assert_that(_labels(out), equal_to(["assignment"] * 80 + ["dead"]))


def test_streaming_ttl_clears_idle_keys():
    events = keyed_events(20, seed=4)
    stream = (test_stream.TestStream().advance_watermark_to(0)
              .add_elements([window.TimestampedValue(kv, 1) for kv in events[:30]])
              .advance_processing_time(5)      # flush (buffering 2 s)
              .advance_processing_time(100)    # idle for > ttl: state cleared
              .add_elements([window.TimestampedValue(kv, 2) for kv in events[30:]])
              .advance_processing_time(5)
              .advance_watermark_to_infinity())
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        out = (p | stream
               | ClusterPerKey(3, batch_size=100, max_buffering_secs=2, warmup=12, ttl_secs=50,
                               snapshot_every=1, clock=lambda: 0.0))
        # Each key starts twice: 15 events initialise it; it expires; the 5 events after expiry
        # (fewer than warmup, at least n_clusters) initialise a fresh model when the stream ends.
        # Without the TTL the second batch would have been one step of the first model (n_seen 20).
        assert_that(out.snapshots | beam.Map(lambda s: (s.key, s.n_seen)),
                    equal_to([("s0", 15), ("s1", 15), ("s0", 5), ("s1", 5)]), label="Snaps")
        assert_that(_labels(out), equal_to(["assignment"] * 40), label="Count")


def test_multiprocessing_two_workers():
    events = keyed_events(60, seed=5) + BAD
    options = PipelineOptions(runner="FnApiRunner", direct_running_mode="multi_processing",
                              direct_num_workers=2)
    with beam.Pipeline(options=options) as p:
        out = p | beam.Create(events) | ClusterPerKey(3, batch_size=40, warmup=40)
        assert_that(_count_outputs(out), equal_to([("assignment", 120), ("dead", 7)]))


# ----------------------------------------------------------------------------- DoFn level
class _State:
    def __init__(self, value=None):
        self.value = value
        self.last_written = None   # the model as last written, also after a clear

    def read(self):
        return self.value

    def write(self, v):
        self.value = self.last_written = KeyStateCoder().decode(KeyStateCoder().encode(v))

    def clear(self):
        self.value = None


class _Timer:
    def set(self, t):
        pass

    def clear(self):
        pass


_good = st.lists(st.floats(-50, 50), min_size=2, max_size=2)
_bad = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=2, max_size=2).filter(
        lambda v: not all(math.isfinite(x) for x in v)),
    st.lists(st.floats(-5, 5), min_size=0, max_size=4).filter(lambda v: len(v) != 2),
    st.text(max_size=8),
    st.dictionaries(st.text(max_size=3), st.floats(-1, 1), max_size=3),
    st.just(None),
    # finite, but too large to cluster (squared distances would overflow float64)
    st.tuples(st.floats(1e155, 1e300), st.floats(-1.0, 1.0)).map(
        lambda t: [t[0], t[1]] if t[1] > 0 else [t[1], -t[0]]),
)
_event = st.one_of(
    st.tuples(st.just("k"), _good),
    st.tuples(st.just("k"), _bad),
    st.tuples(st.integers(), _good),
)


def _outputs(results):
    """Plain values of a DoFn's outputs: (tag, value) pairs, WindowedValues unwrapped."""
    out = []
    for o in results or []:
        tag = o.tag if isinstance(o, beam.pvalue.TaggedOutput) else None
        v = o.value if isinstance(o, beam.pvalue.TaggedOutput) else o
        out.append((tag, v.value if isinstance(v, WindowedValue) else v))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_event, min_size=1, max_size=25), st.integers(1, 8))
def test_bad_events_never_corrupt_the_model(events, chunk_rows):
    rng = np.random.default_rng(0)
    X0 = np.concatenate([rng.normal(c, 0.3, (20, 2)) for c in ([0, 0], [8, 0], [0, 8])])
    policy = Policy(n_clusters=3, reassignment_ratio=0.0)
    initial = KeyState(engine.initialise(X0, policy, seed=0).state)

    # Stage 1 (stateless): parse, validate and chunk per key within the bundle.
    parse = _ParseAndBatchDoFn(None, None, chunk_rows)
    parse.start_bundle()
    staged = [o for e in events for o in _outputs(parse.process(e))]
    staged += _outputs(parse.finish_bundle())
    dead = sum(tag == "dead_letters" for tag, _ in staged)
    chunks = [v for tag, v in staged if tag is None]
    assert sum(len(c) for _, c in chunks) + dead == len(events)
    # Stage 2 (stateful), batch size larger than the events: one step at the end of input.
    fn = _ScoreAndLearnDoFn(policy, 9, None, 0, lambda: 0.0, 0, 32, None)
    state = _State(initial)
    outs = [o for kv in chunks for o in _outputs(fn.process(kv, state, _Timer(), _Timer(),
                                                             _Timer()))]
    outs += _outputs(fn.end_of_input("k", state, _Timer(), _Timer()))
    n_assign = sum(tag is None for tag, _ in outs)
    n_dead = sum(tag == "dead_letters" for tag, _ in outs)
    assert n_assign + n_dead + dead == len(events)        # exactly one output per event
    assert all(isinstance(v, DeadLetter) for tag, v in outs if tag == "dead_letters")
    assert all(isinstance(v[1], Assignment) for tag, v in outs if tag is None)
    # Nothing can follow the end of input: the key's state is freed, after its last step.
    assert state.read() is None
    s: KeyState = state.last_written
    m = s.model
    assert m.centers.shape == (1, 3, 2) and np.isfinite(m.centers).all()
    assert np.isfinite(m.masses).all() and m.temperature[0] > 0 and s.pending is None
    # The model learnt exactly the good events: same as the core on those rows alone.
    good = [np.asarray(x, dtype=float) for key, x in events
            if key == "k" and isinstance(x, list) and len(x) == 2
            and all(isinstance(v, float) and math.isfinite(v) and abs(v) <= max_abs_value(2)
                    for v in x)]
    if good:
        ref, _ = engine.step(initial.model, np.asarray(good), policy)
        np.testing.assert_allclose(m.centers, ref.centers, atol=1e-12)
        assert m.n_seen[0] == 60 + len(good)
        assert n_assign == len(good)
    else:
        np.testing.assert_array_equal(m.centers, initial.model.centers)


def test_a_failed_bundles_retry_gives_the_same_outputs_as_one_clean_run():
    # Beam's state cache hands back the object it holds: a bundle that fails half way must not
    # have changed it, or its retry learns from another state than the one committed.
    rng = np.random.default_rng(0)
    first = np.concatenate([rng.normal(0, 1, (50, 2)), rng.normal(6, 1, (50, 2))])
    second = np.concatenate([rng.normal(20, 1, (40, 2)), rng.normal(30, 1, (40, 2))])
    first, second = first[rng.permutation(100)], second[rng.permutation(80)]
    t = ClusterPerKey(2, batch_size=10, warmup=20, max_buffering_secs=None, ttl_secs=None)

    def run(state, rows, fail_after=None):
        fn = _ScoreAndLearnDoFn(t.policy, t.warmup, None, 0, t.clock, 0, 10, None, "events",
                                None, t.drift_detector)
        out = []
        for o in fn.process(("k", EventChunk(None, rows)), state, _Timer(), _Timer(), _Timer()):
            if len(out) == fail_after:
                raise RuntimeError("the bundle failed")
            out.append((o[1].cluster, o[1].distance))
        return out

    clean = _State()
    run(clean, first)
    expected = run(clean, second)
    retried = _State()
    run(retried, first)
    committed = KeyStateCoder().encode(retried.read())
    with pytest.raises(RuntimeError, match="the bundle failed"):
        run(retried, second, fail_after=30)
    assert KeyStateCoder().encode(retried.read()) == committed
    assert run(retried, second) == expected
    assert int(retried.read().model.n_steps[0]) == int(clean.read().model.n_steps[0]) == 20


def test_snapshots_pass_every_multiple_of_snapshot_every_across_a_drift_restart():
    rng = np.random.default_rng(0)
    halves = [np.concatenate([rng.normal(a, 1, (100, 2)), rng.normal(b, 1, (100, 2))])
              for a, b in ((0, 6), (20, 30))]
    X = np.concatenate([h[rng.permutation(200)] for h in halves])
    t = ClusterPerKey(2, batch_size=10, warmup=60, snapshot_every=3)
    fn = _ScoreAndLearnDoFn(t.policy, t.warmup, None, 3, t.clock, 0, 10, None, "events", None,
                            t.drift_detector)
    state = _State()
    steps = [v.n_steps for tag, v in _outputs(fn.process(("k", EventChunk(None, X)), state,
                                                         _Timer(), _Timer(), _Timer()))
             if tag == "snapshots"]
    final = int(state.read().model.n_steps[0])
    # The restart on the second half adds steps at once (the fresh model's own): more steps than
    # the 34 batches after the 60 warm-up rows.
    assert final > steps[0] + (400 - 60) // 10
    assert np.sort(state.read().model.centers[0][:, 0]) == pytest.approx([20, 30], abs=1)
    assert sorted({s // 3 for s in steps}) == list(range(final // 3 + 1))


def test_the_last_snapshot_is_the_whole_model_the_key_holds_at_the_end():
    # Across a drift restart (which starts a model afresh: new start and floor temperatures) and
    # the end of input's flush: the last snapshot holds every field of the key's model record.
    rng = np.random.default_rng(1)
    halves = [np.concatenate([rng.normal(a, 1, (100, 2)), rng.normal(b, 1, (100, 2))])
              for a, b in ((0, 6), (20, 30))]
    X = np.concatenate([h[rng.permutation(200)] for h in halves] + [rng.normal(25, 1, (7, 2))])
    t = ClusterPerKey(2, batch_size=10, warmup=60, snapshot_every=1, random_state=5)
    fn = _ScoreAndLearnDoFn(t.policy, t.warmup, None, 1, t.clock, 5, 10, None, "events", None,
                            t.drift_detector)
    state = _State()
    outs = _outputs(fn.process(("k", EventChunk(("u", "v"), X)), state, _Timer(), _Timer(),
                               _Timer()))
    outs += _outputs(fn.end_of_input("k", state, _Timer(), _Timer()))
    snaps = [v for tag, v in outs if tag == "snapshots"]
    assert [s.temperature for s in snaps[1:]] != sorted(
        (s.temperature for s in snaps[1:]), reverse=True), "no reheat: no drift restart"
    m = state.last_written.model
    last = snaps[-1]
    assert last.n_steps == int(m.n_steps[0]) and last.n_seen == int(m.n_seen[0]) == len(X)
    assert last.temperature == float(m.temperature[0])
    assert last.initial_temperature == float(m.initial_temperature[0])
    assert last.min_temperature == float(m.min_temperature[0])
    assert last.seed == int(m.seed[0]) == (5 * 1_000_003 + stable_hash("k")) % 2**32
    assert last.feature_names == ["u", "v"]
    np.testing.assert_array_equal(np.asarray(last.centers), m.centers[0])
    np.testing.assert_array_equal(np.asarray(last.counts), m.masses[0])
    # The restart started the model afresh: its start is not the first model's.
    assert last.initial_temperature != snaps[0].initial_temperature
    # Plain values, as JSON writes and reads them back.
    assert Snapshot(**json.loads(json.dumps(last._asdict()))) == last


def test_a_snapshot_of_an_earlier_release_still_reads():
    # Earlier snapshots had six fields: JSON (and pickles) of them give None for the later ones.
    old = {"key": "a", "n_steps": 3, "n_seen": 40, "temperature": 0.5, "centers": [[0.0]],
           "counts": [1.0]}
    s = Snapshot(**old)
    assert (s.initial_temperature, s.min_temperature, s.seed, s.feature_names) == (None,) * 4
    assert pickle.loads(pickle.dumps(s)) == s and s[:6] == tuple(old.values())


# ----------------------------------------------------------------------------- event ids
def keyed_events_with_ids(n_per_key: int = 150, seed: int = 0):
    """Dict events carrying an id ('s0': str ids, 's1': int ids), and {id: (key, true centre)}."""
    events, truth = [], {}
    for j, (key, x) in enumerate(keyed_events(n_per_key, seed)):
        event_id = f"{key}-{j}" if key == "s0" else j
        truth[event_id] = (key, (j // 2) % 3)
        events.append((key, {"id": event_id, "x": x[0], "y": x[1]}))
    # JSON text with an id is a good event too.
    key, event = events[0]
    events[0] = (key, json.dumps(event))
    return events, truth


BAD_IDS = [
    (("s0", {"x": 1.0, "y": 2.0}), "parse", "event has no 'id' field"),
    (("s0", {"id": 1.5, "x": 1.0, "y": 2.0}), "parse", "'id' must be a str or int, got float"),
    (("s1", {"id": True, "x": 1.0, "y": 2.0}), "parse", "'id' must be a str or int, got bool"),
    (("s1", '{"x": 1.0, "y": 2.0}'), "parse", "event has no 'id' field"),
    (("s0", [1.0, 2.0]), "parse", "an event with ids must be a dict"),
    (("s0", {"id": "nan", "x": float("nan"), "y": 2.0}), "parse", "feature 'x' is NaN"),
    (("s0", {"id": "only-id"}), "parse", "event has no features"),
    # Parsed fine, refused by the model (other features; a stream with too few events): the
    # dead letter still shows the event's id.
    (("s0", {"id": "bad-dim", "x": 1.0, "y": 2.0, "z": 3.0}), "model", "stream 's0' has 2"),
    (("tiny", {"id": 99_999, "x": 1.0, "y": 2.0}), "model", "stream 'tiny' ended with 1"),
]


@pytest.mark.parametrize("output", ["events", "batches"])
def test_event_ids_join_assignments_back_to_their_events(output):
    events, truth = keyed_events_with_ids()
    events += [e for e, _, _ in BAD_IDS]
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(events) | ClusterPerKey(
            3, batch_size=40, warmup=60, random_state=1, output=output, id_field="id")
        rows = out.assignments
        if output == "batches":
            rows = rows | beam.FlatMap(lambda kv: [(kv[0], a) for a in kv[1]])

        def check(pairs):
            ids = [a.event_id for _, a in pairs]
            assert len(ids) == len(set(ids)) == len(truth)    # each good id exactly once
            assert set(ids) == set(truth)
            seen = {}
            for key, a in pairs:
                assert isinstance(a, Assignment) and truth[a.event_id][0] == key
                assert type(a.event_id) is (str if key == "s0" else int)
                # Joined back to its event: one cluster per true centre, per key.
                seen.setdefault((key, truth[a.event_id][1]), set()).add(a.cluster)
            assert all(len(c) == 1 for c in seen.values())
            assert len(seen) == 6 and len({(k, *c) for (k, _), c in seen.items()}) == 6

        assert_that(rows, check, label="Joined")

        def check_dead(dead):
            left = [(d.stage, d.reason) for d in dead]
            assert len(left) == len(BAD_IDS)
            for _, stage, reason in BAD_IDS:    # each bad event once, with its reason
                hit = next(x for x in left if x[0] == stage and x[1].startswith(reason))
                left.remove(hit)
            model = {d.reason[:12]: d.event for d in dead if d.stage == "model"}
            assert "'bad-dim'" in model["stream 's0' "] and "99999" in model["stream 'tiny"]

        assert_that(out.dead_letters, check_dead, label="Dead")


def test_event_id_coders_round_trip():
    import struct

    from streamrbf.beam.state import AssignmentCoder, EventChunk, EventChunkCoder

    c = AssignmentCoder()
    base = Assignment(1, {1: 0.75, 0: 0.25}, 0.5, 0.1)
    plain = c.encode(base)
    for event_id in (None, "e-1", "", "ünï", 0, -7, 2**63 - 1, -(2**63), 2**63, -(10**30)):
        a = base._replace(event_id=event_id)
        data = c.encode(a)
        assert data == c.encode(a)                          # deterministic
        assert data[:len(plain)] == plain                   # the id only appends
        b = c.decode(data)
        assert b == a and type(b.event_id) is type(event_id) and type(b) is Assignment
    assert c.encode(base) == struct.pack("<qddI2i2d", 1, 0.5, 0.1, 2, 1, 0, 0.75, 0.25)
    assert len(c.encode(base._replace(event_id=12345))) == len(plain) + 9
    # A 4-tuple Assignment (pickled before event_id) encodes as one without an id.
    assert c.encode(tuple.__new__(Assignment, tuple(base)[:4])) == plain
    # Through Beam's tuple coder (nested, length-prefixed), as the assignments travel.
    kv = beam.coders.TupleCoder([beam.coders.StrUtf8Coder(), c])
    for event_id in (None, "x", 3):
        pair = ("k", base._replace(event_id=event_id))
        assert kv.decode(kv.encode(pair)) == pair

    cc = EventChunkCoder()
    for ids in (None, ["a", 1, 2**70, "é"]):
        chunk = EventChunk(("x", "y"), np.arange(8.0).reshape(4, 2), ids)
        back = cc.decode(cc.encode(chunk))
        assert back.ids == ids and back.names == ("x", "y")
        np.testing.assert_array_equal(back.rows, chunk.rows)
    no_ids = cc.encode(EventChunk(None, np.eye(2)))
    assert len(no_ids) == 12 + 32                           # unchanged without ids

    coder = KeyStateCoder()
    s = KeyState(None, ("x", "y"), pending=np.ones((3, 2)))
    without = coder.encode(s)
    s.pending_ids = ["a", 5, "c"]
    t = coder.decode(coder.encode(s))
    assert t.pending_ids == ["a", 5, "c"] and t.pending.shape == (3, 2)
    assert coder.decode(without).pending_ids is None


def _ids_through_dofns(events, chunk_rows, batch_size, warmup, n_clusters=3):
    """Run events through both stages (one bundle, chunks of ``chunk_rows``) with ids; return
    (assignments as (key, Assignment), dead letters, final states per key)."""
    parse = _ParseAndBatchWithIdsDoFn(None, None, chunk_rows, "id")
    parse.start_bundle()
    staged = [o for e in events for o in _outputs(parse.process(e))]
    staged += _outputs(parse.finish_bundle())
    dead = [v for tag, v in staged if tag == "dead_letters"]
    fn = _ScoreAndLearnDoFn(Policy(n_clusters=n_clusters), warmup, None, 0, lambda: 0.0, 0,
                            batch_size, None, "events", "id")
    states, assigned = {}, []
    for key, chunk in [v for t, v in staged if t is None]:
        assert len(chunk.ids) == len(chunk)
        state = states.setdefault(key, _State())
        for t, v in _outputs(fn.process((key, chunk), state, _Timer(), _Timer(), _Timer())):
            (dead if t == "dead_letters" else assigned).append(v)
            if t is None:
                assert state.value is None or state.value.n_pending == len(
                    state.value.pending_ids or [])
    for key, state in states.items():
        for t, v in _outputs(fn.end_of_input(key, state, _Timer(), _Timer())):
            (dead if t == "dead_letters" else assigned).append(v)
    return assigned, dead, states


def test_event_ids_wait_with_pending_rows_across_chunks():
    events, truth = keyed_events_with_ids(40, seed=6)
    # Small chunks and batches that straddle them: ids wait in state with their rows.
    assigned, dead, states = _ids_through_dofns(events, chunk_rows=7, batch_size=10, warmup=15)
    assert dead == []
    assert sorted(map(str, (a.event_id for _, a in assigned))) == sorted(map(str, truth))
    for key in ("s0", "s1"):
        # Within a key, the assignments come out in arrival order.
        got = [a.event_id for k, a in assigned if k == key]
        assert got == [t for t, (k, _) in truth.items() if k == key]
        assert states[key].value is None   # freed at the end of input
        last = states[key].last_written
        assert last.pending is None and last.pending_ids is None


_id_value = st.one_of(st.text(max_size=4), st.integers(-(2**70), 2**70), st.floats(),
                      st.booleans(), st.none())
_id_event = st.tuples(
    st.sampled_from(["k", "j"]),
    st.one_of(
        st.fixed_dictionaries({"id": _id_value, "x": st.floats(-5, 5), "y": st.floats(-5, 5)}),
        st.fixed_dictionaries({"x": st.floats(-5, 5), "y": st.floats(-5, 5)}),
        st.lists(st.floats(-5, 5), min_size=2, max_size=2),
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_id_event, min_size=1, max_size=30), st.integers(1, 6), st.integers(1, 7))
def test_every_event_with_an_id_is_accounted_for_once(events, chunk_rows, batch_size):
    assigned, dead, _ = _ids_through_dofns(events, chunk_rows, batch_size, warmup=3, n_clusters=2)
    assert len(assigned) + len(dead) == len(events)
    good = {}
    for key, e in events:
        if isinstance(e, dict) and "id" in e and type(e["id"]) in (str, int):
            good.setdefault(key, []).append(e["id"])
    # Every good event is assigned with its id, in arrival order per key, unless its stream
    # ended with fewer than n_clusters events (then each is a model-stage dead letter).
    for key in ("k", "j"):
        ids = good.get(key, [])
        assert [a.event_id for k, a in assigned if k == key] == (ids if len(ids) >= 2 else [])
    assert sum(d.stage == "model" for d in dead) == sum(len(v) for v in good.values() if len(v) < 2)


def test_event_ids_on_a_stream_with_processing_time_flush():
    events, truth = keyed_events_with_ids(30, seed=7)
    stream = test_stream.TestStream().advance_watermark_to(0)
    stream = stream.add_elements([window.TimestampedValue(e, 10 + i)
                                  for i, e in enumerate(events[:40])])
    stream = stream.advance_watermark_to(500).add_elements(
        [window.TimestampedValue(e, 600) for e in events[40:]]
        + [window.TimestampedValue(("s1", {"x": 0.0, "y": 0.0}), 600)])
    # Only a processing-time flush releases the last partial batches (batch_size > remaining).
    stream = stream.advance_processing_time(30).advance_watermark_to_infinity()
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        out = (p | stream
               | ClusterPerKey(3, batch_size=16, max_buffering_secs=10, warmup=12,
                               ttl_secs=None, clock=lambda: 0.0, id_field="id"))
        assert_that(out.assignments | beam.Map(lambda kv: (kv[0], kv[1].event_id)),
                    equal_to([(k, i) for i, (k, _) in truth.items()]), label="Ids")
        assert_that(out.dead_letters | beam.Map(lambda d: d.reason),
                    equal_to(["event has no 'id' field"]), label="Dead")


@pytest.mark.parametrize("output", ["events", "batches"])
def test_text_utf8_cannot_encode_goes_to_dead_letters_not_a_crash(output, tmp_path):
    # JSON may carry lone surrogates ("\ud800"); Beam's string coders cannot encode them.
    import json

    good = [["a", {"id": f"e{i}", "x": float(i % 2) * 5}] for i in range(30)]
    bad = [
        ["a", '{"id": "bad\\ud800", "x": 1.0}'],  # an id UTF-8 cannot encode
        ["a", '{"id": "n", "x\\ud800": 1.0}'],    # such a feature name: not the stream's
    ]
    # The events are plain ASCII JSON text; the surrogates appear when ClusterPerKey parses them.
    # (A key or raw text holding one must come from an upstream step, whose outputs Beam already
    # encodes, if only to sample their sizes: the parser's key check is a second line.)
    lines = [json.dumps(e) for e in good + bad]
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = (p | beam.Create(lines) | beam.Map(lambda line: tuple(json.loads(line)))
               | ClusterPerKey(2, batch_size=10, warmup=10, id_field="id", output=output))
        rows = out.assignments
        if output == "batches":
            rows = rows | beam.FlatMap(lambda kv: [(kv[0], a) for a in kv[1]])
        # cross a stage (GroupByKey): every output is encoded by its coder
        ids = rows | beam.Map(lambda kv: (0, kv[1].event_id)) | "G1" >> beam.GroupByKey()
        dead = out.dead_letters | beam.Map(lambda d: (0, d)) | "G2" >> beam.GroupByKey()
        assert_that(ids | beam.Map(lambda kv: sorted(kv[1])),
                    equal_to([sorted(f"e{i}" for i in range(30))]), label="Ids")
        assert_that(dead | beam.Map(lambda kv: len(kv[1])), equal_to([2]), label="Dead")


def test_batches_the_core_refuses_and_outsized_ints_are_dead_letters_not_a_crash(tmp_path):
    # Values within max_abs_value each, whose batch's squared distances still overflow float64:
    # the core refuses the batch (model unchanged), its events are dead letters; an int id too
    # long to write as JSON and a value beyond any float too; the other stream is clustered.
    m = 0.5 * max_abs_value(2)
    corners = [[m, m], [m, -m], [-m, m], [-m, -m]]
    events = [("s", {"id": f"s{i}", "x": corners[i % 4][0], "y": corners[i % 4][1]})
              for i in range(64)]
    events += [("t", {"id": i, "x": float(i % 2), "y": 0.0}) for i in range(64)]
    events += [("t", {"id": 10**5000, "x": 0.0, "y": 0.0}), ("t", {"id": 7, "x": 10**400,
                                                                   "y": 0.0})]
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(events) | ClusterPerKey(2, batch_size=32, id_field="id")
        assert_that(_count_outputs(out), equal_to([("assignment", 64), ("dead", 66)]),
                    label="Count")
        reasons = (out.dead_letters | beam.Map(lambda d: (d.key, d.reason.split(":")[0][:40]))
                   | beam.combiners.Count.PerElement())
        assert_that(reasons, equal_to([
            (("s", "the model refused this event's batch"), 64),
            (("t", "'id' is an int of 16610 bits; ids may ha"), 1),
            (("t", "feature 'x' is too large to cluster (bey"), 1)]), label="Reasons")


def test_validate_events_and_the_handler_refuse_what_they_cannot_score(tmp_path):
    from streamrbf.beam import RBFModelHandler, ValidateEvents

    with beam.Pipeline(runner="FnApiRunner") as p:
        good, bad = p | beam.Create([[1.0, 2.0], [10**400, 1.0]]) | ValidateEvents()
        assert_that(good, equal_to([(1.0, 2.0)]), label="Good")
        assert_that(bad | beam.Map(lambda d: d.reason),
                    equal_to(["feature #0 is too large to cluster (beyond any float)"]),
                    label="Bad")
    path = str(tmp_path / "m.safetensors")
    RBFKMeans(2, random_state=0, dtype="float32").fit(
        np.random.default_rng(0).random((50, 3))).save(path)
    handler = RBFModelHandler(path)
    with pytest.raises(ValueError, match="float32 range of the centres"):
        handler.run_inference([[1e39, 0.0, 0.0]], handler.load_model())   # inf in float32
    # A pre-batched block (one 2-D array) holding NaN: the value rule's error, naming the place.
    from streamrbf.core.validation import NonFiniteError

    block = np.zeros((4, 3))
    block[2, 1] = np.nan
    with pytest.raises(NonFiniteError, match="block of shape \\(4, 3\\) contains NaN or "
                       "infinity: NaN at row 2, column 1"):
        handler.run_inference([block], handler.load_model())
    assert len(handler.run_inference([np.zeros((4, 3))], handler.load_model())[0].inference) == 4


def test_building_and_running_the_transforms_logs_no_warning(caplog):
    # Beam logs a warning for an expand() annotated with anything but a PCollection; the
    # transforms' graphs build and run without any warning from streamrbf or about them.
    import logging

    from streamrbf.beam import ClusterGlobally

    events = [(f"k{i % 2}", [float(i % 5), float(i % 3)]) for i in range(60)]
    with caplog.at_level(logging.WARNING):
        with beam.Pipeline(runner="FnApiRunner") as p:
            pairs = p | "Pairs" >> beam.Create(events)
            _ = pairs | ClusterPerKey(2, batch_size=10, warmup=10)
            _ = (pairs | "Values" >> beam.Values()
                 | ClusterGlobally(2, steps=1, n_features=2, n_shards=2))
    ours = [r for r in caplog.records if "streamrbf" in r.getMessage() or "type hint" in
            r.getMessage() or r.name.startswith("streamrbf")]
    assert ours == [], [r.getMessage() for r in ours]


def test_model_stage_dead_letters_carry_the_event_id():
    # With an id_field every model-stage dead letter names its event (DeadLetter.event_id, the
    # "id" of to_json), however long the event; without one, event_id is None.
    events = [("a", {"id": f"a{i}", "x": float(i % 2) * 5}) for i in range(20)]
    events += [("short", {"id": 99, "x": 1.0}),  # a stream too short to cluster
               ("a", {"id": "wide", "x": 1.0, "y": 2.0}),  # not the stream's features
               ("b", {"id": "long", **{f"f{j:04d}": 1.0 for j in range(400)}})]
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(events) | ClusterPerKey(2, batch_size=10, warmup=10,
                                                      id_field="id")
        assert_that(out.dead_letters | beam.Map(lambda d: (d.event_id, d.stage,
                                                           json.loads(d.to_json())["id"])),
                    equal_to([(99, "model", 99), ("wide", "model", "wide"),
                              ("long", "model", "long")]))
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([("s", [1.0])]) | ClusterPerKey(2, batch_size=10, warmup=10)
        assert_that(out.dead_letters | beam.Map(lambda d: (d.event_id, "id" in d.to_json())),
                    equal_to([(None, False)]))
