"""The value rule and the errors for bad input, shared by every face.

What counts as a feature value is decided here once: a real number (``int``, ``float``, ``bool``
as 0 or 1, numpy's real scalars, ``Fraction``; not a string, None, a complex, a ``Decimal``, an
array or a numpy timedelta), not NaN, finite, and within :func:`value_limit` in magnitude (the
model's dtype, and squared distances that fit float64). A face chooses what to do with a value
the rule refuses (raise it, or send the event to the dead letters); it does not re-implement the
rule. Every refusal is an :class:`InputError` (a ``ValueError``) of a kind that says why, with a
message that names the feature; a failed check raises before anything is touched, so a model is
exactly as it was before the call.

Nothing here imports torch except the checks of array batches (:func:`as_batch`,
:func:`check_finite`), which the scikit-learn and torch faces use.
"""

from __future__ import annotations

import math
import numbers
import reprlib
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "FeatureCountError",
    "FeatureTypeError",
    "InputError",
    "MissingFeatureError",
    "NonFiniteError",
    "UnknownFeatureError",
    "ValueTooLargeError",
    "as_batch",
    "check_finite",
    "check_limit",
    "check_real",
    "feature_names_of",
    "max_abs_value",
    "to_real",
    "value_limit",
]


class InputError(ValueError):
    """Input a model refuses; the message says what and where (a feature, a row, a column).

    Every face raises these (the Beam transforms put their message in a dead letter); each kind
    below is also an ``InputError``, so ``except ValueError`` catches them all.

    Examples
    --------
    >>> try:
    ...     to_real("'x'", float("nan"), 10.0)
    ... except InputError as err:
    ...     print(type(err).__name__, "-", err)
    NonFiniteError - feature 'x' is NaN (a missing value)
    """


class FeatureTypeError(InputError, TypeError):
    """A value that is not a real number (a string, None, a complex, a Decimal, an array): also a
    ``TypeError``.

    Examples
    --------
    >>> to_real("'b'", 2 + 1j, 10.0)
    Traceback (most recent call last):
    ...
    streamrbf.core.validation.FeatureTypeError: feature 'b' is not a real number: (2+1j) (complex)
    """


class MissingFeatureError(InputError):
    """An event lacks a feature the model has.

    Examples
    --------
    >>> str(MissingFeatureError("missing feature 'x'"))
    "missing feature 'x'"
    """


class UnknownFeatureError(InputError):
    """An event has a feature the model does not know.

    Examples
    --------
    >>> issubclass(UnknownFeatureError, ValueError)
    True
    """


class FeatureCountError(InputError):
    """An event or batch has the wrong number of features.

    Examples
    --------
    >>> issubclass(FeatureCountError, InputError)
    True
    """


class NonFiniteError(InputError):
    """A value is NaN or infinite.

    Examples
    --------
    >>> to_real("#0", float("inf"), 10.0)
    Traceback (most recent call last):
    ...
    streamrbf.core.validation.NonFiniteError: feature #0 is infinite: inf
    """


class ValueTooLargeError(InputError):
    """A finite value beyond :func:`value_limit`: the model cannot hold it, or its squared
    distances would overflow.

    Examples
    --------
    >>> to_real("#0", 10**400, 10.0)
    Traceback (most recent call last):
    ...
    streamrbf.core.validation.ValueTooLargeError: feature #0 is too large to cluster (beyond any \
float)
    """


_REAL = (numbers.Real, np.bool_)
_NOT_REAL = (np.timedelta64,)
_repr = reprlib.Repr()
_repr.maxlong = _repr.maxstring = _repr.maxother = 40


def value_limit(n_features: int, dtype: Any = np.float64) -> float:
    """The largest magnitude a feature value may have, for a model of ``dtype`` centres with
    ``n_features`` features: within the dtype's range, and small enough that squared distances
    fit float64 (:func:`max_abs_value`).

    Parameters
    ----------
    n_features
        Number of features.
    dtype
        The centres' dtype (float32 or float64; numpy or torch).

    Returns
    -------
    float
        The limit.

    Examples
    --------
    >>> f"{value_limit(8):.2g}", f"{value_limit(8, np.float32):.4g}"
    ('1.7e+153', '3.403e+38')
    """
    limit = max_abs_value(n_features)
    if "float32" in str(dtype):
        limit = min(limit, float(np.finfo(np.float32).max))
    return limit


def _too_large(label: str, value: float, limit: float, where: str = "") -> ValueTooLargeError:
    why = ("the float32 range of the centres" if limit == float(np.finfo(np.float32).max)
           else "squared distances must fit float64")
    return ValueTooLargeError(f"feature {label} = {value:.3g} is too large to cluster (at most "
                              f"{limit:.3g} in magnitude: {why}){where}")


def to_real(label: str, value: Any, limit: float, *, missing_as_zero: bool = False,
            where: str = "") -> float:
    """The rule for one feature value: the value as a float, or the error that says why not.

    Parameters
    ----------
    label
        How messages name the feature: ``"'x'"`` for a named one, ``"#0"`` for a position.
    value
        The value.
    limit
        The largest magnitude allowed (:func:`value_limit`).
    missing_as_zero
        Count None, pandas' NA and NaN as 0 instead of refusing them.
    where
        Appended to messages (``" (row 3)"``).

    Returns
    -------
    float
        The value.

    Raises
    ------
    FeatureTypeError, NonFiniteError, ValueTooLargeError
        What is wrong, naming the feature.

    Examples
    --------
    >>> to_real("'x'", 2, 10.0), to_real("'x'", True, 10.0)
    (2.0, 1.0)
    >>> to_real("'x'", None, 10.0, missing_as_zero=True)
    0.0
    >>> to_real("'x'", 11.0, 10.0)
    Traceback (most recent call last):
    ...
    streamrbf.core.validation.ValueTooLargeError: feature 'x' = 11 is too large to cluster (at \
most 10 in magnitude: squared distances must fit float64)
    """
    if type(value) is float:
        r = value
    elif isinstance(value, _REAL) and not isinstance(value, _NOT_REAL):
        try:
            r = float(value)
        except OverflowError:  # an int (or Fraction) beyond any float
            raise ValueTooLargeError(
                f"feature {label} is too large to cluster (beyond any float){where}") from None
        except (TypeError, ValueError):
            raise FeatureTypeError(f"feature {label} is not a real number: {_repr.repr(value)} "
                                   f"({type(value).__name__}){where}") from None
    elif missing_as_zero and (value is None or type(value).__name__ == "NAType"):
        return 0.0
    else:
        raise FeatureTypeError(f"feature {label} is not a real number: {_repr.repr(value)} "
                               f"({type(value).__name__}){where}")
    if abs(r) <= limit:
        return r
    if r != r:
        if missing_as_zero:
            return 0.0
        raise NonFiniteError(f"feature {label} is NaN (a missing value){where}")
    if math.isinf(r):
        raise NonFiniteError(f"feature {label} is infinite: {r!r}{where}")
    raise _too_large(label, r, limit, where)


def check_limit(X: np.ndarray, limit: float, names: Any = None) -> None:
    """Raise the value rule's error for the first entry of the finite 2-D array ``X`` beyond
    ``limit`` (named by ``names`` when given, else by position), if any.

    Parameters
    ----------
    X
        Values ``(n, d)``.
    limit
        The largest magnitude allowed (:func:`value_limit`).
    names
        The features' names, or None.

    Examples
    --------
    >>> check_limit(np.array([[1.0, 2.0]]), 10.0)   # within: returns None
    >>> check_limit(np.array([[1.0, 2.0], [0.0, -30.0]]), 10.0, ["a", "b"])
    Traceback (most recent call last):
    ...
    streamrbf.core.validation.ValueTooLargeError: feature 'b' = -30 is too large to cluster (at \
most 10 in magnitude: squared distances must fit float64) (row 1)
    """
    if not X.size or (float(X.max()) <= limit and -float(X.min()) <= limit):  # no copy
        return
    with np.errstate(invalid="ignore"):
        bad = np.abs(X) > limit
    if bad.any():
        i, j = np.argwhere(bad)[0]
        label = repr(names[j]) if names is not None else f"#{j}"
        raise _too_large(label, float(X[i, j]), limit, f" (row {i})" if X.shape[0] > 1 else "")


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
    if cols is None or isinstance(X, np.ndarray) or hasattr(X, "detach"):
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


def check_finite(X: Any, what: str = "X") -> None:
    """Raise ``ValueError`` naming the first non-finite entry of ``X``.

    Parameters
    ----------
    X
        A floating-point numpy array, a scipy sparse CSR matrix, or a tensor on any device.
    what
        How the message names the input.

    Raises
    ------
    ValueError
        When ``X`` holds NaN or infinity; the message gives the first one's kind and position.

    Examples
    --------
    >>> import torch
    >>> check_finite(torch.tensor([[1.0, 2.0]]))  # finite: returns None
    >>> check_finite(torch.tensor([[1.0, 2.0], [float("inf"), 0.0]]), what="centers")
    Traceback (most recent call last):
    ...
    streamrbf.core.validation.NonFiniteError: Input centers contains NaN or infinity: infinity ...
    >>> check_finite(np.array([[0.0, np.nan]]), what="block")
    Traceback (most recent call last):
    ...
    streamrbf.core.validation.NonFiniteError: Input block contains NaN or infinity: NaN at row 0, \
column 1.
    """
    if isinstance(X, np.ndarray):
        if X.size and not (np.isfinite(X.sum()) or np.isfinite(X).all()):
            bad = np.argwhere(~np.isfinite(X))[0].tolist()
            _non_finite(X[tuple(bad)].item(), bad, what)
        return
    if type(X).__module__.startswith("scipy.sparse"):  # CSR: its stored values
        stored = np.flatnonzero(~np.isfinite(X.data))
        if stored.size:
            p = int(stored[0])
            row = int(np.searchsorted(X.indptr, p, side="right")) - 1
            _non_finite(float(X.data[p]), [row, int(X.indices[p])], what)
        return
    import torch

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
        _non_finite(X[tuple(bad)].item(), bad, what)


def _non_finite(value: float, at: list[int], what: str) -> None:
    kind = "NaN" if value != value else "infinity"
    where = f"row {at[0]}, column {at[1]}" if len(at) == 2 else f"index {at}"
    raise NonFiniteError(f"Input {what} contains NaN or infinity: {kind} at {where}.")


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
    streamrbf.core.validation.NonFiniteError: Input X contains NaN or infinity: NaN at row 0, ...
    >>> as_batch([[1.0, 2.0]], n_features=3)
    Traceback (most recent call last):
    ...
    streamrbf.core.validation.FeatureCountError: X has 2 features, but RBFKMeans is expecting 3 ...
    """
    import torch

    if type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(
            f"{estimator} does not accept sparse input: got {type(X).__name__}; "
            "convert it with X.toarray()."
        )
    t = _real_tensor(X) if isinstance(X, torch.Tensor) else _tensor_view(_real_array(X))
    _check_shape(tuple(t.shape), n_features, estimator, min_samples)
    if not t.is_floating_point() or t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float64 if not t.is_floating_point() else torch.float32)
    if finite and t.device.type == "cpu":
        # The value rule on the values as given, before a narrower dtype could turn them into inf.
        check_finite(t)
        check_limit(t.numpy(), value_limit(t.shape[1], dtype or t.dtype))
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if device is not None and t.device != torch.device(device):
        t = t.to(device)
    if finite and t.device.type != "cpu":
        check_finite(t)
    return t if t.is_contiguous() else t.contiguous()


def _real_tensor(X: Any) -> Any:
    """A tensor of real numbers (not complex, not bool), detached."""
    t = X.detach()
    if t.is_complex():
        raise InputError("Complex data not supported.")
    if str(t.dtype) == "torch.bool" or not (
            t.is_floating_point() or str(t.dtype).removeprefix("torch.") in _INT_DTYPE_NAMES):
        raise FeatureTypeError(f"X must hold real numbers, got a tensor of {t.dtype}.")
    return t


def check_real(X: Any) -> None:
    """Raise the value rule's error for input that does not hold real numbers: a DataFrame's
    non-numeric column (named), strings or objects that are not numbers, complex numbers.
    Numeric arrays and frames pass at once.

    Parameters
    ----------
    X
        A numpy array, DataFrame, or nested sequence.

    Raises
    ------
    FeatureTypeError
        For non-numeric values.
    InputError
        For complex numbers.

    Examples
    --------
    >>> check_real(np.zeros((2, 2)))   # numeric: returns None
    >>> check_real([["a", 1.0]])
    Traceback (most recent call last):
    ...
    streamrbf.core.validation.FeatureTypeError: X must hold real numbers: could not convert \
string to float: ...
    """
    if isinstance(X, np.ndarray) and X.dtype.kind in "biuf":
        return
    if hasattr(X, "dtypes") and all(getattr(dt, "kind", "O") in "biuf"
                                    for dt in getattr(X.dtypes, "values", [X.dtypes])):
        return
    _real_array(X)


def _real_array(X: Any) -> np.ndarray:
    """A contiguous numeric numpy array of ``X`` (a DataFrame's non-numeric column is named);
    integers become float64, float16 float32; never written to."""
    if hasattr(X, "columns") and hasattr(X, "dtypes"):
        for name, dt in zip(X.columns, X.dtypes):
            if getattr(dt, "kind", "O") in "biuf":
                continue
            try:
                np.asarray(X[name], dtype=np.float64)
            except (TypeError, ValueError):
                raise FeatureTypeError(
                    f"column {name!r} is not numeric (dtype {dt}); every feature must be a "
                    "real number."
                ) from None
    arr = np.asarray(X)
    if np.iscomplexobj(arr):
        raise InputError("Complex data not supported.")
    if arr.dtype.kind in "OUS":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise FeatureTypeError(f"X must hold real numbers: {err}") from None
    elif arr.dtype.kind not in "biuf":
        raise FeatureTypeError(f"X must hold real numbers, got dtype {arr.dtype}.")
    if arr.dtype.kind in "biu" or arr.dtype == np.float16:
        arr = arr.astype(np.float64 if arr.dtype.kind != "f" else np.float32)
    return np.ascontiguousarray(arr)


def _tensor_view(arr: np.ndarray) -> Any:
    """``arr`` as a tensor without a copy."""
    import torch

    if arr.flags.writeable:
        return torch.from_numpy(arr)
    # Read-only input (a memmap, a broadcast view): torch would warn; we never write to it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def _check_shape(shape: tuple[int, ...], n_features: int | None, estimator: str,
                 min_samples: int) -> None:
    if len(shape) != 2:
        raise InputError(
            f"Expected 2D array, got {len(shape)}D array instead (shape {shape}). Reshape your "
            "data with X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) if it has "
            "a single sample."
        )
    if shape[0] < min_samples:
        raise InputError(
            f"Found array with {shape[0]} sample(s) (shape={shape}) while a minimum of "
            f"{min_samples} is required."
        )
    if shape[1] == 0:
        raise InputError(
            f"Found array with 0 feature(s) (shape={shape}) while a minimum of 1 is required."
        )
    if n_features is not None and shape[1] != n_features:
        raise FeatureCountError(
            f"X has {shape[1]} features, but {estimator} is expecting {n_features} features as "
            "input."
        )


_INT_DTYPE_NAMES = {"int8", "int16", "int32", "int64", "uint8"}
