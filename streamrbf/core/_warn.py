"""Warnings that point at the user's line, however deep in the library they are raised."""

from __future__ import annotations

import os
import sys
import warnings
from types import FrameType

__all__ = ["warn_caller"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def warn_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first frame outside the streamrbf package (a fixed
    ``stacklevel`` is wrong as soon as a public method reaches the warning by another path).

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
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
