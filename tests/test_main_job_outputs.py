"""The main job's outputs as a reader meets them: summary.md and summary.json (parameters, dead
letters by reason, centres, drift restarts), clusters.png, the model files in models/, and one
list of outputs behind ``streamrbf run --help``, docs/cli.md and the README.

``python tests/test_main_job_outputs.py --write`` rewrites docs/cli.md's copies of the commands'
help from the real ``--help`` output (what :func:`test_docs_cli_shows_the_real_help` checks).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from streamrbf import RBFKMeans
from streamrbf.cli import main as cli_main
from streamrbf.jobs import cluster_events
from streamrbf.jobs.cluster_events import model_file_name, reason_group
from streamrbf.jobs.run_flags import OUTPUTS

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "streamrbf"
# docs/cli.md's sections that show a command's --help, with the command's arguments.
HELP_SECTIONS = {"streamrbf": [], "streamrbf run": ["run"], "streamrbf replay": ["replay"],
                 "streamrbf bench": ["bench"], "streamrbf inspect": ["inspect"]}


def _help(args: list[str]) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli_main([*args, "--help"]) == 0
    return buf.getvalue().rstrip("\n")


def _help_block(text: str, title: str) -> re.Match[str]:
    found = re.search(rf"^## {re.escape(title)}\n\n```text\n(.*?)\n```", text, re.S | re.M)
    assert found, f"docs/cli.md has no '## {title}' section starting with a text block"
    return found


def write_docs_help() -> None:
    """Rewrite docs/cli.md's copies of the help text from the real --help output."""
    path = ROOT / "docs" / "cli.md"
    text = path.read_text()
    for title, args in HELP_SECTIONS.items():
        m = _help_block(text, title)
        text = text[:m.start(1)] + _help(args) + text[m.end(1):]
    path.write_text(text)


# ------------------------------------------------------------------ one source of the outputs
@pytest.mark.parametrize("title", list(HELP_SECTIONS))
def test_docs_cli_shows_the_real_help(title):
    shown = _help_block((ROOT / "docs" / "cli.md").read_text(), title).group(1)
    assert shown == _help(HELP_SECTIONS[title]), (
        f"docs/cli.md's '## {title}' block differs from the real --help: run "
        "'python tests/test_main_job_outputs.py --write'")


def test_help_readme_and_docs_name_every_output():
    help_text = _help(["run"])
    paragraph = (ROOT / "README.md").read_text().split("The main job writes to", 1)[1]
    paragraph = paragraph.split("\n\n", 1)[0]
    docs = (ROOT / "docs" / "cli.md").read_text()
    for name, _ in OUTPUTS:
        assert f"  {name} " in help_text
        assert f"`{name}`" in paragraph, f"README's outputs paragraph lacks {name}"
        assert f"`{name}`" in docs.split("## Exit codes")[0], f"docs/cli.md's table lacks {name}"


# ------------------------------------------------------------------------------ a clean run
@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """``streamrbf run`` on the built-in streams, in this process, with every warning and log
    record caught: (output dir, stdout, warnings, log records)."""
    out = tmp_path_factory.mktemp("default") / "out"
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    buf = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buf):
            warnings.simplefilter("always")
            assert cli_main(["run", "--output_dir", str(out), "--no-progress"]) == 0
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return out, buf.getvalue(), list(caught), records


def _ours(filename: str) -> bool:
    return Path(filename).resolve().is_relative_to(PACKAGE)


def test_a_clean_run_warns_nothing_from_streamrbf(default_run):
    _, _, caught, records = default_run
    ours = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught
            if _ours(w.filename)]
    assert ours == []
    logged = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in records
              if r.levelno >= logging.WARNING and (r.name.startswith("streamrbf")
                                                   or _ours(r.pathname))]
    assert logged == []


def test_a_clean_run_from_the_shell_prints_nothing_on_stderr(tmp_path):
    # Beam's import-time warning of an install without its GCP extras is filtered out too.
    done = subprocess.run([sys.executable, "-m", "streamrbf.cli", "run", "--streams", "1",
                           "--events_per_stream", "200", "--output_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=200, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("models: 1 file in ") and "streamrbf inspect FILE" in last


def test_summary_json_reports_parameters_reasons_drift_and_models(default_run):
    out, stdout, _, _ = default_run
    summary = json.loads((out / "summary.json").read_text())
    params = summary["parameters"]
    assert params["n_clusters"] == 3 and params["batch_size"] == 100
    assert params["input"].startswith("built-in generator: 4 streams x 2000 events")
    groups = summary["dead_letter_reasons"]
    assert sum(g["count"] for g in groups) == summary["total_dead_letters"] == 49
    assert [g["count"] for g in groups] == sorted((g["count"] for g in groups), reverse=True)
    dead = [json.loads(line) for line in (out / "dead_letters.jsonl").read_text().splitlines()]
    for g in groups:
        assert g["count"] == sum(reason_group(d["reason"]) == g["reason"] for d in dead)
    snaps = [json.loads(line) for line in (out / "snapshots.jsonl").read_text().splitlines()]
    n_reheats = 0
    for key, row in summary["streams"].items():
        if key == "(no key)":
            continue
        hist = sorted((s for s in snaps if s["key"] == key), key=lambda s: s["n_steps"])
        rises = [b["n_seen"] for a, b in zip(hist, hist[1:]) if b["temperature"] > a["temperature"]]
        assert [r["n_seen"] for r in row["reheats"]] == rises
        n_reheats += len(rises)
        assert row["centers"] == hist[-1]["centers"] and row["feature_names"] == ["f0", "f1"]
    # Each reheat is a drift restart; the counters saw them all.
    assert n_reheats >= 1 and summary["drift_alarms"] >= summary["drift_restarts"] >= n_reheats
    assert "models: 4 files in " in stdout.strip().splitlines()[-1]


def test_summary_md_reads_as_a_report(default_run):
    out, _, _, _ = default_run
    md = (out / "summary.md").read_text()
    for heading in ("# streamrbf run", "## Parameters", "## Streams", "## Dead letters by reason",
                    "## Drift and reheats", "## Centres", "### stream-0", "## Files"):
        assert f"\n{heading}\n" in f"\n{md}"
    assert "| n_clusters | 3 |" in md
    assert "| 17 | parse | Expecting property name enclosed in double quotes: line N column N " \
           "(char N) |" in md
    assert re.search(r"\| stream-\d \| \d+ \| \d+ \| [\d.]+ \| [\d.]+ \|", md)  # a reheat row
    assert "| cluster | events | mass | f0 | f1 |" in md
    for name, _ in OUTPUTS:
        assert f"- `{name}`: " in md


def test_each_stream_has_a_model_file_that_inspect_opens(default_run, capsys):
    out, _, _, _ = default_run
    summary = json.loads((out / "summary.json").read_text())
    index = json.loads((out / "models" / "index.json").read_text())
    assert sorted(index) == [f"stream-{i}" for i in range(4)]
    for key, name in index.items():
        path = out / "models" / name
        assert summary["streams"][key]["model_file"] == f"models/{name}"
        model = RBFKMeans.load(path)
        row = summary["streams"][key]
        np.testing.assert_array_equal(model.cluster_centers_, np.asarray(row["centers"]))
        assert model.temperature_ == row["temperature"] and model.n_steps_ == row["steps"]
        assert list(model.feature_names_in_) == ["f0", "f1"]
        assert cli_main(["inspect", str(path)]) == 0
        report = capsys.readouterr().out
        assert "3 clusters x 2 features" in report and "f0, f1" in report


def test_model_files_are_the_models_cluster_per_key_held_at_the_end(tmp_path, monkeypatch):
    # Every field of each stream's model record (centres, masses, temperatures, start and floor,
    # seed, counters, names), across a drift restart: the file is the model, not an estimate.
    from streamrbf.beam import per_key
    from streamrbf.core.persistence import load_state

    held: dict[str, object] = {}
    flush = per_key._ScoreAndLearnDoFn._flush

    class Recorder:  # the key's Beam state, remembering the model of every write
        def __init__(self, state, key):
            self.state, self.key = state, key

        def read(self):
            return self.state.read()

        def write(self, value):
            held[self.key] = value.model
            self.state.write(value)

        def clear(self):
            self.state.clear()

    def recording_flush(self, key, model, final):
        return (yield from flush(self, key, Recorder(model, key), final))

    monkeypatch.setattr(per_key._ScoreAndLearnDoFn, "_flush", recording_flush)
    rng = np.random.default_rng(3)
    lines = []
    for i in range(600):  # "drift" jumps half way; "calm" does not
        a = [0.0, 6.0][i % 2] + (20.0 if i >= 300 else 0.0)
        lines.append({"key": "drift", "x": a + rng.normal(0, 1), "y": rng.normal(0, 1)})
        lines.append({"key": "calm", "x": [0.0, 6.0][i % 2] + rng.normal(0, 1),
                      "y": rng.normal(0, 1)})
    src = tmp_path / "events.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in lines))
    out = tmp_path / "out"
    assert cluster_events.main(["--input", str(src), "--output_dir", str(out), "--n_clusters",
                                "2", "--batch_size", "10", "--seed", "11", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["streams"]["drift"]["reheats"]) >= 1
    assert summary["streams"]["calm"]["reheats"] == []
    index = json.loads((out / "models" / "index.json").read_text())
    assert sorted(index) == sorted(held) == ["calm", "drift"]
    for key, name in index.items():
        state, params, extra = load_state(out / "models" / name, "RBFKMeans")
        m = held[key]
        assert extra["stream"] == key and params["random_state"] == 11
        np.testing.assert_array_equal(state.centers, m.centers)
        np.testing.assert_array_equal(state.masses, m.masses)
        for field in ("temperature", "initial_temperature", "min_temperature", "n_steps",
                      "n_seen", "seed"):
            np.testing.assert_array_equal(getattr(state, field), getattr(m, field), err_msg=field)
        assert state.feature_names == m.feature_names == ("x", "y")
        model = RBFKMeans.load(out / "models" / name)
        assert model.n_steps_ == int(m.n_steps[0]) and model.temperature_ == m.temperature[0]


def test_clusters_png_is_a_figure_of_readable_size(default_run):
    from matplotlib.image import imread

    out, _, _, _ = default_run
    image = imread(out / "clusters.png")
    height, width = image.shape[:2]
    assert 800 <= width <= 2000 and 800 <= height <= 2000
    sample = [json.loads(line) for line in (out / "sample.jsonl").read_text().splitlines()]
    per_key = {k: sum(s["key"] == k for s in sample) for k in {s["key"] for s in sample}}
    assert per_key == {f"stream-{i}": 200 for i in range(4)}
    assert all(len(s["features"]) == 2 and s["cluster"] in (0, 1, 2) for s in sample)


# ---------------------------------------------------------------------- model file names
@pytest.mark.parametrize("key", ["../../etc/passwd", "a/b\\c", "..", ".hidden", "CON", "",
                                 "caf\u00e9 \u2603", "x" * 300, "new\nline", "A", "a"])
def test_model_file_names_are_plain_and_inside_the_folder(tmp_path, key):
    name = model_file_name(key)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}-[0-9a-f]{10}\.safetensors", name)
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_model_file_names_differ_for_keys_that_slug_alike():
    keys = ["A", "a", "a/b", "a-b", "a b", "a\u00e9b", "a?b"]
    assert len({model_file_name(k).lower() for k in keys}) == len(keys)


def test_keys_of_any_text_get_model_files_that_open(tmp_path):
    keys = ["../up", "a/b", "A", "a", "caf\u00e9", "|pipe|"]
    lines = [json.dumps({"key": k, "x": float(i % 2) * 5, "y": 0.1 * (i % 3)})
             for i in range(40) for k in keys]
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert cluster_events.main(["--input", str(src), "--output_dir", str(out), "--n_clusters",
                                "2", "--batch_size", "10", "--quiet"]) == 0
    index = json.loads((out / "models" / "index.json").read_text())
    assert sorted(index) == sorted(keys)
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(
        [*index.values(), "index.json"])
    for name in index.values():
        assert RBFKMeans.load(out / "models" / name).n_clusters == 2
    md = (out / "summary.md").read_text()
    assert "\\|pipe\\|" in md and "| |pipe| |" not in md
    # a second run into the same folder leaves only its own model files
    src.write_text("\n".join(line for line in lines if '"key": "A"' in line) + "\n")
    assert cluster_events.main(["--input", str(src), "--output_dir", str(out), "--n_clusters",
                                "2", "--batch_size", "10", "--quiet"]) == 0
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(
        [model_file_name("A"), "index.json"])


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_docs_help()
    else:
        sys.exit("usage: python tests/test_main_job_outputs.py --write")
