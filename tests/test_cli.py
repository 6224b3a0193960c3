"""The ``streamrbf`` command: help, version, exit codes, inspect, progress bars, bench's handling.

The main job itself is tested end to end in test_beam_pipeline.py; here it runs once, small, on
a pretend terminal, to see its progress bar. The benchmark suites run for minutes, so ``bench``
runs here with stand-in suites.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import types
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from streamrbf import RBFKMeans, cli
from streamrbf.cli import main
from streamrbf.console import progress_enabled

pytestmark = pytest.mark.timeout(120)


class _Terminal(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def model_file(tmp_path: Path) -> tuple[Path, RBFKMeans]:
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.3, (n, 3)) for c, n in ((0, 120), (4, 60), (-4, 20))])
    model = RBFKMeans(3, random_state=0).fit(X)
    path = tmp_path / "m.safetensors"
    model.save(path)
    return path, model


def _one_line_error(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"streamrbf {command}: error: "), err
    return lines[0]


# ------------------------------------------------------------------------- help and version
def test_top_level_help_lists_the_commands_and_exit_codes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("run", "bench", "inspect"))
    assert "exit codes" in out and "130" in out and "examples" in out
    assert "'streamrbf' is 'streamrbf run'" in " ".join(out.split())


def test_version_comes_from_the_package_metadata(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"streamrbf {version('streamrbf')}"


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ("run", ("assignments.jsonl", "dead_letters.jsonl", "snapshots.jsonl", "sample.jsonl",
                 "summary.json", "summary.md", "clusters.png", "models/", "--no-progress",
                 "BEAM_FLAG")),
        ("bench", ("bench.md", "bench.json", "--quick", "--no-progress")),
        ("inspect", ("MODEL", "--json", "--plot", "temperature", "masses")),
    ],
)
def test_every_command_explains_itself(command, mentions, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: streamrbf {command}")
    for text in (*mentions, "examples:", "exit codes:"):
        assert text in out, (command, text)


def test_the_console_script_and_module_exit_with_the_codes(tmp_path):
    script = Path(sys.executable).with_name("streamrbf")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "streamrbf.cli"]
    done = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("streamrbf ")
    done = subprocess.run([*cmd, "nosuch"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice: 'nosuch'" in done.stderr
    done = subprocess.run([*cmd, "inspect", str(tmp_path / "none.safetensors")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    _one_line_error(done.stderr, "inspect")


# ------------------------------------------------------------------------------ exit codes
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nosuch"], "invalid choice: 'nosuch'"),
        (["inspect"], "the following arguments are required: MODEL"),
        (["inspect", "m.safetensors", "--plot", "centres.gif"], "should end in .png"),
        (["run", "--n_clusters", "0"], "--n_clusters: expected a whole number >= 1"),
        (["run", "--half_life", "0"], "--half_life: expected a number > 0"),
        (["run", "--temperature_decay", "1.5"], "--temperature_decay: expected a number in (0, 1]"),
        (["run", "--input", "a.jsonl", "--input_topic", "t"], "not allowed with argument"),
        (["--batch_size", "x"], "--batch_size: expected a whole number"),
        (["bench", "nosuch"], "invalid choice: 'nosuch'"),
        (["bench", "--out"], "expected one argument"),
    ],
)
def test_bad_usage_is_exit_code_2_with_argparse_message(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: streamrbf" in err and message in err


def test_a_misspelt_flag_for_the_main_job_is_exit_code_2(tmp_path, capsys):
    # The job's unknown flags go to Beam; a near miss of a known flag is a usage error.
    assert main(["run", "--ouptut_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --ouptut_dir (did you mean --output_dir?)" in err
    assert not any(tmp_path.iterdir())


def test_runner_flags_beam_python_does_not_declare(tmp_path, capsys):
    from streamrbf.jobs.cluster_events import beam_options
    from streamrbf.jobs.run_flags import run_parser

    # Flink's --checkpointing_interval (docs/beam.md) is a job-server option, not a Python one:
    # passed on to a remote runner, with a note...
    flink = ["--runner=FlinkRunner", "--checkpointing_interval=60000"]
    beam_options(flink, run_parser())
    assert "passing flags no Beam Python option declares to the runner: " \
        "--checkpointing_interval=60000" in capsys.readouterr().err
    # ...but refused on the local runners, which would silently ignore it
    out = tmp_path / "out"
    assert main(["run", "--number_of_clusters=5", "--output_dir", str(out)]) == 2
    assert "unrecognized arguments: --number_of_clusters=5" in capsys.readouterr().err
    assert main(["run", "--output_dir", str(out), "stray"]) == 2
    assert not out.exists()


def test_a_missing_input_is_exit_code_1_and_one_line(tmp_path, capsys):
    pattern, out = str(tmp_path / "none-*.jsonl"), tmp_path / "out"
    assert main(["run", "--input", pattern, "--output_dir", str(out)]) == 1
    # (Beam may log a warning of its own when it is imported: only our line counts)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("streamrbf")]
    assert err == [f"streamrbf run: error: --input {pattern!r} matches no file"]
    assert not out.exists()  # a job that cannot start writes nothing


def test_interrupt_is_exit_code_130(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_inspect", interrupted)
    assert main(["inspect", "m.safetensors"]) == 130
    assert "streamrbf inspect: interrupted" in capsys.readouterr().err


def test_an_unexpected_error_is_exit_code_1_with_a_last_line(monkeypatch, capsys):
    def broken(argv):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "_inspect", broken)
    assert main(["inspect", "m.safetensors"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err  # a bug keeps its traceback
    last = err.strip().splitlines()[-1]
    assert last == "streamrbf inspect: error: RuntimeError: boom second line"


# --------------------------------------------------------------------------------- inspect
def test_inspect_prints_a_report_with_a_mass_chart(model_file, capsys):
    path, model = model_file
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 clusters x 3 features, float64" in out
    assert f"temperature  {model.temperature_:.6g}" in " ".join(out.split("\n"))
    assert "decay auto: 0.9 per fit iteration, per 100 events of a stream" in out
    rows = [ln for ln in out.splitlines() if ln.strip()[:1].isdigit() and "%" in ln]
    assert len(rows) == 3
    heaviest = int(np.argmax(model.counts_))
    bars = {int(r.split()[0]): r.count("\u2588") + r.count("#") for r in rows}
    assert max(bars, key=bars.get) == heaviest


def test_inspect_json_equals_the_model(model_file, capsys):
    path, model = model_file
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    schedule = model.temperature_schedule_
    assert info["kind"] == "RBFKMeans" and info["file"] == str(path)
    assert (info["n_clusters"], info["n_features"], info["dtype"]) == (3, 3, "float64")
    assert info["temperature"] == {"current": model.temperature_, "initial": schedule.initial,
                                   "minimum": schedule.minimum, "decay": "auto"}
    assert "deprecated" not in info["params"].values()
    assert info["n_steps"] == model.n_steps_
    assert info["masses"] == model.counts_.tolist()
    assert info["centers"] == model.cluster_centers_.tolist()
    assert info["feature_names"] is None
    assert info["params"]["n_clusters"] == 3


def test_inspect_json_has_the_feature_names(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(np.random.default_rng(1).normal(size=(60, 2)), columns=["amount", "lag"])
    RBFKMeans(2, random_state=0).fit(X).save(tmp_path / "named.safetensors")
    assert main(["inspect", str(tmp_path / "named.safetensors"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["feature_names"] == ["amount", "lag"]


def test_inspect_shows_a_streams_sample_when_the_file_holds_one(model_file, tmp_path, capsys):
    path, model = model_file  # fitted: no sample
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sample"] is None
    stream = RBFKMeans(3, random_state=0)
    X = np.random.default_rng(2).normal(size=(1000, 3))
    for s in range(0, 1000, 250):
        stream.partial_fit(X[s:s + 250])
    stream.save(tmp_path / "stream.safetensors")
    assert main(["inspect", str(tmp_path / "stream.safetensors"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sample"] == {"rows": 1000, "seen": 1000,
                              "half_life": stream._sample.half_life}
    assert main(["inspect", str(tmp_path / "stream.safetensors")]) == 0
    assert "sample       1000 rows of the 1000 events seen" in capsys.readouterr().out
    assert main(["inspect", str(path)]) == 0
    assert "sample " not in capsys.readouterr().out


@pytest.mark.parametrize("d", [1, 2, 5])
def test_inspect_plot_writes_a_png(tmp_path, d, capsys):
    X = np.random.default_rng(d).normal(size=(150, d)) + np.repeat(np.eye(3, d) * 6, 50, axis=0)
    RBFKMeans(3, random_state=0).fit(X).save(tmp_path / "m.safetensors")
    png = tmp_path / "centres.png"
    assert main(["inspect", str(tmp_path / "m.safetensors"), "--plot", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert f"wrote {png}" in capsys.readouterr().out


def test_inspect_refuses_a_foreign_file_with_exit_code_3(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    assert main(["inspect", str(bad)]) == 3
    line = _one_line_error(capsys.readouterr().err, "inspect")
    assert "not a streamrbf model file" in line and str(bad) in line


@pytest.mark.parametrize("damage", ["missing", "truncated", "nan", "directory"])
def test_inspect_refuses_missing_or_corrupt_files_with_exit_code_3(model_file, damage, capsys):
    path, _ = model_file
    if damage == "missing":
        path = path.with_name("gone.safetensors")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:60])
    elif damage == "nan":  # a well-formed file whose centres hold NaN
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(path), framework="pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        tensors["centers"][0, 0] = float("nan")
        save_file(tensors, str(path), metadata=meta)
    else:
        path = path.parent
    assert main(["inspect", str(path)]) == 3
    line = _one_line_error(capsys.readouterr().err, "inspect")
    assert str(path) in line


# -------------------------------------------------------------------------------- progress
def test_progress_only_on_a_terminal_and_not_when_disabled():
    assert progress_enabled(stream=io.StringIO()) is False
    assert progress_enabled(stream=_Terminal()) is True
    assert progress_enabled(True, stream=_Terminal()) is False
    assert progress_enabled(stream=object()) is False  # no isatty at all


def test_the_main_job_draws_a_bar_on_a_terminal_only(tmp_path, monkeypatch, capsys):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    # no command word: flags alone run the main job
    argv = ["--output_dir", str(tmp_path), "--streams", "2", "--events_per_stream", "150"]
    assert main(argv) == 0
    bar = terminal.getvalue()
    assert "events 100%|" in bar and "300/300" in bar and "2 streams" in bar
    assert "events clustered" in capsys.readouterr().out
    # --no-progress on a terminal, and --quiet (nothing on stdout either)
    terminal.seek(0)
    terminal.truncate()
    assert main([*argv, "--no-progress"]) == 0
    assert "%|" not in terminal.getvalue()
    assert main([*argv, "--quiet"]) == 0
    assert "%|" not in terminal.getvalue()
    assert capsys.readouterr().out.count("events clustered") == 1
    assert json.loads((tmp_path / "summary.json").read_text())["total_events"] > 280


# ---------------------------------------------------------------------------------- bench
def _fake_suite(monkeypatch, name: str, fail: bool = False) -> None:
    def run(quick: bool = False):
        if fail:
            raise ModuleNotFoundError("No module named 'river'")
        print(f"| {name} table |")
        return {"quick": quick, "rate": 1.5}

    module = types.ModuleType(f"streamrbf.bench.{name}")
    module.run = run
    monkeypatch.setitem(sys.modules, f"streamrbf.bench.{name}", module)


def test_bench_writes_its_files_and_draws_a_bar_on_a_terminal(tmp_path, monkeypatch, capsys):
    _fake_suite(monkeypatch, "core")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["bench", "core", "--quick", "--out", str(tmp_path)]) == 0
    assert "| core table |" in capsys.readouterr().out
    assert "1/1 suites" in terminal.getvalue()
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["quick"] is True and results["core"] == {"quick": True, "rate": 1.5}
    assert "## core" in (tmp_path / "bench.md").read_text()


def test_bench_a_failed_suite_is_exit_code_1_and_the_others_run(tmp_path, monkeypatch, capsys):
    _fake_suite(monkeypatch, "core")
    _fake_suite(monkeypatch, "river", fail=True)
    _fake_suite(monkeypatch, "beam")
    assert main(["bench", "all", "--out", str(tmp_path), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    # a missing dependency is one line, without a traceback
    assert captured.err.strip() == ("streamrbf bench: error: suite river failed: "
                                    "ModuleNotFoundError: No module named 'river'")
    results = json.loads((tmp_path / "bench.json").read_text())
    assert "error" in results["river"] and results["beam"]["rate"] == 1.5


def test_bench_an_unwritable_out_is_exit_code_1_before_any_suite(tmp_path, monkeypatch, capsys):
    _fake_suite(monkeypatch, "core", fail=True)  # would fail too, but must not even start
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["bench", "--out", str(blocker / "sub")]) == 1
    err = capsys.readouterr().err
    _one_line_error(err, "bench")
    assert "suite" not in err


def test_the_job_runs_from_a_clone_and_the_wheel_installs_only_streamrbf():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "pipelines.cluster_events", "--help"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: streamrbf run")
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["streamrbf*"]
    # the version is written once, in streamrbf/__init__.py
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
