"""ClusterGlobally's checkpoints: only a checkpoint that fits the transform, under a name that
states its step count, is resumed; anything else is a ValueError that names the file and says how
to start over, before the pipeline runs and wherever a run loads one."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pytest

from streamrbf.beam import ClusterGlobally, latest_checkpoint
from streamrbf.beam.global_model import _LoadLatest, _UpdateModel
from streamrbf.core.persistence import save_state
from streamrbf.core.policy import Policy
from streamrbf.core.state import ModelState

pytestmark = pytest.mark.timeout(120)

# 40 two-dimensional events in two blobs.
EVENTS = (np.random.default_rng(0).normal(size=(40, 2))
          + np.repeat([[0.0, 0.0], [6.0, 6.0]], 20, axis=0)).tolist()
START_OVER = "to start over, give a new or empty checkpoint_dir"


def _checkpoint(directory: Path, k: int = 2, d: int = 2, n_steps: int = 3, *,
                name: str | None = None, n_seen: int = 0, mapping: str = "entmax15",
                dtype: Any = np.float64, n_models: int = 1) -> Path:
    """Write a checkpoint as ClusterGlobally does (``save_state`` with the policy's params): a
    bank of ``n_models`` models, each with ``k`` centres in ``d`` dimensions."""
    centers = np.random.default_rng(10 * k + d).normal(size=(n_models, k, d)).astype(dtype)
    B = np.ones(n_models)
    state = ModelState(centers, np.ones((n_models, k)), 0.5 * B, 0.5 * B, 0.0 * B,
                       np.full(n_models, n_steps, np.int64), np.full(n_models, n_seen, np.int64),
                       np.zeros(n_models, np.uint64))
    path = directory / (name or f"step-{n_steps:010d}.safetensors")
    save_state(path, "RBFKMeans", state, Policy(n_clusters=k, mapping=mapping).to_params())
    return path


def _apply(p: beam.Pipeline, directory: Path, steps: int = 1, record: Path | None = None
           ) -> None:
    """ClusterGlobally(2) on EVENTS; the final model's fields go to ``record`` as JSON."""
    out = p | beam.Create(EVENTS) | ClusterGlobally(2, steps=steps, n_features=2,
                                                    checkpoint_dir=directory)
    if record is not None:
        _ = out.model | beam.Map(lambda m, path=record: path.write_text(json.dumps({
            "shape": list(m.centers.shape), "n_steps": int(m.n_steps[0]),
            "n_seen": int(m.n_seen[0]), "dtype": str(m.centers.dtype)})))


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- which files are checkpoints ---------------------------------------------------------------
@pytest.mark.parametrize("name", [
    "step-" + "\u0660" * 8 + "\u0669\u0669" + ".safetensors",   # Arabic-Indic digits
    "step-" + "\uff10" * 8 + "\uff19\uff19" + ".safetensors",   # full-width digits
    "step-0000000099.safetensors\n",                             # a trailing newline
    ".step-0000000099.safetensors.0123456789abcdef.tmp",         # an atomic write under way
])
def test_only_ascii_whole_names_are_checkpoints(tmp_path, name):
    (tmp_path / "step-0000000005.safetensors").touch()
    (tmp_path / name).touch()
    assert latest_checkpoint(tmp_path).name == "step-0000000005.safetensors"


def test_a_directory_is_no_checkpoint(tmp_path):
    (tmp_path / "step-0000000005.safetensors").touch()
    (tmp_path / "step-0000000099.safetensors").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-0000000005.safetensors"


def test_a_fitting_checkpoint_resumes_past_a_leftover_temp_file(tmp_path):
    # float32 centres resume as they are (the transform fixes no dtype); the temp file of a write
    # that never finished (garbage, of a later step) is no checkpoint.
    _checkpoint(tmp_path, n_steps=3, n_seen=7, dtype=np.float32)
    temp = ".step-0000000099.safetensors.0123456789abcdef.tmp"
    (tmp_path / temp).write_bytes(b"half a file")
    record = tmp_path / "final.json"
    with beam.Pipeline(runner="FnApiRunner") as p:
        _apply(p, tmp_path, steps=2, record=record)
    assert json.loads(record.read_text()) == {
        "shape": [1, 2, 2], "n_steps": 5, "n_seen": 7 + 2 * 40, "dtype": "float32"}
    assert latest_checkpoint(tmp_path).name == "step-0000000005.safetensors"
    assert _names(tmp_path) == [temp, "final.json"] + [
        f"step-000000000{n}.safetensors" for n in (3, 4, 5)]


# -- a checkpoint that does not fit the transform ------------------------------------------------
@pytest.mark.parametrize("made, differs", [
    ({"k": 5}, "n_clusters=5 (this transform: 2)"),
    ({"d": 3}, "n_features=3 (this transform: 2)"),
    ({"mapping": "softmax"}, "mapping='softmax' (this transform: 'entmax15')"),
    ({"n_models": 2}, "n_models=2 (this transform: 1)"),
    ({"k": 5, "d": 3, "mapping": "hard"},
     "n_clusters=5 (this transform: 2), n_features=3 (this transform: 2), "
     "mapping='hard' (this transform: 'entmax15')"),
])
def test_a_checkpoint_of_other_parameters_is_refused_before_the_run(tmp_path, made, differs):
    path = _checkpoint(tmp_path, **made)
    p = beam.Pipeline(runner="FnApiRunner")
    with pytest.raises(ValueError) as err:
        _apply(p, tmp_path)
    message = str(err.value)
    assert f"the checkpoint {str(path)!r} does not match this ClusterGlobally" in message
    assert f"it has {differs}." in message
    assert START_OVER in message
    assert _names(tmp_path) == [path.name]   # nothing ran, nothing was written


def test_a_checkpoint_of_other_parameters_is_refused_at_run_time(tmp_path):
    # The graph is built on an empty directory; the 5-cluster checkpoint comes before the run.
    p = beam.Pipeline(runner="FnApiRunner")
    _apply(p, tmp_path, steps=2, record=tmp_path / "final.json")
    path = _checkpoint(tmp_path, k=5)
    with pytest.raises(ValueError, match="n_clusters=5 \\(this transform: 2\\)") as err:
        p.run().wait_until_finish()
    assert str(path) in str(err.value) and START_OVER in str(err.value)
    assert _names(tmp_path) == [path.name]   # no model, no further checkpoint


class _State:
    """A ReadModifyWriteState that holds nothing yet."""

    def read(self) -> None:
        return None

    def write(self, value: Any) -> None:
        raise AssertionError("nothing may be written")


def test_streaming_loads_are_checked(tmp_path):
    path = _checkpoint(tmp_path, d=3)
    policy = Policy(n_clusters=2, reassignment_ratio=0.0)
    stats = types.SimpleNamespace(n=10)
    for load in (lambda: list(_LoadLatest(str(tmp_path), policy, 2).process(None)),
                 lambda: list(_UpdateModel(policy, str(tmp_path), 2).process(
                     ("model", stats), model=_State()))):
        with pytest.raises(ValueError, match="n_features=3 \\(this transform: 2\\)") as err:
            load()
        assert str(path) in str(err.value)


def test_a_streaming_transform_refuses_the_checkpoint_before_the_run(tmp_path):
    from apache_beam.testing.test_stream import TestStream

    path = _checkpoint(tmp_path, k=5)
    p = beam.Pipeline(runner="FnApiRunner")
    events = p | TestStream().add_elements([[0.0, 0.0]])
    assert not events.is_bounded
    with pytest.raises(ValueError, match="n_clusters=5 \\(this transform: 2\\)") as err:
        _ = events | ClusterGlobally(2, init=np.eye(2), checkpoint_dir=tmp_path)
    assert str(path) in str(err.value)


# -- a checkpoint whose name is not its step count -----------------------------------------------
def test_a_misnamed_checkpoint_is_refused(tmp_path):
    # Named for step 10, holding 2 steps: resumed, its steps would be written as step-3, step-4,
    # ... and the run after it would resume step-10 again, for ever.
    path = _checkpoint(tmp_path, n_steps=2, name="step-0000000010.safetensors")
    expected = (f"{str(path)!r} is named for step 10 but holds a model after 2 steps "
                "(n_steps=2): ")
    with pytest.raises(ValueError) as err:
        _apply(beam.Pipeline(runner="FnApiRunner"), tmp_path)
    message = str(err.value)
    assert message.startswith(expected)
    assert "(this one would be resumed on every run, and the checkpoints written after it " \
        "never). Rename it step-0000000002.safetensors or remove it; " in message
    assert START_OVER in message
    with pytest.raises(ValueError, match="is named for step 10 but holds a model after 2 steps"):
        list(_LoadLatest(str(tmp_path), Policy(n_clusters=2), 2).process(None))
    assert _names(tmp_path) == [path.name]


# -- counters at their limit ---------------------------------------------------------------------
def test_resuming_at_the_largest_n_seen_saturates(tmp_path):
    _checkpoint(tmp_path, n_steps=1, n_seen=2**63 - 1)
    record = tmp_path / "final.json"
    with beam.Pipeline(runner="FnApiRunner") as p:
        _apply(p, tmp_path, steps=1, record=record)
    final = json.loads(record.read_text())
    assert final["n_steps"] == 2 and final["n_seen"] == 2**63 - 1
