"""Responsibilities of points to centres: entmax-1.5 (default), stable softmax, and hard argmin.

These torch functions are the reference form of the mappings (any device, differentiable). The
compiled CPU kernels in :mod:`streamrbf.core._kernels` compute the same numbers and are tested
equal.

All three take squared distances ``d`` of shape ``(..., k)`` and the temperature ``T``; the logits
are ``z = -d / logit_divisor(T)``.
"""

from __future__ import annotations

from typing import Any

import torch

from ._kernels import MAPPING_CODES, check_mapping
from .temperature import logit_divisor

__all__ = ["MAPPINGS", "entmax15", "hard", "responsibilities", "softmax", "sparse_entmax15"]

MAPPINGS = tuple(MAPPING_CODES)  # the registered names


def _safe_divisor(
    d: torch.Tensor, temperature: float | torch.Tensor, factor: float = 1.0
) -> float | torch.Tensor:
    """``factor * logit_divisor(T)``, clamped at the smallest normal number of ``d``'s dtype.

    Below ``torch.finfo(d.dtype).tiny`` a divisor is subnormal or 0 in ``d``'s dtype (float32 for
    ``T`` below about 1e-45: the schedule's floor is float64's tiny), and ``0 / 0`` at the nearest
    centre made whole rows NaN. Clamped, the divisor and its reciprocal stay finite, so shifted
    logits ``(d_min - d) / divisor`` are 0 at the nearest centre and very negative elsewhere: the
    hard (Voronoi) limit. Any divisor that is a normal number is returned as it would be cast in
    the division, so results at ordinary temperatures are unchanged.

    Examples
    --------
    >>> import torch
    >>> _safe_divisor(torch.zeros(1), 1e-300, 2.0) == torch.finfo(torch.float32).tiny
    True
    >>> _safe_divisor(torch.zeros(1, dtype=torch.float64), 1e-300, 2.0)
    2e-300
    >>> _safe_divisor(torch.zeros(1), torch.tensor(1e-300, dtype=torch.float64), 2.0).item()
    1.1754943508222875e-38
    """
    divisor = factor * logit_divisor(temperature)
    tiny = torch.finfo(d.dtype).tiny
    if isinstance(divisor, torch.Tensor):
        if not divisor.is_floating_point() or torch.finfo(divisor.dtype).tiny > tiny:
            divisor = divisor.to(d.dtype)  # exact widening: the division is in d's dtype anyway
        # Clamped in its own dtype (float64 for the models' temperatures): the division then
        # casts it exactly as it did an unclamped divisor.
        return divisor.clamp_min(tiny)
    return max(divisor, tiny)


def _shifted_half_logits(d: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """``u = z/2 - max(z/2) = (d_min - d) / (2 divisor)``, clamped at -1 where entmax is exactly 0.

    Clamping is exact: the entmax-1.5 threshold is never below ``max(u) - 1 = -1``, so any entry at
    or below -1 gets responsibility 0 either way, and the clamp keeps tiny temperatures finite.
    The divisor is clamped at the dtype's smallest normal number (:func:`_safe_divisor`), so a
    temperature that underflows in ``d``'s dtype gives the hard assignment, not ``0 / 0``.

    Examples
    --------
    >>> import torch
    >>> _shifted_half_logits(torch.tensor([[0.0, 1.0, 4.0]]), 1.0)
    tensor([[ 0.0000, -0.5000, -1.0000]])
    >>> _shifted_half_logits(torch.tensor([[0.0, 1.0, 4.0]]), 1e-300)  # 2T is 0 in float32
    tensor([[ 0., -1., -1.]])
    """
    dmin = d.min(dim=-1, keepdim=True).values
    return ((dmin - d) / _safe_divisor(d, temperature, 2.0)).clamp_min(-1.0)


def _entmax15_threshold(vals: torch.Tensor) -> torch.Tensor:
    """Exact entmax-1.5 threshold for rows of ``vals`` sorted in descending order."""
    m = vals.shape[-1]
    rho = torch.arange(1, m + 1, dtype=vals.dtype, device=vals.device)
    s1 = vals.cumsum(-1)
    mean = s1 / rho
    ss = (vals * vals).cumsum(-1) - s1 * mean
    delta = (1.0 - ss) / rho
    # sqrt only where delta > 0: its gradient at 0 is infinite, and 0 * inf would turn the
    # (unselected) entries of exact ties into NaN gradients.
    positive = delta > 0.0
    root = torch.where(positive, delta, torch.ones_like(delta)).sqrt()
    tau = mean - torch.where(positive, root, torch.zeros_like(root))
    # At least 1 for any finite row; the clamp keeps a NaN row (which the callers reject) from
    # indexing out of bounds, a device-side assert on GPUs.
    support = (tau <= vals).sum(dim=-1, keepdim=True).clamp_min(1)
    return tau.gather(-1, support - 1)


def sparse_entmax15(d: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entmax-1.5 responsibilities in sparse form ``(values, indices)``, each ``(..., m)``.

    ``m`` is the largest number of candidates in any row (centres within ``2 T`` of the nearest),
    so only those are sorted; values outside a row's support are exactly 0.

    Parameters
    ----------
    d
        Squared distances ``(..., k)`` of points to the ``k`` centres.
    temperature
        The temperature ``T`` (the logits are ``-d / logit_divisor(T)``).

    Returns
    -------
    tuple of torch.Tensor
        ``(values, indices)``: each row's ``m`` largest responsibilities, in descending order, and
        the centres they belong to.

    Examples
    --------
    >>> import torch
    >>> d = torch.tensor([[0.0, 0.5, 9.0], [4.0, 0.0, 9.0]], dtype=torch.float64)
    >>> vals, idx = sparse_entmax15(d, 1.0)   # at most 2 centres within 2T of the nearest
    >>> vals
    tensor([[0.6740, 0.3260],
            [1.0000, 0.0000]], dtype=torch.float64)
    >>> torch.equal(torch.zeros_like(d).scatter(-1, idx, vals), entmax15(d, 1.0))
    True
    """
    u = _shifted_half_logits(d, temperature)
    candidates = (u > -1.0).sum(dim=-1, keepdim=True)
    m = int(candidates.max()) if u.numel() else 1
    vals, idx = torch.topk(u, max(m, 1), dim=-1, sorted=True)
    if m <= 1:
        return torch.ones_like(vals), idx
    return _entmax15_from_sorted(vals, candidates), idx


def _entmax15_from_sorted(vals: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Entmax-1.5 of rows of clamped half-logits ``vals`` (sorted descending), exact at the edges:
    entries at the clamp are exactly 0 (tau >= -1), and single-candidate rows exactly one-hot."""
    tau = _entmax15_threshold(vals)
    p = torch.where(vals > -1.0, (vals - tau).clamp_min(0.0).square(), 0.0)
    one_hot = torch.zeros_like(p)
    one_hot[..., 0] = 1.0
    return torch.where(candidates == 1, one_hot, p)


def entmax15(d: torch.Tensor, temperature: float) -> torch.Tensor:
    """Dense entmax-1.5 responsibilities of squared distances ``d`` (exact zeros off the support).

    Parameters
    ----------
    d
        Squared distances ``(..., k)`` of points to the ``k`` centres.
    temperature
        The temperature ``T`` (the logits are ``-d / logit_divisor(T)``).

    Returns
    -------
    torch.Tensor
        The responsibilities, the shape and dtype of ``d``; rows sum to 1.

    Examples
    --------
    >>> import torch
    >>> entmax15(torch.tensor([[0.0, 0.5, 9.0]], dtype=torch.float64), 1.0)
    tensor([[0.6740, 0.3260, 0.0000]], dtype=torch.float64)
    """
    u = _shifted_half_logits(d, temperature)
    candidates = (u > -1.0).sum(dim=-1, keepdim=True)
    vals, order = torch.sort(u, dim=-1, descending=True)
    return torch.zeros_like(u).scatter(-1, order, _entmax15_from_sorted(vals, candidates))


def softmax(d: torch.Tensor, temperature: float) -> torch.Tensor:
    """Numerically stable softmax of ``-d / T`` (never NaN for finite ``d`` and any ``T > 0``).

    The logits are shifted before the division, ``(d_min - d) / T``, so the nearest centre's is
    exactly 0 however small ``T`` is (``-d / T`` alone is ``-inf`` in every entry of a row once
    ``d_min / T`` overflows), and the divisor is clamped as in entmax (:func:`_safe_divisor`).

    Parameters
    ----------
    d
        Squared distances ``(..., k)`` of points to the ``k`` centres.
    temperature
        The temperature ``T`` (the logits are ``-d / logit_divisor(T)``).

    Returns
    -------
    torch.Tensor
        The responsibilities, the shape and dtype of ``d``; rows sum to 1.

    Examples
    --------
    >>> import torch
    >>> softmax(torch.tensor([[0.0, 1e6]]), 1e-9)   # never NaN, even at a tiny temperature
    tensor([[1., 0.]])
    >>> softmax(torch.tensor([[5.0, 6.0]]), 1e-300)   # T is 0 in float32: the hard assignment
    tensor([[1., 0.]])
    """
    dmin = d.min(dim=-1, keepdim=True).values
    return torch.softmax((dmin - d) / _safe_divisor(d, temperature), dim=-1)


def hard(d: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
    """One-hot argmin (the K-Means / Voronoi limit); ``temperature`` is ignored.

    Parameters
    ----------
    d
        Squared distances ``(..., k)`` of points to the ``k`` centres.
    temperature
        Ignored (the mappings share one signature).

    Returns
    -------
    torch.Tensor
        1 at each row's nearest centre (the first one on ties), 0 elsewhere, in the shape and
        dtype of ``d``.

    Examples
    --------
    >>> import torch
    >>> hard(torch.tensor([[0.0, 0.5, 9.0], [4.0, 1.0, 9.0]]))
    tensor([[1., 0., 0.],
            [0., 1., 0.]])
    """
    return torch.nn.functional.one_hot(d.argmin(dim=-1), d.shape[-1]).to(d.dtype)


def responsibilities(
    d: torch.Tensor, temperature: float | torch.Tensor, mapping: str = "entmax15"
) -> torch.Tensor:
    """Responsibilities ``p_ik`` of squared distances ``d`` under ``mapping``; rows sum to 1.

    Parameters
    ----------
    d
        Squared distances ``(..., k)`` of points to the ``k`` centres.
    temperature
        The temperature ``T`` (the logits are ``-d / logit_divisor(T)``).
    mapping
        ``"entmax15"``, ``"softmax"`` or ``"hard"``; any other name raises ``ValueError``.

    Returns
    -------
    torch.Tensor
        The responsibilities, the shape of ``d``.

    Examples
    --------
    >>> import torch
    >>> d = torch.tensor([[0.0, 4.0], [1.0, 1.0]])
    >>> responsibilities(d, 1.0, "hard")
    tensor([[1., 0.],
            [1., 0.]])
    """
    check_mapping(mapping)  # raises, naming the choices, for anything but a registered name
    return TORCH_MAPPINGS[mapping](d, temperature)


# The torch form of each mapping of the registry (streamrbf.core._kernels.MAPPINGS), by name.
TORCH_MAPPINGS: dict[str, Any] = {"entmax15": entmax15, "softmax": softmax, "hard": hard}
