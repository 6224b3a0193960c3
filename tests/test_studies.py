"""The issues' quality goals as opt-in studies (minutes each): ``python -m pytest -m slow``.

They assert orderings of quality measures, never timings (speed lives in ``python -m
streamrbf.bench``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_digits_joint_beats_two_step_beats_raw_on_the_mean():
    from streamrbf.experiments.digits import run

    results = run(5)
    raw = np.mean([r.raw_acc for r in results])
    two_step = np.mean([r.two_step_acc for r in results])
    joint = np.mean([r.joint_acc for r in results])
    assert joint > two_step > raw


def test_river_defaults_beat_every_peer_and_recover_after_a_jump():
    from streamrbf.bench.river import quality

    q = quality(False)
    ours = "streamrbf (defaults)"
    peers = ["river KMeans", "river STREAMKMeans", "sklearn MiniBatchKMeans"]
    for kind in ("blobs", "jump"):
        mean_ari = {name: np.mean([v[0] for v in runs]) for name, runs in q[kind].items()}
        assert all(mean_ari[ours] >= mean_ari[p] for p in peers), (kind, mean_ari)

    def events_to_recover(name):
        return [math.inf if v[2] is None else v[2] for v in q["jump"][name]]

    assert all(r < math.inf for r in events_to_recover(ours))
    for peer in ("river KMeans", "river STREAMKMeans"):
        assert np.mean(events_to_recover(ours)) < np.mean(events_to_recover(peer))
