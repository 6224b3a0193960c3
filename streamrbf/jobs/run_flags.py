"""The flags of the main job, ``streamrbf run``: parsed before Beam is imported, so that
``--help`` and a bad flag answer at once."""

from __future__ import annotations

import argparse
import textwrap

from ..console import (
    EXIT_CODES,
    Formatter,
    auto_or,
    fraction,
    positive_float,
    positive_int,
    probability,
)

__all__ = ["OUTPUTS", "check_run_flags", "outputs_help", "run_parser"]

# The main job's outputs, in --output_dir: the one list that `streamrbf run --help`, docs/cli.md
# (its copy of the help, checked by the tests) and the README's outputs paragraph (checked to
# name each file) follow.
OUTPUTS: tuple[tuple[str, str], ...] = (
    ("assignments.jsonl",
     "one line per clustered event: key, cluster, distance, temperature and the non-zero "
     "memberships; id (with --id_field) and the --keep_fields"),
    ("dead_letters.jsonl",
     "one line per refused event (bad JSON or CSV, NaN, a missing feature, a stream too short "
     "to cluster): key (null when unreadable), event (the input line verbatim, without its "
     "line end; a line that is not UTF-8 decoded with U+FFFD for each bad byte), reason, "
     "stage; id (with --id_field); csv_header (CSV input: the columns of the line's file)"),
    ("snapshots.jsonl",
     "each stream's model (steps, events seen, temperature, centres, masses) after each step"),
    ("sample.jsonl",
     "up to 200 clustered events per stream, drawn at random: key, cluster, features; id "
     "(with --id_field); the points of clusters.png (not written by streaming runs)"),
    ("summary.json",
     "the run's parameters; per stream: events, dead letters, steps, temperature, centres, "
     "sizes, reheats, model file; dead_letter_share, dead letters by reason, drift alarms "
     "and restarts, ignored_fields (name -> events where ignored)"),
    ("summary.md",
     "the run as a report: parameters, a table of the streams, dead letters by reason, each "
     "stream's centres, drift restarts (reheats), the files"),
    ("clusters.png",
     "a figure: per stream, sampled events coloured by cluster, the centres' paths and where "
     "drift restarted the model; below, every stream's temperature over the events"),
    ("models/",
     "each stream's final model as a safe model file (safetensors and JSON, no pickle) that "
     "'streamrbf inspect FILE' and RBFKMeans.load open, named after the key (a slug and a "
     "hash); models/index.json maps each key to its file"),
)


def outputs_help(width: int = 96) -> str:
    """The outputs of the main job as ``--help`` shows them: a line per file of
    :data:`OUTPUTS`, its description wrapped under it.

    Parameters
    ----------
    width
        The text's width.

    Returns
    -------
    str
        The lines, each indented by two spaces, without a final newline.

    Examples
    --------
    >>> print(outputs_help().splitlines()[0])
      assignments.jsonl    one line per clustered event: key, cluster, distance, temperature and the
    """
    lines = []
    for name, text in OUTPUTS:
        lines += textwrap.wrap(text, width, initial_indent=f"  {name:<21}",
                               subsequent_indent=" " * 23, break_on_hyphens=False,
                               break_long_words=False)
    return "\n".join(lines)


_RUN_DESCRIPTION = """\
Cluster keyed event streams with Apache Beam: one annealed RBF K-Means model, with its own
temperature, per key. Each batch of a stream is scored with the model as it is, then learned.

input (one of):
  (none)                 a built-in generator: --streams keyed streams of --events_per_stream
                         events with --n_clusters Gaussian clusters that drift; 0.5% of the
                         events are broken on purpose, to show the dead letters
  --input GLOB           JSON-lines files (one object per line: the --key_field and numeric
                         features) or, for *.csv, CSV files with a header line
  (streamrbf replay DEAD_LETTERS.jsonl: the "event" of each dead letter, fixed by hand)
  --input_subscription / --input_topic
                         JSON events from Pub/Sub: a streaming job (needs apache-beam[gcp])
keys: a non-empty string, or an integer, written as its decimal text (7 -> "7": the int 7 and
the text "7" are one stream); anything else (a bool, a float, null) makes a dead letter.
features: --features names them exactly (a missing or non-numeric one makes a dead letter);
without it, an event's numeric fields (in CSV, the cells that read as numbers) other than the
key, the --id_field and the --keep_fields. Fields that are not features are ignored, and
counted by name in the summary.
Any flag not listed below goes to Beam (--runner, --streaming, Dataflow and Flink options). A
near miss of a known flag (--ouptut_dir) is an error; so is a flag no Beam Python option declares
on a local runner; on other runners such a flag (Flink's --checkpointing_interval) is passed to
the job server with a note. The runner defaults to Beam's in-process FnApiRunner.

output, in --output_dir (those of an earlier run there are replaced):
{outputs}
stdout: the summary table, the ignored fields, then "N events clustered, M dead letters in S s
(R events/s); outputs in DIR" and a line saying where the model files are. When the dead
letters are more than --max_dead_letter_share of the events, the last line (stderr) says so and
the exit code is 4. stderr: a progress bar (events processed, streams, temperature range) while
the pipeline runs, when stderr is a terminal."""

_REPLAY_DESCRIPTION = """\
Run the main job again on the events of a dead_letters.jsonl file: the "event" of each dead
letter is its input line, verbatim; fix the lines in the file first (or write the fixed ones to
a new file). Dead letters of CSV input carry their file's header (csv_header) and are read back
as CSV; the others as JSON lines. The models start afresh: a stream needs --n_clusters events to
be clustered. Takes the flags of 'streamrbf run' but its input flags; the outputs go to
--output_dir (default ./streamrbf-replay), as those of 'streamrbf run'."""

_RUN_EPILOG = """\
examples:
  streamrbf run                                  # built-in streams -> ./streamrbf-output/
  streamrbf run --streams 8 --events_per_stream 5000 --n_clusters 4 --output_dir out
  streamrbf run --input 'data/events-*.jsonl' --features amount,latency --output_dir out
  streamrbf run --input events.csv --key_field user --batch_size 50 --quiet
  streamrbf run --input events.jsonl --id_field id --keep_fields ts --output_dir out
  streamrbf replay out/dead_letters.jsonl --id_field id --output_dir out-replay
  streamrbf run --input_subscription projects/P/subscriptions/S --runner DataflowRunner \\
      --project P --region europe-west1 --temp_location gs://B/tmp --output_dir gs://B/out

""" + EXIT_CODES


def run_parser(prog: str = "streamrbf run", replay: bool = False) -> argparse.ArgumentParser:
    """The flags of the main job (``streamrbf run``); unknown flags are left for Beam.

    Parameters
    ----------
    prog
        The program name shown in the usage and help text.
    replay
        The flags of ``streamrbf replay``: a dead-letters file instead of the input flags and the
        generator's, and ``./streamrbf-replay`` as the default output directory.

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
    description = _REPLAY_DESCRIPTION if replay else _RUN_DESCRIPTION.format(
        outputs=outputs_help())
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=_RUN_EPILOG,
                                formatter_class=Formatter, allow_abbrev=False)
    if replay:
        p.add_argument("dead_letters", metavar="DEAD_LETTERS",
                       help="a dead_letters.jsonl file (or a glob of them)")
        p.set_defaults(input=None, input_subscription=None, input_topic=None)
    else:
        source = p.add_mutually_exclusive_group()
        source.add_argument("--input", metavar="GLOB",
                            help="JSON-lines or CSV files (default: the built-in generator)")
        source.add_argument("--input_subscription", metavar="SUB",
                            help="Pub/Sub subscription of JSON events (streaming)")
        source.add_argument("--input_topic", metavar="TOPIC",
                            help="Pub/Sub topic of JSON events (streaming)")
    p.add_argument("--output_dir", metavar="DIR",
                   default="./streamrbf-replay" if replay else "./streamrbf-output",
                   help="where the outputs go (default: %(default)s)")
    p.add_argument("--key_field", default="key", metavar="NAME",
                   help="the field that names an event's stream: a string or an integer "
                   "(7 -> \"7\") (default: %(default)s)")
    p.add_argument("--features", metavar="A,B,...",
                   help="comma-separated feature names: exactly these, the other fields "
                   "ignored (default: each event's numeric fields, sorted by name)")
    p.add_argument("--id_field", metavar="NAME",
                   help="the field holding each event's id (a string or an integer), copied "
                   "into its assignment or dead letter as id; not a feature (default: none)")
    p.add_argument("--keep_fields", metavar="A,B,...",
                   help="comma-separated fields copied into each assignment as they are (null "
                   "when absent); not features (default: none)")
    p.add_argument("--max_dead_letter_share", type=probability, default=0.5, metavar="P",
                   help="exit code 4 when more than this share of the events are dead letters "
                   "(1: never) (default: %(default)s)")
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
    if not replay:
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


# The output fields of an assignment: --keep_fields may not name them.
_OUTPUT_FIELDS = ("key", "cluster", "distance", "temperature", "memberships", "id")


def check_run_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (``parser.error``: exit code 2) field flags that contradict each other: an empty
    name, a field named twice, the key or id among the features or kept fields, a kept field
    among the features or named like an output field.

    Parameters
    ----------
    parser
        The parser of the flags (its ``error`` exits with code 2).
    args
        The parsed flags.

    Examples
    --------
    >>> p = run_parser()
    >>> check_run_flags(p, p.parse_args(["--id_field", "id", "--keep_fields", "ts"]))
    >>> check_run_flags(p, p.parse_args(["--features", "x,id", "--id_field", "id"]))
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    def names(flag: str) -> list[str]:
        text = getattr(args, flag, None)
        if text is None:
            return []
        out = [n.strip() for n in text.split(",")]
        if not all(out):
            parser.error(f"--{flag} {text!r} has an empty name")
        if len(set(out)) != len(out):
            parser.error(f"--{flag} {text!r} names a field twice")
        return out

    features, keep = names("features"), names("keep_fields")
    special = {"--key_field": args.key_field, "--id_field": args.id_field}
    if args.id_field is not None and not args.id_field.strip():
        parser.error("--id_field is empty")
    if args.id_field == args.key_field:
        parser.error(f"--id_field {args.id_field!r} is also the --key_field")
    for flag, name in special.items():
        if name is not None and name in features:
            parser.error(f"{flag} {name!r} cannot also be a feature (--features)")
        if name is not None and name in keep:
            parser.error(f"{flag} {name!r} is in the outputs anyway: not a --keep_fields")
    for name in keep:
        if name in features:
            parser.error(f"--keep_fields {name!r} cannot also be a feature (--features)")
        if name in _OUTPUT_FIELDS:
            parser.error(f"--keep_fields {name!r} is the name of an output field")
