"""Sufficient statistics of a mini-batch, and the step they define.

For a batch and centres ``C`` at temperature ``T``: masses ``m_k = sum_i p_ik``, weighted sums
``s_k = sum_i p_ik x_i`` and the weighted distortion ``sum_ik p_ik d_ik``. They are sums, so the
statistics of shards add up (in any order) to those of the union: this is what makes distributed
training exact. The step with decayed masses ``n_k <- a n_k + m_k``,
``c_k <- c_k + (s_k - m_k c_k) / n_k`` is one soft-Lloyd (EM) step when ``a = 0`` and the running
mean (MacQueen) when ``a = 1``.
"""

from __future__ import annotations

import functools
import math
import types
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from . import _kernels
from .mappings import responsibilities, sparse_entmax15
from .temperature import logit_divisor

__all__ = [
    "BatchResult",
    "FusedStep",
    "SparseMemberships",
    "SufficientStatistics",
    "apply_step",
    "batch_statistics",
    "compiled_fused_step",
    "fused_step",
    "sparse_memberships",
    "sq_distances",
]


@dataclass
class SufficientStatistics:
    """Masses ``mass`` (k,), weighted sums ``sums`` (k, d), weighted distortion ``loss`` and the
    number of events ``n`` of one or more batches. Add them with ``+`` (shards, CombineFns).

    Examples
    --------
    >>> import torch
    >>> a = SufficientStatistics.zeros(2, 3)
    >>> b = SufficientStatistics(torch.ones(2, dtype=torch.float64),
    ...                          torch.ones(2, 3, dtype=torch.float64), 1.5, 2)
    >>> (a + b + b).mass.tolist(), (a + b + b).n
    ([2.0, 2.0], 4)
    """

    mass: torch.Tensor
    sums: torch.Tensor
    loss: float = 0.0
    n: int = 0

    @classmethod
    def zeros(cls, n_clusters: int, n_features: int, device: torch.device | str = "cpu"):
        """Empty statistics (the identity of ``+``)."""
        return cls(
            torch.zeros(n_clusters, dtype=torch.float64, device=device),
            torch.zeros(n_clusters, n_features, dtype=torch.float64, device=device),
        )

    def __add__(self, other: SufficientStatistics) -> SufficientStatistics:
        if self.sums.shape != other.sums.shape:
            raise ValueError(
                f"cannot add statistics of shape {tuple(self.sums.shape)} and "
                f"{tuple(other.sums.shape)}"
            )
        return SufficientStatistics(
            self.mass + other.mass.to(self.mass.device),
            self.sums + other.sums.to(self.sums.device),
            float(self.loss) + float(other.loss),
            self.n + other.n,
        )

    def means(self) -> torch.Tensor:
        """Responsibility-weighted means ``s_k / m_k`` (NaN rows where ``m_k = 0``)."""
        return self.sums / self.mass[:, None]


@dataclass
class BatchResult:
    """What one pass over a batch yields: its statistics, each point's nearest centre and the
    squared distance to it.

    Examples
    --------
    >>> import torch
    >>> X = torch.tensor([[0.0], [0.4], [10.0]], dtype=torch.float64)
    >>> C = torch.tensor([[0.0], [1.0], [10.0]], dtype=torch.float64)
    >>> r = batch_statistics(X, C, temperature=1.0)
    >>> r.labels.tolist(), r.support   # the middle point has 2 memberships
    ([0, 0, 2], 5)
    """

    stats: SufficientStatistics
    labels: torch.Tensor
    nearest: torch.Tensor
    support: int = 0
    """Number of non-zero responsibilities (== batch size when every row is one-hot)."""
    memberships: SparseMemberships | None = None
    """The sparse responsibilities themselves (CPU batches; None from accelerators)."""


def sq_distances(X: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(n, k)`` by the norm expansion, clamped at 0.

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


# Above this mean support size per row, the weighted sums go through one BLAS matmul instead of the
# sparse scatter (the scatter costs support x dim per row, the matmul k x dim at BLAS speed).
_DENSE_SUPPORT_FRACTION = 1 / 16
# Room for this many non-zeros per row first; a batch with a busier row is redone with room for k.
_SPARSE_ROOM = 8


# Below this many multiply-adds, X @ C.T runs on one BLAS thread: measured on 2 busy cores, a
# second thread made (16, 8) x 4096 7x slower, while (128, 256) x 4096 gained about 30 %.
_SMALL_MATMUL = 1 << 24


@functools.lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


# Below this, BLAS stays on one thread by itself and limiting it would cost more than the product.
_TINY_MATMUL = 1 << 16


def gram(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``X @ C.T``, on a single BLAS thread when the product is small (see ``_SMALL_MATMUL``)."""
    size = X.shape[0] * X.shape[1] * C.shape[0]
    if _TINY_MATMUL <= size < _SMALL_MATMUL:
        with _blas_controller().limit(limits=1, user_api="blas"):
            return X @ C.T
    return X @ C.T


class SparseMemberships(NamedTuple):
    """Responsibilities of a CPU batch in sparse form: row ``i`` has ``length[i]`` non-zeros
    ``vals[i, :length[i]]`` at centres ``idx[i, :length[i]]``; ``labels``/``nearest`` are each row's
    nearest centre and squared distance; ``mass``, ``loss`` and ``nnz`` sum over the batch.

    Examples
    --------
    >>> m = sparse_memberships(np.array([[0.0], [0.5]]), np.array([[0.0], [1.0]]), 1.0)
    >>> m.length.tolist(), m.vals[1, :2].tolist(), m.idx[1, :2].tolist()
    ([2, 2], [0.5, 0.5], [0, 1])
    """

    vals: np.ndarray
    idx: np.ndarray
    length: np.ndarray
    labels: np.ndarray
    nearest: np.ndarray
    mass: np.ndarray
    loss: float
    nnz: int


def sparse_memberships(
    X: np.ndarray, C: np.ndarray, temperature: float, mapping: str = "entmax15"
) -> SparseMemberships:
    """Sparse responsibilities of the rows of ``X`` against ``C`` (numpy, same dtype), by the
    compiled kernel: the one CPU scoring path (statistics here, assignments in the adapters).

    Raises
    ------
    ValueError
        When a squared distance overflows (finite values near 1e154 and beyond): a batch is
        refused rather than scored or stepped on infinities, as the accelerator step refuses it.

    Examples
    --------
    >>> m = sparse_memberships(np.array([[0.0], [0.9]]), np.array([[0.0], [1.0]]), 0.1)
    >>> m.labels.tolist(), m.length.tolist(), m.nnz
    ([0, 1], [1, 1], 2)
    """
    B = X.shape[0]
    k = C.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is checked below
        G = gram(X, C)
    divisor = float(logit_divisor(temperature))
    code = _kernels.MAPPING_CODES[mapping]
    labels = np.empty(B, np.int64)
    nearest = np.empty(B, np.float64)
    room = 1 if mapping == "hard" else min(k, _SPARSE_ROOM) if mapping == "entmax15" else k
    while True:
        vals = np.empty((B, room), np.float64)
        idx = np.empty((B, room), np.int64)
        length = np.empty(B, np.int64)
        mass = np.zeros(k, np.float64)
        loss, nnz = _kernels.batch_responsibilities(
            X, C, G, divisor, code, vals, idx, length, labels, nearest, mass
        )
        if nnz >= 0:
            if not (math.isfinite(loss) and np.isfinite(nearest).all()):
                raise overflow_error(X)
            return SparseMemberships(vals, idx, length, labels, nearest, mass, float(loss), nnz)
        room = k  # a row had more candidates than room: redo with room for all


def overflow_error(X: Any) -> ValueError:
    """The error for a batch ``X`` (a torch tensor or numpy array) whose squared distances
    overflow its dtype (finite values too large to cluster as they are): callers raise it before
    anything is committed.

    Examples
    --------
    >>> import torch
    >>> str(overflow_error(torch.tensor([[1e200, 0.0]], dtype=torch.float64)))[:45]
    'squared distances overflow torch.float64 for '
    """
    if isinstance(X, torch.Tensor):
        top, dtype = (float(X.abs().max()) if X.numel() else 0.0), str(X.dtype)
    else:  # numpy, named as torch names it
        top, dtype = (float(np.abs(X).max()) if X.size else 0.0), f"torch.{X.dtype}"
    return ValueError(
        f"squared distances overflow {dtype} for this batch (values up to {top:.3g}); "
        "rescale the data" + (" or use dtype='float64'" if dtype != "torch.float64" else "")
    )


def _batch_statistics_cpu(X, C, temperature, mapping, with_sums):
    Xn = X.numpy()
    Cn = C.to(X.dtype).numpy()
    B, dim = Xn.shape
    k = Cn.shape[0]
    m = sparse_memberships(Xn, Cn, temperature, mapping)
    sums = np.zeros((k, dim), np.float64)
    if with_sums and B:
        if m.nnz > B * max(2.0, k * _DENSE_SUPPORT_FRACTION):
            P = _kernels.densify(m.vals, m.idx, m.length, k)
            sums = P.T @ Xn.astype(np.float64, copy=False)
        else:
            _kernels.scatter_sums(Xn, m.vals, m.idx, m.length, sums)
    stats = SufficientStatistics(torch.from_numpy(m.mass), torch.from_numpy(sums), m.loss, B)
    return BatchResult(stats, torch.from_numpy(m.labels), torch.from_numpy(m.nearest), m.nnz, m)


def _batch_statistics_torch(X, C, temperature, mapping, with_sums):
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
    support = int((vals > 0).sum())
    return BatchResult(stats, labels, nearest.to(torch.float64), support)


def batch_statistics(
    X: torch.Tensor,
    centers: torch.Tensor,
    temperature: float,
    mapping: str = "entmax15",
    *,
    with_sums: bool = True,
    backend: str = "auto",
) -> BatchResult:
    """Sufficient statistics of the batch ``X`` (n, d) against ``centers`` (k, d).

    ``backend``: ``"numba"`` (CPU tensors; compiled, exact sparse entmax), ``"torch"`` (any device)
    or ``"auto"`` (numba on CPU, torch elsewhere). Both give the same numbers (tested).

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
        return _batch_statistics_cpu(X, centers, temperature, mapping, with_sums)
    if backend == "torch":
        return _batch_statistics_torch(X, centers, temperature, mapping, with_sums)
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
    if dev.type == "cpu":
        # The same formula on numpy views: a few microseconds instead of a dozen torch dispatches.
        C, n = _step(
            centers.numpy().astype(np.float64),
            counts.numpy().astype(np.float64, copy=False),
            stats.mass.numpy(),
            stats.sums.numpy(),
            decay,
        )
        return torch.from_numpy(C.astype(centers.numpy().dtype, copy=False)), torch.from_numpy(n)
    C, n = _step(
        centers.to(torch.float64),
        counts.to(torch.float64),
        stats.mass.to(dev),
        stats.sums.to(dev),
        decay,
    )
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

    Examples
    --------
    >>> step = compiled_fused_step("reduce-overhead", (8, 16))   # compiles on its first call
    >>> step is compiled_fused_step("reduce-overhead", (8, 16))
    True
    """
    # A code object that differs by name (an equal copy would share dynamo's cache entry).
    name = f"fused_step_{mode.replace('-', '_')}_{'_'.join(map(str, shape or ()))}"
    names = {"co_name": name}
    if hasattr(fused_step.__code__, "co_qualname"):  # Python >= 3.11
        names["co_qualname"] = name
    fn = types.FunctionType(fused_step.__code__.replace(**names), fused_step.__globals__, name,
                            fused_step.__defaults__, fused_step.__closure__)
    fn.__kwdefaults__ = fused_step.__kwdefaults__
    return torch.compile(fn, mode=mode, fullgraph=True, dynamic=False)


def _step(c64, counts, mass, sums, decay):
    """The step of :func:`apply_step`, in operators only (numpy arrays or torch tensors)."""
    new_counts = decay * counts + mass
    moving = new_counts > 0
    safe = new_counts + ~moving  # 1 where nothing moves: no division by zero
    delta = (sums - mass[:, None] * c64) / safe[:, None]
    return c64 + delta * moving[:, None], new_counts
