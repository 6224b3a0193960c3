"""Benchmark of the River adapter: speed per event, memory per stream, prequential quality.

Run with ``python -m streamrbf.bench.river [--quick]``. Everything runs in one process on one
thread; speed rounds are interleaved between methods and the median is reported.

- speed: ``learn_one`` + ``predict_one`` events/s against ``river.cluster.KMeans`` at
  (d, k) = (16, 8) and (64, 32), on blobs, after both models have seen a warm-up stream;
- memory: bytes of a stream's state arrays against the float32 centres plus counts, and the whole
  Python object (tracemalloc around creating and training 100 models);
- quality: prequential (predict, then learn) adjusted Rand index and final distortion per point
  against river KMeans, STREAMKMeans and scikit-learn's MiniBatchKMeans (partial_fit per 256), on
  heavily overlapping blobs and on a stream whose clusters jump half-way; after the jump, the
  number of events until the sliding-window ARI is back to 90% of its pre-jump value.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np

SPEED_SHAPES = ((16, 8), (64, 32))
WINDOW, WINDOW_STEP = 200, 10


def _events(X):
    return [{f"f{i}": v for i, v in enumerate(row)} for row in np.asarray(X).tolist()]


def _blobs(n, d, k, std, seed):
    from sklearn.datasets import make_blobs

    return make_blobs(n, n_features=d, centers=k, cluster_std=std, random_state=seed)


# -- speed -------------------------------------------------------------------------------------


def _rate(model, events):
    t = time.perf_counter()
    for x in events:
        model.learn_one(x)
        model.predict_one(x)
    return len(events) / (time.perf_counter() - t)


def speed(quick: bool) -> list[dict]:
    from river import cluster

    from streamrbf.river import RBFKMeans

    rounds = 3 if quick else 7
    rows = []
    for d, k in SPEED_SHAPES:
        X, _ = _blobs(30_000, d, k, 1.0, 0)
        events = _events(X)
        warm, timed = events[:2000], events[2000:]
        n_ours = 4_000 if quick else 20_000
        n_river = max(200, int((1_000 if quick else 6_000) * 8 / k))
        rates = {"streamrbf": [], "river KMeans": []}
        for _ in range(rounds):
            for name, make, n in (
                ("streamrbf", lambda: RBFKMeans(n_clusters=k, seed=0), n_ours),  # noqa: B023
                ("river KMeans", lambda: cluster.KMeans(n_clusters=k, seed=0), n_river),  # noqa: B023
            ):
                model = make()
                for x in warm:
                    model.learn_one(x)
                rates[name].append(_rate(model, timed[:n]))
        ours = statistics.median(rates["streamrbf"])
        theirs = statistics.median(rates["river KMeans"])
        goal = 4 if (d, k) == (16, 8) else 15
        rows.append({"d": d, "k": k, "streamrbf": ours, "river_kmeans": theirs,
                     "ratio": ours / theirs, "goal": goal})
    return rows


# -- memory ------------------------------------------------------------------------------------


def _state_bytes(model) -> int:
    arrays = (model._C, model._counts, model._aux, model._rs, model._buf, model._buf_w,
              model._det)
    return sum(a.nbytes for a in arrays if a is not None)


def memory(quick: bool) -> list[dict]:
    from river import cluster

    from streamrbf.river import RBFKMeans

    rows = []
    n_models = 100
    for d, k in SPEED_SHAPES:
        X, _ = _blobs(400, d, k, 1.0, 1)
        events = _events(X)
        n_events = {"streamrbf": 400, "river KMeans": 20}  # river's memory is fixed after 1 event
        per_model = {}
        for name, make in (
            ("streamrbf", lambda: RBFKMeans(n_clusters=k, seed=0)),  # noqa: B023
            ("river KMeans", lambda: cluster.KMeans(n_clusters=k, seed=0)),  # noqa: B023
        ):
            make().learn_one(events[0])  # imports and compiled kernels outside the measurement
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            models = []
            for _ in range(n_models):
                m = make()
                for x in events[:n_events[name]]:
                    m.learn_one(x)
                models.append(m)
            per_model[name] = (tracemalloc.get_traced_memory()[0] - base) / n_models
            tracemalloc.stop()
            if name == "streamrbf":
                state = _state_bytes(models[0])
            del models
        target = k * d * 4 + k * 8
        rows.append({"d": d, "k": k, "state_bytes": state, "centres_counts_bytes": target,
                     "state_ratio": state / target, "object_bytes": per_model["streamrbf"],
                     "object_ratio": per_model["streamrbf"] / target,
                     "river_kmeans_bytes": per_model["river KMeans"]})
    return rows


# -- quality -----------------------------------------------------------------------------------


def _prequential(model, events):
    out = np.zeros(len(events), np.int64)
    for i, x in enumerate(events):
        # STREAMKMeans has no centres (and cannot predict) before its first chunk
        out[i] = model.predict_one(x) if getattr(model, "centers", True) else 0
        model.learn_one(x)
    return out


def _prequential_mbk(X, seed, k):
    from sklearn.cluster import MiniBatchKMeans

    m = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1)
    out = np.zeros(len(X), np.int64)
    for s in range(0, len(X), 256):
        if s:
            out[s:s + 256] = m.predict(X[s:s + 256])
        m.partial_fit(X[s:s + 256])
    return out, m.cluster_centers_


def _centres(model, k, d):
    if hasattr(model, "cluster_centers_"):
        return model.cluster_centers_
    cs = getattr(model, "centers", {}) or {}
    return np.array([[float(c.get(f"f{t}", 0.0)) for t in range(d)] for c in cs.values()])


def _distortion(X, C):
    if len(C) == 0:
        return float("nan")
    d = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)
    return float(d.min(1).mean())


def _recovery(y, p, jump):
    from sklearn.metrics import adjusted_rand_score as ari

    pre = ari(y[jump - WINDOW:jump], p[jump - WINDOW:jump])
    for t in range(jump + WINDOW, len(y) + 1, WINDOW_STEP):
        if ari(y[t - WINDOW:t], p[t - WINDOW:t]) >= 0.9 * pre:
            return t - jump, pre
    return None, pre


def _stream(kind, n, seed):
    if kind == "blobs":
        return _blobs(n, 16, 8, 6.0, seed)
    X1, y1 = _blobs(n // 2, 16, 8, 3.0, seed)
    X2, y2 = _blobs(n - n // 2, 16, 8, 3.0, seed + 1000)
    return np.vstack([X1, X2]), np.concatenate([y1, y2 + 8])


def quality(quick: bool) -> dict:
    from river import cluster
    from sklearn.metrics import adjusted_rand_score as ari

    from streamrbf.river import RBFKMeans

    n = 2_000 if quick else 10_000
    seeds = range(5)
    k, d = 8, 16
    out = {}
    for kind in ("blobs", "jump"):
        res: dict[str, list] = {}
        for seed in seeds:
            X, y = _stream(kind, n, seed)
            events = _events(X)
            jump = n // 2
            tail = X[jump:] if kind == "jump" else X
            models = {
                "streamrbf (defaults)": RBFKMeans(n_clusters=k, seed=seed),
                "streamrbf + ADWIN": RBFKMeans(n_clusters=k, seed=seed, drift_detector="adwin"),
                "streamrbf (never forgets, no detector)": RBFKMeans(
                    n_clusters=k, seed=seed, half_life=None, drift_detector=None),
                "river KMeans": cluster.KMeans(n_clusters=k, seed=seed),
                "river STREAMKMeans": cluster.STREAMKMeans(n_clusters=k, seed=seed),
            }
            for name, model in models.items():
                p = _prequential(model, events)
                C = _centres(model, k, d)
                rec = _recovery(y, p, jump) if kind == "jump" else (None, None)
                res.setdefault(name, []).append((ari(y, p), _distortion(tail, C), *rec))
            p, C = _prequential_mbk(X, seed, k)
            rec = _recovery(y, p, jump) if kind == "jump" else (None, None)
            res.setdefault("sklearn MiniBatchKMeans", []).append(
                (ari(y, p), _distortion(tail, C), *rec))
        out[kind] = res
    return out


# -- report ------------------------------------------------------------------------------------


# -- many streams --------------------------------------------------------------------------------


def _keyed_events(n_keys, per_key, d, k, seed):
    """Events of ``n_keys`` streams of ``per_key`` events each, interleaved at random; each
    stream has its own ``k`` blobs. Returns (events with an "id" field, the frame, keys,
    true labels)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, (n_keys, k, d))
    keys = np.repeat(np.arange(n_keys), per_key)
    rng.shuffle(keys)
    y = rng.integers(0, k, keys.size)
    X = centres[keys, y] + rng.normal(0.0, 1.0, (keys.size, d))
    cols = [f"f{i}" for i in range(d)]
    frame = pd.DataFrame(X, columns=cols)
    frame.insert(0, "id", keys)
    events = [dict(zip(cols, row, strict=True)) for row in X.tolist()]
    for e, key in zip(events, keys.tolist(), strict=True):
        e["id"] = key
    return events, frame, keys, y


def _per_key_ari(keys, y, pred, n_keys):
    from sklearn.metrics import adjusted_rand_score

    order = np.argsort(keys, kind="stable")
    cuts = np.r_[0, np.flatnonzero(np.diff(keys[order])) + 1, keys.size]
    return float(np.mean([adjusted_rand_score(y[order[a:b]], pred[order[a:b]])
                          for a, b in zip(cuts[:-1], cuts[1:], strict=True)]))


def many_streams(quick: bool) -> list[dict]:
    """Per-stream models at (16, 4): streamrbf's KeyedRBFKMeans against a dict of river KMeans
    models, event by event (predict_one, then learn_one; per-key prequential ARI), the bytes per
    stream (tracemalloc, whole process) and learn_many / predict_many on frames of 65,536
    events with a key column."""
    from river import cluster

    from streamrbf.river import KeyedRBFKMeans, RBFKMeans

    d, k = 16, 4
    rows = []
    warm_events, _, _, _ = _keyed_events(50, 40, d, k, 99)
    warm = KeyedRBFKMeans(RBFKMeans(n_clusters=k, seed=0), key="id")
    for e in warm_events:  # compile the kernels outside the timings
        warm.predict_one(e)
        warm.learn_one(e)
    # long-ish streams (100 events, past the warm-up) and, in the full run, 10^5 short ones
    # (10 events: every event of a stream is clustered by its warm-up's provisional clustering)
    for n_keys, per_key in (((500, 100),) if quick
                            else ((2_000, 100), (10_000, 100), (100_000, 10))):
        events, frame, keys, y = _keyed_events(n_keys, per_key, d, k, 0)
        ours = KeyedRBFKMeans(RBFKMeans(n_clusters=k, seed=0), key="id", max_streams=10**7)
        pred = np.empty(keys.size, np.int64)
        t = time.perf_counter()
        for i, e in enumerate(events):
            pred[i] = ours.predict_one(e)
            ours.learn_one(e)
        rate = keys.size / (time.perf_counter() - t)
        del ours
        # memory: the same run again under tracemalloc (which slows it down several times)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        ours = KeyedRBFKMeans(RBFKMeans(n_clusters=k, seed=0), key="id", max_streams=10**7)
        for e in events:
            ours.learn_one(e)
        per_stream = (tracemalloc.get_traced_memory()[0] - before) / n_keys
        tracemalloc.stop()
        del ours
        ari = _per_key_ari(keys, y, pred, n_keys)
        models: dict = {}
        n_river = min(keys.size, 40_000 if quick else 200_000)
        pred_r = np.empty(n_river, np.int64)
        t = time.perf_counter()
        for i, e in enumerate(events[:n_river]):
            m = models.get(e["id"])
            x = {f: v for f, v in e.items() if f != "id"}
            if m is None:
                m = models[e["id"]] = cluster.KMeans(n_clusters=k, seed=0)
                pred_r[i] = 0
            else:
                pred_r[i] = m.predict_one(x)
            m.learn_one(x)
        rate_r = n_river / (time.perf_counter() - t)
        ari_r = _per_key_ari(keys[:n_river], y[:n_river], pred_r, n_keys)
        many = KeyedRBFKMeans(RBFKMeans(n_clusters=k, seed=0), key="id", max_streams=10**7)
        B = 65_536
        t = time.perf_counter()
        for s in range(0, len(frame), B):
            many.learn_many(frame.iloc[s:s + B])
        learn_rate = len(frame) / (time.perf_counter() - t)
        t = time.perf_counter()
        for s in range(0, len(frame), B):
            many.predict_many(frame.iloc[s:s + B])
        predict_rate = len(frame) / (time.perf_counter() - t)
        rows.append({"keys": n_keys, "per_key": per_key, "events": int(keys.size),
                     "streamrbf": rate,
                     "river_dict": rate_r, "ratio": rate / rate_r, "ari": ari,
                     "river_ari": ari_r, "bytes_per_stream": per_stream,
                     "learn_many": learn_rate, "predict_many": predict_rate})
    return rows


def _fmt_rate(r):
    return f"{r / 1e3:.1f} k"


def run(quick: bool = False) -> dict:
    """Run the benchmark, print a Markdown report and return the figures."""
    import sklearn.cluster  # noqa: F401
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    # threadpoolctl limits the pools loaded when it is entered: scikit-learn's OpenMP runtime is
    # loaded first, so its MiniBatchKMeans computes on one thread like every other peer.
    t0 = time.perf_counter()
    with threadpool_limits(1):
        sp = speed(quick)
        mem = memory(quick)
        qual = quality(quick)
        many = many_streams(quick)
    lines = [f"# River adapter benchmark ({'quick' if quick else 'full'})", ""]
    lines += ["## Speed: learn_one + predict_one, events/s (median of interleaved rounds, "
              "1 thread)", "",
              "| (d, k) | streamrbf | river KMeans | ratio | goal |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for r in sp:
        lines.append(f"| ({r['d']}, {r['k']}) | {_fmt_rate(r['streamrbf'])} | "
                     f"{_fmt_rate(r['river_kmeans'])} | {r['ratio']:.1f}x | >= {r['goal']}x |")
    lines += ["", "## Memory per stream", "",
              "| (d, k) | state arrays | float32 centres + counts | ratio | whole object "
              "(tracemalloc) | ratio | river KMeans object |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in mem:
        lines.append(f"| ({r['d']}, {r['k']}) | {r['state_bytes']} B | "
                     f"{r['centres_counts_bytes']} B | {r['state_ratio']:.2f} | "
                     f"{r['object_bytes']:.0f} B | {r['object_ratio']:.2f} | "
                     f"{r['river_kmeans_bytes']:.0f} B |")
    for kind, title in (("blobs", "overlapping blobs (k=8, d=16, cluster_std=6)"),
                        ("jump", "clusters jump half-way (k=8, d=16, cluster_std=3)")):
        res = qual[kind]
        lines += ["", f"## Quality, prequential: {title}, 5 seeds", ""]
        head = "| method | ARI (mean) | ARI per seed | distortion / point |"
        sep = "| --- | ---: | --- | ---: |"
        if kind == "jump":
            head += " pre-jump window ARI | events to regain 90% (per seed) |"
            sep += " ---: | --- |"
        lines += [head, sep]
        for name, v in res.items():
            aris = [a[0] for a in v]
            row = (f"| {name} | {np.mean(aris):.3f} | {', '.join(f'{a:.2f}' for a in aris)} | "
                   f"{np.nanmean([a[1] for a in v]):.1f} |")
            if kind == "jump":
                recs = [a[2] for a in v]
                row += (f" {np.mean([a[3] for a in v]):.3f} | "
                        f"{', '.join('never' if r is None else str(r) for r in recs)} |")
            lines.append(row)
    lines += ["", "## Many streams: KeyedRBFKMeans against a dict of river KMeans, (16, 4), "
              "1 thread (goals: 2,000 streams of 100 events)", "",
              "| streams x events | predict_one + learn_one | river dict | ratio (goal >= 4x) | "
              "per-key ARI | river ARI | bytes / stream (goal <= 1024) | learn_many (goal "
              ">= 1 M/s) | predict_many |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in many:
        lines.append(f"| {r['keys']:,} x {r.get('per_key', 100)} | {_fmt_rate(r['streamrbf'])} | "
                     f"{_fmt_rate(r['river_dict'])} | {r['ratio']:.1f}x | {r['ari']:.3f} | "
                     f"{r['river_ari']:.3f} | {r['bytes_per_stream']:.0f} | "
                     f"{r['learn_many'] / 1e6:.2f} M | {r['predict_many'] / 1e6:.2f} M |")
    lines += ["", f"Sliding window: {WINDOW} events, step {WINDOW_STEP}; 'never' = not "
              "within the stream. Distortion: final centres, whole stream (jump: second "
              "half).", f"Total time: {time.perf_counter() - t0:.0f} s"]
    print("\n".join(lines))
    return {"speed": sp, "memory": mem, "quality": qual, "many_streams": many}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller streams, fewer rounds")
    run(parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
