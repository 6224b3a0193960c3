"""Apache Beam transforms: per-stream models, one data-parallel model, RunInference, dead letters.

- :class:`ClusterPerKey`: one streaming model and temperature per key, in Beam state.
- :class:`ClusterManyKeys`: the same for fleets of short streams, many keys per state cell
  (a shard's streams in one bank, stepped in one call).
- :class:`ClusterGlobally`: one model trained data-parallel from summed sufficient statistics.
- :class:`RBFModelHandler`: assignment with ``RunInference`` on CPU or GPU workers.
- :class:`DeadLetter` / :class:`ValidateEvents`: every bad event leaves with its reason.
"""

from __future__ import annotations

from .dead_letters import DeadLetter, ValidateEvents, parse_features, parse_keyed
from .global_model import ClusterGlobally, GlobalResult, latest_checkpoint
from .inference import LoadedModel, RBFModelHandler, assign
from .many_keys import ClusterManyKeys
from .per_key import ClusterPerKey, PerKeyResult, Snapshot
from .state import (
    AssignmentBatchCoder,
    AssignmentCoder,
    KeyState,
    KeyStateCoder,
    ModelState,
    ModelStateCoder,
)

__all__ = [
    "ClusterManyKeys",
    "AssignmentBatchCoder",
    "AssignmentCoder",
    "ClusterGlobally",
    "ClusterPerKey",
    "DeadLetter",
    "GlobalResult",
    "KeyState",
    "KeyStateCoder",
    "LoadedModel",
    "ModelState",
    "ModelStateCoder",
    "PerKeyResult",
    "RBFModelHandler",
    "Snapshot",
    "ValidateEvents",
    "assign",
    "latest_checkpoint",
    "parse_features",
    "parse_keyed",
]
