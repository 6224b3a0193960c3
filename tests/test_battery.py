"""The quality battery (streamrbf.bench.battery) and the quality benchmark that runs on it.

The battery: every set has the shape, k and labels it says, is float64 and standardised, and is
the same for the same seed (whichever other sets are loaded with it); River's bundled sets load
from the installed package without a network. The benchmark: ``streamrbf bench quality --quick``
runs end to end and writes its table, its JSON (every key the report promises) and its figure.
"""

from __future__ import annotations

import json
import socket
import warnings

import numpy as np
import pytest

from streamrbf.bench import battery as battery_module
from streamrbf.bench.battery import NAMES, QUICK, RIVER_SETS, battery, dataset, standardise

EXPECTED = {  # name: (n, d, k)
    "iris": (150, 4, 3),
    "breast_cancer": (569, 30, 2),
    "digits": (1797, 64, 10),
    "phishing": (1250, 9, 2),
    "bananas": (5300, 2, 2),
    "outliers": (3000, 5, 8),
    "anisotropic": (3000, 4, 6),
    "scales": (3000, 9, 5),
    "dominant": (5000, 9, 7),
    "blobs20": (3000, 6, 20),
    "blobs50": (5000, 8, 50),
    "blobs100": (8000, 10, 100),
}


@pytest.fixture(scope="module")
def sets():
    return battery()


def test_the_battery_has_every_set_the_issue_names(sets):
    assert tuple(sets) == NAMES and set(NAMES) == set(EXPECTED)
    assert set(QUICK) <= set(NAMES)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_set_has_its_shape_k_and_labels_and_is_standardised(sets, name):
    ds = sets[name]
    n, d, k = EXPECTED[name]
    assert (ds.name, ds.n, ds.d, ds.k) == (name, n, d, k)
    assert ds.X.dtype == np.float64 and ds.X.flags.c_contiguous
    assert np.isfinite(ds.X).all()
    np.testing.assert_allclose(ds.X.mean(0), 0.0, atol=1e-9)
    std = ds.X.std(0)
    # a constant column (digits' blank pixels) stays 0; every other one has unit spread
    assert np.all((np.abs(std - 1.0) < 1e-9) | (std == 0.0))
    assert ds.y is not None and ds.y.shape == (n,) and ds.y.dtype == np.int64
    classes = len(np.unique(ds.y))
    # the outliers are a class of their own, beyond the k clusters
    assert classes == (k + 1 if name == "outliers" else k)


def test_the_synthetic_sets_have_the_promised_geometry(sets):
    # many clusters: uneven sizes (Dirichlet)
    for name in ("blobs20", "blobs50", "blobs100"):
        sizes = np.bincount(sets[name].y)
        assert sizes.min() >= 5 and sizes.max() > 4 * sizes.min()
    # one dominant class of about 80%
    shares = np.bincount(sets["dominant"].y) / sets["dominant"].n
    assert 0.75 < shares.max() < 0.85
    # 5% outliers
    assert np.mean(sets["outliers"].y == 8) == pytest.approx(0.05, abs=0.001)


def test_same_seed_same_arrays_and_other_seeds_other_arrays():
    names = ["outliers", "anisotropic", "scales", "dominant", "blobs20"]
    a = battery(names, seed=3)
    b = battery(list(reversed(names)), seed=3)  # the other sets asked for do not matter
    c = battery(names, seed=4)
    for name in names:
        np.testing.assert_array_equal(a[name].X, b[name].X)
        np.testing.assert_array_equal(a[name].y, b[name].y)
        assert not np.array_equal(a[name].X, c[name].X)
    np.testing.assert_array_equal(dataset("blobs20", 3).X, a["blobs20"].X)
    # the bundled real sets do not depend on the seed
    np.testing.assert_array_equal(dataset("iris", 0).X, dataset("iris", 7).X)


def test_the_river_sets_load_from_the_package_without_a_network(monkeypatch):
    pytest.importorskip("river")

    def no_network(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for name in RIVER_SETS:
        ds = dataset(name)
        assert ds.n == EXPECTED[name][0] and set(np.unique(ds.y)) == {0, 1}


def test_without_river_the_river_sets_are_skipped_with_a_warning(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError("No module named 'river'")

    monkeypatch.setattr(battery_module, "_river", missing)
    with pytest.warns(UserWarning, match="river is not installed.*phishing, bananas"):
        sets = battery(["iris", "phishing", "bananas"])
    assert list(sets) == ["iris"]
    with pytest.raises(ImportError):
        dataset("phishing")


def test_an_unknown_name_is_a_key_error_naming_the_choices():
    with pytest.raises(KeyError, match="no data set 'wine'.*iris"):
        dataset("wine")


def test_standardise_keeps_constant_columns_at_zero():
    Z = standardise(np.array([[1.0, 2.0, 7.0], [3.0, 2.0, 9.0], [5.0, 2.0, 8.0]]))
    assert Z.dtype == np.float64
    np.testing.assert_allclose(Z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(0), [1.0, 0.0, 1.0])


def test_the_quick_quality_bench_runs_end_to_end(tmp_path, capsys):
    from streamrbf.bench.__main__ import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["quality", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| set (n, d, k) |" in printed and "fit mean <= 1.01" in printed
    assert (tmp_path / "quality.png").stat().st_size > 10_000
    md = (tmp_path / "bench.md").read_text()
    assert "## quality" in md and "| iris (150, 4, 3) |" in md
    results = json.loads((tmp_path / "bench.json").read_text())
    q = results["quality"]
    assert q["seeds"] == 2 and q["quick"] is True and q["figure"].endswith("quality.png")
    assert set(q["thresholds"]) >= {"fit_mean", "fit_worst", "fit_vs_kmeans1", "fit_time",
                                    "stream_mean", "stream_worst", "ari_floor"}
    assert list(q["sets"]) == list(QUICK)
    for name, r in q["sets"].items():
        assert (r["n"], r["d"], r["k"]) == EXPECTED[name]
        assert len(r["per_seed"]) == 2
        row = r["per_seed"][0]
        for key in ("fit_ratio", "kmeans1_ratio", "fit_s", "kmeans10_s", "kmeans1_s",
                    "time_ratio", "stream_ratio", "minibatch_ratio", "ari streamrbf",
                    "ari river KMeans", "ari river STREAMKMeans", "ari kmeans10 labels",
                    "river_ratio streamrbf", "river_ratio river KMeans", "warm ari streamrbf",
                    "warm ari river STREAMKMeans"):
            assert np.isfinite(row[key]), key
        assert row["fit_ratio"] > 0.999 and row["stream_ratio"] > 0.999  # vs the best of 10
        assert row["river_ratio streamrbf"] > 0.999 and row["river_ratio river KMeans"] > 0.999
        for key in ("fit_mean", "fit_worst", "kmeans1_mean", "time_ratio_median",
                    "stream_mean", "stream_worst", "minibatch_mean", "minibatch_worst",
                    "ari streamrbf", "ari river KMeans", "ari river STREAMKMeans"):
            assert key in r["summary"], key
        gaps = [p["ari streamrbf"] - p[f"ari {r['summary']['ari best peer']}"]
                for p in r["per_seed"]]
        assert r["summary"]["ari gap"] == pytest.approx(np.mean(gaps))
        assert r["summary"]["ari gap se"] == pytest.approx(np.std(gaps, ddof=1)
                                                           / np.sqrt(len(gaps)))
        assert f"| {name} | {r['summary']['ari best peer']} | " in md
        assert set(r["checks"]) == {"fit_mean", "fit_worst", "fit_vs_kmeans1", "fit_time",
                                    "stream_mean", "stream_worst", "river_ari", "pass"}


def test_the_seeds_flag_and_the_figure_with_a_trajectory(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from streamrbf.bench import quality

    result = quality.run(seeds=1, names=["iris"], out=None)
    assert result["seeds"] == 1 and result["figure"] is None
    assert len(result["sets"]["iris"]["per_seed"]) == 1
    # the second panel, drawn from a run's history where the engine records one
    history = [{"iteration": i, "temperature": 4.0 * 0.7 ** i,
                "distinct_centres": 1 + (i > 3) + (i > 8), "inertia": 100.0 / (1 + i)}
               for i in range(15)]
    result["trajectory"] = {"set": "iris", "seed": 0, "history": history}
    quality._figure(result, tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 10_000
    fig, ax = plt.subplots()
    assert quality.trajectory_panel(ax, history)
    assert len(ax.lines) == 1 + 2  # the temperature and two splits marked
    assert not quality.trajectory_panel(ax, [])
    plt.close(fig)


def test_bad_seeds_are_a_usage_error(capsys):
    from streamrbf.bench.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["quality", "--seeds", "0"])
    assert exit_.value.code == 2
    assert "expected a whole number >= 1, got '0'" in capsys.readouterr().err


ABOVE = "the peer's prequential ARI is above that of the K-Means optimum's labels"


@pytest.mark.parametrize("gap, se, peer, optimum, reading", [
    (0.02, 0.01, 0.5, 0.6, ""),
    (-0.01, 0.02, 0.5, 0.6, "within 2 standard errors"),
    (-0.09, 0.04, 0.36, 0.28, ABOVE),
    (-0.01, 0.01, 0.36, 0.28, "within 2 standard errors; " + ABOVE),
    (-0.10, 0.01, 0.50, 0.60, "streamrbf trails"),
    (-0.10, None, 0.50, 0.60, "streamrbf trails"),  # one seed: no standard error
])
def test_a_river_gap_is_read_from_its_error_and_the_optimums_labels(gap, se, peer, optimum,
                                                                    reading):
    from streamrbf.bench.quality import _reading

    s = {"ari gap": gap, "ari gap se": se, "ari best peer": "river KMeans",
         "ari river KMeans": peer, "ari kmeans10 labels": optimum}
    assert _reading(s) == reading
