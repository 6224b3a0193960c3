"""The River adapter: kernel == core step, the River contract, bad input, drift, keyed streams."""

from __future__ import annotations

import collections
import copy
import decimal
import fractions
import importlib.util
import math
import pickle
import warnings

import entmax
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river import checks, drift, preprocessing
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from streamrbf.core import _online_kernels as ok
from streamrbf.core._kernels import MAPPING_CODES
from streamrbf.core.accelerated import apply_step, batch_statistics
from streamrbf.core.temperature import logit_divisor
from streamrbf.river import FeatureTypeError, KeyedRBFKMeans, RBFKMeans


def _events(X, prefix="f"):
    return [{f"{prefix}{i}": v for i, v in enumerate(row)} for row in np.asarray(X).tolist()]


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(3000, n_features=4, centers=4, cluster_std=0.5, random_state=3)
    return _events(X), y


def _fitted(events, **params):
    model = RBFKMeans(**{"n_clusters": 4, "seed": 1, **params})
    for x in events:
        model.learn_one(x)
    return model


# -- the kernel computes the core's step -------------------------------------------------------


@pytest.mark.parametrize("mapping", ["entmax15", "softmax", "hard"])
@pytest.mark.parametrize("decay", [1.0, 0.9])
def test_event_kernel_equals_core_step(mapping, decay):
    # also for weighted events: the core's step with that event's sample weight
    rng = np.random.default_rng(0)
    k, d, T = 5, 3, 2.0
    X = rng.normal(size=(40, d)) * 2
    W = np.where(np.arange(40) < 20, 1.0, rng.uniform(0.1, 4.0, size=40))
    C = rng.normal(size=(k, d))
    counts = rng.uniform(0, 3, size=k)
    Ct, nt = torch.from_numpy(C.copy()), torch.from_numpy(counts.copy())
    aux, rs = np.zeros(d + 1), np.zeros(1, np.uint64)
    for x, w in zip(X, W):
        ok.learn_event(x, C, counts, logit_divisor(T), MAPPING_CODES[mapping], decay, aux, rs,
                       np.zeros(3), w)
        res = batch_statistics(torch.from_numpy(x[None]), Ct, T, mapping,
                               sample_weight=None if w == 1.0 else np.array([w]))
        Ct, nt = apply_step(Ct, nt, res.stats, decay)
        np.testing.assert_allclose(C, Ct.numpy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(counts, nt.numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("mapping", ["entmax15", "softmax", "hard"])
@pytest.mark.parametrize("batch_size", [1, 8])
def test_learning_is_the_engines_step_batch_by_batch(blobs, mapping, batch_size):
    # River's compiled per-event kernel is a specialisation of the engine's step: from the same
    # state, the same events give the same model (temperature, masses, counters included).
    from streamrbf.core import engine

    events, _ = blobs
    model = RBFKMeans(n_clusters=4, seed=0, mapping=mapping, batch_size=batch_size,
                      reassignment_ratio=0.0, drift_detector=None, warmup=40)
    for x in events[:400]:  # past the warm-up and the re-check at 3 x warmup
        model.learn_one(x)
    state = copy.deepcopy(model._state)
    rows = np.array([[x[f] for f in model._features] for x in events[400:600]])
    for lo in range(0, len(rows), batch_size):
        for x in events[400 + lo:400 + lo + batch_size]:
            model.learn_one(x)
        state, _ = engine.step(state, rows[lo:lo + batch_size], model._policy)
        np.testing.assert_allclose(model._state.centers, state.centers, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(model._state.masses, state.masses, rtol=1e-6)
        assert model._state.temperature[0] == pytest.approx(state.temperature[0], rel=1e-12)
        assert (model._state.n_steps[0], model._state.n_seen[0]) == (
            state.n_steps[0], state.n_seen[0])


@pytest.mark.parametrize("mapping", ["entmax15", "softmax"])
def test_batch_kernel_equals_core_step(mapping):
    rng = np.random.default_rng(1)
    k, d, T, B = 4, 3, 1.5, 8
    C = rng.normal(size=(k, d))
    counts = np.zeros(k)
    Ct, nt = torch.from_numpy(C.copy()), torch.from_numpy(counts.copy())
    aux, rs = np.zeros(d + 1), np.zeros(1, np.uint64)
    for step in range(10):
        X = rng.normal(size=(B, d)) * 2
        w = np.ones(B) if step < 5 else rng.uniform(0.0, 3.0, size=B)
        nearest = np.empty(B)
        loss, _ = ok.learn_rows(X, w, B, C, counts, T, MAPPING_CODES[mapping], 0.95, aux, rs,
                                nearest, np.zeros(0))
        res = batch_statistics(torch.from_numpy(X), Ct, T, mapping,
                               sample_weight=None if step < 5 else w)
        Ct, nt = apply_step(Ct, nt, res.stats, 0.95)
        np.testing.assert_allclose(C, Ct.numpy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(counts, nt.numpy(), rtol=0, atol=1e-10)
        assert loss == pytest.approx(res.stats.loss, rel=1e-10)
        np.testing.assert_allclose(nearest, res.nearest.numpy(), rtol=1e-10, atol=1e-10)


def test_float32_centres_round_once_like_the_core():
    rng = np.random.default_rng(2)
    C = rng.normal(size=(6, 8)).astype(np.float32)
    counts = np.zeros(6)
    Ct, nt = torch.from_numpy(C.copy()), torch.from_numpy(counts.copy())
    aux, rs = np.zeros(9), np.zeros(1, np.uint64)
    for x in rng.normal(size=(50, 8)):
        ok.learn_event(x, C, counts, 0.7, 0, 1.0, aux, rs, np.zeros(0), 1.0)
        Ct, nt = apply_step(Ct, nt, batch_statistics(torch.from_numpy(x[None]), Ct, 0.7).stats)
    np.testing.assert_allclose(C, Ct.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("T", [0.05, 0.5, 5.0])
def test_responsibilities_equal_entmax_package(T):
    rng = np.random.default_rng(3)
    k = 7
    C = rng.normal(size=(k, 4))
    vals, idx = np.empty(k), np.empty(k, np.int64)
    for x in rng.normal(size=(30, 4)):
        n = ok.responsibilities_event(x, C, logit_divisor(T), 0, vals, idx)
        dense = np.zeros(k)
        dense[idx[:n]] = vals[:n]
        d = torch.from_numpy(((x - C) ** 2).sum(axis=1))
        ref = entmax.entmax15(-d / logit_divisor(T), dim=-1).numpy()
        np.testing.assert_allclose(dense, ref, atol=1e-6)
        assert np.all(vals[:n] > 0)


# -- River contract ----------------------------------------------------------------------------


def test_check_estimator():
    checks.check_estimator(RBFKMeans(n_clusters=3))
    checks.check_estimator(RBFKMeans(n_clusters=2, batch_size=4, mapping="softmax", half_life=50,
                                     drift_detector=drift.ADWIN()))
    checks.check_estimator(RBFKMeans(n_clusters=2, half_life=None, drift_detector=None))
    checks.check_estimator(KeyedRBFKMeans(RBFKMeans(n_clusters=2, seed=0), max_streams=4))


def test_learns_separated_blobs(blobs):
    events, y = blobs
    model = RBFKMeans(n_clusters=4, seed=0)
    preds = []
    for x in events:
        preds.append(model.predict_one(x))
        model.learn_one(x)
    final = [model.predict_one(x) for x in events]
    assert adjusted_rand_score(y, final) > 0.99
    assert adjusted_rand_score(y, preds) > 0.9
    assert set(model.centers) == {0, 1, 2, 3}
    assert set(model.centers[0]) == {"f0", "f1", "f2", "f3"}
    assert 0 < model.temperature < 0.1 * model._state.initial_temperature[0]  # annealed
    proba = model.predict_proba_one(events[0])
    assert proba == {final[0]: 1.0}


@pytest.mark.parametrize("batch_size", [1, 16])
def test_mini_batches_learn_too(blobs, batch_size):
    events, y = blobs
    model = _fitted(events, batch_size=batch_size)
    assert adjusted_rand_score(y, [model.predict_one(x) for x in events]) > 0.99
    # the warm-up events start the model; every later batch is one step of batch_size events
    w = model._warmup_size
    assert model._state.n_seen[0] == w + (len(events) - w) // batch_size * batch_size


def test_before_initialisation():
    model = RBFKMeans(n_clusters=2, warmup=5)
    assert model.predict_one({"a": 1.0}) == 0
    assert model.predict_proba_one({"a": 1.0}) == {}
    assert model.centers == {} and math.isnan(model.temperature)
    for v in (0.0, 0.2, 10.0, 10.4):
        model.learn_one({"a": v})
    # warming up: the provisional clusters answer, with membership 1
    assert model.centers == {}
    low, high = model.predict_one({"a": 0.1}), model.predict_one({"a": 10.1})
    assert low != high and model.predict_proba_one({"a": 10.1}) == {high: 1.0}
    model.learn_one({"a": 0.1})
    assert len(model.centers) == 2 and model.temperature > 0
    # the started model keeps the warm-up's labels
    assert model.predict_one({"a": 0.1}) == low and model.predict_one({"a": 10.1}) == high


def test_clone_pickle_and_copy_of_fitted_model(blobs):
    events, _ = blobs
    model = _fitted(events[:500], drift_detector=drift.ADWIN())
    twins = [
        pickle.loads(pickle.dumps(model)),
        model.clone(include_attributes=True),
        copy.deepcopy(model),
    ]
    for x in events[500:800]:
        expected = model.predict_proba_one(x)
        for twin in twins:
            assert twin.predict_proba_one(x) == expected
            assert twin.predict_one(x) == model.predict_one(x)
        model.learn_one(x)
        for twin in twins:
            twin.learn_one(x)
    for twin in twins:
        np.testing.assert_array_equal(twin._C, model._C)
    fresh = model.clone()
    assert fresh.centers == {} and fresh.n_features == 0


def test_same_seed_same_result(blobs):
    events, _ = blobs
    a, b = _fitted(events, seed=7), _fitted(events, seed=7)
    assert pickle.dumps(a) == pickle.dumps(b)
    # on data without clusters the seedings' draws decide where the centres go (on the blobs
    # every seed finds the same clusters, and the warm-up's labels order them alike)
    noise = [{"a": v[0], "b": v[1]} for v in np.random.default_rng(0).uniform(size=(300, 2))]
    c, d = (RBFKMeans(n_clusters=5, seed=s) for s in (7, 8))
    for x in noise:
        c.learn_one(x)
        d.learn_one(x)
    assert not np.allclose(np.sort(c._C, axis=0), np.sort(d._C, axis=0))


def test_mutate(blobs):
    events, _ = blobs
    model = _fitted(events[:200])
    model.mutate({"temperature_decay": 0.5, "half_life": 10})
    assert model.half_life == 10 and model._decay == pytest.approx(0.5**0.1)
    assert model._cooling == 0.5
    t = model.temperature
    model.learn_one(events[200])
    assert model.temperature == pytest.approx(max(t * 0.5, 0.0))
    with pytest.raises(ValueError):
        model.mutate({"n_clusters": 3})
    with pytest.raises(ValueError, match="half_life"):
        model.mutate({"temperature_decay": 0.25, "half_life": 0.0})
    # ... and a refused change changes nothing.
    assert model.half_life == 10 and model.temperature_decay == 0.5
    assert model._cooling == 0.5 and model.clone().half_life == 10


def test_pipeline_with_scaler(blobs):
    events, y = blobs
    pipe = preprocessing.StandardScaler() | RBFKMeans(n_clusters=4, seed=0)
    for x in events[:1500]:
        pipe.learn_one(x)
    proba = pipe.predict_proba_one(events[0])
    assert proba and abs(sum(proba.values()) - 1) < 1e-12
    assert max(proba, key=proba.get) == pipe.predict_one(events[0])
    X = pd.DataFrame(events[1500:])
    pipe.learn_many(X)
    labels = pipe.predict_many(X)
    assert list(labels.index) == list(X.index)
    assert labels.tolist() == [pipe.predict_one(x) for x in events[1500:]]
    assert adjusted_rand_score(y[1500:], labels) > 0.95


def test_learn_many_equals_learn_one(blobs):
    events, _ = blobs
    one, many = RBFKMeans(n_clusters=4, seed=2), RBFKMeans(n_clusters=4, seed=2)
    for x in events[:700]:
        one.learn_one(x)
    many.learn_many(pd.DataFrame(events[:300]))
    many.learn_many(pd.DataFrame(events[300:700]).iloc[:, ::-1])  # column order is irrelevant
    assert pickle.dumps(one) == pickle.dumps(many)


# -- bad input ---------------------------------------------------------------------------------

_BAD = st.sampled_from(["missing", "new", "str", "none", "nan", "inf", "-inf", "list"])


def _corrupt(x, kind, feature):
    x = dict(x)
    if kind == "missing":
        del x[feature]
    elif kind == "new":
        x["zz_new"] = 1.0
        return x, "zz_new"
    else:
        x[feature] = {"str": "1.5", "none": None, "nan": math.nan, "inf": math.inf,
                      "-inf": -math.inf, "list": [1.0]}[kind]
    return x, feature


@pytest.fixture(scope="module")
def fitted_models(blobs):
    events, _ = blobs
    return {
        "online": _fitted(events[:300], drift_detector=drift.ADWIN()),
        "batch": _fitted(events[:301], batch_size=7),
        "warmup": _fitted(events[:10]),
    }


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(which=st.sampled_from(["online", "batch", "warmup"]), kind=_BAD,
       feature=st.sampled_from(["f0", "f1", "f2", "f3"]), row=st.integers(0, 2999),
       method=st.sampled_from(["learn_one", "predict_one", "predict_proba_one", "learn_many",
                               "predict_many"]))
def test_bad_events_raise_and_change_nothing(fitted_models, blobs, which, kind, feature, row,
                                             method):
    model = fitted_models[which]
    bad, name = _corrupt(blobs[0][row], kind, feature)
    before = pickle.dumps(model)
    if method.endswith("many"):
        if kind == "list":
            return
        arg = pd.DataFrame([blobs[0][row], bad])
    else:
        arg = bad
    with pytest.raises(ValueError, match=repr(name)):
        getattr(model, method)(arg)
    assert pickle.dumps(model) == before


def test_first_event_fixes_features_only_if_valid():
    model = RBFKMeans(n_clusters=2)
    with pytest.raises(ValueError, match="'b'"):
        model.learn_one({"a": 1.0, "b": math.nan})
    assert model.n_features == 0
    model.learn_one({"a": 1.0, "b": 2.0})
    assert model.n_features == 2


def test_missing_zero_policy():
    model = RBFKMeans(n_clusters=2, warmup=4, missing="zero", seed=0)
    for v in range(4):
        model.learn_one({"a": float(v), "b": 1.0})
    twin = copy.deepcopy(model)
    model.learn_one({"a": 2.0, "new": 5.0})
    twin.learn_one({"a": 2.0, "b": 0.0})
    model.learn_one({"a": 1.0, "b": math.nan})
    twin.learn_one({"a": 1.0, "b": 0.0})
    assert pickle.dumps(model._C) == pickle.dumps(twin._C)
    with pytest.raises(ValueError, match="'b'"):
        model.learn_one({"a": 1.0, "b": math.inf})


F32_MAX = float(np.finfo(np.float32).max)


def _keyed(events):
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=4, seed=1), key="id", max_streams=3)
    for i, x in enumerate(events[:400]):
        keyed.learn_one({"id": i % 2, **x})
    return keyed


@pytest.fixture(scope="module")
def more_models(blobs, fitted_models):
    events, _ = blobs
    return {**fitted_models, "fresh": RBFKMeans(n_clusters=4, seed=1), "keyed": _keyed(events)}


@pytest.mark.parametrize("which", ["online", "batch", "warmup", "keyed"])
@pytest.mark.parametrize("value", [1e41, -3.5e38, 10**39, -(10**400), fractions.Fraction(10**50)],
                         ids=["1e41", "-3.5e38", "int 1e39", "int -1e400", "Fraction 1e50"])
def test_values_beyond_float32_are_refused(more_models, blobs, which, value):
    model = more_models[which]
    x = {**blobs[0][5], "f2": value}
    if which == "keyed":
        x["id"] = 0
    before = pickle.dumps(model)
    with pytest.raises(ValueError, match="feature 'f2' (= .* )?is too large to cluster"):
        model.learn_one(x)
    assert pickle.dumps(model) == before
    if which != "keyed":
        with pytest.raises(ValueError, match="feature 'f2' (= .* )?is too large to cluster"):
            model.learn_many(pd.DataFrame([blobs[0][5], x]))
        assert pickle.dumps(model) == before


def test_values_up_to_float32_max_keep_every_centre_finite(blobs):
    model = _fitted(blobs[0][:300])
    proba = model.predict_proba_one(blobs[0][0])
    for v in (3.4e38, -3.4e38, F32_MAX, -F32_MAX):
        model.learn_one({"f0": v, "f1": -v, "f2": v, "f3": 0.0})
    assert np.isfinite(model._C).all() and np.isfinite(model._counts).all()
    assert np.abs(model._C).max() > 1e37  # the extreme events were learnt
    assert model.predict_proba_one(blobs[0][0]) != {} != proba
    with pytest.raises(ValueError, match="'f0' = .* is too large"):
        model.learn_one({"f0": 1e41, "f1": 0.0, "f2": 0.0, "f3": 0.0})  # 1e41: inf in float32
    batch = RBFKMeans(n_clusters=2, batch_size=3, warmup=4, seed=0)
    batch.learn_many(pd.DataFrame({"a": [F32_MAX, -F32_MAX, 0.0, 1.0] * 6, "b": 0.0}))
    assert np.isfinite(batch._C).all() and batch.predict_proba_one({"a": 0.0, "b": 0.0}) != {}


def test_empty_events_are_refused():
    model = RBFKMeans(n_clusters=2, warmup=2)
    with pytest.raises(ValueError, match="empty event"):
        model.learn_one({})
    assert model.n_features == 0
    for v in (0.0, 5.0, 1.0):
        model.learn_one({"a": v, "b": 1.0})
    assert model.n_features == 2 and len(model.centers) == 2
    for policy in ("error", "zero"):
        model.missing = policy
        before = pickle.dumps(model)
        for method in ("learn_one", "predict_one", "predict_proba_one"):
            with pytest.raises(ValueError, match="empty event"):
                getattr(model, method)({})
        assert pickle.dumps(model) == before
    model.missing = "error"
    with pytest.raises(ValueError, match="empty event"):
        RBFKMeans(n_clusters=2).learn_many(pd.DataFrame(index=range(3)))
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=2, warmup=2), key="id")
    with pytest.raises(ValueError, match="empty event: no features besides the key field 'id'"):
        keyed.learn_one({"id": "s"})
    assert keyed.n_streams == 0
    keyed.learn_one({"id": "s", "v": 1.0})  # the stream's first real event fixes its features
    assert keyed.model_for("s").n_features == 1


@pytest.mark.parametrize("value", [np.complex128(5j), np.complex64(1 + 0j), 2 + 1j])
def test_complex_values_are_refused_with_a_type_error(blobs, fitted_models, value):
    events = blobs[0]
    for model in (RBFKMeans(n_clusters=4), fitted_models["online"], fitted_models["batch"]):
        before = pickle.dumps(model)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no ComplexWarning: refused, not cast
            with pytest.raises(TypeError, match="feature 'f1' is not a real number"):
                model.learn_one({**events[0], "f1": value})
            with pytest.raises(TypeError, match="feature 'f1' is not a real number"):
                model.learn_many(pd.DataFrame({**events[0], "f1": np.array([value])}))
        assert pickle.dumps(model) == before


_NOT_REAL = [decimal.Decimal("1.5"), np.array(1.5), np.array([1.5]), np.timedelta64(3, "s"),
             "2.0", None, b"1", [1.0]]


@pytest.mark.parametrize("value", _NOT_REAL, ids=repr)
def test_first_and_later_events_follow_one_type_rule(blobs, more_models, value):
    events = blobs[0]
    for which in ("fresh", "warmup", "online", "batch"):  # first event, slow and fast paths
        model = more_models[which]
        before = pickle.dumps(model)
        with pytest.raises(FeatureTypeError, match="feature 'f3' is not a real number") as err:
            model.learn_one({**events[1], "f3": value})
        assert isinstance(err.value, TypeError) and isinstance(err.value, ValueError)
        assert pickle.dumps(model) == before


def test_first_and_later_events_accept_the_same_real_numbers():
    for value in (np.bool_(True), True, fractions.Fraction(3, 2), np.float16(1.5), np.uint8(2),
                  np.int16(-2), np.float32(0.25), 7):
        first = RBFKMeans(n_clusters=2, warmup=2, seed=0)
        first.learn_one({"a": value, "b": 1.0})  # the first event: the slow path
        assert first._warm[0].tolist() == [float(value), 1.0, 1.0]  # the event, its weight
        first.learn_one({"a": float(value) + 3, "b": 0.0})
        later, twin = copy.deepcopy(first), copy.deepcopy(first)
        later.learn_one({"a": value, "b": 1.0})  # a later event: the fast path if it can
        twin.learn_one({"a": float(value), "b": 1.0})
        assert pickle.dumps(later._C) == pickle.dumps(twin._C)


def _bad_value():
    """(value, whether it is refused as a non-number, i.e. with a TypeError)."""
    big = st.one_of(st.floats(min_value=3.41e38), st.floats(max_value=-3.41e38),
                    st.sampled_from([math.nan, math.inf, -math.inf]))
    huge = st.one_of(st.integers(min_value=2**128), st.integers(max_value=-(2**128)))
    not_real = st.one_of(
        st.complex_numbers(allow_nan=False, allow_infinity=False),
        st.complex_numbers(allow_nan=False, allow_infinity=False).map(np.complex128),
        st.decimals(allow_nan=False, allow_infinity=False, places=3),
        st.floats(-10, 10).map(np.array),
        st.integers(-5, 5).map(lambda v: np.timedelta64(v, "s")),
        st.text(max_size=3), st.none(), st.lists(st.floats(-1, 1), max_size=2),
    )
    return st.one_of(big.map(lambda v: (v, False)), huge.map(lambda v: (v, False)),
                     not_real.map(lambda v: (v, True)))


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(which=st.sampled_from(["fresh", "warmup", "online", "batch", "keyed"]), bad=_bad_value(),
       feature=st.sampled_from(["f0", "f1", "f2", "f3"]), row=st.integers(0, 2999),
       method=st.sampled_from(["learn_one", "predict_one", "predict_proba_one", "learn_many",
                               "predict_many"]))
def test_bad_values_raise_naming_the_feature_and_change_nothing(more_models, blobs, which, bad,
                                                               feature, row, method):
    value, type_error = bad
    model = more_models[which]
    good = blobs[0][row]
    x = {**good, feature: value}
    if which == "keyed":
        method = method.replace("many", "one")
        x["id"] = row % 3  # streams 0 and 1 exist, 2 would be new
    before = pickle.dumps(model)
    if method.endswith("many"):
        frame = pd.DataFrame([good, good])
        col = np.empty(2, dtype=object)
        col[0], col[1] = good[feature], value
        frame[feature] = col
        arg = frame
    else:
        arg = x
    with pytest.raises(ValueError, match=f"feature {feature!r}") as err:
        getattr(model, method)(arg)
    assert isinstance(err.value, TypeError) == type_error
    assert pickle.dumps(model) == before


def test_learn_many_takes_pandas_nullable_dtypes(blobs):
    events = blobs[0][:300]
    ints = [{f: round(v * 10) for f, v in x.items()} for x in events]
    cases = [("Float64", events), ("Int64", ints)]
    if importlib.util.find_spec("pyarrow") is not None:
        cases.append(("float64[pyarrow]", events))
    for dtype, rows in cases:
        one, many = RBFKMeans(n_clusters=4, seed=2), RBFKMeans(n_clusters=4, seed=2)
        for x in rows:
            one.learn_one(x)
        many.learn_many(pd.DataFrame(rows).astype(dtype))
        assert pickle.dumps(one) == pickle.dumps(many)
        # a missing value (pd.NA) is refused as one, and changes nothing
        bad = pd.DataFrame(rows[:3]).astype(dtype)
        bad.loc[1, "f2"] = pd.NA
        before = pickle.dumps(many)
        with pytest.raises(ValueError, match=r"feature 'f2' is NaN \(a missing value\) \(row 1\)"):
            many.learn_many(bad)
        with pytest.raises(ValueError, match="'f2'"):
            many.predict_many(bad)
        assert pickle.dumps(many) == before
    flags = pd.DataFrame({"a": pd.array([True, False, False] * 20, dtype="boolean"), "b": 1.0})
    one, many = RBFKMeans(n_clusters=2, warmup=4, seed=0), RBFKMeans(n_clusters=2, warmup=4, seed=0)
    many.learn_many(flags)
    for a in [True, False, False] * 20:
        one.learn_one({"a": a, "b": 1.0})
    assert pickle.dumps(one) == pickle.dumps(many) and len(many.centers) == 2
    # under missing="zero" a missing value counts as 0
    zero, twin = (RBFKMeans(n_clusters=2, warmup=4, missing="zero", seed=0) for _ in range(2))
    data = pd.DataFrame({"a": pd.array([1, None, 3, 4, 5], dtype="Int64"), "b": 1.0})
    zero.learn_many(data.iloc[[0, 2, 3, 4]])
    twin.learn_many(data.iloc[[0, 2, 3, 4]].astype({"a": "float64"}))
    zero.learn_many(data.iloc[[1]])
    twin.learn_one({"a": 0.0, "b": 1.0})
    assert pickle.dumps(zero._C) == pickle.dumps(twin._C)


def test_frames_and_events_of_the_wrong_shape_are_refused(blobs, fitted_models):
    model = fitted_models["online"]
    before = pickle.dumps(model)
    with pytest.raises(ValueError, match="duplicate feature 'f0'"):
        model.learn_many(pd.DataFrame([[1.0, 2.0, 3.0, 4.0]], columns=["f0", "f0", "f1", "f2"]))
    with pytest.raises(TypeError, match="DataFrame"):
        model.learn_many(np.zeros((2, 4)))
    for event in ([1.0, 2.0, 3.0, 4.0], None, "f0"):
        with pytest.raises(TypeError, match="an event must be a dict"):
            model.learn_one(event)
    # dict subclasses that answer for keys they lack are read by their keys, and never changed
    counter = collections.Counter({"f0": 1, "f1": 2, "f2": 3, "f9": 4})
    with pytest.raises(ValueError, match="unknown feature 'f9'"):
        model.learn_one(counter)
    sparse = collections.defaultdict(float, {"f0": 1.0, "f1": 2.0, "f2": 3.0})
    with pytest.raises(ValueError, match="missing feature 'f3'"):
        model.learn_one(sparse)
    assert dict(sparse) == {"f0": 1.0, "f1": 2.0, "f2": 3.0}
    assert pickle.dumps(model) == before
    model.predict_one(collections.OrderedDict(blobs[0][0]))  # any other mapping is fine
    fresh = RBFKMeans(n_clusters=2)
    with pytest.raises(ValueError, match="'b'"):  # predictions check their events too
        fresh.predict_one({"a": 1.0, "b": math.nan})
    with pytest.raises(TypeError, match="'b'"):
        fresh.predict_proba_one({"a": 1.0, "b": "x"})
    assert fresh.n_features == 0


# -- drift and keyed streams -------------------------------------------------------------------


def test_cusum_alarm_needs_a_sustained_rise():
    det = np.zeros(3)
    assert not any(ok.watch_distortion(det, 1.0) for _ in range(100))
    assert not ok.watch_distortion(det, 1e6)  # one outlier counts as at most CAP = 4 times the mean
    assert not any(ok.watch_distortion(det, 1.0) for _ in range(20))
    det[2] = 0.0
    # a sustained rise: each event adds 4 - 1 - 0.5 = 2.5, the threshold is 20: alarm on the 9th
    alarms = [ok.watch_distortion(det, 10.0) for _ in range(9)]
    assert alarms == [False] * 8 + [True]
    assert det.tolist() == [0.0, 0.0, 0.0]  # restarted


def _jump_stream(seed, n=2000, k=4, d=4):
    X1, y1 = make_blobs(n, n_features=d, centers=k, cluster_std=0.5, random_state=seed)
    X2, y2 = make_blobs(n, n_features=d, centers=k, cluster_std=0.5, random_state=seed + 100)
    return _events(np.vstack([X1, X2])), np.concatenate([y1, y2 + k])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_defaults_recover_from_a_jump(seed):
    events, y = _jump_stream(seed)
    model = RBFKMeans(n_clusters=4, seed=seed)  # defaults: forgetting and the CUSUM detector
    preds = []
    for x in events:
        preds.append(model.predict_one(x))
        model.learn_one(x)
    preds = np.array(preds)
    assert model.n_drifts == 1 and model.n_alarms >= 1
    # 9 events to the alarm, then 32 buffered (warmup for k = 4) before the restart
    before = adjusted_rand_score(y[1800:2000], preds[1800:2000])
    after = adjusted_rand_score(y[2050:2250], preds[2050:2250])
    assert before > 0.99 and after > 0.99
    # without a detector, forgetting alone has not caught up 250 events after the jump
    slow = RBFKMeans(n_clusters=4, seed=seed, drift_detector=None)
    slow_preds = []
    for x in events:
        slow_preds.append(slow.predict_one(x))
        slow.learn_one(x)
    assert adjusted_rand_score(y[2050:2250], slow_preds[2050:2250]) < after


def test_no_drift_on_a_stationary_stream():
    for d, std in ((1, 1.0), (2, 3.0), (16, 6.0)):
        X, _ = make_blobs(20_000, n_features=d, centers=4, cluster_std=std, random_state=d)
        model = RBFKMeans(n_clusters=4, seed=0)
        for x in _events(X):
            model.learn_one(x)
        assert model.n_alarms == 0 and model.n_drifts == 0


def test_half_life():
    model = RBFKMeans(n_clusters=2, half_life=50, drift_detector=None, seed=0)
    for v in range(2000):
        model.learn_one({"a": float(v % 2)})
    # each event adds mass 1; the masses sum to 1 / (1 - 2^(-1/50)) in the steady state
    assert sum(model.counts.values()) == pytest.approx(1 / (1 - 0.5 ** (1 / 50)), rel=1e-9)
    assert RBFKMeans(n_clusters=8)._decay == 0.5 ** (1 / 100)  # "auto": max(100, 4 k) steps
    assert RBFKMeans(n_clusters=64, batch_size=2)._decay == 0.5 ** (1 / 256)
    assert RBFKMeans(half_life=None)._decay == 1.0
    with pytest.raises(ValueError, match="half_life"):
        RBFKMeans(half_life="never")
    with pytest.raises(ValueError, match="drift_detector"):
        RBFKMeans(drift_detector="page-hinkley")


def test_river_detector_restarts_too():
    X1, y1 = make_blobs(2000, n_features=4, centers=3, cluster_std=0.5, random_state=0)
    X2, y2 = make_blobs(2000, n_features=4, centers=3, cluster_std=0.5, random_state=1)
    model = RBFKMeans(n_clusters=3, drift_detector="adwin", seed=0)
    assert isinstance(model._drift, drift.ADWIN) and model._det.size == 0
    for x in _events(X1):
        model.learn_one(x)
    assert model.n_drifts == 0
    t_before = model.temperature
    temps = []
    for x in _events(X2):
        model.learn_one(x)
        temps.append(model.temperature)
    assert model.n_drifts >= 1
    assert max(temps) > 5 * t_before  # a restart starts a new temperature schedule
    tail = _events(X2[-500:])
    assert adjusted_rand_score(y2[-500:], [model.predict_one(x) for x in tail]) > 0.95


def test_keyed_wrapper_lru_eviction():
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=2, warmup=4, seed=0), key="id", max_streams=2)
    for i in range(8):
        keyed.learn_one({"id": "a", "v": float(i % 2)})
        keyed.learn_one({"id": "b", "v": 10.0 + i % 2})
    assert keyed.n_streams == 2 and keyed.n_evicted == 0
    keyed.learn_one({"id": "a", "v": 0.0})  # a is now the most recently used
    keyed.learn_one({"id": "c", "v": 5.0})  # evicts b
    assert keyed.streams == ["a", "c"] and keyed.n_evicted == 1
    assert keyed.predict_one({"id": "b", "v": 10.0}) == 0
    assert keyed.predict_proba_one({"id": "b", "v": 10.0}) == {}
    a = keyed.model_for("a")
    assert a.n_features == 1 and a.temperature > 0
    assert keyed.predict_one({"id": "a", "v": 1.0}) == a.predict_one({"v": 1.0})
    assert keyed.model.centers == {}  # the template is never trained
    with pytest.raises(ValueError, match="'id'"):
        keyed.learn_one({"v": 1.0})
    with pytest.raises(ValueError, match="'w'"):
        keyed.learn_one({"id": "a", "v": 1.0, "w": 2.0})
    with pytest.raises(ValueError, match="'v'"):
        keyed.learn_one({"id": "d", "v": "x"})  # a bad first event registers no stream
    assert keyed.n_streams == 2


def test_reheat_softens_the_memberships_again():
    model = RBFKMeans(n_clusters=2, seed=0, temperature_decay=0.9)
    with pytest.raises(RuntimeError, match="warm-up"):
        model.reheat()
    rng = np.random.default_rng(0)
    for _ in range(400):
        c = rng.integers(2) * 4.0
        model.learn_one({"x": c + rng.normal(0, 0.5), "y": rng.normal(0, 0.5)})
    between = {"x": 2.0, "y": 0.0}
    cold_t = model.temperature
    assert len(model.predict_proba_one(between)) == 1  # annealed: one cluster
    assert model.reheat() > 100 * cold_t
    assert len(model.predict_proba_one(between)) == 2  # hot again: shared


def test_keyed_rejected_event_does_not_count_as_a_use():
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=2, warmup=4, seed=0), key="id", max_streams=2)
    keyed.learn_one({"id": "A", "v": 1.0})
    keyed.learn_one({"id": "B", "v": 2.0})
    before = pickle.dumps(keyed)
    for bad in (math.nan, 1e41, "x", 1j):
        with pytest.raises(ValueError, match="'v'"):
            keyed.learn_one({"id": "A", "v": bad})
    with pytest.raises(ValueError, match="'w'"):
        keyed.learn_one({"id": "A", "v": 1.0, "w": 0.0})
    assert pickle.dumps(keyed) == before and keyed.streams == ["A", "B"]
    keyed.learn_one({"id": "C", "v": 3.0})  # A is still the least recently used
    assert keyed.streams == ["B", "C"] and keyed.n_evicted == 1
    with pytest.raises(TypeError, match="hashable"):
        keyed.learn_one({"id": ["A"], "v": 1.0})
    with pytest.raises(TypeError, match="an event must be a dict"):
        keyed.learn_one([("id", "A")])


# -- weighted events ------------------------------------------------------------------------------
_UNWEIGHTED_RULES = dict(mapping="hard", half_life=None, reassignment_ratio=0.0,
                         drift_detector=None, warmup=40)


def test_a_weighted_event_is_the_event_repeated(blobs):
    # With hard memberships, no forgetting and no re-seeding (the rules that count events, not
    # weights), an event of weight n is the event n times: the same running means.
    events, _ = blobs
    a, b = (RBFKMeans(n_clusters=4, seed=0, **_UNWEIGHTED_RULES) for _ in range(2))
    for x in events[:200]:  # past the warm-up and its re-check, on the same events
        a.learn_one(x)
        b.learn_one(x)
    rng = np.random.default_rng(0)
    for x in events[200:500]:
        n = int(rng.integers(0, 4))
        a.learn_one(x, w=n)
        for _ in range(n):
            b.learn_one(x)
    np.testing.assert_allclose(a._C, b._C, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a._counts, b._counts, rtol=1e-9)


@pytest.mark.parametrize("batch_size", [1, 8])
def test_a_weighted_warm_up_is_the_engines_weighted_start(blobs, batch_size):
    from streamrbf.core import engine

    events, _ = blobs
    w = np.random.default_rng(1).uniform(0.1, 5.0, size=40)
    model = RBFKMeans(n_clusters=4, seed=0, batch_size=batch_size, warmup=40)
    for x, wi in zip(events[:40], w):
        model.learn_one(x, w=wi)
    X = np.array([[x[f] for f in model._features] for x in events[:40]])
    ref = engine.initialise(X, model._policy, model._seed, sample_weight=w).state
    # the same centres, in the order that keeps the warm-up's provisional labels
    order = [int(np.argmin(((ref.centers[0] - c) ** 2).sum(axis=1))) for c in model._C]
    assert sorted(order) == [0, 1, 2, 3]
    np.testing.assert_allclose(model._C, ref.centers[0][order].astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(model._counts, ref.masses[0][order], rtol=1e-9)
    assert not np.allclose(ref.masses[0], engine.initialise(X, model._policy,
                                                            model._seed).state.masses[0])


@pytest.mark.parametrize("w", [-1.0, math.nan, math.inf, "2", None, np.array([1.0, 2.0])])
def test_bad_weights_are_named_and_change_nothing(blobs, w):
    events, _ = blobs
    for model in (RBFKMeans(n_clusters=3, seed=0, warmup=10), _fitted(events[:300])):
        before = pickle.dumps(model)
        with pytest.raises(ValueError, match="w must be a finite number >= 0"):
            model.learn_one(events[0], w=w)
        assert pickle.dumps(model) == before


def test_an_event_of_weight_zero_is_checked_and_changes_nothing(blobs):
    events, _ = blobs
    model = _fitted(events[:300])
    before = pickle.dumps(model)
    model.learn_one(events[300], w=0)
    model.learn_one(events[301], w=False)
    assert pickle.dumps(model) == before
    with pytest.raises(FeatureTypeError):
        model.learn_one({**events[300], "f0": "x"}, w=0.0)
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=3, seed=0, warmup=10))
    keyed.learn_one({"stream": "a", **events[0]}, w=0.0)
    assert keyed.n_streams == 0


def test_weights_reach_each_streams_model(blobs):
    # the total decayed mass of a stream is its decayed total weight, whatever the assignments
    events, _ = blobs
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=3, seed=0, warmup=10))
    for x in events[:100]:
        keyed.learn_one({"stream": "a", **x}, w=1.0)
        keyed.learn_one({"stream": "b", **x}, w=5.0)
    total = sum(keyed.model_for("a").counts.values())
    assert total > 10
    assert sum(keyed.model_for("b").counts.values()) == pytest.approx(5 * total, rel=1e-6)
