"""``streamrbf bench [core|river|beam|quality|bank|all] [--quick] [--seeds N] [--out DIR]``
(``python -m streamrbf.bench``).

Runs the chosen benchmark suites in this one process and writes ``DIR/bench.md`` and
``DIR/bench.json`` with the machine and library versions they ran on. ``core`` is the default;
``quality`` (the battery against the goals of issue 12, not part of ``all``) also draws
``DIR/quality.png``; ``bank`` (not part of ``all``) times one bank step of many models on
numpy, on torch CPU tensors and on CUDA when present (issue 13's device check).
A progress bar on stderr (only when stderr is a terminal; not with ``--no-progress`` or
``--quiet``) shows the suite running and the time spent. A suite that fails (a missing optional
dependency, an error) is reported on stderr and recorded in the files as ``{"error": ...}``; the
other suites still run, and the exit code is then 1. Exit codes: 0 success, 1 a suite failed or
the files could not be written, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SUITES = ("core", "river", "beam")
# Suites run only when named (not by "all"): the quality battery takes minutes of its own; the
# bank suite is the device check (10^5 models, 2^20 rows; CUDA when present).
NAMED_SUITES = ("quality", "bank")


def machine() -> dict[str, Any]:
    """Where the figures come from: CPU, cores, Python and library versions."""
    from importlib.metadata import PackageNotFoundError, version

    libs = {}
    for name in ("streamrbf", "numpy", "torch", "numba", "scikit-learn", "river", "apache-beam"):
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            libs[name] = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": libs,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


_DESCRIPTION = """\
Benchmark streamrbf against its peers, in this one process, with interleaved rounds on one
thread, and record the machine and library versions the figures come from.

suites:
  core    RBFKMeans.partial_fit events/s against scikit-learn's MiniBatchKMeans, and inertia
          against KMeans(n_init=10) after fit and after streaming passes (+ GPU speed if any)
  river   the River adapter against river's KMeans: events/s, memory per stream, prequential
          quality (ARI, recovery after a jump) also against STREAMKMeans and MiniBatchKMeans
  beam    ClusterPerKey against Beam's OnlineClustering example and bare batching jobs, on
          the in-process FnApiRunner (needs apache-beam)
  quality the battery (scikit-learn's, River's and synthetic sets): inertia against
          KMeans(n_init=10) after fit and streaming, fit time, River prequential ARI against
          river's KMeans and STREAMKMeans, each set against the goals; draws DIR/quality.png
  bank    one step of 10^5 models of (16, 4) on a batch of 2^20 rows: compiled numpy, torch on
          the CPU and, with a GPU, torch on CUDA (goal 3e8 events/s) and ClusterManyKeys with
          device="cuda" against the CPU
  all     core, river and beam, in that order (not quality, not bank)
core and river need scikit-learn and river: pip install 'streamrbf[bench]'.

output: each suite's Markdown tables on stdout as it finishes, then the files
  DIR/bench.md     the tables, headed by the machine, versions, date and mode
  DIR/bench.json   the same figures, machine-readable ({"machine", "quick", SUITE: ...})
stderr: a progress bar (suite, elapsed time) when stderr is a terminal. The full suites take
minutes each; --quick uses small sizes."""

_EPILOG = """\
examples:
  streamrbf bench                      # the core suite, full sizes -> bench-results/
  streamrbf bench core --quick
  streamrbf bench all --quick --out /tmp/bench --no-progress
  python -m streamrbf.bench river      # = streamrbf bench river
  streamrbf bench quality --seeds 5 --out /tmp/quality

exit codes:
  0    success: every suite ran and both files are written
  1    a suite failed (its error is in the files; the other suites ran), or --out is not writable
  2    bad usage: unknown suite or flag (argparse's message)
  130  interrupted (Ctrl-C)
errors are one line on stderr: "streamrbf bench: error: WHY".
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrbf bench", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(
            prog, max_help_position=30, width=100))
    parser.add_argument("suite", nargs="?", default="core",
                        choices=(*SUITES, *NAMED_SUITES, "all"), metavar="SUITE",
                        help="core (default), river, beam, quality, bank or all")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: fewer rounds, shorter streams")
    parser.add_argument("--seeds", type=_positive, default=None, metavar="N",
                        help="seeds per data set, for the suites that take it (quality: "
                        "default 10, quick 2)")
    parser.add_argument("--out", default="bench-results", metavar="DIR",
                        help="folder for bench.md and bench.json (default: %(default)s)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar (there is none anyway when stderr is not a terminal)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar, no tables on stdout; only the files")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


class _SuiteBar:
    """A bar over the suites on stderr whose clock keeps ticking while a suite runs, and which
    keeps the suites' own printing (stdout) above it."""

    def __init__(self, suites: Sequence[str]) -> None:
        from tqdm.contrib import DummyTqdmFile

        from ..console import progress_bar

        self.bar = progress_bar(total=len(suites), desc="bench", unit=" suite",
                                bar_format="{desc} {n_fmt}/{total_fmt} suites |{bar:12}| "
                                "{elapsed}{postfix}")
        self._stdout = contextlib.redirect_stdout(DummyTqdmFile(sys.stdout))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="streamrbf-bench-clock",
                                        daemon=True)

    def __enter__(self) -> _SuiteBar:
        self._stdout.__enter__()
        self._thread.start()
        return self

    def write_error(self, text: str) -> None:
        """``text`` on stderr above the bar."""
        self.bar.write(text, file=sys.stderr)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.bar.refresh()

    def start(self, suite: str) -> None:
        self.bar.set_description_str(f"bench: {suite}", refresh=True)

    def done(self, suite: str, seconds: float, ok: bool) -> None:
        self.bar.set_postfix_str(f"{suite} {'took' if ok else 'failed after'} {seconds:.0f} s",
                                 refresh=False)
        self.bar.update(1)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.bar.set_description_str("bench", refresh=False)
        self.bar.close()
        self._stdout.__exit__(*exc)


def main(argv: list[str] | None = None) -> int:
    """Run the suites named in ``argv`` (the flags of ``streamrbf bench``); returns the exit code.

    Examples
    --------
    >>> main(["all", "--quick", "--out", "/tmp/bench", "--no-progress"])  # doctest: +SKIP
    0
    """
    args = _parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # fail now, not after the suites ran for minutes
    for name in ("bench.md", "bench.json"):
        if (out / name).exists() and not os.access(out / name, os.W_OK):
            raise PermissionError(f"cannot write {out / name}")
    suites = SUITES if args.suite == "all" else (args.suite,)
    show = _progress_enabled(args.quiet or not args.progress)
    quiet = contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext()
    info = machine()
    results: dict[str, Any] = {"machine": info, "quick": args.quick}
    sections = []
    failed = []
    with quiet:
        print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
        print("libraries: " + ", ".join(f"{k} {v}" for k, v in info["libraries"].items() if v))
        with _SuiteBar(suites) if show else contextlib.nullcontext() as bar:
            for suite in suites:
                if bar is not None:
                    bar.start(suite)
                print(f"\n## {suite}\n", flush=True)
                t0 = time.perf_counter()
                try:
                    module = importlib.import_module(f"streamrbf.bench.{suite}")
                    results[suite] = module.run(quick=args.quick,
                                                **_options(module.run, args, out))
                except Exception as err:  # a suite's failure does not stop the others
                    why = f"{type(err).__name__}: {' '.join(str(err).split())}"
                    # a missing optional dependency needs one line; anything else, its traceback
                    text = "" if isinstance(err, ImportError) else traceback.format_exc()
                    text += f"streamrbf bench: error: suite {suite} failed: {why}"
                    if bar is not None:
                        bar.write_error(text)
                    else:
                        print(text, file=sys.stderr)
                    results[suite] = {"error": why}
                    sections.append(f"## {suite}\n\nFailed: `{why}`")
                    failed.append(suite)
                else:
                    sections.append(f"## {suite}\n\n" + _markdown_of(module, results[suite]))
                if bar is not None:
                    bar.done(suite, time.perf_counter() - t0, suite not in failed)
    header = (
        f"# streamrbf benchmarks\n\nMachine: {info['cpu']}, {info['cores']} cores, "
        f"Python {info['python']}; "
        + ", ".join(f"{k} {v}" for k, v in info["libraries"].items() if v)
        + f"; {info['date']}; {'quick' if args.quick else 'full'} mode.\n\n"
    )
    (out / "bench.md").write_text(header + "\n\n".join(sections) + "\n")
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str))
    if not args.quiet:
        print(f"\nwrote {out / 'bench.md'} and {out / 'bench.json'}")
    return 1 if failed else 0


def _options(run: Any, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The options beyond ``quick`` that a suite's ``run`` takes: ``seeds`` and ``out``."""
    import inspect

    taken = inspect.signature(run).parameters
    options: dict[str, Any] = {"seeds": args.seeds, "out": out}
    return {name: value for name, value in options.items() if name in taken}


def _progress_enabled(disabled: bool) -> bool:
    from ..console import progress_enabled

    return progress_enabled(disabled)


def _markdown_of(module: Any, result: Any) -> str:
    render = getattr(module, "markdown", None)
    if render is not None:
        try:
            return render(result)
        except (TypeError, KeyError):
            pass
    return "```json\n" + json.dumps(result, indent=2, default=str) + "\n```"


if __name__ == "__main__":
    from ..console import run_command

    raise SystemExit(run_command("streamrbf bench", main, sys.argv[1:]))
