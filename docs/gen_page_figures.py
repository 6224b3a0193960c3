"""Figures that a page's own code draws: at build time, the page's ```python blocks run in order
in one namespace (as a reader pasting them would, and as ``tests/test_doc_blocks.py`` runs them),
in a temporary folder, up to the block that saves the figure; the PNG is added to the site next
to the page (run by mkdocs-gen-files).

A page listed in ``FIGURES`` shows ``![...](NAME.png)``, and one of its blocks writes
``NAME.png`` to the working directory.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
FIGURES = {"tutorials/temperature.md": ["temperature.png"]}  # page: the figures its code draws

_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```\s*$", re.M | re.S)


def draw(page: str, names: list[str]) -> dict[str, bytes]:
    """Run the page's Python blocks until every figure of ``names`` is written; their PNGs."""
    path = DOCS / page
    blocks = _BLOCK.findall(path.read_text(encoding="utf-8"))
    namespace: dict = {"__name__": "__main__"}
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            for code in blocks:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(code, str(path), "exec"), namespace)
                if all(Path(name).is_file() for name in names):
                    return {name: Path(name).read_bytes() for name in names}
        finally:
            os.chdir(here)
    raise RuntimeError(f"{page}: no block wrote {names}")


if __name__ == "<run_path>":  # mkdocs-gen-files runs this file with runpy.run_path
    import mkdocs_gen_files

    for page, names in FIGURES.items():
        for name, png in draw(page, names).items():
            with mkdocs_gen_files.open(str(Path(page).parent / name), "wb") as out:
                out.write(png)
