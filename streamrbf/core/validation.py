"""Input checks shared by every entry point: one place that says what is wrong with a batch.

A failed check raises before anything is touched, so a model is exactly as it was before the call.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["as_batch", "check_finite", "feature_names_of", "max_abs_value"]

_FLOAT_DTYPES = {torch.float32, torch.float64}


def feature_names_of(X: Any) -> np.ndarray | None:
    """Column names of a DataFrame-like ``X`` when they are all strings (scikit-learn's rule).

    Parameters
    ----------
    X
        Any input; only objects with a ``columns`` attribute (pandas, polars, ...) have names.

    Returns
    -------
    numpy.ndarray or None
        The names as an object array, or None for arrays, tensors, lists and frames whose
        column names are all non-strings (or absent).

    Raises
    ------
    TypeError
        When some column names are strings and others are not (as scikit-learn).

    Examples
    --------
    >>> import pandas as pd
    >>> feature_names_of(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    array(['a', 'b'], dtype=object)
    >>> feature_names_of(pd.DataFrame([[1.0, 2.0]])) is None  # integer column names
    True
    >>> feature_names_of(np.ones((1, 2))) is None
    True
    >>> feature_names_of(pd.DataFrame([[1.0, 2.0]], columns=["a", 1]))
    Traceback (most recent call last):
    ...
    TypeError: Feature names are only supported if all input features have string names, ...
    """
    cols = getattr(X, "columns", None)
    if cols is None or isinstance(X, (np.ndarray, torch.Tensor)):
        return None
    names = np.asarray(list(cols), dtype=object)
    is_str = [isinstance(c, str) for c in names]
    if len(names) and all(is_str):
        return names
    if any(is_str):
        # scikit-learn's rule and wording: mixed names are an error, not "no names".
        types = sorted({type(c).__name__ for c in names})
        raise TypeError(
            "Feature names are only supported if all input features have string names, but "
            f"your input has {types} as feature name / column name types. If you want feature "
            "names to be stored and validated, you must convert them all to strings, by using "
            "X.columns = X.columns.astype(str) for example. Otherwise you can remove feature / "
            "column names from your input data, or convert them all to a non-string data type."
        )
    return None


def max_abs_value(n_features: int) -> float:
    """The largest magnitude a feature may have for the model to cluster it in float64.

    Squared distances between points and centres (convex combinations of points) whose values
    stay below this bound cannot overflow float64, with a margin of 2: above it the core refuses
    a batch whose distances do overflow, and the Beam transforms send such events to the dead
    letters one by one.

    Parameters
    ----------
    n_features
        Number of features of an event.

    Returns
    -------
    float
        ``sqrt(float64 max / (8 n_features))``: about 1.7e153 for 8 features.

    Examples
    --------
    >>> f"{max_abs_value(8):.2g}", bool(max_abs_value(8) ** 2 * 8 * 4 < np.finfo(np.float64).max)
    ('1.7e+153', True)
    """
    return math.sqrt(float(np.finfo(np.float64).max) / (8 * max(int(n_features), 1)))


def check_finite(X: torch.Tensor, what: str = "X") -> None:
    """Raise ``ValueError`` naming the first non-finite entry of ``X``.

    Parameters
    ----------
    X
        A floating-point tensor, on any device.
    what
        How the message names the input.

    Raises
    ------
    ValueError
        When ``X`` holds NaN or infinity; the message gives the first one's kind and position.

    Examples
    --------
    >>> check_finite(torch.tensor([[1.0, 2.0]]))  # finite: returns None
    >>> check_finite(torch.tensor([[1.0, 2.0], [float("inf"), 0.0]]), what="centers")
    Traceback (most recent call last):
    ...
    ValueError: Input centers contains NaN or infinity: infinity at row 1, column 0.
    """
    if X.numel() == 0:
        return
    if X.device.type == "cpu":
        arr = X.numpy()
        # A sum is finite only if every term is (NaN and inf propagate); a finite sum that
        # overflowed falls through to the full check.
        ok = bool(np.isfinite(arr.sum())) or bool(np.isfinite(arr).all())
    else:
        ok = bool(torch.isfinite(X).all())
    if not ok:
        bad = (~torch.isfinite(X)).nonzero()[0].tolist()
        value = X[tuple(bad)].item()
        kind = "NaN" if value != value else "infinity"
        where = f"row {bad[0]}, column {bad[1]}" if len(bad) == 2 else f"index {bad}"
        raise ValueError(f"Input {what} contains NaN or infinity: {kind} at {where}.")


def as_batch(
    X: Any,
    *,
    n_features: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    estimator: str = "RBFKMeans",
    min_samples: int = 1,
    finite: bool = True,
) -> torch.Tensor:
    """A validated 2-D float tensor from a numpy array, torch tensor, DataFrame or nested list.

    Torch tensors stay on their device unless ``device`` is given; numpy arrays are wrapped
    without a copy when their dtype already fits. Integers become float64, float16 and bfloat16
    become float32; float32 and float64 are kept unless ``dtype`` is given.

    Parameters
    ----------
    X
        The batch, ``(n, d)``.
    n_features
        Expected number of columns (None: any).
    dtype
        Convert to this torch dtype.
    device
        Move to this device.
    estimator
        How error messages name the caller.
    min_samples
        Fewest rows accepted.
    finite
        ``False`` leaves the NaN/infinity check to the caller (:func:`check_finite`), for
        accelerator paths that fold it into the step's single transfer to the host.

    Returns
    -------
    torch.Tensor
        A contiguous 2-D float32 or float64 tensor (finite unless ``finite=False``).

    Raises
    ------
    TypeError
        For data that are not real numbers, and for sparse matrices.
    ValueError
        For the wrong number of dimensions or features, too few rows, complex numbers, NaN or
        infinity; the message says which.

    Examples
    --------
    >>> as_batch([[1, 2], [3, 4]]).dtype
    torch.float64
    >>> x = np.ones((2, 3), dtype=np.float32)
    >>> np.shares_memory(as_batch(x).numpy(), x)  # wrapped, not copied
    True
    >>> as_batch([[1.0, float("nan")]])
    Traceback (most recent call last):
    ...
    ValueError: Input X contains NaN or infinity: NaN at row 0, column 1.
    >>> as_batch([[1.0, 2.0]], n_features=3)
    Traceback (most recent call last):
    ...
    ValueError: X has 2 features, but RBFKMeans is expecting 3 features as input.
    """
    if type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(
            f"{estimator} does not accept sparse input: got {type(X).__name__}; "
            "convert it with X.toarray()."
        )
    if isinstance(X, torch.Tensor):
        t = X.detach()
        if t.is_complex():
            raise ValueError("Complex data not supported.")
        if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
            raise TypeError(f"X must hold real numbers, got a tensor of {t.dtype}.")
    else:
        if hasattr(X, "columns") and hasattr(X, "dtypes"):
            for name, dt in zip(X.columns, X.dtypes):
                if getattr(dt, "kind", "O") in "biuf":
                    continue
                try:
                    np.asarray(X[name], dtype=np.float64)
                except (TypeError, ValueError):
                    raise TypeError(
                        f"column {name!r} is not numeric (dtype {dt}); every feature must be a "
                        "real number."
                    ) from None
        arr = np.asarray(X)
        if np.iscomplexobj(arr):
            raise ValueError("Complex data not supported.")
        if arr.dtype.kind in "OUS":
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError) as err:
                raise type(err)(f"X must hold real numbers: {err}") from None
        elif arr.dtype.kind not in "biuf":
            raise TypeError(f"X must hold real numbers, got dtype {arr.dtype}.")
        if arr.dtype.kind in "biu" or arr.dtype == np.float16:
            arr = arr.astype(np.float64 if arr.dtype.kind != "f" else np.float32)
        arr = np.ascontiguousarray(arr)
        if arr.flags.writeable:
            t = torch.from_numpy(arr)
        else:
            # Read-only input (a memmap, a broadcast view): torch would warn; we never write to it.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                t = torch.from_numpy(arr)
    if t.ndim != 2:
        shape = tuple(t.shape)
        raise ValueError(
            f"Expected 2D array, got {t.ndim}D array instead (shape {shape}). Reshape your data "
            "with X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) if it has a "
            "single sample."
        )
    if t.shape[0] < min_samples:
        raise ValueError(
            f"Found array with {t.shape[0]} sample(s) (shape={tuple(t.shape)}) while a minimum of "
            f"{min_samples} is required."
        )
    if t.shape[1] == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(t.shape)}) while a minimum of 1 is "
            "required."
        )
    if n_features is not None and t.shape[1] != n_features:
        raise ValueError(
            f"X has {t.shape[1]} features, but {estimator} is expecting {n_features} features as "
            "input."
        )
    if not t.is_floating_point() or t.dtype not in _FLOAT_DTYPES:
        t = t.to(torch.float64 if not t.is_floating_point() else torch.float32)
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if device is not None and t.device != torch.device(device):
        t = t.to(device)
    if finite:
        check_finite(t)
    return t if t.is_contiguous() else t.contiguous()


_INT_DTYPES = {torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8}
