"""streamrbf: streaming K-Means as an annealed entmax-1.5 RBF network.

One engine, :mod:`streamrbf.core` (the mathematics, the model state and the learning policy),
behind four faces: scikit-learn style (:class:`streamrbf.RBFKMeans`), River
(:mod:`streamrbf.river`), Apache Beam (:mod:`streamrbf.beam`) and PyTorch (:mod:`streamrbf.nn`);
the command line (:mod:`streamrbf.cli`) and the jobs sit on top. Heavy modules load on first
use, so ``import streamrbf.river`` never pays for torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

__version__ = "0.2.0.dev0"

_LAZY = {
    "Assignment": "streamrbf.core.assignment",
    "NotFittedError": "streamrbf.kmeans",
    "RBFKMeans": "streamrbf.kmeans",
    "SufficientStatistics": "streamrbf.core.statistics",
    "TemperatureSchedule": "streamrbf.core.temperature",
}

__all__ = sorted([*_LAZY, "__version__"])

# Modules that moved into the core package: the old names still import (the same module
# object, so pickles and ``isinstance`` keep working) with a DeprecationWarning, for one release.
_MOVED = {
    f"streamrbf.{name}": f"streamrbf.core.{name}"
    for name in ("assignment", "losses", "mappings", "persistence", "seeding", "statistics",
                 "temperature", "validation")
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a moved module's old name as its new module (see ``_MOVED``)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        new = _MOVED[spec.name]
        warnings.warn(f"{spec.name} is deprecated: import {new} instead", DeprecationWarning,
                      stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: Any) -> None:
        pass  # the new module is already executed


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamrbf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
