"""Every public class and function has a docstring with a runnable example, and every public
function and method documents its parameters and what it returns.

"Public" means: named in the ``__all__`` of a public streamrbf module (no ``_`` in its dotted
name) and defined in streamrbf (re-exports of third-party objects are not ours to document).
The examples themselves run as doctests (``pytest --doctest-modules``); these tests only check
that each docstring has a numpy-style ``Examples`` section holding at least one doctest prompt,
and that public functions and methods (those of public classes, including what they inherit
from streamrbf's private base classes) have ``Parameters`` and ``Returns`` (or ``Yields``)
sections where they take parameters and return a value.
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


def _own_or_private_base(cls: type, base: type) -> bool:
    """Whether ``base`` (in ``cls.__mro__``) contributes methods we document on ``cls``: the class
    itself, and streamrbf's private base classes (``_ModelFile``, ``_FitShortcuts``, ...), whose
    public methods are part of the class's API. Framework bases document their own."""
    if base is cls:
        return True
    return base.__module__.startswith("streamrbf") and base.__name__.startswith("_")


def _public_callables() -> dict[str, object]:
    """``{"module.QualName[.method]": function}`` for every public function of an ``__all__``
    and every public method (no leading underscore; classmethods and staticmethods included,
    properties not) of every public class, inherited ones from private streamrbf bases too."""
    found: dict[str, object] = {}
    for qual, obj in _public_objects().items():
        if not inspect.isclass(obj):
            found.setdefault(qual, inspect.unwrap(obj))
            continue
        for base in obj.__mro__:
            if not _own_or_private_base(obj, base):
                continue
            for attr, member in vars(base).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, (classmethod, staticmethod)):
                    member = member.__func__
                if inspect.isfunction(member):
                    found.setdefault(f"{qual}.{attr}", member)
    return found


def _sections(doc: str | None) -> set[str]:
    """The names of the numpy-style sections of ``doc``."""
    return {m.group("name") for m in _SECTION.finditer(inspect.cleandoc(doc or ""))}


def _missing_sections(func) -> list[str]:
    """What ``func``'s docstring lacks: the docstring itself, ``Parameters`` (when it takes
    parameters other than self/cls), ``Returns`` or ``Yields`` (when annotated to return a
    value)."""
    signature = inspect.signature(func)
    sections = _sections(func.__doc__)
    need = []
    if not func.__doc__:
        need.append("docstring")
    if any(p not in ("self", "cls") for p in signature.parameters) and (
            "Parameters" not in sections):
        need.append("Parameters")
    returns = signature.return_annotation
    if returns not in (inspect.Signature.empty, None, "None") and not (
            sections & {"Returns", "Yields"}):
        need.append("Returns")
    return need


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


def test_walk_finds_the_public_methods():
    found = _public_callables()
    for name in (
        "streamrbf.kmeans.RBFKMeans.fit",
        "streamrbf.kmeans.RBFKMeans.save",  # inherited from the private _ModelFile
        "streamrbf.kmeans.RBFKMeans.load",  # a classmethod
        "streamrbf.nn.RBFCluster.balance",  # a staticmethod
        "streamrbf.nn.RBFCluster.predict",  # behind torch.no_grad
        "streamrbf.beam.state.KeyStateCoder.encode",  # a framework protocol override
        "streamrbf.core.losses.distortion",
    ):
        assert name in found
    # properties are not methods, private names are not public
    assert "streamrbf.core.state.ModelState.n_models" not in found
    assert not any(name.rsplit(".", 1)[-1].startswith("_") for name in found)


def test_section_check():
    def documented(x: int) -> int:
        """Summary.

        Parameters
        ----------
        x
            A number.

        Returns
        -------
        int
            The number.
        """
        return x

    def bare(self, x: int) -> int:
        """Summary only."""
        return x

    def no_return(self) -> None:
        """Summary only: no parameters, nothing returned."""

    assert _missing_sections(documented) == []
    assert _missing_sections(bare) == ["Parameters", "Returns"]
    assert _missing_sections(no_return) == []


def test_every_public_function_and_method_documents_its_parameters_and_returns():
    missing = sorted(
        f"{name}: {', '.join(need)}"
        for name, func in _public_callables().items()
        if (need := _missing_sections(func))
    )
    assert not missing, (
        f"{len(missing)} public functions/methods lack numpydoc sections:\n  "
        + "\n  ".join(missing)
    )
