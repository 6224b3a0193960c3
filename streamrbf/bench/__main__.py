"""``python -m streamrbf.bench [core|river|beam|all] [--quick] [--out DIR]``.

Runs the chosen benchmarks in this one process and writes ``DIR/bench.md`` and ``DIR/bench.json``
with the machine and library versions they ran on. ``core`` is the default.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

SUITES = ("core", "river", "beam")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamrbf bench", description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", default="core", choices=(*SUITES, "all"))
    parser.add_argument("--quick", action="store_true", help="small sizes: a minute or less")
    parser.add_argument("--out", default="bench-results", help="folder for bench.md and bench.json")
    args = parser.parse_args(argv)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    print("libraries: " + ", ".join(f"{k} {v}" for k, v in info["libraries"].items() if v))
    suites = SUITES if args.suite == "all" else (args.suite,)
    results: dict[str, Any] = {"machine": info, "quick": args.quick}
    sections = []
    for suite in suites:
        print(f"\n## {suite}\n", flush=True)
        module = importlib.import_module(f"streamrbf.bench.{suite}")
        results[suite] = module.run(quick=args.quick)
        sections.append(f"## {suite}\n\n" + _markdown_of(module, results[suite]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (
        f"# streamrbf benchmarks\n\nMachine: {info['cpu']}, {info['cores']} cores, "
        f"Python {info['python']}; "
        + ", ".join(f"{k} {v}" for k, v in info["libraries"].items() if v)
        + f"; {info['date']}; {'quick' if args.quick else 'full'} mode.\n\n"
    )
    (out / "bench.md").write_text(header + "\n\n".join(sections) + "\n")
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {out / 'bench.md'} and {out / 'bench.json'}")
    return 0


def _markdown_of(module: Any, result: Any) -> str:
    render = getattr(module, "markdown", None)
    if render is not None:
        try:
            return render(result)
        except (TypeError, KeyError):
            pass
    return "```json\n" + json.dumps(result, indent=2, default=str) + "\n```"


if __name__ == "__main__":
    raise SystemExit(main())
