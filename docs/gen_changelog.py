"""The Changelog page: CHANGELOG.md of the repository, as it is (run by mkdocs-gen-files)."""

from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[1]

with mkdocs_gen_files.open("changelog.md", "w") as page:
    page.write((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))
mkdocs_gen_files.set_edit_path("changelog.md", "../CHANGELOG.md")
