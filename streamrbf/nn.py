"""The torch layer: K-Means as a differentiable RBF layer for joint (deep) clustering."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .core import losses
from .core._warn import warn_caller
from .core.accelerated import sq_distances
from .core.mappings import hard, responsibilities, softmax
from .core.policy import Policy
from .core.seeding import kmeans_plusplus
from .core.temperature import TemperatureSchedule
from .core.validation import as_batch

__all__ = ["RBFCluster", "RBFOutput"]

# Dtypes in which distances and memberships are computed as they come; anything else (bfloat16,
# float16) is computed in float32: the norm expansion cancels badly and entmax returns NaN there.
_COMPUTE_DTYPES = (torch.float32, torch.float64)


class RBFOutput(NamedTuple):
    """What :class:`RBFCluster` returns: the memberships and the distances they come from.

    Both tensors are in the input's dtype and differentiable in the input and the centres; pass
    the whole record to the layer's losses (:meth:`RBFCluster.distortion`,
    :meth:`RBFCluster.free_energy`, :meth:`RBFCluster.balance`).

    Attributes
    ----------
    memberships : torch.Tensor
        Memberships ``(n, k)``; rows sum to 1 (exactly sparse under entmax-1.5).
    sq_distances : torch.Tensor
        Squared distances ``(n, k)`` of the inputs to the centres.

    Examples
    --------
    >>> import torch
    >>> from streamrbf.nn import RBFCluster
    >>> layer = RBFCluster(2, 1, initial_temperature=1.0)
    >>> layer = layer.init_centers(torch.zeros(1, 1), centers=torch.tensor([[0.0], [4.0]]))
    >>> memberships, sq_distances = layer(torch.tensor([[0.0], [1.0], [4.0]]))
    >>> memberships.detach()
    tensor([[1., 0.],
            [1., 0.],
            [0., 1.]])
    >>> sq_distances.detach()
    tensor([[ 0., 16.],
            [ 1.,  9.],
            [16.,  0.]])
    """

    memberships: torch.Tensor
    sq_distances: torch.Tensor


class RBFCluster(nn.Module):
    r"""K-Means as a differentiable layer: learnable centres, an annealed temperature, entmax-1.5.

    The layer maps embeddings ``x`` (n, d) to squared distances ``d_ik = ||x_i - c_k||^2`` and to
    memberships ``p_i = mapping(-d_i / T)``. With entmax-1.5 (the default) far centres get exactly
    zero membership and, once ``2T`` is below a point's margin between its two nearest centres,
    the membership is exactly the K-Means (Voronoi) assignment, so annealing ``T`` turns the soft
    layer into K-Means while staying differentiable. Train it with the weighted distortion
    :math:`L_T = \sum_{ik} p_{ik} d_{ik}` or the free energy :math:`F_T`, both of which converge to
    the K-Means objective as ``T -> 0``, and optionally the :meth:`balance` term.

    Distances and memberships are computed in float32 (or float64) whatever the input dtype and
    cast back on output, so bfloat16 and float16 inputs are safe. The memberships and losses are
    the core's differentiable functions (:func:`streamrbf.core.mappings.responsibilities`,
    :mod:`streamrbf.core.losses`) under plain autograd; gradients stay finite down to ``T = 1e-8``
    and at exact ties (the logits are shifted and clamped before any division blows up).

    Parameters
    ----------
    n_clusters
        Number of centres ``k``.
    n_features
        Dimension ``d`` of the embeddings.
    initial_temperature
        Initial temperature, a float > 0, or ``"auto"`` (default): set from the data by
        :meth:`init_centers` (twice the mean squared distance to the nearest initial centre for
        k-means++ seeds, half that mean for given centres: the rule of every face); until then
        it is 1.
    temperature_decay
        Factor applied to the temperature per :meth:`step_temperature`, in (0, 1], or
        ``"auto"`` (0.9, as per iteration of ``RBFKMeans.fit``).
    min_temperature
        The temperature never anneals below this: a float >= 0, or ``"auto"`` (1/1000 of the
        initial temperature).
    mapping
        ``"entmax15"`` (default), ``"softmax"`` or ``"hard"`` (one-hot argmin).
    straight_through
        With ``mapping="hard"``: forward one-hot, backward through the softmax at the current
        temperature, so the memberships pass gradients (straight-through estimator).
    device
        The device the centres live on (a ``torch.nn`` factory argument; None: the default).
    dtype
        The dtype of the centres (a ``torch.nn`` factory argument; None: the default).
    temperature
        Deprecated: the old name of ``initial_temperature``.
    decay
        Deprecated: the old name of ``temperature_decay``.

    Attributes
    ----------
    centers
        The centres, an ``(n_clusters, n_features)`` parameter.
    temperature
        The current temperature, a float64 scalar buffer (saved in ``state_dict``); change it
        with :meth:`step_temperature` and :meth:`reheat`.
    initial_temperature
        Where :meth:`reheat` returns to, a float64 scalar buffer.

    Examples
    --------
    >>> import torch
    >>> from streamrbf.nn import RBFCluster
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> x = torch.cat([torch.randn(50, 2) * 0.1, torch.randn(50, 2) * 0.1 + 3.0])
    >>> layer = RBFCluster(2, 2, temperature_decay=0.5, min_temperature=1e-3)
    >>> layer = layer.init_centers(x, seed=0)
    >>> opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    >>> for _ in range(20):
    ...     out = layer(x)
    ...     loss = layer.distortion(out)
    ...     opt.zero_grad(); loss.backward(); opt.step()
    ...     _ = layer.step_temperature()
    >>> layer.temperature.item()
    0.001
    >>> out = layer(x)
    >>> bool((out.memberships.sum(dim=1) - 1).abs().max() < 1e-6)
    True
    >>> sorted(layer.predict(x).bincount().tolist())
    [50, 50]
    >>> sorted(round(v, 1) for v in layer.centers.detach().mean(dim=1).tolist())
    [0.0, 3.0]
    """

    def __init__(
        self,
        n_clusters: int,
        n_features: int,
        *,
        initial_temperature: float | str = "auto",
        temperature_decay: float | str = "auto",
        min_temperature: float | str = "auto",
        mapping: str = "entmax15",
        straight_through: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        temperature: float | None = None,
        decay: float | None = None,
    ) -> None:
        super().__init__()
        if temperature is not None:
            _deprecated("temperature", "initial_temperature")
            if initial_temperature != "auto":
                raise ValueError("give either initial_temperature or temperature, not both")
            initial_temperature = temperature
        if decay is not None:
            _deprecated("decay", "temperature_decay")
            if temperature_decay != "auto":
                raise ValueError("give either temperature_decay or decay, not both")
            temperature_decay = decay
        self._policy = Policy(n_clusters=n_clusters, mapping=mapping,
                              initial_temperature=initial_temperature,
                              temperature_decay=temperature_decay,
                              min_temperature=min_temperature).check()
        if straight_through and mapping != "hard":
            raise ValueError("straight_through=True needs mapping='hard'")
        self.n_clusters = n_clusters
        self.n_features = n_features
        self._auto_start = initial_temperature == "auto"
        self.temperature_decay = temperature_decay
        self.min_temperature = min_temperature
        self.mapping = mapping
        self.straight_through = straight_through
        self._schedule = self._schedule_from(1.0 if initial_temperature == "auto"
                                             else float(initial_temperature))
        self.centers = nn.Parameter(torch.randn(n_clusters, n_features, device=device, dtype=dtype))
        f64 = {"dtype": torch.float64, "device": device}
        self.register_buffer("temperature", torch.tensor(self._schedule.value, **f64))
        self.register_buffer("initial_temperature", torch.tensor(self._schedule.initial, **f64))
        self.register_load_state_dict_post_hook(_sync_schedule)

    def _schedule_from(self, start: float) -> TemperatureSchedule:
        """The temperature schedule of a layer that starts at ``start`` (the policy's rules)."""
        p = self._policy
        return TemperatureSchedule(start, p.temperature_factor(0, full_batch=True),
                                   p.floor_temperature(start))

    def extra_repr(self) -> str:
        """The layer's settings, shown inside its ``repr`` (torch's ``nn.Module`` hook).

        Returns
        -------
        str
            The number of clusters and features, the mapping, the current temperature, its
            decay and floor, and ``straight_through``.
        """
        return (
            f"n_clusters={self.n_clusters}, n_features={self.n_features}, "
            f"mapping={self.mapping!r}, temperature={self._schedule.value:.4g}, "
            f"temperature_decay={self._schedule.decay:.4g}, "
            f"min_temperature={self._schedule.minimum:.4g}, "
            f"straight_through={self.straight_through}"
        )

    # -- state -------------------------------------------------------------------------------

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # Checked before anything is copied: a bad temperature leaves the layer as it was.
        _check_temperatures(state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @torch.no_grad()
    def init_centers(
        self,
        embeddings: torch.Tensor | np.ndarray,
        seed: int | np.random.Generator | None = None,
        *,
        centers: torch.Tensor | np.ndarray | None = None,
    ) -> RBFCluster:
        """Place the centres on embeddings by k-means++, or at given ``centers``; returns ``self``.

        With ``initial_temperature="auto"`` this also sets the initial temperature from the data
        (the policy's rule: twice the mean squared distance to the nearest new centre).

        Parameters
        ----------
        embeddings
            Embeddings ``(n, n_features)`` to seed from (and to set the temperature from).
        seed
            Seed or generator of the k-means++ draws.
        centers
            Centres ``(n_clusters, n_features)`` to start from instead of k-means++, e.g. a
            K-Means solution of the embeddings.

        Returns
        -------
        RBFCluster
            The layer itself.

        Examples
        --------
        >>> import torch
        >>> x = torch.tensor([[0.0], [1.0], [9.0], [10.0]])
        >>> layer = RBFCluster(2, 1).init_centers(x, seed=0)
        >>> sorted(layer.centers.detach().flatten().tolist()), layer.temperature.item()
        ([0.0, 10.0], 1.0)
        """
        # The core's checks (2-D, not empty, no NaN or infinity, each named in the message).
        X = as_batch(embeddings, dtype=torch.float64, device="cpu", estimator="RBFCluster").numpy()
        if X.shape[1] != self.n_features:
            raise ValueError(
                f"embeddings must have shape (n, {self.n_features}), got {tuple(X.shape)}"
            )
        if centers is None:
            rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
            C = kmeans_plusplus(X, self.n_clusters, rng)
        else:
            C = as_batch(centers, dtype=torch.float64, device="cpu", estimator="RBFCluster")
            C = C.numpy()
            if C.shape != (self.n_clusters, self.n_features):
                raise ValueError(
                    f"centers must have shape ({self.n_clusters}, {self.n_features}), "
                    f"got {tuple(C.shape)}"
                )
        self.centers.copy_(torch.from_numpy(C))
        if self._auto_start:
            d = sq_distances(torch.from_numpy(X), torch.from_numpy(C)).numpy()
            self._schedule = self._schedule_from(
                self._policy.start_temperature(d, given=centers is not None))
            self.initial_temperature.fill_(self._schedule.initial)
            self.temperature.fill_(self._schedule.value)
        return self

    @torch.no_grad()
    def step_temperature(self, n: int = 1) -> float:
        """Anneal the temperature by ``n`` schedule steps; returns the new value.

        Parameters
        ----------
        n
            Number of steps: the temperature is multiplied by ``temperature_decay ** n``, down to
            its floor.

        Returns
        -------
        float
            The new temperature (also written to the ``temperature`` buffer).
        """
        value = self._schedule.step(n)
        self.temperature.fill_(value)
        return value

    @torch.no_grad()
    def reheat(self, factor: float | None = None) -> float:
        """Raise the temperature by ``factor`` (capped at the initial one) or back to it.

        Parameters
        ----------
        factor
            Multiplier >= 1; None returns to the initial temperature.

        Returns
        -------
        float
            The new temperature.

        Examples
        --------
        >>> layer = RBFCluster(2, 1, initial_temperature=1.0, temperature_decay=0.5)
        >>> layer.step_temperature(3), layer.reheat(2.0), layer.reheat()
        (0.125, 0.25, 1.0)
        """
        value = self._schedule.reheat(factor)
        self.temperature.fill_(value)
        return value

    # -- forward -----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> RBFOutput:
        """Memberships and squared distances of ``x`` (n, n_features), in ``x``'s dtype.

        Computed in float32 unless ``x`` is float32 or float64, and differentiable in ``x`` and
        the centres; with ``straight_through`` the memberships are one-hot in the forward pass
        and carry the softmax gradient.

        Parameters
        ----------
        x
            The batch ``(n, n_features)``.

        Returns
        -------
        RBFOutput
            The memberships ``(n, n_clusters)`` at the layer's temperature and the squared
            distances they come from.
        """
        compute = x.dtype if x.dtype in _COMPUTE_DTYPES else torch.float32
        d = sq_distances(x.to(compute), self.centers.to(compute))
        T = self.temperature
        if self.straight_through:
            soft = softmax(d, T)
            p = hard(d) + (soft - soft.detach())  # exactly one-hot forward: the bracket is 0
        else:
            # The core's differentiable mappings, autograd as is: its entmax-1.5 threshold guards
            # the sqrt at exact ties, and clamped / one-hot rows have zero gradient, so gradients
            # are finite down to T = 1e-8 (tested) and torch.compile(fullgraph=True) traces it.
            p = responsibilities(d, T, self.mapping)
        return RBFOutput(p.to(x.dtype), d.to(x.dtype))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest centre of each row of ``x`` (the argmax membership).

        Parameters
        ----------
        x
            The batch ``(n, n_features)``.

        Returns
        -------
        torch.Tensor
            ``(n,)`` int64 cluster indices, without gradient.
        """
        compute = x.dtype if x.dtype in _COMPUTE_DTYPES else torch.float32
        return sq_distances(x.to(compute), self.centers.to(compute)).argmin(dim=1)

    # -- losses ------------------------------------------------------------------------------

    def distortion(self, out: RBFOutput, reduction: str = "mean") -> torch.Tensor:
        """Weighted distortion ``L_T = sum_ik p_ik d_ik`` of a forward's distances under the
        layer's mapping and temperature (:func:`streamrbf.core.losses.distortion`), per sample
        (``"mean"``) or ``"sum"``.

        The core function recomputes the memberships from the distances (one sort of an
        ``(n, k)`` array); the value and gradient equal those of ``out.memberships``, except that
        with ``straight_through`` the loss has the exact K-Means gradient (through the distances
        only) while the memberships keep their surrogate gradient for losses of your own.

        Parameters
        ----------
        out
            The layer's output on a batch (:class:`RBFOutput`).
        reduction
            ``"mean"`` (per sample) or ``"sum"``; anything else raises ``ValueError``.

        Returns
        -------
        torch.Tensor
            The distortion, a 0-d tensor, differentiable in the distances.
        """
        d = _float(out.sq_distances)
        return _reduce(losses.distortion(d, self.temperature, self.mapping), d, reduction)

    def free_energy(self, out: RBFOutput, reduction: str = "mean") -> torch.Tensor:
        """Free energy ``F_T`` of a forward's distances, per sample (``"mean"``) or ``"sum"``.

        The softmax family's objective (:func:`streamrbf.core.losses.free_energy`): the memberships
        are not used. It lies within ``T log k`` per sample below the K-Means objective.

        Parameters
        ----------
        out
            The layer's output on a batch (:class:`RBFOutput`).
        reduction
            ``"mean"`` (per sample) or ``"sum"``; anything else raises ``ValueError``.

        Returns
        -------
        torch.Tensor
            The free energy, a 0-d tensor, differentiable in the distances.

        Examples
        --------
        >>> import torch
        >>> layer = RBFCluster(2, 1, initial_temperature=0.01)
        >>> layer = layer.init_centers(torch.zeros(1, 1), centers=torch.tensor([[0.0], [4.0]]))
        >>> out = layer(torch.tensor([[0.0], [1.0], [4.0]]))
        >>> round(layer.free_energy(out).item(), 4), round(layer.free_energy(out, "sum").item(), 4)
        (0.3333, 1.0)
        """
        d = _float(out.sq_distances)
        return _reduce(losses.free_energy(d, self.temperature), d, reduction)

    @staticmethod
    def balance(out: RBFOutput) -> torch.Tensor:
        """``KL(mean membership || uniform)``: a penalty on unequal cluster shares.

        It is 0 when every cluster gets the same share of the batch and ``log k`` when one takes
        everything. Add it (weighted) to the loss against collapsed clusters.

        Parameters
        ----------
        out
            The layer's output on a batch (:class:`RBFOutput`).

        Returns
        -------
        torch.Tensor
            The penalty, a 0-d tensor, differentiable in the memberships.

        Examples
        --------
        >>> import math, torch
        >>> layer = RBFCluster(2, 1, initial_temperature=0.01)
        >>> layer = layer.init_centers(torch.zeros(1, 1), centers=torch.tensor([[0.0], [4.0]]))
        >>> RBFCluster.balance(layer(torch.tensor([[0.0], [4.0]]))).item()  # one point each
        0.0
        >>> collapsed = RBFCluster.balance(layer(torch.tensor([[0.0], [1.0]]))).item()
        >>> math.isclose(collapsed, math.log(2), rel_tol=1e-6)
        True
        """
        q = _float(out.memberships).mean(dim=0)
        k = q.shape[-1]
        # log of the clamped share: 0 log 0 = 0 with a finite (not -inf) push on empty clusters.
        log_q = q.clamp_min(torch.finfo(q.dtype).tiny).log()
        return (q * log_q).sum() + math.log(k)


def _deprecated(old: str, new: str) -> None:
    warn_caller(f"RBFCluster({old}=...) is deprecated and will be removed in the next release: "
                f"use {new}", DeprecationWarning)


def _float(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype in _COMPUTE_DTYPES else t.float()


def _reduce(total: torch.Tensor, d: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / max(d.shape[0], 1)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def _check_temperatures(state_dict: Mapping[str, object], prefix: str = "") -> None:
    """Refuse a saved temperature that is not finite and > 0 (``ValueError`` naming the key).

    Such a temperature would load silently and make every membership 0 (or NaN); entries of the
    wrong shape are left to ``load_state_dict``'s own size check.

    Examples
    --------
    >>> import torch
    >>> _check_temperatures({"temperature": torch.tensor(0.5, dtype=torch.float64)})
    >>> _check_temperatures({"rbf.temperature": torch.tensor(float("nan"))}, "rbf.")
    Traceback (most recent call last):
    ...
    ValueError: rbf.temperature in the state_dict must be finite and > 0, got nan
    """
    for name in ("temperature", "initial_temperature"):
        key = prefix + name
        if key not in state_dict:
            continue
        value = torch.as_tensor(state_dict[key])
        if value.numel() != 1 or value.is_meta:
            continue
        t = float(value)
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"{key} in the state_dict must be finite and > 0, got {t!r}")


def _sync_schedule(module: nn.Module, incompatible_keys) -> None:
    # The saved buffers are the truth: rebuild the Python schedule from them after loading.
    if isinstance(module, RBFCluster):
        module._schedule = module._schedule_from(float(module.initial_temperature))
        module._schedule.value = float(module.temperature)
