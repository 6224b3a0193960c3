"""The tutorials are complete: each page of ``docs/tutorials/`` has Python blocks that run by
default and shows what they print.

The blocks themselves run, and their output is compared with the page, in
``tests/test_doc_blocks.py``, which runs every page under ``docs/`` (its docstring has the
conventions: ``text`` blocks as expected output, ``<!-- slow: ... -->`` and
``<!-- no-run: ... -->`` marks). This file only adds what a tutorial owes a reader beyond that.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_doc_blocks import PAGES, code_blocks, runs

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
NAMES = ["river", "beam", "deep_clustering", "temperature"]


def test_every_tutorial_is_listed():
    assert sorted(p.stem for p in TUTORIALS.glob("*.md")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_tutorial_runs_by_default_and_shows_its_output(name):
    path = TUTORIALS / f"{name}.md"
    plan = runs(code_blocks(path.read_text(encoding="utf-8")))
    assert plan, f"{path} has no runnable ```python block"
    # Run whole in the default suite (no slow block), by test_doc_blocks.py.
    assert all(block.mode == "run" for block, _ in plan), f"{path} has a slow block"
    assert any(p.id == f"tutorials/{name}.md" for p in PAGES)
    # Every block that prints shows what it prints.
    silent = [block.line for block, out in plan if out is None and "print(" in block.code]
    assert not silent, f"{path}: blocks at lines {silent} print but show no ```text output"
