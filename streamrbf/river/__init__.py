"""River adapter: annealed entmax-1.5 K-Means for streams of dict events.

:class:`RBFKMeans` is a ``river.base.Clusterer`` that learns one event (or one mini-batch) at a
time; :class:`KeyedRBFKMeans` keeps one such model per value of a key field, with bounded memory.
The step, the temperature and the seeding are those of the core (:mod:`streamrbf.core.statistics`,
:mod:`streamrbf.core.temperature`, :mod:`streamrbf.core.seeding`); the per-event arithmetic runs in
the compiled kernels of :mod:`streamrbf.core._online_kernels`, so torch is never called per event.
"""

from ._keyed import KeyedRBFKMeans
from ._model import FeatureTypeError, RBFKMeans

# the public names live here (reprs, pickles, the API pages)
RBFKMeans.__module__ = KeyedRBFKMeans.__module__ = __name__

__all__ = ["FeatureTypeError", "KeyedRBFKMeans", "RBFKMeans"]
