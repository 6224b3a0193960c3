"""The ``streamrbf`` command line: ``run`` (the main job), ``bench`` and ``inspect``.

``streamrbf`` with no arguments, or with only flags (``streamrbf --output_dir out``), runs the main
job, exactly as ``streamrbf run`` does. ``streamrbf COMMAND --help`` explains each command: what
it does, its inputs, the files it writes, examples and exit codes. ``python -m
streamrbf.jobs.cluster_events`` (``python -m pipelines.cluster_events`` from a clone) and ``python
-m streamrbf.bench`` are the same as ``streamrbf run`` and ``streamrbf bench``.

Exit codes and error lines are the same for every command (:mod:`streamrbf.console`).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .console import EXIT_CODES, CommandError, Formatter, positive_int, run_command, version

__all__ = ["main"]

COMMANDS = {
    "run": "cluster keyed event streams with Apache Beam, one annealed model per stream; writes\n"
    "assignments, dead letters, snapshots, a summary (.md, .json), clusters.png and each\n"
    "stream's model file (the default)",
    "replay": "run the main job again on the (fixed) events of a dead_letters.jsonl file",
    "bench": "benchmarks against river, scikit-learn and Beam; writes bench.md and bench.json",
    "inspect": "show what a saved RBFKMeans model holds: shape, temperature, masses;\n"
    "--json for scripts, --plot FILE.png for a picture of the centres",
}

_PLOT_FORMATS = (".png", ".svg", ".pdf")


# --------------------------------------------------------------------------------- parsers
def _top_parser() -> argparse.ArgumentParser:
    commands = "\n".join(
        f"  {name:<9}" + text.replace("\n", "\n" + " " * 11) for name, text in COMMANDS.items()
    )
    p = argparse.ArgumentParser(
        prog="streamrbf",
        formatter_class=Formatter,
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
    p.add_argument("--version", action="version", version=f"streamrbf {version()}",
                   help="print 'streamrbf VERSION' and exit")
    p.add_argument("command", nargs="?", default="run", choices=tuple(COMMANDS), metavar="COMMAND",
                   help="run (default), replay, bench or inspect")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="the command's own flags ('streamrbf COMMAND --help')")
    return p


_INSPECT_DESCRIPTION = """\
Show what a model file written by RBFKMeans.save holds: its shape and dtype, the temperature
(current, initial, floor, decay per step), steps, feature names, the mass of each cluster as a
bar chart, the first coordinates of each centre, and the size of a stream's sample when the
file holds one. The file is read with RBFKMeans.load
(safetensors with a JSON header; nothing is unpickled). A missing, foreign or corrupt file, or
one that cannot be read at all (too large for the memory left, say), is refused with exit code 3
and a one-line reason. Text from the file is printed with control characters escaped (\\x1b).

output: the report on stdout, or with --json one JSON object (keys: file, kind, n_clusters,
n_features, dtype, device, temperature {current, initial, minimum, decay}, n_steps, n_iter,
inertia, feature_names, masses, centers, params, sample {rows, seen, half_life} or null). With
--plot FILE.png (or .svg, .pdf) also a small plot of the centres: a 2-D PCA projection when there
are more than two features, marker area by mass, each centre labelled with its cluster id."""

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
                                epilog=_INSPECT_EPILOG, formatter_class=Formatter)
    p.add_argument("model", metavar="MODEL", help="a file written by RBFKMeans.save")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of the report")
    p.add_argument("--plot", metavar="FILE.png",
                   help="also write a plot of the centres (.png, .svg or .pdf)")
    p.add_argument("--top", type=positive_int, default=50, metavar="N",
                   help="report: list at most N clusters, the heaviest (default: %(default)s)")
    return p


# --------------------------------------------------------------------------------- inspect
def _printable(text: object, backslash: bool = True) -> str:
    """``text`` safe to print on a terminal: what ``repr`` escapes, escaped the same way.

    Model files are data from anywhere: a feature name holding ESC, CR or BEL could clear the
    screen or forge a line of the report, one holding U+202E (right-to-left override) or U+2028
    (line separator) could reorder or split it. Every character ``str.isprintable`` refuses (C0
    and C1 controls, DEL, format characters such as bidi overrides, line and paragraph
    separators, spaces other than ' ', surrogates, unassigned code points) is written as its
    escape, as is the backslash (so an escape in the output always stands for one character);
    other text, accents and all, is kept as it is.

    Parameters
    ----------
    text
        What to print (``str(text)`` for anything but a string).
    backslash
        Whether to escape the backslash too: False for text whose escapes are already there
        (an error message quoting a name with ``repr``) or paths the user typed.

    Returns
    -------
    str
        The text with those characters escaped.

    Examples
    --------
    >>> print(_printable("température"), _printable("a\\x1b[2J"), _printable("x\\u202ey\\r"))
    température a\\x1b[2J x\\u202ey\\r
    """
    text = text if isinstance(text, str) else str(text)
    if text.isprintable() and not (backslash and "\\" in text):
        return text
    return "".join(
        ch if ch.isprintable() and (ch != "\\" or not backslash)
        else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def _finite(value: Any) -> float | None:
    """``value`` as a finite float; None for anything else (a string, NaN, 10**400, ...)."""
    if isinstance(value, (str, bytes, bool)) or type(value).__name__ == "bool_":
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        return None
    return number if math.isfinite(number) else None


def _plain(value: Any) -> Any:
    """``value`` as JSON holds it: lists for arrays, None for numbers no JSON reader takes (NaN,
    infinities, integers beyond 64 bits), ``str`` for other objects."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**63) <= value < 2**64 else None
    return value if isinstance(value, (str, bool, type(None))) else str(value)


def _model_report(path: str, model: Any) -> dict[str, Any]:
    """Everything ``inspect`` shows, JSON-ready but for the centres, a numpy array (exact float
    values, numbers as numbers).

    Values the file holds that are not what they should be (an inertia of ``10**400`` or
    ``"x"``, say) are None, never an error.
    """
    C = model.cluster_centers_
    schedule = model.temperature_schedule_
    names = getattr(model, "feature_names_in_", None)
    decay = model.get_params()["temperature_decay"]
    n_iter = _plain(getattr(model, "n_iter_", None))
    sample = getattr(model, "_sample", None)  # a stream's, when saved with it
    return {
        "file": str(path),
        "kind": "RBFKMeans",
        "n_clusters": int(C.shape[0]),
        "n_features": int(C.shape[1]),
        "dtype": str(C.dtype),
        "device": str(model.device or "cpu"),  # where the model runs (inspect reads on the CPU)
        "temperature": {
            "current": _finite(model.temperature_),
            "initial": _finite(schedule.initial),
            "minimum": _finite(schedule.minimum),
            "decay": decay if isinstance(decay, str) else _finite(decay),
        },
        "n_steps": _plain(model.n_steps_),
        "n_iter": n_iter if isinstance(n_iter, int) and not isinstance(n_iter, bool) else None,
        "inertia": _finite(getattr(model, "inertia_", None)),
        "feature_names": None if names is None else [str(n) for n in names],
        "masses": [float(m) for m in model.counts_],
        "centers": C,  # (a list for --json only: the text report shows 4 values a centre)
        "params": {k: _plain(v) for k, v in model.get_params().items()
                   if not (isinstance(v, str) and v == "deprecated")},
        "sample": None if sample is None else {
            "rows": len(sample.rows), "seen": sample.seen, "half_life": sample.half_life},
    }


def _number(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or ``?`` when it is not a finite number."""
    number = _finite(value)
    return "?" if number is None else format(number, spec)


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
    """The report: every text that comes from the file goes through :func:`_printable`."""
    import numpy as np

    k, d = info["n_clusters"], info["n_features"]
    t, params, names = info["temperature"], info["params"], info["feature_names"]
    masses = np.asarray(info["masses"], dtype=np.float64)
    peak = float(masses.max()) if k else 0.0
    weights = masses / peak if peak > 0 else np.zeros_like(masses)  # in [0, 1]: no overflow
    shares = weights / weights.sum() if peak > 0 else weights
    with np.errstate(over="ignore"):  # masses near 1e308 add up to more than a float holds
        total = float(masses.sum())
    w = 13
    lines = [
        f"{'model':<{w}}{_printable(info['file'], backslash=False)} ({info['kind']})",
        f"{'shape':<{w}}{k} clusters x {d} features, {info['dtype']} on "
        f"{_printable(info['device'])}",
        f"{'features':<{w}}" + (", ".join(map(_printable, names)) if names else "(unnamed)"),
        f"{'temperature':<{w}}{_number(t['current'], '.6g')} (initial "
        f"{_number(t['initial'], '.6g')}, floor {_number(t['minimum'], '.6g')}, decay "
        + ("auto: 0.9 per fit iteration, per 100 events of a stream)" if t["decay"] == "auto"
           else f"{_number(t['decay'], 'g')} per step)"),
        f"{'steps':<{w}}{_printable(info['n_steps'])}"
        + ("" if info["n_iter"] is None else f" (fit iterations: {info['n_iter']})"),
        f"{'mapping':<{w}}{_printable(params.get('mapping'))}, half-life of the masses "
        f"{_printable(params.get('half_life', 'auto'))}",
        f"{'mass':<{w}}{total:.6g} in all",
    ]
    if info.get("sample"):
        s = info["sample"]
        lines.append(f"{'sample':<{w}}{s['rows']} rows of the {s['seen']} events seen (for the "
                     "stream's split and merge moves)")
    lines.append("")
    unicode = _can_encode("\u2588\u258c", out)
    width = 28
    shown = np.sort(np.argsort(-masses, kind="stable")[:top])
    lines.append(f"{'cluster':>7}  {'mass':>10}  {'share':>6}  {'':<{width}}  centre"
                 + (f" (first 4 of {d})" if d > 4 else ""))
    with np.printoptions(precision=4, suppress=True, linewidth=200):
        C = np.asarray(info["centers"])
        for c in shown:
            bar = _bar(float(weights[c]), width, unicode)
            lines.append(f"{c:>7}  {masses[c]:>10.4g}  {shares[c]:>6.1%}  {bar:<{width}}  "
                         f"{C[c, :4]}")
    if len(shown) < k:
        lines.append(f"({k - len(shown)} lighter clusters not listed; --top N or --json)")
    print("\n".join(lines), file=out)


# |coordinates| a plot shows in their own units: matplotlib cannot tell centres below about
# 1e-287 apart, nor leave margins around ones near 1e308; those get a power of ten as unit
_PLOT_EXPONENT = 900


def _plot_coordinates(info: dict[str, Any]) -> tuple[Any, tuple[str, str]]:
    """Where ``--plot`` draws the centres, and its axis labels: the features themselves when
    there are one or two, else the first two principal components of the centres.

    The centres are first scaled by a power of two (exact) that brings the largest magnitude
    below 1, so their mean, their differences and the SVD stay far from overflow: an SVD of
    centres near 1e308 fails (``SVD did not converge``) or never returns. Coordinates beyond
    ``2**±900`` are drawn in units of a power of ten, which the axis labels name.

    Parameters
    ----------
    info
        What :func:`_model_report` returns.

    Returns
    -------
    tuple
        The ``(k, 2)`` coordinates and the two axis labels.

    Raises
    ------
    CommandError
        Exit code 3, when the centres or their projection are not finite numbers.

    Examples
    --------
    >>> info = {"centers": [[1.7e308, 1.7e308, 1.7e308], [1.7e308, 1.7e308, -1.7e308],
    ...                     [-1.7e308, 1.0, 0.0]], "feature_names": None, "file": "m"}
    >>> xy, labels = _plot_coordinates(info)  # in units of 1e308, which the labels name
    >>> xy.shape, bool(abs(xy).max() < 10), labels[0]  # doctest: +ELLIPSIS
    ((3, 2), True, "PC1 (...% of the centres' variance), x 1e+308")
    """
    import numpy as np

    C = np.asarray(info["centers"], dtype=np.float64)
    k, d = C.shape
    names = [_printable(n) for n in info["feature_names"] or [f"feature {j}" for j in range(d)]]
    if not np.isfinite(C).all():
        raise CommandError(f"cannot plot the centres of {info['file']!r}: they are not all "
                           "finite", exit_code=3)
    exponent = int(np.frexp(np.abs(C).max())[1]) if C.size else 0  # max |C| < 2**exponent
    S = np.ldexp(C, -exponent)  # |S| < 1: exact, a power of two
    if d == 1:
        xy, labels = np.column_stack([S[:, 0], np.zeros(k)]), (names[0], "")
    elif d == 2:
        xy, labels = S, (names[0], names[1])
    else:
        S = S - S.mean(axis=0)  # |S| < 2
        try:
            _, s, vt = np.linalg.svd(S, full_matrices=False)
        except np.linalg.LinAlgError as err:
            raise CommandError(f"cannot plot the centres of {info['file']!r}: {err}",
                               exit_code=3) from None
        xy = np.zeros((k, 2))
        m = min(2, vt.shape[0])
        xy[:, :m] = S @ vt[:m].T
        var = s**2 / (s**2).sum() if (s**2).sum() > 0 else np.zeros_like(s)
        labels = tuple(
            f"PC{i + 1} ({var[i]:.1%} of the centres' variance)" if i < len(var) else f"PC{i + 1}"
            for i in range(2)
        )
    if not np.isfinite(xy).all():
        raise CommandError(f"cannot plot the centres of {info['file']!r}: their projection is "
                           "not finite", exit_code=3)
    if abs(exponent) <= _PLOT_EXPONENT:
        return np.ldexp(xy, exponent), labels
    power = math.floor(exponent * math.log10(2))  # 2**exponent = 10**power * factor
    factor = 10 ** (exponent * math.log10(2) - power)
    unit = f"x 1e{power:+d}"
    return xy * factor, tuple(f"{label}, {unit}" if label else "" for label in labels)


def _plot_centres(info: dict[str, Any], xy: Any, labels: tuple[str, str], path: Path) -> None:
    """A small scatter of the centres at ``xy`` (:func:`_plot_coordinates`): area by mass,
    cluster ids. Text is drawn as it is (no mathtext: a ``$`` in a name is a dollar sign)."""
    import numpy as np

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CommandError("--plot needs matplotlib (pip install matplotlib)") from None
    k, d = info["n_clusters"], info["n_features"]
    masses = np.asarray(info["masses"], dtype=np.float64)
    peak = masses.max() if k and masses.max() > 0 else 1.0
    sizes = 30 + 570 * masses / peak
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.scatter(xy[:, 0], xy[:, 1], s=sizes, c=np.arange(k), cmap="tab10" if k <= 10 else "viridis",
               alpha=0.7, edgecolors="black", linewidths=0.5)
    for c in range(k):
        ax.annotate(str(c), xy[c], textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel(_shorten(labels[0]), fontsize=8, parse_math=False)
    ax.set_ylabel(_shorten(labels[1]), fontsize=8, parse_math=False)
    if d == 1:
        ax.set_yticks([])
    else:  # equal scales: distances on the page are distances between centres
        ax.set_aspect("equal", adjustable="datalim")
    ax.tick_params(labelsize=7)
    ax.margins(0.15)
    name = _shorten(_printable(Path(info["file"]).name, backslash=False))
    ax.set_title(f"{name}: {k} centres, d={d}, "
                 f"T={_number(info['temperature']['current'], '.3g')}\nmarker area ~ mass",
                 fontsize=9, parse_math=False)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(err: BaseException, limit: int = 300) -> str:
    """An exception as one line of printable text, at most ``limit`` characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return _printable(text, backslash=False)


def _load(path: str) -> Any:
    """``RBFKMeans.load(path)`` on the CPU; whatever loading raises becomes a one-line refusal.

    That is every exception but ``KeyboardInterrupt`` and ``SystemExit``: the library's refusals
    (``ValueError``, ``OSError``), and also ``MemoryError`` and what a native reader raises
    (pyo3's ``PanicException``, a ``BaseException``, comes out of safetensors when memory runs
    out).

    Parameters
    ----------
    path
        The model file, as the user named it.

    Returns
    -------
    RBFKMeans
        The model, on the CPU.

    Raises
    ------
    CommandError
        Exit code 3: ``model file refused: WHY``, naming the file.
    """
    from streamrbf import RBFKMeans

    try:
        return RBFKMeans.load(path, device="cpu")  # a CUDA model, on any machine
    except (KeyboardInterrupt, SystemExit):
        raise
    except (ValueError, OSError, RuntimeError) as err:
        why = " ".join(str(err).split())
        why = _printable(why if path in why else f"{path!r}: {why}", backslash=False)
        raise CommandError(f"model file refused: {why}", exit_code=3) from None
    except MemoryError:
        raise CommandError(f"model file refused: cannot read {path!r}: not enough memory to "
                           "load it", exit_code=3) from None
    except BaseException as err:  # the rest, pyo3's PanicException included
        raise CommandError(f"model file refused: cannot read {path!r}: "
                           f"{type(err).__name__}: {_reason(err)}", exit_code=3) from None


def _inspect(argv: Sequence[str]) -> int:
    parser = _inspect_parser()
    args = parser.parse_args(argv)
    plot = Path(args.plot) if args.plot else None
    if plot is not None and plot.suffix.lower() not in _PLOT_FORMATS:
        parser.error(f"--plot: {str(plot)!r} should end in {', '.join(_PLOT_FORMATS)}")
    model = _load(args.model)
    try:
        try:
            info = _model_report(args.model, model)
            drawing = None if plot is None else _plot_coordinates(info)  # before printing
        except (AttributeError, TypeError, ValueError, OverflowError, IndexError) as err:
            raise CommandError(f"model file refused: {args.model!r} cannot be described: "
                               f"{type(err).__name__}: {_reason(err)}", exit_code=3) from None
        if args.json:
            import json

            # (ensure_ascii: control characters escaped)
            print(json.dumps({**info, "centers": info["centers"].tolist()}, indent=2))
        else:
            _print_report(info, args.top, sys.stdout)
    except MemoryError:
        raise CommandError(f"model file refused: {args.model!r} is too large to describe with "
                           "the memory available", exit_code=3) from None
    if plot is not None and drawing is not None:
        _plot_centres(info, *drawing, plot)
        if not args.json:
            print(f"\nwrote {_printable(plot, backslash=False)}")
    return 0


# ------------------------------------------------------------------------------------ run
_BEAM_IMPORT_NOISE = "apitools not found"


class _DropBeamImportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_BEAM_IMPORT_NOISE)


def _import_beam_quietly() -> None:
    """Import Apache Beam without the warning it logs on import where its GCP extras are not
    installed ("apitools not found, and bigquery client libraries are not available ...":
    about BigQuery, which the job never uses); every other message goes through."""
    noise = _DropBeamImportNoise()
    root = logging.getLogger()
    root.addFilter(noise)
    try:
        import apache_beam  # noqa: F401
    finally:
        root.removeFilter(noise)


def _run(argv: Sequence[str]) -> int:
    # Parse here first: --help and bad flags answer at once, before Beam is imported (seconds).
    from .jobs.run_flags import run_parser

    run_parser().parse_known_args(argv)
    _import_beam_quietly()
    from .jobs.cluster_events import main as run

    return run(argv)


def _replay(argv: Sequence[str]) -> int:
    from .jobs.run_flags import run_parser

    run_parser(prog="streamrbf replay", replay=True).parse_known_args(argv)
    _import_beam_quietly()
    from .jobs.cluster_events import replay

    return replay(argv)


def _bench(argv: Sequence[str]) -> int:
    from .bench.__main__ import main as bench

    return bench(list(argv))


def _dispatch(argv: list[str]) -> tuple[str, int]:
    if argv and argv[0] in COMMANDS:
        command, rest = argv[0], argv[1:]
    elif not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        command, rest = "run", argv
    else:
        _top_parser().parse_args(argv[:1])  # help, version, or argparse's "invalid choice" (2)
        return "", 0
    run = {"run": _run, "replay": _replay, "bench": _bench, "inspect": _inspect}[command]
    return command, run(rest)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamrbf`` console script: returns the exit code, never raises.

    Parameters
    ----------
    argv
        The command and its flags; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit code (:mod:`streamrbf.console` lists them).

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
    return run_command(f"streamrbf {command}", lambda a: _dispatch(a)[1], argv)


if __name__ == "__main__":
    raise SystemExit(main())
