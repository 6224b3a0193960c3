"""``streamrbf inspect`` on model files nobody should trust: what it prints is escaped, a file it
cannot read or describe is refused with exit code 3 and one line (no traceback), and ``--plot``
of centres near the float limit neither fails nor hangs.

Files are crafted from a fitted model: its tensors or its JSON header edited with safetensors.
Failures of the loader itself (``MemoryError``, pyo3's ``PanicException``) are stood in for by
a patched ``RBFKMeans.load``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrbf import RBFKMeans, cli
from streamrbf.cli import main

pytestmark = pytest.mark.timeout(180)

# Characters that move the cursor, clear the screen, ring the bell, reorder or split a line.
_CONTROLS = ["\x1b", "\r", "\n", "\x07", "\x08", "\x7f", "\x9b", "\u202e", "\u2028", "\u2066"]


def _fitted(d: int = 2, columns: list[str] | None = None) -> RBFKMeans:
    X = np.random.default_rng(0).normal(size=(120, d)) + np.repeat(np.eye(3, d) * 6, 40, axis=0)
    if columns is not None:
        pd = pytest.importorskip("pandas")
        X = pd.DataFrame(X, columns=columns)
    return RBFKMeans(3, random_state=0).fit(X)


def _saved(tmp_path: Path, model: RBFKMeans, name: str = "m.safetensors") -> Path:
    path = tmp_path / name
    model.save(path)
    return path


def _rewrite(path: Path, centers: Any = None, params: dict[str, Any] | None = None) -> None:
    """Replace the centres (same shape) and/or some of ``params`` in the file's JSON header."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), framework="np") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    if centers is not None:
        tensors["centers"] = np.asarray(centers, dtype=tensors["centers"].dtype).reshape(
            tensors["centers"].shape)
    if params is not None:
        header = json.loads(meta["streamrbf"])
        header["meta"]["params"].update(params)
        meta["streamrbf"] = json.dumps(header)
    save_file(tensors, str(path), metadata=meta)


def _load_returns(monkeypatch: pytest.MonkeyPatch, result: Any) -> None:
    """``RBFKMeans.load`` gives ``result`` (a model), or raises it (an exception)."""

    def load(cls: type, path: Any, device: str | None = None) -> Any:
        if isinstance(result, BaseException):
            raise result
        return result

    monkeypatch.setattr(RBFKMeans, "load", classmethod(load))


def _report_with(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """``inspect`` reports what ``change(info)`` makes of the real report."""
    real = cli._model_report

    def report(path: str, model: Any) -> dict[str, Any]:
        info = real(path, model)
        change(info)
        return info

    monkeypatch.setattr(cli, "_model_report", report)


def _one_line_refusal(err: str, path: Any) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no traceback
    assert lines[0].startswith("streamrbf inspect: error: model file refused: "), err
    assert str(path) in lines[0], err
    return lines[0]


def _no_controls(text: str) -> None:
    bad = sorted({repr(ch) for ch in text if ch in _CONTROLS and ch != "\n"})
    assert not bad, f"raw control characters printed: {bad}"


# ----------------------------------------------------------------------- escaped output
def test_feature_names_are_printed_escaped(tmp_path, capsys):
    names = ["a\x1b[2J\x1b[H", "b\rmodel        FORGED\x07", "c\u202eevil\u2028d", "température",
             "e\x9b\x7f\u00a0\\x1b"]  # C1, DEL, a no-break space, a backslash
    path = _saved(tmp_path, _fitted(5, names))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    _no_controls(out)
    features = [ln for ln in out.splitlines() if ln.startswith("features")]
    assert features == ["features     a\\x1b[2J\\x1b[H, b\\rmodel        FORGED\\x07, "
                        "c\\u202eevil\\u2028d, température, e\\x9b\\x7f\\xa0\\\\x1b"]
    assert not any(ln.startswith("model") and "FORGED" in ln for ln in out.splitlines())
    # --json escapes them as JSON does, and gives the names back exactly
    assert main(["inspect", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    _no_controls(out)
    assert json.loads(out)["feature_names"] == names


def test_feature_names_are_drawn_as_text_not_mathtext(tmp_path, capsys):
    # matplotlib would parse "$\frac$" as mathtext and fail on it (a ValueError traceback)
    path = _saved(tmp_path, _fitted(2, ["$\\frac$", "cost in $\x1b[2J"]))
    png = tmp_path / "centres.png"
    assert main(["inspect", str(path), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    _no_controls(out)
    assert f"wrote {png}" in out


@pytest.mark.parametrize("field", ["device", "mapping", "half_life", "n_steps"])
def test_header_text_in_the_report_is_escaped(field, tmp_path, monkeypatch, capsys):
    # (the library refuses such values when it loads a file; the report escapes them anyway)
    path = _saved(tmp_path, _fitted())
    text = "cuda\x1b]0;owned\x07\u202e"
    _report_with(monkeypatch, lambda info: (info["params"] if field in ("mapping", "half_life")
                                            else info).__setitem__(field, text))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    _no_controls(out)
    assert "cuda\\x1b]0;owned\\x07\\u202e" in out


def test_a_refusal_names_the_file_in_one_escaped_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "m.safetensors"
    _load_returns(monkeypatch, ValueError(f"{str(path)!r}: holds \x1b[2J\u202e\rFORGED"))
    assert main(["inspect", str(path)]) == 3
    line = _one_line_refusal(capsys.readouterr().err, path)
    _no_controls(line)
    assert "holds \\x1b[2J\\u202e FORGED" in line


# ------------------------------------------------------------------ odd values, refusals
@pytest.mark.parametrize(
    ("attribute", "value"),
    [("inertia_", 10**400), ("inertia_", "x"), ("inertia_", float("nan")), ("n_iter_", 10**400),
     ("n_iter_", "x\x1b[2J")],
)
def test_odd_header_values_show_as_unknown(attribute, value, tmp_path, monkeypatch, capsys):
    model = _fitted()
    path = _saved(tmp_path, model)
    setattr(model, attribute, value)
    _load_returns(monkeypatch, model)
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info[attribute.rstrip("_")] is None
    assert main(["inspect", str(path)]) == 0
    captured = capsys.readouterr()
    _no_controls(captured.out)
    assert "3 clusters x 2 features" in captured.out and captured.err == ""


def test_unknown_temperatures_show_as_question_marks(tmp_path, monkeypatch, capsys):
    path = _saved(tmp_path, _fitted())

    def odd(info: dict[str, Any]) -> None:
        info["temperature"].update(current=None, initial=10**400, decay="fast\x1b[2J")

    _report_with(monkeypatch, odd)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    _no_controls(out)
    assert "temperature  ? (initial ?, floor " in out and "decay ? per step)" in out


class PanicException(BaseException):
    """Stands in for pyo3_runtime.PanicException (a BaseException, not an Exception)."""


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (MemoryError(), "not enough memory"),
        (PanicException("PyObject pointer is null"), "PanicException: PyObject pointer is null"),
        (OverflowError("int too large to convert to float"), "OverflowError: int too large"),
        (TypeError("unhashable type: 'list'"), "TypeError: unhashable type"),
        (KeyError("centers"), "KeyError: 'centers'"),
        (RecursionError("maximum recursion depth exceeded"), "maximum recursion depth"),
    ],
)
def test_whatever_loading_raises_is_a_one_line_refusal(error, reason, tmp_path, monkeypatch,
                                                      capsys):
    path = tmp_path / "m.safetensors"
    _load_returns(monkeypatch, error)
    assert main(["inspect", str(path)]) == 3
    line = _one_line_refusal(capsys.readouterr().err, path)
    assert reason in line


def test_an_interrupt_while_loading_is_still_an_interrupt(tmp_path, monkeypatch, capsys):
    _load_returns(monkeypatch, KeyboardInterrupt())
    assert main(["inspect", str(tmp_path / "m.safetensors")]) == 130
    assert "streamrbf inspect: interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("broken", ["no model", "report out of memory"])
def test_a_model_the_report_cannot_describe_is_refused(broken, tmp_path, monkeypatch, capsys):
    path = _saved(tmp_path, _fitted())
    if broken == "no model":
        _load_returns(monkeypatch, object())  # no centres, no temperature: AttributeError
    else:
        def no_memory(path: str, model: Any) -> dict[str, Any]:
            raise MemoryError

        monkeypatch.setattr(cli, "_model_report", no_memory)
    assert main(["inspect", str(path)]) == 3
    _one_line_refusal(capsys.readouterr().err, path)


@pytest.mark.parametrize("device", [True, "meta", "foo", "cuda\x1b[2J"])
def test_a_bogus_device_in_the_file_is_refused_in_one_line(device, tmp_path, capsys):
    path = _saved(tmp_path, _fitted())
    _rewrite(path, params={"device": device})
    assert main(["inspect", str(path)]) == 3
    _no_controls(_one_line_refusal(capsys.readouterr().err, path))


def test_a_device_in_the_file_is_reported_as_it_is_read_on_the_cpu(tmp_path, capsys):
    path = _saved(tmp_path, _fitted())
    _rewrite(path, params={"device": "cuda:0"})  # read on the CPU, on any machine
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["device"] == "cuda:0" and info["params"]["device"] == "cuda:0"


# ----------------------------------------------------------------- --plot near the limit
_HUGE = {
    "all 1e308, d=3": [[1e308] * 3, [1e308] * 3, [-1e308] * 3],  # was: SVD did not converge
    "d=2 1e308": [[1e308, 1e308], [-1e308, 0.0], [0.0, -1e308]],  # was: limits cannot be inf
    "d=1 1.7e308": [[1.7e308], [-1.7e308], [0.0]],
    "d=3 1e-310": [[1e-310, 0.0, 0.0], [0.0, 2e-310, 0.0], [0.0, 0.0, -3e-310]],  # subnormal
    "d=3 1e200": [[1e200, 0.0, 0.0], [0.0, 1e200, 0.0], [0.0, 0.0, -1e200]],
}


@pytest.mark.parametrize("case", list(_HUGE))
def test_plot_of_centres_near_the_float_limit(case, tmp_path, capsys):
    centers = _HUGE[case]
    path = _saved(tmp_path, _fitted(len(centers[0])))
    _rewrite(path, centers=centers)
    png = tmp_path / "centres.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)  # numpy's overflow, invalid value
        code = main(["inspect", str(path), "--plot", str(png)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_opposite_centres_near_the_float_limit_does_not_hang(tmp_path):
    # Their mean overflows; numpy's SVD of the infinities and NaN that follow never returned.
    path = _saved(tmp_path, _fitted(3))
    _rewrite(path, centers=[[1.7e308, 1.7e308, 1.7e308], [1.7e308, 1.7e308, -1.7e308],
                            [-1.7e308, 1.0, 0.0]])
    png = tmp_path / "centres.png"
    script = Path(sys.executable).with_name("streamrbf")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "streamrbf.cli"]
    done = subprocess.run([*cmd, "inspect", str(path), "--plot", str(png)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in done.stdout


def test_plot_coordinates_of_centres_near_the_float_limit_are_in_named_units():
    info = {"file": "m", "feature_names": None,
            "centers": [[1.7e308, 1.7e308, 1.7e308], [1.7e308, 1.7e308, -1.7e308],
                        [-1.7e308, 1.0, 0.0]]}
    xy, labels = cli._plot_coordinates(info)
    assert np.isfinite(xy).all() and np.abs(xy).max() < 10
    assert all(label.endswith(", x 1e+308") for label in labels)
    # the same centres, smaller by an exact power of two: the same picture in their own units
    info["centers"] = np.ldexp(np.asarray(info["centers"]), -1000).tolist()
    small, plain = cli._plot_coordinates(info)
    assert np.allclose(small * (2.0**1000 / 1e308), xy, rtol=1e-9, atol=0)
    assert not any("x 1e" in label for label in plain)
