"""The temperature: how it enters the logits, how it starts, and how it anneals.

The temperature ``T`` of a model is the only knob between soft and hard clustering. It enters the
math through :func:`logit_divisor` alone (logits are ``z = -d / logit_divisor(T)``), so the paper's
convention for sigma can be switched in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TemperatureSchedule", "auto_temperature", "cooled", "logit_divisor"]


def logit_divisor(temperature: Any) -> Any:
    """The divisor of squared distances in the logits: ``z_ik = -d_ik / logit_divisor(T)``.

    streamrbf uses the convention ``T = sigma`` (docs/theory.md). Every formula that needs the
    temperature (mappings, losses, the support rule ``d - d_min < 2 * divisor``) goes through this
    function.

    Parameters
    ----------
    temperature
        The model temperature ``T``.

    Returns
    -------
    float
        The divisor of the squared distances in the logits.

    Examples
    --------
    >>> logit_divisor(0.5)
    0.5

    Under entmax-1.5, only centres within ``2 * logit_divisor(T)`` of the nearest share a point:

    >>> import torch
    >>> from streamrbf.core.mappings import entmax15
    >>> d = torch.tensor([[0.0, 0.9, 1.1]])
    >>> (entmax15(d, 0.5) > 0).tolist(), 2 * logit_divisor(0.5)
    ([[True, True, False]], 1.0)
    """
    return temperature


def auto_temperature(sq_distances: np.ndarray, weights: np.ndarray | None = None) -> float:
    """A temperature scaled to the data: half the mean squared distance to the nearest centre.

    It sets the scale of the data: a point is shared between centres whose squared distances
    differ by less than ``2 T``, so at this temperature the points between nearby centres are
    shared while far centres already receive exactly zero responsibility (how many points are
    shared depends on how well separated the clusters are). ``RBFKMeans``'s ``"auto"`` starts at
    4 x this value, hot enough for the centres to compete for whole clusters.
    Non-finite distances are ignored; when every point sits on a centre the result is 1.

    Parameters
    ----------
    sq_distances
        Squared distances ``(n, k)`` from sample points to the initial centres.
    weights
        The points' weights ``(n,)`` for the mean; None: all 1.

    Returns
    -------
    float
        A finite temperature > 0.

    Examples
    --------
    >>> auto_temperature(np.array([[1.0, 9.0], [4.0, 2.0]]))
    0.75
    >>> auto_temperature(np.zeros((3, 2)))  # every point on a centre
    1.0
    """
    d = np.asarray(sq_distances, dtype=np.float64)
    nearest = d.min(axis=1)
    ok = np.isfinite(nearest)
    w = np.ones(len(nearest)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w[ok]
    t = 0.5 * float(nearest[ok] @ w / w.sum()) if w.sum() > 0 else 1.0
    if not t > 0.0 or not math.isfinite(t):
        # All points sit on centres (or the scale is degenerate): any positive value anneals.
        t = 1.0
    return t


def cooled(value: float, factor: float, minimum: float) -> float:
    """The temperature after one annealing step: ``value * factor``, never below ``minimum`` and
    never 0 (the smallest positive float64 at least, so that ``1 / T`` is finite).

    Parameters
    ----------
    value
        The current temperature.
    factor
        The step's factor, in (0, 1].
    minimum
        The floor, >= 0.

    Returns
    -------
    float
        The new temperature.

    Examples
    --------
    >>> cooled(1.0, 0.5, 0.2), cooled(0.3, 0.5, 0.2), cooled(1e-300, 1e-300, 0.0) > 0
    (0.5, 0.2, True)
    """
    return max(value * factor, minimum, _TINY)


_TINY = float(np.finfo(np.float64).tiny)


@dataclass
class TemperatureSchedule:
    """A temperature that decays multiplicatively per step, from ``initial`` down to ``minimum``.

    This is the per-stream temperature every adapter relies on: it is state of one model, read
    with :attr:`value`, advanced with :meth:`step`, and raised again with :meth:`reheat` when a
    stream drifts. The parameters are checked on construction (``ValueError`` naming the bad one).

    Parameters
    ----------
    initial
        Starting temperature, finite and > 0; :meth:`reheat` returns to it.
    decay
        Multiplicative factor per step, in (0, 1]; 1 keeps the temperature constant.
    minimum
        Floor, finite and >= 0. With 0 the temperature still stays positive (the smallest
        positive float64), so ``1 / T`` is finite.
    value
        Current temperature; NaN (the default) starts it at ``max(initial, minimum)``.

    Attributes
    ----------
    value : float
        The current temperature.

    Examples
    --------
    >>> from streamrbf import TemperatureSchedule
    >>> s = TemperatureSchedule(initial=1.0, decay=0.5, minimum=0.2)
    >>> [s.step() for _ in range(4)]
    [0.5, 0.25, 0.2, 0.2]
    >>> s.reheat()
    1.0
    >>> s.step(2), s.reheat(factor=3.0)
    (0.25, 0.75)
    >>> TemperatureSchedule(initial=1.0, decay=1.5)
    Traceback (most recent call last):
    ...
    ValueError: temperature decay must be in (0, 1], got 1.5
    """

    initial: float
    decay: float = 0.9
    minimum: float = 0.0
    value: float = math.nan

    def __post_init__(self) -> None:
        if not (self.initial > 0 and math.isfinite(self.initial)):
            raise ValueError(f"initial temperature must be finite and > 0, got {self.initial!r}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"temperature decay must be in (0, 1], got {self.decay!r}")
        if not (self.minimum >= 0 and math.isfinite(self.minimum)):
            raise ValueError(f"minimum temperature must be finite and >= 0, got {self.minimum!r}")
        if math.isnan(self.value):
            self.value = max(self.initial, self.minimum)
        elif not (self.value > 0 and math.isfinite(self.value)):
            raise ValueError(f"temperature must be finite and > 0, got {self.value!r}")

    def step(self, n: int = 1) -> float:
        """Advance ``n`` steps and return the new temperature (never below ``minimum``, never 0).

        Parameters
        ----------
        n
            Number of steps; the temperature is multiplied by ``decay ** n``.

        Returns
        -------
        float
            The new :attr:`value`.
        """
        self.value = cooled(self.value, self.decay**n, self.minimum)
        return self.value

    def reheat(self, factor: float | None = None) -> float:
        """Raise the temperature: by ``factor`` (capped at ``initial``), or back to ``initial``.

        Parameters
        ----------
        factor
            Multiplier >= 1, or None to return to ``initial``. A temperature already above
            ``initial`` (set by hand) is never lowered.

        Returns
        -------
        float
            The new :attr:`value`.
        """
        if factor is None:
            self.value = self.initial
        else:
            if not factor >= 1:
                raise ValueError(f"reheat factor must be >= 1, got {factor!r}")
            self.value = min(self.value * factor, max(self.initial, self.value))
        return self.value
