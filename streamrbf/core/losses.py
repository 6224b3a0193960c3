"""The objectives: weighted distortion L_T, free energy F_T, the K-Means objective J, and the
fixed-responsibility gradient. Differentiable torch functions of squared distances ``d`` (n, k).

Uniform bounds (docs/theory.md): ``0 <= L_T - J <= n (k - 1) T / e`` and
``J - n T log k <= F_T <= J``.
"""

from __future__ import annotations

import torch

from .mappings import _safe_divisor, responsibilities

__all__ = [
    "distortion",
    "fixed_responsibility_gradient",
    "free_energy",
    "kmeans_objective",
]


def distortion(d: torch.Tensor, temperature: float, mapping: str = "entmax15") -> torch.Tensor:
    """Weighted distortion ``L_T = sum_i sum_k p_ik d_ik`` with ``p = mapping(d, T)``.

    The training loss of the soft model: each squared distance weighted by the responsibility
    the mapping gives it at temperature ``T``. It lies within ``n (k - 1) T / e`` above the K-Means
    objective, so it becomes :func:`kmeans_objective` as ``T -> 0``.

    Parameters
    ----------
    d
        Squared distances ``(n, k)`` of ``n`` points to ``k`` centres.
    temperature
        Temperature ``T`` of the mapping (a float or a 0-d tensor).
    mapping
        ``"entmax15"``, ``"softmax"`` or ``"hard"``
        (see :func:`streamrbf.core.mappings.responsibilities`).

    Returns
    -------
    torch.Tensor
        The summed distortion, a 0-d tensor, differentiable in ``d``.

    Examples
    --------
    A cold temperature gives the K-Means objective; a hot one shares each point between centres:

    >>> import torch
    >>> d = torch.tensor([[0.0, 9.0], [4.0, 1.0]])
    >>> float(distortion(d, 0.1)), float(kmeans_objective(d))
    (1.0, 1.0)
    >>> round(float(distortion(d, 10.0, mapping="softmax")), 4)
    4.8781
    """
    return (responsibilities(d, temperature, mapping) * d).sum()


def free_energy(d: torch.Tensor, temperature: float) -> torch.Tensor:
    """Free energy ``F_T = -T sum_i log sum_k exp(-d_ik / T)`` (log-sum-exp: stable at tiny T).

    The objective whose exact gradient in the centres is the softmax-weighted pull
    (:func:`fixed_responsibility_gradient`). It is bounded by ``J - n T log k <= F_T <= J``, so it
    tends to the K-Means objective ``J`` as ``T -> 0``.

    Parameters
    ----------
    d
        Squared distances ``(n, k)``.
    temperature
        Temperature ``T`` (a float or a 0-d tensor).

    Returns
    -------
    torch.Tensor
        The free energy, a 0-d tensor, differentiable in ``d``.

    Examples
    --------
    >>> import torch
    >>> d = torch.tensor([[0.0, 9.0], [4.0, 1.0]])
    >>> round(float(free_energy(d, 1e-3)), 6)
    1.0
    >>> import math
    >>> J, n, k, T = float(kmeans_objective(d)), 2, 2, 1.0
    >>> J - n * T * math.log(k) <= float(free_energy(d, T)) <= J
    True
    """
    # Shifted by each row's nearest distance, -t logsumexp(-d / t) = d_min - t logsumexp((d_min
    # - d) / t): the exponents are <= 0 with a 0 among them, finite at any temperature (the
    # divisor clamped at the dtype's smallest normal: float32 divided 0 by 0 below T ~ 1e-45).
    t = _safe_divisor(d, temperature)
    dmin = d.min(dim=-1, keepdim=True).values
    return (dmin.squeeze(-1) - t * torch.logsumexp((dmin - d) / t, dim=-1)).sum()


def kmeans_objective(d: torch.Tensor) -> torch.Tensor:
    """K-Means objective ``J = sum_i min_k d_ik`` (the inertia).

    Parameters
    ----------
    d
        Squared distances ``(n, k)``.

    Returns
    -------
    torch.Tensor
        The sum of each point's squared distance to its nearest centre, a 0-d tensor.

    Examples
    --------
    >>> import torch
    >>> float(kmeans_objective(torch.tensor([[0.0, 9.0], [4.0, 1.0]])))
    1.0
    """
    return d.min(dim=-1).values.sum()


def fixed_responsibility_gradient(
    X: torch.Tensor, centers: torch.Tensor, p: torch.Tensor
) -> torch.Tensor:
    """Gradient of the distortion in the centres with the responsibilities held fixed.

    ``2 sum_i p_ik (c_k - x_i) = 2 N_k (c_k - xbar_k)``, where ``N_k`` is centre ``k``'s mass and
    ``xbar_k`` the mean of its points weighted by ``p``: a step of ``1 / (2 N_k)`` against it moves
    each centre onto ``xbar_k`` (a soft-Lloyd step). With softmax ``p`` it is the exact gradient
    of :func:`free_energy`.

    Parameters
    ----------
    X
        Points ``(n, d)``.
    centers
        Centres ``(k, d)``.
    p
        Responsibilities ``(n, k)``.

    Returns
    -------
    torch.Tensor
        The gradient ``(k, d)``, one row per centre.

    Examples
    --------
    >>> import torch
    >>> X = torch.tensor([[0.0], [2.0]]); C = torch.tensor([[0.0]]); p = torch.ones(2, 1)
    >>> fixed_responsibility_gradient(X, C, p)
    tensor([[-4.]])

    With softmax responsibilities it equals autograd's gradient of the free energy:

    >>> from streamrbf.core.mappings import softmax
    >>> from streamrbf.core.accelerated import sq_distances
    >>> X = torch.tensor([[0.0, 1.0], [2.0, 0.0], [3.0, 3.0]], dtype=torch.float64)
    >>> C = torch.tensor([[0.0, 0.0], [3.0, 2.0]], dtype=torch.float64, requires_grad=True)
    >>> d = sq_distances(X, C)
    >>> free_energy(d, 2.0).backward()
    >>> g = fixed_responsibility_gradient(X, C.detach(), softmax(d.detach(), 2.0))
    >>> torch.allclose(g, C.grad)
    True
    """
    mass = p.sum(dim=0)
    return 2.0 * (mass[:, None] * centers - p.T @ X)
