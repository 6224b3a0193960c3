"""The objectives: weighted distortion L_T, free energy F_T, the K-Means objective J, and the
fixed-responsibility gradient. Differentiable torch functions of squared distances ``d`` (n, k).

Uniform bounds (MATH.md): ``0 <= L_T - J <= n (k - 1) T / e`` and ``J - n T log k <= F_T <= J``.
"""

from __future__ import annotations

import torch

from .mappings import responsibilities
from .temperature import logit_divisor

__all__ = [
    "distortion",
    "fixed_responsibility_gradient",
    "free_energy",
    "kmeans_objective",
]


def distortion(d: torch.Tensor, temperature: float, mapping: str = "entmax15") -> torch.Tensor:
    """Weighted distortion ``L_T = sum_i sum_k p_ik d_ik`` with ``p = mapping(d, T)``.

    >>> import torch
    >>> d = torch.tensor([[0.0, 9.0], [4.0, 1.0]])
    >>> float(distortion(d, 0.1))
    1.0
    """
    return (responsibilities(d, temperature, mapping) * d).sum()


def free_energy(d: torch.Tensor, temperature: float) -> torch.Tensor:
    """Free energy ``F_T = -T sum_i log sum_k exp(-d_ik / T)`` (log-sum-exp: stable at tiny T).

    >>> import torch
    >>> round(float(free_energy(torch.tensor([[0.0, 9.0], [4.0, 1.0]]), 1e-3)), 6)
    1.0
    """
    t = logit_divisor(temperature)
    return -t * torch.logsumexp(-d / t, dim=-1).sum()


def kmeans_objective(d: torch.Tensor) -> torch.Tensor:
    """K-Means objective ``J = sum_i min_k d_ik`` (the inertia).

    >>> import torch
    >>> float(kmeans_objective(torch.tensor([[0.0, 9.0], [4.0, 1.0]])))
    1.0
    """
    return d.min(dim=-1).values.sum()


def fixed_responsibility_gradient(
    X: torch.Tensor, centers: torch.Tensor, p: torch.Tensor
) -> torch.Tensor:
    """Gradient of the distortion in the centres with responsibilities ``p`` held fixed:
    ``2 sum_i p_ik (c_k - x_i) = 2 N_k (c_k - xbar_k)`` (the exact gradient of F_T with softmax
    ``p``).

    >>> import torch
    >>> X = torch.tensor([[0.0], [2.0]]); C = torch.tensor([[0.0]]); p = torch.ones(2, 1)
    >>> fixed_responsibility_gradient(X, C, p)
    tensor([[-4.]])
    """
    mass = p.sum(dim=0)
    return 2.0 * (mass[:, None] * centers - p.T @ X)
