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
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .console import EXIT_CODES, CommandError, Formatter, positive_int, run_command, version

__all__ = ["main"]

COMMANDS = {
    "run": "cluster keyed event streams with Apache Beam, one annealed model per stream; writes\n"
    "assignments, dead letters, snapshots, summary.md/json and clusters.png (the default)",
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
                   help="run (default), bench or inspect")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="the command's own flags ('streamrbf COMMAND --help')")
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
            "decay": model.get_params()["temperature_decay"],
        },
        "n_steps": int(model.n_steps_),
        "n_iter": getattr(model, "n_iter_", None),
        "inertia": plain(None if inertia is None else float(inertia)),
        "feature_names": None if names is None else [str(n) for n in names],
        "masses": [float(m) for m in model.counts_],
        "centers": C.tolist(),
        "params": {k: plain(v) for k, v in model.get_params().items()
                   if not (isinstance(v, str) and v == "deprecated")},
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
        f"{t['minimum']:.6g}, decay "
        + ("auto: 0.9 per fit iteration, per 100 events of a stream)" if t["decay"] == "auto"
           else f"{float(t['decay']):g} per step)"),
        f"{'steps':<{w}}{info['n_steps']}"
        + ("" if info["n_iter"] is None else f" (fit iterations: {info['n_iter']})"),
        f"{'mapping':<{w}}{info['params'].get('mapping')}, half-life of the masses "
        f"{info['params'].get('half_life', 'auto')}",
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
    from .jobs.run_flags import run_parser

    run_parser().parse_known_args(argv)
    from .jobs.cluster_events import main as run

    return run(argv)


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
    run = {"run": _run, "bench": _bench, "inspect": _inspect}[command]
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
