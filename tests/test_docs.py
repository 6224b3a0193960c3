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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
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
    return out


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


def test_every_page_of_the_nav_is_built(site: Path) -> None:
    for page in ("index.html", "getting_started/index.html", "theory/index.html",
                 "benchmarks/index.html", "reference/index.html"):
        assert (site / page).is_file(), page
    theory = _text(site / "theory" / "index.html")
    assert "test_annealed_entmax_steps_reproduce_the_lloyd_trajectory" in theory
