"""Every public class and function has a docstring with a runnable example.

"Public" means: named in the ``__all__`` of a public streamrbf module (no ``_`` in its dotted
name) and defined in streamrbf (re-exports of third-party objects are not ours to document).
The examples themselves run as doctests (``pytest --doctest-modules``); this test only checks
that each docstring has a numpy-style ``Examples`` section holding at least one doctest prompt.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import streamrbf

# Packages left out of the walk (none: the benchmark and experiment entry points, which run for
# minutes, carry examples marked ``# doctest: +SKIP``).
_SCRIPT_PACKAGES: tuple[str, ...] = ()

_SECTION = re.compile(r"^(?P<name>[A-Z][A-Za-z ]*)\n-{3,}[ \t]*$", re.MULTILINE)
_PROMPT = re.compile(r"^>>> ", re.MULTILINE)


def _public_modules() -> list[str]:
    names = ["streamrbf"]
    for info in pkgutil.walk_packages(streamrbf.__path__, prefix="streamrbf."):
        name = info.name
        if any(part.startswith("_") for part in name.split(".")):
            continue
        if name.startswith(_SCRIPT_PACKAGES):
            continue
        names.append(name)
    return sorted(names)


def _public_objects() -> dict[str, object]:
    """``{"module.QualName": object}`` for every class or function exported by an ``__all__``."""
    found: dict[str, object] = {}
    for modname in _public_modules():
        module = importlib.import_module(modname)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            # unwrap: functools.cache and friends hide the function they decorate
            if not (inspect.isclass(obj) or inspect.isfunction(inspect.unwrap(obj))):
                continue  # constants such as __version__ or FORMAT_VERSION
            home = getattr(obj, "__module__", "") or ""
            if home != "streamrbf" and not home.startswith("streamrbf."):
                continue
            found.setdefault(f"{home}.{obj.__qualname__}", obj)
    return found


def _has_example(doc: str | None) -> bool:
    """Whether ``doc`` has an ``Examples`` section whose body holds a ``>>>`` prompt."""
    if not doc:
        return False
    text = inspect.cleandoc(doc)
    sections = list(_SECTION.finditer(text))
    for i, m in enumerate(sections):
        if m.group("name") != "Examples":
            continue
        end = sections[i + 1].start() if i + 1 < len(sections) else len(text)
        if _PROMPT.search(text, m.end(), end):
            return True
    return False


def test_walk_finds_the_public_api():
    found = _public_objects()
    for name in (
        "streamrbf.kmeans.RBFKMeans",
        "streamrbf.river.RBFKMeans",
        "streamrbf.nn.RBFCluster",
        "streamrbf.beam.per_key.ClusterPerKey",
        "streamrbf.core.temperature.TemperatureSchedule",
        "streamrbf.core.losses.distortion",
        "streamrbf.core.accelerated.compiled_fused_step",  # behind functools.cache
    ):
        assert name in found


def test_section_parser():
    assert _has_example("Summary.\n\nExamples\n--------\n>>> 1 + 1\n2\n")
    assert _has_example("Summary.\n\n    Examples\n    --------\n\n    >>> 1\n    1\n    ")
    # a bare doctest is not an Examples section, nor is a prompt in another section
    assert not _has_example("Summary.\n\n>>> 1 + 1\n2\n")
    assert not _has_example("Summary.\n\nExamples\n--------\nNone.\n\nNotes\n-----\n>>> 1\n1\n")
    assert not _has_example(None)


def test_every_public_object_has_an_example():
    found = _public_objects()
    missing = sorted(name for name, obj in found.items() if not _has_example(obj.__doc__))
    assert not missing, (
        f"{len(missing)} public classes/functions lack an 'Examples' section with a doctest:\n  "
        + "\n  ".join(missing)
    )
