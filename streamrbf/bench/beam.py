"""Beam benchmark: ClusterPerKey against Beam's OnlineClustering example and a bare batching job.

All pipelines read the same events on the same runner (the in-process FnApiRunner):

- ``ClusterPerKey``: validate, batch per key, score every event, learn (one model per key), count
  the assignments;
- ``OnlineClustering`` (``apache_beam.examples.online_clustering``): scikit-learn
  ``MiniBatchKMeans`` pickled in state under one constant key; it only trains (no assignments),
  and ``OnlineClustering+assign``: then labels every event with the final model, counted;
- ``ClusterPerKey batches``: the same with ``output="batches"``: one ``AssignmentBatch`` per
  scored batch instead of one element per event (the sizes summed);
- ``bare``: ClusterPerKey's own batching without the clustering: the same validating, bundle-local
  per-key chunking and stateful per-key re-batching into ``batch_size`` batches, then a count of
  the batches and of the dead letters (one element per batch: the output cardinality of
  ``ClusterPerKey(output="batches")``);
- ``bare re-emit``: the same batching, then every event leaves again as one ``(key, features)``
  element (the output cardinality ClusterPerKey has: one element per event), counted, and the
  dead-letter stream counted too, as ClusterPerKey's benchmark does;
- ``bare GroupIntoBatches``: ``GroupIntoBatches`` per key with the same batch size, then a count
  (what ClusterPerKey batched with before);
- ``count``: the source and a count of every event (the floor of any per-event job);
- ``ClusterPerKey many keys``: ClusterPerKey on one key per 100 events (short streams such as
  sessions: the per-key costs, initialisation and Beam's state and timers, dominate).

Every pipeline but the last also runs on a tenth of the events: the difference is the cost of
the other events alone (the events/s of a long-running stream, without the job's fixed costs).

Run ``python -m streamrbf.bench.beam [--quick]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import repeat

import apache_beam as beam
import numpy as np

from ..beam.dead_letters import DEAD_LETTERS
from ..beam.per_key import _CHUNK_ROWS, _ParseAndBatchDoFn, _ScoreAndLearnDoFn
from ..beam.state import EventChunk

__all__ = ["run"]


class _Source(beam.PTransform):
    """The same events for every pipeline, generated inside it (``Create`` of 100k elements would
    spend seconds pickling them): chunks of ``chunk`` events, keys round-robin, k Gaussian blobs
    per key."""

    def __init__(self, n_keys: int, n_events: int, d: int, k: int, chunk: int = 1000) -> None:
        super().__init__()
        self.n_keys, self.n_events, self.d, self.k, self.chunk = n_keys, n_events, d, k, chunk

    def expand(self, pbegin):
        n_keys, d, k, chunk = self.n_keys, self.d, self.k, self.chunk
        centres = np.random.default_rng(0).uniform(-10, 10, (n_keys, k, d))

        def events(i: int) -> list[tuple[str, list[float]]]:
            rng = np.random.default_rng(i + 1)
            keys = rng.integers(n_keys, size=chunk)
            X = centres[keys, rng.integers(k, size=chunk)] + rng.normal(0, 0.5, (chunk, d))
            return [(f"s{key}", row) for key, row in zip(keys.tolist(), X.tolist())]

        return (pbegin | beam.Create(list(range(self.n_events // chunk)), reshuffle=False)
                | beam.FlatMap(events))


def _time(build, source, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with beam.Pipeline(runner="FnApiRunner") as p:
            build(p | source())
        best = min(best, time.perf_counter() - start)
    return best


def _build(name: str, n_keys: int, d: int, k: int, batch: int, ckpt: str):
    from ..beam import ClusterPerKey

    def ours(pc):
        out = pc | ClusterPerKey(k, batch_size=batch, max_buffering_secs=None, warmup=batch)
        _ = out.assignments | "CountA" >> beam.combiners.Count.Globally()
        _ = out.dead_letters | "CountD" >> beam.combiners.Count.Globally()

    def ours_many_keys(pc):
        # Many short streams (sessions): batch 64, each key initialised on its first 64 events.
        out = pc | ClusterPerKey(k, batch_size=64, max_buffering_secs=None, warmup=64)
        _ = out.assignments | "CountA" >> beam.combiners.Count.Globally()
        _ = out.dead_letters | "CountD" >> beam.combiners.Count.Globally()

    def many_keys(pc):
        # The same short streams in shards: each shard's streams in one bank, one bank call
        # per chunk (warm-up 64 as above).
        from ..beam import ClusterManyKeys

        out = pc | ClusterManyKeys(k, shards=8, warmup=64)
        _ = out.assignments | "CountA" >> beam.combiners.Count.Globally()
        _ = out.dead_letters | "CountD" >> beam.combiners.Count.Globally()

    def many_keys_batches(pc):
        from ..beam import ClusterManyKeys

        out = pc | ClusterManyKeys(k, shards=8, warmup=64, output="batches")
        _ = (out.assignments | "Sizes" >> beam.Map(lambda kv: len(kv[1]))
             | "CountA" >> beam.CombineGlobally(sum))
        _ = out.dead_letters | "CountD" >> beam.combiners.Count.Globally()

    def ours_batches(pc):
        out = pc | ClusterPerKey(k, batch_size=batch, max_buffering_secs=None, warmup=batch,
                                 output="batches")
        _ = (out.assignments | "Sizes" >> beam.Map(lambda kv: len(kv[1]))
             | "CountA" >> beam.CombineGlobally(sum))
        _ = out.dead_letters | "CountD" >> beam.combiners.Count.Globally()

    def bare_gib(pc):
        _ = (pc | beam.GroupIntoBatches(batch)
             | beam.Map(lambda kv: len(kv[1])) | beam.CombineGlobally(sum))

    def bare(pc):
        chunk = -(-max(_CHUNK_ROWS, batch) // batch) * batch
        parsed = pc | beam.ParDo(_ParseAndBatchDoFn(None, None, chunk)).with_output_types(
            tuple[str, EventChunk]).with_outputs(DEAD_LETTERS, main="chunks")
        _ = (parsed.chunks
             | beam.ParDo(_BatchOnlyDoFn({"n_clusters": k}, batch, None, 0, time.time, 0, batch))
             | beam.CombineGlobally(sum))
        # every event accounted for, as in ClusterPerKey's job: the dead letters are counted too
        _ = parsed[DEAD_LETTERS] | "CountD" >> beam.combiners.Count.Globally()

    def bare_reemit(pc):
        chunk = -(-max(_CHUNK_ROWS, batch) // batch) * batch
        parsed = pc | beam.ParDo(_ParseAndBatchDoFn(None, None, chunk)).with_output_types(
            tuple[str, EventChunk]).with_outputs(DEAD_LETTERS, main="chunks")
        _ = (parsed.chunks
             | beam.ParDo(_ReEmitDoFn({"n_clusters": k}, batch, None, 0, time.time, 0, batch))
             .with_output_types(tuple[str, list[float]])
             | "CountA" >> beam.combiners.Count.Globally())
        _ = parsed[DEAD_LETTERS] | "CountD" >> beam.combiners.Count.Globally()

    def count(pc):
        _ = pc | beam.combiners.Count.Globally()

    def beam_example(pc):
        # Imported here, not for every pipeline: it loads scikit-learn and pandas, and every
        # module loaded makes Beam's state cache slower to weigh values (objsize walks all
        # modules' globals on each put), which would tax our pipelines for the example's imports.
        from apache_beam.examples import online_clustering as oc

        _ = (pc | beam.Map(lambda kv: np.asarray(kv[1]))
             | oc.OnlineClustering(oc.OnlineKMeans, n_clusters=k, batch_size=batch,
                                   cluster_args={"n_init": 1, "random_state": 0},
                                   checkpoints_path=ckpt))

    def beam_example_assign(pc):
        # The example's own way to label every event: train, then assign with the final model.
        from apache_beam.examples import online_clustering as oc

        rows = pc | "Rows" >> beam.Map(lambda kv: np.asarray(kv[1]))
        model = rows | oc.OnlineClustering(
            oc.OnlineKMeans, n_clusters=k, batch_size=batch,
            cluster_args={"n_init": 1, "random_state": 0}, checkpoints_path=ckpt)
        _ = (rows | oc.AssignClusterLabelsInMemoryModel(
                model=beam.pvalue.AsSingleton(model), n_clusters=k, batch_size=batch,
                model_id="bench")
             | "CountA" >> beam.combiners.Count.Globally())

    return {"bare": bare, "bare re-emit": bare_reemit, "bare GroupIntoBatches": bare_gib,
            "count": count,
            "ClusterPerKey": ours, "ClusterPerKey batches": ours_batches,
            "ClusterPerKey many keys": ours_many_keys,
            "ClusterManyKeys many keys": many_keys,
            "ClusterManyKeys many keys batches": many_keys_batches,
            "OnlineClustering": beam_example,
            "OnlineClustering+assign": beam_example_assign}[name]


class _BatchOnlyDoFn(_ScoreAndLearnDoFn):
    """ClusterPerKey's stateful step without the model: the same state and re-batching, each
    batch only counted."""

    def _advance(self, key, state, rows, flush, ids=None):
        b = self.batch_size
        n_full = len(rows) if flush else len(rows) - len(rows) % b
        for start in range(0, n_full, b):
            yield len(rows[start:start + b])
        state.pending = rows[n_full:] if n_full < len(rows) else None
        return state


class _ReEmitDoFn(_BatchOnlyDoFn):
    """The same state and re-batching, then each event of a batch leaves again as one
    ``(key, features)`` element: Beam's own cost of one output element per event."""

    def _advance(self, key, state, rows, flush, ids=None):
        b = self.batch_size
        n_full = len(rows) if flush else len(rows) - len(rows) % b
        for start in range(0, n_full, b):
            yield from zip(repeat(key), rows[start:start + b].tolist())
        state.pending = rows[n_full:] if n_full < len(rows) else None
        return state


def _measure(name: str, n_keys: int, sizes: tuple[int, ...], d: int, k: int, batch: int,
             repeats: int) -> list[float]:
    """Best time of one pipeline at each number of events, in its own process (as on a
    worker): numba's and scikit-learn's OpenMP runtimes in one process slow each other down
    10x."""
    ckpt = tempfile.mkdtemp(prefix="streamrbf-bench-")
    build = _build(name, n_keys, d, k, batch, ckpt)
    return [_time(build, lambda n=n: _Source(n_keys, n, d, k), repeats) for n in sizes]


def run(quick: bool = False) -> dict:
    """Time the pipelines; print a Markdown report and return the numbers.

    Each pipeline runs in its own spawned process (best of several interleaved rounds), once
    on all the events and once on a tenth of them: the difference gives the events/s of a
    long-running stream without the job's fixed costs.

    Parameters
    ----------
    quick
        A smaller run: 20,000 events and 3 rounds instead of 100,000 events and 5 rounds.

    Returns
    -------
    dict
        The event counts, the seconds and events/s of every pipeline (whole run, small run and
        steady state), the many-keys run, and the speedups and overheads of ``ClusterPerKey``
        over the other pipelines, by name.

    Examples
    --------
    >>> r = run(quick=True)   # about a minute  # doctest: +SKIP
    >>> sorted(r)[:3]   # doctest: +SKIP
    ['batches_overhead_vs_bare', 'batches_speedup_vs_online_clustering', ...]
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    n_keys, d, k, batch = 8, 8, 8, 256
    n = 20_000 if quick else 100_000
    # Best of several rounds, each pipeline in its own long-lived process, the pipelines taking
    # turns within a round (the machine's slow spells then hit every pipeline alike, not the one
    # that happened to run then); the first rounds pay one-off costs (numba signatures for
    # read-only buffers, lazy imports) in every pipeline alike.
    repeats = 3 if quick else 5
    # A second, 10x smaller run of each pipeline: the difference is the cost of the extra
    # events alone, without the job's fixed cost (building the pipeline, starting stages,
    # initialising the models): the events/s of a long-running stream.
    n_small = n // 10
    ctx = mp.get_context("spawn")
    names = ["count", "bare GroupIntoBatches", "bare", "bare re-emit", "ClusterPerKey",
             "ClusterPerKey batches", "OnlineClustering", "OnlineClustering+assign"]
    pools = {name: ProcessPoolExecutor(1, mp_context=ctx) for name in names}
    try:
        times = dict.fromkeys(names, float("inf"))
        times_small = dict.fromkeys(names, float("inf"))
        for _ in range(repeats):
            for name in names:
                t, t_small = pools[name].submit(
                    _measure, name, n_keys, (n, n_small), d, k, batch, 1).result()
                times[name] = min(times[name], t)
                times_small[name] = min(times_small[name], t_small)
    finally:
        for pool in pools.values():
            pool.shutdown()
    # Many short streams: one key per 100 events (1,000 keys of 100 events in the full run).
    n_keys_many = n // 100
    many_names = ("ClusterPerKey many keys", "ClusterManyKeys many keys",
                  "ClusterManyKeys many keys batches", "count")
    many = {}
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        for name in many_names:
            many[name] = pool.submit(_measure, name, n_keys_many, (n,), d, k, batch,
                                     3).result()[0]
    many_keys_seconds = many["ClusterPerKey many keys"]
    rate = {name: n / t for name, t in times.items()}
    steady = {name: (n - n_small) / max(times[name] - times_small[name], 1e-9)
              for name in names}
    vs_example = rate["ClusterPerKey"] / rate["OnlineClustering"]
    vs_example_assign = rate["ClusterPerKey"] / rate["OnlineClustering+assign"]
    overhead = times["ClusterPerKey"] / times["bare"] - 1.0
    overhead_reemit = times["ClusterPerKey"] / times["bare re-emit"] - 1.0
    overhead_gib = times["ClusterPerKey"] / times["bare GroupIntoBatches"] - 1.0
    batches_vs_example = rate["ClusterPerKey batches"] / rate["OnlineClustering"]
    batches_vs_example_assign = rate["ClusterPerKey batches"] / rate["OnlineClustering+assign"]
    batches_overhead = times["ClusterPerKey batches"] / times["bare"] - 1.0
    # What no job with ClusterPerKey's batching and one output per event can beat on this
    # runner, however cheap its clustering: the same job with no clustering at all.
    ceiling = rate["bare re-emit"] / rate["OnlineClustering"]
    floor = rate["count"] / rate["OnlineClustering"]
    steady_vs_example = steady["ClusterPerKey"] / steady["OnlineClustering"]
    steady_vs_example_assign = steady["ClusterPerKey"] / steady["OnlineClustering+assign"]
    steady_batches_vs_example = steady["ClusterPerKey batches"] / steady["OnlineClustering"]
    rows = [
        ("source + count of every event (floor)", "reads and counts only"),
        ("bare GroupIntoBatches per key (old batching)", "batches only"),
        ("bare ClusterPerKey batching (bundle chunks + state)",
         "validates, batches, counts batches and dead letters"),
        ("bare batching + re-emit", "validates, batches, one output per event"),
        ("streamrbf ClusterPerKey", f"{n_keys} models, scores + learns every event"),
        ("streamrbf ClusterPerKey(output='batches')",
         "the same, one AssignmentBatch per batch"),
        ("Beam examples OnlineClustering", "1 model under one key, trains only"),
        ("OnlineClustering + AssignClusterLabelsInMemoryModel", "trains, then labels every event"),
    ]
    lines = [
        f"## Beam: {n:,} events, {n_keys} keys, d={d}, k={k}, batch {batch}, FnApiRunner, "
        f"best of {repeats} interleaved rounds",
        "",
        f"| pipeline | what it does | seconds | events/s | seconds, {n_small:,} events "
        f"| events/s beyond the first {n_small:,} |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for (label, what), name in zip(rows, names):
        lines.append(f"| {label} | {what} | {times[name]:.2f} | {rate[name]:,.0f} "
                     f"| {times_small[name]:.2f} | {steady[name]:,.0f} |")
    lines += [
        "",
        f"- ClusterPerKey vs OnlineClustering: **{vs_example:.1f}x** events/s (goal >= 3x)",
        f"- ClusterPerKey vs OnlineClustering + labels for every event: "
        f"**{vs_example_assign:.1f}x** events/s",
        f"- ClusterPerKey cost over the bare job with its own batching (no per-event output): "
        f"**{overhead:+.0%}** (goal <= +50%)",
        f"- ClusterPerKey cost over the same batching re-emitting one element per event (same "
        f"output cardinality, dead letters counted too): **{overhead_reemit:+.0%}**",
        f"- ClusterPerKey cost over the bare GroupIntoBatches job: **{overhead_gib:+.0%}**",
        f"- ClusterPerKey(output='batches') vs OnlineClustering: **{batches_vs_example:.1f}x**; "
        f"vs OnlineClustering + labels: **{batches_vs_example_assign:.1f}x**; cost over the bare "
        f"batching job (both one element per batch): **{batches_overhead:+.0%}** (goal <= +50%)",
        f"- Many short streams: ClusterPerKey on {n_keys_many:,} keys of ~100 events (batch 64, "
        f"warm-up 64): **{many_keys_seconds:.2f} s**, {n / many_keys_seconds:,.0f} events/s, "
        f"{1e3 * many_keys_seconds / n_keys_many:.1f} ms per key all included; "
        f"ClusterManyKeys (8 shards, a shard's streams in one bank): "
        f"**{many['ClusterManyKeys many keys']:.2f} s**, "
        f"{n / many['ClusterManyKeys many keys']:,.0f} events/s (goal >= 100,000), "
        f"output='batches' {n / many['ClusterManyKeys many keys batches']:,.0f} events/s; "
        f"the source and a count alone: {n / many['count']:,.0f} events/s",
        f"- Ceiling on this runner: the bare batching + re-emit job (ClusterPerKey's batching and "
        f"output, no clustering) runs at **{ceiling:.1f}x** OnlineClustering; reading and "
        f"counting the events alone at **{floor:.1f}x**",
        f"- Beyond the first {n_small:,} events (fixed costs left out): ClusterPerKey "
        f"**{steady_vs_example:.1f}x** OnlineClustering, **{steady_vs_example_assign:.1f}x** "
        f"OnlineClustering + labels; ClusterPerKey(output='batches') "
        f"**{steady_batches_vs_example:.1f}x** OnlineClustering",
    ]
    print("\n".join(lines))
    return {"events": n, "seconds": times, "events_per_s": rate,
            "events_small": n_small, "seconds_small": times_small,
            "steady_events_per_s": steady,
            "many_keys_sharded": {name: {"seconds": t, "events_per_s": n / t}
                                  for name, t in many.items()},
            "many_keys": {"keys": n_keys_many, "seconds": many_keys_seconds,
                          "events_per_s": n / many_keys_seconds,
                          "ms_per_key": 1e3 * many_keys_seconds / n_keys_many},
            "ceiling_speedup_vs_online_clustering": ceiling,
            "floor_speedup_vs_online_clustering": floor,
            "steady_speedup_vs_online_clustering": steady_vs_example,
            "steady_speedup_vs_online_clustering_with_labels": steady_vs_example_assign,
            "steady_batches_speedup_vs_online_clustering": steady_batches_vs_example,
            "speedup_vs_online_clustering": vs_example,
            "speedup_vs_online_clustering_with_labels": vs_example_assign,
            "overhead_vs_bare": overhead, "overhead_vs_bare_reemit": overhead_reemit,
            "overhead_vs_bare_group_into_batches": overhead_gib,
            "batches_speedup_vs_online_clustering": batches_vs_example,
            "batches_speedup_vs_online_clustering_with_labels": batches_vs_example_assign,
            "batches_overhead_vs_bare": batches_overhead}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamrbf.bench.beam")
    parser.add_argument("--quick", action="store_true", help="a smaller run (seconds)")
    args = parser.parse_args(argv)
    run(quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
