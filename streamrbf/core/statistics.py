"""Sufficient statistics of a mini-batch, and the step they define.

For a batch and centres ``C`` at temperature ``T``: masses ``m_k = sum_i p_ik``, weighted sums
``s_k = sum_i p_ik x_i`` and the weighted distortion ``sum_ik p_ik d_ik``. They are sums, so the
statistics of shards add up (in any order) to those of the union: this is what makes distributed
training exact. The step with decayed masses ``n_k <- a n_k + m_k``,
``c_k <- c_k + (s_k - m_k c_k) / n_k`` is one soft-Lloyd (EM) step when ``a = 0`` and the running
mean (MacQueen) when ``a = 1``.

CPU models work on numpy arrays through the compiled kernels (:func:`sparse_memberships`), and
never import torch; the torch functions (:func:`batch_statistics`, :func:`fused_step`) serve
accelerators and differentiable code, and import it when called.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import _kernels
from .state import host_array
from .temperature import logit_divisor
from .validation import ValueTooLargeError

__all__ = [
    "BatchResult",
    "SparseMemberships",
    "SufficientStatistics",
    "batch_result",
    "blas_threads_for",
    "is_sparse",
    "merged",
    "gram",
    "overflow_error",
    "row_chunks",
    "row_norms",
    "safe_gram",
    "sparse_memberships",
    "step_arrays",
]




@dataclass
class SufficientStatistics:
    """Masses ``mass`` (k,), weighted sums ``sums`` (k, d), weighted distortion ``loss`` and the
    number of events ``n`` of one or more batches. Add them with ``+`` (shards, CombineFns).

    ``mass`` and ``sums`` are float64 numpy arrays for CPU models and torch tensors for models on
    an accelerator.

    Examples
    --------
    >>> a = SufficientStatistics.zeros(2, 3)
    >>> b = SufficientStatistics(np.ones(2), np.ones((2, 3)), 1.5, 2)
    >>> (a + b + b).mass.tolist(), (a + b + b).n
    ([2.0, 2.0], 4)
    """

    mass: Any
    sums: Any
    loss: float = 0.0
    n: int = 0

    @classmethod
    def zeros(cls, n_clusters: int, n_features: int, device: Any = None) -> SufficientStatistics:
        """Empty statistics (the identity of ``+``): numpy arrays, or torch tensors on
        ``device`` when one is given.

        Parameters
        ----------
        n_clusters
            Number of centres ``k``.
        n_features
            Number of features ``d``.
        device
            A torch device for the arrays; None: numpy arrays.

        Returns
        -------
        SufficientStatistics
            Float64 zeros ``(k,)`` and ``(k, d)``, a loss of 0 and no events.
        """
        if device is None:
            return cls(np.zeros(n_clusters), np.zeros((n_clusters, n_features)))
        import torch

        return cls(
            torch.zeros(n_clusters, dtype=torch.float64, device=device),
            torch.zeros(n_clusters, n_features, dtype=torch.float64, device=device),
        )

    def __add__(self, other: SufficientStatistics) -> SufficientStatistics:
        if tuple(self.sums.shape) != tuple(other.sums.shape):
            raise ValueError(
                f"cannot add statistics of shape {tuple(self.sums.shape)} and "
                f"{tuple(other.sums.shape)}"
            )
        mass, sums = other.mass, other.sums
        if not isinstance(self.mass, np.ndarray):  # torch: on this one's device
            mass, sums = _tensor_like(mass, self.mass), _tensor_like(sums, self.sums)
        elif not isinstance(mass, np.ndarray):
            mass, sums = host_array(mass), host_array(sums)
        return SufficientStatistics(self.mass + mass, self.sums + sums,
                                    float(self.loss) + float(other.loss), self.n + other.n)

    def means(self) -> Any:
        """Responsibility-weighted means ``s_k / m_k`` (NaN rows where ``m_k = 0``).

        Returns
        -------
        ndarray or torch.Tensor of shape (k, d)
            The means, numpy or torch like ``sums``.
        """
        return self.sums / self.mass[:, None]


def _tensor_like(a: Any, like: Any) -> Any:
    import torch

    return torch.as_tensor(a, dtype=like.dtype).to(like.device)


@dataclass
class BatchResult:
    """What one pass over a batch yields: its statistics, each point's nearest centre and the
    squared distance to it (numpy arrays for CPU models, torch tensors on accelerators).

    Examples
    --------
    >>> X = np.array([[0.0], [0.4], [10.0]])
    >>> C = np.array([[0.0], [1.0], [10.0]])
    >>> r = batch_result(X, C, temperature=1.0)
    >>> r.labels.tolist(), r.support   # the middle point has 2 memberships
    ([0, 0, 2], 5)
    """

    stats: SufficientStatistics
    labels: Any
    nearest: Any
    support: int = 0
    """Number of non-zero responsibilities (== batch size when every row is one-hot)."""
    memberships: SparseMemberships | None = None
    """The sparse responsibilities themselves (CPU batches; None from accelerators)."""


# Rows x centres of one chunk of a pass over many rows: the Gram block is 32 MB in float64.
CHUNK_ELEMENTS = 1 << 22

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


def blas_threads_for(size: int) -> Any:
    """A context in which products of ``size`` multiply-adds run as :func:`gram` runs them (one
    BLAS thread from 2**16 up to 2**24): for a loop of many such products, which would
    otherwise pay for limiting the threads at every product.

    Parameters
    ----------
    size
        Multiply-adds of one product.

    Returns
    -------
    contextlib.AbstractContextManager
        The context.

    Examples
    --------
    >>> with blas_threads_for(10):
    ...     float((np.ones((2, 3)) @ np.ones(3))[0])
    3.0
    """
    if _TINY_MATMUL <= size < _SMALL_MATMUL:
        return _OneBlasThread()
    return contextlib.nullcontext()


_NESTING = threading.local()


class _OneBlasThread:
    """One BLAS thread within the context; nested contexts cost nothing (threadpoolctl's limit,
    tens of microseconds, is set once by the outermost)."""

    def __enter__(self) -> _OneBlasThread:
        depth = getattr(_NESTING, "depth", 0)
        _NESTING.depth = depth + 1
        self._limiter = (None if depth
                         else _blas_controller().limit(limits=1, user_api="blas"))
        return self

    def __exit__(self, *exc: object) -> None:
        _NESTING.depth -= 1
        if self._limiter is not None:
            self._limiter.restore_original_limits()


def row_chunks(n: int, k: int) -> Iterator[slice]:
    """The chunks of rows a pass over ``n`` rows against ``k`` centres takes: about
    :data:`CHUNK_ELEMENTS` point-centre pairs each (at least 256 rows).

    Parameters
    ----------
    n
        The rows.
    k
        The centres (or columns) each row meets.

    Returns
    -------
    Iterator[slice]
        Consecutive slices covering ``range(n)``.

    Examples
    --------
    >>> [(s.start, s.stop) for s in row_chunks(5, 2)]
    [(0, 5)]
    """
    rows = max(256, CHUNK_ELEMENTS // max(int(k), 1))
    for lo in range(0, n, rows):
        yield slice(lo, min(n, lo + rows))


def merged(parts: list[BatchResult]) -> BatchResult:
    """One result of the chunks of a pass: statistics summed, per-row arrays concatenated
    (numpy arrays or torch tensors).

    Parameters
    ----------
    parts
        The chunks' results, in row order (at least one).

    Returns
    -------
    BatchResult
        The pass's result.

    Examples
    --------
    >>> X, C = np.array([[0.0], [1.0], [9.0]]), np.array([[0.0], [10.0]])
    >>> r = merged([batch_result(X[:2], C, 1.0, "hard"), batch_result(X[2:], C, 1.0, "hard")])
    >>> r.labels.tolist(), r.stats.mass.tolist()
    ([0, 0, 1], [2.0, 1.0])
    """
    if len(parts) == 1:
        return parts[0]
    stats = parts[0].stats
    for p in parts[1:]:
        stats = stats + p.stats
    if isinstance(parts[0].labels, np.ndarray):
        cat: Any = np.concatenate
    else:
        import torch

        cat = torch.cat
    return BatchResult(stats, cat([p.labels for p in parts]), cat([p.nearest for p in parts]),
                       sum(p.support for p in parts))


def is_sparse(X: Any) -> bool:
    """Whether ``X`` is a scipy sparse matrix or array (without importing scipy).

    Parameters
    ----------
    X
        Anything.

    Returns
    -------
    bool
        True for ``scipy.sparse`` matrices and arrays.

    Examples
    --------
    >>> from scipy import sparse
    >>> is_sparse(sparse.csr_matrix(np.eye(2))), is_sparse(np.eye(2))
    (True, False)
    """
    return type(X).__module__.startswith("scipy.sparse")


def row_norms(X: Any) -> np.ndarray:
    """Squared norms of the rows of ``X`` (a numpy array or a scipy sparse matrix), in float64.

    Parameters
    ----------
    X
        The rows ``(n, d)``.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64.

    Examples
    --------
    >>> from scipy import sparse
    >>> row_norms(sparse.csr_matrix([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [25.0, 0.0]
    """
    if is_sparse(X):
        X = X.tocsr()
        values = X.data.astype(np.float64)
        rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        return np.bincount(rows, weights=values * values, minlength=X.shape[0])
    return np.einsum("ij,ij->i", X, X, dtype=np.float64)


def gram(X: np.ndarray, C: np.ndarray, limit: bool = True) -> np.ndarray:
    """``X @ C.T``, on a single BLAS thread when the product is small (see ``_SMALL_MATMUL``).

    From 2**16 up to 2**24 multiply-adds the product is limited to one BLAS thread (a second one
    costs more than it gains on busy cores); smaller products stay on one thread by themselves,
    larger ones use BLAS's own thread count.

    Parameters
    ----------
    X
        The rows ``(n, d)``.
    C
        The centres ``(k, d)``.
    limit
        Whether to set the BLAS threads for this product; False: the caller has (a loop of
        products inside one :func:`blas_threads_for`).

    Returns
    -------
    ndarray of shape (n, k)
        The inner products.

    Examples
    --------
    >>> gram(np.array([[1.0, 2.0]]), np.array([[3.0, 4.0], [0.0, 1.0]]))
    array([[11.,  2.]])
    """
    if is_sparse(X):  # a scipy sparse matrix: a dense (n, k) result
        return np.asarray(X @ C.T)
    if not limit:
        return X @ C.T
    with blas_threads_for(X.shape[0] * X.shape[1] * C.shape[0]):
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


# Below this share of ``|x|^2 + |c|^2``, a squared distance by the norm expansion with a gram
# matrix of this dtype has lost most of its digits to cancellation (float64: ~1e-10 relative
# error left at the threshold; float32: ~1e-5): it is summed from differences instead.
CANCELLATION = {np.float64: 1e-6, np.float32: 1e-2}

_NO_NORMS = np.empty(0, np.float64)
_NO_NORMS.flags.writeable = False


def safe_gram(X: np.ndarray, C: np.ndarray, limit: bool = True) -> np.ndarray:
    """:func:`gram`, computed again in float64 when a float32 product overflowed (values near
    the top of float32's range: the kernels turn the squared norms and this product into
    distances in float64, which must not see an infinity here).

    Parameters
    ----------
    X
        Rows ``(n, d)``.
    C
        Centres ``(k, d)``, the same dtype.
    limit
        As in :func:`gram`.

    Returns
    -------
    numpy.ndarray
        ``X @ C.T`` ``(n, k)``, finite.

    Raises
    ------
    ValueError
        When the product overflows float64 (:func:`overflow_error`).

    Examples
    --------
    >>> X = np.array([[7e19]], dtype=np.float32)
    >>> C = np.array([[1e19], [6e19]], dtype=np.float32)
    >>> safe_gram(X, C).dtype, bool(np.isfinite(safe_gram(X, C)).all())
    (dtype('float64'), True)
    """
    with np.errstate(over="ignore", invalid="ignore"):  # checked below
        G = gram(X, C, limit)
        if math.isfinite(G.sum()) or np.isfinite(G).all():  # (a sum is finite when all are,
            return G                                         # unless it overflows: then check)
        if X.dtype != np.float64:
            G = gram(X.astype(np.float64), C.astype(np.float64), limit)  # sparse stays sparse
            if np.isfinite(G).all():
                return G
    raise overflow_error(X)


def sparse_memberships(
    X: np.ndarray, C: np.ndarray, temperature: float, mapping: str = "entmax15",
    sample_weight: np.ndarray | None = None,
) -> SparseMemberships:
    """Sparse responsibilities of the rows of ``X`` against ``C`` (numpy, same dtype), by the
    compiled kernel: the one CPU scoring path (statistics here, assignments in the adapters).

    Parameters
    ----------
    X
        The rows ``(n, d)``, finite: a numpy array or a scipy sparse (CSR) matrix, whose
        products with the centres are sparse products.
    C
        The centres ``(k, d)``, of the same dtype.
    temperature
        The temperature of the mapping.
    mapping
        ``"entmax15"``, ``"softmax"`` or ``"hard"``.
    sample_weight
        Each row's weight ``(n,)``: the masses and the distortion are weighted (the memberships
        are not); None: all 1.

    Returns
    -------
    SparseMemberships
        Each row's non-zero memberships and the centres they belong to, its nearest centre and
        squared distance to it, and the batch's (weighted) masses, distortion and number of
        non-zeros.

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
    G = safe_gram(X, C)
    if is_sparse(X):  # the kernel takes the rows' norms instead of the rows
        norms, X = row_norms(X), np.empty((B, 0), C.dtype)
        exact_below = 0.0  # (no rows to take differences of)
    else:
        norms = _NO_NORMS
        exact_below = CANCELLATION[G.dtype.type]
    weights = _NO_NORMS if sample_weight is None else sample_weight
    divisor = float(logit_divisor(temperature))
    code = _kernels.MAPPING_CODES[mapping]
    labels = np.empty(B, np.int64)
    nearest = np.empty(B, np.float64)
    support = _kernels.MAPPINGS[mapping].support
    room = 1 if support == "one" else min(k, _SPARSE_ROOM) if support == "window" else k
    while True:
        vals = np.empty((B, room), np.float64)
        idx = np.empty((B, room), np.int64)
        length = np.empty(B, np.int64)
        mass = np.zeros(k, np.float64)
        loss, nnz = _kernels.batch_responsibilities(
            X, C, G, divisor, code, vals, idx, length, labels, nearest, mass, norms, weights,
            exact_below)
        if nnz >= 0:
            if not (math.isfinite(loss) and np.isfinite(nearest).all()):
                raise overflow_error(X)
            return SparseMemberships(vals, idx, length, labels, nearest, mass, float(loss), nnz)
        room = k  # a row had more candidates than room: redo with room for all


def overflow_error(X: Any) -> ValueTooLargeError:
    """The error for a batch ``X`` (a torch tensor or numpy array) whose squared distances
    overflow its dtype (finite values too large to cluster as they are): callers raise it before
    anything is committed.

    Parameters
    ----------
    X
        The batch.

    Returns
    -------
    ValueTooLargeError
        The error (not raised; a ``ValueError`` of the value rule's family), naming the
        dtype and the largest absolute value, and advising to rescale the data (or to use
        float64 when the batch is not float64).

    Examples
    --------
    >>> import torch
    >>> str(overflow_error(torch.tensor([[1e200, 0.0]], dtype=torch.float64)))[:45]
    'squared distances overflow torch.float64 for '
    """
    if not isinstance(X, np.ndarray):  # a torch tensor
        top, dtype = (float(X.abs().max()) if X.numel() else 0.0), str(X.dtype)
    else:  # numpy, named as torch names it
        top, dtype = (float(np.abs(X).max()) if X.size else 0.0), f"torch.{X.dtype}"
    return ValueTooLargeError(
        f"squared distances overflow {dtype} for this batch (values up to {top:.3g}); "
        "rescale the data" + (" or use dtype='float64'" if dtype != "torch.float64" else "")
    )


def batch_result(
    X: np.ndarray,
    C: np.ndarray,
    temperature: float,
    mapping: str = "entmax15",
    *,
    with_sums: bool = True,
    sample_weight: np.ndarray | None = None,
) -> BatchResult:
    """Sufficient statistics, nearest centres and sparse memberships of the batch ``X`` (n, d)
    against the centres ``C`` (k, d), numpy arrays of one dtype: the one CPU pass (the compiled
    kernel of :func:`sparse_memberships`; torch is not used).

    Parameters
    ----------
    X
        The batch, float32 or float64, finite: a numpy array or a scipy sparse (CSR) matrix.
    C
        The centres, the same dtype.
    temperature
        The temperature of the mapping.
    mapping
        ``"entmax15"``, ``"softmax"`` or ``"hard"``.
    with_sums
        Whether to compute the weighted sums (a step needs them; scoring does not).
    sample_weight
        Each row's weight ``(n,)`` (a row of weight ``w`` counts as ``w`` copies of it); None:
        all 1.

    Returns
    -------
    BatchResult
        Statistics, labels, squared distances to the nearest centre, number of non-zero
        memberships, and the memberships themselves.

    Raises
    ------
    ValueError
        When a squared distance overflows (:func:`overflow_error`).

    Examples
    --------
    >>> r = batch_result(np.array([[0.0], [1.0], [10.0]]), np.array([[0.0], [10.0]]), 0.1)
    >>> r.stats.mass.tolist(), r.stats.sums.ravel().tolist(), r.labels.tolist()
    ([2.0, 1.0], [1.0, 10.0], [0, 0, 1])
    """
    B, dim = X.shape
    k = C.shape[0]
    m = sparse_memberships(X, C, temperature, mapping, sample_weight)
    sums = np.zeros((k, dim), np.float64)
    if with_sums and B:
        w = _NO_NORMS if sample_weight is None else sample_weight
        if is_sparse(X) or m.nnz > B * max(2.0, k * _DENSE_SUPPORT_FRACTION):
            P = _kernels.densify(m.vals, m.idx, m.length, k)
            if w.size:
                P *= w[:, None]
            # (X.T @ P).T: a sparse product for a sparse X
            sums = np.asarray(X.T @ P).T if is_sparse(X) else P.T @ X.astype(np.float64,
                                                                               copy=False)
        else:
            _kernels.scatter_sums(X, m.vals, m.idx, m.length, sums, w)
    stats = SufficientStatistics(m.mass, sums, m.loss, B)
    return BatchResult(stats, m.labels, m.nearest, m.nnz, m)


def step_arrays(centers: Any, masses: Any, mass: Any, sums: Any, forgetting: Any) -> tuple:
    """One gradient step from sufficient statistics (``mass`` (k,), ``sums`` (k, d)), with
    forgetting; returns the new ``(centres, masses)``, in float64.

    The masses decay and gain the batch's, ``n_k <- forgetting * n_k + m_k``, and each centre
    moves by ``(s_k - m_k c_k) / n_k``: gradient descent on the weighted distortion with step
    size ``1 / (2 n_k)``. With ``forgetting = 0`` that lands on the weighted mean ``s_k / m_k``
    (one Lloyd / EM step). Centres with no mass stay where they are. The operators work on numpy
    arrays and torch tensors alike.

    Parameters
    ----------
    centers
        The centres ``(k, d)``: a numpy array or a torch tensor; or a bank's ``(B, k, d)``.
    masses
        Their decayed masses ``(k,)`` (a bank's ``(B, k)``), of the same kind.
    mass
        The batch's masses ``(k,)`` (``(B, k)``).
    sums
        The batch's weighted sums ``(k, d)`` (``(B, k, d)``).
    forgetting
        The factor the masses are multiplied by before the batch's are added (a bank: one per
        model, ``(B, 1)``).

    Returns
    -------
    tuple
        The new centres and masses, float64, of the kind of ``centers``.

    Examples
    --------
    >>> C, n = step_arrays(np.zeros((1, 1)), np.zeros(1), np.array([2.0]), np.array([[6.0]]), 1.0)
    >>> C.tolist(), n.tolist()
    ([[3.0]], [2.0])
    """
    if isinstance(centers, np.ndarray):
        return _step(centers.astype(np.float64), masses.astype(np.float64, copy=False),
                     mass, sums, forgetting)
    import torch

    return _step(centers.to(torch.float64), masses.to(torch.float64), mass, sums, forgetting)


def _step(c64, counts, mass, sums, decay):
    """The step of :func:`step_arrays`, in operators only (numpy arrays or torch tensors), for
    one model (``counts (k,)``) or a bank (``(B, k)``, ``decay`` a scalar or ``(B, 1)``)."""
    new_counts = decay * counts + mass
    moving = new_counts > 0
    safe = new_counts + ~moving  # 1 where nothing moves: no division by zero
    delta = (sums - mass[..., None] * c64) / safe[..., None]
    return c64 + delta * moving[..., None], new_counts
