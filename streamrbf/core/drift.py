"""Drift detection: a small protocol every face uses, and the detectors that implement it.

A detector watches the distortion of a stream, each event's squared distance to its nearest
centre, and says when it has risen for good (the clusters moved). Its per-stream memory is a small
float64 array (:meth:`DriftDetector.new_state`), so it lives wherever the stream's model lives: in
a River clusterer, in Beam state next to the model, in a bank of models. :meth:`update` feeds a
batch of distortions to one stream's state, in place, and returns whether it raised an alarm (the
state then starts afresh). Detectors are found by name in :data:`DETECTORS` (``"cusum"``): a new
detector is one class implementing the protocol, registered there, and River and Beam take it by
name or as an object.

What a face does on an alarm is its lifecycle (River re-checks fresh centres on the next events;
Beam's per-key transform gathers the next events and lets a fresh model replace the stream's if
it explains them much better: :func:`streamrbf.core.engine.refit`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import _online_kernels as _ok

__all__ = ["DETECTORS", "Cusum", "DriftDetector", "detector"]


@runtime_checkable
class DriftDetector(Protocol):
    """What a drift detector provides (a structural protocol: no base class needed).

    Examples
    --------
    >>> isinstance(Cusum(), DriftDetector)
    True
    """

    name: str

    def new_state(self) -> np.ndarray:
        """The memory of a new stream (a float64 array).

        Returns
        -------
        ndarray of float64
            A fresh state for :meth:`update`, which changes it in place.
        """

    def update(self, state: np.ndarray, distortions: np.ndarray) -> bool:
        """Feed a stream's distortions (in order) to its ``state``, in place; True on an alarm
        (the state then restarts).

        Parameters
        ----------
        state
            The stream's memory, from :meth:`new_state`.
        distortions
            The events' squared distances to their nearest centre, in arrival order.

        Returns
        -------
        bool
            Whether the batch raised an alarm.
        """


class Cusum:
    """A one-sided CUSUM on each event's distortion relative to its running mean.

    ``g <- max(0, g + min(r, 4) - 1.5)`` with ``r`` the distortion over its running mean: only a
    sustained rise of 50 % or more raises the alarm (``g > 20``); a jump far from every centre
    does so after 9 events, one outlier alone never (its share is capped). The running mean is
    plain over the first 500 events, then exponential; the test starts after 50 events. The
    compiled kernel is River's per-event one (:func:`streamrbf.core._online_kernels.
    watch_distortion`), so River runs it inside its learning step.

    Examples
    --------
    >>> cusum = Cusum()
    >>> state = cusum.new_state()
    >>> rng = np.random.default_rng(0)
    >>> cusum.update(state, rng.chisquare(2, 400))   # a stationary stream: no alarm
    False
    >>> cusum.update(state, rng.chisquare(2, 20) + 50.0)   # the clusters moved
    True
    """

    name = "cusum"

    def new_state(self) -> np.ndarray:
        """The memory of a new stream: ``[running mean, events seen, CUSUM statistic]``.

        Returns
        -------
        ndarray of float64, shape (3,)
            Zeros.
        """
        return np.zeros(3)

    def update(self, state: np.ndarray, distortions: np.ndarray) -> bool:
        """Feed the distortions to ``state`` one by one, in place; True on an alarm.

        An alarm resets the state to zeros, and the events after it in the batch start a new
        running mean.

        Parameters
        ----------
        state
            The stream's memory, from :meth:`new_state`.
        distortions
            The events' squared distances to their nearest centre, in arrival order.

        Returns
        -------
        bool
            Whether any event of the batch raised the alarm.
        """
        return bool(_ok.watch_distortions(state, np.ascontiguousarray(distortions, np.float64)))

    def __repr__(self) -> str:
        return "Cusum()"


DETECTORS: dict[str, type] = {"cusum": Cusum}


def detector(spec: Any) -> DriftDetector | None:
    """The detector a face was given: None, a name in :data:`DETECTORS`, or an object that
    implements :class:`DriftDetector`.

    Parameters
    ----------
    spec
        None, a name or a detector.

    Returns
    -------
    DriftDetector or None
        The detector.

    Raises
    ------
    ValueError
        For anything else, naming the detectors there are.

    Examples
    --------
    >>> detector("cusum"), detector(None)
    (Cusum(), None)
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec in DETECTORS:
            return DETECTORS[spec]()
    elif isinstance(spec, DriftDetector):
        return spec
    raise ValueError(f"drift_detector must be None, one of {sorted(DETECTORS)} or an object with "
                     f"new_state() and update(state, distortions), got {spec!r}")
