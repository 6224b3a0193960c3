"""Drift detection: one protocol (streamrbf.core.drift) that River and Beam both use, and the
engine's reaction after an alarm (a fresh model replaces one that explains the new data badly)."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest

from streamrbf.beam import ClusterPerKey
from streamrbf.core import engine
from streamrbf.core.drift import Cusum, DriftDetector, detector
from streamrbf.core.policy import Policy
from streamrbf.river import RBFKMeans as RiverKMeans


def jump_stream(n_before: int, n_after: int, seed: int = 0) -> np.ndarray:
    """Two clusters at 0 and 10 (x), both moved by +40 after ``n_before`` events."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0]])
    rows = centres[rng.integers(0, 2, n_before + n_after)] + rng.normal(0, 0.5, (n_before +
                                                                               n_after, 2))
    rows[n_before:, 0] += 40.0
    return rows


class EveryNth:
    """A detector of this test's own: an alarm at every ``n``-th batch (the protocol only)."""

    name = "every-nth"

    def __init__(self, n: int) -> None:
        self.n = n

    def new_state(self) -> np.ndarray:
        return np.zeros(1)

    def update(self, state: np.ndarray, distortions: np.ndarray) -> bool:
        state[0] += 1
        return state[0] % self.n == 0


def test_the_protocol_and_the_registry():
    assert isinstance(Cusum(), DriftDetector) and isinstance(EveryNth(2), DriftDetector)
    assert detector(None) is None and isinstance(detector("cusum"), Cusum)
    custom = EveryNth(3)
    assert detector(custom) is custom
    with pytest.raises(ValueError, match="drift_detector must be"):
        detector("page-hinkley")


def test_cusum_alarms_on_a_jump_and_not_on_a_stationary_stream():
    rng = np.random.default_rng(1)
    cusum, state = Cusum(), Cusum().new_state()
    assert not any(cusum.update(state, rng.chisquare(2, 100)) for _ in range(50))
    assert cusum.update(state, rng.chisquare(2, 20) + 100.0)


def test_refit_replaces_a_model_only_when_the_clusters_moved():
    X = jump_stream(400, 0)
    policy = Policy(n_clusters=2)
    model = engine.initialise(X, policy, seed=0).state
    same, replaced = engine.refit(model, X[:64], policy, gain=0.5)
    assert not replaced and same is model            # a false alarm changes nothing
    moved = X[:64] + [40.0, 0.0]
    new, replaced = engine.refit(model, moved, policy, gain=0.5)
    assert replaced
    assert sorted(new.centers[0][:, 0].round()) == pytest.approx([40, 50], abs=1)
    assert new.n_seen[0] == model.n_seen[0] and new.seed[0] == model.seed[0]
    assert new.n_steps[0] > model.n_steps[0]
    # each cluster keeps its number: the moved centre takes the index of the one it replaces
    old_order = np.argsort(model.centers[0][:, 0])
    np.testing.assert_array_equal(np.argsort(new.centers[0][:, 0]), old_order)


def _beam_final_centres(path, rows, **kwargs):
    events = [("s", r.tolist()) for r in rows]
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(events) | ClusterPerKey(2, batch_size=50, warmup=100,
                                                      snapshot_every=1, half_life=None,
                                                      **kwargs)
        _ = (out.snapshots | beam.combiners.ToList()
             | beam.Map(lambda snaps: np.save(path, max(snaps, key=lambda s: s.n_seen).centers)))
    return np.sort(np.load(path)[:, 0])


def test_beam_per_key_streams_follow_a_jump_with_the_detector_and_lag_without(tmp_path):
    rows = jump_stream(1500, 1000)
    with_detector = _beam_final_centres(tmp_path / "a.npy", rows)
    without = _beam_final_centres(tmp_path / "b.npy", rows, drift_detector=None)
    np.testing.assert_allclose(with_detector, [40.0, 50.0], atol=1.0)
    assert np.abs(without - [40.0, 50.0]).max() > 5.0  # a running mean of everything: it lags


def test_a_detector_of_ones_own_works_in_river_and_in_beam(tmp_path):
    rows = jump_stream(1500, 1000)
    # River: the detector is fed each step's distortions; its alarms restart the model.
    river = RiverKMeans(n_clusters=2, seed=0, half_life=None, drift_detector=EveryNth(500))
    for r in rows:
        river.learn_one({"x": r[0], "y": r[1]})
    assert river.n_alarms >= 4 and river.n_drifts >= 1
    np.testing.assert_allclose(sorted(c["x"] for c in river.centers.values()), [40, 50], atol=1)
    # Beam: the same object, pickled to the workers.
    np.testing.assert_allclose(
        _beam_final_centres(tmp_path / "c.npy", rows, drift_detector=EveryNth(5)), [40, 50],
        atol=1.0)
