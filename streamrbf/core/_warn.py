"""Warnings that point at the user's line, however deep in the library they are raised."""

from __future__ import annotations

import os
import sys
import warnings
from types import CodeType, FrameType

__all__ = ["warn_caller"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# Frames of the wrappers scikit-learn puts around an estimator's methods (parameter validation,
# set_output): skipped like ours, so a warning points past them at the caller.
_WRAPPERS = {(f"{os.sep}sklearn{os.sep}base.py", "wrapper"),
             (f"{os.sep}sklearn{os.sep}utils{os.sep}_set_output.py", "wrapped")}


def _is_wrapper(code: CodeType) -> bool:
    return any(code.co_name == name and code.co_filename.endswith(path)
               for path, name in _WRAPPERS)


def warn_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first frame outside the streamrbf package and
    scikit-learn's method wrappers (a fixed ``stacklevel`` is wrong as soon as a public method
    reaches the warning by another path).

    Parameters
    ----------
    message
        The warning's text.
    category
        Its class.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     warn_caller("look here", UserWarning)
    >>> seen[0].filename.startswith(_PACKAGE)
    False
    """
    frame: FrameType | None = sys._getframe(1)
    level = 2
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                 or _is_wrapper(frame.f_code)):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
