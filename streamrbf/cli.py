"""The ``streamrbf`` command line: ``run`` (the main job), ``bench`` and ``inspect``.

``streamrbf`` with no arguments, or with only flags (``streamrbf --output_dir out``), runs the main
job, exactly as ``streamrbf run`` does. ``streamrbf COMMAND --help`` explains each command: what
it does, its inputs, the files it writes, examples and exit codes. ``python -m
pipelines.cluster_events`` and ``python -m streamrbf.bench`` are the same as ``streamrbf run`` and
``streamrbf bench``.

Exit codes, the same for every command, so that a script can rely on them:

| code | meaning |
| ---: | --- |
| 0 | success |
| 1 | the work failed: no file matches ``--input``, a file cannot be read or written, an error |
| 2 | bad usage: unknown command or flag, a missing or bad flag value (argparse's message) |
| 3 | a model file was refused: missing, not a streamrbf model, or corrupt (``inspect``) |
| 130 | interrupted (Ctrl-C) |
| 141 | stdout was closed early (piped into ``head``, say): stops quietly, as on SIGPIPE |

"An error" is one raised inside the pipeline or a benchmark suite. A missing ``--input`` file is
exit code 1, not 2: the command line is well formed, the data is not there (as with ``cat``).
Errors are one line on stderr, ``streamrbf COMMAND: error: WHY``; an unexpected exception (a bug,
or an error inside the pipeline) prints its traceback first, and still ends with that line and
exit code 1. Progress bars go to stderr, only when stderr is a terminal, and never with
``--no-progress`` or ``--quiet``.
"""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["CommandError", "main", "progress_bar", "progress_enabled", "run_parser"]

COMMANDS = {
    "run": "cluster keyed event streams with Apache Beam, one annealed model per stream; writes\n"
    "assignments, dead letters, snapshots, summary.md/json and clusters.png (the default)",
    "bench": "benchmarks against river, scikit-learn and Beam; writes bench.md and bench.json",
    "inspect": "show what a saved RBFKMeans model holds: shape, temperature, masses;\n"
    "--json for scripts, --plot FILE.png for a picture of the centres",
}

EXIT_CODES = """\
exit codes:
  0    success
  1    the work failed (an --input pattern matches no file, an unreadable input, an unwritable
       output, an error in the pipeline or a benchmark suite)
  2    bad usage: unknown command or flag, a missing or bad flag value (argparse's message)
  3    a model file was refused: missing, not a streamrbf model, or corrupt (inspect)
  130  interrupted (Ctrl-C)
  141  stdout closed early (| head): stops quietly, as on SIGPIPE
errors are one line on stderr: "streamrbf COMMAND: error: WHY".
"""

_PLOT_FORMATS = (".png", ".svg", ".pdf")


class CommandError(Exception):
    """A failure the command reports as one line on stderr (no traceback), with an exit code.

    Examples
    --------
    >>> err = CommandError("no input file matches 'x.jsonl'")
    >>> str(err), err.exit_code
    ("no input file matches 'x.jsonl'", 1)
    >>> CommandError("refused", exit_code=3).exit_code
    3
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def progress_enabled(disabled: bool = False, stream: TextIO | None = None) -> bool:
    """Whether to draw progress bars on ``stream`` (default stderr): only on a terminal, and not
    when ``disabled`` (``--no-progress`` / ``--quiet``).

    Examples
    --------
    >>> import io
    >>> progress_enabled(stream=io.StringIO())  # a pipe, a file, a captured stream
    False
    >>> class Terminal(io.StringIO):
    ...     def isatty(self):
    ...         return True
    >>> progress_enabled(stream=Terminal()), progress_enabled(True, stream=Terminal())
    (True, False)
    """
    if disabled:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def progress_bar(stream: TextIO | None = None, **kwargs: Any) -> Any:
    """A ``tqdm`` bar on ``stream`` (default stderr) that fits the terminal, also one that reports
    a size of 0 x 0 (some pseudo-terminals do; tqdm then draws nothing): 80 x 24 is assumed.

    Call it only when :func:`progress_enabled` says so; ``kwargs`` go to ``tqdm``.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> bar = progress_bar(out, total=4, desc="demo", unit=" events")
    >>> bar.update(4); bar.close()
    >>> "demo: 100%" in out.getvalue() and "4/4" in out.getvalue()
    True
    """
    import os

    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    try:
        cols, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):  # not a real terminal (a test's stand-in)
        cols = rows = 0
    if cols > 0 and rows > 0:
        size: dict[str, Any] = {"dynamic_ncols": True}
    else:
        size = {"ncols": cols or 80, "nrows": rows or 24}
    return tqdm(file=stream, **{**size, **kwargs})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamrbf")
    except PackageNotFoundError:  # a source checkout that was not installed
        from streamrbf import __version__

        return __version__


# --------------------------------------------------------------------------------- parsers
class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=100)


def _top_parser() -> argparse.ArgumentParser:
    commands = "\n".join(
        f"  {name:<9}" + text.replace("\n", "\n" + " " * 11) for name, text in COMMANDS.items()
    )
    p = argparse.ArgumentParser(
        prog="streamrbf",
        formatter_class=_Formatter,
        usage="streamrbf [-h] [--version] [COMMAND] [ARGS ...]",
        description="Streaming K-Means as an annealed entmax-1.5 RBF network: the command line.\n\n"
        f"commands:\n{commands}\n\n"
        "With no COMMAND (no arguments, or only flags) streamrbf runs the main job: 'streamrbf'\n"
        "is 'streamrbf run'. 'streamrbf COMMAND --help' explains each command: its inputs, the\n"
        "files it writes, examples and exit codes.",
        epilog="examples:\n"
        "  streamrbf                          # the main job on built-in drifting streams\n"
        "  streamrbf run --input 'events/*.jsonl' --output_dir out\n"
        "  streamrbf bench core --quick       # small sizes -> bench-results/bench.md, .json\n"
        "  streamrbf inspect model.safetensors --plot centres.png\n"
        "  streamrbf inspect model.safetensors --json | jq .temperature\n\n" + EXIT_CODES,
    )
    p.add_argument("--version", action="version", version=f"streamrbf {_version()}",
                   help="print 'streamrbf VERSION' and exit")
    p.add_argument("command", nargs="?", default="run", choices=tuple(COMMANDS), metavar="COMMAND",
                   help="run (default), bench or inspect")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="the command's own flags ('streamrbf COMMAND --help')")
    return p


def _checked(convert: Callable[[str], Any], ok: Callable[[Any], bool], what: str):
    """An argparse ``type``: ``convert`` the text, then refuse values that are not ``ok``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a whole number >= 1")
_fraction = _checked(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
_probability = _checked(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


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

    Examples
    --------
    >>> args, beam_args = run_parser().parse_known_args(["--n_clusters", "4", "--runner", "X"])
    >>> args.n_clusters, args.output_dir, args.progress, beam_args
    (4, './streamrbf-output', True, ['--runner', 'X'])
    """
    p = argparse.ArgumentParser(prog=prog, description=_RUN_DESCRIPTION, epilog=_RUN_EPILOG,
                                formatter_class=_Formatter, allow_abbrev=False)
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
    p.add_argument("--n_clusters", type=_positive_int, default=3, metavar="K",
                   help="clusters per stream (default: %(default)s)")
    p.add_argument("--batch_size", type=_positive_int, default=100, metavar="B",
                   help="events per learning step (default: %(default)s)")
    p.add_argument("--temperature_decay", type=_fraction, default=0.95, metavar="R",
                   help="temperature factor per step, in (0, 1] (default: %(default)s)")
    p.add_argument("--decay", type=_fraction, default=0.9, metavar="A",
                   help="forgetting factor of the cluster masses per step, in (0, 1] "
                   "(default: %(default)s)")
    p.add_argument("--streams", type=_positive_int, default=4, metavar="N",
                   help="generator: number of streams (default: %(default)s)")
    p.add_argument("--events_per_stream", type=_positive_int, default=2000, metavar="N",
                   help="generator: events in each stream (default: %(default)s)")
    p.add_argument("--bad_fraction", type=_probability, default=0.005, metavar="P",
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


_INSPECT_DESCRIPTION = """\
Show what a model file written by RBFKMeans.save holds: its shape and dtype, the temperature
(current, initial, floor, decay per step), steps, feature names, the mass of each cluster as a
bar chart, and the first coordinates of each centre. The file is read with RBFKMeans.load
(safetensors with a JSON header; nothing is unpickled). A missing, foreign or corrupt file is
refused with exit code 3 and a one-line reason.

output: the report on stdout, or with --json one JSON object (keys: file, kind, n_clusters,
n_features, dtype, device, temperature {current, initial, minimum, decay}, n_steps, n_iter,
inertia, feature_names, masses, centers, params). With --plot FILE.png (or .svg, .pdf) also a
small plot of the centres: a 2-D PCA projection when there are more than two features, marker
area by mass, each centre labelled with its cluster id."""

_INSPECT_EPILOG = """\
examples:
  streamrbf inspect model.safetensors
  streamrbf inspect model.safetensors --plot centres.png
  streamrbf inspect model.safetensors --json > model.json
  python -c "from streamrbf import RBFKMeans; import numpy as np; \\
    RBFKMeans(3).fit(np.random.rand(300, 4)).save('m.safetensors')"
  streamrbf inspect m.safetensors --top 10

""" + EXIT_CODES


def _inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamrbf inspect", description=_INSPECT_DESCRIPTION,
                                epilog=_INSPECT_EPILOG, formatter_class=_Formatter)
    p.add_argument("model", metavar="MODEL", help="a file written by RBFKMeans.save")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of the report")
    p.add_argument("--plot", metavar="FILE.png",
                   help="also write a plot of the centres (.png, .svg or .pdf)")
    p.add_argument("--top", type=_positive_int, default=50, metavar="N",
                   help="report: list at most N clusters, the heaviest (default: %(default)s)")
    return p


# --------------------------------------------------------------------------------- inspect
def _model_report(path: str, model: Any) -> dict[str, Any]:
    """Everything ``inspect`` shows, JSON-ready (exact float values, numbers as numbers)."""
    C = model.cluster_centers_
    schedule = model.temperature_schedule_
    names = getattr(model, "feature_names_in_", None)

    def plain(v: Any) -> Any:
        if hasattr(v, "tolist"):
            return v.tolist()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v if isinstance(v, (str, int, float, bool, type(None))) else str(v)

    inertia = getattr(model, "inertia_", None)
    return {
        "file": str(path),
        "kind": "RBFKMeans",
        "n_clusters": int(C.shape[0]),
        "n_features": int(C.shape[1]),
        "dtype": str(C.dtype),
        "device": str(model.device or "cpu"),  # where the model runs (inspect reads on the CPU)
        "temperature": {
            "current": float(model.temperature_),
            "initial": float(schedule.initial),
            "minimum": float(schedule.minimum),
            "decay": float(schedule.decay),
        },
        "n_steps": int(model.n_steps_),
        "n_iter": getattr(model, "n_iter_", None),
        "inertia": plain(None if inertia is None else float(inertia)),
        "feature_names": None if names is None else [str(n) for n in names],
        "masses": [float(m) for m in model.counts_],
        "centers": C.tolist(),
        "params": {k: plain(v) for k, v in model.get_params().items()},
    }


def _bar(fraction: float, width: int, unicode: bool) -> str:
    if not unicode:
        return "#" * round(fraction * width)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    return "\u2588" * full + ("" if part == 0 else chr(0x2590 - part))


def _can_encode(text: str, stream: TextIO) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _print_report(info: dict[str, Any], top: int, out: TextIO) -> None:
    import numpy as np

    k, d = info["n_clusters"], info["n_features"]
    t = info["temperature"]
    masses = np.asarray(info["masses"], dtype=np.float64)
    total = float(masses.sum())
    w = 13
    lines = [
        f"{'model':<{w}}{info['file']} ({info['kind']})",
        f"{'shape':<{w}}{k} clusters x {d} features, {info['dtype']} on {info['device']}",
        f"{'features':<{w}}"
        + (", ".join(info["feature_names"]) if info["feature_names"] else "(unnamed)"),
        f"{'temperature':<{w}}{t['current']:.6g} (initial {t['initial']:.6g}, floor "
        f"{t['minimum']:.6g}, decay {t['decay']:g} per step)",
        f"{'steps':<{w}}{info['n_steps']}"
        + ("" if info["n_iter"] is None else f" (fit iterations: {info['n_iter']})"),
        f"{'mapping':<{w}}{info['params'].get('mapping')}, mass decay "
        f"{info['params'].get('decay')}",
        f"{'mass':<{w}}{total:.6g} in all",
        "",
    ]
    unicode = _can_encode("\u2588\u258c", out)
    width = 28
    peak = float(masses.max()) if k and masses.max() > 0 else 1.0
    shown = np.argsort(-masses, kind="stable")[:top]
    shown = np.sort(shown)
    lines.append(f"{'cluster':>7}  {'mass':>10}  {'share':>6}  {'':<{width}}  centre"
                 + (f" (first 4 of {d})" if d > 4 else ""))
    with np.printoptions(precision=4, suppress=True, linewidth=200):
        C = np.asarray(info["centers"])
        for c in shown:
            share = masses[c] / total if total > 0 else 0.0
            bar = _bar(masses[c] / peak, width, unicode)
            lines.append(f"{c:>7}  {masses[c]:>10.4g}  {share:>6.1%}  {bar:<{width}}  {C[c, :4]}")
    if len(shown) < k:
        lines.append(f"({k - len(shown)} lighter clusters not listed; --top N or --json)")
    print("\n".join(lines), file=out)


def _plot_centres(info: dict[str, Any], path: Path) -> None:
    """A small scatter of the centres: PCA to 2-D when d > 2, area by mass, cluster ids."""
    import numpy as np

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CommandError("--plot needs matplotlib (pip install matplotlib)") from None
    C = np.asarray(info["centers"], dtype=np.float64)
    k, d = C.shape
    names = info["feature_names"] or [f"feature {j}" for j in range(d)]
    if d == 1:
        xy, labels = np.column_stack([C[:, 0], np.zeros(k)]), (names[0], "")
    elif d == 2:
        xy, labels = C, (names[0], names[1])
    else:
        Cc = C - C.mean(axis=0)
        _, s, vt = np.linalg.svd(Cc, full_matrices=False)
        xy = np.zeros((k, 2))
        m = min(2, vt.shape[0])
        xy[:, :m] = Cc @ vt[:m].T
        var = s**2 / (s**2).sum() if (s**2).sum() > 0 else np.zeros_like(s)
        labels = tuple(
            f"PC{i + 1} ({var[i]:.1%} of the centres' variance)" if i < len(var) else f"PC{i + 1}"
            for i in range(2)
        )
    masses = np.asarray(info["masses"], dtype=np.float64)
    peak = masses.max() if k and masses.max() > 0 else 1.0
    sizes = 30 + 570 * masses / peak
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.scatter(xy[:, 0], xy[:, 1], s=sizes, c=np.arange(k), cmap="tab10" if k <= 10 else "viridis",
               alpha=0.7, edgecolors="black", linewidths=0.5)
    for c in range(k):
        ax.annotate(str(c), xy[c], textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel(labels[0], fontsize=8)
    ax.set_ylabel(labels[1], fontsize=8)
    if d == 1:
        ax.set_yticks([])
    else:  # equal scales: distances on the page are distances between centres
        ax.set_aspect("equal", adjustable="datalim")
    ax.tick_params(labelsize=7)
    ax.margins(0.15)
    ax.set_title(f"{Path(info['file']).name}: {k} centres, d={d}, "
                 f"T={info['temperature']['current']:.3g}\nmarker area ~ mass", fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def _inspect(argv: Sequence[str]) -> int:
    parser = _inspect_parser()
    args = parser.parse_args(argv)
    plot = Path(args.plot) if args.plot else None
    if plot is not None and plot.suffix.lower() not in _PLOT_FORMATS:
        parser.error(f"--plot: {str(plot)!r} should end in {', '.join(_PLOT_FORMATS)}")
    from streamrbf import RBFKMeans

    try:
        model = RBFKMeans.load(args.model, device="cpu")  # a CUDA model, on any machine
    except (ValueError, OSError, RuntimeError) as err:
        why = " ".join(str(err).split())
        if args.model not in why:
            why = f"{args.model!r}: {why}"
        raise CommandError(f"model file refused: {why}", exit_code=3) from None
    info = _model_report(args.model, model)
    if args.json:
        import json

        print(json.dumps(info, indent=2))
    else:
        _print_report(info, args.top, sys.stdout)
    if plot is not None:
        _plot_centres(info, plot)
        if not args.json:
            print(f"\nwrote {plot}")
    return 0


# ------------------------------------------------------------------------------------ run
def _run(argv: Sequence[str]) -> int:
    # Parse here first: --help and bad flags answer at once, before Beam is imported (seconds).
    run_parser().parse_known_args(argv)
    from pipelines.cluster_events import main as run

    return run(argv)


def _bench(argv: Sequence[str]) -> int:
    from streamrbf.bench.__main__ import main as bench

    return bench(list(argv))


def _dispatch(argv: list[str]) -> tuple[str, int]:
    if argv and argv[0] in COMMANDS:
        command, rest = argv[0], argv[1:]
    elif not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        command, rest = "run", argv
    else:
        _top_parser().parse_args(argv[:1])  # help, version, or argparse's "invalid choice" (2)
        return "", 0
    run = {"run": _run, "bench": _bench, "inspect": _inspect}[command]
    return command, run(rest)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamrbf`` console script: returns the exit code, never raises.

    ``argv`` defaults to ``sys.argv[1:]``. See the module docstring for the exit codes.

    Examples
    --------
    >>> main(["--version"])  # doctest: +ELLIPSIS
    streamrbf ...
    0
    >>> main(["inspect", "no-such-model.safetensors"])  # stderr: one line naming the file
    3
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else "run"
    prog = f"streamrbf {command}"
    try:
        return _dispatch(argv)[1]
    except SystemExit as stop:  # argparse: --help / --version (0) or a usage error (2)
        code = stop.code
        if code is None or isinstance(code, int):
            return code or 0
        print(f"{prog}: error: {code}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (| head): stop quietly, as a SIGPIPE would
        _silence_stdout()
        return 141
    except CommandError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a file that cannot be read or written: one line is enough
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except Exception as err:
        traceback.print_exc()
        print(f"{prog}: error: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
    except (OSError, ValueError, AttributeError):
        pass


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    raise SystemExit(main())
