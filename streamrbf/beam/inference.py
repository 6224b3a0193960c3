"""Assignment of events to clusters: the shared scoring routine and a RunInference model handler."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from ..core.assignment import Assignment, AssignmentBatch
from ..core.validation import max_abs_value
from .dead_letters import parse_features

__all__ = ["RBFModelHandler", "assign"]

_LOG = logging.getLogger(__name__)


def assign(X: Any, centers: Any, temperature: float, mapping: str = "entmax15") -> list[Assignment]:
    """One :class:`~streamrbf.core.assignment.Assignment` per row of ``X``, scored against
    ``centers``.

    Each keeps only the non-zero memberships. CPU data goes through the core's compiled kernel
    (exact sparse entmax, one pass per row); a GPU batch is scored on the GPU with the core's
    torch mappings and only the results come back.

    Parameters
    ----------
    X
        Events ``(n, d)``, a numpy array or torch tensor.
    centers
        Centres ``(k, d)``, a numpy array or torch tensor.
    temperature
        Temperature of the mapping.
    mapping
        ``"entmax15"``, ``"softmax"`` or ``"hard"``.

    Returns
    -------
    list of Assignment
        One per row of ``X``, in order.

    Examples
    --------
    >>> a = assign(np.array([[0.0], [0.9]]), np.array([[0.0], [1.0]]), 0.1)
    >>> [(x.cluster, sorted(x.memberships)) for x in a]
    [(0, [0]), (1, [1])]

    A point halfway between two centres is shared, and only between those two:

    >>> b, = assign(np.array([[0.5, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0], [9.0, 9.0]]), 0.5)
    >>> b.memberships, b.distance
    ({0: 0.5, 1: 0.5}, 0.5)
    """
    import torch

    if isinstance(X, torch.Tensor) and X.device.type != "cpu":
        return _assign_torch(X, centers, temperature, mapping)
    if isinstance(X, torch.Tensor):
        X = X.numpy()
    if isinstance(centers, torch.Tensor):
        centers = centers.cpu().numpy()
    return _assign_cpu(np.asarray(X), np.asarray(centers), temperature, mapping)


def _assign_cpu(X: np.ndarray, C: np.ndarray, temperature: float, mapping: str
                ) -> list[Assignment]:
    return _batch_cpu(X, C, temperature, mapping).to_list()


def _batch_cpu(X: np.ndarray, C: np.ndarray, temperature: float, mapping: str
               ) -> AssignmentBatch:
    from ..core.statistics import sparse_memberships

    dtype = np.float32 if X.dtype == np.float32 and C.dtype == np.float32 else np.float64
    X = np.ascontiguousarray(X, dtype=dtype)
    C = np.ascontiguousarray(C, dtype=dtype)
    m = sparse_memberships(X, C, float(temperature), mapping)  # refuses an overflowing batch
    return AssignmentBatch.from_memberships(m, temperature)


def _assign_torch(X: Any, centers: Any, temperature: float, mapping: str) -> list[Assignment]:
    import torch

    from ..core.mappings import responsibilities
    from ..core.statistics import sq_distances

    Xt = torch.as_tensor(X)
    Ct = torch.as_tensor(centers).to(device=Xt.device, dtype=Xt.dtype)
    D = sq_distances(Xt, Ct).to(torch.float64)
    nearest, labels = D.min(dim=1)
    if not bool(torch.isfinite(nearest).all()):
        from ..core.statistics import overflow_error

        raise overflow_error(Xt)
    P = responsibilities(D, float(temperature), mapping)
    rows, cols = P.nonzero(as_tuple=True)  # row-major: grouped by event
    offsets = torch.zeros(len(P) + 1, dtype=torch.int64, device=P.device)
    offsets[1:] = torch.bincount(rows, minlength=len(P)).cumsum(0)
    # Only the non-zeros come back to the host, not the dense n x k arrays.
    host = [t.cpu().numpy() for t in (labels, nearest.sqrt(), offsets, cols, P[rows, cols])]
    return AssignmentBatch(*host, float(temperature)).to_list()


def _is_validated(x: Any) -> bool:
    """Whether ``x`` is an event as :class:`~streamrbf.beam.ValidateEvents` emits it (keyed:
    the value part), ``(names or None, values)``: never a valid event itself, as neither None nor
    a tuple of names is a number."""
    return (type(x) is tuple and len(x) == 2 and type(x[1]) is tuple
            and (x[0] is None or (type(x[0]) is tuple and len(x[0]) == len(x[1])
                                  and all(type(n) is str for n in x[0]))))


class RBFModelHandler(ModelHandler[Any, PredictionResult, Any]):
    """RunInference handler for saved :class:`~streamrbf.kmeans.RBFKMeans` models.

    Loads the safe model format only (safetensors + JSON header; anything else is refused), scores
    large batches on ``device`` (``"cpu"``, ``"cuda"`` / ``"GPU"``; falls back to the CPU when no
    GPU is visible) and yields ``PredictionResult(example, Assignment, model_id)``. Examples are
    dicts, 1-D arrays or JSON text (fix ``feature_names`` for dict events), events as
    :class:`~streamrbf.beam.ValidateEvents` passes them on (keyed: with a ``KeyedModelHandler``),
    or pre-batched 2-D arrays whose inference is a list of assignments. On the DaskRunner, which
    loses what ``BatchElements`` emits at the end of a partition, batch with a ``GroupByKey``
    and use ``handler.with_no_batching()`` (docs/beam.md shows how). A new model path arriving
    through ``RunInference(..., model_metadata_pcoll=...)`` is loaded in place of the old one.
    ``gpu_hints=True`` declares ``accelerator`` resource hints for Dataflow.

    Parameters
    ----------
    model_uri
        Path of a model saved with :meth:`RBFKMeans.save <streamrbf.kmeans.RBFKMeans.save>`.
    device
        Where the model is loaded and batches are scored: ``"cpu"``, ``"cuda"``, ``"cuda:<i>"``
        or ``"GPU"``.
    feature_names
        Feature order of dict events (default: the names the model was fitted with).
    gpu_hints
        Whether to declare the ``accelerator`` resource hint.
    accelerator
        The Dataflow accelerator hint.
    min_batch_size
        Smallest batch RunInference forms.
    max_batch_size
        Largest batch RunInference forms.
    **kwargs
        Passed to Beam's ``ModelHandler``.

    Examples
    --------
    >>> import tempfile, apache_beam as beam
    >>> from apache_beam.ml.inference.base import RunInference
    >>> from streamrbf import RBFKMeans
    >>> path = tempfile.mkdtemp() + "/m.safetensors"
    >>> RBFKMeans(2, random_state=0).fit([[0.0, 0], [0, 1], [9, 9], [9, 8]]).save(path)
    >>> with beam.Pipeline(runner="FnApiRunner") as p:
    ...     _ = (p | beam.Create([[0.0, 0.5], [9.0, 8.5]])
    ...          | RunInference(RBFModelHandler(path))
    ...          | beam.Map(lambda r: r.inference.cluster) | beam.combiners.ToList()
    ...          | beam.Map(lambda c: print(len(set(c)))))
    2
    """

    def __init__(
        self,
        model_uri: str,
        *,
        device: str = "cpu",
        feature_names: Sequence[str] | None = None,
        gpu_hints: bool = False,
        accelerator: str = "type:nvidia-l4;count:1;install-nvidia-driver",
        min_batch_size: int | None = 64,
        max_batch_size: int | None = 65536,
        **kwargs: Any,
    ) -> None:
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size, **kwargs)
        self._model_uri = model_uri
        self._device = device
        self._feature_names = None if feature_names is None else tuple(feature_names)
        self._gpu_hints = gpu_hints
        self._accelerator = accelerator

    def _torch_device(self) -> str:
        import torch

        want = str(self._device).lower()
        if want in ("gpu", "cuda") or want.startswith("cuda:"):
            if torch.cuda.is_available():
                return "cuda" if want == "gpu" else want
            _LOG.warning("RBFModelHandler: no GPU visible, assigning on the CPU")
        return "cpu"

    def load_model(self) -> Any:
        """Load the model file (safe format only) onto the device."""
        from ..kmeans import RBFKMeans

        return RBFKMeans.load(self._model_uri, device=self._torch_device())

    def run_inference(
        self, batch: Sequence[Any], model: Any, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        """Score a batch of examples: one ``PredictionResult`` per example, in order.

        A pre-batched 2-D array is one example whose inference is a list of assignments. Invalid
        events raise ``ValueError`` or ``TypeError`` (validate them first with
        :class:`~streamrbf.beam.ValidateEvents` to route them to dead letters instead).

        Examples
        --------
        >>> import tempfile
        >>> from streamrbf import RBFKMeans
        >>> path = tempfile.mkdtemp() + "/m.safetensors"
        >>> RBFKMeans(2, random_state=0).fit([[0.0, 0], [0, 1], [9, 9], [9, 8]]).save(path)
        >>> handler = RBFModelHandler(path)
        >>> one, text, block = handler.run_inference(
        ...     [[0.0, 0.5], "[9.0, 8.5]", np.array([[9.0, 8.5], [0.0, 0.0]])],
        ...     handler.load_model())
        >>> one.inference.distance, one.inference.memberships == {one.inference.cluster: 1.0}
        (0.0, True)
        >>> [a.cluster for a in block.inference] == [text.inference.cluster, one.inference.cluster]
        True
        """
        import torch

        names = self._feature_names
        if names is None and getattr(model, "feature_names_in_", None) is not None:
            names = tuple(model.feature_names_in_)
        d = model.n_features_in_
        rows: list[Any] = []
        spans = []
        for x in batch:
            if isinstance(x, np.ndarray) and x.ndim == 2:
                # A pre-batched block of events (one example): its inference is a list.
                block = np.asarray(x, dtype=np.float64)
                if block.shape[1] != d or not np.isfinite(block).all():
                    raise ValueError(f"block of shape {block.shape} is not finite (n, {d})")
                if block.size and np.abs(block).max() > max_abs_value(d):
                    raise ValueError(f"block holds values too large to cluster (at most "
                                     f"{max_abs_value(d):.3g} in magnitude with {d} features)")
                spans.append((len(rows), len(rows) + len(block), True))
                rows.extend(block)
            else:
                spans.append((len(rows), len(rows) + 1, False))
                if _is_validated(x):
                    # ValidateEvents' output, ``(names, values)``: the values, in the model's
                    # feature order when the event had names.
                    x = x[1] if x[0] is None else dict(zip(x[0], x[1]))
                rows.append(parse_features(x, names, d)[1])
        C = model.centers_tensor_
        X = torch.as_tensor(np.asarray(rows, dtype=np.float64).reshape(-1, d), dtype=C.dtype,
                            device=C.device)
        if C.dtype != torch.float64 and not bool(torch.isfinite(X).all()):
            raise ValueError(f"values beyond the range of this {C.dtype} model's centres")
        out = assign(X, C, model.temperature_, model.mapping)
        return [PredictionResult(x, out[a:b] if block else out[a], self._model_uri)
                for x, (a, b, block) in zip(batch, spans)]

    def update_model_path(self, model_path: str | None = None) -> None:
        if model_path:
            self._model_uri = model_path

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return sum(8 * len(x) if hasattr(x, "__len__") else 8 for x in batch)

    def get_metrics_namespace(self) -> str:
        return "streamrbf"

    def get_resource_hints(self) -> dict:
        return {"accelerator": self._accelerator} if self._gpu_hints else {}

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        if inference_args:
            raise ValueError(f"RBFModelHandler takes no inference_args, got {inference_args!r}")
