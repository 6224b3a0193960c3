"""The tutorials run: every ```python block of a page, in order, in one fresh namespace.

Conventions (docs/tutorials/*.md):

- A fence whose info string starts with ``python`` (``python``, ``python title="x.py"``) is run.
- A block that must not run (Dataflow / Flink snippets) carries the class ``.no-run``: its
  fence opens with ``python {.no-run}`` (pymdownx.superfences renders it as an ordinary
  highlighted Python block with an extra CSS class). Shell commands and expected output use
  other languages (``bash``, ``text``, ``yaml``) and are never run.
- The pages check their own results with ``assert`` statements; expected output is shown in the
  ``text`` block after a code block and is not compared (numbers may move with library versions).

Each page runs with the working directory in a temporary folder, torch on one thread and
``__name__ == "__main__"``, as if pasted into a fresh Python session.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
PAGES = ["river", "beam", "deep_clustering", "temperature"]
NO_RUN = ".no-run"

pytestmark = pytest.mark.timeout(300)

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def code_blocks(text: str) -> list[tuple[int, str, str]]:
    """Fenced code blocks of a Markdown page: ``(first code line, info string, code)``; fences
    may be indented (admonitions, lists): the code is dedented by the fence's indent."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        start = i + 1
        j = start
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and set(close) == {fence[0]}:
                break
            j += 1
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[start:j]]
        blocks.append((start + 1, info, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def language(info: str) -> str:
    """The language of a fence: ``python`` for ``python {.no-run}``, ``{.python .x}``, ..."""
    first = info.replace("{", " ").split()
    return first[0].lstrip(".").lower() if first else ""


def runnable(info: str) -> bool:
    return language(info) == "python" and NO_RUN not in info


def test_block_parser():
    page = "\n".join([
        "text", "```python", "a = 1", "```", "```python {.no-run}", "b = 2", "```",
        "!!! note", "    ```python title=\"x.py\"", "    c = a + 1", "    ```",
        "```text", "out", "```", "````{.python .no-run}", "```", "````",
    ])
    blocks = code_blocks(page)
    assert [(line, runnable(info)) for line, info, _ in blocks] == [
        (3, True), (6, False), (10, True), (13, False), (16, False)]
    assert blocks[2][2] == "c = a + 1\n"


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("page", PAGES)
def test_tutorial_runs(page, tmp_path, monkeypatch):
    path = TUTORIALS / f"{page}.md"
    text = path.read_text(encoding="utf-8")
    blocks = [(line, code) for line, info, code in code_blocks(text) if runnable(info)]
    assert blocks, f"{path} has no runnable ```python block"
    assert "```text" in text, f"{path} shows no expected output (```text block)"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    for line, code in blocks:
        # Padding the code puts tracebacks (and failed asserts) on the page's own line numbers.
        exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)
