"""The statistics and the step as torch tensor programs: for accelerators and for autograd.

The same numbers as the CPU pass of :mod:`streamrbf.core.statistics` (tested equal), in torch
operations that run on any device: :func:`batch_statistics` (torch in, torch out),
:func:`apply_step`, and :func:`fused_step`, the whole step of an accelerator in one pass with a
single transfer to the host (optionally through ``torch.compile``: :func:`compiled_fused_step`).
"""

from __future__ import annotations

import functools
import types
from typing import Any, NamedTuple

import numpy as np
import torch

from . import _kernels
from .mappings import responsibilities, sparse_entmax15
from .statistics import (
    BatchResult,
    SufficientStatistics,
    _step,
    batch_result,
    step_arrays,
)

__all__ = [
    "FusedStep",
    "apply_step",
    "batch_statistics",
    "compiled_fused_step",
    "fused_step",
    "sq_distances",
]


def sq_distances(X: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(n, k)`` by the norm expansion, clamped at 0.

    ``|x|^2 + |c|^2 - 2 x.c`` in one matrix product: cancellation can make it slightly negative,
    hence the clamp.

    Parameters
    ----------
    X
        The points ``(n, d)``.
    C
        The centres ``(k, d)``, on the same device and of the same dtype.

    Returns
    -------
    torch.Tensor
        ``(n, k)``: the squared distance of each point to each centre.

    Examples
    --------
    >>> import torch
    >>> sq_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [3.0, 0.0]]))
    tensor([[ 0.,  9.],
            [25., 16.]])
    """
    xx = (X * X).sum(dim=1, keepdim=True)
    cc = (C * C).sum(dim=1)
    return torch.addmm(xx + cc, X, C.T, alpha=-2.0).clamp_min_(0.0)


def _batch_statistics_torch(X, C, temperature, mapping, with_sums, sample_weight=None):
    D = sq_distances(X, C.to(X.dtype))
    k = C.shape[0]
    nearest, labels = D.min(dim=1)
    if mapping == "entmax15":
        vals, idx = sparse_entmax15(D, temperature)
    elif mapping == "hard":
        vals, idx = torch.ones_like(nearest)[:, None], labels[:, None]
    else:
        P = responsibilities(D, temperature, mapping)
        vals, idx = P, torch.arange(k, device=D.device).expand_as(P)
    if sample_weight is None:
        support = int((vals > 0).sum())
    else:  # each row's memberships count w times; rows of weight 0 count for nothing
        w = torch.as_tensor(sample_weight, device=X.device).to(vals.dtype)[:, None]
        support = int(((vals > 0) & (w > 0)).sum())
        vals = vals * w
    flat_idx, flat_vals = idx.reshape(-1), vals.reshape(-1).to(torch.float64)
    mass = torch.zeros(k, dtype=torch.float64, device=X.device).index_add_(0, flat_idx, flat_vals)
    loss = float((vals * D.gather(1, idx)).sum())
    if with_sums:
        if idx.shape[1] == 1:
            sums = torch.zeros(k, X.shape[1], dtype=X.dtype, device=X.device)
            sums.index_add_(0, idx[:, 0], X * vals)
        else:
            P = torch.zeros_like(D).scatter_(1, idx, vals)
            sums = P.T @ X
        sums = sums.to(torch.float64)
    else:
        sums = torch.zeros(k, X.shape[1], dtype=torch.float64, device=X.device)
    stats = SufficientStatistics(mass, sums, loss, X.shape[0])
    return BatchResult(stats, labels, nearest.to(torch.float64), support)


def batch_statistics(
    X: torch.Tensor,
    centers: torch.Tensor,
    temperature: float,
    mapping: str = "entmax15",
    *,
    with_sums: bool = True,
    backend: str = "auto",
    sample_weight: np.ndarray | None = None,
) -> BatchResult:
    """Sufficient statistics of the batch ``X`` (n, d) against ``centers`` (k, d).

    ``backend``: ``"numba"`` (CPU tensors; compiled, exact sparse entmax), ``"torch"`` (any device)
    or ``"auto"`` (numba on CPU, torch elsewhere). Both give the same numbers (tested).

    Parameters
    ----------
    X
        The batch ``(n, d)``.
    centers
        The centres ``(k, d)``; cast to the dtype of ``X``.
    temperature
        The temperature of the mapping.
    mapping
        ``"entmax15"``, ``"softmax"`` or ``"hard"``.
    with_sums
        Whether to compute the weighted sums (a step needs them; scoring does not): zeros
        otherwise.
    backend
        ``"auto"``, ``"numba"`` or ``"torch"``; anything else raises ``ValueError``.
    sample_weight
        The rows' weights ``(n,)`` (float64 numpy) for the masses, sums and distortion; None:
        all 1.

    Returns
    -------
    BatchResult
        The statistics (float64 tensors), labels, squared distances to the nearest centre and
        number of non-zero memberships, as torch tensors; the sparse memberships too from the
        numba backend (None from the torch one).

    Examples
    --------
    >>> import torch
    >>> X = torch.tensor([[0.0], [1.0], [10.0]], dtype=torch.float64)
    >>> C = torch.tensor([[0.0], [10.0]], dtype=torch.float64)
    >>> r = batch_statistics(X, C, temperature=0.1)
    >>> r.stats.mass.tolist(), r.stats.sums.ravel().tolist(), r.labels.tolist()
    ([2.0, 1.0], [1.0, 10.0], [0, 0, 1])
    """
    if backend == "auto":
        backend = "numba" if X.device.type == "cpu" else "torch"
    _kernels.check_mapping(mapping)
    if backend == "numba":
        r = batch_result(X.numpy(), centers.to(X.dtype).numpy(), temperature, mapping,
                         with_sums=with_sums, sample_weight=sample_weight)
        stats = SufficientStatistics(torch.from_numpy(r.stats.mass), torch.from_numpy(r.stats.sums),
                                     r.stats.loss, r.stats.n)
        return BatchResult(stats, torch.from_numpy(r.labels), torch.from_numpy(r.nearest),
                           r.support, r.memberships)
    if backend == "torch":
        return _batch_statistics_torch(X, centers, temperature, mapping, with_sums,
                                       sample_weight)
    raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")


def apply_step(
    centers: torch.Tensor,
    counts: torch.Tensor,
    stats: SufficientStatistics,
    decay: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One gradient step from sufficient statistics, with forgetting; returns new (centers, counts).

    ``counts`` are the decayed masses ``n_k <- decay * n_k + m_k``; each centre moves by
    ``(s_k - m_k c_k) / n_k``, i.e. gradient descent on the weighted distortion with step size
    ``1 / (2 n_k)``. With ``decay = 0`` that lands on the weighted mean ``s_k / m_k`` (one Lloyd /
    EM step). Centres with no mass stay where they are.

    Parameters
    ----------
    centers
        The centres ``(k, d)``.
    counts
        Their decayed masses ``(k,)``.
    stats
        The batch's statistics (numpy arrays or tensors; moved to the centres' device).
    decay
        The forgetting factor applied to ``counts`` first.

    Returns
    -------
    tuple of torch.Tensor
        The new centres, in the dtype of ``centers``, and the new masses, in float64.

    Examples
    --------
    >>> import torch
    >>> C, n = torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    >>> s = SufficientStatistics(torch.tensor([2.0], dtype=torch.float64),
    ...                          torch.tensor([[6.0]], dtype=torch.float64), 0.0, 2)
    >>> C, n = apply_step(C, n, s)
    >>> C.item(), n.item()
    (3.0, 2.0)
    """
    dev = centers.device
    mass = torch.as_tensor(stats.mass, dtype=torch.float64).to(dev)
    sums = torch.as_tensor(stats.sums, dtype=torch.float64).to(dev)
    C, n = step_arrays(centers, counts, mass, sums, decay)
    return C.to(centers.dtype), n


class FusedStep(NamedTuple):
    """What :func:`fused_step` returns, all on the input's device. ``flags`` (float64, 5) holds
    ``[finite, loss, support, inertia, starving]``: whether every input was finite, the weighted
    distortion, the number of non-zero memberships, the sum of squared distances to the nearest
    centre, and whether some centre's mass fell below ``ratio`` x the largest.

    Examples
    --------
    >>> import torch
    >>> X = torch.tensor([[0.0], [1.0], [float("nan")]], dtype=torch.float64)
    >>> C = torch.tensor([[0.0], [10.0]], dtype=torch.float64)
    >>> out = fused_step(X, C, torch.ones(2, dtype=torch.float64), 0.1, 1.0)
    >>> out.flags[0].item()   # not finite: the caller discards this step
    0.0
    """

    centers: torch.Tensor
    counts: torch.Tensor
    labels: torch.Tensor
    nearest: torch.Tensor
    mass: torch.Tensor
    sums: torch.Tensor
    flags: torch.Tensor


def fused_step(
    X: torch.Tensor,
    centers: torch.Tensor,
    counts: torch.Tensor,
    temperature: float | torch.Tensor,
    decay: float | torch.Tensor,
    ratio: float = 0.0,
    mapping: str = "entmax15",
) -> FusedStep:
    """Batch statistics and the step of :func:`apply_step` in tensor operations only, for
    accelerators: dense memberships (the exact entmax-1.5 of
    :func:`~streamrbf.core.mappings.entmax15`)
    and no value read back to the host, so a caller needs one transfer (``flags``) per step, and
    the function can be captured by ``torch.compile`` (pass ``temperature`` and ``decay`` as 0-d
    tensors then, so a new value does not recompile). Nothing is checked here: the caller reads
    ``flags`` and discards the result when ``finite`` is 0. Equal to :func:`batch_statistics`
    followed by :func:`apply_step` (tested).

    Parameters
    ----------
    X
        The batch ``(n, d)``.
    centers
        The centres ``(k, d)``.
    counts
        Their decayed masses ``(k,)``.
    temperature
        The temperature of the mapping (a float, or a 0-d tensor under ``torch.compile``).
    decay
        The forgetting factor of the masses (likewise).
    ratio
        A centre whose new mass is below ``ratio`` x the largest is starving (``flags[4]``).
    mapping
        ``"entmax15"``, ``"softmax"`` or ``"hard"``.

    Returns
    -------
    FusedStep
        The new centres (in the dtype of ``centers``) and masses, each row's nearest centre
        and squared distance to it, the batch's masses and weighted sums, and the ``flags``.

    Examples
    --------
    >>> import torch
    >>> X = torch.tensor([[0.0], [1.0], [10.0]], dtype=torch.float64)
    >>> C = torch.tensor([[0.0], [10.0]], dtype=torch.float64)
    >>> out = fused_step(X, C, torch.zeros(2, dtype=torch.float64), 0.1, 1.0)
    >>> out.centers.ravel().tolist(), out.counts.tolist(), out.flags.tolist()
    ([0.5, 10.0], [2.0, 1.0], [1.0, 1.0, 3.0, 1.0, 0.0])
    """
    D = sq_distances(X, centers.to(X.dtype))
    nearest, labels = D.min(dim=1)
    P = responsibilities(D, temperature, mapping)
    mass = P.sum(dim=0, dtype=torch.float64)
    sums = (P.T @ X).to(torch.float64)
    loss = (P * D).sum(dtype=torch.float64)
    C, n = _step(centers.to(torch.float64), counts.to(torch.float64), mass, sums, decay)
    top = n.max()
    starving = (n < ratio * top).any() & (top > 0)
    flags = torch.stack(
        [
            torch.isfinite(X).all().to(torch.float64),
            loss,
            (P > 0).sum().to(torch.float64),
            nearest.sum(dtype=torch.float64),
            starving.to(torch.float64),
        ]
    )
    return FusedStep(C.to(centers.dtype), n, labels, nearest, mass, sums, flags)


@functools.cache
def compiled_fused_step(mode: str = "default", shape: tuple[int, ...] | None = None):
    """:func:`fused_step` through ``torch.compile``, one compiled function per ``mode`` and model
    ``shape`` (k, d), each for fixed shapes (a new batch size compiles once more). Each gets its
    own copy of the code object, hence its own dynamo cache and recompile limit: models of
    several shapes in one process do not share (and exhaust) one. Pass the temperature and
    decay as 0-d tensors on the data's device, so a new value does not recompile.

    Parameters
    ----------
    mode
        The ``torch.compile`` mode (``"default"``, ``"reduce-overhead"``, ...).
    shape
        The model's ``(k, d)``: only names the compiled function (and so its cache).

    Returns
    -------
    callable
        A compiled function with the signature of :func:`fused_step` (``fullgraph=True``,
        ``dynamic=False``), the same object for the same arguments (``functools.cache``).

    Examples
    --------
    >>> step = compiled_fused_step("reduce-overhead", (8, 16))   # compiles on its first call
    >>> step is compiled_fused_step("reduce-overhead", (8, 16))
    True
    """
    # A code object that differs by name (an equal copy would share dynamo's cache entry).
    name = f"fused_step_{mode.replace('-', '_')}_{'_'.join(map(str, shape or ()))}"
    names: dict[str, Any] = {"co_name": name}
    if hasattr(fused_step.__code__, "co_qualname"):  # Python >= 3.11
        names["co_qualname"] = name
    fn = types.FunctionType(fused_step.__code__.replace(**names), fused_step.__globals__, name,
                            fused_step.__defaults__, fused_step.__closure__)
    fn.__kwdefaults__ = fused_step.__kwdefaults__
    return torch.compile(fn, mode=mode, fullgraph=True, dynamic=False)


