"""mkdocs hook (``hooks:`` in mkdocs.yml): the Sphinx roles of the docstrings, rendered.

The docstrings are numpy style and read well in ``help()``; some use Sphinx roles
(``:class:`ClusterPerKey```, ``:meth:`fit```, ``:math:`2T```), which Markdown shows as a literal
``:class:`` before inline code. In the API pages this hook turns ``:math:`` into MathJax (as
``pymdownx.arithmatex`` does for ``$...$``) and the object roles into optional mkdocs-autorefs
cross-references: a link when the object is documented on the site, plain code otherwise (an
optional reference never warns, so ``--strict`` is unaffected).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_MATH = re.compile(r":math:<code>(.*?)</code>", re.DOTALL)
_ROLE = re.compile(
    r":(?:class|func|meth|mod|attr|data|obj|exc):<code>"
    r"(?:(?P<title>[^<]+?) &lt;(?P<explicit>[\w.]+)&gt;|(?P<tilde>~?)(?P<target>[\w.]+)(?:\(\))?)"
    r"</code>"
)


_CORE = Path(__file__).resolve().parents[1] / "streamrbf" / "core"


def _page_module(src_uri: str) -> str | None:
    """``reference/river.md`` -> ``streamrbf.river``, ``reference/engine.md`` ->
    ``streamrbf.core.engine`` (a module of the core): where unqualified names are looked up."""
    if not src_uri.startswith("reference/") or src_uri == "reference/index.md":
        return None
    name = src_uri.removeprefix("reference/").removesuffix(".md").replace("/", ".")
    if (_CORE / f"{name}.py").is_file():
        return f"streamrbf.core.{name}"
    return f"streamrbf.{name}"


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    module = _page_module(page.file.src_uri)
    if module is None:
        return html
    html = _MATH.sub(lambda m: f'<span class="arithmatex">\\({m.group(1)}\\)</span>', html)

    def role(m: re.Match) -> str:
        if m["explicit"]:  # :meth:`title <target>`
            title, target = m["title"], m["explicit"]
        else:
            target = m["target"]
            title = target.rsplit(".", 1)[-1] if m["tilde"] else target
        identifier = target if target.startswith("streamrbf") else f"{module}.{target}"
        return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

    return _ROLE.sub(role, html)
