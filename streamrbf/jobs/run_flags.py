"""The flags of the main job, ``streamrbf run``: parsed before Beam is imported, so that
``--help`` and a bad flag answer at once."""

from __future__ import annotations

import argparse

from ..console import (
    EXIT_CODES,
    Formatter,
    auto_or,
    fraction,
    positive_float,
    positive_int,
    probability,
)

__all__ = ["run_parser"]


_RUN_DESCRIPTION = """\
Cluster keyed event streams with Apache Beam: one annealed RBF K-Means model, with its own
temperature, per key. Each batch of a stream is scored with the model as it is, then learned.

input (one of):
  (none)                 a built-in generator: --streams keyed streams of --events_per_stream
                         events with --n_clusters Gaussian clusters that drift; 0.5% of the
                         events are broken on purpose, to show the dead letters
  --input GLOB           JSON-lines files (one object per line: the --key_field and numeric
                         features) or, for *.csv, CSV files with a header line
  --input_subscription / --input_topic
                         JSON events from Pub/Sub: a streaming job (needs apache-beam[gcp])
Any flag not listed below goes to Beam (--runner, --streaming, Dataflow and Flink options). A
near miss of a known flag (--ouptut_dir) is an error; so is a flag no Beam Python option declares
on a local runner; on other runners such a flag (Flink's --checkpointing_interval) is passed to
the job server with a note. The runner defaults to Beam's in-process FnApiRunner.

output, in --output_dir (the three .jsonl files of an earlier run there are replaced):
  assignments.jsonl    one line per clustered event: key, cluster, distance, temperature and
                       the non-zero memberships
  dead_letters.jsonl   one line per refused event (bad JSON or CSV, NaN, a missing feature, a
                       stream too short to cluster) with the reason
  snapshots.jsonl      each stream's model (steps, events seen, temperature, centres, masses)
                       after its steps
  summary.json         per stream: events, dead letters, steps, temperature, centres, sizes
  summary.md           the same as a Markdown table
  clusters.png         centre trajectories and temperature over time, a column per stream
stdout: the summary table, then "N events clustered, M dead letters in S s (R events/s);
outputs in DIR". stderr: a progress bar (events processed, streams, temperature range) while
the pipeline runs, when stderr is a terminal."""

_RUN_EPILOG = """\
examples:
  streamrbf run                                  # built-in streams -> ./streamrbf-output/
  streamrbf run --streams 8 --events_per_stream 5000 --n_clusters 4 --output_dir out
  streamrbf run --input 'data/events-*.jsonl' --features amount,latency --output_dir out
  streamrbf run --input events.csv --key_field user --batch_size 50 --quiet
  streamrbf run --input_subscription projects/P/subscriptions/S --runner DataflowRunner \\
      --project P --region europe-west1 --temp_location gs://B/tmp --output_dir gs://B/out

""" + EXIT_CODES


def run_parser(prog: str = "streamrbf run") -> argparse.ArgumentParser:
    """The flags of the main job (``streamrbf run``); unknown flags are left for Beam.

    Parameters
    ----------
    prog
        The program name shown in the usage and help text.

    Returns
    -------
    argparse.ArgumentParser
        The parser: the input source (files, a Pub/Sub subscription or topic, or the
        generator), the output directory, the key and feature fields, the model's settings, the
        generator's settings and the progress flags. Use ``parse_known_args`` to keep the
        Beam flags.

    Examples
    --------
    >>> args, beam_args = run_parser().parse_known_args(["--n_clusters", "4", "--runner", "X"])
    >>> args.n_clusters, args.output_dir, args.progress, beam_args
    (4, './streamrbf-output', True, ['--runner', 'X'])
    """
    p = argparse.ArgumentParser(prog=prog, description=_RUN_DESCRIPTION, epilog=_RUN_EPILOG,
                                formatter_class=Formatter, allow_abbrev=False)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="GLOB",
                        help="JSON-lines or CSV files (default: the built-in generator)")
    source.add_argument("--input_subscription", metavar="SUB",
                        help="Pub/Sub subscription of JSON events (streaming)")
    source.add_argument("--input_topic", metavar="TOPIC",
                        help="Pub/Sub topic of JSON events (streaming)")
    p.add_argument("--output_dir", default="./streamrbf-output", metavar="DIR",
                   help="where the outputs go (default: %(default)s)")
    p.add_argument("--key_field", default="key", metavar="NAME",
                   help="the field that names an event's stream (default: %(default)s)")
    p.add_argument("--features", metavar="A,B,...",
                   help="comma-separated feature names; an event must have exactly these "
                   "(default: each event's numeric fields, sorted by name)")
    p.add_argument("--n_clusters", type=positive_int, default=3, metavar="K",
                   help="clusters per stream (default: %(default)s)")
    p.add_argument("--batch_size", type=positive_int, default=100, metavar="B",
                   help="events per learning step (default: %(default)s)")
    p.add_argument("--temperature_decay", type=auto_or(fraction), default="auto", metavar="R",
                   help="temperature factor per step, in (0, 1], or auto: 0.9 per 100 events "
                   "(default: %(default)s)")
    p.add_argument("--half_life", type=auto_or(positive_float), default="auto", metavar="H",
                   help="events after which the cluster masses have halved (forgetting: centres "
                   "follow drift), or auto: max(100, 4 x K) steps (default: %(default)s)")
    p.add_argument("--streams", type=positive_int, default=4, metavar="N",
                   help="generator: number of streams (default: %(default)s)")
    p.add_argument("--events_per_stream", type=positive_int, default=2000, metavar="N",
                   help="generator: events in each stream (default: %(default)s)")
    p.add_argument("--bad_fraction", type=probability, default=0.005, metavar="P",
                   help="generator: share of broken events (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the generator and of the models (default: %(default)s)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (there is none anyway when stderr is not a terminal)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and nothing on stdout; the files are written as usual")
    usage = p.format_usage().removeprefix("usage: ").rstrip()
    p.usage = f"{usage}\n{' ' * (len(prog) + 8)}[BEAM_FLAG ...]"
    return p
