"""The documentation site builds with ``mkdocs build --strict`` (this test is how CI runs it).

The build runs ``docs/gen_benchmarks.py`` (the Benchmarks page and its plots, from the committed
``docs/benchmarks/results/bench.json``) and mkdocstrings (the API reference, from the
docstrings); a broken link, a missing page or a docstring mkdocstrings cannot render fails it.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "benchmarks" / "results" / "bench.json"

for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_gen_files"):
    pytest.importorskip(module)


def _text(path: Path) -> str:
    """Visible text of a built page (tags dropped, entities decoded, spaces collapsed)."""
    raw = path.read_text(encoding="utf-8")
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", raw)))


_BUILT: dict[str, Path] = {}


def build_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once per test session (``tests/test_site_browser.py`` opens the same)."""
    if "site" in _BUILT:
        return _BUILT["site"]
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    log = "\n".join(
        line for line in (proc.stdout + proc.stderr).splitlines()
        if re.search(r"WARNING|ERROR|Error|Aborted|Traceback", line) or proc.returncode
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"
    _BUILT["site"] = out
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_site(tmp_path_factory)


def test_benchmarks_page_shows_the_committed_results(site: Path) -> None:
    results = json.loads(RESULTS.read_text())
    page = _text(site / "benchmarks" / "index.html")
    for suite, value in list(results.items()):
        if isinstance(value, dict) and "error" in value:  # a suite that failed in that run
            assert "This suite failed" in page
            del results[suite]
    expected = []
    if "core" in results:  # streamrbf.bench.core.markdown's speed table
        expected.append(f"{results['core']['speed'][0]['ratio']:.2f} x")
    if "river" in results:
        expected.append(f"{results['river']['speed'][0]['ratio']:.1f}x")
    if "beam" in results:
        expected.append(f"{results['beam']['events_per_s']['ClusterPerKey']:,.0f}")
    assert expected, "bench.json holds no suite"
    for figure in expected:
        assert figure in page, f"{figure!r} from bench.json is not on the Benchmarks page"
    assert results["machine"]["cpu"] in page
    assert ("Quick mode" in page) == bool(results.get("quick"))
    images = {p.name for p in (site / "benchmarks" / "img").glob("*.png")}
    assert "speed.png" in images
    raw = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    for name in images:  # the page sits at benchmarks/, its images at benchmarks/img/
        assert f'src="img/{name}"' in raw


def test_api_reference_documents_the_public_api(site: Path) -> None:
    pages = {
        "kmeans": ["RBFKMeans", "partial_fit", "predict_proba"],
        "river": ["KeyedRBFKMeans", "learn_one"],
        "beam": ["ClusterPerKey", "ClusterGlobally", "RBFModelHandler", "DeadLetter"],
        "nn": ["RBFCluster"],
        "statistics": ["SufficientStatistics"],
        "temperature": ["TemperatureSchedule"],
    }
    for page, names in pages.items():
        text = _text(site / "reference" / page / "index.html")
        for name in names:
            assert name in text, f"{name} missing from reference/{page}"
    # Sphinx roles in docstrings are rendered, not shown as ":class:".
    raw = (site / "reference" / "beam" / "index.html").read_text(encoding="utf-8")
    assert not re.search(r":(class|meth|func|math):<code>", raw)


def _member_ids(path: Path, owner: str) -> set[str]:
    """The members of ``owner`` with a heading of their own on a built reference page."""
    raw = path.read_text(encoding="utf-8")
    return set(re.findall(rf'id="{re.escape(owner)}\.([A-Za-z]\w*)"', raw))


def test_api_reference_shows_inherited_public_members(site: Path) -> None:
    """RBFKMeans inherits public methods from private base classes of its module: each has its
    own entry (or, for attributes without a docstring, a row of the class's Attributes table);
    River's RBFKMeans does not show River's base-class API."""
    from streamrbf.kmeans import RBFKMeans

    page = site / "reference" / "kmeans" / "index.html"
    shown = _member_ids(page, "streamrbf.kmeans.RBFKMeans")
    # (set_fit_request and its kin are made by scikit-learn's metadata routing from the methods'
    # signatures: documented by scikit-learn, and named on the page)
    public = {name for cls in RBFKMeans.__mro__ if cls.__module__ == "streamrbf.kmeans"
              for name in vars(cls) if not name.startswith("_")
              and not re.fullmatch(r"set_\w+_request", name)}
    for name in ("save", "load", "from_state", "fit_predict", "fit_transform", "get_params",
                 "set_params"):
        assert name in shown, f"RBFKMeans.{name} missing from reference/kmeans"
    text = _text(page)
    missing = sorted(n for n in public - shown
                     if n not in text.split("Attributes:", 1)[-1].split("Notes", 1)[0])
    assert not missing, f"public members of RBFKMeans missing from reference/kmeans: {missing}"
    river = _member_ids(site / "reference" / "river" / "index.html", "streamrbf.river.RBFKMeans")
    assert "learn_one" in river
    assert "clone" not in river, river   # river.base.Base.clone: River's API, not ours


def test_every_page_of_the_nav_is_built(site: Path) -> None:
    for page in ("index.html", "getting_started/index.html", "theory/index.html",
                 "benchmarks/index.html", "reference/index.html"):
        assert (site / page).is_file(), page
    theory = _text(site / "theory" / "index.html")
    assert "test_annealed_entmax_steps_reproduce_the_lloyd_trajectory" in theory


# -- the Architecture page: generated by docs/gen_architecture.py, checked here against the code --


def _html_tables(path: Path) -> list[tuple[list[str], list[list[str]]]]:
    """``(header cells, body rows)`` of every table of a built page, as visible text."""
    raw = path.read_text(encoding="utf-8")

    def cells(fragment: str, tag: str) -> list[str]:
        return [re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", c))).strip()
                for c in re.findall(rf"<{tag}[^>]*>(.*?)</{tag}>", fragment, re.S)]

    tables = []
    for table in re.findall(r"<table>(.*?)</table>", raw, re.S):
        head = cells(table, "th")
        rows = [cells(r, "td") for r in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
        tables.append((head, [r for r in rows if r]))
    return tables


def _architecture_rules():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_rules_for_docs", ROOT / "tests" / "test_architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package_edges(arch) -> tuple[set[str], set[tuple[str, str]]]:
    """The packages of the layers and which imports which (``from streamrbf import X``: the module
    that defines X), recomputed from the sources."""
    import streamrbf

    lazy = streamrbf._LAZY
    sources = arch._sources()
    groups = ["streamrbf.core", *arch.FACES, *arch.APPS]

    def group(module: str) -> str | None:
        return next((g for g in groups if arch._within(module, g)), None)

    edges = set()
    for module, (source, is_package) in sources.items():
        for target, names, _ in arch.imports_of(source, module, is_package):
            targets = [lazy[n] for n in names if n in lazy] if target == "streamrbf" else [target]
            for t in targets:
                a, b = group(module), group(t) if t in sources else None
                if a and b and a != b:
                    edges.add((a, b))
    packages = {group(m) for m in sources} - {None}
    return packages, edges


def test_architecture_picture_is_the_code(site: Path) -> None:
    """Every package of the layers is a box in its layer; every import between layers is an arrow,
    pointing down; every import within a layer is listed in its box."""
    arch = _architecture_rules()
    packages, edges = _package_edges(arch)
    picture = (site / "architecture" / "layers.svg").read_text(encoding="utf-8")
    boxes = dict(re.findall(r'data-package="([^"]+)" data-layer="([^"]+)"', picture))
    assert boxes == {p: arch.layer_of(p) for p in packages}
    arrows = re.findall(r'data-from="([^"]+)" data-to="([^"]+)" data-direction="([^"]+)"',
                        picture)
    between = {(a, b) for a, b in edges if arch.layer_of(a) != arch.layer_of(b)}
    assert {(a, b) for a, b, _ in arrows} == between
    assert all(direction == "down" for _, _, direction in arrows), arrows
    for a, b in edges - between:
        box = re.search(rf'data-package="{re.escape(a)}".*?</g>', picture, re.S).group(0)
        assert b.removeprefix("streamrbf.") in box, f"{a} uses {b}: not in its box"
    raw = (site / "architecture" / "index.html").read_text(encoding="utf-8")
    assert 'src="layers.svg"' in raw
    modules = {row[0] for row in _html_tables(site / "architecture" / "index.html")[0][1]}
    assert set(arch._sources()) <= modules


def test_architecture_parameter_table_is_the_signatures(site: Path) -> None:
    """The parameter table has every parameter of every face and every flag of ``streamrbf run``,
    each with the default the code has (a Beam transform's policy parameters included)."""
    import inspect

    from streamrbf.beam import ClusterGlobally, ClusterPerKey
    from streamrbf.core.policy import Policy
    from streamrbf.jobs.run_flags import run_parser
    from streamrbf.kmeans import RBFKMeans
    from streamrbf.nn import RBFCluster
    from streamrbf.river import KeyedRBFKMeans
    from streamrbf.river import RBFKMeans as RiverKMeans

    tables = _html_tables(site / "architecture" / "index.html")
    head, body = next(t for t in tables if t[0][:2] == ["parameter", "meaning"])
    rows = {r[0]: dict(zip(head, r)) for r in body}
    deprecated = {(r[0], r[1]) for r in next(t for t in tables if t[0][1] == "deprecated name")[1]}

    def shown(value) -> str:
        return f'"{value}"' if isinstance(value, str) else repr(value)

    def default_in(cell: str) -> str:
        """The default a cell shows (``seed: None`` -> ``None``, ``0.0 (†)`` -> ``0.0``)."""
        return cell.removesuffix(" (†)").rpartition(": ")[2]

    faces = {
        "RBFKMeans (scikit-learn style)": RBFKMeans,
        "river.RBFKMeans": RiverKMeans,
        "river.KeyedRBFKMeans": KeyedRBFKMeans,
        "beam.ClusterPerKey": ClusterPerKey,
        "beam.ClusterGlobally": ClusterGlobally,
        "nn.RBFCluster": RBFCluster,
    }
    aliases = {"seed": "random_state", "features": "feature_names"}
    for column, cls in faces.items():
        for p in inspect.signature(cls).parameters.values():
            if p.kind is p.VAR_KEYWORD:
                continue
            if (column, p.name) in deprecated:
                continue
            cell = rows[aliases.get(p.name, p.name)][column]
            if p.default is p.empty:
                assert cell == "required", (column, p.name, cell)
            elif not callable(p.default):
                assert default_in(cell) == shown(p.default), (column, p.name, cell)
    # The Beam transforms take the policy's parameters as **model_params, with their own defaults.
    public = [f for f in Policy.__dataclass_fields__ if f != "forgetting_per_step"]
    for column, transform in [("beam.ClusterPerKey", ClusterPerKey()),
                              ("beam.ClusterGlobally", ClusterGlobally(n_features=1))]:
        own = set(inspect.signature(type(transform)).parameters)
        for name in public:
            if name not in own:
                cell = rows[name][column]
                assert cell.endswith(" (†)"), (column, name, cell)
                assert default_in(cell) == shown(getattr(transform.policy, name)), (column, name)
    for action in run_parser()._actions:
        if action.option_strings and action.dest != "help":
            flag = max(action.option_strings, key=len)
            cell = rows[aliases.get(action.dest, action.dest)]["streamrbf run"]
            assert cell.startswith(flag), (flag, cell)
            if action.default not in (None, True, False):
                assert cell == f"{flag} {action.default}", (flag, cell)


# -- what a reader sees without a browser (tests/test_site_browser.py opens the pages in one) --


def test_site_loads_nothing_from_elsewhere_and_draws_formulas(site: Path) -> None:
    """No script, style or font from another host; formulas are MathML, not TeX for a script."""
    for path in site.rglob("*.html"):
        raw = path.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', raw)
        assert not remote, (path, remote)
    theory = (site / "theory" / "index.html").read_text(encoding="utf-8")
    assert theory.count("<math") > 40
    assert "\\(" not in _text(site / "theory" / "index.html")


def test_signatures_are_formatted_and_footnotes_render(site: Path) -> None:
    raw = (site / "reference" / "beam" / "index.html").read_text(encoding="utf-8")
    signatures = [html.unescape(re.sub(r"<[^>]+>", "", s)) for s in
                  re.findall(r'<div class="doc-signature[^"]*">(.*?)</div>', raw, re.S)]
    assert signatures
    widest = max(len(line) for s in signatures for line in s.splitlines())
    assert widest <= 100, f"a signature line of {widest} characters: is ruff installed?"
    # a combined numpy entry ("batch_size, max_buffering_secs") types each name by its signature
    table = _text(site / "reference" / "beam" / "index.html")
    assert "max_buffering_secs float | None" in table
    river = (site / "reference" / "river" / "index.html").read_text(encoding="utf-8")
    assert "[^" not in _text(site / "reference" / "river" / "index.html")
    assert 'class="footnote"' in river


def test_version_changelog_and_collapsed_lists(site: Path) -> None:
    import streamrbf

    assert f"streamrbf {streamrbf.__version__}" in _text(site / "index.html")
    changelog = _text(site / "changelog" / "index.html")
    assert "## [" not in changelog and "0.2.0" in changelog
    for path in site.rglob("*.html"):
        raw = path.read_text(encoding="utf-8")
        for paragraph in re.findall(r"<p>(.*?)</p>", raw, re.S):
            text = html.unescape(re.sub(r"<[^>]+>", "", paragraph))
            assert not re.search(r"(^|\n)\s*- ", text), (path, text[:200])
