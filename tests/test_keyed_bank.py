"""Many streams in one bank: the compiled stream start, the warm-up's provisional clustering, and
River's KeyedRBFKMeans on the bank (per event and per frame)."""

from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score

from streamrbf.core import _start_kernels as sk
from streamrbf.core import engine
from streamrbf.core.bank import initialise_bank
from streamrbf.core.policy import REPEAT_RTOL, Policy
from streamrbf.river import KeyedRBFKMeans, RBFKMeans


def _segments(n_seg, size, k, d, seed, sep=4.0):
    rng = np.random.default_rng(seed)
    cent = rng.normal(0, sep, (n_seg, k, d))
    lab = rng.integers(0, k, (n_seg, size))
    X = cent[np.arange(n_seg)[:, None], lab] + rng.normal(0, 1, (n_seg, size, d))
    return X.reshape(-1, d), np.arange(n_seg + 1) * size


# -- the compiled start ---------------------------------------------------------------------------

def test_the_bank_start_is_as_good_as_the_engines_stream_start():
    X, starts = _segments(60, 32, 4, 8, 0, sep=2.0)  # overlapping: seedings matter
    policy = Policy(n_clusters=4)
    bank, inertia = initialise_bank(X, starts, policy, seeds=np.arange(60))
    alone = np.array([engine.initialise(X[a:b], policy, s).inertia
                      for s, (a, b) in enumerate(zip(starts[:-1], starts[1:], strict=True))])
    ratio = inertia / alone
    assert ratio.mean() <= 1.02 and ratio.max() <= 1.25
    # each model is recorded as a start: n_seen, temperatures in [floor, start]
    assert bank.n_seen.tolist() == [32] * 60
    assert (bank.min_temperature <= bank.temperature).all()
    assert (bank.temperature <= bank.initial_temperature).all()


def test_the_bank_start_is_reproducible_from_the_seeds():
    X, starts = _segments(20, 16, 3, 4, 1)
    policy = Policy(n_clusters=3)
    a, _ = initialise_bank(X, starts, policy, seeds=np.arange(20))
    b, _ = initialise_bank(X, starts, policy, seeds=np.arange(20))
    c, _ = initialise_bank(X[:16], starts[:2], policy, seeds=[0])  # alone: the same model
    assert a.centers.tobytes() == b.centers.tobytes()
    assert np.array_equal(a.centers[0], c.centers[0])


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(3, 20), min_size=1, max_size=6),
       d=st.integers(1, 5), seed=st.integers(0, 2**31),
       scale=st.sampled_from([1e-6, 1.0, 1e6]), dup=st.booleans())
def test_the_bank_start_is_finite_and_keeps_each_segments_weight(sizes, d, seed, scale, dup):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, scale, (sum(sizes), d))
    if dup:
        X[: len(X) // 2] = X[0]  # duplicated rows
    w = rng.uniform(0.5, 2.0, len(X))
    starts = np.r_[0, np.cumsum(sizes)]
    bank, inertia = initialise_bank(X, starts, Policy(n_clusters=3), seeds=np.arange(len(sizes)),
                                    sample_weight=w)
    assert np.isfinite(bank.centers).all() and np.isfinite(inertia).all()
    totals = np.add.reduceat(w, starts[:-1])
    np.testing.assert_allclose(bank.masses.sum(axis=1), totals, rtol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), sep=st.sampled_from([1.0, 2.0, 8.0]))
def test_auto_seedings_stop_once_the_best_is_reached_twice(seed, sep):
    # the auto start tries the first seedings of n_init=5, at least two, and stops at the
    # second hit of the best: never better than five, never worse than two
    X, starts = _segments(30, 24, 4, 6, seed, sep=sep)
    seeds = np.arange(30)
    inertia = {n: initialise_bank(X, starts, Policy(n_clusters=4, n_init=n), seeds)[1]
               for n in ("auto", 2, 5)}
    # (a hit is a tie within REPEAT_RTOL: the tie's own winner may be lower by that much)
    assert (inertia[5] <= inertia["auto"]).all()
    assert (inertia["auto"] <= inertia[2] * (1 + REPEAT_RTOL)).all()


def test_the_engines_stream_start_stops_at_the_second_hit_too():
    X, _ = _segments(1, 64, 3, 4, 0, sep=10.0)  # well separated: every seeding agrees
    trials: dict = {"auto": [], 5: []}
    for n_init, seen in trials.items():
        engine.fit(X, Policy(n_clusters=3, n_init=n_init), 0, stream=True,
                   progress=lambda trial, *_, seen=seen: seen.append(trial))
    assert trials == {"auto": [0, 1], 5: [0, 1, 2, 3, 4]}


def test_the_bank_start_refuses_segments_it_cannot_start():
    with pytest.raises(ValueError, match="segments of at least 3 rows"):
        initialise_bank(np.zeros((5, 2)), [0, 2, 5], Policy(n_clusters=3), seeds=[0, 1])
    with pytest.raises(ValueError, match="k-means"):
        initialise_bank(np.zeros((5, 2)), [0, 5], Policy(n_clusters=2, init=np.zeros((2, 2))),
                        seeds=[0])


def test_align_to_keeps_the_reference_labels():
    rng = np.random.default_rng(0)
    C = rng.normal(size=(5, 3))
    perm = rng.permutation(5)
    ref = C[perm[:3]] + 1e-3
    C2, M2 = C.copy(), np.arange(5.0)
    sk.align_to(C2, M2, ref, 3)
    np.testing.assert_array_equal(C2[:3], C[perm[:3]])
    assert sorted(M2.tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0]  # a permutation of the centres
    np.testing.assert_array_equal(C2[np.argsort(M2)], C)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=2), min_size=1,
                     max_size=30), k=st.integers(1, 5))
def test_a_warm_up_prediction_is_the_label_learning_gives(rows, k):
    C, M, count = np.zeros((k, 2)), np.zeros(k), 0
    for r in rows:
        x = np.array(r)
        before = (C.copy(), M.copy())
        label, same = sk.provisional_event(x, 1.0, C, M, count, False)
        assert np.array_equal(C, before[0]) and np.array_equal(M, before[1]) and same <= k
        learnt, count = sk.provisional_event(x, 1.0, C, M, count)
        assert learnt == label and 1 <= count <= k and 0 <= label < count


# -- KeyedRBFKMeans on the bank -------------------------------------------------------------------

def _events(n_keys, per_key, d, k, seed):
    """``n_keys`` streams of ``per_key`` events with their own ``k`` blobs, interleaved: (dict
    events with an "id" field, the frame, keys, true labels), as the bench makes them."""
    from streamrbf.bench.river import _keyed_events

    return _keyed_events(n_keys, per_key, d, k, seed)


def _ari(keys, y, pred):
    return np.mean([adjusted_rand_score(y[keys == j], pred[keys == j]) for j in np.unique(keys)])


def test_keyed_streams_beat_a_dict_of_river_kmeans_on_prequential_ari():
    from river import cluster

    events, _, keys, y = _events(40, 100, 8, 4, 3)
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=4, seed=0), key="id")
    ours, theirs, models = [], [], {}
    for e in events:
        ours.append(keyed.predict_one(e))
        keyed.learn_one(e)
        x = {f: v for f, v in e.items() if f != "id"}
        m = models.setdefault(e["id"], cluster.KMeans(n_clusters=4, seed=0))
        theirs.append(m.predict_one(x))
        m.learn_one(x)
    a, b = _ari(keys, y, np.array(ours)), _ari(keys, y, np.array(theirs))
    assert a >= b and a > 0.9


def test_a_stream_learns_the_same_whatever_the_other_streams_do():
    events, _, keys, _ = _events(5, 80, 3, 3, 4)
    mixed = KeyedRBFKMeans(RBFKMeans(n_clusters=3, seed=7), key="id", max_streams=5)
    alone = KeyedRBFKMeans(RBFKMeans(n_clusters=3, seed=7), key="id")
    for e in events:
        mixed.learn_one(e)
        if e["id"] == 2:
            alone.learn_one(e)
    a, b = mixed.model_for(2), alone.model_for(2)
    assert a.centers == b.centers and a.temperature == b.temperature


def test_warm_up_labels_survive_the_start():
    # the started model keeps the labels the provisional clustering gave
    events, _, keys, y = _events(1, 100, 4, 3, 5)
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=3, seed=0, warmup=30), key="id")
    pred = []
    for e in events:
        pred.append(keyed.predict_one(e))
        keyed.learn_one(e)
    pred = np.array(pred)
    assert adjusted_rand_score(y[10:], pred[10:]) == 1.0


def _bytes_per_stream(n_keys, per_key, seed):
    """KeyedRBFKMeans after ``per_key`` events of each of ``n_keys`` streams at (16, 4): the
    model and the whole process's memory per stream (tracemalloc)."""
    events, _, _, _ = _events(n_keys, per_key, 16, 4, seed)
    KeyedRBFKMeans(RBFKMeans(n_clusters=4, seed=0), key="id").learn_one(events[0])  # imports
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=4, seed=0), key="id", max_streams=10**6)
    for e in events:
        keyed.learn_one(e)
    per_stream = (tracemalloc.get_traced_memory()[0] - before) / n_keys
    tracemalloc.stop()
    return keyed, per_stream


def test_a_stream_costs_under_a_kilobyte_after_its_warm_up():
    keyed, per_stream = _bytes_per_stream(1500, 60, 6)
    assert keyed.bank.warm == {}  # every warm-up buffer released
    assert per_stream <= 1024


@pytest.mark.parametrize("per_key", [1, 3, 10])
@pytest.mark.parametrize("how", ["learn_one", "learn_many"])
def test_a_warming_stream_holds_room_for_at_most_twice_its_events(per_key, how):
    from streamrbf.core.streams import WARM_ROWS

    events, frame, _, _ = _events(300, per_key, 16, 4, 7)
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=4, seed=0), key="id")  # warm-up of 32 events
    if how == "learn_one":
        for e in events:
            keyed.learn_one(e)
    else:
        for s in range(0, len(frame), 128):  # a stream's events over several frames
            keyed.learn_many(frame.iloc[s:s + 128])
    bank = keyed.bank
    assert len(bank.warm) == 300
    for row, buf in bank.warm.items():
        assert bank.n_warm[row] == per_key
        assert per_key <= len(buf) <= max(WARM_ROWS, 2 * per_key)
        held = buf[:per_key, :-1]
        mine = frame[frame["id"] == bank.keys[row]].drop(columns=["id"]).to_numpy()
        np.testing.assert_array_equal(held, mine)  # every event, in order


def test_a_one_event_stream_costs_under_a_kilobyte():
    keyed, per_stream = _bytes_per_stream(2000, 1, 9)
    assert len(keyed.bank.warm) == 2000 and per_stream <= 1024


def test_learn_many_steps_every_stream_of_a_frame_and_predicts_as_predict_one():
    events, frame, keys, y = _events(30, 60, 4, 3, 7)
    many = KeyedRBFKMeans(RBFKMeans(n_clusters=3, seed=0), key="id")
    many.learn_many(frame.iloc[:1000])
    many.learn_many(frame.iloc[1000:])
    assert many.n_streams == 30 and many.bank.warm == {}
    assert all(many.model_for(j).n_features == 4 for j in range(30))
    pred = many.predict_many(frame).to_numpy()
    assert pred.tolist() == [many.predict_one(e) for e in events]
    assert _ari(keys, y, pred) > 0.95


def test_learn_many_warm_up_rows_are_those_learn_one_buffers():
    _, frame, _, _ = _events(3, 20, 2, 2, 8)
    a = KeyedRBFKMeans(RBFKMeans(n_clusters=2, seed=0, warmup=10), key="id")
    b = KeyedRBFKMeans(RBFKMeans(n_clusters=2, seed=0, warmup=10), key="id")
    part = frame.iloc[:20]
    a.learn_many(part)
    for row in part.to_dict("records"):
        b.learn_one(row)
    for j in range(3):
        ma, mb = a.model_for(j), b.model_for(j)
        if ma.centers:  # started: the same start on the same warm-up events
            assert ma.centers == mb.centers
        else:
            assert [r.tolist() for r in ma._warm] == [r.tolist() for r in mb._warm]


def test_a_bad_frame_changes_nothing():
    _, frame, _, _ = _events(4, 30, 2, 2, 9)
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=2, seed=0), key="id")
    keyed.learn_many(frame.iloc[:60])
    before = pickle.dumps(keyed)
    bad = frame.iloc[60:].copy()
    bad.iloc[5, 2] = np.nan
    with pytest.raises(ValueError, match="f1"):
        keyed.learn_many(bad)
    with pytest.raises(ValueError, match="key field 'id'"):
        keyed.learn_many(frame.drop(columns=["id"]))
    na = frame.iloc[60:].astype({"id": "float"})
    na.iloc[3, 0] = np.nan
    with pytest.raises(ValueError, match="missing key in row 3"):
        keyed.learn_many(na)
    assert pickle.dumps(keyed) == before


def test_learn_many_with_more_streams_than_kept_evicts_in_order():
    _, frame, _, _ = _events(10, 20, 2, 2, 10)
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=2, seed=0, warmup=4), key="id", max_streams=4)
    keyed.learn_many(frame)
    assert keyed.n_streams == 4 and keyed.n_evicted >= 6
    last = list(dict.fromkeys(frame["id"].tolist()[::-1]))[:4]
    assert set(keyed.streams) == set(last)


def test_a_pickled_keyed_model_predicts_and_learns_the_same():
    events, _, _, _ = _events(6, 50, 3, 2, 11)
    keyed = KeyedRBFKMeans(RBFKMeans(n_clusters=2, seed=0), key="id")
    for e in events[:200]:
        keyed.learn_one(e)
    copy = pickle.loads(pickle.dumps(keyed))
    for e in events[200:]:
        assert copy.predict_one(e) == keyed.predict_one(e)
        keyed.learn_one(e)
        copy.learn_one(e)
    assert copy.model_for(3).centers == keyed.model_for(3).centers


def test_a_bank_round_trips_through_its_bytes_and_learns_on_the_same():
    from streamrbf.core.streams import StreamBank, from_bytes, to_bytes

    _, frame, keys, _ = _events(12, 40, 3, 2, 12)
    policy = Policy(n_clusters=2)
    bank = StreamBank(policy, warmup=16, seed=3, max_streams=8)
    bank.allocate(3)
    M = frame.drop(columns=["id"]).to_numpy()
    k = frame["id"].tolist()
    for s in range(0, 250, 5):  # some streams warming, some evicted
        bank.learn_rows(M[s:s + 5], bank.rows_for(k[s:s + 5]))
    assert bank.n_evicted > 0 and bank.warm
    data = to_bytes(bank)
    back = from_bytes(data, policy, 16, 3, max_streams=8)
    assert to_bytes(back) == data and list(back.slots) == list(bank.slots)
    # a warming stream is written as the events it holds: one more event, one more row
    row = next(iter(bank.warm))
    more = bank.copy()
    more.learn_rows(M[:1], np.array([row]))
    grown = to_bytes(more)
    header = int.from_bytes(grown[:8], "little") - int.from_bytes(data[:8], "little")
    assert len(grown) - len(data) - header == (3 + 1) * 8  # d = 3 values and a weight
    for s in range(250, len(k), 5):
        a = bank.learn_rows(M[s:s + 5], bank.rows_for(k[s:s + 5]))
        b = back.learn_rows(M[s:s + 5], back.rows_for(k[s:s + 5]))
        assert a.tolist() == b.tolist()
    assert to_bytes(back) == to_bytes(bank)


def test_bank_bytes_whose_warm_up_events_do_not_match_their_counts_are_refused():
    import json

    from streamrbf.core.streams import StreamBank, from_bytes, to_bytes

    bank = StreamBank(Policy(n_clusters=2), warmup=8, seed=0, max_streams=4)
    bank.allocate(2)
    bank.learn_rows(np.arange(10.0).reshape(5, 2), bank.rows_for(["a", "a", "b", "a", "b"]))
    data = to_bytes(bank)
    n = int.from_bytes(data[:8], "little")
    head = json.loads(data[8:8 + n])
    assert head["arrays"][-1] == ["<f8", [5, 3]]  # the 5 events held, weight last
    for shape in ([1, 5, 3], [4, 3]):  # a stack of buffers; fewer events than counted
        head["arrays"][-1][1] = shape
        text = json.dumps(head, separators=(",", ":")).encode()
        with pytest.raises(ValueError, match="do not match the warming streams' counts"):
            from_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:],
                       Policy(n_clusters=2), 8, 0, max_streams=4)


def test_a_bank_copy_shares_nothing_that_learning_changes():
    from streamrbf.core.streams import StreamBank, to_bytes

    _, frame, _, _ = _events(4, 40, 2, 2, 13)
    bank = StreamBank(Policy(n_clusters=2), warmup=8, seed=0, max_streams=10)
    bank.allocate(2)
    M, k = frame.drop(columns=["id"]).to_numpy(), frame["id"].tolist()
    bank.learn_rows(M[:60], bank.rows_for(k[:60]))
    before = to_bytes(bank)
    copy = bank.copy()
    copy.learn_rows(M[60:], copy.rows_for(k[60:]))
    assert to_bytes(bank) == before != to_bytes(copy)


def test_a_segment_whose_distances_overflow_says_so():
    # squared distances beyond float64: the start keeps its first seeding and reports an
    # infinite inertia (callers refuse the batch), never uninitialised memory
    X = np.array([[1e200], [-1e200], [3e200], [-2e200]])
    bank, inertia = initialise_bank(X, [0, 4], Policy(n_clusters=2), seeds=[0])
    assert not np.isfinite(inertia[0])
    assert all(any(c == x for x in X[:, 0]) for c in bank.centers[0, :, 0])
