"""The records adapters emit for scored events: one :class:`Assignment` per event, or one
:class:`AssignmentBatch` (columns) per batch."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice, repeat
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Assignment", "AssignmentBatch"]


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
    event_id : str, int or None
        The event's identity (``ClusterPerKey(id_field=...)`` copies it from the event), to join
        the assignment back to its event; None when events carry none.

    Examples
    --------
    >>> from streamrbf import Assignment
    >>> a = Assignment(cluster=2, memberships={2: 0.75, 0: 0.25}, distance=1.5, temperature=0.1)
    >>> a.cluster, max(a.memberships, key=a.memberships.get), sum(a.memberships.values())
    (2, 2, 1.0)
    >>> cluster, memberships, distance, temperature, event_id = a
    >>> distance, event_id
    (1.5, None)
    >>> a._replace(event_id="e-17").event_id
    'e-17'
    """

    cluster: int
    memberships: dict[int, float]
    distance: float
    temperature: float
    event_id: str | int | None = None


_tuple_new = tuple.__new__


@dataclass(frozen=True, eq=False)
class AssignmentBatch:
    """The assignments of a batch of events, in columns: one record per batch instead of one per
    event (what ``ClusterPerKey(output="batches")`` emits), cheap to move between workers and to
    turn into arrays. Row ``i``'s non-zero memberships are ``member_values[offsets[i]:offsets[i +
    1]]`` at clusters ``member_clusters[...]`` (CSR layout). Indexing and iteration give
    :class:`Assignment` records.

    Attributes
    ----------
    clusters : ndarray of int64, shape (n,)
        Nearest centre of each event.
    distances : ndarray of float64, shape (n,)
        Euclidean distance of each event to its nearest centre.
    offsets : ndarray of int64, shape (n + 1,)
        Row pointers into the membership columns.
    member_clusters, member_values : ndarray, shape (nnz,)
        The non-zero memberships, row after row.
    temperature : float
        The model temperature the batch was scored at.
    event_ids : list of str or int, optional
        The events' identities, in row order (None: events carry none); each :class:`Assignment`
        built from the batch carries its own.

    Examples
    --------
    >>> import numpy as np
    >>> b = AssignmentBatch(np.array([0, 1]), np.array([0.5, 2.0]), np.array([0, 1, 3]),
    ...                     np.array([0, 1, 0]), np.array([1.0, 0.75, 0.25]), temperature=0.1)
    >>> len(b), b[-1] == b[1], b[1]
    (2, True, Assignment(cluster=1, memberships={1: 0.75, 0: 0.25}, distance=2.0, temperature=0.1, \
event_id=None))
    >>> b = AssignmentBatch(b.clusters, b.distances, b.offsets, b.member_clusters,
    ...                     b.member_values, 0.1, event_ids=["e1", 7])
    >>> [(a.cluster, a.event_id) for a in b]
    [(0, 'e1'), (1, 7)]
    >>> b.dense_memberships(n_clusters=2)
    array([[1.  , 0.  ],
           [0.25, 0.75]])
    """

    clusters: np.ndarray
    distances: np.ndarray
    offsets: np.ndarray
    member_clusters: np.ndarray
    member_values: np.ndarray
    temperature: float
    event_ids: list[str | int] | None = None

    @classmethod
    def from_memberships(cls, m: Any, temperature: float,
                         event_ids: list[str | int] | None = None) -> AssignmentBatch:
        """From the core's sparse memberships
        (:class:`~streamrbf.core.statistics.SparseMemberships`:
        ``vals``, ``idx``, ``length``, ``labels``, ``nearest`` with squared distances), and the
        events' ids if any.

        Parameters
        ----------
        m
            The sparse memberships of the batch.
        temperature
            The temperature the batch was scored at.
        event_ids
            The events' ids, in row order, or None.

        Returns
        -------
        AssignmentBatch
            The batch in CSR columns, with Euclidean (not squared) distances to the nearest
            centre.
        """
        length = m.length
        offsets = np.zeros(len(length) + 1, np.int64)
        np.cumsum(length, out=offsets[1:])
        room = m.vals.shape[1]
        if room == 1 or m.nnz == len(length):
            # One membership per row (a cold model, the hard mapping): the first column.
            clusters, values = m.idx[:, 0].copy(), m.vals[:, 0].copy()
        else:
            keep = np.arange(room) < length[:, None]
            clusters, values = m.idx[keep], m.vals[keep]
        return cls(m.labels.copy(), np.sqrt(m.nearest), offsets, clusters, values,
                   float(temperature), event_ids)

    def __len__(self) -> int:
        return len(self.clusters)

    def __getitem__(self, i: int) -> Assignment:
        n = len(self.clusters)
        i = operator.index(i)  # ints only (a slice is a TypeError, as for tuple-less records)
        if not -n <= i < n:
            raise IndexError(f"assignment index {i} out of range for a batch of {n}")
        i %= n
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        members = dict(zip(self.member_clusters[lo:hi].tolist(),
                           self.member_values[lo:hi].tolist()))
        return Assignment(int(self.clusters[i]), members, float(self.distances[i]),
                          self.temperature, None if self.event_ids is None else self.event_ids[i])

    def __iter__(self) -> Iterator[Assignment]:
        return iter(self.to_list())

    def to_list(self) -> list[Assignment]:
        """One :class:`Assignment` per event, in order (built column-wise: ~0.3 us an event).

        Returns
        -------
        list of Assignment
            The assignments, each with its event's id (None when the batch has no ids).
        """
        n = len(self.clusters)
        pairs = zip(self.member_clusters.tolist(), self.member_values.tolist())
        if len(self.member_clusters) == n:
            members = [{j: v} for j, v in pairs]
        else:
            members = [dict(islice(pairs, c)) for c in np.diff(self.offsets).tolist()]
        # tuple.__new__ mapped in C: Assignment's generated __new__ costs a Python call per event.
        ids = repeat(None) if self.event_ids is None else self.event_ids
        return list(map(_tuple_new, repeat(Assignment), zip(
            self.clusters.tolist(), members, self.distances.tolist(), repeat(self.temperature),
            ids)))

    def dense_memberships(self, n_clusters: int) -> np.ndarray:
        """The memberships as a dense ``(n, n_clusters)`` array (rows sum to 1).

        Parameters
        ----------
        n_clusters
            Number of columns: the model's number of centres.

        Returns
        -------
        ndarray of float64, shape (n, n_clusters)
            Row ``i`` holds event ``i``'s memberships, zeros elsewhere.
        """
        P = np.zeros((len(self.clusters), n_clusters))
        rows = np.repeat(np.arange(len(self.clusters)), np.diff(self.offsets))
        P[rows, self.member_clusters] = self.member_values
        return P
