"""The docs site as a reader sees it: every page opened in a real headless Chromium, offline.

The site is built as ``tests/test_docs.py`` builds it (``mkdocs build --strict``; one build
when both files run), served from 127.0.0.1 by a local HTTP server, and each page is loaded in
Debian's ``chromium`` through ``chromedriver`` and Selenium. Any host other than 127.0.0.1
resolves to nothing, so a script, font or style from a CDN fails the check. On every page:

- no console error (a script error, a resource that did not load, ...);
- no raw TeX in the rendered text (``\\(``, ``\\[``, ``$$``, ``\\frac``, ...), code excepted;
- no collapsed list: no paragraph with a line starting with ``- ``;
- no code block wider than its column (a scroll bar) at the width of a laptop screen.

And every public method of the four faces (``streamrbf.RBFKMeans``, ``streamrbf.river``'s
``RBFKMeans`` and ``KeyedRBFKMeans``, ``streamrbf.beam``'s transforms and model handler,
``streamrbf.nn``'s classes) has its entry in the API reference, with a signature naming each of
its parameters.

Skipped where ``/usr/bin/chromium`` is not installed (CI has none). To run it::

    apt-get install chromium chromium-driver      # Debian; as root
    pip install -e '.[docs,test]'                 # selenium is in the test extra
    python -m pytest -q tests/test_site_browser.py

``STREAMRBF_SCREENSHOTS=DIR`` also saves a screenshot of the pages with formulas to ``DIR``.
"""

from __future__ import annotations

import functools
import http.server
import inspect
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium (apt-get install chromium chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")
import test_docs  # noqa: E402  (the build of the site, shared with tests/test_docs.py)

WIDTH, HEIGHT = 1366, 900  # a laptop screen
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\(?:frac|sum|lVert|rVert|mathbb|operatorname)\b")

# Visible text of the page's article without code, the paragraphs that hold a list, the code
# blocks that scroll sideways, and the formulas drawn.
_INSPECT = r"""
const article = document.querySelector('article') || document.body;
const copy = article.cloneNode(true);
copy.querySelectorAll('pre, code, script, style, .headerlink').forEach(e => e.remove());
document.body.appendChild(copy);  // innerText needs the copy in the document
const text = copy.innerText;
copy.remove();
const collapsed = [...article.querySelectorAll('p')]
  .map(p => p.innerText)
  .filter(t => /(^|\n)\s*- /.test(t))
  .map(t => t.slice(0, 120));
const wide = [...article.querySelectorAll('pre > code')]
  .filter(c => c.scrollWidth > c.clientWidth + 1)
  .map(c => [c.scrollWidth, c.clientWidth, c.innerText.split('\n')
    .reduce((a, b) => (b.length > a.length ? b : a), '').slice(0, 100)]);
const maths = [...article.querySelectorAll('math')]
  .filter(m => m.getBoundingClientRect().width > 0).length;
return {text, collapsed, wide, maths};
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    site = test_docs.build_site(tmp_path_factory)
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
                f"--window-size={WIDTH},{HEIGHT}",
                # offline: every host but the local server resolves to nothing
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager downloads nothing
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _pages(site: Path) -> list[str]:
    """The site's pages, as paths relative to its root (``theory/``, ``reference/river/``)."""
    pages = []
    for path in sorted(site.rglob("index.html")):
        rel = path.parent.relative_to(site).as_posix()
        pages.append("" if rel == "." else f"{rel}/")
    return pages


def _open(browser, url: str) -> list[str]:
    """Load a page; its console errors."""
    browser.get(url)
    browser.execute_script("return document.fonts.ready")
    return [entry["message"] for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE"]


def test_every_page_reads_well_in_a_browser(server, browser) -> None:
    site, base = server
    pages = _pages(site)
    assert len(pages) > 20, pages
    shots = os.environ.get("STREAMRBF_SCREENSHOTS")
    problems, maths = [], {}
    for page in pages:
        errors = _open(browser, f"{base}/{page}")
        seen = browser.execute_script(_INSPECT)
        problems += [f"/{page}: console error: {e}" for e in errors]
        problems += [f"/{page}: raw TeX: ...{seen['text'][max(0, m.start() - 40):m.end() + 40]}..."
                     for m in RAW_TEX.finditer(seen["text"])]
        problems += [f"/{page}: a list collapsed into a paragraph: {t!r}"
                     for t in seen["collapsed"]]
        problems += [f"/{page}: code block {w} px wide in a {c} px column: {line!r}"
                     for w, c, line in seen["wide"]]
        if seen["maths"]:
            maths[page] = seen["maths"]
            if shots:
                Path(shots).mkdir(parents=True, exist_ok=True)
                name = page.strip("/").replace("/", "_") or "index"
                browser.save_screenshot(str(Path(shots) / f"{name}.png"))
    print(f"\n{len(pages)} pages, formulas drawn: {maths}")
    assert not problems, "\n".join(problems)
    # the pages with formulas draw them (MathML, rendered by the browser)
    assert {"", "theory/"} <= set(maths), maths


# -- the API reference --------------------------------------------------------------------------


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    """Public methods (functions, class and static methods) that streamrbf defines for
    ``cls``, with their signatures."""
    methods = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next((c for c in cls.__mro__ if name in vars(c)), None)
        if owner is None or not owner.__module__.startswith("streamrbf"):
            continue
        raw = vars(owner)[name]
        if isinstance(raw, (staticmethod, classmethod)):
            raw = raw.__func__
        if inspect.isfunction(raw):
            methods[name] = inspect.signature(raw)
    return methods


def _faces() -> dict[str, dict[str, inspect.Signature]]:
    """``{heading id: signature}``: every face's class (its constructor) and public method, and
    Beam's public transforms, model handler and functions, as the reference pages name them."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import ModelHandler

    import streamrbf
    import streamrbf.beam
    import streamrbf.nn
    import streamrbf.river

    classes = {"streamrbf.kmeans.RBFKMeans": streamrbf.RBFKMeans,
               "streamrbf.river.RBFKMeans": streamrbf.river.RBFKMeans,
               "streamrbf.river.KeyedRBFKMeans": streamrbf.river.KeyedRBFKMeans}
    functions = {}
    for module in (streamrbf.beam, streamrbf.nn):
        for name in module.__all__:
            obj = getattr(module, name)
            where = f"{module.__name__}.{name}"
            if module is streamrbf.nn and inspect.isclass(obj):
                classes[where] = obj
            elif inspect.isclass(obj) and issubclass(obj, (beam.PTransform, ModelHandler)):
                classes[where] = obj
            elif inspect.isfunction(obj):
                functions[where] = inspect.signature(obj)
    entries = dict(functions)
    for where, cls in classes.items():
        entries[where] = inspect.signature(cls)
        for name, signature in _public_methods(cls).items():
            entries[f"{where}.{name}"] = signature
    return entries


_SIGNATURE = """
const h = document.getElementById(arguments[0]);
if (!h) return null;
let e = h.nextElementSibling;
while (e && !(e.classList.contains('doc-signature'))) e = e.nextElementSibling;
// a class without a signature of its own (a NamedTuple) lists its fields in its entry
return [e ? e.innerText : '', h.parentElement.innerText];
"""

PAGES = {"streamrbf.kmeans.": "reference/kmeans/", "streamrbf.river.": "reference/river/",
         "streamrbf.beam.": "reference/beam/", "streamrbf.nn.": "reference/nn/"}


def test_api_reference_has_every_public_method_with_its_parameters(server, browser) -> None:
    _, base = server
    by_page: dict[str, dict[str, inspect.Signature]] = {}
    for where, signature in _faces().items():
        page = next(p for prefix, p in PAGES.items() if where.startswith(prefix))
        by_page.setdefault(page, {})[where] = signature
    problems, count = [], 0
    for page, entries in by_page.items():
        _open(browser, f"{base}/{page}")
        for where, signature in entries.items():
            shown = browser.execute_script(_SIGNATURE, where)
            count += 1
            if shown is None:
                problems.append(f"{where}: no entry on /{page}")
                continue
            shown, entry = shown
            if not shown:  # no signature: the fields, in the entry's table
                shown = entry
            for p in signature.parameters.values():
                if p.name in ("self", "cls"):
                    continue
                name = {p.VAR_POSITIONAL: f"*{p.name}", p.VAR_KEYWORD: f"**{p.name}"}.get(
                    p.kind, p.name)
                if not re.search(rf"(?<![\w*]){re.escape(name)}\b", shown):
                    problems.append(f"{where}: parameter {name} not in the signature on /{page}")
    print(f"\n{count} entries of the four faces checked")
    assert count > 30
    assert not problems, "\n".join(problems)
