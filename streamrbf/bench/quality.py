"""Quality benchmark: streamrbf against its peers on the battery, with the goals of issue 12.

Run ``python -m streamrbf.bench quality [--quick] [--seeds N] [--out DIR]`` (or ``python -m
streamrbf.bench.quality``). One process, one thread for everyone (threadpoolctl after
scikit-learn is loaded, torch's own setting). For every set of :mod:`streamrbf.bench.battery`
(standardised; the data are the same for every seed, the methods' seeds are 0 .. N-1):

- ``fit``: ONE default run of ``RBFKMeans(n_clusters=k, random_state=s).fit(X)``; its inertia
  over that of ``KMeans(n_clusters=k, n_init=10, random_state=s)`` (mean and worst over the
  seeds), the mean ratio of ``KMeans(n_init=1)``, and the wall times of the three fits (the
  median over seeds of RBFKMeans's time over KMeans(n_init=10)'s);
- streaming: 3 passes over X, each in its own order (shuffled from the seed), in batches of 256:
  ``RBFKMeans.partial_fit`` with defaults and ``MiniBatchKMeans(n_clusters=k,
  random_state=s).partial_fit`` on the same batches; the final centres' inertia on the whole X
  over KMeans(n_init=10)'s;
- River, prequential: one shuffled pass of dict events, ``predict_one`` then ``learn_one``; the
  adjusted Rand index of the predictions against the true labels, for ``streamrbf.river.RBFKMeans``
  (defaults), ``river.cluster.KMeans`` and ``river.cluster.STREAMKMeans`` (see :data:`RIVER_PEERS`);
  to read a gap, the report adds streamrbf's difference to the better peer seed by seed (mean
  and standard error), the ARI of ``KMeans(n_init=10)``'s own final labels, each River
  method's final inertia over ``KMeans(n_init=10)``'s, and each method's ARI on the first
  ``warmup_size(k)`` events alone (streamrbf's provisional labels while its stream warms up).

Every inertia is computed the same way from the final centres (the sum over rows of the squared
distance to the nearest centre). The table marks each set against :data:`THRESHOLDS`; the JSON
(``bench.json`` under ``quality``) holds every per-seed figure; the figure
(``DIR/quality.png``) shows the inertia ratios per set and, where the model records one, the
temperature and number of distinct centres over the iterations of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.policy import warmup_size
from .battery import NAMES, QUICK, DataSet, battery

__all__ = ["RIVER_PEERS", "THRESHOLDS", "evaluate", "markdown", "run", "trajectory_panel"]

#: The goals of issue 12, per set.
THRESHOLDS = {
    "fit_mean": 1.01,  # mean of inertia / KMeans(n_init=10) inertia, one default fit
    "fit_worst": 1.02,  # worst seed
    "fit_vs_kmeans1": 1.0,  # fit mean / KMeans(n_init=1) mean: never worse on average
    "fit_time": 1.0,  # median over seeds of time / KMeans(n_init=10) time, one thread
    "stream_mean": 1.03,  # 3 shuffled passes, batches of 256
    "stream_worst": 1.05,
    "ari_floor": 0.05,  # streamrbf's River ARI must be the best where any peer is above this
}
BATCH = 256
PASSES = 3
#: River's peers and their parameters, the same for every set: River's documented defaults
#: (``halflife=0.5``; initial centres drawn from N(mu=0, sigma=1), which suits standardised data)
#: and, for STREAMKMeans, chunks of 10 x k events (its default of 10 is below k on most sets: a
#: chunk must hold more events than the centres it is summarised into).
RIVER_PEERS = {
    "river KMeans": {"halflife": 0.5, "mu": 0.0, "sigma": 1.0},
    "river STREAMKMeans": {"chunk_size": "10 k", "halflife": 0.5, "mu": 0.0, "sigma": 1.0},
}
PEER_NAMES = tuple(RIVER_PEERS)
METHODS = ("streamrbf fit", "KMeans(n_init=1)", "MiniBatchKMeans stream", "streamrbf stream")


def _inertia(X: np.ndarray, C: np.ndarray) -> float:
    """Sum over rows of the squared distance to the nearest centre (float64)."""
    C = np.asarray(C, dtype=np.float64)
    d2 = (X * X).sum(1)[:, None] - 2.0 * (X @ C.T) + (C * C).sum(1)[None, :]
    return float(np.maximum(d2.min(1), 0.0).sum())


def _timed(make: Any, X: np.ndarray) -> tuple[Any, float]:
    t = time.perf_counter()
    model = make().fit(X)
    return model, time.perf_counter() - t


def _fit(ds: DataSet, seed: int) -> dict[str, Any]:
    from sklearn.cluster import KMeans

    from streamrbf import RBFKMeans

    X, k = ds.X, ds.k
    ref, t_ref = _timed(lambda: KMeans(n_clusters=k, n_init=10, random_state=seed), X)
    one, t_one = _timed(lambda: KMeans(n_clusters=k, n_init=1, random_state=seed), X)
    ours, t_ours = _timed(lambda: RBFKMeans(n_clusters=k, random_state=seed), X)
    best = _inertia(X, ref.cluster_centers_)
    centres = np.asarray(ours.cluster_centers_, dtype=np.float64)
    return {
        "kmeans10_inertia": best,
        "fit_ratio": _inertia(X, centres) / best,
        "kmeans1_ratio": _inertia(X, one.cluster_centers_) / best,
        "fit_s": t_ours,
        "kmeans10_s": t_ref,
        "kmeans1_s": t_one,
        "time_ratio": t_ours / t_ref,
        "fit_n_iter": int(getattr(ours, "n_iter_", -1)),
        "distinct_centres": int(len(np.unique(centres.round(12), axis=0))),
        "history": _history(X, k, seed) if seed == 0 else None,
        **({} if ds.y is None else {"ari kmeans10 labels": _ari(ds.y, ref.labels_)}),
    }


def _ari(y: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(y, labels))


def _history(X: np.ndarray, k: int, seed: int) -> list[dict[str, Any]]:
    """The annealing of one default fit, iteration by iteration (the engine's ``trace``): the
    temperature, the number of distinct centres (to 1e-6 of the data's scale) and the
    K-Means objective of the centres."""
    from streamrbf.core import engine
    from streamrbf.core.policy import Policy

    scale = float(np.abs(X).max()) or 1.0
    history: list[dict[str, Any]] = []

    def trace(trial: int, iteration: int, temperature: float, C: np.ndarray) -> None:
        history.append({"iteration": iteration, "temperature": temperature,
                        "distinct_centres": int(len(np.unique((C / scale).round(6), axis=0))),
                        "inertia": _inertia(X, C)})

    engine.fit(X, Policy(n_clusters=k), seed, trace=trace)
    return history


def _stream(ds: DataSet, seed: int, orders: list[np.ndarray], best: float) -> dict[str, Any]:
    from sklearn.cluster import MiniBatchKMeans

    from streamrbf import RBFKMeans

    X, k = ds.X, ds.k
    ours = RBFKMeans(n_clusters=k, random_state=seed)
    theirs = MiniBatchKMeans(n_clusters=k, random_state=seed)
    t_ours = t_theirs = 0.0
    for order in orders:
        Xp = X[order]
        for lo in range(0, len(Xp), BATCH):
            batch = Xp[lo:lo + BATCH]
            t = time.perf_counter()
            ours.partial_fit(batch)
            t_ours += time.perf_counter() - t
            t = time.perf_counter()
            theirs.partial_fit(batch)
            t_theirs += time.perf_counter() - t
    return {
        "stream_ratio": _inertia(X, ours.cluster_centers_) / best,
        "minibatch_ratio": _inertia(X, theirs.cluster_centers_) / best,
        "stream_s": t_ours,
        "minibatch_s": t_theirs,
    }


def _river_models(k: int, seed: int) -> dict[str, Any]:
    from river import cluster

    from streamrbf.river import RBFKMeans

    peer = RIVER_PEERS["river KMeans"]
    return {
        "streamrbf": RBFKMeans(n_clusters=k, seed=seed),
        "river KMeans": cluster.KMeans(n_clusters=k, seed=seed, **peer),
        "river STREAMKMeans": cluster.STREAMKMeans(chunk_size=10 * k, n_clusters=k, seed=seed,
                                                   **peer),
    }


def _river_centres(model: Any, d: int) -> np.ndarray:
    """A River clusterer's centres (``model.centers``: {cluster: {feature: value}}) as rows."""
    return np.array([[c.get(j, 0.0) for j in range(d)] for c in model.centers.values()])


def _river(ds: DataSet, seed: int, order: np.ndarray, best: float) -> dict[str, Any]:
    assert ds.y is not None
    events = [dict(enumerate(row)) for row in ds.X[order].tolist()]
    truth = ds.y[order]
    warm = warmup_size(ds.k)
    out: dict[str, Any] = {}
    for name, model in _river_models(ds.k, seed).items():
        pred = np.zeros(len(events), np.int64)
        t = time.perf_counter()
        for i, x in enumerate(events):
            # STREAMKMeans has no centres (and cannot predict) before its first chunk
            pred[i] = (model.predict_one(x) if name != "river STREAMKMeans" or model.centers
                       else 0)
            model.learn_one(x)
        out[f"river_s {name}"] = time.perf_counter() - t
        out[f"ari {name}"] = _ari(truth, pred)
        # the first events, while streamrbf's stream warms up (its provisional clustering)
        out[f"warm ari {name}"] = _ari(truth[:warm], pred[:warm])
        # what the partition costs in the K-Means objective: the final centres' inertia
        centres = _river_centres(model, ds.d)  # (none: STREAMKMeans before its first chunk)
        out[f"river_ratio {name}"] = (_inertia(ds.X, centres) / best if len(centres)
                                      else float("nan"))
    return out


def _summary(rows: list[dict[str, Any]], with_labels: bool) -> dict[str, Any]:
    def col(key: str) -> list[float]:
        return [r[key] for r in rows]

    s: dict[str, Any] = {
        "fit_mean": float(np.mean(col("fit_ratio"))),
        "fit_worst": float(np.max(col("fit_ratio"))),
        "kmeans1_mean": float(np.mean(col("kmeans1_ratio"))),
        "kmeans1_worst": float(np.max(col("kmeans1_ratio"))),
        "time_ratio_median": float(statistics.median(col("time_ratio"))),
        "fit_s_median": float(statistics.median(col("fit_s"))),
        "kmeans10_s_median": float(statistics.median(col("kmeans10_s"))),
        "kmeans1_s_median": float(statistics.median(col("kmeans1_s"))),
        "stream_mean": float(np.mean(col("stream_ratio"))),
        "stream_worst": float(np.max(col("stream_ratio"))),
        "minibatch_mean": float(np.mean(col("minibatch_ratio"))),
        "minibatch_worst": float(np.max(col("minibatch_ratio"))),
    }
    if with_labels:
        for name in ("streamrbf", *PEER_NAMES):
            s[f"ari {name}"] = float(np.mean(col(f"ari {name}")))
            s[f"river_ratio {name}"] = float(np.mean(col(f"river_ratio {name}")))
            s[f"warm ari {name}"] = float(np.mean(col(f"warm ari {name}")))
        s["ari kmeans10 labels"] = float(np.mean(col("ari kmeans10 labels")))
        # streamrbf against the better peer, seed by seed: a gap smaller than its standard error
        # is the seeds' luck, not the method
        peer = max(PEER_NAMES, key=lambda name: s[f"ari {name}"])
        gap = np.subtract(col("ari streamrbf"), col(f"ari {peer}"))
        s["ari best peer"] = peer
        s["ari gap"] = float(gap.mean())
        s["ari gap se"] = float(gap.std(ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else None
    return s


def _checks(s: dict[str, Any]) -> dict[str, bool | None]:
    """Each goal of :data:`THRESHOLDS` met (True), missed (False) or not applicable (None)."""
    th = THRESHOLDS
    checks: dict[str, bool | None] = {
        "fit_mean": s["fit_mean"] <= th["fit_mean"],
        "fit_worst": s["fit_worst"] <= th["fit_worst"],
        "fit_vs_kmeans1": s["fit_mean"] <= th["fit_vs_kmeans1"] * s["kmeans1_mean"],
        "fit_time": s["time_ratio_median"] <= th["fit_time"],
        "stream_mean": s["stream_mean"] <= th["stream_mean"],
        "stream_worst": s["stream_worst"] <= th["stream_worst"],
        "river_ari": None,
    }
    if "ari streamrbf" in s:
        peers = max(s[f"ari {name}"] for name in PEER_NAMES)
        if peers > th["ari_floor"]:
            checks["river_ari"] = s["ari streamrbf"] >= peers
    return checks


def evaluate(ds: DataSet, seeds: Sequence[int], river: bool = True) -> dict[str, Any]:
    """Every measurement of one set for each seed, their summary and the goals met.

    Parameters
    ----------
    ds
        A set of the battery.
    seeds
        The methods' seeds (and the seeds of the passes' orders).
    river
        Whether to run the River prequential comparison (sets with labels only; needs river).

    Returns
    -------
    dict
        ``{"n", "d", "k", "source", "per_seed": [...], "summary": {...}, "checks": {...},
        "warnings": {message: count}, "history"}``; ``per_seed`` holds one dict per seed with
        the ratios, times and ARIs, ``checks`` one bool (or None: not applicable) per goal and
        ``"pass"``; ``history`` is the first run's ``history_`` where the model records one
        (else None).

    Examples
    --------
    >>> from streamrbf.bench.battery import dataset
    >>> r = evaluate(dataset("iris"), seeds=[0], river=False)  # doctest: +SKIP
    >>> sorted(r["summary"])[:3]  # doctest: +SKIP
    ['fit_mean', 'fit_s_median', 'fit_worst']
    """
    rows = []
    history = None
    caught: dict[str, int] = {}
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        for seed in seeds:
            rng = np.random.default_rng(seed)
            orders = [rng.permutation(ds.n) for _ in range(PASSES)]
            row = {"seed": int(seed), **_fit(ds, seed)}
            if history is None and row["history"]:
                history = row["history"]
            del row["history"]
            row.update(_stream(ds, seed, orders, row["kmeans10_inertia"]))
            if river and ds.y is not None:
                row.update(_river(ds, seed, orders[0], row["kmeans10_inertia"]))
            rows.append(row)
    for w in log:
        text = f"{w.category.__name__}: {' '.join(str(w.message).split())[:160]}"
        caught[text] = caught.get(text, 0) + 1
    summary = _summary(rows, with_labels=river and ds.y is not None)
    checks = _checks(summary)
    checks["pass"] = all(v is not False for v in checks.values())
    return {"n": ds.n, "d": ds.d, "k": ds.k, "source": ds.source, "per_seed": rows,
            "summary": summary, "checks": checks, "warnings": caught, "history": history}


_LABELS = {"fit_mean": "fit mean", "fit_worst": "fit worst", "fit_vs_kmeans1": "vs n_init=1",
           "fit_time": "time", "stream_mean": "stream mean", "stream_worst": "stream worst",
           "river_ari": "ARI"}


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("" if ok else " ✗")


def _reading(s: dict[str, Any]) -> str:
    """What a River ARI gap says: nothing to read where streamrbf leads; where it trails, whether
    the gap is within two standard errors (the seeds' luck) and whether the better peer's ARI is
    above what K-Means's own optimum scores (its lead then comes from a partition with a worse
    K-Means objective)."""
    if s["ari gap"] >= 0.0:
        return ""
    why = []
    if s["ari gap se"] is not None and -s["ari gap"] <= 2.0 * s["ari gap se"]:
        why.append("within 2 standard errors")
    if s[f"ari {s['ari best peer']}"] > s["ari kmeans10 labels"]:
        why.append("the peer's prequential ARI is above that of the K-Means optimum's labels")
    return "; ".join(why) or "streamrbf trails"


def _ari_details(result: dict[str, Any]) -> list[str]:
    """The River ARI table's reading aids: streamrbf minus the better peer seed by seed (mean and
    standard error), the ARI of KMeans(n_init=10)'s own final labels (how far the K-Means
    optimum agrees with the classes), each River method's final inertia over KMeans(n_init=10)'s
    (what its partition costs in the K-Means objective) and its ARI on the warm-up's events."""
    rows = [(name, r["summary"]) for name, r in result["sets"].items()
            if "ari gap" in r["summary"]]
    if not rows:
        return []
    lines = ["", "River, seed by seed: streamrbf's ARI minus the better peer's (mean ± standard "
             "error over the seeds); the ARI of KMeans(n_init=10)'s final labels on the whole "
             "set; after the pass, each method's inertia over KMeans(n_init=10)'s (mean); "
             "the ARI of the first events alone, while streamrbf's stream warms up "
             "(`warmup_size(k)` events, provisional labels):", "",
             "| set | better peer | ARI streamrbf − peer | ARI of KMeans(n_init=10) labels "
             "| inertia streamrbf / KMeans / STREAMKMeans | warm-up ARI streamrbf / KMeans / "
             "STREAMKMeans | reading |",
             "| --- | --- | --- | ---: | --- | --- | --- |"]
    for name, s in rows:
        se = "" if s["ari gap se"] is None else f" ± {s['ari gap se']:.3f}"
        ratios = " / ".join(f"{s[f'river_ratio {m}']:.3f}"
                            for m in ("streamrbf", *PEER_NAMES))
        warm = " / ".join(f"{s[f'warm ari {m}']:.3f}" if f"warm ari {m}" in s else "–"
                          for m in ("streamrbf", *PEER_NAMES))
        lines.append(f"| {name} | {s['ari best peer']} | {s['ari gap']:+.3f}{se} "
                     f"| {s['ari kmeans10 labels']:.3f} | {ratios} | {warm} | {_reading(s)} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The report's tables: one row per set with the goals met or missed.

    Parameters
    ----------
    result
        What :func:`run` returns.

    Returns
    -------
    str
        Markdown: the goals, the table (a ✗ marks a missed goal), the failures, the peers'
        parameters and where the figure is.

    Examples
    --------
    >>> print(markdown({"sets": {}, "seeds": 2, "skipped": {}}))  # doctest: +ELLIPSIS
    ### Quality on the battery...
    """
    th = THRESHOLDS
    lines = [
        f"### Quality on the battery: {result['seeds']} seeds, inertia / KMeans(n_init=10) "
        "inertia, 1 thread",
        "",
        f"Goals per set (issue 12): fit mean <= {th['fit_mean']}, worst <= {th['fit_worst']}, "
        "mean <= KMeans(n_init=1) mean, time <= KMeans(n_init=10) time (median of per-seed "
        f"ratios); streaming ({PASSES} shuffled passes, B = {BATCH}) mean <= "
        f"{th['stream_mean']}, worst <= {th['stream_worst']}; River prequential ARI: streamrbf "
        f"best where any peer > {th['ari_floor']}. ✗ marks a missed goal.",
        "",
        "| set (n, d, k) | fit mean / worst | KMeans(n_init=1) mean | fit s / KMeans(10) s "
        "(ratio) | stream mean / worst | MiniBatchKMeans mean / worst | ARI streamrbf / KMeans "
        "/ STREAMKMeans | pass |",
        "| --- | --- | ---: | --- | --- | --- | --- | --- |",
    ]
    for name, r in result["sets"].items():
        s, c = r["summary"], r["checks"]
        ari = "–"
        if "ari streamrbf" in s:
            ari = (f"{s['ari streamrbf']:.3f}{_mark(c['river_ari'])} / "
                   f"{s['ari river KMeans']:.3f} / {s['ari river STREAMKMeans']:.3f}")
        failed = [_LABELS[key] for key, ok in c.items() if key != "pass" and ok is False]
        lines.append(
            f"| {name} ({r['n']}, {r['d']}, {r['k']}) "
            f"| {s['fit_mean']:.4f}{_mark(c['fit_mean'])} / "
            f"{s['fit_worst']:.4f}{_mark(c['fit_worst'])} "
            f"| {s['kmeans1_mean']:.4f}{_mark(c['fit_vs_kmeans1'])} "
            f"| {s['fit_s_median']:.3f} / {s['kmeans10_s_median']:.3f} "
            f"({s['time_ratio_median']:.2f}){_mark(c['fit_time'])} "
            f"| {s['stream_mean']:.4f}{_mark(c['stream_mean'])} / "
            f"{s['stream_worst']:.4f}{_mark(c['stream_worst'])} "
            f"| {s['minibatch_mean']:.4f} / {s['minibatch_worst']:.4f} "
            f"| {ari} | {'pass' if c['pass'] else 'FAIL: ' + ', '.join(failed)} |")
    sets = result["sets"].values()
    if result["sets"]:
        passed = sum(r["checks"]["pass"] for r in sets)
        lines += ["", f"{passed} of {len(result['sets'])} sets meet every goal."]
    lines += _ari_details(result)
    for name, why in result.get("skipped", {}).items():
        lines.append(f"Skipped {name}: {why}")
    warned = {name: r["warnings"] for name, r in result["sets"].items() if r.get("warnings")}
    if warned:
        lines += ["", "Warnings raised during the runs (count):"]
        for name, caught in warned.items():
            for text, count in caught.items():
                lines.append(f"- {name}: {text} ({count})")
    if result.get("peers"):
        lines += ["", "River peers: " + "; ".join(
            f"{name}({', '.join(f'{k}={v}' for k, v in p.items())})"
            for name, p in result["peers"].items()) + "; streamrbf.river.RBFKMeans defaults."]
    if result.get("figure"):
        lines += ["", f"Figure: {result['figure']}"]
    if result.get("wall_s") is not None:
        lines += ["", f"Total time: {result['wall_s']:.0f} s"]
    return "\n".join(lines)


def trajectory_panel(ax: Any, history: Sequence[dict[str, Any]] | None) -> bool:
    """Plot one run's temperature and number of distinct centres over its iterations.

    Parameters
    ----------
    ax
        A matplotlib Axes: the temperature goes on it (log scale), the distinct centres on a
        twin axis, and the iterations with a change in the number of distinct centres (the
        phase transitions) are marked.
    history
        A list of dicts ``{"iteration", "temperature", "distinct_centres", "inertia"}``, one per
        iteration of a run (``inertia`` is optional here); None or empty: nothing is drawn.

    Returns
    -------
    bool
        Whether anything was drawn.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> trajectory_panel(ax, [{"iteration": i, "temperature": 2.0 ** -i,
    ...                        "distinct_centres": min(1 + i, 3), "inertia": 10.0 - i}
    ...                       for i in range(6)])
    True
    >>> trajectory_panel(ax, None)
    False
    >>> plt.close(fig)
    """
    if not history:
        return False
    it = [h["iteration"] for h in history]
    temp = [h["temperature"] for h in history]
    distinct = [h["distinct_centres"] for h in history]
    ax.plot(it, temp, color="tab:red", label="temperature")
    if all(t > 0 for t in temp):
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("temperature", color="tab:red")
    twin = ax.twinx()
    twin.step(it, distinct, where="post", color="tab:blue", label="distinct centres")
    twin.set_ylabel("distinct centres", color="tab:blue")
    twin.yaxis.get_major_locator().set_params(integer=True)
    if all("inertia" in h for h in history):
        # the K-Means objective of the centres: where it falls, the clustering is changing
        final = history[-1]["inertia"] or 1.0
        rel = [h["inertia"] / final for h in history]
        third = ax.twinx()
        third.spines["right"].set_position(("axes", 1.08))
        third.plot(it, rel, color="tab:green", ls="--", label="K-Means objective")
        third.set_ylabel("K-Means objective / its final value", color="tab:green")
    for i in range(1, len(distinct)):
        if distinct[i] != distinct[i - 1]:
            ax.axvline(it[i], color="grey", alpha=0.3, lw=0.8)
    ax.set_title("one fit's annealing: temperature (log), distinct centres and the K-Means "
                 "objective per iteration (grey: a change in the distinct centres)",
                 fontsize="medium")
    return True


def _figure(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["sets"])
    history = (result.get("trajectory") or {}).get("history")
    panels = 2 if history else 1
    fig, axes = plt.subplots(panels, 1, figsize=(max(8.0, 0.9 * len(names) + 3), 4.5 * panels),
                             squeeze=False)
    ax = axes[0, 0]
    keys = {"streamrbf fit": ("fit_mean", "fit_worst"),
            "KMeans(n_init=1)": ("kmeans1_mean", "kmeans1_worst"),
            "MiniBatchKMeans stream": ("minibatch_mean", "minibatch_worst"),
            "streamrbf stream": ("stream_mean", "stream_worst")}
    width = 0.8 / len(keys)
    x = np.arange(len(names))
    for j, (label, (mean, worst)) in enumerate(keys.items()):
        means = np.array([result["sets"][n]["summary"][mean] for n in names])
        worsts = np.array([result["sets"][n]["summary"][worst] for n in names])
        pos = x + (j - (len(keys) - 1) / 2) * width
        bars = ax.bar(pos, means - 1.0, width, bottom=1.0, label=label)
        # a mark at the mean too: a bar of height 0 (ratio 1) is invisible
        ax.plot(pos, means, "_", color=bars.patches[0].get_facecolor(), ms=8, mew=2)
        ax.errorbar(pos, means, yerr=[np.zeros_like(means), worsts - means], fmt="none",
                    ecolor="black", elinewidth=0.8, capsize=2)
    for level, style in ((THRESHOLDS["fit_mean"], ":"), (THRESHOLDS["stream_mean"], "--")):
        ax.axhline(level, color="grey", ls=style, lw=0.8)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("inertia / KMeans(n_init=10) inertia")
    ax.set_title(f"mean over {result['seeds']} seeds (bars) and worst seed (whiskers); goals "
                 f"(grey lines): fit {THRESHOLDS['fit_mean']}, stream {THRESHOLDS['stream_mean']}",
                 fontsize="medium")
    ax.legend(fontsize="small", ncol=len(keys), loc="lower center", bbox_to_anchor=(0.5, 1.08),
              frameon=False)
    if history:
        trajectory_panel(axes[1, 0], history)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _warm_up() -> None:
    """Compile and load everything once, outside the timings."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    from streamrbf import RBFKMeans

    X = np.random.default_rng(0).normal(size=(600, 4))
    RBFKMeans(n_clusters=3, random_state=0).fit(X)
    RBFKMeans(n_clusters=3, random_state=0).partial_fit(X[:256]).partial_fit(X[256:512])
    KMeans(n_clusters=3, n_init=1, random_state=0).fit(X)
    MiniBatchKMeans(n_clusters=3, random_state=0).partial_fit(X[:256])
    try:
        for model in _river_models(3, 0).values():
            for row in X[:40].tolist():
                x = dict(enumerate(row))
                model.learn_one(x)
                model.predict_one(x)
    except ImportError:
        pass


def run(quick: bool = False, seeds: int | None = None, out: str | Path | None = None,
        names: Sequence[str] | None = None, data_seed: int = 0) -> dict[str, Any]:
    """Measure every set of the battery, print the table and draw the figure.

    Parameters
    ----------
    quick
        The small sets of :data:`streamrbf.bench.battery.QUICK` and 2 seeds (under a minute).
    seeds
        The number of seeds (the methods' seeds are 0 .. seeds-1); default 10, quick 2.
    out
        The folder for the figure ``quality.png`` (None: no figure).
    names
        The sets (default: the whole battery, or the quick sets).
    data_seed
        The battery's seed (the synthetic sets' draws).

    Returns
    -------
    dict
        ``{"seeds", "data_seed", "quick", "thresholds", "peers", "sets": {name: ...},
        "skipped": {name: why}, "trajectory", "figure", "wall_s"}`` (see :func:`evaluate` for
        a set's entry).

    Examples
    --------
    >>> result = run(quick=True, out="/tmp/quality")  # doctest: +SKIP
    """
    import sklearn.cluster  # noqa: F401
    import torch
    from threadpoolctl import threadpool_limits

    import streamrbf.kmeans  # noqa: F401

    t0 = time.perf_counter()
    n_seeds = seeds if seeds is not None else (2 if quick else 10)
    if names is None:
        names = QUICK if quick else NAMES
    try:
        import river  # noqa: F401

        has_river = True
    except ImportError:
        has_river = False
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        sets = battery(names, seed=data_seed)
    skipped = {name: "river is not installed (pip install 'streamrbf[bench]')"
               for name in names if name not in sets}
    for w in log:
        print(f"warning: {w.message}")
    torch.set_num_threads(1)
    result: dict[str, Any] = {
        "seeds": n_seeds, "data_seed": data_seed, "quick": quick, "thresholds": THRESHOLDS,
        "batch": BATCH, "passes": PASSES,
        "peers": {name: dict(p) for name, p in RIVER_PEERS.items()} if has_river else {},
        "sets": {}, "skipped": skipped, "trajectory": None, "figure": None,
    }
    if not has_river:
        result["skipped_river_ari"] = "river is not installed: no River ARI"
    # threadpoolctl limits the pools loaded when it is entered: scikit-learn's OpenMP runtime is
    # loaded first, so every peer computes on one thread.
    with threadpool_limits(1):
        _warm_up()
        for name, ds in sets.items():
            t = time.perf_counter()
            r = evaluate(ds, range(n_seeds), river=has_river)
            history = r.pop("history")
            if history and (result["trajectory"] is None or name == "dominant"):
                result["trajectory"] = {"set": name, "seed": 0, "history": history}
            r["wall_s"] = time.perf_counter() - t
            result["sets"][name] = r
            s = r["summary"]
            print(f"{name}: fit {s['fit_mean']:.4f}, stream {s['stream_mean']:.4f} "
                  f"({r['wall_s']:.0f} s)", flush=True)
    if out is not None and result["sets"]:
        path = Path(out) / "quality.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        _figure(result, path)
        result["figure"] = str(path)
    result["wall_s"] = time.perf_counter() - t0
    print(markdown(result))
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m streamrbf.bench.quality``: the suite alone, writing ``quality.json`` too.

    Parameters
    ----------
    argv
        ``[--quick] [--seeds N] [--out DIR]``.

    Examples
    --------
    >>> main(["--quick", "--out", "/tmp/quality"])  # doctest: +SKIP
    """
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small sets, 2 seeds")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="seeds per set (default 10, quick 2)")
    parser.add_argument("--out", default="bench-results", metavar="DIR",
                        help="folder for quality.png, quality.md and quality.json")
    args = parser.parse_args(argv)
    result = run(args.quick, args.seeds, args.out)
    out = Path(args.out)
    (out / "quality.md").write_text(markdown(result) + "\n")
    (out / "quality.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
