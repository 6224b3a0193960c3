"""The layers stay as the tree shows them: the core imports no face, faces import no job, no cycles.

Every ``import`` statement of the package is parsed (module level and inside functions alike,
relative imports resolved), so a lazy import cannot hide an upward dependency. The layers, bottom
up:

- ``core``: ``streamrbf.core`` (mathematics, state, policy, kernels): numpy, torch, numba,
  safetensors; no host framework (River, Beam, scikit-learn, pandas) and no face.
- ``face``: ``streamrbf.kmeans`` (scikit-learn style), ``streamrbf.river``, ``streamrbf.nn``,
  ``streamrbf.beam``: each imports the core and its own host, never another face.
- ``app``: ``streamrbf.console``, ``streamrbf.cli``, ``streamrbf.jobs``, ``streamrbf.bench``,
  ``streamrbf.experiments`` and the scripts in ``pipelines/``.

The package root (``streamrbf/__init__.py``) re-exports lazily from every layer: core and face
modules take only ``__version__`` from it (anything else would hide a face behind the root).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "streamrbf"

LAYERS = {"core": 0, "face": 1, "app": 2}
FACES = ("streamrbf.kmeans", "streamrbf.river", "streamrbf.nn", "streamrbf.beam")
APPS = ("streamrbf.console", "streamrbf.cli", "streamrbf.jobs", "streamrbf.bench",
        "streamrbf.experiments", "pipelines")
HOSTS = ("river", "apache_beam", "sklearn", "pandas", "dask")


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> str | None:
    """The layer of a streamrbf (or pipelines) module; None for the package root and others."""
    if _within(module, "streamrbf.core"):
        return "core"
    if any(_within(module, f) for f in FACES):
        return "face"
    if any(_within(module, a) for a in APPS):
        return "app"
    return None


def _face_of(module: str) -> str | None:
    return next((f for f in FACES if _within(module, f)), None)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """``(imported module, names taken from it, line)`` for every import in ``source``."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [alias.name for alias in node.names]
            found.append((base, names, node.lineno))
            # ``from package import submodule`` imports the submodule too
            found += [(f"{base}.{n}", [], node.lineno) for n in names]
    return found


def violations(module: str, source: str, is_package: bool, known: set[str]) -> list[str]:
    """Every rule ``module``'s imports break (``known``: the project's module names)."""
    here = layer_of(module)
    out = []
    for target, names, line in imports_of(source, module, is_package):
        where = f"{module}:{line} imports {target}"
        if target == "streamrbf":
            if here in ("core", "face") and set(names) - {"__version__"}:
                out.append(f"{where} ({names}): import from the module that defines them")
            continue
        top = target.split(".")[0]
        if here == "core" and top in HOSTS:
            out.append(f"{where}: the core imports no host framework")
        if top not in ("streamrbf", "pipelines") or target not in known:
            continue
        there = layer_of(target)
        if here is None or there is None:
            continue
        if LAYERS[there] > LAYERS[here]:
            out.append(f"{where}: a {here} module imports a {there} module (upward)")
        elif here == there == "face" and _face_of(module) != _face_of(target):
            out.append(f"{where}: a face imports another face")
    return out


def _sources() -> dict[str, tuple[str, bool]]:
    files = list(PACKAGE.rglob("*.py")) + list((ROOT / "pipelines").glob("*.py"))
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in files}


def _graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    known = set(sources)
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        targets = {t for t, _, _ in imports_of(source, module, is_package) if t in known}
        graph[module] = targets - {module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of modules (first found), or None. The package root, which re-exports lazily from
    every layer, is left out: importing it imports nothing of the package."""
    graph = {m: {t for t in ts if t != "streamrbf"} for m, ts in graph.items() if m != "streamrbf"}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_every_module_is_in_a_layer():
    unplaced = [m for m in _sources() if layer_of(m) is None and m != "streamrbf"]
    assert not unplaced, f"modules outside the layers: {unplaced}"


def test_imports_point_down_the_layers():
    sources = _sources()
    known = set(sources)
    found = [v for m, (src, pkg) in sources.items() for v in violations(m, src, pkg, known)]
    assert not found, "\n".join(found)


def test_no_import_cycles():
    cycle = _cycle(_graph(_sources()))
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        ("streamrbf.core.policy", "from ..kmeans import RBFKMeans", "upward"),
        ("streamrbf.core.policy", "def f():\n    import streamrbf.beam.state\n", "upward"),
        ("streamrbf.core.policy", "import river", "no host framework"),
        ("streamrbf.beam.state", "from ..river import RBFKMeans", "another face"),
        ("streamrbf.river", "from .cli import main", "upward"),
        ("streamrbf.nn", "from streamrbf import RBFKMeans", "defines them"),
    ],
)
def test_the_check_catches_what_it_forbids(module, source, rule):
    known = set(_sources())
    found = violations(module, source, False, known)
    assert found and rule in found[0], found


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_old_module_names_still_import_and_hand_out_the_core_objects():
    import importlib
    import pickle
    import subprocess
    import sys

    old = {"assignment": "Assignment", "losses": "distortion", "mappings": "responsibilities",
           "persistence": "write_model_file", "seeding": "kmeans_plusplus",
           "statistics": "SufficientStatistics", "temperature": "TemperatureSchedule",
           "validation": "as_batch"}
    for name, attr in old.items():
        sys.modules.pop(f"streamrbf.{name}", None)  # imported afresh, whatever ran before
        with pytest.warns(DeprecationWarning, match=f"streamrbf.{name} is deprecated: import "
                          f"streamrbf.core.{name}"):
            alias = importlib.import_module(f"streamrbf.{name}")
        new = importlib.import_module(f"streamrbf.core.{name}")
        assert getattr(alias, attr) is getattr(new, attr)
        assert new.__spec__.name == f"streamrbf.core.{name}"  # the real module is untouched
    # The torch forms that left statistics for core.accelerated are still there under the old name.
    from streamrbf.core import accelerated

    alias = importlib.import_module("streamrbf.statistics")
    assert alias.fused_step is accelerated.fused_step and "fused_step" in dir(alias)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        alias.nothing  # noqa: B018
    stats_class = alias.SufficientStatistics
    assert pickle.loads(pickle.dumps(stats_class)) is stats_class
    # A fresh interpreter: the old name works as the first import, too.
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import streamrbf.temperature\nexcept DeprecationWarning as w: print(w)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "import streamrbf.core.temperature instead" in out.stdout
