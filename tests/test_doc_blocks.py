"""The docs run as pasted: every ```python block of every page under ``docs/`` runs, and what it
prints is what the page shows.

Conventions (every ``docs/*.md`` and ``docs/**/*.md``; the Contributing note of
``docs/getting_started.md`` says the same for authors):

- A fence whose info string starts with ``python`` (``python``, ``python title="x.py"``,
  ``{.python}``) is run. The blocks of one page run in order in one namespace, as a reader pasting
  them into one fresh Python session would: ``__name__ == "__main__"``, the working directory a
  fresh temporary folder, torch on one thread.
- The expected output of a block is the ``text`` block that follows it (prose may sit between
  them, another fence may not). What the block prints to stdout is compared with it as doctest
  compares (``ELLIPSIS``, ``NORMALIZE_WHITESPACE`` and pytest's ``NUMBER``): ``...`` stands for
  any text (timings, memory, dates, paths), and a float matches to the precision it is written
  with (``NUMBER`` needs as many numbers shown as printed: where an ``...`` swallows numbers,
  lines are compared one by one, so that ``NUMBER`` still applies to the other lines). A block
  without a ``text`` block after it may print anything.
- An HTML comment on the line right before the fence marks a block that is not run by default,
  with its reason (the comment is invisible on the site):

  - ``<!-- slow: REASON -->``: needs minutes, a GPU or extra processes. By default the page
    runs up to its first slow block (the blocks share one namespace: later blocks may need it);
    the opt-in run ``python -m pytest -m slow tests/test_doc_blocks.py`` runs the page whole;
  - ``<!-- no-run: REASON -->``: never run (it needs a cloud project, a cluster, ...). The class
    ``.no-run`` in the info string (``python {.no-run}``) is the same, without a reason.

  Shell commands and other output use other languages (``bash``, ``text``, ``yaml``, ...) and are
  never run.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NO_RUN = ".no-run"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARK = re.compile(r"^\s*<!--\s*(?P<mode>slow|no-run)\s*:\s*(?P<reason>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its first code line (1-based), info string, code (dedented by the
    fence's indent) and how it runs: ``"run"``, ``"slow"`` or ``"no-run"`` (with a reason)."""

    line: int
    info: str
    code: str
    mode: str = "run"
    reason: str = ""

    @property
    def language(self) -> str:
        return language(self.info)

    @property
    def is_python(self) -> bool:
        return self.language == "python"


def language(info: str) -> str:
    """The language of a fence: ``python`` for ``python {.no-run}``, ``{.python .x}``, ..."""
    first = info.replace("{", " ").split()
    return first[0].lstrip(".").lower() if first else ""


def code_blocks(text: str) -> list[Block]:
    """Fenced code blocks of a Markdown page, in order. Fences may be indented (admonitions,
    lists): the code is dedented by the fence's indent. A ``<!-- slow: ... -->`` or
    ``<!-- no-run: ... -->`` comment on the line right before a fence sets its mode."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        mode, reason = "run", ""
        mark = _MARK.match(lines[i - 1]) if i else None
        if mark:
            mode, reason = mark["mode"], mark["reason"]
        elif NO_RUN in info:
            mode = "no-run"
        start = i + 1
        j = start
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and set(close) == {fence[0]}:
                break
            j += 1
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[start:j]]
        blocks.append(Block(start + 1, info, "\n".join(body) + "\n", mode, reason))
        i = j + 1
    return blocks


def runs(blocks: list[Block]) -> list[tuple[Block, Block | None]]:
    """The Python blocks that run (``mode != "no-run"``), each with its expected output: the
    ``text`` block right after it (the next fence), or None."""
    plan = []
    for n, block in enumerate(blocks):
        if block.is_python and block.mode != "no-run":
            after = blocks[n + 1] if n + 1 < len(blocks) else None
            plan.append((block, after if after is not None and after.language == "text" else None))
    return plan


def _checker() -> tuple[doctest.OutputChecker, int]:
    """doctest's checker with the flags of the project's doctests (pyproject.toml)."""
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    try:  # pytest's checker adds NUMBER (floats match to the precision they are written with)
        from _pytest.doctest import _get_checker, _get_number_flag

        return _get_checker(), flags | _get_number_flag()
    except ImportError:  # pragma: no cover - an older or newer pytest
        return doctest.OutputChecker(), flags


def check_output(want: str, got: str) -> str | None:
    """None if ``got`` is what ``want`` shows, else a diff for the failure message."""
    checker, flags = _checker()
    if checker.check_output(want, got, flags):
        return None
    # pytest's NUMBER only applies where both texts hold as many numbers: line by line, a line
    # whose numbers an ``...`` swallows leaves NUMBER to the other lines.
    wants, gots = want.splitlines(), got.splitlines()
    if len(wants) == len(gots) and all(
            checker.check_output(w + "\n", g + "\n", flags) for w, g in zip(wants, gots)):
        return None
    example = doctest.Example("pass", want)
    return checker.output_difference(example, got, flags | doctest.REPORT_NDIFF)


def run_page(path: Path, *, slow: bool = False) -> None:
    """Run the page's blocks in order in one namespace; fail on the first error or on the first
    output that is not the one shown. Runs in the current working directory. Without ``slow``
    the page stops before its first slow block."""
    text = path.read_text(encoding="utf-8")
    namespace = {"__name__": "__main__"}
    for block, expected in runs(code_blocks(text)):
        if block.mode == "slow" and not slow:
            break
        out = io.StringIO()
        # Padding the code puts tracebacks (and failed asserts) on the page's own line numbers.
        code = compile("\n" * (block.line - 1) + block.code, str(path), "exec")
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
        if expected is not None:
            diff = check_output(expected.code, out.getvalue())
            assert diff is None, (
                f"{path.relative_to(ROOT)}:{block.line}: the block prints other output than the "
                f"text block at line {expected.line} shows:\n{diff}")


def _pages() -> list:
    """``(page, slow)`` for every page with a Python block that runs: the default run of a page
    stops before its first slow block; a page with slow blocks also runs whole, opt-in."""
    params = []
    for path in sorted(DOCS.rglob("*.md")):
        plan = runs(code_blocks(path.read_text(encoding="utf-8")))
        name = path.relative_to(DOCS).as_posix()
        modes = [b.mode for b, _ in plan]
        if modes[:1] == ["run"]:
            params.append(pytest.param(path, False, id=name))
        if "slow" in modes:
            params.append(pytest.param(path, True, marks=pytest.mark.slow, id=f"{name}[slow]"))
    return params


PAGES = _pages()


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("path", "slow"), PAGES)
def test_page_runs_as_shown(path, slow, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_page(path, slow=slow)


def test_every_page_with_code_is_checked():
    """Every page under docs/ with a ```python block has a block that runs (or says why not),
    and every marked block gives its reason."""
    for path in sorted(DOCS.rglob("*.md")):
        for block in code_blocks(path.read_text(encoding="utf-8")):
            where = f"{path.relative_to(ROOT)}:{block.line}"
            if block.mode in ("slow", "no-run") and NO_RUN not in block.info:
                assert block.reason, f"{where}: a marked block states no reason"
            if block.mode == "slow":
                assert block.is_python, f"{where}: only ```python blocks can be slow"
    assert {p.id for p in PAGES} >= {"index.md", "getting_started.md", "tutorials/river.md",
                                      "tutorials/beam.md", "tutorials/temperature.md",
                                      "tutorials/deep_clustering.md"}


def test_block_parser():
    page = "\n".join([
        "text", "```python", "a = 1", "```", "```python {.no-run}", "b = 2", "```",
        "!!! note", "    ```python title=\"x.py\"", "    c = a + 1", "    ```",
        "```text", "out", "```", "````{.python .no-run}", "```", "````",
        "<!-- slow: trains for minutes -->", "```python", "d = 4", "```",
        "Prose.", "```text", "4", "```",
        "  <!-- no-run: needs Dataflow -->", "  ```python", "  e = 5", "  ```",
    ])
    blocks = code_blocks(page)
    assert [(b.line, b.mode) for b in blocks] == [
        (3, "run"), (6, "no-run"), (10, "run"), (13, "run"), (16, "no-run"), (20, "slow"),
        (24, "run"), (28, "no-run")]
    assert blocks[2].code == "c = a + 1\n"
    assert (blocks[5].reason, blocks[7].reason) == ("trains for minutes", "needs Dataflow")
    plan = runs(blocks)
    assert [(b.line, out and out.code) for b, out in plan] == [
        (3, None), (10, "out\n"), (20, "4\n")]


def test_output_comparison():
    assert check_output("T = 0.31\n", "T = 0.3094\n") is None        # NUMBER
    assert check_output("took ... s on ...\n", "took 1.52 s on 2025-01-01\n") is None
    assert check_output("T = 0.31\ntook ... s\n", "T = 0.3094\ntook 1.52 s\n") is None
    assert check_output("a   b\nc\n", "a b\n  c\n") is None          # whitespace
    assert check_output("T = 0.31\n", "T = 0.35\n") is not None     # a number off
    assert check_output("3 events\n", "4 events\n") is not None
