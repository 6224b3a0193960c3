"""Cluster keyed event streams with one annealed RBF K-Means model per stream.

Run ``python -m pipelines.cluster_events`` with no arguments to cluster a built-in generator of
several keyed streams whose clusters drift; ``--input`` reads JSON lines (``*.jsonl``, ``*.json``)
or CSV files (with a header) instead, one event per line with a key field and numeric features.
``--input_subscription`` / ``--input_topic`` read JSON events from Pub/Sub (a streaming job;
needs ``apache-beam[gcp]``). Every other flag goes to Beam (``--runner``, ``--streaming``,
Dataflow / Flink options); the runner defaults to the in-process ``FnApiRunner``.

Writes to ``--output_dir`` (default ``./streamrbf-output``): ``assignments.jsonl``,
``dead_letters.jsonl``, ``snapshots.jsonl`` (each stream's model after every step),
``summary.json`` and ``summary.md`` (a table per stream) and ``clusters.png`` (centres and
temperature over time).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from streamrbf.beam import ClusterPerKey, DeadLetter

__all__ = ["build_pipeline", "generate_events", "main"]


def generate_events(
    n_streams: int = 4,
    events_per_stream: int = 2000,
    n_clusters: int = 3,
    n_features: int = 2,
    drift: float = 3.0,
    bad_fraction: float = 0.005,
    seed: int = 0,
) -> list[str]:
    """JSON lines of keyed events: each stream has ``n_clusters`` Gaussian clusters whose centres
    drift by ``drift`` (in units of the cluster spread x 10) over the stream; a ``bad_fraction``
    of events is broken (NaN, a missing feature, unparseable text) to exercise the dead letters.

    >>> lines = generate_events(2, 5, bad_fraction=0.0)
    >>> len(lines), sorted(json.loads(lines[0]))
    (10, ['f0', 'f1', 'key'])
    """
    rng = np.random.default_rng(seed)
    names = [f"f{j}" for j in range(n_features)]
    streams = []
    for s in range(n_streams):
        base = rng.uniform(-10, 10, (n_clusters, n_features))
        direction = rng.normal(0, 1, (n_clusters, n_features))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        streams.append((f"stream-{s}", base, direction))
    lines = []
    for i in range(events_per_stream):
        t = i / max(events_per_stream - 1, 1)
        for key, base, direction in streams:
            c = rng.integers(n_clusters)
            x = base[c] + drift * t * direction[c] + rng.normal(0, 0.4, n_features)
            event: dict[str, Any] = {"key": key, **dict(zip(names, np.round(x, 4).tolist()))}
            u = rng.random()
            if u < bad_fraction / 3:
                event[names[0]] = float("nan")
            elif u < 2 * bad_fraction / 3:
                del event[names[-1]]
            elif u < bad_fraction:
                lines.append("{broken json " + key)
                continue
            lines.append(json.dumps(event))
    return lines


class _ParseLine(beam.DoFn):
    """A JSON or CSV line -> ``(key, features)``; lines without a key become dead letters."""

    def __init__(self, key_field: str, csv_header: Sequence[str] | None = None) -> None:
        self.key_field = key_field
        self.csv_header = None if csv_header is None else list(csv_header)

    def process(self, line: str | bytes) -> Iterable[Any]:
        try:
            if isinstance(line, bytes):
                line = line.decode("utf-8")
            if self.csv_header is not None:
                row = next(csv.reader(io.StringIO(line)))
                if len(row) != len(self.csv_header):
                    raise ValueError(
                        f"CSV row has {len(row)} fields, header {len(self.csv_header)}")
                event: Any = {}
                for name, value in zip(self.csv_header, row):
                    event[name] = value if name == self.key_field else float(value)
            else:
                event = json.loads(line, parse_constant=float)
            if not isinstance(event, dict) or self.key_field not in event:
                raise ValueError(f"event has no {self.key_field!r} field")
            key = event.pop(self.key_field)
            yield key, event
        except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as err:
            yield beam.pvalue.TaggedOutput("dead_letters", DeadLetter.of(None, line, str(err)))


class _Progress(beam.DoFn):
    """Prints a running count of clustered events (per worker) to stderr twice a second."""

    def setup(self) -> None:
        self._n = 0
        self._last = 0.0

    def process(self, element: Any) -> Iterable[Any]:
        self._n += 1
        now = time.monotonic()
        if now - self._last > 0.5:
            self._last = now
            print(f"\r[streamrbf] {self._n} events clustered", end="", file=sys.stderr, flush=True)
        yield element

    def teardown(self) -> None:
        print(f"\r[streamrbf] {self._n} events clustered", file=sys.stderr, flush=True)


def _assignment_json(kv: tuple[str, Any]) -> str:
    key, a = kv
    return json.dumps({"key": key, "cluster": a.cluster, "distance": round(a.distance, 6),
                       "temperature": a.temperature,
                       "memberships": {str(k): round(v, 6) for k, v in a.memberships.items()}})


def _csv_header(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    first = FileSystems.match([pattern])[0].metadata_list[0].path
    with FileSystems.open(first) as f:
        return next(csv.reader(io.StringIO(f.readline().decode("utf-8"))))


def build_pipeline(p: beam.Pipeline, args: argparse.Namespace, streaming: bool) -> None:
    """Attach the job to ``p``: read, cluster per key, write the outputs."""
    out = Path(args.output_dir)
    if args.input_subscription or args.input_topic:
        lines = p | "ReadPubSub" >> beam.io.ReadFromPubSub(
            topic=args.input_topic, subscription=args.input_subscription)
        parser = _ParseLine(args.key_field)
    elif args.input:
        is_csv = args.input.lower().endswith(".csv")
        lines = p | "ReadFiles" >> beam.io.ReadFromText(
            args.input, skip_header_lines=1 if is_csv else 0)
        parser = _ParseLine(args.key_field, _csv_header(args.input) if is_csv else None)
    else:
        lines = p | "Generate" >> beam.Create(generate_events(
            args.streams, args.events_per_stream, args.n_clusters, seed=args.seed))
        parser = _ParseLine(args.key_field)
    parsed = lines | "ParseLines" >> beam.ParDo(parser).with_outputs("dead_letters", main="events")
    result = parsed.events | "ClusterPerKey" >> ClusterPerKey(
        args.n_clusters, batch_size=args.batch_size, snapshot_every=1,
        feature_names=args.features.split(",") if args.features else None,
        temperature_decay=args.temperature_decay, decay=args.decay, random_state=args.seed,
    )
    dead = (parsed.dead_letters, result.dead_letters) | "AllDeadLetters" >> beam.Flatten()
    suffix = {} if streaming else {"shard_name_template": ""}
    (result.assignments
     | "Progress" >> beam.ParDo(_Progress())
     | "AssignmentJson" >> beam.Map(_assignment_json)
     | "WriteAssignments" >> beam.io.WriteToText(str(out / "assignments.jsonl"), **suffix))
    (dead | "DeadLetterJson" >> beam.Map(DeadLetter.to_json)
     | "WriteDeadLetters" >> beam.io.WriteToText(str(out / "dead_letters.jsonl"), **suffix))
    (result.snapshots | "SnapshotJson" >> beam.Map(lambda s: json.dumps(s._asdict()))
     | "WriteSnapshots" >> beam.io.WriteToText(str(out / "snapshots.jsonl"), **suffix))


def _read_jsonl(pattern: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(pattern.parent.glob(pattern.name + "*")):
        with open(path) as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def summarise(output_dir: str | Path) -> dict[str, Any]:
    """Per-stream summary from the written files; writes summary.json, summary.md, clusters.png."""
    out = Path(output_dir)
    assignments = _read_jsonl(out / "assignments.jsonl")
    dead = _read_jsonl(out / "dead_letters.jsonl")
    snaps = _read_jsonl(out / "snapshots.jsonl")
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"events": 0, "dead_letters": 0})
    sizes: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for a in assignments:
        per[a["key"]]["events"] += 1
        sizes[a["key"]][a["cluster"]] += 1
    for d in dead:
        per[d["key"] or "(no key)"]["dead_letters"] += 1
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in snaps:
        history[s["key"]].append(s)
    for key, hist in history.items():
        hist.sort(key=lambda s: s["n_steps"])
        last = hist[-1]
        per[key].update(steps=last["n_steps"], temperature=last["temperature"],
                        centers=last["centers"],
                        cluster_sizes=[sizes[key].get(c, 0) for c in range(len(last["centers"]))])
    summary = {"streams": dict(sorted(per.items())), "total_events": len(assignments),
               "total_dead_letters": len(dead)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = ["| stream | events | dead letters | steps | temperature | cluster sizes |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for key, row in summary["streams"].items():
        t = row.get("temperature")
        lines.append(f"| {key} | {row['events']} | {row['dead_letters']} | {row.get('steps', '-')}"
                     f" | {'-' if t is None else f'{t:.3g}'} | {row.get('cluster_sizes', '-')} |")
    table = "\n".join(lines)
    (out / "summary.md").write_text(table + "\n")
    _plot(history, out / "clusters.png")
    summary["table"] = table
    return summary


def _plot(history: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(history)
    if not keys:
        return
    fig, axes = plt.subplots(2, len(keys), figsize=(3.2 * len(keys), 6), squeeze=False)
    for j, key in enumerate(keys):
        hist = history[key]
        C = np.asarray([s["centers"] for s in hist])  # (steps, k, d)
        seen = [s["n_seen"] for s in hist]
        ax = axes[0, j]
        for c in range(C.shape[1]):
            (line,) = ax.plot(C[:, c, 0], C[:, c, 1] if C.shape[2] > 1 else seen, "-", lw=1)
            ax.plot(C[-1, c, 0], C[-1, c, 1] if C.shape[2] > 1 else seen[-1], "o",
                    color=line.get_color())
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("feature 0")
        ax.set_ylabel("feature 1" if C.shape[2] > 1 else "events")
        ax = axes[1, j]
        ax.semilogy(seen, [s["temperature"] for s in hist])
        ax.set_xlabel("events seen")
        ax.set_ylabel("temperature")
    fig.suptitle("streamrbf: centre trajectories (top) and temperature (bottom) per stream")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.cluster_events", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", help="glob of JSON-lines or CSV files (default: built-in generator)")
    p.add_argument("--input_subscription", help="Pub/Sub subscription of JSON events (streaming)")
    p.add_argument("--input_topic", help="Pub/Sub topic of JSON events (streaming)")
    p.add_argument("--output_dir", default="./streamrbf-output")
    p.add_argument("--key_field", default="key")
    p.add_argument("--features", help="comma-separated feature names (default: from each stream)")
    p.add_argument("--n_clusters", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--temperature_decay", type=float, default=0.95)
    p.add_argument("--decay", type=float, default=0.9, help="forgetting factor of the masses")
    p.add_argument("--streams", type=int, default=4, help="generator: number of streams")
    p.add_argument("--events_per_stream", type=int, default=2000, help="generator: events each")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; Beam flags pass through. Returns a process exit code."""
    args, beam_args = _parser().parse_known_args(argv)
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args = ["--runner=FnApiRunner", *beam_args]
    options = PipelineOptions(beam_args)
    streaming = bool(options.view_as(StandardOptions).streaming
                     or args.input_subscription or args.input_topic)
    if streaming:
        options.view_as(StandardOptions).streaming = True
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in ("assignments.jsonl", "dead_letters.jsonl", "snapshots.jsonl"):
        for f in out.glob(old + "*"):
            f.unlink()
    start = time.perf_counter()
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, args, streaming)
    elapsed = time.perf_counter() - start
    summary = summarise(out)
    print(summary["table"])
    n = summary["total_events"]
    print(f"\n{n} events clustered, {summary['total_dead_letters']} dead letters in {elapsed:.1f} s"
          f" ({n / max(elapsed, 1e-9):,.0f} events/s); outputs in {out.resolve()}")
    return 0 if math.isfinite(elapsed) else 1


if __name__ == "__main__":
    raise SystemExit(main())
