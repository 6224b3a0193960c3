"""The record every adapter emits for one scored event."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Assignment"]


class Assignment(NamedTuple):
    """One event's cluster assignment.

    Every adapter scores an event into this record: the River and Beam transforms emit it, and
    :func:`streamrbf.beam.assign` builds it for a whole batch. It is a plain ``NamedTuple``, so it
    unpacks, compares and pickles like a tuple.

    Attributes
    ----------
    cluster : int
        Index of the nearest centre.
    memberships : dict of int to float
        The non-zero responsibilities ``{cluster: p}`` (exactly sparse under entmax-1.5); they sum
        to 1.
    distance : float
        Euclidean distance to the nearest centre.
    temperature : float
        The model temperature the event was scored at.

    Examples
    --------
    >>> from streamrbf import Assignment
    >>> a = Assignment(cluster=2, memberships={2: 0.75, 0: 0.25}, distance=1.5, temperature=0.1)
    >>> a.cluster, max(a.memberships, key=a.memberships.get), sum(a.memberships.values())
    (2, 2, 1.0)
    >>> cluster, memberships, distance, temperature = a
    >>> distance
    1.5
    """

    cluster: int
    memberships: dict[int, float]
    distance: float
    temperature: float
