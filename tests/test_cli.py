"""The ``streamrbf`` command: help, inspect, refusal exit codes."""

from __future__ import annotations

import numpy as np

from streamrbf import RBFKMeans
from streamrbf.cli import main


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("run", "bench", "inspect"))


def test_inspect_prints_a_saved_model(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(200, 3))
    RBFKMeans(3, random_state=0).fit(X).save(tmp_path / "m.safetensors")
    assert main(["inspect", str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "clusters: 3  features: 3" in out and "temperature:" in out


def test_inspect_refuses_a_foreign_file_with_exit_code_3(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    assert main(["inspect", str(bad)]) == 3
    assert "not a streamrbf model file" in capsys.readouterr().err
