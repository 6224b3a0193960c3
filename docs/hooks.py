"""mkdocs hook (``hooks:`` in mkdocs.yml) and Griffe extension (``extensions:`` of mkdocstrings):
what the site needs beyond the Markdown and the docstrings as they are written.

- **Maths at build time.** ``pymdownx.arithmatex`` (generic mode) marks ``$...$`` and
  ``$$...$$``; this hook turns each formula into MathML with ``latex2mathml`` (the ``docs``
  extra), which every current browser draws itself: no script, no CDN, no web font, so the site
  reads the same offline. A formula ``latex2mathml`` cannot convert fails the build.
- **Sphinx roles** of the docstrings (``:class:`ClusterPerKey```, ``:meth:`fit```,
  ``:math:`2T```), which Markdown shows as a literal ``:class:`` before inline code: in the API
  pages ``:math:`` becomes a formula and the object roles optional mkdocs-autorefs
  cross-references (a link when the object is documented on the site, plain code otherwise; an
  optional reference never warns, so ``--strict`` is unaffected).
- **Lists right after a paragraph.** Python-Markdown needs a blank line before a list; without
  it (``text:`` then ``- item``, or a list item's second paragraph followed by the next item)
  the items collapse into the paragraph with a literal ``- ``. The hook adds the blank line,
  outside code fences.
- **Test marks.** ``<!-- slow: ... -->`` and ``<!-- no-run: ... -->`` before a fence are for
  ``tests/test_doc_blocks.py``; inside a list item an HTML comment ends the list and leaves the
  code block in a paragraph, so the hook drops them from what is rendered.
- **Version and repository.** The footer says which version the site documents
  (``streamrbf.__version__``) and links the repository: ``[project.urls]`` of pyproject.toml
  (``Repository`` or ``Source``), else the clone's ``origin`` remote, else no link.
- **Combined parameter entries** (``batch_size, max_buffering_secs``, one description for two
  parameters): Griffe's numpy parser gives every name of such an entry the type and default of
  the first; :class:`CombinedParameters` gives each its own, from the signature.
"""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path
from typing import Any

try:
    import griffe
except ImportError:  # pragma: no cover - mkdocstrings-python always brings it
    griffe = None

ROOT = Path(__file__).resolve().parents[1]
_CORE = ROOT / "streamrbf" / "core"

# -- Markdown, before it is rendered -------------------------------------------------------------

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})")
_MARK = re.compile(r"^\s*<!--\s*(?:slow|no-run)\s*:.*-->\s*$")
_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s+\S")


def fix_markdown(markdown: str) -> str:
    """Drop the test marks before fences, and put a blank line before every list item that
    follows a paragraph (not another item of the same block), outside code fences."""
    out: list[str] = []
    fence = None  # the closing fence of the block we are in
    block_starts_with_item = False  # does the current run of non-blank lines start with an item?
    for line in markdown.split("\n"):
        if fence is not None:
            out.append(line)
            if line.strip().startswith(fence) and set(line.strip()) == {fence[0]}:
                fence = None
            continue
        m = _FENCE.match(line)
        if m:
            fence = m["fence"]
        elif _MARK.match(line):
            continue
        if not line.strip():
            block_starts_with_item = False
        elif _ITEM.match(line) and not m:
            if out and out[-1].strip() and not block_starts_with_item:
                out.append("")
            if not out or not out[-1].strip():
                block_starts_with_item = True
        elif not out or not out[-1].strip():
            block_starts_with_item = False
        out.append(line)
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    return fix_markdown(markdown)


# -- HTML, after rendering -----------------------------------------------------------------------

_MATH_ROLE = re.compile(r":math:<code>(.*?)</code>", re.DOTALL)
_ROLE = re.compile(
    r":(?:class|func|meth|mod|attr|data|obj|exc):<code>"
    r"(?:(?P<title>[^<]+?) &lt;(?P<explicit>[\w.]+)&gt;|(?P<tilde>~?)(?P<target>[\w.]+)(?:\(\))?)"
    r"</code>"
)
# What pymdownx.arithmatex (generic mode) writes for $...$ and $$...$$ (or \(...\), \[...\]).
_ARITHMATEX = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*(?P<open>\\\(|\\\[)(?P<tex>.*?)'
    r'(?:\\\)|\\\])\s*</(?P=tag)>', re.DOTALL)


def tex_to_mathml(tex: str, *, block: bool = False) -> str:
    """MathML for a TeX formula (``tex`` as plain text, not HTML-escaped)."""
    from latex2mathml.converter import convert

    return convert(tex.strip(), display="block" if block else "inline")


def render_maths(html_text: str, where: str = "") -> str:
    """Every arithmatex formula of a page, as MathML (the TeX source kept as the title)."""

    def one(m: re.Match) -> str:
        tex = html.unescape(m["tex"])
        try:
            mathml = tex_to_mathml(tex, block=m["tag"] == "div")
        except Exception as error:  # a formula latex2mathml cannot read: fail the build
            raise ValueError(f"{where}: cannot render the formula {tex!r}: {error}") from error
        return f'<{m["tag"]} class="arithmatex">{mathml}</{m["tag"]}>'

    return _ARITHMATEX.sub(one, html_text)


def _page_module(src_uri: str) -> str | None:
    """``reference/river.md`` -> ``streamrbf.river``, ``reference/engine.md`` ->
    ``streamrbf.core.engine`` (a module of the core): where unqualified names are looked up."""
    if not src_uri.startswith("reference/") or src_uri == "reference/index.md":
        return None
    name = src_uri.removeprefix("reference/").removesuffix(".md").replace("/", ".")
    if (_CORE / f"{name}.py").is_file():
        return f"streamrbf.core.{name}"
    return f"streamrbf.{name}"


def _roles(html_text: str, module: str) -> str:
    html_text = _MATH_ROLE.sub(
        lambda m: f'<span class="arithmatex">\\({m.group(1)}\\)</span>', html_text)

    def role(m: re.Match) -> str:
        if m["explicit"]:  # :meth:`title <target>`
            title, target = m["title"], m["explicit"]
        else:
            target = m["target"]
            title = target.rsplit(".", 1)[-1] if m["tilde"] else target
        identifier = target if target.startswith("streamrbf") else f"{module}.{target}"
        return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

    return _ROLE.sub(role, html_text)


def on_page_content(html_text: str, page: Any, **kwargs: Any) -> str:
    module = _page_module(page.file.src_uri)
    if module is not None:
        html_text = _roles(html_text, module)
    return render_maths(html_text, page.file.src_uri)


# -- the site's version and repository ------------------------------------------------------------


def _version() -> str:
    text = (ROOT / "streamrbf" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__\s*=\s*["\']([^"\']+)', text, re.M).group(1)


def repository_url() -> str | None:
    """``[project.urls]`` Repository (or Source) of pyproject.toml, else the ``origin`` remote
    of the clone as an https address, else None."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = None
    if tomllib is not None:
        urls = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        urls = urls.get("project", {}).get("urls", {})
        for name in ("Repository", "Source", "Homepage"):
            if urls.get(name):
                return urls[name]
    try:
        remote = subprocess.run(["git", "remote", "get-url", "origin"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if remote.startswith("git@") and ":" in remote:  # git@host:owner/name.git
        host, path = remote[4:].split(":", 1)
        remote = f"https://{host}/{path}"
    if remote.startswith("https://"):
        return remote.removesuffix(".git")
    return None


def on_config(config: Any, **kwargs: Any) -> Any:
    version = _version()
    config["extra"]["version"] = version
    notice = f"streamrbf {version} · Apache-2.0"
    url = repository_url()
    if url:
        config["repo_url"] = config["repo_url"] or url
        notice += f' · <a href="{html.escape(url)}">source repository</a>'
    config["copyright"] = notice
    return config


# -- Griffe: combined entries of a numpy Parameters section --------------------------------------

_SECTION = re.compile(r"^(?P<indent>\s*)(Parameters|Other Parameters)\s*\n(?P=indent)-{3,}\s*$",
                      re.M)


def combined_entries(docstring: str) -> set[str]:
    """Names of the ``a, b`` entries (without a ``: type``) of a numpy docstring's Parameters
    sections."""
    names: set[str] = set()
    for section in _SECTION.finditer(docstring):
        indent = section["indent"]
        body = docstring[section.end():]
        following = re.search(rf"^{indent}\S.*\n{indent}-{{3,}}\s*$", body, re.M)
        body = body[:following.start()] if following else body
        for m in re.finditer(rf"^{indent}(\w+(?:, \w+)+)\s*$", body, re.M):
            names.update(m.group(1).split(", "))
    return names


if griffe is not None:

    class CombinedParameters(griffe.Extension):
        """Each name of a combined numpy entry gets its own type and default from the
        signature (Griffe gives them all the first name's)."""

        def on_package(self, *, pkg: Any, **kwargs: Any) -> None:
            if pkg.name == "streamrbf":
                self._walk(pkg, set())

        def _walk(self, obj: Any, seen: set[int]) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            for member in list(obj.members.values()):
                if member.is_alias:
                    continue
                self._fix(member)
                if member.is_class or member.is_module:
                    self._walk(member, seen)

        @staticmethod
        def _fix(obj: Any) -> None:
            if obj.docstring is None or not (obj.is_class or obj.is_function):
                return
            names = combined_entries(obj.docstring.value)
            if not names:
                return
            try:
                parameters = obj.parameters
            except Exception:  # a class without __init__
                return
            for section in obj.docstring.parsed:
                if section.kind.value not in ("parameters", "other parameters"):
                    continue
                for entry in section.value:
                    if entry.name in names and entry.name in parameters:
                        param = parameters[entry.name]
                        entry.annotation = param.annotation
                        entry.value = param.default
