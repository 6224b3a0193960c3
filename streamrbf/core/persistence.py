"""Safe model files: the state record in safetensors, everything else as JSON in its header.

Nothing is ever unpickled. :func:`save_state` and :func:`load_state` own the schema of a model
file: the engine's :class:`~streamrbf.core.state.ModelState` (tensors ``centers`` ``(B, k, d)``
and ``masses`` ``(B, k)``; temperatures, counters, seeds and feature names in the header), the
face's parameters and a face's extra fields. Every header field is typed and range-checked before
anything is built from it, only the known tensors are read (after the header, with their shapes
checked against it) and they are copied into memory the process owns, so a file replaced after
loading cannot change a loaded model. Files of format version 1 (centres, counts and a random
generator's state) are still read.

:func:`write_model_file` and :func:`read_model_file` are the container underneath: atomic writes,
the format's name and version, finite tensors.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .state import ModelState, host_array

__all__ = [
    "ESTIMATOR_PARAMS",
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "MAX_TENSORS",
    "load_state",
    "read_model_file",
    "save_state",
    "state_from_bytes",
    "state_to_bytes",
    "write_model_file",
]

FORMAT_VERSION = 2
# The parameters an RBFKMeans model file records beside the learning policy's (the estimator's
# own: where and how it computes, and its seed); a reader builds the policy from the others.
ESTIMATOR_PARAMS = ("random_state", "device", "dtype", "compile", "compute_labels", "verbose")
_READABLE = (1, 2)
_KEY = "streamrbf"
_STATE_FIELDS = ("temperature", "initial_temperature", "min_temperature", "n_steps", "n_seen",
                 "seed")


# The safetensors container, read and written here (the format: an 8-byte little-endian header
# length, a JSON header with each tensor's dtype, shape and byte range and a "__metadata__" of
# strings, then the raw little-endian data) rather than by the safetensors package, so that a file
# is judged by its header before anything is allocated, only the known tensors are read, each
# straight into an array the process owns (no memory map, no second copy), and a write leaves
# no temp file of its own. tests/test_model_files.py checks both directions against the package.
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
MAX_HEADER_BYTES = 64 << 20  # a model's header: parameters, state and feature names
MAX_TENSORS = 16  # a model file holds at most 4
_TEMP = ".tmp"


def write_model_file(
    path: str | os.PathLike, kind: str, tensors: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Write ``tensors`` and the JSON-serialisable ``meta`` atomically (temp file, then rename).

    The tensors (numpy arrays or torch tensors, on any device) are stored on the host; the header
    records ``kind`` and :data:`FORMAT_VERSION` so that :func:`read_model_file` can refuse a file
    of another kind or version. Missing parent directories are created, and a reader never sees
    a half-written file. The temp file is named after the writing process: temp files left by
    a killed writer of this machine (or older than a day) are removed by the next write of the
    same file.

    Parameters
    ----------
    path
        Destination file (conventionally ``*.safetensors``); replaced if it exists.
    kind
        Name of the model type (e.g. ``"RBFKMeans"``), checked on reading.
    tensors
        Named arrays.
    meta
        Everything else, as JSON-serialisable values.

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "m.safetensors"
    >>> _ = write_model_file(p, "demo", {"w": np.ones(2)}, {"answer": 42})
    >>> t, m = read_model_file(p, "demo", ["w"])
    >>> t["w"].tolist(), m["answer"]
    ([1.0, 1.0], 42)
    """
    path = Path(path)
    metadata = {_KEY: json.dumps({"kind": kind, "version": FORMAT_VERSION, "meta": meta})}
    host = {k: np.asarray(host_array(v), order="C") for k, v in tensors.items()}
    table: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, a in host.items():
        if a.dtype not in _CODES:
            raise TypeError(f"tensor {name!r} has dtype {a.dtype}, which a model file cannot hold")
        table[name] = {"dtype": _CODES[a.dtype], "shape": list(a.shape),
                       "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header = json.dumps(table, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data starts 8-byte aligned, as safetensors pads
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(path)
    # The file gets the mode any new file gets (0666 less the umask).
    while True:
        tmp = path.parent / f".{path.name}.{_WRITER}.{secrets.token_hex(4)}{_TEMP}"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(header)))
            f.write(header)
            for a in host.values():
                f.write(a.astype(a.dtype.newbyteorder("<"), copy=False).data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# A writer's temp files carry "<host>-<pid>": another process can tell a dead writer's.
_WRITER = f"{zlib.crc32(socket.gethostname().encode()):08x}-{os.getpid()}"


def _remove_stale_temp_files(path: Path) -> None:
    """Remove the temp files of ``path`` whose writer, on this machine, is dead (or that are
    over a day old): a killed writer leaves one."""
    host = _WRITER.split("-")[0]
    prefix = f".{path.name}."
    try:
        candidates = [p for p in path.parent.iterdir()
                      if p.name.startswith(prefix) and p.name.endswith(_TEMP)]
    except OSError:
        return
    for p in candidates:
        writer = p.name[len(prefix):-len(_TEMP)].split(".")[0]
        h, _, pid = writer.partition("-")
        try:
            dead = h == host and pid.isdigit() and not _alive(int(pid))
            if dead or time.time() - p.stat().st_mtime > 86400:
                p.unlink()
        except (OSError, ValueError, OverflowError):
            continue


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def read_model_file(
    path: str | os.PathLike, kind: str, names: list[str] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`write_model_file` for ``kind``; ``ValueError`` otherwise.

    Nothing is unpickled: the file must be safetensors with a streamrbf header of this ``kind``
    and a readable version. The header is judged first (its size, at most
    :data:`MAX_HEADER_BYTES`; at most :data:`MAX_TENSORS` tensors, each within the file;
    the kind and version); then only the tensors in ``names`` are read (all when None), each
    into an array this process owns, and checked to be finite. Memory: the tensors read plus
    the header, never a map of the file.

    Parameters
    ----------
    path
        The model file.
    kind
        The model type expected (what was passed to :func:`write_model_file`).
    names
        The tensors to read; a name the file lacks is left out.

    Returns
    -------
    tuple
        ``(tensors, meta)``: the named numpy arrays and the header's metadata (with its
        ``"version"`` added under ``"_version"``).

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a file.
    ValueError
        When the file is not a streamrbf model of this ``kind`` and a readable version, holds
        NaN or infinity, or cannot be read (the message names the file).

    Examples
    --------
    >>> import tempfile
    >>> p = write_model_file(Path(tempfile.mkdtemp()) / "m.safetensors", "demo",
    ...                      {"w": np.zeros(1)}, {})
    >>> read_model_file(p, "demo")
    ({'w': array([0.])}, {'_version': 2})
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
    where = repr(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {where}")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            table, data_start = _table(f, size, where)
            info = _header(table.get("__metadata__") or {}, where, kind)
            wanted = [n for n in (table if names is None else names)
                      if n in table and n != "__metadata__"]
            tensors = {n: _read_tensor(f, table[n], data_start, n, where) for n in wanted}
    except OSError as err:
        raise ValueError(f"{where} cannot be read: {err}") from None
    except MemoryError:
        raise ValueError(f"{where} is too large to load with the memory available") from None
    meta = info.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError(f"{where} has a malformed streamrbf header: meta is not an object")
    return tensors, {**meta, "_version": info["version"]}


def _table(f: Any, size: int, where: str) -> tuple[dict[str, Any], int]:
    """The container's header, checked: ``(tensor table, where the data starts)``."""
    bad = f"{where} is not a streamrbf model file (safetensors)"
    head = f.read(8)
    if len(head) < 8:
        raise ValueError(f"{bad}: {size} bytes")
    (n,) = struct.unpack("<Q", head)
    if n > min(size - 8, MAX_HEADER_BYTES):
        raise ValueError(f"{bad}: a header of {n} bytes in a file of {size}")
    raw = f.read(n)
    if raw.count(b'"data_offsets"') > MAX_TENSORS:
        raise ValueError(f"{bad}: more than {MAX_TENSORS} tensors")
    try:
        table = json.loads(raw)
    except (ValueError, RecursionError) as err:  # (UnicodeDecodeError is a ValueError)
        raise ValueError(f"{bad}: {err}") from None
    if not isinstance(table, dict):
        raise ValueError(f"{bad}: the header is not an object")
    meta = table.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict)
                                 and all(isinstance(v, str) for v in meta.values())):
        raise ValueError(f"{bad}: __metadata__ is not an object of strings")
    data = size - 8 - n
    for name, entry in table.items():
        if name != "__metadata__":
            _entry(entry, data, f"{bad}: tensor {name!r}")
    return table, 8 + n


def _entry(entry: Any, data: int, bad: str) -> None:
    """Check one tensor's table entry: a known dtype, a shape, a byte range within the data
    that holds exactly that shape."""
    if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
            and entry["dtype"] in _DTYPES):
        raise ValueError(f"{bad}: no dtype or an unsupported one")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(type(v) is int and 0 <= v < 2**63 for v in shape)):
        raise ValueError(f"{bad}: shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(type(v) is int for v in offsets) and 0 <= offsets[0] <= offsets[1] <= data):
        raise ValueError(f"{bad}: byte range {offsets!r} outside the {data} bytes of data")
    if math.prod(shape) * np.dtype(_DTYPES[entry["dtype"]]).itemsize != offsets[1] - offsets[0]:
        raise ValueError(f"{bad}: shape {shape} does not fill its {offsets[1] - offsets[0]} bytes")


def _read_tensor(f: Any, entry: dict[str, Any], data_start: int, name: str,
                 where: str) -> np.ndarray:
    """One checked tensor, read into a new array (native byte order), finite if floating."""
    dtype = np.dtype(_DTYPES[entry["dtype"]])
    begin, end = entry["data_offsets"]
    a = np.empty(entry["shape"], dtype=dtype)
    f.seek(data_start + begin)
    if end > begin and f.readinto(a.reshape(-1).view(np.uint8).data) != end - begin:
        raise ValueError(f"{where} is truncated: tensor {name!r}")
    a = a.astype(dtype.newbyteorder("="), copy=False)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{where} is corrupt: tensor {name!r} holds NaN or infinity.")
    return a


def _header(header: dict[str, str], where: str, kind: str) -> dict[str, Any]:
    if _KEY not in header:
        raise ValueError(f"{where} is a safetensors file but not a streamrbf model.")
    try:
        info = json.loads(header[_KEY])
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{where} has a malformed streamrbf header: {err}") from None
    if not isinstance(info, dict) or info.get("kind") != kind:
        got = info.get("kind") if isinstance(info, dict) else None
        raise ValueError(f"{where} holds a {got!r} model, not a {kind!r} model.")
    version = info.get("version")
    if type(version) is not int or version not in _READABLE:
        raise ValueError(f"{where} has format version {version!r}; this streamrbf reads "
                         f"versions {', '.join(map(str, _READABLE))}.")
    return info


# ------------------------------------------------------------------------------- the schema
#: The tensors of the schema itself (a face's further tensors are named apart).
_SCHEMA_TENSORS = ("centers", "masses", "counts", "init")

def save_state(path: str | os.PathLike, kind: str, state: ModelState, params: dict[str, Any],
               extra: dict[str, Any] | None = None,
               arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Write a model: its state record, the face's parameters and extra fields.

    An ``init`` parameter that is an array is stored as the tensor ``init``.

    Parameters
    ----------
    path
        The file.
    kind
        The face's model type (``"RBFKMeans"``).
    state
        The state record (a bank of one or more models).
    params
        The face's parameters, JSON-serialisable but for an ``init`` array.
    extra
        Further JSON-serialisable fields of the face, returned as they are by
        :func:`load_state`.
    arrays
        Further tensors of the face (named apart from ``centers``, ``masses``, ``counts`` and
        ``init``), which :func:`load_state` returns when asked for.

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> import tempfile
    >>> s = ModelState.single(np.eye(2), np.ones(2), temperature=0.5, seed=7)
    >>> p = save_state(Path(tempfile.mkdtemp()) / "m.safetensors", "demo", s, {"n_clusters": 2})
    >>> t, params, extra = load_state(p, "demo")
    >>> t.centers[0].tolist(), float(t.temperature[0]), int(t.seed[0]), params
    ([[1.0, 0.0], [0.0, 1.0]], 0.5, 7, {'n_clusters': 2})
    """
    params = dict(params)
    tensors = {"centers": state.centers, "masses": state.masses}
    for name, a in (arrays or {}).items():
        if name in _SCHEMA_TENSORS:
            raise ValueError(f"tensor name {name!r} is the schema's own")
        tensors[name] = a
    if params.get("init") is not None and not isinstance(params["init"], str):
        tensors["init"] = np.asarray(params["init"], dtype=np.float64)
        params["init"] = "array"
    record = {name: getattr(state, name).tolist() for name in _STATE_FIELDS}
    record["feature_names"] = (None if state.feature_names is None
                               else [str(n) for n in state.feature_names])
    meta = {"params": params, "state": record, "extra": dict(extra or {})}
    return write_model_file(path, kind, tensors, meta)


def load_state(path: str | os.PathLike, kind: str, arrays: tuple[str, ...] = ()
               ) -> tuple[ModelState, dict[str, Any], dict[str, Any]]:
    """Read a model written by :func:`save_state` (or a version-1 file): ``(state, params,
    extra)``, every field checked; a ``ValueError`` naming the file for anything invalid.

    Parameters
    ----------
    path
        The file.
    kind
        The face's model type.
    arrays
        Names of the face's further tensors to read (:func:`save_state`'s ``arrays``); those
        the file holds come back in ``extra["arrays"]`` (checked for form: finite values; the
        face checks their meaning).

    Returns
    -------
    tuple
        The state record (numpy arrays on the host), the face's parameters (an ``init`` array
        restored) and its extra fields.

    Examples
    --------
    >>> load_state("missing.safetensors", "RBFKMeans")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no model file at 'missing.safetensors'
    """
    where = repr(str(path))
    tensors, meta = read_model_file(path, kind, [*_SCHEMA_TENSORS, *arrays])
    try:
        if meta["_version"] == 1:
            state, params, extra = _from_version_1(tensors, meta)
        else:
            state, params, extra = _from_version_2(tensors, meta)
        if arrays:
            extra = {**extra, "arrays": {n: tensors[n] for n in arrays if n in tensors}}
        return state, params, extra
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, IndexError) as err:
        raise ValueError(f"{where} is not a valid {kind} model file: {err}") from None


def _params(meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    params = meta["params"]
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ValueError("params must be an object")
    params = dict(params)
    if params.get("init") == "array":
        if "init" not in tensors:
            raise ValueError("init is 'array' but the file has no init tensor")
        params["init"] = tensors["init"].astype(np.float64)
    return params


def _centres(C: np.ndarray, masses: np.ndarray, B: int | None = None) -> None:
    if C.dtype not in (np.float32, np.float64) or masses.dtype.kind != "f":
        raise ValueError(f"centres must be float32 or float64, got {C.dtype}; masses "
                         f"floating-point, got {masses.dtype}")
    if C.ndim != 3 or 0 in C.shape or masses.shape != C.shape[:2]:
        raise ValueError(f"tensor shapes do not match: centres {C.shape}, masses {masses.shape}")
    if B is not None and C.shape[0] != B:
        raise ValueError(f"the header has {B} models, the tensors {C.shape[0]}")
    if (masses < 0).any():
        raise ValueError("masses must be >= 0")


def _floats(values: Any, name: str, B: int, positive: bool) -> np.ndarray:
    if not (isinstance(values, list) and len(values) == B
            and all(type(v) in (int, float) for v in values)):
        raise ValueError(f"{name} must be a list of {B} numbers")
    a = np.array(values, dtype=np.float64)
    ok = np.isfinite(a) & ((a > 0) if positive else (a >= 0))
    if not ok.all():
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, "
                         f"got {values!r}")
    return a


def _ints(values: Any, name: str, B: int, dtype: Any) -> np.ndarray:
    if not (isinstance(values, list) and len(values) == B
            and all(type(v) is int and 0 <= v < 2**63 for v in values)):
        raise ValueError(f"{name} must be {B} ints in [0, 2**63)")
    return np.array(values, dtype=dtype)


def _names(names: Any, d: int) -> tuple[str, ...] | None:
    if names is None:
        return None
    if not (isinstance(names, list) and len(names) == d and all(isinstance(n, str) for n in names)):
        raise ValueError(f"feature_names must be {d} names")
    return tuple(names)


def _from_version_2(tensors, meta):
    C, masses = tensors["centers"], tensors["masses"].astype(np.float64)
    s = meta["state"]
    if not isinstance(s, dict):
        raise ValueError("state must be an object")
    B = len(s["temperature"]) if isinstance(s["temperature"], list) else -1
    _centres(C, masses, B)
    T = _floats(s["temperature"], "temperature", B, True)
    t0 = _floats(s["initial_temperature"], "initial_temperature", B, True)
    tmin = _floats(s["min_temperature"], "min_temperature", B, False)
    state = ModelState(C, masses, T, t0, tmin, _ints(s["n_steps"], "n_steps", B, np.int64),
                       _ints(s["n_seen"], "n_seen", B, np.int64),
                       _ints(s["seed"], "seed", B, np.uint64),
                       _names(s.get("feature_names"), C.shape[2]))
    extra = meta.get("extra", {})
    if not isinstance(extra, dict):
        raise ValueError("extra must be an object")
    return state, _params(meta, tensors), extra


def _from_version_1(tensors, meta):
    """A version-1 file: ``(k, d)`` centres and ``counts``, a schedule, a generator's state."""
    C, counts = tensors["centers"], tensors["counts"]
    _centres(C[None], counts[None])
    sched = meta["schedule"]
    if not isinstance(sched, dict):
        raise ValueError("schedule must be an object")
    T = _floats([sched["value"]], "temperature", 1, True)
    t0 = _floats([sched["initial"]], "initial temperature", 1, True)
    tmin = _floats([sched["minimum"]], "minimum temperature", 1, False)
    params = _params(meta, tensors)
    # Version 1 named the starting temperature `temperature` and forgot per step by `decay`.
    if "temperature" in params:
        params["initial_temperature"] = params.pop("temperature")
    decay = params.pop("decay", 1.0)
    if params.get("half_life") is None:
        params["half_life"] = None
        if decay != 1.0:
            params["decay"] = decay
    seed = params.get("random_state")
    if not (type(seed) is int and 0 <= seed < 2**63):
        seed = zlib.crc32(json.dumps(meta.get("rng"), sort_keys=True).encode())
    n_steps = _ints([meta["n_steps"]], "n_steps", 1, np.int64)
    d = C.shape[1]
    if meta.get("n_features_in") != d:
        raise ValueError("tensor shapes do not match the parameters")
    state = ModelState(C[None].copy(), counts[None].astype(np.float64), T, t0, tmin, n_steps,
                       np.zeros(1, np.int64), np.array([seed], np.uint64),
                       _names(meta.get("feature_names_in"), d))
    inertia = meta.get("inertia")
    extra = {"n_iter": meta.get("n_iter"),
             "inertia": float(inertia) if isinstance(inertia, (int, float)) else math.nan}
    for key, value in meta.items():
        if key not in ("params", "schedule", "rng", "rng_kind", "n_features_in",
                       "feature_names_in", "n_steps", "n_iter", "inertia", "labels", "_version"):
            extra[key] = value
    return state, params, extra


# ------------------------------------------------------------------------------ as bytes
_MAGIC = b"SRS1"
_BYTES_HEAD = struct.Struct("<4sBIII")  # magic, float64 centres?, B, k, d


def state_to_bytes(state: ModelState) -> bytes:
    """The record as compact bytes (what Beam state, shuffles and side inputs carry): a header,
    the raw arrays, the feature names as JSON. Deterministic; float32 centres stay float32.

    Parameters
    ----------
    state
        A record on the host (numpy arrays).

    Returns
    -------
    bytes
        ``state_from_bytes`` reads them back.

    Examples
    --------
    >>> s = ModelState.single(np.eye(2, dtype=np.float32), np.ones(2), temperature=0.5, seed=9,
    ...                       feature_names=("x", "y"))
    >>> t = state_from_bytes(state_to_bytes(s))
    >>> t.centers.dtype, t.feature_names, int(t.seed[0]), len(state_to_bytes(s))
    (dtype('float32'), ('x', 'y'), 9, 106)
    """
    C = np.ascontiguousarray(host_array(state.centers))
    wide = C.dtype != np.float32
    C = C.astype(np.float64 if wide else np.float32, copy=False)
    B, k, d = C.shape
    names = b"" if state.feature_names is None else json.dumps(
        list(state.feature_names), separators=(",", ":"), ensure_ascii=False).encode()
    parts = [_BYTES_HEAD.pack(_MAGIC, int(wide), B, k, d), C.tobytes(),
             np.ascontiguousarray(host_array(state.masses), "<f8").tobytes()]
    parts += [np.ascontiguousarray(getattr(state, f), "<f8").tobytes()
              for f in ("temperature", "initial_temperature", "min_temperature")]
    parts += [np.ascontiguousarray(state.n_steps, "<i8").tobytes(),
              np.ascontiguousarray(state.n_seen, "<i8").tobytes(),
              np.ascontiguousarray(state.seed, "<u8").tobytes(), names]
    return b"".join(parts)


def state_from_bytes(data: bytes) -> ModelState:
    """The record :func:`state_to_bytes` wrote; a ``ValueError`` for anything else (wrong magic,
    sizes that do not add up, non-finite or negative values, names that are not ``d`` strings).

    Parameters
    ----------
    data
        The encoded record.

    Returns
    -------
    ModelState
        The record, its arrays copies of the bytes (writable, native byte order).

    Examples
    --------
    >>> state_from_bytes(b"SRS1 and then nothing sensible")
    Traceback (most recent call last):
    ...
    ValueError: not an encoded streamrbf model state: ...
    """
    try:
        magic, wide, B, k, d = _BYTES_HEAD.unpack_from(data, 0)
        if magic != _MAGIC:
            raise ValueError(f"magic {bytes(magic)!r}")
        if wide not in (0, 1) or 0 in (B, k, d):
            raise ValueError(f"a header of {B} models, {k} centres, {d} features, flag {wide}")
        dtype = np.dtype("<f8" if wide else "<f4")
        sizes: list[tuple[np.dtype, int]] = [(dtype, B * k * d), (np.dtype("<f8"), B * k)]
        sizes += [(np.dtype("<f8"), B)] * 3 + [(np.dtype("<i8"), B)] * 2 + [(np.dtype("<u8"), B)]
        need = _BYTES_HEAD.size + sum(t.itemsize * n for t, n in sizes)
        if len(data) < need:
            raise ValueError(f"{len(data)} bytes, the header needs {need}")
        off, arrays = _BYTES_HEAD.size, []
        for t, n in sizes:
            arrays.append(np.frombuffer(data, t, n, off).copy())
            off += t.itemsize * n
        C, masses, T, t0, tmin, n_steps, n_seen, seed = arrays
        names = None if off == len(data) else _names(json.loads(bytes(data[off:])), d)
    except (struct.error, ValueError, TypeError, RecursionError, UnicodeDecodeError) as err:
        raise ValueError(f"not an encoded streamrbf model state: {err}") from None
    state = ModelState(C.reshape(B, k, d).astype(dtype.newbyteorder("="), copy=False),
                       masses.reshape(B, k), T, t0, tmin, n_steps, n_seen, seed, names)
    _check_decoded(state)
    return state


def _check_decoded(s: ModelState) -> None:
    checks = [
        (np.isfinite(s.centers).all(), "centres hold NaN or infinity"),
        ((np.isfinite(s.masses) & (s.masses >= 0)).all(), "masses must be finite and >= 0"),
        ((np.isfinite(s.temperature) & (s.temperature > 0)).all(), "temperatures must be > 0"),
        ((np.isfinite(s.initial_temperature) & (s.initial_temperature > 0)).all(),
         "initial temperatures must be > 0"),
        ((np.isfinite(s.min_temperature) & (s.min_temperature >= 0)).all(),
         "minimum temperatures must be >= 0"),
        ((s.n_steps >= 0).all() and (s.n_seen >= 0).all(), "counters must be >= 0"),
    ]
    for ok, why in checks:
        if not ok:
            raise ValueError(f"not an encoded streamrbf model state: {why}")
