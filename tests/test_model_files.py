"""Model files you can trust: the container against the safetensors package, its limits, temp
files, memory, and a fuzz suite of crafted files (valid files built with the safetensors
package, then their header fields, tensor tables and bytes mutated).

The fuzz tests run a short budget by default; the long run is opt-in::

    FUZZ_EXAMPLES=20000 bash -c 'ulimit -v 4000000; python -m pytest -q -m slow \\
        tests/test_model_files.py -k fuzz -p no:cacheprovider'

Each case is written to ``case.safetensors`` in the test's temp directory before it is loaded, so
a case that crashed the process is the file left there.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save, save_file

from streamrbf import RBFKMeans
from streamrbf.core import persistence
from streamrbf.core.persistence import (
    MAX_TENSORS,
    read_model_file,
    write_model_file,
)

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint64,
          np.uint32, np.uint16, np.uint8, np.bool_]


def arrays():
    return st.builds(
        lambda dtype, shape, seed: np.asarray(
            np.random.default_rng(seed).normal(size=shape) * 50).astype(dtype),
        st.sampled_from(DTYPES),
        st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple),
        st.integers(0, 2**32 - 1))


tensor_dicts = st.dictionaries(st.text("abcxyz_", min_size=1, max_size=6), arrays(),
                               max_size=MAX_TENSORS)


# ---------------------------------------------------------------------- the container, interop
@given(tensor_dicts, st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=8),
                                     max_size=3))
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_files_written_here_are_read_by_safetensors_and_back(tmp_path, tensors, meta):
    p = write_model_file(tmp_path / "m.safetensors", "demo", tensors, meta)
    theirs = load_file(str(p))
    assert theirs.keys() == tensors.keys()
    for name, a in tensors.items():
        np.testing.assert_array_equal(theirs[name], a)
        assert theirs[name].dtype == a.dtype and theirs[name].shape == a.shape
    ours, got_meta = read_model_file(p, "demo")
    assert {k: v for k, v in got_meta.items() if k != "_version"} == meta
    for name, a in tensors.items():
        np.testing.assert_array_equal(ours[name], a)
        assert ours[name].dtype == a.dtype and ours[name].flags.owndata


@given(tensor_dicts)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_files_written_by_safetensors_are_read_here(tmp_path, tensors):
    p = tmp_path / "m.safetensors"
    header = json.dumps({"kind": "demo", "version": 2, "meta": {}})
    save_file(tensors, str(p), metadata={"streamrbf": header})
    ours, _ = read_model_file(p, "demo")
    assert ours.keys() == tensors.keys()
    for name, a in tensors.items():
        np.testing.assert_array_equal(ours[name], a)


def _container(table: dict, data: bytes = b"") -> bytes:
    header = json.dumps(table).encode()
    return struct.pack("<Q", len(header)) + header + data


META = {"__metadata__": {"streamrbf": json.dumps({"kind": "demo", "version": 2, "meta": {}})}}


@pytest.mark.parametrize("content, why", [
    (b"", "0 bytes"),
    (struct.pack("<Q", 10**9) + b"{}", "a header of 1000000000 bytes"),
    (_container({**META, **{f"t{i}": {"dtype": "F64", "shape": [0], "data_offsets": [0, 0]}
                            for i in range(MAX_TENSORS + 1)}}), "more than 16 tensors"),
    (_container({**META, "w": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}},
                b"\0" * 8), "outside the 8 bytes of data"),
    (_container({**META, "w": {"dtype": "F64", "shape": [3], "data_offsets": [0, 16]}},
                b"\0" * 16), "does not fill its 16 bytes"),
    (_container({**META, "w": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}},
                b"\0" * 2), "unsupported"),
    (_container({**META, "w": {"dtype": "F64", "shape": [-1], "data_offsets": [0, 0]}}),
     "shape [-1]"),
    (_container([1, 2]), "not an object"),
    (_container({"__metadata__": {"streamrbf": 3}}), "__metadata__ is not an object of strings"),
    (struct.pack("<Q", 6) + b'{"a":[', "Expecting value"),
    (struct.pack("<Q", 4) + b"\xff\xfe{}", "not a streamrbf model file"),
])
def test_malformed_containers_are_refused_naming_the_file(tmp_path, content, why):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="bad.safetensors") as err:
        read_model_file(p, "demo")
    assert why in str(err.value)


def test_a_header_is_judged_before_any_tensor_is_read(tmp_path):
    # A foreign file with a million empty tensors is refused from its first bytes.
    table = {f"t{i}": {"dtype": "F64", "shape": [0], "data_offsets": [0, 0]}
             for i in range(1_000_000)}
    p = tmp_path / "many.safetensors"
    p.write_bytes(_container(table))
    t = time.perf_counter()
    tracemalloc.start()
    with pytest.raises(ValueError, match="more than 16 tensors"):
        read_model_file(p, "demo")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * p.stat().st_size and time.perf_counter() - t < 2.0


def _model_file(path: Path, k: int, d: int, extra: dict | None = None) -> Path:
    X = np.random.default_rng(0).normal(size=(max(4 * k, 64), d))
    km = RBFKMeans(k, random_state=0, max_iter=2, n_init=1).fit(X)
    km.save(path)
    if extra:  # more tensors beside the model's
        tensors = load_file(str(path))
        tensors.update(extra)
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            meta = json.loads(f.read(n))["__metadata__"]
        save_file(tensors, str(path), metadata=meta)
    return path


def test_loading_costs_at_most_twice_the_file_whatever_else_it_holds(tmp_path):
    plain = _model_file(tmp_path / "plain.safetensors", 64, 80_000)  # ~41 MB of centres
    padded = _model_file(tmp_path / "padded.safetensors", 64, 80_000,
                         {"unknown": np.ones(10_000_000)})  # and 80 MB nobody reads
    for p in (plain, padded):
        tracemalloc.start()
        model = RBFKMeans.load(p)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert model.cluster_centers_.shape == (64, 80_000)
        assert peak <= 2 * plain.stat().st_size, (p.name, peak, plain.stat().st_size)


def test_a_loaded_model_owns_its_arrays(tmp_path):
    p = _model_file(tmp_path / "m.safetensors", 3, 4)
    model = RBFKMeans.load(p)
    before = model.cluster_centers_.copy()
    p.write_bytes(b"\0" * p.stat().st_size)  # overwritten in place
    os.truncate(p, 0)
    np.testing.assert_array_equal(model.cluster_centers_, before)
    assert model.predict(before).tolist() == [0, 1, 2]


# ------------------------------------------------------------------------------- temp files
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_of_dead_or_old_writers_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "m.safetensors"
    host = persistence._WRITER.split("-")[0]
    dead = tmp_path / f".m.safetensors.{host}-{_dead_pid()}.0a0b0c0d.tmp"
    alive = tmp_path / f".m.safetensors.{host}-{os.getppid()}.0a0b0c0d.tmp"
    other_host = tmp_path / f".m.safetensors.ffffffff-{_dead_pid()}.0a0b0c0d.tmp"
    old = tmp_path / ".m.safetensors.ffffffff-1.00000000.tmp"
    unrelated = tmp_path / ".other.safetensors.0-1.00000000.tmp"
    for p in (dead, alive, other_host, old, unrelated):
        p.write_bytes(b"half a model")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    write_model_file(target, "demo", {"w": np.ones(2)}, {})
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([alive.name, other_host.name, unrelated.name, target.name])


def test_a_killed_writer_leaves_only_its_named_temp_file(tmp_path):
    # SIGKILL in the middle of a large write: the one temp file left names the dead writer, and
    # the next write of the file removes it.
    code = ("import numpy as np, sys; from streamrbf.core.persistence import write_model_file;"
            "write_model_file(sys.argv[1], 'demo', {'w': np.ones(50_000_000)}, {})")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "m.safetensors")])
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".m.safetensors.*.tmp")):
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    temps = list(tmp_path.glob(".*"))
    assert len(temps) <= 1 and not (tmp_path / "m.safetensors").exists()
    write_model_file(tmp_path / "m.safetensors", "demo", {"w": np.ones(2)}, {})
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


# ------------------------------------------------------------------------------------ fuzz
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([2**63, -1, 10**400, 0])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6)
    | st.sampled_from(["\x1b[2J", "meta", "cuda:99", "", "array", "k-means++"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6)


def _paths(value, prefix=()):
    """Every path to a value inside nested dicts and lists."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _set(root, path, new, delete=False):
    node = root
    for key in path[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = new


@st.composite
def crafted_files(draw):
    """A valid model file's bytes (RBFKMeans or a v2 file of a bank, written by the safetensors
    package), then one to three mutations of its header fields, tensor table or bytes."""
    k, d = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    C = rng.normal(size=(1, k, d)).astype(dtype)
    tensors = {"centers": C, "masses": rng.uniform(0, 5, size=(1, k))}
    meta = {"params": {"n_clusters": k, "random_state": 0, "init": "k-means++"},
            "state": {"temperature": [0.5], "initial_temperature": [1.0],
                      "min_temperature": [0.001], "n_steps": [3], "n_seen": [40],
                      "seed": [7], "feature_names": [f"f{i}" for i in range(d)]},
            "extra": {"n_iter": 3, "inertia": 1.5}}
    if draw(st.booleans()):  # a stream saved with its sample (streamrbf.core.sample)
        rows = draw(st.integers(0, 6))
        meta["extra"]["sample"] = {"size": draw(st.integers(rows, 8)), "half_life": 50.0,
                                   "seen": rows + draw(st.integers(0, 9)), "next_refine": 16}
        tensors["sample_rows"] = rng.normal(size=(rows, d))
        tensors["sample_keys"] = rng.normal(size=rows)
    info = {"kind": "RBFKMeans", "version": 2, "meta": meta}
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["field", "field", "table", "bytes", "tensor"]))
        if where == "field":
            path = draw(st.sampled_from(list(_paths(info))[1:]))
            _set(info, path, draw(json_values), delete=draw(st.booleans()))
        elif where == "tensor":
            name = draw(st.sampled_from(["centers", "masses", "init", "counts", "extra",
                                         "sample_rows", "sample_keys"]))
            tensors[name] = draw(arrays())
    data = save(tensors, metadata={"streamrbf": json.dumps(info)})
    if draw(st.booleans()):  # the container's own table
        (n,) = struct.unpack("<Q", data[:8])
        table = json.loads(data[8:8 + n])
        entry = draw(st.sampled_from([e for e in table if e != "__metadata__"]))
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets", None]))
        if field is None:
            table[entry] = draw(json_values)
        else:
            table[entry][field] = draw(json_values | st.sampled_from(
                ["F32", "F64", "BF16", "I64", [0, 10**12], [2, 1], [k, d], [k * d * 8, 0]]))
        header = json.dumps(table).encode()
        data = struct.pack("<Q", len(header)) + header + data[8 + n:]
    if draw(st.booleans()):  # raw bytes
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
            i = draw(st.integers(0, max(0, len(b) - 1)))
            if op == "flip" and b:
                b[i] ^= 1 << draw(st.integers(0, 7))
            elif op == "cut":
                del b[i:]
            elif op == "insert":
                b[i:i] = draw(st.binary(min_size=1, max_size=8))
            else:
                b[:8] = struct.pack("<Q", draw(st.sampled_from([0, 1, 2**63, 2**64 - 1, i])))
        data = bytes(b)
    return data


FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20000"))


def _judge(path: Path) -> None:
    """A crafted file either loads as a usable model or is refused with a ValueError naming it;
    nothing else (no other exception, no crash, no hang)."""
    try:
        model = RBFKMeans.load(path)
    except ValueError as err:
        assert str(path) in str(err) or path.name in str(err), err
        return
    k, d = model.cluster_centers_.shape
    assert np.isfinite(model.cluster_centers_).all()
    X = np.random.default_rng(0).normal(size=(5, d))
    if hasattr(model, "feature_names_in_"):
        X = pd.DataFrame(X, columns=model.feature_names_in_)
    labels = model.predict(X)
    assert labels.dtype == np.int32 and ((labels >= 0) & (labels < k)).all()
    assert np.isfinite(model.transform(X)).all()
    P = model.predict_proba(X)
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-5)
    model.partial_fit(X)
    model.save(path.with_name("again.safetensors"))
    assert RBFKMeans.load(path.with_name("again.safetensors")).n_clusters == k


@given(crafted_files())
@settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
def test_fuzz_crafted_files_load_or_are_refused(tmp_path, data):
    p = tmp_path / "case.safetensors"
    p.write_bytes(data)
    _judge(p)


@pytest.mark.slow
@given(crafted_files())
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
def test_fuzz_long_crafted_files_load_or_are_refused(tmp_path, data):
    p = tmp_path / "case.safetensors"
    p.write_bytes(data)
    _judge(p)


def test_fuzz_finds_both_outcomes():
    # The generator is not vacuous: its files are loaded and refused, in both cases often.
    outcomes = {"loaded": 0, "refused": 0, "with a sample": 0}

    @given(crafted_files())
    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def count(data):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "case.safetensors"
            p.write_bytes(data)
            try:
                model = RBFKMeans.load(p)
                outcomes["loaded"] += 1
                outcomes["with a sample"] += model._sample is not None
            except ValueError:
                outcomes["refused"] += 1

    count()
    assert outcomes["loaded"] >= 10 and outcomes["refused"] >= 10, outcomes
    assert outcomes["with a sample"] >= 3, outcomes
    assert math.isfinite(outcomes["loaded"])


# ------------------------------------------------- crafted header values, one test each
def _version_1_file(path: Path, rng_state: dict, rng_kind: str) -> Path:
    """A version-1 model file (centres, counts, a schedule and a random generator's state),
    the third centre starved so that the next steps re-seed it."""
    C = np.array([[0.0, 0.0], [1.0, 1.0], [1000.0, 1000.0]])
    meta = {"params": {"n_clusters": 3, "random_state": None, "reassignment_ratio": 0.01},
            "schedule": {"initial": 1.0, "decay": 0.99, "minimum": 0.001, "value": 0.5},
            "rng": rng_state, "rng_kind": rng_kind, "n_features_in": 2,
            "feature_names_in": None, "n_steps": 5, "n_iter": 1, "inertia": 1.0, "labels": None}
    save_file({"centers": C, "counts": np.array([100.0, 100.0, 0.0])}, str(path),
              metadata={"streamrbf": json.dumps({"kind": "RBFKMeans", "version": 1,
                                                 "meta": meta})})
    return path


def _state_of(bit_generator) -> dict:
    return json.loads(json.dumps(bit_generator.state, default=lambda a: a.tolist()))


@pytest.mark.parametrize("case", ["mt19937", "philox", "philox_short"])
def test_a_random_state_out_of_range_never_reaches_numpy(tmp_path, case):
    # numpy does not range-check these fields: once they reached a bit generator, the re-seeding
    # step died with SIGSEGV. A version-1 file's generator state only names a seed now. Run in a
    # child process: a crash fails the test instead of killing the suite.
    state = _state_of(np.random.MT19937(0) if case == "mt19937" else np.random.Philox(0))
    if case == "mt19937":
        state["state"]["pos"] = 10**6
    elif case == "philox":
        state["buffer_pos"] = -(2**31)
    else:
        state["state"]["counter"], state["buffer"] = [1], [1]
    p = _version_1_file(tmp_path / "v1.safetensors", state,
                        "MT19937" if case == "mt19937" else "Philox")
    code = ("import sys, numpy as np; from streamrbf import RBFKMeans;"
            "m = RBFKMeans.load(sys.argv[1]); X = np.random.default_rng(1).normal(size=(200, 2))\n"
            "for _ in range(5): m.partial_fit(X)\n"
            "print(bool(np.abs(m.cluster_centers_[2]).max() < 100))")
    out = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"  # the starved centre was re-seeded onto the data


def _edited(path: Path, dst: Path, edit) -> Path:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        table = json.loads(f.read(n))
        data = f.read()
    info = json.loads(table["__metadata__"]["streamrbf"])
    edit(info["meta"])
    table["__metadata__"]["streamrbf"] = json.dumps(info)
    dst.write_bytes(_container(table, data))
    return dst


@pytest.mark.parametrize("field, value, words", [
    ("device", True, "device"),
    ("device", "meta", "device must be None or a torch device with data"),
    ("device", "foo", "device must be None or a torch device with data"),
    ("device", [1], "device"),
    ("half_life", 10**400, "half_life must be"),
    ("max_iter", 10**400, "max_iter must be"),
    ("n_clusters", 10**400, "n_clusters"),
    ("init", [""], "init must be"),
    ("init", {}, "init"),
])
def test_header_parameters_are_checked_on_load(tmp_path, field, value, words):
    base = _model_file(tmp_path / "m.safetensors", 3, 2)

    def edit(meta):
        meta["params"][field] = value

    p = _edited(base, tmp_path / "crafted.safetensors", edit)
    with pytest.raises(ValueError, match="crafted.safetensors") as err:
        RBFKMeans.load(p)
    assert words in str(err.value)


@pytest.mark.parametrize("where, field, value", [
    ("extra", "inertia", 10**400), ("extra", "inertia", "x"), ("extra", "n_iter", -1),
    ("state", "n_steps", [10**400]), ("state", "temperature", [10**400]),
    ("state", "seed", [2**64]),
])
def test_header_state_and_report_fields_are_checked_on_load(tmp_path, where, field, value):
    base = _model_file(tmp_path / "m.safetensors", 3, 2)

    def edit(meta):
        meta[where][field] = value

    with pytest.raises(ValueError, match="crafted.safetensors"):
        RBFKMeans.load(_edited(base, tmp_path / "crafted.safetensors", edit))


def test_a_device_this_machine_lacks_is_a_value_error_naming_the_file(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p = _model_file(tmp_path / "m.safetensors", 3, 2)
    with pytest.raises(ValueError, match="m.safetensors.*cannot place the model on 'cuda'"):
        RBFKMeans.load(p, device="cuda")


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.PCG64DXSM,
                                           np.random.MT19937, np.random.Philox, np.random.SFC64])
def test_models_seeded_by_any_generator_are_saved(tmp_path, bit_generator):
    X = np.random.default_rng(0).normal(size=(60, 2))
    km = RBFKMeans(3, random_state=np.random.Generator(bit_generator(0))).fit(X)
    km.save(tmp_path / "m.safetensors")
    again = RBFKMeans.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(again.predict(X), km.predict(X))


def test_running_out_of_memory_while_loading_is_a_value_error(tmp_path, monkeypatch):
    p = _model_file(tmp_path / "m.safetensors", 3, 2)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(persistence.np, "empty", no_memory)
    with pytest.raises(ValueError, match="m.safetensors' is too large to load"):
        read_model_file(p, "RBFKMeans")
