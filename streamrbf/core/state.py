"""The model-state record: what a model *is*, for every face, as plain arrays.

A :class:`ModelState` holds a bank of ``B`` models with ``k`` centres in ``d`` dimensions; a
single model is a bank of one. The scikit-learn face holds one, River's keyed clusterer and Beam's
per-key transform hold one per stream, the torch layer reads its centres. The engine
(:mod:`streamrbf.core.engine`) computes new records from old ones; the schema
(:mod:`streamrbf.core.persistence`) writes and reads them.

Every random choice of a model is drawn from :func:`generator` of its seed, its step count and a
purpose: a retried step (a Beam bundle run twice, a step that raised and is called again) draws
exactly the same numbers, and no random generator state is ever stored.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["COUNTER_MAX", "LazyGenerator", "ModelState", "counted", "generator", "host_array",
           "seed_from"]

# What a draw is for: the third word of a generator's seed (see `generator`).
SEEDING = 0
RESEEDING = 1
REFITTING = 2


# The counters (steps, events seen) are int64: they stop at its largest value instead of wrapping.
COUNTER_MAX = 2**63 - 1


def counted(current: Any, more: int) -> int:
    """A counter after ``more`` more, saturating at :data:`COUNTER_MAX` (never wrapping to a
    negative count a model file could not hold).

    Parameters
    ----------
    current
        The counter (an int or numpy integer >= 0).
    more
        How much to add (>= 0).

    Returns
    -------
    int
        ``min(current + more, COUNTER_MAX)``.

    Examples
    --------
    >>> counted(np.int64(5), 3), counted(COUNTER_MAX - 1, 10) == COUNTER_MAX
    (8, True)
    """
    return min(int(current) + int(more), COUNTER_MAX)


def host_array(a: Any) -> np.ndarray:
    """A numpy array of a numpy array (itself) or a torch tensor on any device (a copy in host
    memory for an accelerator's; a view for a CPU tensor), without importing torch.

    Parameters
    ----------
    a
        A numpy array or torch tensor.

    Returns
    -------
    numpy.ndarray
        Its values in host memory.

    Examples
    --------
    >>> import torch
    >>> host_array(torch.ones(2)).tolist(), host_array(np.zeros(1)).tolist()
    ([1.0, 1.0], [0.0])
    """
    return a if isinstance(a, np.ndarray) else a.detach().cpu().numpy()


def seed_from(random_state: Any) -> int:
    """The 63-bit seed of a model from what a face was given: an int, None (fresh entropy), a
    ``numpy.random.Generator`` or ``RandomState`` (one draw from it).

    Parameters
    ----------
    random_state
        ``None``, an int >= 0, a ``numpy.random.Generator`` or a ``numpy.random.RandomState``.

    Returns
    -------
    int
        A seed in ``[0, 2**63)``.

    Raises
    ------
    ValueError
        For anything else (a negative int, a float, a string).

    Examples
    --------
    >>> seed_from(7), seed_from(np.random.default_rng(0)) == seed_from(np.random.default_rng(0))
    (7, True)
    >>> 0 <= seed_from(None) < 2**63
    True
    """
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    if random_state is None:
        return int(np.random.SeedSequence().entropy) % 2**63  # type: ignore[arg-type]
    if (isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)
            and 0 <= int(random_state) < 2**63):
        return int(random_state)
    raise ValueError(
        f"random_state must be None, an int in [0, 2**63) or a numpy Generator, got "
        f"{random_state!r}"
    )


def generator(seed: int, n_steps: int, purpose: int, *more: int) -> np.random.Generator:
    """The random generator of one draw: a function of the model's seed, its step count, what
    the draw is for (``SEEDING``, ``RESEEDING``) and any further counters (the seeding's trial).

    The same arguments give the same stream of numbers in any process, so a model's random draws
    are reproducible from its record alone.

    Parameters
    ----------
    seed
        The model's seed.
    n_steps
        The model's step count at the draw.
    purpose
        What the draw is for: ``SEEDING``, ``RESEEDING`` or ``REFITTING``.
    *more
        Further counters (the seeding's trial).

    Returns
    -------
    numpy.random.Generator
        A generator seeded with all of them.

    Examples
    --------
    >>> a = generator(7, 3, RESEEDING).random()
    >>> a == generator(7, 3, RESEEDING).random() != generator(7, 4, RESEEDING).random()
    True
    """
    return np.random.default_rng([int(seed), int(n_steps), int(purpose), *map(int, more)])


class LazyGenerator:
    """:func:`generator` made on first use: a step that draws nothing (most steps: no centre is
    starved) does not pay the ~30 us of seeding one.

    Examples
    --------
    >>> lazy = LazyGenerator(7, 3, RESEEDING)
    >>> lazy.random() == generator(7, 3, RESEEDING).random()
    True
    """

    __slots__ = ("_args", "_rng")

    def __init__(self, *args: int) -> None:
        self._args = args
        self._rng: np.random.Generator | None = None

    def __getattr__(self, name: str) -> Any:
        if self._rng is None:
            self._rng = generator(*self._args)
        return getattr(self._rng, name)


def _f64(values: Any, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(values, dtype=np.float64), (n,)).copy()


@dataclass(eq=False, slots=True)
class ModelState:
    """A bank of models: centres, decayed masses, temperatures, counters and seeds.

    Arrays have a leading model axis of length ``B`` (``n_models``). ``centers`` and ``masses``
    are numpy arrays for models on the CPU and torch tensors for models on an accelerator; the
    per-model scalars are always numpy arrays on the host.

    Parameters
    ----------
    centers
        Centres ``(B, k, d)``, float32 or float64.
    masses
        Decayed responsibility masses ``(B, k)``, float64: a centre's step size is ``1 / mass``.
    temperature
        Current temperature ``(B,)``.
    initial_temperature
        Where a reheat returns to ``(B,)``.
    min_temperature
        The floor ``(B,)``.
    n_steps
        Gradient steps taken ``(B,)`` (the temperature has been annealed at each).
    n_seen
        Events learnt from ``(B,)``.
    seed
        Each model's seed ``(B,)`` (uint64): with ``n_steps``, it determines every random draw.
    feature_names
        Names of the ``d`` features, or None.

    Examples
    --------
    >>> s = ModelState.single(np.eye(2), np.ones(2), temperature=0.5, seed=3)
    >>> s.n_models, s.n_clusters, s.n_features, float(s.temperature[0])
    (1, 2, 2, 0.5)
    >>> t = s.replace_model(0, temperature=0.25, n_steps=1)
    >>> float(s.temperature[0]), float(t.temperature[0]), int(t.n_steps[0])  # s is unchanged
    (0.5, 0.25, 1)
    """

    centers: Any
    masses: Any
    temperature: np.ndarray
    initial_temperature: np.ndarray
    min_temperature: np.ndarray
    n_steps: np.ndarray
    n_seen: np.ndarray
    seed: np.ndarray
    feature_names: tuple[str, ...] | None = field(default=None)

    @classmethod
    def single(
        cls,
        centers: Any,
        masses: Any,
        *,
        temperature: float,
        initial_temperature: float | None = None,
        min_temperature: float = 0.0,
        n_steps: int = 0,
        n_seen: int = 0,
        seed: int = 0,
        feature_names: tuple[str, ...] | None = None,
    ) -> ModelState:
        """A bank of one model from its ``(k, d)`` centres and ``(k,)`` masses (numpy arrays or
        torch tensors; nothing is copied).

        Parameters
        ----------
        centers
            The centres ``(k, d)``.
        masses
            Their decayed masses ``(k,)``.
        temperature
            The current temperature.
        initial_temperature
            Where a reheat returns to; None: ``temperature``.
        min_temperature
            The temperature's floor.
        n_steps
            Steps taken.
        n_seen
            Events learnt from.
        seed
            The model's seed.
        feature_names
            Names of the ``d`` features, or None.

        Returns
        -------
        ModelState
            A record with ``n_models == 1``: ``centers`` and ``masses`` as views with a leading
            axis of length 1.
        """
        t0 = temperature if initial_temperature is None else initial_temperature
        return cls(
            centers[None], masses[None], _f64(temperature, 1), _f64(t0, 1),
            _f64(min_temperature, 1), np.array([n_steps], np.int64), np.array([n_seen], np.int64),
            np.array([seed], np.uint64), feature_names,
        )

    @property
    def n_models(self) -> int:
        return int(self.centers.shape[0])

    @property
    def n_clusters(self) -> int:
        return int(self.centers.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.centers.shape[2])

    @property
    def on_device(self) -> bool:
        """Whether the centres are torch tensors (on an accelerator, or forced onto torch)."""
        return not isinstance(self.centers, np.ndarray)

    def replace_model(self, model: int, **changes: Any) -> ModelState:
        """A new record with model ``model``'s fields replaced (``centers=(k, d)``,
        ``temperature=float``, ...); the other models and this record are unchanged.

        Parameters
        ----------
        model
            Which model of the bank.
        **changes
            New values by field name, each for that one model.

        Returns
        -------
        ModelState
            The new record: each changed field is a copy (numpy ``copy`` or torch ``clone``)
            with row ``model`` replaced; the other fields are shared with this record.
        """
        fields = {}
        for name, value in changes.items():
            old = getattr(self, name)
            new = old.clone() if hasattr(old, "clone") else old.copy()
            new[model] = value
            fields[name] = new
        return replace(self, **fields)
