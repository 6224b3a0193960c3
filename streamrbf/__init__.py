"""streamrbf: streaming K-Means as an annealed entmax-1.5 RBF network.

One core (:mod:`streamrbf.kmeans` and the math beneath it) behind three faces: River
(:mod:`streamrbf.river`), Apache Beam (:mod:`streamrbf.beam`) and PyTorch (:mod:`streamrbf.nn`).
Heavy modules load on first use, so ``import streamrbf.river`` never pays for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Assignment": "streamrbf.assignment",
    "NotFittedError": "streamrbf.kmeans",
    "RBFKMeans": "streamrbf.kmeans",
    "SufficientStatistics": "streamrbf.statistics",
    "TemperatureSchedule": "streamrbf.temperature",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamrbf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
