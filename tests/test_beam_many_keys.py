"""ClusterManyKeys: a shard's streams in one bank, each chunk scored and learnt in one call."""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pytest

from streamrbf.beam import ClusterManyKeys
from streamrbf.beam.many_keys import ShardChunk, ShardStateCoder, _BankDoFn
from streamrbf.core.policy import Policy


def _events(n_keys, per_key, d, k, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (n_keys, k, d))
    keys = np.repeat(np.arange(n_keys), per_key)
    rng.shuffle(keys)
    y = rng.integers(0, k, keys.size)
    X = centres[keys, y] + rng.normal(0, 0.5, (keys.size, d))
    return [(f"s{key}", row) for key, row in zip(keys.tolist(), X.tolist(), strict=True)], y


def _dump(items, path):
    with open(path, "w") as f:
        json.dump(items, f)


def _collect(pcoll, path, to_json):
    """Write a collection's elements (as JSON values) to ``path`` (the pipeline's functions
    run on pickled copies: a list filled in a lambda stays empty here)."""
    _ = (pcoll | f"J{path}" >> beam.Map(to_json) | f"L{path}" >> beam.combiners.ToList()
         | f"W{path}" >> beam.Map(_dump, path))


def _assignment(kv):
    key, a = kv
    return [key, a.cluster, {str(c): v for c, v in a.memberships.items()}, a.distance,
            a.temperature, a.event_id]


def _run(events, tmp_path, output="events", **kw):
    a_path, d_path = str(tmp_path / "a.json"), str(tmp_path / "d.json")
    with beam.Pipeline(runner="FnApiRunner") as p:
        res = p | beam.Create(events, reshuffle=False) | ClusterManyKeys(output=output, **kw)
        assigned = res.assignments
        if output == "batches":
            assigned = assigned | beam.FlatMap(lambda kv: [(kv[0], a) for a in kv[1]])
        _collect(assigned, a_path, _assignment)
        _collect(res.dead_letters, d_path, lambda d: [d.key, d.reason])
    with open(a_path) as fa, open(d_path) as fd:
        return json.load(fa), json.load(fd)


def test_every_event_leaves_once_and_bad_ones_say_why(tmp_path):
    events, _ = _events(20, 50, 3, 2, 0)
    bad = [("s1", [1.0, "x", 2.0]), ("s2", [1.0, 2.0]), ("", [1.0, 2.0, 3.0]),
           ("s3", [1e200, 0.0, 0.0]), ("s4", [float("nan"), 0.0, 0.0])]
    assigned, dead = _run(events + bad, tmp_path, n_clusters=2, shards=3)
    assert len(assigned) == len(events) and len(dead) == len(bad)
    reasons = " | ".join(sorted(reason for _, reason in dead))
    assert "3 features" in reasons and "too large" in reasons and "key" in reasons


def test_a_keys_assignments_do_not_depend_on_the_sharding(tmp_path):
    events, _ = _events(12, 60, 2, 3, 1)
    one, _ = _run(events, tmp_path, n_clusters=3, shards=1)
    many, _ = _run(events, tmp_path, n_clusters=3, shards=5)

    def per_key(a):
        out = {}
        for key, cluster, _, distance, _, _ in a:
            out.setdefault(key, []).append((cluster, round(distance, 9)))
        return out

    assert len(one) == len(events) and per_key(one) == per_key(many)


def test_streams_cluster_their_own_blobs_from_their_first_events(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    events, y = _events(30, 80, 4, 3, 2)
    assigned, _ = _run(events, tmp_path, n_clusters=3, shards=4)
    by_key: dict = {}
    for (key, _), label in zip(events, y.tolist(), strict=True):
        by_key.setdefault(key, []).append(label)
    got: dict = {}
    for key, cluster, *_ in assigned:  # (arrival order within a key)
        got.setdefault(key, []).append(cluster)
    aris = [adjusted_rand_score(by_key[k], got[k]) for k in by_key]
    assert np.mean(aris) > 0.95


def test_batches_carry_the_same_numbers_as_events(tmp_path):
    events, _ = _events(10, 60, 2, 2, 3)
    ev, _ = _run(events, tmp_path, n_clusters=2, shards=2)
    batches, _ = _run(events, tmp_path, output="batches", n_clusters=2, shards=2)
    def per_key(a):  # each key's assignments in arrival order
        out: dict = {}
        for row in a:
            out.setdefault(row[0], []).append(row)
        return out

    assert len(ev) == len(events) and per_key(batches) == per_key(ev)


class _State:
    def __init__(self, value=None):
        self.value = value

    def read(self):
        return self.value

    def write(self, v):
        self.value = v


def _dofn(**kw):
    args = dict(policy=Policy(n_clusters=2), warmup=8, seed=0, max_streams=100, drift=True,
                ttl_secs=None, snapshot_every=0, clock=lambda: 0.0, id_field=None)
    args.update(kw)
    return _BankDoFn(**args)


def _chunk(rows, keys):
    return ShardChunk(None, np.asarray(rows, dtype=np.float64), list(keys), None)


def test_a_retried_chunk_gives_the_same_bytes_and_leaves_the_read_state_alone():
    rng = np.random.default_rng(4)
    coder = ShardStateCoder()
    fn = _dofn()
    st = _State()
    list(fn.process((0, _chunk(rng.normal(size=(40, 2)), ["a", "b"] * 20)), st))
    committed = coder.encode(st.value)
    chunk = _chunk(rng.normal(size=(30, 2)), ["a", "c", "b"] * 10)
    outs = []
    for _ in range(2):
        retry = _State(coder.decode(committed))
        held = retry.value
        outs.append((list(fn.process((0, chunk), retry)), coder.encode(retry.value)))
        assert coder.encode(held) == committed  # the read state object is not changed
    assert repr(outs[0][0]) == repr(outs[1][0]) and outs[0][1] == outs[1][1]


def test_the_shard_state_round_trips_in_a_few_hundred_bytes_per_stream():
    rng = np.random.default_rng(5)
    fn = _dofn(policy=Policy(n_clusters=4), warmup=32, max_streams=1000)
    st = _State()
    keys = [f"k{i}" for i in range(300)] * 40
    list(fn.process((0, _chunk(rng.normal(size=(len(keys), 16)), keys)), st))
    coder = ShardStateCoder()
    data = coder.encode(st.value)
    back = coder.decode(data)
    assert coder.encode(back) == data and back.bank.n_streams == 300
    assert len(data) / 300 < 700  # float32 centres (256 B) and the rest of a stream's record


def test_a_bad_event_touches_no_other_stream():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(60, 2))
    keys = ["a", "b", "c"] * 20
    clean, dirty = _State(), _State()
    list(_dofn().process((0, _chunk(X, keys)), clean))
    list(_dofn().process((0, _chunk(X, keys)), clean))
    X2 = X.copy()
    X2[7, 0] = 1e300  # a value too large for key "b"
    list(_dofn().process((0, _chunk(X, keys)), dirty))
    out = list(_dofn().process((0, _chunk(X2, keys)), dirty))
    dead = [o for o in out if getattr(o, "tag", None) == "dead_letters"]
    assert len(dead) == 1
    ca, cd = clean.value.bank, dirty.value.bank
    for key in ("a", "c"):
        assert np.array_equal(ca.state.centers[ca.row_of(key)], cd.state.centers[cd.row_of(key)])


def test_idle_streams_expire_after_the_ttl():
    now = [0.0]
    fn = _dofn(ttl_secs=10.0, clock=lambda: now[0])
    st = _State()
    list(fn.process((0, _chunk(np.zeros((4, 2)), ["a", "a", "b", "b"])), st))
    now[0] = 5.0
    list(fn.process((0, _chunk(np.ones((2, 2)), ["a", "a"])), st))
    now[0] = 12.0
    list(fn.process((0, _chunk(np.ones((2, 2)), ["a", "a"])), st))
    assert list(st.value.bank.slots) == ["a"]


def test_parameters_are_checked_when_the_transform_is_built():
    with pytest.raises(ValueError, match="shards"):
        ClusterManyKeys(2, shards=0)
    with pytest.raises(ValueError, match="output"):
        ClusterManyKeys(2, output="rows")
    with pytest.raises(TypeError, match="temprature"):
        ClusterManyKeys(2, temprature=1.0)
    with pytest.raises(ValueError, match="k-means"):
        ClusterManyKeys(2, init=np.zeros((2, 2)))


def test_ids_travel_with_their_events(tmp_path):
    events = [("a", {"id": f"e{i}", "x": float(i % 2) * 3}) for i in range(40)]
    assigned, dead = _run(events + [("a", {"x": 1.0})], tmp_path, n_clusters=2, shards=2,
                          id_field="id")
    assert sorted(a[5] for a in assigned) == sorted(f"e{i}" for i in range(40))
    assert len(dead) == 1 and "id" in dead[0][1]
    clusters = {a[5]: a[1] for a in assigned}
    assert len({clusters[f"e{i}"] for i in range(0, 40, 2)}) == 1



@pytest.mark.parametrize("device", ["cpu", pytest.param(
    "cuda", marks=pytest.mark.skipif(not __import__("torch").cuda.is_available(),
                                     reason="no CUDA device"))])
def test_chunks_stepped_on_a_torch_device_equal_the_cpu_kernels(device):
    rng = np.random.default_rng(7)
    keys = [f"k{i % 30}" for i in range(3000)]
    X = rng.normal(size=(3000, 4)) + 3.0 * (np.arange(3000) % 2)[:, None]
    host, dev = _State(), _State()
    a = b = None
    for s in range(0, 3000, 500):
        a = list(_dofn().process((0, _chunk(X[s:s + 500], keys[s:s + 500])), host))
        b = list(_dofn(device=device).process((0, _chunk(X[s:s + 500], keys[s:s + 500])), dev))
        assert [x[1].cluster for x in a] == [x[1].cluster for x in b]
    np.testing.assert_allclose(dev.value.bank.state.centers, host.value.bank.state.centers,
                               rtol=1e-4, atol=1e-4)
    assert a is not None and b is not None


def test_values_beyond_the_banks_float32_centres_are_dead_letters_not_a_crash(tmp_path):
    # values a float64 model could take but float32 centres cannot (and whose squared
    # distances would overflow): dead letters naming the feature; the other stream is clustered
    from streamrbf.core.validation import max_abs_value

    m = 0.5 * max_abs_value(2)
    corners = [[m, m], [m, -m], [-m, m], [-m, -m]]
    events = [("s", corners[i % 4]) for i in range(64)]
    events += [("t", [float(i % 2), 0.0]) for i in range(64)] + [("t", [1e39, 0.0])]
    assigned, dead = _run(events, tmp_path, n_clusters=2, shards=1)
    assert len(assigned) == 64 and {k for k, *_ in assigned} == {"t"}
    assert len(dead) == 65 and all("float32 range" in reason for _, reason in dead)
