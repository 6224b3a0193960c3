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
import types
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

# Modules that moved into the core package: the old names still import, with a
# DeprecationWarning, for one release, as modules that hand out the new modules' objects (the
# same classes, so pickles and ``isinstance`` keep working). Old name -> the modules its names
# now live in (the torch forms of ``statistics`` moved to ``core.accelerated``).
_MOVED: dict[str, tuple[str, ...]] = {
    f"streamrbf.{name}": (f"streamrbf.core.{name}",)
    for name in ("assignment", "losses", "mappings", "persistence", "seeding", "temperature",
                 "validation")
}
_MOVED["streamrbf.statistics"] = ("streamrbf.core.statistics", "streamrbf.core.accelerated")


class _MovedModule(types.ModuleType):
    """An old module name: its attributes are looked up in the modules its names moved to."""

    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"Deprecated alias of {', '.join(targets)}.")
        self._targets = targets

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for target in self._targets:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        for target in self._targets:
            names.update(dir(importlib.import_module(target)))
        return sorted(names)


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a moved module's old name (see ``_MOVED``)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        targets = _MOVED[spec.name]
        warnings.warn(f"{spec.name} is deprecated: import {targets[0]} instead",
                      DeprecationWarning, stacklevel=2)
        importlib.import_module(targets[0])
        return _MovedModule(spec.name, targets)

    def exec_module(self, module: Any) -> None:
        pass  # nothing to run: the names are looked up where they moved


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamrbf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
