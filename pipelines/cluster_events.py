"""The main job, runnable from a clone: ``python -m pipelines.cluster_events [FLAGS]``.

The job itself is :mod:`streamrbf.jobs.cluster_events` (what ``streamrbf run`` runs); this script
only calls it, with the command line's exit codes.
"""

from __future__ import annotations

import sys

from streamrbf.console import run_command
from streamrbf.jobs.cluster_events import build_pipeline, generate_events, main

__all__ = ["build_pipeline", "generate_events", "main"]

if __name__ == "__main__":
    raise SystemExit(run_command("streamrbf run", main, sys.argv[1:]))
