"""Safe model files: tensors in safetensors, everything else as JSON in its metadata header.

Nothing is ever unpickled. A file carries its format name and version; loading checks both, and the
shapes and finiteness of what it reads, and refuses anything else with a ``ValueError``.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

__all__ = ["FORMAT_VERSION", "read_model_file", "write_model_file"]

FORMAT_VERSION = 1
_KEY = "streamrbf"


def write_model_file(
    path: str | os.PathLike, kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``tensors`` and the JSON-serialisable ``meta`` atomically (temp file, then rename).

    The tensors are stored on the CPU; the header records ``kind`` and :data:`FORMAT_VERSION` so
    that :func:`read_model_file` can refuse a file of another kind or version. Missing parent
    directories are created, and a reader never sees a half-written file.

    Parameters
    ----------
    path
        Destination file (conventionally ``*.safetensors``); replaced if it exists.
    kind
        Name of the model type (e.g. ``"RBFKMeans"``), checked on reading.
    tensors
        Named tensors, on any device.
    meta
        Everything else, as JSON-serialisable values.

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> import tempfile, torch
    >>> p = Path(tempfile.mkdtemp()) / "m.safetensors"
    >>> _ = write_model_file(p, "demo", {"w": torch.ones(2)}, {"answer": 42})
    >>> t, m = read_model_file(p, "demo")
    >>> t["w"].tolist(), m["answer"]
    ([1.0, 1.0], 42)
    """
    path = Path(path)
    header = {_KEY: json.dumps({"kind": kind, "version": FORMAT_VERSION, "meta": meta})}
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file gets the mode any new file gets (0666 less the umask, read off a fresh file):
    # safetensors writes 0600, which would hide the model from other users and serving processes.
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            break
        except FileExistsError:
            continue
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    os.close(fd)
    try:
        save_file(cpu, tmp, metadata=header)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_model_file(
    path: str | os.PathLike, kind: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`write_model_file` for ``kind``; ``ValueError`` otherwise.

    Nothing is unpickled: the file must be safetensors with a streamrbf header of this ``kind``
    and version, and every floating-point tensor must be finite.

    Parameters
    ----------
    path
        The model file.
    kind
        The model type expected (what was passed to :func:`write_model_file`).

    Returns
    -------
    tuple
        ``(tensors, meta)``: the named tensors (on the CPU) and the metadata dict.

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a file.
    ValueError
        When the file is not a streamrbf model of this ``kind`` and version, or holds NaN or
        infinity.

    Examples
    --------
    >>> import tempfile, torch
    >>> p = write_model_file(Path(tempfile.mkdtemp()) / "m.safetensors", "demo",
    ...                      {"w": torch.zeros(1)}, {})
    >>> read_model_file(p, "demo")
    ({'w': tensor([0.])}, {})
    >>> read_model_file(p, "RBFKMeans")
    Traceback (most recent call last):
    ...
    ValueError: '...m.safetensors' holds a 'demo' model, not a 'RBFKMeans' model.
    >>> _ = p.write_bytes(b"not a model")
    >>> read_model_file(p, "demo")
    Traceback (most recent call last):
    ...
    ValueError: '...m.safetensors' is not a streamrbf model file (safetensors): ...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {str(path)!r}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:  # one open: header and tensors
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{str(path)!r} is not a streamrbf model file (safetensors): {err}"
        ) from None
    if _KEY not in header:
        raise ValueError(f"{str(path)!r} is a safetensors file but not a streamrbf model.")
    try:
        info = json.loads(header[_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} has a malformed streamrbf header: {err}") from None
    if not isinstance(info, dict) or info.get("kind") != kind:
        got = info.get("kind") if isinstance(info, dict) else None
        raise ValueError(f"{str(path)!r} holds a {got!r} model, not a {kind!r} model.")
    if type(info.get("version")) is not int or info.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has format version {info.get('version')!r}; this streamrbf reads "
            f"version {FORMAT_VERSION}."
        )
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{str(path)!r} is corrupt: tensor {name!r} holds NaN or infinity.")
    return tensors, info.get("meta", {})
