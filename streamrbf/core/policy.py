"""The learning policy: every default and every "auto" of every face, decided once.

A :class:`Policy` says how a model learns: how it starts (seedings, the starting temperature and
its floor), how the temperature anneals, how the masses forget, when a starved centre is
re-seeded. The scikit-learn estimator, the River clusterer, the Beam transforms and the torch
layer each build one from their parameters (with the same names and defaults) and never decide
any of this themselves.

The rules behind "auto":

- ``initial_temperature="auto"``, from k-means++ seeds: :data:`AUTO_TEMPERATURE_SCALE` x
  :func:`~streamrbf.core.temperature.auto_temperature` of the initial centres, i.e. twice the
  mean squared distance of the data to its nearest initial centre: hot enough that centres still
  compete for whole clusters (deterministic annealing), which is what rescues a poor seeding.
  From centres the user gives (an ``init`` array, a warm start from a K-Means solution):
  :func:`~streamrbf.core.temperature.auto_temperature` itself, half that mean: points between
  neighbouring centres are shared, but the given clusters are kept rather than melted down.
- ``min_temperature="auto"``: :data:`AUTO_MIN_RATIO` x the starting temperature.
- ``temperature_decay="auto"``: the temperature falls by :data:`AUTO_DECAY` per full-batch
  iteration of ``fit`` while the centres move, and faster (``AUTO_DECAY ** 2``, ``** 4``,
  ``** 8``) after quiet iterations (:data:`QUIET_SHIFT`): ``fit`` spends its iterations where
  the clustering changes. A stream's temperature falls by the same factor per
  :data:`DECAY_EVENTS` events (at most that much per step): a stream anneals at the same pace
  per event whatever its batch size. A number is the factor per step.
- ``split_merge=True``: a full-batch ``fit`` ends with split and merge moves at zero temperature
  (:mod:`streamrbf.core.refine`) and Lloyd's polish, within ``max_iter``; a stream that keeps a
  sample makes the same moves on it each time its events double (:mod:`streamrbf.core.sample`).
- ``half_life="auto"``: ``fit`` over a fixed data set never forgets; a stream's masses halve every
  ``max(AUTO_MEMORY_STEPS, AUTO_MEMORY_PER_CLUSTER * n_clusters)`` steps, so a centre's step size
  never falls below about 1 / (1.44 x that many steps) of what one batch brings: it keeps following
  slow drift, and a larger batch (whose mean is less noisy) keeps proportionally more events.
  A number is a half-life in events; None never forgets.
- ``n_init="auto"``: 1 seeding for ``fit`` (annealing over all the data escapes poor seedings) and
  up to :data:`STREAM_N_INIT` for a stream's first batch (a small sample, where a poor local
  optimum would persist), stopping once the best clustering is reached twice
  (:data:`REPEAT_RTOL`), 1 when that batch is above :data:`BEST_OF_LIMIT` point-centre-feature
  products.
- ``warmup=None`` (River and Beam): ``max(WARMUP_MIN, WARMUP_PER_CLUSTER * n_clusters)`` events.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from . import _kernels
from ._warn import warn_caller
from .temperature import auto_temperature

__all__ = ["DEPRECATED_NAMES", "Policy", "translate_deprecated", "warmup_size"]

AUTO = "auto"
# The seedings by name (any other init is an array of centres).
INITS = ("k-means++", "random")
AUTO_TEMPERATURE_SCALE = 4.0
AUTO_MIN_RATIO = 1e-3
AUTO_DECAY = 0.9
DECAY_EVENTS = 100
#: A full-batch step of ``fit`` is *quiet* when its centres moved by at most this x the
#: temperature (mean squared shift per centre): the soft fixed point at this temperature is
#: reached, and the next steps cool by ``decay ** 2``, ``** 4``, ``** 8``; a step that moves
#: the centres more (a phase transition under way) returns to ``decay``.
QUIET_SHIFT = 0.1
AUTO_MEMORY_STEPS = 100
AUTO_MEMORY_PER_CLUSTER = 4
STREAM_N_INIT = 5
#: Under ``n_init="auto"``, a stream's first batch stops its seedings once two of them have
#: reached the best clustering so far (inertias equal within this relative tolerance): the
#: multistart stopping rule that a local optimum found twice has a basin large enough that more
#: seedings rarely beat it, so well-clustered first batches cost two seedings, not five.
REPEAT_RTOL = 1e-9
BEST_OF_LIMIT = 1 << 24
INIT_SAMPLE = 100_000
WARMUP_MIN = 32
WARMUP_PER_CLUSTER = 4
# After a drift alarm, a model initialised afresh on the next `warmup` events replaces the stream's
# model only if it cuts their K-Means cost to below this share: a false alarm changes nothing.
DRIFT_RESTART_GAIN = 0.5
# A (re)start from `warmup` events can land in a local minimum (two centres on one cluster, one on
# two). A stream that can afford it (River's, one event at a time) keeps buffering events up to
# RECHECK_WARMUPS times `warmup` after a (re)start, and fresh centres chosen on all of them replace
# the current ones if their cost there is below RECHECK_GAIN times the current centres' (0.95
# beat 0.9 and 1.0 on the benchmark's blobs and jump streams).
RECHECK_WARMUPS = 3
RECHECK_GAIN = 0.95


# Names of the scikit-learn-style parameters (RBFKMeans, the Beam transforms' model parameters, the
# command line) that were renamed: old name -> (policy field, the name to use instead).
DEPRECATED_NAMES = {
    "temperature": ("initial_temperature", "initial_temperature"),
    "decay": ("forgetting_per_step", "half_life"),
}


def translate_deprecated(params: dict[str, Any], owner: str, warn: bool = True) -> dict[str, Any]:
    """``params`` with deprecated names (:data:`DEPRECATED_NAMES`) translated to the policy's,
    warning once per name (``DeprecationWarning``) when ``warn``; an old name given with its new
    one is a ``ValueError``.

    Parameters
    ----------
    params
        A face's parameters by name; not changed.
    owner
        The face's name, for the warning (``"RBFKMeans"``, ``"ClusterPerKey"``, ...).
    warn
        Whether to warn (False when reading back a model file); the warning points at the
        first line outside streamrbf.

    Returns
    -------
    dict
        A copy of ``params``, each deprecated name replaced by its policy field.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     translate_deprecated({"temperature": 2.0}, "RBFKMeans")
    {'initial_temperature': 2.0}
    >>> print(seen[0].message)
    RBFKMeans(temperature=...) is deprecated and will be removed in the next release: use \
initial_temperature
    """
    out = dict(params)
    for old, (field_name, new) in DEPRECATED_NAMES.items():
        if old not in out:
            continue
        value = out.pop(old)
        if warn:
            warn_caller(f"{owner}({old}=...) is deprecated and will be removed in the next "
                        f"release: use {new}", DeprecationWarning)
        if out.get(field_name, AUTO) not in (AUTO, None):
            raise ValueError(f"give either {new} or {old}, not both")
        if old == "decay" and value == 1.0 and out.get(new, AUTO) not in (AUTO, None):
            # The old default beside a half-life: the half-life decides, as it always did.
            continue
        out[field_name] = value
    return out


def warmup_size(n_clusters: int, warmup: int | None = None) -> int:
    """Events a stream buffers before its model starts (River and Beam): ``warmup``, or by
    default ``max(32, 4 * n_clusters)``.

    Parameters
    ----------
    n_clusters
        Number of centres.
    warmup
        The size asked for, or None for the default.

    Returns
    -------
    int
        The number of events.

    Raises
    ------
    ValueError
        When ``warmup`` is not None nor an integer >= ``n_clusters`` (k-means++ needs that many).

    Examples
    --------
    >>> warmup_size(3), warmup_size(20), warmup_size(3, 10)
    (32, 80, 10)
    >>> warmup_size(3, 2)
    Traceback (most recent call last):
    ...
    ValueError: warmup must be None or an integer >= n_clusters=3, got 2
    """
    if warmup is None:
        return max(WARMUP_MIN, WARMUP_PER_CLUSTER * int(n_clusters))
    if not (isinstance(warmup, numbers.Integral) and not isinstance(warmup, bool)
            and warmup >= n_clusters):
        raise ValueError(f"warmup must be None or an integer >= n_clusters={n_clusters}, "
                         f"got {warmup!r}")
    return int(warmup)


def _real(value: Any) -> bool:
    """A real number (not a bool) that a float holds: ``10**400`` is none."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _int(value: Any) -> bool:
    """An integer (not a bool) within int64, as counts and sizes are stored."""
    return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and -(2**63) <= int(value) < 2**63)


def _auto_or(value: Any, ok: Any) -> bool:
    return (isinstance(value, str) and value == AUTO) or (
        not isinstance(value, str) and _real(value) and ok(value))


def _check_init(init: Any, k: int) -> None:
    """``init``: a name of :data:`INITS`, or an array of real numbers, finite, ``(n_clusters,
    n_features)`` (the engine's words: its features are checked against the data's)."""
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError("init must be 'k-means++', 'random' or an array of centres, got "
                             f"{init!r}")
        return
    try:
        C = np.asarray(init.detach().cpu().numpy() if hasattr(init, "detach") else init)
        numeric = C.dtype.kind in "iuf"
    except (TypeError, ValueError):
        numeric = False
    if not numeric:
        raise ValueError(f"init must be 'k-means++', 'random' or an array of centres of real "
                         f"numbers, got {init!r:.80}")
    if C.ndim != 2 or C.shape[0] != k or C.shape[1] == 0:
        raise ValueError(f"The shape of the initial centers {C.shape} does not match the "
                         f"number of clusters {k}.")
    if not np.isfinite(C).all():
        raise ValueError("init array contains NaN or infinity.")


@dataclass(frozen=True)
class Policy:
    """How a model learns; the parameters every face shares, with their defaults.

    Parameters
    ----------
    n_clusters
        Number of centres ``k``.
    mapping
        ``"entmax15"`` (sparse, default), ``"softmax"`` or ``"hard"`` (plain K-Means).
    init
        ``"k-means++"``, ``"random"`` (``n_clusters`` distinct rows drawn at random) or an array
        of initial centres ``(k, d)``.
    n_init
        Seedings tried at initialisation (the one with the lowest K-Means objective is kept), or
        ``"auto"`` (module docstring).
    initial_temperature
        Starting temperature: a float > 0 or ``"auto"``.
    temperature_decay
        Factor applied to the temperature per step, in (0, 1], or ``"auto"``.
    min_temperature
        Floor of the temperature: a float >= 0 or ``"auto"``.
    half_life
        Events after which the masses have halved (forgetting), ``None`` (never) or ``"auto"``.
    reassignment_ratio
        A centre whose decayed mass falls below this share of the largest is re-seeded on a
        poorly served point, in [0, 1).
    max_iter
        Iterations of ``fit`` (epochs in mini-batch mode), and of a stream's first-batch anneal.
    tol
        ``fit`` stops when the clustering is hard and the squared centre shift of an iteration is
        below ``tol`` x the mean feature variance.
    batch_size
        ``fit``'s mini-batch size; None: full batch (each iteration one soft-Lloyd step).
    split_merge
        ``fit``: after annealing, split the clusters with the largest error and merge the least
        useful centres while that lowers the K-Means objective (:mod:`streamrbf.core.refine`),
        within ``max_iter``; a stream with a sample: the same moves on it
        (:mod:`streamrbf.core.sample`); False: annealing alone.
    max_no_improvement
        Mini-batch ``fit`` only: once cold, stop after this many consecutive batches that do not
        improve the smoothed batch inertia (as scikit-learn's ``MiniBatchKMeans``); None: no such
        stop (the default: annealing has its own stopping rule).
    init_size
        Rows the seedings (and the starting temperature) are drawn from: a random sample of
        that many rows; None: at most :data:`INIT_SAMPLE`.
    forgetting_per_step
        A fixed forgetting factor of the masses per step, in (0, 1] (only for the deprecated
        ``decay`` parameter of the scikit-learn face); None uses ``half_life``.

    Examples
    --------
    >>> p = Policy(n_clusters=3)
    >>> p.temperature_factor(256), round(p.temperature_factor(1), 6), p.temperature_factor(4, True)
    (0.9, 0.998947, 0.9)
    >>> p.forgetting(256, stream=False), round(p.forgetting(256), 6)
    (1.0, 0.993092)
    >>> Policy(n_clusters=3, half_life=100).forgetting(100)
    0.5
    >>> Policy(n_clusters=0).check()
    Traceback (most recent call last):
    ...
    ValueError: n_clusters must be an int >= 1, got 0
    """

    n_clusters: int = 8
    mapping: str = "entmax15"
    init: Any = "k-means++"
    n_init: int | str = AUTO
    initial_temperature: float | str = AUTO
    temperature_decay: float | str = AUTO
    min_temperature: float | str = AUTO
    half_life: float | str | None = AUTO
    reassignment_ratio: float = 0.01
    max_iter: int = 300
    tol: float = 1e-4
    batch_size: int | None = None
    max_no_improvement: int | None = None
    split_merge: bool = True
    init_size: int | None = None
    forgetting_per_step: float | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any], ignore: tuple[str, ...] = ()) -> Policy:
        """A checked policy from a face's parameters; the names in ``ignore`` (the face's own:
        ``random_state``, ``device``, ...) are left out, any other unknown name is a
        ``TypeError`` naming it.

        Parameters
        ----------
        params
            The parameters by name (deprecated names already translated:
            :func:`translate_deprecated`).
        ignore
            Names the face handles itself.

        Returns
        -------
        Policy
            The policy, checked (:meth:`check`).

        Examples
        --------
        >>> Policy.from_params({"n_clusters": 3, "seed": 1}, ignore=("seed",)).n_clusters
        3
        >>> Policy.from_params({"n_clusters": 3, "temprature": 1.0})
        Traceback (most recent call last):
        ...
        TypeError: unknown parameter 'temprature'; the parameters are: batch_size, ...
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - names - set(ignore))
        if unknown:
            public = sorted(names - {"forgetting_per_step"})
            raise TypeError(f"unknown parameter {unknown[0]!r}; the parameters are: "
                            f"{', '.join(public)}")
        return cls(**{k: v for k, v in params.items() if k in names}).check()

    def to_params(self) -> dict[str, Any]:
        """The policy as the scikit-learn face's parameters (what a model file records):
        :class:`~streamrbf.kmeans.RBFKMeans` takes them back.

        Returns
        -------
        dict
            Every field by name, except that a fixed ``forgetting_per_step`` is recorded as
            ``decay`` (and left out when None).

        Examples
        --------
        >>> Policy(n_clusters=3, mapping="hard").to_params()["mapping"]
        'hard'
        """
        params = {f.name: getattr(self, f.name) for f in fields(self)}
        a = params.pop("forgetting_per_step")
        if a is not None:
            params["decay"] = a
        return params

    # --------------------------------------------------------------------------- checks
    def check(self) -> Policy:
        """Raise ``ValueError`` naming the first invalid parameter; returns the policy.

        Returns
        -------
        Policy
            The policy itself, unchanged, when every parameter is valid.
        """
        k = self.n_clusters
        if not (_int(k) and k >= 1):
            raise ValueError(f"n_clusters must be an int >= 1, got {k!r}")
        _kernels.check_mapping(self.mapping)
        _check_init(self.init, k)
        if not (self.n_init == AUTO or (_int(self.n_init) and int(self.n_init) >= 1)):
            raise ValueError(f"n_init must be 'auto' or an int >= 1, got {self.n_init!r}")
        t0 = self.initial_temperature
        if not _auto_or(t0, lambda v: 0 < v < math.inf):
            raise ValueError(f"initial_temperature must be 'auto' or a float > 0, got {t0!r}")
        r = self.temperature_decay
        if not _auto_or(r, lambda v: 0 < v <= 1):
            raise ValueError(f"temperature_decay must be 'auto' or in (0, 1], got {r!r}")
        tmin = self.min_temperature
        if not _auto_or(tmin, lambda v: 0 <= v < math.inf):
            raise ValueError(f"min_temperature must be 'auto' or a float >= 0, got {tmin!r}")
        h = self.half_life
        if not (h is None or _auto_or(h, lambda v: 0 < v < math.inf)):
            raise ValueError(f"half_life must be 'auto', None or a float > 0, got {h!r}")
        a = self.forgetting_per_step
        if a is not None and not (_real(a) and 0 < a <= 1):
            raise ValueError(f"decay must be in (0, 1], got {a!r}")
        if a is not None and a != 1.0 and h not in (None, AUTO):
            raise ValueError("give either decay or half_life, not both")
        ratio = self.reassignment_ratio
        if not (_real(ratio) and 0 <= ratio < 1):
            raise ValueError(f"reassignment_ratio must be in [0, 1), got {ratio!r}")
        if not (_int(self.max_iter) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be an int >= 1, got {self.max_iter!r}")
        if not (_real(self.tol) and self.tol >= 0):
            raise ValueError(f"tol must be a float >= 0, got {self.tol!r}")
        return self._check_fit_options()

    def _check_fit_options(self) -> Policy:
        """The rest of :meth:`check`: ``fit``'s options."""
        if not isinstance(self.split_merge, (bool, np.bool_)):
            raise ValueError(f"split_merge must be a bool, got {self.split_merge!r}")
        for name in ("init_size", "batch_size", "max_no_improvement"):
            v = getattr(self, name)
            if v is not None and not (_int(v) and v >= 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {v!r}")
        return self

    # --------------------------------------------------------------------------- rules
    def init_sample_size(self, n: int) -> int:
        """Rows the seedings of ``n`` rows are drawn from: ``init_size`` (at least
        ``n_clusters``) or :data:`INIT_SAMPLE`, at most ``n``.

        Parameters
        ----------
        n
            The rows available.

        Returns
        -------
        int
            The sample size.

        Examples
        --------
        >>> Policy(n_clusters=3).init_sample_size(10), Policy(init_size=2).init_sample_size(50)
        (10, 8)
        """
        size = INIT_SAMPLE if self.init_size is None else max(int(self.init_size),
                                                                int(self.n_clusters))
        return min(n, size)

    def repeat_rtol(self, stream: bool) -> float:
        """The tolerance of the :data:`REPEAT_RTOL` rule for these seedings, or -1 (no rule):
        the rule applies to a stream's first batch under ``n_init="auto"``.

        Parameters
        ----------
        stream
            Whether the seedings start a stream.

        Returns
        -------
        float
            :data:`REPEAT_RTOL` or -1.

        Examples
        --------
        >>> Policy(n_clusters=3).repeat_rtol(True), Policy(n_clusters=3, n_init=5).repeat_rtol(True)
        (1e-09, -1.0)
        """
        rule = stream and self.n_init == AUTO and isinstance(self.init, str)
        return REPEAT_RTOL if rule else -1.0

    def n_init_for(self, stream: bool, size: int = 0) -> int:
        """Seedings to try: for ``fit`` or a stream's first batch of ``size`` point-centre-feature
        products.

        Parameters
        ----------
        stream
            Whether the seedings start a stream (its first batch) rather than ``fit``.
        size
            The first batch's number of point-centre-feature products.

        Returns
        -------
        int
            1 for an ``init`` array; ``n_init`` when it is a number; under ``"auto"``, 5 for a
            stream's first batch of at most ``2**24`` products (at most: they stop when the
            best clustering is reached twice, :meth:`repeat_rtol`) and 1 otherwise.
        """
        if not isinstance(self.init, str):
            return 1
        if self.n_init == AUTO:
            return STREAM_N_INIT if stream and size <= BEST_OF_LIMIT else 1
        return int(self.n_init)

    def start_temperature(self, sq_distances: np.ndarray, given: bool = False,
                          weights: np.ndarray | None = None) -> float:
        """The starting temperature given the squared distances ``(n, k)`` of (a sample of) the
        data to the initial centres.

        Parameters
        ----------
        sq_distances
            Squared distances ``(n, k)`` of the data to the initial centres.
        given
            Whether the initial centres were given (an ``init`` array, a warm start) rather
            than seeded by k-means++.
        weights
            The sample's weights ``(n,)`` (a weighted mean); None: all 1.

        Returns
        -------
        float
            ``initial_temperature``, or under ``"auto"``
            :func:`~streamrbf.core.temperature.auto_temperature` of ``sq_distances``, times
            :data:`AUTO_TEMPERATURE_SCALE` for seeded centres.

        Examples
        --------
        >>> d = np.array([[1.0, 9.0], [4.0, 2.0]])   # nearest: 1 and 2
        >>> Policy().start_temperature(d), Policy().start_temperature(d, given=True)
        (3.0, 0.75)
        """
        if self.initial_temperature == AUTO:
            scale = 1.0 if given else AUTO_TEMPERATURE_SCALE
            return scale * auto_temperature(sq_distances, weights)
        return float(self.initial_temperature)

    def floor_temperature(self, start: float) -> float:
        """The temperature's floor for a model that starts at ``start`` (never above it).

        Parameters
        ----------
        start
            The model's starting temperature.

        Returns
        -------
        float
            ``min(min_temperature, start)``, or under ``"auto"`` 1e-3 x ``start``.
        """
        if self.min_temperature == AUTO:
            return AUTO_MIN_RATIO * start
        return min(float(self.min_temperature), start)

    def temperature_factor(self, n_events: int, full_batch: bool = False) -> float:
        """The temperature's factor for one step on ``n_events`` events (``full_batch``: one
        iteration of ``fit`` over the whole data).

        Parameters
        ----------
        n_events
            Events in the step.
        full_batch
            Whether the step is one full-batch iteration of ``fit``.

        Returns
        -------
        float
            ``temperature_decay``, or under ``"auto"`` 0.9 per full-batch iteration and
            ``0.9 ** min(1, n_events / 100)`` per streaming step.
        """
        if self.temperature_decay != AUTO:
            return float(self.temperature_decay)
        if full_batch:
            return AUTO_DECAY
        return AUTO_DECAY ** min(1.0, n_events / DECAY_EVENTS)

    def min_events(self) -> int:
        """Events needed to initialise a model: ``n_clusters`` for k-means++ (each centre is
        an event), one with an ``init`` array.

        Returns
        -------
        int
            The number of events.

        Examples
        --------
        >>> Policy(n_clusters=3).min_events(), Policy(n_clusters=3, init=np.eye(3)).min_events()
        (3, 1)
        """
        return int(self.n_clusters) if isinstance(self.init, str) else 1

    def fit_temperature_factor(self, start: float, floor: float) -> float:
        """The temperature's factor per full-batch iteration of ``fit`` from ``start``:
        ``temperature_decay``, or under ``"auto"`` :data:`AUTO_DECAY`, faster when that would not
        reach ``floor`` within ``max_iter`` iterations (a short ``fit`` still anneals down to
        K-Means rather than stopping soft).

        Parameters
        ----------
        start
            The starting temperature.
        floor
            The temperature's floor.

        Returns
        -------
        float
            The factor, in (0, 1].

        Examples
        --------
        >>> Policy().fit_temperature_factor(1.0, 1e-3)    # 300 iterations: 0.9 reaches the floor
        0.9
        >>> round(Policy(max_iter=4).fit_temperature_factor(1.0, 1e-3), 3)   # 3 steps down
        0.1
        """
        if self.temperature_decay != AUTO:
            return float(self.temperature_decay)
        steps = int(self.max_iter) - 1
        if steps < 1 or not (0 < floor < start):
            return AUTO_DECAY
        return min(AUTO_DECAY, (floor / start) ** (1.0 / steps))

    def last_fit_temperature(self, value: float, floor: float) -> float:
        """The temperature of the last iteration ``fit`` may run (``max_iter``): under
        ``temperature_decay="auto"`` the floor, so a fit cut short still ends on a K-Means step
        rather than soft; a temperature decay the user set is kept.

        Parameters
        ----------
        value
            The temperature the schedule has reached.
        floor
            The floor.

        Returns
        -------
        float
            The temperature to use.

        Examples
        --------
        >>> constant = Policy(temperature_decay=1.0)
        >>> Policy().last_fit_temperature(0.5, 0.01), constant.last_fit_temperature(0.5, 0.01)
        (0.01, 0.5)
        """
        return floor if self.temperature_decay == AUTO else value

    def memory_steps(self) -> int:
        """Under ``half_life="auto"``, the steps after which a stream's masses have halved.

        Returns
        -------
        int
            ``max(100, 4 * n_clusters)``.
        """
        return max(AUTO_MEMORY_STEPS, AUTO_MEMORY_PER_CLUSTER * int(self.n_clusters))

    def forgetting(self, n_events: int, stream: bool = True) -> float:
        """The factor the masses are multiplied by before a step on ``n_events`` events
        (``stream=False``: a step of ``fit`` over a fixed data set).

        Parameters
        ----------
        n_events
            Events in the step.
        stream
            Whether the step is a stream's (False: ``fit``'s, which never forgets under
            ``half_life="auto"``).

        Returns
        -------
        float
            ``forgetting_per_step`` when set; 1 for ``half_life=None``; under ``"auto"``,
            ``0.5 ** (1 / memory_steps())`` per streaming step; otherwise
            ``0.5 ** (n_events / half_life)``.
        """
        if self.forgetting_per_step is not None:
            return float(self.forgetting_per_step)
        h = self.half_life
        if h is None or (h == AUTO and not stream):
            return 1.0
        if h == AUTO:
            return 0.5 ** (1.0 / self.memory_steps())
        return 0.5 ** (n_events / float(h))
