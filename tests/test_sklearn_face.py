"""RBFKMeans as scikit-learn's estimators are: sample weights (in the engine, so every face can
use them), sparse input, the inits, labels, the stopping rule, duplicates, exact distances."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from streamrbf import RBFKMeans
from streamrbf.core import engine
from streamrbf.core.policy import Policy
from streamrbf.core.seeding import kmeans_plusplus


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(400, centers=4, n_features=5, cluster_std=0.8, random_state=3)
    return X, y


# ------------------------------------------------------------------------------ sample weights
@given(st.lists(st.integers(0, 4), min_size=12, max_size=40).filter(lambda w: sum(w) > 0),
       st.integers(0, 10_000), st.sampled_from(["entmax15", "softmax", "hard"]))
@settings(max_examples=40, deadline=None)
def test_statistics_of_weighted_rows_are_those_of_repeated_rows(weights, seed, mapping):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(len(weights), 3))
    w = np.asarray(weights, dtype=float)
    state = engine.fit(X[:5] if len(X) >= 5 else X, Policy(n_clusters=2), 0).state
    policy = Policy(n_clusters=2, mapping=mapping)
    weighted = engine.statistics(state, X, policy, sample_weight=w)
    repeated = engine.statistics(state, np.repeat(X, weights, axis=0), policy)
    np.testing.assert_allclose(weighted.mass, repeated.mass, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weighted.sums, repeated.sums, rtol=1e-10, atol=1e-10)
    assert weighted.loss == pytest.approx(repeated.loss, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("batch_size", [None, 64])
def test_weighted_fit_is_the_fit_of_repeated_rows(blobs, batch_size):
    X, _ = blobs
    w = np.random.default_rng(0).integers(1, 5, len(X))
    init = X[[0, 100, 200, 300]]
    kw = dict(init=init, batch_size=batch_size, reassignment_ratio=0.0, random_state=0)
    weighted = RBFKMeans(4, **kw).fit(X, sample_weight=w)
    repeated = RBFKMeans(4, **kw).fit(np.repeat(X, w, axis=0))
    if batch_size is None:  # full batch: the same steps, to rounding
        np.testing.assert_array_equal(np.repeat(weighted.labels_, w), repeated.labels_)
        np.testing.assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_,
                                   rtol=1e-9, atol=1e-9)
        assert weighted.inertia_ == pytest.approx(repeated.inertia_, rel=1e-9)
    else:  # mini-batches of rows differ from mini-batches of copies: the same clustering
        np.testing.assert_allclose(np.sort(weighted.cluster_centers_, 0),
                                   np.sort(repeated.cluster_centers_, 0), atol=0.2)


def test_unit_zero_and_scaled_weights(blobs):
    X, _ = blobs
    km = RBFKMeans(4, random_state=1)
    none = clone(km).fit(X)
    ones = clone(km).fit(X, sample_weight=np.ones(len(X)))
    np.testing.assert_array_equal(none.cluster_centers_, ones.cluster_centers_)
    w = np.random.default_rng(1).uniform(size=len(X))
    a = clone(km).fit(X, sample_weight=w)
    b = clone(km).fit(X, sample_weight=4 * w)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-9)
    # weight 0 is a removed row (given centres: the same steps)
    w0 = np.where(np.arange(len(X)) % 3 == 0, 0.0, 1.0)
    kw = dict(init=X[[1, 101, 201, 301]], random_state=0)
    zero = RBFKMeans(4, **kw).fit(X, sample_weight=w0)
    removed = RBFKMeans(4, **kw).fit(X[w0 > 0])
    np.testing.assert_allclose(zero.cluster_centers_, removed.cluster_centers_, atol=1e-9)


def test_weighted_seedings_never_pick_rows_of_weight_zero():
    X, _ = make_blobs(100, n_features=5, centers=5, random_state=0)
    w = np.random.default_rng(0).uniform(size=100)
    w[::2] = 0
    for seed in range(20):
        for init in ("k-means++", "random"):
            C, _, _ = engine.initial_centres(X, Policy(n_clusters=10, init=init),
                                             np.random.default_rng(seed), w)
            d = ((X[::2, None, :] - C[None]) ** 2).sum(-1)
            assert (d > 0).all()
    # ... and weights change the seeding
    rng = np.random.default_rng(5)
    a = kmeans_plusplus(X, 5, np.random.default_rng(5), rng.uniform(size=100))
    b = kmeans_plusplus(X, 5, np.random.default_rng(5))
    assert not np.allclose(a, b)


def test_partial_fit_and_score_take_weights(blobs):
    X, _ = blobs
    km = RBFKMeans(4, random_state=0, half_life=None).partial_fit(X[:200])
    before = km.counts_.sum()
    km.partial_fit(X[200:300], sample_weight=np.full(100, 2.0))
    assert km.counts_.sum() == pytest.approx(before + 200)
    w = np.random.default_rng(0).uniform(size=100)
    _, d2 = engine.nearest(km.state_, X[300:400])
    assert km.score(X[300:400], sample_weight=w) == pytest.approx(-(w @ d2))
    with pytest.raises(ValueError, match="Negative values.*sample_weight"):
        km.partial_fit(X[:10], sample_weight=-np.ones(10))


# ------------------------------------------------------------------------------------- sparse
def sparse_blobs(n: int = 300, d: int = 20, k: int = 5, seed: int = 0) -> np.ndarray:
    """Clusters on sparse supports (as bag-of-words rows): each centre has 30% non-zero
    features, each row the centre's support with noise."""
    rng = np.random.default_rng(seed)
    support = rng.random((k, d)) < 0.3
    centres = support * rng.uniform(2, 5, (k, d))
    labels = rng.integers(k, size=n)
    return centres[labels] + support[labels] * rng.normal(0, 0.3, (n, d))


@pytest.mark.parametrize("container", [sparse.csr_matrix, sparse.csr_array])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_input_gives_the_dense_results(container, dtype):
    X = sparse_blobs().astype(dtype)
    S = container(X)
    for kw in ({"init": "random"}, {"batch_size": 50}, {}):
        dense = RBFKMeans(5, random_state=0, **kw).fit(X)
        sparse_ = RBFKMeans(5, random_state=0, **kw).fit(S)
        assert sparse_.cluster_centers_.dtype == dtype
        assert sparse_.inertia_ == pytest.approx(dense.inertia_, rel=1e-3)
        if kw.get("init") == "random":
            continue  # (a poor start: its many steps near ties amplify rounding differences)
        np.testing.assert_allclose(sparse_.cluster_centers_, dense.cluster_centers_,
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(sparse_.labels_, dense.labels_)
    np.testing.assert_array_equal(dense.predict(S), dense.predict(X))
    np.testing.assert_allclose(dense.transform(S), dense.transform(X), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dense.predict_proba(S), dense.predict_proba(X), atol=1e-6)
    assert dense.score(S) == pytest.approx(dense.score(X), rel=1e-5)
    a, b = clone(dense).partial_fit(X[:100]), clone(dense).partial_fit(S[:100])
    a.partial_fit(X[100:200])
    b.partial_fit(S[100:200], sample_weight=np.ones(100))
    # the same clusters (the best of the stream's seedings may number them differently)
    order = [np.lexsort(m.cluster_centers_.T[::-1]) for m in (a, b)]
    np.testing.assert_allclose(a.cluster_centers_[order[0]], b.cluster_centers_[order[1]],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::scipy.sparse.SparseEfficiencyWarning")  # (dia of blobs)
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dok", "lil", "dia", "bsr", "csr64"])
def test_every_sparse_format_is_taken_or_refused_by_name(fmt):
    # What scikit-learn's check_estimator_sparse_* feed (the checks themselves read a clusterer
    # with predict_proba as a classifier): any format is converted to CSR; 64-bit indices are
    # refused with an error that says "sparse".
    X = sparse_blobs()
    S = sparse.csr_matrix(X)
    if fmt == "csr64":
        S.indices, S.indptr = S.indices.astype(np.int64), S.indptr.astype(np.int64)
        with pytest.raises(ValueError, match="sparse"):
            RBFKMeans(5, random_state=0).fit(S)
        return
    S = S.asformat(fmt)
    km = RBFKMeans(5, random_state=0).fit(S)
    dense = RBFKMeans(5, random_state=0).fit(X)
    np.testing.assert_array_equal(km.predict(S), dense.labels_)
    assert km.predict(S).shape == (X.shape[0],)
    assert km.predict_proba(S).shape == km.transform(S).shape == (X.shape[0], 5)


@given(st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_sparse_distances_and_memberships_equal_the_dense_ones(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(30, 8)) * (rng.random((30, 8)) < 0.4)
    state = engine.fit(X, Policy(n_clusters=3), seed).state
    S = sparse.csr_matrix(X)
    np.testing.assert_allclose(engine.distances(state, S), engine.distances(state, X),
                               rtol=1e-9, atol=1e-9)
    policy = Policy(n_clusters=3)
    np.testing.assert_allclose(engine.memberships(state, S, policy),
                               engine.memberships(state, X, policy), atol=1e-9)


# ------------------------------------------------------------------------------- the inits
def test_random_and_callable_inits(blobs):
    X, y = blobs
    seen = []

    def init(data, k, random_state):
        seen.append((data.shape, k, type(random_state).__name__))
        return data[random_state.choice(len(data), k, replace=False)]

    for chosen in ("random", init):
        km = RBFKMeans(4, init=chosen, random_state=0).fit(X)
        from sklearn.metrics import adjusted_rand_score

        assert adjusted_rand_score(y, km.labels_) == 1.0
    assert seen == [(X.shape, 4, "RandomState")]
    # the same seed, the same centres
    again = RBFKMeans(4, init=init, random_state=0).fit(X)
    np.testing.assert_array_equal(again.cluster_centers_, km.cluster_centers_)
    with pytest.raises(ValueError, match="does not match the number of clusters 4"):
        RBFKMeans(4, init=lambda data, k, rs: data[:2]).fit(X)
    with pytest.raises(ValueError, match="'init' parameter"):
        RBFKMeans(4, init="farthest").fit(X)


def test_a_model_started_by_a_callable_saves_the_centres_it_gave(blobs, tmp_path):
    X, _ = blobs
    km = RBFKMeans(4, init=lambda data, k, rs: data[:k], random_state=0).fit(X)
    km.save(tmp_path / "m")
    loaded = RBFKMeans.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.init, X[:4])
    np.testing.assert_array_equal(loaded.predict(X), km.predict(X))


# ------------------------------------------------------------------------ labels and state
def test_labels_after_partial_fit_are_int32_and_optional(blobs):
    X, _ = blobs
    km = RBFKMeans(4, random_state=0).partial_fit(X[:200])
    assert km.labels_.dtype == np.int32 and km.labels_.shape == (200,)
    r = clone(km).partial_fit(X[:200])
    before = r.predict(X[200:300])
    r.partial_fit(X[200:300])
    np.testing.assert_array_equal(r.labels_, before)  # the step's own pass: before the step
    quiet = RBFKMeans(4, random_state=0, compute_labels=False).partial_fit(X[:200])
    assert not hasattr(quiet, "labels_")
    assert km.predict(X).dtype == np.int32 and km.fit(X).labels_.dtype == np.int32


def test_every_container_steps_alike_and_set_params_applies_at_the_next_step(blobs):
    # C-ordered float arrays skip validate_data; other containers and set_params go through it.
    X, _ = blobs
    models = [RBFKMeans(4, random_state=0).partial_fit(X[:100]) for _ in range(3)]
    for lo in range(100, 400, 100):
        models[0].partial_fit(X[lo:lo + 100])
        models[1].partial_fit(np.asfortranarray(X[lo:lo + 100]))
        models[2].partial_fit(X[lo:lo + 100].tolist())
    for m in models[1:]:
        np.testing.assert_array_equal(m.cluster_centers_, models[0].cluster_centers_)
    with pytest.raises(ValueError, match="X has 4 features, but RBFKMeans is expecting 5"):
        models[0].partial_fit(X[:10, :4])
    pd = pytest.importorskip("pandas")
    named = RBFKMeans(4, random_state=0).partial_fit(pd.DataFrame(X[:100], columns=list("abcde")))
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        named.partial_fit(X[100:200])
    models[0].set_params(half_life=1)  # the next step forgets with the new parameter
    assert models[0].get_policy().forgetting(100) < 1e-20
    models[0].set_params(n_clusters=0)
    with pytest.raises(ValueError, match="n_clusters"):
        models[0].get_policy()


def test_cluster_centers_can_be_assigned(blobs):
    X, _ = blobs
    km = RBFKMeans(4, random_state=0, dtype="float32").fit(X)
    new = km.cluster_centers_[::-1].astype(np.float64)
    km.cluster_centers_ = new
    assert km.cluster_centers_.dtype == np.float32
    np.testing.assert_allclose(km.cluster_centers_, new, rtol=1e-6)
    assert km.predict(new[:1]).tolist() == [0]
    with pytest.raises(ValueError, match="shape"):
        km.cluster_centers_ = new[:2]


def test_verbose_reports_each_seeding(blobs, capsys):
    X, _ = blobs
    RBFKMeans(4, n_init=3, verbose=1, random_state=0).fit(X)
    lines = [line for line in capsys.readouterr().out.splitlines()
             if not line.startswith("Converged")]
    assert [line.split(":")[0] for line in lines] == ["Seeding 0", "Seeding 1", "Seeding 2"]
    assert all("iterations" in line and "inertia" in line for line in lines)


# ---------------------------------------------------------------------- stopping and quality
@pytest.mark.parametrize("seed", range(5))
def test_tol_zero_stops_when_no_point_changes_cluster(seed):
    X, _ = make_blobs(500, centers=5, n_features=4, random_state=seed)
    km = RBFKMeans(5, tol=0.0, random_state=seed).fit(X)
    assert km.n_iter_ < km.max_iter
    # stopped on a fixed point of Lloyd's step
    step = np.array([X[km.labels_ == j].mean(0) for j in range(5)])
    np.testing.assert_allclose(km.cluster_centers_, step, atol=1e-6)


def test_more_iterations_never_end_softer(blobs):
    X = np.random.default_rng(0).normal(size=(100, 10))
    worse = 0
    for seed in range(30):
        s1 = RBFKMeans(n_init=1, random_state=seed, max_iter=1).fit(X).score(X)
        s10 = RBFKMeans(n_init=1, random_state=seed, max_iter=10).fit(X).score(X)
        worse += s10 <= s1
    assert worse == 0


def test_duplicates_give_distinct_centres_or_scikit_learns_warning():
    X = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [2.0, 0.0]])  # 3 distinct points
    for seed in range(100):
        with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(3\) found smaller "
                          r"than n_clusters \(4\)"):
            km = RBFKMeans(4, random_state=seed).fit(X)
        assert len(np.unique(km.cluster_centers_, axis=0)) == 3, seed
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        RBFKMeans(3, random_state=0).fit(X)


@given(st.integers(0, 10_000), st.sampled_from([np.float32, np.float64]),
       st.floats(-1e4, 1e4))
@settings(max_examples=40, deadline=None)
def test_a_centre_is_at_distance_exactly_zero_from_itself(seed, dtype, offset):
    X = (np.random.default_rng(seed).normal(size=(60, 6)) + offset).astype(dtype)
    km = RBFKMeans(4, random_state=seed).fit(X)
    D = km.transform(km.cluster_centers_)
    np.testing.assert_array_equal(np.diag(D), 0.0)
    np.testing.assert_array_equal(km.predict(km.cluster_centers_), np.arange(4))


# ---------------------------------------------------------------------- scikit-learn's API
def test_output_follows_set_output_and_pipelines(blobs):
    pd = pytest.importorskip("pandas")
    X, _ = blobs
    pipe = make_pipeline(StandardScaler(), RBFKMeans(4, random_state=0)).set_output(
        transform="pandas")
    out = pipe.fit_transform(pd.DataFrame(X, columns=list("abcde")))
    assert list(out.columns) == [f"rbfkmeans{i}" for i in range(4)]
    km = RBFKMeans(3, random_state=0).fit(X)
    assert km.get_feature_names_out().tolist() == ["rbfkmeans0", "rbfkmeans1", "rbfkmeans2"]


def test_the_policy_and_scikit_learns_constraints_agree():
    # the same values refused by the engine's Policy (River, Beam) and by scikit-learn's checks
    from sklearn.utils._param_validation import InvalidParameterError

    cases = {"n_clusters": [0, 2.5, 3], "max_iter": [0, 1], "tol": [-1.0, 0.0],
             "initial_temperature": [0.0, -2.0, 1.0, "auto"], "temperature_decay": [0.0, 1.0,
                                                                                     1.5],
             "min_temperature": [-1.0, 0.0], "half_life": [0.0, None, 10.0, "auto"],
             "reassignment_ratio": [-0.1, 0.0, 1.0], "mapping": ["entmax15", "sparsemax"],
             "batch_size": [0, None, 10], "init_size": [0, None, 5],
             "n_init": [0, "auto", 2], "init": ["k-means++", "random", "other"]}
    X = np.random.default_rng(0).normal(size=(20, 2))
    for name, values in cases.items():
        for value in values:
            try:
                Policy.from_params({"n_clusters": 3, name: value})
                policy_ok = True
            except (TypeError, ValueError):
                policy_ok = False
            try:
                RBFKMeans(**{"n_clusters": 3, name: value}).fit(X)
                face_ok = True
            except InvalidParameterError:
                face_ok = False
            assert policy_ok == face_ok, (name, value)


def test_river_and_beam_never_import_scikit_learn():
    code = ("import sys; import streamrbf.river, streamrbf.beam, streamrbf.core.engine; "
            "print(sorted(m for m in sys.modules if m == 'sklearn' or "
            "m.startswith('sklearn.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
