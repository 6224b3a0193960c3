"""A stream's sample and the split and merge moves partial_fit makes on it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from streamrbf import RBFKMeans
from streamrbf.core.policy import Policy
from streamrbf.core.sample import StreamSample, sample_size
from streamrbf.core.state import ModelState


def _kept_indices(sample_half_life, n=20_000, size=1_000, seed=0):
    rng = np.random.default_rng(seed)
    s = StreamSample(size, sample_half_life)
    X = np.arange(n, dtype=float)[:, None]
    for lo in range(0, n, 500):
        s.add(X[lo:lo + 500], None, rng)
    return s.rows[:, 0]


def test_without_forgetting_the_sample_is_uniform_and_with_it_recent():
    uniform = _kept_indices(None)
    assert len(uniform) == 1000 and abs(uniform.mean() / 20_000 - 0.5) < 0.05
    recent = _kept_indices(2_000.0)
    assert recent.mean() > 0.75 * 20_000  # weights double every 2,000 events (uniform: 0.5)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), size=st.integers(1, 50), zeros=st.integers(0, 300))
def test_the_sample_keeps_at_most_its_size_and_never_a_row_of_weight_zero(n, size, zeros):
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, 2))
    w = np.ones(n)
    w[: min(zeros, n)] = 0.0
    s = StreamSample(size, 100.0)
    s.add(X, w, rng)
    assert len(s.rows) == min(size, int((w > 0).sum()))
    zero_rows = {tuple(r) for r in X[w == 0]}
    assert not any(tuple(r) in zero_rows for r in s.rows)


def test_sample_size_follows_clusters_and_features_within_its_bounds():
    assert sample_size(8, 16) == 4096
    assert sample_size(50, 8) == 10_000 and sample_size(100, 2) == 16_384
    assert sample_size(10, 300) == 6_990  # 16 MB of float64 rows
    assert sample_size(1, 10**9) == 1


def _stream(X, k, seed, **params):
    m = RBFKMeans(k, random_state=seed, **params)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        order = rng.permutation(len(X))
        for lo in range(0, len(X), 256):
            m.partial_fit(X[order[lo:lo + 256]])
    return m


def _uneven_blobs(seed=0, k=20, n=3000, d=6):
    rng = np.random.default_rng(seed)
    sizes = rng.multinomial(n - 10 * k, rng.dirichlet(np.ones(k))) + 10
    centres = rng.uniform(-10, 10, (k, d))
    spreads = rng.uniform(0.3, 3.0, k)
    return np.concatenate([c + s * rng.normal(size=(m, d))
                           for c, s, m in zip(centres, spreads, sizes, strict=True)])


def test_a_stream_finds_what_kmeans_with_ten_restarts_finds():
    # uneven sizes and spreads: the first batch's start leaves centres to move between clusters
    X = _uneven_blobs()
    best = KMeans(20, n_init=10, random_state=0).fit(X).inertia_
    moved = [-_stream(X, 20, s).score(X) / best for s in range(3)]
    still = [-_stream(X, 20, s, split_merge=False).score(X) / best for s in range(3)]
    assert max(moved) <= 1.03 and np.mean(moved) < np.mean(still)


def test_the_stream_is_reproducible_and_split_merge_off_keeps_no_sample():
    X = _uneven_blobs(1, k=5, n=1500)
    a, b = _stream(X, 5, 3), _stream(X, 5, 3)
    assert a.cluster_centers_.tobytes() == b.cluster_centers_.tobytes()
    assert a._sample == b._sample and a._sample is not b._sample
    assert a._sample is not None and len(a._sample.rows) == min(len(X) * 3, sample_size(5, 6))
    assert _stream(X, 5, 3, split_merge=False)._sample is None


def test_moves_that_fit_the_latest_batch_worse_are_refused():
    # after a jump the sample still holds the old regime: Lloyd on it would pull the centres
    # back to the mixture, which the latest batch (the new regime) refuses
    rng = np.random.default_rng(0)
    old = np.concatenate([rng.normal(0, 0.3, (400, 1)), rng.normal(10, 0.3, (400, 1))])
    new = old + 5.0
    s = StreamSample(size=800, half_life=None)
    s.add(old, None, rng)
    s.add(new[:200], None, rng)
    state = ModelState.single(np.array([[5.0], [15.0]]), np.full(2, 100.0), temperature=0.01)
    before = state.centers.copy()
    assert not s.refine(state, Policy(n_clusters=2), rng, latest=(new[200:], None))
    np.testing.assert_array_equal(state.centers, before)
    # without the check the same moves are taken, and they move the centres off the new regime
    assert s.refine(state, Policy(n_clusters=2), rng)
    assert np.abs(np.sort(state.centers[:, 0]) - [5.0, 15.0]).max() > 1.0


def test_moves_happen_at_doublings_of_the_events_seen():
    rng = np.random.default_rng(0)
    s = StreamSample(size=100, half_life=None)
    due = []
    for _ in range(20):
        s.add(rng.normal(size=(50, 2)), None, rng)
        due.append(s.due())
    # the first batch (50 events) sets the schedule: moves after 100, 200, 400 and 800 events
    assert [i + 1 for i, d in enumerate(due) if d] == [2, 4, 8, 16]


def test_a_stream_after_fit_or_a_load_starts_its_sample_with_its_next_batch(tmp_path):
    X = _uneven_blobs(2, k=6, n=1200)
    fitted = RBFKMeans(6, random_state=0).fit(X[:600])
    assert fitted._sample is None  # fit keeps no sample: its moves ran on all its data
    fitted.save(tmp_path / "m.safetensors")
    loaded = RBFKMeans.load(tmp_path / "m.safetensors")
    for model in (fitted, loaded):
        model.partial_fit(X[600:900])
        assert model._sample is not None and model._sample.seen == 300
    assert fitted._sample == loaded._sample  # the same draws: from the model's seed and steps


def test_a_loaded_stream_goes_on_as_the_saved_one_would(tmp_path):
    X = _uneven_blobs(3, k=8, n=4000)
    a = RBFKMeans(8, random_state=0)
    for s in range(0, 1536, 256):
        a.partial_fit(X[s:s + 256])
    a.save(tmp_path / "with.safetensors")
    a.save(tmp_path / "without.safetensors", sample=False)
    b = RBFKMeans.load(tmp_path / "with.safetensors")
    c = RBFKMeans.load(tmp_path / "without.safetensors")
    assert b._sample == a._sample and b._sample is not a._sample and c._sample is None
    assert (tmp_path / "with.safetensors").stat().st_size > a._sample.rows.nbytes \
        > 10 * (tmp_path / "without.safetensors").stat().st_size
    for s in range(1536, len(X), 256):  # past the next doubling (2,048 events): moves
        for model in (a, b, c):
            model.partial_fit(X[s:s + 256])
    assert a.cluster_centers_.tobytes() == b.cluster_centers_.tobytes()
    assert a._sample == b._sample and c._sample != a._sample  # (c's began after the load)


def _saved_sample(tmp_path, **changes):
    from streamrbf.core.persistence import save_state

    rng = np.random.default_rng(0)
    s = StreamSample(size=50, half_life=200.0)
    s.add(rng.normal(size=(80, 2)), None, rng)
    fields, tensors = s.record()
    fields.update({k: v for k, v in changes.items() if not k.startswith("sample_")})
    tensors.update({k: v for k, v in changes.items() if k.startswith("sample_")})
    m = RBFKMeans(3, random_state=0).fit(rng.normal(size=(30, 2)))
    path = tmp_path / "m.safetensors"
    save_state(path, "RBFKMeans", m._state, m._file_params(),
               {**m._file_extra(), "sample": fields}, tensors)
    return path, s


def test_a_saved_sample_is_read_back_whole(tmp_path):
    path, s = _saved_sample(tmp_path)
    assert RBFKMeans.load(path)._sample == s


@pytest.mark.parametrize("changes, says", [
    ({"size": 0}, "sample size must be an int in [1, 16384] for 2 features, got 0"),
    ({"size": 10**6}, "sample size must be an int"),
    ({"size": 10}, "with n <= 10"),  # more rows than the size
    ({"size": "50"}, "sample size must be an int"),
    ({"half_life": -1.0}, "sample half_life must be None or a finite number > 0"),
    ({"half_life": True}, "sample half_life"),
    ({"seen": 10}, "sample seen (10) is below its 50 rows"),
    ({"seen": -1}, "sample seen must be an int in [0, 2**63)"),
    ({"next_refine": 2**63}, "sample next_refine must be an int"),
    ({"sample_rows": np.zeros((50, 3))}, "sample tensors must be rows (n, 2)"),
    ({"sample_keys": np.zeros(49)}, "sample tensors must be rows (n, 2)"),
    ({"sample_keys": np.zeros((50, 1))}, "sample tensors must be rows (n, 2)"),
    ({"sample_rows": np.zeros(50)}, "sample tensors must be rows (n, 2)"),
])
def test_a_bad_sample_in_a_file_is_refused_naming_the_file_and_the_field(tmp_path, changes,
                                                                         says):
    path, _ = _saved_sample(tmp_path, **changes)
    with pytest.raises(ValueError) as err:
        RBFKMeans.load(path)
    assert str(path) in str(err.value) and says in str(err.value)


def test_a_sample_without_its_tensors_is_refused(tmp_path):
    from streamrbf.core.persistence import save_state

    rng = np.random.default_rng(0)
    m = RBFKMeans(3, random_state=0).fit(rng.normal(size=(30, 2)))
    fields = {"size": 50, "half_life": None, "seen": 0, "next_refine": 0}
    path = tmp_path / "m.safetensors"
    save_state(path, "RBFKMeans", m._state, m._file_params(), {**m._file_extra(),
                                                               "sample": fields})
    with pytest.raises(ValueError, match="sample_rows and sample_keys are missing"):
        RBFKMeans.load(path)


@settings(max_examples=60, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(["size", "half_life", "seen", "next_refine"]),
                              st.one_of(st.none(), st.booleans(), st.integers(-5, 2**64),
                                        st.floats(allow_nan=True), st.text(max_size=3)),
                              max_size=4),
       n=st.integers(0, 4), width=st.integers(0, 3))
def test_sample_fields_are_read_or_refused_with_a_value_error(fields, n, width):
    tensors = {"sample_rows": np.zeros((n, width)), "sample_keys": np.zeros(n)}
    try:
        s = StreamSample.from_record(fields, tensors, n_features=2)
    except ValueError:
        return
    assert 1 <= s.size <= 16384 and len(s.rows) == len(s.keys) <= s.size <= 16384
    assert s.seen >= len(s.rows) and (not len(s.rows) or s.rows.shape[1] == 2)


def test_a_sample_record_is_held_to_the_byte_limit_of_its_width():
    fields = {"size": 16384, "half_life": None, "seen": 0, "next_refine": 0}
    empty = {"sample_rows": np.zeros((0, 2000)), "sample_keys": np.zeros(0)}
    with pytest.raises(ValueError, match=r"int in \[1, 1048\] for 2000 features, got 16384"):
        StreamSample.from_record(fields, empty, n_features=2000)
    assert sample_size(3, 2000) == 1048
    assert StreamSample.from_record({**fields, "size": 1048}, empty, n_features=2000).size == 1048


def test_a_stream_whose_moves_are_turned_off_drops_its_sample(tmp_path):
    X = _uneven_blobs(4, k=5, n=2000)
    m = RBFKMeans(5, random_state=0)
    for s in range(0, 1024, 256):
        m.partial_fit(X[s:s + 256])
    assert m._sample is not None
    m.set_params(split_merge=False)
    m.save(tmp_path / "m.safetensors")  # no sample written: the model makes no moves
    assert RBFKMeans.load(tmp_path / "m.safetensors")._sample is None
    m.partial_fit(X[1024:1280])
    assert m._sample is None
