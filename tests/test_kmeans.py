"""RBFKMeans: the scikit-learn contract, inputs, safety, persistence, streaming and quality."""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.utils.estimator_checks import parametrize_with_checks

from streamrbf import NotFittedError, RBFKMeans, TemperatureSchedule
from streamrbf.core import engine
from streamrbf.core.state import ModelState


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(1000, centers=4, n_features=3, cluster_std=0.5, random_state=0)
    return X, y


def state_of(model: RBFKMeans) -> dict:
    """Everything a call could change, deep-copied."""
    return copy.deepcopy(
        {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in vars(model).items()}
    )


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        elif isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k])
        elif isinstance(a[k], ModelState):
            assert_same_record(a[k], b[k])
        else:
            assert a[k] == b[k], k


def assert_same_record(a: ModelState, b: ModelState) -> None:
    for field in dataclasses.fields(a):
        value, other = getattr(a, field.name), getattr(b, field.name)
        name = field.name
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), name
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, other, err_msg=name)
        else:
            assert value == other, name


def on_torch(state: ModelState) -> ModelState:
    """The record with its centres and masses as (CPU) torch tensors: the engine then takes the
    path it takes on accelerators."""
    out = copy.deepcopy(state)
    out.centers, out.masses = torch.from_numpy(out.centers), torch.from_numpy(out.masses)
    return out


# The checks scikit-learn's own KMeans and MiniBatchKMeans also fail, and why. (Every other
# check runs and passes; check_array_api_input skips itself unless SCIPY_ARRAY_API=1 and the
# optional array-api-strict package are there.)
EXPECTED_CHECK_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data":
        "the seedings draw from weighted rows and from repeated rows in different random "
        "streams (scikit-learn marks KMeans and MiniBatchKMeans the same way)",
    "check_sample_weight_equivalence_on_sparse_data":
        "the seedings draw from weighted rows and from repeated rows in different random "
        "streams (scikit-learn marks KMeans and MiniBatchKMeans the same way)",
    "check_estimator_sparse_array":
        "the check takes any estimator with predict_proba for a classifier (it reads "
        "classifier tags a clusterer has not); the same inputs are tested in "
        "test_every_sparse_format_is_taken_or_refused_by_name, and tests/sklearn_suite",
    "check_estimator_sparse_matrix":
        "the check takes any estimator with predict_proba for a classifier (it reads "
        "classifier tags a clusterer has not); the same inputs are tested in "
        "test_every_sparse_format_is_taken_or_refused_by_name, and tests/sklearn_suite",
}


@parametrize_with_checks([RBFKMeans()], expected_failed_checks=lambda est: EXPECTED_CHECK_FAILURES)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_fit_finds_separated_blobs_and_exposes_fitted_attributes(blobs):
    X, y = blobs
    km = RBFKMeans(4, random_state=0).fit(X)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(y, km.labels_) == 1.0
    assert km.cluster_centers_.shape == (4, 3) and km.counts_.shape == (4,)
    assert km.n_features_in_ == 3 and km.n_steps_ == km.n_iter_ >= 1
    assert km.inertia_ == pytest.approx(-km.score(X))
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    P = km.predict_proba(X)
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-12)
    assert (P == 0).mean() > 0.5  # entmax: exact zeros
    np.testing.assert_array_equal(P.argmax(1), km.labels_)
    D = km.transform(X)
    np.testing.assert_allclose(D.min(1) ** 2, ((X - km.cluster_centers_[km.labels_]) ** 2).sum(1))


def test_not_fitted_error_before_fit():
    with pytest.raises(NotFittedError, match="not fitted"):
        RBFKMeans().predict(np.zeros((2, 2)))


def test_same_seed_same_result_and_different_seed_can_differ(blobs):
    X, _ = blobs
    a = RBFKMeans(4, random_state=7).fit(X).cluster_centers_
    b = RBFKMeans(4, random_state=7).fit(X).cluster_centers_
    np.testing.assert_array_equal(a, b)
    s1, s2 = RBFKMeans(4, random_state=3), RBFKMeans(4, random_state=3)
    for lo in range(0, 1000, 100):
        s1.partial_fit(X[lo : lo + 100])
        s2.partial_fit(X[lo : lo + 100])
    np.testing.assert_array_equal(s1.cluster_centers_, s2.cluster_centers_)
    assert s1.temperature_ == s2.temperature_


def test_temperature_anneals_per_step_and_can_be_reheated(blobs):
    X, _ = blobs
    km = RBFKMeans(4, initial_temperature=10.0, temperature_decay=0.5, min_temperature=1.0,
                   random_state=0)
    km.partial_fit(X[:200])
    t0 = km.temperature_
    km.partial_fit(X[200:400])
    assert km.temperature_ == pytest.approx(max(t0 * 0.5, 1.0))
    for lo in range(400, 1000, 100):
        km.partial_fit(X[lo : lo + 100])
    assert km.temperature_ == 1.0
    assert km.reheat(4.0) == 4.0 and km.temperature_ == 4.0
    assert km.reheat() == 10.0


def test_torch_tensors_stay_tensors_and_float32_stays_float32(blobs):
    X, _ = blobs
    Xt = torch.from_numpy(X).float()
    km = RBFKMeans(4, random_state=0).fit(Xt)
    assert km.centers_tensor_.dtype == torch.float32 and km.cluster_centers_.dtype == np.float32
    labels = km.predict(Xt)
    assert isinstance(labels, torch.Tensor) and labels.device == Xt.device
    assert isinstance(km.predict_proba(Xt), torch.Tensor)
    np.testing.assert_array_equal(labels.numpy(), km.predict(X.astype(np.float32)))


def test_dataframes_record_feature_names_and_reject_others(blobs):
    X, _ = blobs
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    km = RBFKMeans(4, random_state=0).fit(df)
    np.testing.assert_array_equal(km.feature_names_in_, ["a", "b", "c"])
    with pytest.raises(ValueError, match="feature names should match"):
        km.predict(df.rename(columns={"c": "z"}))
    with pytest.raises(TypeError, match="column 'c'"):
        km.predict(df.assign(c="x"))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        km.predict(X)


BAD_BATCHES = {
    "nan": (np.array([[0.0, np.nan, 1.0]]), ValueError, "NaN"),
    "inf": (np.array([[0.0, 1.0, np.inf]]), ValueError, "infinity"),
    "wrong width": (np.zeros((3, 2)), ValueError, "X has 2 features, but RBFKMeans is expecting 3"),
    "1-d": (np.zeros(3), ValueError, "Expected 2D array"),
    "empty": (np.zeros((0, 3)), ValueError, "0 sample"),
    "strings": (np.array([["a", "b", "c"]]), ValueError, "real numbers"),
    "objects": (np.array([[{}, 1, 2]], dtype=object), TypeError, "real numbers"),
    "complex": (np.ones((2, 3), dtype=complex), ValueError, "Complex"),
    # finite, but its squared distances would overflow float64: the value rule refuses it
    "too large": (np.array([[1e200, 0.0, 1.0], [0.0, 0.0, 0.0]]), ValueError,
                  "feature #0 = 1e\\+200 is too large to cluster"),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
@pytest.mark.parametrize("method", ["partial_fit", "predict", "predict_proba", "score"])
def test_bad_input_raises_a_clear_error_and_changes_nothing(blobs, case, method):
    X, _ = blobs
    km = RBFKMeans(4, random_state=0).partial_fit(X[:300])
    before = state_of(km)
    bad, err, msg = BAD_BATCHES[case]
    with pytest.raises(err, match=msg):
        getattr(km, method)(bad)
    assert_same_state(before, state_of(km))


@pytest.mark.parametrize("method", ["fit", "partial_fit", "score_then_learn", "statistics"])
def test_values_whose_distances_overflow_are_refused(blobs, method):
    X, _ = blobs
    km = RBFKMeans(4, random_state=0).partial_fit(X[:300])
    before = state_of(km)
    bad = X[:50].copy()
    bad[7, 1] = -3e170
    with pytest.raises(ValueError, match="feature #1 = -3e\\+170 is too large to cluster .* "
                       "\\(row 7\\)"):
        getattr(km, method)(bad)
    if method != "fit":
        assert_same_state(before, state_of(km))
    # ... while large values whose distances fit are clustered as usual.
    ok = RBFKMeans(2, random_state=0).fit([[1e150, 0.0], [1.01e150, 0.0], [0.0, 1.0], [0.0, 2.0]])
    assert np.isfinite(ok.cluster_centers_).all() and np.isfinite(ok.inertia_)
    assert sorted(ok.labels_.tolist()) == [0, 0, 1, 1]


def test_a_float32_model_measures_values_near_float32s_limit_in_float64():
    # 7e19**2 overflows float32, not float64: the answers must match a float64 model's.
    C = np.array([[1e19], [6e19]], np.float32)
    X = np.array([[7e19], [0.5e19]], np.float32)
    km = RBFKMeans.from_state(C, np.ones(2), TemperatureSchedule(1.0))
    ref = RBFKMeans.from_state(C.astype(np.float64), np.ones(2), TemperatureSchedule(1.0))
    assert km.cluster_centers_.dtype == np.float32
    assert km.predict(X).tolist() == ref.predict(X).tolist() == [1, 0]
    np.testing.assert_allclose(km.transform(X), ref.transform(X), rtol=1e-6)
    np.testing.assert_allclose(km.predict_proba(X), ref.predict_proba(X), atol=1e-6)
    assert np.isfinite(km.score(X))


@given(
    st.integers(0, 99),
    st.integers(0, 2),
    st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_a_single_bad_value_anywhere_is_refused(row, col, value):
    X, _ = make_blobs(100, centers=3, n_features=3, random_state=1)
    km = RBFKMeans(3, random_state=0).partial_fit(X)
    before = state_of(km)
    bad = X.copy()
    bad[row, col] = value
    with pytest.raises(ValueError, match=f"row {row}, column {col}"):
        km.partial_fit(bad)
    assert_same_state(before, state_of(km))


@given(
    scale_exp=st.integers(-8, 8),
    temp_exp=st.integers(-12, 2),
    dtype=st.sampled_from([np.float32, np.float64]),
    mapping=st.sampled_from(["entmax15", "softmax", "hard"]),
    seed=st.integers(0, 1000),
)
def test_no_nan_or_inf_ever_reaches_the_state(scale_exp, temp_exp, dtype, mapping, seed):
    rng = np.random.default_rng(seed)
    scale = 10.0**scale_exp
    X = (rng.normal(size=(120, 4)) * scale).astype(dtype)
    t = 10.0**temp_exp * scale**2
    km = RBFKMeans(3, initial_temperature=t, min_temperature=0.0, mapping=mapping,
                   random_state=seed)
    for lo in range(0, 120, 40):
        km.partial_fit(X[lo : lo + 40])
    assert np.isfinite(km.cluster_centers_).all() and np.isfinite(km.counts_).all()
    assert km.temperature_ > 0
    P = km.predict_proba(X)
    assert np.isfinite(P).all()
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-3 if dtype == np.float32 else 1e-9)


def test_save_and_load_round_trip_identically(tmp_path, blobs):
    X, _ = blobs
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    km = RBFKMeans(4, random_state=0, half_life=300).fit(df)
    path = tmp_path / "model.safetensors"
    km.save(path)
    loaded = RBFKMeans.load(path)
    np.testing.assert_array_equal(loaded.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(loaded.predict_proba(df), km.predict_proba(df))
    assert loaded.get_params() == km.get_params() and loaded.temperature_ == km.temperature_
    # Training continues identically, random draws included.
    km.partial_fit(df[:100])
    loaded.partial_fit(df[:100])
    np.testing.assert_array_equal(loaded.cluster_centers_, km.cluster_centers_)


def test_load_refuses_malformed_and_foreign_files(tmp_path, blobs):
    from safetensors.torch import save_file

    from streamrbf.core.persistence import write_model_file

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x04not a model at all")
    with pytest.raises(ValueError, match="not a streamrbf model file"):
        RBFKMeans.load(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a streamrbf model"):
        RBFKMeans.load(foreign)
    other = tmp_path / "other.safetensors"
    write_model_file(other, "SomethingElse", {"w": torch.ones(1)}, {})
    with pytest.raises(ValueError, match="not a 'RBFKMeans' model"):
        RBFKMeans.load(other)
    broken = tmp_path / "broken.safetensors"
    write_model_file(broken, "RBFKMeans", {"centers": torch.ones(2, 2)}, {"params": {}})
    with pytest.raises(ValueError, match="not a valid RBFKMeans model file"):
        RBFKMeans.load(broken)
    with pytest.raises(FileNotFoundError):
        RBFKMeans.load(tmp_path / "missing.safetensors")


def _tampered(tmp_path, km, edit_meta=None, edit_tensors=None, version=None):
    """A copy of ``km``'s model file with its header or tensors edited."""
    import json as _json

    from safetensors import safe_open
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    km.save(good)
    with safe_open(str(good), framework="pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    info = _json.loads(header["streamrbf"])
    if edit_meta:
        edit_meta(info["meta"])
    if edit_tensors:
        edit_tensors(tensors)
    if version is not None:
        info["version"] = version
    bad = tmp_path / "tampered.safetensors"
    save_file(tensors, str(bad), metadata={"streamrbf": _json.dumps(info)})
    return bad


def _state_field(name, value):
    return lambda m: m["state"].update({name: value})


TAMPERED = {
    "a seed out of range": (_state_field("seed", [-1]), None, None, "seed must be"),
    "a seed that is not an int": (_state_field("seed", ["random"]), None, None, "seed must be"),
    "infinite temperature": (
        _state_field("temperature", [float("inf")]), None, None, "temperature must be"),
    "negative temperature": (_state_field("temperature", [-1.0]), None, None, "temperature must"),
    "temperatures of another bank": (
        _state_field("temperature", [1.0, 1.0]), None, None, "the header has 2 models"),
    "negative masses": (
        None, lambda t: t.update(masses=-t["masses"]), None, "masses must be >= 0"),
    "integer centres": (
        None, lambda t: t.update(centers=t["centers"].to(torch.int64)), None, "float32 or"),
    "float16 centres": (
        None, lambda t: t.update(centers=t["centers"].to(torch.float16)), None, "float32 or"),
    "version true": (None, None, True, "format version True"),
    "negative n_steps": (_state_field("n_steps", [-3]), None, None, "n_steps must be"),
    "float n_steps": (_state_field("n_steps", [2.5]), None, None, "n_steps must be"),
    "feature names of the wrong length": (
        _state_field("feature_names", ["a"]), None, None, "feature_names must be"),
    "a param the estimator does not have": (
        lambda m: m["params"].update(bogus=1), None, None, "bogus"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_load_refuses_invalid_state_and_calls_nothing_it_names(tmp_path, blobs, case):
    X, _ = blobs
    km = RBFKMeans(4, random_state=0).fit(pd.DataFrame(X, columns=["a", "b", "c"]))
    edit_meta, edit_tensors, version, msg = TAMPERED[case]
    bad = _tampered(tmp_path, km, edit_meta, edit_tensors, version)
    np.random.seed(123)
    expected_global = np.random.random()
    np.random.seed(123)
    with pytest.raises(ValueError, match=msg):
        RBFKMeans.load(bad)
    # np.random.seed() was called by name from the file before: the global generator was reseeded
    assert np.random.random() == expected_global


def test_saved_model_files_get_the_usual_file_mode(tmp_path, blobs):
    # Model files were created 0600 (mkstemp), unreadable by a serving process of another user.
    import stat

    X, _ = blobs
    path = tmp_path / "m.safetensors"
    RBFKMeans(4, random_state=0).fit(X).save(path)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_pickle_and_clone_of_a_fitted_model(blobs):
    from sklearn.base import clone

    X, _ = blobs
    km = RBFKMeans(4, random_state=0).fit(X)
    again = pickle.loads(pickle.dumps(km))
    np.testing.assert_array_equal(again.predict(X), km.predict(X))
    fresh = clone(km)
    assert fresh.get_params() == km.get_params() and not hasattr(fresh, "_state")


def test_dead_centres_are_reseeded_on_poorly_served_points():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.1, (300, 2)), rng.normal(20, 0.1, (300, 2))])
    far = np.array([[0.0, 0.0], [0.1, 0.0], [1000.0, 1000.0]])  # a centre nobody will use
    km = RBFKMeans(3, init=far, initial_temperature=0.01, random_state=0)
    km.partial_fit(X[rng.permutation(600)][:200])
    assert np.abs(km.cluster_centers_).max() < 100  # the dead centre moved onto the data
    full = RBFKMeans(3, init=far, initial_temperature=0.01, max_iter=20).fit(X)
    assert sorted(np.round(full.cluster_centers_[:, 0]).tolist())[-1] == 20.0


def test_forgetting_lets_centres_follow_a_jump():
    rng = np.random.default_rng(0)

    def stream(offset):
        centres = np.array([[0.0, 0.0], [10.0, 10.0]]) + offset
        return centres[rng.integers(0, 2, 200)] + rng.normal(0, 0.5, (200, 2))

    results = {}
    for name, kwargs in {"never": {"half_life": None}, "half-life": {"half_life": 400.0}}.items():
        km = RBFKMeans(2, random_state=0, **kwargs)
        for _ in range(10):
            km.partial_fit(stream(0.0))
        for _ in range(10):
            km.partial_fit(stream(5.0))
        results[name] = np.sort(km.cluster_centers_[:, 0])
    np.testing.assert_allclose(results["half-life"], [5.0, 15.0], atol=0.3)
    assert np.abs(results["never"] - [5.0, 15.0]).max() > 1.0


def test_statistics_of_shards_give_the_same_step_as_partial_fit_without_reseeding(blobs):
    X, _ = blobs
    a = RBFKMeans(4, random_state=0, reassignment_ratio=0.0).partial_fit(X[:300])
    b = copy.deepcopy(a)
    a.partial_fit(X[300:700])
    stats = b.statistics(X[300:500]) + b.statistics(X[500:700])
    b.apply_statistics(stats)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=0, atol=1e-10)
    assert a.temperature_ == b.temperature_ and a.n_steps_ == b.n_steps_


def geometries(seed):
    X, _ = make_blobs(n_samples=3000, centers=5, random_state=seed)
    yield "blobs", X, 5
    yield "anisotropic", X @ np.array([[0.6, -0.64], [-0.41, 0.85]]), 5
    Xv, _ = make_blobs(3000, centers=5, cluster_std=[1.0, 2.5, 0.5, 1.5, 0.8], random_state=seed)
    yield "unequal_variance", Xv, 5


@pytest.mark.parametrize("seed", range(5))
def test_quality_against_kmeans_with_ten_inits(seed):
    for name, X, k in geometries(seed):
        ref = KMeans(k, n_init=10, random_state=seed).fit(X).inertia_
        fit = RBFKMeans(k, random_state=seed).fit(X)
        assert fit.inertia_ <= 1.01 * ref, (name, fit.inertia_ / ref)
        stream = RBFKMeans(k, random_state=seed)
        rng = np.random.default_rng(seed)
        for _ in range(3):
            Xp = X[rng.permutation(len(X))]
            for lo in range(0, len(X), 256):
                stream.partial_fit(Xp[lo : lo + 256])
        assert -stream.score(X) <= 1.03 * ref, (name, -stream.score(X) / ref)


def test_minibatch_fit_and_softmax_and_hard_mappings_also_cluster(blobs):
    from sklearn.metrics import adjusted_rand_score

    X, y = blobs
    for kwargs in ({"batch_size": 128}, {"mapping": "softmax"}, {"mapping": "hard"}):
        km = RBFKMeans(4, random_state=0, **kwargs).fit(X)
        assert adjusted_rand_score(y, km.labels_) == 1.0, kwargs


@pytest.mark.parametrize(
    "params, msg",
    [
        ({"n_clusters": 0}, "n_clusters"),
        ({"mapping": "sparsemax"}, "mapping"),
        ({"initial_temperature": -1.0}, "initial_temperature"),
        ({"temperature": -1.0}, "'temperature' parameter"),
        ({"temperature_decay": 1.5}, "temperature_decay"),
        ({"decay": 0.0}, "decay"),
        ({"half_life": 10.0, "decay": 0.5}, "either decay or half_life"),
        ({"init": np.zeros((2, 3))}, "The shape of the initial centers \\(2, 3\\) does not match"),
        ({"n_clusters": 2000}, "n_samples=1000 should be >= n_clusters=2000"),
        ({"random_state": "seed"}, "random_state"),
    ],
)
def test_bad_parameters_are_named(blobs, params, msg):
    with pytest.raises(ValueError, match=msg):
        RBFKMeans(**params).fit(blobs[0])


def torch_twin(model: RBFKMeans) -> RBFKMeans:
    """A copy of ``model`` whose state is torch tensors: it takes the accelerator path (one fused
    pass, one transfer) on CPU tensors."""
    twin = copy.deepcopy(model)
    twin._state = on_torch(model._state)
    return twin


def test_the_torch_backend_used_on_gpus_gives_the_same_model(blobs):
    """Torch tensors on an accelerator take the torch path; on CPU tensors the engine takes it
    too when handed them, and it matches the compiled path."""
    X, _ = blobs
    policy = RBFKMeans(4).get_policy()
    numba_fit = engine.fit(X, policy, seed=0)
    torch_fit = engine.fit(torch.from_numpy(X), policy, seed=0)
    np.testing.assert_allclose(torch_fit.state.centers[0].numpy(), numba_fit.state.centers[0],
                               atol=1e-9)
    assert torch_fit.n_iter == numba_fit.n_iter
    np.testing.assert_array_equal(torch_fit.labels.numpy(), numba_fit.labels)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_the_device(blobs):
    X = torch.from_numpy(blobs[0]).float().cuda()
    km = RBFKMeans(4, random_state=0).fit(X)
    assert km.centers_tensor_.device.type == "cuda"
    assert km.predict(X).device.type == "cuda"
    km.partial_fit(X[:256])
    assert np.isfinite(km.cluster_centers_).all()


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "torch.compile"])
def test_fused_accelerator_step_equals_the_cpu_step(blobs, compile):
    # The accelerator path (one fused pass, one transfer) driven on CPU tensors: same trajectory
    # as the numba path, the compiled variant included, and bad batches leave the model as it was.
    X = blobs[0].astype(np.float32)
    host = RBFKMeans(4, random_state=0, half_life=500, compile=compile).partial_fit(X[:200])
    fused = torch_twin(host)
    for lo in range(200, 1000, 100):
        host.partial_fit(X[lo : lo + 100])
        fused.score_then_learn(torch.from_numpy(X[lo : lo + 100]))
        np.testing.assert_allclose(fused.cluster_centers_, host.cluster_centers_, atol=1e-4)
        np.testing.assert_allclose(fused.counts_, host.counts_, rtol=1e-5)
        assert fused.temperature_ == host.temperature_ and fused.n_steps_ == host.n_steps_
        assert fused.inertia_ == pytest.approx(host.inertia_, rel=1e-5)
    before = state_of(fused)
    bad = torch.from_numpy(X[:100].copy())
    bad[7, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN at row 7, column 1"):
        fused.partial_fit(bad)
    assert_same_state(state_of(fused), before)


def test_compiled_step_survives_many_batch_sizes_and_model_shapes(monkeypatch):
    # dynamo's guards and recompile limit, without C++ code generation: the "eager" backend
    import streamrbf.core.accelerated as A

    real = torch.compile
    monkeypatch.setattr(A.torch, "compile", lambda fn, mode=None, **kw: real(fn, backend="eager",
                                                                             **kw))
    A.compiled_fused_step.cache_clear()
    try:
        rng = np.random.default_rng(0)
        X = rng.normal(size=(400, 3)) + np.repeat(np.eye(3) * 6, [134, 133, 133], axis=0)[:400]
        # (a stream on an accelerator makes no split and merge moves on a sample)
        host = RBFKMeans(3, random_state=0, compile=True, split_merge=False).partial_fit(X[:60])
        dev = torch_twin(host)
        with pytest.warns(RuntimeWarning, match="using the eager step"):
            for b in range(5, 17):  # 12 batch sizes: past the limit of 8 recompiles
                host.partial_fit(X[100 : 100 + b])
                dev.partial_fit(torch.from_numpy(X[100 : 100 + b]))
        np.testing.assert_allclose(dev.cluster_centers_, host.cluster_centers_, atol=1e-9)
        assert dev.n_steps_ == host.n_steps_
        # models of many shapes do not share one recompile limit
        import warnings as w

        with w.catch_warnings():
            w.simplefilter("error", RuntimeWarning)
            for k in range(4, 14):  # (k=3's function used its 8 recompiles above)
                m = torch_twin(RBFKMeans(k, random_state=0, compile=True).partial_fit(X[:100]))
                m.partial_fit(torch.from_numpy(X[100:164]))
    finally:
        A.compiled_fused_step.cache_clear()


def test_fused_step_refuses_a_batch_whose_distances_overflow():
    X = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    model = torch_twin(RBFKMeans(2, random_state=0).partial_fit(X))
    before = state_of(model)
    with pytest.raises(ValueError, match="overflow torch.float32"):
        model.partial_fit(torch.full((10, 2), 3e19))  # finite, but its squares are not
    assert_same_state(state_of(model), before)


def test_fused_step_reseeds_a_starved_centre_like_the_cpu_step():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0, 0.1, (200, 2)), rng.normal(8, 0.1, (200, 2))])
    init = np.array([[0.0, 0.0], [8.0, 8.0], [100.0, 100.0]])  # the third centre never wins
    host = RBFKMeans(3, init=init, random_state=3, initial_temperature=0.01,
                     split_merge=False).partial_fit(X[:10])
    fused = torch_twin(host)
    host.partial_fit(X)
    fused.partial_fit(torch.from_numpy(X))
    assert np.abs(host.cluster_centers_[2]).max() < 20  # re-seeded onto the data
    np.testing.assert_allclose(fused.cluster_centers_, host.cluster_centers_, atol=1e-9)
    np.testing.assert_allclose(fused.counts_, host.counts_, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("compile", [False, True, "reduce-overhead"])
def test_cuda_stream_follows_the_cpu_stream(blobs, compile):
    X = blobs[0].astype(np.float32)
    cpu = RBFKMeans(4, random_state=0, compile=compile).partial_fit(X[:200])
    gpu = RBFKMeans.from_state(
        torch.from_numpy(cpu.cluster_centers_).cuda(),
        cpu.counts_,
        cpu.temperature_schedule_,
        n_steps=cpu.n_steps_,
        random_state=0,
        compile=compile,
    )
    for _ in range(2):
        for lo in range(200, 1000, 100):
            cpu.partial_fit(X[lo : lo + 100])
            gpu.partial_fit(torch.from_numpy(X[lo : lo + 100]).cuda())
    assert gpu.centers_tensor_.device.type == "cuda"
    np.testing.assert_allclose(gpu.cluster_centers_, cpu.cluster_centers_, atol=1e-3)
    np.testing.assert_allclose(gpu.counts_, cpu.counts_, rtol=1e-4)
    before = state_of(gpu)
    bad = torch.from_numpy(X[:100].copy()).cuda()
    bad[3, 2] = float("inf")
    with pytest.raises(ValueError, match="infinity at row 3, column 2"):
        gpu.partial_fit(bad)
    assert_same_state(state_of(gpu), before)
    # score_then_learn gives the batch's labels from before the step, on the device
    X_next = torch.from_numpy(X[:300]).cuda()
    expected = cpu.predict(X[:300])
    r = gpu.score_then_learn(X_next)
    gpu.partial_fit(X_next)  # a later replay (CUDA graphs) must not change r
    assert r.labels.device.type == "cuda"
    assert (r.labels.cpu().numpy() == expected).mean() > 0.99


def test_score_then_learn_scores_before_the_step_in_one_pass(blobs):
    X, _ = blobs
    a = RBFKMeans(4, random_state=0, temperature_decay=0.99).partial_fit(X[:200])
    b = copy.deepcopy(a)
    batch = X[200:456]
    proba, labels = a.predict_proba(batch), a.predict(batch)
    r = a.score_then_learn(batch)
    b.partial_fit(batch)
    assert_same_state(state_of(a), state_of(b))  # the same step as partial_fit
    assert r.labels.tolist() == labels.tolist()
    m = r.memberships
    dense = np.zeros_like(proba)
    for i in range(len(batch)):
        dense[i, m.idx[i, : m.length[i]]] = m.vals[i, : m.length[i]]
    np.testing.assert_allclose(dense, proba, atol=1e-12)
    assert 0 < m.nnz < proba.size and m.nnz == (proba > 0).sum()  # soft, and exactly sparse
    with pytest.raises(NotFittedError):
        RBFKMeans(2).score_then_learn(batch)


def test_n_init_keeps_the_best_seeding_and_reports_its_iterations(blobs):
    X, _ = blobs
    one = RBFKMeans(4, random_state=0, max_iter=30).fit(X)
    many = RBFKMeans(4, random_state=0, max_iter=30, n_init=4).fit(X)
    assert many.inertia_ <= one.inertia_ + 1e-9 * one.inertia_
    assert 1 <= many.n_iter_ <= 30 and many.n_iter_ == many.n_steps_  # full batch: 1 step/iter
    # a fit ends cold (its schedule cools faster after quiet steps, and its last moves are
    # K-Means'); a stream's first batch has decayed its temperature exactly n_steps_ times
    s = many.temperature_schedule_
    assert s.minimum <= s.value < s.initial
    km = RBFKMeans(4, random_state=0, n_init=3).partial_fit(X[:300])
    s = km.temperature_schedule_
    assert s.value == pytest.approx(max(s.initial * s.decay**km.n_steps_, s.minimum), rel=1e-9)


def test_apply_statistics_and_from_state_refuse_corrupt_state(blobs):
    from streamrbf import SufficientStatistics, TemperatureSchedule

    X, _ = blobs
    km = RBFKMeans(4, random_state=0).partial_fit(X[:300])
    before = state_of(km)
    stats = km.statistics(X[300:400])
    bad = SufficientStatistics(stats.mass, stats.sums.copy(), stats.loss, stats.n)
    bad.sums[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinity"):
        km.apply_statistics(bad)
    with pytest.raises(ValueError, match="statistics have shape"):
        km.apply_statistics(SufficientStatistics.zeros(3, 3))
    assert_same_state(before, state_of(km))
    with pytest.raises(ValueError, match="counts must be 4 finite masses"):
        RBFKMeans.from_state(km.cluster_centers_, [1.0, -1.0, 1.0, 1.0], TemperatureSchedule(1.0))
    with pytest.raises(ValueError, match="NaN or infinity"):
        RBFKMeans.from_state(np.full((4, 3), np.inf), np.ones(4), TemperatureSchedule(1.0))


def test_scikit_learn_rules_for_mixed_feature_names_and_numpy_float_parameters(blobs, tmp_path):
    # Mixed str / int column names are a TypeError, as in scikit-learn (not silently "no
    # names"), and numpy floats are valid float parameters.
    from sklearn.cluster import KMeans as SkKMeans

    X, _ = blobs
    mixed = pd.DataFrame(X, columns=["a", 1, "c"])
    with pytest.raises(TypeError, match="only supported if all input features have string"):
        SkKMeans(2, n_init=1).fit(mixed)
    with pytest.raises(TypeError, match="only supported if all input features have string"):
        RBFKMeans(2, random_state=0).fit(mixed)
    km = RBFKMeans(2, initial_temperature=np.float32(0.5), temperature_decay=np.float32(0.9),
                   half_life=np.float16(100.0), reassignment_ratio=np.float32(0.01),
                   tol=np.float32(1e-4), random_state=0).fit(X)
    assert km.get_params()["initial_temperature"] == np.float32(0.5) and np.isfinite(km.inertia_)
    # numpy scalars are written to a model file as JSON numbers
    RBFKMeans(np.int64(2), max_iter=np.int64(20), random_state=0).fit(X).save(tmp_path / "m")
    assert RBFKMeans.load(tmp_path / "m").get_params()["n_clusters"] == 2


def test_deprecated_parameter_names_warn_and_still_work(blobs):
    X, _ = blobs
    with pytest.warns(DeprecationWarning, match="temperature=.*initial_temperature"):
        old = RBFKMeans(3, temperature=2.0, random_state=0).fit(X)
    new = RBFKMeans(3, initial_temperature=2.0, random_state=0).fit(X)
    np.testing.assert_array_equal(old.cluster_centers_, new.cluster_centers_)
    assert old.temperature_schedule_.initial == 2.0
    with pytest.warns(DeprecationWarning, match="decay=.*half_life"):
        forgetful = RBFKMeans(3, decay=0.5, random_state=0).partial_fit(X[:300])
    masses = forgetful.counts_.sum()
    forgetful.partial_fit(X[300:400])
    assert forgetful.counts_.sum() == pytest.approx(0.5 * masses + 100)
    # decay's old default beside a half-life: the half-life decides (as in 0.1).
    with pytest.warns(DeprecationWarning):
        assert RBFKMeans(3, decay=1.0, half_life=100).get_policy(warn=True).forgetting(100) == 0.5
    # The warning points at the caller's line.
    with pytest.warns(DeprecationWarning) as seen:
        RBFKMeans(3, temperature=2.0, random_state=0).fit(X)
    assert seen[0].filename == __file__
