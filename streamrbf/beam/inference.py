"""Assignment of events to clusters: the shared scoring routine and a RunInference model handler."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from ..core import engine
from ..core.assignment import Assignment
from ..core.persistence import ESTIMATOR_PARAMS, load_state
from ..core.policy import Policy, translate_deprecated
from ..core.state import ModelState
from ..core.validation import FeatureCountError, check_finite, check_limit, value_limit
from .dead_letters import parse_features

__all__ = ["LoadedModel", "RBFModelHandler", "assign"]

_LOG = logging.getLogger(__name__)


def assign(X: Any, centers: Any, temperature: float, mapping: str = "entmax15") -> list[Assignment]:
    """One :class:`~streamrbf.core.assignment.Assignment` per row of ``X``, scored against
    ``centers``.

    Each keeps only the non-zero memberships. CPU data goes through the core's compiled kernel
    (exact sparse entmax, one pass per row); a GPU batch is scored on the GPU with the core's
    torch mappings and only the non-zero memberships come back
    (:func:`~streamrbf.core.engine.assignments` does both).

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
    X, C = _together(X, centers)
    masses = np.zeros(len(C)) if isinstance(C, np.ndarray) else C.new_zeros(len(C))
    state = ModelState.single(C, masses, temperature=float(temperature))
    return engine.assignments(state, X, Policy(n_clusters=len(C), mapping=mapping)).to_list()


def _together(X: Any, C: Any) -> tuple[Any, Any]:
    """``X`` and ``C`` both numpy (on the CPU) or both torch tensors on ``X``'s accelerator, in a
    common floating dtype."""
    on_device = [a for a in (X, C) if not isinstance(a, np.ndarray) and a.device.type != "cpu"]
    if not on_device:
        Xn = X.numpy() if not isinstance(X, np.ndarray) else np.asarray(X)
        Cn = C.numpy() if not isinstance(C, np.ndarray) else np.asarray(C)
        dtype = np.float32 if Xn.dtype == np.float32 and Cn.dtype == np.float32 else np.float64
        return np.ascontiguousarray(Xn, dtype=dtype), np.ascontiguousarray(Cn, dtype=dtype)
    import torch

    device = on_device[0].device
    Xt = torch.as_tensor(X).to(device)
    Ct = torch.as_tensor(C).to(device)
    dtype = torch.float32 if Xt.dtype == Ct.dtype == torch.float32 else torch.float64
    return Xt.to(dtype), Ct.to(dtype)


@dataclass(frozen=True)
class LoadedModel:
    """What :meth:`RBFModelHandler.load_model` returns: the model's state record (on the
    handler's device) and its learning policy (its mapping). (A class, not a tuple: Beam's shared
    model handle keeps a weak reference to it.)

    Examples
    --------
    >>> m = LoadedModel(ModelState.single(np.eye(2), np.ones(2), temperature=1.0),
    ...                 Policy(n_clusters=2))
    >>> m.state.n_clusters, m.policy.mapping
    (2, 'entmax15')
    """

    state: ModelState
    policy: Policy


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

    def load_model(self) -> LoadedModel:
        """Load the model file (safe format only) onto the device.

        Returns
        -------
        LoadedModel
            The model's state record and its learning policy.
        """
        state, params, _ = load_state(self._model_uri, "RBFKMeans")
        policy_params = {k: v for k, v in params.items() if k not in ESTIMATOR_PARAMS}
        try:
            policy = Policy.from_params(translate_deprecated(policy_params, "RBFKMeans", False))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self._model_uri!r} is not a valid RBFKMeans model file: "
                             f"{err}") from None
        device = self._torch_device()
        if device != "cpu":
            import torch

            state.centers = torch.from_numpy(state.centers).to(device)
            state.masses = torch.from_numpy(state.masses).to(device)
        return LoadedModel(state, policy)

    def run_inference(
        self, batch: Sequence[Any], model: Any, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        """Score a batch of examples: one ``PredictionResult`` per example, in order.

        A pre-batched 2-D array is one example whose inference is a list of assignments. Invalid
        events raise ``ValueError`` or ``TypeError`` (validate them first with
        :class:`~streamrbf.beam.ValidateEvents` to route them to dead letters instead).

        Parameters
        ----------
        batch
            The examples: feature sequences, dicts, JSON text, ``(names, values)`` pairs from
            :class:`~streamrbf.beam.ValidateEvents`, or 2-D arrays of rows.
        model
            The :class:`LoadedModel` from :meth:`load_model`.
        inference_args
            Unused (:meth:`validate_inference_args` refuses any).

        Returns
        -------
        list of PredictionResult
            One per example, in order, each carrying the model URI as its ``model_id``; the
            inference is an :class:`~streamrbf.core.assignment.Assignment`, or a list of them for
            a 2-D array.

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
        state = model.state
        names = self._feature_names
        if names is None and state.feature_names is not None:
            names = state.feature_names
        d = state.n_features
        rows: list[Any] = []
        spans = []
        for x in batch:
            if isinstance(x, np.ndarray) and x.ndim == 2:
                # A pre-batched block of events (one example): its inference is a list.
                block = np.asarray(x, dtype=np.float64)
                if block.shape[1] != d:
                    raise FeatureCountError(f"block of shape {block.shape}: expected (n, {d})")
                check_finite(block, f"block of shape {block.shape}")
                spans.append((len(rows), len(rows) + len(block), True))
                rows.extend(block)
            else:
                spans.append((len(rows), len(rows) + 1, False))
                if _is_validated(x):
                    # ValidateEvents' output, ``(names, values)``: the values, in the model's
                    # feature order when the event had names.
                    x = x[1] if x[0] is None else dict(zip(x[0], x[1]))
                rows.append(parse_features(x, names, d)[1])
        X = np.asarray(rows, dtype=np.float64).reshape(-1, d)
        C = state.centers[0]
        check_limit(X, value_limit(d, C.dtype), names)  # the value rule, for this model's dtype
        if not isinstance(C, np.ndarray):
            import torch

            X = torch.from_numpy(X).to(device=C.device, dtype=C.dtype)
        out = engine.assignments(state, X, model.policy).to_list()
        return [PredictionResult(x, out[a:b] if block else out[a], self._model_uri)
                for x, (a, b, block) in zip(batch, spans)]

    def update_model_path(self, model_path: str | None = None) -> None:
        """Point the handler at a new model file (Beam's model-update hook).

        Parameters
        ----------
        model_path
            The new model URI; None or empty keeps the current one.
        """
        if model_path:
            self._model_uri = model_path

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        """An estimate of a batch's size, for Beam's metrics.

        Parameters
        ----------
        batch
            The examples.

        Returns
        -------
        int
            8 bytes per item of each example that has a length (rows of a 2-D array, values
            of a sequence, characters of text), 8 for an example without one.
        """
        return sum(8 * len(x) if hasattr(x, "__len__") else 8 for x in batch)

    def get_metrics_namespace(self) -> str:
        """The namespace of the ``RunInference`` metrics.

        Returns
        -------
        str
            ``"streamrbf"``.
        """
        return "streamrbf"

    def get_resource_hints(self) -> dict:
        """The resource hints of the ``RunInference`` step.

        Returns
        -------
        dict
            ``{"accelerator": accelerator}`` when the handler was made with ``gpu_hints=True``,
            otherwise empty.
        """
        return {"accelerator": self._accelerator} if self._gpu_hints else {}

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        """Refuse inference arguments: the handler takes none.

        Parameters
        ----------
        inference_args
            What ``RunInference`` was given; None or empty passes, anything else raises
            ``ValueError``.
        """
        if inference_args:
            raise ValueError(f"RBFModelHandler takes no inference_args, got {inference_args!r}")
