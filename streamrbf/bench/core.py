"""Core benchmark: mini-batch throughput and clustering quality against scikit-learn.

One process, interleaved rounds, one thread for everyone (numpy/BLAS via threadpoolctl, torch,
numba's kernels are single-threaded anyway). Speed: events/s of ``partial_fit`` with B = 4096 at
(d, k) = (16, 8), (64, 32), (128, 256) against ``MiniBatchKMeans.partial_fit``, as medians of
interleaved rounds and their ratio. Quality: inertia relative to ``KMeans(n_init=10)`` after ``fit``
and after 3 streaming passes of ``partial_fit`` with B = 256, on blobs, anisotropic and
unequal-variance data, 5 seeds each. Large data: time and peak extra memory (tracemalloc: numpy's
allocations) of ``predict``, ``predict_proba``, ``transform``, ``score`` and ``fit`` on 1,000,000 x
32 float32 rows with k = 64, against ``KMeans(n_init=1)`` and the time to write a result of
``predict_proba``'s size.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any

import numpy as np

SHAPES = [(16, 8), (64, 32), (128, 256)]
# The limit PERF.md measured for one core (distance + gradient matmuls + one row pass), events/s.
LIMIT = {(16, 8): 60e6, (64, 32): 17.8e6, (128, 256): 1.5e6}


def _stream(d: int, k: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4.0
    return (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)


def speed(quick: bool = False, batch: int = 4096) -> list[dict[str, Any]]:
    """Median events/s of partial_fit for streamrbf and MiniBatchKMeans, interleaved rounds."""
    from sklearn.cluster import MiniBatchKMeans

    from streamrbf import RBFKMeans

    rounds = 3 if quick else 7
    steps = 5 if quick else 20
    rows = []
    for d, k in SHAPES:
        X = _stream(d, k, batch * (steps + 1), seed=0)
        batches = [X[i * batch : (i + 1) * batch] for i in range(steps + 1)]
        ours = RBFKMeans(k, random_state=0).partial_fit(batches[0])
        theirs = MiniBatchKMeans(k, batch_size=batch, n_init=1, random_state=0)
        theirs.partial_fit(batches[0])
        runners = {
            "streamrbf": lambda b, m=ours: m.partial_fit(b),
            "MiniBatchKMeans": lambda b, m=theirs: m.partial_fit(b),
        }
        timings: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(rounds):
            for name, step in runners.items():  # interleaved: both see the same machine state
                t = time.perf_counter()
                for b in batches[1:]:
                    step(b)
                timings[name].append(steps * batch / (time.perf_counter() - t))
        ours_eps = statistics.median(timings["streamrbf"])
        theirs_eps = statistics.median(timings["MiniBatchKMeans"])
        rows.append(
            {
                "d": d,
                "k": k,
                "batch": batch,
                "streamrbf_events_per_s": ours_eps,
                "minibatchkmeans_events_per_s": theirs_eps,
                "ratio": ours_eps / theirs_eps,
                "fraction_of_limit": ours_eps / LIMIT[(d, k)],
            }
        )
    return rows


GPU_MODES = (False, True, "reduce-overhead")


def gpu_speed(
    shapes: tuple[tuple[int, int], ...] = ((64, 32),),
    modes: tuple[bool | str, ...] = GPU_MODES,
    batch: int = 65536,
    steps: int = 200,
) -> list[dict[str, Any]]:
    """events/s of ``partial_fit`` on a CUDA device with the data already there (no host copies),
    per shape and ``compile`` mode (eager, ``torch.compile``, CUDA graphs). Each step includes the
    validation and the one transfer to the host that says whether the batch was finite."""
    import torch

    from streamrbf import RBFKMeans

    rows = []
    for d, k in shapes:
        g = torch.Generator(device="cuda").manual_seed(0)
        centres = torch.randn(k, d, device="cuda", generator=g) * 4
        X = centres[torch.randint(0, k, (batch * 8,), device="cuda", generator=g)]
        X += torch.randn(X.shape, device="cuda", generator=g)
        batches = list(X.split(batch))
        for mode in modes:
            model = RBFKMeans(k, random_state=0, n_init=1, compile=mode).partial_fit(batches[0])
            torch.cuda.synchronize()
            t = time.perf_counter()
            model.partial_fit(batches[1])  # compiles, when asked
            torch.cuda.synchronize()
            first = time.perf_counter() - t
            for b in batches[2:] * 2:  # warm-up (CUDA graphs record after a few calls)
                model.partial_fit(b)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for i in range(steps):
                model.partial_fit(batches[i % len(batches)])
            torch.cuda.synchronize()
            elapsed = time.perf_counter() - t
            rows.append(
                {
                    "device": torch.cuda.get_device_name(),
                    "host": f"Python {platform.python_version()}, torch {torch.__version__}, "
                    f"{os.cpu_count()} CPU cores",
                    "d": d,
                    "k": k,
                    "batch": batch,
                    "compile": mode,
                    "first_step_s": first,
                    "us_per_step": elapsed / steps * 1e6,
                    "events_per_s": steps * batch / elapsed,
                    "inertia_per_event": model.inertia_ / batch,
                }
            )
            r = rows[-1]
            print(
                f"GPU {r['device']} (d, k) = ({d}, {k}), B = {batch}, compile={mode!r}: "
                f"{r['events_per_s'] / 1e6:,.0f} M events/s ({r['us_per_step']:.0f} us/step; "
                f"first step {first:.1f} s)",
                flush=True,
            )
    return rows


def _geometries(seed: int, n: int):
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=n, centers=5, random_state=seed)
    yield "blobs", X
    yield "anisotropic", X @ np.array([[0.6, -0.64], [-0.41, 0.85]])
    Xv, _ = make_blobs(n, centers=5, cluster_std=[1.0, 2.5, 0.5, 1.5, 0.8], random_state=seed)
    yield "unequal_variance", Xv


def quality(quick: bool = False) -> list[dict[str, Any]]:
    """Inertia / KMeans(n_init=10) inertia after fit and after 3 streaming passes (B = 256)."""
    from sklearn.cluster import KMeans

    from streamrbf import RBFKMeans

    seeds = range(2 if quick else 5)
    rows = []
    for seed in seeds:
        for name, X in _geometries(seed, 3000):
            ref = KMeans(5, n_init=10, random_state=seed).fit(X).inertia_
            fit = RBFKMeans(5, random_state=seed).fit(X)
            stream = RBFKMeans(5, random_state=seed)
            rng = np.random.default_rng(seed)
            for _ in range(3):
                Xp = X[rng.permutation(len(X))]
                for lo in range(0, len(X), 256):
                    stream.partial_fit(Xp[lo : lo + 256])
            rows.append(
                {
                    "data": name,
                    "seed": seed,
                    "fit_ratio": fit.inertia_ / ref,
                    "stream_ratio": -stream.score(X) / ref,
                }
            )
    return rows


def large(quick: bool = False) -> list[dict[str, Any]]:
    """Time and peak memory beyond the output of each call on a large data set (1,000,000 x 32
    float32 rows, k = 64; 100,000 rows in quick mode), with scikit-learn's KMeans(n_init=1)."""
    import tracemalloc

    from sklearn.cluster import KMeans

    from streamrbf import RBFKMeans

    n, d, k = (100_000 if quick else 1_000_000), 32, 64
    X = _stream(d, k, n, seed=1)
    km = RBFKMeans(k, random_state=0).partial_fit(X[:20_000])

    def write() -> np.ndarray:  # the floor of any call that returns memberships
        out = np.empty((n, k), np.float32)
        out.fill(0.5)
        return out

    calls = {
        "predict": lambda: km.predict(X),
        "write an (n, k) result": write,
        "predict_proba": lambda: km.predict_proba(X),
        "transform": lambda: km.transform(X),
        "score": lambda: km.score(X),
        "fit (max_iter=10)": lambda: RBFKMeans(k, random_state=0, max_iter=10).fit(X),
        "KMeans(n_init=1, max_iter=10).fit": lambda: KMeans(k, n_init=1, max_iter=10,
                                                           random_state=0).fit(X),
    }
    rows = []
    for name, call in calls.items():
        tracemalloc.start()
        t = time.perf_counter()
        out = call()
        seconds = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        size = int(getattr(out, "nbytes", 0))
        rows.append({"call": name, "n": n, "d": d, "k": k, "seconds": seconds,
                     "peak_mb": peak / 2**20, "output_mb": size / 2**20,
                     "extra_mb": (peak - size) / 2**20})
        del out
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "### partial_fit throughput, B = 4096, 1 thread (median of interleaved rounds)",
        "",
        "| (d, k) | streamrbf events/s | MiniBatchKMeans events/s | ratio | share of limit |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in result["speed"]:
        lines.append(
            f"| ({r['d']}, {r['k']}) | {r['streamrbf_events_per_s'] / 1e6:.2f} M | "
            f"{r['minibatchkmeans_events_per_s'] / 1e6:.2f} M | {r['ratio']:.2f} x | "
            f"{r['fraction_of_limit']:.0%} |"
        )
    lines += [
        "",
        "### Quality: inertia / KMeans(n_init=10) inertia",
        "",
        "| data | seeds | fit: mean | fit: worst | 3 passes B=256: mean | 3 passes: worst |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in dict.fromkeys(r["data"] for r in result["quality"]):
        rows = [r for r in result["quality"] if r["data"] == name]
        fit = [r["fit_ratio"] for r in rows]
        stream = [r["stream_ratio"] for r in rows]
        lines.append(
            f"| {name} | {len(rows)} | {np.mean(fit):.4f} | {max(fit):.4f} | "
            f"{np.mean(stream):.4f} | {max(stream):.4f} |"
        )
    if result.get("large"):
        r0 = result["large"][0]
        lines += [
            "",
            f"### Large data: {r0['n']:,} x {r0['d']} float32 rows, k = {r0['k']}, 1 thread",
            "",
            "| call | seconds | peak MB | output MB | extra MB |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for r in result["large"]:
            lines.append(f"| {r['call']} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | "
                         f"{r['output_mb']:.0f} | {r['extra_mb']:.0f} |")
    if result.get("gpu"):
        lines += [
            "",
            "### partial_fit on a GPU, data on the device",
            "",
            "| device | (d, k) | B | compile | events/s | us per step | first step |",
            "| --- | --- | ---: | --- | ---: | ---: | ---: |",
        ]
        for r in result["gpu"]:
            lines.append(
                f"| {r['device']} | ({r['d']}, {r['k']}) | {r['batch']} | {r['compile']!r} | "
                f"{r['events_per_s'] / 1e6:,.0f} M | {r['us_per_step']:.0f} | "
                f"{r['first_step_s']:.1f} s |"
            )
        hosts = sorted({r["host"] for r in result["gpu"] if r.get("host")})
        if hosts:
            lines += ["", "GPU machine: " + "; ".join(hosts) + "."]
    return "\n".join(lines)


def run(quick: bool = False) -> dict[str, Any]:
    """Run both parts; returns ``{"speed": [...], "quality": [...]}`` and prints the tables."""
    import sklearn.cluster  # noqa: F401
    import torch
    from threadpoolctl import threadpool_limits

    import streamrbf.kmeans  # noqa: F401

    torch.set_num_threads(1)
    # threadpoolctl limits the pools loaded when it is entered: every library is loaded first
    # (scikit-learn's OpenMP runtime too), so every peer computes on one thread.
    with threadpool_limits(1):
        result = {"speed": speed(quick), "quality": quality(quick), "large": large(quick)}
    print(markdown(result))
    if torch.cuda.is_available():
        shapes = ((64, 32),) if quick else ((16, 8), (64, 32), (128, 256))
        result["gpu"] = gpu_speed(shapes, steps=50 if quick else 200)
        print(markdown({"speed": [], "quality": [], "gpu": result["gpu"]}))
    return result
