"""The record every adapter emits for one scored event."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Assignment"]


class Assignment(NamedTuple):
    """One event's cluster assignment.

    ``cluster`` is the nearest centre; ``memberships`` maps cluster ids to their non-zero
    responsibilities (exactly sparse under entmax-1.5); ``distance`` is the Euclidean distance to
    the nearest centre; ``temperature`` the model temperature used to score the event.

    >>> a = Assignment(cluster=2, memberships={2: 0.75, 0: 0.25}, distance=1.5, temperature=0.1)
    >>> a.cluster, max(a.memberships, key=a.memberships.get)
    (2, 2)
    """

    cluster: int
    memberships: dict[int, float]
    distance: float
    temperature: float
