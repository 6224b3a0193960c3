"""The ``streamrbf`` command: the pipeline main job, the benchmarks, and model inspection.

``streamrbf`` alone runs the main job on its built-in data (``streamrbf run --help`` for its flags).
Exit codes: 0 success, 1 the work failed, 2 bad usage (argparse), 3 a model file was refused.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]

_COMMANDS = {
    "run": "cluster keyed event streams with Apache Beam (the main job; the default)",
    "bench": "benchmarks against river, scikit-learn and Beam (python -m streamrbf.bench)",
    "inspect": "print what a saved RBFKMeans model holds",
}


def _inspect(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="streamrbf inspect", description="Print the shape, temperature and masses of a model."
    )
    parser.add_argument("model", help="a file written by RBFKMeans.save")
    args = parser.parse_args(argv)
    import numpy as np

    from streamrbf import RBFKMeans

    try:
        model = RBFKMeans.load(args.model)
    except (ValueError, FileNotFoundError) as err:
        print(f"streamrbf inspect: {err}", file=sys.stderr)
        return 3
    C = model.cluster_centers_
    counts = model.counts_
    print(f"model: {args.model}")
    print(f"clusters: {C.shape[0]}  features: {C.shape[1]}  dtype: {C.dtype}")
    print(f"temperature: {model.temperature_:.6g}  steps: {model.n_steps_}")
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        print("features: " + ", ".join(map(str, names)))
    print("cluster  mass        centre (first 4 coordinates)")
    with np.printoptions(precision=4, suppress=True):
        for k in np.argsort(-counts):
            print(f"{k:>7}  {counts[k]:<10.4g}  {C[k, :4]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamrbf`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print("usage: streamrbf [run|bench|inspect] [options]\n")
        print(__doc__.strip().splitlines()[0] + "\n")
        for name, text in _COMMANDS.items():
            print(f"  {name:<8} {text}")
        print("\n'streamrbf COMMAND --help' explains each command.")
        return 0
    command = argv.pop(0) if argv and argv[0] in _COMMANDS else "run"
    if command == "bench":
        from streamrbf.bench.__main__ import main as bench

        return bench(argv)
    if command == "inspect":
        return _inspect(argv)
    from pipelines.cluster_events import main as run

    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
